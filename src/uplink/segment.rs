//! The segment format of the spool's files, which the refused-message file shares: the 8-byte magic
//! `SGSPOOL1`, then records (`crate::record`'s framing around a body of sequence number, append time,
//! QoS, retain flag, topic and payload; the layout is drawn in [`super::spool`]). It owns the message
//! types a record holds, encoding one, reading records back one at a time through a chunked cache, and
//! the error naming the file that failed. It never decides what is kept, dropped or acknowledged (the
//! spool and the refused file do), and opens no file itself.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record;

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

/// What the spool appends: a message bound for the cloud broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// Why the spool (or its refused-message file) could not do its job. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool file {path}: {source} (check that the state directory exists, is writable by sensorgate, and the disk is not full)")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SpoolError {
    /// Whether the file system is full ([`crate::full_disk::is_full`]): the spool is as it was before
    /// the call that failed, and the same records may be written again later.
    pub fn is_disk_full(&self) -> bool {
        match self {
            SpoolError::Io { source, .. } => crate::full_disk::is_full(source),
        }
    }
}

/// Largest payload a record takes; bigger messages are refused and counted.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The first bytes of every file in the segment format.
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"SGSPOOL1";

/// Bytes before each record's body: its length and CRC.
pub(super) const RECORD_HEADER: usize = record::HEADER;

/// The fixed part of a body: sequence, time, QoS, flags, topic length.
const BODY_FIXED: usize = 20;

/// The longest body a record may state.
const MAX_BODY: usize = BODY_FIXED + u16::MAX as usize + MAX_PAYLOAD_BYTES;

/// What a record adds to its message's topic and payload on disk (length, CRC, sequence, time, QoS,
/// retain flag, topic length).
pub const RECORD_OVERHEAD: usize = RECORD_HEADER + BODY_FIXED;

/// How much [`ReadCache`] reads at once.
const READ_CHUNK: usize = 64 * 1024;

/// Maps an IO error on `path` to a [`SpoolError`] naming it.
pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a message is within what a record takes ([`MAX_PAYLOAD_BYTES`], a u16 topic length).
pub fn fits(message: &Outbound) -> bool {
    message.topic.len() <= u16::MAX as usize && message.payload.len() <= MAX_PAYLOAD_BYTES
}

/// The little-endian u32 at `at`.
pub(super) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

/// The little-endian u64 at `at`.
pub(super) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Appends one encoded record to `buf`.
pub(super) fn encode_record(buf: &mut Vec<u8>, seq: u64, now_ms: u64, message: &Outbound) {
    record::append(buf, |body| {
        body.extend_from_slice(&seq.to_le_bytes());
        body.extend_from_slice(&now_ms.to_le_bytes());
        body.push(message.qos.min(2));
        body.push(u8::from(message.retain));
        body.extend_from_slice(&(message.topic.len() as u16).to_le_bytes());
        body.extend_from_slice(message.topic.as_bytes());
        body.extend_from_slice(&message.payload);
    });
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
pub(super) struct ReadCache {
    start: u64,
    data: Vec<u8>,
}

impl ReadCache {
    /// The `len` bytes at `offset`, or `None` when the file (up to `limit`) ends before them.
    pub(super) fn get(
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

/// What [`next_record`] found at an offset.
pub(super) enum Next {
    /// A valid record and the offset after it.
    Record(Record, u64),
    /// The segment ends cleanly here.
    End,
    /// Torn or corrupt from here on.
    Corrupt,
}

/// The record at `offset` of `file` (whose valid bytes end at `limit`), read through `cache`.
pub(super) fn next_record(
    file: &File,
    offset: u64,
    limit: u64,
    cache: &mut ReadCache,
) -> io::Result<Next> {
    if offset >= limit {
        return Ok(Next::End);
    }
    let Some(header) = cache.get(file, offset, RECORD_HEADER, limit)? else {
        return Ok(Next::Corrupt);
    };
    let Some(header) = record::Header::parse(header, &(BODY_FIXED..=MAX_BODY)) else {
        return Ok(Next::Corrupt);
    };
    let body_offset = offset + RECORD_HEADER as u64;
    let Some(body) = cache.get(file, body_offset, header.body_len(), limit)? else {
        return Ok(Next::Corrupt);
    };
    if !header.matches(body) {
        return Ok(Next::Corrupt);
    }
    Ok(match decode_body(body) {
        Some(record) => Next::Record(record, offset + header.record_len() as u64),
        None => Next::Corrupt,
    })
}

/// The valid records of a file in the segment format (magic, then records) of `len` bytes, and where
/// they end (0 when the magic is wrong: nothing in it is trusted).
pub(super) fn read_valid_records(file: &File, len: u64) -> io::Result<(Vec<Record>, u64)> {
    let mut magic = [0u8; 8];
    if len < 8 || file.read_exact_at(&mut magic, 0).is_err() || &magic != SEGMENT_MAGIC {
        return Ok((Vec::new(), 0));
    }
    let mut records = Vec::new();
    let mut cache = ReadCache::default();
    let mut offset = SEGMENT_MAGIC.len() as u64;
    while let Next::Record(record, next) = next_record(file, offset, len, &mut cache)? {
        records.push(record);
        offset = next;
    }
    Ok((records, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_its_topic_and_payload_plus_the_stated_overhead() {
        let message = Outbound {
            topic: "site/sg/meter".into(),
            payload: b"{\"kwh\":1.5}".to_vec(),
            qos: 1,
            retain: true,
        };
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 1_000, &message);
        assert_eq!(
            buf.len(),
            RECORD_OVERHEAD + message.topic.len() + message.payload.len()
        );
        assert_eq!(RECORD_OVERHEAD, 28);
    }
}
