//! The embedded MQTT broker: rmqtt, configured in code from sensorgate's settings and run on the daemon's
//! own tokio runtime. This module is the only place that names rmqtt types; the rest of the daemon sees a
//! [`Broker`] handle that publishes [`Message`]s in-process, a tap of everything published, and the
//! retained store. It never decodes frames or decides topics. Logins are in [`auth`], rights in [`acl`],
//! and [`policy`] applies both at the engine's hook points.
//!
//! Engine behaviours (rmqtt 0.24.0) configured or contained here, and how; the upgrade gate is
//! `tests/broker/` (docs/DEVELOPING.md, "Upgrading the engine"):
//!
//! - Retained messages expire in the stock store: a host store ([`retained`]) without time-to-live
//!   (only an MQTT 5 Message Expiry Interval limits a retained message), logged to `state_dir` as it changes ([`retained_log`]).
//! - `max_mqueue_len` defaults to 1000, which silently cut a late `#` subscriber's retained messages: set
//!   to `max_queued_messages` plus [`pacing::RETAINED_WINDOW`].
//! - Retained messages for a new subscription were all read at once (`retain_load_with`) and pushed into
//!   the subscriber's deliver queue, which dropped beyond `max_mqueue_len` (12,001 retained topics gave a
//!   QoS 1 `#` subscriber 10,702): [`pacing`] streams them from the host store in chunks, at most
//!   [`pacing::RETAINED_WINDOW`] waiting per subscriber, so every one is delivered at the subscription's
//!   QoS, however many and however slow the reader; `max_queued_messages` bounds only live traffic.
//! - Filters starting with a wildcard (`#`, `+/+`) must not match `$`-topics: the backlog's routing
//!   checks every relation of a `$`-topic with [`crate::topic::matches`] (whatever the engine's tree
//!   does), and the host retained store applies the same rule (`tests/broker/retained.rs`). Anonymous
//!   clients cannot publish `$`-topics (`#` does not cover them); the refusal's PUBACK carries reason
//!   0x87 and no reason string (the Paho test client refuses acks with properties).
//! - Shared subscriptions (`$share/{group}/...`) need the `shared-subscription` feature and a
//!   `SharedSubscription` that says it is supported (the engine's default says no and chooses nobody):
//!   [`shared_groups::RoundRobin`]. The engine also sent retained messages to a new shared
//!   subscription, which MQTT 5 forbids: patched in `vendor/rmqtt`.
//! - Topic aliases default to 0 (none either way): [`TOPIC_ALIASES`] each way. An unknown alias was
//!   refused as 0x83 and one beyond the maximum was accepted (the engine counted only how many were
//!   held): patched in `vendor/rmqtt` (0x82 Protocol Error, 0x94 Topic Alias invalid).
//! - The engine wrote its DISCONNECT (receive maximum exceeded, topic alias invalid, keep-alive
//!   timeout, malformed packet...) after closing the socket, so no MQTT 5 client ever got one, and
//!   called every decode error 0x80: patched in `vendor/rmqtt` and `vendor/rmqtt-net` (the reason code
//!   is sent, then the connection lingers up to 500 ms, still answering a takeover, before it closes).
//! - Every MQTT 5 delivery carried a Message Expiry Interval (the listener's default expiry, 2 h, for
//!   messages whose publisher gave none): patched in `vendor/rmqtt`, only a given expiry is passed on.
//! - A client's Maximum Packet Size was applied 5 bytes short (a client announcing 20 got CONNACK 0x88
//!   instead of its 19-byte CONNACK): patched in `vendor/rmqtt-codec` to the exact header size.
//! - MQTT 5 clients asking for a keep-alive above [`sessions::MAX_SERVER_KEEP_ALIVE`] get that as Server
//!   Keep Alive (3.1.1 clients keep theirs: they cannot be told).
//! - WebSockets (`ws` feature, tokio-tungstenite): `[[broker.listener]] transport = "websocket"` binds a
//!   ws (or, with `tls`, wss) listener with the same logins, rights, limits and first-packet timeout as TCP. The
//!   engine's upgrade answered any request path that asked for the `mqtt` subprotocol: patched in
//!   `vendor/rmqtt-net` (`ws_path`), so only the listener's `path` is upgraded and any other gets 404.
//!   tungstenite's defaults (64 MiB messages, 16 MiB frames, a 128 KiB read buffer per connection) and
//!   text, ping and close payloads taken for MQTT bytes: patched there too; messages and frames are at
//!   most `max_packet_size`, buffers start as a TCP connection's, and a text message closes.
//! - A CPU "busy" check refuses connections under load: turned off.
//! - Each listener's handshakes run on workers the engine starts on its first connection and keeps, 1,000
//!   of them by default: [`HANDSHAKES_AT_ONCE`] says what they cost and how many run instead.
//! - TLS handshake timeout defaults to 30 s: `handshake_timeout` (5 s); handshakes run on a task per
//!   connection (50 idle TCP connections do not delay a TLS client).
//! - A listener's client CA is ignored unless `tls_cross_certificate` is set: set when `client_ca_file` is
//!   given, so that listener requires client certificates (two listeners serve both kinds of client).
//! - Anonymous clients bypass the authentication hook when the listener allows anonymous: listeners never
//!   allow anonymous; the policy hook applies `allow_anonymous` itself, so every CONNECT is checked.
//! - CONNACK 4/5 (3.1.1) and 0x86/0x87 (5.0) come from the hook's `BadUsernameOrPassword`/`NotAuthorized`;
//!   sessions are never marked superuser (the engine skips every ACL hook for superusers).
//! - Wills are published without any ACL check (`process_last_will`) and a hook cannot drop them: a
//!   CONNECT whose will topic its client may not write is refused with "not authorized" (as mosquitto
//!   does); the delivery check also drops wills whose client may not write the topic, and the tap gate
//!   copies only wills the client may write.
//! - No delivery ACL: the `MessageExpiryCheck` hook (run before every delivery, retained included) drops
//!   messages the receiver may not read.
//! - A QoS 2 PUBLISH re-sent with DUP after a reconnect (PUBREC lost) was delivered twice: the engine's
//!   duplicate check lives only as long as one connection. [`exactly_once`] remembers accepted QoS 2
//!   packet ids per client id; a re-send is acknowledged (PUBREC; 5.0 reason 0x91) and not delivered.
//! - An immediate same-id reconnect was refused with CONNACK 3 (2 of 200: the kick of a clean session
//!   being torn down is never answered): the CONNECT waits up to 200 ms for such a session to be gone.
//! - `max_connections` counts sessions (connected clients plus persistent sessions of absent clients); the
//!   engine refuses beyond it with CONNACK 3 and logs only at info: the policy logs it at warn. Absent
//!   sessions never lock a client out: [`sessions`] caps their life (`session_expiry`,
//!   `anonymous_session_expiry`, through a fitter of ours), keeps at most `max_offline_sessions` of them,
//!   and ends the one absent the longest when a new client needs its place. An absent session holds no
//!   socket (the engine kept its closed socket until the session ended: patched in `vendor/rmqtt`);
//!   [`descriptors`] checks at start that `max_connections` plus half-open connections fit under
//!   `RLIMIT_NOFILE`.
//! - The first packet of a connection was read without a timeout (`probe_version`; `handshake_timeout`
//!   covered only TLS and the rest of CONNECT), and silent sockets were kept forever: patched in
//!   `vendor/rmqtt-net` (`HalfOpen`): once its TLS or WebSocket handshake is done, each connection has
//!   `handshake_timeout` in all to deliver its whole CONNECT, and at most
//!   [`descriptors::MAX_HALF_OPEN`] connections of all listeners wait for theirs at once (a newer one
//!   ends the oldest). Decided per connection, never by address; counted in
//!   [`Broker::silent_connections_closed`].
//! - The topic tree recurses per level on insert, match and remove (a 6,000-level filter overflowed the
//!   stack): the policy refuses topics and filters deeper than `max_topic_levels` before the engine sees
//!   them (SUBACK 0x80 / 5.0 0x8F; a publish closes a 3.1.1 connection, 5.0 gets reason 0x90), wildcard and
//!   NUL topic names likewise (the engine accepted and delivered them verbatim), and the snapshot restore
//!   skips such topics. The retained store holds at most `max_retained_messages` topics.
//! - Oversized packets (`max_packet_size`) close the connection, a full offline queue drops messages:
//!   both logged at warn, rate-limited per client.
//! - Routing hands messages to a subscriber's session over an unbounded channel and never throttles the
//!   publisher, so a publisher faster than a subscriber grew the daemon without bound (300,000 QoS 0
//!   messages: 7.8 to 84 MiB): [`backlog`] bounds the messages waiting for one connected subscriber at
//!   `max_queued_messages`; beyond it a client's message (any QoS) holds its publisher up to 500 ms per
//!   publish and is then dropped, and the gateway's own publishes are never held; drops are logged at warn
//!   naming the subscriber (rate-limited) and counted ([`Broker::backlog_drops`]).
//! - Messages queued for an offline persistent session: at most `max_queued_messages` (plus the inflight
//!   window), kept [`OFFLINE_MESSAGE_EXPIRY`] [engine default 5 min].
//! - Each connection's packets were handled on its own task with no order between connections, so a
//!   SUBSCRIBE that reached the broker before another client's PUBLISH could still be applying when
//!   that PUBLISH was routed, and the subscriber missed it (a SUBACK'd subscription was always in
//!   effect): patched in `vendor/rmqtt` (`subscribe_order`): a client's PUBLISH yields once, then waits, at
//!   most 100 ms, for the SUBSCRIBEs read before it and for connections CONNACK'd but not yet read
//!   (20 ms at most).
//! - `MqttServer::start()` exits the process on error: serving uses `MqttServer::run` on a task of ours.

pub mod acl;
pub mod auth;
pub mod backlog;
pub mod defaults;
pub mod delivery_counts;
pub mod descriptors;
pub mod exactly_once;
pub mod gate;
pub mod message_counts;
mod message_hooks;
pub mod owned;
pub mod pacing;
pub mod password;
pub mod policy;
pub mod read_grants;
pub mod retained;
pub mod retained_log;
pub mod route_cache;
pub mod sessions;
pub mod shared_groups;
pub mod snapshotter;
pub mod watch;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rmqtt::context::ServerContext;
use rmqtt::hook::Type;
use rmqtt::net::{Builder, HalfOpen};
use rmqtt::server::MqttServer;
use rmqtt::session::SessionState;
use rmqtt::types::{ClientId, CodecPublish, From, Id, Publish, QoS, TopicName, UserName};
use tokio::task::JoinHandle;

use crate::model::Message;
use acl::{AccessPolicy, Rights};
use auth::{Logins, Throttle};
use backlog::{Backlog, BoundedShared};
use delivery_counts::DeliveryCountHook;
pub use gate::{tap, ClientPublish, TapSender, TAP_CAPACITY};
use gate::{CommandTap, PublishGate, RefusedCommands, Tap};
use message_counts::MessageCounts;
use message_hooks::MessageHooks;
use pacing::RetainedPacer;
pub use password::{hash_password, verify_password, PasswordError};
use policy::{Policy, PolicyHook, PolicyLimits};
use retained::{EngineRetainStorage, RetainLimits, RetainedStore};
use route_cache::{RouteCache, WatchedRouter};
use sessions::{CappedFitterManager, OfflineSessions, OfflineSessionsHook, SessionLifetimes};
use shared_groups::RoundRobin;
use snapshotter::Snapshotter;

/// How long a message queued for an offline persistent session (clean session = false) is kept, and how
/// long such a session is kept after its client went away.
pub const OFFLINE_MESSAGE_EXPIRY: Duration = Duration::from_secs(2 * 60 * 60);

/// TLS files of one listener, read from its `tls = { cert_file, key_file, client_ca_file }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca_file: Option<PathBuf>,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSettings {
    pub bind: SocketAddr,
    pub tls: Option<TlsFiles>,
}

/// One `[[broker.listener]]` with `transport = "websocket"`: MQTT over WebSockets, wss with `tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketListener {
    pub bind: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// The path clients are told to use (the engine answers any path).
    pub path: String,
}

/// Topic aliases the broker accepts from each MQTT 5 client and uses towards it (at most, and at most
/// what the client allows).
pub const TOPIC_ALIASES: u16 = 16;

/// Handshakes (a decoded CONNECT's login, session and CONNACK) each listener runs at once; more wait
/// in its queue. The engine starts this many workers on a listener's first connection and keeps them, so
/// it is a fixed cost: its default of 1,000 held about 560 KB per listener (resident, x86_64), more than
/// the first hundred clients' own sessions; 64 hold about 36 KB and still run more handshakes at once
/// than the argon2 verifications a login may wait for ([`auth::MAX_VERIFICATIONS`]).
pub const HANDSHAKES_AT_ONCE: usize = 64;

/// One `[[broker.user]]`: a login and its rights.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserSettings {
    pub name: String,
    /// argon2id PHC string from `sensorgate hash-password` ([`hash_password`]).
    pub password_hash: String,
    /// Topic filters this user may subscribe to and receive (`%u` = user name, `%c` = client id).
    pub read: Vec<String>,
    /// Topic filters this user may publish to (and name as its will topic).
    pub write: Vec<String>,
}

/// Everything the broker needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSettings {
    pub listeners: Vec<ListenerSettings>,
    /// WebSocket listeners (same logins, rights and limits as `listeners`).
    pub websockets: Vec<WebSocketListener>,
    pub users: Vec<UserSettings>,
    /// Whether clients without a user name may connect.
    pub allow_anonymous: bool,
    /// Rights of anonymous clients. Default: read everything.
    pub anonymous_read: Vec<String>,
    /// Default: write everything, which (like any rule that does not name them) excludes `gateway_topics`.
    pub anonymous_write: Vec<String>,
    /// Topics only the gateway may write, unless a user's write filter lies inside them
    /// (e.g. `sensorgate/cmd/#`). The daemon passes `{base_topic}/#`.
    pub gateway_topics: Vec<String>,
    /// With Home Assistant discovery on, the discovery topics of the gateway's own node ids, owned like
    /// `gateway_topics` ([`owned::DiscoveryNodes`]).
    pub gateway_discovery: Option<owned::DiscoveryNodes>,
    /// Connected clients plus persistent sessions kept for absent ones; beyond it CONNACK 3.
    pub max_connections: usize,
    pub max_packet_size: u32,
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    pub handshake_timeout: Duration,
    /// Topics and filters with more levels are refused (subscribe: reason 0x8F; publish and will: refused).
    pub max_topic_levels: usize,
    /// Retained topics the store holds; a retained publish to a new topic beyond it is not stored (counted).
    pub max_retained_messages: usize,
    /// Persistent sessions of absent clients kept; beyond it the one absent the longest is ended (counted).
    pub max_offline_sessions: usize,
    /// Longest time a persistent session of an absent client is kept (MQTT 5 clients may ask for less).
    pub session_expiry: Duration,
    /// The same for clients that logged in without a user name.
    pub anonymous_session_expiry: Duration,
    /// Where the retained log lives; `None` keeps retained messages in memory only.
    pub state_dir: Option<PathBuf>,
    /// How often what changed in the retained store is appended to the log (`[broker] retained_sync`: the
    /// window a power cut may lose last values from; everything is also written on shutdown).
    pub snapshot_interval: Duration,
}

impl Default for BrokerSettings {
    /// The broker of an empty configuration ([`defaults`]), with retained messages in memory only.
    fn default() -> Self {
        BrokerSettings {
            listeners: vec![ListenerSettings {
                bind: defaults::LISTENER,
                tls: None,
            }],
            websockets: Vec::new(),
            users: Vec::new(),
            allow_anonymous: true,
            anonymous_read: vec![defaults::ANONYMOUS_RIGHTS.to_string()],
            anonymous_write: vec![defaults::ANONYMOUS_RIGHTS.to_string()],
            gateway_topics: vec![crate::topic::gateway::everything_below(
                crate::topic::gateway::DEFAULT_BASE_TOPIC,
            )],
            gateway_discovery: None,
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
            state_dir: None,
            snapshot_interval: defaults::RETAINED_SYNC,
        }
    }
}

/// Why the broker could not start or publish.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {bind}: {reason} (is another MQTT broker running there? change [[broker.listener]] bind)")]
    Bind { bind: SocketAddr, reason: String },
    #[error("TLS listener {bind}: {reason} (check cert_file, key_file and client_ca_file)")]
    Tls { bind: SocketAddr, reason: String },
    #[error("retained snapshot: {0}")]
    Snapshot(#[from] retained::SnapshotError),
    #[error("publish to {topic}: {reason}")]
    Publish { topic: String, reason: String },
    #[error("[[broker.user]] {user:?}: password_hash: {reason} (make one with `sensorgate hash-password`)")]
    PasswordHash { user: String, reason: String },
    #[error(transparent)]
    Descriptors(#[from] descriptors::DescriptorError),
}

/// What the broker dropped, refused or closed to stay within its bounds (for `{base}/gateway/stats`), and
/// the messages that went through it (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BrokerCounters {
    /// Messages dropped for subscribers that had `max_queued_messages` waiting.
    pub dropped_for_slow_subscribers: u64,
    /// Messages a forward rule selected that found the uplink's input full.
    pub dropped_for_the_uplink: u64,
    /// Absent persistent sessions ended early (`max_offline_sessions`, or room for a new client).
    pub sessions_evicted: u64,
    /// Connections closed for sending no CONNECT within `handshake_timeout`, or beyond the half-open bound.
    pub silent_connections_closed: u64,
    /// Retained publishes to new topics not stored (`max_retained_messages`).
    pub retained_refused: u64,
    /// Command publishes (`{base}/+/set...`) that found the command router's input full.
    pub commands_dropped: u64,
    /// Torn or corrupt tails of the retained log cut at start (a power cut mid-write; 0 or 1).
    pub retained_torn_tails: u64,
    /// PUBLISH packets received from MQTT clients.
    pub messages_received: u64,
    /// Client publishes the policy refused (invalid topic name, no write right).
    pub publishes_refused: u64,
    /// Messages handed to subscribers (fresh, retained and wills).
    pub messages_sent: u64,
    /// Topic names the route cache forgot because it was full (their routes are matched afresh).
    pub routes_forgotten: u64,
}

/// A running embedded broker.
pub struct Broker {
    scx: ServerContext,
    retained: Arc<RetainedStore>,
    backlog: Arc<Backlog>,
    tap: Tap,
    commands: CommandTap,
    system_from: From,
    local_addrs: Vec<SocketAddr>,
    server_task: JoinHandle<()>,
    snapshotter: Option<Snapshotter>,
    offline: Arc<OfflineSessions>,
    /// Connections that have not sent their CONNECT yet (bounded in time and number by the engine).
    half_open: Arc<HalfOpen>,
    pacer: Arc<RetainedPacer>,
    routes: Arc<RouteCache>,
    /// Torn or corrupt tails of the retained log cut at start (0 or 1).
    retained_torn_tails: u64,
    logins: Arc<Logins>,
    messages: Arc<MessageCounts>,
    /// The daemon's watches of client publishes ([`Broker::watch`]).
    watches: Arc<watch::Watches>,
}

impl Broker {
    /// Builds the engine, restores the retained snapshot, binds every listener and starts serving.
    /// What is published (by clients and in-process) and selected by the tap's filters is copied to
    /// `tap` when given ([`gate::tap`]).
    pub async fn start(
        settings: &BrokerSettings,
        tap: Option<gate::TapSender>,
    ) -> Result<Broker, BrokerError> {
        check_password_hashes(settings)?;
        descriptors::ensure_budget(&descriptors::Budget::of(settings))?;
        warn_about_open_listeners(settings);
        let scx = engine_context(settings).await;
        let Stores {
            retained,
            backlog,
            pacer,
            routes,
        } = install_stores(&scx, settings).await;
        let system_from = system_sender(&scx);
        let retained_torn_tails = match &settings.state_dir {
            Some(dir) => restore_retained(&retained, &system_from, dir).await,
            None => 0,
        };

        let offline = Arc::new(OfflineSessions::new(
            scx.clone(),
            settings.max_offline_sessions.min(settings.max_connections),
        ));
        let logins = logins_of(settings);
        let messages = Arc::new(MessageCounts::default());
        let policy = policy_of(&scx, settings, &logins, &offline, &messages);
        let tap = Tap::new(tap);
        let commands = CommandTap::default();
        let watches = Arc::new(watch::Watches::default());
        let counts = (&backlog, &pacer);
        register_hooks(&scx, counts, &policy, &offline, (&tap, &commands), &watches).await;

        let half_open = HalfOpen::new(descriptors::max_half_open(settings));
        let (server_task, local_addrs) = serve(&scx, settings, &half_open)?;
        let snapshotter = settings
            .state_dir
            .clone()
            .map(|dir| Snapshotter::start(retained.clone(), dir, settings.snapshot_interval));

        Ok(Broker {
            scx,
            retained,
            backlog,
            offline,
            half_open,
            pacer,
            routes,
            tap,
            commands,
            system_from,
            local_addrs,
            server_task,
            snapshotter,
            retained_torn_tails,
            logins,
            messages,
            watches,
        })
    }

    /// The broker's login checker (users, argon2 slots, the brake), for other front doors that take the
    /// same logins (the status page): failures anywhere count in the same brake.
    pub fn logins(&self) -> Arc<Logins> {
        self.logins.clone()
    }

    /// The addresses the listeners are bound to (useful when a bind port was 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Publishes a message in-process, as the gateway itself: retained messages are stored, subscribers get
    /// it at the lower of its QoS and theirs, and the tap sees it.
    pub async fn publish(&self, message: &Message) -> Result<(), BrokerError> {
        self.tap.offer_message(message);
        SessionState::forwards(
            &self.scx,
            self.system_from.clone(),
            to_publish(message),
            false,
            None,
        )
        .await
        .map_err(|e| BrokerError::Publish {
            topic: message.topic.clone(),
            reason: e.to_string(),
        })
    }

    /// Watches client publishes on `topics` (exact names): each one the policy lets through is copied to
    /// the returned channel ([`watch`]; at most [`watch::WATCH_CAPACITY`] waiting, more are dropped).
    pub async fn watch(&self, topics: Vec<String>) -> tokio::sync::mpsc::Receiver<Message> {
        let (sender, receiver) = tokio::sync::mpsc::channel(watch::WATCH_CAPACITY);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        self.watches.add(topics, sender, dropped);
        receiver
    }

    /// Client publishes on `filters` (the command topics), allowed or refused by the rights, copied into a
    /// channel of `capacity` for the command router ([`gate::CommandTap`]); `None` if taken already.
    pub fn command_tap(
        &self,
        filters: Vec<String>,
        capacity: usize,
    ) -> Option<tokio::sync::mpsc::Receiver<ClientPublish>> {
        self.commands.install(filters, capacity)
    }

    /// Gives the command router a command from another front door (the status page), as if a client
    /// had published it; false when no router takes that topic or its input is full.
    pub fn inject_command(&self, command: ClientPublish) -> bool {
        self.commands.inject(command)
    }

    /// Command publishes that found the command router's input full.
    pub fn commands_dropped(&self) -> u64 {
        self.commands.dropped()
    }

    /// [`publish`](Self::publish) with an MQTT 5 Correlation Data property (a command's answer on the
    /// response topic its request named).
    pub async fn publish_with_correlation(
        &self,
        message: &Message,
        correlation_data: Option<&[u8]>,
    ) -> Result<(), BrokerError> {
        let mut publish = to_publish(message);
        if let (Some(data), Some(properties)) = (correlation_data, publish.properties.as_mut()) {
            properties.correlation_data = Some(bytes::Bytes::copy_from_slice(data));
        }
        self.tap.offer_message(message);
        SessionState::forwards(&self.scx, self.system_from.clone(), publish, false, None)
            .await
            .map_err(|e| BrokerError::Publish {
                topic: message.topic.clone(),
                reason: e.to_string(),
            })
    }

    /// Every retained message, sorted by topic.
    pub async fn retained_messages(&self) -> Vec<Message> {
        self.retained.all().await
    }

    /// Number of connected clients, for stats.
    pub fn connections(&self) -> isize {
        self.scx.connections.count()
    }

    /// Every counter of what the broker dropped, refused or closed.
    pub fn counters(&self) -> BrokerCounters {
        BrokerCounters {
            dropped_for_slow_subscribers: self.backlog_drops(),
            dropped_for_the_uplink: self.tap_dropped(),
            sessions_evicted: self.sessions_evicted(),
            silent_connections_closed: self.silent_connections_closed(),
            retained_refused: self.retained_refused(),
            commands_dropped: self.commands_dropped(),
            retained_torn_tails: self.retained_torn_tails,
            messages_received: self.messages.received(),
            publishes_refused: self.messages.refused(),
            messages_sent: self.messages.sent(),
            routes_forgotten: self.routes.cleared(),
        }
    }

    /// Messages a tap filter selected that found the tap (the uplink's input) full.
    pub fn tap_dropped(&self) -> u64 {
        self.tap.dropped()
    }

    /// Messages dropped because a connected subscriber had `max_queued_messages` waiting already.
    pub fn backlog_drops(&self) -> u64 {
        self.backlog.dropped()
    }

    /// Messages routed to `client_id` and not yet delivered to it (nor dropped).
    pub fn backlog(&self, client_id: &str) -> usize {
        self.backlog.pending(client_id)
    }

    /// Retained streams for new subscriptions given up because the subscriber's connection ended.
    pub fn retained_streams_abandoned(&self) -> u64 {
        self.pacer.abandoned()
    }

    /// Retained messages streamed to `client_id` and not yet delivered to it.
    pub fn retained_pending(&self, client_id: &str) -> usize {
        self.pacer.pending(client_id)
    }

    /// Absent persistent sessions ended early because `max_offline_sessions` were kept.
    pub fn sessions_evicted(&self) -> u64 {
        self.offline.evicted()
    }

    /// Absent persistent sessions kept now.
    pub fn offline_sessions(&self) -> usize {
        self.offline.count()
    }

    /// Connections closed because they sent no CONNECT within `handshake_timeout`, or were beyond the
    /// half-open bound.
    pub fn silent_connections_closed(&self) -> u64 {
        self.half_open.closed()
    }

    /// Retained publishes to new topics not stored because `max_retained_messages` were held.
    pub fn retained_refused(&self) -> u64 {
        self.retained.refused_full()
    }

    /// Number of sessions: connected clients plus persistent sessions kept for absent ones.
    pub fn sessions(&self) -> isize {
        self.scx.sessions.count()
    }

    /// Stops listening and serving, and writes the retained snapshot a last time.
    pub async fn shutdown(mut self) -> Result<(), BrokerError> {
        self.server_task.abort();
        match self.snapshotter.take() {
            Some(snapshotter) => snapshotter.stop().await,
            None => Ok(()),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.server_task.abort();
        if let Some(snapshotter) = &self.snapshotter {
            snapshotter.abort();
        }
    }
}

/// The engine's context: its busy check off, the session cap, and the lifetimes of absent sessions.
async fn engine_context(settings: &BrokerSettings) -> ServerContext {
    let scx = ServerContext::new()
        .busy_check_enable(false)
        .mqtt_max_sessions(settings.max_connections.max(1) as isize)
        .build()
        .await;
    *scx.extends.fitter_mgr_mut().await = Box::new(CappedFitterManager(SessionLifetimes {
        expiry: settings.session_expiry,
        anonymous_expiry: settings.anonymous_session_expiry,
    }));
    scx
}

/// The project's stores inside the engine, as [`install_stores`] put them there.
struct Stores {
    retained: Arc<RetainedStore>,
    backlog: Arc<Backlog>,
    pacer: Arc<RetainedPacer>,
    routes: Arc<RouteCache>,
}

/// Puts the project's stores into the engine: the bounded retained store, the subscribers' backlog,
/// the retained pacer and the route cache (behind [`BoundedShared`] and [`WatchedRouter`]), and
/// round-robin shared subscriptions.
async fn install_stores(scx: &ServerContext, settings: &BrokerSettings) -> Stores {
    let retained = RetainedStore::new(RetainLimits {
        max_messages: settings.max_retained_messages.max(1),
        max_topic_levels: settings.max_topic_levels,
    });
    *scx.extends.retain_mut().await = Box::new(EngineRetainStorage(retained.clone()));
    let backlog = Arc::new(Backlog::new(settings.max_queued_messages));
    let pacer = RetainedPacer::new(pacing::RETAINED_WINDOW);
    let routes = WatchedRouter::install(scx).await;
    BoundedShared::install(
        scx,
        backlog.clone(),
        retained.clone(),
        pacer.clone(),
        routes.clone(),
    )
    .await;
    *scx.extends.shared_subscription_mut().await = Box::new(RoundRobin::default());
    Stores {
        retained,
        backlog,
        pacer,
        routes,
    }
}

/// The sender of the gateway's own publishes: the engine's system client `sensorgate`.
fn system_sender(scx: &ServerContext) -> From {
    From::from_system(Id::new(
        scx.node.id(),
        0,
        None,
        None,
        ClientId::from("sensorgate"),
        Some(UserName::from("sensorgate")),
    ))
}

/// The login checker of the configured users.
fn logins_of(settings: &BrokerSettings) -> Arc<Logins> {
    Arc::new(Logins::new(
        settings
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password_hash.clone())),
        settings.allow_anonymous,
        Throttle::default(),
    ))
}

/// The policy the hooks apply: the rights, the logins and the limits a client meets.
fn policy_of(
    scx: &ServerContext,
    settings: &BrokerSettings,
    logins: &Arc<Logins>,
    offline: &Arc<OfflineSessions>,
    messages: &Arc<MessageCounts>,
) -> Arc<Policy> {
    Arc::new(Policy::new(
        scx.clone(),
        access_policy(settings),
        logins.clone(),
        PolicyLimits {
            max_connections: settings.max_connections.max(1),
            max_packet_size: settings.max_packet_size,
            max_queued_messages: settings.max_queued_messages,
            max_topic_levels: settings.max_topic_levels,
        },
        offline.clone(),
        messages.clone(),
    ))
}

fn check_password_hashes(settings: &BrokerSettings) -> Result<(), BrokerError> {
    for user in &settings.users {
        password::check_hash(&user.password_hash).map_err(|error| BrokerError::PasswordHash {
            user: user.name.clone(),
            reason: error.to_string(),
        })?;
    }
    Ok(())
}

/// Puts the retained log's messages back (an old `retained.bin` is migrated into the log first),
/// skipping topics the broker would refuse today (too deep, invalid). A torn tail is cut, counted and
/// logged by the log itself.
/// Returns how many torn tails were cut (0 or 1), for the stats.
async fn restore_retained(
    retained: &RetainedStore,
    system_from: &From,
    dir: &std::path::Path,
) -> u64 {
    let dir = dir.to_path_buf();
    let restored = tokio::task::spawn_blocking(move || retained_log::read_for_restore(&dir))
        .await
        .unwrap_or_default();
    if let Some(error) = &restored.error {
        log::error!("retained state not restored, starting without it: {error}");
    }
    let messages = restored.messages;
    let mut skipped = 0usize;
    for message in &messages {
        if retained.restorable(&message.topic) {
            retained.restore(system_from, to_publish(message)).await;
        } else {
            skipped += 1;
        }
    }
    if skipped > 0 {
        log::warn!(
            "retained log: {skipped} messages skipped, their topics are invalid or deeper than max_topic_levels"
        );
    }
    log::info!("restored {} retained messages", messages.len() - skipped);
    restored.torn_cuts
}

/// Installs the engine hooks: the per-message dispatcher alone on the publish and delivery checks
/// ([`MessageHooks`]), and each part on the other hook points it answers.
async fn register_hooks(
    scx: &ServerContext,
    (backlog, pacer): (&Arc<Backlog>, &Arc<RetainedPacer>),
    policy: &Arc<Policy>,
    offline: &Arc<OfflineSessions>,
    (tap, commands): (&Tap, &CommandTap),
    watches: &Arc<watch::Watches>,
) {
    let register = scx.extends.hook_mgr().register();
    // The counts above the policy: they must see every drop and session end, also those the policy
    // reports.
    for typ in DeliveryCountHook::<Backlog>::TYPES {
        register
            .add_priority(
                typ,
                BACKLOG_PRIORITY,
                Box::new(DeliveryCountHook(backlog.clone())),
            )
            .await;
        register
            .add_priority(
                typ,
                BACKLOG_PRIORITY,
                Box::new(DeliveryCountHook(pacer.clone())),
            )
            .await;
    }
    for typ in PolicyHook::TYPES {
        register
            .add_priority(typ, POLICY_PRIORITY, Box::new(PolicyHook(policy.clone())))
            .await;
    }
    for typ in OfflineSessionsHook::TYPES {
        register
            .add(typ, Box::new(OfflineSessionsHook(offline.clone())))
            .await;
    }
    let gate = || PublishGate::new(tap.clone(), policy.clone()).with_commands(commands.clone());
    register.add(Type::WillPublish, Box::new(gate())).await;
    for typ in MessageHooks::TYPES {
        let hooks = MessageHooks {
            refused_commands: RefusedCommands {
                commands: commands.clone(),
                policy: policy.clone(),
            },
            policy: policy.clone(),
            gate: gate(),
            watches: watches.clone(),
            backlog: DeliveryCountHook(backlog.clone()),
            pacer: DeliveryCountHook(pacer.clone()),
        };
        register.add(typ, Box::new(hooks)).await;
    }
    register.start().await;
}

/// Binds every listener and starts the engine's accept loops on a task of ours.
fn serve(
    scx: &ServerContext,
    settings: &BrokerSettings,
    half_open: &Arc<HalfOpen>,
) -> Result<(JoinHandle<()>, Vec<SocketAddr>), BrokerError> {
    let mut server = MqttServer::new(scx.clone());
    let mut local_addrs = Vec::new();
    let endpoints = settings
        .listeners
        .iter()
        .map(|l| (l.bind, l.tls.as_ref(), None))
        .chain(
            settings
                .websockets
                .iter()
                .map(|w| (w.bind, w.tls.as_ref(), Some(w.path.as_str()))),
        );
    for (index, (bind, tls, websocket)) in endpoints.enumerate() {
        let bound = bind_listener(settings, bind, tls, websocket, half_open)?;
        let addr = bound.local_addr().unwrap_or(bind);
        local_addrs.push(addr);
        server = server.listener_by_id(bound, (index + 1) as u16);
    }
    let server = server.build();
    let server_task = tokio::spawn(async move {
        if let Err(error) = server.run().await {
            log::error!("embedded broker stopped: {error}");
        }
    });
    Ok((server_task, local_addrs))
}

/// Binds one listener: MQTT over TCP or TLS, or with `websocket` (its path) over ws or wss.
fn bind_listener(
    settings: &BrokerSettings,
    bind: SocketAddr,
    tls: Option<&TlsFiles>,
    websocket: Option<&str>,
    half_open: &Arc<HalfOpen>,
) -> Result<rmqtt::net::Listener, BrokerError> {
    let kind = match (tls.is_some(), websocket.is_some()) {
        (false, false) => "tcp",
        (true, false) => "tls",
        (false, true) => "ws",
        (true, true) => "wss",
    };
    let mut builder = Builder::new()
        .name(format!("{kind}/{bind}{}", websocket.unwrap_or("")))
        .laddr(bind)
        .reuseaddr(Some(true))
        .nodelay(true)
        // Every CONNECT goes through the policy hook, which applies `allow_anonymous` itself.
        .allow_anonymous(false)
        .max_connections(settings.max_connections)
        .max_handshaking_limit(HANDSHAKES_AT_ONCE)
        .max_packet_size(settings.max_packet_size)
        .max_inflight(NonZeroU16::new(settings.max_inflight.max(1)).unwrap_or(NonZeroU16::MIN))
        // Room for the retained streams' window on top of the live messages the backlog admits.
        .max_mqueue_len(
            settings
                .max_queued_messages
                .saturating_add(pacing::RETAINED_WINDOW),
        )
        .max_topic_aliases(TOPIC_ALIASES)
        // TLS and WebSocket handshakes each within it, then the whole CONNECT within it; at most
        // `max_half_open` connections of all listeners wait for their CONNECT at once.
        .handshake_timeout(settings.handshake_timeout)
        .half_open(Some(half_open.clone()))
        .session_expiry_interval(settings.session_expiry)
        .message_expiry_interval(OFFLINE_MESSAGE_EXPIRY.min(settings.session_expiry))
        .ws_path(websocket.map(str::to_string));
    if let Some(tls) = tls {
        builder = builder
            .tls_cert(Some(tls.cert_file.display().to_string()))
            .tls_key(Some(tls.key_file.display().to_string()))
            .tls_client_ca_certs(tls.client_ca_file.as_ref().map(|p| p.display().to_string()))
            // Without this the engine ignores the client CA and never asks for a certificate.
            .tls_cross_certificate(tls.client_ca_file.is_some());
    }
    let bound = builder.bind().map_err(|e| BrokerError::Bind {
        bind,
        reason: e.to_string(),
    })?;
    let tls_error = |e: anyhow::Error| BrokerError::Tls {
        bind,
        reason: format!("{e:#}"),
    };
    match (tls.is_some(), websocket.is_some()) {
        (true, false) => bound.tls().map_err(tls_error),
        (true, true) => bound.wss().map_err(tls_error),
        (false, true) => bound.ws().map_err(|e| BrokerError::Bind {
            bind,
            reason: e.to_string(),
        }),
        (false, false) => bound.tcp().map_err(|e| BrokerError::Bind {
            bind,
            reason: e.to_string(),
        }),
    }
}

/// Hook priority of the policy (the engine runs higher priorities first; the tap gate runs at 0).
const POLICY_PRIORITY: u32 = 100;
/// Hook priority of the delivery counts: before the policy, which may end a chain.
const BACKLOG_PRIORITY: u32 = 200;

fn access_policy(settings: &BrokerSettings) -> AccessPolicy {
    AccessPolicy::new(
        settings.users.iter().map(|u| {
            (
                u.name.clone(),
                Rights {
                    read: u.read.clone(),
                    write: u.write.clone(),
                },
            )
        }),
        Rights {
            read: settings.anonymous_read.clone(),
            write: settings.anonymous_write.clone(),
        },
        owned::GatewayTopics::new(
            settings.gateway_topics.clone(),
            settings.gateway_discovery.clone(),
        ),
    )
}

/// Warns about listeners reachable from the network while anyone may connect in clear text.
fn warn_about_open_listeners(settings: &BrokerSettings) {
    let endpoints = settings
        .listeners
        .iter()
        .map(|l| (l.bind, l.tls.is_some()))
        .chain(
            settings
                .websockets
                .iter()
                .map(|w| (w.bind, w.tls.is_some())),
        );
    for (bind, tls) in endpoints {
        if !bind.ip().is_loopback()
            && !tls
            && (settings.users.is_empty() || settings.allow_anonymous)
        {
            log::warn!(
                "broker: listener {} is reachable from the network without TLS and {}: anyone on the network can read and publish (within the anonymous rights) and passwords travel in clear text; add [[broker.user]] entries and allow_anonymous = false, or TLS, or bind 127.0.0.1",
                bind,
                if settings.users.is_empty() { "without users" } else { "with anonymous access" }
            );
        }
    }
}

fn to_publish(message: &Message) -> Publish {
    let qos = match message.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let codec = CodecPublish {
        dup: false,
        retain: message.retain,
        qos,
        topic: TopicName::from(message.topic.clone()),
        packet_id: None,
        payload: bytes::Bytes::from(message.payload.clone()),
        properties: Some(Default::default()),
    };
    <CodecPublish as Into<Publish>>::into(codec).create_time(rmqtt::utils::timestamp_millis())
}

#[cfg(test)]
mod tests {
    use rmqtt::hook::Type;

    use super::*;

    /// The broker's handlers leave uncalled the engine's per-message hooks it has no use for: a
    /// client's publish hook (it looks only at wills, through the engine's will hook,
    /// `patches/rmqtt/0016-will-publish-hook.patch`) and the acknowledged, delivered and keep-alive
    /// hooks (0014).
    #[tokio::test]
    async fn the_broker_handles_wills_but_no_hook_it_does_not_need_per_message() {
        let settings = BrokerSettings {
            listeners: vec![ListenerSettings {
                bind: SocketAddr::from(([127, 0, 0, 1], 0)),
                tls: None,
            }],
            ..BrokerSettings::default()
        };
        let broker = Broker::start(&settings, None).await.unwrap();
        let hooks = broker.scx.extends.hook_mgr();
        assert!(hooks.handles(Type::WillPublish));
        assert!(hooks.handles(Type::MessagePublishCheckAcl));
        assert!(hooks.handles(Type::MessageExpiryCheck));
        for unneeded in [
            Type::MessagePublish,
            Type::MessageAcked,
            Type::MessageDelivered,
            Type::ClientKeepalive,
        ] {
            assert!(!hooks.handles(unneeded), "{unneeded:?}");
        }
    }
}
