//! Replay protection of encrypted sensor frames: per device (source and header address) the high-water
//! mark of accepted frame counters, and how it survives restarts and power cuts without a write per
//! frame. [`Marks`] is the pure state machine (what is accepted, what must be written); [`ReplayGuard`]
//! is the pipeline's handle to it; [`Persister`] is the task that writes the marks as the durable state
//! `{state_dir}/replay.0` and `replay.1` ([`crate::statefile`]: two checksummed copies written
//! alternately, fsync'ed on a blocking thread). It never decrypts and never decides which key a device
//! has (`crypto` does).
//!
//! # The guarantee
//! A frame is accepted only if its counter is above the device's mark; the mark then becomes its counter.
//! The marks are written:
//! - at a clean stop (SIGTERM, SIGINT), after the last frame, with `"clean": true`: the next start
//!   restores them exactly;
//! - while running, when a device first appears or its counter has grown by [`WRITE_AFTER_ADVANCE`] (16)
//!   since the value on disk, at most once every [`MIN_WRITE_SPACING`] (30 s); never on a steady state
//!   otherwise, so 50 nodes sending once a minute cause about one write every 16 minutes.
//!
//! At a start after a clean stop nothing accepted before can be accepted again. At a start after a power
//! cut (or a crash, `kill -9`) the file holds marks that may be behind; every device then accepts only
//! counters above its stored mark plus [`RESTART_MARGIN`] (32). Exactly which replays remain possible
//! after a power cut:
//! - a device that sent more than 16 frames in the ~30 s before the cut (a frame every 2 s or faster),
//!   so that its counter outran the mark on disk by more than the margin: its frames of those last
//!   seconds whose counters are above stored mark + 32 can be replayed, each once, and only until the
//!   device's next genuine frame (which raises the mark above them);
//! - a device first heard less than 30 s before the cut, whose mark had not been written yet: its frames
//!   of those seconds, on the same terms;
//! - none for any other device.
//!
//! The price of the margin: after a power cut, a device's genuine frames whose counters are at most its
//! stored mark + 32 are refused too (counted as `replayed`): between 16 and 32 frames per device, e.g.
//! 16-32 minutes of readings of a node that reports once a minute, until its counter passes the margin.
//! A node should never reuse a counter (keep it in its own non-volatile memory, or start each boot at a
//! value above the last one used, as the simulator does from the clock). A device whose counter reached
//! 4294967295 can send no more frames under its key: give it a new key.
//!
//! # Lost marks fail closed
//! A write torn by a power cut or a full disk damages one copy; the other still holds the previous marks
//! (a damaged copy is logged as a WARN and replaced by the next write). When no good copy is left (both
//! damaged or unreadable, or an old single `replay.json` that does not parse), the marks are lost, and
//! the wall clock cannot stand in for them (a Pi without a clock battery starts in the past): every
//! encrypted frame is refused (counted as `replayed`) with one ERROR naming the files, until an operator
//! runs `sensorgate reset-state` (which moves the damaged copies aside) and restarts the gateway. A first
//! start (no copy ever written) is not a loss. An old `replay.json` is read once at the first start
//! after an upgrade and removed once its marks are in the new copies.
//!
//! # A full disk
//! A write that fails (ENOSPC, an IO error) leaves the marks in memory, working; the statefile logs one
//! WARN naming the file system, and the write is tried again every [`MIN_WRITE_SPACING`] until it
//! succeeds. Until then a power cut falls back to the last marks written.
//!
//! # Bounds
//! Only authenticated frames create a mark, so nobody without a key can grow the table; it holds at most
//! [`MAX_DEVICES`] devices, and a frame of a new device beyond that is refused (counted as `replayed`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::statefile::{Loaded, StateFile};

/// Counter values refused above the stored mark after a start that did not follow a clean stop.
pub const RESTART_MARGIN: u32 = 32;
/// A device's counter growth past its value on disk that asks for a write.
pub const WRITE_AFTER_ADVANCE: u32 = RESTART_MARGIN / 2;
/// Least time between two writes while running.
pub const MIN_WRITE_SPACING: Duration = Duration::from_secs(30);
/// Most devices with a mark.
pub const MAX_DEVICES: usize = 1 << 18;
/// The durable state's name in the state directory (copies `replay.0` and `replay.1`).
pub const STATE_NAME: &str = "replay";
/// The single file of earlier versions, read once at an upgrade.
pub const LEGACY_FILE_NAME: &str = "replay.json";

const FORMAT: &str = "sensorgate-replay";

/// Why a frame with a valid MIC is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("counter {counter} is not above {floor}, the last accepted (or, after a power cut, the stored mark plus the restart margin)")]
    Replayed { counter: u32, floor: u32 },
    #[error("the replay table holds {MAX_DEVICES} devices; a new device is refused")]
    TableFull,
    #[error("the replay marks were lost (no good copy of {STATE_NAME}.0 or {STATE_NAME}.1 in the state directory): encrypted frames are refused until an operator runs `sensorgate reset-state` and restarts the gateway")]
    MarksLost,
}

/// One device's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// A counter is accepted only above this.
    floor: u32,
    /// The highest counter accepted since start (or the exact mark restored after a clean stop).
    accepted: Option<u32>,
    /// The value in the file, as last written or read.
    durable: Option<u32>,
}

impl Entry {
    /// What the file should hold for this device. At a clean stop: the floor itself (exact: what was
    /// accepted, or for a device not heard since an unclean start, its stored mark plus the margin).
    /// While running: what was accepted, else what the file already holds (so repeated power cuts do not
    /// pile margins onto a silent device).
    fn mark(&self, clean: bool) -> Option<u32> {
        if clean {
            Some(self.floor)
        } else {
            self.accepted.or(self.durable)
        }
    }

    fn wants_write(&self) -> bool {
        match (self.accepted, self.durable) {
            (Some(accepted), Some(durable)) => {
                accepted.saturating_sub(durable) >= WRITE_AFTER_ADVANCE
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarksFile {
    format: String,
    version: u32,
    /// Written at a clean stop: the marks are exact.
    pub clean: bool,
    pub devices: Vec<StoredMark>,
}

/// One device's mark in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMark {
    pub source: String,
    pub address: u32,
    pub counter: u32,
}

/// The marks of every device: pure, no IO, no clock.
#[derive(Debug, Default)]
pub struct Marks {
    entries: HashMap<(String, u32), Entry>,
    dirty: bool,
    /// No good copy of the marks was found: every frame is refused, nothing is written.
    lost: bool,
}

impl Marks {
    /// Marks restored from the file (or none): exact after a clean stop, raised by [`RESTART_MARGIN`]
    /// otherwise.
    pub fn restore(file: Option<&MarksFile>) -> Marks {
        let mut marks = Marks::default();
        let Some(file) = file else { return marks };
        for stored in file.devices.iter().take(MAX_DEVICES) {
            let floor = if file.clean {
                stored.counter
            } else {
                stored.counter.saturating_add(RESTART_MARGIN)
            };
            marks.entries.insert(
                (stored.source.clone(), stored.address),
                Entry {
                    floor,
                    accepted: None,
                    durable: Some(stored.counter),
                },
            );
        }
        marks
    }

    /// Marks that were lost: every frame is refused until an operator resets them (see the module).
    pub fn lost() -> Marks {
        Marks {
            lost: true,
            ..Marks::default()
        }
    }

    /// Accepts `counter` for the device if it is new, and raises its mark.
    pub fn check(&mut self, source: &str, address: u32, counter: u32) -> Result<(), Replay> {
        if self.lost {
            return Err(Replay::MarksLost);
        }
        let key = (source.to_string(), address);
        match self.entries.get_mut(&key) {
            Some(entry) => {
                if counter <= entry.floor {
                    return Err(Replay::Replayed {
                        counter,
                        floor: entry.floor,
                    });
                }
                entry.floor = counter;
                entry.accepted = Some(counter);
                self.dirty = true;
            }
            None => {
                if self.entries.len() >= MAX_DEVICES {
                    return Err(Replay::TableFull);
                }
                self.entries.insert(
                    key,
                    Entry {
                        floor: counter,
                        accepted: Some(counter),
                        durable: None,
                    },
                );
                self.dirty = true;
            }
        }
        Ok(())
    }

    /// The device's floor (a counter is accepted only above it), when it has a mark; `None` also when
    /// the marks were lost.
    pub fn floor(&self, source: &str, address: u32) -> Option<u32> {
        self.entries
            .get(&(source.to_string(), address))
            .map(|entry| entry.floor)
    }

    /// Forgets the device's mark, so that its next counter starts it anew (an explicit counter reset:
    /// a battery change, a counter that ran through its space). The caller checks the new counter
    /// right after, which writes the new mark as a first-seen device's.
    pub fn forget(&mut self, source: &str, address: u32) {
        if !self.lost
            && self
                .entries
                .remove(&(source.to_string(), address))
                .is_some()
        {
            self.dirty = true;
        }
    }

    /// Whether some device needs its mark written (first seen, or grown by [`WRITE_AFTER_ADVANCE`]).
    pub fn wants_write(&self) -> bool {
        !self.lost && self.entries.values().any(Entry::wants_write)
    }

    /// Whether anything was accepted since the last write (the final write at a clean stop is skipped
    /// when nothing changed and the file already says clean).
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// What to write now.
    pub fn snapshot(&self, clean: bool) -> MarksFile {
        let mut devices: Vec<StoredMark> = self
            .entries
            .iter()
            .filter_map(|((source, address), entry)| {
                entry.mark(clean).map(|counter| StoredMark {
                    source: source.clone(),
                    address: *address,
                    counter,
                })
            })
            .collect();
        devices.sort_by(|a, b| (&a.source, a.address).cmp(&(&b.source, b.address)));
        MarksFile {
            format: FORMAT.to_string(),
            version: 1,
            clean,
            devices,
        }
    }

    /// Records that `file` is on disk.
    pub fn written(&mut self, file: &MarksFile) {
        let mut still_dirty = false;
        for stored in &file.devices {
            if let Some(entry) = self
                .entries
                .get_mut(&(stored.source.clone(), stored.address))
            {
                entry.durable = Some(stored.counter);
                still_dirty |= entry.accepted.is_some_and(|a| a > stored.counter);
            }
        }
        self.dirty = still_dirty;
    }

    /// Devices with a mark.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The pipeline's handle: checks counters and wakes the [`Persister`] when a write is due.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    marks: Arc<Mutex<Marks>>,
    wake: Arc<Notify>,
}

impl ReplayGuard {
    /// A guard whose marks are never written (tests, the command line).
    pub fn in_memory() -> ReplayGuard {
        ReplayGuard {
            marks: Arc::new(Mutex::new(Marks::default())),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Marks> {
        // A panic while holding the lock leaves the marks as they were: usable.
        self.marks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Marks::check`], then a wake-up for the persister if a write is due.
    pub fn check(&self, source: &str, address: u32, counter: u32) -> Result<(), Replay> {
        let mut marks = self.lock();
        let outcome = marks.check(source, address, counter);
        if outcome.is_ok() && marks.wants_write() {
            self.wake.notify_one();
        }
        outcome
    }

    /// [`Marks::floor`].
    pub fn floor(&self, source: &str, address: u32) -> Option<u32> {
        self.lock().floor(source, address)
    }

    /// [`Marks::forget`] then [`Marks::check`] of `counter`, in one step: the device starts anew there.
    pub fn restart_at(&self, source: &str, address: u32, counter: u32) -> Result<(), Replay> {
        let mut marks = self.lock();
        marks.forget(source, address);
        let outcome = marks.check(source, address, counter);
        if outcome.is_ok() && marks.wants_write() {
            self.wake.notify_one();
        }
        outcome
    }
}

/// Why the replay marks could not be prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay marks: a blocking job failed: {0}")]
    Job(String),
}

/// Writes the marks: when due while running, and once more at the end.
#[derive(Debug)]
pub struct Persister {
    guard: ReplayGuard,
    /// `None` only while a write runs on a blocking thread.
    file: Option<StateFile>,
    /// An old `replay.json` to remove once the marks are in the new copies.
    legacy: Option<std::path::PathBuf>,
    /// The file on disk says `clean` (so a clean stop with nothing new need not write again).
    file_clean: bool,
    /// The last write failed: try again after [`MIN_WRITE_SPACING`] without waiting for a new frame.
    retry: bool,
    /// The marks on disk still say `clean` (arming them failed at start): they are written, not clean,
    /// at the next try even if no mark changed, so that a power cut is not taken for a clean stop.
    unarmed: bool,
}

/// Loads the marks of `state_dir` (blocking thread) and, when they say clean, rewrites them as not
/// clean before any frame is accepted, so that a power cut later is not taken for a clean stop.
pub async fn open(state_dir: &Path) -> Result<(ReplayGuard, Persister), ReplayError> {
    let dir = state_dir.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || load_and_arm(&dir))
        .await
        .map_err(|e| ReplayError::Job(e.to_string()))?;
    let guard = ReplayGuard {
        marks: Arc::new(Mutex::new(loaded.marks)),
        wake: Arc::new(Notify::new()),
    };
    Ok((
        guard.clone(),
        Persister {
            guard,
            file: Some(loaded.file),
            legacy: loaded.legacy,
            file_clean: false,
            retry: loaded.retry,
            unarmed: loaded.retry,
        },
    ))
}

/// What [`load_and_arm`] found and did.
struct LoadedMarks {
    marks: Marks,
    file: StateFile,
    legacy: Option<std::path::PathBuf>,
    retry: bool,
}

/// The marks in the copies or, at the first start after an upgrade, in the old `replay.json`.
fn read_marks(dir: &Path, loaded: Loaded) -> Result<(Option<MarksFile>, bool), String> {
    let parse = |bytes: &[u8]| match serde_json::from_slice::<MarksFile>(bytes) {
        Ok(file) if file.format == FORMAT && file.version == 1 => Ok(file),
        Ok(_) => Err("not replay marks of this version".to_string()),
        Err(error) => Err(error.to_string()),
    };
    match loaded {
        Loaded::Found(bytes) => parse(&bytes).map(|file| (Some(file), false)),
        Loaded::Lost(why) => Err(why),
        Loaded::Fresh => {
            let legacy = dir.join(LEGACY_FILE_NAME);
            match std::fs::read(&legacy) {
                Ok(bytes) => parse(&bytes)
                    .map(|file| (Some(file), true))
                    .map_err(|why| format!("{}: {why}", legacy.display())),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok((None, false)),
                Err(error) => Err(format!("{}: {error}", legacy.display())),
            }
        }
    }
}

fn load_and_arm(dir: &Path) -> LoadedMarks {
    let (mut file, loaded) = StateFile::open(dir, STATE_NAME);
    let (stored, from_legacy) = match read_marks(dir, loaded) {
        Ok(found) => found,
        Err(why) => {
            log::error!(
                "replay marks lost: no good copy ({why}); every encrypted frame is refused (counted as replayed) until an operator runs `sensorgate reset-state -c CONFIG` and restarts the gateway (the wall clock cannot tell which counters were accepted)"
            );
            return LoadedMarks {
                marks: Marks::lost(),
                file,
                legacy: None,
                retry: false,
            };
        }
    };
    let mut legacy = from_legacy.then(|| dir.join(LEGACY_FILE_NAME));
    let marks = Marks::restore(stored.as_ref());
    let mut retry = false;
    if let Some(stored) = &stored {
        if stored.clean {
            log::info!(
                "replay marks of {} devices restored exactly (clean stop)",
                stored.devices.len()
            );
            let mut armed = stored.clone();
            armed.clean = false;
            // A failure is logged by the statefile; the marks work in memory and the write is retried.
            retry = write_marks(&mut file, &armed).is_err();
            if !retry {
                remove_legacy(legacy.take().as_deref());
            }
        } else {
            log::warn!(
                "replay marks of {} devices restored after an unclean stop: each accepts only counters above its stored mark + {RESTART_MARGIN}",
                stored.devices.len()
            );
        }
    }
    LoadedMarks {
        marks,
        file,
        legacy,
        retry,
    }
}

/// `sensorgate reset-state` for the replay marks: moves the damaged copies aside (and an old
/// `replay.json` that does not parse, when there are no copies), so that the next start is a first
/// start for the marks. Marks with a good copy are left alone. Blocking IO; run with the gateway stopped.
pub fn reset_lost(state_dir: &Path) -> std::io::Result<String> {
    let (_, loaded) = StateFile::open(state_dir, STATE_NAME);
    if loaded == Loaded::Fresh && read_marks(state_dir, Loaded::Fresh).is_err() {
        let legacy = state_dir.join(LEGACY_FILE_NAME);
        let aside = state_dir.join(format!("{LEGACY_FILE_NAME}.damaged"));
        std::fs::rename(&legacy, &aside)?;
        return Ok(format!(
            "{STATE_NAME}: the damaged {} was moved to {}",
            legacy.display(),
            aside.display()
        ));
    }
    crate::statefile::reset(state_dir, STATE_NAME)
}

/// The old single file, once its marks are in the new copies.
fn remove_legacy(legacy: Option<&Path>) {
    if let Some(path) = legacy {
        if let Err(error) = std::fs::remove_file(path) {
            log::warn!(
                "replay marks: the old {} was not removed: {error}",
                path.display()
            );
        }
    }
}

/// Writes `marks` as the next copy (blocking IO).
fn write_marks(file: &mut StateFile, marks: &MarksFile) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(marks).map_err(std::io::Error::other)?;
    file.write(&bytes)
}

impl Persister {
    /// Writes when a write is due, at most once per [`MIN_WRITE_SPACING`], until `stop`; then writes the
    /// exact marks with `clean = true`. Cancel `stop` only after the last frame was checked.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut last_write: Option<tokio::time::Instant> = None;
        loop {
            let retry_at = last_write.unwrap_or_else(tokio::time::Instant::now) + MIN_WRITE_SPACING;
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.guard.wake.notified() => {}
                _ = tokio::time::sleep_until(retry_at), if self.retry => {}
            }
            if let Some(at) = last_write {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(at + MIN_WRITE_SPACING) => {}
                }
            }
            let snapshot = {
                let marks = self.guard.lock();
                if !marks.wants_write() && !self.unarmed {
                    self.retry = false;
                    continue;
                }
                marks.snapshot(false)
            };
            last_write = Some(tokio::time::Instant::now());
            self.write(snapshot).await;
        }
        let snapshot = {
            let marks = self.guard.lock();
            if marks.lost || marks.is_empty() || (self.file_clean && !marks.dirty()) {
                return;
            }
            marks.snapshot(true)
        };
        self.write(snapshot).await;
    }

    async fn write(&mut self, snapshot: MarksFile) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        let clean = snapshot.clean;
        let job = tokio::task::spawn_blocking(move || {
            let outcome = write_marks(&mut file, &snapshot);
            (file, snapshot, outcome)
        });
        match job.await {
            Ok((file, snapshot, outcome)) => {
                self.file = Some(file);
                self.retry = outcome.is_err();
                if outcome.is_ok() {
                    self.guard.lock().written(&snapshot);
                    self.file_clean = clean;
                    self.unarmed = false;
                    remove_legacy(self.legacy.take().as_deref());
                }
            }
            Err(error) => log::error!("replay marks not written: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_must_grow_per_device() {
        let mut marks = Marks::default();
        assert_eq!(marks.check("uart0", 17, 5), Ok(()));
        assert_eq!(
            marks.check("uart0", 17, 5),
            Err(Replay::Replayed {
                counter: 5,
                floor: 5
            })
        );
        assert!(marks.check("uart0", 17, 4).is_err());
        assert_eq!(marks.check("uart0", 17, 9), Ok(()));
        // Another device, and the same address on another source, are independent.
        assert_eq!(marks.check("uart0", 18, 1), Ok(()));
        assert_eq!(marks.check("lora", 17, 1), Ok(()));
        assert_eq!(marks.len(), 3);
    }

    #[test]
    fn a_forgotten_mark_starts_anew_and_is_written_again() {
        let guard = ReplayGuard::in_memory();
        guard.check("ble/A4:C1:38:8D:18:B2", 0, 900).unwrap();
        assert_eq!(guard.floor("ble/A4:C1:38:8D:18:B2", 0), Some(900));
        assert!(guard.check("ble/A4:C1:38:8D:18:B2", 0, 3).is_err());
        guard.restart_at("ble/A4:C1:38:8D:18:B2", 0, 3).unwrap();
        assert_eq!(guard.floor("ble/A4:C1:38:8D:18:B2", 0), Some(3));
        assert!(
            guard.lock().wants_write(),
            "the new mark is written like a new device's"
        );
        assert_eq!(guard.floor("other", 0), None);
        let mut lost = Marks::lost();
        lost.forget("s", 1);
        assert_eq!(lost.check("s", 1, 5), Err(Replay::MarksLost));
    }

    #[test]
    fn writes_are_asked_for_new_devices_and_after_an_advance() {
        let mut marks = Marks::default();
        marks.check("s", 1, 100).unwrap();
        assert!(marks.wants_write(), "a new device");
        let file = marks.snapshot(false);
        marks.written(&file);
        assert!(!marks.wants_write());
        for counter in 101..100 + WRITE_AFTER_ADVANCE {
            marks.check("s", 1, counter).unwrap();
            assert!(!marks.wants_write(), "{counter}");
        }
        marks.check("s", 1, 100 + WRITE_AFTER_ADVANCE).unwrap();
        assert!(marks.wants_write());
    }

    #[test]
    fn a_clean_file_restores_exactly_an_unclean_one_with_the_margin() {
        let mut marks = Marks::default();
        marks.check("s", 1, 100).unwrap();
        marks.check("s", 2, 7).unwrap();
        let clean = marks.snapshot(true);
        let mut restored = Marks::restore(Some(&clean));
        assert!(restored.check("s", 1, 100).is_err());
        assert_eq!(restored.check("s", 1, 101), Ok(()));
        let unclean = MarksFile {
            clean: false,
            ..clean
        };
        let mut restored = Marks::restore(Some(&unclean));
        assert_eq!(
            restored.check("s", 1, 100 + RESTART_MARGIN),
            Err(Replay::Replayed {
                counter: 100 + RESTART_MARGIN,
                floor: 100 + RESTART_MARGIN
            })
        );
        assert_eq!(restored.check("s", 1, 101 + RESTART_MARGIN), Ok(()));
        // A restored device that was not heard keeps its stored value in the next file while running
        // (margins do not pile up over repeated power cuts), and its floor at a clean stop (exact).
        let next = restored.snapshot(false);
        let two = next.devices.iter().find(|d| d.address == 2).unwrap();
        assert_eq!(two.counter, 7);
        let at_stop = restored.snapshot(true);
        let two = at_stop.devices.iter().find(|d| d.address == 2).unwrap();
        assert_eq!(two.counter, 7 + RESTART_MARGIN);
        // The margin saturates instead of wrapping.
        let high = MarksFile {
            devices: vec![StoredMark {
                source: "s".into(),
                address: 3,
                counter: u32::MAX - 1,
            }],
            ..unclean
        };
        let mut restored = Marks::restore(Some(&high));
        assert!(restored.check("s", 3, u32::MAX).is_err());
    }

    fn read_copy(dir: &Path) -> MarksFile {
        match StateFile::open(dir, STATE_NAME).1 {
            Loaded::Found(bytes) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_file_survives_a_restart_and_a_clean_file_is_armed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (guard, persister) = open(dir.path()).await.unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(persister.run(stop.clone()));
        guard.check("uart0", 17, 1000).unwrap();
        // The first device asks for a write: wait for it, with a deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while StateFile::open(dir.path(), STATE_NAME).1 == Loaded::Fresh {
            assert!(std::time::Instant::now() < deadline, "no write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let file = read_copy(dir.path());
        assert!(!file.clean);
        assert_eq!(file.devices[0].counter, 1000);
        guard.check("uart0", 17, 1001).unwrap();
        stop.cancel();
        task.await.unwrap();
        let file = read_copy(dir.path());
        assert!(file.clean);
        assert_eq!(file.devices[0].counter, 1001);

        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert!(guard.check("uart0", 17, 1001).is_err());
        assert!(guard.check("uart0", 17, 1002).is_ok());
        assert!(!read_copy(dir.path()).clean, "armed at start");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_retried_without_a_new_frame_and_the_marks_work_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StateFile::open(dir.path(), STATE_NAME);
        let clean = MarksFile {
            format: FORMAT.into(),
            version: 1,
            clean: true,
            devices: vec![StoredMark {
                source: "s".into(),
                address: 1,
                counter: 40,
            }],
        };
        write_marks(&mut file, &clean).unwrap();
        // The next copy cannot be written (a directory in its place): arming fails at start.
        let blocked = StateFile::copy_path(dir.path(), STATE_NAME, 1);
        std::fs::create_dir(&blocked).unwrap();
        let (guard, persister) = open(dir.path()).await.unwrap();
        assert!(read_copy(dir.path()).clean, "not armed yet");
        assert!(guard.check("s", 1, 40).is_err(), "the marks work in memory");
        std::fs::remove_dir(&blocked).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(persister.run(stop.clone()));
        // Paused time: the retry interval passes as soon as the runtime is idle; bounded to 100 s.
        for _ in 0..100 {
            if !read_copy(dir.path()).clean {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert!(!read_copy(dir.path()).clean, "armed by the retry");
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn lost_marks_refuse_every_frame_and_an_old_file_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        // An old replay.json that does not parse: lost, not silently empty.
        std::fs::write(dir.path().join(LEGACY_FILE_NAME), b"{ torn").unwrap();
        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert_eq!(guard.check("s", 1, 5), Err(Replay::MarksLost));
        // A good old file is imported, armed into the new copies, and removed.
        let old = MarksFile {
            format: FORMAT.into(),
            version: 1,
            clean: true,
            devices: vec![StoredMark {
                source: "s".into(),
                address: 1,
                counter: 40,
            }],
        };
        std::fs::write(
            dir.path().join(LEGACY_FILE_NAME),
            serde_json::to_vec(&old).unwrap(),
        )
        .unwrap();
        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert!(guard.check("s", 1, 40).is_err());
        assert_eq!(guard.check("s", 1, 41), Ok(()));
        assert!(!dir.path().join(LEGACY_FILE_NAME).exists());
        assert_eq!(read_copy(dir.path()).devices[0].counter, 40);
        // Both copies damaged: lost again, until reset.
        for slot in 0..2 {
            std::fs::write(StateFile::copy_path(dir.path(), STATE_NAME, slot), b"x").unwrap();
        }
        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert_eq!(guard.check("s", 1, 99), Err(Replay::MarksLost));
        assert!(reset_lost(dir.path()).unwrap().contains("moved aside"));
        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert_eq!(guard.check("s", 1, 99), Ok(()));
        // A damaged old file alone is reset too.
        for slot in 0..2 {
            std::fs::remove_file(StateFile::copy_path(dir.path(), STATE_NAME, slot)).ok();
        }
        std::fs::write(dir.path().join(LEGACY_FILE_NAME), b"[").unwrap();
        assert!(reset_lost(dir.path())
            .unwrap()
            .contains("replay.json.damaged"));
        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert_eq!(guard.check("s", 1, 5), Ok(()));
    }
}
