//! Sessions of absent clients: how long a persistent session outlives its connection, and how many may.
//!
//! The engine keeps the session of a client that connected with clean session = 0 (MQTT 5: a session
//! expiry interval) after it left, with its subscriptions, its queued messages and the socket of its last
//! connection, for the listener's expiry (3.1.1) or what the client asked for (5.0, up to 136 years).
//! Left alone, 1,024 short-lived connections with clean session = 0 filled the engine's session table for
//! two hours and every new client got CONNACK 3. Two parts contain that:
//! - [`CappedFitter`] caps each session's expiry at `session_expiry`, and at `anonymous_session_expiry`
//!   for clients without a user name (an MQTT 5 client may ask for less, never for more);
//! - [`OfflineSessions`] remembers absent persistent sessions in the order they went away and, beyond
//!   `max_offline_sessions`, ends the one absent the longest (counted in [`OfflineSessions::evicted`]);
//!   and when the session table (`max_connections`, connected and absent alike) is full, a new client's
//!   CONNECT ends the session absent the longest first, so absent sessions never lock a client out. Each
//!   absent session holds the socket of its last connection until it ends (rmqtt 0.24 behaviour), so the
//!   sockets they hold are bounded by the same two numbers.
//!
//! The fitter also caps the keep-alive of MQTT 5 clients at [`MAX_SERVER_KEEP_ALIVE`] (sent back as
//! Server Keep Alive, so a dead connection is found within 1.5 minutes); a 3.1.1 client cannot be told
//! and keeps its own.
//!
//! A session whose client disconnected with a DISCONNECT that set its Session Expiry Interval to 0 ends
//! at disconnect like a clean one ([`ends_at_disconnect`] reads the DISCONNECT's interval too): an
//! immediate reconnect waits for it to be gone instead of taking it over (session present = 1).
//!
//! This module decides lifetimes and evictions; it never decides rights or logins.

use std::collections::{BTreeMap, HashMap};
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rmqtt::context::ServerContext;
use rmqtt::fitter::{DefaultFitter, Fitter, FitterManager};
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType};
use rmqtt::session::Session;
use rmqtt::types::{ClientId, ConnectInfo, Disconnect, FitterType, Id, ListenerConfig};

/// The longest keep-alive, in seconds, an MQTT 5 client may use; a longer one is answered with this as
/// Server Keep Alive.
pub const MAX_SERVER_KEEP_ALIVE: u16 = 60;

/// How long a CONNECT waits for the engine to remove a session ended to make room for it.
pub const MAKE_ROOM_WAIT: Duration = Duration::from_millis(200);

/// How long absent sessions may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLifetimes {
    /// Longest life of an absent persistent session.
    pub expiry: Duration,
    /// The same for clients without a user name.
    pub anonymous_expiry: Duration,
}

impl SessionLifetimes {
    fn cap_for(&self, id: &Id) -> Duration {
        if id.username.is_none() {
            self.anonymous_expiry.min(self.expiry)
        } else {
            self.expiry
        }
    }
}

/// Creates a [`CappedFitter`] for every connection.
pub struct CappedFitterManager(pub SessionLifetimes);

impl FitterManager for CappedFitterManager {
    fn create(&self, conn_info: Arc<ConnectInfo>, id: Id, cfg: ListenerConfig) -> FitterType {
        let cap = self.0.cap_for(&id);
        let v5 = matches!(conn_info.as_ref(), ConnectInfo::V5(..));
        Arc::new(CappedFitter {
            inner: DefaultFitter::new(conn_info, id, cfg),
            cap,
            v5,
        })
    }
}

/// The engine's default negotiation, with the session expiry capped.
pub struct CappedFitter {
    inner: DefaultFitter,
    cap: Duration,
    /// An MQTT 5 client, which can be given a Server Keep Alive.
    v5: bool,
}

#[async_trait]
impl Fitter for CappedFitter {
    fn keep_alive(&self, keep_alive: &mut u16) -> rmqtt::Result<u16> {
        if self.v5 && *keep_alive > MAX_SERVER_KEEP_ALIVE {
            *keep_alive = MAX_SERVER_KEEP_ALIVE;
        }
        self.inner.keep_alive(keep_alive)
    }

    fn max_mqueue_len(&self) -> usize {
        self.inner.max_mqueue_len()
    }

    fn mqueue_rate_limit(&self) -> (NonZeroU32, Duration) {
        self.inner.mqueue_rate_limit()
    }

    fn max_inflight(&self) -> NonZeroU16 {
        self.inner.max_inflight()
    }

    fn session_expiry_interval(&self, d: Option<&Disconnect>) -> Duration {
        self.inner.session_expiry_interval(d).min(self.cap)
    }

    fn message_expiry_interval(&self, publish: &rmqtt::codec::types::Publish) -> Duration {
        self.inner.message_expiry_interval(publish)
    }

    fn max_client_topic_aliases(&self) -> u16 {
        self.inner.max_client_topic_aliases()
    }

    fn max_server_topic_aliases(&self) -> u16 {
        self.inner.max_server_topic_aliases()
    }
}

/// True when the session is discarded once its connection ends (3.1.1 clean session, 5.0 expiry 0 in
/// the CONNECT or in the DISCONNECT).
pub async fn ends_at_disconnect(session: &Session) -> bool {
    match session.connect_info().await {
        Ok(info) => match info.as_ref() {
            ConnectInfo::V3(_, connect) => connect.clean_session,
            ConnectInfo::V5(..) => {
                let disconnect = session.disconnect().await.ok().flatten();
                session
                    .fitter
                    .session_expiry_interval(disconnect.as_ref())
                    .is_zero()
            }
        },
        Err(_) => true,
    }
}

#[derive(Default)]
struct Absent {
    /// Order of going away -> the session's id.
    by_age: BTreeMap<u64, Id>,
    /// Client id -> its key in `by_age`.
    by_client: HashMap<ClientId, u64>,
    next: u64,
}

impl Absent {
    fn remove(&mut self, client_id: &ClientId) {
        if let Some(key) = self.by_client.remove(client_id) {
            self.by_age.remove(&key);
        }
    }

    /// Records `id` as absent; returns the sessions to end so that at most `max` remain.
    fn insert(&mut self, id: Id, max: usize) -> Vec<Id> {
        self.remove(&id.client_id);
        let key = self.next;
        self.next += 1;
        self.by_client.insert(id.client_id.clone(), key);
        self.by_age.insert(key, id);
        let mut evict = Vec::new();
        while self.by_age.len() > max {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.by_client.remove(&oldest.client_id);
            evict.push(oldest);
        }
        evict
    }
}

/// The absent persistent sessions, bounded.
pub struct OfflineSessions {
    max: usize,
    absent: Mutex<Absent>,
    evicted: AtomicU64,
    scx: ServerContext,
}

impl OfflineSessions {
    pub fn new(scx: ServerContext, max: usize) -> Self {
        OfflineSessions {
            max,
            absent: Mutex::new(Absent::default()),
            evicted: AtomicU64::new(0),
            scx,
        }
    }

    /// Absent sessions ended early because `max_offline_sessions` were kept already.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Absent persistent sessions kept now.
    pub fn count(&self) -> usize {
        self.lock().by_age.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Absent> {
        // Plain bookkeeping: a panic elsewhere cannot leave it inconsistent.
        self.absent.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn went_away(&self, session: &Session) {
        if ends_at_disconnect(session).await {
            return;
        }
        let evict = self.lock().insert(session.id.clone(), self.max);
        for id in evict {
            self.end(id, "max_offline_sessions are kept").await;
        }
    }

    /// Ends the session absent the longest, then waits (up to [`MAKE_ROOM_WAIT`]) until `full` says the
    /// engine's session table has room. Does nothing when no session is absent.
    pub async fn make_room(&self, full: impl Fn() -> bool) {
        let oldest = {
            let mut absent = self.lock();
            let oldest = absent.by_age.pop_first().map(|(_, id)| id);
            if let Some(id) = &oldest {
                absent.by_client.remove(&id.client_id);
            }
            oldest
        };
        let Some(id) = oldest else {
            return;
        };
        self.end(id, "a new client needed its place (max_connections)")
            .await;
        let deadline = tokio::time::Instant::now() + MAKE_ROOM_WAIT;
        while full() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn end(&self, id: Id, why: &str) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "broker: absent session of {:?} ended early: {why}",
            id.client_id.as_ref() as &str
        );
        let mut entry = self.scx.extends.shared().await.entry(id.clone());
        if let Err(error) = entry.kick(true, true, true).await {
            log::debug!(
                "broker: ending the absent session of {:?}: {error}",
                id.client_id.as_ref() as &str
            );
        }
    }
}

/// The engine hook that keeps [`OfflineSessions`] up to date.
pub struct OfflineSessionsHook(pub Arc<OfflineSessions>);

impl OfflineSessionsHook {
    /// The engine hook points this handler must be registered for.
    pub const TYPES: [rmqtt::hook::Type; 3] = [
        rmqtt::hook::Type::ClientConnected,
        rmqtt::hook::Type::ClientDisconnected,
        rmqtt::hook::Type::SessionTerminated,
    ];
}

#[async_trait]
impl Handler for OfflineSessionsHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        match param {
            Parameter::ClientConnected(session) => self.0.lock().remove(&session.id.client_id),
            Parameter::ClientDisconnected(session, _) => self.0.went_away(session).await,
            Parameter::SessionTerminated(session, _) => {
                let mut absent = self.0.lock();
                // Only the record of this very session: a newer one of the same client id stays.
                if let Some(key) = absent.by_client.get(&session.id.client_id).copied() {
                    if absent.by_age.get(&key) == Some(&session.id) {
                        absent.remove(&session.id.client_id);
                    }
                }
            }
            _ => {}
        }
        (true, acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> Id {
        Id::new(1, 0, None, None, ClientId::from(name.to_string()), None)
    }

    #[test]
    fn the_oldest_absent_sessions_are_ended_first() {
        let mut absent = Absent::default();
        assert!(absent.insert(id("a"), 2).is_empty());
        assert!(absent.insert(id("b"), 2).is_empty());
        let evicted = absent.insert(id("c"), 2);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].client_id.as_ref() as &str, "a");
        absent.remove(&ClientId::from("b".to_string()));
        assert!(absent.insert(id("d"), 2).is_empty());
        assert_eq!(absent.by_age.len(), 2);
        assert_eq!(absent.by_client.len(), 2);
    }

    #[test]
    fn a_client_that_goes_away_again_is_moved_to_the_back() {
        let mut absent = Absent::default();
        absent.insert(id("a"), 2);
        absent.insert(id("b"), 2);
        absent.insert(id("a"), 2);
        let evicted = absent.insert(id("c"), 2);
        assert_eq!(evicted[0].client_id.as_ref() as &str, "b");
    }

    #[test]
    fn anonymous_sessions_get_the_shorter_cap() {
        let lifetimes = SessionLifetimes {
            expiry: Duration::from_secs(7200),
            anonymous_expiry: Duration::from_secs(300),
        };
        assert_eq!(lifetimes.cap_for(&id("a")), Duration::from_secs(300));
        let named = Id::new(
            1,
            0,
            None,
            None,
            ClientId::from("b".to_string()),
            Some(rmqtt::types::UserName::from("u")),
        );
        assert_eq!(lifetimes.cap_for(&named), Duration::from_secs(7200));
    }
}
