//! The gateway's own frame counters for sealing commands (AES-128-CCM, gateway -> node): per device
//! (source and header address) and key, never the same counter twice under a key, across restarts,
//! power cuts, a full table and the end of the counter space. [`Counters`] is the pure state machine;
//! [`DownlinkCounters`] is the router's handle; [`Writer`] is the task that stores the reservations as
//! the durable state `{state_dir}/downlink-counters.0` and `.1` ([`crate::statefile`]).
//!
//! # Reservations, not a write per command
//! A counter is used only below a ceiling already on disk. Each device has one (its own, once written;
//! until then the shared "fresh" ceiling every new device starts under). When a device has used half of
//! what is reserved, the writer stores a ceiling [`LEASE`] (1024) above its next counter, in the
//! background; a device that reaches its stored ceiling before that write lands has its command refused
//! (never sealed with a counter that a restart could hand out again). At every start each stored device
//! continues at its stored ceiling, new devices start at the stored fresh ceiling (above every counter
//! a device without its own ceiling could have used), and new reservations are stored before the first
//! command: so a restart, a crash or a power cut always starts above every counter used before, at the
//! cost of at most [`LEASE`] counters per device and start. (A stored device continues at the stored
//! fresh ceiling when that is higher: forgotten or given a new key after its entry was written, it may
//! have used counters below that ceiling since.) The first start (no state yet, e.g. after an
//! upgrade) begins at the old clock-based counter (16 per second since 2023-11-14), above what earlier
//! versions sent.
//!
//! # Taken only for a frame that is queued
//! The router asks for the next counter of a device ([`DownlinkCounters::peek`]) to seal a frame, and
//! [`DownlinkCounters::commit`]s it only once the frame is queued; a frame refused before (too long, a
//! full queue) leaves the counter to the next frame. A counter of a frame never sent may be used again:
//! the nonce repeats only if two frames sealed with it are both sent.
//!
//! # A full table
//! At most [`MAX_DEVICES`] devices are tracked; beyond it the one used the longest ago is forgotten and
//! the floor (stored with the next write) rises to its reserved ceiling: every device that starts anew
//! starts above every counter a forgotten device used. Such a device waits (its command refused as "not
//! reserved yet") until a fresh ceiling above the floor is stored, a second or so.
//!
//! # A new key, the end of the counter space, a lost state
//! Each device's state is tied to its key (a 4-byte key check value: the first bytes of AES of a zero
//! block, which tells keys apart and reveals nothing usable of the key). Giving a device (or its
//! source) a new `key_file` starts its counters anew at the next command, since nonces under a new key
//! are new; a retired key must never be used again. A device whose counter reached 4294967295 gets its
//! commands refused with a reason saying to give it a new key. When no good copy of the state is left,
//! every command to an encrypted source is refused (one ERROR) until an operator runs
//! `sensorgate reset-state`; the next start then begins at the clock-based counter, which is above
//! every counter used before only if the clock is right: otherwise give the nodes new keys.
//!
//! # A full disk
//! A write that fails keeps everything in memory; the statefile logs one WARN naming the file system,
//! and the writer tries again every [`RETRY_AFTER`]. Devices go on using what is already reserved; a
//! device that reaches its stored ceiling is refused until a write succeeds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::crypto::FrameKey;
use crate::statefile::{Loaded, StateFile};

/// The durable state's name in the state directory.
pub const STATE_NAME: &str = "downlink-counters";
/// Counters reserved per device by one write.
pub const LEASE: u64 = 1024;
/// The most devices tracked; beyond it the one used the longest ago is forgotten (see the module).
pub const MAX_DEVICES: usize = 10_000;
/// Least time between two writes (coalesces a burst of new devices).
pub const MIN_WRITE_SPACING: Duration = Duration::from_secs(1);
/// How soon a failed write is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// One past the last counter: a counter is a u32.
const END: u64 = 1 << 32;
const FORMAT: &str = "sensorgate-downlink-counters";

/// Why no counter was given: the command is refused with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterRefusal {
    #[error("the gateway's frame counter for this device reached 4294967295: its key can seal no more commands; give the device a new key (its [[device]] key_file, or its source's key_file) and restart the gateway")]
    Exhausted,
    #[error("the gateway's next frame counters for this device are not stored yet (the state directory's file system is full or failing, or many new devices at once); refused rather than risk reusing a counter; try again later")]
    NotReserved,
    #[error("the gateway's downlink frame counters were lost (no good copy of {STATE_NAME}.0 or .1 in the state directory): commands to encrypted sources are refused until an operator runs `sensorgate reset-state` and restarts the gateway")]
    Lost,
}

/// The key check value of a frame key: tells keys apart without revealing one.
pub fn key_check(key: &FrameKey) -> u32 {
    key.check_value()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Device {
    key_check: u32,
    /// The next counter to use.
    next: u64,
    /// Its own ceiling on disk (every counter used is below it); `None` until written.
    durable: Option<u64>,
    /// For forgetting the one used the longest ago.
    last_used: u64,
}

/// The stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersFile {
    format: String,
    version: u32,
    /// Devices without a ceiling of their own use counters below this.
    fresh_ceiling: u64,
    /// Above every counter a forgotten device used.
    floor: u64,
    devices: Vec<StoredDevice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredDevice {
    source: String,
    address: u32,
    key_check: u32,
    ceiling: u64,
}

/// Every device's counters: pure, no IO, no clock.
#[derive(Debug)]
pub struct Counters {
    devices: HashMap<(String, u32), Device>,
    /// Where a device without state starts (at least).
    fresh_start: u64,
    /// On disk: devices without a ceiling of their own use counters below it.
    fresh_ceiling: u64,
    /// Above every counter a forgotten device used (stored with the next write).
    floor: u64,
    lost: bool,
    /// `false`: nothing is ever written (tests, tools): no ceiling applies.
    durable: bool,
    tick: u64,
    /// [`MAX_DEVICES`] (smaller in tests).
    max_devices: usize,
}

impl Counters {
    /// Counters kept in memory only, starting at `start`.
    pub fn in_memory(start: u32) -> Counters {
        Counters {
            devices: HashMap::new(),
            fresh_start: u64::from(start),
            fresh_ceiling: END,
            floor: 0,
            lost: false,
            durable: false,
            tick: 0,
            max_devices: MAX_DEVICES,
        }
    }

    /// The state at a start: from the stored file, or (first start) from `clock_start`. Nothing may be
    /// used before the [`Counters::snapshot`] it asks for is written ([`Counters::written`]).
    pub fn restore(stored: Option<&CountersFile>, clock_start: u32) -> Counters {
        let mut counters = Counters {
            fresh_ceiling: 0,
            durable: true,
            ..Counters::in_memory(clock_start)
        };
        let Some(stored) = stored else {
            counters.fresh_ceiling = counters.fresh_start;
            return counters;
        };
        counters.floor = stored.floor.min(END);
        counters.fresh_start = stored.fresh_ceiling.max(stored.floor).min(END);
        counters.fresh_ceiling = counters.fresh_start;
        for device in stored.devices.iter().take(MAX_DEVICES) {
            let ceiling = device.ceiling.min(END);
            // Above the fresh ceiling too: a device forgotten (or given a new key) after this entry was
            // written may have used counters under the fresh ceiling since, with no entry of its own.
            counters.devices.insert(
                (device.source.clone(), device.address),
                Device {
                    key_check: device.key_check,
                    next: ceiling.max(counters.fresh_start),
                    durable: Some(ceiling),
                    last_used: 0,
                },
            );
        }
        counters
    }

    /// Lost state: everything refused (see the module).
    pub fn lost() -> Counters {
        Counters {
            lost: true,
            ..Counters::restore(None, 0)
        }
    }

    /// The counter below which `device` may seal now.
    fn limit(&self, device: &Device) -> u64 {
        if !self.durable {
            return END;
        }
        device.durable.unwrap_or(self.fresh_ceiling)
    }

    /// Where a device with no state (or a new key) starts.
    fn start(&self) -> u64 {
        self.fresh_start.max(self.floor)
    }

    /// The device's state, created (forgetting the one used the longest ago when the table is full) or
    /// started anew for a new key.
    fn device(&mut self, source: &str, address: u32, key_check: u32) -> &mut Device {
        self.tick += 1;
        let key = (source.to_string(), address);
        let start = self.start();
        if !self.devices.contains_key(&key) && self.devices.len() >= self.max_devices {
            self.forget_oldest();
        }
        let tick = self.tick;
        let device = self.devices.entry(key).or_insert(Device {
            key_check,
            next: start,
            durable: None,
            last_used: tick,
        });
        if device.key_check != key_check {
            *device = Device {
                key_check,
                next: start,
                durable: None,
                last_used: tick,
            };
        }
        device.last_used = tick;
        device
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .devices
            .iter()
            .min_by_key(|(_, d)| d.last_used)
            .map(|(k, d)| (k.clone(), *d));
        if let Some((key, device)) = oldest {
            let limit = self.limit(&device);
            self.floor = self.floor.max(limit).max(device.next);
            self.devices.remove(&key);
        }
    }

    /// The counter the `offset`-th frame of a command to the device would be sealed with, if it may.
    pub fn peek(
        &mut self,
        source: &str,
        address: u32,
        key_check: u32,
        offset: u64,
    ) -> Result<u32, CounterRefusal> {
        if self.lost {
            return Err(CounterRefusal::Lost);
        }
        let device = *self.device(source, address, key_check);
        let counter = device.next + offset;
        if counter >= END {
            return Err(CounterRefusal::Exhausted);
        }
        if counter >= self.limit(&device) {
            return Err(CounterRefusal::NotReserved);
        }
        u32::try_from(counter).map_err(|_| CounterRefusal::Exhausted)
    }

    /// The frame sealed with `counter` is queued: the device's next counter is above it.
    pub fn commit(&mut self, source: &str, address: u32, counter: u32) {
        if let Some(device) = self.devices.get_mut(&(source.to_string(), address)) {
            device.next = device.next.max(u64::from(counter) + 1);
        }
    }

    /// Whether a write should store more: a device (or the fresh ceiling) is at least half used.
    pub fn wants_write(&self) -> bool {
        if self.lost || !self.durable {
            return false;
        }
        let half = LEASE / 2;
        self.fresh_ceiling < END.min(self.start() + half)
            || self
                .devices
                .values()
                .any(|d| self.limit(d) < END.min(d.next + half))
    }

    /// What to write: every device's ceiling [`LEASE`] above its next counter (never below what is
    /// stored or below the fresh ceiling it may be using), the fresh ceiling [`LEASE`] above the start.
    pub fn snapshot(&self) -> CountersFile {
        let mut devices: Vec<StoredDevice> = self
            .devices
            .iter()
            .map(|((source, address), d)| StoredDevice {
                source: source.clone(),
                address: *address,
                key_check: d.key_check,
                ceiling: (d.next + LEASE).max(self.limit(d)).min(END),
            })
            .collect();
        devices.sort_by(|a, b| (&a.source, a.address).cmp(&(&b.source, b.address)));
        CountersFile {
            format: FORMAT.to_string(),
            version: 1,
            fresh_ceiling: (self.start() + LEASE).max(self.fresh_ceiling).min(END),
            floor: self.floor,
            devices,
        }
    }

    /// `file` is on disk: its ceilings apply.
    pub fn written(&mut self, file: &CountersFile) {
        self.fresh_ceiling = self.fresh_ceiling.max(file.fresh_ceiling);
        for stored in &file.devices {
            if let Some(device) = self
                .devices
                .get_mut(&(stored.source.clone(), stored.address))
            {
                if device.key_check == stored.key_check {
                    device.durable = Some(device.durable.unwrap_or(0).max(stored.ceiling));
                }
            }
        }
    }

    /// Devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// The first counter of earlier versions, from the clock; saturates in 2032, which is why it is used
/// only at a first start.
pub use crate::crypto::frame::clock_counter;

/// The router's handle: takes counters and wakes the [`Writer`] when more must be reserved.
#[derive(Debug, Clone)]
pub struct DownlinkCounters {
    counters: Arc<Mutex<Counters>>,
    wake: Arc<Notify>,
}

impl DownlinkCounters {
    /// Counters that are never written, starting at the clock (tests, tools).
    pub fn in_memory() -> DownlinkCounters {
        DownlinkCounters::new(Counters::in_memory(clock_counter(SystemTime::now())))
    }

    fn new(counters: Counters) -> DownlinkCounters {
        DownlinkCounters {
            counters: Arc::new(Mutex::new(counters)),
            wake: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // A panic while holding the lock leaves the counters as they were: usable.
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Counters::peek`] with the device's key; wakes the writer when more must be reserved.
    pub fn peek(
        &self,
        source: &str,
        address: u32,
        key: &FrameKey,
        offset: u64,
    ) -> Result<u32, CounterRefusal> {
        let mut counters = self.lock();
        let outcome = counters.peek(source, address, key_check(key), offset);
        if counters.wants_write() {
            self.wake.notify_one();
        }
        outcome
    }

    /// [`Counters::commit`]; wakes the writer when more must be reserved.
    pub fn commit(&self, source: &str, address: u32, counter: u32) {
        let mut counters = self.lock();
        counters.commit(source, address, counter);
        if counters.wants_write() {
            self.wake.notify_one();
        }
    }
}

/// Stores the reservations while the router runs.
#[derive(Debug)]
pub struct Writer {
    handle: DownlinkCounters,
    /// `None` only while a write runs on a blocking thread.
    file: Option<StateFile>,
    /// The last write failed: try again after [`RETRY_AFTER`].
    retry: bool,
}

/// The router's handle and the writer that stores its reservations.
pub type Opened = (DownlinkCounters, Writer);

/// Loads the counters of `state_dir` and stores the reservations of this start before returning, on a
/// blocking thread. A failed write is logged (by the statefile) and retried by the [`Writer`]; until it
/// succeeds, commands to encrypted sources are refused as not reserved.
pub async fn open(state_dir: &Path) -> Result<Opened, String> {
    let dir = state_dir.to_path_buf();
    let clock_start = clock_counter(SystemTime::now());
    let (counters, file, retry) =
        tokio::task::spawn_blocking(move || load_and_reserve(&dir, clock_start))
            .await
            .map_err(|e| format!("downlink counters: a blocking job failed: {e}"))?;
    let handle = DownlinkCounters::new(counters);
    Ok((
        handle.clone(),
        Writer {
            handle,
            file: Some(file),
            retry,
        },
    ))
}

fn load_and_reserve(dir: &Path, clock_start: u32) -> (Counters, StateFile, bool) {
    let (mut file, loaded) = StateFile::open(dir, STATE_NAME);
    let stored = match loaded {
        Loaded::Fresh => Ok(None),
        Loaded::Found(bytes) => match serde_json::from_slice::<CountersFile>(&bytes) {
            Ok(stored) if stored.format == FORMAT && stored.version == 1 => Ok(Some(stored)),
            Ok(_) => Err("not downlink counters of this version".to_string()),
            Err(error) => Err(error.to_string()),
        },
        Loaded::Lost(why) => Err(why),
    };
    let mut counters = match stored {
        Ok(stored) => Counters::restore(stored.as_ref(), clock_start),
        Err(why) => {
            log::error!(
                "downlink frame counters lost: no good copy ({why}); every command to an encrypted source is refused until an operator runs `sensorgate reset-state -c CONFIG` and restarts the gateway (the wall clock cannot tell which counters were used)"
            );
            return (Counters::lost(), file, false);
        }
    };
    let snapshot = counters.snapshot();
    let retry = match write_counters(&mut file, &snapshot) {
        Ok(()) => {
            counters.written(&snapshot);
            false
        }
        Err(_) => true,
    };
    (counters, file, retry)
}

fn write_counters(file: &mut StateFile, counters: &CountersFile) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(counters).map_err(std::io::Error::other)?;
    file.write(&bytes)
}

/// `sensorgate reset-state` for the downlink counters (see [`crate::statefile::reset`]).
pub fn reset_lost(state_dir: &Path) -> std::io::Result<String> {
    crate::statefile::reset(state_dir, STATE_NAME)
}

impl Writer {
    /// Writes when more must be reserved (at most once per [`MIN_WRITE_SPACING`]), and again every
    /// [`RETRY_AFTER`] while writes fail, until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.handle.wake.notified() => {}
                _ = tokio::time::sleep(RETRY_AFTER), if self.retry => {}
            }
            let snapshot = {
                let counters = self.handle.lock();
                if !counters.wants_write() {
                    self.retry = false;
                    continue;
                }
                counters.snapshot()
            };
            self.write(snapshot).await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(MIN_WRITE_SPACING) => {}
            }
        }
    }

    async fn write(&mut self, snapshot: CountersFile) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        let job = tokio::task::spawn_blocking(move || {
            let outcome = write_counters(&mut file, &snapshot);
            (file, snapshot, outcome)
        });
        match job.await {
            Ok((file, snapshot, outcome)) => {
                self.file = Some(file);
                self.retry = outcome.is_err();
                if outcome.is_ok() {
                    self.handle.lock().written(&snapshot);
                }
            }
            Err(error) => log::error!("downlink counters not written: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(counters: &mut Counters) -> CountersFile {
        let file = counters.snapshot();
        counters.written(&file);
        file
    }

    fn take(counters: &mut Counters, address: u32) -> Result<u32, CounterRefusal> {
        let counter = counters.peek("s", address, 7, 0)?;
        counters.commit("s", address, counter);
        Ok(counter)
    }

    #[test]
    fn nothing_is_used_before_its_reservation_is_stored() {
        let mut counters = Counters::restore(None, 5000);
        assert_eq!(take(&mut counters, 1), Err(CounterRefusal::NotReserved));
        assert!(counters.wants_write());
        written(&mut counters);
        assert_eq!(take(&mut counters, 1), Ok(5000));
        assert_eq!(take(&mut counters, 1), Ok(5001));
        assert_eq!(
            take(&mut counters, 2),
            Ok(5000),
            "another device, its own nonces"
        );
    }

    #[test]
    fn a_restart_starts_above_every_counter_used_whenever_the_last_write_was() {
        let mut counters = Counters::restore(None, 100);
        let mut file = written(&mut counters);
        let mut used = Vec::new();
        for round in 0..5 {
            // Use counters without writing until refused, writing only when asked (sometimes not).
            for i in 0..3000 {
                match take(&mut counters, 1) {
                    Ok(c) => used.push(c),
                    Err(CounterRefusal::NotReserved) => {
                        if (i + round) % 3 != 0 {
                            file = written(&mut counters);
                        } else {
                            break;
                        }
                    }
                    Err(other) => panic!("{other}"),
                }
            }
            // A power cut: only `file` survives.
            counters = Counters::restore(Some(&file), 0);
            file = written(&mut counters);
            let next = take(&mut counters, 1).unwrap();
            assert!(used.iter().all(|u| *u < next), "round {round}: {next}");
            used.push(next);
        }
    }

    #[test]
    fn a_forgotten_device_starts_above_what_it_used() {
        let mut counters = Counters::restore(None, 0);
        written(&mut counters);
        for _ in 0..600 {
            take(&mut counters, 0).unwrap();
        }
        let file = written(&mut counters);
        let last = 599;
        for address in 1..=MAX_DEVICES as u32 {
            match take(&mut counters, address) {
                Ok(_) => {}
                Err(CounterRefusal::NotReserved) => {
                    written(&mut counters);
                    take(&mut counters, address).unwrap();
                }
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(counters.len(), MAX_DEVICES);
        // Device 0 was forgotten: it starts above its reserved ceiling, once that is stored.
        let again = match take(&mut counters, 0) {
            Ok(c) => c,
            Err(_) => {
                written(&mut counters);
                take(&mut counters, 0).unwrap()
            }
        };
        assert!(again > last);
        // And after a power cut that kept only the file from before the flood.
        let mut restored = Counters::restore(Some(&file), 0);
        written(&mut restored);
        assert!(take(&mut restored, 0).unwrap() > last);
    }

    #[test]
    fn a_device_forgotten_after_its_entry_was_written_restarts_above_what_it_used_since() {
        let mut counters = Counters::restore(None, 0);
        written(&mut counters);
        assert_eq!(take(&mut counters, 0), Ok(0));
        // Other devices were forgotten meanwhile: the floor rose, and a fresh ceiling above it is stored
        // together with device 0's entry (ceiling 1025).
        counters.floor = 5000;
        let file = written(&mut counters);
        assert_eq!(file.fresh_ceiling, 6024);
        // Device 0 is forgotten and comes back: it uses counters under the stored fresh ceiling, with
        // no write, while the file still holds its old entry.
        counters.forget_oldest();
        let since = take(&mut counters, 0).unwrap();
        assert_eq!(since, 5000);
        // A power cut: the restored device starts above what it used since.
        let mut restored = Counters::restore(Some(&file), 0);
        written(&mut restored);
        assert!(take(&mut restored, 0).unwrap() > since);
    }

    #[test]
    fn the_end_of_the_counter_space_refuses_and_a_new_key_starts_anew() {
        let stored = CountersFile {
            format: FORMAT.into(),
            version: 1,
            fresh_ceiling: 10,
            floor: 0,
            devices: vec![StoredDevice {
                source: "s".into(),
                address: 1,
                key_check: 7,
                ceiling: END - 2,
            }],
        };
        let mut counters = Counters::restore(Some(&stored), 0);
        written(&mut counters);
        assert_eq!(take(&mut counters, 1), Ok(u32::MAX - 1));
        assert_eq!(take(&mut counters, 1), Ok(u32::MAX));
        assert_eq!(take(&mut counters, 1), Err(CounterRefusal::Exhausted));
        assert_eq!(take(&mut counters, 1), Err(CounterRefusal::Exhausted));
        // A new key for the device: counters start anew.
        let counter = counters.peek("s", 1, 8, 0).unwrap();
        assert!(counter < u32::MAX - 1);
    }

    #[test]
    fn a_frame_refused_before_it_is_queued_takes_no_counter() {
        let mut counters = Counters::in_memory(40);
        assert_eq!(counters.peek("s", 1, 7, 0), Ok(40));
        assert_eq!(counters.peek("s", 1, 7, 1), Ok(41));
        // Nothing committed: the next command gets the same first counter.
        assert_eq!(counters.peek("s", 1, 7, 0), Ok(40));
        counters.commit("s", 1, 40);
        assert_eq!(counters.peek("s", 1, 7, 0), Ok(41));
        assert_eq!(
            Counters::lost().peek("s", 1, 7, 0),
            Err(CounterRefusal::Lost)
        );
    }

    /// One step of the model below.
    #[derive(Debug, Clone)]
    enum Step {
        /// A command to a device, queued (`true`) or refused after sealing (`false`).
        Command { address: u32, queued: bool },
        /// The device gets a new key.
        Rekey { address: u32 },
        /// The writer takes a snapshot (written later, or never).
        Snapshot,
        /// The pending snapshot reaches the disk.
        Land,
        /// The pending snapshot's write fails.
        Fail,
        /// A power cut: what is on disk is all that is left.
        PowerCut,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            8 => (0u32..5, proptest::bool::weighted(0.9))
                .prop_map(|(address, queued)| Step::Command { address, queued }),
            1 => (0u32..5).prop_map(|address| Step::Rekey { address }),
            2 => Just(Step::Snapshot),
            2 => Just(Step::Land),
            1 => Just(Step::Fail),
            1 => Just(Step::PowerCut),
        ]
    }

    proptest::proptest! {
        /// Whatever the order of commands, writes that land late or never, new keys, a table of three
        /// devices for five, and power cuts: no (device, key, counter) is ever sent twice.
        #[test]
        fn no_counter_is_sent_twice_under_a_key(
            steps in proptest::collection::vec(step(), 1..400),
            lease_steps in 1u64..4,
        ) {
            use std::collections::HashSet;
            let small = |mut counters: Counters| {
                counters.max_devices = 3;
                counters
            };
            let mut counters = small(Counters::restore(None, 1000));
            let mut disk: Option<CountersFile> = None;
            let mut pending: Option<CountersFile> = None;
            let mut keys = [1u32; 5];
            let mut sent: HashSet<(u32, u32, u32)> = HashSet::new();
            for step in steps {
                match step {
                    Step::Command { address, queued } => {
                        let key = keys[address as usize];
                        for offset in 0..lease_steps {
                            if let Ok(counter) = counters.peek("s", address, key, offset) {
                                if queued && offset == 0 {
                                    counters.commit("s", address, counter);
                                    proptest::prop_assert!(
                                        sent.insert((address, key, counter)),
                                        "{address} {key} {counter} sent twice"
                                    );
                                }
                            }
                        }
                    }
                    Step::Rekey { address } => keys[address as usize] += 1,
                    Step::Snapshot => pending = Some(counters.snapshot()),
                    Step::Land => {
                        if let Some(file) = pending.take() {
                            counters.written(&file);
                            disk = Some(file);
                        }
                    }
                    Step::Fail => pending = None,
                    Step::PowerCut => {
                        counters = small(Counters::restore(disk.as_ref(), 1000));
                        pending = None;
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sealed_until_a_failed_reservation_is_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let key = FrameKey::from_bytes([9; 16]);
        // The first copy cannot be written (a dangling link in its place reads as missing, so this is
        // a first start, and makes the write fail): this start reserves nothing.
        let blocked = StateFile::copy_path(dir.path(), STATE_NAME, 0);
        std::os::unix::fs::symlink(dir.path().join("gone/copy"), &blocked).unwrap();
        let (handle, writer) = open(dir.path()).await.unwrap();
        assert_eq!(
            handle.peek("s", 1, &key, 0),
            Err(CounterRefusal::NotReserved)
        );
        std::fs::remove_file(&blocked).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(writer.run(stop.clone()));
        // Paused time: the retry interval passes as soon as the runtime is idle; bounded to 100 s.
        let mut sealed = handle.peek("s", 1, &key, 0);
        for _ in 0..100 {
            if sealed.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            sealed = handle.peek("s", 1, &key, 0);
        }
        assert!(sealed.is_ok(), "{sealed:?}");
        stop.cancel();
        task.await.unwrap();
    }
}
