//! The subscribers a topic name is routed to, remembered until a subscription changes.
//!
//! Routing a publish asks the engine's router which subscriptions match its topic
//! (`DefaultRouter::matches`): it parses the topic into levels, walks the topic tree under its lock,
//! copies each matched filter and collects the relations into fresh hash maps, for every message
//! (about 15 % of the broker's CPU for one publisher to one subscriber at QoS 0). A gateway publishes
//! the same few hundred topics again and again, so [`RouteCache`] keeps the matched relations per topic
//! name and [`WatchedRouter`], which stands in for the engine's router, starts a new generation on every
//! subscription added or removed (SUBSCRIBE, UNSUBSCRIBE, a session's end or takeover all go through
//! the router's `add` and `remove`): an entry of an older generation is never used.
//!
//! Only answers that do not depend on the publisher are kept: one with a shared subscription (a
//! member is chosen per message) or an MQTT 5 No Local subscription (left out for its own client's
//! publishes) is asked of the router every time, and the topic is remembered as such. The cache holds
//! at most [`CACHED_TOPICS`] topic names (their own copies, never a slice of a packet's buffer) and
//! [`CACHED_RELATIONS`] subscriptions over all of them; when a new topic finds it full, it is emptied and
//! starts again (counted by [`RouteCache::cleared`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::router::Router;
use rmqtt::types::{
    AllRelationsMap, ClientId, HashMap as EngineMap, Id, NodeId, Route, SubRelation, SubRelations,
    SubRelationsMap, SubsSearchParams, SubsSearchResult, SubscriptionOptions, TopicName,
};
use rmqtt::utils::Counter;

use crate::lock::lock;

/// Topic names whose routes are kept at most (a gateway's devices publish a few hundred).
pub const CACHED_TOPICS: usize = 1024;

/// Subscriptions kept at most over all topic names (200 bytes each: about 400 KiB when full). A topic
/// routed to more than this many is matched afresh every time.
pub const CACHED_RELATIONS: usize = 2048;

/// What routing a topic name gave, as of one generation of the subscriptions.
struct Remembered {
    generation: u64,
    /// `None`: the answer depends on the publisher, or holds more than [`CACHED_RELATIONS`]; ask the
    /// router every time.
    relations: Option<Arc<[SubRelation]>>,
}

/// The remembered topics and how many subscriptions they hold together.
#[derive(Default)]
struct Entries {
    by_topic: HashMap<TopicName, Remembered>,
    relations: usize,
}

/// Routes per topic name, valid while the subscriptions stay as they were.
#[derive(Default)]
pub struct RouteCache {
    generation: AtomicU64,
    entries: Mutex<Entries>,
    cleared: AtomicU64,
}

impl RouteCache {
    /// Every entry from before is stale: a subscription was added or removed.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Entries dropped because the cache was full when a new topic came.
    pub fn cleared(&self) -> u64 {
        self.cleared.load(Ordering::Relaxed)
    }

    /// The subscriptions on this node that `topic`, published by `publisher`, goes to (as the
    /// router's `matches` answers for this node).
    pub async fn relations(
        &self,
        scx: &ServerContext,
        publisher: &Id,
        topic: &TopicName,
    ) -> rmqtt::Result<SubRelations> {
        let generation = self.generation.load(Ordering::Acquire);
        let known = lock(&self.entries)
            .by_topic
            .get(topic)
            .filter(|entry| entry.generation == generation)
            .map(|entry| entry.relations.clone());
        match known {
            Some(Some(relations)) => return Ok(relations.to_vec()),
            Some(None) => return matched(scx, publisher.clone(), topic).await,
            None => {}
        }
        // Asked as nobody (no client has an empty id and this node), so that a No Local subscription
        // of the publisher itself is in the answer and shows that the answer depends on the publisher.
        // For a topic with a shared subscription this first look also takes a turn of its group
        // (`shared_groups::RoundRobin`): once per topic after each change of the subscriptions.
        let nobody = Id::from(scx.node.id(), ClientId::default());
        let relations = matched(scx, nobody, topic).await?;
        let publisher_free = relations.iter().all(|(_, _, opts, _, group)| {
            group.is_none() && opts.shared_group().is_none() && opts.no_local() != Some(true)
        });
        let kept = publisher_free.then(|| Arc::from(relations.as_slice()));
        self.remember(topic, generation, kept);
        if publisher_free {
            Ok(relations)
        } else {
            matched(scx, publisher.clone(), topic).await
        }
    }

    fn remember(&self, topic: &TopicName, generation: u64, relations: Option<Arc<[SubRelation]>>) {
        let relations = relations.filter(|relations| relations.len() <= CACHED_RELATIONS);
        let adding = relations.as_ref().map_or(0, |relations| relations.len());
        let mut entries = lock(&self.entries);
        if let Some(old) = entries.by_topic.remove(topic) {
            entries.relations -= old.relations.map_or(0, |relations| relations.len());
        }
        if entries.by_topic.len() >= CACHED_TOPICS || entries.relations + adding > CACHED_RELATIONS
        {
            self.cleared
                .fetch_add(entries.by_topic.len() as u64, Ordering::Relaxed);
            *entries = Entries::default();
        }
        entries.relations += adding;
        // The key is a copy: the publish's topic may be a slice of the buffer its packet was read into.
        let key = TopicName::from(topic.to_string());
        entries.by_topic.insert(
            key,
            Remembered {
                generation,
                relations,
            },
        );
    }
}

/// The router's answer for this node.
async fn matched(scx: &ServerContext, id: Id, topic: &TopicName) -> rmqtt::Result<SubRelations> {
    let mut by_node: SubRelationsMap = scx.extends.router().await.matches(id, topic).await?;
    Ok(by_node.remove(&scx.node.id()).unwrap_or_default())
}

/// The engine's router, with a new [`RouteCache`] generation after every `add` and `remove`.
pub struct WatchedRouter {
    inner: Box<dyn Router>,
    cache: Arc<RouteCache>,
}

impl WatchedRouter {
    /// Puts the watch around the engine's router; returns the cache it keeps current. Call before
    /// serving.
    pub async fn install(scx: &ServerContext) -> Arc<RouteCache> {
        let cache = Arc::new(RouteCache::default());
        let mut router = scx.extends.router_mut().await;
        let placeholder: Box<dyn Router> =
            Box::new(rmqtt::router::DefaultRouter::new(Some(scx.clone())));
        let inner = std::mem::replace(&mut *router, placeholder);
        *router = Box::new(WatchedRouter {
            inner,
            cache: cache.clone(),
        });
        cache
    }
}

#[async_trait]
impl Router for WatchedRouter {
    async fn add(
        &self,
        topic_filter: &str,
        id: Id,
        opts: SubscriptionOptions,
    ) -> rmqtt::Result<()> {
        let added = self.inner.add(topic_filter, id, opts).await;
        self.cache.changed();
        added
    }

    async fn remove(&self, topic_filter: &str, id: Id) -> rmqtt::Result<bool> {
        let removed = self.inner.remove(topic_filter, id).await;
        self.cache.changed();
        removed
    }

    async fn matches(&self, id: Id, topic: &TopicName) -> rmqtt::Result<SubRelationsMap> {
        self.inner.matches(id, topic).await
    }

    async fn is_online(&self, node_id: NodeId, client_id: &str) -> bool {
        self.inner.is_online(node_id, client_id).await
    }

    async fn gets(&self, limit: usize) -> Vec<Route> {
        self.inner.gets(limit).await
    }

    async fn get(&self, topic: &str) -> rmqtt::Result<Vec<Route>> {
        self.inner.get(topic).await
    }

    async fn query_subscriptions(&self, q: &SubsSearchParams) -> Vec<SubsSearchResult> {
        self.inner.query_subscriptions(q).await
    }

    async fn topics_tree(&self) -> usize {
        self.inner.topics_tree().await
    }

    fn topics(&self) -> Counter {
        self.inner.topics()
    }

    fn routes(&self) -> Counter {
        self.inner.routes()
    }

    fn merge_topics(&self, topics_map: &EngineMap<NodeId, Counter>) -> Counter {
        self.inner.merge_topics(topics_map)
    }

    fn merge_routes(&self, routes_map: &EngineMap<NodeId, Counter>) -> Counter {
        self.inner.merge_routes(routes_map)
    }

    async fn list_topics(&self, top: usize) -> Vec<String> {
        self.inner.list_topics(top).await
    }

    async fn list_relations(&self, top: usize) -> Vec<serde_json::Value> {
        self.inner.list_relations(top).await
    }

    fn relations(&self) -> &AllRelationsMap {
        self.inner.relations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` subscriptions (all the same: the cache counts them, it does not read them).
    fn relations(n: usize) -> Option<Arc<[SubRelation]>> {
        let one: SubRelation = (
            "t/#".into(),
            "sub".into(),
            SubscriptionOptions::default(),
            None,
            None,
        );
        Some(Arc::from(vec![one; n]))
    }

    #[test]
    fn a_full_cache_is_emptied_for_a_new_topic_and_counts_what_it_dropped() {
        let cache = RouteCache::default();
        for i in 0..CACHED_TOPICS {
            cache.remember(&TopicName::from(format!("t/{i}")), 0, relations(0));
        }
        assert_eq!(cache.cleared(), 0);
        // A topic it has is replaced in place, not a reason to empty it.
        cache.remember(&TopicName::from("t/7"), 1, relations(1));
        assert_eq!(cache.cleared(), 0);
        cache.remember(&TopicName::from("t/new"), 1, None);
        assert_eq!(cache.cleared(), CACHED_TOPICS as u64);
        let entries = lock(&cache.entries);
        assert_eq!(entries.by_topic.len(), 1);
        assert!(entries.by_topic["t/new"].relations.is_none());
        assert_eq!(entries.relations, 0);
    }

    #[test]
    fn the_subscriptions_held_are_bounded_too() {
        let cache = RouteCache::default();
        let half = CACHED_RELATIONS / 2;
        cache.remember(&TopicName::from("a"), 0, relations(half));
        cache.remember(&TopicName::from("b"), 0, relations(half));
        // Replacing "b" frees what it held first.
        cache.remember(&TopicName::from("b"), 1, relations(half));
        assert_eq!(cache.cleared(), 0);
        assert_eq!(lock(&cache.entries).relations, CACHED_RELATIONS);
        cache.remember(&TopicName::from("c"), 1, relations(1));
        assert_eq!(cache.cleared(), 2);
        assert_eq!(lock(&cache.entries).relations, 1);
        // A topic routed to more than the whole bound is remembered as one to match every time.
        cache.remember(&TopicName::from("huge"), 1, relations(CACHED_RELATIONS + 1));
        let entries = lock(&cache.entries);
        assert!(entries.by_topic["huge"].relations.is_none());
        assert_eq!(entries.relations, 1);
    }
}
