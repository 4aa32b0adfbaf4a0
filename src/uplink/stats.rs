//! The uplink's counters, shared between its task and whoever publishes `{base}/gateway/stats`. A cheap
//! cloneable handle around one small mutex that is held only to copy numbers in or out, never across an
//! await. It computes nothing but ages.

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use super::spool::{now_ms, SpoolStats};
use super::window::WindowCounters;

/// Connection state as the stats report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    #[default]
    Connecting,
    Connected,
    /// Waiting (backoff) before the next attempt.
    Disconnected,
    Stopped,
}

impl LinkState {
    fn as_str(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::Disconnected => "disconnected",
            LinkState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub state: LinkState,
    pub connects: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    pub spool: SpoolStats,
    pub window: WindowCounters,
    pub in_flight: u64,
    /// Append time of the oldest unacknowledged record held in memory, Unix ms.
    pub window_oldest_ms: Option<u64>,
    pub not_forwarded: u64,
    /// Records written to the spool since start (`spool.appended` counts messages acknowledged in
    /// memory too).
    pub spooled: u64,
    /// Messages held in memory only (neither acknowledged nor on disk yet).
    pub memory_messages: u64,
    /// Arrival time of the oldest of them, Unix ms.
    pub memory_oldest_ms: Option<u64>,
    /// Messages dropped because the file system was full and memory held its cap.
    pub dropped_disk_full: u64,
    /// The last write found the file system full.
    pub disk_full: bool,
    /// Messages taken for refused by the cloud broker and set aside since start.
    pub refused: u64,
}

/// A handle to the uplink's counters; see [`UplinkStatsHandle::snapshot`].
#[derive(Debug, Clone, Default)]
pub struct UplinkStatsHandle {
    inner: Arc<Mutex<Counters>>,
}

impl UplinkStatsHandle {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Counters> {
        // A poisoned lock only means a panic elsewhere mid-copy; the numbers are still numbers.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counters as JSON, for `{base}/gateway/stats`:
    /// `state` (connecting, connected, disconnected, stopped), `connects`, `reconnects`, `last_error`,
    /// `spool_messages` and `spool_bytes` (depth on disk), `memory_messages` (held in memory only, younger
    /// than `sync`), `oldest_age_s` (age of the oldest unacknowledged message), `dropped` (with `dropped_budget`, `dropped_age`, `dropped_too_large`, `dropped_disk_full`),
    /// `disk_full` (the last write found the state file system full), `refused` (messages taken for
    /// refused by the cloud broker and set aside since start), `refused_kept` and `refused_not_kept`
    /// (in the spool directory's `refused` files, and those the bounds pushed out), `corrupt_cuts` and
    /// `corrupt_bytes` (cut at start or while reading), `replayed` (spooled before the connection came up,
    /// then sent), `resent` (possible duplicates: sent again after a reconnect without an
    /// acknowledgement), `sent`, `acked`, `in_flight`, `appended` (messages forwarded and taken care of:
    /// acknowledged from memory or written to the spool), `spooled` (written to the spool), `synced_seq`
    /// (every message up to it is acknowledged or fsync'ed), `acked_seq`, `written_bytes` and `fsyncs`
    /// (the spool's), `not_forwarded` (local messages no rule selected).
    pub fn snapshot(&self) -> serde_json::Value {
        let c = self.lock();
        let s = &c.spool;
        let oldest = [
            c.window_oldest_ms,
            c.memory_oldest_ms,
            Some(s.oldest_unread_ms).filter(|m| *m > 0),
        ]
        .into_iter()
        .flatten()
        .min();
        let oldest_age_s = oldest
            .filter(|_| s.messages > 0 || c.memory_messages > 0 || c.in_flight > 0)
            .map(|ms| now_ms().saturating_sub(ms) as f64 / 1000.0)
            .unwrap_or(0.0);
        json!({
            "state": c.state.as_str(),
            "connects": c.connects,
            "reconnects": c.reconnects,
            "last_error": c.last_error,
            "spool_messages": s.messages,
            "spool_bytes": s.bytes,
            "spool_segments": s.segments,
            "memory_messages": c.memory_messages,
            "oldest_age_s": oldest_age_s,
            "dropped": s.dropped_budget + s.dropped_age + s.dropped_too_large + c.dropped_disk_full,
            "dropped_budget": s.dropped_budget,
            "dropped_age": s.dropped_age,
            "dropped_too_large": s.dropped_too_large,
            "dropped_disk_full": c.dropped_disk_full,
            "disk_full": c.disk_full,
            "refused": c.refused,
            "refused_kept": s.refused_kept,
            "refused_not_kept": s.refused_not_kept,
            "corrupt_cuts": s.corrupt_cuts,
            "corrupt_bytes": s.corrupt_bytes,
            "replayed": c.window.replayed,
            "resent": c.window.resent,
            "sent": c.window.submitted,
            "acked": c.window.acked,
            "in_flight": c.in_flight,
            "appended": s.appended,
            "spooled": c.spooled,
            "synced_seq": s.synced_seq,
            "acked_seq": s.acked_seq,
            "written_bytes": s.written_bytes,
            "fsyncs": s.fsyncs,
            "not_forwarded": c.not_forwarded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_depth_age_and_state() {
        let handle = UplinkStatsHandle::default();
        {
            let mut c = handle.lock();
            c.state = LinkState::Connected;
            c.spool.messages = 3;
            c.spool.dropped_budget = 2;
            c.spool.dropped_age = 1;
            c.window_oldest_ms = Some(now_ms() - 10_000);
        }
        let snap = handle.snapshot();
        assert_eq!(snap["state"], "connected");
        assert_eq!(snap["dropped"], 3);
        let age = snap["oldest_age_s"].as_f64().unwrap();
        assert!((9.0..60.0).contains(&age), "{age}");
    }
}
