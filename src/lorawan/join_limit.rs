//! Join requests rate-limited per DevEUI and in total: a device's JoinRequest is taken at most once per
//! [`PER_DEVICE`] and at most [`TOTAL_PER_SECOND`] in any one-second window, so that a replaying or
//! misbehaving device cannot make the server derive keys, write sessions and transmit JoinAccepts
//! without bound. Only configured devices whose MIC checked reach it, so its table is bounded by the
//! device count. Time is passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The shortest interval between two joins of one device.
pub const PER_DEVICE: Duration = Duration::from_secs(2);
/// Joins taken per second, all devices together.
pub const TOTAL_PER_SECOND: u32 = 20;

/// The limiter's state.
#[derive(Debug, Default)]
pub struct JoinLimit {
    last: HashMap<u64, Instant>,
    window: Option<(Instant, u32)>,
}

impl JoinLimit {
    /// Whether a join of `dev_eui` at `now` is taken (and, if so, counts it).
    pub fn admit(&mut self, dev_eui: u64, now: Instant) -> bool {
        if let Some(last) = self.last.get(&dev_eui) {
            if now.saturating_duration_since(*last) < PER_DEVICE {
                return false;
            }
        }
        let (start, count) = match self.window {
            Some((start, count))
                if now.saturating_duration_since(start) < Duration::from_secs(1) =>
            {
                (start, count)
            }
            _ => (now, 0),
        };
        if count >= TOTAL_PER_SECOND {
            return false;
        }
        self.window = Some((start, count + 1));
        self.last.insert(dev_eui, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_join_per_device_per_interval_and_a_total_per_second() {
        let start = Instant::now();
        let mut limit = JoinLimit::default();
        assert!(limit.admit(1, start));
        assert!(!limit.admit(1, start + PER_DEVICE - Duration::from_millis(1)));
        assert!(limit.admit(1, start + PER_DEVICE));
        let later = start + Duration::from_secs(10);
        for eui in 100..100 + u64::from(TOTAL_PER_SECOND) {
            assert!(limit.admit(eui, later), "{eui}");
        }
        assert!(!limit.admit(999, later + Duration::from_millis(999)));
        assert!(limit.admit(999, later + Duration::from_secs(1)));
    }
}
