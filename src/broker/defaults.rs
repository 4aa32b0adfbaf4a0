//! The broker's defaults, in one place: [`super::BrokerSettings::default`] is built from them, and the
//! configuration's `[broker]` keys default to them (`config` names these constants), so the broker a test
//! starts and the broker an empty configuration starts are the same. `config/sensorgate.toml` states
//! them in its comments, which a test holds against these values.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The one listener when no `[[broker.listener]]` is configured.
pub const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1883);
/// The WebSocket listener's HTTP path when none is configured.
pub const WEBSOCKET_PATH: &str = "/mqtt";
pub const MAX_CONNECTIONS: usize = 1024;
pub const MAX_PACKET_SIZE: u32 = 256 * 1024;
pub const MAX_INFLIGHT: u16 = 32;
/// Must stay above the number of retained topics a late `#` subscriber receives.
pub const MAX_QUEUED_MESSAGES: usize = 10_000;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// As EMQX: deeper topics and filters are refused.
pub const MAX_TOPIC_LEVELS: usize = 128;
pub const MAX_RETAINED_MESSAGES: usize = 100_000;
pub const MAX_OFFLINE_SESSIONS: usize = 256;
pub const SESSION_EXPIRY: Duration = Duration::from_secs(2 * 60 * 60);
pub const ANONYMOUS_SESSION_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// How long a changed retained message may stay only in memory (`[broker] retained_sync`).
pub const RETAINED_SYNC: Duration = Duration::from_secs(15 * 60);
/// What clients without a user name may read and write (`anonymous_read`, `anonymous_write`).
pub const ANONYMOUS_RIGHTS: &str = "#";
