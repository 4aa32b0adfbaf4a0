//! The retained-message store the embedded engine uses, owned by the host: no time-to-live (a retained
//! sensor value stays until it is replaced or cleared by an empty retained publish, unless an MQTT 5
//! publisher set a Message Expiry Interval on it), and the reader of the old snapshot format. This
//! module stores and serialises; it never decides what is published.
//!
//! Messages are kept in one map ordered by topic, so that the messages a new subscription matches can be
//! read in pieces ([`RetainedStore::chunk`]: at most a chunk of matches, and a bounded scan, per call)
//! while they are delivered, instead of collected all at once (the engine's trie returns every match of
//! `#` in one vector). A filter's literal levels before its first wildcard bound the scan to that part of
//! the map; `$`-topics are matched as [`crate::topic::matches`] says (a filter starting with a wildcard
//! does not match them).
//!
//! A message is kept as its payload, QoS and sender under its topic ([`Held`]), not as the engine's
//! boxed `Publish` (about 220 bytes more each, most of them MQTT 5 property fields a sensor value never
//! has): properties, an expiry and the engine's rarer fields are boxed only when a message has them, and
//! the engine's `Retain` is rebuilt, with the same topic, payload, QoS, properties and sender, each time
//! the engine reads one. The topic and payload are reference-counted bytes shared with the retained
//! log's index and the readers ([`RetainedStore::shared`]), never copied.
//!
//! What reaches the disk is [`super::retained_log`]'s business (an append-only log of changes). The
//! whole-file snapshot below (`retained.bin`, versioned and length-prefixed) is what earlier versions
//! wrote: it is read once, to migrate it into the log, and a damaged one is set aside
//! (`retained.bin.corrupt`) with what could be read kept. [`write_snapshot`] stays for tests that
//! build an old state directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rmqtt::codec::v5::PublishProperties;
use rmqtt::retain::RetainStorage;
use rmqtt::types::{ClientId, CodecPublish, MsgID, QoS, Retain, TopicFilter, TopicName};

use crate::model::Message;
use crate::ratelimit::{suppressed_suffix, RateLimiter};

/// File name of the snapshot inside the state directory.
pub const SNAPSHOT_FILE: &str = "retained.bin";
const MAGIC: &[u8; 8] = b"SGRET\x00\x00\x01";

/// Entries one [`RetainedStore::chunk`] call looks at, per match it may return (a filter like `+/x`
/// scans the whole map; the read lock is held for at most this many entries per chunk).
const SCAN_PER_MATCH: usize = 16;

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

/// One retained message as the store keeps it: its payload, QoS and sender, the topic being the map's
/// key. What only some messages carry (MQTT 5 properties other than none at all, an expiry, an engine
/// message id, a target client or a delay) is boxed in [`Rare`] when present, so a retained sensor value
/// costs its key, its payload and this small value, not the engine's whole boxed `Publish`. The
/// engine's [`Retain`] is rebuilt when the engine asks ([`Held::to_retain`]), with the same topic,
/// payload, QoS, properties and sender as were stored.
struct Held {
    payload: bytes::Bytes,
    from: rmqtt::types::From,
    qos: QoS,
    /// The publish carried an empty MQTT 5 property block (what the gateway's own publishes and every
    /// MQTT 5 client's carry) rather than none (MQTT 3.1.1); only meaningful when `rare` is `None`.
    empty_properties: bool,
    rare: Option<Box<Rare>>,
}

/// What few retained messages carry, kept apart from [`Held`] so that the others do not pay for it.
struct Rare {
    properties: Option<PublishProperties>,
    expires: Option<Instant>,
    msg_id: Option<MsgID>,
    target_clientid: Option<ClientId>,
    delay_interval: Option<u32>,
}

impl Held {
    /// Keeps what a retained publish needs to be delivered again: its payload, QoS, properties and
    /// sender, and, when its publisher set a Message Expiry Interval, when it expires (counted from
    /// `now`). Its flags, packet id and creation time are set afresh at each delivery by the engine.
    fn of(retain: Retain, now: Instant) -> Held {
        let Retain {
            msg_id,
            from,
            publish,
        } = retain;
        let rmqtt::types::Publish {
            inner,
            target_clientid,
            delay_interval,
            create_time: _,
        } = publish;
        let CodecPublish {
            qos,
            payload,
            properties,
            ..
        } = *inner;
        // Only an explicit MQTT 5 Message Expiry Interval limits a retained message's life; the engine's
        // listener-wide default expiry is meant for queued messages, not for the last value of a sensor.
        let expires = properties
            .as_ref()
            .and_then(|p| p.message_expiry_interval)
            .map(|secs| now + Duration::from_secs(u64::from(secs.get())));
        let empty_properties = properties
            .as_ref()
            .is_some_and(|p| *p == PublishProperties::default());
        let common = (properties.is_none() || empty_properties)
            && expires.is_none()
            && msg_id.is_none()
            && target_clientid.is_none()
            && delay_interval.is_none();
        let rare = (!common).then(|| {
            Box::new(Rare {
                properties,
                expires,
                msg_id,
                target_clientid,
                delay_interval,
            })
        });
        Held {
            payload,
            from,
            qos,
            empty_properties,
            rare,
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.expires().is_none_or(|at| at > now)
    }

    fn expires(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|rare| rare.expires)
    }

    /// The engine's form of this message on `topic`, as it was stored (a retained publish without a
    /// packet id).
    fn to_retain(&self, topic: &TopicName) -> Retain {
        let properties = match &self.rare {
            Some(rare) => rare.properties.clone(),
            None => self.empty_properties.then(PublishProperties::default),
        };
        let codec = CodecPublish {
            dup: false,
            retain: true,
            qos: self.qos,
            topic: topic.clone(),
            packet_id: None,
            payload: self.payload.clone(),
            properties,
        };
        let mut publish = rmqtt::types::Publish::from(codec);
        if let Some(rare) = &self.rare {
            publish.target_clientid = rare.target_clientid.clone();
            publish.delay_interval = rare.delay_interval;
        }
        Retain {
            msg_id: self.rare.as_ref().and_then(|rare| rare.msg_id),
            from: self.from.clone(),
            publish,
        }
    }
}

/// A retained message as [`RetainedStore::shared`] gives it: the topic and payload are the store's,
/// reference-counted.
pub struct SharedMessage {
    pub topic: TopicName,
    pub payload: bytes::Bytes,
    pub qos: u8,
}

/// Where a chunked read of the messages matching a filter goes on: after this topic.
pub type Cursor = Option<TopicName>;

/// The retained messages, ordered by topic, plus a dirty flag for the snapshot writer, bounded by
/// [`RetainLimits`].
pub struct RetainedStore {
    messages: RwLock<BTreeMap<TopicName, Held>>,
    dirty: AtomicBool,
    limits: RetainLimits,
    /// Retained publishes to new topics not stored because the store was full.
    refused_full: AtomicU64,
    full_log: RateLimiter,
}

impl RetainedStore {
    pub fn new(limits: RetainLimits) -> Arc<Self> {
        Arc::new(RetainedStore {
            messages: RwLock::new(BTreeMap::new()),
            dirty: AtomicBool::new(false),
            limits,
            refused_full: AtomicU64::new(0),
            full_log: RateLimiter::new(Duration::from_secs(60)),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<TopicName, Held>> {
        // A map of values: a panic elsewhere cannot leave it half-updated.
        self.messages.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<TopicName, Held>> {
        self.messages.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Retained publishes to new topics that were not stored because `max_messages` were held.
    pub fn refused_full(&self) -> u64 {
        self.refused_full.load(Ordering::Relaxed)
    }

    /// Retained topics held now (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a snapshot message may be restored: a topic the broker would accept today.
    pub fn restorable(&self, topic: &str) -> bool {
        crate::topic::check_name(topic, self.limits.max_topic_levels).is_ok()
    }

    /// Every retained message, sorted by topic, sharing the store's bytes (what the retained log's
    /// sync reads: no copy of the payloads).
    pub fn shared(&self) -> Vec<SharedMessage> {
        let now = Instant::now();
        self.read()
            .iter()
            .filter(|(_, held)| held.live(now))
            .map(|(topic, held)| SharedMessage {
                topic: topic.clone(),
                payload: held.payload.clone(),
                qos: held.qos.value(),
            })
            .collect()
    }

    /// Every retained message, sorted by topic.
    pub async fn all(&self) -> Vec<Message> {
        let now = Instant::now();
        self.read()
            .iter()
            .filter(|(_, held)| held.live(now))
            .map(|(topic, held)| Message {
                topic: topic.to_string(),
                payload: held.payload.to_vec(),
                qos: held.qos.value(),
                retain: true,
            })
            .collect()
    }

    /// Up to `max` messages matching `filter` whose topics sort after `after`, and where to go on
    /// (`None`: nothing more matches). Looks at no more than `max * 16` entries per call.
    pub fn chunk(
        &self,
        filter: &str,
        after: &Cursor,
        max: usize,
    ) -> (Vec<(TopicName, Retain)>, Option<Cursor>) {
        let max = max.max(1);
        let now = Instant::now();
        let messages = self.read();
        if !filter.contains(['+', '#']) {
            let found = match after {
                None => messages
                    .get_key_value(filter)
                    .filter(|(_, held)| held.live(now))
                    .map(|(topic, held)| (topic.clone(), held.to_retain(topic)))
                    .into_iter()
                    .collect(),
                Some(_) => Vec::new(),
            };
            return (found, None);
        }
        let prefix = literal_prefix(filter);
        let start = match after {
            Some(topic) => Bound::Excluded(topic.as_ref() as &str),
            None => Bound::Included(prefix),
        };
        let mut found = Vec::new();
        let mut last = None;
        for (scanned, (topic, held)) in messages
            .range::<str, _>((start, Bound::Unbounded))
            .enumerate()
        {
            if !topic.starts_with(prefix) {
                return (found, None);
            }
            if scanned >= max * SCAN_PER_MATCH || found.len() >= max {
                return (found, Some(last));
            }
            if held.live(now) && crate::topic::matches(filter, topic) {
                found.push((topic.clone(), held.to_retain(topic)));
            }
            last = Some(topic.clone());
        }
        (found, None)
    }

    /// Every message matching `filter` (for the engine's own `get`; subscriptions read in chunks).
    fn matching(&self, filter: &str) -> Vec<(TopicName, Retain)> {
        let mut all = Vec::new();
        let mut cursor: Cursor = None;
        loop {
            let (found, next) = self.chunk(filter, &cursor, 4096);
            all.extend(found);
            match next {
                Some(next) => cursor = next,
                None => return all,
            }
        }
    }

    /// Puts a message read from the snapshot back, without marking the store changed.
    pub async fn restore(&self, from: &rmqtt::types::From, publish: rmqtt::types::Publish) {
        let topic = publish.topic.clone();
        if publish.payload.is_empty() {
            return;
        }
        let retain = Retain {
            msg_id: None,
            from: from.clone(),
            publish,
        };
        let held = Held::of(retain, Instant::now());
        self.write().insert(topic, held);
    }

    /// True once since the last call if anything changed.
    pub fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    fn store(&self, topic: &TopicName, retain: Retain) {
        if retain.publish.payload.is_empty() {
            if self.write().remove(topic as &str).is_some() {
                self.dirty.store(true, Ordering::Release);
            }
            return;
        }
        let held = Held::of(retain, Instant::now());
        {
            let mut messages = self.write();
            if messages.len() >= self.limits.max_messages && !messages.contains_key(topic as &str) {
                let now = Instant::now();
                messages.retain(|_, held| held.live(now));
            }
            if messages.len() < self.limits.max_messages || messages.contains_key(topic as &str) {
                messages.insert(topic.clone(), held);
                self.dirty.store(true, Ordering::Release);
                return;
            }
        }
        self.refused_full.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.full_log.admit("full") {
            log::warn!(
                "broker: retained message on {:?} not stored: max_retained_messages = {} topics are retained already{}",
                topic as &str,
                self.limits.max_messages,
                suppressed_suffix(suppressed)
            );
        }
    }
}

/// The part of a filter before its first wildcard level, without the separator: every topic the filter
/// matches starts with it (`a/b/#` matches `a/b` itself).
fn literal_prefix(filter: &str) -> &str {
    let mut end = 0;
    for (at, level) in filter.split('/').scan(0usize, |at, level| {
        let start = *at;
        *at += level.len() + 1;
        Some((start, level))
    }) {
        if level == "+" || level == "#" {
            return &filter[..end];
        }
        end = at + level.len();
    }
    filter
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
        self.0.store(topic, retain);
        Ok(())
    }

    async fn get(&self, topic_filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        Ok(self.0.matching(topic_filter))
    }

    async fn get_all_paginated(
        &self,
        offset: usize,
        limit: usize,
    ) -> rmqtt::Result<(Vec<(TopicName, Retain, Option<Duration>)>, bool)> {
        let now = Instant::now();
        let messages = self.0.read();
        let items: Vec<_> = messages
            .iter()
            .filter(|(_, held)| held.live(now))
            .skip(offset)
            .take(limit)
            .map(|(topic, held)| {
                (
                    topic.clone(),
                    held.to_retain(topic),
                    held.expires().map(|at| at.saturating_duration_since(now)),
                )
            })
            .collect();
        let more = offset.saturating_add(items.len()) < messages.len();
        Ok((items, more))
    }

    async fn count(&self) -> isize {
        self.0.len() as isize
    }

    async fn max(&self) -> isize {
        self.0.limits.max_messages as isize
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

    fn store_with(topics: &[&str]) -> Arc<RetainedStore> {
        let store = RetainedStore::new(RetainLimits {
            max_messages: 1000,
            max_topic_levels: 16,
        });
        let from = rmqtt::types::From::from_system(rmqtt::types::Id::new(
            1,
            0,
            None,
            None,
            rmqtt::types::ClientId::from("t"),
            None,
        ));
        for topic in topics {
            let codec = rmqtt::types::CodecPublish {
                dup: false,
                retain: true,
                qos: rmqtt::types::QoS::AtLeastOnce,
                topic: TopicName::from(topic.to_string()),
                packet_id: None,
                payload: bytes::Bytes::from_static(b"v"),
                properties: None,
            };
            let retain = Retain {
                msg_id: None,
                from: from.clone(),
                publish: codec.into(),
            };
            store.store(&TopicName::from(topic.to_string()), retain);
        }
        store
    }

    fn read_all(store: &RetainedStore, filter: &str, chunk: usize) -> Vec<String> {
        let mut cursor = None;
        let mut got = Vec::new();
        loop {
            let (found, next) = store.chunk(filter, &cursor, chunk);
            assert!(found.len() <= chunk);
            got.extend(found.into_iter().map(|(t, _)| t.to_string()));
            match next {
                Some(next) => cursor = next,
                None => return got,
            }
        }
    }

    fn retain_with(properties: Option<PublishProperties>) -> Retain {
        let from = rmqtt::types::From::from_system(rmqtt::types::Id::new(
            1,
            0,
            None,
            None,
            rmqtt::types::ClientId::from("t"),
            None,
        ));
        let codec = CodecPublish {
            dup: true,
            retain: true,
            qos: QoS::ExactlyOnce,
            topic: TopicName::from("sg/kitchen"),
            packet_id: std::num::NonZeroU16::new(7),
            payload: bytes::Bytes::from_static(b"21.5"),
            properties,
        };
        Retain {
            msg_id: None,
            from,
            publish: codec.into(),
        }
    }

    /// What a delivery depends on, as comparable values.
    fn delivered(retain: &Retain) -> (QoS, Vec<u8>, Option<PublishProperties>, String) {
        (
            retain.publish.qos,
            retain.publish.payload.to_vec(),
            retain.publish.properties.clone(),
            retain.from.id.client_id.to_string(),
        )
    }

    #[test]
    fn a_held_message_is_rebuilt_as_it_was_stored_and_boxes_only_what_is_rare() {
        let now = Instant::now();
        let topic = TopicName::from("sg/kitchen");
        let rich_properties = PublishProperties {
            message_expiry_interval: std::num::NonZeroU32::new(100),
            content_type: Some("text/plain".into()),
            correlation_data: Some(bytes::Bytes::from_static(b"req")),
            response_topic: Some("answers".into()),
            user_properties: vec![("unit".into(), "celsius".into())],
            is_utf8_payload: true,
            ..PublishProperties::default()
        };
        for (properties, boxed) in [
            (None, false),
            (Some(PublishProperties::default()), false),
            (Some(rich_properties), true),
        ] {
            let stored = retain_with(properties);
            let held = Held::of(stored.clone(), now);
            assert_eq!(
                held.rare.is_some(),
                boxed,
                "{:?}",
                stored.publish.properties
            );
            let rebuilt = held.to_retain(&topic);
            assert_eq!(delivered(&rebuilt), delivered(&stored));
            assert_eq!(&rebuilt.publish.topic as &str, "sg/kitchen");
            assert_eq!(rebuilt.publish.packet_id, None);
            assert!(rebuilt.publish.retain && !rebuilt.publish.dup);
            assert_eq!(
                held.expires(),
                boxed.then(|| now + Duration::from_secs(100))
            );
        }
        let mut targeted = retain_with(None);
        targeted.msg_id = Some(9);
        targeted.publish.delay_interval = Some(5);
        let rebuilt = Held::of(targeted, now).to_retain(&topic);
        assert_eq!(rebuilt.msg_id, Some(9));
        assert_eq!(rebuilt.publish.delay_interval, Some(5));
        assert!(
            std::mem::size_of::<Held>() <= 64,
            "{} bytes",
            std::mem::size_of::<Held>()
        );
    }

    #[test]
    fn literal_prefixes_stop_before_the_first_wildcard() {
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("a/b/#"), "a/b");
        assert_eq!(literal_prefix("a/+/c"), "a");
        assert_eq!(literal_prefix("+/c"), "");
        assert_eq!(literal_prefix("a/b"), "a/b");
    }

    #[test]
    fn chunks_return_every_match_once_and_skip_dollar_topics_for_wildcards() {
        let topics: Vec<String> = (0..500).map(|i| format!("sg/d{i}/t")).collect();
        let mut all: Vec<&str> = topics.iter().map(String::as_str).collect();
        all.extend(["sg", "sgx/a", "$SYS/up", "other/t", "a//t"]);
        let store = store_with(&all);
        let got = read_all(&store, "sg/#", 7);
        assert_eq!(got.len(), 501, "sg/# matches sg and its 500 children");
        let got = read_all(&store, "#", 3);
        assert_eq!(got.len(), 504, "everything but $SYS/up");
        assert!(!got.iter().any(|t| t.starts_with('$')));
        assert_eq!(read_all(&store, "$SYS/#", 2), vec!["$SYS/up".to_string()]);
        assert_eq!(read_all(&store, "+/+/t", 5).len(), 501, "500 and a//t");
        assert_eq!(read_all(&store, "sg/d7/t", 5), vec!["sg/d7/t".to_string()]);
        let mut sorted = read_all(&store, "#", 1000);
        sorted.dedup();
        assert_eq!(sorted.len(), 504);
    }

    #[test]
    fn an_empty_retained_publish_clears_and_the_bound_holds() {
        let store = RetainedStore::new(RetainLimits {
            max_messages: 2,
            max_topic_levels: 16,
        });
        let filled = store_with(&["a", "b"]);
        let from = filled
            .read()
            .get_key_value("a")
            .map(|(topic, held)| held.to_retain(topic))
            .unwrap();
        store.store(&TopicName::from("a"), from.clone());
        store.store(&TopicName::from("b"), from.clone());
        store.store(&TopicName::from("c"), from.clone());
        assert_eq!(store.len(), 2);
        assert_eq!(store.refused_full(), 1);
        let mut empty = from.clone();
        empty.publish.payload = bytes::Bytes::new();
        store.store(&TopicName::from("a"), empty);
        store.store(&TopicName::from("c"), from);
        assert_eq!(
            read_all(&store, "#", 10),
            vec!["b".to_string(), "c".to_string()]
        );
    }
}
