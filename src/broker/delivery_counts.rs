//! The one engine hook behind every per-subscriber delivery count: the [`super::backlog::Backlog`] of
//! fresh forwards and the [`super::pacing::RetainedPacer`] window of streamed retained messages. Each
//! counts messages routed to a subscriber and not yet taken up for delivery; [`DeliveryCountHook`] takes
//! one off when the engine delivers it ([`DeliveryCountHook::delivered`], called by the per-message
//! dispatcher [`super::message_hooks`] before every delivery, also those the policy then refuses) or drops
//! it, and forgets a client id when its session starts or ends (messages left in a closed channel are
//! never reported). What a count holds and which drops release it is the count's own ([`DeliveryCounts`]).

use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::types::{Publish, Reason};

/// A per-subscriber count of messages on their way to the socket.
pub trait DeliveryCounts: Send + Sync + 'static {
    /// Whether `publish`, delivered or dropped, is one this count holds.
    fn holds(publish: &Publish) -> bool;
    /// Whether the engine dropping a held message for `reason` takes it off the count.
    fn released_by_drop(reason: &Reason) -> bool;
    /// One message for `client_id` was delivered or dropped.
    fn release(&self, client_id: &str);
    /// `client_id`'s session started or ended: its count starts again from nothing.
    fn forget(&self, client_id: &str);
}

/// Keeps one [`DeliveryCounts`] true at the engine's hook points.
pub struct DeliveryCountHook<C>(pub Arc<C>);

impl<C> DeliveryCountHook<C> {
    /// The engine hook points this handler must be registered for (deliveries reach it through
    /// [`super::message_hooks::MessageHooks`]).
    pub const TYPES: [rmqtt::hook::Type; 3] = [
        rmqtt::hook::Type::MessageDropped,
        rmqtt::hook::Type::SessionCreated,
        rmqtt::hook::Type::SessionTerminated,
    ];
}

impl<C: DeliveryCounts> DeliveryCountHook<C> {
    /// The engine is about to deliver `publish` to `client_id` (or to drop it there for the policy).
    pub fn delivered(&self, client_id: &str, publish: &Publish) {
        if C::holds(publish) {
            self.0.release(client_id);
        }
    }
}

#[async_trait]
impl<C: DeliveryCounts> Handler for DeliveryCountHook<C> {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::MessageDropped(Some(to), _from, publish, reason)
                if C::holds(publish) && C::released_by_drop(reason) =>
            {
                self.0.release(&to.client_id);
            }
            Parameter::SessionCreated(session) | Parameter::SessionTerminated(session, _) => {
                self.0.forget(&session.id.client_id);
            }
            _ => {}
        }
        (true, acc)
    }
}
