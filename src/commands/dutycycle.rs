//! The radio duty-cycle budget: how much time on air a source may use per hour on its sub-band. The
//! frequency plan ([`limit_for`]) is the EU868 one of ETSI EN 300 220 as LoRaWAN's regional parameters
//! use it (1 % on 868.0-868.6 MHz, 10 % on 869.4-869.65 MHz, 0.1 % and 1 % on the bands around them) and
//! EU433 (10 %); other frequencies (US915, AU915, AS923...) have no duty-cycle limit. `duty_cycle =
//! "auto"` uses the plan, `"off"` none, `"1%"` that share of every hour. [`Budget`] is a pure sliding
//! window with time passed in: a transmission is admitted when it fits into the hour behind it, and
//! otherwise [`Budget::admit`] says from when it will.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The window the budget is counted over.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// The most transmissions a budget remembers (a bound that a 10 % budget of 25 ms packets stays under).
pub const MAX_ENTRIES: usize = 20_000;

/// `duty_cycle` of a radio source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DutyCycleSetting {
    /// From the frequency plan.
    Auto,
    /// No limit.
    Off,
    /// This share of every hour, 0 < share <= 1.
    Share(f64),
}

/// A sub-band of the plan: its range in Hz, its share, and its name for messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubBand {
    pub low_hz: u32,
    pub high_hz: u32,
    pub share: f64,
    pub name: &'static str,
}

/// The plan: EU868 (ETSI EN 300 220 bands h1.3-h1.7 as LoRaWAN uses them) and EU433.
pub const PLAN: [SubBand; 7] = [
    SubBand {
        low_hz: 433_050_000,
        high_hz: 434_790_000,
        share: 0.10,
        name: "EU433 433.05-434.79 MHz",
    },
    SubBand {
        low_hz: 863_000_000,
        high_hz: 865_000_000,
        share: 0.001,
        name: "EU868 863.0-865.0 MHz",
    },
    SubBand {
        low_hz: 865_000_000,
        high_hz: 868_000_000,
        share: 0.01,
        name: "EU868 865.0-868.0 MHz",
    },
    SubBand {
        low_hz: 868_000_000,
        high_hz: 868_600_000,
        share: 0.01,
        name: "EU868 868.0-868.6 MHz",
    },
    SubBand {
        low_hz: 868_700_000,
        high_hz: 869_200_000,
        share: 0.001,
        name: "EU868 868.7-869.2 MHz",
    },
    SubBand {
        low_hz: 869_400_000,
        high_hz: 869_650_000,
        share: 0.10,
        name: "EU868 869.4-869.65 MHz",
    },
    SubBand {
        low_hz: 869_700_000,
        high_hz: 870_000_000,
        share: 0.01,
        name: "EU868 869.7-870.0 MHz",
    },
];

/// The sub-band a channel at `frequency_hz` lies in (its centre), if the plan has one.
pub fn sub_band(frequency_hz: u32) -> Option<&'static SubBand> {
    PLAN.iter()
        .find(|band| (band.low_hz..band.high_hz).contains(&frequency_hz))
}

/// The share and its description for a source, or `None` for no limit.
pub fn limit_for(setting: DutyCycleSetting, frequency_hz: u32) -> Option<(f64, String)> {
    match setting {
        DutyCycleSetting::Off => None,
        DutyCycleSetting::Share(share) => {
            Some((share, format!("{} % per hour (duty_cycle)", share * 100.0)))
        }
        DutyCycleSetting::Auto => sub_band(frequency_hz).map(|band| {
            (
                band.share,
                format!("{} % per hour on {}", band.share * 100.0, band.name),
            )
        }),
    }
}

/// Why a transmission is not admitted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// It fits from this time on.
    Until(Instant),
    /// It is longer than the whole hour's budget.
    Never,
}

/// The time on air used in the last hour, against the share allowed.
#[derive(Debug, Clone)]
pub struct Budget {
    allowed: Duration,
    /// What the budget says in a result's reason.
    pub description: String,
    sent: VecDeque<(Instant, Duration)>,
    used: Duration,
}

impl Budget {
    /// A budget of `share` of every hour.
    pub fn new(share: f64, description: String) -> Self {
        Budget {
            allowed: WINDOW.mul_f64(share.clamp(0.0, 1.0)),
            description,
            sent: VecDeque::new(),
            used: Duration::ZERO,
        }
    }

    /// Time on air allowed per hour.
    pub fn allowed(&self) -> Duration {
        self.allowed
    }

    /// Time on air used in the hour before `now`.
    pub fn used(&mut self, now: Instant) -> Duration {
        self.forget(now);
        self.used
    }

    fn forget(&mut self, now: Instant) {
        while let Some(&(at, airtime)) = self.sent.front() {
            if now.saturating_duration_since(at) < WINDOW {
                break;
            }
            self.sent.pop_front();
            self.used = self.used.saturating_sub(airtime);
        }
    }

    /// Whether `airtime` fits now, or from when.
    pub fn admit(&mut self, now: Instant, airtime: Duration) -> Result<(), Wait> {
        if airtime > self.allowed {
            return Err(Wait::Never);
        }
        self.forget(now);
        if self.used + airtime <= self.allowed {
            return Ok(());
        }
        // The earliest time enough of the oldest transmissions have left the window.
        let mut freed = Duration::ZERO;
        let need = self.used + airtime - self.allowed;
        for &(at, used) in &self.sent {
            freed += used;
            if freed >= need {
                return Err(Wait::Until(at + WINDOW));
            }
        }
        Err(Wait::Never)
    }

    /// Counts a transmission made at `now`.
    pub fn record(&mut self, now: Instant, airtime: Duration) {
        self.forget(now);
        if self.sent.len() >= MAX_ENTRIES {
            // Merge into the newest entry instead of growing: the budget then errs on the safe side.
            if let Some(last) = self.sent.back_mut() {
                last.1 += airtime;
                self.used += airtime;
                return;
            }
        }
        self.sent.push_back((now, airtime));
        self.used += airtime;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan() {
        assert_eq!(sub_band(868_100_000).unwrap().share, 0.01);
        assert_eq!(sub_band(869_525_000).unwrap().share, 0.10);
        assert_eq!(sub_band(868_650_000), None, "between the bands");
        assert_eq!(sub_band(915_000_000), None, "US915 has no duty cycle");
        assert_eq!(limit_for(DutyCycleSetting::Auto, 915_000_000), None);
        assert_eq!(limit_for(DutyCycleSetting::Off, 868_100_000), None);
        let (share, text) = limit_for(DutyCycleSetting::Auto, 868_100_000).unwrap();
        assert_eq!(share, 0.01);
        assert!(text.contains("868.0-868.6"), "{text}");
        assert_eq!(
            limit_for(DutyCycleSetting::Share(0.05), 915_000_000)
                .unwrap()
                .0,
            0.05
        );
    }

    #[test]
    fn one_percent_is_36_seconds_an_hour() {
        let start = Instant::now();
        let mut budget = Budget::new(0.01, "1 %".into());
        assert_eq!(budget.allowed(), Duration::from_secs(36));
        let packet = Duration::from_secs(10);
        for i in 0..3 {
            let at = start + Duration::from_secs(i);
            assert_eq!(budget.admit(at, packet), Ok(()));
            budget.record(at, packet);
        }
        let now = start + Duration::from_secs(3);
        // 30 s used: 10 s more would be 40 > 36; free once the first leaves the window.
        assert_eq!(budget.admit(now, packet), Err(Wait::Until(start + WINDOW)));
        assert_eq!(budget.admit(now, Duration::from_secs(6)), Ok(()));
        assert_eq!(budget.admit(now, Duration::from_secs(37)), Err(Wait::Never));
        assert_eq!(budget.admit(start + WINDOW, packet), Ok(()));
        assert_eq!(budget.used(start + WINDOW), Duration::from_secs(20));
    }
}
