//! The publish gate: the one hook through which every message that clients publish passes on its way into
//! the broker, after the policy hook has decided it may be published. It copies what is let through to the
//! tap (the uplink's input): client publishes the policy allowed, and wills whose client may write their
//! topic (the same rule the delivery check applies). It never changes a message and never blocks: the tap
//! carries only messages that one of its filters (the uplink's forward rules) selects, over a bounded
//! channel; a message that finds it full is dropped and counted ([`Tap::dropped`]). The uplink drains it
//! into the spool as fast as it can append, so a drop means the disk could not keep up.
//!
//! The command tap ([`CommandTap`], filled once by [`Broker::command_tap`](super::Broker::command_tap))
//! carries client publishes on the command topics (`{base}/+/set`, `{base}/+/set/+`) to the command
//! router, with who sent them and their MQTT 5 response topic and correlation data: the ones the policy
//! let through (from [`PublishGate::offer_allowed`]), and the ones it refused for want of the write right
//! (from [`RefusedCommands`], which runs before the policy and changes nothing), so that a refused command
//! gets a `refused` result and a log line naming the client. Bounded like the uplink's tap; what finds it
//! full is dropped and counted ([`CommandTap::dropped`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{FromType, Publish};
use tokio::sync::mpsc;

use super::acl::Client;
use super::policy::Policy;
use crate::model::Message;
use crate::ratelimit::{suppressed_suffix, RateLimiter};

/// Messages the tap holds for the uplink at most.
pub const TAP_CAPACITY: usize = 16_384;

/// The sending end of a tap: which topics it takes, and where they go.
pub struct TapSender {
    sender: mpsc::Sender<Message>,
    filters: Vec<String>,
}

/// A tap that takes what `filters` select, and the uplink's end of it.
pub fn tap(filters: Vec<String>, capacity: usize) -> (TapSender, mpsc::Receiver<Message>) {
    let (sender, receiver) = mpsc::channel(capacity.max(1));
    (TapSender { sender, filters }, receiver)
}

/// Where published messages are copied to.
#[derive(Clone)]
pub struct Tap(Option<Arc<TapInner>>);

struct TapInner {
    sender: mpsc::Sender<Message>,
    filters: Vec<String>,
    dropped: AtomicU64,
    drop_log: RateLimiter,
}

impl Tap {
    pub fn new(sender: Option<TapSender>) -> Self {
        Tap(sender.map(|s| {
            Arc::new(TapInner {
                sender: s.sender,
                filters: s.filters,
                dropped: AtomicU64::new(0),
                drop_log: RateLimiter::new(std::time::Duration::from_secs(10)),
            })
        }))
    }

    /// Copies a message to the tap if a filter selects it.
    pub fn offer(&self, publish: &Publish) {
        if let Some(inner) = &self.0 {
            if inner.selects(&publish.topic) {
                inner.send(to_message(publish));
            }
        }
    }

    pub fn offer_message(&self, message: &Message) {
        if let Some(inner) = &self.0 {
            if inner.selects(&message.topic) {
                inner.send(message.clone());
            }
        }
    }

    /// Messages a filter selected that found the tap full.
    pub fn dropped(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |inner| inner.dropped.load(Ordering::Relaxed))
    }
}

impl TapInner {
    fn selects(&self, topic: &str) -> bool {
        self.filters
            .iter()
            .any(|filter| crate::topic::matches(filter, topic))
    }

    fn send(&self, message: Message) {
        match self.sender.try_send(message) {
            Ok(()) => {}
            // The uplink stopped: nothing is forwarded any more, and its stop is logged where it happens.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = self.drop_log.admit("full") {
                    log::error!(
                        "uplink input full ({TAP_CAPACITY} messages): message on {:?} not forwarded; the spool cannot keep up{}",
                        message.topic,
                        suppressed_suffix(suppressed)
                    );
                }
            }
        }
    }
}

/// Converts the engine's publish into ours.
pub fn to_message(publish: &Publish) -> Message {
    Message {
        topic: publish.topic.to_string(),
        payload: publish.payload.to_vec(),
        qos: publish.qos.value(),
        retain: publish.retain,
    }
}

/// A client's publish on a command topic: what it said, who sent it, and where MQTT 5 asked for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPublish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub client_id: String,
    /// The login name; `None` for an anonymous client.
    pub user: Option<String>,
    /// Whether the client may write the topic; false: the policy dropped the publish for want of the right.
    pub allowed: bool,
    /// The MQTT 5 Response Topic, only when it is a valid topic name the client may write itself (so an
    /// answer there gives it nothing it could not publish on its own).
    pub response_topic: Option<String>,
    /// The MQTT 5 Correlation Data, echoed with the answer.
    pub correlation_data: Option<Vec<u8>>,
}

/// The command router's tap: empty until [`CommandTap::install`], then the filters and the bounded sender.
#[derive(Clone, Default)]
pub struct CommandTap(Arc<OnceLock<CommandTapInner>>);

struct CommandTapInner {
    sender: mpsc::Sender<ClientPublish>,
    filters: Vec<String>,
    dropped: AtomicU64,
    drop_log: RateLimiter,
}

impl CommandTap {
    /// Starts copying publishes on `filters` into a channel of `capacity`; `None` when installed already.
    pub fn install(
        &self,
        filters: Vec<String>,
        capacity: usize,
    ) -> Option<mpsc::Receiver<ClientPublish>> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        self.0
            .set(CommandTapInner {
                sender,
                filters,
                dropped: AtomicU64::new(0),
                drop_log: RateLimiter::new(std::time::Duration::from_secs(10)),
            })
            .ok()
            .map(|()| receiver)
    }

    fn selecting(&self, topic: &str) -> Option<&CommandTapInner> {
        self.0.get().filter(|inner| {
            inner
                .filters
                .iter()
                .any(|filter| crate::topic::matches(filter, topic))
        })
    }

    /// Hands a command that did not come over MQTT (the status page's admins) to the router, like a
    /// client's publish; false when no router listens on that topic or its input is full (counted).
    pub fn inject(&self, message: ClientPublish) -> bool {
        let Some(inner) = self.selecting(&message.topic) else {
            return false;
        };
        match inner.sender.try_send(message) {
            Ok(()) => true,
            Err(_) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Command publishes that found the router's input full.
    pub fn dropped(&self) -> u64 {
        self.0
            .get()
            .map_or(0, |inner| inner.dropped.load(Ordering::Relaxed))
    }

    /// Copies `publish` of `session`'s client to the router if a filter selects its topic.
    fn offer(
        &self,
        policy: &Policy,
        session: &rmqtt::session::Session,
        publish: &Publish,
        allowed: bool,
    ) {
        let Some(inner) = self.selecting(&publish.topic) else {
            return;
        };
        let user = session.id.username.as_deref().map(str::to_string);
        let client = Client {
            user: user.as_deref(),
            client_id: &session.id.client_id,
        };
        let properties = publish.properties.as_ref();
        let response_topic = properties
            .and_then(|p| p.response_topic.as_ref())
            .map(|t| t.to_string())
            .filter(|t| {
                crate::topic::check_name(t, 128).is_ok() && policy.access.may_write(client, t)
            });
        let message = ClientPublish {
            topic: publish.topic.to_string(),
            payload: publish.payload.to_vec(),
            client_id: session.id.client_id.to_string(),
            user,
            allowed,
            response_topic,
            correlation_data: properties
                .and_then(|p| p.correlation_data.as_ref())
                .map(|d| d.to_vec()),
        };
        if let Err(mpsc::error::TrySendError::Full(message)) = inner.sender.try_send(message) {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = inner.drop_log.admit("full") {
                log::warn!(
                    "command input full: command on {:?} from client {:?} dropped{}",
                    message.topic,
                    message.client_id,
                    suppressed_suffix(suppressed)
                );
            }
        }
    }
}

/// The gate: [`PublishGate::offer_allowed`] for client publishes the policy let through (called by the
/// per-message dispatcher, [`super::message_hooks`]), and the engine hook of `WillPublish` (to see
/// client wills, which the engine publishes without an ACL check; a hook the engine runs only for wills,
/// `patches/rmqtt/0016-will-publish-hook.patch`, so that no client publish calls it).
pub struct PublishGate {
    tap: Tap,
    policy: Arc<Policy>,
    commands: CommandTap,
}

impl PublishGate {
    pub fn new(tap: Tap, policy: Arc<Policy>) -> Self {
        PublishGate {
            tap,
            policy,
            commands: CommandTap::default(),
        }
    }

    /// Also copies allowed publishes on command topics to `commands`.
    pub fn with_commands(mut self, commands: CommandTap) -> Self {
        self.commands = commands;
        self
    }

    /// A client publish the policy let through: copied to the uplink's tap and the command tap.
    pub fn offer_allowed(&self, session: &rmqtt::session::Session, publish: &Publish) {
        self.tap.offer(publish);
        self.commands.offer(&self.policy, session, publish, true);
    }
}

/// What sees command publishes the policy is about to refuse: called before the policy (by the
/// per-message dispatcher, [`super::message_hooks`]), it copies those whose client may not write the
/// topic to the command tap (`allowed = false`) and changes nothing.
pub struct RefusedCommands {
    pub commands: CommandTap,
    pub policy: Arc<Policy>,
}

impl RefusedCommands {
    /// `session`'s client published `publish`: copied to the command tap when it is a command the
    /// client may not write.
    pub fn offer_if_refused(&self, session: &rmqtt::session::Session, publish: &Publish) {
        if self.commands.selecting(&publish.topic).is_some() {
            let client = Client {
                user: session.id.username.as_deref(),
                client_id: &session.id.client_id,
            };
            if !self.policy.access.may_write(client, &publish.topic) {
                self.commands.offer(&self.policy, session, publish, false);
            }
        }
    }
}

#[async_trait]
impl Handler for PublishGate {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::MessagePublish(_session, from, publish)
                if matches!(from.typ(), FromType::LastWill) =>
            {
                let writer = Client {
                    user: from.id.username.as_deref(),
                    client_id: &from.id.client_id,
                };
                if self.policy.access.may_write(writer, &publish.topic) {
                    self.tap.offer(publish);
                }
                (true, acc)
            }
            _ => (true, acc),
        }
    }
}
