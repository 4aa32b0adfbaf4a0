//! Measuring helpers shared by every benchmark: nearest-rank percentiles, absolute-deadline pacing, the
//! wall clock in nanoseconds (the latency stamp carried in each reading), and what `/proc` says about a
//! set of processes (CPU seconds, current and peak resident memory) or about this process's disk writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The value at quantile `q` (0..=1) of sorted samples (nearest rank); `None` when empty.
pub fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Absolute-deadline pacing: the time at which send number `n` is due at `rate` per second, so a late
/// send does not push every later one back.
pub fn due(start: Instant, n: u64, rate: u64) -> Instant {
    start + Duration::from_nanos(n.saturating_mul(1_000_000_000) / rate.max(1))
}

/// Nanoseconds since the Unix epoch (comparable across processes, unlike `Instant`).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// sensorgate's figure over its peer's; `None` when there is nothing to divide by.
pub fn ratio(ours: f64, theirs: f64) -> Option<f64> {
    (theirs > 0.0).then(|| ours / theirs)
}

/// What `/proc` reports for a set of processes, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User plus system CPU seconds since each process started.
    pub cpu_seconds: f64,
    /// Resident memory now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident memory (VmHWM), KiB; for several processes the sum of their peaks, an upper bound
    /// of the peak of their sum.
    pub peak_rss_kib: u64,
}

impl Usage {
    /// Reads `/proc/PID/stat` and `/proc/PID/status` of each process; a vanished process counts as zero.
    pub fn of(pids: &[u32]) -> Usage {
        let mut total = Usage::default();
        for &pid in pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            total.cpu_seconds += cpu_seconds_from_stat(&stat, clock_ticks_per_second());
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            total.rss_kib += status_value(&status, "VmRSS:").unwrap_or(0);
            total.peak_rss_kib += status_value(&status, "VmHWM:").unwrap_or(0);
        }
        total
    }
}

/// Linux reports `utime`/`stime` in USER_HZ, which is 100 on every architecture the kernel supports
/// for user space (`sysconf(_SC_CLK_TCK)`).
fn clock_ticks_per_second() -> f64 {
    100.0
}

/// `utime + stime` of a `/proc/PID/stat` line, in seconds. The command name may hold spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn cpu_seconds_from_stat(stat: &str, ticks_per_second: f64) -> f64 {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum::<f64>()
        / ticks_per_second
}

/// The number of a `Key:   1234 kB` or `Key:   1234` line of `/proc/PID/status` (or `/proc/meminfo`).
pub fn status_value(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Bytes this process has caused to be written to storage (`write_bytes` of `/proc/self/io`).
pub fn disk_write_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Samples the summed VmRSS of some processes every 20 ms until finished, keeping the peak: the peak
/// of the sum, where `Usage::peak_rss_kib` gives the sum of the peaks.
pub struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    pub fn start(pids: Vec<u32>) -> PeakRss {
        let peak = Arc::new(AtomicU64::new(Usage::of(&pids).rss_kib));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(Usage::of(&pids).rss_kib, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        PeakRss {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), Some(50));
        assert_eq!(percentile(&samples, 0.99), Some(99));
        assert_eq!(percentile(&samples, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 0.99), Some(10), "rank rounds up");
        assert_eq!(percentile(&ten, 0.0), Some(1), "the minimum at q = 0");
    }

    #[test]
    fn the_pacer_keeps_absolute_deadlines() {
        let start = Instant::now();
        assert_eq!(due(start, 0, 1000), start);
        assert_eq!(due(start, 1000, 1000), start + Duration::from_secs(1));
        assert_eq!(due(start, 3, 2), start + Duration::from_millis(1500));
        assert_eq!(
            due(start, 5, 0),
            start + Duration::from_secs(5),
            "a zero rate is taken as 1/s"
        );
    }

    #[test]
    fn ratios_need_a_peer_figure() {
        assert_eq!(ratio(30_000.0, 60_000.0), Some(0.5));
        assert_eq!(ratio(30_000.0, 0.0), None);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat =
            "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        assert_eq!(cpu_seconds_from_stat(stat, 100.0), 3.0);
        assert_eq!(cpu_seconds_from_stat("garbage", 100.0), 0.0);
    }

    #[test]
    fn status_lines_give_numbers() {
        let status = "Name:\tsensorgate\nVmHWM:\t   13312 kB\nVmRSS:\t   12000 kB\n";
        assert_eq!(status_value(status, "VmHWM:"), Some(13312));
        assert_eq!(status_value(status, "VmRSS:"), Some(12000));
        assert_eq!(status_value(status, "VmSwap:"), None);
        assert_eq!(
            status_value("voluntary_ctxt_switches:\t42\n", "voluntary_ctxt_switches:"),
            Some(42),
            "counts without a unit"
        );
    }

    #[test]
    fn this_process_is_measured() {
        let usage = Usage::of(&[std::process::id()]);
        assert!(usage.rss_kib > 0 && usage.peak_rss_kib >= usage.rss_kib);
        assert_eq!(Usage::of(&[u32::MAX]), Usage::default(), "no such process");
    }
}
