//! The broker's policy hook: one engine `Handler` that applies sensorgate's decisions at the engine's hook
//! points: logins and will rights at CONNECT, subscribe and publish rights, the delivery check (also for
//! retained messages and wills), exactly-once for re-sent QoS 2 publishes, and operator log lines when a
//! limit is hit. It holds no rules of its own: rights come from [`AccessPolicy`], logins from [`Logins`].
//! It never marks a session superuser (the engine skips the ACL hooks for superusers).

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmqtt::codec::v5::SubscribeAckReason;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::Session;
use rmqtt::types::{
    AuthResult, ConnectInfo, FromType, Id, LastWill, PublishAclResult, QoS, Reason,
    SubscribeAclResult,
};

use super::acl::{AccessPolicy, Client};
use super::auth::{LoginOutcome, Logins};
use super::exactly_once::{fingerprint, Qos2Memory, Verdict};
use super::message_counts::MessageCounts;
use super::read_grants::ReadGrants;
use super::sessions::{ends_at_disconnect, OfflineSessions};
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::topic;

/// Reason string of the PUBREC/PUBACK sent for a re-sent QoS 2 publish that is not delivered again.
pub const RESENT_QOS2: &str = "duplicate QoS 2 publish, already delivered";

/// The bounds the policy enforces or reports.
#[derive(Debug, Clone, Copy)]
pub struct PolicyLimits {
    /// Sessions the engine admits (`max_connections`): connected clients plus absent persistent ones.
    pub max_connections: usize,
    pub max_packet_size: u32,
    pub max_queued_messages: usize,
    pub max_topic_levels: usize,
}

/// What the hook needs, shared by every hook point.
pub struct Policy {
    pub access: AccessPolicy,
    /// Shared with the status page's logins (`Broker::logins`): one brake for both.
    pub logins: Arc<Logins>,
    /// Sessions the engine admits.
    pub max_sessions: usize,
    pub max_packet_size: u32,
    pub max_queued_messages: usize,
    max_topic_levels: usize,
    qos2: Mutex<Qos2Memory>,
    /// Clients whose every subscription is readable in whole: their deliveries skip the read check.
    read_grants: ReadGrants,
    scx: ServerContext,
    limit_log: LogLimit,
    acl_log: LogLimit,
    protocol_log: LogLimit,
    /// Absent persistent sessions, one of which is ended when a new client needs its place.
    offline: Arc<OfflineSessions>,
    /// Client publishes received and refused, deliveries let through.
    messages: Arc<MessageCounts>,
}

impl Policy {
    pub fn new(
        scx: ServerContext,
        access: AccessPolicy,
        logins: Arc<Logins>,
        limits: PolicyLimits,
        offline: Arc<OfflineSessions>,
        messages: Arc<MessageCounts>,
    ) -> Self {
        Policy {
            access,
            logins,
            max_sessions: limits.max_connections,
            max_packet_size: limits.max_packet_size,
            max_queued_messages: limits.max_queued_messages,
            max_topic_levels: limits.max_topic_levels,
            qos2: Mutex::new(Qos2Memory::new(limits.max_connections)),
            read_grants: ReadGrants::default(),
            scx,
            limit_log: LogLimit::new(),
            acl_log: LogLimit::new(),
            protocol_log: LogLimit::new(),
            offline,
            messages,
        }
    }

    fn qos2(&self) -> std::sync::MutexGuard<'_, Qos2Memory> {
        self.qos2
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The engine hook, registered for every hook type it answers (see [`PolicyHook::TYPES`]).
#[derive(Clone)]
pub struct PolicyHook(pub Arc<Policy>);

impl PolicyHook {
    /// The engine hook points this handler must be registered for.
    /// The per-message checks ([`Policy::on_publish`], [`Policy::on_delivery`]) are called by the
    /// per-message dispatcher ([`super::message_hooks::MessageHooks`]).
    pub const TYPES: [rmqtt::hook::Type; 7] = [
        rmqtt::hook::Type::ClientConnect,
        rmqtt::hook::Type::ClientAuthenticate,
        rmqtt::hook::Type::ClientConnected,
        rmqtt::hook::Type::ClientSubscribeCheckAcl,
        rmqtt::hook::Type::MessageDropped,
        rmqtt::hook::Type::ClientDisconnected,
        rmqtt::hook::Type::SessionTerminated,
    ];
}

fn client_of(id: &Id) -> Client<'_> {
    Client {
        user: id.username.as_deref(),
        client_id: &id.client_id,
    }
}

fn peer_of(id: &Id) -> String {
    id.remote_addr
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

fn will_topic(connect: &ConnectInfo) -> Option<String> {
    connect.last_will().map(|will| match will {
        LastWill::V3(w) => w.topic.to_string(),
        LastWill::V5(w) => w.topic.to_string(),
    })
}

/// An id unique to one connection of a client (its engine id is created per CONNECT).
fn connection_of(id: &Id) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.create_time.hash(&mut hasher);
    id.remote_addr.hash(&mut hasher);
    hasher.finish()
}

#[async_trait]
impl Handler for PolicyHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let policy = &self.0;
        match param {
            Parameter::ClientConnect(connect) => {
                policy.on_connect(connect.id()).await;
                (true, acc)
            }
            Parameter::ClientAuthenticate(connect) => policy.on_authenticate(connect).await,
            Parameter::ClientConnected(session) => {
                if let Ok(connect) = session.connect_info().await {
                    policy.read_grants.connected(
                        &session.id.client_id,
                        session.id.username.as_ref(),
                        connect.clean_start(),
                    );
                }
                (true, acc)
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                policy.on_subscribe(session, &subscribe.topic_filter, acc)
            }
            Parameter::MessageDropped(to, _from, publish, reason) => {
                policy.on_dropped(to.as_ref(), publish, reason);
                (true, acc)
            }
            Parameter::ClientDisconnected(session, reason) => {
                log_limit_disconnect(policy, session, reason);
                (true, acc)
            }
            Parameter::SessionTerminated(session, _reason) => {
                policy.qos2().forget(&session.id.client_id);
                policy.read_grants.forget(&session.id.client_id);
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}

impl Policy {
    /// CONNECT: wait for an ending session of the same client id, make room
    /// by ending the session absent the longest when the session table is full (a new client is never
    /// refused for absent ones), and say where operators look when the engine is about to refuse.
    async fn on_connect(&self, id: &Id) {
        wait_for_ending_session(self, id).await;
        if self.sessions_full() && !self.scx.extends.shared().await.exist(&id.client_id) {
            self.offline.make_room(|| self.sessions_full()).await;
        }
        // The engine refuses a new session beyond its session limit with CONNACK 3 right after this hook,
        // logging only at info.
        if self.sessions_full() && !self.scx.extends.shared().await.exist(&id.client_id) {
            self.limit_log.warn("max_connections", || {
                format!(
                    "broker: connection of {:?} from {} refused (server unavailable): max_connections = {} clients are connected",
                    id.client_id.as_ref() as &str,
                    peer_of(id),
                    self.max_sessions
                )
            });
        }
    }

    fn sessions_full(&self) -> bool {
        self.scx.sessions.count().max(0) as usize >= self.max_sessions
    }

    /// Credentials and the will topic (its grammar and the client's right to it).
    async fn on_authenticate(&self, connect: &ConnectInfo) -> ReturnType {
        let id = connect.id();
        let outcome = self
            .logins
            .check(
                id.remote_addr,
                connect.username().map(|u| u.as_ref()),
                connect.password().map(|p| p.as_ref()),
            )
            .await;
        let result = match outcome {
            LoginOutcome::BadCredentials => AuthResult::BadUsernameOrPassword,
            LoginOutcome::NotAuthorized => AuthResult::NotAuthorized,
            LoginOutcome::Accepted => self.admit_accepted(id, connect),
        };
        (false, Some(HookResult::AuthResult(result)))
    }

    fn admit_accepted(&self, id: &Id, connect: &ConnectInfo) -> AuthResult {
        let Some(topic) = will_topic(connect) else {
            return AuthResult::Allow(false, None);
        };
        if let Err(error) = topic::check_name(&topic, self.max_topic_levels) {
            self.protocol_log.warn(&peer_of(id), || {
                format!(
                    "broker: connection of {:?} from {} refused: its will topic {} {error}",
                    id.client_id.as_ref() as &str,
                    peer_of(id),
                    shown_topic(&topic)
                )
            });
            return AuthResult::NotAuthorized;
        }
        if !self.access.may_write(client_of(id), &topic) {
            self.acl_log.warn(&peer_of(id), || {
                format!(
                    "broker: connection of {:?} from {} refused (not authorized): its will topic {} is not writable for {}",
                    id.client_id.as_ref() as &str,
                    peer_of(id),
                    shown_topic(&topic),
                    user_label(id)
                )
            });
            return AuthResult::NotAuthorized;
        }
        AuthResult::Allow(false, None)
    }

    /// SUBSCRIBE: a valid filter no deeper than `max_topic_levels` (reason 0x8F otherwise), which can
    /// match something the client may read (0x87 otherwise).
    fn on_subscribe(&self, session: &Session, filter: &str, acc: Option<HookResult>) -> ReturnType {
        let refusal = if let Err(error) = topic::check_filter(filter, self.max_topic_levels) {
            self.protocol_log.info(&session.id.client_id, || {
                format!(
                    "broker: subscription of {:?} ({}, {}) to {} refused: the filter {error}",
                    session.id.client_id.as_ref() as &str,
                    user_label(&session.id),
                    peer_of(&session.id),
                    shown_topic(filter)
                )
            });
            SubscribeAckReason::TopicFilterInvalid
        } else if self.access.may_subscribe(client_of(&session.id), filter) {
            self.read_grants.subscribed(
                &session.id.client_id,
                session.id.username.as_ref(),
                self.access.may_read_all_of(client_of(&session.id), filter),
            );
            return (true, acc);
        } else {
            self.acl_log.info(&session.id.client_id, || {
                format!(
                    "broker: subscription of {:?} ({}, {}) to {:?} refused: no read right matches",
                    session.id.client_id.as_ref() as &str,
                    user_label(&session.id),
                    peer_of(&session.id),
                    filter
                )
            });
            SubscribeAckReason::NotAuthorized
        };
        (
            false,
            Some(HookResult::SubscribeAclResult(
                SubscribeAclResult::new_failure(refusal),
            )),
        )
    }

    /// PUBLISH: a valid topic name (MQTT 3.1.1: the connection is closed; 5: reason 0x90, see
    /// [`topic_name_invalid`]), the write right (dropped, "not authorized" on MQTT 5), and exactly-once
    /// for re-sent QoS 2.
    pub(super) fn on_publish(
        &self,
        session: &Session,
        publish: &rmqtt::types::Publish,
        acc: Option<HookResult>,
    ) -> PublishCheck {
        self.messages.received_one();
        if let Some(HookResult::PublishAclResult(earlier)) = &acc {
            if earlier.is_rejected() {
                return PublishCheck::Refuse(acc);
            }
        }
        if let Err(error) = topic::check_name(&publish.topic, self.max_topic_levels) {
            self.messages.refused_one();
            self.protocol_log.warn(&session.id.client_id, || {
                format!(
                    "broker: publish of {:?} ({}, {}) refused: the topic {} {error}",
                    session.id.client_id.as_ref() as &str,
                    user_label(&session.id),
                    peer_of(&session.id),
                    shown_topic(&publish.topic)
                )
            });
            return PublishCheck::TopicNameInvalid;
        }
        if !self
            .access
            .may_write(client_of(&session.id), &publish.topic)
        {
            self.messages.refused_one();
            self.acl_log.info(&session.id.client_id, || {
                format!(
                    "broker: publish of {:?} ({}, {}) to {:?} dropped: not writable",
                    session.id.client_id.as_ref() as &str,
                    user_label(&session.id),
                    peer_of(&session.id),
                    publish.topic.as_ref() as &str
                )
            });
            // Reason code 0x87 without a reason string: strict clients (the Paho test client) refuse
            // PUBACKs with properties.
            let mut result = PublishAclResult::rejected(false, None);
            result.0.reason_string = None;
            return PublishCheck::Refuse(Some(HookResult::PublishAclResult(result)));
        }
        if publish.qos == QoS::ExactlyOnce
            && qos2_verdict(self, session, publish) == Some(Verdict::Resent)
        {
            log::info!(
                "broker: re-sent QoS 2 publish of {:?} to {:?} acknowledged, not delivered again",
                session.id.client_id.as_ref() as &str,
                publish.topic.as_ref() as &str
            );
            let mut result = PublishAclResult::rejected(false, Some(RESENT_QOS2.into()));
            result.0.reason_code = rmqtt::codec::v5::PublishAckReason::PacketIdentifierInUse;
            return PublishCheck::Refuse(Some(HookResult::PublishAclResult(result)));
        }
        PublishCheck::Proceed(acc)
    }

    /// Before every delivery (retained and wills included): the receiver's read right, for a will its
    /// client's write right, and its Maximum Packet Size (`receiver_limit`, from [`receiver_limit`]: a
    /// message too large for it is discarded, [MQTT-3.1.2-25]; the engine's encoder would refuse it and
    /// end the connection).
    pub(super) fn on_delivery(
        &self,
        session: &Session,
        from: &rmqtt::types::From,
        publish: &rmqtt::types::Publish,
        receiver_limit: Option<usize>,
        acc: Option<HookResult>,
    ) -> ReturnType {
        // Decided at SUBSCRIBE for a client whose filters all lie inside its read rules; per message
        // only where a filter overlaps what it may not read.
        let readable = self
            .read_grants
            .covers(&session.id.client_id, session.id.username.as_ref())
            || self.access.may_read(client_of(&session.id), &publish.topic);
        let will_allowed = !matches!(from.typ(), FromType::LastWill)
            || self.access.may_write(client_of(&from.id), &publish.topic);
        if readable && will_allowed {
            if receiver_limit.is_some_and(|limit| publish_remaining_length(publish) > limit) {
                log::debug!(
                    "broker: message on {:?} not delivered to {:?}: larger than its Maximum Packet Size",
                    publish.topic.as_ref() as &str,
                    session.id.client_id.as_ref() as &str
                );
                return (false, Some(HookResult::MessageExpiry));
            }
            self.messages.sent_one();
            return (true, acc);
        }
        log::debug!(
            "broker: message on {:?} not delivered to {:?}: {}",
            publish.topic.as_ref() as &str,
            session.id.client_id.as_ref() as &str,
            if readable {
                "will of a client without write right"
            } else {
                "not readable"
            }
        );
        (false, Some(HookResult::MessageExpiry))
    }

    /// A message the engine dropped for a full queue: say so, rate-limited.
    fn on_dropped(&self, to: Option<&Id>, publish: &rmqtt::types::Publish, reason: &Reason) {
        if !matches!(reason, Reason::MessageQueueFull) {
            return;
        }
        let client = to.map_or_else(String::new, |id| {
            format!("{:?} ({})", id.client_id.as_ref() as &str, peer_of(id))
        });
        self.limit_log.warn(&format!("queue {client}"), || {
            format!(
                "broker: message on {:?} dropped for {client}: its queue is full (max_queued_messages = {}); the client reads too slowly or is away",
                publish.topic.as_ref() as &str,
                self.max_queued_messages
            )
        });
    }
}

/// What the policy answers to a client's publish ([`Policy::on_publish`]).
pub(super) enum PublishCheck {
    /// Allowed: on to the next part, with the result so far.
    Proceed(Option<HookResult>),
    /// Refused with this result: the chain stops here.
    Refuse(Option<HookResult>),
    /// Refused for an invalid topic name: the answer depends on the client's protocol
    /// ([`topic_name_invalid_for`]).
    TopicNameInvalid,
}

/// The refusal of a publish whose topic name is invalid, for a client connected with `info`: MQTT
/// 3.1.1 (or unknown) closes the connection, MQTT 5 answers reason 0x90.
pub(super) fn topic_name_invalid_for(info: Option<&ConnectInfo>) -> ReturnType {
    let v3 = !matches!(info, Some(ConnectInfo::V5(..)));
    let mut result = PublishAclResult::rejected(v3, Some("topic name invalid".into()));
    result.0.reason_code = rmqtt::codec::v5::PublishAckReason::TopicNameInvalid;
    (false, Some(HookResult::PublishAclResult(result)))
}

/// The largest remaining length of a PUBLISH the receiver takes: the Maximum Packet Size an MQTT 5
/// receiver announced, as the engine's encoder counts (the maximum less 5); `None` for no limit.
pub(super) async fn receiver_limit(session: &Session) -> Option<usize> {
    // The engine's own sessions hold their connect info (patches/rmqtt/0017): no boxed call per
    // delivery then.
    if let Some(info) = session.connect_info_at_hand() {
        return max_packet_size(info);
    }
    max_packet_size(session.connect_info().await.ok()?.as_ref())
}

/// The largest remaining length a client's MQTT 5 CONNECT allows in a PUBLISH sent to it.
pub(super) fn max_packet_size(info: &ConnectInfo) -> Option<usize> {
    let ConnectInfo::V5(_, connect) = info else {
        return None;
    };
    let max = connect.max_packet_size?.get() as usize;
    Some(if max > 5 { max - 5 } else { max })
}

/// The remaining length of `publish` as sent to an MQTT 5 client, counting the Message Expiry Interval
/// and a Topic Alias the engine may add on the way out.
fn publish_remaining_length(publish: &rmqtt::types::Publish) -> usize {
    let carried = publish.properties.as_ref().map_or(0, |p| {
        p.correlation_data.as_ref().map_or(0, |d| 3 + d.len())
            + p.content_type.as_ref().map_or(0, |t| 3 + t.len())
            + p.response_topic.as_ref().map_or(0, |t| 3 + t.len())
            + if p.is_utf8_payload { 2 } else { 0 }
            + p.subscription_ids
                .iter()
                .map(|id| 1 + varint_len(id.get() as usize))
                .sum::<usize>()
            + p.user_properties
                .iter()
                .map(|(k, v)| 5 + k.len() + v.len())
                .sum::<usize>()
    });
    let properties = carried + 5 + 3;
    let packet_id = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
    2 + publish.topic.len()
        + packet_id
        + varint_len(properties)
        + properties
        + publish.payload.len()
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// A topic as it goes into a log line: at most 80 characters, escaped.
fn shown_topic(topic: &str) -> String {
    let mut shown: String = topic.chars().take(80).collect();
    if shown.len() < topic.len() {
        shown.push_str("...");
    }
    format!("\"{}\"", shown.escape_debug())
}

/// How long a CONNECT waits for an ending session of the same client id to be gone.
const ENDING_SESSION_WAIT: Duration = Duration::from_millis(200);

/// The engine takes a client id over by sending the old session a kick and waiting for its answer; a
/// clean session that is just tearing down (its client reconnected at once) never answers, and the engine
/// refused the new connection with CONNACK 3 (seen 2 in 200 immediate same-id reconnects). So when the
/// session registered under this client id belongs to an earlier connection and ends at disconnect, wait
/// (bounded) until the engine has removed it; then there is nothing to kick.
async fn wait_for_ending_session(policy: &Policy, id: &Id) {
    let deadline = Instant::now() + ENDING_SESSION_WAIT;
    loop {
        let old = policy
            .scx
            .extends
            .shared()
            .await
            .entry(id.clone())
            .session();
        let Some(old) = old else {
            return;
        };
        if old.id == *id || !ends_at_disconnect(&old).await || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn user_label(id: &Id) -> String {
    id.username.as_ref().map_or_else(
        || "anonymous".to_string(),
        |u| format!("user {:?}", u.as_ref() as &str),
    )
}

fn qos2_verdict(
    policy: &Policy,
    session: &Session,
    publish: &rmqtt::types::Publish,
) -> Option<Verdict> {
    let packet_id = publish.packet_id?.get();
    let fp = fingerprint(&publish.topic, &publish.payload);
    Some(policy.qos2().check(
        &session.id.client_id,
        connection_of(&session.id),
        packet_id,
        publish.dup,
        fp,
    ))
}

fn log_limit_disconnect(policy: &Policy, session: &Session, reason: &Reason) {
    let text = reason.to_string();
    let limit = if text.contains("Max size exceeded")
        || text.contains("MaxSizeExceeded")
        || text.contains("max-size")
    {
        format!(
            "a packet exceeded max_packet_size = {} bytes",
            policy.max_packet_size
        )
    } else if matches!(reason, Reason::InflightWindowFull) || text.contains("InflightWindowFull") {
        "too many unacknowledged QoS 2 publishes (max_inflight)".to_string()
    } else {
        log::debug!(
            "broker: {:?} ({}) disconnected: {text}",
            session.id.client_id.as_ref() as &str,
            peer_of(&session.id)
        );
        return;
    };
    policy.limit_log.warn(&peer_of(&session.id), || {
        format!(
            "broker: {:?} ({}, {}) disconnected: {limit}",
            session.id.client_id.as_ref() as &str,
            user_label(&session.id),
            peer_of(&session.id)
        )
    });
}

/// At most one line per key every 10 s, so a misbehaving client cannot flood the journal.
struct LogLimit(RateLimiter);

impl LogLimit {
    fn new() -> Self {
        LogLimit(RateLimiter::new(Duration::from_secs(10)))
    }

    fn warn(&self, key: &str, line: impl FnOnce() -> String) {
        if let Some(suppressed) = self.0.admit(key) {
            log::warn!("{}{}", line(), suppressed_suffix(suppressed));
        }
    }

    fn info(&self, key: &str, line: impl FnOnce() -> String) {
        if let Some(suppressed) = self.0.admit(key) {
            log::info!("{}{}", line(), suppressed_suffix(suppressed));
        }
    }
}
