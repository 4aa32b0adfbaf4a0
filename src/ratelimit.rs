//! Rate-limited log lines: at most one line per key per interval, and the next line that gets through says
//! how many were held back (" (N similar lines suppressed)"). Keys are whatever makes lines alike: a
//! client id, a peer address, a log call site. The table is bounded: past [`RateLimiter::MAX_KEYS`] keys,
//! expired ones are dropped, and if none has expired a line with a new key is suppressed (and counted in
//! [`RateLimiter::unkeyed_suppressed`]), so a flood of distinct keys cannot grow memory or the journal.
//! This module decides; it never writes a log line itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A thread-safe per-key limiter.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    keys: HashMap<String, KeyState>,
    unkeyed_suppressed: u64,
}

#[derive(Debug, Clone, Copy)]
struct KeyState {
    last_logged: Instant,
    suppressed: u64,
}

impl RateLimiter {
    /// Keys remembered at most.
    pub const MAX_KEYS: usize = 1024;

    /// At most one line per key every `interval`.
    pub fn new(interval: Duration) -> Self {
        RateLimiter {
            interval,
            state: Mutex::new(State::default()),
        }
    }

    /// `Some(n)`: log this line now, mentioning the `n` lines suppressed since the last one;
    /// `None`: stay quiet (counted).
    pub fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    /// [`RateLimiter::admit`] at a given time.
    pub fn admit_at(&self, key: &str, now: Instant) -> Option<u64> {
        // The table holds plain counters; a panic elsewhere cannot leave it inconsistent.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let interval = self.interval;
        if state.keys.len() >= Self::MAX_KEYS && !state.keys.contains_key(key) {
            state
                .keys
                .retain(|_, k| now.saturating_duration_since(k.last_logged) < interval);
            if state.keys.len() >= Self::MAX_KEYS {
                state.unkeyed_suppressed += 1;
                return None;
            }
        }
        match state.keys.get_mut(key) {
            Some(k) if now.saturating_duration_since(k.last_logged) < interval => {
                k.suppressed += 1;
                None
            }
            Some(k) => {
                let n = k.suppressed;
                *k = KeyState {
                    last_logged: now,
                    suppressed: 0,
                };
                Some(n)
            }
            None => {
                state.keys.insert(
                    key.to_string(),
                    KeyState {
                        last_logged: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// Lines suppressed because the key table was full of keys still within their interval.
    pub fn unkeyed_suppressed(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unkeyed_suppressed
    }
}

/// The text appended to a line that follows `suppressed` held-back ones: empty for 0.
pub fn suppressed_suffix(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar lines suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_the_count() {
        let limiter = RateLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limiter.admit_at("a", t0), Some(0));
        assert_eq!(limiter.admit_at("a", t0 + Duration::from_secs(1)), None);
        assert_eq!(limiter.admit_at("a", t0 + Duration::from_secs(2)), None);
        assert_eq!(limiter.admit_at("b", t0), Some(0), "keys are independent");
        assert_eq!(limiter.admit_at("a", t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(suppressed_suffix(2), " (2 similar lines suppressed)");
        assert_eq!(suppressed_suffix(0), "");
    }

    #[test]
    fn a_flood_of_keys_stays_bounded_and_counted() {
        let limiter = RateLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..(RateLimiter::MAX_KEYS + 500) {
            limiter.admit_at(&i.to_string(), t0);
        }
        assert_eq!(limiter.unkeyed_suppressed(), 500);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(
            limiter.admit_at("new", later),
            Some(0),
            "expired keys make room"
        );
    }
}
