//! MQTT 5 shared subscriptions (`$share/{group}/{filter}`): each message matching a group's filter goes
//! to one of the group's subscribers, taken in turn, skipping subscribers whose connection is down while
//! any member is connected.
//!
//! rmqtt 0.24.0 parses `$share/...` only with its `shared-subscription` feature, and then only when the
//! installed `SharedSubscription` says it is supported; its default says no and chooses nobody, so a
//! `$share` filter was refused (MQTT 5 SUBACK 0x87 from our rights check before, 0x9E without it) and
//! nothing was delivered. [`RoundRobin`] is installed instead. Rights are checked on the filter without
//! its `$share/{group}/` prefix (the engine strips it before the subscribe hook). Retained messages are not sent for a
//! shared subscription in MQTT 5 (§4.8.2); the engine sends them anyway, as it does for any
//! subscription, which a group member sees as one retained message per matching topic.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, SharedGroup, SubscriptionIdentifier, SubscriptionOptions,
    TopicName,
};

/// One subscriber of a group as the engine offers it.
type Candidate = (
    NodeId,
    ClientId,
    SubscriptionOptions,
    Option<Vec<SubscriptionIdentifier>>,
    Option<IsOnline>,
);

/// Picks group members in turn (one counter for all groups: fair enough for a gateway's few groups).
#[derive(Default)]
pub struct RoundRobin(AtomicUsize);

fn choose(next: usize, candidates: &[Candidate]) -> Option<(usize, IsOnline)> {
    if candidates.is_empty() {
        return None;
    }
    let start = next % candidates.len();
    (0..candidates.len())
        .map(|step| (start + step) % candidates.len())
        .find(|&index| candidates[index].4 != Some(false))
        .map(|index| (index, true))
        .or(Some((start, false)))
}

#[async_trait]
impl SharedSubscription for RoundRobin {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        _publisher_id: &Id,
        _topic: &TopicName,
        candidates: &[Candidate],
    ) -> Option<(usize, IsOnline)> {
        choose(self.0.fetch_add(1, Ordering::Relaxed), candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, online: bool) -> Candidate {
        (
            1,
            ClientId::from(name.to_string()),
            SubscriptionOptions::default(),
            None,
            Some(online),
        )
    }

    #[test]
    fn members_take_turns_and_absent_ones_are_skipped() {
        let group = [
            candidate("a", true),
            candidate("b", false),
            candidate("c", true),
        ];
        assert_eq!(choose(0, &group), Some((0, true)));
        assert_eq!(choose(1, &group), Some((2, true)));
        assert_eq!(choose(2, &group), Some((2, true)));
        assert_eq!(choose(3, &group), Some((0, true)));
        let away = [candidate("a", false)];
        assert_eq!(choose(5, &away), Some((0, false)));
        assert_eq!(choose(0, &[]), None);
    }
}
