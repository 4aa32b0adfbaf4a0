//! A simulated SX1276 behind the same traits as the hardware: it IS the `SpiDevice`, the reset
//! `OutputPin` and the DIO0 [`IrqLine`]. It models the LoRa register page with its reset values, the
//! 256-byte FIFO walked by `RegFifoAddrPtr`, burst auto-increment, the LoRa bit writable only in sleep,
//! `RegIrqFlags` write-1-to-clear, DIO0 from RxDone (through the mask and `RegDioMapping1`), packets
//! heard only in RX mode, a chip that stops answering (MISO stuck at 0x00 or 0xFF) or loses its
//! configuration (brown-out), a stuck interrupt line, and, when a test asks for it
//! ([`Sx1276Sim::with_trace`]), a log of the SPI transactions ([`super::sim_chip::TraceLog`], capped). Transmit: TX mode
//! sends `RegPayloadLength` bytes from `RegFifoTxBaseAddr` onto the simulated air at once (kept in a
//! capped log, [`Sx1276Sim::transmitted`]), raises TxDone and returns to standby, as the chip does after
//! its time on air. It never models the FSK modem, timing or the air's losses.
//!
//! Bug classes it catches: a wrong or reordered register write (golden traces), the LoRa bit written
//! outside sleep (the chip silently stays in FSK), forgetting RX continuous or the DIO0 mapping (packets
//! never arrive), read flags not cleared (DIO0 stays high), reading the FIFO from the wrong address,
//! RSSI/SNR sign and offset mistakes, CRC errors passed on as packets, and the recovery path (stop
//! answering, brown-out, stuck line) which real hardware produces rarely and never on demand. On the
//! transmit side: the payload written at the wrong FIFO address or with the wrong length, TxDone masked
//! or not routed to DIO0 (the driver waits for ever), and a chip left out of RX after a transmission
//! (the next packets are missed). IQ polarity: a transmission carries the polarity `RegInvertIQ` and
//! `RegInvertIQ2` give it (none when they disagree), and the chip hears the simulated senders' standard
//! uplinks only while both registers are back at standard.

use super::sim_chip::{read_wrapping, write_wrapping, Bench, Buffer, ChipState, SimChip, SimIrq};
use super::sx1276::{
    is_low_frequency, HOP_CRC_ON_PAYLOAD, IRQ_PAYLOAD_CRC_ERROR, IRQ_RX_DONE, IRQ_TX_DONE,
    IRQ_VALID_HEADER, REG_DIO_MAPPING1, REG_FIFO, REG_FIFO_ADDR_PTR, REG_FIFO_RX_BASE_ADDR,
    REG_FIFO_RX_CURRENT_ADDR, REG_FIFO_TX_BASE_ADDR, REG_FRF_MSB, REG_HOP_CHANNEL, REG_INVERT_IQ,
    REG_INVERT_IQ2, REG_IRQ_FLAGS, REG_IRQ_FLAGS_MASK, REG_OP_MODE, REG_PAYLOAD_LENGTH,
    REG_PKT_RSSI, REG_PKT_SNR, REG_RX_NB_BYTES, REG_VERSION,
};
use super::IqPolarity;

pub use super::sim_chip::{Trace, Transmitted, TRACE_CAPACITY, TX_LOG_CAPACITY};

/// The simulated SX1276. Clones share one chip; hand [`spi`](SimChip::spi),
/// [`reset_pin`](SimChip::reset_pin) and [`dio0`](SimChip::dio0) to the driver and keep a clone to
/// inject packets and faults.
pub type Sx1276Sim = SimChip<Sx1276State>;

/// The simulated DIO0 line.
pub type SimDio0 = SimIrq<Sx1276State>;

/// A packet as the simulated air delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub bytes: Vec<u8>,
    pub rssi_dbm: f32,
    pub snr_db: f32,
    /// False: the chip flags PayloadCrcError.
    pub crc_ok: bool,
    /// False: the sender sent no payload CRC (the header's CRC bit is clear).
    pub crc_present: bool,
}

/// The register page's reset values (datasheet, LoRa view; 0x01 reads 0x09: FSK standby, LF bank).
fn reset_registers() -> [u8; 128] {
    let mut regs = [0u8; 128];
    for (addr, value) in [
        (0x01, 0x09),
        (0x06, 0x6C),
        (0x07, 0x80),
        (0x08, 0x00),
        (0x09, 0x4F),
        (0x0B, 0x2B),
        (0x0C, 0x20),
        (0x0E, 0x80),
        (0x1D, 0x72),
        (0x1E, 0x70),
        (0x1F, 0x64),
        (0x21, 0x08),
        (0x22, 0x01),
        (0x23, 0xFF),
        (0x31, 0xC3),
        (0x33, 0x27),
        (0x36, 0x03),
        (0x37, 0x0A),
        (0x39, 0x12),
        (0x3A, 0x52),
        (0x3B, 0x1D),
        (0x42, 0x12),
    ] {
        regs[addr] = value;
    }
    regs
}

/// The SX1276's own state: its register page and FIFO, and the bench around it.
#[derive(Debug)]
pub struct Sx1276State {
    regs: [u8; 128],
    fifo: Buffer,
    bench: Bench,
}

impl Sx1276State {
    fn frequency_hz(&self) -> u32 {
        let frf = u32::from_be_bytes([
            0,
            self.regs[REG_FRF_MSB as usize],
            self.regs[REG_FRF_MSB as usize + 1],
            self.regs[REG_FRF_MSB as usize + 2],
        ]);
        ((u64::from(frf) * 32_000_000) >> 19) as u32
    }

    /// TX mode: `RegPayloadLength` bytes from `RegFifoTxBaseAddr` go on the air, TxDone rises, and the
    /// chip is back in standby (as after its time on air).
    fn transmit(&mut self) {
        let base = self.regs[REG_FIFO_TX_BASE_ADDR as usize];
        let len = self.regs[REG_PAYLOAD_LENGTH as usize];
        let bytes = read_wrapping(&self.fifo, base, usize::from(len));
        let frequency_hz = self.frequency_hz();
        let iq = self.tx_polarity();
        self.bench.tx.push(Transmitted {
            bytes,
            frequency_hz,
            iq,
            at: std::time::Instant::now(),
        });
        self.regs[REG_IRQ_FLAGS as usize] |= IRQ_TX_DONE;
        let op_mode = self.regs[REG_OP_MODE as usize];
        self.regs[REG_OP_MODE as usize] = (op_mode & !0x07) | 0x01;
    }

    /// The polarity a transmission has: `RegInvertIQ` bit 0 (1 standard, 0 inverted) with
    /// `RegInvertIQ2` 0x1D or 0x19 to match; `None` when the two disagree.
    fn tx_polarity(&self) -> Option<IqPolarity> {
        let invert = self.regs[REG_INVERT_IQ as usize];
        match (invert & 0x01, self.regs[REG_INVERT_IQ2 as usize]) {
            (0x01, 0x1D) => Some(IqPolarity::Standard),
            (0x00, 0x19) => Some(IqPolarity::Inverted),
            _ => None,
        }
    }

    /// The polarity the chip receives with: `RegInvertIQ` bit 6 with `RegInvertIQ2` to match.
    fn rx_polarity(&self) -> Option<IqPolarity> {
        let invert = self.regs[REG_INVERT_IQ as usize];
        match (invert & 0x40, self.regs[REG_INVERT_IQ2 as usize]) {
            (0x00, 0x1D) => Some(IqPolarity::Standard),
            (0x40, 0x19) => Some(IqPolarity::Inverted),
            _ => None,
        }
    }

    /// In LoRa RX with the standard polarity (what every sender in the simulation uses).
    fn receiving(&self) -> bool {
        let op_mode = self.regs[REG_OP_MODE as usize];
        self.bench.answering()
            && op_mode & 0x80 != 0
            && matches!(op_mode & 0x07, 5 | 6)
            && self.rx_polarity() == Some(IqPolarity::Standard)
    }

    fn read_register(&mut self, addr: u8) -> u8 {
        if addr == REG_FIFO {
            let ptr = self.regs[REG_FIFO_ADDR_PTR as usize];
            self.regs[REG_FIFO_ADDR_PTR as usize] = ptr.wrapping_add(1);
            self.fifo[usize::from(ptr)]
        } else {
            self.regs[usize::from(addr & 0x7F)]
        }
    }

    fn write_register(&mut self, addr: u8, value: u8) {
        let index = usize::from(addr & 0x7F);
        match addr {
            REG_FIFO => {
                let ptr = self.regs[REG_FIFO_ADDR_PTR as usize];
                self.fifo[usize::from(ptr)] = value;
                self.regs[REG_FIFO_ADDR_PTR as usize] = ptr.wrapping_add(1);
            }
            REG_OP_MODE => {
                let old = self.regs[index];
                // LongRangeMode (bit 7) changes only while the chip sleeps.
                let lora = if old & 0x07 == 0 {
                    value & 0x80
                } else {
                    old & 0x80
                };
                self.regs[index] = lora | (value & 0x7F);
                if lora != 0 && value & 0x07 == 0x03 {
                    self.transmit();
                }
            }
            REG_IRQ_FLAGS => self.regs[index] &= !value,
            REG_FIFO_RX_CURRENT_ADDR
            | REG_RX_NB_BYTES
            | REG_PKT_SNR
            | REG_PKT_RSSI
            | REG_HOP_CHANNEL
            | REG_VERSION => {}
            _ => self.regs[index] = value,
        }
    }
}

impl ChipState for Sx1276State {
    fn powered_on() -> Self {
        Sx1276State {
            regs: reset_registers(),
            fifo: [0; 256],
            bench: Bench::default(),
        }
    }

    fn bench(&self) -> &Bench {
        &self.bench
    }

    fn bench_mut(&mut self) -> &mut Bench {
        &mut self.bench
    }

    /// The register page's reset values (the FIFO keeps its bytes, as on the chip).
    fn reset(&mut self) {
        self.regs = reset_registers();
    }

    /// DIO0 from the flags: LoRa mode, not masked, and mapped to DIO0 (RxDone or TxDone).
    fn irq_raised(&self) -> bool {
        if self.regs[REG_OP_MODE as usize] & 0x80 == 0 {
            return false;
        }
        let routed = match self.regs[REG_DIO_MAPPING1 as usize] >> 6 {
            0 => IRQ_RX_DONE,
            1 => IRQ_TX_DONE,
            _ => 0,
        };
        let unmasked = self.regs[REG_IRQ_FLAGS as usize] & !self.regs[REG_IRQ_FLAGS_MASK as usize];
        unmasked & routed != 0
    }

    /// One chip-select window, byte by byte: the first byte is `W<<7 | address`, the rest auto-increment
    /// (the FIFO address walks the FIFO pointer instead).
    fn exchange(&mut self, mosi: &[u8]) -> Vec<u8> {
        let mut miso = Vec::with_capacity(mosi.len());
        let Some((&first, data)) = mosi.split_first() else {
            return miso;
        };
        miso.push(0x00);
        let write = first & 0x80 != 0;
        let mut addr = first & 0x7F;
        for &byte in data {
            if write {
                self.write_register(addr, byte);
                miso.push(0x00);
            } else {
                miso.push(self.read_register(addr));
            }
            if addr != REG_FIFO {
                addr = (addr + 1) & 0x7F;
            }
        }
        miso
    }
}

impl SimChip<Sx1276State> {
    /// The DIO0 line of this chip (each call a line with its own [`super::Wakeup`]).
    pub fn dio0(&self) -> SimDio0 {
        self.irq()
    }

    /// A packet arrives: heard only while the chip is in LoRa RX, as the chip would store it. Returns
    /// whether it was heard.
    pub fn inject(&self, packet: &[u8], rssi_dbm: f32, snr_db: f32, crc_ok: bool) -> bool {
        self.inject_with(Injection {
            bytes: packet.to_vec(),
            rssi_dbm,
            snr_db,
            crc_ok,
            crc_present: true,
        })
    }

    /// [`inject`](Self::inject) with every detail chosen.
    pub fn inject_with(&self, packet: Injection) -> bool {
        self.update(|s| {
            if !s.receiving() || packet.bytes.len() > 255 {
                s.bench.missed += 1;
                return false;
            }
            let base = s.regs[REG_FIFO_RX_BASE_ADDR as usize];
            write_wrapping(&mut s.fifo, base, &packet.bytes);
            let offset = if is_low_frequency(s.frequency_hz()) {
                -164.0
            } else {
                -157.0
            };
            let snr_raw = (packet.snr_db * 4.0).round().clamp(-128.0, 127.0) as i8;
            let snr_used = f32::from(snr_raw) / 4.0;
            let below_noise = if snr_used < 0.0 { snr_used } else { 0.0 };
            let rssi_raw = ((packet.rssi_dbm - below_noise - offset) * 15.0 / 16.0)
                .round()
                .clamp(0.0, 255.0) as u8;
            s.regs[REG_FIFO_RX_CURRENT_ADDR as usize] = base;
            s.regs[REG_RX_NB_BYTES as usize] = packet.bytes.len() as u8;
            s.regs[REG_PKT_SNR as usize] = snr_raw as u8;
            s.regs[REG_PKT_RSSI as usize] = rssi_raw;
            let hop = s.regs[REG_HOP_CHANNEL as usize] & !HOP_CRC_ON_PAYLOAD;
            s.regs[REG_HOP_CHANNEL as usize] = hop
                | if packet.crc_present {
                    HOP_CRC_ON_PAYLOAD
                } else {
                    0
                };
            let crc_error = if packet.crc_ok {
                0
            } else {
                IRQ_PAYLOAD_CRC_ERROR
            };
            s.regs[REG_IRQ_FLAGS as usize] |= IRQ_RX_DONE | IRQ_VALID_HEADER | crc_error;
            true
        })
    }

    /// A register's current value.
    pub fn register(&self, addr: u8) -> u8 {
        self.state().regs[usize::from(addr & 0x7F)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::radio::IrqLine;
    use embedded_hal::digital::OutputPin;
    use embedded_hal::spi::{Operation, SpiDevice};
    use std::time::{Duration, Instant};

    #[test]
    fn iq_polarity_needs_both_registers_and_an_inverted_receiver_misses_uplinks() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        // LoRa sleep, then RX continuous: standard polarity, an uplink is heard.
        spi.write(&[0x80 | REG_OP_MODE, 0x80]).unwrap();
        spi.write(&[0x80 | REG_OP_MODE, 0x85]).unwrap();
        assert!(chip.inject(&[1, 2, 3], -80.0, 5.0, true));
        // RegInvertIQ alone: neither polarity, nothing heard.
        spi.write(&[0x80 | REG_INVERT_IQ, 0x66]).unwrap();
        assert!(!chip.inject(&[1, 2, 3], -80.0, 5.0, true));
        spi.write(&[0x80 | REG_OP_MODE, 0x83]).unwrap();
        assert_eq!(chip.take_transmitted()[0].iq, None);
        // Both registers: an inverted receiver, which misses the standard uplinks.
        spi.write(&[0x80 | REG_INVERT_IQ2, 0x19]).unwrap();
        spi.write(&[0x80 | REG_OP_MODE, 0x85]).unwrap();
        assert!(!chip.inject(&[1, 2, 3], -80.0, 5.0, true));
        spi.write(&[0x80 | REG_OP_MODE, 0x83]).unwrap();
        assert_eq!(chip.take_transmitted()[0].iq, Some(IqPolarity::Inverted));
    }

    #[test]
    fn the_trace_is_off_by_default_and_a_capped_ring_when_on() {
        let quiet = Sx1276Sim::new();
        let mut spi = quiet.spi();
        for _ in 0..10 {
            spi.write(&[0x42, 0x00]).unwrap();
        }
        quiet.reset_pin().set_low().unwrap();
        assert!(quiet.trace().is_empty());
        assert_eq!(quiet.trace_dropped(), 0);

        let traced = Sx1276Sim::with_trace();
        let mut spi = traced.spi();
        for i in 0..TRACE_CAPACITY + 5 {
            spi.write(&[0x80 | REG_FIFO_ADDR_PTR, i as u8]).unwrap();
        }
        let trace = traced.trace();
        assert_eq!(trace.len(), TRACE_CAPACITY);
        assert_eq!(traced.trace_dropped(), 5);
        assert_eq!(
            trace[0],
            Trace::Spi {
                mosi: vec![0x80 | REG_FIFO_ADDR_PTR, 5],
                miso: vec![0, 0]
            },
            "the oldest entries go first"
        );
        traced.clear_trace();
        assert!(traced.trace().is_empty());
        assert_eq!(traced.trace_dropped(), 0);
        spi.write(&[0x42, 0x00]).unwrap();
        assert_eq!(traced.trace().len(), 1, "still on after a clear");
    }

    #[test]
    fn a_wait_on_dio0_ends_on_an_injection_or_the_wakeup_not_a_timeout() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        spi.write(&[0x81, 0x80]).unwrap();
        spi.write(&[0x81, 0x85]).unwrap(); // LoRa RX continuous, DIO0 mapped to RxDone
        let mut dio0 = chip.dio0();
        let sender = chip.clone();
        let started = Instant::now();
        let injector = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sender.inject(&[1, 2, 3], -80.0, 7.0, true)
        });
        assert!(dio0.wait_high(Duration::from_secs(30)).unwrap());
        assert!(injector.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(10));
        spi.write(&[0x80 | REG_IRQ_FLAGS, 0xFF]).unwrap();

        let wakeup = dio0.wakeup();
        let started = Instant::now();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            wakeup.wake();
        });
        assert!(!dio0.wait_high(Duration::from_secs(30)).unwrap());
        waker.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            !dio0.wait_high(Duration::from_secs(30)).unwrap(),
            "woken for good: returns at once"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            !chip.dio0().wakeup().is_woken(),
            "a new line has its own wakeup"
        );
    }

    #[test]
    fn registers_auto_increment_and_the_fifo_walks_its_pointer() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        let mut frf = [0u8; 3];
        spi.transaction(&mut [Operation::Write(&[0x06]), Operation::Read(&mut frf)])
            .unwrap();
        assert_eq!(frf, [0x6C, 0x80, 0x00]);
        spi.write(&[0x80 | REG_FIFO_ADDR_PTR, 0x10]).unwrap();
        spi.write(&[0x80, 1, 2, 3]).unwrap();
        spi.write(&[0x80 | REG_FIFO_ADDR_PTR, 0x10]).unwrap();
        let mut back = [0u8; 3];
        spi.transaction(&mut [Operation::Write(&[0x00]), Operation::Read(&mut back)])
            .unwrap();
        assert_eq!(back, [1, 2, 3]);
    }

    #[test]
    fn the_lora_bit_changes_only_in_sleep() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        spi.write(&[0x81, 0x81]).unwrap(); // standby, not sleep: the LoRa bit is ignored
        assert_eq!(chip.register(REG_OP_MODE), 0x01);
        spi.write(&[0x81, 0x80]).unwrap(); // into (FSK) sleep: still ignored, the chip was in standby
        spi.write(&[0x81, 0x80]).unwrap();
        assert_eq!(chip.register(REG_OP_MODE), 0x80);
    }

    #[test]
    fn flags_clear_on_write_one_and_reset_restores_values() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        spi.write(&[0x81, 0x80]).unwrap();
        spi.write(&[0x81, 0x85]).unwrap();
        assert!(chip.inject(&[1, 2], -80.0, 7.0, false));
        assert_eq!(chip.register(REG_IRQ_FLAGS), 0x70);
        spi.write(&[0x80 | REG_IRQ_FLAGS, 0x20]).unwrap();
        assert_eq!(chip.register(REG_IRQ_FLAGS), 0x50);
        assert!(chip.dio0().is_high().unwrap());
        spi.write(&[0x80 | REG_IRQ_FLAGS, 0xFF]).unwrap();
        assert!(!chip.dio0().is_high().unwrap());
        let mut reset = chip.reset_pin();
        reset.set_low().unwrap();
        reset.set_high().unwrap();
        assert_eq!(chip.register(REG_OP_MODE), 0x09);
        assert!(
            !chip.inject(&[1], -80.0, 7.0, true),
            "not in RX after reset"
        );
        assert_eq!(chip.missed(), 1);
    }
}
