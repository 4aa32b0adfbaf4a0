//! The heard list: senders a source receives but does not publish (a neighbour's weather station, a
//! sensor without a `[[device]]` on a source with `devices = "configured"`), so a user can find the
//! address of their own and name it. Kept per source, newest first, at most [`MAX_PER_SOURCE`] senders
//! each (the one heard the longest ago is forgotten first), and published retained as one JSON object on
//! `{base}/gateway/heard`: `{"<source>": [{"address", "count", "last_seen", "rssi"}, ...]}`.
//! Any source that names its senders itself (rtl_433, Bluetooth LE) feeds it. Pure: time is passed in;
//! it never publishes, never logs.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

use serde_json::{json, Map, Value as Json};

use crate::publish::format_last_seen;

/// Senders remembered per source.
pub const MAX_PER_SOURCE: usize = 50;

/// One sender heard.
#[derive(Debug, Clone, PartialEq)]
struct Sender {
    address: String,
    count: u64,
    last_seen: SystemTime,
    rssi: Option<f64>,
}

/// The senders heard per source; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeardList {
    sources: BTreeMap<String, VecDeque<Sender>>,
    /// Whether anything changed since [`HeardList::take_changed`] was last called.
    changed: bool,
}

impl HeardList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// `address` was heard on `source` at `at`, with `rssi` (dBm) when the receiver measured it: it
    /// moves to the front with its count raised, or enters at the front (forgetting the oldest sender
    /// of a full source).
    pub fn heard(&mut self, source: &str, address: &str, rssi: Option<f64>, at: SystemTime) {
        let senders = match self.sources.get_mut(source) {
            Some(senders) => senders,
            None => self.sources.entry(source.to_string()).or_default(),
        };
        let mut sender = senders
            .iter()
            .position(|s| s.address == address)
            .and_then(|index| senders.remove(index))
            .unwrap_or_else(|| Sender {
                address: address.to_string(),
                count: 0,
                last_seen: at,
                rssi: None,
            });
        sender.count = sender.count.saturating_add(1);
        sender.last_seen = at;
        sender.rssi = rssi.filter(|r| r.is_finite()).or(sender.rssi);
        senders.push_front(sender);
        senders.truncate(MAX_PER_SOURCE);
        self.changed = true;
    }

    /// Whether the list changed since the last call (and resets that).
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Senders remembered for `source`.
    pub fn len(&self, source: &str) -> usize {
        self.sources.get(source).map_or(0, VecDeque::len)
    }

    /// The JSON of `{base}/gateway/heard`.
    pub fn to_json(&self) -> Json {
        let mut object = Map::new();
        for (source, senders) in &self.sources {
            let list: Vec<Json> = senders
                .iter()
                .map(|s| {
                    json!({
                        "address": s.address,
                        "count": s.count,
                        "last_seen": format_last_seen(s.last_seen),
                        "rssi": s.rssi,
                    })
                })
                .collect();
            object.insert(source.clone(), Json::Array(list));
        }
        Json::Object(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + seconds)
    }

    #[test]
    fn newest_first_with_counts_and_the_last_rssi() {
        let mut list = HeardList::new();
        list.heard("rf", "Acurite-Tower/1/A", Some(-80.5), at(0));
        list.heard("rf", "Nexus-TH/91/1", None, at(1));
        list.heard("rf", "Acurite-Tower/1/A", Some(-70.0), at(2));
        list.heard("rf", "Acurite-Tower/1/A", None, at(3));
        assert!(list.take_changed());
        assert!(!list.take_changed());
        let json = list.to_json();
        let rf = json["rf"].as_array().unwrap();
        assert_eq!(rf.len(), 2);
        assert_eq!(rf[0]["address"], "Acurite-Tower/1/A");
        assert_eq!(rf[0]["count"], 3);
        assert_eq!(rf[0]["rssi"], -70.0);
        assert_eq!(rf[0]["last_seen"], format_last_seen(at(3)));
        assert_eq!(rf[1]["address"], "Nexus-TH/91/1");
        assert_eq!(rf[1]["rssi"], Json::Null);
    }

    #[test]
    fn bounded_per_source_forgetting_the_oldest() {
        let mut list = HeardList::new();
        for i in 0..(MAX_PER_SOURCE as u64 + 10) {
            list.heard("rf", &format!("m/{i}"), Some(-90.0), at(i));
        }
        list.heard("ble", "aa:bb", None, at(0));
        assert_eq!(list.len("rf"), MAX_PER_SOURCE);
        assert_eq!(list.len("ble"), 1);
        let json = list.to_json();
        let rf = json["rf"].as_array().unwrap();
        assert_eq!(rf[0]["address"], format!("m/{}", MAX_PER_SOURCE + 9));
        assert_eq!(rf[MAX_PER_SOURCE - 1]["address"], "m/10");
    }
}
