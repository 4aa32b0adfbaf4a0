//! The retained state on disk as an append-only log of changes: `{state_dir}/retained.log` holds, after a
//! magic, one record per retained message set or cleared, so that what reaches the SD card is proportional
//! to what changed, not to how much is retained. It owns the file format, replay, torn-tail repair and
//! compaction; it never decides when to write (the snapshotter calls [`RetainedLog::sync`] once per
//! `[broker] retained_sync`, and at a clean stop) and never touches the broker. Plain blocking file IO:
//! call it from a blocking thread.
//!
//! # Format
//! ```text
//! magic "SGRLOG01" | records:
//!   u32 LE body length | u32 LE CRC-32 of the body | body:
//!     u8 kind (1 set, 2 clear) | u8 QoS | u16 LE topic length | topic (UTF-8) | payload (set only)
//! ```
//! The record framing is [`crate::record`]'s, shared with the uplink spool. Replaying the records in
//! order gives the retained set. A sync compares the store with what the log
//! holds and appends only the differences, then one fdatasync; nothing changed, nothing
//! written. When the log outgrows twice the live set (plus [`COMPACT_SLACK`]) it is rewritten with the
//! live set only: a temporary file, fsync, rename, directory fsync, so a power cut leaves the old log or
//! the new one.
//!
//! # Writes
//! The log reserves its blocks up to where it will be compacted ([`crate::reserve`]; its length stays
//! where its records end), so a sync's append allocates nothing and journals no block bitmap or group
//! descriptor beside its data and inode.
//!
//! # Memory
//! The store holds the retained messages; the log remembers of each only its topic, its payload's
//! length and a 64-bit digest of its QoS and payload ([`Held`]), enough to tell a changed message from
//! an unchanged one and what its record costs, so the retained payloads are in memory once, not twice;
//! its topics are the store's reference-counted names ([`RetainedView::topic_name`]), not copies.
//! A sync reads the store's messages where they are ([`RetainedView`]: the store hands out shared
//! references, no copies) and writes its records through a small buffer ([`WRITE_CHUNK`]), so neither
//! a first sync of many messages nor a compaction builds the whole log in memory.
//!
//! # Repair
//! On open the log is read through; at the first record whose length, checksum or encoding is wrong (a
//! torn write after a power cut, a flipped bit) the file is cut there and the cut counted; every record
//! before it stands. A log with a foreign header is set aside (`retained.log.corrupt`). The whole-file
//! snapshot of earlier versions (`retained.bin`) is read when there is no log yet, and removed once its
//! messages are in the log.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use rmqtt::types::TopicName;

use crate::model::Message;
use crate::record;
use crate::reserve::Reserver;

/// File name of the log inside the state directory.
pub const LOG_FILE: &str = "retained.log";
const MAGIC: &[u8; 8] = b"SGRLOG01";
const BODY_FIXED: usize = 4;
const SET: u8 = 1;
const CLEAR: u8 = 2;
/// Largest record body read back (a retained payload is at most the broker's packet limit).
const MAX_BODY: usize = 512 << 20;
/// Bytes the log may exceed twice the live set by before it is compacted.
pub const COMPACT_SLACK: u64 = 64 * 1024;
/// Records go to the file through a buffer of this size: what a sync or a compaction holds of them.
const WRITE_CHUNK: usize = 64 * 1024;

/// Why the log could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("retained log {path}: {source} (check that the state directory is writable and the disk not full)")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LogError {
    /// Whether the file system is full ([`crate::full_disk::is_full`]): the log is as it was before the
    /// call, and the same sync may be tried again.
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io { source, .. } => crate::full_disk::is_full(source),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the log did since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records appended (sets and clears).
    pub appended: u64,
    /// Bytes written (appends and compactions).
    pub written_bytes: u64,
    pub compactions: u64,
    /// Torn or corrupt tails cut at open, and the bytes they held.
    pub torn_cuts: u64,
    pub torn_bytes: u64,
    /// Messages read from an old `retained.bin` snapshot into the log.
    pub migrated: u64,
}

/// What the log remembers of a message it holds: its payload's length and a digest of its QoS and
/// payload, not the payload (the store has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    payload_len: u64,
    digest: u64,
}

impl Held {
    fn of(qos: u8, payload: &[u8]) -> Held {
        // SipHash with fixed keys: the same in every process, never written anywhere.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        hasher.write_u8(qos);
        hasher.write(payload);
        Held {
            payload_len: payload.len() as u64,
            digest: hasher.finish(),
        }
    }
}

/// A retained message as a sync reads it: the broker's [`Message`], or the store's shared view of
/// one ([`super::retained::SharedMessage`]), whose bytes a sync borrows instead of copying.
pub trait RetainedView {
    fn topic(&self) -> &str;
    /// The store's own reference-counted name of the topic, when the view has one: the log's index
    /// keys by it, so that a topic is in memory once however many maps key by it.
    fn shared_name(&self) -> Option<&TopicName> {
        None
    }
    fn payload(&self) -> &[u8];
    fn qos(&self) -> u8;
}

impl RetainedView for super::retained::SharedMessage {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn shared_name(&self) -> Option<&TopicName> {
        Some(&self.topic)
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn qos(&self) -> u8 {
        self.qos
    }
}

impl RetainedView for Message {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn qos(&self) -> u8 {
        self.qos
    }
}

/// The retained log of one state directory. See the module documentation.
#[derive(Debug)]
pub struct RetainedLog {
    dir: PathBuf,
    /// Open for appending; `None` until the first write when there was no log.
    file: Option<File>,
    /// What replaying the log gives, topic by topic (the names shared with the store's).
    live: BTreeMap<TopicName, Held>,
    /// Bytes of the log file.
    log_bytes: u64,
    /// Bytes the live set takes as records (what a compacted log holds, magic included).
    live_bytes: u64,
    /// The file's blocks are reserved up to here (see "Writes" in the module documentation).
    reserved_to: u64,
    reserver: Reserver,
    stats: LogStats,
}

fn record_len(topic: &str, payload: u64) -> u64 {
    (record::HEADER + BODY_FIXED + topic.len()) as u64 + payload
}

/// Writes one record to `out`, encoded in `scratch` (reused from record to record).
fn write_record(
    out: &mut impl Write,
    scratch: &mut Vec<u8>,
    kind: u8,
    qos: u8,
    topic: &str,
    payload: &[u8],
) -> io::Result<()> {
    scratch.clear();
    encode(scratch, kind, qos, topic, payload);
    out.write_all(scratch)
}

fn encode(buf: &mut Vec<u8>, kind: u8, qos: u8, topic: &str, payload: &[u8]) {
    record::append(buf, |body| {
        body.push(kind);
        body.push(qos);
        body.extend_from_slice(&(topic.len().min(u16::MAX as usize) as u16).to_le_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(payload);
    });
}

/// One record: `(kind, qos, topic, payload)`.
type Record = (u8, u8, String, Vec<u8>);

/// The lengths a record body may have.
const BODY_LENS: std::ops::RangeInclusive<usize> = BODY_FIXED..=MAX_BODY;

/// Decodes a body whose length and checksum already matched; `None` if its fields are inconsistent.
fn decode_body(body: &[u8]) -> Option<Record> {
    let (kind, qos) = (body[0], body[1]);
    let topic_len = u16::from_le_bytes([body[2], body[3]]) as usize;
    let len = body.len();
    if !(kind == SET || kind == CLEAR) || qos > 2 || topic_len == 0 || BODY_FIXED + topic_len > len
    {
        return None;
    }
    let topic = std::str::from_utf8(&body[BODY_FIXED..BODY_FIXED + topic_len]).ok()?;
    if kind == CLEAR && len != BODY_FIXED + topic_len {
        return None;
    }
    let payload = body[BODY_FIXED + topic_len..].to_vec();
    Some((kind, qos, topic.to_string(), payload))
}

/// `messages` sorted by topic, one per topic: the last given of each (what a map filled in their order
/// would hold, without a map's nodes: a sync of every retained message builds this).
fn latest_by_topic<'a, M: RetainedView>(messages: impl Iterator<Item = &'a M>) -> Vec<&'a M> {
    let mut latest: Vec<&M> = messages.collect();
    // Stable: of one topic's messages the last given stays last (the store's view is sorted already).
    latest.sort_by(|a, b| a.topic().cmp(b.topic()));
    latest.dedup_by(|later, earlier| {
        let same = later.topic() == earlier.topic();
        if same {
            *earlier = *later;
        }
        same
    });
    latest
}

impl RetainedLog {
    fn path(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }

    /// Opens the log in `dir` (which must exist), replays it and cuts a torn tail; returns the log and
    /// the retained messages it holds, sorted by topic. With no log but an old `retained.bin`, its
    /// messages are written into a new log and the old file removed. Writes nothing otherwise, unless a
    /// tail has to be cut.
    pub fn open(dir: &Path) -> Result<(RetainedLog, Vec<Message>), LogError> {
        let mut log = RetainedLog {
            dir: dir.to_path_buf(),
            file: None,
            live: BTreeMap::new(),
            log_bytes: 0,
            live_bytes: MAGIC.len() as u64,
            reserved_to: 0,
            reserver: Reserver::new("retained log"),
            stats: LogStats::default(),
        };
        let path = log.path();
        let messages = match fs::read(&path) {
            Ok(bytes) => log.replay(&bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => log.migrate()?,
            Err(source) => return Err(LogError::Io { path, source }),
        };
        Ok((log, messages))
    }

    /// Replays `bytes` (the whole file) into the live set and returns the messages it holds.
    fn replay(&mut self, bytes: &[u8]) -> Result<Vec<Message>, LogError> {
        let path = self.path();
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            if !bytes.is_empty() {
                let aside = self.dir.join(format!("{LOG_FILE}.corrupt"));
                log::error!(
                    "retained log {}: not a retained log; set aside as {}, starting without retained state",
                    path.display(),
                    aside.display()
                );
                fs::rename(&path, &aside).map_err(io_err(&path))?;
                self.stats.torn_cuts += 1;
                self.stats.torn_bytes += bytes.len() as u64;
            } else {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            return Ok(Vec::new());
        }
        let mut replayed: BTreeMap<String, (u8, Vec<u8>)> = BTreeMap::new();
        let at = record::valid_prefix(bytes, MAGIC.len(), &BODY_LENS, |body| {
            let Some((kind, qos, topic, payload)) = decode_body(body) else {
                return false;
            };
            if kind == SET {
                replayed.insert(topic, (qos, payload));
            } else {
                replayed.remove(&topic);
            }
            true
        });
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        if at < bytes.len() {
            let cut = bytes.len() - at;
            log::warn!(
                "retained log {}: cut {cut} bytes of torn or corrupt tail; the {} retained messages before it are kept",
                path.display(),
                replayed.len()
            );
            file.set_len(at as u64).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            self.stats.torn_cuts += 1;
            self.stats.torn_bytes += cut as u64;
        }
        self.log_bytes = at as u64;
        self.file = Some(file);
        let messages: Vec<Message> = replayed
            .into_iter()
            .map(|(topic, (qos, payload))| Message {
                topic,
                payload,
                qos,
                retain: true,
            })
            .collect();
        self.hold_only(&messages);
        Ok(messages)
    }

    /// Reads an old `retained.bin` into a new log, if there is one; returns its messages.
    fn migrate(&mut self) -> Result<Vec<Message>, LogError> {
        let old = self.dir.join(super::retained::SNAPSHOT_FILE);
        if !old.exists() {
            return Ok(Vec::new());
        }
        let (messages, error) = super::retained::read_snapshot(&self.dir);
        if let Some(error) = error {
            log::warn!("retained snapshot {}: {error}", old.display());
        }
        self.stats.migrated = messages.len() as u64;
        let by_topic = latest_by_topic(messages.iter());
        self.rewrite(&by_topic)?;
        // The log holds everything now; a damaged old file was set aside by read_snapshot already.
        let _ = fs::remove_file(&old);
        self.sync_dir()?;
        Ok(by_topic.into_iter().cloned().collect())
    }

    /// Makes the live set `messages` (one per topic), and `live_bytes` what they take as records.
    fn hold_only<'a, M: RetainedView + 'a>(&mut self, messages: impl IntoIterator<Item = &'a M>) {
        self.live.clear();
        self.live_bytes = MAGIC.len() as u64;
        for message in messages {
            self.set(message);
        }
    }

    fn set<M: RetainedView>(&mut self, message: &M) {
        let topic = message.topic();
        let held = Held::of(message.qos().min(2), message.payload());
        self.live_bytes += record_len(topic, held.payload_len);
        match self.live.get_mut(topic) {
            Some(old) => {
                self.live_bytes -= record_len(topic, old.payload_len);
                *old = held;
            }
            None => {
                let name = message.shared_name().cloned();
                self.live
                    .insert(name.unwrap_or_else(|| TopicName::from(topic)), held);
            }
        }
    }

    /// Keys the index by the store's names where it holds copies (what replaying the file at a start
    /// gives), so that each topic is in memory once; a name already shared is left as it is.
    fn adopt_names<'a, M: RetainedView + 'a>(&mut self, messages: impl Iterator<Item = &'a M>) {
        for message in messages {
            let Some(name) = message.shared_name() else {
                continue;
            };
            let copied = self
                .live
                .get_key_value(message.topic())
                .is_some_and(|(key, _)| key.as_ptr() != name.as_ptr());
            if let Some(held) = copied.then(|| self.live.remove(message.topic())).flatten() {
                self.live.insert(name.clone(), held);
            }
        }
    }

    fn clear(&mut self, topic: &str) {
        if let Some(old) = self.live.remove(topic) {
            self.live_bytes -= record_len(topic, old.payload_len);
        }
    }

    /// Retained messages held.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Bytes of the log file.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Makes the log hold exactly `current` (the store's retained messages; empty payloads count as
    /// cleared): appends a record per message that is new or changed and one per topic that is gone,
    /// then one fdatasync, and compacts if the log outgrew the live set. Returns the records appended;
    /// no IO when nothing changed.
    pub fn sync<M: RetainedView>(&mut self, current: &[M]) -> Result<usize, LogError> {
        let wanted = latest_by_topic(
            current
                .iter()
                .filter(|m| !m.payload().is_empty() && !m.topic().is_empty()),
        );
        let sets: Vec<&M> = wanted
            .iter()
            .copied()
            .filter(|m| {
                self.live.get(m.topic()).copied() != Some(Held::of(m.qos().min(2), m.payload()))
            })
            .collect();
        self.adopt_names(wanted.iter().copied());
        let clears: Vec<TopicName> = self
            .live
            .keys()
            .filter(|topic| {
                wanted
                    .binary_search_by(|m| m.topic().cmp(topic as &str))
                    .is_err()
            })
            .cloned()
            .collect();
        if sets.is_empty() && clears.is_empty() {
            return Ok(0);
        }
        let bytes = sets
            .iter()
            .map(|m| record_len(m.topic(), m.payload().len() as u64))
            .chain(clears.iter().map(|topic| record_len(topic, 0)))
            .sum();
        self.append(bytes, |out| {
            let mut scratch = Vec::new();
            for m in &sets {
                write_record(
                    out,
                    &mut scratch,
                    SET,
                    m.qos().min(2),
                    m.topic(),
                    m.payload(),
                )?;
            }
            for topic in &clears {
                write_record(out, &mut scratch, CLEAR, 0, topic, &[])?;
            }
            Ok(())
        })?;
        let count = sets.len() + clears.len();
        self.stats.appended += count as u64;
        for m in sets {
            self.set(m);
        }
        for topic in &clears {
            self.clear(topic);
        }
        if self.log_bytes > 2 * self.live_bytes + COMPACT_SLACK {
            self.compact(&wanted)?;
        }
        Ok(count)
    }

    /// Appends `len` bytes of records, written by `write_records` through a [`WRITE_CHUNK`] buffer,
    /// and syncs them; on failure the file is cut back to where its records ended.
    fn append(
        &mut self,
        len: u64,
        write_records: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
    ) -> Result<(), LogError> {
        let path = self.path();
        if self.file.is_none() {
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err(&path))?;
            file.set_len(0).map_err(io_err(&path))?;
            file.write_all(MAGIC).map_err(io_err(&path))?;
            self.log_bytes = MAGIC.len() as u64;
            self.stats.written_bytes += MAGIC.len() as u64;
            self.file = Some(file);
            // The new file's name must survive a power cut too.
            file_sync_and_dir(self)?;
        }
        self.reserve_for(self.log_bytes + len);
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let mut out = BufWriter::with_capacity(WRITE_CHUNK, file);
        let written = write_records(&mut out).and_then(|()| out.flush());
        drop(out);
        if let Err(source) = written.and_then(|()| file.sync_data()) {
            // A torn record would hide every later one at the next start: the log ends where its
            // records do, and the same changes are appended again by the next sync.
            if let Err(cut) = file.set_len(self.log_bytes) {
                log::error!(
                    "retained log {}: cutting a failed write back to {} bytes: {cut}",
                    path.display(),
                    self.log_bytes
                );
            }
            return Err(LogError::Io { path, source });
        }
        self.log_bytes += len;
        self.stats.written_bytes += len;
        Ok(())
    }

    /// Reserves the log's blocks up to where it would be compacted (or to `end`, if that is beyond), so
    /// that the appends until then allocate nothing ([`crate::reserve`]); nothing while `end` is
    /// within what was reserved. Best effort: logged, never an error.
    fn reserve_for(&mut self, end: u64) {
        if end <= self.reserved_to {
            return;
        }
        let Some(file) = self.file.as_ref() else {
            return;
        };
        let target = end.max(2 * self.live_bytes + COMPACT_SLACK);
        self.reserver
            .ahead(file, &self.dir.join(LOG_FILE), self.log_bytes, target);
        self.reserved_to = target;
    }

    /// Rewrites the log with `live` only, which must be what the log holds (the set the last sync
    /// made it hold). On failure (a full disk) the log and the live set are as they were.
    fn compact<M: RetainedView>(&mut self, live: &[&M]) -> Result<(), LogError> {
        self.rewrite(live)?;
        self.stats.compactions += 1;
        Ok(())
    }

    /// Makes `messages` the live set, and the log hold them only.
    fn rewrite<M: RetainedView>(&mut self, messages: &[&M]) -> Result<(), LogError> {
        self.write_live(messages)?;
        self.hold_only(messages.iter().copied());
        Ok(())
    }

    /// Writes `messages` to a temporary file and renames it over the log; a temporary file that could
    /// not be finished is removed (it would hold the space a full disk needs).
    fn write_live<M: RetainedView>(&mut self, messages: &[&M]) -> Result<(), LogError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let len = MAGIC.len() as u64
            + messages
                .iter()
                .map(|m| record_len(m.topic(), m.payload().len() as u64))
                .sum::<u64>();
        let written = File::create(&tmp).and_then(|file| {
            let mut out = BufWriter::with_capacity(WRITE_CHUNK, &file);
            out.write_all(MAGIC)?;
            let mut scratch = Vec::new();
            for m in messages {
                write_record(
                    &mut out,
                    &mut scratch,
                    SET,
                    m.qos().min(2),
                    m.topic(),
                    m.payload(),
                )?;
            }
            out.flush()?;
            drop(out);
            file.sync_all()
        });
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(LogError::Io { path: tmp, source });
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.sync_dir()?;
        self.file = Some(
            OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?,
        );
        self.log_bytes = len;
        self.reserved_to = 0;
        self.stats.written_bytes += len;
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), LogError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }
}

/// What the start-up read of the log found.
#[derive(Debug, Default)]
pub struct Restored {
    /// The retained messages to put back.
    pub messages: Vec<Message>,
    /// Torn or corrupt tails cut (0 or 1): the broker's stats report them (the bytes cut are logged).
    pub torn_cuts: u64,
    /// Why the log could not be read (then `messages` is empty).
    pub error: Option<LogError>,
}

/// The retained messages to restore at start, as the broker's restore takes them: what the log (or an
/// old snapshot, migrated) holds. A log that cannot be read gives nothing and the error; a torn tail is
/// cut, counted and logged by [`RetainedLog::open`], not an error.
pub fn read_for_restore(dir: &Path) -> Restored {
    match RetainedLog::open(dir) {
        Ok((log, messages)) => Restored {
            messages,
            torn_cuts: log.stats.torn_cuts,
            error: None,
        },
        Err(error) => Restored {
            error: Some(error),
            ..Restored::default()
        },
    }
}

fn file_sync_and_dir(log: &RetainedLog) -> Result<(), LogError> {
    if let Some(file) = &log.file {
        file.sync_all().map_err(io_err(&log.path()))?;
    }
    log.sync_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(message: &Message) -> crate::broker::retained::SharedMessage {
        crate::broker::retained::SharedMessage {
            topic: TopicName::from(message.topic.as_str()),
            payload: bytes::Bytes::from(message.payload.clone()),
            qos: message.qos,
        }
    }

    #[test]
    fn the_latest_message_of_each_topic_is_kept_in_topic_order() {
        let given = [
            m("b", "1"),
            m("a", "1"),
            m("b", "2"),
            m("c", "1"),
            m("a", "2"),
        ];
        let latest: Vec<(&str, &[u8])> = latest_by_topic(given.iter())
            .into_iter()
            .map(|m| (m.topic.as_str(), m.payload.as_slice()))
            .collect();
        assert_eq!(
            latest,
            vec![("a", &b"2"[..]), ("b", &b"2"[..]), ("c", &b"1"[..])]
        );
    }

    #[test]
    fn after_a_start_the_index_takes_the_stores_names_instead_of_its_copies() {
        let dir = tempfile::tempdir().unwrap();
        let state: Vec<Message> = (0..10).map(|i| m(&format!("sg/dev{i}"), "21.5")).collect();
        let (mut log, _) = RetainedLog::open(dir.path()).unwrap();
        log.sync(&state).unwrap();
        drop(log);
        let (mut log, restored) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(restored, state);
        let views: Vec<_> = state.iter().map(shared).collect();
        assert_eq!(
            log.sync(&views).unwrap(),
            0,
            "nothing changed, nothing written"
        );
        for view in &views {
            let (key, _) = log.live.get_key_value(&view.topic as &str).unwrap();
            assert_eq!(
                key.as_ptr(),
                view.topic.as_ptr(),
                "{key:?} is the store's name"
            );
        }
        assert_eq!(log.len(), 10);
    }

    fn m(topic: &str, payload: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.as_bytes().to_vec(),
            qos: 1,
            retain: true,
        }
    }

    #[test]
    fn only_changes_are_written_and_nothing_when_nothing_changed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, restored) = RetainedLog::open(dir.path()).unwrap();
        assert!(restored.is_empty());
        assert!(!dir.path().join(LOG_FILE).exists(), "open creates nothing");
        let mut state: Vec<Message> = (0..100).map(|i| m(&format!("sg/dev{i}"), "21.5")).collect();
        assert_eq!(log.sync(&state).unwrap(), 100);
        let after_first = log.stats().written_bytes;
        assert_eq!(log.sync(&state).unwrap(), 0);
        assert_eq!(
            log.stats().written_bytes,
            after_first,
            "unchanged: no write"
        );
        state[7] = m("sg/dev7", "22.0");
        state.remove(3);
        assert_eq!(log.sync(&state).unwrap(), 2, "one set, one clear");
        let per_change = (log.stats().written_bytes - after_first) / 2;
        assert!(per_change < 32, "{per_change} bytes per change");
        drop(log);
        let (_, restored) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(restored.len(), 99);
        assert!(restored.contains(&m("sg/dev7", "22.0")));
        assert!(!restored.iter().any(|r| r.topic == "sg/dev3"));
    }

    #[test]
    fn the_log_reserves_up_to_its_compaction_and_its_length_is_what_was_written() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = RetainedLog::open(dir.path()).unwrap();
        log.sync(&[m("a/1", "x"), m("a/2", "y")]).unwrap();
        let meta = fs::metadata(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(meta.len(), log.log_bytes());
        assert!(
            meta.blocks() * 512 >= COMPACT_SLACK,
            "{} bytes",
            meta.blocks() * 512
        );
        log.sync(&[m("a/1", "z"), m("a/2", "y")]).unwrap();
        assert_eq!(
            fs::metadata(dir.path().join(LOG_FILE)).unwrap().len(),
            log.log_bytes()
        );
        drop(log);
        let (log, messages) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(
            log.stats().torn_cuts,
            0,
            "the reserved tail is not read as records"
        );
        assert_eq!(messages, vec![m("a/1", "z"), m("a/2", "y")]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_counted_and_the_records_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = RetainedLog::open(dir.path()).unwrap();
        log.sync(&[m("a", "1"), m("b", "2")]).unwrap();
        log.sync(&[m("a", "1"), m("b", "3"), m("c", "4")]).unwrap();
        drop(log);
        let path = dir.path().join(LOG_FILE);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (log, restored) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(log.stats().torn_cuts, 1);
        // The second sync's last record (c) is torn; b = 3 before it stands.
        assert_eq!(restored, vec![m("a", "1"), m("b", "3")]);
        assert!(fs::metadata(&path).unwrap().len() < len - 3);
        let mut log = log;
        log.sync(&[m("a", "1"), m("b", "3"), m("c", "5")]).unwrap();
        drop(log);
        let (_, restored) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(restored, vec![m("a", "1"), m("b", "3"), m("c", "5")]);
    }

    #[test]
    fn the_log_is_compacted_when_it_outgrows_the_live_set() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = RetainedLog::open(dir.path()).unwrap();
        for round in 0..2000 {
            log.sync(&[m("sg/a", &format!("{round:0>64}")), m("sg/b", "x")])
                .unwrap();
        }
        assert!(log.stats().compactions > 0);
        assert!(
            log.log_bytes() <= 2 * 200 + COMPACT_SLACK + 200,
            "{}",
            log.log_bytes()
        );
        drop(log);
        let (_, restored) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(
            restored,
            vec![m("sg/a", &format!("{:0>64}", 1999)), m("sg/b", "x")]
        );
    }

    #[test]
    fn an_old_snapshot_is_migrated_and_a_foreign_file_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        super::super::retained::write_snapshot(dir.path(), &[m("a", "1"), m("b", "2")]).unwrap();
        let (log, restored) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(restored, vec![m("a", "1"), m("b", "2")]);
        assert_eq!(log.stats().migrated, 2);
        assert!(!dir
            .path()
            .join(super::super::retained::SNAPSHOT_FILE)
            .exists());
        drop(log);
        let (_, restored) = RetainedLog::open(dir.path()).unwrap();
        assert_eq!(restored.len(), 2);
        fs::write(dir.path().join(LOG_FILE), b"garbage!garbage").unwrap();
        let (log, restored) = RetainedLog::open(dir.path()).unwrap();
        assert!(restored.is_empty());
        assert_eq!(log.stats().torn_cuts, 1);
        assert!(dir.path().join(format!("{LOG_FILE}.corrupt")).exists());
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Set(u8, u8),
            Clear(u8),
            Sync,
            Compact,
            Reopen,
            /// Power cut: the last `n` bytes of what was appended since the last sync vanish (only the
            /// tail of an interrupted write can be torn; earlier syncs were fsync'ed).
            Crash(u16),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                5 => (0u8..12, any::<u8>()).prop_map(|(t, v)| Op::Set(t, v)),
                2 => (0u8..12).prop_map(Op::Clear),
                4 => Just(Op::Sync),
                1 => Just(Op::Compact),
                1 => Just(Op::Reopen),
                1 => any::<u16>().prop_map(Op::Crash),
            ]
        }

        /// What a start would restore from the log in `dir` now.
        fn on_disk(dir: &Path) -> Vec<Message> {
            read_for_restore(dir).messages
        }

        fn as_messages(model: &BTreeMap<String, Vec<u8>>) -> Vec<Message> {
            model
                .iter()
                .map(|(t, p)| Message {
                    topic: t.clone(),
                    payload: p.clone(),
                    qos: 1,
                    retain: true,
                })
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Against an in-memory model: after a reopen the log holds exactly the last synced state;
            /// after a crash that tears the last append, the state of the sync before it or of that sync
            /// (never a mix beyond the torn record, never anything older), and the cut is counted.
            #[test]
            fn log_matches_model(ops in proptest::collection::vec(op(), 1..80)) {
                let dir = tempfile::tempdir().unwrap();
                let (mut log, _) = RetainedLog::open(dir.path()).unwrap();
                let mut store: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                let mut synced = store.clone();
                let mut before_last = store.clone();
                let mut last_append: Option<(u64, u64)> = None;
                for op in ops {
                    match op {
                        Op::Set(t, v) => { store.insert(format!("sg/t{t}"), vec![b'a' + v % 26; 1 + v as usize % 40]); }
                        Op::Clear(t) => { store.remove(&format!("sg/t{t}")); }
                        Op::Sync => {
                            let before = log.log_bytes();
                            let compactions = log.stats().compactions;
                            let n = log.sync(&as_messages(&store)).unwrap();
                            if n > 0 {
                                before_last = synced.clone();
                                last_append = (log.stats().compactions == compactions).then_some((before, log.log_bytes()));
                            }
                            synced = store.clone();
                            prop_assert_eq!(log.len(), synced.len());
                            prop_assert_eq!(on_disk(dir.path()), as_messages(&synced));
                        }
                        Op::Compact => {
                            let held = as_messages(&synced);
                            let live = latest_by_topic(held.iter());
                            log.compact(&live).unwrap();
                            last_append = None;
                            prop_assert_eq!(on_disk(dir.path()), held);
                        }
                        Op::Reopen => {
                            drop(log);
                            let (reopened, restored) = RetainedLog::open(dir.path()).unwrap();
                            log = reopened;
                            prop_assert_eq!(restored, as_messages(&synced));
                            last_append = None;
                        }
                        Op::Crash(cut) => {
                            drop(log);
                            let torn = match last_append {
                                Some((start, end)) if end > start => {
                                    let cut = 1 + cut as u64 % (end - start);
                                    let file = OpenOptions::new().write(true).open(dir.path().join(LOG_FILE)).unwrap();
                                    file.set_len(end - cut).unwrap();
                                    true
                                }
                                _ => false,
                            };
                            let (reopened, restored) = RetainedLog::open(dir.path()).unwrap();
                            log = reopened;
                            if torn {
                                // Every topic is either as before the torn sync or as after it.
                                for (topic, payload) in restored.iter().map(|m| (m.topic.clone(), m.payload.clone())) {
                                    prop_assert!(synced.get(&topic) == Some(&payload) || before_last.get(&topic) == Some(&payload));
                                }
                                for (topic, payload) in &synced {
                                    if before_last.get(topic) == Some(payload) {
                                        prop_assert!(restored.iter().any(|m| &m.topic == topic && &m.payload == payload), "unchanged {} lost", topic);
                                    }
                                }
                            } else {
                                prop_assert_eq!(&restored, &as_messages(&synced));
                            }
                            synced = restored.iter().map(|m| (m.topic.clone(), m.payload.clone())).collect();
                            before_last = synced.clone();
                            last_append = None;
                        }
                    }
                }
            }
        }
    }
}
