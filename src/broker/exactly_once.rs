//! Exactly-once for QoS 2 publishes re-sent across a reconnect. The engine remembers which QoS 2 packet ids
//! it has accepted only for the life of one connection; a client whose connection dropped before it saw
//! PUBREC re-sends the PUBLISH (DUP set, same packet id) on its next connection, and the engine delivered
//! it a second time. This module remembers, per client id, the packet ids and content fingerprints of the
//! QoS 2 publishes it accepted, and recognises such a re-send. It decides only "new or re-sent"; the hook
//! acknowledges a re-send without delivering it. It never sees sockets or topics' rights.
//!
//! Bounds: per client the last [`RECORDS_PER_CLIENT`] accepted publishes (a client cannot have more
//! unreleased QoS 2 publishes than the inflight window), at most `max_clients` clients (new clients are not
//! recorded once full); a client's records are dropped when its session ends.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// Accepted publishes remembered per client.
pub const RECORDS_PER_CLIENT: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    packet_id: u16,
    fingerprint: u64,
    connection: u64,
}

/// Whether a QoS 2 publish is to be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    New,
    /// Already accepted on an earlier connection: acknowledge, do not deliver.
    Resent,
}

/// Accepted QoS 2 publishes per client id.
#[derive(Debug)]
pub struct Qos2Memory {
    max_clients: usize,
    by_client: HashMap<String, VecDeque<Record>>,
}

/// A stable fingerprint of a publish's topic and payload.
pub fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    topic.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish()
}

impl Qos2Memory {
    pub fn new(max_clients: usize) -> Self {
        Qos2Memory {
            max_clients,
            by_client: HashMap::new(),
        }
    }

    /// Classifies a QoS 2 publish from `client_id` arriving on `connection` (an id unique per connection)
    /// and remembers it when new.
    pub fn check(
        &mut self,
        client_id: &str,
        connection: u64,
        packet_id: u16,
        dup: bool,
        fingerprint: u64,
    ) -> Verdict {
        if dup {
            let resent = self.by_client.get(client_id).is_some_and(|records| {
                records.iter().any(|r| {
                    r.packet_id == packet_id
                        && r.fingerprint == fingerprint
                        && r.connection != connection
                })
            });
            if resent {
                return Verdict::Resent;
            }
        }
        if !self.by_client.contains_key(client_id) && self.by_client.len() >= self.max_clients {
            return Verdict::New;
        }
        let records = self.by_client.entry(client_id.to_string()).or_default();
        records.retain(|r| r.packet_id != packet_id);
        if records.len() >= RECORDS_PER_CLIENT {
            records.pop_front();
        }
        records.push_back(Record {
            packet_id,
            fingerprint,
            connection,
        });
        Verdict::New
    }

    /// Drops everything remembered for `client_id` (its session ended).
    pub fn forget(&mut self, client_id: &str) {
        self.by_client.remove(client_id);
    }

    pub fn clients(&self) -> usize {
        self.by_client.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resend_on_a_new_connection_is_recognised() {
        let mut memory = Qos2Memory::new(10);
        let fp = fingerprint("a/b", b"1");
        assert_eq!(memory.check("c1", 1, 7, false, fp), Verdict::New);
        assert_eq!(memory.check("c1", 2, 7, true, fp), Verdict::Resent);
        assert_eq!(
            memory.check("c1", 2, 7, true, fp),
            Verdict::Resent,
            "again after another drop"
        );
    }

    #[test]
    fn same_id_with_other_content_or_without_dup_is_new() {
        let mut memory = Qos2Memory::new(10);
        let fp = fingerprint("a/b", b"1");
        memory.check("c1", 1, 7, false, fp);
        assert_eq!(
            memory.check("c1", 2, 7, true, fingerprint("a/b", b"2")),
            Verdict::New
        );
        assert_eq!(memory.check("c1", 2, 8, false, fp), Verdict::New);
        assert_eq!(
            memory.check("c2", 2, 8, true, fp),
            Verdict::New,
            "other client"
        );
        assert_eq!(
            memory.check("c1", 2, 8, true, fp),
            Verdict::New,
            "same connection: the engine's job"
        );
    }

    #[test]
    fn bounded_and_forgotten() {
        let mut memory = Qos2Memory::new(2);
        let fp = fingerprint("t", b"");
        memory.check("a", 1, 1, false, fp);
        memory.check("b", 1, 1, false, fp);
        memory.check("c", 1, 1, false, fp);
        assert_eq!(memory.clients(), 2);
        for id in 0..1000u16 {
            memory.check("a", 1, id, false, fp);
        }
        assert_eq!(memory.by_client["a"].len(), RECORDS_PER_CLIENT);
        memory.forget("a");
        assert_eq!(memory.check("a", 2, 999, true, fp), Verdict::New);
    }
}
