//! How many results of refused commands one client may cause: a token bucket per requester (a burst of
//! [`BURST`], refilled at one per [`REFILL`]), so a client publishing thousands of refused commands gets
//! a few answers and the rest are dropped (counted by the caller). The table is bounded: past
//! [`MAX_KEYS`] requesters, those whose bucket has refilled are forgotten, and if none has, a new
//! requester's result is dropped. Pure: time is passed in.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Results a requester may cause at once.
pub const BURST: u32 = 10;
/// The time one more result is allowed after.
pub const REFILL: Duration = Duration::from_secs(1);
/// Requesters remembered at most.
pub const MAX_KEYS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    /// When the tokens were last counted.
    at: Instant,
}

/// Per-requester result allowance.
#[derive(Debug, Default)]
pub struct ResultThrottle {
    buckets: HashMap<String, Bucket>,
}

impl ResultThrottle {
    /// Whether `requester` may cause one more result at `now` (and takes it).
    pub fn admit(&mut self, requester: &str, now: Instant) -> bool {
        if self.buckets.len() >= MAX_KEYS && !self.buckets.contains_key(requester) {
            self.buckets
                .retain(|_, bucket| refilled(bucket, now) < BURST);
            if self.buckets.len() >= MAX_KEYS {
                return false;
            }
        }
        let bucket = self.buckets.entry(requester.to_string()).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        let gained = whole_refills(bucket, now);
        if gained > 0 {
            bucket.tokens = bucket.tokens.saturating_add(gained).min(BURST);
            // The part of a refill already waited for keeps counting, unless the bucket is full.
            bucket.at = if bucket.tokens == BURST {
                now
            } else {
                bucket.at + REFILL * gained
            };
        }
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }
}

/// Whole refills since the bucket was last counted (at most a burst's worth).
fn whole_refills(bucket: &Bucket, now: Instant) -> u32 {
    let elapsed = now.saturating_duration_since(bucket.at);
    (elapsed.as_millis() / REFILL.as_millis().max(1)).min(u128::from(BURST)) as u32
}

/// The tokens a bucket has at `now`.
fn refilled(bucket: &Bucket, now: Instant) -> u32 {
    bucket
        .tokens
        .saturating_add(whole_refills(bucket, now))
        .min(BURST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill() {
        let t0 = Instant::now();
        let mut throttle = ResultThrottle::default();
        for _ in 0..BURST {
            assert!(throttle.admit("a", t0));
        }
        assert!(!throttle.admit("a", t0));
        assert!(throttle.admit("b", t0), "requesters are independent");
        assert!(!throttle.admit("a", t0 + REFILL / 2));
        assert!(throttle.admit("a", t0 + REFILL));
        assert!(!throttle.admit("a", t0 + REFILL + REFILL / 2));
        assert!(throttle.admit("a", t0 + REFILL * 2));
        // Long quiet: the whole burst again, not more.
        let later = t0 + REFILL * 1000;
        let admitted = (0..100).filter(|_| throttle.admit("a", later)).count();
        assert_eq!(admitted, BURST as usize);
    }

    #[test]
    fn the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut throttle = ResultThrottle::default();
        for i in 0..MAX_KEYS {
            assert!(throttle.admit(&i.to_string(), t0));
        }
        assert!(!throttle.admit("new", t0), "every bucket is still in use");
        assert!(
            throttle.admit("new", t0 + REFILL),
            "refilled buckets make room"
        );
        assert!(throttle.buckets.len() <= MAX_KEYS);
    }
}
