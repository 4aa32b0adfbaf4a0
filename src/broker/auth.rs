//! Logins to the embedded broker: user names with argon2id password hashes, anonymous access when allowed,
//! and a per-address brake on repeated failures. This module decides whether a CONNECT's credentials are
//! accepted and logs refusals with the client's address; it never decides topic rights and never sees the
//! engine's types.
//!
//! The brake: the first [`Throttle::free_failures`] failed logins from one IP address cost nothing extra;
//! each further failure shuts that address out for a delay that doubles (1 s, 2 s, 4 s ... up to 60 s by
//! default). Logins with a user name arriving from a shut-out address are refused at once, without checking
//! the password, so a password guesser gets at most one guess per delay and costs no argon2 work. A
//! successful login clears the address's record; records are forgotten 15 minutes after the last failure
//! and the table holds at most [`MAX_TRACKED_ADDRESSES`] addresses (expired ones, then the oldest, are
//! dropped first), so memory stays bounded whatever the number of attackers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::password::verify_password;

/// Addresses whose failures are remembered at most.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;
/// Argon2 verifications that may run at once (each takes ~19 MiB and a core for a fraction of a second).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

/// How failures from one address are slowed down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    /// Failures that are not penalised (typing mistakes).
    pub free_failures: u32,
    /// Shut-out after the first penalised failure; doubles with each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A record is dropped this long after its last failure.
    pub forget_after: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            free_failures: 3,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(15 * 60),
        }
    }
}

/// The answer to a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Accepted: anonymous when `user` is None.
    Accepted,
    /// Unknown user, missing or wrong password (CONNACK "bad user name or password").
    BadCredentials,
    /// Anonymous login while anonymous access is off, or the address is shut out for now
    /// (CONNACK "not authorized").
    NotAuthorized,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    blocked_until: Instant,
}

/// Failed logins per address, bounded.
#[derive(Debug)]
pub struct FailureTracker {
    throttle: Throttle,
    capacity: usize,
    by_address: HashMap<IpAddr, Failures>,
}

impl FailureTracker {
    pub fn new(throttle: Throttle, capacity: usize) -> Self {
        FailureTracker {
            throttle,
            capacity: capacity.max(1),
            by_address: HashMap::new(),
        }
    }

    /// How long `ip` is still shut out, if it is.
    pub fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.by_address
            .get(&ip)
            .and_then(|f| f.blocked_until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Records a failure; returns the failure count and the shut-out it earned, if any.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> (u32, Option<Duration>) {
        if !self.by_address.contains_key(&ip) && self.by_address.len() >= self.capacity {
            self.make_room(now);
        }
        let throttle = self.throttle;
        let entry = self.by_address.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: now,
        });
        if now.saturating_duration_since(entry.last) > throttle.forget_after {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let penalised = entry.count.saturating_sub(throttle.free_failures);
        if penalised == 0 {
            return (entry.count, None);
        }
        let factor = 1u32 << (penalised - 1).min(16);
        let delay = throttle
            .first_delay
            .saturating_mul(factor)
            .min(throttle.max_delay);
        entry.blocked_until = now + delay;
        (entry.count, Some(delay))
    }

    /// Forgets `ip` after a successful login.
    pub fn forget(&mut self, ip: IpAddr) {
        self.by_address.remove(&ip);
    }

    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        let forget_after = self.throttle.forget_after;
        self.by_address.retain(|_, f| {
            f.blocked_until > now || now.saturating_duration_since(f.last) <= forget_after
        });
        if self.by_address.len() >= self.capacity {
            if let Some(oldest) = self
                .by_address
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(ip, _)| *ip)
            {
                self.by_address.remove(&oldest);
            }
        }
    }
}

/// Users, anonymous access and the failure brake.
pub struct Logins {
    users: HashMap<String, Arc<str>>,
    allow_anonymous: bool,
    failures: Mutex<FailureTracker>,
    verifications: Semaphore,
}

impl Logins {
    /// `users` maps names to argon2 PHC strings.
    pub fn new(
        users: impl IntoIterator<Item = (String, String)>,
        allow_anonymous: bool,
        throttle: Throttle,
    ) -> Self {
        Logins {
            users: users
                .into_iter()
                .map(|(name, phc)| (name, Arc::from(phc)))
                .collect(),
            allow_anonymous,
            failures: Mutex::new(FailureTracker::new(throttle, MAX_TRACKED_ADDRESSES)),
            verifications: Semaphore::new(MAX_CONCURRENT_VERIFICATIONS),
        }
    }

    /// Checks one CONNECT's credentials from `peer` and logs a refusal.
    pub async fn check(
        &self,
        peer: Option<SocketAddr>,
        user: Option<&str>,
        password: Option<&[u8]>,
    ) -> LoginOutcome {
        let peer_text = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        let Some(user) = user else {
            if self.allow_anonymous {
                return LoginOutcome::Accepted;
            }
            log::warn!(peer = peer_text.as_str();
                "broker: anonymous login from {peer_text} refused (not authorized): anonymous access is off, give a user name");
            return LoginOutcome::NotAuthorized;
        };
        let ip = peer.map(|p| p.ip());
        if let Some(ip) = ip {
            let blocked = self.tracker().blocked_for(ip, Instant::now());
            if let Some(remaining) = blocked {
                log::info!(peer = peer_text.as_str(), user = user;
                    "broker: login of {user:?} from {peer_text} refused unchecked: address shut out for {}ms after repeated failures",
                    remaining.as_millis());
                return LoginOutcome::NotAuthorized;
            }
        }
        let verified = match (self.users.get(user), password) {
            (Some(phc), Some(password)) => self.verify(password, phc.clone()).await,
            _ => false,
        };
        if verified {
            if let Some(ip) = ip {
                self.tracker().forget(ip);
            }
            return LoginOutcome::Accepted;
        }
        let why = if self.users.contains_key(user) {
            "wrong or missing password"
        } else {
            "unknown user"
        };
        match ip.map(|ip| self.tracker().record_failure(ip, Instant::now())) {
            Some((count, Some(delay))) => log::warn!(peer = peer_text.as_str(), user = user;
                "broker: login of {user:?} from {peer_text} refused (bad user name or password: {why}); {count} failures, address shut out for {}s",
                delay.as_secs_f32()),
            _ => log::warn!(peer = peer_text.as_str(), user = user;
                "broker: login of {user:?} from {peer_text} refused (bad user name or password: {why})"),
        }
        LoginOutcome::BadCredentials
    }

    fn tracker(&self) -> std::sync::MutexGuard<'_, FailureTracker> {
        // The tracker holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn verify(&self, password: &[u8], phc: Arc<str>) -> bool {
        let Ok(password) = std::str::from_utf8(password).map(str::to_owned) else {
            return false;
        };
        let Ok(_permit) = self.verifications.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || verify_password(&password, &phc))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    #[test]
    fn free_failures_then_doubling_delays_up_to_the_cap() {
        let mut tracker = FailureTracker::new(Throttle::default(), 16);
        let now = Instant::now();
        let delays: Vec<Option<u64>> = (0..10)
            .map(|_| tracker.record_failure(ip(1), now).1.map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            delays,
            vec![
                None,
                None,
                None,
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(32),
                Some(60)
            ]
        );
        assert_eq!(
            tracker.blocked_for(ip(1), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(tracker.blocked_for(ip(2), now), None);
        assert_eq!(
            tracker.blocked_for(ip(1), now + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn success_and_time_forget_failures() {
        let mut tracker = FailureTracker::new(Throttle::default(), 16);
        let now = Instant::now();
        for _ in 0..3 {
            tracker.record_failure(ip(1), now);
        }
        tracker.forget(ip(1));
        assert_eq!(tracker.record_failure(ip(1), now), (1, None));
        let later = now + Duration::from_secs(16 * 60);
        for _ in 0..2 {
            tracker.record_failure(ip(1), now);
        }
        assert_eq!(
            tracker.record_failure(ip(1), later),
            (1, None),
            "old failures expired"
        );
    }

    #[test]
    fn table_stays_bounded_under_many_addresses() {
        let mut tracker = FailureTracker::new(Throttle::default(), 100);
        let now = Instant::now();
        for i in 0..10_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            tracker.record_failure(addr, now + Duration::from_millis(u64::from(i)));
        }
        assert!(tracker.len() <= 100);
        let newest = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + 9_999u32));
        assert_eq!(
            tracker
                .record_failure(newest, now + Duration::from_secs(10))
                .0,
            2
        );
    }

    #[tokio::test]
    async fn logins_accept_refuse_and_shut_out() {
        let phc = super::super::password::hash_password("pw").unwrap();
        let logins = Logins::new([("alice".to_string(), phc)], false, Throttle::default());
        let peer = Some(SocketAddr::from(([10, 0, 0, 9], 40000)));
        assert_eq!(
            logins.check(peer, Some("alice"), Some(b"pw")).await,
            LoginOutcome::Accepted
        );
        assert_eq!(
            logins.check(peer, None, None).await,
            LoginOutcome::NotAuthorized
        );
        assert_eq!(
            logins.check(peer, Some("bob"), Some(b"pw")).await,
            LoginOutcome::BadCredentials
        );
        assert_eq!(
            logins.check(peer, Some("alice"), None).await,
            LoginOutcome::BadCredentials
        );
        assert_eq!(
            logins.check(peer, Some("alice"), Some(b"x")).await,
            LoginOutcome::BadCredentials
        );
        assert_eq!(
            logins.check(peer, Some("alice"), Some(b"y")).await,
            LoginOutcome::BadCredentials
        );
        assert_eq!(
            logins.check(peer, Some("alice"), Some(b"pw")).await,
            LoginOutcome::NotAuthorized,
            "shut out: even the right password is not checked"
        );
        let other = Some(SocketAddr::from(([10, 0, 0, 10], 40000)));
        assert_eq!(
            logins.check(other, Some("alice"), Some(b"pw")).await,
            LoginOutcome::Accepted
        );
    }
}
