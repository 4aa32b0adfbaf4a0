//! SX1276/RFM95W LoRa driver, register level, over an embedded-hal 1.0 `SpiDevice`, a reset `OutputPin`
//! and the DIO0 [`IrqLine`]: reset, version check, the whole receive configuration as one ordered list of
//! register writes ([`configuration_writes`], the golden trace), continuous receive, and on DIO0 the
//! packet with RSSI and SNR, or a CRC/header error. Commands go out through [`Radio::transmit`]: standby,
//! the payload into the FIFO, TX on PA_BOOST at [`TX_POWER_DBM`], TxDone on DIO0, and back to continuous
//! receive ([`transmit_writes`] before TX, [`after_transmit_writes`] after TxDone, both golden traces).
//! It never uses the FSK modem, and never sleeps on the async runtime: it runs on the radio source's own
//! thread.
//!
//! Register facts follow Semtech's SX1276 datasheet and LoRaMac-node `sx1276.c`, including errata 2.1
//! (500 kHz sensitivity) and 2.3 (spurious reception below 500 kHz, with its frequency offset below
//! 62.5 kHz).

use std::time::Duration;

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::spi::{Operation, SpiDevice};

use super::hal::{
    pin_err, spi_err, tx_done_timeout, IqPolarity, IrqLine, Radio, Received, RxEvent, Wakeup,
};
use super::{low_data_rate_optimize, time_on_air, RadioError, RadioSettings, BANDWIDTHS_HZ};

pub const REG_FIFO: u8 = 0x00;
pub const REG_OP_MODE: u8 = 0x01;
pub const REG_FRF_MSB: u8 = 0x06;
pub const REG_LNA: u8 = 0x0C;
pub const REG_PA_CONFIG: u8 = 0x09;
pub const REG_FIFO_ADDR_PTR: u8 = 0x0D;
pub const REG_FIFO_TX_BASE_ADDR: u8 = 0x0E;
pub const REG_FIFO_RX_BASE_ADDR: u8 = 0x0F;
pub const REG_FIFO_RX_CURRENT_ADDR: u8 = 0x10;
pub const REG_IRQ_FLAGS_MASK: u8 = 0x11;
pub const REG_IRQ_FLAGS: u8 = 0x12;
pub const REG_RX_NB_BYTES: u8 = 0x13;
pub const REG_PKT_SNR: u8 = 0x19;
pub const REG_PKT_RSSI: u8 = 0x1A;
pub const REG_HOP_CHANNEL: u8 = 0x1C;
pub const REG_MODEM_CONFIG1: u8 = 0x1D;
pub const REG_MODEM_CONFIG2: u8 = 0x1E;
pub const REG_PREAMBLE_MSB: u8 = 0x20;
pub const REG_PAYLOAD_LENGTH: u8 = 0x22;
pub const REG_MAX_PAYLOAD_LENGTH: u8 = 0x23;
pub const REG_MODEM_CONFIG3: u8 = 0x26;
pub const REG_IF_FREQ1: u8 = 0x2F;
pub const REG_IF_FREQ2: u8 = 0x30;
pub const REG_DETECT_OPTIMIZE: u8 = 0x31;
pub const REG_HIGH_BW_OPTIMIZE1: u8 = 0x36;
pub const REG_DETECTION_THRESHOLD: u8 = 0x37;
pub const REG_INVERT_IQ: u8 = 0x33;
pub const REG_SYNC_WORD: u8 = 0x39;
pub const REG_HIGH_BW_OPTIMIZE2: u8 = 0x3A;
pub const REG_INVERT_IQ2: u8 = 0x3B;
pub const REG_DIO_MAPPING1: u8 = 0x40;
pub const REG_VERSION: u8 = 0x42;

/// What `RegVersion` reads on an SX1276/77/78/79.
pub const VERSION: u8 = 0x12;

pub const IRQ_RX_TIMEOUT: u8 = 0x80;
pub const IRQ_RX_DONE: u8 = 0x40;
pub const IRQ_PAYLOAD_CRC_ERROR: u8 = 0x20;
pub const IRQ_VALID_HEADER: u8 = 0x10;
pub const IRQ_TX_DONE: u8 = 0x08;
/// `RegHopChannel` bit 6: the received header said the payload carries a CRC.
pub const HOP_CRC_ON_PAYLOAD: u8 = 0x40;

/// `RegInvertIQ` and `RegInvertIQ2` with the standard polarity (their reset values, which receiving
/// uses), and for an inverted transmission: bit 6 (InvertIQ, the datasheet's bit) set and bit 0
/// (LoRaMac-node's `RFLR_INVERTIQ_TX`, which is 1 for the standard polarity) cleared, with
/// `RegInvertIQ2` = 0x19 as Semtech's reference driver writes it beside them.
pub const INVERT_IQ_STANDARD: [u8; 2] = [0x27, 0x1D];
pub const INVERT_IQ_INVERTED: [u8; 2] = [0x66, 0x19];

/// `RegOpMode` bits: LoRa mode, the low-frequency register bank, and the modes.
const MODE_LORA: u8 = 0x80;
const MODE_LOW_FREQUENCY: u8 = 0x08;
const MODE_SLEEP: u8 = 0x00;
const MODE_STANDBY: u8 = 0x01;
const MODE_TX: u8 = 0x03;
const MODE_RX_CONTINUOUS: u8 = 0x05;

/// Transmit power, dBm, on PA_BOOST (the RFM95W's only PA output): 14 dBm, the EU868 limit for the
/// 868.0-868.6 MHz band, and within every other region's.
pub const TX_POWER_DBM: u8 = 14;
/// `RegIrqFlagsMask` and `RegDioMapping1` while receiving (RxTimeout, RxDone, PayloadCrcError; DIO0 =
/// RxDone) and while transmitting (TxDone only; DIO0 = TxDone).
const RX_IRQ_MASK: u8 = 0x1F;
const TX_IRQ_MASK: u8 = !IRQ_TX_DONE;
const DIO0_RX_DONE: u8 = 0x00;
const DIO0_TX_DONE: u8 = 0x40;

/// Below this the chip's LF port and register bank are used (LoRaMac-node `RF_MID_BAND_THRESH`).
const MID_BAND_THRESHOLD_HZ: u32 = 525_000_000;
/// Consecutive "line high, nothing pending" observations before the line is declared stuck.
const STUCK_IRQ_STRIKES: u8 = 3;

/// Whether the frequency uses the chip's low-frequency band (433 MHz and below).
pub fn is_low_frequency(frequency_hz: u32) -> bool {
    frequency_hz < MID_BAND_THRESHOLD_HZ
}

/// `RegFrf` for a frequency: round(f * 2^19 / 32 MHz), 24 bits.
pub fn frf(frequency_hz: u32) -> u32 {
    let scaled = (u64::from(frequency_hz) << 19) + 16_000_000;
    (scaled / 32_000_000) as u32
}

/// The bandwidth's code in `RegModemConfig1` (0 = 7.8 kHz ... 9 = 500 kHz).
fn bandwidth_code(bandwidth_hz: u32) -> u8 {
    BANDWIDTHS_HZ
        .iter()
        .position(|&b| b == bandwidth_hz)
        .unwrap_or(7) as u8
}

/// Errata 2.3: below 62.5 kHz the receiver is tuned off-centre by this much, and `RegIfFreq1` changes.
fn errata_2_3(bandwidth_hz: u32) -> (u32, u8) {
    match bandwidth_hz {
        7_800 => (7_810, 0x48),
        10_400 => (10_420, 0x44),
        15_600 => (15_620, 0x44),
        20_800 => (20_830, 0x44),
        31_250 => (31_250, 0x44),
        41_700 => (41_670, 0x44),
        _ => (0, 0x40),
    }
}

/// The frequency `RegFrf` is set to: the configured one, plus the errata 2.3 offset at narrow bandwidths.
fn tuned_frequency(settings: &RadioSettings) -> u32 {
    settings.frequency_hz + errata_2_3(settings.bandwidth_hz).0
}

fn mode_base(settings: &RadioSettings) -> u8 {
    if is_low_frequency(settings.frequency_hz) {
        MODE_LORA | MODE_LOW_FREQUENCY
    } else {
        MODE_LORA
    }
}

/// The complete receive configuration as the ordered list of register writes `(address, bytes)` that
/// [`Sx1276::init`](Radio::init) performs after the reset and the version check; multi-byte entries are
/// burst writes to consecutive registers.
pub fn configuration_writes(settings: &RadioSettings) -> Vec<(u8, Vec<u8>)> {
    let mode = mode_base(settings);
    let frf = frf(tuned_frequency(settings));
    let bandwidth = bandwidth_code(settings.bandwidth_hz);
    let coding_rate = settings.coding_rate.saturating_sub(4) & 0x07;
    let ldro = low_data_rate_optimize(settings.spreading_factor, settings.bandwidth_hz);
    let narrow = settings.bandwidth_hz < 500_000;
    let [_, frf_msb, frf_mid, frf_lsb] = frf.to_be_bytes();
    let [preamble_msb, preamble_lsb] = settings.preamble_len.to_be_bytes();

    let mut writes = vec![
        // The LoRa bit is writable only in sleep: sleep + LoRa first, then standby.
        (REG_OP_MODE, vec![mode | MODE_SLEEP]),
        (REG_OP_MODE, vec![mode | MODE_STANDBY]),
        (REG_FRF_MSB, vec![frf_msb, frf_mid, frf_lsb]),
        // Explicit header (bit 0 clear).
        (REG_MODEM_CONFIG1, vec![bandwidth << 4 | coding_rate << 1]),
        // RxPayloadCrcOn.
        (
            REG_MODEM_CONFIG2,
            vec![settings.spreading_factor << 4 | 0x04],
        ),
        // AgcAutoOn, plus LowDataRateOptimize when a symbol lasts more than 16 ms.
        (REG_MODEM_CONFIG3, vec![if ldro { 0x0C } else { 0x04 }]),
        (REG_PREAMBLE_MSB, vec![preamble_msb, preamble_lsb]),
        (REG_SYNC_WORD, vec![settings.sync_word]),
        // DetectionOptimize 0x03 for SF7-12; bit 7 (automatic IF) off below 500 kHz (errata 2.3).
        (REG_DETECT_OPTIMIZE, vec![if narrow { 0x43 } else { 0xC3 }]),
        (REG_DETECTION_THRESHOLD, vec![0x0A]),
        // LNA: maximum gain, HF boost on.
        (REG_LNA, vec![0x23]),
        (REG_MAX_PAYLOAD_LENGTH, vec![0xFF]),
    ];
    if narrow {
        writes.push((REG_IF_FREQ2, vec![0x00]));
        writes.push((REG_IF_FREQ1, vec![errata_2_3(settings.bandwidth_hz).1]));
    } else {
        // Errata 2.1: 500 kHz sensitivity.
        let opt2 = if is_low_frequency(settings.frequency_hz) {
            0x7F
        } else {
            0x64
        };
        writes.push((REG_HIGH_BW_OPTIMIZE1, vec![0x02]));
        writes.push((REG_HIGH_BW_OPTIMIZE2, vec![opt2]));
    }
    writes.extend([
        (REG_FIFO_RX_BASE_ADDR, vec![0x00]),
        (REG_FIFO_ADDR_PTR, vec![0x00]),
        // Unmask RxTimeout, RxDone and PayloadCrcError only.
        (REG_IRQ_FLAGS_MASK, vec![RX_IRQ_MASK]),
        // DIO0 = RxDone.
        (REG_DIO_MAPPING1, vec![DIO0_RX_DONE]),
        (REG_IRQ_FLAGS, vec![0xFF]),
        (REG_OP_MODE, vec![mode | MODE_RX_CONTINUOUS]),
    ]);
    writes
}

/// The register writes from continuous receive to transmitting `payload`: standby, PA_BOOST at
/// [`TX_POWER_DBM`], the payload at FIFO address 0, its length, TxDone alone unmasked and routed to DIO0,
/// flags cleared, TX. An inverted transmission writes [`INVERT_IQ_INVERTED`] before TX. The chip
/// returns to standby by itself after TxDone.
pub fn transmit_writes(
    settings: &RadioSettings,
    payload: &[u8],
    polarity: IqPolarity,
) -> Vec<(u8, Vec<u8>)> {
    let mode = mode_base(settings);
    let mut writes = vec![
        (REG_OP_MODE, vec![mode | MODE_STANDBY]),
        // PaSelect = PA_BOOST, OutputPower = Pout - 2.
        (REG_PA_CONFIG, vec![0x80 | (TX_POWER_DBM - 2)]),
        (REG_FIFO_TX_BASE_ADDR, vec![0x00]),
        (REG_FIFO_ADDR_PTR, vec![0x00]),
        (REG_FIFO, payload.to_vec()),
        (REG_PAYLOAD_LENGTH, vec![payload.len() as u8]),
        (REG_IRQ_FLAGS_MASK, vec![TX_IRQ_MASK]),
        (REG_DIO_MAPPING1, vec![DIO0_TX_DONE]),
        (REG_IRQ_FLAGS, vec![0xFF]),
    ];
    if polarity == IqPolarity::Inverted {
        let [invert, invert2] = INVERT_IQ_INVERTED;
        writes.push((REG_INVERT_IQ, vec![invert]));
        writes.push((REG_INVERT_IQ2, vec![invert2]));
    }
    writes.push((REG_OP_MODE, vec![mode | MODE_TX]));
    writes
}

/// The register writes after TxDone, back to what [`configuration_writes`] left: flags cleared, the
/// receive interrupts and DIO0 = RxDone, the standard IQ polarity again after an inverted transmission
/// ([`INVERT_IQ_STANDARD`]), the FIFO pointer at the receive base, RX continuous.
pub fn after_transmit_writes(settings: &RadioSettings, polarity: IqPolarity) -> Vec<(u8, Vec<u8>)> {
    let mode = mode_base(settings);
    let mut writes = vec![(REG_IRQ_FLAGS, vec![0xFF])];
    if polarity == IqPolarity::Inverted {
        let [invert, invert2] = INVERT_IQ_STANDARD;
        writes.push((REG_INVERT_IQ, vec![invert]));
        writes.push((REG_INVERT_IQ2, vec![invert2]));
    }
    writes.extend([
        (REG_IRQ_FLAGS_MASK, vec![RX_IRQ_MASK]),
        (REG_DIO_MAPPING1, vec![DIO0_RX_DONE]),
        (REG_FIFO_ADDR_PTR, vec![0x00]),
        (REG_OP_MODE, vec![mode | MODE_RX_CONTINUOUS]),
    ]);
    writes
}

/// The registers the health check reads back, with the values a healthy receiving chip holds.
fn readback(settings: &RadioSettings) -> Vec<(&'static str, u8, u8)> {
    let writes = configuration_writes(settings);
    let last = |addr: u8| {
        writes
            .iter()
            .rev()
            .find(|(a, _)| *a == addr)
            .map(|(_, bytes)| bytes.clone())
            .unwrap_or_default()
    };
    let frf = last(REG_FRF_MSB);
    let mut checks = vec![("RegOpMode", REG_OP_MODE, last(REG_OP_MODE))];
    for (i, (name, byte)) in ["RegFrfMsb", "RegFrfMid", "RegFrfLsb"]
        .iter()
        .zip(frf)
        .enumerate()
    {
        checks.push((name, REG_FRF_MSB + i as u8, vec![byte]));
    }
    checks.extend([
        (
            "RegModemConfig1",
            REG_MODEM_CONFIG1,
            last(REG_MODEM_CONFIG1),
        ),
        (
            "RegModemConfig2",
            REG_MODEM_CONFIG2,
            last(REG_MODEM_CONFIG2),
        ),
        (
            "RegModemConfig3",
            REG_MODEM_CONFIG3,
            last(REG_MODEM_CONFIG3),
        ),
        ("RegSyncWord", REG_SYNC_WORD, last(REG_SYNC_WORD)),
        (
            "RegIrqFlagsMask",
            REG_IRQ_FLAGS_MASK,
            last(REG_IRQ_FLAGS_MASK),
        ),
        ("RegDioMapping1", REG_DIO_MAPPING1, last(REG_DIO_MAPPING1)),
    ]);
    checks
        .into_iter()
        .filter_map(|(name, addr, bytes)| bytes.first().map(|&b| (name, addr, b)))
        .collect()
}

/// Packet RSSI in dBm from `RegPktRssiValue` and the SNR: -157 (HF) or -164 (LF) + PktRssi * 16/15,
/// plus the SNR when it is negative (the packet is below the noise floor).
pub fn packet_rssi(pkt_rssi: u8, snr_db: f32, low_frequency: bool) -> f32 {
    let offset = if low_frequency { -164.0 } else { -157.0 };
    let rssi = offset + f32::from(pkt_rssi) * 16.0 / 15.0;
    if snr_db < 0.0 {
        rssi + snr_db
    } else {
        rssi
    }
}

/// Packet SNR in dB from `RegPktSnrValue` (two's complement, quarter dB).
pub fn packet_snr(pkt_snr: u8) -> f32 {
    f32::from(pkt_snr as i8) / 4.0
}

/// An SX1276 on a SPI device with its reset pin and DIO0 line.
pub struct Sx1276<SPI, RST, IRQ, D> {
    spi: SPI,
    reset: RST,
    dio0: IRQ,
    delay: D,
    settings: RadioSettings,
    stuck_strikes: u8,
}

impl<SPI, RST, IRQ, D> Sx1276<SPI, RST, IRQ, D>
where
    SPI: SpiDevice,
    RST: OutputPin,
    IRQ: IrqLine,
    D: DelayNs,
{
    /// A driver for `settings` (already validated); nothing is sent until [`Radio::init`].
    pub fn new(spi: SPI, reset: RST, dio0: IRQ, delay: D, settings: RadioSettings) -> Self {
        Sx1276 {
            spi,
            reset,
            dio0,
            delay,
            settings,
            stuck_strikes: 0,
        }
    }

    fn read(&mut self, addr: u8) -> Result<u8, RadioError> {
        let mut value = [0u8];
        self.read_burst(addr, &mut value)?;
        Ok(value[0])
    }

    fn read_burst(&mut self, addr: u8, buf: &mut [u8]) -> Result<(), RadioError> {
        self.spi
            .transaction(&mut [Operation::Write(&[addr & 0x7F]), Operation::Read(buf)])
            .map_err(spi_err)
    }

    fn write(&mut self, addr: u8, data: &[u8]) -> Result<(), RadioError> {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(addr | 0x80);
        frame.extend_from_slice(data);
        self.spi.write(&frame).map_err(spi_err)
    }

    /// NRESET low for 100 us, then 5 ms for the chip to start.
    fn hardware_reset(&mut self) -> Result<(), RadioError> {
        self.reset.set_low().map_err(pin_err)?;
        self.delay.delay_us(100);
        self.reset.set_high().map_err(pin_err)?;
        self.delay.delay_ms(5);
        Ok(())
    }

    fn check_version(&mut self) -> Result<(), RadioError> {
        let version = self.read(REG_VERSION)?;
        if version == VERSION {
            Ok(())
        } else {
            Err(RadioError::NotAnswering {
                chip: "sx1276",
                detail: format!("version register 0x42 reads {version:#04x}, expected 0x12"),
            })
        }
    }

    fn read_packet(&mut self) -> Result<Received, RadioError> {
        let len = self.read(REG_RX_NB_BYTES)?;
        let start = self.read(REG_FIFO_RX_CURRENT_ADDR)?;
        self.write(REG_FIFO_ADDR_PTR, &[start])?;
        let mut bytes = vec![0u8; usize::from(len)];
        if !bytes.is_empty() {
            self.read_burst(REG_FIFO, &mut bytes)?;
        }
        let mut quality = [0u8; 2];
        self.read_burst(REG_PKT_SNR, &mut quality)?;
        let snr_db = packet_snr(quality[0]);
        let low_frequency = is_low_frequency(self.settings.frequency_hz);
        Ok(Received {
            bytes,
            rssi_dbm: packet_rssi(quality[1], snr_db, low_frequency),
            snr_db,
        })
    }
}

impl<SPI, RST, IRQ, D> Radio for Sx1276<SPI, RST, IRQ, D>
where
    SPI: SpiDevice + Send,
    RST: OutputPin + Send,
    IRQ: IrqLine + Send,
    D: DelayNs + Send,
{
    fn init(&mut self) -> Result<(), RadioError> {
        self.stuck_strikes = 0;
        self.hardware_reset()?;
        self.check_version()?;
        for (addr, bytes) in configuration_writes(&self.settings) {
            self.write(addr, &bytes)?;
        }
        // The flags are clear now, so DIO0 must be low.
        if self.dio0.is_high()? {
            return Err(RadioError::StuckIrq);
        }
        Ok(())
    }

    fn wait_event(&mut self, timeout: Duration) -> Result<Option<RxEvent>, RadioError> {
        if !self.dio0.wait_high(timeout)? {
            return Ok(None);
        }
        let flags = self.read(REG_IRQ_FLAGS)?;
        if flags == 0xFF {
            // Every flag at once is what a bus reading all ones looks like: is the chip still there?
            self.check_version()?;
        }
        self.write(REG_IRQ_FLAGS, &[0xFF])?;
        if flags & IRQ_RX_DONE == 0 {
            if self.dio0.is_high()? {
                self.stuck_strikes += 1;
                if self.stuck_strikes >= STUCK_IRQ_STRIKES {
                    return Err(RadioError::StuckIrq);
                }
            }
            return Ok(None);
        }
        self.stuck_strikes = 0;
        if flags & IRQ_PAYLOAD_CRC_ERROR != 0 {
            // The FIFO still holds the corrupt bytes; they are left there.
            return Ok(Some(RxEvent::CrcError));
        }
        if self.read(REG_HOP_CHANNEL)? & HOP_CRC_ON_PAYLOAD == 0 {
            return Ok(Some(RxEvent::HeaderError(
                "packet sent without a payload CRC".to_string(),
            )));
        }
        self.read_packet().map(|p| Some(RxEvent::Packet(p)))
    }

    fn wakeup(&self) -> Wakeup {
        self.dio0.wakeup()
    }

    fn check_health(&mut self) -> Result<(), RadioError> {
        self.check_version()?;
        // A packet waiting in the chip raises DIO0 at once; a line that stays low has lost its wire.
        if self.read(REG_IRQ_FLAGS)? & IRQ_RX_DONE != 0 && !self.dio0.is_high()? {
            return Err(RadioError::IrqNotRaised { line: "DIO0" });
        }
        for (what, addr, expected) in readback(&self.settings) {
            let found = self.read(addr)?;
            if found != expected {
                return Err(RadioError::ConfigMismatch {
                    what,
                    expected: u32::from(expected),
                    found: u32::from(found),
                });
            }
        }
        Ok(())
    }

    fn transmit(&mut self, payload: &[u8], polarity: IqPolarity) -> Result<Duration, RadioError> {
        if payload.is_empty() || payload.len() > 255 {
            return Err(RadioError::TxLength(payload.len()));
        }
        let airtime = time_on_air(&self.settings, payload.len());
        for (addr, bytes) in transmit_writes(&self.settings, payload, polarity) {
            self.write(addr, &bytes)?;
        }
        let timeout = tx_done_timeout(airtime);
        let started = std::time::Instant::now();
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if self.dio0.wait_high(left)? {
                break;
            }
            // A poke ends a wait early; only the deadline (or a stop) ends the transmission.
            if left.is_zero() || self.dio0.wakeup().is_woken() {
                return Err(RadioError::TxTimeout(timeout));
            }
        }
        let flags = self.read(REG_IRQ_FLAGS)?;
        if flags & IRQ_TX_DONE == 0 {
            return Err(RadioError::ConfigMismatch {
                what: "RegIrqFlags after DIO0 (TxDone)",
                expected: u32::from(IRQ_TX_DONE),
                found: u32::from(flags),
            });
        }
        for (addr, bytes) in after_transmit_writes(&self.settings, polarity) {
            self.write(addr, &bytes)?;
        }
        Ok(airtime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frf_matches_the_reference_values() {
        assert_eq!(frf(868_100_000), 0xD9_06_66);
        assert_eq!(frf(915_000_000), 0xE4_C0_00);
        assert_eq!(frf(433_175_000), 0x6C_4B_33);
    }

    #[test]
    fn rssi_and_snr_follow_the_datasheet_formulas() {
        assert_eq!(packet_snr(0x28), 10.0);
        assert_eq!(packet_snr(0xF6), -2.5);
        // HF: -157 + 60 * 16/15 = -93
        assert_eq!(packet_rssi(60, 10.0, false), -93.0);
        // LF offset is -164; a negative SNR is added.
        assert_eq!(packet_rssi(60, -2.5, true), -102.5);
    }

    #[test]
    fn modem_registers_for_the_documented_cases() {
        let sf7 = RadioSettings::default();
        let writes = configuration_writes(&sf7);
        let value = |writes: &[(u8, Vec<u8>)], addr| {
            writes
                .iter()
                .rev()
                .find(|(a, _)| *a == addr)
                .map(|(_, b)| b.clone())
        };
        assert_eq!(value(&writes, REG_MODEM_CONFIG1), Some(vec![0x72]));
        assert_eq!(value(&writes, REG_MODEM_CONFIG2), Some(vec![0x74]));
        assert_eq!(value(&writes, REG_MODEM_CONFIG3), Some(vec![0x04]));
        let sf12 = RadioSettings {
            spreading_factor: 12,
            ..RadioSettings::default()
        };
        let writes = configuration_writes(&sf12);
        assert_eq!(value(&writes, REG_MODEM_CONFIG2), Some(vec![0xC4]));
        assert_eq!(value(&writes, REG_MODEM_CONFIG3), Some(vec![0x0C]));
        // Narrow bandwidth: errata 2.3 offset and IF.
        let narrow = RadioSettings {
            bandwidth_hz: 7_800,
            ..RadioSettings::default()
        };
        let writes = configuration_writes(&narrow);
        let expected_frf = frf(868_107_810).to_be_bytes()[1..].to_vec();
        assert_eq!(value(&writes, REG_FRF_MSB), Some(expected_frf));
        assert_eq!(value(&writes, REG_IF_FREQ1), Some(vec![0x48]));
        assert_eq!(value(&writes, REG_MODEM_CONFIG1), Some(vec![0x02]));
    }
}
