//! Jittered exponential backoff for everything that reconnects: serial ports, radios, the uplink. It only
//! computes delays; the caller sleeps. The delay doubles from `initial` up to `max`, each one drawn at
//! random from its upper half ("equal jitter") so that many gateways restarted together do not retry in
//! step, and it resets only when the caller says the link stayed up.

use std::time::Duration;

use rand::Rng;

/// The retry schedule of one link.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A schedule starting at `initial` and capped at `max` (`max` is raised to `initial` if below it).
    pub fn new(initial: Duration, max: Duration) -> Self {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay before the next attempt: uniform in `[d/2, d]` where `d` doubles each call up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_millis() as u64;
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// Starts over from `initial`; call it once a connection has stayed up, not merely opened.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_jittered_within_it() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            ceiling = (ceiling * 2).min(Duration::from_secs(30));
        }
        assert!(backoff.next_delay() >= Duration::from_secs(15));
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
