//! SX1262 LoRa driver, command level, over an embedded-hal 1.0 `SpiDevice`, a reset `OutputPin`, the
//! DIO1 [`IrqLine`] and the [`BusyLine`]: reset, a status check, the receive setup as an ordered list of
//! commands ([`configuration_commands`], the golden trace), continuous receive, and on DIO1 the packet
//! with RSSI and SNR, or a CRC/header error. Commands go out through [`Radio::transmit`]
//! ([`transmit_steps`] until TxDone on DIO1, then [`after_transmit_steps`] back to continuous
//! receive), at [`TX_POWER_DBM`] on the high-power PA. Every command waits for BUSY low first. It never
//! uses the GFSK modem; it runs on the radio source's own thread.
//!
//! Command facts follow Semtech's SX1261/2 datasheet and LoRaMac-node `sx126x.c`, including errata 15.4
//! (IQ polarity register 0x0736) and the image-calibration bands.

use std::time::Duration;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::{Operation, SpiDevice};

use super::hal::{
    pin_err, spi_err, tx_done_timeout, BusyLine, IqPolarity, IrqLine, Radio, Received, RxEvent,
    Wakeup,
};
use super::{
    low_data_rate_optimize, tcxo_code, time_on_air, RadioError, RadioSettings, BANDWIDTHS_HZ,
};

pub const OP_CLEAR_IRQ_STATUS: u8 = 0x02;
pub const OP_SET_DIO_IRQ_PARAMS: u8 = 0x08;
pub const OP_WRITE_REGISTER: u8 = 0x0D;
pub const OP_WRITE_BUFFER: u8 = 0x0E;
pub const OP_GET_PACKET_TYPE: u8 = 0x11;
pub const OP_GET_IRQ_STATUS: u8 = 0x12;
pub const OP_GET_RX_BUFFER_STATUS: u8 = 0x13;
pub const OP_GET_PACKET_STATUS: u8 = 0x14;
pub const OP_READ_REGISTER: u8 = 0x1D;
pub const OP_READ_BUFFER: u8 = 0x1E;
pub const OP_SET_STANDBY: u8 = 0x80;
pub const OP_SET_RX: u8 = 0x82;
pub const OP_SET_TX: u8 = 0x83;
pub const OP_SET_TX_PARAMS: u8 = 0x8E;
pub const OP_SET_PA_CONFIG: u8 = 0x95;
pub const OP_SET_RF_FREQUENCY: u8 = 0x86;
pub const OP_CALIBRATE: u8 = 0x89;
pub const OP_SET_PACKET_TYPE: u8 = 0x8A;
pub const OP_SET_MODULATION_PARAMS: u8 = 0x8B;
pub const OP_SET_PACKET_PARAMS: u8 = 0x8C;
pub const OP_SET_BUFFER_BASE_ADDRESS: u8 = 0x8F;
pub const OP_SET_REGULATOR_MODE: u8 = 0x96;
pub const OP_SET_DIO3_AS_TCXO_CTRL: u8 = 0x97;
pub const OP_CALIBRATE_IMAGE: u8 = 0x98;
pub const OP_SET_DIO2_AS_RF_SWITCH_CTRL: u8 = 0x9D;
pub const OP_GET_STATUS: u8 = 0xC0;

pub const REG_IQ_POLARITY: u16 = 0x0736;
pub const REG_SYNC_WORD: u16 = 0x0740;
/// Errata 15.1: bit 2 of this register must be clear at 500 kHz and set at every other bandwidth, before
/// each transmission.
pub const REG_TX_MODULATION: u16 = 0x0889;

pub const IRQ_TX_DONE: u16 = 0x0001;

pub const IRQ_RX_DONE: u16 = 0x0002;
pub const IRQ_HEADER_VALID: u16 = 0x0010;
pub const IRQ_HEADER_ERROR: u16 = 0x0020;
pub const IRQ_CRC_ERROR: u16 = 0x0040;
pub const IRQ_TIMEOUT: u16 = 0x0200;

/// `PacketType` LoRa.
pub const PACKET_TYPE_LORA: u8 = 0x01;
/// Chip modes in bits 6:4 of the status byte.
pub const MODE_STBY_RC: u8 = 0x2;
pub const MODE_STBY_XOSC: u8 = 0x3;
pub const MODE_RX: u8 = 0x5;

/// BUSY stays high for up to ~3.5 ms after a full calibration; anything far beyond that is a fault.
const BUSY_TIMEOUT: Duration = Duration::from_millis(100);
/// The TCXO start-up delay SetDIO3AsTCXOCtrl is given: 5 ms in 15.625 us steps.
const TCXO_DELAY_STEPS: u32 = 320;
const STUCK_IRQ_STRIKES: u8 = 3;

/// `RfFreq` for a frequency: round(f * 2^25 / 32 MHz), 32 bits.
pub fn frf(frequency_hz: u32) -> u32 {
    let scaled = (u64::from(frequency_hz) << 25) + 16_000_000;
    (scaled / 32_000_000) as u32
}

/// The bandwidth's code in SetModulationParams.
fn bandwidth_code(bandwidth_hz: u32) -> u8 {
    const CODES: [u8; 10] = [0x00, 0x08, 0x01, 0x09, 0x02, 0x0A, 0x03, 0x04, 0x05, 0x06];
    BANDWIDTHS_HZ
        .iter()
        .position(|&b| b == bandwidth_hz)
        .map(|i| CODES[i])
        .unwrap_or(0x04)
}

/// CalibrateImage's two frequency bytes: the datasheet's bands (LoRaMac-node's thresholds); below
/// 425 MHz a 4 MHz-step window around the frequency, as the datasheet's formula gives.
pub fn image_calibration(frequency_hz: u32) -> [u8; 2] {
    match frequency_hz {
        f if f > 900_000_000 => [0xE1, 0xE9],
        f if f > 850_000_000 => [0xD7, 0xDB],
        f if f > 770_000_000 => [0xC1, 0xC5],
        f if f > 460_000_000 => [0x75, 0x81],
        f if f > 425_000_000 => [0x6B, 0x6F],
        f => {
            let mhz = f / 1_000_000;
            [
                (mhz.saturating_sub(4) / 4).min(255) as u8,
                ((mhz + 4).div_ceil(4)).min(255) as u8,
            ]
        }
    }
}

/// The two sync-word register bytes for a one-byte LoRa sync word (0x12 -> 14 24, 0x34 -> 34 44).
pub fn sync_word_registers(sync_word: u8) -> [u8; 2] {
    [(sync_word & 0xF0) | 0x04, ((sync_word & 0x0F) << 4) | 0x04]
}

/// Transmit power, dBm: 14, the EU868 limit for the 868.0-868.6 MHz band and within every other region's.
pub const TX_POWER_DBM: u8 = 14;
/// SetTxParams' ramp time code: 200 us.
const RAMP_200_US: u8 = 0x04;

/// One step of the setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A command: opcode and parameters.
    Command(Vec<u8>),
    /// Errata 15.4: read register 0x0736, set bit 2 for the standard IQ polarity or clear it for the
    /// inverted one, write it back.
    IqPolarityFix(IqPolarity),
    /// Errata 15.1: read register 0x0889, clear bit 2 at 500 kHz or set it otherwise, write it back.
    TxModulationFix,
}

/// The interrupts routed to DIO1 while receiving.
const RX_IRQ_MASK: u16 = IRQ_RX_DONE | IRQ_HEADER_ERROR | IRQ_CRC_ERROR | IRQ_TIMEOUT;
/// ... and while transmitting.
const TX_IRQ_MASK: u16 = IRQ_TX_DONE | IRQ_TIMEOUT;

fn dio_irq_params(mask: u16) -> Vec<u8> {
    let [m1, m0] = mask.to_be_bytes();
    vec![
        OP_SET_DIO_IRQ_PARAMS,
        m1,
        m0,
        m1,
        m0,
        0x00,
        0x00,
        0x00,
        0x00,
    ]
}

/// SetPacketParams: explicit header, `payload_len` (the maximum while receiving), CRC on, and the IQ
/// polarity (0x00 standard, 0x01 inverted).
fn packet_params(settings: &RadioSettings, payload_len: u8, polarity: IqPolarity) -> Vec<u8> {
    let [p1, p0] = settings.preamble_len.to_be_bytes();
    let invert_iq = u8::from(polarity == IqPolarity::Inverted);
    vec![
        OP_SET_PACKET_PARAMS,
        p1,
        p0,
        0x00,
        payload_len,
        0x01,
        invert_iq,
    ]
}

/// From continuous receive to transmitting `payload`: STDBY_RC, the high-power PA (SetPaConfig with
/// `04 07 00 01`) at [`TX_POWER_DBM`], the payload at buffer offset 0, its length, TxDone and Timeout on
/// DIO1, the errata 15.1 fix, SetTx without the chip's own timeout (the driver bounds the wait). An
/// inverted transmission sets InvertIQ in SetPacketParams and clears bit 2 of 0x0736 (errata 15.4). The
/// chip returns to STDBY_RC by itself after TxDone.
pub fn transmit_steps(settings: &RadioSettings, payload: &[u8], polarity: IqPolarity) -> Vec<Step> {
    let mut buffer = vec![OP_WRITE_BUFFER, 0x00];
    buffer.extend_from_slice(payload);
    let mut steps = vec![
        Step::Command(vec![OP_SET_STANDBY, 0x00]),
        Step::Command(vec![OP_SET_PA_CONFIG, 0x04, 0x07, 0x00, 0x01]),
        Step::Command(vec![OP_SET_TX_PARAMS, TX_POWER_DBM, RAMP_200_US]),
        Step::Command(buffer),
        Step::Command(packet_params(settings, payload.len() as u8, polarity)),
    ];
    if polarity == IqPolarity::Inverted {
        steps.push(Step::IqPolarityFix(IqPolarity::Inverted));
    }
    steps.extend([
        Step::Command(dio_irq_params(TX_IRQ_MASK)),
        Step::TxModulationFix,
        Step::Command(vec![OP_SET_TX, 0x00, 0x00, 0x00]),
    ]);
    steps
}

/// After TxDone (and reading the IRQ status), back to what [`configuration_commands`] left: flags
/// cleared, the maximum payload length with the standard IQ polarity (and, after an inverted
/// transmission, 0x0736's bit 2 set again), the receive interrupts on DIO1, continuous receive.
pub fn after_transmit_steps(settings: &RadioSettings, polarity: IqPolarity) -> Vec<Step> {
    let mut steps = vec![
        Step::Command(vec![OP_CLEAR_IRQ_STATUS, 0xFF, 0xFF]),
        Step::Command(packet_params(settings, 0xFF, IqPolarity::Standard)),
    ];
    if polarity == IqPolarity::Inverted {
        steps.push(Step::IqPolarityFix(IqPolarity::Standard));
    }
    steps.extend([
        Step::Command(dio_irq_params(RX_IRQ_MASK)),
        Step::Command(vec![OP_SET_RX, 0xFF, 0xFF, 0xFF]),
    ]);
    steps
}

/// The receive setup after reset, standby and the status check, as the ordered list of steps that
/// [`Sx1262::init`](Radio::init) performs.
pub fn configuration_commands(settings: &RadioSettings) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut command = |bytes: &[u8]| steps.push(Step::Command(bytes.to_vec()));
    if let Some(code) = settings.tcxo_voltage.and_then(tcxo_code) {
        let [_, d2, d1, d0] = TCXO_DELAY_STEPS.to_be_bytes();
        command(&[OP_SET_DIO3_AS_TCXO_CTRL, code, d2, d1, d0]);
        // With the TCXO now the reference, calibrate every block again.
        command(&[OP_CALIBRATE, 0x7F]);
    }
    command(&[OP_SET_REGULATOR_MODE, 0x01]);
    if settings.dio2_rf_switch {
        command(&[OP_SET_DIO2_AS_RF_SWITCH_CTRL, 0x01]);
    }
    command(&[OP_SET_PACKET_TYPE, PACKET_TYPE_LORA]);
    let [cal1, cal2] = image_calibration(settings.frequency_hz);
    command(&[OP_CALIBRATE_IMAGE, cal1, cal2]);
    let [f3, f2, f1, f0] = frf(settings.frequency_hz).to_be_bytes();
    command(&[OP_SET_RF_FREQUENCY, f3, f2, f1, f0]);
    command(&[OP_SET_BUFFER_BASE_ADDRESS, 0x00, 0x00]);
    let ldro = low_data_rate_optimize(settings.spreading_factor, settings.bandwidth_hz);
    command(&[
        OP_SET_MODULATION_PARAMS,
        settings.spreading_factor,
        bandwidth_code(settings.bandwidth_hz),
        settings.coding_rate.saturating_sub(4),
        u8::from(ldro),
    ]);
    let [p1, p0] = settings.preamble_len.to_be_bytes();
    // Explicit header, maximum length, CRC on, standard IQ.
    command(&[OP_SET_PACKET_PARAMS, p1, p0, 0x00, 0xFF, 0x01, 0x00]);
    steps.push(Step::IqPolarityFix(IqPolarity::Standard));
    let [s1, s0] = sync_word_registers(settings.sync_word);
    let [r1, r0] = REG_SYNC_WORD.to_be_bytes();
    let mut command = |bytes: &[u8]| steps.push(Step::Command(bytes.to_vec()));
    command(&[OP_WRITE_REGISTER, r1, r0, s1, s0]);
    let mask = (IRQ_RX_DONE | IRQ_HEADER_ERROR | IRQ_CRC_ERROR | IRQ_TIMEOUT).to_be_bytes();
    command(&[
        OP_SET_DIO_IRQ_PARAMS,
        mask[0],
        mask[1],
        mask[0],
        mask[1],
        0x00,
        0x00,
        0x00,
        0x00,
    ]);
    // Timeout 0xFFFFFF: continuous receive.
    command(&[OP_SET_RX, 0xFF, 0xFF, 0xFF]);
    steps
}

/// Packet RSSI in dBm from GetPacketStatus's RssiPkt: -RssiPkt / 2.
pub fn packet_rssi(rssi_pkt: u8) -> f32 {
    -f32::from(rssi_pkt) / 2.0
}

/// Packet SNR in dB from GetPacketStatus's SnrPkt (two's complement, quarter dB).
pub fn packet_snr(snr_pkt: u8) -> f32 {
    f32::from(snr_pkt as i8) / 4.0
}

/// The chip mode in a status byte (bits 6:4).
pub fn status_mode(status: u8) -> u8 {
    (status >> 4) & 0x07
}

/// An SX1262 on a SPI device with its reset pin, DIO1 line and BUSY line.
pub struct Sx1262<SPI, RST, IRQ, BUSY, D> {
    spi: SPI,
    reset: RST,
    dio1: IRQ,
    busy: BUSY,
    delay: D,
    settings: RadioSettings,
    stuck_strikes: u8,
}

impl<SPI, RST, IRQ, BUSY, D> Sx1262<SPI, RST, IRQ, BUSY, D>
where
    SPI: SpiDevice,
    RST: OutputPin,
    IRQ: IrqLine,
    BUSY: BusyLine,
    D: DelayNs,
{
    /// A driver for `settings` (already validated); nothing is sent until [`Radio::init`].
    pub fn new(
        spi: SPI,
        reset: RST,
        dio1: IRQ,
        busy: BUSY,
        delay: D,
        settings: RadioSettings,
    ) -> Self {
        Sx1262 {
            spi,
            reset,
            dio1,
            busy,
            delay,
            settings,
            stuck_strikes: 0,
        }
    }

    fn wait_ready(&mut self) -> Result<(), RadioError> {
        if self.busy.wait_low(BUSY_TIMEOUT)? {
            Ok(())
        } else {
            Err(RadioError::BusyTimeout(BUSY_TIMEOUT))
        }
    }

    fn command(&mut self, bytes: &[u8]) -> Result<(), RadioError> {
        self.wait_ready()?;
        self.spi.write(bytes).map_err(spi_err)
    }

    /// Sends `request` (opcode and parameters), then clocks NOPs to read `response`: the status byte
    /// first, then the data.
    fn query(&mut self, request: &[u8], response: &mut [u8]) -> Result<(), RadioError> {
        self.wait_ready()?;
        self.spi
            .transaction(&mut [Operation::Write(request), Operation::Read(response)])
            .map_err(spi_err)
    }

    fn status(&mut self) -> Result<u8, RadioError> {
        let mut response = [0u8];
        self.query(&[OP_GET_STATUS], &mut response)?;
        Ok(response[0])
    }

    fn read_registers(&mut self, addr: u16, out: &mut [u8]) -> Result<(), RadioError> {
        let [a1, a0] = addr.to_be_bytes();
        let mut response = vec![0u8; out.len() + 1];
        self.query(&[OP_READ_REGISTER, a1, a0], &mut response)?;
        out.copy_from_slice(&response[1..]);
        Ok(())
    }

    /// A status that no working chip returns: the bus reads all zeros or all ones.
    fn check_answering(&self, status: u8, context: &str) -> Result<(), RadioError> {
        let mode = status_mode(status);
        if status == 0x00 || status == 0xFF || mode == 0 || mode == 7 {
            Err(RadioError::NotAnswering {
                chip: "sx1262",
                detail: format!("{context}: status byte {status:#04x} is not a chip mode"),
            })
        } else {
            Ok(())
        }
    }

    /// One setup or transmit step; the read-modify-writes of the errata included.
    fn step(&mut self, step: &Step) -> Result<(), RadioError> {
        let (register, change): (u16, fn(u8, &RadioSettings) -> u8) = match step {
            Step::Command(bytes) => return self.command(bytes),
            Step::IqPolarityFix(IqPolarity::Standard) => (REG_IQ_POLARITY, |value, _| value | 0x04),
            Step::IqPolarityFix(IqPolarity::Inverted) => {
                (REG_IQ_POLARITY, |value, _| value & !0x04)
            }
            Step::TxModulationFix => (REG_TX_MODULATION, |value, settings| {
                if settings.bandwidth_hz == 500_000 {
                    value & !0x04
                } else {
                    value | 0x04
                }
            }),
        };
        let mut value = [0u8];
        self.read_registers(register, &mut value)?;
        let [a1, a0] = register.to_be_bytes();
        let changed = change(value[0], &self.settings);
        self.command(&[OP_WRITE_REGISTER, a1, a0, changed])
    }

    fn read_packet(&mut self) -> Result<Received, RadioError> {
        let mut buffer_status = [0u8; 3];
        self.query(&[OP_GET_RX_BUFFER_STATUS], &mut buffer_status)?;
        let [_, len, start] = buffer_status;
        let mut response = vec![0u8; usize::from(len) + 1];
        self.query(&[OP_READ_BUFFER, start], &mut response)?;
        let mut packet_status = [0u8; 4];
        self.query(&[OP_GET_PACKET_STATUS], &mut packet_status)?;
        Ok(Received {
            bytes: response[1..].to_vec(),
            rssi_dbm: packet_rssi(packet_status[1]),
            snr_db: packet_snr(packet_status[2]),
        })
    }
}

impl<SPI, RST, IRQ, BUSY, D> Radio for Sx1262<SPI, RST, IRQ, BUSY, D>
where
    SPI: SpiDevice + Send,
    RST: OutputPin + Send,
    IRQ: IrqLine + Send,
    BUSY: BusyLine + Send,
    D: DelayNs + Send,
{
    fn init(&mut self) -> Result<(), RadioError> {
        self.stuck_strikes = 0;
        self.reset.set_low().map_err(pin_err)?;
        self.delay.delay_us(200);
        self.reset.set_high().map_err(pin_err)?;
        self.command(&[OP_SET_STANDBY, 0x00])?;
        let status = self.status()?;
        self.check_answering(status, "after reset and SetStandby")?;
        if status_mode(status) != MODE_STBY_RC {
            return Err(RadioError::NotAnswering {
                chip: "sx1262",
                detail: format!("status {status:#04x} after SetStandby(RC) is not STBY_RC"),
            });
        }
        for step in configuration_commands(&self.settings) {
            self.step(&step)?;
        }
        // Nothing has been received since the reset, so DIO1 must be low.
        if self.dio1.is_high()? {
            return Err(RadioError::StuckIrq);
        }
        Ok(())
    }

    fn wait_event(&mut self, timeout: Duration) -> Result<Option<RxEvent>, RadioError> {
        if !self.dio1.wait_high(timeout)? {
            return Ok(None);
        }
        let mut irq_status = [0u8; 3];
        self.query(&[OP_GET_IRQ_STATUS], &mut irq_status)?;
        self.check_answering(irq_status[0], "on DIO1")?;
        let irq = u16::from_be_bytes([irq_status[1], irq_status[2]]);
        self.command(&[OP_CLEAR_IRQ_STATUS, 0xFF, 0xFF])?;
        if irq & (IRQ_RX_DONE | IRQ_CRC_ERROR | IRQ_HEADER_ERROR) == 0 {
            if self.dio1.is_high()? {
                self.stuck_strikes += 1;
                if self.stuck_strikes >= STUCK_IRQ_STRIKES {
                    return Err(RadioError::StuckIrq);
                }
            }
            return Ok(None);
        }
        self.stuck_strikes = 0;
        if irq & IRQ_CRC_ERROR != 0 {
            return Ok(Some(RxEvent::CrcError));
        }
        if irq & IRQ_HEADER_ERROR != 0 {
            return Ok(Some(RxEvent::HeaderError(
                "LoRa header CRC failed".to_string(),
            )));
        }
        self.read_packet().map(|p| Some(RxEvent::Packet(p)))
    }

    fn wakeup(&self) -> Wakeup {
        self.dio1.wakeup()
    }

    fn check_health(&mut self) -> Result<(), RadioError> {
        let status = self.status()?;
        self.check_answering(status, "health check")?;
        let mode = status_mode(status);
        if mode != MODE_RX {
            return Err(RadioError::ConfigMismatch {
                what: "chip mode (GetStatus)",
                expected: u32::from(MODE_RX),
                found: u32::from(mode),
            });
        }
        let mut packet_type = [0u8; 2];
        self.query(&[OP_GET_PACKET_TYPE], &mut packet_type)?;
        if packet_type[1] != PACKET_TYPE_LORA {
            return Err(RadioError::ConfigMismatch {
                what: "packet type (GetPacketType)",
                expected: u32::from(PACKET_TYPE_LORA),
                found: u32::from(packet_type[1]),
            });
        }
        // An interrupt routed to DIO1 raises it at once; a line that stays low has lost its wire.
        let mut irq_status = [0u8; 3];
        self.query(&[OP_GET_IRQ_STATUS], &mut irq_status)?;
        let irq = u16::from_be_bytes([irq_status[1], irq_status[2]]);
        if irq & (IRQ_RX_DONE | IRQ_CRC_ERROR | IRQ_HEADER_ERROR) != 0 && !self.dio1.is_high()? {
            return Err(RadioError::IrqNotRaised { line: "DIO1" });
        }
        let mut sync = [0u8; 2];
        self.read_registers(REG_SYNC_WORD, &mut sync)?;
        let expected = sync_word_registers(self.settings.sync_word);
        if sync != expected {
            return Err(RadioError::ConfigMismatch {
                what: "sync word registers 0x0740-0x0741",
                expected: u32::from(u16::from_be_bytes(expected)),
                found: u32::from(u16::from_be_bytes(sync)),
            });
        }
        Ok(())
    }

    fn transmit(&mut self, payload: &[u8], polarity: IqPolarity) -> Result<Duration, RadioError> {
        if payload.is_empty() || payload.len() > 255 {
            return Err(RadioError::TxLength(payload.len()));
        }
        let airtime = time_on_air(&self.settings, payload.len());
        for step in transmit_steps(&self.settings, payload, polarity) {
            self.step(&step)?;
        }
        let timeout = tx_done_timeout(airtime);
        let started = std::time::Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if self.dio1.wait_high(left)? {
                break;
            }
            // A poke ends a wait early; only the deadline (or a stop) ends the transmission.
            if left.is_zero() || self.dio1.wakeup().is_woken() {
                return Err(RadioError::TxTimeout(timeout));
            }
        }
        let mut irq_status = [0u8; 3];
        self.query(&[OP_GET_IRQ_STATUS], &mut irq_status)?;
        self.check_answering(irq_status[0], "after SetTx")?;
        let irq = u16::from_be_bytes([irq_status[1], irq_status[2]]);
        if irq & IRQ_TX_DONE == 0 {
            return Err(RadioError::ConfigMismatch {
                what: "IRQ status after DIO1 (TxDone)",
                expected: u32::from(IRQ_TX_DONE),
                found: u32::from(irq),
            });
        }
        for step in after_transmit_steps(&self.settings, polarity) {
            self.step(&step)?;
        }
        Ok(airtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_and_sync_word_encodings_match_the_reference() {
        assert_eq!(frf(868_100_000).to_be_bytes(), [0x36, 0x41, 0x99, 0x9A]);
        assert_eq!(sync_word_registers(0x12), [0x14, 0x24]);
        assert_eq!(sync_word_registers(0x34), [0x34, 0x44]);
        assert_eq!(image_calibration(868_100_000), [0xD7, 0xDB]);
        assert_eq!(image_calibration(915_000_000), [0xE1, 0xE9]);
        assert_eq!(image_calibration(433_175_000), [0x6B, 0x6F]);
    }

    #[test]
    fn packet_status_conversions() {
        assert_eq!(packet_rssi(180), -90.0);
        assert_eq!(packet_snr(0xEC), -5.0);
        assert_eq!(packet_snr(0x1E), 7.5);
        assert_eq!(status_mode(0x52), MODE_RX);
    }

    #[test]
    fn tcxo_and_rf_switch_add_their_commands_first() {
        let settings = RadioSettings {
            chip: super::super::Chip::Sx1262,
            tcxo_voltage: Some(1.8),
            dio2_rf_switch: true,
            ..RadioSettings::default()
        };
        let steps = configuration_commands(&settings);
        assert_eq!(steps[0], Step::Command(vec![0x97, 0x02, 0x00, 0x01, 0x40]));
        assert_eq!(steps[1], Step::Command(vec![0x89, 0x7F]));
        assert_eq!(steps[2], Step::Command(vec![0x96, 0x01]));
        assert_eq!(steps[3], Step::Command(vec![0x9D, 0x01]));
        assert_eq!(steps[4], Step::Command(vec![0x8A, 0x01]));
    }
}
