//! `[[source]]`: where frames come from. The TOML side is one flat table with a `kind` (serde's internally
//! tagged enums lose the spans of their errors, so the per-kind shape is checked here instead); the Rust
//! side is [`SourceConfig`] with a [`SourceKind`] per kind. This module owns the keys each kind takes, the
//! per-kind defaults (written out in the `Default` impls below) and the checks that concern one source
//! alone; it never checks one source against another (that is `validate.rs`) and never opens a device.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::limits;
use super::locate::{KeyPath, Locator};
use super::validate::{check_duration, Problem};
use crate::ble::scan::{Backend as BleBackend, BleSettings};
use crate::commands::{Deliver, DutyCycleSetting};
use crate::decode::{HeaderFormat, PayloadFormat};
use crate::frame::crc::CrcMode;
use crate::frame::Framing;
use crate::source::radio::{self as radio_stage, Chip, RadioError, RadioSettings};
use crate::source::rtl433::{DevicesMode, Rtl433Settings};
use crate::units;

/// One `[[source]]`, checked and with its defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// `[A-Za-z0-9_-]+`, unique among sources.
    pub name: String,
    /// The link header in front of each payload.
    pub header: HeaderFormat,
    /// How payloads are encoded.
    pub payload: PayloadFormat,
    /// What the source reads from, with its kind's settings.
    pub kind: SourceKind,
    /// `encryption = "aes-128-ccm"`: frames are authenticated and encrypted (`crate::crypto::frame`).
    pub encryption: Option<FrameEncryption>,
    /// `commands = true`: the source sends commands to its devices (`crate::commands`); `None`: off.
    pub commands: Option<CommandConfig>,
    /// `payload = "codec"`: its JavaScript codec, read, compiled and checked against its examples.
    pub codec: Option<crate::codec::settings::CodecSettings>,
}

/// The command keys of a source with `commands = true`.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// `deliver`: when its devices get their commands (a `[[device]] deliver` wins).
    pub deliver: Deliver,
    /// `rx_delay`: with `after_uplink`, how long after the end of a device's frame it listens.
    pub rx_delay: Duration,
    /// `command_queue`: commands waiting per device at most.
    pub queue: usize,
    /// `command_ttl`: how long a command waits at most before it expires.
    pub ttl: Duration,
    /// `address` (radios): the gateway's own RadioHead address, FROM of its commands.
    pub address: u8,
    /// `duty_cycle` (radios): `"auto"` (the frequency plan), `"off"`, or a share such as `"1%"`.
    pub duty_cycle: DutyCycleSetting,
    /// `client_queue`: commands one client (one login, or all anonymous clients together) may have
    /// waiting.
    pub client_queue: usize,
    /// `client_queue_bytes`: what one client's waiting commands may hold.
    pub client_queue_bytes: usize,
    /// `command_queue_bytes`: what all waiting commands of the source may hold.
    pub command_queue_bytes: usize,
    /// `client_airtime` (radios): the share of the duty-cycle budget one client may use, 0 < share <= 1.
    pub client_airtime: f64,
}

impl Default for CommandConfig {
    /// Deliver now, `rx_delay` 1 s, 8 commands per device kept up to 1 h, address 0, duty cycle from the
    /// frequency plan; per client 64 commands, 256 KiB and half the duty cycle; 1 MiB per source.
    fn default() -> Self {
        let bounds = crate::commands::QueueBounds::default();
        CommandConfig {
            deliver: Deliver::Now,
            rx_delay: Duration::from_secs(1),
            queue: 8,
            ttl: Duration::from_secs(3600),
            address: 0,
            duty_cycle: DutyCycleSetting::Auto,
            client_queue: bounds.client_commands,
            client_queue_bytes: bounds.client_bytes,
            command_queue_bytes: bounds.source_bytes,
            client_airtime: crate::commands::dutycycle::DEFAULT_CLIENT_SHARE,
        }
    }
}

/// `encryption = "aes-128-ccm"` with its `key_file`, of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameEncryption {
    /// The source's key (32 hex digits); `None` when every device has a `[[device]] key_file` of its
    /// own (frames of other devices are then refused, counted as `auth_failed`).
    pub key_file: Option<PathBuf>,
}

/// The `encryption` key's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum EncryptionName {
    #[serde(rename = "aes-128-ccm")]
    Aes128Ccm,
}

/// The kind of a source and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// `kind = "serial"`.
    Serial(SerialConfig),
    /// `kind = "simulator"`.
    Simulator(SimulatorConfig),
    /// `kind = "sx1276"` or `kind = "sx1262"`.
    Radio(RadioConfig),
    /// `kind = "rtl_433"`: the source's own settings (its `configured` addresses are filled in from
    /// `[[device]]` by [`Config::parse`](super::Config::parse), so a changed device restarts it).
    Rtl433(Box<Rtl433Settings>),
    /// `kind = "semtech-udp"`: LoRaWAN packet forwarders (`crate::lorawan`).
    SemtechUdp(crate::lorawan::settings::SemtechUdpConfig),
    /// `kind = "ble"`: Bluetooth LE advertisements (`crate::ble::scan`); its `configured` MACs are
    /// filled in from `[[device]]` like rtl_433's.
    Ble(Box<BleSettings>),
}

impl SourceKind {
    /// The kind as the configuration writes it (`kind = "..."`).
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Serial(_) => "serial",
            SourceKind::Simulator(_) => "simulator",
            SourceKind::Radio(radio) => match radio.chip {
                RadioChip::Sx1276 => "sx1276",
                RadioChip::Sx1262 => "sx1262",
            },
            SourceKind::Rtl433(_) => "rtl_433",
            SourceKind::SemtechUdp(_) => "semtech-udp",
            SourceKind::Ble(_) => "ble",
        }
    }
}

/// A serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    pub path: PathBuf,
    pub baud: u32,
    /// 5..=8.
    pub data_bits: u8,
    pub parity: Parity,
    /// 1 or 2.
    pub stop_bits: u8,
    pub framing: Framing,
    pub crc: CrcMode,
    /// Longest frame accepted, bytes (after unstuffing); longer ones are counted and dropped.
    pub max_frame_len: usize,
}

impl Default for SerialConfig {
    /// 115200 8N1, lines, no CRC, frames up to 512 bytes; `path` has no default (it is required).
    fn default() -> Self {
        SerialConfig {
            path: PathBuf::new(),
            baud: 115_200,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            framing: Framing::Lines,
            crc: CrcMode::None,
            max_frame_len: 512,
        }
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Odd,
    Even,
}

/// Simulated devices producing frames through the same framing and decoders as a serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorConfig {
    /// 1..=65535 ([`limits::SIMULATOR_DEVICES`]).
    pub devices: u32,
    /// How often each device sends.
    pub interval: Duration,
    pub framing: Framing,
    pub crc: CrcMode,
}

impl SimulatorConfig {
    /// Three devices every 2 s; framing `cobs` for binary payloads (LPP), `lines` for text (JSON,
    /// MySensors); no CRC.
    pub fn default_for(payload: PayloadFormat) -> Self {
        SimulatorConfig {
            devices: 3,
            interval: Duration::from_secs(2),
            framing: match payload {
                PayloadFormat::Lpp | PayloadFormat::Codec => Framing::Cobs,
                PayloadFormat::Json | PayloadFormat::MySensors => Framing::Lines,
            },
            crc: CrcMode::None,
        }
    }
}

/// A LoRa radio (single channel, receive only).
#[derive(Debug, Clone, PartialEq)]
pub struct RadioConfig {
    pub chip: RadioChip,
    pub backend: RadioBackend,
    /// Hz, within the chip's range: the radio driver's [`validate`](crate::source::radio::validate)
    /// owns the ranges of this and the keys below, and the configuration calls it.
    pub frequency: u32,
    pub spreading_factor: u8,
    /// Hz, one of [`BANDWIDTHS_HZ`].
    pub bandwidth: u32,
    /// The denominator of the coding rate: 5..=8 for 4/5..4/8.
    pub coding_rate: u8,
    pub sync_word: u8,
    /// Preamble length, symbols.
    pub preamble: u16,
    /// SX1262 modules with a TCXO on DIO3: its supply voltage.
    pub tcxo_voltage: Option<f32>,
    /// SX1262 modules whose RF switch is driven by DIO2.
    pub dio2_rf_switch: bool,
    /// `payload = "lorawan"`: the radio is a single-channel packet forwarder of a semtech-udp source
    /// (`crate::lorawan::forwarder`); `forward_to` is resolved when the whole file is read.
    pub lorawan: Option<crate::lorawan::radio_settings::RadioForwarding>,
}

impl RadioConfig {
    /// SF7, 125 kHz, 4/5, private sync word 0x12, preamble 8; the frequency is always configured.
    pub fn default_for(chip: RadioChip, backend: RadioBackend, frequency: u32) -> Self {
        RadioConfig {
            chip,
            backend,
            frequency,
            spreading_factor: 7,
            bandwidth: 125_000,
            coding_rate: 5,
            sync_word: 0x12,
            preamble: 8,
            tcxo_voltage: None,
            dio2_rf_switch: false,
            lorawan: None,
        }
    }
}

impl RadioConfig {
    /// The radio stage's settings and backend for this source: the one mapping from the configuration
    /// to the radio, used both to check the source (`check-config`) and to run it.
    pub fn stage_settings(&self) -> (RadioSettings, RadioBackend) {
        let settings = RadioSettings {
            chip: match self.chip {
                RadioChip::Sx1276 => Chip::Sx1276,
                RadioChip::Sx1262 => Chip::Sx1262,
            },
            frequency_hz: self.frequency,
            spreading_factor: self.spreading_factor,
            bandwidth_hz: self.bandwidth,
            coding_rate: self.coding_rate,
            sync_word: self.sync_word,
            preamble_len: self.preamble,
            tcxo_voltage: self.tcxo_voltage,
            dio2_rf_switch: self.dio2_rf_switch,
            ..RadioSettings::default()
        };
        (settings, self.backend.clone())
    }
}

/// Runs the radio driver's own checks ([`radio_stage::validate`], [`radio_stage::validate_backend`]) on
/// the settings this source will run with, and points their refusal at the key it names.
fn check_as_the_radio_does(radio: &RadioConfig, at: &KeyPath) -> Result<(), Problem> {
    let (settings, backend) = radio.stage_settings();
    let checked = radio_stage::validate(&settings)
        .and_then(|()| radio_stage::validate_backend(&settings, &backend))
        .and_then(|()| check_spi_path(&backend));
    match checked {
        Ok(()) => Ok(()),
        Err(RadioError::InvalidSetting { key, message }) => {
            let hint = match key {
                "frequency" => "; the value is in Hz, e.g. frequency = 868_100_000",
                _ => "",
            };
            Err(Problem::value(at.key(key), format!("{message}{hint}")))
        }
        Err(other) => Err(Problem::value(at.clone(), other.to_string())),
    }
}

/// The Pi backend's reading of the `spi` path (`/dev/spidevB.C`), which it applies when it opens the bus.
#[cfg(feature = "pi")]
fn check_spi_path(backend: &RadioBackend) -> Result<(), RadioError> {
    match backend {
        RadioBackend::Pi(pins) => radio_stage::pi::parse_spi_path(&pins.spi_path).map(|_| ()),
        RadioBackend::Simulator { .. } => Ok(()),
    }
}

/// Without the `pi` feature the Pi backend does not exist, and says so when the source starts.
#[cfg(not(feature = "pi"))]
fn check_spi_path(_backend: &RadioBackend) -> Result<(), RadioError> {
    Ok(())
}

/// The radio chip family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RadioChip {
    Sx1276,
    Sx1262,
}

/// Where the radio is (`backend = "pi"` with its SPI device and pins, or `"simulator"`), and the
/// pins: the radio driver's types.
pub use crate::source::radio::{RadioBackend, RadioPins};

/// The LoRa bandwidths both chips support, Hz: the radio driver's table, re-exported.
pub use crate::source::radio::BANDWIDTHS_HZ;

const COMMON_KEYS: [&str; 6] = [
    "name",
    "kind",
    "header",
    "payload",
    "encryption",
    "key_file",
];
const SERIAL_KEYS: &[&str] = &[
    "path",
    "baud",
    "data_bits",
    "parity",
    "stop_bits",
    "framing",
    "crc",
    "max_frame_len",
    "commands",
    "deliver",
    "rx_delay",
    "command_queue",
    "command_ttl",
    "client_queue",
    "client_queue_bytes",
    "command_queue_bytes",
];
/// The command keys of a radio source (serial sources take all but `address`, `duty_cycle` and
/// `client_airtime`).
const RADIO_COMMAND_KEYS: [&str; 11] = [
    "commands",
    "deliver",
    "rx_delay",
    "command_queue",
    "command_ttl",
    "client_queue",
    "client_queue_bytes",
    "command_queue_bytes",
    "address",
    "duty_cycle",
    "client_airtime",
];
const SIMULATOR_KEYS: &[&str] = &["devices", "interval", "framing", "crc"];
/// Every key of an rtl_433 source (it takes none of the common keys but `name` and `kind`: rtl_433
/// decodes, so there is no header, payload or frame encryption).
const RTL433_KEYS: &[&str] = &[
    "name",
    "kind",
    "command",
    "args",
    "device",
    "frequency",
    "hop_interval",
    "protocols",
    "sample_rate",
    "gain",
    "devices",
    "dedup_window",
    "stats_interval",
    "usb_reset",
];
const SX1276_KEYS: &[&str] = &[
    "backend",
    "spi",
    "reset_pin",
    "dio0_pin",
    "cs_pin",
    "frequency",
    "spreading_factor",
    "bandwidth",
    "coding_rate",
    "sync_word",
    "preamble",
    "devices",
    "interval",
    "air",
    "forward_to",
    "gateway_eui",
];
const SX1262_KEYS: &[&str] = &[
    "backend",
    "spi",
    "reset_pin",
    "dio1_pin",
    "busy_pin",
    "cs_pin",
    "frequency",
    "spreading_factor",
    "bandwidth",
    "coding_rate",
    "sync_word",
    "preamble",
    "tcxo_voltage",
    "dio2_rf_switch",
    "devices",
    "interval",
    "air",
    "forward_to",
    "gateway_eui",
];

/// Every key of a Bluetooth LE source (like rtl_433, it decodes itself: no header, payload or frame
/// encryption; bindkeys are per `[[device]] key_file`).
const BLE_KEYS: &[&str] = &[
    "name",
    "kind",
    "adapter",
    "hci_replay",
    "replay_interval",
    "replay_loop",
    "devices",
    "scan_watchdog",
    "counter_reset_after",
];

/// A semtech-udp source's keys (its devices carry their own decoders and keys).
const SEMTECH_UDP_KEYS: &[&str] = &[
    "name",
    "kind",
    "bind",
    "gateways",
    "keepalive",
    "commands",
    "command_queue",
    "command_ttl",
    "client_queue",
    "client_queue_bytes",
    "command_queue_bytes",
    "simulate",
    "simulate_interval",
];

/// The keys a `[[source]]` of this `kind` takes, or `None` for an unknown kind.
pub fn keys_for_kind(kind: &str) -> Option<Vec<&'static str>> {
    if kind == "semtech-udp" {
        return Some(SEMTECH_UDP_KEYS.to_vec());
    }
    let specific = match kind {
        "rtl_433" => return Some(RTL433_KEYS.to_vec()),
        "ble" => return Some(BLE_KEYS.to_vec()),
        "serial" => SERIAL_KEYS,
        "simulator" => SIMULATOR_KEYS,
        "sx1276" => SX1276_KEYS,
        "sx1262" => SX1262_KEYS,
        _ => return None,
    };
    let commands: &[&str] = match kind {
        "sx1276" | "sx1262" => &RADIO_COMMAND_KEYS,
        _ => &[],
    };
    Some(
        COMMON_KEYS
            .iter()
            .chain(&crate::codec::settings::KEYS)
            .chain(specific)
            .chain(commands)
            .copied()
            .collect(),
    )
}

/// The `kind` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KindName {
    Serial,
    Simulator,
    Sx1276,
    Sx1262,
    #[serde(rename = "rtl_433")]
    Rtl433,
    #[serde(rename = "semtech-udp")]
    SemtechUdp,
    Ble,
}

/// The `backend` key of a radio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum BackendName {
    Pi,
    Simulator,
}

/// A `[[source]]` as written: every key of every kind, checked per kind by [`SourceToml::build`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SourceToml {
    name: String,
    kind: KindName,
    header: Option<HeaderFormat>,
    payload: Option<PayloadName>,
    path: Option<PathBuf>,
    baud: Option<u32>,
    data_bits: Option<u8>,
    parity: Option<Parity>,
    stop_bits: Option<u8>,
    framing: Option<Framing>,
    crc: Option<CrcMode>,
    max_frame_len: Option<usize>,
    #[serde(default, deserialize_with = "units::option_duration")]
    interval: Option<Duration>,
    /// A count of simulated devices, or rtl_433's `"configured"` / `"all"`: read per kind.
    devices: Option<toml::Value>,
    backend: Option<BackendName>,
    spi: Option<PathBuf>,
    reset_pin: Option<u8>,
    dio0_pin: Option<u8>,
    dio1_pin: Option<u8>,
    busy_pin: Option<u8>,
    cs_pin: Option<u8>,
    /// Hz: one for a radio, one or a list for rtl_433; read per kind.
    frequency: Option<toml::Value>,
    spreading_factor: Option<u8>,
    bandwidth: Option<u32>,
    coding_rate: Option<String>,
    sync_word: Option<u8>,
    preamble: Option<u16>,
    tcxo_voltage: Option<f32>,
    dio2_rf_switch: Option<bool>,
    encryption: Option<EncryptionName>,
    key_file: Option<PathBuf>,
    commands: Option<bool>,
    deliver: Option<Deliver>,
    #[serde(default, deserialize_with = "units::option_duration")]
    rx_delay: Option<Duration>,
    command_queue: Option<usize>,
    #[serde(default, deserialize_with = "units::option_duration")]
    command_ttl: Option<Duration>,
    address: Option<u8>,
    duty_cycle: Option<String>,
    client_queue: Option<usize>,
    #[serde(default, deserialize_with = "units::option_size")]
    client_queue_bytes: Option<u64>,
    #[serde(default, deserialize_with = "units::option_size")]
    command_queue_bytes: Option<u64>,
    client_airtime: Option<String>,
    command: Option<String>,
    args: Option<Vec<String>>,
    /// An index or `":serial"`.
    device: Option<toml::Value>,
    #[serde(default, deserialize_with = "units::option_duration")]
    hop_interval: Option<Duration>,
    protocols: Option<Vec<u16>>,
    sample_rate: Option<u32>,
    /// dB, or `"auto"`.
    gain: Option<toml::Value>,
    #[serde(default, deserialize_with = "units::option_duration")]
    dedup_window: Option<Duration>,
    #[serde(default, deserialize_with = "units::option_duration")]
    stats_interval: Option<Duration>,
    usb_reset: Option<bool>,
    bind: Option<String>,
    gateways: Option<Vec<String>>,
    #[serde(default, deserialize_with = "units::option_duration")]
    keepalive: Option<Duration>,
    simulate: Option<Vec<String>>,
    #[serde(default, deserialize_with = "units::option_duration")]
    simulate_interval: Option<Duration>,
    codec: Option<PathBuf>,
    variables: Option<serde_json::Map<String, serde_json::Value>>,
    fport: Option<u8>,
    codec_examples: Option<crate::codec::settings::ExamplesPolicy>,
    #[serde(default, deserialize_with = "units::option_duration")]
    codec_timeout: Option<Duration>,
    adapter: Option<String>,
    hci_replay: Option<PathBuf>,
    #[serde(default, deserialize_with = "units::option_duration")]
    replay_interval: Option<Duration>,
    replay_loop: Option<bool>,
    #[serde(default, deserialize_with = "units::option_duration")]
    scan_watchdog: Option<Duration>,
    counter_reset_after: Option<u32>,
    forward_to: Option<String>,
    gateway_eui: Option<String>,
    air: Option<String>,
}

/// The `payload` key: a decoder, or `"lorawan"` (a radio forwarding to the network server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum PayloadName {
    #[serde(rename = "json")]
    Json,
    #[serde(rename = "lpp")]
    Lpp,
    #[serde(rename = "mysensors")]
    MySensors,
    #[serde(rename = "codec")]
    Codec,
    #[serde(rename = "lorawan")]
    Lorawan,
}

impl SourceToml {
    /// The payload decoder written, refusing `"lorawan"` (which only a radio takes, in `build_radio`).
    fn payload_format(&self, at: &KeyPath) -> Result<Option<PayloadFormat>, Problem> {
        Ok(match self.payload {
            None => None,
            Some(PayloadName::Json) => Some(PayloadFormat::Json),
            Some(PayloadName::Lpp) => Some(PayloadFormat::Lpp),
            Some(PayloadName::MySensors) => Some(PayloadFormat::MySensors),
            Some(PayloadName::Codec) => Some(PayloadFormat::Codec),
            Some(PayloadName::Lorawan) => {
                return Err(Problem::value(
                    at.key("payload"),
                    "payload = \"lorawan\" makes an sx1276 or sx1262 radio a LoRaWAN packet forwarder; \
                     a LoRaWAN gateway on the network is a [[source]] with kind = \"semtech-udp\"",
                ))
            }
        })
    }

    /// `payload = "lorawan"` on a radio: its forwarding keys and sync word checked, the keys that do not
    /// apply refused; `None` for any other payload (whose forwarding keys are refused).
    fn radio_forwarding(
        &self,
        at: &KeyPath,
    ) -> Result<Option<crate::lorawan::radio_settings::RadioForwarding>, Problem> {
        if self.payload != Some(PayloadName::Lorawan) {
            for (key, given) in [
                ("forward_to", self.forward_to.is_some()),
                ("gateway_eui", self.gateway_eui.is_some()),
            ] {
                if given {
                    return Err(Problem::key(
                        at.key(key),
                        format!("`{key}` applies to a radio with payload = \"lorawan\""),
                    ));
                }
            }
            return Ok(None);
        }
        for (key, given) in [
            ("header", self.header.is_some()),
            ("commands", self.commands.is_some()),
            ("encryption", self.encryption.is_some()),
        ] {
            if given {
                return Err(Problem::key(
                    at.key(key),
                    format!(
                        "a LoRaWAN radio hands whole LoRaWAN frames to its network server, which \
                         authenticates them and sends the downlinks: remove `{key}`"
                    ),
                ));
            }
        }
        crate::lorawan::radio_settings::radio_forwarding(
            &self.name,
            self.forward_to.as_deref(),
            self.gateway_eui.as_deref(),
            self.sync_word,
        )
        .map(Some)
        .map_err(|error| Problem::value(at.key(error.key), error.message))
    }

    /// Checks this source on its own and fills in its kind's defaults. `at` is its path
    /// (`source[i]`); the locator supplies the keys actually written, for the per-kind key check.
    pub(crate) fn build(
        self,
        at: &KeyPath,
        locator: &Locator<'_>,
    ) -> Result<SourceConfig, Problem> {
        let kind_name = match self.kind {
            KindName::Serial => "serial",
            KindName::Simulator => "simulator",
            KindName::Sx1276 => "sx1276",
            KindName::Sx1262 => "sx1262",
            KindName::Rtl433 => "rtl_433",
            KindName::SemtechUdp => "semtech-udp",
            KindName::Ble => "ble",
        };
        let allowed = keys_for_kind(kind_name).unwrap_or_default();
        for (key, _) in locator.keys(at) {
            if !allowed.contains(&key.as_str()) {
                return Err(Problem::key(
                    at.key(&key),
                    format!(
                        "`{key}` is not a key of a {kind_name} source; its keys are: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        check_name(&self.name, at)?;
        let encryption = self.frame_encryption(at)?;
        let commands = self.command_config(at)?;
        let codec_keys = crate::codec::settings::CodecKeys {
            codec: self.codec.clone(),
            variables: self.variables.clone(),
            fport: self.fport,
            codec_examples: self.codec_examples,
            codec_timeout: self.codec_timeout,
        };
        let mut source = match self.kind {
            KindName::Serial => self.build_serial(at),
            KindName::Simulator => self.build_simulator(at),
            KindName::Sx1276 => self.build_radio(RadioChip::Sx1276, at),
            KindName::Sx1262 => self.build_radio(RadioChip::Sx1262, at),
            KindName::Rtl433 => self.build_rtl433(at),
            KindName::SemtechUdp => self.build_semtech_udp(at),
            KindName::Ble => self.build_ble(at),
        }?;
        if encryption.is_some() {
            source.encryption = encryption;
            check_encryption_fits(&source, at)?;
        }
        source.commands = match source.kind {
            // Its one command, `reset_counter`, is the source's own business and takes effect at
            // once: always on, and what the source cannot do expires within a minute.
            SourceKind::Ble(_) => Some(CommandConfig {
                ttl: Duration::from_secs(60),
                ..CommandConfig::default()
            }),
            // LoRaWAN Class A devices listen only in the receive window after their uplink, which the
            // source times itself (RX1 at the uplink's tmst + rx1_delay): no delay on the commands' side.
            SourceKind::SemtechUdp(_) => commands.map(|config| CommandConfig {
                deliver: Deliver::AfterUplink,
                rx_delay: Duration::ZERO,
                ..config
            }),
            _ => commands,
        };
        source.codec = codec_settings(&source, codec_keys, at)?;
        Ok(source)
    }

    /// `commands` and the keys that go with it: each only with `commands = true`, in its range.
    fn command_config(&self, at: &KeyPath) -> Result<Option<CommandConfig>, Problem> {
        let given: [(&str, bool); 10] = [
            ("deliver", self.deliver.is_some()),
            ("rx_delay", self.rx_delay.is_some()),
            ("command_queue", self.command_queue.is_some()),
            ("command_ttl", self.command_ttl.is_some()),
            ("address", self.address.is_some()),
            ("duty_cycle", self.duty_cycle.is_some()),
            ("client_queue", self.client_queue.is_some()),
            ("client_queue_bytes", self.client_queue_bytes.is_some()),
            ("command_queue_bytes", self.command_queue_bytes.is_some()),
            ("client_airtime", self.client_airtime.is_some()),
        ];
        if self.commands != Some(true) {
            if let Some((key, _)) = given.iter().find(|(_, present)| *present) {
                return Err(Problem::key(
                    at.key(key),
                    format!("`{key}` applies to a source with commands = true"),
                ));
            }
            return Ok(None);
        }
        if self.kind == KindName::Simulator {
            return Err(Problem::value(
                at.key("commands"),
                "a simulator's nodes do not listen; commands go to serial and radio sources",
            ));
        }
        let defaults = CommandConfig::default();
        let mut config = CommandConfig {
            deliver: self.deliver.unwrap_or(defaults.deliver),
            rx_delay: self.rx_delay.unwrap_or(defaults.rx_delay),
            queue: self.command_queue.unwrap_or(defaults.queue),
            ttl: self.command_ttl.unwrap_or(defaults.ttl),
            address: self.address.unwrap_or(defaults.address),
            duty_cycle: defaults.duty_cycle,
            client_queue: self.client_queue.unwrap_or(defaults.client_queue),
            client_queue_bytes: defaults.client_queue_bytes,
            command_queue_bytes: defaults.command_queue_bytes,
            client_airtime: defaults.client_airtime,
        };
        if config.rx_delay > Duration::from_secs(60) {
            return Err(Problem::value(
                at.key("rx_delay"),
                "is longer than 60s; a node listens for a second or so after it sends (\"1s\" is usual)",
            ));
        }
        if !(1..=64).contains(&config.queue) {
            return Err(Problem::value(
                at.key("command_queue"),
                format!("{} is outside 1..=64 commands per device", config.queue),
            ));
        }
        if config.ttl < Duration::from_secs(1) || config.ttl > Duration::from_secs(7 * 86_400) {
            return Err(Problem::value(
                at.key("command_ttl"),
                "must be between \"1s\" and \"7d\"",
            ));
        }
        if config.address == 255 {
            return Err(Problem::value(
                at.key("address"),
                "255 is RadioHead's broadcast address; the gateway's own address is 0-254",
            ));
        }
        if let Some(text) = &self.duty_cycle {
            config.duty_cycle = parse_duty_cycle(text)
                .map_err(|message| Problem::value(at.key("duty_cycle"), message))?;
        }
        self.check_client_bounds(&mut config, at)?;
        Ok(Some(config))
    }

    /// `client_queue`, `client_queue_bytes`, `command_queue_bytes` and `client_airtime`, each in its
    /// range, and one client's bytes within the source's.
    fn check_client_bounds(&self, config: &mut CommandConfig, at: &KeyPath) -> Result<(), Problem> {
        limits::check_count(&limits::CLIENT_QUEUE, config.client_queue as u64)
            .map_err(|message| Problem::value(at.key("client_queue"), message))?;
        if let Some(bytes) = self.command_queue_bytes {
            limits::check_size(&limits::COMMAND_QUEUE_BYTES, bytes)
                .map_err(|message| Problem::value(at.key("command_queue_bytes"), message))?;
            config.command_queue_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        let source_bytes = config.command_queue_bytes as u64;
        match self.client_queue_bytes {
            Some(bytes) => {
                limits::check_size_within(&limits::CLIENT_QUEUE_BYTES, bytes, source_bytes)
                    .map_err(|message| {
                        Problem::value(
                            at.key("client_queue_bytes"),
                            format!("{message} (at most the source's command_queue_bytes)"),
                        )
                    })?;
                config.client_queue_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            }
            // The default per client never exceeds a smaller source bound.
            None => {
                config.client_queue_bytes =
                    config.client_queue_bytes.min(config.command_queue_bytes)
            }
        }
        if let Some(text) = &self.client_airtime {
            config.client_airtime = parse_share(text).ok_or_else(|| {
                Problem::value(
                    at.key("client_airtime"),
                    format!("\"{text}\" is not a share of the duty cycle; write a percentage above 0 and at most 100, e.g. \"50%\""),
                )
            })?;
        }
        Ok(())
    }

    /// `encryption` and `key_file`: a key file only with encryption, and not an empty path.
    fn frame_encryption(&self, at: &KeyPath) -> Result<Option<FrameEncryption>, Problem> {
        if let Some(path) = &self.key_file {
            if path.as_os_str().is_empty() {
                return Err(Problem::value(
                    at.key("key_file"),
                    "is empty; write the path of a file holding the 32 hex digits of the key",
                ));
            }
        }
        match (self.encryption, &self.key_file) {
            (None, Some(_)) => Err(Problem::key(
                at.key("key_file"),
                "a key_file needs encryption = \"aes-128-ccm\" on this source",
            )),
            (None, None) => Ok(None),
            (Some(EncryptionName::Aes128Ccm), key_file) => Ok(Some(FrameEncryption {
                key_file: key_file.clone(),
            })),
        }
    }

    /// A LoRaWAN packet-forwarder source: `bind`, `gateways` and `keepalive` as `crate::lorawan::settings` checks them.
    fn build_semtech_udp(self, at: &KeyPath) -> Result<SourceConfig, Problem> {
        let udp = crate::lorawan::settings::semtech_udp_config(
            self.bind.as_deref(),
            self.gateways.as_deref(),
            self.keepalive,
        )
        .and_then(|udp| udp.with_simulation(self.simulate.as_deref(), self.simulate_interval))
        .map_err(|error| {
            let path = if error.key == "gateways" && self.gateways.is_none() {
                at.clone()
            } else {
                at.key(error.key)
            };
            Problem::value(path, error.message)
        })?;
        Ok(SourceConfig {
            name: self.name,
            header: HeaderFormat::None,
            payload: PayloadFormat::Lpp,
            kind: SourceKind::SemtechUdp(udp),
            encryption: None,
            commands: None,
            codec: None,
        })
    }

    fn build_serial(self, at: &KeyPath) -> Result<SourceConfig, Problem> {
        let defaults = SerialConfig::default();
        let payload = self.payload_format(at)?.unwrap_or(PayloadFormat::Json);
        let path = self.path.ok_or_else(|| {
            Problem::value(
                at.clone(),
                "missing key `path`: the serial device, e.g. path = \"/dev/ttyUSB0\" (better: a /dev/serial/by-id/ path)",
            )
        })?;
        if path.as_os_str().is_empty() {
            return Err(Problem::value(
                at.key("path"),
                "is empty; write the serial device, e.g. \"/dev/ttyUSB0\"",
            ));
        }
        let serial = SerialConfig {
            path,
            baud: self.baud.unwrap_or(defaults.baud),
            data_bits: self.data_bits.unwrap_or(defaults.data_bits),
            parity: self.parity.unwrap_or(defaults.parity),
            stop_bits: self.stop_bits.unwrap_or(defaults.stop_bits),
            framing: self.framing.unwrap_or(defaults.framing),
            crc: self.crc.unwrap_or(defaults.crc),
            max_frame_len: self.max_frame_len.unwrap_or(defaults.max_frame_len),
        };
        if serial.baud == 0 {
            return Err(Problem::value(
                at.key("baud"),
                "must be a positive integer, e.g. 115200",
            ));
        }
        if !(5..=8).contains(&serial.data_bits) {
            return Err(Problem::value(
                at.key("data_bits"),
                format!("{} is not 5, 6, 7 or 8", serial.data_bits),
            ));
        }
        if !matches!(serial.stop_bits, 1 | 2) {
            return Err(Problem::value(
                at.key("stop_bits"),
                format!("{} is not 1 or 2", serial.stop_bits),
            ));
        }
        if !(1..=65_536).contains(&serial.max_frame_len) {
            return Err(Problem::value(
                at.key("max_frame_len"),
                format!("{} is outside 1..=65536 bytes", serial.max_frame_len),
            ));
        }
        let header = self.header.unwrap_or(HeaderFormat::None);
        check_text_framing(serial.framing, serial.crc, header, payload, at)?;
        Ok(SourceConfig {
            name: self.name,
            header,
            payload,
            kind: SourceKind::Serial(serial),
            encryption: None,
            commands: None,
            codec: None,
        })
    }

    fn build_simulator(self, at: &KeyPath) -> Result<SourceConfig, Problem> {
        let payload = self.payload_format(at)?.unwrap_or(PayloadFormat::Lpp);
        let header = self.header.unwrap_or(match payload {
            PayloadFormat::Lpp | PayloadFormat::Codec => HeaderFormat::Node16,
            PayloadFormat::Json | PayloadFormat::MySensors => HeaderFormat::None,
        });
        let defaults = SimulatorConfig::default_for(payload);
        let simulator = SimulatorConfig {
            devices: device_count(self.devices.as_ref(), at)?.unwrap_or(defaults.devices),
            interval: self.interval.unwrap_or(defaults.interval),
            framing: self.framing.unwrap_or(defaults.framing),
            crc: self.crc.unwrap_or(defaults.crc),
        };
        limits::check_count(&limits::SIMULATOR_DEVICES, u64::from(simulator.devices))
            .map_err(|message| Problem::value(at.key("devices"), message))?;
        check_duration(
            &limits::SOURCE_INTERVAL,
            simulator.interval,
            at.key("interval"),
        )?;
        check_text_framing(simulator.framing, simulator.crc, header, payload, at)?;
        Ok(SourceConfig {
            name: self.name,
            header,
            payload,
            kind: SourceKind::Simulator(simulator),
            encryption: None,
            commands: None,
            codec: None,
        })
    }

    fn build_radio(self, chip: RadioChip, at: &KeyPath) -> Result<SourceConfig, Problem> {
        let irq_key = match chip {
            RadioChip::Sx1276 => "dio0_pin",
            RadioChip::Sx1262 => "dio1_pin",
        };
        let backend = self.radio_backend(chip, irq_key, at)?;
        let frequency = match frequencies(self.frequency.as_ref(), at)?.as_slice() {
            [] => Err(Problem::value(
                at.clone(),
                "missing key `frequency` (Hz, allowed in your region), e.g. frequency = 868_100_000",
            )),
            [one] => Ok(*one),
            _ => Err(Problem::value(
                at.key("frequency"),
                "a LoRa radio listens on one frequency; write one number of Hz, e.g. 868_100_000",
            )),
        }?;
        let mut radio = RadioConfig::default_for(chip, backend, frequency);
        radio.spreading_factor = self.spreading_factor.unwrap_or(radio.spreading_factor);
        radio.bandwidth = self.bandwidth.unwrap_or(radio.bandwidth);
        if let Some(rate) = &self.coding_rate {
            radio.coding_rate = match rate.as_str() {
                "4/5" => 5,
                "4/6" => 6,
                "4/7" => 7,
                "4/8" => 8,
                _ => {
                    return Err(Problem::value(
                        at.key("coding_rate"),
                        format!("\"{rate}\" is not a LoRa coding rate; write one of \"4/5\", \"4/6\", \"4/7\", \"4/8\""),
                    ))
                }
            };
        }
        radio.lorawan = self.radio_forwarding(at)?;
        let payload = match radio.lorawan {
            Some(_) => {
                radio.sync_word = crate::lorawan::radio_settings::LORAWAN_SYNC_WORD;
                // Never decoded by the pipeline: the network server decodes per device.
                PayloadFormat::Lpp
            }
            None => self.payload_format(at)?.unwrap_or(PayloadFormat::Lpp),
        };
        radio.sync_word = self.sync_word.unwrap_or(radio.sync_word);
        radio.preamble = self.preamble.unwrap_or(radio.preamble);
        radio.tcxo_voltage = self.tcxo_voltage;
        radio.dio2_rf_switch = self.dio2_rf_switch.unwrap_or(false);
        check_as_the_radio_does(&radio, at)?;
        Ok(SourceConfig {
            name: self.name,
            header: self.header.unwrap_or(HeaderFormat::RadioHead),
            payload,
            kind: SourceKind::Radio(radio),
            encryption: None,
            commands: None,
            codec: None,
        })
    }

    /// The backend with its pins: BCM 0..=27, all distinct; a simulator's pins are optional (so a config
    /// can switch backends by one line) but still checked.
    fn radio_backend(
        &self,
        chip: RadioChip,
        irq_key: &'static str,
        at: &KeyPath,
    ) -> Result<RadioBackend, Problem> {
        let irq = match chip {
            RadioChip::Sx1276 => self.dio0_pin,
            RadioChip::Sx1262 => self.dio1_pin,
        };
        self.check_radio_pins(irq_key, irq, at)?;
        match self.backend.unwrap_or(BackendName::Pi) {
            BackendName::Simulator => self.simulated_radio(at),
            BackendName::Pi => self.pi_radio(chip, irq_key, irq, at),
        }
    }

    /// Every pin given, whatever the backend: BCM 0..=27 and none used twice.
    fn check_radio_pins(
        &self,
        irq_key: &'static str,
        irq: Option<u8>,
        at: &KeyPath,
    ) -> Result<(), Problem> {
        let mut pins: Vec<(&str, u8)> = Vec::new();
        for (key, pin) in [
            ("reset_pin", self.reset_pin),
            (irq_key, irq),
            ("busy_pin", self.busy_pin),
            ("cs_pin", self.cs_pin),
        ] {
            let Some(pin) = pin else { continue };
            if pin > 27 {
                return Err(Problem::value(
                    at.key(key),
                    format!("GPIO{pin} is not on the 40-pin header; BCM pins are 0..=27"),
                ));
            }
            if let Some((other, _)) = pins.iter().find(|(_, p)| *p == pin) {
                return Err(Problem::value(
                    at.key(key),
                    format!("GPIO{pin} is already used by {other}; every pin of a radio must be different"),
                ));
            }
            pins.push((key, pin));
        }
        Ok(())
    }

    /// `backend = "simulator"`: its node count and interval, defaulted.
    fn simulated_radio(&self, at: &KeyPath) -> Result<RadioBackend, Problem> {
        // The node count is the radio's to check (`check_as_the_radio_does`); the interval's
        // range is the configuration's.
        let devices = device_count(self.devices.as_ref(), at)?.unwrap_or(3);
        let interval = self.interval.unwrap_or(Duration::from_secs(2));
        check_duration(&limits::SOURCE_INTERVAL, interval, at.key("interval"))?;
        let air = match &self.air {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| {
                Problem::value(
                    at.key("air"),
                    format!("\"{text}\" is not an address and port; write e.g. air = \"127.0.0.1:1701\""),
                )
            })?),
        };
        Ok(RadioBackend::Simulator {
            devices,
            interval,
            air,
        })
    }

    /// `backend = "pi"` (the default): no simulator keys, the reset and interrupt pins (and BUSY for the
    /// SX1262) present, and a SPI device path.
    fn pi_radio(
        &self,
        chip: RadioChip,
        irq_key: &'static str,
        irq: Option<u8>,
        at: &KeyPath,
    ) -> Result<RadioBackend, Problem> {
        for key in ["devices", "interval", "air"] {
            let present = match key {
                "devices" => self.devices.is_some(),
                "air" => self.air.is_some(),
                _ => self.interval.is_some(),
            };
            if present {
                return Err(Problem::key(
                    at.key(key),
                    format!("`{key}` applies to backend = \"simulator\" only"),
                ));
            }
        }
        let missing = |key: &str, example: &str| {
            Problem::value(
                at.clone(),
                format!("missing key `{key}` (BCM GPIO number), e.g. {key} = {example}"),
            )
        };
        let reset_pin = self.reset_pin.ok_or_else(|| missing("reset_pin", "17"))?;
        let irq_pin = irq.ok_or_else(|| missing(irq_key, "4"))?;
        if chip == RadioChip::Sx1262 && self.busy_pin.is_none() {
            return Err(missing("busy_pin", "20"));
        }
        let spi = self
            .spi
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/spidev0.0"));
        if spi.as_os_str().is_empty() {
            return Err(Problem::value(
                at.key("spi"),
                "is empty; e.g. \"/dev/spidev0.0\"",
            ));
        }
        Ok(RadioBackend::Pi(RadioPins {
            spi_path: spi,
            reset_pin,
            irq_pin,
            busy_pin: self.busy_pin,
            cs_pin: self.cs_pin,
        }))
    }
}

impl SourceToml {
    /// `kind = "rtl_433"`: its keys into the source's settings, then the source's own checks.
    fn build_rtl433(self, at: &KeyPath) -> Result<SourceConfig, Problem> {
        let mut settings = Rtl433Settings::default();
        if let Some(command) = self.command {
            settings.command = command;
        }
        settings.args = self.args.unwrap_or_default();
        settings.receiver.device = match &self.device {
            None => None,
            Some(toml::Value::Integer(index)) if *index >= 0 => Some(index.to_string()),
            Some(toml::Value::String(text))
                if text.parse::<u32>().is_ok() || (text.len() > 1 && text.starts_with(':')) =>
            {
                Some(text.clone())
            }
            Some(_) => {
                return Err(Problem::value(
                    at.key("device"),
                    "is not a stick: write its index (device = 0) or its serial after a colon (device = \":00000001\")",
                ))
            }
        };
        settings.receiver.frequencies = frequencies(self.frequency.as_ref(), at)?;
        settings.receiver.hop_interval = self.hop_interval;
        settings.receiver.protocols = self.protocols.unwrap_or_default();
        settings.receiver.sample_rate = self.sample_rate;
        settings.receiver.gain = match &self.gain {
            None => None,
            Some(toml::Value::String(text)) if text == "auto" => Some("0".to_string()),
            Some(toml::Value::Integer(db)) if (0..=50).contains(db) => Some(db.to_string()),
            Some(toml::Value::Float(db)) if (0.0..=50.0).contains(db) => Some(db.to_string()),
            Some(_) => return Err(Problem::value(
                at.key("gain"),
                "is not a gain: write \"auto\" or the tuner gain in dB, 0 to 50 (e.g. gain = 28.0)",
            )),
        };
        settings.devices = match &self.devices {
            None => settings.devices,
            Some(toml::Value::String(text)) if text == "configured" => DevicesMode::Configured,
            Some(toml::Value::String(text)) if text == "all" => DevicesMode::All,
            Some(_) => {
                return Err(Problem::value(
                    at.key("devices"),
                    "write \"configured\" (only [[device]] entries are published; others are listed in {base}/gateway/heard) or \"all\"",
                ))
            }
        };
        settings.dedup_window = self.dedup_window.unwrap_or(settings.dedup_window);
        settings.stats_interval = self.stats_interval.unwrap_or(settings.stats_interval);
        settings.usb_reset = self.usb_reset.unwrap_or(settings.usb_reset);
        settings
            .check()
            .map_err(|refusal| Problem::value(at.key(refusal.key), refusal.message))?;
        Ok(SourceConfig {
            name: self.name,
            header: HeaderFormat::None,
            payload: PayloadFormat::Json,
            kind: SourceKind::Rtl433(Box::new(settings)),
            encryption: None,
            commands: None,
            codec: None,
        })
    }
}

impl SourceToml {
    /// `kind = "ble"`: its keys into the source's settings, then the source's own checks.
    fn build_ble(self, at: &KeyPath) -> Result<SourceConfig, Problem> {
        let mut settings = BleSettings::default();
        match (self.adapter, self.hci_replay) {
            (Some(_), Some(_)) => {
                return Err(Problem::key(
                    at.key("hci_replay"),
                    "a source scans an adapter or replays a file, not both: remove adapter or hci_replay",
                ))
            }
            (Some(adapter), None) => settings.backend = BleBackend::Hci { adapter },
            (None, Some(file)) => {
                settings.backend = BleBackend::Replay {
                    file,
                    interval: self.replay_interval.unwrap_or(Duration::from_secs(1)),
                    looping: self.replay_loop.unwrap_or(false),
                }
            }
            (None, None) => {}
        }
        if !matches!(settings.backend, BleBackend::Replay { .. }) {
            for (key, given) in [
                ("replay_interval", self.replay_interval.is_some()),
                ("replay_loop", self.replay_loop.is_some()),
            ] {
                if given {
                    return Err(Problem::key(
                        at.key(key),
                        format!("`{key}` applies to a source with hci_replay = \"FILE\""),
                    ));
                }
            }
        }
        settings.devices = match &self.devices {
            None => settings.devices,
            Some(toml::Value::String(text)) if text == "configured" => DevicesMode::Configured,
            Some(toml::Value::String(text)) if text == "all" => DevicesMode::All,
            Some(_) => {
                return Err(Problem::value(
                    at.key("devices"),
                    "write \"configured\" (only [[device]] entries are published; other sensors are listed in {base}/gateway/heard) or \"all\"",
                ))
            }
        };
        settings.scan_watchdog = self.scan_watchdog.unwrap_or(settings.scan_watchdog);
        settings.counter_reset_after = self
            .counter_reset_after
            .unwrap_or(settings.counter_reset_after);
        settings
            .check()
            .map_err(|refusal| Problem::value(at.key(refusal.key), refusal.message))?;
        Ok(SourceConfig {
            name: self.name,
            header: HeaderFormat::None,
            payload: PayloadFormat::Json,
            kind: SourceKind::Ble(Box::new(settings)),
            encryption: None,
            commands: None,
            codec: None,
        })
    }
}

/// `devices` as a number of simulated devices.
fn device_count(value: Option<&toml::Value>, at: &KeyPath) -> Result<Option<u32>, Problem> {
    match value {
        None => Ok(None),
        Some(toml::Value::Integer(count)) => u32::try_from(*count).map(Some).map_err(|_| {
            Problem::value(
                at.key("devices"),
                format!("{count} is not a number of simulated devices"),
            )
        }),
        Some(_) => Err(Problem::value(
            at.key("devices"),
            "is the number of simulated devices, e.g. devices = 3",
        )),
    }
}

/// `frequency`: one number of Hz or a list of them; empty when absent.
fn frequencies(value: Option<&toml::Value>, at: &KeyPath) -> Result<Vec<u32>, Problem> {
    let hz = |value: &toml::Value| match value {
        toml::Value::Integer(hz) => u32::try_from(*hz).ok(),
        _ => None,
    };
    let refused = || {
        Problem::value(
            at.key("frequency"),
            "is not a frequency: write a number of Hz (433_920_000), or a list of them for rtl_433",
        )
    };
    match value {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(list)) if !list.is_empty() => {
            list.iter().map(|v| hz(v).ok_or_else(refused)).collect()
        }
        Some(one) => hz(one).map(|hz| vec![hz]).ok_or_else(refused),
    }
}

/// A percentage above 0 and at most 100 (`"1%"`, `"50 %"`), as a share of 1.
fn parse_share(text: &str) -> Option<f64> {
    text.strip_suffix('%')
        .and_then(|number| number.trim().parse::<f64>().ok())
        .filter(|p| *p > 0.0 && *p <= 100.0)
        .map(|percent| percent / 100.0)
}

/// `"auto"`, `"off"`, or a share of every hour such as `"1%"` or `"0.1%"` (above 0, at most 100).
fn parse_duty_cycle(text: &str) -> Result<DutyCycleSetting, String> {
    match text {
        "auto" => return Ok(DutyCycleSetting::Auto),
        "off" => return Ok(DutyCycleSetting::Off),
        _ => {}
    }
    match parse_share(text) {
        Some(share) => Ok(DutyCycleSetting::Share(share)),
        None => Err(format!(
            "\"{text}\" is not a duty cycle; write \"auto\" (the frequency plan), \"off\", or a share such as \"1%\""
        )),
    }
}

/// `[A-Za-z0-9_-]+`.
fn check_name(name: &str, at: &KeyPath) -> Result<(), Problem> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Problem::value(
            at.key("name"),
            format!("\"{name}\" is not a source name; use letters, digits, '_' and '-' only, e.g. \"uart0\""),
        ))
    }
}

/// Encrypted frames are binary: serial and simulated sources need COBS or SLIP framing; a radio's
/// simulator sends plain frames, so encryption needs the real chip there. And they need a header that
/// carries the node's address: the nonce and the replay mark are per address, and without one every
/// node of the source would share nonce address 0 and one replay mark (the sealed format has no room
/// for an address of its own).
fn check_encryption_fits(source: &SourceConfig, at: &KeyPath) -> Result<(), Problem> {
    let framing = match &source.kind {
        SourceKind::SemtechUdp(_) => return Ok(()), // never encrypted: its keys take no `encryption`
        SourceKind::Serial(serial) => Some(serial.framing),
        SourceKind::Simulator(simulator) => {
            if source
                .encryption
                .as_ref()
                .is_some_and(|e| e.key_file.is_none())
            {
                return Err(Problem::value(
                    at.clone(),
                    "an encrypted simulator needs key_file: every simulated node seals its frames with it",
                ));
            }
            Some(simulator.framing)
        }
        SourceKind::Radio(radio) => {
            if matches!(radio.backend, RadioBackend::Simulator { .. }) {
                return Err(Problem::value(
                    at.key("encryption"),
                    "the radio simulator's nodes send plain frames; use encryption with backend = \"pi\", or a kind = \"simulator\" source to try it",
                ));
            }
            None
        }
        SourceKind::Rtl433(_) | SourceKind::Ble(_) => None,
    };
    if framing == Some(Framing::Lines) {
        return Err(Problem::value(
            at.key("encryption"),
            "encrypted frames are binary and \"lines\" carries text only; write framing = \"cobs\" or \"slip\"",
        ));
    }
    if source.header == HeaderFormat::None {
        return Err(Problem::value(
            at.key("encryption"),
            "needs a header that carries each node's address (the nonce and the replay mark are per address; without one every node shares address 0): write header = \"node16\" or \"radiohead\"",
        ));
    }
    Ok(())
}

/// The codec keys: required with `payload = "codec"` (the codec read, compiled and its examples run),
/// refused without it.
fn codec_settings(
    source: &SourceConfig,
    keys: crate::codec::settings::CodecKeys,
    at: &KeyPath,
) -> Result<Option<crate::codec::settings::CodecSettings>, Problem> {
    if source.payload != PayloadFormat::Codec {
        return match keys.first_given() {
            Some(key) => Err(Problem::key(
                at.key(key),
                format!("`{key}` applies to a source with payload = \"codec\""),
            )),
            None => Ok(None),
        };
    }
    crate::codec::settings::build(keys)
        .map(Some)
        .map_err(|(key, message)| Problem::value(at.key(key), message))
}

/// Line framing carries text only: a binary payload, header or CRC trailer needs COBS or SLIP.
fn check_text_framing(
    framing: Framing,
    crc: CrcMode,
    header: HeaderFormat,
    payload: PayloadFormat,
    at: &KeyPath,
) -> Result<(), Problem> {
    if framing != Framing::Lines {
        return Ok(());
    }
    let binary = if payload == PayloadFormat::Lpp {
        Some("payload = \"lpp\" is binary".to_string())
    } else if payload == PayloadFormat::Codec {
        Some("payload = \"codec\" decodes binary vendor payloads".to_string())
    } else if header != HeaderFormat::None {
        Some(format!("header = \"{}\" is binary", header.name()))
    } else if crc != CrcMode::None {
        Some("a CRC trailer is binary".to_string())
    } else {
        None
    };
    match binary {
        Some(why) => Err(Problem::value(
            at.key("framing"),
            format!("\"lines\" carries text only and {why}; write framing = \"cobs\" or \"slip\""),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why `[[source]]` is a flat table checked per kind: with serde's internally tagged enum, toml 0.8
    /// reports an unknown key with the span of the whole table, not of the key. If this starts to fail,
    /// a tagged enum would locate errors as well and could replace the per-kind key lists.
    #[test]
    fn internally_tagged_enums_lose_the_key_span() {
        #[derive(Debug, Deserialize)]
        #[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
        #[allow(dead_code)]
        enum Tagged {
            Serial { name: String, baud: Option<u32> },
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Doc {
            source: Vec<Tagged>,
        }
        let text = "[[source]]\nname = \"a\"\nkind = \"serial\"\nbuad = 5\n";
        let error = toml::from_str::<Doc>(text).unwrap_err();
        let key_at = text.find("buad").unwrap();
        assert!(error.message().contains("unknown field `buad`"));
        assert_ne!(error.span().map(|s| s.start), Some(key_at));
    }

    #[test]
    fn every_kind_has_the_common_keys_and_no_duplicates() {
        for kind in ["serial", "simulator", "sx1276", "sx1262"] {
            let keys = keys_for_kind(kind).unwrap();
            for common in COMMON_KEYS {
                assert!(keys.contains(&common), "{kind}: {common}");
            }
            let mut sorted = keys.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), keys.len(), "{kind}");
        }
        assert!(keys_for_kind("sx1272").is_none());
    }
}
