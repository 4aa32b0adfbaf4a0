//! The live view: what the pipeline has seen, shared read-only with whoever shows it (the status page,
//! `/metrics`). The pipeline writes two things here and reads nothing back: once a second, when anything
//! changed, a snapshot of its counters and of the device registry; and, for every frame, an entry of the
//! frame inspector: its time, raw bytes and either what was decoded or the exact reason it was refused.
//!
//! Bounds: the inspector keeps the last [`FRAMES_PER_SOURCE`] frames of each configured source (older
//! ones are overwritten and counted in [`LiveView::frames_overwritten`]); each entry keeps at most
//! [`MAX_RAW_BYTES`] raw bytes (the rest is cut, the entry says so) and error texts of at most
//! [`MAX_ERROR_CHARS`]. The snapshot holds as many devices as the registry tracks, which its own cap bounds.
//! Writers hold a lock only to push or swap; readers copy what they need out.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde_json::Value as Json;

use crate::devices::DeviceSnapshot;
use crate::lock::lock;
use crate::stats::Stats;

/// Frames the inspector keeps per source.
pub const FRAMES_PER_SOURCE: usize = 256;
/// Raw bytes an inspector entry keeps (a frame longer than this is shown cut).
pub const MAX_RAW_BYTES: usize = 512;
/// Characters of an error text an inspector entry keeps.
pub const MAX_ERROR_CHARS: usize = 300;

/// The pipeline's state at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stats: Stats,
    pub devices: Vec<DeviceSnapshot>,
    pub devices_online: usize,
    pub devices_known: usize,
    /// When the pipeline started, and when this snapshot was taken, on the registry's clock.
    pub started: Instant,
    pub taken: Instant,
    /// `taken` on the wall clock, to turn the registry's instants into timestamps.
    pub taken_wall: SystemTime,
}

impl Snapshot {
    /// The wall-clock time of an instant of the registry's clock (a device's last reading).
    pub fn wall_time(&self, at: Instant) -> SystemTime {
        let ago = self.taken.saturating_duration_since(at);
        self.taken_wall.checked_sub(ago).unwrap_or(self.taken_wall)
    }
}

/// What became of one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameOutcome {
    /// Decoded: one JSON object per reading, `{"address", "device", "fields", "result"}`.
    Decoded(Vec<Json>),
    /// Refused, with the reason (`CRC mismatch...`, `unknown LPP type ... at byte N`, a replay...).
    Refused(String),
}

/// One entry of the frame inspector.
#[derive(Debug, Clone, PartialEq)]
pub struct InspectedFrame {
    /// Increasing over all sources: a reader asks for the frames after the last one it saw.
    pub id: u64,
    pub at: SystemTime,
    pub source: String,
    /// At most [`MAX_RAW_BYTES`] of the frame's bytes.
    pub raw: Vec<u8>,
    /// Whether `raw` was cut.
    pub cut: bool,
    pub outcome: FrameOutcome,
}

#[derive(Debug, Default)]
struct Rings {
    next_id: u64,
    by_source: BTreeMap<String, VecDeque<InspectedFrame>>,
}

#[derive(Debug)]
struct Inner {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    changed: AtomicBool,
    rings: Mutex<Rings>,
    overwritten: AtomicU64,
}

/// A handle to the live view; clones share it.
#[derive(Debug, Clone)]
pub struct LiveView {
    inner: Arc<Inner>,
}

impl Default for LiveView {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveView {
    /// Empty: no snapshot yet, no frames.
    pub fn new() -> Self {
        LiveView {
            inner: Arc::new(Inner {
                snapshot: Mutex::new(None),
                changed: AtomicBool::new(true),
                rings: Mutex::new(Rings::default()),
                overwritten: AtomicU64::new(0),
            }),
        }
    }

    /// The pipeline's mark that something changed since the last snapshot.
    pub fn touch(&self) {
        self.inner.changed.store(true, Ordering::Relaxed);
    }

    /// Whether a snapshot is due (something changed since the last one); clears the mark.
    pub fn take_changed(&self) -> bool {
        self.inner.changed.swap(false, Ordering::Relaxed)
    }

    /// Replaces the snapshot.
    pub fn store(&self, snapshot: Snapshot) {
        *lock(&self.inner.snapshot) = Some(Arc::new(snapshot));
    }

    /// The last snapshot, if the pipeline took one.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        lock(&self.inner.snapshot).clone()
    }

    /// Adds a frame to its source's ring, overwriting (and counting) the oldest when the ring is full.
    pub fn record(&self, source: &str, bytes: &[u8], at: SystemTime, outcome: FrameOutcome) {
        let cut = bytes.len() > MAX_RAW_BYTES;
        let raw = bytes[..bytes.len().min(MAX_RAW_BYTES)].to_vec();
        let outcome = match outcome {
            FrameOutcome::Refused(error) if error.chars().count() > MAX_ERROR_CHARS => {
                FrameOutcome::Refused(error.chars().take(MAX_ERROR_CHARS).collect())
            }
            other => other,
        };
        let mut rings = lock(&self.inner.rings);
        rings.next_id += 1;
        let id = rings.next_id;
        let ring = match rings.by_source.get_mut(source) {
            Some(ring) => ring,
            None => rings.by_source.entry(source.to_string()).or_default(),
        };
        if ring.len() >= FRAMES_PER_SOURCE {
            ring.pop_front();
            self.inner.overwritten.fetch_add(1, Ordering::Relaxed);
        }
        ring.push_back(InspectedFrame {
            id,
            at,
            source: source.to_string(),
            raw,
            cut,
            outcome,
        });
    }

    /// The frames with an id above `after`, oldest first, of every source (or of `source` only), at most
    /// `limit` (the newest ones when there are more).
    pub fn frames(&self, after: u64, source: Option<&str>, limit: usize) -> Vec<InspectedFrame> {
        let rings = lock(&self.inner.rings);
        // Each ring is in id order (ids are given under this lock): merging the rings keeps that order
        // without a sort, whose code would be compiled for this type alone.
        let mut heads: Vec<_> = rings
            .by_source
            .iter()
            .filter(|(name, _)| source.is_none_or(|wanted| wanted == name.as_str()))
            .map(|(_, ring)| ring.iter().filter(|frame| frame.id > after).peekable())
            .collect();
        let mut frames = Vec::new();
        loop {
            let mut oldest: Option<(usize, u64)> = None;
            for (index, head) in heads.iter_mut().enumerate() {
                if let Some(frame) = head.peek() {
                    if oldest.is_none_or(|(_, id)| frame.id < id) {
                        oldest = Some((index, frame.id));
                    }
                }
            }
            let Some((index, _)) = oldest else { break };
            frames.extend(heads[index].next().cloned());
        }
        drop(heads);
        drop(rings);
        let skip = frames.len().saturating_sub(limit);
        frames.split_off(skip)
    }

    /// Frames overwritten in the rings since the start.
    pub fn frames_overwritten(&self) -> u64 {
        self.inner.overwritten.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_per_source_and_count_what_they_overwrite() {
        let live = LiveView::new();
        let now = SystemTime::UNIX_EPOCH;
        for i in 0..(FRAMES_PER_SOURCE + 10) {
            live.record("a", &[i as u8], now, FrameOutcome::Refused("CRC".into()));
        }
        live.record(
            "b",
            &[0; MAX_RAW_BYTES + 5],
            now,
            FrameOutcome::Decoded(vec![]),
        );
        assert_eq!(live.frames_overwritten(), 10);
        let a = live.frames(0, Some("a"), usize::MAX);
        assert_eq!(a.len(), FRAMES_PER_SOURCE);
        assert_eq!(a[0].id, 11, "the oldest ten were overwritten");
        let b = live.frames(0, Some("b"), 10);
        assert_eq!(b.len(), 1);
        assert!(b[0].cut);
        assert_eq!(b[0].raw.len(), MAX_RAW_BYTES);
        let newest = live.frames(0, None, 2);
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[1].source, "b");
        assert!(live.frames(newest[1].id, None, 10).is_empty());
    }

    #[test]
    fn frames_of_every_source_come_oldest_first() {
        let live = LiveView::new();
        let now = SystemTime::UNIX_EPOCH;
        for source in ["b", "a", "b", "c", "a", "a", "b"] {
            live.record(source, &[], now, FrameOutcome::Decoded(vec![]));
        }
        let ids = |frames: Vec<InspectedFrame>| frames.iter().map(|f| f.id).collect::<Vec<_>>();
        assert_eq!(ids(live.frames(0, None, usize::MAX)), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(ids(live.frames(2, None, usize::MAX)), [3, 4, 5, 6, 7]);
        assert_eq!(ids(live.frames(0, None, 3)), [5, 6, 7]);
        assert_eq!(ids(live.frames(1, Some("b"), usize::MAX)), [3, 7]);
    }

    #[test]
    fn long_errors_are_cut_and_the_change_mark_is_taken_once() {
        let live = LiveView::new();
        let long = "x".repeat(MAX_ERROR_CHARS * 2);
        live.record(
            "a",
            &[],
            SystemTime::UNIX_EPOCH,
            FrameOutcome::Refused(long),
        );
        match &live.frames(0, None, 1)[0].outcome {
            FrameOutcome::Refused(text) => assert_eq!(text.chars().count(), MAX_ERROR_CHARS),
            other => panic!("{other:?}"),
        }
        assert!(live.take_changed());
        assert!(!live.take_changed());
        live.touch();
        assert!(live.take_changed());
        assert!(live.snapshot().is_none());
    }
}
