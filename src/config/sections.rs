//! The configuration's sections other than `[[source]]`: `[gateway]`, `[log]`, `[broker]` with its
//! listeners and users, `[publish]`, `[devices]`, `[[device]]` and `[upstream]` with its forward rules and
//! spool. This module owns their serde shape and their defaults, all written out in [`defaults`] below; it
//! never checks how values relate to each other (that is `validate.rs`) and never reads the environment.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::units;

/// Every default of these sections, in one place. `config/sensorgate.toml` documents the same values.
pub mod defaults {
    use std::time::Duration;

    /// The gateway id when none is configured and the host name cannot be read.
    pub const GATEWAY_ID: &str = "sensorgate";
    pub const BASE_TOPIC: &str = crate::topic::gateway::DEFAULT_BASE_TOPIC;
    pub const STATE_DIR: &str = "/var/lib/sensorgate";
    /// Worker threads when `worker_threads` is not written: one, as mosquitto's one loop. A message
    /// handed from one client's session to another's then stays on the thread that routed it, which
    /// halves the broker's CPU per message against a thread per core; the pipeline runs on a thread of
    /// its own beside it (docs/broker-performance.md, "Hand-offs between threads").
    pub const WORKER_THREADS: usize = 1;
    /// `[broker]`: the broker's own defaults.
    pub use crate::broker::defaults::{
        ANONYMOUS_RIGHTS, ANONYMOUS_SESSION_EXPIRY, HANDSHAKE_TIMEOUT, LISTENER, MAX_CONNECTIONS,
        MAX_INFLIGHT, MAX_OFFLINE_SESSIONS, MAX_QUEUED_MESSAGES, MAX_RETAINED_MESSAGES,
        MAX_TOPIC_LEVELS, RETAINED_SYNC, SESSION_EXPIRY,
    };
    pub const MAX_PACKET_SIZE: u64 = crate::broker::defaults::MAX_PACKET_SIZE as u64;
    pub const PERSIST_RETAINED: bool = true;
    pub const PUBLISH_QOS: u8 = 1;
    pub const PUBLISH_RETAIN: bool = true;
    pub const FIELD_TOPICS: bool = true;
    pub const STATS_INTERVAL: Duration = Duration::from_secs(60);
    pub const OFFLINE_AFTER: Duration = Duration::from_secs(15 * 60);
    pub const DEDUP_WINDOW: Duration = Duration::from_secs(10);
    /// Fields a device keeps; new names beyond them are dropped and counted.
    pub const MAX_FIELDS: usize = 64;
    /// `will` of a `[[device]]`: the registry's own defaults.
    pub use crate::devices::will_defaults::{
        PAYLOAD as WILL_PAYLOAD, QOS as WILL_QOS, RETAIN as WILL_RETAIN,
    };
    /// `client_id` is `"{CLIENT_ID_PREFIX}{gateway.id}"` when not configured.
    pub const CLIENT_ID_PREFIX: &str = "sensorgate-";
    pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
    pub const UPSTREAM_MAX_INFLIGHT: u16 = 100;
    pub const FORWARD_QOS: u8 = 1;
    /// `[upstream.spool]`: the spool's own defaults.
    pub use crate::uplink::spool::defaults::{
        MAX_AGE as SPOOL_MAX_AGE, MAX_BYTES as SPOOL_MAX_BYTES,
        SEGMENT_BYTES as SPOOL_SEGMENT_BYTES, SYNC as SPOOL_SYNC,
    };
    /// `[homeassistant]`: discovery is off unless asked for.
    pub const HA_DISCOVERY: bool = false;
    pub const HA_PREFIX: &str = "homeassistant";

    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn forward_qos() -> u8 {
        FORWARD_QOS
    }
    pub(super) fn keep_alive() -> Duration {
        KEEP_ALIVE
    }
    pub(super) fn upstream_max_inflight() -> u16 {
        UPSTREAM_MAX_INFLIGHT
    }
}

/// `[gateway]`: who this gateway is and where it keeps its state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Used in the upstream client id; default: the host name, else `"sensorgate"`.
    pub id: String,
    /// The first level(s) of every topic the gateway publishes.
    pub base_topic: String,
    /// Where retained state and the spool live. Use [`GatewayConfig::state_dir_with`] (or
    /// [`Config::state_dir`](super::Config::state_dir)) to apply systemd's `$STATE_DIRECTORY`.
    pub state_dir: PathBuf,
    /// Worker threads of the async runtime (range: `limits::WORKER_THREADS`; default
    /// [`defaults::WORKER_THREADS`]). The pipeline and blocking work (fsync, logins, codecs, radios)
    /// have threads of their own either way.
    pub worker_threads: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            id: host_name().unwrap_or_else(|| defaults::GATEWAY_ID.to_string()),
            base_topic: defaults::BASE_TOPIC.to_string(),
            state_dir: PathBuf::from(defaults::STATE_DIR),
            worker_threads: defaults::WORKER_THREADS,
        }
    }
}

impl GatewayConfig {
    /// The state directory, given the value of `$STATE_DIRECTORY` (`None` when unset). systemd sets it
    /// for `StateDirectory=`; it wins over `state_dir`. With several directories (colon-separated), the
    /// first is used; an empty value is ignored.
    pub fn state_dir_with(&self, state_directory: Option<&OsStr>) -> PathBuf {
        let first = state_directory
            .and_then(|value| value.to_str())
            .and_then(|value| value.split(':').next())
            .filter(|first| !first.is_empty());
        match first {
            Some(dir) => PathBuf::from(dir),
            None => self.state_dir.clone(),
        }
    }
}

/// The host name from `/proc/sys/kernel/hostname`, if it is usable as a topic level.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    let usable = !name.is_empty() && !name.contains(['/', '+', '#', '\0']);
    usable.then(|| name.to_string())
}

/// `[log]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// The level of the gateway's own logging; `RUST_LOG` overrides it.
    pub level: LogLevel,
}

/// A log level as the configuration spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The `log` crate's filter for this level.
    pub fn to_level_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `[broker]`, `[[broker.listener]]` and `[[broker.user]]`: the embedded MQTT broker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// `[[broker.listener]]`; default: one plain listener on 127.0.0.1:1883.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// `[[broker.user]]`.
    #[serde(rename = "user")]
    pub users: Vec<UserConfig>,
    /// As written; `None` means "true only when there is no `[[broker.user]]`": read it through
    /// [`BrokerConfig::anonymous_allowed`].
    pub allow_anonymous: Option<bool>,
    pub max_connections: usize,
    /// Largest MQTT packet accepted, bytes.
    #[serde(deserialize_with = "units::size")]
    pub max_packet_size: u64,
    /// Unacknowledged QoS 1/2 messages in flight per client.
    pub max_inflight: u16,
    /// Messages queued per client (live traffic; retained messages for a new subscription are streamed).
    pub max_queued_messages: usize,
    #[serde(deserialize_with = "units::duration")]
    pub handshake_timeout: Duration,
    /// Topics and filters with more levels are refused.
    pub max_topic_levels: usize,
    /// Retained topics the broker stores.
    pub max_retained_messages: usize,
    /// Persistent sessions of absent clients kept; the oldest is evicted beyond it.
    pub max_offline_sessions: usize,
    /// Longest time a persistent session of an absent client is kept.
    #[serde(deserialize_with = "units::duration")]
    pub session_expiry: Duration,
    /// The same for clients that logged in without a user name.
    #[serde(deserialize_with = "units::duration")]
    pub anonymous_session_expiry: Duration,
    /// Save retained messages under the state directory and restore them at start.
    pub persist_retained: bool,
    /// How long a changed retained message may stay only in memory before it is written to the
    /// retained log (what a power cut can lose of last values).
    #[serde(deserialize_with = "units::duration")]
    pub retained_sync: Duration,
    /// Topic filters clients without a user name may subscribe to and receive; default `["#"]`.
    pub anonymous_read: Vec<String>,
    /// Topic filters clients without a user name may publish to; default `["#"]` (never the gateway's
    /// own topics).
    pub anonymous_write: Vec<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listeners: vec![ListenerConfig {
                bind: defaults::LISTENER,
                tls: None,
                transport: Transport::Tcp,
                path: None,
            }],
            users: Vec::new(),
            allow_anonymous: None,
            max_connections: defaults::MAX_CONNECTIONS,
            max_packet_size: defaults::MAX_PACKET_SIZE,
            max_inflight: defaults::MAX_INFLIGHT,
            max_queued_messages: defaults::MAX_QUEUED_MESSAGES,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            max_topic_levels: defaults::MAX_TOPIC_LEVELS,
            max_retained_messages: defaults::MAX_RETAINED_MESSAGES,
            max_offline_sessions: defaults::MAX_OFFLINE_SESSIONS,
            session_expiry: defaults::SESSION_EXPIRY,
            anonymous_session_expiry: defaults::ANONYMOUS_SESSION_EXPIRY,
            persist_retained: defaults::PERSIST_RETAINED,
            retained_sync: defaults::RETAINED_SYNC,
            anonymous_read: vec![defaults::ANONYMOUS_RIGHTS.to_string()],
            anonymous_write: vec![defaults::ANONYMOUS_RIGHTS.to_string()],
        }
    }
}

impl BrokerConfig {
    /// Whether clients may connect without a user name: as configured, else only when no user exists.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.users.is_empty())
    }
}

/// One `[[broker.listener]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub bind: SocketAddr,
    /// When set, the listener speaks MQTT over TLS (with `transport = "websocket"`: wss).
    pub tls: Option<TlsConfig>,
    /// `"tcp"` (default) or `"websocket"`.
    #[serde(default)]
    pub transport: Transport,
    /// WebSocket listeners: the path clients are told to use; default `/mqtt`.
    #[serde(default)]
    pub path: Option<String>,
}

/// `transport` of a `[[broker.listener]]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// MQTT over TCP (or TLS).
    #[default]
    Tcp,
    /// MQTT over WebSockets (or WebSockets over TLS).
    Websocket,
}

/// `tls = { cert_file, key_file, client_ca_file }` of a listener: the broker's own type.
pub use crate::broker::TlsFiles as TlsConfig;

/// One `[[broker.user]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// An argon2id PHC string from `sensorgate hash-password`.
    pub password_hash: String,
    /// Topic filters the user may subscribe to; `%u` is the user name, `%c` the client id.
    #[serde(default)]
    pub read: Vec<String>,
    /// Topic filters the user may publish to; `%u` and `%c` as for `read`.
    #[serde(default)]
    pub write: Vec<String>,
    /// What the user may do on the status page (`[http]`); `None`: no web access.
    #[serde(default)]
    pub http: Option<crate::http::HttpRight>,
}

/// `[publish]`: how the gateway publishes readings on the embedded broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishConfig {
    pub qos: u8,
    pub retain: bool,
    /// Also publish `{base}/{device}/{field}`.
    pub field_topics: bool,
    #[serde(deserialize_with = "units::duration")]
    pub stats_interval: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            qos: defaults::PUBLISH_QOS,
            retain: defaults::PUBLISH_RETAIN,
            field_topics: defaults::FIELD_TOPICS,
            stats_interval: defaults::STATS_INTERVAL,
        }
    }
}

/// `[devices]`: defaults for every device.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Silence after which a device's will is published.
    #[serde(deserialize_with = "units::duration")]
    pub offline_after: Duration,
    /// A frame with the same device and sequence number within this window is a duplicate.
    #[serde(deserialize_with = "units::duration")]
    pub dedup_window: Duration,
    /// The most fields a device keeps (the first names it sends); new names beyond them are dropped.
    pub max_fields: usize,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            offline_after: defaults::OFFLINE_AFTER,
            dedup_window: defaults::DEDUP_WINDOW,
            max_fields: defaults::MAX_FIELDS,
        }
    }
}

/// One `[[device]]`: a name for an address heard on a source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The topic level: `{base}/{name}`.
    pub name: String,
    /// The `[[source]]` it is heard on.
    pub source: String,
    /// The address its header or payload carries, as text. LoRaWAN devices write none: theirs is the
    /// DevEUI (OTAA) or DevAddr (ABP) in hex, filled in by the configuration.
    #[serde(default)]
    pub address: String,
    /// Overrides `[devices] offline_after`.
    #[serde(default, deserialize_with = "units::option_duration")]
    pub offline_after: Option<Duration>,
    /// Replaces the default will (`offline` on `{base}/{name}/availability`).
    pub will: Option<crate::devices::WillSettings>,
    /// This device's own frame key (32 hex digits), instead of its encrypted source's `key_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `false`: never announced to Home Assistant (and removed there if it was).
    #[serde(default = "defaults::yes")]
    pub homeassistant: bool,
    /// Home Assistant overrides per field name: `fields = { soil = { device_class = "moisture" } }`.
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, crate::homeassistant::FieldOverride>,
    /// When this device gets its commands, instead of its source's `deliver`.
    #[serde(default)]
    pub deliver: Option<crate::commands::Deliver>,
    /// `true`: `{"raw": ...}` commands may reach it on a source whose payload carries the node's address
    /// (JSON lines, MySensors), where raw bytes could name another node.
    #[serde(default)]
    pub raw_commands: bool,
    /// LoRaWAN (a device of a semtech-udp source): OTAA `dev_eui`, `join_eui`, `app_key_file`; ABP
    /// `dev_addr`, `nwk_s_key_file`, `app_s_key_file`; the decoder `payload` or per FPort `fports`;
    /// `lorawan_version` (the DevNonce rule of its joins).
    /// Checked by `crate::lorawan::settings`.
    #[serde(default)]
    pub dev_eui: Option<crate::lorawan::settings::Eui>,
    #[serde(default)]
    pub join_eui: Option<crate::lorawan::settings::Eui>,
    #[serde(default)]
    pub app_key_file: Option<PathBuf>,
    #[serde(default)]
    pub dev_addr: Option<crate::lorawan::settings::DevAddr>,
    #[serde(default)]
    pub nwk_s_key_file: Option<PathBuf>,
    #[serde(default)]
    pub app_s_key_file: Option<PathBuf>,
    #[serde(default)]
    pub payload: Option<crate::decode::PayloadFormat>,
    #[serde(default)]
    pub fports: std::collections::BTreeMap<String, crate::decode::PayloadFormat>,
    #[serde(default)]
    pub lorawan_version: Option<crate::lorawan::dev_nonce::LorawanVersion>,
    /// LoRaWAN commands: the FPort they go on (1..=223, default 1) and whether they are confirmed.
    #[serde(default)]
    pub downlink_fport: Option<i64>,
    #[serde(default)]
    pub downlink_confirmed: Option<bool>,
    /// LoRaWAN: network-side ADR (LinkADRReqs set its data rate and power); off unless `true`.
    #[serde(default)]
    pub adr: Option<bool>,
    /// Its own codec file, instead of its `payload = "codec"` source's.
    #[serde(default)]
    pub codec: Option<PathBuf>,
    /// Its codec's `input.variables` (over its source's `variables`).
    #[serde(default)]
    pub variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// Its codec as checked when the file was loaded (`codec` or `variables` given), else `None`.
    #[serde(skip)]
    pub codec_settings: Option<crate::codec::settings::CodecSettings>,
}

impl DeviceConfig {
    /// The LoRaWAN keys as written.
    pub fn lorawan_keys(&self) -> crate::lorawan::settings::LorawanDeviceKeys {
        crate::lorawan::settings::LorawanDeviceKeys {
            dev_eui: self.dev_eui,
            join_eui: self.join_eui,
            app_key_file: self.app_key_file.clone(),
            dev_addr: self.dev_addr,
            nwk_s_key_file: self.nwk_s_key_file.clone(),
            app_s_key_file: self.app_s_key_file.clone(),
            payload: self.payload,
            fports: self.fports.clone(),
            lorawan_version: self.lorawan_version,
            codec: self.codec.is_some(),
            downlink_fport: self.downlink_fport,
            downlink_confirmed: self.downlink_confirmed,
            adr: self.adr,
        }
    }
}

/// `[homeassistant]`: MQTT discovery for Home Assistant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HomeAssistantConfig {
    /// Publish discovery configs.
    pub discovery: bool,
    /// The discovery prefix; Home Assistant's birth message is `{prefix}/status`.
    pub prefix: String,
    /// Which devices are announced.
    pub devices: HomeAssistantDevices,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        HomeAssistantConfig {
            discovery: defaults::HA_DISCOVERY,
            prefix: defaults::HA_PREFIX.to_string(),
            devices: HomeAssistantDevices::default(),
        }
    }
}

/// `[homeassistant] devices`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HomeAssistantDevices {
    /// Every device of serial and simulator sources; only `[[device]]` entries on radio sources.
    #[default]
    Auto,
    /// Only `[[device]]` entries.
    Configured,
    /// Every device heard.
    All,
}

/// `[upstream]`: the cloud broker the uplink forwards to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: crate::uplink::Endpoint,
    /// Default (and when empty): `sensorgate-{gateway.id}`; filled in by `Config::parse`.
    #[serde(default)]
    pub client_id: String,
    /// CA bundle for the server certificate; `None`: the system trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    /// A file holding the password (trailing newline ignored), so it stays out of this file.
    pub password_file: Option<PathBuf>,
    #[serde(default = "defaults::keep_alive", deserialize_with = "units::duration")]
    pub keep_alive: Duration,
    /// Allow `mqtt://` (no TLS).
    #[serde(default)]
    pub allow_plaintext: bool,
    #[serde(default = "defaults::upstream_max_inflight")]
    pub max_inflight: u16,
    /// `"mqtt311"` (default) or `"mqtt5"`: with MQTT 5 the cloud says which publish it refused.
    #[serde(default)]
    pub protocol: crate::uplink::Protocol,
    /// `[[upstream.forward]]`; `Config::parse` fills in `{base}/#` with an empty prefix when none is given.
    #[serde(default)]
    pub forward: Vec<ForwardRule>,
    /// `[upstream.spool]`, read into the spool's own settings.
    #[serde(default)]
    pub spool: crate::uplink::SpoolSettings,
}

/// One `[[upstream.forward]]`: local messages matching `filter` go upstream as `prefix + topic`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    pub filter: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "defaults::forward_qos")]
    pub qos: u8,
    /// End-to-end encryption of the payloads this rule forwards (`crate::crypto::envelope`).
    #[serde(default)]
    pub encrypt: Option<ForwardEncrypt>,
}

/// `encrypt = { key_file, key_id }` of a forward rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardEncrypt {
    /// A file holding the 32-byte key as 64 hex digits.
    pub key_file: PathBuf,
    /// 0-255, the envelope's second byte, so the receiver can tell keys apart.
    pub key_id: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_directory_wins_over_state_dir() {
        let gateway = GatewayConfig {
            state_dir: PathBuf::from("/srv/gw"),
            ..GatewayConfig::default()
        };
        assert_eq!(gateway.state_dir_with(None), PathBuf::from("/srv/gw"));
        assert_eq!(
            gateway.state_dir_with(Some(OsStr::new("/var/lib/sensorgate"))),
            PathBuf::from("/var/lib/sensorgate")
        );
        assert_eq!(
            gateway.state_dir_with(Some(OsStr::new("/a:/b"))),
            PathBuf::from("/a")
        );
        assert_eq!(
            gateway.state_dir_with(Some(OsStr::new(""))),
            PathBuf::from("/srv/gw")
        );
    }

    #[test]
    fn anonymous_default_depends_on_users() {
        let mut broker = BrokerConfig::default();
        assert!(broker.anonymous_allowed());
        broker.users.push(UserConfig {
            name: "ha".into(),
            password_hash: "$argon2id$x".into(),
            read: vec![],
            write: vec![],
            http: None,
        });
        assert!(!broker.anonymous_allowed());
        broker.allow_anonymous = Some(true);
        assert!(broker.anonymous_allowed());
    }
}
