//! LoRa radio sources: single-channel receive on an SX1276/RFM95W or an SX1262 wired to the Pi's SPI and
//! GPIO pins, or on a simulated chip with simulated nodes. This module owns the radio settings, their
//! driver-level checks ([`validate`], [`validate_backend`]) and the error type; the drivers, the chip
//! simulators, the Pi backend and the run loop live in the files below it. A radio source never decodes
//! payloads and never publishes: it hands whole packets with [`RadioMeta`](crate::model::RadioMeta) to the
//! pipeline, reports CRC and header errors as frame errors, and re-initialises a chip that stops answering.
//!
//! Layout: `hal.rs` (the traits a board implements and the [`Radio`] trait the loop drives), `sx1276.rs` and
//! `sx1262.rs` (register- and command-level drivers), `sim_sx1276.rs` and `sim_sx1262.rs` (the chips
//! simulated behind the same traits, the test harness), `traffic.rs` (simulated RadioHead + Cayenne LPP
//! nodes for the demo), `air.rs` (a simulated chip's air on a UDP socket, for nodes in another process), `pi.rs` (rpi-pal SPI and GPIO, behind the `pi` feature), `source.rs` (the run loop
//! on its own thread). Wiring tables for the Dragino, Adafruit and Waveshare boards and sample
//! configurations are in `docs/radio.md`.

pub mod air;
pub mod hal;
#[cfg(feature = "pi")]
pub mod pi;
pub mod sim_chip;
pub mod sim_sx1262;
pub mod sim_sx1276;
pub mod source;
pub mod sx1262;
pub mod sx1276;
pub mod traffic;

use std::path::PathBuf;
use std::time::Duration;

pub use hal::{BusyLine, IqPolarity, IrqLine, Radio, Received, RxEvent, Wakeup};
pub use source::{run, run_with, run_with_commands, run_with_port};

/// The radio chip family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chip {
    /// SX1276/77/78/79 and the HopeRF RFM95W/96W/98W modules built on them.
    Sx1276,
    /// SX1262 (and modules such as the Waveshare Core1262 and Ebyte E22).
    Sx1262,
}

impl Chip {
    /// The chip's name as configuration spells it (`sx1276`, `sx1262`).
    pub fn name(self) -> &'static str {
        match self {
            Chip::Sx1276 => "sx1276",
            Chip::Sx1262 => "sx1262",
        }
    }
}

/// How the radio listens. The app maps the `[[source]]` keys onto it.
#[derive(Debug, Clone, PartialEq)]
pub struct RadioSettings {
    pub chip: Chip,
    /// Centre frequency, Hz.
    pub frequency_hz: u32,
    /// 7-12 (SX1276: 6 needs implicit header, not supported), 5-12 on the SX1262.
    pub spreading_factor: u8,
    /// One of [`BANDWIDTHS_HZ`].
    pub bandwidth_hz: u32,
    /// 5..=8 meaning 4/5..4/8.
    pub coding_rate: u8,
    /// The one-byte LoRa sync word: 0x12 private networks, 0x34 LoRaWAN.
    pub sync_word: u8,
    /// Preamble length in symbols (6 or more).
    pub preamble_len: u16,
    /// SX1262 modules with a TCXO powered from DIO3: its voltage (1.6, 1.7, 1.8, 2.2, 2.4, 2.7, 3.0, 3.3).
    pub tcxo_voltage: Option<f32>,
    /// SX1262 modules whose antenna switch is driven by DIO2.
    pub dio2_rf_switch: bool,
    /// How often the chip's configuration is read back (30 s in service; short in tests).
    pub health_interval: Duration,
    /// First delay before re-initialising a lost or absent chip.
    pub retry_initial: Duration,
    /// Longest delay between re-initialisation attempts.
    pub retry_max: Duration,
}

impl Default for RadioSettings {
    /// SX1276 on 868.1 MHz, SF7, 125 kHz, 4/5, private sync word 0x12, preamble 8, health every 30 s,
    /// retries from 1 s up to 60 s.
    fn default() -> Self {
        RadioSettings {
            chip: Chip::Sx1276,
            frequency_hz: 868_100_000,
            spreading_factor: 7,
            bandwidth_hz: 125_000,
            coding_rate: 5,
            sync_word: 0x12,
            preamble_len: 8,
            tcxo_voltage: None,
            dio2_rf_switch: false,
            health_interval: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// Where the chip is.
#[derive(Debug, Clone, PartialEq)]
pub enum RadioBackend {
    /// A chip on the Pi's SPI bus. Pins are BCM GPIO numbers. `irq_pin` is DIO0 (SX1276) or DIO1
    /// (SX1262); `busy_pin` is required for the SX1262; `cs_pin` drives chip select from a plain GPIO
    /// (the Dragino HAT's NSS on GPIO25) instead of the SPI device's own CE line.
    Pi(RadioPins),
    /// A simulated chip with `devices` simulated nodes, each sending a RadioHead + Cayenne LPP packet
    /// every `interval`; or, with `air`, the chip's simulated air on that UDP address instead of the
    /// nodes (`air.rs`: nodes in another process).
    Simulator {
        devices: u32,
        interval: Duration,
        air: Option<std::net::SocketAddr>,
    },
}

/// Where a chip is wired on the Pi (BCM GPIO numbers), as `[[source]] kind = "radio"` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadioPins {
    /// The spidev device, e.g. `/dev/spidev0.0`.
    pub spi_path: PathBuf,
    pub reset_pin: u8,
    /// DIO0 (SX1276) or DIO1 (SX1262).
    pub irq_pin: u8,
    /// SX1262 only.
    pub busy_pin: Option<u8>,
    /// Chip select on a plain GPIO (the Dragino HAT's NSS is GPIO25).
    pub cs_pin: Option<u8>,
}

/// The LoRa bandwidths both chips support, Hz.
pub const BANDWIDTHS_HZ: [u32; 10] = [
    7_800, 10_400, 15_600, 20_800, 31_250, 41_700, 62_500, 125_000, 250_000, 500_000,
];

/// Everything that can go wrong with a radio, from a refused setting to a chip that stopped answering.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RadioError {
    /// A setting the driver refuses; `key` is the configuration key at fault.
    #[error("{key}: {message}")]
    InvalidSetting { key: &'static str, message: String },
    /// The SPI device or a GPIO line could not be opened.
    #[error("cannot open {what}: {reason}")]
    Open { what: String, reason: String },
    /// An SPI transfer failed.
    #[error("SPI transfer failed: {0}")]
    Spi(String),
    /// A GPIO read or write failed.
    #[error("GPIO access failed: {0}")]
    Pin(String),
    /// The chip does not answer as the expected chip (wrong version register, impossible status).
    #[error("no {chip} answering: {detail}")]
    NotAnswering { chip: &'static str, detail: String },
    /// The SX126x BUSY line stayed high.
    #[error("BUSY stayed high for {0:?}")]
    BusyTimeout(Duration),
    /// A configuration register read back a value other than the one written.
    #[error("{what} reads back {found:#04x}, expected {expected:#04x}")]
    ConfigMismatch {
        what: &'static str,
        expected: u32,
        found: u32,
    },
    /// The interrupt line stays high although the chip has nothing pending.
    #[error("interrupt line stuck high with no interrupt pending")]
    StuckIrq,
    /// The chip has an interrupt pending but its line reads low (a broken or miswired DIO line).
    #[error("the chip has an interrupt pending but {line} reads low: check its wiring")]
    IrqNotRaised { line: &'static str },
    /// The backend cannot run in this build or on this machine.
    #[error("{0}")]
    Unsupported(String),
    /// A transmission did not end (TxDone) within twice its time on air plus a margin.
    #[error("no TxDone within {0:?} of starting to transmit")]
    TxTimeout(Duration),
    /// A packet longer than the chip's 255-byte FIFO, or empty.
    #[error("cannot transmit {0} bytes (1-255)")]
    TxLength(usize),
}

fn invalid(key: &'static str, message: impl Into<String>) -> RadioError {
    RadioError::InvalidSetting {
        key,
        message: message.into(),
    }
}

/// The TCXO voltages the SX1262's SetDIO3AsTCXOCtrl accepts, with their codes.
pub(crate) const TCXO_VOLTAGES: [(f32, u8); 8] = [
    (1.6, 0x00),
    (1.7, 0x01),
    (1.8, 0x02),
    (2.2, 0x03),
    (2.4, 0x04),
    (2.7, 0x05),
    (3.0, 0x06),
    (3.3, 0x07),
];

/// The SX1262 code of a TCXO voltage, if it is one the chip supports.
pub(crate) fn tcxo_code(volts: f32) -> Option<u8> {
    TCXO_VOLTAGES
        .iter()
        .find(|(v, _)| (v - volts).abs() < 0.01)
        .map(|&(_, code)| code)
}

/// Whether the symbol time exceeds 16 ms, where LowDataRateOptimize must be on (SF11/12 at 125 kHz).
pub(crate) fn low_data_rate_optimize(spreading_factor: u8, bandwidth_hz: u32) -> bool {
    // Tsym = 2^SF / BW > 16 ms  <=>  2^SF * 1000 > 16 * BW
    (1u64 << spreading_factor) * 1000 > 16 * u64::from(bandwidth_hz)
}

/// Time on air of a LoRa packet of `payload_len` bytes with these settings (explicit header, CRC on, as
/// both drivers send): the SX127x/SX126x datasheets' formula, `Tsym = 2^SF / BW`, preamble + 4.25 symbols
/// plus `8 + max(ceil((8PL - 4SF + 28 + 16) / (4(SF - 2DE))) * CR, 0)` payload symbols, DE being
/// LowDataRateOptimize (the same formula as `examples/bench/physical.rs`, checked there against the
/// datasheet's table). The duty-cycle budget and the TxDone timeout are computed from it.
pub fn time_on_air(settings: &RadioSettings, payload_len: usize) -> Duration {
    let sf = i64::from(settings.spreading_factor);
    let de = i64::from(low_data_rate_optimize(
        settings.spreading_factor,
        settings.bandwidth_hz,
    ));
    let numerator = 8 * payload_len as i64 - 4 * sf + 28 + 16;
    let denominator = (4 * (sf - 2 * de)).max(1);
    let blocks = (numerator + denominator - 1).div_euclid(denominator).max(0);
    let coding_rate = i64::from(settings.coding_rate.clamp(5, 8));
    let payload_symbols = 8 + blocks * coding_rate;
    let symbols = f64::from(settings.preamble_len) + 4.25 + payload_symbols as f64;
    let symbol_seconds = (1u64 << settings.spreading_factor.min(12)) as f64
        / f64::from(settings.bandwidth_hz.max(1));
    Duration::from_secs_f64(symbols * symbol_seconds)
}

/// The driver's own guard on the settings: ranges per chip, the allowed bandwidths, coding rate,
/// preamble, TCXO voltage. Messages name the configuration key.
pub fn validate(settings: &RadioSettings) -> Result<(), RadioError> {
    check_modulation(settings)?;
    check_frequency(settings)?;
    check_chip_options(settings)?;
    if settings.health_interval.is_zero() {
        return Err(invalid("health_interval", "must be longer than zero"));
    }
    Ok(())
}

/// Spreading factor (the chip's range), bandwidth, coding rate and preamble length.
fn check_modulation(settings: &RadioSettings) -> Result<(), RadioError> {
    let sf_range = match settings.chip {
        Chip::Sx1276 => 7..=12,
        Chip::Sx1262 => 5..=12,
    };
    if !sf_range.contains(&settings.spreading_factor) {
        let extra = if settings.chip == Chip::Sx1276 && settings.spreading_factor == 6 {
            " (SF6 needs implicit-header mode, which sensorgate does not use)"
        } else {
            ""
        };
        return Err(invalid(
            "spreading_factor",
            format!(
                "{} is outside {}..={} for the {}{extra}",
                settings.spreading_factor,
                sf_range.start(),
                sf_range.end(),
                settings.chip.name()
            ),
        ));
    }
    if !BANDWIDTHS_HZ.contains(&settings.bandwidth_hz) {
        return Err(invalid(
            "bandwidth",
            format!(
                "{} Hz is not a LoRa bandwidth; use one of {}",
                settings.bandwidth_hz,
                BANDWIDTHS_HZ.map(|b| b.to_string()).join(", ")
            ),
        ));
    }
    if !(5..=8).contains(&settings.coding_rate) {
        return Err(invalid(
            "coding_rate",
            format!(
                "4/{} is not a LoRa coding rate; use 4/5, 4/6, 4/7 or 4/8",
                settings.coding_rate
            ),
        ));
    }
    if settings.preamble_len < 6 {
        return Err(invalid(
            "preamble",
            format!(
                "{} symbols is too short; use 6 or more (8 is usual)",
                settings.preamble_len
            ),
        ));
    }
    Ok(())
}

/// The frequency, within the chip's range.
fn check_frequency(settings: &RadioSettings) -> Result<(), RadioError> {
    let freq_range = match settings.chip {
        Chip::Sx1276 => 137_000_000..=1_020_000_000,
        Chip::Sx1262 => 150_000_000..=960_000_000,
    };
    if !freq_range.contains(&settings.frequency_hz) {
        return Err(invalid(
            "frequency",
            format!(
                "{} Hz is outside the {}'s range {}..={} Hz",
                settings.frequency_hz,
                settings.chip.name(),
                freq_range.start(),
                freq_range.end()
            ),
        ));
    }
    Ok(())
}

/// The SX1262's own options (TCXO voltage, DIO2 as RF switch): refused for the SX1276, checked for it.
fn check_chip_options(settings: &RadioSettings) -> Result<(), RadioError> {
    if settings.chip == Chip::Sx1276 {
        if settings.tcxo_voltage.is_some() {
            return Err(invalid("tcxo_voltage", "applies to the sx1262 only"));
        }
        if settings.dio2_rf_switch {
            return Err(invalid("dio2_rf_switch", "applies to the sx1262 only"));
        }
    }
    if let Some(volts) = settings.tcxo_voltage {
        if tcxo_code(volts).is_none() {
            return Err(invalid(
                "tcxo_voltage",
                format!("{volts} V is not one of 1.6, 1.7, 1.8, 2.2, 2.4, 2.7, 3.0, 3.3"),
            ));
        }
    }
    Ok(())
}

/// Checks the backend against the chip: BCM pins 0-27 and distinct, a BUSY pin for the SX1262, a
/// simulator with 1-254 nodes and a non-zero interval.
pub fn validate_backend(
    settings: &RadioSettings,
    backend: &RadioBackend,
) -> Result<(), RadioError> {
    match backend {
        RadioBackend::Pi(RadioPins {
            spi_path,
            reset_pin,
            irq_pin,
            busy_pin,
            cs_pin,
        }) => {
            if spi_path.as_os_str().is_empty() {
                return Err(invalid("spi", "is empty; e.g. \"/dev/spidev0.0\""));
            }
            let irq_key = match settings.chip {
                Chip::Sx1276 => "dio0_pin",
                Chip::Sx1262 => "dio1_pin",
            };
            let mut pins: Vec<(&'static str, u8)> =
                vec![("reset_pin", *reset_pin), (irq_key, *irq_pin)];
            match (settings.chip, busy_pin) {
                (Chip::Sx1262, None) => {
                    return Err(invalid("busy_pin", "the sx1262 needs its BUSY line wired"))
                }
                (Chip::Sx1276, Some(_)) => {
                    return Err(invalid("busy_pin", "applies to the sx1262 only"))
                }
                (_, Some(pin)) => pins.push(("busy_pin", *pin)),
                (_, None) => {}
            }
            if let Some(pin) = cs_pin {
                pins.push(("cs_pin", *pin));
            }
            for (i, &(key, pin)) in pins.iter().enumerate() {
                if pin > 27 {
                    return Err(invalid(
                        key,
                        format!("GPIO{pin} is not on the 40-pin header (0-27)"),
                    ));
                }
                if let Some(&(other, _)) = pins[..i].iter().find(|&&(_, p)| p == pin) {
                    return Err(invalid(
                        key,
                        format!("GPIO{pin} is already used by {other}"),
                    ));
                }
            }
            Ok(())
        }
        RadioBackend::Simulator {
            devices, interval, ..
        } => {
            if !(1..=254).contains(devices) {
                return Err(invalid("devices", format!("{devices} is outside 1..=254")));
            }
            if interval.is_zero() {
                return Err(invalid("interval", "must be longer than zero"));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_key(settings: &RadioSettings) -> (&'static str, String) {
        match validate(settings) {
            Err(RadioError::InvalidSetting { key, message }) => (key, message),
            other => panic!("expected a refused setting, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_both_chips_pass() {
        assert_eq!(validate(&RadioSettings::default()), Ok(()));
        let sx1262 = RadioSettings {
            chip: Chip::Sx1262,
            spreading_factor: 5,
            tcxo_voltage: Some(1.8),
            dio2_rf_switch: true,
            ..RadioSettings::default()
        };
        assert_eq!(validate(&sx1262), Ok(()));
    }

    #[test]
    fn spreading_factor_13_is_refused_naming_the_key() {
        let (key, message) = refused_key(&RadioSettings {
            spreading_factor: 13,
            ..RadioSettings::default()
        });
        assert_eq!(key, "spreading_factor");
        assert!(
            message.contains("13") && message.contains("7..=12"),
            "{message}"
        );
        let (key, message) = refused_key(&RadioSettings {
            spreading_factor: 6,
            ..RadioSettings::default()
        });
        assert_eq!(key, "spreading_factor");
        assert!(message.contains("implicit"), "{message}");
    }

    #[test]
    fn bandwidth_100_khz_is_refused_listing_the_allowed_ones() {
        let (key, message) = refused_key(&RadioSettings {
            bandwidth_hz: 100_000,
            ..RadioSettings::default()
        });
        assert_eq!(key, "bandwidth");
        assert!(
            message.contains("100000 Hz") && message.contains("125000"),
            "{message}"
        );
    }

    #[test]
    fn coding_rate_9_is_refused() {
        let (key, message) = refused_key(&RadioSettings {
            coding_rate: 9,
            ..RadioSettings::default()
        });
        assert_eq!(key, "coding_rate");
        assert!(
            message.contains("4/9") && message.contains("4/8"),
            "{message}"
        );
    }

    #[test]
    fn chip_specific_keys_and_ranges_are_checked() {
        let (key, _) = refused_key(&RadioSettings {
            tcxo_voltage: Some(1.8),
            ..RadioSettings::default()
        });
        assert_eq!(key, "tcxo_voltage");
        let (key, _) = refused_key(&RadioSettings {
            chip: Chip::Sx1262,
            tcxo_voltage: Some(2.0),
            ..RadioSettings::default()
        });
        assert_eq!(key, "tcxo_voltage");
        let (key, _) = refused_key(&RadioSettings {
            frequency_hz: 2_400_000_000,
            ..RadioSettings::default()
        });
        assert_eq!(key, "frequency");
        let (key, _) = refused_key(&RadioSettings {
            preamble_len: 4,
            ..RadioSettings::default()
        });
        assert_eq!(key, "preamble");
    }

    #[test]
    fn backend_pins_are_checked() {
        let sx1262 = RadioSettings {
            chip: Chip::Sx1262,
            ..RadioSettings::default()
        };
        let pi = |busy_pin, cs_pin, irq_pin| {
            RadioBackend::Pi(RadioPins {
                spi_path: "/dev/spidev0.0".into(),
                reset_pin: 18,
                irq_pin,
                busy_pin,
                cs_pin,
            })
        };
        assert_eq!(
            validate_backend(&sx1262, &pi(Some(20), Some(21), 16)),
            Ok(())
        );
        let err = validate_backend(&sx1262, &pi(None, None, 16)).unwrap_err();
        assert!(matches!(
            err,
            RadioError::InvalidSetting {
                key: "busy_pin",
                ..
            }
        ));
        let err = validate_backend(&sx1262, &pi(Some(20), None, 18)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dio1_pin: GPIO18 is already used by reset_pin"
        );
        let err = validate_backend(&RadioSettings::default(), &pi(None, Some(40), 4)).unwrap_err();
        assert!(matches!(
            err,
            RadioError::InvalidSetting { key: "cs_pin", .. }
        ));
        let sim = RadioBackend::Simulator {
            air: None,
            devices: 0,
            interval: Duration::from_secs(1),
        };
        assert!(validate_backend(&sx1262, &sim).is_err());
    }

    #[test]
    fn time_on_air_matches_the_datasheet_table() {
        // 125 kHz, CR 4/5, preamble 8, explicit header, CRC on, 20-byte payload.
        for (sf, toa_ms) in [(7, 56.6), (9, 185.3), (12, 1318.9)] {
            let settings = RadioSettings {
                spreading_factor: sf,
                ..RadioSettings::default()
            };
            let got = time_on_air(&settings, 20).as_secs_f64() * 1e3;
            assert!((got - toa_ms).abs() < 0.05, "SF{sf}: {got:.2} ms");
        }
    }

    #[test]
    fn low_data_rate_optimize_follows_symbol_time() {
        assert!(!low_data_rate_optimize(7, 125_000));
        assert!(!low_data_rate_optimize(10, 125_000));
        assert!(low_data_rate_optimize(11, 125_000));
        assert!(low_data_rate_optimize(12, 125_000));
        assert!(!low_data_rate_optimize(12, 500_000));
        assert!(low_data_rate_optimize(12, 250_000));
    }
}
