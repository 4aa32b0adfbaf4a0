//! Repeats: most 433 MHz sensors send each reading two to six times in a row so that one gets through,
//! and rtl_433 prints every copy it decodes. The same sender with the same fields (reception metadata
//! aside) within `dedup_window` of the first copy is one reading. Pure: time is passed in; the table is
//! bounded ([`MAX_SENDERS`]) and forgets senders outside the window first.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::line::METADATA_FIELDS;
use crate::model::Value;

/// Senders remembered at most; beyond them the table keeps only senders inside the window.
pub const MAX_SENDERS: usize = 4096;

/// The last reading of each sender: its fields' hash and when its first copy arrived.
#[derive(Debug)]
pub struct Repeats {
    window: Duration,
    last: HashMap<String, (u64, Instant)>,
}

impl Repeats {
    /// Copies within `window` of the first are repeats (`Duration::ZERO`: nothing is).
    pub fn new(window: Duration) -> Self {
        Repeats {
            window,
            last: HashMap::new(),
        }
    }

    /// Whether this reading of `sender` repeats its last one; if not, it becomes the last one.
    pub fn is_repeat(&mut self, sender: &str, fields: &[(String, Value)], now: Instant) -> bool {
        let hash = fields_hash(fields);
        if let Some((last_hash, first_at)) = self.last.get(sender) {
            if *last_hash == hash && now.saturating_duration_since(*first_at) < self.window {
                return true;
            }
        }
        if self.last.len() >= MAX_SENDERS && !self.last.contains_key(sender) {
            let window = self.window;
            self.last
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < window);
            if self.last.len() >= MAX_SENDERS {
                self.last.clear();
            }
        }
        self.last.insert(sender.to_string(), (hash, now));
        false
    }
}

fn fields_hash(fields: &[(String, Value)]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for (name, value) in fields {
        if METADATA_FIELDS.contains(&name.as_str()) {
            continue;
        }
        name.hash(&mut hasher);
        value.to_plain_text().hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(temperature: f64, rssi: f64) -> Vec<(String, Value)> {
        vec![
            ("temperature_C".to_string(), Value::Float(temperature)),
            ("rssi".to_string(), Value::Float(rssi)),
        ]
    }

    #[test]
    fn copies_within_the_window_are_one_reading() {
        let start = Instant::now();
        let mut repeats = Repeats::new(Duration::from_secs(2));
        assert!(!repeats.is_repeat("a", &fields(21.5, -70.0), start));
        // Another copy, another signal strength: a repeat.
        assert!(repeats.is_repeat(
            "a",
            &fields(21.5, -72.0),
            start + Duration::from_millis(300)
        ));
        // Another sender with the same fields is not.
        assert!(!repeats.is_repeat("b", &fields(21.5, -70.0), start));
        // Another value is a new reading; the same value after the window too.
        assert!(!repeats.is_repeat("a", &fields(21.6, -70.0), start + Duration::from_secs(1)));
        assert!(!repeats.is_repeat("a", &fields(21.6, -70.0), start + Duration::from_secs(3)));
        let mut off = Repeats::new(Duration::ZERO);
        assert!(!off.is_repeat("a", &fields(1.0, 0.0), start));
        assert!(!off.is_repeat("a", &fields(1.0, 0.0), start));
    }

    #[test]
    fn the_table_stays_bounded() {
        let start = Instant::now();
        let mut repeats = Repeats::new(Duration::from_secs(2));
        for i in 0..(MAX_SENDERS * 2) {
            repeats.is_repeat(&format!("s{i}"), &fields(1.0, 0.0), start);
        }
        assert!(repeats.last.len() <= MAX_SENDERS);
    }
}
