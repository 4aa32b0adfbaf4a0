//! A bound on the messages waiting for one subscriber between the engine's routing and its socket.
//!
//! The engine hands every routed message to the subscriber's session over an unbounded channel
//! (rmqtt 0.24.0 `session.rs:158`, sent in `shared.rs:930`); the subscriber's task moves it to its
//! deliver queue (bounded by `max_mqueue_len`, dropping when full) in the same `select!` loop that writes
//! to its socket one packet and one flush at a time. A publisher is read as fast as it sends and is never
//! throttled, so when it outpaces a subscriber the messages pile up in that channel, which nothing
//! bounds: a 300,000-message QoS 0 burst grew the daemon by ~76 MiB.
//!
//! [`BoundedShared`] wraps the engine's `Shared` (the routing to local sessions) and counts, per
//! subscriber client id, the messages routed to it and not yet taken up for delivery (channel plus
//! deliver queue). At `max_queued_messages` a client's message for that subscriber, at any QoS, first
//! holds up its publisher's task, for up to [`BACKLOG_WAIT`] per publish however many subscribers are
//! full (the publisher is not read meanwhile, and its own inflight window slows it), and is dropped if no
//! room came: a subscriber that keeps reading slows a faster publisher down to its pace and loses no
//! QoS 0 message (mosquitto drops those for a full queue at once); the gateway's own publishes (readings,
//! wills, stats) are never held: for them a full backlog drops at once, so no subscriber can delay the
//! pipeline or the serial ports behind it; after such a timeout that subscriber is marked stalled and its messages are dropped without
//! waiting until its backlog is half empty, so a subscriber that stopped reading cannot hold publishers
//! up. A drop is reported through the engine's `message_dropped` hook with `MessageQueueFull`, so the
//! policy logs it (rate-limited) like a full offline queue, and [`Backlog::dropped`] counts it.
//! [`DeliveryCountHook`](super::delivery_counts::DeliveryCountHook) takes messages off the count when they are delivered (`MessageExpiryCheck`,
//! run before every delivery) or dropped by the engine, and forgets a client id when its session starts
//! or ends (messages left in a closed channel are never reported).
//!
//! Messages delivered with the retain flag (retained messages sent on subscribe, and MQTT 5
//! retain-as-published forwards) and re-sends (DUP) are neither counted nor limited here: the count is of
//! fresh forwards only. Retained messages for a new subscription are streamed from the host store and
//! paced by [`super::pacing`], which `BoundedShared` plugs in at `entry` and `retain_load_with`.
//!
//! Routing also drops the relations of a `$`-topic whose filters do not match it by
//! [`crate::topic::matches`] (a filter starting with a wildcard never matches `$SYS/...`), so that rule
//! holds whatever the engine's topic tree does.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::shared::{Entry, Shared};
use rmqtt::types::{
    ClientId, DashMap, ForwardedCount, ForwardedRecipients, From, FromType, HealthInfo, Id, MsgID,
    NodeHealthStatus, NodeId, Publish, Reason, Retain, SessionStatus, SubRelations,
    SubRelationsMap, SubsSearchParams, SubsSearchResult, To, TopicFilter, TopicName,
};
use tokio::sync::Notify;

use super::delivery_counts::DeliveryCounts;
use super::pacing::{PacedEntry, RetainedPacer};
use super::retained::RetainedStore;
use super::route_cache::RouteCache;

/// How long routing a client's message waits for room in a subscriber's full backlog before dropping it.
pub const BACKLOG_WAIT: Duration = Duration::from_millis(500);

/// Messages waiting for one subscriber, and whether a wait for room in its backlog timed out.
#[derive(Default)]
struct Slot {
    pending: AtomicUsize,
    /// Set when a wait timed out: no more waits (drop at once) until the backlog is half empty.
    stalled: AtomicBool,
    /// Wakes one publisher waiting for room each time the backlog loses a message.
    room: Notify,
}

/// Per-subscriber counts of messages routed and not yet delivered or dropped.
pub struct Backlog {
    limit: usize,
    slots: DashMap<ClientId, Arc<Slot>>,
    dropped: AtomicU64,
}

impl Backlog {
    /// `limit`: messages that may wait for one subscriber (at least 1).
    pub fn new(limit: usize) -> Self {
        Backlog {
            limit: limit.max(1),
            slots: DashMap::default(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Messages dropped so far because a subscriber's backlog was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting for `client_id`.
    pub fn pending(&self, client_id: &str) -> usize {
        self.slots
            .get(client_id)
            .map_or(0, |slot| slot.pending.load(Ordering::Relaxed))
    }

    /// The subscriber's slot: a shared lookup for every message but its first (no write lock, no copy of
    /// the client id).
    fn slot(&self, client_id: &ClientId) -> Arc<Slot> {
        if let Some(slot) = self.slots.get(client_id) {
            return slot.clone();
        }
        self.slots.entry(client_id.clone()).or_default().clone()
    }

    /// Counts one message for the subscriber if its backlog has room.
    fn try_admit(&self, slot: &Slot) -> bool {
        slot.pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Counts one message for `client_id`, waiting up to what is left of `budget` for room (not at all
    /// while the subscriber is marked stalled); false means the message is to be dropped. A dropped
    /// message is counted all the same: the engine reports the drop to the
    /// [`DeliveryCountHook`](super::delivery_counts::DeliveryCountHook), which releases it.
    ///
    /// Once half of a subscriber's backlog waits, a client's publish first gives the runtime's other
    /// tasks (the subscriber's among them) a turn, once per publish: the engine reads a client's packets
    /// a socket read at a time and yields only before the first PUBLISH of each read, so a hundred
    /// publishers could otherwise route thousands of messages to one subscriber between two of its turns.
    async fn admit(&self, client_id: &ClientId, budget: &mut WaitBudget) -> bool {
        let slot = self.slot(client_id);
        if budget.holds_publisher
            && !budget.yielded
            && slot.pending.load(Ordering::Relaxed) >= self.limit / 2
        {
            budget.yielded = true;
            tokio::task::yield_now().await;
        }
        if self.try_admit(&slot) {
            return true;
        }
        let wait = budget.left();
        if !wait.is_zero() && !slot.stalled.load(Ordering::Relaxed) {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                // Registered before the check, so a release between the two is not missed.
                let room = slot.room.notified();
                tokio::pin!(room);
                room.as_mut().enable();
                if self.try_admit(&slot) {
                    return true;
                }
                if tokio::time::timeout_at(deadline, room).await.is_err() {
                    break;
                }
            }
            slot.stalled.store(true, Ordering::Relaxed);
        }
        slot.pending.fetch_add(1, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Fresh forwards only: messages with the retain flag are the pacer's, re-sends (DUP) were counted
/// when first sent. Only a full deliver queue (the oldest QoS 1/2 message, or the backlog's own drop,
/// see [`Backlog::admit`]) drops a counted message; expired or refused ones were released at the
/// expiry check.
impl DeliveryCounts for Backlog {
    fn holds(publish: &Publish) -> bool {
        !publish.retain && !publish.dup
    }

    fn released_by_drop(reason: &Reason) -> bool {
        matches!(reason, Reason::MessageQueueFull)
    }

    fn release(&self, client_id: &str) {
        if let Some(slot) = self.slots.get(client_id) {
            let before = slot
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                })
                .unwrap_or(0);
            // One waiting publisher per freed place (all of them, a hundred publishers held up by one
            // subscriber, woke for each place, and all but one waited again); at every release, so
            // that a place freed while the woken one was on its way is not left unclaimed.
            slot.room.notify_one();
            if before <= self.limit / 2 {
                slot.stalled.store(false, Ordering::Relaxed);
            }
        }
    }

    fn forget(&self, client_id: &str) {
        self.slots.remove(client_id);
    }
}

/// The engine's `Shared` with [`Backlog`] applied to routing; every other call goes to the engine's.
pub struct BoundedShared {
    inner: Box<dyn Shared>,
    backlog: Arc<Backlog>,
    scx: ServerContext,
    retained: Arc<RetainedStore>,
    pacer: Arc<RetainedPacer>,
    routes: Arc<RouteCache>,
}

impl BoundedShared {
    /// Replaces the engine's `Shared` with one that applies `backlog`, routes through `routes` and
    /// streams retained messages from `retained` paced by `pacer`. Call before serving.
    pub async fn install(
        scx: &ServerContext,
        backlog: Arc<Backlog>,
        retained: Arc<RetainedStore>,
        pacer: Arc<RetainedPacer>,
        routes: Arc<RouteCache>,
    ) {
        let mut shared = scx.extends.shared_mut().await;
        let placeholder: Box<dyn Shared> =
            Box::new(rmqtt::shared::DefaultShared::new(Some(scx.clone())));
        let inner = std::mem::replace(&mut *shared, placeholder);
        *shared = Box::new(BoundedShared {
            inner,
            backlog,
            scx: scx.clone(),
            retained,
            pacer,
            routes,
        });
    }
}

/// How long one publish may still wait for its full subscribers' room, all of them together
/// ([`BACKLOG_WAIT`], counted from the first subscriber found full, so that a publish whose
/// subscribers all have room reads no clock); none for the gateway's own publishes (pipeline, wills,
/// stats), which a subscriber must never hold up.
struct WaitBudget {
    holds_publisher: bool,
    deadline: Option<tokio::time::Instant>,
    /// Whether this publish already gave the other tasks a turn (see [`Backlog::admit`]).
    yielded: bool,
}

impl WaitBudget {
    fn for_publisher(from: &From) -> Self {
        WaitBudget {
            holds_publisher: !matches!(from.typ(), FromType::System),
            deadline: None,
            yielded: false,
        }
    }

    fn left(&mut self) -> Duration {
        if !self.holds_publisher {
            return Duration::ZERO;
        }
        let deadline = *self
            .deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + BACKLOG_WAIT);
        deadline.saturating_duration_since(tokio::time::Instant::now())
    }
}

#[async_trait]
impl Shared for BoundedShared {
    fn entry(&self, id: Id) -> Box<dyn Entry> {
        Box::new(PacedEntry {
            inner: self.inner.entry(id),
            pacer: self.pacer.clone(),
        })
    }

    fn exist(&self, client_id: &str) -> bool {
        self.inner.exist(client_id)
    }

    /// The engine's routing (`DefaultShared::forwards`, single node), the subscriptions matched through
    /// the [`RouteCache`], with the backlog check between matching them and sending to the sessions.
    async fn forwards(
        &self,
        msg_id: Option<MsgID>,
        from: From,
        publish: Publish,
    ) -> Result<ForwardedCount, (ForwardedCount, Vec<(To, From, Publish, Reason)>)> {
        if publish.target_clientid.is_some() {
            return self.inner.forwards(msg_id, from, publish).await;
        }
        let mut relations = match self
            .routes
            .relations(&self.scx, &from.id, &publish.topic)
            .await
        {
            Ok(relations) => relations,
            Err(error) => {
                log::warn!("broker: routing {:?}: {error}", &publish.topic as &str);
                return Ok(0);
            }
        };
        if relations.is_empty() {
            return Ok(0);
        }
        if publish.topic.starts_with('$') {
            relations.retain(|(filter, ..)| crate::topic::matches(filter, &publish.topic));
        }
        let mut admitted = SubRelations::with_capacity(relations.len());
        let mut full = Vec::new();
        let mut budget = WaitBudget::for_publisher(&from);
        for relation in relations {
            let (_, client_id, opts, _, _) = &relation;
            let keeps_retain = publish.retain && opts.retain_as_published() == Some(true);
            // A client's publisher is held up first (bounded), at every QoS: a subscriber that keeps
            // reading slows its publisher down to its own pace instead of losing QoS 0 messages.
            if keeps_retain || self.backlog.admit(client_id, &mut budget).await {
                admitted.push(relation);
            } else {
                full.push(relation);
            }
        }
        let (recipients, mut errs) = if admitted.is_empty() {
            (0, Vec::new())
        } else {
            match self
                .inner
                .forwards_to(from.clone(), &publish, admitted, None)
                .await
            {
                Ok(recipients) => (recipients.len(), Vec::new()),
                Err((recipients, errs)) => {
                    // Not sent (the session is gone or its channel closed): off the count again.
                    for (to, _, p, _) in &errs {
                        if Backlog::holds(p) {
                            self.backlog.release(&to.client_id);
                        }
                    }
                    (recipients.len(), errs)
                }
            }
        };
        for (_, client_id, opts, _, _) in full {
            let mut p = publish.clone();
            p.dup = false;
            p.retain = false;
            p.qos = p.qos.less_value(opts.qos());
            p.packet_id = None;
            let to = self
                .inner
                .entry(Id::from(self.scx.node.id(), client_id.clone()))
                .session()
                .map(|session| session.id.clone())
                .unwrap_or_else(|| Id::from(self.scx.node.id(), client_id.clone()));
            // Reported as MessageQueueFull: the policy logs it, the DeliveryCountHook releases its count.
            errs.push((to, from.clone(), p, Reason::MessageQueueFull));
        }
        if errs.is_empty() {
            Ok(recipients)
        } else {
            Err((recipients, errs))
        }
    }

    async fn forwards_and_get_shareds(
        &self,
        from: From,
        publish: Publish,
    ) -> Result<
        (SubRelationsMap, ForwardedRecipients),
        (ForwardedRecipients, Vec<(To, From, Publish, Reason)>),
    > {
        self.inner.forwards_and_get_shareds(from, publish).await
    }

    async fn forwards_to(
        &self,
        from: From,
        publish: &Publish,
        relations: SubRelations,
        msg_id: Option<MsgID>,
    ) -> Result<ForwardedRecipients, (ForwardedRecipients, Vec<(To, From, Publish, Reason)>)> {
        self.inner
            .forwards_to(from, publish, relations, msg_id)
            .await
    }

    fn iter(&self) -> Box<dyn Iterator<Item = Box<dyn Entry>> + Sync + Send + '_> {
        self.inner.iter()
    }

    fn random_session(&self) -> Option<rmqtt::session::Session> {
        self.inner.random_session()
    }

    async fn session_status(&self, client_id: &str) -> Option<SessionStatus> {
        self.inner.session_status(client_id).await
    }

    async fn client_states_count(&self) -> usize {
        self.inner.client_states_count().await
    }

    fn sessions_count(&self) -> usize {
        self.inner.sessions_count()
    }

    async fn query_subscriptions(&self, q: &SubsSearchParams) -> Vec<SubsSearchResult> {
        self.inner.query_subscriptions(q).await
    }

    async fn subscriptions_count(&self) -> usize {
        self.inner.subscriptions_count().await
    }

    fn grpc_enable(&self) -> bool {
        self.inner.grpc_enable()
    }

    fn node_name(&self, id: NodeId) -> String {
        self.inner.node_name(id)
    }

    async fn check_health(&self) -> rmqtt::Result<HealthInfo> {
        self.inner.check_health().await
    }

    async fn health_status(&self) -> rmqtt::Result<NodeHealthStatus> {
        self.inner.health_status().await
    }

    fn operation_is_busy(&self) -> bool {
        self.inner.operation_is_busy()
    }

    async fn retain_load_with(
        &self,
        topic_filter: &TopicFilter,
        cb: Arc<dyn rmqtt::shared::RetainLoadCallback>,
    ) -> rmqtt::Result<Vec<(NodeId, MsgID)>> {
        self.pacer.stream(&self.retained, topic_filter, cb).await
    }

    async fn retain_set_broadcast(
        &self,
        topic: &TopicName,
        retain: &Retain,
        expiry_interval: Option<Duration>,
    ) -> rmqtt::Result<()> {
        self.inner
            .retain_set_broadcast(topic, retain, expiry_interval)
            .await
    }
}
