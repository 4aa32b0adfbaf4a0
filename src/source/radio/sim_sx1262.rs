//! A simulated SX1262 behind the same traits as the hardware: it IS the `SpiDevice`, the reset
//! `OutputPin`, the DIO1 [`IrqLine`] and the [`BusyLine`]. It models the command set a receiver uses
//! (opcode, parameter counts, the status byte on the NOP, the reads' response layout), BUSY high after
//! reset and after every command until the driver waits for it, the chip modes, the order the datasheet
//! requires (packet type set in standby before modulation and packet parameters), the 256-byte buffer,
//! registers (sync word, IQ polarity), the IRQ status with ClearIrqStatus and the DIO1 mask, packets heard
//! only in LoRa RX, a chip that stops answering or loses its configuration, a stuck DIO1 and a stuck BUSY,
//! and, when a test asks for it ([`Sx1262Sim::with_trace`]), a capped log of the SPI transactions. The
//! protocol violations it records are capped too ([`MAX_VIOLATIONS`]). Transmit: SetTx (from standby,
//! after SetPaConfig) sends the packet length of the last SetPacketParams from the TX base address onto
//! the simulated air at once (a capped log, [`Sx1262Sim::transmitted`]), raises TxDone and returns to
//! STDBY_RC, as the chip does after its time on air. It never models timing, GFSK or the air's losses.
//!
//! Bug classes it catches: a command sent without waiting for BUSY (the real chip ignores it), wrong
//! parameter counts or encodings (golden traces), setup steps out of order, a wrong response offset
//! (reading the status byte as data), IRQ flags never cleared (DIO1 stays high), CRC and header errors
//! passed on as packets, RSSI/SNR scaling mistakes, and the recovery path; on the transmit side, SetTx
//! outside standby or without SetPaConfig, the wrong packet length or buffer offset, TxDone not routed
//! to DIO1, and a chip left in standby after a transmission (the next packets are missed). IQ polarity:
//! a transmission carries the polarity SetPacketParams' InvertIQ and register 0x0736 give it (none when
//! they disagree), and the chip hears the simulated senders' standard uplinks only while both are back
//! at standard.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::hal::{BusyLine, IqPolarity};
use super::sim_chip::{
    read_wrapping, write_wrapping, Bench, Buffer, ChipState, SimChip, SimIrq, Transmitted,
};
use super::sx1262::*;
use super::RadioError;

/// Protocol violations kept (the first ones: they say what went wrong first); later ones are only counted.
pub const MAX_VIOLATIONS: usize = 256;

/// The simulated SX1262. Clones share one chip; hand [`spi`](SimChip::spi),
/// [`reset_pin`](SimChip::reset_pin), [`dio1`](SimChip::dio1) and [`busy`](SimChip::busy) to the driver,
/// keep a clone to inject packets and faults.
pub type Sx1262Sim = SimChip<Sx1262State>;

/// The simulated DIO1 line.
pub type SimDio1 = SimIrq<Sx1262State>;

/// Register reset values the simulator knows. 0x0736's is the simulator's own choice (bit 2 clear),
/// so that the errata read-modify-write shows in traces; the datasheet does not list it.
fn reset_registers() -> BTreeMap<u16, u8> {
    BTreeMap::from([
        (REG_SYNC_WORD, 0x14),
        (REG_SYNC_WORD + 1, 0x24),
        (REG_IQ_POLARITY, 0x09),
    ])
}

/// The SX1262's own state: modes, buffer, registers, IRQ status, what it recorded, and the bench
/// around it.
#[derive(Debug)]
pub struct Sx1262State {
    mode: u8,
    command_status: u8,
    packet_type: u8,
    busy: bool,
    busy_stuck: bool,
    irq: u16,
    dio1_mask: u16,
    buffer: Buffer,
    rx_base: u8,
    rx_start: u8,
    rx_len: u8,
    rssi_pkt: u8,
    snr_pkt: u8,
    registers: BTreeMap<u16, u8>,
    violations: Vec<String>,
    violations_dropped: u64,
    tx_base: u8,
    /// The payload length of the last SetPacketParams.
    payload_len: u8,
    /// The InvertIQ byte of the last SetPacketParams.
    invert_iq: bool,
    pa_configured: bool,
    frequency_hz: u32,
    bench: Bench,
}

impl Sx1262State {
    fn status(&self) -> u8 {
        (self.mode << 4) | (self.command_status << 1)
    }

    /// The polarity SetPacketParams' InvertIQ and register 0x0736 bit 2 (errata 15.4: set for standard,
    /// clear for inverted) give the chirps; `None` when they disagree.
    fn polarity(&self) -> Option<IqPolarity> {
        let fix = self.registers.get(&REG_IQ_POLARITY).copied().unwrap_or(0) & 0x04;
        match (self.invert_iq, fix) {
            (false, 0x04) => Some(IqPolarity::Standard),
            (true, 0x00) => Some(IqPolarity::Inverted),
            _ => None,
        }
    }

    /// In LoRa RX with the standard polarity (what every sender in the simulation uses).
    fn receiving(&self) -> bool {
        self.bench.answering()
            && self.mode == MODE_RX
            && self.packet_type == PACKET_TYPE_LORA
            && self.polarity() == Some(IqPolarity::Standard)
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(what);
        } else {
            self.violations_dropped += 1;
        }
    }

    /// The answer to one chip-select window, computed before the command takes effect.
    fn respond(&mut self, mosi: &[u8]) -> Vec<u8> {
        let status = self.status();
        let mut miso = vec![status; mosi.len()];
        if let Some(first) = miso.first_mut() {
            *first = 0x00; // RFU while the opcode is clocked in
        }
        let data_from = |header: usize, data: &[u8], miso: &mut Vec<u8>| {
            for (i, slot) in miso.iter_mut().enumerate().skip(header) {
                *slot = data.get(i - header).copied().unwrap_or(0);
            }
        };
        match mosi.first().copied() {
            Some(OP_GET_IRQ_STATUS) => data_from(2, &self.irq.to_be_bytes(), &mut miso),
            Some(OP_GET_RX_BUFFER_STATUS) => data_from(2, &[self.rx_len, self.rx_start], &mut miso),
            Some(OP_GET_PACKET_STATUS) => {
                data_from(2, &[self.rssi_pkt, self.snr_pkt, self.rssi_pkt], &mut miso)
            }
            Some(OP_GET_PACKET_TYPE) => data_from(2, &[self.packet_type], &mut miso),
            Some(OP_READ_REGISTER) if mosi.len() >= 4 => {
                let addr = u16::from_be_bytes([mosi[1], mosi[2]]);
                let values: Vec<u8> = (0..mosi.len() - 4)
                    .map(|i| {
                        let a = addr.wrapping_add(i as u16);
                        self.registers.get(&a).copied().unwrap_or(0)
                    })
                    .collect();
                data_from(4, &values, &mut miso);
            }
            Some(OP_READ_BUFFER) if mosi.len() >= 3 => {
                let offset = mosi[1];
                let values = read_wrapping(&self.buffer, offset, mosi.len() - 3);
                data_from(3, &values, &mut miso);
            }
            _ => {}
        }
        miso
    }

    /// Carries out a command once chip select rises: refused (and recorded) when the opcode is unknown
    /// or its parameters the wrong length, else applied.
    fn execute(&mut self, mosi: &[u8]) {
        let Some((&opcode, params)) = mosi.split_first() else {
            return;
        };
        match parameter_counts(opcode) {
            Parameters::UnknownOpcode => {
                self.violation(format!("unknown opcode {opcode:#04x}"));
                self.command_status = 0x5;
                return;
            }
            Parameters::Count(range) if !range.contains(&params.len()) => {
                self.violation(format!(
                    "opcode {opcode:#04x} with {} parameter bytes, expected {range:?}",
                    params.len()
                ));
                self.command_status = 0x4;
                return;
            }
            Parameters::Count(_) | Parameters::Any => {}
        }
        self.apply(opcode, params);
    }

    /// What a well-formed command does, given the mode and the setup order the datasheet requires.
    fn apply(&mut self, opcode: u8, params: &[u8]) {
        let standby = matches!(self.mode, MODE_STBY_RC | MODE_STBY_XOSC);
        match opcode {
            OP_SET_STANDBY => {
                self.mode = if params[0] == 0 {
                    MODE_STBY_RC
                } else {
                    MODE_STBY_XOSC
                }
            }
            OP_SET_DIO3_AS_TCXO_CTRL | OP_CALIBRATE | OP_SET_PACKET_TYPE if !standby => {
                self.violation(format!("opcode {opcode:#04x} outside standby"));
            }
            OP_SET_PACKET_TYPE => self.packet_type = params[0],
            OP_SET_MODULATION_PARAMS | OP_SET_PACKET_PARAMS | OP_SET_RX | OP_SET_TX
                if self.packet_type != PACKET_TYPE_LORA =>
            {
                self.violation(format!("opcode {opcode:#04x} before SetPacketType(LoRa)"));
            }
            OP_SET_TX if !standby => {
                self.violation(format!("SetTx in mode {} (not standby)", self.mode));
            }
            OP_SET_TX if !self.pa_configured => {
                self.violation("SetTx before SetPaConfig".to_string());
            }
            OP_SET_TX => {
                let bytes =
                    read_wrapping(&self.buffer, self.tx_base, usize::from(self.payload_len));
                let frequency_hz = self.frequency_hz;
                let iq = self.polarity();
                self.bench.tx.push(Transmitted {
                    bytes,
                    frequency_hz,
                    iq,
                    at: std::time::Instant::now(),
                });
                self.irq |= IRQ_TX_DONE;
                self.mode = MODE_STBY_RC;
            }
            OP_SET_PA_CONFIG => self.pa_configured = true,
            OP_SET_RF_FREQUENCY => {
                let frf = u32::from_be_bytes([params[0], params[1], params[2], params[3]]);
                self.frequency_hz = ((u64::from(frf) * 32_000_000) >> 25) as u32;
            }
            OP_SET_PACKET_PARAMS => {
                self.payload_len = params[3];
                self.invert_iq = params[5] == 0x01;
            }
            OP_SET_BUFFER_BASE_ADDRESS => {
                self.tx_base = params[0];
                self.rx_base = params[1];
            }
            OP_WRITE_REGISTER => {
                let addr = u16::from_be_bytes([params[0], params[1]]);
                for (i, &value) in params[2..].iter().enumerate() {
                    self.registers.insert(addr.wrapping_add(i as u16), value);
                }
            }
            OP_WRITE_BUFFER => {
                write_wrapping(&mut self.buffer, params[0], &params[1..]);
            }
            OP_SET_DIO_IRQ_PARAMS => self.dio1_mask = u16::from_be_bytes([params[2], params[3]]),
            OP_SET_RX => self.mode = MODE_RX,
            OP_CLEAR_IRQ_STATUS => self.irq &= !u16::from_be_bytes([params[0], params[1]]),
            OP_GET_STATUS => self.command_status = 0,
            _ => {}
        }
    }
}

impl ChipState for Sx1262State {
    fn powered_on() -> Self {
        Sx1262State {
            mode: MODE_STBY_RC,
            command_status: 0,
            packet_type: 0,
            busy: true,
            busy_stuck: false,
            irq: 0,
            dio1_mask: 0,
            buffer: [0; 256],
            rx_base: 0,
            rx_start: 0,
            rx_len: 0,
            rssi_pkt: 0,
            snr_pkt: 0,
            registers: reset_registers(),
            violations: Vec::new(),
            violations_dropped: 0,
            tx_base: 0,
            payload_len: 0,
            invert_iq: false,
            pa_configured: false,
            frequency_hz: 0,
            bench: Bench::default(),
        }
    }

    fn bench(&self) -> &Bench {
        &self.bench
    }

    fn bench_mut(&mut self) -> &mut Bench {
        &mut self.bench
    }

    /// Back to the reset state, keeping the bench, the violations and a stuck BUSY.
    fn reset(&mut self) {
        let fresh = Sx1262State {
            bench: std::mem::take(&mut self.bench),
            violations: std::mem::take(&mut self.violations),
            violations_dropped: self.violations_dropped,
            busy_stuck: self.busy_stuck,
            ..Sx1262State::powered_on()
        };
        *self = fresh;
    }

    /// DIO1 from the IRQ status through its mask.
    fn irq_raised(&self) -> bool {
        self.irq & self.dio1_mask != 0
    }

    /// One chip-select window: ignored while BUSY is high; otherwise answered, then carried out.
    fn exchange(&mut self, mosi: &[u8]) -> Vec<u8> {
        if self.busy {
            let opcode = mosi.first().copied().unwrap_or(0);
            self.violation(format!(
                "opcode {opcode:#04x} sent while BUSY was high (ignored)"
            ));
            return vec![0; mosi.len()];
        }
        let miso = self.respond(mosi);
        self.execute(mosi);
        self.busy = true;
        miso
    }
}

/// The parameter bytes a command takes.
enum Parameters {
    Count(RangeInclusive<usize>),
    /// A read: as many bytes as the response is long.
    Any,
    /// An opcode the chip does not know.
    UnknownOpcode,
}

fn parameter_counts(opcode: u8) -> Parameters {
    match opcode {
        OP_SET_STANDBY
        | OP_CALIBRATE
        | OP_SET_REGULATOR_MODE
        | OP_SET_DIO2_AS_RF_SWITCH_CTRL
        | OP_SET_PACKET_TYPE => Parameters::Count(1..=1),
        OP_SET_DIO3_AS_TCXO_CTRL | OP_SET_RF_FREQUENCY | OP_SET_PA_CONFIG => {
            Parameters::Count(4..=4)
        }
        OP_CALIBRATE_IMAGE
        | OP_SET_BUFFER_BASE_ADDRESS
        | OP_CLEAR_IRQ_STATUS
        | OP_SET_TX_PARAMS => Parameters::Count(2..=2),
        OP_SET_TX => Parameters::Count(3..=3),
        OP_SET_MODULATION_PARAMS => Parameters::Count(4..=8),
        OP_SET_PACKET_PARAMS => Parameters::Count(6..=9),
        OP_SET_DIO_IRQ_PARAMS => Parameters::Count(8..=8),
        OP_SET_RX => Parameters::Count(3..=3),
        OP_WRITE_REGISTER => Parameters::Count(3..=255),
        OP_WRITE_BUFFER => Parameters::Count(2..=256),
        OP_GET_STATUS
        | OP_GET_IRQ_STATUS
        | OP_GET_RX_BUFFER_STATUS
        | OP_GET_PACKET_STATUS
        | OP_GET_PACKET_TYPE
        | OP_READ_REGISTER
        | OP_READ_BUFFER => Parameters::Any,
        _ => Parameters::UnknownOpcode,
    }
}

impl SimChip<Sx1262State> {
    /// The DIO1 line of this chip (each call a line with its own [`super::Wakeup`]).
    pub fn dio1(&self) -> SimDio1 {
        self.irq()
    }

    /// The BUSY line of this chip.
    pub fn busy(&self) -> SimBusy {
        SimBusy { chip: self.clone() }
    }

    /// A packet arrives: heard only in LoRa RX. Sets RxDone (and CrcErr when `crc_ok` is false).
    pub fn inject(&self, packet: &[u8], rssi_dbm: f32, snr_db: f32, crc_ok: bool) -> bool {
        self.update(|s| {
            if !s.receiving() || packet.len() > 255 {
                s.bench.missed += 1;
                return false;
            }
            write_wrapping(&mut s.buffer, s.rx_base, packet);
            s.rx_start = s.rx_base;
            s.rx_len = packet.len() as u8;
            s.rssi_pkt = (-rssi_dbm * 2.0).round().clamp(0.0, 255.0) as u8;
            s.snr_pkt = (snr_db * 4.0).round().clamp(-128.0, 127.0) as i8 as u8;
            s.irq |= IRQ_RX_DONE | IRQ_HEADER_VALID | if crc_ok { 0 } else { IRQ_CRC_ERROR };
            s.command_status = 0x2;
            true
        })
    }

    /// A corrupted LoRa header: HeaderErr, no RxDone.
    pub fn inject_header_error(&self) -> bool {
        self.update(|s| {
            if !s.receiving() {
                s.bench.missed += 1;
                return false;
            }
            s.irq |= IRQ_HEADER_ERROR;
            true
        })
    }

    /// Holds BUSY high.
    pub fn stick_busy(&self, stuck: bool) {
        self.update(|s| s.busy_stuck = stuck);
    }

    /// The current IRQ status bits.
    pub fn irq_status(&self) -> u16 {
        self.state().irq
    }

    /// A register's current value.
    pub fn register(&self, addr: u16) -> u8 {
        self.state().registers.get(&addr).copied().unwrap_or(0)
    }

    /// Protocol violations seen: commands while BUSY, wrong parameter counts, steps out of order (the
    /// first [`MAX_VIOLATIONS`]).
    pub fn violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// Violations seen beyond the first [`MAX_VIOLATIONS`].
    pub fn violations_dropped(&self) -> u64 {
        self.state().violations_dropped
    }
}

/// The simulated BUSY line: the chip finishes its work when the driver waits for it, unless stuck.
#[derive(Debug, Clone)]
pub struct SimBusy {
    chip: Sx1262Sim,
}

impl BusyLine for SimBusy {
    fn wait_low(&mut self, timeout: Duration) -> Result<bool, RadioError> {
        let low = self.chip.wait_until(timeout, None, |s| !s.busy_stuck);
        if low {
            self.chip.update(|s| s.busy = false);
        }
        Ok(low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::radio::IrqLine;
    use embedded_hal::spi::{Operation, SpiDevice};

    #[test]
    fn commands_without_waiting_for_busy_are_ignored_and_recorded() {
        let chip = Sx1262Sim::new();
        let mut spi = chip.spi();
        spi.write(&[OP_SET_PACKET_TYPE, PACKET_TYPE_LORA]).unwrap();
        assert_eq!(chip.violations().len(), 1, "{:?}", chip.violations());
        let mut busy = chip.busy();
        assert!(busy.wait_low(Duration::from_millis(10)).unwrap());
        spi.write(&[OP_SET_PACKET_TYPE, PACKET_TYPE_LORA]).unwrap();
        assert!(busy.wait_low(Duration::from_millis(10)).unwrap());
        let mut response = [0u8; 2];
        spi.transaction(&mut [
            Operation::Write(&[OP_GET_PACKET_TYPE]),
            Operation::Read(&mut response),
        ])
        .unwrap();
        assert_eq!(response, [MODE_STBY_RC << 4, PACKET_TYPE_LORA]);
        assert_eq!(chip.violations().len(), 1);
    }

    #[test]
    fn violations_are_capped_and_counted_and_the_trace_is_opt_in() {
        let chip = Sx1262Sim::new();
        let mut spi = chip.spi();
        for _ in 0..MAX_VIOLATIONS + 3 {
            spi.write(&[OP_SET_PACKET_TYPE, PACKET_TYPE_LORA]).unwrap(); // BUSY is high: a violation
        }
        assert_eq!(chip.violations().len(), MAX_VIOLATIONS);
        assert_eq!(chip.violations_dropped(), 3);
        assert!(chip.trace().is_empty());

        let traced = Sx1262Sim::with_trace();
        traced.busy().wait_low(Duration::ZERO).unwrap();
        traced.spi().write(&[OP_GET_STATUS, 0]).unwrap();
        assert_eq!(traced.trace().len(), 1);
        assert_eq!(traced.trace_dropped(), 0);
    }

    #[test]
    fn out_of_order_setup_and_wrong_lengths_are_violations() {
        let chip = Sx1262Sim::new();
        let mut spi = chip.spi();
        let mut busy = chip.busy();
        busy.wait_low(Duration::ZERO).unwrap();
        spi.write(&[OP_SET_MODULATION_PARAMS, 7, 4, 1, 0]).unwrap();
        busy.wait_low(Duration::ZERO).unwrap();
        spi.write(&[OP_SET_RX, 0xFF, 0xFF]).unwrap();
        let violations = chip.violations();
        assert!(
            violations[0].contains("before SetPacketType"),
            "{violations:?}"
        );
        assert!(violations[1].contains("parameter bytes"), "{violations:?}");
    }

    #[test]
    fn irq_status_clears_by_mask_and_drives_dio1() {
        let chip = Sx1262Sim::new();
        let mut spi = chip.spi();
        let mut busy = chip.busy();
        for command in [
            vec![OP_SET_PACKET_TYPE, 1],
            // Errata 15.4: the standard IQ polarity, without which the simulated chip hears nothing.
            vec![OP_WRITE_REGISTER, 0x07, 0x36, 0x0D],
            vec![OP_SET_DIO_IRQ_PARAMS, 0x02, 0x62, 0x02, 0x62, 0, 0, 0, 0],
            vec![OP_SET_RX, 0xFF, 0xFF, 0xFF],
        ] {
            busy.wait_low(Duration::ZERO).unwrap();
            spi.write(&command).unwrap();
        }
        assert!(chip.inject(&[1, 2, 3], -90.0, -5.0, false));
        assert_eq!(
            chip.irq_status(),
            IRQ_RX_DONE | IRQ_HEADER_VALID | IRQ_CRC_ERROR
        );
        assert!(chip.dio1().is_high().unwrap());
        busy.wait_low(Duration::ZERO).unwrap();
        spi.write(&[OP_CLEAR_IRQ_STATUS, 0x00, 0x42]).unwrap();
        assert_eq!(chip.irq_status(), IRQ_HEADER_VALID);
        assert!(
            !chip.dio1().is_high().unwrap(),
            "HeaderValid is not routed to DIO1"
        );
        assert!(chip.violations().is_empty(), "{:?}", chip.violations());
    }
}
