//! The radio duty-cycle budget: how much time on air a source may use per hour on its sub-band. The
//! frequency plan ([`limit_for`]) is the EU868 one of ETSI EN 300 220 as LoRaWAN's regional parameters
//! use it (1 % on 868.0-868.6 MHz, 10 % on 869.4-869.65 MHz, 0.1 % and 1 % on the bands around them) and
//! EU433 (10 %); other frequencies (US915, AU915, AS923...) have no duty-cycle limit. `duty_cycle =
//! "auto"` uses the plan, `"off"` none, `"1%"` that share of every hour. [`Budget`] is a pure sliding
//! window with time passed in: a transmission is admitted when it fits into the hour behind it, and
//! otherwise [`Budget::admit`] says from when it will. Within it each client (a login, or all anonymous
//! clients together: `Reply::requester`) may use at most `client_airtime` of the hour's allowance ([`Budget::admit_client`],
//! default [`DEFAULT_CLIENT_SHARE`]), so one client's long transmissions leave airtime for the others.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// The window the budget is counted over.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// The most transmissions a budget remembers (a bound that a 10 % budget of 25 ms packets stays under).
pub const MAX_ENTRIES: usize = 20_000;
/// The share of a source's budget one client may use by default (`client_airtime = "50%"`).
pub const DEFAULT_CLIENT_SHARE: f64 = 0.5;

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

/// One transmission in the window: when, how long, and for whom.
#[derive(Debug, Clone)]
struct Sent {
    at: Instant,
    airtime: Duration,
    requester: String,
}

/// The time on air used in the last hour, against the share allowed, in all and per client.
#[derive(Debug, Clone)]
pub struct Budget {
    allowed: Duration,
    /// The share of `allowed` one client may use.
    client_share: f64,
    /// What the budget says in a result's reason.
    pub description: String,
    sent: VecDeque<Sent>,
    used: Duration,
    /// Time on air in the window per requester; a requester with none has no entry.
    used_by: HashMap<String, Duration>,
}

impl Budget {
    /// A budget of `share` of every hour, all of which one client may use.
    pub fn new(share: f64, description: String) -> Self {
        Budget {
            allowed: WINDOW.mul_f64(share.clamp(0.0, 1.0)),
            client_share: 1.0,
            description,
            sent: VecDeque::new(),
            used: Duration::ZERO,
            used_by: HashMap::new(),
        }
    }

    /// The same budget, of which one client may use at most `share` (0 < share <= 1).
    pub fn with_client_share(mut self, share: f64) -> Self {
        self.client_share = share.clamp(0.0, 1.0);
        self
    }

    /// Time on air allowed per hour.
    pub fn allowed(&self) -> Duration {
        self.allowed
    }

    /// Time on air one client may use per hour.
    pub fn client_allowed(&self) -> Duration {
        self.allowed.mul_f64(self.client_share)
    }

    /// What one client's allowance is, for reasons: "the budget" itself when a client may use all of it.
    pub fn client_description(&self) -> String {
        if self.client_share >= 1.0 {
            format!("the whole duty-cycle budget ({})", self.description)
        } else {
            format!(
                "one client's share of the duty-cycle budget ({} % of {}, client_airtime)",
                self.client_share * 100.0,
                self.description
            )
        }
    }

    /// Time on air used in the hour before `now`.
    pub fn used(&mut self, now: Instant) -> Duration {
        self.forget(now);
        self.used
    }

    fn forget(&mut self, now: Instant) {
        while let Some(front) = self.sent.front() {
            if now.saturating_duration_since(front.at) < WINDOW {
                break;
            }
            if let Some(gone) = self.sent.pop_front() {
                self.used = self.used.saturating_sub(gone.airtime);
                if let Some(used) = self.used_by.get_mut(&gone.requester) {
                    *used = used.saturating_sub(gone.airtime);
                    if used.is_zero() {
                        self.used_by.remove(&gone.requester);
                    }
                }
            }
        }
    }

    /// Whether `airtime` fits into the source's budget now, or from when.
    pub fn admit(&mut self, now: Instant, airtime: Duration) -> Result<(), Wait> {
        if airtime > self.allowed {
            return Err(Wait::Never);
        }
        self.forget(now);
        if self.sent.len() >= MAX_ENTRIES {
            // The window remembers no more: wait for its oldest entry to leave it.
            return Err(self
                .sent
                .front()
                .map_or(Wait::Never, |s| Wait::Until(s.at + WINDOW)));
        }
        if self.used + airtime <= self.allowed {
            return Ok(());
        }
        let need = self.used + airtime - self.allowed;
        Err(freed_after(self.sent.iter(), need))
    }

    /// Whether `airtime` fits into `requester`'s share now, or from when (the source's budget is
    /// [`Budget::admit`]'s).
    pub fn admit_client(
        &mut self,
        now: Instant,
        airtime: Duration,
        requester: &str,
    ) -> Result<(), Wait> {
        let allowed = self.client_allowed();
        if airtime > allowed {
            return Err(Wait::Never);
        }
        self.forget(now);
        let used = self.used_by.get(requester).copied().unwrap_or_default();
        if used + airtime <= allowed {
            return Ok(());
        }
        let need = used + airtime - allowed;
        Err(freed_after(
            self.sent.iter().filter(|s| s.requester == requester),
            need,
        ))
    }

    /// Counts a transmission made at `now` for `requester`.
    pub fn record(&mut self, now: Instant, airtime: Duration, requester: &str) {
        self.forget(now);
        // `admit` keeps the window below MAX_ENTRIES; a transmission recorded without it makes room.
        while self.sent.len() >= MAX_ENTRIES {
            let Some(oldest) = self.sent.front() else {
                break;
            };
            let at = oldest.at;
            self.forget(at + WINDOW);
        }
        self.sent.push_back(Sent {
            at: now,
            airtime,
            requester: requester.to_string(),
        });
        self.used += airtime;
        *self.used_by.entry(requester.to_string()).or_default() += airtime;
    }
}

/// The earliest time enough of the oldest of `sent` have left the window to free `need`.
fn freed_after<'a>(sent: impl Iterator<Item = &'a Sent>, need: Duration) -> Wait {
    let mut freed = Duration::ZERO;
    for entry in sent {
        freed += entry.airtime;
        if freed >= need {
            return Wait::Until(entry.at + WINDOW);
        }
    }
    Wait::Never
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
            budget.record(at, packet, "a");
        }
        let now = start + Duration::from_secs(3);
        // 30 s used: 10 s more would be 40 > 36; free once the first leaves the window.
        assert_eq!(budget.admit(now, packet), Err(Wait::Until(start + WINDOW)));
        assert_eq!(budget.admit(now, Duration::from_secs(6)), Ok(()));
        assert_eq!(budget.admit(now, Duration::from_secs(37)), Err(Wait::Never));
        assert_eq!(budget.admit(start + WINDOW, packet), Ok(()));
        assert_eq!(budget.used(start + WINDOW), Duration::from_secs(20));
    }

    #[test]
    fn one_client_uses_at_most_its_share() {
        let start = Instant::now();
        let mut budget = Budget::new(0.01, "1 %".into()).with_client_share(0.5);
        assert_eq!(budget.client_allowed(), Duration::from_secs(18));
        let packet = Duration::from_secs(6);
        for i in 0..3 {
            let at = start + Duration::from_secs(i);
            assert_eq!(budget.admit_client(at, packet, "a"), Ok(()));
            budget.record(at, packet, "a");
        }
        let now = start + Duration::from_secs(3);
        // 18 s used by "a": its share is spent until its first transmission leaves the hour...
        assert_eq!(budget.admit(now, packet), Ok(()), "the source has room");
        assert_eq!(
            budget.admit_client(now, packet, "a"),
            Err(Wait::Until(start + WINDOW))
        );
        // ... while "b" still has its own.
        assert_eq!(budget.admit_client(now, packet, "b"), Ok(()));
        budget.record(now, packet, "b");
        assert_eq!(
            budget.admit_client(now, Duration::from_secs(19), "b"),
            Err(Wait::Never),
            "longer than a client's share"
        );
        assert_eq!(budget.admit_client(start + WINDOW, packet, "a"), Ok(()));
        assert_eq!(budget.used_by.len(), 2);
        budget.forget(now + WINDOW);
        assert!(
            budget.used_by.is_empty(),
            "forgotten with its transmissions"
        );
        assert!(budget.client_description().contains("50 % of 1 %"));
    }
}
