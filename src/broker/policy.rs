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

/// Reason string of the PUBREC/PUBACK sent for a re-sent QoS 2 publish that is not delivered again.
pub const RESENT_QOS2: &str = "duplicate QoS 2 publish, already delivered";

/// What the hook needs, shared by every hook point.
pub struct Policy {
    pub access: AccessPolicy,
    pub logins: Logins,
    /// Sessions (connected clients plus persistent sessions of absent ones) the engine admits.
    pub max_sessions: usize,
    pub max_packet_size: u32,
    pub max_queued_messages: usize,
    qos2: Mutex<Qos2Memory>,
    scx: ServerContext,
    limit_log: RateLimitedLog,
    acl_log: RateLimitedLog,
}

impl Policy {
    pub fn new(
        scx: ServerContext,
        access: AccessPolicy,
        logins: Logins,
        max_sessions: usize,
        max_packet_size: u32,
        max_queued_messages: usize,
    ) -> Self {
        Policy {
            access,
            logins,
            max_sessions,
            max_packet_size,
            max_queued_messages,
            qos2: Mutex::new(Qos2Memory::new(max_sessions)),
            scx,
            limit_log: RateLimitedLog::new(Duration::from_secs(10)),
            acl_log: RateLimitedLog::new(Duration::from_secs(10)),
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
    pub const TYPES: [rmqtt::hook::Type; 8] = [
        rmqtt::hook::Type::ClientConnect,
        rmqtt::hook::Type::ClientAuthenticate,
        rmqtt::hook::Type::ClientSubscribeCheckAcl,
        rmqtt::hook::Type::MessagePublishCheckAcl,
        rmqtt::hook::Type::MessageExpiryCheck,
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
                let id = connect.id();
                wait_for_ending_session(policy, id).await;
                // The engine refuses a new session beyond `mqtt_max_sessions` with CONNACK 3 right after
                // this hook, logging only at info; say it where operators look.
                let sessions = policy.scx.sessions.count().max(0) as usize;
                if sessions >= policy.max_sessions
                    && !policy.scx.extends.shared().await.exist(&id.client_id)
                {
                    policy.limit_log.warn("max_connections", || {
                        format!(
                            "broker: connection of {:?} from {} refused (server unavailable): max_connections = {} reached (connected clients plus persistent sessions)",
                            id.client_id.as_ref() as &str,
                            peer_of(id),
                            policy.max_sessions
                        )
                    });
                }
                (true, acc)
            }
            Parameter::ClientAuthenticate(connect) => {
                let id = connect.id();
                let outcome = policy
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
                    LoginOutcome::Accepted => match will_topic(connect) {
                        Some(topic) if !policy.access.may_write(client_of(id), &topic) => {
                            log::warn!(peer = peer_of(id).as_str();
                                "broker: connection of {:?} from {} refused (not authorized): its will topic {topic:?} is not writable for {}",
                                id.client_id.as_ref() as &str, peer_of(id), user_label(id));
                            AuthResult::NotAuthorized
                        }
                        _ => AuthResult::Allow(false, None),
                    },
                };
                (false, Some(HookResult::AuthResult(result)))
            }
            Parameter::ClientSubscribeCheckAcl(session, subscribe) => {
                if policy
                    .access
                    .may_subscribe(client_of(&session.id), &subscribe.topic_filter)
                {
                    return (true, acc);
                }
                policy.acl_log.info(&session.id.client_id, || {
                    format!(
                        "broker: subscription of {:?} ({}, {}) to {:?} refused: no read right matches",
                        session.id.client_id.as_ref() as &str,
                        user_label(&session.id),
                        peer_of(&session.id),
                        subscribe.topic_filter.as_ref() as &str
                    )
                });
                (
                    false,
                    Some(HookResult::SubscribeAclResult(
                        SubscribeAclResult::new_failure(SubscribeAckReason::NotAuthorized),
                    )),
                )
            }
            Parameter::MessagePublishCheckAcl(session, publish) => {
                if let Some(HookResult::PublishAclResult(earlier)) = &acc {
                    if earlier.is_rejected() {
                        return (false, acc);
                    }
                }
                if !policy
                    .access
                    .may_write(client_of(&session.id), &publish.topic)
                {
                    policy.acl_log.info(&session.id.client_id, || {
                        format!(
                            "broker: publish of {:?} ({}, {}) to {:?} dropped: not writable",
                            session.id.client_id.as_ref() as &str,
                            user_label(&session.id),
                            peer_of(&session.id),
                            publish.topic.as_ref() as &str
                        )
                    });
                    return (
                        false,
                        Some(HookResult::PublishAclResult(PublishAclResult::rejected(
                            false,
                            Some("not authorized".into()),
                        ))),
                    );
                }
                if publish.qos == QoS::ExactlyOnce {
                    if let Some(verdict) = qos2_verdict(policy, session, publish) {
                        if verdict == Verdict::Resent {
                            log::info!(
                                "broker: re-sent QoS 2 publish of {:?} to {:?} acknowledged, not delivered again",
                                session.id.client_id.as_ref() as &str,
                                publish.topic.as_ref() as &str
                            );
                            let mut result =
                                PublishAclResult::rejected(false, Some(RESENT_QOS2.into()));
                            result.0.reason_code =
                                rmqtt::codec::v5::PublishAckReason::PacketIdentifierInUse;
                            return (false, Some(HookResult::PublishAclResult(result)));
                        }
                    }
                }
                (true, acc)
            }
            Parameter::MessageExpiryCheck(session, from, publish) => {
                let readable = policy
                    .access
                    .may_read(client_of(&session.id), &publish.topic);
                let will_allowed = !matches!(from.typ(), FromType::LastWill)
                    || policy.access.may_write(client_of(&from.id), &publish.topic);
                if readable && will_allowed {
                    (true, acc)
                } else {
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
            }
            Parameter::MessageDropped(to, _from, publish, reason) => {
                if matches!(reason, Reason::MessageQueueFull) {
                    let client = to.as_ref().map_or_else(String::new, |id| {
                        format!("{:?} ({})", id.client_id.as_ref() as &str, peer_of(id))
                    });
                    policy.limit_log.warn("queue", || {
                        format!(
                            "broker: message on {:?} dropped for {client}: its queue is full (max_queued_messages = {}); the client reads too slowly or is away",
                            publish.topic.as_ref() as &str,
                            policy.max_queued_messages
                        )
                    });
                }
                (true, acc)
            }
            Parameter::ClientDisconnected(session, reason) => {
                log_limit_disconnect(policy, session, reason);
                (true, acc)
            }
            Parameter::SessionTerminated(session, _reason) => {
                policy.qos2().forget(&session.id.client_id);
                (true, acc)
            }
            _ => (true, acc),
        }
    }
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

/// True when the session is discarded once its connection ends (3.1.1 clean session, 5.0 expiry 0).
async fn ends_at_disconnect(session: &Session) -> bool {
    match session.connect_info().await {
        Ok(info) => match info.as_ref() {
            ConnectInfo::V3(_, connect) => connect.clean_session,
            ConnectInfo::V5(..) => session.fitter.session_expiry_interval(None).is_zero(),
        },
        Err(_) => true,
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
    let limit = if text.contains("MaxSizeExceeded") || text.contains("max-size") {
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
    log::warn!(peer = peer_of(&session.id).as_str();
        "broker: {:?} ({}, {}) disconnected: {limit}",
        session.id.client_id.as_ref() as &str, user_label(&session.id), peer_of(&session.id));
}

/// At most one line per key per interval, so a misbehaving client cannot flood the journal.
struct RateLimitedLog {
    interval: Duration,
    last: Mutex<std::collections::HashMap<String, (Instant, u64)>>,
}

impl RateLimitedLog {
    const MAX_KEYS: usize = 1024;

    fn new(interval: Duration) -> Self {
        RateLimitedLog {
            interval,
            last: Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Returns how many lines were suppressed since the last one, or None to suppress this one.
    fn admit(&self, key: &str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.len() >= Self::MAX_KEYS && !last.contains_key(key) {
            let interval = self.interval;
            last.retain(|_, (at, _)| now.duration_since(*at) < interval);
            if last.len() >= Self::MAX_KEYS {
                return None;
            }
        }
        match last.get_mut(key) {
            Some((at, suppressed)) if now.duration_since(*at) < self.interval => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                last.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }

    fn warn(&self, key: &str, line: impl FnOnce() -> String) {
        if let Some(suppressed) = self.admit(key) {
            log::warn!("{}{}", line(), suffix(suppressed));
        }
    }

    fn info(&self, key: &str, line: impl FnOnce() -> String) {
        if let Some(suppressed) = self.admit(key) {
            log::info!("{}{}", line(), suffix(suppressed));
        }
    }
}

fn suffix(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar lines suppressed)")
    }
}
