//! The configuration: one serde tree read from a TOML file, with every default written out by hand, checked
//! as a whole before any task starts, and every mistake reported as `PATH:LINE:COL: message` pointing at the
//! key or value at fault and saying what to write instead. This module owns [`Config`], [`ConfigError`]
//! and the load -> parse -> build sources -> fill defaults -> validate pipeline; it never starts anything,
//! never reads the environment on its own (`$STATE_DIRECTORY` goes through [`Config::state_dir`]) and
//! never logs.
//!
//! Files: `sections.rs` (every section but `[[source]]`, with the defaults), `source.rs` (`[[source]]`
//! and its per-kind keys), `limits.rs` (the range of every duration, size and bounded count),
//! `locate.rs` (key paths <-> line:column), `diagnose.rs` (parser and serde messages reworded),
//! `validate.rs` (cross-field checks, topic rules). Durations and sizes are spelled as `crate::units`
//! reads them.
//! `config/sensorgate.toml` in the repository is the reference users read; its tests keep it complete.
//!
//! # One owner per fact: the configuration calls the stages' own validators
//! `check-config` must refuse exactly what `run` would refuse, so every fact has one owner and the other
//! side asks it. Of the two ways to get there, this module takes "the configuration calls the stages'
//! own validators" rather than "the stages take the configuration types directly":
//! - The stages are built, tested and benchmarked from their own small settings (radio simulators,
//!   the spool, the uplink client in `tests/`, `benches/`) without a TOML tree; making them take
//!   `Config` types would tie every stage to the file's shape and its serde attributes.
//! - What a stage can run is the stage's knowledge (the chip's frequency range, the uplink's packet-id
//!   window, the spool's segment bounds); a copy of it here is what drifted (`frequency = 1_020_500_000`
//!   passed a whole-MHz check, `max_inflight = 61000` passed a u16 check, `segment_bytes` was clamped).
//! - The configuration is the only side that knows where a key is written, so it is the side that
//!   can turn a refusal into `PATH:LINE:COL`.
//!
//! So: the radio's `validate` and `validate_backend` run on the very settings the source will run with
//! (`RadioConfig::stage_settings`, the one mapping, which `app/settings.rs` uses too), and their
//! refusal lands on the key they name; the uplink's forward-rule check runs on the rules; the uplink's
//! in-flight limit and the spool's segment bounds are the stages' constants, imported into `limits.rs`.
//! Ranges that only the configuration decides (how long a duration may be, the broker's new bounds)
//! live in `limits.rs`, once, and the defaults in `sections.rs` `defaults`, once (re-exporting the
//! defaults a stage owns, like the broker's and the spool's). Where the file's section is exactly a
//! stage's settings (`[upstream.spool]`), `config` composes the stage's own serde type instead of a
//! copy (`crate::uplink::SpoolSettings`), and `crate::units` gives it the grammar. What depends on the
//! machine (readable files, free ports, the descriptor limit) can only be found at start.

mod diagnose;
pub mod limits;
mod locate;
mod sections;
mod source;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::units::{
    duration, format_duration, format_size, option_duration, parse_duration, parse_size,
};
pub use crate::uplink::SyncPolicy;
pub use sections::{
    defaults, BrokerConfig, DeviceConfig, DevicesConfig, ForwardEncrypt, ForwardRule,
    GatewayConfig, HomeAssistantConfig, HomeAssistantDevices, ListenerConfig, LogConfig, LogLevel,
    PublishConfig, TlsConfig, Transport, UpstreamConfig, UserConfig,
};
pub use source::{
    keys_for_kind, CommandConfig, FrameEncryption, Parity, RadioBackend, RadioChip, RadioConfig,
    RadioPins, SerialConfig, SimulatorConfig, SourceConfig, SourceKind, BANDWIDTHS_HZ,
};
pub use validate::{check_topic_filter, check_topic_name};

use locate::{line_col, KeyPath, Locator};
use validate::Problem;

/// The text of `config/demo.toml`, which [`Config::default_demo`] parses.
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

/// The whole configuration, checked, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub gateway: GatewayConfig,
    pub log: LogConfig,
    pub broker: BrokerConfig,
    pub publish: PublishConfig,
    /// `[[source]]`, in file order.
    pub sources: Vec<SourceConfig>,
    pub devices: DevicesConfig,
    /// `[[device]]`, in file order.
    pub device: Vec<DeviceConfig>,
    /// `[upstream]`; `None`: nothing leaves the gateway.
    pub upstream: Option<UpstreamConfig>,
    /// `[homeassistant]`: MQTT discovery.
    pub homeassistant: HomeAssistantConfig,
    /// `[lorawan]`: the network server of the semtech-udp sources (`crate::lorawan`).
    pub lorawan: Option<crate::lorawan::settings::LorawanConfig>,
    /// `[http]`: the status page, `/metrics` and `/healthz`; `None`: no web server.
    pub http: Option<crate::http::HttpConfig>,
}

/// The file as written, before the sources are checked per kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigToml {
    #[serde(default)]
    gateway: GatewayConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    broker: BrokerConfig,
    #[serde(default)]
    publish: PublishConfig,
    #[serde(default)]
    source: Vec<source::SourceToml>,
    #[serde(default)]
    devices: DevicesConfig,
    #[serde(default)]
    device: Vec<DeviceConfig>,
    upstream: Option<UpstreamConfig>,
    #[serde(default)]
    homeassistant: HomeAssistantConfig,
    lorawan: Option<crate::lorawan::settings::LorawanConfig>,
    http: Option<crate::http::HttpConfig>,
}

impl Config {
    /// Reads, parses and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the configuration file: {error}"),
        })?;
        let mut config = Config::parse(&text, path)?;
        config.load_codecs(&text, path)?;
        Ok(config)
    }

    /// The codecs the pipeline runs, as loaded: each `payload = "codec"` source's (by source name), and
    /// each device's with a codec or variables of its own (by source name and address). A LoRaWAN
    /// device's codec is not among them: its semtech-udp source runs it.
    pub fn codecs(&self) -> crate::codec::sources::CodecMap {
        let sources = self
            .sources
            .iter()
            .filter_map(|source| Some(((source.name.clone(), None), source.codec.clone()?)));
        let lorawan: Vec<&str> = self
            .sources
            .iter()
            .filter(|source| matches!(source.kind, SourceKind::SemtechUdp(_)))
            .map(|source| source.name.as_str())
            .collect();
        let devices = self
            .device
            .iter()
            .filter(|device| !lorawan.contains(&device.source.as_str()))
            .filter_map(|device| {
                Some((
                    (device.source.clone(), Some(device.address.clone())),
                    device.codec_settings.clone()?,
                ))
            });
        sources.chain(devices).collect()
    }

    /// Reads, compiles and checks the codec of each `payload = "codec"` source, then each device's with
    /// a `codec` or `variables` of its own (relative paths from the folder of `path`); a problem is
    /// reported at the key at fault.
    fn load_codecs(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        use crate::codec::settings;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let located = |at: KeyPath, message: String| {
            let (line, column, message) = match Locator::new(text) {
                Ok(locator) => {
                    let (line, column) = locator.position(&at, locate::Part::Value);
                    (line, column, locator.message(&at, &message))
                }
                Err(_) => (0, 0, message),
            };
            ConfigError {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        };
        for (i, source) in self.sources.iter_mut().enumerate() {
            let Some(codec) = &mut source.codec else {
                continue;
            };
            settings::load(codec, base_dir).map_err(|message| {
                located(KeyPath::root().key("source").index(i).key("codec"), message)
            })?;
        }
        for (i, device) in self.device.iter_mut().enumerate() {
            let at = KeyPath::root().key("device").index(i);
            let key = match (&device.codec, &device.variables) {
                (Some(_), _) => "codec",
                (None, Some(_)) => "variables",
                (None, None) => continue,
            };
            let source = self.sources.iter().find(|s| s.name == device.source);
            if source.is_some_and(|s| matches!(s.kind, SourceKind::SemtechUdp(_))) {
                // A LoRaWAN device's own codec, for the FPorts it decodes with "codec".
                let Some(file) = &device.codec else {
                    return Err(located(
                        at.key(key),
                        "`variables` of a LoRaWAN device go with its `codec`, e.g. codec = \"vendor-codec.js\"".to_string(),
                    ));
                };
                let mut codec = settings::build(settings::CodecKeys {
                    codec: Some(file.clone()),
                    variables: device.variables.clone(),
                    ..Default::default()
                })
                .map_err(|(key, message)| located(at.key(key), message))?;
                settings::load(&mut codec, base_dir)
                    .map_err(|message| located(at.key("codec"), message))?;
                device.codec_settings = Some(codec);
                continue;
            }
            let Some(source_codec) = source.and_then(|s| s.codec.as_ref()) else {
                return Err(located(
                    at.key(key),
                    format!("`{key}` applies to a device of a source with payload = \"codec\""),
                ));
            };
            if source.is_some_and(|s| s.header == crate::decode::HeaderFormat::None) {
                return Err(located(
                    at.key(key),
                    format!("a device's own `{key}` needs its source's header (node16 or radiohead) to carry its address before the codec runs"),
                ));
            }
            let mut codec = settings::for_device(
                source_codec,
                device.codec.as_deref(),
                device.variables.as_ref(),
            );
            if device.codec.is_some() {
                settings::load(&mut codec, base_dir)
                    .map_err(|message| located(at.key("codec"), message))?;
            }
            device.codec_settings = Some(codec);
        }
        Ok(())
    }

    /// Parses and checks configuration text; `path_for_messages` is the file name errors carry.
    pub fn parse(text: &str, path_for_messages: &Path) -> Result<Config, ConfigError> {
        let at = |line: usize, column: usize, message: String| ConfigError {
            path: path_for_messages.to_path_buf(),
            line,
            column,
            message,
        };
        let locator = Locator::new(text).map_err(|error| {
            let (line, column) = line_col(text, error.span().map_or(0, |s| s.start));
            at(line, column, diagnose::syntax(error.message()))
        })?;
        let problem = |problem: Problem| {
            let (line, column) = locator.position(&problem.path, problem.part);
            at(
                line,
                column,
                locator.message(&problem.path, &problem.message),
            )
        };
        let raw: ConfigToml = toml::from_str(text).map_err(|error| {
            let start = error.span().map_or(0, |s| s.start);
            let (line, column) = line_col(text, start);
            let path = locator.path_at(start);
            at(
                line,
                column,
                diagnose::rewrite(error.message(), &path, &locator),
            )
        })?;
        let mut sources = Vec::with_capacity(raw.source.len());
        for (i, source) in raw.source.into_iter().enumerate() {
            let path = KeyPath::root().key("source").index(i);
            sources.push(source.build(&path, &locator).map_err(problem)?);
        }
        let mut config = Config {
            gateway: raw.gateway,
            log: raw.log,
            broker: raw.broker,
            publish: raw.publish,
            sources,
            devices: raw.devices,
            device: raw.device,
            upstream: raw.upstream,
            homeassistant: raw.homeassistant,
            lorawan: raw.lorawan,
            http: raw.http,
        };
        config.fill_derived_defaults();
        validate::validate(&config, &locator).map_err(problem)?;
        config.route_lorawan_radios();
        Ok(config)
    }

    /// The semtech-udp source that serves the LoRaWAN devices of `source`: itself, or for a radio with
    /// `payload = "lorawan"` its `forward_to` (by default the only semtech-udp source). `None` for other
    /// sources, and for a radio whose server does not exist or is ambiguous (validation refuses it).
    pub fn lorawan_server_of<'c>(&'c self, source: &'c SourceConfig) -> Option<&'c SourceConfig> {
        let is_server = |s: &SourceConfig| matches!(s.kind, SourceKind::SemtechUdp(_));
        match &source.kind {
            SourceKind::SemtechUdp(_) => Some(source),
            SourceKind::Radio(RadioConfig {
                lorawan: Some(forwarding),
                ..
            }) => match &forwarding.forward_to {
                Some(name) => self
                    .sources
                    .iter()
                    .find(|s| &s.name == name)
                    .filter(|s| is_server(s)),
                None => {
                    let mut servers = self.sources.iter().filter(|s| is_server(s));
                    let only = servers.next();
                    servers.next().map_or(only, |_| None)
                }
            },
            _ => None,
        }
    }

    /// After validation: each LoRaWAN radio's `forward_to` written out, and each `[[device]]` of such a
    /// radio moved to the semtech-udp source it forwards to, which serves it (its readings carry that
    /// source's name, as a device heard by any other gateway).
    fn route_lorawan_radios(&mut self) {
        let routes: Vec<(String, String)> = self
            .sources
            .iter()
            .filter(|source| matches!(source.kind, SourceKind::Radio(_)))
            .filter_map(|radio| {
                let server = self.lorawan_server_of(radio)?;
                Some((radio.name.clone(), server.name.clone()))
            })
            .collect();
        for (radio, server) in routes {
            for source in &mut self.sources {
                if let SourceKind::Radio(RadioConfig {
                    lorawan: Some(forwarding),
                    ..
                }) = &mut source.kind
                {
                    if source.name == radio {
                        forwarding.forward_to = Some(server.clone());
                    }
                }
            }
            for device in &mut self.device {
                if device.source == radio {
                    device.source = server.clone();
                }
            }
        }
    }

    /// The demo configuration (`config/demo.toml`): a simulator and a simulated radio, the broker on
    /// 127.0.0.1:1883, state under `./state`, no upstream. For tests, benches and the README's demo.
    ///
    /// # Panics
    /// Never at run time: `config/demo.toml` is compiled in and a test parses it.
    pub fn default_demo() -> Config {
        match Config::parse(DEMO_TOML, Path::new("config/demo.toml")) {
            Ok(config) => config,
            Err(error) => panic!("the built-in demo configuration is invalid: {error}"),
        }
    }

    /// The state directory: `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`) when set, else
    /// `gateway.state_dir`. See [`GatewayConfig::state_dir_with`] to pass the value explicitly.
    pub fn state_dir(&self) -> PathBuf {
        self.gateway
            .state_dir_with(std::env::var_os("STATE_DIRECTORY").as_deref())
    }

    /// Defaults that depend on other keys: the upstream client id and forward rule, the address of a
    /// LoRaWAN device (its DevEUI or DevAddr in hex), and the `[[device]]` addresses each rtl_433 source
    /// matches its senders against.
    fn fill_derived_defaults(&mut self) {
        for device in &mut self.device {
            if device.address.is_empty() {
                if let Ok(lorawan) = device.lorawan_keys().check() {
                    device.address = lorawan.address();
                }
            }
        }
        // A Bluetooth LE device's MAC as its readings name it (`A4:C1:38:8D:18:B2`), however written.
        for device in &mut self.device {
            let on_ble = self
                .sources
                .iter()
                .any(|s| s.name == device.source && matches!(s.kind, SourceKind::Ble(_)));
            if let Some(mac) = crate::ble::Mac::parse(&device.address).filter(|_| on_ble) {
                device.address = mac.to_string();
            }
        }
        for source in &mut self.sources {
            let addresses = self
                .device
                .iter()
                .filter(|device| device.source == source.name)
                .map(|device| device.address.as_str());
            match &mut source.kind {
                SourceKind::Rtl433(settings) => {
                    settings.configured = addresses.map(str::to_string).collect()
                }
                // Validation refuses a device whose address is no MAC.
                SourceKind::Ble(settings) => {
                    settings.configured = addresses.filter_map(crate::ble::Mac::parse).collect()
                }
                _ => {}
            }
        }
        let base = self.gateway.base_topic.clone();
        let id = self.gateway.id.clone();
        if let Some(upstream) = &mut self.upstream {
            if upstream.client_id.is_empty() {
                upstream.client_id = format!("{}{id}", defaults::CLIENT_ID_PREFIX);
            }
            if upstream.forward.is_empty() {
                upstream.forward.push(ForwardRule {
                    filter: crate::topic::gateway::everything_below(&base),
                    prefix: String::new(),
                    qos: defaults::FORWARD_QOS,
                    encrypt: None,
                });
            }
        }
    }
}

/// A configuration mistake, located: `Display` is `PATH:LINE:COL: message` (or `PATH: message` when
/// the file could not be read, with `line` and `column` 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given to [`Config::load`] or [`Config::parse`].
    pub path: PathBuf,
    /// 1-based; 0 when the error is not about a place in the text.
    pub line: usize,
    /// 1-based, in characters; 0 when `line` is 0.
    pub column: usize,
    /// What is wrong and what to write instead, naming the key.
    pub message: String,
}

impl ConfigError {
    /// A key file's error as a configuration error: the key file's path, line and column, and which
    /// configuration key names it (`named_by`). No byte of the key is shown.
    pub fn from_key_error(error: crate::crypto::KeyError, named_by: &str) -> ConfigError {
        use crate::crypto::KeyError;
        match error {
            KeyError::Read { path, source } => ConfigError {
                path,
                line: 0,
                column: 0,
                message: format!(
                    "cannot read the key file: {source} ({named_by}; check the path and that sensorgate may read it)"
                ),
            },
            KeyError::Malformed {
                path,
                line,
                column,
                message,
            } => ConfigError {
                path,
                line,
                column,
                message: format!("{message} ({named_by})"),
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}
