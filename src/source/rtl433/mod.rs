//! The rtl_433 source (`kind = "rtl_433"`): 433/868 MHz sensors (weather stations, pool and soil
//! thermometers, door and leak sensors, power meters) received by an RTL-SDR stick and decoded by
//! rtl_433, which sensorgate runs and supervises. One task owns the process, its stalls, the stick's USB
//! reset, repeats, identities and the heard list's input; the pipeline sees readings like any other.
//!
//! Files: `args.rs` (the command line and what `args` may not contain), `process.rs` (the process
//! group), `line.rs` (one JSON line -> a transmission or the statistics line), `identity.rs` (model/id/
//! channel -> address -> `[[device]]`), `repeats.rs` (`dedup_window`), `liveness.rs` (silence, the
//! stall message, exit statuses), `usb.rs` (`USBDEVFS_RESET`), `supervisor.rs` (the loop that ties
//! them together).
//!
//! What happens, in short: rtl_433 prints one JSON line per transmission and a statistics line every
//! `stats_interval`. Output silence for two intervals, "Async read stalled" on stderr (and still running
//! three seconds later), or exit status 3 mean the stick stalled: the process group is killed, the stick
//! is reset over USB (`usb_reset`, on by default), and rtl_433 starts again after a jittered backoff.
//! Exit status 2 means no stick: the source is lost (its devices' wills are published) and retried with
//! backoff. Exit status 0 ends the source only for a one-shot replay (`args` with `-r FILE` or
//! `-y CODE`); otherwise it is restarted like any other end. The link is up from rtl_433's first output
//! line of each start (it prints nothing before it has the stick). The state (starting, running,
//! stalled, restarting, lost, finished) and the stall and restart counts are in `{base}/gateway/stats`.

pub mod args;
pub mod identity;
pub mod line;
pub mod liveness;
pub mod process;
pub mod repeats;
pub mod supervisor;
pub mod usb;

use std::sync::Arc;
use std::time::Duration;

pub use args::Receiver;
pub use identity::DevicesMode;

use crate::source::SourceContext;

/// Everything the rtl_433 source needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rtl433Settings {
    /// The program: a path, or a name looked up on `PATH`.
    pub command: String,
    /// Stick, frequencies, protocols, sample rate, gain.
    pub receiver: Receiver,
    /// Extra arguments, after sensorgate's ([`args::check_extra`] refuses the ones it sets).
    pub args: Vec<String>,
    /// Which senders are published.
    pub devices: DevicesMode,
    /// Copies of a reading within this window are one reading.
    pub dedup_window: Duration,
    /// How often rtl_433 prints its statistics line; silence for two of them is a stall.
    pub stats_interval: Duration,
    /// Reset the stick over USB after a stall.
    pub usb_reset: bool,
    /// The `[[device]] address`es of this source.
    pub configured: Vec<String>,
    /// First and longest delay between two starts.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for Rtl433Settings {
    /// `rtl_433` on `PATH` with its default receiver settings, only configured devices published,
    /// repeats within 2 s dropped, statistics every 60 s, USB reset on, restarts from 500 ms up to 30 s.
    fn default() -> Self {
        Rtl433Settings {
            command: "rtl_433".to_string(),
            receiver: Receiver::default(),
            args: Vec::new(),
            devices: DevicesMode::Configured,
            dedup_window: Duration::from_secs(2),
            stats_interval: Duration::from_secs(60),
            usb_reset: true,
            configured: Vec::new(),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// A setting the source cannot run with: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: &'static str,
    pub message: String,
}

impl Rtl433Settings {
    /// The source's own checks, which the configuration calls (so `check-config` refuses the same).
    pub fn check(&self) -> Result<(), Refusal> {
        let refuse = |key, message: String| Err(Refusal { key, message });
        if self.command.is_empty() {
            return refuse(
                "command",
                "is empty; write \"rtl_433\" or the program's path".into(),
            );
        }
        if let Err(message) = args::check_extra(&self.args) {
            return refuse("args", message);
        }
        if self.receiver.hop_interval.is_some() && self.receiver.frequencies.len() < 2 {
            return refuse(
                "hop_interval",
                "hops between frequencies: write two or more in frequency = [...], or remove hop_interval".into(),
            );
        }
        if let Some(hop) = self.receiver.hop_interval {
            if hop < Duration::from_secs(1) {
                return refuse(
                    "hop_interval",
                    "is shorter than rtl_433's 1 s; write \"10m\" or so".into(),
                );
            }
        }
        if let Some(frequency) = self
            .receiver
            .frequencies
            .iter()
            .find(|f| !(24_000_000..=1_766_000_000).contains(*f))
        {
            return refuse(
                "frequency",
                format!("{frequency} Hz is outside an RTL-SDR's 24 MHz - 1766 MHz; the value is in Hz, e.g. 433_920_000"),
            );
        }
        if self.stats_interval < Duration::from_secs(1)
            || self.stats_interval > Duration::from_secs(3600)
        {
            return refuse(
                "stats_interval",
                "must be between \"1s\" and \"1h\" (\"60s\" is usual)".into(),
            );
        }
        if self.dedup_window > Duration::from_secs(60) {
            return refuse(
                "dedup_window",
                "is longer than 60s; repeats come within a second or two (\"2s\")".into(),
            );
        }
        Ok(())
    }
}

/// Runs the source until `ctx.shutdown` is cancelled, the pipeline goes away, or a one-shot replay ends.
pub async fn run(ctx: SourceContext, settings: Rtl433Settings) {
    supervisor::run(ctx, settings, Arc::new(usb::SysfsUsbReset::default())).await
}
