//! The publish gate: the one hook through which every message that clients publish passes on its way into
//! the broker, after the policy hook has decided it may be published. It copies what is let through to the
//! tap (the uplink's input): client publishes the policy allowed, and wills whose client may write their
//! topic (the same rule the delivery check applies). It never changes a message and never blocks: the tap
//! is an unbounded channel drained by the spool writer.

use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{FromType, Publish};
use tokio::sync::mpsc;

use super::acl::Client;
use super::policy::Policy;
use crate::model::Message;

/// Where published messages are copied to.
#[derive(Clone)]
pub struct Tap(Option<mpsc::UnboundedSender<Message>>);

impl Tap {
    pub fn new(sender: Option<mpsc::UnboundedSender<Message>>) -> Self {
        Tap(sender)
    }

    /// Copies a message to the tap; a closed tap (uplink stopped) is ignored.
    pub fn offer(&self, publish: &Publish) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(to_message(publish));
        }
    }

    pub fn offer_message(&self, message: &Message) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(message.clone());
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
