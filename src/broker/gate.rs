//! The publish gate: the one hook through which every message that clients publish passes on its way into
//! the broker, after the policy hook has decided it may be published. It copies what is let through to the
//! tap (the uplink's input): client publishes the policy allowed, and wills whose client may write their
//! topic (the same rule the delivery check applies). It never changes a message and never blocks: the tap
//! carries only messages that one of its filters (the uplink's forward rules) selects, over a bounded
//! channel; a message that finds it full is dropped and counted ([`Tap::dropped`]). The uplink drains it
//! into the spool as fast as it can append, so a drop means the disk could not keep up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// The engine hook: registered for `MessagePublishCheckAcl` (client publishes, after the policy) and
/// `MessagePublish` (to see client wills, which the engine publishes without an ACL check).
pub struct PublishGate {
    tap: Tap,
    policy: Arc<Policy>,
}

impl PublishGate {
    pub fn new(tap: Tap, policy: Arc<Policy>) -> Self {
        PublishGate { tap, policy }
    }
}

#[async_trait]
impl Handler for PublishGate {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::MessagePublishCheckAcl(_session, publish) => {
                let allowed = match &acc {
                    Some(HookResult::PublishAclResult(result)) => result.is_allow(),
                    _ => true,
                };
                if allowed {
                    self.tap.offer(publish);
                }
                (true, acc)
            }
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
