//! Replay protection of encrypted sensor frames: per device (source and header address) the high-water
//! mark of accepted frame counters, and how it survives restarts and power cuts without a write per
//! frame. [`Marks`] is the pure state machine (what is accepted, what must be written); [`ReplayGuard`]
//! is the pipeline's handle to it; [`Persister`] is the task that writes `{state_dir}/replay.json`
//! (temporary file, fsync, rename, fsync of the directory) on a blocking thread. It never decrypts and
//! never decides which key a device has (`crypto` does).
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
//! A file that cannot be read or parsed is logged as an ERROR, moved to `replay.json.corrupt`, and the
//! gateway starts with no marks (every device accepts its next counter, whatever it is): the rename makes
//! a torn file unlikely, so this means the storage failed.
//!
//! # Bounds
//! Only authenticated frames create a mark, so nobody without a key can grow the table; it holds at most
//! [`MAX_DEVICES`] devices, and a frame of a new device beyond that is refused (counted as `replayed`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Counter values refused above the stored mark after a start that did not follow a clean stop.
pub const RESTART_MARGIN: u32 = 32;
/// A device's counter growth past its value on disk that asks for a write.
pub const WRITE_AFTER_ADVANCE: u32 = RESTART_MARGIN / 2;
/// Least time between two writes while running.
pub const MIN_WRITE_SPACING: Duration = Duration::from_secs(30);
/// Most devices with a mark.
pub const MAX_DEVICES: usize = 1 << 18;
/// The file in the state directory.
pub const FILE_NAME: &str = "replay.json";

const FORMAT: &str = "sensorgate-replay";

/// Why a frame with a valid MIC is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("counter {counter} is not above {floor}, the last accepted (or, after a power cut, the stored mark plus the restart margin)")]
    Replayed { counter: u32, floor: u32 },
    #[error("the replay table holds {MAX_DEVICES} devices; a new device is refused")]
    TableFull,
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

    /// Accepts `counter` for the device if it is new, and raises its mark.
    pub fn check(&mut self, source: &str, address: u32, counter: u32) -> Result<(), Replay> {
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

    /// Whether some device needs its mark written (first seen, or grown by [`WRITE_AFTER_ADVANCE`]).
    pub fn wants_write(&self) -> bool {
        self.entries.values().any(Entry::wants_write)
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
}

/// Why the replay file could not be prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("replay marks {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("replay marks: a blocking job failed: {0}")]
    Job(String),
}

/// Writes the marks: when due while running, and once more at the end.
#[derive(Debug)]
pub struct Persister {
    guard: ReplayGuard,
    path: PathBuf,
    /// The file on disk says `clean` (so a clean stop with nothing new need not write again).
    file_clean: bool,
}

/// Loads the marks of `state_dir` (blocking thread) and, when the file says clean, rewrites it as not
/// clean before any frame is accepted, so that a power cut later is not taken for a clean stop.
pub async fn open(state_dir: &Path) -> Result<(ReplayGuard, Persister), ReplayError> {
    let path = state_dir.join(FILE_NAME);
    let job_path = path.clone();
    let (marks, file_clean) = tokio::task::spawn_blocking(move || load_and_arm(&job_path))
        .await
        .map_err(|e| ReplayError::Job(e.to_string()))??;
    let guard = ReplayGuard {
        marks: Arc::new(Mutex::new(marks)),
        wake: Arc::new(Notify::new()),
    };
    Ok((
        guard.clone(),
        Persister {
            guard,
            path,
            file_clean,
        },
    ))
}

fn load_and_arm(path: &Path) -> Result<(Marks, bool), ReplayError> {
    let io = |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<MarksFile>(&bytes) {
            Ok(file) if file.format == FORMAT && file.version == 1 => Some(file),
            _ => {
                let aside = path.with_extension("json.corrupt");
                log::error!(
                    "replay marks {} unreadable: moved to {}; starting without marks, so each device accepts its next counter whatever it is",
                    path.display(),
                    aside.display()
                );
                std::fs::rename(path, &aside).map_err(io)?;
                None
            }
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(io(error)),
    };
    let marks = Marks::restore(file.as_ref());
    if let Some(file) = &file {
        if file.clean {
            log::info!(
                "replay marks of {} devices restored exactly (clean stop)",
                file.devices.len()
            );
            let mut armed = file.clone();
            armed.clean = false;
            write_file(path, &armed).map_err(io)?;
        } else {
            log::warn!(
                "replay marks of {} devices restored after an unclean stop: each accepts only counters above its stored mark + {RESTART_MARGIN}",
                file.devices.len()
            );
        }
    }
    Ok((marks, false))
}

/// Writes `file` crash-safely: a temporary file, fsync, rename over the old one, fsync of the directory.
pub fn write_file(path: &Path, file: &MarksFile) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec(file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Persister {
    /// Writes when a write is due, at most once per [`MIN_WRITE_SPACING`], until `stop`; then writes the
    /// exact marks with `clean = true`. Cancel `stop` only after the last frame was checked.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut last_write: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.guard.wake.notified() => {}
            }
            if let Some(at) = last_write {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep_until(at + MIN_WRITE_SPACING) => {}
                }
            }
            let snapshot = {
                let marks = self.guard.lock();
                if !marks.wants_write() {
                    continue;
                }
                marks.snapshot(false)
            };
            last_write = Some(tokio::time::Instant::now());
            self.write(snapshot).await;
        }
        let snapshot = {
            let marks = self.guard.lock();
            if marks.is_empty() || (self.file_clean && !marks.dirty()) {
                return;
            }
            marks.snapshot(true)
        };
        self.write(snapshot).await;
    }

    async fn write(&mut self, snapshot: MarksFile) {
        let path = self.path.clone();
        let clean = snapshot.clean;
        let job =
            tokio::task::spawn_blocking(move || write_file(&path, &snapshot).map(|()| snapshot));
        match job.await {
            Ok(Ok(snapshot)) => {
                self.guard.lock().written(&snapshot);
                self.file_clean = clean;
            }
            Ok(Err(error)) => log::error!(
                "replay marks not written to {}: {error}; retried when the next write is due",
                self.path.display()
            ),
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

    #[tokio::test]
    async fn the_file_survives_a_restart_and_a_clean_file_is_armed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let (guard, persister) = open(dir.path()).await.unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(persister.run(stop.clone()));
        guard.check("uart0", 17, 1000).unwrap();
        // The first device asks for a write: wait for it, with a deadline.
        let path = dir.path().join(FILE_NAME);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "no write");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let file: MarksFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(!file.clean);
        assert_eq!(file.devices[0].counter, 1000);
        guard.check("uart0", 17, 1001).unwrap();
        stop.cancel();
        task.await.unwrap();
        let file: MarksFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(file.clean);
        assert_eq!(file.devices[0].counter, 1001);

        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert!(guard.check("uart0", 17, 1001).is_err());
        assert!(guard.check("uart0", 17, 1002).is_ok());
        let file: MarksFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!(!file.clean, "armed at start");
    }

    #[tokio::test]
    async fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{ torn").unwrap();
        let (guard, _persister) = open(dir.path()).await.unwrap();
        assert!(guard.check("s", 1, 0).is_ok());
        assert!(dir.path().join("replay.json.corrupt").exists());
    }
}
