//! The LoRaWAN configuration: the `[lorawan]` table, the keys of a `kind = "semtech-udp"` source, and
//! the LoRaWAN keys of a `[[device]]` (OTAA: `dev_eui`, `join_eui`, `app_key_file`; ABP: `dev_addr`,
//! `nwk_s_key_file`, `app_s_key_file`; `payload` or `fports`). This module owns their types, defaults
//! and checks; `crate::config` composes them into the file's tree and points a [`SettingError`] at its
//! key as `FILE:LINE:COL`. The key files are read by `crate::app::keys` (hex, permission warning, never
//! logged).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::dev_nonce::LorawanVersion;
use super::region::Region;
use super::server::ServerSettings;
use crate::decode::PayloadFormat;

/// A check that failed: the key (relative to its table) and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: &'static str,
    pub message: String,
}

impl SettingError {
    pub(crate) fn new(key: &'static str, message: impl Into<String>) -> SettingError {
        SettingError {
            key,
            message: message.into(),
        }
    }
}

/// Default `keepalive` of a semtech-udp source: lora_pkt_fwd's `keepalive_interval`.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);
/// Default `bind` of a semtech-udp source: every interface, the forwarders' usual port.
pub const DEFAULT_BIND: &str = "0.0.0.0:1700";
/// Default dedup window of one uplink heard by several gateways.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_millis(200);
/// Default bound of LoRaWAN device sessions.
pub const DEFAULT_MAX_DEVICES: usize = 1000;
/// Default `simulate_interval`: how often a simulated device sends an uplink.
pub const DEFAULT_SIMULATE_INTERVAL: Duration = Duration::from_secs(30);
/// The most devices one semtech-udp source simulates.
pub const MAX_SIMULATED_DEVICES: usize = 16;

/// `[lorawan]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LorawanConfig {
    pub region: Region,
    /// 6 hex digits; DevAddrs are allocated with its NwkID (7 low bits).
    #[serde(default, deserialize_with = "net_id")]
    pub net_id: u32,
    /// RX1 delay of data downlinks (from the region: 1 s).
    #[serde(default, deserialize_with = "crate::units::option_duration")]
    pub rx1_delay: Option<Duration>,
    /// JOIN_ACCEPT_DELAY1 (from the region: 5 s).
    #[serde(default, deserialize_with = "crate::units::option_duration")]
    pub join_accept_delay1: Option<Duration>,
    /// RX2 frequency, Hz (from the region: 869.525 MHz in EU868).
    #[serde(default)]
    pub rx2_frequency: Option<u32>,
    /// RX2 data rate index (from the region: DR0 in EU868).
    #[serde(default)]
    pub rx2_data_rate: Option<u8>,
    /// Copies of one uplink within it are one uplink (default 200 ms).
    #[serde(
        default = "default_dedup_window",
        deserialize_with = "crate::units::duration"
    )]
    pub dedup_window: Duration,
    /// At most this many LoRaWAN devices (default 1000).
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
}

fn default_dedup_window() -> Duration {
    DEFAULT_DEDUP_WINDOW
}

fn default_max_devices() -> usize {
    DEFAULT_MAX_DEVICES
}

impl LorawanConfig {
    /// The server's settings, checked: delays in whole seconds of 1..=15 (the JoinAccept's RxDelay
    /// field) and 1..=15 s for the join, a dedup window of 10 ms..=2 s, 1..=100,000 devices.
    pub fn server_settings(&self) -> Result<ServerSettings, SettingError> {
        let region = self.region.params();
        let whole_seconds = |key: &'static str, value: Option<Duration>, default: u64| {
            let Some(value) = value else {
                return Ok(default);
            };
            let secs = value.as_secs();
            if value.subsec_nanos() != 0 || !(1..=15).contains(&secs) {
                return Err(SettingError::new(
                    key,
                    "must be whole seconds from \"1s\" to \"15s\" (LoRaWAN's RxDelay); \"1s\" is usual",
                ));
            }
            Ok(secs)
        };
        let rx1_delay = whole_seconds("rx1_delay", self.rx1_delay, region.receive_delay1)?;
        let join_accept_delay1 = whole_seconds(
            "join_accept_delay1",
            self.join_accept_delay1,
            region.join_accept_delay1,
        )?;
        let window = self.dedup_window();
        if window < Duration::from_millis(10) || window > Duration::from_secs(2) {
            return Err(SettingError::new(
                "dedup_window",
                "must be between \"10ms\" and \"2s\"; \"200ms\" is usual",
            ));
        }
        if !(1..=100_000).contains(&self.max_devices()) {
            return Err(SettingError::new(
                "max_devices",
                "must be between 1 and 100000",
            ));
        }
        let rx2_data_rate = self.rx2_data_rate.unwrap_or(region.rx2_data_rate);
        if region
            .data_rates
            .get(usize::from(rx2_data_rate))
            .copied()
            .flatten()
            .is_none()
        {
            let valid: Vec<String> = (0..16u8)
                .filter(|dr| region.data_rates[usize::from(*dr)].is_some())
                .map(|dr| dr.to_string())
                .collect();
            return Err(SettingError::new(
                "rx2_data_rate",
                format!(
                    "{rx2_data_rate} is not a LoRa data rate of {}; write one of {}",
                    region.name,
                    valid.join(", ")
                ),
            ));
        }
        let rx2_frequency = self.rx2_frequency.unwrap_or(region.rx2_frequency);
        if !(137_000_000..=1_020_000_000).contains(&rx2_frequency) {
            return Err(SettingError::new(
                "rx2_frequency",
                format!("{rx2_frequency} Hz is not a LoRa frequency; the value is in Hz, e.g. rx2_frequency = 869_525_000"),
            ));
        }
        Ok(ServerSettings {
            region,
            net_id: self.net_id,
            rx1_delay,
            join_accept_delay1,
            rx2_frequency,
            rx2_data_rate,
        })
    }

    pub fn dedup_window(&self) -> Duration {
        self.dedup_window
    }

    pub fn max_devices(&self) -> usize {
        self.max_devices
    }
}

fn net_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_hex_number(&text, 6).map(|n| n as u32).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "\"{text}\" is not a NetID; write its 6 hex digits, e.g. net_id = \"000000\""
        ))
    })
}

/// `digits` hex digits as a number.
fn parse_hex_number(text: &str, digits: usize) -> Option<u64> {
    (text.len() == digits && text.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// An EUI-64 as written: 16 hex digits, big-endian (as printed on the device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Eui(pub u64);

impl<'de> Deserialize<'de> for Eui {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_hex_number(&text, 16).map(Eui).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "\"{text}\" is not an EUI; write its 16 hex digits as printed on the device, e.g. \"70b3d57ed0000001\""
            ))
        })
    }
}

/// A DevAddr as written: 8 hex digits, big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevAddr(pub u32);

impl<'de> Deserialize<'de> for DevAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_hex_number(&text, 8)
            .map(|n| DevAddr(n as u32))
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "\"{text}\" is not a DevAddr; write its 8 hex digits, e.g. \"26011bda\""
                ))
            })
    }
}

/// The gateways a semtech-udp source accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateways {
    /// `["any"]`: every gateway (each new EUI is logged once).
    Any,
    /// These EUIs only.
    Only(Vec<u64>),
}

impl Gateways {
    pub fn allows(&self, eui: u64) -> bool {
        match self {
            Gateways::Any => true,
            Gateways::Only(list) => list.contains(&eui),
        }
    }

    /// These gateways and `eui` (a simulated forwarder's).
    pub fn and(self, eui: u64) -> Gateways {
        match self {
            Gateways::Any => Gateways::Any,
            Gateways::Only(mut list) => {
                if !list.contains(&eui) {
                    list.push(eui);
                }
                Gateways::Only(list)
            }
        }
    }
}

/// The keys of a `kind = "semtech-udp"` source, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemtechUdpConfig {
    pub bind: SocketAddr,
    pub gateways: Gateways,
    /// The forwarders' PULL_DATA interval (`keepalive_interval` of lora_pkt_fwd); a gateway silent for
    /// `crate::lorawan::gateway_watch::MISSED_KEEPALIVES` of them is offline.
    pub keepalive: Duration,
    /// `simulate`: the `[[device]]` names of this source simulated behind a simulated packet forwarder
    /// (`crate::lorawan::simulated_forwarder`); empty: none.
    pub simulate: Vec<String>,
    /// `simulate_interval`: each simulated device's uplink interval.
    pub simulate_interval: Duration,
}

impl SemtechUdpConfig {
    /// With `simulate` (device names, each once, at most [`MAX_SIMULATED_DEVICES`]) and
    /// `simulate_interval` (1 s to 1 h) as written. Whether each name is a device of this source is
    /// checked by `crate::config`, which knows the devices.
    pub fn with_simulation(
        self,
        simulate: Option<&[String]>,
        interval: Option<Duration>,
    ) -> Result<SemtechUdpConfig, SettingError> {
        let simulate = simulate.unwrap_or_default().to_vec();
        if simulate.len() > MAX_SIMULATED_DEVICES {
            return Err(SettingError::new(
                "simulate",
                format!(
                    "names {} devices; simulate at most {MAX_SIMULATED_DEVICES}",
                    simulate.len()
                ),
            ));
        }
        for (i, name) in simulate.iter().enumerate() {
            if name.is_empty() || simulate[..i].contains(name) {
                return Err(SettingError::new(
                    "simulate",
                    format!("\"{name}\" is empty or named twice; list each [[device]] name of this source once, e.g. simulate = [\"lorawan-1\"]"),
                ));
            }
        }
        let simulate_interval = interval.unwrap_or(DEFAULT_SIMULATE_INTERVAL);
        if simulate_interval < Duration::from_secs(1)
            || simulate_interval > Duration::from_secs(3600)
        {
            return Err(SettingError::new(
                "simulate_interval",
                "must be between \"1s\" and \"1h\"; \"30s\" is usual",
            ));
        }
        Ok(SemtechUdpConfig {
            simulate,
            simulate_interval,
            ..self
        })
    }
}

/// A semtech-udp source's `bind`, `gateways` and `keepalive` (1 s to 5 min) as written.
pub fn semtech_udp_config(
    bind: Option<&str>,
    gateways: Option<&[String]>,
    keepalive: Option<Duration>,
) -> Result<SemtechUdpConfig, SettingError> {
    let keepalive = keepalive.unwrap_or(DEFAULT_KEEPALIVE);
    if keepalive < Duration::from_secs(1) || keepalive > Duration::from_secs(300) {
        return Err(SettingError::new(
            "keepalive",
            "must be between \"1s\" and \"5m\": the forwarders' keepalive_interval (\"10s\" in lora_pkt_fwd)",
        ));
    }
    let bind_text = bind.unwrap_or(DEFAULT_BIND);
    let bind: SocketAddr = bind_text.parse().map_err(|_| {
        SettingError::new(
            "bind",
            format!(
                "\"{bind_text}\" is not an address and port; write e.g. bind = \"0.0.0.0:1700\""
            ),
        )
    })?;
    let Some(list) = gateways else {
        return Err(SettingError::new(
            "gateways",
            "missing key `gateways`: the EUIs of the gateways allowed, e.g. gateways = [\"b827ebfffe6f4e3c\"], or [\"any\"]",
        ));
    };
    if list.iter().any(|g| g == "any") {
        if list.len() > 1 {
            return Err(SettingError::new(
                "gateways",
                "\"any\" accepts every gateway; write it alone: gateways = [\"any\"]",
            ));
        }
        return Ok(SemtechUdpConfig {
            bind,
            gateways: Gateways::Any,
            keepalive,
            simulate: Vec::new(),
            simulate_interval: DEFAULT_SIMULATE_INTERVAL,
        });
    }
    if list.is_empty() {
        return Err(SettingError::new(
            "gateways",
            "is empty; list the gateway EUIs allowed (16 hex digits each), or [\"any\"]",
        ));
    }
    let mut euis = Vec::with_capacity(list.len());
    for text in list {
        let eui = parse_hex_number(text, 16).ok_or_else(|| {
            SettingError::new(
                "gateways",
                format!("\"{text}\" is not a gateway EUI; write 16 hex digits, e.g. \"b827ebfffe6f4e3c\", or \"any\""),
            )
        })?;
        euis.push(eui);
    }
    Ok(SemtechUdpConfig {
        bind,
        gateways: Gateways::Only(euis),
        keepalive,
        simulate: Vec::new(),
        simulate_interval: DEFAULT_SIMULATE_INTERVAL,
    })
}

/// The LoRaWAN keys of one `[[device]]`, as written (every one optional; [`LorawanDeviceKeys::check`]
/// decides whether they make an OTAA or ABP device).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LorawanDeviceKeys {
    pub dev_eui: Option<Eui>,
    pub join_eui: Option<Eui>,
    pub app_key_file: Option<PathBuf>,
    pub dev_addr: Option<DevAddr>,
    pub nwk_s_key_file: Option<PathBuf>,
    pub app_s_key_file: Option<PathBuf>,
    pub payload: Option<PayloadFormat>,
    pub fports: BTreeMap<String, PayloadFormat>,
    pub lorawan_version: Option<LorawanVersion>,
    /// Whether the device names a `codec` file (for `payload = "codec"` or an FPort's `"codec"`).
    pub codec: bool,
    /// `downlink_fport`: the FPort of its commands (default [`DEFAULT_DOWNLINK_FPORT`]).
    pub downlink_fport: Option<i64>,
    /// `downlink_confirmed`: its commands go as confirmed downlinks.
    pub downlink_confirmed: Option<bool>,
    /// `adr`: network-side ADR (default off).
    pub adr: Option<bool>,
}

/// The FPort of a device's commands unless `downlink_fport` says otherwise.
pub const DEFAULT_DOWNLINK_FPORT: u8 = 1;

/// How a LoRaWAN device joins, with the paths of its key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceActivation {
    Otaa {
        dev_eui: u64,
        join_eui: u64,
        app_key_file: PathBuf,
    },
    Abp {
        dev_addr: u32,
        nwk_s_key_file: PathBuf,
        app_s_key_file: PathBuf,
    },
}

/// A LoRaWAN device, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LorawanDevice {
    pub activation: DeviceActivation,
    /// The decoder of every FPort not in `fports`; `None`: only the FPorts listed are decoded.
    pub payload: Option<PayloadFormat>,
    pub fports: BTreeMap<u8, PayloadFormat>,
    /// `lorawan_version` (default 1.0.3): which DevNonce rule its joins follow.
    pub version: LorawanVersion,
    /// Its `codec`, loaded, for the FPorts decoded with `"codec"` (set by whoever loaded the file; the
    /// checks of [`LorawanDeviceKeys::check`] leave it `None`).
    pub codec: Option<crate::codec::settings::CodecSettings>,
    /// The FPort its commands go on (1..=223).
    pub downlink_fport: u8,
    /// Its commands go as confirmed downlinks, sent again after its next uplinks until it acknowledges.
    pub downlink_confirmed: bool,
    /// Network-side ADR: LinkADRReqs set its data rate and power (`adr = true`; off by default).
    pub adr: bool,
}

impl LorawanDevice {
    /// The device's address in the registry: its DevEUI (OTAA, 16 hex digits) or DevAddr (ABP, 8).
    pub fn address(&self) -> String {
        match &self.activation {
            DeviceActivation::Otaa { dev_eui, .. } => format!("{dev_eui:016x}"),
            DeviceActivation::Abp { dev_addr, .. } => format!("{dev_addr:08x}"),
        }
    }

    /// The decoder of `fport`, if any.
    pub fn decoder(&self, fport: u8) -> Option<PayloadFormat> {
        self.fports.get(&fport).copied().or(self.payload)
    }
}

impl LorawanDeviceKeys {
    /// The first LoRaWAN key written, if any.
    pub fn first_written(&self) -> Option<&'static str> {
        [
            ("dev_eui", self.dev_eui.is_some()),
            ("join_eui", self.join_eui.is_some()),
            ("app_key_file", self.app_key_file.is_some()),
            ("dev_addr", self.dev_addr.is_some()),
            ("nwk_s_key_file", self.nwk_s_key_file.is_some()),
            ("app_s_key_file", self.app_s_key_file.is_some()),
            ("payload", self.payload.is_some()),
            ("fports", !self.fports.is_empty()),
            ("lorawan_version", self.lorawan_version.is_some()),
            ("downlink_fport", self.downlink_fport.is_some()),
            ("downlink_confirmed", self.downlink_confirmed.is_some()),
            ("adr", self.adr.is_some()),
        ]
        .iter()
        .find(|(_, written)| *written)
        .map(|(key, _)| *key)
    }

    /// Whether any LoRaWAN key is written.
    pub fn any(&self) -> bool {
        self.dev_eui.is_some()
            || self.join_eui.is_some()
            || self.app_key_file.is_some()
            || self.dev_addr.is_some()
            || self.nwk_s_key_file.is_some()
            || self.app_s_key_file.is_some()
            || self.payload.is_some()
            || !self.fports.is_empty()
            || self.lorawan_version.is_some()
            || self.downlink_fport.is_some()
            || self.downlink_confirmed.is_some()
            || self.adr.is_some()
    }

    /// OTAA (all three OTAA keys) or ABP (all three ABP keys), not both; a decoder.
    pub fn check(&self) -> Result<LorawanDevice, SettingError> {
        let activation = self.activation()?;
        let fports = self.fport_formats()?;
        let uses_codec = self.payload == Some(PayloadFormat::Codec)
            || fports.values().any(|f| *f == PayloadFormat::Codec);
        if uses_codec && !self.codec {
            let key = if self.payload == Some(PayloadFormat::Codec) {
                "payload"
            } else {
                "fports"
            };
            return Err(SettingError::new(
                key,
                "\"codec\" decodes with the device's codec: add codec = \"vendor-codec.js\" (its decodeUplink gets the real FPort)",
            ));
        }
        if self.codec && !uses_codec {
            return Err(SettingError::new(
                "codec",
                "the device's codec runs for the FPorts it decodes: write payload = \"codec\", or \"codec\" in fports, e.g. fports = { 5 = \"codec\" }",
            ));
        }
        if self.payload.is_none() && fports.is_empty() {
            return Err(SettingError::new(
                "payload",
                "missing key `payload`: the decoder of the device's FRMPayload, e.g. payload = \"lpp\", or one per FPort: fports = { 10 = \"lpp\" }",
            ));
        }
        let downlink_fport = match self.downlink_fport {
            None => DEFAULT_DOWNLINK_FPORT,
            Some(port) => u8::try_from(port)
                .ok()
                .filter(|port| (1..=223).contains(port))
                .ok_or_else(|| {
                    SettingError::new(
                        "downlink_fport",
                        format!("{port} is not an application FPort; write one of 1..=223, e.g. downlink_fport = 1"),
                    )
                })?,
        };
        Ok(LorawanDevice {
            activation,
            payload: self.payload,
            fports,
            version: self.lorawan_version.unwrap_or_default(),
            codec: None,
            downlink_fport,
            downlink_confirmed: self.downlink_confirmed.unwrap_or(false),
            adr: self.adr.unwrap_or(false),
        })
    }

    /// OTAA (dev_eui, join_eui, app_key_file) or ABP (dev_addr, nwk_s_key_file, app_s_key_file),
    /// whichever the keys given say, with all three of its keys; never both.
    fn activation(&self) -> Result<DeviceActivation, SettingError> {
        let otaa = self.dev_eui.is_some() || self.join_eui.is_some() || self.app_key_file.is_some();
        let abp = self.dev_addr.is_some()
            || self.nwk_s_key_file.is_some()
            || self.app_s_key_file.is_some();
        let activation = match (otaa, abp) {
            (true, true) => {
                let key = if self.dev_addr.is_some() {
                    "dev_addr"
                } else if self.nwk_s_key_file.is_some() {
                    "nwk_s_key_file"
                } else {
                    "app_s_key_file"
                };
                return Err(SettingError::new(
                    key,
                    "a LoRaWAN device joins by OTAA (dev_eui, join_eui, app_key_file) or ABP (dev_addr, nwk_s_key_file, app_s_key_file), not both",
                ));
            }
            (false, false) => {
                return Err(SettingError::new(
                    "dev_eui",
                    "a device of a semtech-udp source needs OTAA keys (dev_eui, join_eui, app_key_file) or ABP keys (dev_addr, nwk_s_key_file, app_s_key_file)",
                ))
            }
            (true, false) => DeviceActivation::Otaa {
                dev_eui: required(self.dev_eui, "dev_eui", "dev_eui = \"70b3d57ed0000001\"")?.0,
                join_eui: required(self.join_eui, "join_eui", "join_eui = \"0000000000000000\"")?.0,
                app_key_file: key_file(&self.app_key_file, "app_key_file")?,
            },
            (false, true) => DeviceActivation::Abp {
                dev_addr: required(self.dev_addr, "dev_addr", "dev_addr = \"26011bda\"")?.0,
                nwk_s_key_file: key_file(&self.nwk_s_key_file, "nwk_s_key_file")?,
                app_s_key_file: key_file(&self.app_s_key_file, "app_s_key_file")?,
            },
        };
        Ok(activation)
    }

    /// `fports`: each key an application FPort (1-223).
    fn fport_formats(&self) -> Result<BTreeMap<u8, PayloadFormat>, SettingError> {
        let mut fports = BTreeMap::new();
        for (port, format) in &self.fports {
            let number: u8 = port
                .parse()
                .ok()
                .filter(|p| (1..=223).contains(p))
                .ok_or_else(|| {
                    SettingError::new(
                        "fports",
                        format!("\"{port}\" is not an application FPort (1-223); write e.g. fports = {{ 10 = \"lpp\" }}"),
                    )
                })?;
            fports.insert(number, *format);
        }
        Ok(fports)
    }
}

fn required<T>(value: Option<T>, key: &'static str, example: &str) -> Result<T, SettingError> {
    value.ok_or_else(|| SettingError::new(key, format!("missing key `{key}`, e.g. {example}")))
}

fn key_file(path: &Option<PathBuf>, key: &'static str) -> Result<PathBuf, SettingError> {
    match path {
        Some(path) if !path.as_os_str().is_empty() => Ok(path.clone()),
        Some(_) => Err(SettingError::new(
            key,
            "is empty; write the path of a file holding the 32 hex digits of the key",
        )),
        None => Err(SettingError::new(
            key,
            format!("missing key `{key}`: a file holding the 32 hex digits of the key"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_are_euis_or_any_alone() {
        let any = semtech_udp_config(None, Some(&["any".to_string()]), None).unwrap();
        assert_eq!(any.gateways, Gateways::Any);
        assert_eq!(any.bind.port(), 1700);
        let one = semtech_udp_config(
            Some("127.0.0.1:1"),
            Some(&["B827EBFFFE6F4E3C".to_string()]),
            None,
        )
        .unwrap();
        assert!(one.gateways.allows(0xb827_ebff_fe6f_4e3c));
        assert!(!one.gateways.allows(1));
        for bad in [
            vec!["any".to_string(), "01".to_string()],
            vec![],
            vec!["xyz".to_string()],
        ] {
            assert_eq!(
                semtech_udp_config(None, Some(&bad), None).unwrap_err().key,
                "gateways"
            );
        }
        assert_eq!(
            semtech_udp_config(None, None, None).unwrap_err().key,
            "gateways"
        );
        assert_eq!(
            semtech_udp_config(Some("nowhere"), Some(&["any".to_string()]), None)
                .unwrap_err()
                .key,
            "bind"
        );
        assert_eq!(any.keepalive, DEFAULT_KEEPALIVE);
        for bad in [Duration::from_millis(500), Duration::from_secs(301)] {
            let any = ["any".to_string()];
            let error = semtech_udp_config(None, Some(&any), Some(bad)).unwrap_err();
            assert_eq!(error.key, "keepalive");
        }
    }

    #[test]
    fn simulate_names_devices_once_with_an_interval() {
        let any = semtech_udp_config(None, Some(&["any".to_string()]), None).unwrap();
        assert!(any.simulate.is_empty());
        let names = ["lorawan-1".to_string()];
        let one = any
            .clone()
            .with_simulation(Some(&names), Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(one.simulate, names);
        assert_eq!(one.simulate_interval, Duration::from_secs(5));
        let twice = ["a".to_string(), "a".to_string()];
        let error = any.clone().with_simulation(Some(&twice), None).unwrap_err();
        assert_eq!(error.key, "simulate");
        for bad in [Duration::from_millis(500), Duration::from_secs(3601)] {
            let error = any
                .clone()
                .with_simulation(Some(&names), Some(bad))
                .unwrap_err();
            assert_eq!(error.key, "simulate_interval");
        }
        assert_eq!(Gateways::Only(vec![1]).and(2), Gateways::Only(vec![1, 2]));
        assert_eq!(Gateways::Any.and(2), Gateways::Any);
    }

    #[test]
    fn a_device_is_otaa_or_abp_with_a_decoder() {
        let otaa = LorawanDeviceKeys {
            dev_eui: Some(Eui(1)),
            join_eui: Some(Eui(0)),
            app_key_file: Some("k".into()),
            payload: Some(PayloadFormat::Lpp),
            ..Default::default()
        };
        let checked = otaa.check().unwrap();
        assert!(matches!(
            checked.activation,
            DeviceActivation::Otaa { dev_eui: 1, .. }
        ));
        assert_eq!(checked.decoder(7), Some(PayloadFormat::Lpp));
        assert_eq!(checked.downlink_fport, DEFAULT_DOWNLINK_FPORT);
        assert!(!checked.downlink_confirmed);
        for bad in [0, 224, -1, 300] {
            let mut port = otaa.clone();
            port.downlink_fport = Some(bad);
            let error = port.check().unwrap_err();
            assert_eq!(error.key, "downlink_fport");
            assert!(error.message.contains("1..=223"), "{}", error.message);
        }
        let mut port = otaa.clone();
        port.downlink_fport = Some(223);
        assert_eq!(port.check().unwrap().downlink_fport, 223);
        let mut both = otaa.clone();
        both.dev_addr = Some(DevAddr(1));
        assert_eq!(both.check().unwrap_err().key, "dev_addr");
        let mut no_key = otaa.clone();
        no_key.app_key_file = None;
        assert_eq!(no_key.check().unwrap_err().key, "app_key_file");
        let mut ports = otaa.clone();
        ports.payload = None;
        ports.fports.insert("2".into(), PayloadFormat::Json);
        let checked = ports.check().unwrap();
        assert_eq!(checked.decoder(2), Some(PayloadFormat::Json));
        assert_eq!(checked.decoder(3), None);
        ports.fports.insert("0".into(), PayloadFormat::Json);
        assert_eq!(ports.check().unwrap_err().key, "fports");
        let mut codec_port = otaa.clone();
        codec_port.fports.insert("5".into(), PayloadFormat::Codec);
        assert_eq!(codec_port.check().unwrap_err().key, "fports");
        codec_port.codec = true;
        assert_eq!(
            codec_port.check().unwrap().decoder(5),
            Some(PayloadFormat::Codec)
        );
        let mut unused_codec = otaa.clone();
        unused_codec.codec = true;
        assert_eq!(unused_codec.check().unwrap_err().key, "codec");
        let mut no_decoder = otaa;
        no_decoder.payload = None;
        assert_eq!(no_decoder.check().unwrap_err().key, "payload");
    }

    #[test]
    fn lorawan_table_checks_its_delays() {
        let config: LorawanConfig =
            toml::from_str("region = \"EU868\"\nnet_id = \"000013\"").unwrap();
        let settings = config.server_settings().unwrap();
        assert_eq!(
            (
                settings.net_id,
                settings.rx1_delay,
                settings.join_accept_delay1
            ),
            (0x13, 1, 5)
        );
        let bad: LorawanConfig =
            toml::from_str("region = \"US915\"\nrx1_delay = \"1500ms\"").unwrap();
        assert_eq!(bad.server_settings().unwrap_err().key, "rx1_delay");
        assert_eq!(
            (settings.rx2_frequency, settings.rx2_data_rate),
            (869_525_000, 0)
        );
        let own: LorawanConfig =
            toml::from_str("region = \"EU868\"\nrx2_frequency = 869_525_000\nrx2_data_rate = 3")
                .unwrap();
        assert_eq!(own.server_settings().unwrap().rx2_data_rate, 3);
        let bad: LorawanConfig = toml::from_str("region = \"EU868\"\nrx2_data_rate = 9").unwrap();
        assert_eq!(bad.server_settings().unwrap_err().key, "rx2_data_rate");
        let bad: LorawanConfig = toml::from_str("region = \"EU868\"\nrx2_frequency = 869").unwrap();
        assert_eq!(bad.server_settings().unwrap_err().key, "rx2_frequency");
        assert!(toml::from_str::<LorawanConfig>("region = \"EU433\"").is_err());
        assert!(toml::from_str::<LorawanConfig>("region = \"EU868\"\nnet_id = \"1\"").is_err());
    }
}
