//! Whether rtl_433 is still receiving, without trusting the process: it prints a statistics line every
//! stats interval (`-M stats:1:<interval>`) besides what it decodes, so output silence for two intervals
//! means the stick or the driver stalled even while the process lives (it hangs after some stalls).
//! "Async read stalled" on stderr means the same, and the process must exit within [`STALL_GRACE`] of it.
//! And how a finished process ended: exit status 3 is rtl_433's own stall exit, 2 that it found no
//! stick, and 0 is success only for a one-shot replay (`-r FILE`, `-y CODE`). Pure: time is passed in.

use std::time::{Duration, Instant};

/// How long rtl_433 may live on after printing its stall message before it is killed.
pub const STALL_GRACE: Duration = Duration::from_secs(3);
/// What rtl_433 prints on stderr when the stick stops delivering samples.
pub const STALL_MESSAGE: &str = "Async read stalled";

/// The liveness of one rtl_433 process.
#[derive(Debug, Clone)]
pub struct Liveness {
    silence_limit: Duration,
    last_activity: Instant,
    stall_message_at: Option<Instant>,
}

/// Why a living process is declared stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// No output line for two stats intervals.
    Silent,
    /// It printed its stall message and did not exit.
    HungAfterStallMessage,
}

impl Stall {
    /// For log lines and the restart reason.
    pub fn describe(self, silence_limit: Duration) -> String {
        match self {
            Stall::Silent => format!(
                "no output for {} (two stats intervals)",
                humantime::format_duration(silence_limit)
            ),
            Stall::HungAfterStallMessage => format!(
                "it printed \"{STALL_MESSAGE}\" and was still running {} later",
                humantime::format_duration(STALL_GRACE)
            ),
        }
    }
}

impl Liveness {
    /// A process started at `now`, printing statistics every `stats_interval`.
    pub fn new(stats_interval: Duration, now: Instant) -> Self {
        Liveness {
            silence_limit: stats_interval.saturating_mul(2),
            last_activity: now,
            stall_message_at: None,
        }
    }

    /// Two stats intervals.
    pub fn silence_limit(&self) -> Duration {
        self.silence_limit
    }

    /// A line arrived on stdout.
    pub fn activity(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The stall message arrived on stderr (the first one counts).
    pub fn stall_message(&mut self, now: Instant) {
        self.stall_message_at.get_or_insert(now);
    }

    /// Whether the stall message was seen.
    pub fn stall_message_seen(&self) -> bool {
        self.stall_message_at.is_some()
    }

    /// When [`Liveness::verdict`] next needs asking (`None`: too far to say).
    pub fn deadline(&self) -> Option<Instant> {
        let silent = self.last_activity.checked_add(self.silence_limit);
        let hung = self
            .stall_message_at
            .and_then(|at| at.checked_add(STALL_GRACE));
        match (silent, hung) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// `Some` when the process is to be killed as stalled.
    pub fn verdict(&self, now: Instant) -> Option<Stall> {
        if let Some(at) = self.stall_message_at {
            if now.saturating_duration_since(at) >= STALL_GRACE {
                return Some(Stall::HungAfterStallMessage);
            }
        }
        (now.saturating_duration_since(self.last_activity) >= self.silence_limit)
            .then_some(Stall::Silent)
    }
}

/// How a process ended, and what the source does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A one-shot replay finished: the source ends.
    Finished,
    /// The stick stalled: reset it and restart.
    Stalled(String),
    /// No stick: the link is lost; retry with backoff.
    NoStick,
    /// Anything else: restart with backoff.
    Failed(String),
}

/// How a process that exited with `code` (`None`: killed by a signal) ended.
pub fn classify_exit(code: Option<i32>, one_shot: bool, stall_message_seen: bool) -> Ending {
    match code {
        Some(0) if one_shot => Ending::Finished,
        Some(3) => Ending::Stalled("it exited with status 3 (async read stalled)".to_string()),
        _ if stall_message_seen => {
            Ending::Stalled(format!("it printed \"{STALL_MESSAGE}\" and exited"))
        }
        Some(2) => Ending::NoStick,
        Some(0) => Ending::Failed(
            "it exited with status 0, but a receiver should run until stopped".to_string(),
        ),
        Some(code) => Ending::Failed(format!("it exited with status {code}")),
        None => Ending::Failed("it was killed by a signal".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_past_two_intervals_on_the_paused_clock() {
        let interval = Duration::from_secs(60);
        let now = || tokio::time::Instant::now().into_std();
        let mut liveness = Liveness::new(interval, now());
        tokio::time::advance(Duration::from_secs(90)).await;
        liveness.activity(now());
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(liveness.verdict(now()), None);
        let deadline = liveness.deadline().unwrap();
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
        assert_eq!(now().duration_since(deadline), Duration::ZERO);
        assert_eq!(liveness.verdict(now()), Some(Stall::Silent));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hang_after_the_stall_message() {
        let now = || tokio::time::Instant::now().into_std();
        let mut liveness = Liveness::new(Duration::from_secs(60), now());
        liveness.stall_message(now());
        assert!(liveness.stall_message_seen());
        assert_eq!(liveness.deadline(), now().checked_add(STALL_GRACE));
        tokio::time::advance(STALL_GRACE - Duration::from_millis(1)).await;
        liveness.activity(now());
        assert_eq!(liveness.verdict(now()), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(liveness.verdict(now()), Some(Stall::HungAfterStallMessage));
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(classify_exit(Some(0), true, false), Ending::Finished);
        assert!(matches!(
            classify_exit(Some(0), false, false),
            Ending::Failed(_)
        ));
        assert!(matches!(
            classify_exit(Some(3), false, false),
            Ending::Stalled(_)
        ));
        assert!(matches!(
            classify_exit(Some(1), false, true),
            Ending::Stalled(_)
        ));
        assert_eq!(classify_exit(Some(2), false, false), Ending::NoStick);
        assert!(matches!(
            classify_exit(Some(1), false, false),
            Ending::Failed(_)
        ));
        assert!(matches!(
            classify_exit(None, true, false),
            Ending::Failed(_)
        ));
    }
}
