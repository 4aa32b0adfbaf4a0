//! How many messages went through the embedded broker: PUBLISH packets received from MQTT clients, the
//! ones the policy refused (an invalid topic name, no write right), and PUBLISH packets handed to a
//! subscriber's connection (fresh forwards, retained messages and wills alike, after the receiver's read
//! right). The engine counts none of these itself, so the policy hook, which already runs once per
//! client publish and once per delivery, counts them: one relaxed atomic add each, nothing else. Read by
//! `/metrics` through [`super::Broker::counters`]; never reset while the daemon runs.

use std::sync::atomic::{AtomicU64, Ordering};

/// The broker's message counters (monotonic).
#[derive(Debug, Default)]
pub struct MessageCounts {
    received: AtomicU64,
    refused: AtomicU64,
    sent: AtomicU64,
}

impl MessageCounts {
    /// A client's PUBLISH reached the policy.
    pub fn received_one(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// The policy refused a client's PUBLISH (topic name or write right).
    pub fn refused_one(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The policy let a message go to a subscriber.
    pub fn sent_one(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// PUBLISH packets received from clients so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Client publishes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Messages handed to subscribers so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_count_only_grows_by_its_own_events() {
        let counts = MessageCounts::default();
        counts.received_one();
        counts.received_one();
        counts.refused_one();
        counts.sent_one();
        counts.sent_one();
        counts.sent_one();
        assert_eq!(
            (counts.received(), counts.refused(), counts.sent()),
            (2, 1, 3)
        );
    }
}
