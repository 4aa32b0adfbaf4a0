//! The disk spool: an append-only, segmented log of the forwarded messages that the cloud broker did not
//! acknowledge in time, kept in `{state_dir}/spool/` until it does. It owns the file format, crash repair,
//! group commit (fsync), the persisted acknowledgement cursor and the disk and age budget. It never touches
//! the network, never sleeps and never spawns: every method is plain blocking file IO, and the uplink calls
//! it from a blocking thread only. A log of our own rather than a crate: the embedded key-value stores
//! (sled, redb, fjall) rewrite pages or run compaction, which costs SD-card writes and gives no control of
//! when fsync happens; what a spool needs (sequential appends, whole-file deletes, one cursor) is this file.
//!
//! # Format
//! Each segment file `{first_seq:020}.seg` starts with the 8-byte magic `SGSPOOL1`, then records:
//!
//! ```text
//! u32 LE body length | u32 LE CRC-32 of the body | body:
//!   u64 LE sequence number | u64 LE append time (Unix ms) | u8 QoS | u8 flags (bit 0: retain)
//!   | u16 LE topic length | topic (UTF-8) | payload
//! ```
//!
//! The length, checksum and torn-tail rules are [`crate::record`]'s, shared with the retained log; the
//! encoding and reading of a record are [`super::segment`]'s, shared with the refused-message file.
//! 28 bytes of overhead per record. Sequence numbers grow strictly, inside a segment and across segments,
//! but need not be contiguous: the uplink numbers every message it forwards, and those the cloud broker
//! acknowledged before their `sync` deadline never reach the disk ([`Spool::append_numbered`]). The `ack`
//! file holds the highest sequence number below which everything was acknowledged (magic, u64, CRC); it
//! is rewritten atomically (temporary file, fsync, rename, directory fsync) at most once per commit, and
//! only when records on disk were acknowledged and some remain: once every record on disk is
//! acknowledged the segments are deleted instead, so a spool the cloud keeps up with holds no file at all
//! (a new segment is created by the next append). After a crash at most one commit interval of
//! acknowledged messages is sent again, and nothing is lost.
//!
//! # Repair
//! On open every segment not yet fully acknowledged is read through. At the first record whose length,
//! checksum, sequence number or encoding is wrong the file is cut there (a torn write after power loss, a
//! flipped bit); the records before it are kept and the cut is counted. Segments without a valid record
//! are removed.
//!
//! # Budget
//! After each append, whole segments are dropped oldest first while the files exceed `max_bytes`, so the
//! spool never holds more than `max_bytes` plus the segment being filled. Records older than `max_age` are
//! skipped when read and their segments deleted; records stamped before 2020 (a board that had no clock
//! yet) never expire by age, only by size. Both are counted.
//!
//! # Writes
//! Nothing is written unless records are appended or acknowledged: opening an empty spool creates no
//! file, a commit with nothing new to fsync and no acknowledged record on disk does no IO, and an idle
//! spool writes nothing.
//!
//! A segment reserves its whole size when it is created ([`crate::reserve`]: its blocks are allocated,
//! its length is unchanged, so a reader and the repair above see only what was written), which spares a
//! group commit that enters a new block the journalling of a block allocation. File systems without
//! `fallocate` just do without (logged once). The reservation is inside the bound above: `max_bytes`
//! plus the segment being filled.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::reserve::Reserver;
use crate::units;

use super::refused::Refused;
use super::segment::{
    encode_record, io_err, next_record, u32_at, u64_at, Next, ReadCache, RECORD_HEADER,
    SEGMENT_MAGIC,
};
pub use super::segment::{fits, Outbound, Record, SpoolError, MAX_PAYLOAD_BYTES, RECORD_OVERHEAD};

/// How often appended records are made durable: written `sync = "always"` or `sync = "1s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync after every append batch, before its records are sent.
    Always,
    /// Every message is acknowledged by the cloud broker or fsync'ed within this long of its arrival
    /// (group commit); a crash loses at most this much of unacknowledged data.
    Every(Duration),
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncPolicy::Always => f.write_str("always"),
            SyncPolicy::Every(period) => f.write_str(&units::format_duration(*period)),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SyncPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "always" {
            return Ok(SyncPolicy::Always);
        }
        units::parse_duration(&text)
            .map(SyncPolicy::Every)
            .map_err(|message| serde::de::Error::custom(format!("{message}, or \"always\"")))
    }
}

/// The spool's limits and durability: `[upstream.spool]` as the configuration file writes it, each key
/// defaulting to [`defaults`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSettings {
    /// Disk budget of the segment files; oldest segments are dropped beyond it.
    #[serde(deserialize_with = "units::size")]
    pub max_bytes: u64,
    /// Records older than this are dropped instead of sent.
    #[serde(deserialize_with = "units::duration")]
    pub max_age: Duration,
    /// When appends are fsync'ed.
    pub sync: SyncPolicy,
    /// Size at which a segment is sealed and a new one started. Clamped to
    /// `[MIN_SEGMENT_BYTES, max_bytes / SEGMENTS_PER_BUDGET]` so that dropping one segment never throws
    /// away more than a quarter of the budget.
    #[serde(deserialize_with = "units::size")]
    pub segment_bytes: u64,
}

/// The spool's defaults, which `config/sensorgate.toml` documents.
pub mod defaults {
    use std::time::Duration;

    use super::SyncPolicy;

    pub const MAX_BYTES: u64 = 64 << 20;
    pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
    pub const SYNC: SyncPolicy = SyncPolicy::Every(Duration::from_secs(1));
    pub const SEGMENT_BYTES: u64 = 4 << 20;
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            max_bytes: defaults::MAX_BYTES,
            max_age: defaults::MAX_AGE,
            sync: defaults::SYNC,
            segment_bytes: defaults::SEGMENT_BYTES,
        }
    }
}

/// The smallest segment; smaller `segment_bytes` are raised to it (the configuration refuses them).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// A segment is at most `max_bytes / SEGMENTS_PER_BUDGET`; larger ones are lowered to it (the
/// configuration refuses them).
pub const SEGMENTS_PER_BUDGET: u64 = 4;

/// What [`Spool::append_numbered`] takes: a message the uplink already numbered, with its arrival time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    pub seq: u64,
    /// Arrival time, Unix ms (what `max_age` is counted from).
    pub appended_ms: u64,
    pub message: Outbound,
}

/// Counters and depth of the spool, for the stats topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records on disk not yet acknowledged (nor dropped): unread ones and those read (in flight).
    pub messages: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    pub segments: u64,
    /// Append time of the oldest record not yet read for sending, Unix ms (0 when none).
    pub oldest_unread_ms: u64,
    /// Records appended (written to disk) since open.
    pub appended: u64,
    /// Records dropped unsent because of `max_bytes`.
    pub dropped_budget: u64,
    /// Records dropped unsent because of `max_age`.
    pub dropped_age: u64,
    /// Messages refused at append (topic or payload over the size limit).
    pub dropped_too_large: u64,
    /// Corrupt or torn tails cut (at open, or found while reading).
    pub corrupt_cuts: u64,
    /// Bytes removed by those cuts.
    pub corrupt_bytes: u64,
    /// Bytes written to segment and ack files since open.
    pub written_bytes: u64,
    /// fsync calls (segments, ack file and directory) since open.
    pub fsyncs: u64,
    /// Every record up to this sequence number has been fsync'ed.
    pub synced_seq: u64,
    /// Every record up to this sequence number has been acknowledged.
    pub acked_seq: u64,
    /// Sequence number the next [`Spool::append`] gives (numbered appends may skip ahead).
    pub next_seq: u64,
    /// Records appended and not yet read for sending.
    pub unread: u64,
    /// Refused messages kept in the spool directory ([`super::refused`]), and those not kept.
    pub refused_kept: u64,
    pub refused_not_kept: u64,
}

const ACK_MAGIC: &[u8; 8] = b"SGACK001";
/// 2020-01-01 in Unix ms: records stamped earlier were written before the clock was set.
const SANE_CLOCK_MS: u64 = 1_577_836_800_000;

/// The current wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug)]
struct Segment {
    /// The file's name; no record in it has a lower sequence number.
    first_seq: u64,
    /// Sequence number of its newest record (meaningless while `count` is 0).
    last_seq: u64,
    /// Records in the segment.
    count: u64,
    /// File length, header included.
    bytes: u64,
    /// Append time of the newest record.
    newest_ms: u64,
    /// File length known to be on disk (fsync'ed).
    synced_len: u64,
    path: PathBuf,
}

impl Segment {
    /// One past the newest record's sequence number.
    fn end_seq(&self) -> u64 {
        if self.count == 0 {
            self.first_seq
        } else {
            self.last_seq + 1
        }
    }
}

/// Where the next record to send is.
#[derive(Debug)]
struct ReadCursor {
    /// No unread record has a lower sequence number.
    seq: u64,
    segment_first_seq: u64,
    offset: u64,
    /// Records of the reader's segment before `offset`.
    read_in_segment: u64,
    file: Option<File>,
}

impl ReadCursor {
    fn at_start(segment_first_seq: u64) -> ReadCursor {
        ReadCursor {
            seq: segment_first_seq,
            segment_first_seq,
            offset: SEGMENT_MAGIC.len() as u64,
            read_in_segment: 0,
            file: None,
        }
    }
}

/// The spool. See the module documentation for the format and the guarantees.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    max_age_ms: u64,
    sync: SyncPolicy,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    /// The newest segment, open for appending; `None` until the first append after open or after
    /// every segment was deleted.
    active: Option<File>,
    next_seq: u64,
    acked_seq: u64,
    persisted_ack: u64,
    /// Records on disk were acknowledged since the ack file was last written.
    ack_dirty: bool,
    /// Sequence number of the newest record written.
    last_appended: u64,
    synced_seq: u64,
    /// Bytes were written to the active segment since its last fsync.
    unsynced: bool,
    dir_dirty: bool,
    reader: ReadCursor,
    /// Records after the reader.
    unread: u64,
    /// Sequence numbers of records read (or appended as already sent) and not yet acknowledged, oldest
    /// first: at most what the uplink's in-flight window holds.
    in_flight: VecDeque<u64>,
    cache: ReadCache,
    stats: SpoolStats,
    /// Reserves each segment's blocks when it is created.
    reserver: Reserver,
    /// The messages the cloud refused, set aside.
    refused: Refused,
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

impl Spool {
    /// Opens the spool in `dir` (created if missing), repairing torn or corrupt tails, and positions the
    /// reader after the last acknowledged record. Writes nothing unless there is something to repair.
    pub fn open(dir: &Path, settings: SpoolSettings) -> Result<Spool, SpoolError> {
        // A full file system without the directory yet (a first start with an [upstream] on a full
        // card): the spool starts empty and makes the directory with its first file.
        let missing = match fs::create_dir_all(dir) {
            Err(source) if crate::full_disk::is_full(&source) => true,
            created => {
                created.map_err(io_err(dir))?;
                false
            }
        };
        let max_bytes = settings.max_bytes.max(16 * 1024);
        let segment_bytes = settings.segment_bytes.clamp(
            MIN_SEGMENT_BYTES,
            (max_bytes / SEGMENTS_PER_BUDGET).max(MIN_SEGMENT_BYTES),
        );
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            max_age_ms: settings.max_age.as_millis().min(u64::MAX as u128) as u64,
            sync: settings.sync,
            segment_bytes,
            segments: VecDeque::new(),
            active: None,
            next_seq: 1,
            acked_seq: 0,
            persisted_ack: 0,
            ack_dirty: false,
            last_appended: 0,
            synced_seq: 0,
            unsynced: false,
            dir_dirty: false,
            reader: ReadCursor::at_start(1),
            unread: 0,
            in_flight: VecDeque::new(),
            cache: ReadCache::default(),
            stats: SpoolStats::default(),
            reserver: Reserver::new("uplink"),
            refused: Refused::open(dir),
        };
        if missing {
            return Ok(spool);
        }
        spool.acked_seq = spool.read_ack_file();
        spool.persisted_ack = spool.acked_seq;
        spool.recover()?;
        Ok(spool)
    }

    fn ack_path(&self) -> PathBuf {
        self.dir.join("ack")
    }

    /// The persisted cursor, or 0 (send everything again) when the file is missing or damaged.
    fn read_ack_file(&self) -> u64 {
        let Ok(bytes) = fs::read(self.ack_path()) else {
            return 0;
        };
        if bytes.len() != 20 || &bytes[..8] != ACK_MAGIC {
            log::warn!(
                "spool {}: ack file damaged, every spooled message is sent again",
                self.dir.display()
            );
            return 0;
        }
        let value = u64_at(&bytes, 8);
        if crc32fast::hash(&bytes[8..16]) != u32_at(&bytes, 16) {
            log::warn!(
                "spool {}: ack file checksum wrong, every spooled message is sent again",
                self.dir.display()
            );
            return 0;
        }
        value
    }

    /// Rebuilds the in-memory state from the segment files: lists them, repairs or removes each, opens
    /// the newest for appending and positions the reader at the first unacknowledged record.
    fn recover(&mut self) -> Result<(), SpoolError> {
        let found = self.list_segment_files()?;
        let reader_at = self.load_segments(&found)?;
        self.open_active_segment()?;
        self.reader = match reader_at {
            Some((seq, segment_first_seq, offset, read_in_segment)) => ReadCursor {
                seq,
                segment_first_seq,
                offset,
                read_in_segment,
                file: None,
            },
            None => self.cursor_at_end(),
        };
        self.sync_dir()?;
        self.refresh_stats();
        self.refresh_oldest_unread();
        Ok(())
    }

    /// The `{first_seq}.seg` files in the spool directory, oldest first; other names are ignored.
    fn list_segment_files(&self) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".seg") {
                if let Ok(first_seq) = stem.parse::<u64>() {
                    found.push((first_seq, entry.path()));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Keeps, in order, every listed segment that still holds an unacknowledged valid record, and removes
    /// the rest. Returns where the first unacknowledged record is, if any.
    fn load_segments(
        &mut self,
        found: &[(u64, PathBuf)],
    ) -> Result<Option<(u64, u64, u64, u64)>, SpoolError> {
        let mut prev_end = 0u64;
        let mut reader_at: Option<(u64, u64, u64, u64)> = None;
        for (i, (first_seq, path)) in found.iter().enumerate() {
            // A segment followed by one that starts at or before the ack cursor is fully acknowledged:
            // deleted without being read.
            if found
                .get(i + 1)
                .is_some_and(|(next, _)| *next <= self.acked_seq + 1)
            {
                self.remove_segment_file(path)?;
                continue;
            }
            let Some((segment, scan)) = self.repair_segment(*first_seq, path.clone(), prev_end)?
            else {
                continue;
            };
            prev_end = segment.end_seq();
            if segment.end_seq() <= self.acked_seq + 1 {
                // Every record acknowledged.
                self.remove_segment_file(&segment.path)?;
                continue;
            }
            if reader_at.is_none() {
                reader_at = scan.first_unacked;
            }
            self.unread += scan.unacked;
            self.segments.push_back(segment);
        }
        Ok(reader_at)
    }

    /// Reads one segment through and cuts a torn or corrupt tail. A segment that overlaps the previous
    /// one (starts before `prev_end`), is empty or holds no valid record is removed: `None`.
    fn repair_segment(
        &mut self,
        first_seq: u64,
        path: PathBuf,
        prev_end: u64,
    ) -> Result<Option<(Segment, SegmentScan)>, SpoolError> {
        let len = fs::metadata(&path).map_err(io_err(&path))?.len();
        let scan = if first_seq < prev_end {
            None
        } else {
            Some(self.scan_segment(&path, first_seq, len)?)
        };
        let Some(scan) = scan.filter(|s| s.count > 0) else {
            // Overlapping, empty or wholly corrupt: nothing in it can be trusted.
            if len > SEGMENT_MAGIC.len() as u64 {
                self.stats.corrupt_cuts += 1;
                self.stats.corrupt_bytes += len;
                log::warn!("spool {}: removed, no valid record", path.display());
            }
            self.remove_segment_file(&path)?;
            return Ok(None);
        };
        if scan.valid_len < len {
            self.cut_tail(&path, len, &scan)?;
        }
        let segment = Segment {
            first_seq,
            last_seq: scan.last_seq,
            count: scan.count,
            bytes: scan.valid_len,
            newest_ms: scan.newest_ms,
            synced_len: scan.valid_len,
            path,
        };
        Ok(Some((segment, scan)))
    }

    /// Truncates a segment of `len` bytes to its valid records (fsync'ed) and counts the cut.
    fn cut_tail(&mut self, path: &Path, len: u64, scan: &SegmentScan) -> Result<(), SpoolError> {
        self.stats.corrupt_cuts += 1;
        self.stats.corrupt_bytes += len - scan.valid_len;
        log::warn!(
            "spool {}: cut {} bytes of torn or corrupt tail after {} valid records",
            path.display(),
            len - scan.valid_len,
            scan.count
        );
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        file.set_len(scan.valid_len).map_err(io_err(path))?;
        file.sync_all().map_err(io_err(path))?;
        self.stats.fsyncs += 1;
        Ok(())
    }

    /// Removes a segment file found at open; the directory is fsync'ed at the end of recovery.
    fn remove_segment_file(&mut self, path: &Path) -> Result<(), SpoolError> {
        fs::remove_file(path).map_err(io_err(path))?;
        self.dir_dirty = true;
        Ok(())
    }

    /// Sets the next sequence number after the kept segments and the ack cursor, and opens the newest
    /// segment for appending, fsync'ing what a killed process may have left only in the page cache.
    fn open_active_segment(&mut self) -> Result<(), SpoolError> {
        let last_end = self.segments.back().map(Segment::end_seq).unwrap_or(1);
        self.next_seq = last_end.max(self.acked_seq + 1);
        self.last_appended = self.next_seq - 1;
        self.synced_seq = self.last_appended;
        if let Some(last) = self.segments.back() {
            let path = last.path.clone();
            let file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            // What a killed process left in the page cache is made durable before it counts as such.
            file.sync_data().map_err(io_err(&path))?;
            self.stats.fsyncs += 1;
            self.reserver
                .ahead(&file, &path, last.bytes, self.segment_bytes);
            self.active = Some(file);
        }
        Ok(())
    }

    /// A reader positioned after the newest record (nothing unread).
    fn cursor_at_end(&self) -> ReadCursor {
        match self.segments.back() {
            Some(last) => ReadCursor {
                seq: self.next_seq,
                segment_first_seq: last.first_seq,
                offset: last.bytes,
                read_in_segment: last.count,
                file: None,
            },
            None => ReadCursor::at_start(self.next_seq),
        }
    }

    /// Reads a segment through: how many leading records are valid, and where the first unacknowledged
    /// one starts.
    fn scan_segment(
        &mut self,
        path: &Path,
        first_seq: u64,
        len: u64,
    ) -> Result<SegmentScan, SpoolError> {
        let file = File::open(path).map_err(io_err(path))?;
        let mut magic = [0u8; 8];
        let mut scan = SegmentScan::default();
        if len < 8 || file.read_exact_at(&mut magic, 0).is_err() || &magic != SEGMENT_MAGIC {
            return Ok(scan);
        }
        scan.valid_len = 8;
        let mut cache = ReadCache::default();
        let mut offset = 8u64;
        let mut lowest = first_seq;
        loop {
            match next_record(&file, offset, len, &mut cache).map_err(io_err(path))? {
                Next::Record(record, next) if record.seq >= lowest => {
                    if record.seq > self.acked_seq {
                        if scan.first_unacked.is_none() {
                            scan.first_unacked = Some((record.seq, first_seq, offset, scan.count));
                        }
                        scan.unacked += 1;
                    }
                    scan.newest_ms = scan.newest_ms.max(record.appended_ms);
                    scan.last_seq = record.seq;
                    scan.count += 1;
                    lowest = record.seq + 1;
                    offset = next;
                    scan.valid_len = next;
                }
                _ => return Ok(scan),
            }
        }
    }

    /// Creates the next segment, named after the sequence number its first record gets.
    fn start_segment(&mut self) -> Result<(), SpoolError> {
        if self.segments.is_empty() {
            // Opened on a full disk before the directory existed; a no-op otherwise.
            fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        }
        let path = segment_path(&self.dir, self.next_seq);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(0).map_err(io_err(&path))?;
        file.write_all(SEGMENT_MAGIC).map_err(io_err(&path))?;
        self.stats.written_bytes += SEGMENT_MAGIC.len() as u64;
        self.reserver.ahead(&file, &path, 0, self.segment_bytes);
        if self.segments.is_empty() {
            self.reader = ReadCursor::at_start(self.next_seq);
            self.cache = ReadCache::default();
        }
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            last_seq: 0,
            count: 0,
            bytes: SEGMENT_MAGIC.len() as u64,
            newest_ms: 0,
            synced_len: 0,
            path,
        });
        self.active = Some(file);
        self.unsynced = true;
        self.dir_dirty = true;
        Ok(())
    }

    /// Seals the active segment (fsync'ed) and starts the next one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        if let (Some(file), Some(last)) = (self.active.take(), self.segments.back_mut()) {
            if self.unsynced {
                file.sync_data().map_err(io_err(&last.path))?;
                self.stats.fsyncs += 1;
            }
            last.synced_len = last.bytes;
            self.unsynced = false;
            self.synced_seq = self.synced_seq.max(self.last_appended);
        }
        self.start_segment()
    }

    /// Appends messages in one sequential write per segment, numbering them from [`SpoolStats::next_seq`]
    /// on, and returns the last sequence number given. With [`SyncPolicy::Always`] they are fsync'ed
    /// before it returns. Messages over the size limit are refused and counted. Enforces the size and age
    /// budget afterwards.
    pub fn append(&mut self, messages: &[Outbound], now_ms: u64) -> Result<u64, SpoolError> {
        let numbered: Vec<(u64, u64, &Outbound)> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| (self.next_seq + i as u64, now_ms, m))
            .collect();
        self.append_all(&numbered, 0, now_ms)?;
        Ok(self.next_seq - 1)
    }

    /// Appends messages the caller numbered (strictly increasing, above every number given so far:
    /// numbers the caller skipped are messages the cloud acknowledged before they had to be written).
    /// The first `in_flight` of them are already held by the caller for sending: they count as read, as
    /// if [`Spool::read`] had returned them, and are not returned again (provided nothing else was
    /// unread; otherwise they are read again, and the caller drops what it holds). fsync'ed only with
    /// [`SyncPolicy::Always`]; see [`Spool::sync`].
    pub fn append_numbered(
        &mut self,
        batch: &[Numbered],
        in_flight: usize,
        now_ms: u64,
    ) -> Result<(), SpoolError> {
        let numbered: Vec<(u64, u64, &Outbound)> = batch
            .iter()
            .map(|n| (n.seq, n.appended_ms, &n.message))
            .collect();
        self.append_all(&numbered, in_flight, now_ms)
    }

    fn append_all(
        &mut self,
        messages: &[(u64, u64, &Outbound)],
        in_flight: usize,
        now_ms: u64,
    ) -> Result<(), SpoolError> {
        // The prefix counts as read only when the reader is at the end: otherwise order would break.
        let mut as_read = if self.unread == 0 { in_flight } else { 0 };
        let mut pending = Pending::default();
        for &(seq, appended_ms, message) in messages {
            let held = as_read > 0;
            as_read = as_read.saturating_sub(1);
            if !fits(message) {
                self.stats.dropped_too_large += 1;
                log::error!(
                    "uplink: message on {} refused by the spool: {} bytes is over the limit",
                    message.topic,
                    message.payload.len()
                );
                continue;
            }
            // Numbers only grow (a caller's mistake would otherwise break the order on disk).
            let seq = seq.max(pending.next_seq(self.next_seq));
            let needs_roll = self.segments.back().is_some_and(|s| {
                s.bytes + pending.buf.len() as u64 >= self.segment_bytes
                    && s.count + pending.records.len() as u64 > 0
            });
            if needs_roll {
                self.write_pending(&mut pending)?;
                self.roll()?;
                self.enforce_budget(now_ms)?;
            }
            if self.active.is_none() {
                self.next_seq = seq;
                self.start_segment()?;
            }
            encode_record(&mut pending.buf, seq, appended_ms, message);
            pending.records.push(PendingRecord {
                seq,
                appended_ms,
                held,
                end: pending.buf.len() as u64,
            });
        }
        self.write_pending(&mut pending)?;
        if self.sync == SyncPolicy::Always {
            self.sync_data()?;
        }
        self.enforce_budget(now_ms)?;
        if self.stats.oldest_unread_ms == 0 && self.unread > 0 {
            self.stats.oldest_unread_ms = now_ms;
        }
        self.refresh_stats();
        Ok(())
    }

    /// Writes the encoded records to the active segment and only then counts them: a failed write (a
    /// full disk) leaves the spool as it was before, its file cut back to where its records end (a torn
    /// record would hide every later one from the reader), so the caller may try the same records again.
    fn write_pending(&mut self, pending: &mut Pending) -> Result<(), SpoolError> {
        if pending.records.is_empty() {
            return Ok(());
        }
        let (Some(file), Some(last)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        if let Err(source) = file.write_all(&pending.buf) {
            if let Err(cut) = file.set_len(last.bytes) {
                log::error!(
                    "spool {}: cutting a failed write back to {} bytes: {cut}",
                    last.path.display(),
                    last.bytes
                );
            }
            return Err(SpoolError::Io {
                path: last.path.clone(),
                source,
            });
        }
        let start = last.bytes;
        last.bytes += pending.buf.len() as u64;
        self.stats.written_bytes += pending.buf.len() as u64;
        self.unsynced = true;
        for record in pending.records.drain(..) {
            last.count += 1;
            last.last_seq = record.seq;
            last.newest_ms = last.newest_ms.max(record.appended_ms);
            if record.held {
                self.reader = ReadCursor {
                    seq: record.seq + 1,
                    segment_first_seq: last.first_seq,
                    offset: start + record.end,
                    read_in_segment: last.count,
                    file: None,
                };
                self.in_flight.push_back(record.seq);
            } else {
                self.unread += 1;
            }
            self.next_seq = record.seq + 1;
            self.last_appended = record.seq;
            self.stats.appended += 1;
        }
        pending.buf.clear();
        Ok(())
    }

    /// Sequence number of the newest record written (0 when none since the spool began).
    pub fn last_appended(&self) -> u64 {
        self.last_appended
    }

    fn sync_data(&mut self) -> Result<(), SpoolError> {
        if self.unsynced {
            if let (Some(file), Some(last)) = (self.active.as_ref(), self.segments.back_mut()) {
                file.sync_data().map_err(io_err(&last.path))?;
                self.stats.fsyncs += 1;
                last.synced_len = last.bytes;
            }
            self.unsynced = false;
        }
        self.synced_seq = self.last_appended;
        self.sync_dir()
    }

    fn sync_dir(&mut self) -> Result<(), SpoolError> {
        if self.dir_dirty {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
            self.stats.fsyncs += 1;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Makes every appended record durable (fsync of the active segment and, when files were created or
    /// deleted, of the directory); no IO when there is nothing new.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        self.sync_data()?;
        self.refresh_stats();
        Ok(())
    }

    /// Group commit: fsyncs appended records, deletes every segment once all their records are
    /// acknowledged, or else persists the acknowledgement cursor if records on disk were acknowledged
    /// since it was last written; applies the age budget. No IO when nothing changed.
    pub fn commit(&mut self, now_ms: u64) -> Result<(), SpoolError> {
        self.sync_data()?;
        if self.unread == 0 && self.in_flight.is_empty() && !self.segments.is_empty() {
            // Nothing on disk is needed any more: no file at all beats a cursor rewrite.
            self.active = None;
            self.reader.file = None;
            while let Some(segment) = self.segments.pop_front() {
                fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
                self.dir_dirty = true;
            }
            self.reader = ReadCursor::at_start(self.next_seq);
            self.unsynced = false;
            self.ack_dirty = false;
            self.persisted_ack = self.acked_seq;
        } else if self.ack_dirty {
            self.write_ack_file()?;
        }
        self.enforce_budget(now_ms)?;
        self.sync_dir()?;
        self.refresh_stats();
        self.refresh_oldest_unread();
        Ok(())
    }

    fn write_ack_file(&mut self) -> Result<(), SpoolError> {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(ACK_MAGIC);
        bytes.extend_from_slice(&self.acked_seq.to_le_bytes());
        let crc = crc32fast::hash(&bytes[8..16]);
        bytes.extend_from_slice(&crc.to_le_bytes());
        let tmp = self.dir.join("ack.tmp");
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        self.stats.fsyncs += 1;
        let path = self.ack_path();
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.dir_dirty = true;
        self.sync_dir()?;
        self.persisted_ack = self.acked_seq;
        self.ack_dirty = false;
        self.stats.written_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Records that every record up to `seq` was acknowledged (in memory; [`Spool::commit`] persists it).
    /// Fully acknowledged sealed segments are deleted at once. Numbers above every record written are
    /// remembered only as far as the newest record.
    pub fn ack_through(&mut self, seq: u64) -> Result<(), SpoolError> {
        let seq = seq.min(self.next_seq - 1);
        if seq <= self.acked_seq {
            return Ok(());
        }
        self.acked_seq = seq;
        while self.in_flight.front().is_some_and(|s| *s <= seq) {
            self.in_flight.pop_front();
        }
        // The cursor on disk matters only while a record it covers is on disk.
        if self
            .segments
            .iter()
            .any(|s| s.count > 0 && s.first_seq <= seq)
        {
            self.ack_dirty = true;
        }
        while self.segments.len() > 1 && self.segments[0].end_seq() <= seq + 1 {
            if let Some(segment) = self.segments.pop_front() {
                // Records acknowledged without having been read are no longer unread.
                self.unread -= self.unread_in(&segment).min(self.unread);
                fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
                self.dir_dirty = true;
            }
        }
        self.refresh_stats();
        Ok(())
    }

    /// How many of `segment`'s records are after the reader.
    fn unread_in(&self, segment: &Segment) -> u64 {
        use std::cmp::Ordering;
        match self.reader.segment_first_seq.cmp(&segment.first_seq) {
            Ordering::Equal => segment.count.saturating_sub(self.reader.read_in_segment),
            Ordering::Less => segment.count,
            Ordering::Greater => 0,
        }
    }

    /// Drops the oldest segments while over `max_bytes` or wholly older than `max_age`; counts the unsent
    /// records dropped.
    fn enforce_budget(&mut self, now_ms: u64) -> Result<(), SpoolError> {
        loop {
            if self.segments.len() < 2 {
                return Ok(());
            }
            let total: u64 = self.segments.iter().map(|s| s.bytes).sum();
            let oldest = &self.segments[0];
            let over_size = total > self.max_bytes;
            let expired = self.is_expired(oldest.newest_ms, now_ms);
            if !over_size && !expired {
                return Ok(());
            }
            let Some(segment) = self.segments.pop_front() else {
                return Ok(());
            };
            let unsent = self.unread_in(&segment).min(self.unread);
            self.unread -= unsent;
            if over_size {
                self.stats.dropped_budget += unsent;
            } else {
                self.stats.dropped_age += unsent;
            }
            if unsent > 0 {
                log::error!(
                    "spool {}: dropped {unsent} unsent messages ({})",
                    segment.path.display(),
                    if over_size {
                        "over max_bytes"
                    } else {
                        "older than max_age"
                    }
                );
            }
            fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
            self.dir_dirty = true;
            if self.reader.segment_first_seq <= segment.first_seq {
                self.reader = ReadCursor::at_start(self.segments[0].first_seq);
            }
        }
    }

    fn is_expired(&self, appended_ms: u64, now_ms: u64) -> bool {
        appended_ms >= SANE_CLOCK_MS && now_ms.saturating_sub(appended_ms) > self.max_age_ms
    }

    /// Reads up to `max` records after the last one read, in order, skipping (and counting) records older
    /// than `max_age`. A record found corrupt here (the disk changed under us) ends its segment: the rest
    /// of that segment is skipped and counted.
    pub fn read(&mut self, max: usize, now_ms: u64) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(index) = self
                .segments
                .iter()
                .position(|s| s.first_seq == self.reader.segment_first_seq)
            else {
                // The reader's segment is gone: continue at the first one left.
                let Some(first) = self.segments.front() else {
                    break;
                };
                self.reader = ReadCursor::at_start(first.first_seq);
                continue;
            };
            let segment = &self.segments[index];
            if self.reader.offset >= segment.bytes {
                match self.segments.get(index + 1) {
                    Some(next) => {
                        self.reader = ReadCursor::at_start(next.first_seq);
                        continue;
                    }
                    None => break,
                }
            }
            if self.reader.file.is_none() {
                let file = File::open(&segment.path).map_err(io_err(&segment.path))?;
                self.reader.file = Some(file);
                self.cache = ReadCache::default();
            }
            let Some(file) = self.reader.file.as_ref() else {
                break;
            };
            let path = segment.path.clone();
            let limit = segment.bytes;
            let count = segment.count;
            match next_record(file, self.reader.offset, limit, &mut self.cache)
                .map_err(io_err(&path))?
            {
                Next::Record(record, next) if record.seq >= self.reader.seq => {
                    self.reader.offset = next;
                    self.reader.seq = record.seq + 1;
                    self.reader.read_in_segment += 1;
                    self.unread = self.unread.saturating_sub(1);
                    if self.is_expired(record.appended_ms, now_ms) {
                        self.stats.dropped_age += 1;
                        continue;
                    }
                    if record.seq > self.acked_seq {
                        self.in_flight.push_back(record.seq);
                        out.push(record);
                    }
                }
                _ => {
                    let lost = limit - self.reader.offset;
                    let records = count.saturating_sub(self.reader.read_in_segment);
                    self.unread -= records.min(self.unread);
                    self.stats.corrupt_cuts += 1;
                    self.stats.corrupt_bytes += lost;
                    log::error!(
                        "spool {}: corrupt record at byte {}, skipping the {lost} bytes ({records} records) after it",
                        path.display(),
                        self.reader.offset
                    );
                    self.reader.offset = limit;
                    self.reader.read_in_segment = count;
                    if index + 1 == self.segments.len() {
                        // Never append behind a corrupt record.
                        self.roll()?;
                    }
                }
            }
        }
        self.refresh_stats();
        self.refresh_oldest_unread();
        Ok(out)
    }

    /// Keeps a message the cloud refused beside the spool ([`super::refused`]), fsync'ed; the caller
    /// acknowledges it afterwards, as if the cloud had.
    pub fn set_aside(&mut self, record: &Record) -> Result<(), SpoolError> {
        let kept = self.refused.keep(record);
        self.refresh_stats();
        kept
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Depth and counters.
    pub fn stats(&self) -> &SpoolStats {
        &self.stats
    }

    fn refresh_stats(&mut self) {
        self.stats.refused_kept = self.refused.kept();
        self.stats.refused_not_kept = self.refused.dropped();
        self.stats.messages = self.unread + self.in_flight.len() as u64;
        self.stats.bytes = self.segments.iter().map(|s| s.bytes).sum();
        self.stats.segments = self.segments.len() as u64;
        self.stats.synced_seq = self.synced_seq;
        self.stats.acked_seq = self.acked_seq;
        self.stats.next_seq = self.next_seq;
        self.stats.unread = self.unread;
        if self.unread == 0 {
            self.stats.oldest_unread_ms = 0;
        }
    }

    /// Reads the append time of the next unread record into the stats (one small read).
    fn refresh_oldest_unread(&mut self) {
        self.stats.oldest_unread_ms = self.peek_unread_ms().unwrap_or(0);
    }

    fn peek_unread_ms(&self) -> Option<u64> {
        if self.unread == 0 {
            return None;
        }
        let index = self
            .segments
            .iter()
            .position(|s| s.first_seq == self.reader.segment_first_seq)
            .unwrap_or(0);
        let (segment, offset) = match self.segments.get(index) {
            Some(s)
                if self.reader.offset < s.bytes && s.first_seq == self.reader.segment_first_seq =>
            {
                (s, self.reader.offset)
            }
            Some(s) if s.first_seq != self.reader.segment_first_seq => {
                (s, SEGMENT_MAGIC.len() as u64)
            }
            _ => (self.segments.get(index + 1)?, SEGMENT_MAGIC.len() as u64),
        };
        let mut header = [0u8; RECORD_HEADER + 16];
        File::open(&segment.path)
            .and_then(|file| file.read_exact_at(&mut header, offset))
            .ok()?;
        Some(u64_at(&header, RECORD_HEADER + 8))
    }
}

/// Records encoded for the active segment and not written yet.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    records: Vec<PendingRecord>,
}

#[derive(Debug)]
struct PendingRecord {
    seq: u64,
    appended_ms: u64,
    /// The caller holds it for sending already: it counts as read once written.
    held: bool,
    /// Offset in `buf` where the record ends.
    end: u64,
}

impl Pending {
    /// The lowest number the next record may take.
    fn next_seq(&self, spool_next: u64) -> u64 {
        self.records.last().map_or(spool_next, |r| r.seq + 1)
    }
}

#[derive(Debug, Default)]
struct SegmentScan {
    count: u64,
    last_seq: u64,
    /// Records after the ack cursor.
    unacked: u64,
    valid_len: u64,
    newest_ms: u64,
    /// (seq, segment first seq, offset, records before it) of the first record after the ack cursor.
    first_unacked: Option<(u64, u64, u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_as_the_configuration_writes_them() {
        let read: SpoolSettings =
            toml::from_str("max_bytes = \"1MiB\"\nmax_age = \"1h\"\nsync = \"always\"").unwrap();
        assert_eq!(read.max_bytes, 1 << 20);
        assert_eq!(read.max_age, Duration::from_secs(3600));
        assert_eq!(read.sync, SyncPolicy::Always);
        assert_eq!(read.segment_bytes, defaults::SEGMENT_BYTES);
        let read: SpoolSettings = toml::from_str("sync = \"250ms\"").unwrap();
        assert_eq!(read.sync, SyncPolicy::Every(Duration::from_millis(250)));
        assert_eq!(read.sync.to_string(), "250ms");
        let often = toml::from_str::<SpoolSettings>("sync = \"often\"").unwrap_err();
        assert!(
            often.message().contains("\"always\""),
            "{}",
            often.message()
        );
        let unknown = toml::from_str::<SpoolSettings>("max_size = 1").unwrap_err();
        assert!(
            unknown.message().contains("max_size"),
            "{}",
            unknown.message()
        );
    }

    fn settings(max_bytes: u64, segment_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            max_bytes,
            max_age: Duration::from_secs(3600),
            sync: SyncPolicy::Every(Duration::from_secs(1)),
            segment_bytes,
        }
    }

    fn message(i: u64) -> Outbound {
        Outbound {
            topic: format!("site/dev{}", i % 7),
            payload: format!("{{\"n\":{i}}}").into_bytes(),
            qos: (i % 3) as u8,
            retain: i.is_multiple_of(2),
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn records_round_trip_in_order_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 4096)).unwrap();
        let batch: Vec<Outbound> = (1..=500).map(message).collect();
        assert_eq!(spool.append(&batch, NOW).unwrap(), 500);
        assert!(spool.stats().segments > 3, "{:?}", spool.stats());
        let first = spool.read(100, NOW).unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(first[0].seq, 1);
        assert_eq!(first[0].topic, message(1).topic);
        assert_eq!(first[0].payload, message(1).payload);
        assert_eq!(first[0].qos, 1);
        assert!(!first[0].retain);
        spool.ack_through(150).unwrap();
        spool.commit(NOW).unwrap();
        drop(spool);

        let mut spool = Spool::open(dir.path(), settings(1 << 20, 4096)).unwrap();
        assert_eq!(spool.stats().messages, 350);
        let rest = spool.read(1000, NOW).unwrap();
        let seqs: Vec<u64> = rest.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (151..=500).collect::<Vec<_>>());
        assert_eq!(spool.append(&[message(501)], NOW).unwrap(), 501);
    }

    /// Bytes the file system allocated to a file (`st_blocks` is in 512-byte units).
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_segment_reserves_its_size_but_its_length_is_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let segment_bytes = 64 * 1024;
        let mut spool = Spool::open(dir.path(), settings(1 << 20, segment_bytes)).unwrap();
        spool.append(&[message(1)], NOW).unwrap();
        spool.sync().unwrap();
        let path = segment_path(dir.path(), 1);
        let length = fs::metadata(&path).unwrap().len();
        assert_eq!(length, spool.stats().written_bytes);
        assert!(length < 100, "{length}");
        assert!(
            allocated(&path) >= segment_bytes,
            "{} bytes allocated for a {segment_bytes}-byte segment",
            allocated(&path)
        );
        drop(spool);

        // Reopened: the reserved tail is not read as records, and appends go on after the last one.
        let mut spool = Spool::open(dir.path(), settings(1 << 20, segment_bytes)).unwrap();
        assert_eq!(spool.stats().corrupt_cuts, 0);
        assert_eq!(spool.stats().messages, 1);
        spool.append(&[message(2)], NOW).unwrap();
        let seqs: Vec<u64> = spool.read(10, NOW).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2]);
        assert!(allocated(&path) >= segment_bytes);
    }

    #[test]
    fn acknowledged_segments_are_deleted_and_an_empty_spool_holds_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 4096)).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "open creates nothing"
        );
        let batch: Vec<Outbound> = (1..=500).map(message).collect();
        spool.append(&batch, NOW).unwrap();
        assert!(spool.read(500, NOW).unwrap().len() == 500);
        let before = spool.stats().segments;
        spool.ack_through(300).unwrap();
        assert!(spool.stats().segments < before);
        spool.commit(NOW).unwrap();
        assert!(
            dir.path().join("ack").exists(),
            "records left: the cursor is kept"
        );
        spool.ack_through(500).unwrap();
        spool.commit(NOW).unwrap();
        assert_eq!(spool.stats().segments, 0);
        assert_eq!(spool.stats().messages, 0);
        let segments = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "seg")
            })
            .count();
        assert_eq!(segments, 0, "every record acknowledged: no segment left");
        // Idle: commits write nothing.
        let written = spool.stats().written_bytes;
        let fsyncs = spool.stats().fsyncs;
        for _ in 0..10 {
            spool.commit(NOW).unwrap();
        }
        assert_eq!(
            (spool.stats().written_bytes, spool.stats().fsyncs),
            (written, fsyncs)
        );
        // The next append starts a segment again, and numbering goes on.
        assert_eq!(spool.append(&[message(501)], NOW).unwrap(), 501);
        assert_eq!(spool.read(10, NOW).unwrap()[0].seq, 501);
    }

    fn numbered(seq: u64) -> Numbered {
        Numbered {
            seq,
            appended_ms: NOW,
            message: message(seq),
        }
    }

    #[test]
    fn numbered_appends_keep_gaps_and_the_held_prefix_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 4096)).unwrap();
        // 1..=9 were acknowledged in memory; 10 and 11 are in the caller's window; 12, 14 are not.
        let batch = vec![numbered(10), numbered(11), numbered(12), numbered(14)];
        spool.append_numbered(&batch, 2, NOW).unwrap();
        assert_eq!(spool.stats().messages, 4);
        assert_eq!(spool.stats().unread, 2);
        let read: Vec<u64> = spool.read(10, NOW).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(read, vec![12, 14]);
        spool.ack_through(11).unwrap();
        assert_eq!(spool.stats().messages, 2);
        spool.commit(NOW).unwrap();
        drop(spool);
        // Reopened: the cursor (11) holds, the gap stays a gap.
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 4096)).unwrap();
        assert_eq!(spool.stats().messages, 2);
        let read: Vec<u64> = spool.read(10, NOW).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(read, vec![12, 14]);
        assert_eq!(spool.append(&[message(1)], NOW).unwrap(), 15);
    }

    #[test]
    fn a_held_prefix_behind_unread_records_is_read_again_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 4096)).unwrap();
        spool.append_numbered(&[numbered(3)], 0, NOW).unwrap();
        spool
            .append_numbered(&[numbered(5), numbered(6)], 1, NOW)
            .unwrap();
        let read: Vec<u64> = spool.read(10, NOW).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(read, vec![3, 5, 6]);
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let mut segs: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        segs.remove(0)
    }

    /// A spool of ten records in one segment, closed; the segment's path.
    fn closed_with_ten_records(dir: &Path) -> PathBuf {
        let mut spool = Spool::open(dir, settings(1 << 20, 1 << 20)).unwrap();
        spool
            .append(&(1..=10).map(message).collect::<Vec<_>>(), NOW)
            .unwrap();
        drop(spool);
        only_segment(dir)
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_with_ten_records(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();

        let mut spool = Spool::open(dir.path(), settings(1 << 20, 1 << 20)).unwrap();
        assert_eq!(spool.stats().corrupt_cuts, 1);
        let records = spool.read(100, NOW).unwrap();
        assert_eq!(records.len(), 9);
        assert_eq!(spool.append(&[message(99)], NOW).unwrap(), 10);
        assert_eq!(
            spool.read(100, NOW).unwrap()[0].payload,
            message(99).payload
        );
    }

    #[test]
    fn a_flipped_byte_cuts_from_that_record_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = closed_with_ten_records(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        // Somewhere inside the 6th record.
        let mut offset = 8;
        for _ in 0..5 {
            offset += 8 + u32_at(&bytes, offset) as usize;
        }
        bytes[offset + 12] ^= 0x40;
        fs::write(&path, &bytes).unwrap();

        let mut spool = Spool::open(dir.path(), settings(1 << 20, 1 << 20)).unwrap();
        assert_eq!(spool.stats().corrupt_cuts, 1);
        let seqs: Vec<u64> = spool
            .read(100, NOW)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_budget_drops_oldest_first_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let max = 64 * 1024;
        let mut spool = Spool::open(dir.path(), settings(max, 8 * 1024)).unwrap();
        for i in 0..200 {
            let batch: Vec<Outbound> = (i * 10 + 1..=i * 10 + 10).map(message).collect();
            spool.append(&batch, NOW).unwrap();
            assert!(spool.stats().bytes <= max + 8 * 1024, "{:?}", spool.stats());
        }
        let stats = spool.stats().clone();
        assert!(stats.dropped_budget > 0);
        let records = spool.read(100_000, NOW).unwrap();
        assert_eq!(records.len() as u64 + stats.dropped_budget, 2000);
        assert_eq!(records.last().unwrap().seq, 2000);
        assert!(records.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    #[test]
    fn old_records_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 1 << 20)).unwrap();
        spool
            .append(&[message(1), message(2)], NOW - 7_200_000)
            .unwrap();
        spool.append(&[message(3)], NOW).unwrap();
        let records = spool.read(10, NOW).unwrap();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
        assert_eq!(spool.stats().dropped_age, 2);
        // A clock that was never set does not expire anything.
        let mut spool2 = Spool::open(&dir.path().join("b"), settings(1 << 20, 1 << 20)).unwrap();
        spool2.append(&[message(1)], 5_000).unwrap();
        assert_eq!(spool2.read(10, NOW).unwrap().len(), 1);
    }

    #[test]
    fn a_damaged_ack_file_resends_rather_than_loses() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 1 << 20)).unwrap();
        spool
            .append(&(1..=5).map(message).collect::<Vec<_>>(), NOW)
            .unwrap();
        spool.ack_through(3).unwrap();
        spool.commit(NOW).unwrap();
        drop(spool);
        let ack = dir.path().join("ack");
        let mut bytes = fs::read(&ack).unwrap();
        bytes[9] ^= 1;
        fs::write(&ack, bytes).unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 1 << 20)).unwrap();
        assert_eq!(spool.read(10, NOW).unwrap().len(), 5);
    }

    #[test]
    fn oversized_messages_are_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 30, 1 << 20)).unwrap();
        let big = Outbound {
            topic: "t".into(),
            payload: vec![0; MAX_PAYLOAD_BYTES + 1],
            qos: 1,
            retain: false,
        };
        spool.append(&[big, message(1)], NOW).unwrap();
        assert_eq!(spool.stats().dropped_too_large, 1);
        assert_eq!(spool.read(10, NOW).unwrap().len(), 1);
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(u8),
            AppendNumbered(u8, u8),
            Read(u8),
            Ack(u8),
            Commit,
            Reopen,
            /// Simulated power loss: everything after the last fsync may vanish, here a random number of
            /// trailing bytes of the active segment.
            Crash(u16),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (1u8..20).prop_map(Op::Append),
                2 => (1u8..20, 0u8..4).prop_map(|(n, gap)| Op::AppendNumbered(n, gap)),
                3 => (1u8..30).prop_map(Op::Read),
                2 => any::<u8>().prop_map(Op::Ack),
                1 => Just(Op::Commit),
                1 => Just(Op::Reopen),
                1 => any::<u16>().prop_map(Op::Crash),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Against a model: records come back in order, exactly those appended and not acknowledged;
            /// after a crash nothing fsync'ed is lost and nothing unacknowledged-and-synced is skipped.
            #[test]
            fn spool_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
                let dir = tempfile::tempdir().unwrap();
                let s = settings(1 << 30, 4096);
                let mut spool = Spool::open(dir.path(), s.clone()).unwrap();
                // Model: every appended (seq, payload); what was acked; what was read since last rewind.
                let mut appended: Vec<(u64, Vec<u8>)> = Vec::new();
                let mut acked = 0u64;
                let mut next_read = 1u64;
                let mut counter = 0u64;
                for op in ops {
                    match op {
                        Op::Append(n) => {
                            let batch: Vec<Outbound> = (0..n).map(|_| { counter += 1; message(counter) }).collect();
                            let last = spool.append(&batch, NOW).unwrap();
                            let first = last + 1 - n as u64;
                            for (i, m) in batch.iter().enumerate() {
                                appended.push((first + i as u64, m.payload.clone()));
                            }
                        }
                        Op::AppendNumbered(n, gap) => {
                            // Messages acknowledged in memory leave gaps in the numbers.
                            let mut seq = spool.stats().next_seq;
                            let batch: Vec<Numbered> = (0..n).map(|i| {
                                counter += 1;
                                seq += if i % 3 == 0 { gap as u64 } else { 0 };
                                let n = Numbered { seq, appended_ms: NOW, message: message(counter) };
                                seq += 1;
                                n
                            }).collect();
                            spool.append_numbered(&batch, 0, NOW).unwrap();
                            for n in &batch {
                                appended.push((n.seq, n.message.payload.clone()));
                            }
                        }
                        Op::Read(n) => {
                            let got = spool.read(n as usize, NOW).unwrap();
                            let want: Vec<&(u64, Vec<u8>)> = appended.iter()
                                .filter(|(seq, _)| *seq >= next_read && *seq > acked)
                                .take(n as usize).collect();
                            prop_assert_eq!(got.len(), want.len());
                            for (g, w) in got.iter().zip(want) {
                                prop_assert_eq!(g.seq, w.0);
                                prop_assert_eq!(&g.payload, &w.1);
                            }
                            if let Some(last) = got.last() { next_read = last.seq + 1; }
                        }
                        Op::Ack(k) => {
                            // Only what was read can be acknowledged.
                            let upto = (acked + k as u64 % 16).min(next_read - 1);
                            spool.ack_through(upto).unwrap();
                            acked = acked.max(upto);
                        }
                        Op::Commit => spool.commit(NOW).unwrap(),
                        Op::Reopen | Op::Crash(_) => {
                            let synced = spool.stats().synced_seq;
                            let persisted = spool.persisted_ack;
                            let active = spool.segments.back().map(|s| (s.path.clone(), s.bytes, s.synced_len));
                            drop(spool);
                            // What must survive: every fsync'ed record not covered by the persisted cursor.
                            appended.retain(|(seq, _)| *seq > persisted);
                            let must_keep: Vec<u64> = appended.iter().map(|(s, _)| *s).filter(|s| *s <= synced).collect();
                            if let (Op::Crash(cut), Some((path, bytes, synced_len))) = (&op, active) {
                                // Only what was never fsync'ed may vanish.
                                let cut = (*cut as u64) % (bytes - synced_len + 1);
                                let file = OpenOptions::new().write(true).open(&path).unwrap();
                                file.set_len(bytes - cut).unwrap();
                            }
                            spool = Spool::open(dir.path(), s.clone()).unwrap();
                            let kept_to = spool.stats().next_seq - 1;
                            if let Some(last) = must_keep.last() {
                                prop_assert!(kept_to >= *last, "lost fsync'ed data: kept to {} synced {}", kept_to, last);
                            }
                            appended.retain(|(seq, _)| *seq <= kept_to);
                            acked = spool.stats().acked_seq;
                            next_read = 1;
                        }
                    }
                }
            }
        }
    }
}
