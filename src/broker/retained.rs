//! The retained-message store the embedded engine uses, owned by the host: no time-to-live (a retained
//! sensor value stays until it is replaced or cleared by an empty retained publish, unless an MQTT 5
//! publisher set a Message Expiry Interval on it), and a snapshot on disk so that retained state survives
//! a restart. This module stores and serialises; it never decides what is published.
//!
//! The snapshot is written whole to a temporary file, fsync'ed, and renamed over the old one, so a power
//! cut leaves either the old or the new snapshot, never a mix. Its format is versioned and length-prefixed;
//! a damaged file is set aside (`retained.bin.corrupt`) and the daemon starts with what it could read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::types::{Retain, TopicFilter, TopicName};

use crate::model::Message;
use crate::ratelimit::{suppressed_suffix, RateLimiter};

/// File name of the snapshot inside the state directory.
pub const SNAPSHOT_FILE: &str = "retained.bin";
const MAGIC: &[u8; 8] = b"SGRET\x00\x00\x01";

/// Why the snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a sensorgate retained snapshot (bad header)")]
    BadHeader,
    #[error("snapshot truncated or damaged after {read} messages")]
    Damaged { read: usize },
}

/// Bounds of the retained store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainLimits {
    /// Retained topics held at most; a retained publish to a new topic beyond it is not stored.
    pub max_messages: usize,
    /// Topics deeper than this are never stored (the engine's topic tree recurses per level).
    pub max_topic_levels: usize,
}

/// The engine's retained store plus a dirty flag for the snapshot writer, bounded by [`RetainLimits`].
pub struct RetainedStore {
    messages: DefaultRetainStorage,
    dirty: AtomicBool,
    limits: RetainLimits,
    /// Retained publishes to new topics not stored because the store was full.
    refused_full: AtomicU64,
    full_log: RateLimiter,
}

impl RetainedStore {
    pub fn new(limits: RetainLimits) -> Arc<Self> {
        Arc::new(RetainedStore {
            messages: DefaultRetainStorage::new(),
            dirty: AtomicBool::new(false),
            limits,
            refused_full: AtomicU64::new(0),
            full_log: RateLimiter::new(Duration::from_secs(60)),
        })
    }

    /// Retained publishes to new topics that were not stored because `max_messages` were held.
    pub fn refused_full(&self) -> u64 {
        self.refused_full.load(Ordering::Relaxed)
    }

    /// Whether a snapshot message may be restored: a topic the broker would accept today.
    pub fn restorable(&self, topic: &str) -> bool {
        crate::topic::check_name(topic, self.limits.max_topic_levels).is_ok()
    }

    /// Every retained message, sorted by topic.
    pub async fn all(&self) -> Vec<Message> {
        let (entries, _) = self
            .messages
            .get_all_paginated(0, usize::MAX)
            .await
            .unwrap_or_default();
        let mut all: Vec<Message> = entries
            .into_iter()
            .map(|(topic, retain, _)| Message {
                topic: topic.to_string(),
                payload: retain.publish.payload.to_vec(),
                qos: retain.publish.qos.value(),
                retain: true,
            })
            .collect();
        all.sort_by(|a, b| a.topic.cmp(&b.topic));
        all
    }

    /// Puts a message read from the snapshot back, without marking the store changed.
    pub async fn restore(&self, from: &rmqtt::types::From, publish: rmqtt::types::Publish) {
        let topic = publish.topic.clone();
        let retain = Retain {
            msg_id: None,
            from: from.clone(),
            publish,
        };
        if let Err(error) = self.messages.set_with_timeout(&topic, retain, None).await {
            log::warn!("retained message for {topic} not restored: {error}");
        }
    }

    /// True once since the last call if anything changed.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    async fn store(&self, topic: &TopicName, retain: Retain) -> rmqtt::Result<()> {
        if !retain.publish.payload.is_empty() && !self.has_room_for(topic).await {
            self.refused_full.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.full_log.admit("full") {
                log::warn!(
                    "broker: retained message on {:?} not stored: max_retained_messages = {} topics are retained already{}",
                    topic as &str,
                    self.limits.max_messages,
                    suppressed_suffix(suppressed)
                );
            }
            return Ok(());
        }
        // Only an explicit MQTT 5 Message Expiry Interval limits a retained message's life; the engine's
        // listener-wide default expiry is meant for queued messages, not for the last value of a sensor.
        let explicit_expiry = retain
            .publish
            .properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .map(|secs| Duration::from_secs(u64::from(secs.get())));
        self.messages
            .set_with_timeout(topic, retain, explicit_expiry)
            .await?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }
}

impl RetainedStore {
    /// Room for a retained message on `topic`: the store is below its bound, or the topic is held already
    /// (a replacement does not grow it).
    async fn has_room_for(&self, topic: &TopicName) -> bool {
        let held = RetainStorage::count(&self.messages).await.max(0) as usize;
        if held < self.limits.max_messages {
            return true;
        }
        let filter = TopicFilter::from(topic.as_ref() as &str);
        self.messages
            .get_message(&filter)
            .await
            .is_ok_and(|found| !found.is_empty())
    }
}

/// The adapter installed into the engine (`scx.extends.retain_mut()`).
pub struct EngineRetainStorage(pub Arc<RetainedStore>);

#[async_trait]
impl RetainStorage for EngineRetainStorage {
    fn enable(&self) -> bool {
        true
    }

    async fn set(
        &self,
        topic: &TopicName,
        retain: Retain,
        _expiry: Option<Duration>,
    ) -> rmqtt::Result<()> {
        self.0.store(topic, retain).await
    }

    async fn get(&self, topic_filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        self.0.messages.get_message(topic_filter).await
    }

    async fn get_all_paginated(
        &self,
        offset: usize,
        limit: usize,
    ) -> rmqtt::Result<(Vec<(TopicName, Retain, Option<Duration>)>, bool)> {
        self.0.messages.get_all_paginated(offset, limit).await
    }

    async fn count(&self) -> isize {
        RetainStorage::count(&self.0.messages).await
    }

    async fn max(&self) -> isize {
        RetainStorage::max(&self.0.messages).await
    }
}

/// Serialises retained messages: magic, then per message `u8 qos, u32 topic len, topic, u32 payload len,
/// payload` (big-endian lengths), then a `u64` FNV-1a checksum of everything before it.
pub fn encode_snapshot(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        16 + messages
            .iter()
            .map(|m| 9 + m.topic.len() + m.payload.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    for message in messages {
        out.push(message.qos);
        out.extend_from_slice(&(message.topic.len() as u32).to_be_bytes());
        out.extend_from_slice(message.topic.as_bytes());
        out.extend_from_slice(&(message.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&message.payload);
    }
    let checksum = fnv1a64(&out);
    out.extend_from_slice(&checksum.to_be_bytes());
    out
}

/// Parses a snapshot. On damage, returns what could be read before it, with the error. Messages are read
/// front to back and the checksum is recognised as the 8 bytes that follow the last message, so a file cut
/// short still yields every message before the cut.
pub fn decode_snapshot(bytes: &[u8]) -> (Vec<Message>, Option<SnapshotError>) {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return (Vec::new(), Some(SnapshotError::BadHeader));
    }
    let mut messages = Vec::new();
    let mut at = MAGIC.len();
    loop {
        let rest = &bytes[at..];
        if rest.len() == 8 {
            let error =
                (rest != fnv1a64(&bytes[..at]).to_be_bytes()).then_some(SnapshotError::Damaged {
                    read: messages.len(),
                });
            return (messages, error);
        }
        match read_message(rest) {
            Some((message, tail)) => {
                messages.push(message);
                at = bytes.len() - tail.len();
            }
            None => {
                let read = messages.len();
                return (messages, Some(SnapshotError::Damaged { read }));
            }
        }
    }
}

fn read_message(bytes: &[u8]) -> Option<(Message, &[u8])> {
    let (&qos, rest) = bytes.split_first()?;
    let (topic, rest) = read_prefixed(rest)?;
    let (payload, rest) = read_prefixed(rest)?;
    let topic = String::from_utf8(topic.to_vec()).ok()?;
    if qos > 2 || topic.is_empty() {
        return None;
    }
    Some((
        Message {
            topic,
            payload: payload.to_vec(),
            qos,
            retain: true,
        },
        rest,
    ))
}

fn read_prefixed(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len_bytes: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let rest = &bytes[4..];
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes the snapshot atomically (temp file, fsync, rename, fsync of the directory). Blocking: call it
/// from `spawn_blocking`.
pub fn write_snapshot(dir: &Path, messages: &[Message]) -> Result<(), SnapshotError> {
    let path = dir.join(SNAPSHOT_FILE);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let io = |source| SnapshotError::Io {
        path: tmp.clone(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&encode_snapshot(messages)).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(|source| SnapshotError::Io {
        path: path.clone(),
        source,
    })?;
    if let Ok(dir_handle) = std::fs::File::open(dir) {
        let _ = dir_handle.sync_all();
    }
    Ok(())
}

/// Reads the snapshot if there is one. A damaged file is renamed to `retained.bin.corrupt` and what could
/// be read from it is returned with the error, so the caller can log it and go on.
pub fn read_snapshot(dir: &Path) -> (Vec<Message>, Option<SnapshotError>) {
    let path = dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), None),
        Err(source) => return (Vec::new(), Some(SnapshotError::Io { path, source })),
    };
    let (messages, error) = decode_snapshot(&bytes);
    if error.is_some() {
        let _ = std::fs::rename(&path, dir.join(format!("{SNAPSHOT_FILE}.corrupt")));
    }
    (messages, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &[u8], qos: u8) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos,
            retain: true,
        }
    }

    #[test]
    fn snapshot_round_trips_binary_payloads() {
        let messages = vec![
            message("a/b", b"21.5", 1),
            message("c", &[0, 0xFF, 0xC0], 0),
            message("d", b"", 2),
        ];
        let (decoded, error) = decode_snapshot(&encode_snapshot(&messages));
        assert!(error.is_none());
        assert_eq!(decoded, messages);
    }

    #[test]
    fn truncated_snapshot_keeps_the_messages_before_the_damage() {
        let messages = vec![
            message("a", b"1", 1),
            message("b", b"2", 1),
            message("c", b"3", 1),
        ];
        let bytes = encode_snapshot(&messages);
        let (decoded, error) = decode_snapshot(&bytes[..bytes.len() - 12]);
        assert!(
            matches!(error, Some(SnapshotError::Damaged { .. })),
            "{error:?}"
        );
        assert_eq!(decoded, messages[..2].to_vec());
    }

    #[test]
    fn flipped_byte_is_detected() {
        let mut bytes = encode_snapshot(&[message("a", b"hello", 1)]);
        let last_payload_byte = bytes.len() - 9;
        bytes[last_payload_byte] ^= 0x01;
        assert!(matches!(
            decode_snapshot(&bytes).1,
            Some(SnapshotError::Damaged { .. })
        ));
    }

    #[test]
    fn foreign_file_is_refused() {
        assert!(matches!(
            decode_snapshot(b"{\"json\": true}").1,
            Some(SnapshotError::BadHeader)
        ));
    }

    #[test]
    fn write_then_read_and_damaged_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let messages = vec![message("sensorgate/kitchen", b"{}", 1)];
        write_snapshot(dir.path(), &messages).unwrap();
        assert_eq!(read_snapshot(dir.path()).0, messages);
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"garbage").unwrap();
        let (read, error) = read_snapshot(dir.path());
        assert!(read.is_empty() && error.is_some());
        assert!(dir.path().join("retained.bin.corrupt").exists());
        assert_eq!(read_snapshot(dir.path()).0, Vec::<Message>::new());
    }
}
