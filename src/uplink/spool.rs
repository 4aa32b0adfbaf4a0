//! The disk spool: an append-only, segmented log of the messages the forward rules selected, kept in
//! `{state_dir}/spool/` until the cloud broker acknowledged them. It owns the file format, crash repair,
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
//! 28 bytes of overhead per record. Sequence numbers are contiguous inside a segment and grow across
//! segments. The `ack` file holds the highest sequence number below which everything was acknowledged
//! (magic, u64, CRC); it is rewritten atomically (temporary file, fsync, rename, directory fsync) at most
//! once per commit, so after a crash at most one commit interval of acknowledged messages is sent again,
//! and nothing is lost.
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

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync after every append batch, before its records are sent.
    Always,
    /// fsync at most this often (group commit); a crash loses at most this much of unsent data.
    Every(Duration),
}

/// The spool's limits and durability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSettings {
    /// Disk budget of the segment files; oldest segments are dropped beyond it.
    pub max_bytes: u64,
    /// Records older than this are dropped instead of sent.
    pub max_age: Duration,
    /// When appends are fsync'ed.
    pub sync: SyncPolicy,
    /// Size at which a segment is sealed and a new one started. Clamped to
    /// `[MIN_SEGMENT_BYTES, max_bytes / SEGMENTS_PER_BUDGET]` so that dropping one segment never throws
    /// away more than a quarter of the budget.
    pub segment_bytes: u64,
}

/// The smallest segment; smaller `segment_bytes` are raised to it (the configuration refuses them).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// A segment is at most `max_bytes / SEGMENTS_PER_BUDGET`; larger ones are lowered to it (the
/// configuration refuses them).
pub const SEGMENTS_PER_BUDGET: u64 = 4;

/// One spooled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log; strictly increasing.
    pub seq: u64,
    /// When it was appended, Unix milliseconds.
    pub appended_ms: u64,
    /// Remote topic (the forward rule's prefix already applied).
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
}

/// What [`Spool::append`] takes: a message bound for the cloud broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// Counters and depth of the spool, for the stats topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Records appended and not yet acknowledged (nor dropped).
    pub messages: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    pub segments: u64,
    /// Append time of the oldest record not yet read for sending, Unix ms (0 when none).
    pub oldest_unread_ms: u64,
    /// Records appended since open.
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
    /// Every record up to this sequence number has been fsync'ed.
    pub synced_seq: u64,
    /// Every record up to this sequence number has been acknowledged.
    pub acked_seq: u64,
    /// Sequence number the next append gets.
    pub next_seq: u64,
    /// Records appended and not yet read for sending.
    pub unread: u64,
}

/// Why the spool could not do its job. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool file {path}: {source} (check that the state directory exists, is writable by sensorgate, and the disk is not full)")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Largest payload a record takes; bigger messages are refused and counted.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

const SEGMENT_MAGIC: &[u8; 8] = b"SGSPOOL1";
const ACK_MAGIC: &[u8; 8] = b"SGACK001";
const RECORD_HEADER: usize = 8;
const BODY_FIXED: usize = 20;
const MAX_BODY: usize = BODY_FIXED + u16::MAX as usize + MAX_PAYLOAD_BYTES;
const READ_CHUNK: usize = 64 * 1024;
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
    first_seq: u64,
    /// Records in the segment (their sequence numbers are `first_seq..first_seq + count`).
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
    fn end_seq(&self) -> u64 {
        self.first_seq + self.count
    }
}

/// Where the next record to send is.
#[derive(Debug)]
struct ReadCursor {
    seq: u64,
    segment_first_seq: u64,
    offset: u64,
    file: Option<File>,
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
    active: Option<File>,
    next_seq: u64,
    acked_seq: u64,
    persisted_ack: u64,
    synced_seq: u64,
    dir_dirty: bool,
    reader: ReadCursor,
    cache: ReadCache,
    stats: SpoolStats,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

impl Spool {
    /// Opens the spool in `dir` (created if missing), repairing torn or corrupt tails, and positions the
    /// reader after the last acknowledged record.
    pub fn open(dir: &Path, settings: SpoolSettings) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
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
            synced_seq: 0,
            dir_dirty: false,
            reader: ReadCursor {
                seq: 1,
                segment_first_seq: 0,
                offset: 0,
                file: None,
            },
            cache: ReadCache::default(),
            stats: SpoolStats::default(),
        };
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

    fn recover(&mut self) -> Result<(), SpoolError> {
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
        let mut prev_end = 0u64;
        let mut reader_at: Option<(u64, u64, u64)> = None;
        for (i, (first_seq, path)) in found.iter().enumerate() {
            let (first_seq, path) = (*first_seq, path.clone());
            // A segment followed by one that starts at or before the ack cursor is fully acknowledged:
            // deleted without being read.
            if found
                .get(i + 1)
                .is_some_and(|(next, _)| *next <= self.acked_seq + 1)
            {
                fs::remove_file(&path).map_err(io_err(&path))?;
                self.dir_dirty = true;
                continue;
            }
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
                fs::remove_file(&path).map_err(io_err(&path))?;
                self.dir_dirty = true;
                continue;
            };
            if scan.valid_len < len {
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
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.set_len(scan.valid_len).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
            }
            let segment = Segment {
                first_seq,
                count: scan.count,
                bytes: scan.valid_len,
                newest_ms: scan.newest_ms,
                synced_len: scan.valid_len,
                path,
            };
            prev_end = segment.end_seq();
            if segment.end_seq() <= self.acked_seq + 1 {
                // Every record acknowledged.
                fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
                self.dir_dirty = true;
                continue;
            }
            if reader_at.is_none() {
                reader_at = scan.first_unacked;
            }
            self.segments.push_back(segment);
        }
        let last_end = self.segments.back().map(Segment::end_seq).unwrap_or(1);
        self.next_seq = last_end.max(self.acked_seq + 1);
        self.synced_seq = self.next_seq - 1;
        match self.segments.back() {
            Some(last) if last.end_seq() == self.next_seq => {
                let path = last.path.clone();
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                // What a killed process left in the page cache is made durable before it counts as such.
                file.sync_data().map_err(io_err(&path))?;
                self.active = Some(file);
            }
            _ => self.start_segment()?,
        }
        let (seq, segment_first_seq, offset) = reader_at.unwrap_or_else(|| {
            let last = self.segments.back().map(|s| (s.first_seq, s.bytes));
            let (first, bytes) = last.unwrap_or((self.next_seq, SEGMENT_MAGIC.len() as u64));
            (self.next_seq, first, bytes)
        });
        self.reader = ReadCursor {
            seq,
            segment_first_seq,
            offset,
            file: None,
        };
        self.sync_dir()?;
        self.refresh_stats();
        self.refresh_oldest_unread();
        Ok(())
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
        let mut expected = first_seq;
        loop {
            match next_record(&file, offset, len, &mut cache).map_err(io_err(path))? {
                Next::Record(record, next) if record.seq == expected => {
                    if record.seq > self.acked_seq && scan.first_unacked.is_none() {
                        scan.first_unacked = Some((record.seq, first_seq, offset));
                    }
                    scan.newest_ms = scan.newest_ms.max(record.appended_ms);
                    scan.count += 1;
                    expected += 1;
                    offset = next;
                    scan.valid_len = next;
                }
                _ => return Ok(scan),
            }
        }
    }

    fn start_segment(&mut self) -> Result<(), SpoolError> {
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
        self.segments.push_back(Segment {
            first_seq: self.next_seq,
            count: 0,
            bytes: SEGMENT_MAGIC.len() as u64,
            newest_ms: 0,
            synced_len: 0,
            path,
        });
        self.active = Some(file);
        self.dir_dirty = true;
        Ok(())
    }

    /// Seals the active segment (fsync'ed) and starts the next one.
    fn roll(&mut self) -> Result<(), SpoolError> {
        if let (Some(file), Some(last)) = (self.active.take(), self.segments.back_mut()) {
            file.sync_data().map_err(io_err(&last.path))?;
            last.synced_len = last.bytes;
            self.synced_seq = self.synced_seq.max(last.end_seq().saturating_sub(1));
        }
        self.start_segment()
    }

    /// Appends messages in one sequential write per segment, returning the last sequence number given.
    /// With [`SyncPolicy::Always`] they are fsync'ed before it returns. Messages over the size limit are
    /// refused and counted. Enforces the size and age budget afterwards.
    pub fn append(&mut self, messages: &[Outbound], now_ms: u64) -> Result<u64, SpoolError> {
        let mut buf = Vec::with_capacity(4096);
        for message in messages {
            if message.topic.len() > u16::MAX as usize || message.payload.len() > MAX_PAYLOAD_BYTES
            {
                self.stats.dropped_too_large += 1;
                log::error!(
                    "uplink: message on {} refused by the spool: {} bytes is over the limit",
                    message.topic,
                    message.payload.len()
                );
                continue;
            }
            let needs_roll = self
                .segments
                .back()
                .is_some_and(|s| s.bytes + buf.len() as u64 >= self.segment_bytes && s.count > 0);
            if needs_roll {
                self.flush_buf(&mut buf)?;
                self.roll()?;
                self.enforce_budget(now_ms)?;
            }
            encode_record(&mut buf, self.next_seq, now_ms, message);
            if let Some(last) = self.segments.back_mut() {
                last.count += 1;
                last.newest_ms = last.newest_ms.max(now_ms);
            }
            self.next_seq += 1;
            self.stats.appended += 1;
        }
        self.flush_buf(&mut buf)?;
        if self.sync == SyncPolicy::Always {
            self.sync_data()?;
        }
        self.enforce_budget(now_ms)?;
        if self.stats.oldest_unread_ms == 0 && self.reader.seq < self.next_seq {
            self.stats.oldest_unread_ms = now_ms;
        }
        self.refresh_stats();
        Ok(self.next_seq - 1)
    }

    fn flush_buf(&mut self, buf: &mut Vec<u8>) -> Result<(), SpoolError> {
        if buf.is_empty() {
            return Ok(());
        }
        let (Some(file), Some(last)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        file.write_all(buf).map_err(io_err(&last.path))?;
        last.bytes += buf.len() as u64;
        self.stats.written_bytes += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    fn sync_data(&mut self) -> Result<(), SpoolError> {
        if self.synced_seq + 1 < self.next_seq {
            if let (Some(file), Some(last)) = (self.active.as_ref(), self.segments.back_mut()) {
                file.sync_data().map_err(io_err(&last.path))?;
                last.synced_len = last.bytes;
            }
            self.synced_seq = self.next_seq - 1;
        }
        self.sync_dir()
    }

    fn sync_dir(&mut self) -> Result<(), SpoolError> {
        if self.dir_dirty {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Group commit: fsyncs appended records, persists the acknowledgement cursor if it moved, deletes
    /// fully acknowledged segments and applies the age budget.
    pub fn commit(&mut self, now_ms: u64) -> Result<(), SpoolError> {
        self.sync_data()?;
        if self.acked_seq != self.persisted_ack {
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
        let path = self.ack_path();
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.dir_dirty = true;
        self.sync_dir()?;
        self.persisted_ack = self.acked_seq;
        self.stats.written_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Records that every record up to `seq` was acknowledged (in memory; [`Spool::commit`] persists it).
    /// Fully acknowledged sealed segments are deleted at once.
    pub fn ack_through(&mut self, seq: u64) -> Result<(), SpoolError> {
        let seq = seq.min(self.next_seq - 1);
        if seq <= self.acked_seq {
            return Ok(());
        }
        self.acked_seq = seq;
        while self.segments.len() > 1 && self.segments[0].end_seq() <= seq + 1 {
            if let Some(segment) = self.segments.pop_front() {
                fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
                self.dir_dirty = true;
            }
        }
        self.refresh_stats();
        Ok(())
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
            let unsent_from = self
                .reader
                .seq
                .max(segment.first_seq)
                .max(self.acked_seq + 1);
            let unsent = segment.end_seq().saturating_sub(unsent_from);
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
                let next = &self.segments[0];
                self.reader = ReadCursor {
                    seq: next.first_seq,
                    segment_first_seq: next.first_seq,
                    offset: SEGMENT_MAGIC.len() as u64,
                    file: None,
                };
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
                self.reader.segment_first_seq = first.first_seq;
                self.reader.seq = first.first_seq;
                self.reader.offset = SEGMENT_MAGIC.len() as u64;
                self.reader.file = None;
                continue;
            };
            let segment = &self.segments[index];
            if self.reader.offset >= segment.bytes {
                match self.segments.get(index + 1) {
                    Some(next) => {
                        self.reader.segment_first_seq = next.first_seq;
                        self.reader.offset = SEGMENT_MAGIC.len() as u64;
                        self.reader.seq = next.first_seq;
                        self.reader.file = None;
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
            match next_record(file, self.reader.offset, limit, &mut self.cache)
                .map_err(io_err(&path))?
            {
                Next::Record(record, next) if record.seq == self.reader.seq => {
                    self.reader.offset = next;
                    self.reader.seq += 1;
                    if self.is_expired(record.appended_ms, now_ms) {
                        self.stats.dropped_age += 1;
                        continue;
                    }
                    if record.seq > self.acked_seq {
                        out.push(record);
                    }
                }
                _ => {
                    let lost = limit - self.reader.offset;
                    self.stats.corrupt_cuts += 1;
                    self.stats.corrupt_bytes += lost;
                    log::error!(
                        "spool {}: corrupt record at byte {}, skipping the {lost} bytes after it",
                        path.display(),
                        self.reader.offset
                    );
                    self.reader.offset = limit;
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

    /// Moves the reader back to the first unacknowledged record, so that it is read again (used when
    /// records read earlier were not kept in memory).
    pub fn rewind(&mut self) {
        if let Some(first) = self.segments.front() {
            self.reader = ReadCursor {
                seq: first.first_seq,
                segment_first_seq: first.first_seq,
                offset: SEGMENT_MAGIC.len() as u64,
                file: None,
            };
        }
    }

    /// Depth and counters.
    pub fn stats(&self) -> &SpoolStats {
        &self.stats
    }

    fn refresh_stats(&mut self) {
        let first = self
            .segments
            .front()
            .map(|s| s.first_seq)
            .unwrap_or(self.next_seq);
        let from = first.max(self.acked_seq + 1);
        self.stats.messages = self.next_seq.saturating_sub(from);
        self.stats.bytes = self.segments.iter().map(|s| s.bytes).sum();
        self.stats.segments = self.segments.len() as u64;
        self.stats.synced_seq = self.synced_seq;
        self.stats.acked_seq = self.acked_seq;
        self.stats.next_seq = self.next_seq;
        self.stats.unread = self.next_seq.saturating_sub(self.reader.seq);
        if self.reader.seq >= self.next_seq {
            self.stats.oldest_unread_ms = 0;
        }
    }

    /// Reads the append time of the next unread record into the stats (one small read).
    fn refresh_oldest_unread(&mut self) {
        self.stats.oldest_unread_ms = self.peek_unread_ms().unwrap_or(0);
    }

    fn peek_unread_ms(&self) -> Option<u64> {
        if self.reader.seq >= self.next_seq {
            return None;
        }
        let index = self
            .segments
            .iter()
            .position(|s| s.first_seq == self.reader.segment_first_seq)?;
        let (segment, offset) = if self.reader.offset < self.segments[index].bytes {
            (&self.segments[index], self.reader.offset)
        } else {
            (self.segments.get(index + 1)?, SEGMENT_MAGIC.len() as u64)
        };
        let mut header = [0u8; RECORD_HEADER + 16];
        File::open(&segment.path)
            .and_then(|file| file.read_exact_at(&mut header, offset))
            .ok()?;
        Some(u64_at(&header, RECORD_HEADER + 8))
    }
}

#[derive(Debug, Default)]
struct SegmentScan {
    count: u64,
    valid_len: u64,
    newest_ms: u64,
    /// (seq, segment first seq, offset) of the first record after the ack cursor.
    first_unacked: Option<(u64, u64, u64)>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Appends one encoded record to `buf`.
fn encode_record(buf: &mut Vec<u8>, seq: u64, now_ms: u64, message: &Outbound) {
    let body_len = BODY_FIXED + message.topic.len() + message.payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&now_ms.to_le_bytes());
    buf.push(message.qos.min(2));
    buf.push(u8::from(message.retain));
    buf.extend_from_slice(&(message.topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(message.topic.as_bytes());
    buf.extend_from_slice(&message.payload);
    let crc = crc32fast::hash(&buf[start + RECORD_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes a body whose checksum already matched; `None` if its fields are inconsistent.
fn decode_body(body: &[u8]) -> Option<Record> {
    let seq = u64_at(body, 0);
    let appended_ms = u64_at(body, 8);
    let qos = body[16];
    let flags = body[17];
    let topic_len = u16::from_le_bytes([body[18], body[19]]) as usize;
    if qos > 2 || flags > 1 || BODY_FIXED + topic_len > body.len() {
        return None;
    }
    let topic = std::str::from_utf8(&body[BODY_FIXED..BODY_FIXED + topic_len]).ok()?;
    Some(Record {
        seq,
        appended_ms,
        topic: topic.to_string(),
        payload: body[BODY_FIXED + topic_len..].to_vec(),
        qos,
        retain: flags & 1 == 1,
    })
}

/// A window of one file, read in chunks so that sequential records cost one syscall per 64 KiB.
#[derive(Debug, Default)]
struct ReadCache {
    start: u64,
    data: Vec<u8>,
}

impl ReadCache {
    /// The `len` bytes at `offset`, or `None` when the file (up to `limit`) ends before them.
    fn get(
        &mut self,
        file: &File,
        offset: u64,
        len: usize,
        limit: u64,
    ) -> io::Result<Option<&[u8]>> {
        if offset + len as u64 > limit {
            return Ok(None);
        }
        let cached_end = self.start + self.data.len() as u64;
        if offset < self.start || offset + len as u64 > cached_end {
            let want = (len.max(READ_CHUNK) as u64).min(limit - offset) as usize;
            self.data.resize(want, 0);
            file.read_exact_at(&mut self.data, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.data[at..at + len]))
    }
}

enum Next {
    /// A valid record and the offset after it.
    Record(Record, u64),
    /// The segment ends cleanly here.
    End,
    /// Torn or corrupt from here on.
    Corrupt,
}

fn next_record(file: &File, offset: u64, limit: u64, cache: &mut ReadCache) -> io::Result<Next> {
    if offset >= limit {
        return Ok(Next::End);
    }
    let Some(header) = cache.get(file, offset, RECORD_HEADER, limit)? else {
        return Ok(Next::Corrupt);
    };
    let len = u32_at(header, 0) as usize;
    let crc = u32_at(header, 4);
    if !(BODY_FIXED..=MAX_BODY).contains(&len) {
        return Ok(Next::Corrupt);
    }
    let Some(body) = cache.get(file, offset + RECORD_HEADER as u64, len, limit)? else {
        return Ok(Next::Corrupt);
    };
    if crc32fast::hash(body) != crc {
        return Ok(Next::Corrupt);
    }
    Ok(match decode_body(body) {
        Some(record) => Next::Record(record, offset + (RECORD_HEADER + len) as u64),
        None => Next::Corrupt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn acknowledged_segments_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 4096)).unwrap();
        let batch: Vec<Outbound> = (1..=500).map(message).collect();
        spool.append(&batch, NOW).unwrap();
        let before = spool.stats().segments;
        spool.ack_through(500).unwrap();
        spool.commit(NOW).unwrap();
        assert_eq!(spool.stats().segments, 1);
        assert!(before > 1);
        assert_eq!(spool.stats().messages, 0);
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "one segment and the ack file");
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

    #[test]
    fn a_torn_tail_is_cut_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 1 << 20)).unwrap();
        spool
            .append(&(1..=10).map(message).collect::<Vec<_>>(), NOW)
            .unwrap();
        drop(spool);
        let path = only_segment(dir.path());
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
        let mut spool = Spool::open(dir.path(), settings(1 << 20, 1 << 20)).unwrap();
        spool
            .append(&(1..=10).map(message).collect::<Vec<_>>(), NOW)
            .unwrap();
        drop(spool);
        let path = only_segment(dir.path());
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
                4 => (1u8..20).prop_map(Op::Append),
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
                            if let (Op::Crash(cut), Some((path, bytes, synced_len))) = (&op, active) {
                                // Only what was never fsync'ed may vanish.
                                let cut = (*cut as u64) % (bytes - synced_len + 1);
                                let file = OpenOptions::new().write(true).open(&path).unwrap();
                                file.set_len(bytes - cut).unwrap();
                                // What a crash may lose: unsynced records only.
                                spool = Spool::open(dir.path(), s.clone()).unwrap();
                                let kept_to = spool.stats().next_seq - 1;
                                prop_assert!(kept_to >= synced, "lost fsync'ed data: kept to {} synced {}", kept_to, synced);
                                appended.retain(|(seq, _)| *seq <= kept_to);
                            } else {
                                spool = Spool::open(dir.path(), s.clone()).unwrap();
                            }
                            acked = persisted;
                            next_read = 1;
                        }
                    }
                }
            }
        }
    }
}
