//! The one engine handler for the two hook points every message passes: a client's publish
//! (`MessagePublishCheckAcl`) and each delivery to a subscriber (`MessageExpiryCheck`). The engine runs
//! each registered handler of a hook type as its own boxed future, so the parts that answer these two
//! points are not handlers of their own: [`MessageHooks`] calls them as plain functions, in the order
//! their priorities gave them before, and the first refusal ends the chain as it did. It answers at
//! once (`Handler::hook_now`) when the session holds its connect info, as the engine's own sessions
//! do, so that the engine runs both checks without a future. A publish: the command tap's copy of a
//! command the policy is about to refuse ([`RefusedCommands`]), the policy ([`Policy::on_publish`]),
//! then for what it let through the uplink's and the command router's taps
//! ([`PublishGate::offer_allowed`]) and the watches ([`Watches`]). A delivery: the backlog's and the
//! retained pacer's counts ([`DeliveryCountHook::delivered`], for every delivery, also those the policy
//! then refuses), then the policy ([`Policy::on_delivery`]). It decides nothing itself.

use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::session::Session;
use rmqtt::types::{From, Publish};

use super::backlog::Backlog;
use super::delivery_counts::DeliveryCountHook;
use super::gate::{PublishGate, RefusedCommands};
use super::pacing::RetainedPacer;
use super::policy::{self, Policy, PublishCheck};
use super::watch::Watches;

/// The parts of the per-message checks, in their order.
pub(super) struct MessageHooks {
    pub(super) refused_commands: RefusedCommands,
    pub(super) policy: Arc<Policy>,
    pub(super) gate: PublishGate,
    pub(super) watches: Arc<Watches>,
    pub(super) backlog: DeliveryCountHook<Backlog>,
    pub(super) pacer: DeliveryCountHook<RetainedPacer>,
}

impl MessageHooks {
    /// The engine hook points this handler must be registered for (and no other handler).
    pub(super) const TYPES: [Type; 2] = [Type::MessagePublishCheckAcl, Type::MessageExpiryCheck];

    /// A client's publish; `None` when its topic name is invalid, whose refusal depends on the
    /// client's protocol ([`policy::topic_name_invalid_for`]), so that only then is its connect info
    /// looked up.
    fn publish_check(
        &self,
        session: &Session,
        publish: &Publish,
        acc: Option<HookResult>,
    ) -> Option<ReturnType> {
        self.refused_commands.offer_if_refused(session, publish);
        let acc = match self.policy.on_publish(session, publish, acc) {
            PublishCheck::Proceed(acc) => acc,
            PublishCheck::Refuse(acc) => return Some((false, acc)),
            PublishCheck::TopicNameInvalid => return None,
        };
        let allowed = match &acc {
            Some(HookResult::PublishAclResult(result)) => result.is_allow(),
            _ => true,
        };
        if allowed {
            self.gate.offer_allowed(session, publish);
            self.watches.offer(publish);
        }
        Some((true, acc))
    }

    /// A delivery to `session`'s client, whose largest PUBLISH is `receiver_limit`.
    fn delivery_check(
        &self,
        session: &Session,
        from: &From,
        publish: &Publish,
        acc: Option<HookResult>,
        receiver_limit: Option<usize>,
    ) -> ReturnType {
        self.backlog.delivered(&session.id.client_id, publish);
        self.pacer.delivered(&session.id.client_id, publish);
        self.policy
            .on_delivery(session, from, publish, receiver_limit, acc)
    }
}

#[async_trait]
impl Handler for MessageHooks {
    /// Both checks at once when the session holds its connect info, as the engine's own sessions do
    /// (`patches/rmqtt/0019-hooks-answered-at-once.patch`): no boxed future per message.
    fn hook_now(
        &self,
        param: &Parameter,
        acc: Option<HookResult>,
    ) -> Result<ReturnType, Option<HookResult>> {
        match param {
            Parameter::MessagePublishCheckAcl(session, publish) => {
                match session.connect_info_at_hand() {
                    Some(client) => Ok(self
                        .publish_check(session, publish, acc)
                        .unwrap_or_else(|| policy::topic_name_invalid_for(Some(client)))),
                    None => Err(acc),
                }
            }
            Parameter::MessageExpiryCheck(session, from, publish) => {
                match session.connect_info_at_hand() {
                    Some(client) => {
                        let limit = policy::max_packet_size(client);
                        Ok(self.delivery_check(session, from, publish, acc, limit))
                    }
                    None => Err(acc),
                }
            }
            _ => Ok((true, acc)),
        }
    }

    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::MessagePublishCheckAcl(session, publish) => {
                match self.publish_check(session, publish, acc) {
                    Some(answer) => answer,
                    None => {
                        let client = session.connect_info().await.ok();
                        policy::topic_name_invalid_for(client.as_deref())
                    }
                }
            }
            Parameter::MessageExpiryCheck(session, from, publish) => {
                let limit = policy::receiver_limit(session).await;
                self.delivery_check(session, from, publish, acc, limit)
            }
            _ => (true, acc),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};

    struct Passes;

    #[async_trait::async_trait]
    impl Handler for Passes {
        async fn hook(&self, _param: &Parameter, acc: Option<HookResult>) -> ReturnType {
            (true, acc)
        }
    }

    /// The engine calls a per-message hook (acknowledged, delivered, keep-alive) only for a type
    /// something registered a handler for (`patches/rmqtt/0014-skip-hooks-without-handlers.patch`).
    #[tokio::test]
    async fn the_engine_skips_only_the_hook_types_nobody_handles() {
        let scx = rmqtt::context::ServerContext::new().build().await;
        let hooks = scx.extends.hook_mgr();
        assert!(!hooks.handles(Type::MessageAcked));
        let register = hooks.register();
        register.add(Type::MessageAcked, Box::new(Passes)).await;
        register.start().await;
        assert!(hooks.handles(Type::MessageAcked));
        assert!(!hooks.handles(Type::MessageDelivered));
        assert!(!hooks.handles(Type::ClientKeepalive));
    }

    /// Writes its name down when called, and lets the chain go on or ends it.
    struct Records {
        name: &'static str,
        proceed: bool,
        seen: Arc<Mutex<Vec<&'static str>>>,
    }

    #[async_trait::async_trait]
    impl Handler for Records {
        async fn hook(&self, _param: &Parameter, acc: Option<HookResult>) -> ReturnType {
            self.seen.lock().unwrap().push(self.name);
            (self.proceed, acc)
        }
    }

    /// The engine runs a type's handlers from a list it rebuilds on every change
    /// (`patches/rmqtt/0015-hook-lists-without-locks.patch`): the started ones only, highest priority
    /// first, until one ends the chain; a register's stop takes its handlers out again.
    #[tokio::test]
    async fn handlers_run_by_priority_while_started_until_one_ends_the_chain() {
        let scx = rmqtt::context::ServerContext::new().build().await;
        let hooks = scx.extends.hook_mgr();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = |name, proceed| {
            Box::new(Records {
                name,
                proceed,
                seen: seen.clone(),
            })
        };
        let calls = || async {
            seen.lock().unwrap().clear();
            hooks.before_startup().await;
            seen.lock().unwrap().clone()
        };
        let first = hooks.register();
        first
            .add_priority(Type::BeforeStartup, 10, handler("low", true))
            .await;
        first
            .add_priority(Type::BeforeStartup, 20, handler("high", true))
            .await;
        assert!(calls().await.is_empty(), "added, not started");
        assert!(!hooks.handles(Type::BeforeStartup));

        first.start().await;
        assert!(hooks.handles(Type::BeforeStartup));
        assert_eq!(calls().await, ["high", "low"]);

        let second = hooks.register();
        second
            .add_priority(Type::BeforeStartup, 15, handler("ends", false))
            .await;
        second.start().await;
        assert_eq!(calls().await, ["high", "ends"]);

        second.stop().await;
        assert_eq!(calls().await, ["high", "low"]);
        first.stop().await;
        assert!(calls().await.is_empty());
        assert!(!hooks.handles(Type::BeforeStartup));
    }
}
