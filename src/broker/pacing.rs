//! Retained messages for a new subscription are streamed, not queued: every retained message the filter
//! matches is delivered, in bounded memory, at the pace the subscriber takes them.
//!
//! The engine (rmqtt 0.24.0, `session.rs` `_send_subscribe_messages`) asks `Shared::retain_load_with`
//! for the retained messages a subscription matches, on a task of its own, and pushes each one through
//! `Entry::publish` into the subscriber's unbounded channel and from there into its deliver queue
//! (`max_mqueue_len`), which drops when full: 12,001 retained topics gave a late QoS 1 `#` subscriber
//! 10,702. Here, [`RetainedPacer::stream`] reads the matches from the host store in chunks of
//! [`RETAINED_CHUNK`] ([`RetainedStore::chunk`]) and hands each chunk to the engine's callback inside a
//! task-local scope; [`PacedEntry`] (what `BoundedShared::entry` returns) recognises the publishes made
//! in that scope and lets one through only while fewer than [`RETAINED_WINDOW`] retained messages wait
//! for that subscriber between the channel and its socket. Behind the window, the session's own in-flight
//! window (its Receive Maximum, `max_inflight`) paces QoS 1/2, and the socket paces QoS 0; a subscriber
//! that does not read holds only its stream's chunk. The [`DeliveryCountHook`](super::delivery_counts::DeliveryCountHook) takes a message off the
//! count when it is delivered (`MessageExpiryCheck`) or dropped.
//!
//! The deliver queue is sized `max_queued_messages + RETAINED_WINDOW` (see `bind_listener`), so the
//! streamed messages never push live ones out, and `max_queued_messages` bounds only live traffic.
//! When the subscriber's connection ends mid-stream, the rest of that stream is abandoned (counted in
//! [`RetainedPacer::abandoned`]); a persistent session gets the retained messages again when it next
//! subscribes. Retained messages delivered later by a publisher's retain-as-published forwards carry the
//! retain flag too and are taken off the count as well; the count saturates at zero, so that only ever
//! widens the window by those few messages.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::session::Session;
use rmqtt::shared::{Entry, RetainLoadCallback};
use rmqtt::types::{
    ClientId, DashMap, From, Id, IsAdmin, MsgID, NodeId, OfflineSession, Publish, Reason,
    SubsSearchResult, Subscribe, SubscribeReturn, TopicFilter, Tx, Unsubscribe,
};
use tokio::sync::Notify;

use super::delivery_counts::DeliveryCounts;
use super::retained::{Cursor, RetainedStore};

/// Retained messages that may wait for one subscriber between the store and its socket.
pub const RETAINED_WINDOW: usize = 256;
/// Retained messages read from the store at once for one subscription.
pub const RETAINED_CHUNK: usize = 128;
/// How often a stream waiting for room checks that its subscriber is still connected.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);
/// Reason given to the engine for the messages of an abandoned stream.
const ABANDONED: &str = "retained stream abandoned: the subscriber went away";

tokio::task_local! {
    /// Set while a chunk of a retained stream is handed to the engine.
    static STREAM: Arc<Stream>;
}

/// One subscription's retained stream.
#[derive(Default)]
struct Stream {
    /// The subscriber went away: deliver nothing more.
    gone: AtomicBool,
}

/// Retained messages waiting for one subscriber.
#[derive(Default)]
struct Slot {
    pending: AtomicUsize,
    room: Notify,
}

/// The per-subscriber windows of retained streams.
pub struct RetainedPacer {
    window: usize,
    slots: DashMap<ClientId, Arc<Slot>>,
    abandoned: AtomicU64,
}

impl RetainedPacer {
    pub fn new(window: usize) -> Arc<Self> {
        Arc::new(RetainedPacer {
            window: window.max(1),
            slots: DashMap::default(),
            abandoned: AtomicU64::new(0),
        })
    }

    /// Retained streams given up because their subscriber's connection ended.
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    /// Retained messages waiting for `client_id` now.
    pub fn pending(&self, client_id: &str) -> usize {
        self.slots
            .get(client_id)
            .map_or(0, |slot| slot.pending.load(Ordering::Relaxed))
    }

    fn slot(&self, client_id: &ClientId) -> Arc<Slot> {
        self.slots.entry(client_id.clone()).or_default().clone()
    }

    /// Delivers every retained message matching `filter` through the engine's callback `cb`, chunk by
    /// chunk, paced by [`PacedEntry`].
    pub async fn stream(
        &self,
        store: &RetainedStore,
        filter: &TopicFilter,
        cb: Arc<dyn RetainLoadCallback>,
    ) -> rmqtt::Result<Vec<(NodeId, MsgID)>> {
        let stream = Arc::new(Stream::default());
        let mut cursor: Cursor = None;
        loop {
            let (found, next) = store.chunk(filter, &cursor, RETAINED_CHUNK);
            if !found.is_empty() {
                STREAM.scope(stream.clone(), cb.on_retains(found)).await?;
            }
            if stream.gone.load(Ordering::Relaxed) {
                self.abandoned.fetch_add(1, Ordering::Relaxed);
                log::debug!("broker: retained stream for {:?} abandoned", filter as &str);
                break;
            }
            match next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        // Host retained messages carry no message-store ids: nothing to exclude.
        Ok(Vec::new())
    }

    /// Counts one retained message for the subscriber of `entry` once fewer than the window wait;
    /// false when its connection ended first (the message is counted all the same, and released when
    /// the engine reports it dropped).
    async fn admit(&self, entry: &dyn Entry) -> bool {
        let client_id = entry.id().client_id.clone();
        loop {
            // Looked up each time: a reconnect starts the subscriber's count afresh.
            let slot = self.slot(&client_id);
            let room = slot.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let admitted = slot
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < self.window).then_some(n + 1)
                })
                .is_ok();
            if admitted {
                return true;
            }
            if tokio::time::timeout(LIVENESS_CHECK, room).await.is_err()
                && !entry.is_connected().await
            {
                slot.pending.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
    }
}

/// Messages with the retain flag, not re-sends; every drop of one releases it.
impl DeliveryCounts for RetainedPacer {
    fn holds(publish: &Publish) -> bool {
        publish.retain && !publish.dup
    }

    fn released_by_drop(_reason: &Reason) -> bool {
        true
    }

    fn release(&self, client_id: &str) {
        if let Some(slot) = self.slots.get(client_id) {
            let _ = slot
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
            slot.room.notify_waiters();
        }
    }

    fn forget(&self, client_id: &str) {
        if let Some((_, slot)) = self.slots.remove(client_id) {
            slot.room.notify_waiters();
        }
    }
}

/// The engine's entry for one client, with the publishes of a retained stream paced.
pub struct PacedEntry {
    pub inner: Box<dyn Entry>,
    pub pacer: Arc<RetainedPacer>,
}

#[async_trait]
impl Entry for PacedEntry {
    async fn try_lock(&self) -> rmqtt::Result<Box<dyn Entry>> {
        Ok(Box::new(PacedEntry {
            inner: self.inner.try_lock().await?,
            pacer: self.pacer.clone(),
        }))
    }

    fn id(&self) -> Id {
        self.inner.id()
    }

    fn id_same(&self) -> Option<bool> {
        self.inner.id_same()
    }

    async fn set(&mut self, session: Session, tx: Tx) -> rmqtt::Result<()> {
        self.inner.set(session, tx).await
    }

    async fn remove(&mut self) -> rmqtt::Result<Option<(Session, Tx)>> {
        self.inner.remove().await
    }

    async fn remove_with(&mut self, id: &Id) -> rmqtt::Result<Option<(Session, Tx)>> {
        self.inner.remove_with(id).await
    }

    async fn kick(
        &mut self,
        clean_start: bool,
        clear_subscriptions: bool,
        is_admin: IsAdmin,
    ) -> rmqtt::Result<OfflineSession> {
        self.inner
            .kick(clean_start, clear_subscriptions, is_admin)
            .await
    }

    async fn online(&self) -> bool {
        self.inner.online().await
    }

    async fn is_connected(&self) -> bool {
        self.inner.is_connected().await
    }

    fn session(&self) -> Option<Session> {
        self.inner.session()
    }

    fn exist(&self) -> bool {
        self.inner.exist()
    }

    fn tx(&self) -> Option<Tx> {
        self.inner.tx()
    }

    async fn subscribe(&self, subscribe: &Subscribe) -> rmqtt::Result<SubscribeReturn> {
        self.inner.subscribe(subscribe).await
    }

    async fn unsubscribe(&self, unsubscribe: &Unsubscribe) -> rmqtt::Result<bool> {
        self.inner.unsubscribe(unsubscribe).await
    }

    /// In a retained stream: waits for room in the subscriber's window first.
    async fn publish(&self, from: From, p: Publish) -> Result<(), (From, Publish, Reason)> {
        let Ok(stream) = STREAM.try_with(Arc::clone) else {
            return self.inner.publish(from, p).await;
        };
        if stream.gone.load(Ordering::Relaxed) || !self.pacer.admit(&*self.inner).await {
            stream.gone.store(true, Ordering::Relaxed);
            return Err((from, p, Reason::from_static(ABANDONED)));
        }
        // Not sent (the session is gone): the engine reports it dropped, which releases it.
        let sent = self.inner.publish(from, p).await;
        if sent.is_err() {
            stream.gone.store(true, Ordering::Relaxed);
        }
        sent
    }

    async fn subscriptions(&self) -> Option<Vec<SubsSearchResult>> {
        self.inner.subscriptions().await
    }
}
