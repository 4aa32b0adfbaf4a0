//! The addresses a command source has heard a frame from (since the gateway started, or before: the
//! router adds the devices whose retained state survived a restart): only a configured `[[device]]` or
//! a device heard this way gets a command queue, so a client cannot fill a source's queues with made-up
//! names. The set is bounded ([`MAX_HEARD`] addresses per source): past it the
//! address heard the longest ago is forgotten (counted), and that device is commandable again once it
//! sends its next frame. Pure: no clock, no IO, no logging.

use std::collections::{HashMap, VecDeque};

/// The most addresses one source remembers (as many as the device registry tracks by default).
pub const MAX_HEARD: usize = crate::devices::DEFAULT_MAX_DEVICES;

/// Recently heard addresses, the one heard the longest ago forgotten first.
#[derive(Debug)]
pub struct HeardAddresses {
    capacity: usize,
    /// Address -> the stamp of its latest hearing.
    latest: HashMap<String, u64>,
    /// Hearings in order; an entry whose stamp is not its address's latest is stale and skipped.
    order: VecDeque<(u64, String)>,
    next_stamp: u64,
    forgotten: u64,
}

impl Default for HeardAddresses {
    fn default() -> Self {
        Self::with_capacity(MAX_HEARD)
    }
}

impl HeardAddresses {
    /// A set remembering at most `capacity` addresses (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        HeardAddresses {
            capacity: capacity.max(1),
            latest: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            forgotten: 0,
        }
    }

    /// A frame from `address` was heard; returns how many addresses this forgot (0 or 1).
    pub fn insert(&mut self, address: &str) -> u64 {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let fresh = self.latest.insert(address.to_string(), stamp).is_none();
        self.order.push_back((stamp, address.to_string()));
        let mut forgotten = 0;
        if fresh && self.latest.len() > self.capacity {
            while let Some((stamp, oldest)) = self.order.pop_front() {
                if self.latest.get(&oldest) == Some(&stamp) {
                    self.latest.remove(&oldest);
                    forgotten = 1;
                    break;
                }
            }
        }
        // Stale entries of addresses heard again: compact before they outnumber the live ones.
        if self.order.len() > 2 * self.capacity {
            let latest = &self.latest;
            self.order
                .retain(|(stamp, address)| latest.get(address) == Some(stamp));
        }
        self.forgotten += forgotten;
        forgotten
    }

    /// Whether a frame from `address` was heard (and not forgotten since).
    pub fn contains(&self, address: &str) -> bool {
        self.latest.contains_key(address)
    }

    /// Addresses forgotten to stay within the bound, since the start.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_heard_the_longest_ago_is_forgotten_first() {
        let mut heard = HeardAddresses::with_capacity(2);
        assert_eq!(heard.insert("1"), 0);
        assert_eq!(heard.insert("2"), 0);
        // Hearing 1 again makes 2 the oldest.
        assert_eq!(heard.insert("1"), 0);
        assert_eq!(heard.insert("3"), 1);
        assert!(heard.contains("1") && heard.contains("3"));
        assert!(!heard.contains("2"));
        assert_eq!(heard.forgotten(), 1);
        assert_eq!(heard.len(), 2);
    }

    #[test]
    fn repeated_hearings_stay_bounded() {
        let mut heard = HeardAddresses::with_capacity(4);
        for i in 0..10_000 {
            heard.insert(&(i % 3).to_string());
            assert!(heard.order.len() <= 2 * 4 + 1);
        }
        assert_eq!(heard.len(), 3);
        assert_eq!(heard.forgotten(), 0);
        for i in 0..100 {
            heard.insert(&format!("made-up-{i}"));
        }
        assert_eq!(heard.len(), 4);
        assert_eq!(heard.forgotten(), 99);
        assert!(heard.order.len() <= 2 * 4 + 1);
    }
}
