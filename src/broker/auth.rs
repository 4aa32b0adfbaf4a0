//! Logins to the embedded broker: user names with argon2 password hashes, anonymous access when allowed,
//! and a brake on repeated failures. This module decides whether a CONNECT's credentials are accepted and
//! logs refusals with the client's address (one line per address and [`LOG_INTERVAL`], with the count of
//! those held back, through [`crate::ratelimit`]); it never decides topic rights and never sees the
//! engine's types.
//!
//! **Work and memory.** At most [`verification_slots`] argon2 verifications run at once (the machine's
//! cores, 1 to [`MAX_VERIFICATIONS`]), each on `spawn_blocking` with a memory buffer taken from a pool of
//! as many buffers: during a login storm the buffers are reused, so resident memory grows by at most the
//! slots times the largest configured hash's memory (19 MiB for the default hash, at most 64 MiB each:
//! see [`super::password`]); when no verification runs or waits, the buffers are freed and the C
//! allocator is told to give the memory back, so an idle daemon holds none of it. A verified user name
//! and password are remembered for [`CACHE_TTL`] (at most [`MAX_CACHED_CREDENTIALS`], oldest dropped
//! first and counted) under a keyed hash with a random per-process key, never the password itself, so
//! clients reconnecting after a Wi-Fi drop do not rerun argon2 (the cache is looked at only after the
//! brake has let the attempt through, so it is no faster oracle for guessing). An unknown user name, or a missing password, costs a verification against a
//! decoy hash with the most common configured cost, so answer times do not tell which names exist.
//!
//! **The brake.** Failures are counted per client address and per user name (a name is kept as a keyed
//! hash, so long invented names cost no memory). Each count allows [`Throttle::free_failures`] failures
//! (typing mistakes) at no cost; after that, an attempt that record applies to waits until the last
//! failure is [`Throttle::gap`] old (1 s, doubling up to 60 s by default), and only one such attempt is in
//! flight at a time (as many in flight as there are free failures left otherwise), so parallel
//! connections guess no faster than sequential ones. Waiting is a sleep before the password is checked,
//! not a refusal: a user sharing an address with a guesser is slowed, not locked out. A success marks
//! that exact (address, user name) pair trusted for [`Throttle::trust_for`]: its next login skips both
//! counts (one login at a time; a failure ends the trust), so a client that has logged in from an address
//! before gets in at once while someone else there is guessing, and a success never resets the counts
//! themselves: logging into one's own account between guesses at another's gains nothing. Counts are
//! forgotten [`Throttle::forget_after`] after the last failure; the tables are bounded (oldest dropped
//! first, counted), a login never waits more than [`Throttle::max_delay`] and at most
//! [`MAX_WAITING_LOGINS`] wait at once; beyond these bounds a login is refused unchecked with "not
//! authorized".

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::Block;
use blake2::digest::consts::U32;
use blake2::digest::{Key, KeyInit, Mac};
use blake2::Blake2bMac;
use rand::RngCore;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::password::{memory_for, StoredHash};
use crate::lock::lock;
use crate::ratelimit::{suppressed_suffix, RateLimiter};

/// Addresses whose failures are remembered at most.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;
/// User names whose failures are remembered at most.
pub const MAX_TRACKED_USERS: usize = 4096;
/// Trusted (address, user name) pairs remembered at most.
pub const MAX_TRUSTED_PAIRS: usize = 4096;
/// Verified credentials remembered at most.
pub const MAX_CACHED_CREDENTIALS: usize = 1024;
/// How long a verified user name and password are remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Logins that may wait in the brake at once; more are refused unchecked.
pub const MAX_WAITING_LOGINS: usize = 256;
/// The most argon2 verifications that run at once, whatever the machine.
pub const MAX_VERIFICATIONS: usize = 4;
/// At most one refused-login line per address in this interval (and one line about held logins); the
/// lines in between are counted and their number is appended to the next line written.
pub const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Argon2 verifications allowed at once on this machine: its available cores, 1 to [`MAX_VERIFICATIONS`].
pub fn verification_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_VERIFICATIONS)
}

/// How failures are slowed down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    /// Failures per address and per user name that are not penalised (typing mistakes).
    pub free_failures: u32,
    /// Pause after the first penalised failure; doubles with each further one.
    pub first_delay: Duration,
    /// The longest pause, and the longest a login waits in the brake.
    pub max_delay: Duration,
    /// A count is dropped this long after its last failure.
    pub forget_after: Duration,
    /// A successful (address, user name) pair skips the brake this long after its last success.
    pub trust_for: Duration,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            free_failures: 3,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            forget_after: Duration::from_secs(15 * 60),
            trust_for: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl Throttle {
    /// The pause owed after `failures` failures: none for the first [`Throttle::free_failures`], then
    /// [`Throttle::first_delay`] doubling up to [`Throttle::max_delay`].
    pub fn gap(&self, failures: u32) -> Duration {
        let penalised = failures.saturating_sub(self.free_failures);
        if penalised == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (penalised - 1).min(16);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// The answer to a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Accepted: anonymous when `user` is None.
    Accepted,
    /// Unknown user, missing or wrong password (CONNACK "bad user name or password").
    BadCredentials,
    /// Anonymous login while anonymous access is off, or a login the brake could not hold any longer
    /// (CONNACK "not authorized").
    NotAuthorized,
}

/// Counters of the login path, for tests and stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginStats {
    /// Argon2 verifications run (cache hits excluded).
    pub verifications: u64,
    /// Logins accepted from the credential cache, without argon2.
    pub cache_hits: u64,
    /// Cached credentials dropped to make room.
    pub cache_evicted: u64,
    /// Logins that waited in the brake.
    pub delayed: u64,
    /// Logins refused unchecked: waited too long, too many waiting, or the brake's tables full.
    pub refused_unchecked: u64,
    /// Failure counts and trusted pairs dropped to make room.
    pub brake_evicted: u64,
    /// Refused-login log lines suppressed by the rate limit.
    pub log_lines_suppressed: u64,
    /// Argon2 memory buffers allocated so far (at most the slots, unless a verification panicked).
    pub buffers_allocated: usize,
}

/// A user name as the brake keys it: a keyed hash, so names of any length cost the same memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameKey([u8; 16]);

/// The per-process random key for user names and cached credentials.
struct Keys {
    mac: Blake2bMac<U32>,
}

impl Keys {
    fn random() -> Keys {
        let mut key = Key::<Blake2bMac<U32>>::default();
        rand::rng().fill_bytes(&mut key[..]);
        Keys {
            mac: <Blake2bMac<U32> as KeyInit>::new(&key),
        }
    }

    fn digest(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn name(&self, user: &str) -> NameKey {
        let digest = self.digest(&[b"name", user.as_bytes()]);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        NameKey(key)
    }

    /// The cache key of a user name and password verified against `stored` (a changed hash gives another
    /// key, so an old password is never taken from the cache).
    fn credential(&self, user: &str, password: &[u8], stored: &StoredHash) -> [u8; 32] {
        self.digest(&[
            b"credential",
            user.as_bytes(),
            password,
            stored.salt(),
            stored.value(),
        ])
    }
}

/// Failures of one address or one user name.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    /// Attempts admitted and not finished yet.
    in_flight: u32,
    last_failure: Instant,
}

impl Record {
    fn expire(&mut self, now: Instant, forget_after: Duration) {
        if self.failures > 0 && now.saturating_duration_since(self.last_failure) > forget_after {
            self.failures = 0;
        }
    }

    fn idle(&self) -> bool {
        self.failures == 0 && self.in_flight == 0
    }
}

/// What one record says about a new attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    Until(Instant),
    Busy,
}

fn gate(record: Option<&Record>, throttle: &Throttle, now: Instant) -> Gate {
    let Some(record) = record else {
        return Gate::Open;
    };
    if record.failures.saturating_add(record.in_flight) <= throttle.free_failures {
        return Gate::Open;
    }
    if record.in_flight > 0 {
        return Gate::Busy;
    }
    let at = record.last_failure + throttle.gap(record.failures);
    if at > now {
        Gate::Until(at)
    } else {
        Gate::Open
    }
}

/// Records by key, bounded: idle records are dropped at once, expired ones when room is needed, then the
/// oldest not in flight (counted).
#[derive(Debug)]
struct Table<K> {
    map: HashMap<K, Record>,
    capacity: usize,
    evicted: u64,
}

impl<K: Hash + Eq + Copy> Table<K> {
    fn new(capacity: usize) -> Self {
        Table {
            map: HashMap::new(),
            capacity: capacity.max(1),
            evicted: 0,
        }
    }

    fn current(&mut self, key: &K, now: Instant, forget_after: Duration) -> Option<&Record> {
        let record = self.map.get_mut(key)?;
        record.expire(now, forget_after);
        if record.idle() {
            self.map.remove(key);
            return None;
        }
        self.map.get(key)
    }

    /// The record of `key`, made if needed; None when the table is full of records in flight.
    fn slot(&mut self, key: K, now: Instant, forget_after: Duration) -> Option<&mut Record> {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.map.retain(|_, record| {
                record.expire(now, forget_after);
                !record.idle()
            });
            if self.map.len() >= self.capacity {
                let oldest = self
                    .map
                    .iter()
                    .filter(|(_, record)| record.in_flight == 0)
                    .min_by_key(|(_, record)| record.last_failure)
                    .map(|(key, _)| *key)?;
                self.map.remove(&oldest);
                self.evicted += 1;
            }
        }
        let record = self.map.entry(key).or_insert(Record {
            failures: 0,
            in_flight: 0,
            last_failure: now,
        });
        record.expire(now, forget_after);
        Some(record)
    }

    fn release(&mut self, key: &K) {
        if let Some(record) = self.map.get_mut(key) {
            record.in_flight = record.in_flight.saturating_sub(1);
            if record.idle() {
                self.map.remove(key);
            }
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// What the brake says about a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A trusted pair: check now, no slot taken.
    Exempt,
    /// Slots taken (release them with [`Brake::release`]); check now or after the given instant.
    Go(Option<Instant>),
    /// Another attempt this one must follow is in flight: wait for it to finish, then ask again.
    Busy,
    /// The tables are full of attempts in flight: refuse.
    Full,
}

/// Failure counts per address and per user name, and trusted pairs: the pure state of the brake (the
/// caller passes the clock).
#[derive(Debug)]
pub struct Brake {
    throttle: Throttle,
    addresses: Table<IpAddr>,
    users: Table<NameKey>,
    trusted: HashMap<(IpAddr, NameKey), Instant>,
    trusted_capacity: usize,
    trusted_evicted: u64,
}

impl Brake {
    pub fn new(throttle: Throttle, capacity: usize) -> Self {
        Brake {
            throttle,
            addresses: Table::new(capacity),
            users: Table::new(capacity),
            trusted: HashMap::new(),
            trusted_capacity: capacity.max(1),
            trusted_evicted: 0,
        }
    }

    /// Asks to check a login of `user` from `ip` now.
    pub fn admit(&mut self, ip: Option<IpAddr>, user: NameKey, now: Instant) -> Admission {
        let throttle = self.throttle;
        if let Some(ip) = ip {
            if let Some(at) = self.trusted.remove(&(ip, user)) {
                if now.saturating_duration_since(at) <= throttle.trust_for {
                    return Admission::Exempt;
                }
            }
        }
        let by_address = match ip {
            Some(ip) => gate(
                self.addresses.current(&ip, now, throttle.forget_after),
                &throttle,
                now,
            ),
            None => Gate::Open,
        };
        let by_user = gate(
            self.users.current(&user, now, throttle.forget_after),
            &throttle,
            now,
        );
        let until = match (by_address, by_user) {
            (Gate::Busy, _) | (_, Gate::Busy) => return Admission::Busy,
            (Gate::Until(a), Gate::Until(b)) => Some(a.max(b)),
            (Gate::Until(a), Gate::Open) | (Gate::Open, Gate::Until(a)) => Some(a),
            (Gate::Open, Gate::Open) => None,
        };
        if let Some(ip) = ip {
            match self.addresses.slot(ip, now, throttle.forget_after) {
                Some(record) => record.in_flight += 1,
                None => return Admission::Full,
            }
        }
        match self.users.slot(user, now, throttle.forget_after) {
            Some(record) => record.in_flight += 1,
            None => {
                if let Some(ip) = ip {
                    self.addresses.release(&ip);
                }
                return Admission::Full;
            }
        }
        Admission::Go(until)
    }

    /// Gives back the slots of an [`Admission::Go`].
    pub fn release(&mut self, ip: Option<IpAddr>, user: NameKey) {
        if let Some(ip) = ip {
            self.addresses.release(&ip);
        }
        self.users.release(&user);
    }

    /// Counts a failed login; returns the pause the next attempt from that address or for that user
    /// name owes.
    pub fn failed(&mut self, ip: Option<IpAddr>, user: NameKey, now: Instant) -> Duration {
        let throttle = self.throttle;
        let mut owed = Duration::ZERO;
        let mut count = |record: Option<&mut Record>| {
            if let Some(record) = record {
                record.failures = record.failures.saturating_add(1);
                record.last_failure = now;
                owed = owed.max(throttle.gap(record.failures));
            }
        };
        if let Some(ip) = ip {
            self.trusted.remove(&(ip, user));
            count(self.addresses.slot(ip, now, throttle.forget_after));
        }
        count(self.users.slot(user, now, throttle.forget_after));
        owed
    }

    /// A successful login: trusts exactly this (address, user name) pair; the counts stay.
    pub fn succeeded(&mut self, ip: Option<IpAddr>, user: NameKey, now: Instant) {
        let Some(ip) = ip else {
            return;
        };
        if !self.trusted.contains_key(&(ip, user)) && self.trusted.len() >= self.trusted_capacity {
            let trust_for = self.throttle.trust_for;
            self.trusted
                .retain(|_, at| now.saturating_duration_since(*at) <= trust_for);
            if self.trusted.len() >= self.trusted_capacity {
                if let Some(oldest) = self
                    .trusted
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(pair, _)| *pair)
                {
                    self.trusted.remove(&oldest);
                    self.trusted_evicted += 1;
                }
            }
        }
        self.trusted.insert((ip, user), now);
    }

    /// Failure counts and trusted pairs dropped to make room.
    pub fn evicted(&self) -> u64 {
        self.addresses.evicted + self.users.evicted + self.trusted_evicted
    }

    /// Addresses, user names and trusted pairs held.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.addresses.len(), self.users.len(), self.trusted.len())
    }
}

/// Verified credentials by keyed hash, bounded and short-lived.
#[derive(Debug)]
struct CredentialCache {
    entries: HashMap<[u8; 32], Instant>,
    capacity: usize,
    ttl: Duration,
    evicted: u64,
}

impl CredentialCache {
    fn new(capacity: usize, ttl: Duration) -> Self {
        CredentialCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
            evicted: 0,
        }
    }

    fn hit(&mut self, key: &[u8; 32], now: Instant) -> bool {
        match self.entries.get(key) {
            Some(at) if now.saturating_duration_since(*at) <= self.ttl => true,
            Some(_) => {
                self.entries.remove(key);
                false
            }
            None => false,
        }
    }

    fn insert(&mut self, key: [u8; 32], now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            let ttl = self.ttl;
            self.entries
                .retain(|_, at| now.saturating_duration_since(*at) <= ttl);
            if self.entries.len() >= self.capacity {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(key, _)| *key)
                {
                    self.entries.remove(&oldest);
                    self.evicted += 1;
                }
            }
        }
        self.entries.insert(key, now);
    }
}

/// At most [`verification_slots`] argon2 runs at once, each with a buffer from a pool of as many.
struct Work {
    permits: Arc<Semaphore>,
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    slots: usize,
    blocks: usize,
    allocated: Arc<AtomicUsize>,
    runs: AtomicU64,
}

impl Work {
    fn new(slots: usize, blocks: usize) -> Self {
        Work {
            permits: Arc::new(Semaphore::new(slots.max(1))),
            buffers: Arc::new(Mutex::new(Vec::new())),
            slots: slots.max(1),
            blocks,
            allocated: Arc::new(AtomicUsize::new(0)),
            runs: AtomicU64::new(0),
        }
    }

    async fn verify(&self, stored: Arc<StoredHash>, password: Vec<u8>) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        self.runs.fetch_add(1, Ordering::Relaxed);
        let buffers = self.buffers.clone();
        let allocated = self.allocated.clone();
        let permits = self.permits.clone();
        let slots = self.slots;
        let blocks = self.blocks.max(stored.blocks());
        // The permit and the buffer live in the blocking task: if this future is dropped (the client
        // left), the buffer still goes back to the pool before another verification may start.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = lock(&buffers).pop().filter(|memory| memory.len() >= blocks);
            let mut memory = pooled.unwrap_or_else(|| {
                allocated.fetch_add(1, Ordering::Relaxed);
                memory_for(blocks)
            });
            let matched = stored.verify_with(&password, &mut memory);
            // Idle (only this verification holds a permit, none waits): free the buffers and hand the
            // memory back to the system, so resident memory after a storm is what it was before (a
            // fresh buffer costs page faults, a few ms, against the verification's 0.1-0.4 s).
            if permits.available_permits() + 1 >= slots {
                drop(memory);
                lock(&buffers).clear();
                release_free_memory();
            } else {
                lock(&buffers).push(memory);
            }
            matched
        })
        .await
        .unwrap_or(false)
    }
}

/// Returns the C allocator's free memory to the system. glibc keeps large freed blocks in its heap once
/// its dynamic mmap threshold has risen above them (which the first freed argon2 buffer does), so
/// without this a freed 19 MiB buffer often stays resident.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// A user name as logged: at most 64 characters, quoted.
fn shown(user: &str) -> String {
    let mut chars = user.chars();
    let head: String = chars.by_ref().take(64).collect();
    if chars.next().is_some() {
        format!("{head:?}...")
    } else {
        format!("{head:?}")
    }
}

/// Users, anonymous access, the verification pool, the credential cache and the brake.
pub struct Logins {
    users: HashMap<String, Option<Arc<StoredHash>>>,
    decoy: Option<Arc<StoredHash>>,
    allow_anonymous: bool,
    throttle: Throttle,
    keys: Keys,
    brake: Mutex<Brake>,
    cache: Mutex<CredentialCache>,
    work: Work,
    /// Woken whenever an admitted attempt finishes, for the attempts waiting behind it.
    settled: Notify,
    waiting: AtomicUsize,
    delayed: AtomicU64,
    refused_unchecked: AtomicU64,
    cache_hits: AtomicU64,
    /// Refusals (WARN) and brake holds (INFO) are limited apart, so holds never hide refusals.
    refusals_log: RateLimiter,
    holds_log: RateLimiter,
    suppressed_lines: AtomicU64,
}

/// Slots of an admitted attempt, given back (and waiters woken) when dropped, also when the login's
/// future is dropped midway.
struct Slots<'a> {
    logins: &'a Logins,
    ip: Option<IpAddr>,
    user: NameKey,
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        lock(&self.logins.brake).release(self.ip, self.user);
        self.logins.settled.notify_waiters();
    }
}

/// One login counted as waiting in the brake while held.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Logins {
    /// `users` maps names to argon2 PHC strings; a string that does not parse (the daemon refuses those
    /// at start) never matches.
    pub fn new(
        users: impl IntoIterator<Item = (String, String)>,
        allow_anonymous: bool,
        throttle: Throttle,
    ) -> Self {
        Logins::with_slots(users, allow_anonymous, throttle, verification_slots())
    }

    /// Like [`Logins::new`] with `slots` argon2 verifications at once.
    pub fn with_slots(
        users: impl IntoIterator<Item = (String, String)>,
        allow_anonymous: bool,
        throttle: Throttle,
        slots: usize,
    ) -> Self {
        let parsed: Vec<(String, Option<Arc<StoredHash>>)> = users
            .into_iter()
            .map(|(name, phc)| (name, StoredHash::parse(&phc).ok().map(Arc::new)))
            .collect();
        let valid: Vec<&Arc<StoredHash>> = parsed.iter().filter_map(|(_, h)| h.as_ref()).collect();
        // The decoy takes the most common cost (the first of the most common), so an unknown name costs
        // what most known names cost.
        let decoy = valid
            .iter()
            .max_by_key(|candidate| {
                (
                    valid.iter().filter(|h| h.same_cost(candidate)).count(),
                    std::cmp::Reverse(
                        valid
                            .iter()
                            .position(|h| h.same_cost(candidate))
                            .unwrap_or(0),
                    ),
                )
            })
            .map(|h| Arc::new(h.decoy()));
        let blocks = valid.iter().map(|h| h.blocks()).max().unwrap_or(0);
        Logins {
            users: parsed.into_iter().collect(),
            decoy,
            allow_anonymous,
            throttle,
            keys: Keys::random(),
            brake: Mutex::new(Brake::new(
                throttle,
                MAX_TRACKED_ADDRESSES.max(MAX_TRACKED_USERS),
            )),
            cache: Mutex::new(CredentialCache::new(MAX_CACHED_CREDENTIALS, CACHE_TTL)),
            work: Work::new(slots, blocks),
            settled: Notify::new(),
            waiting: AtomicUsize::new(0),
            delayed: AtomicU64::new(0),
            refused_unchecked: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            refusals_log: RateLimiter::new(LOG_INTERVAL),
            holds_log: RateLimiter::new(LOG_INTERVAL),
            suppressed_lines: AtomicU64::new(0),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> LoginStats {
        let (cache_evicted, brake_evicted) =
            (lock(&self.cache).evicted, lock(&self.brake).evicted());
        LoginStats {
            verifications: self.work.runs.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            cache_evicted,
            delayed: self.delayed.load(Ordering::Relaxed),
            refused_unchecked: self.refused_unchecked.load(Ordering::Relaxed),
            brake_evicted,
            log_lines_suppressed: self.suppressed_lines.load(Ordering::Relaxed),
            buffers_allocated: self.work.allocated.load(Ordering::Relaxed),
        }
    }

    /// Checks one CONNECT's credentials from `peer` and logs a refusal.
    pub async fn check(
        &self,
        peer: Option<SocketAddr>,
        user: Option<&str>,
        password: Option<&[u8]>,
    ) -> LoginOutcome {
        let ip = peer.map(|p| p.ip());
        let Some(user) = user else {
            return self.check_anonymous(peer);
        };
        let name = self.keys.name(user);
        let deadline = Instant::now() + self.throttle.max_delay;
        let mut waiting = None;
        let (slots, until) = match self.admit(ip, name, deadline, &mut waiting).await {
            Ok(admitted) => admitted,
            Err(why) => return self.refuse_unchecked(peer, user, why),
        };
        if let Some(until) = until {
            if let Err(why) = self.hold(peer, user, until, deadline, &mut waiting).await {
                drop(slots);
                return self.refuse_unchecked(peer, user, why);
            }
        }
        drop(waiting);
        let verified = self.verify(user, password).await;
        if verified {
            lock(&self.brake).succeeded(ip, name, Instant::now());
            drop(slots);
            return LoginOutcome::Accepted;
        }
        let owed = lock(&self.brake).failed(ip, name, Instant::now());
        drop(slots);
        self.refuse_credentials(peer, user, password, owed)
    }

    /// A login without a user name: accepted only when anonymous access is on.
    fn check_anonymous(&self, peer: Option<SocketAddr>) -> LoginOutcome {
        if self.allow_anonymous {
            return LoginOutcome::Accepted;
        }
        self.warn(peer, || {
            format!(
                "broker: anonymous login from {} refused (not authorized): anonymous access is off, give a user name",
                peer_text(peer)
            )
        });
        LoginOutcome::NotAuthorized
    }

    /// Waits until the login brake lets this address and user through: their slots (none when exempt)
    /// and the time the login is held until, or why it is refused unchecked. Starts `waiting` when the
    /// login has to wait.
    async fn admit<'a>(
        &'a self,
        ip: Option<IpAddr>,
        name: NameKey,
        deadline: Instant,
        waiting: &mut Option<Waiting<'a>>,
    ) -> Result<(Option<Slots<'a>>, Option<Instant>), &'static str> {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let admission = lock(&self.brake).admit(ip, name, Instant::now());
            match admission {
                Admission::Exempt => return Ok((None, None)),
                Admission::Go(until) => {
                    let slots = Slots {
                        logins: self,
                        ip,
                        user: name,
                    };
                    return Ok((Some(slots), until));
                }
                Admission::Full => return Err("the login brake's tables are full"),
                Admission::Busy => {
                    if waiting.is_none() {
                        *waiting = Some(self.start_waiting().ok_or("too many logins waiting")?);
                    }
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err("waited too long behind repeated failures");
                    }
                }
            }
        }
    }

    /// Holds an admitted login until `until` (after repeated failures), logged; or why it is refused
    /// unchecked (the hold would pass the deadline, too many logins waiting).
    async fn hold<'a>(
        &'a self,
        peer: Option<SocketAddr>,
        user: &str,
        until: Instant,
        deadline: Instant,
        waiting: &mut Option<Waiting<'a>>,
    ) -> Result<(), &'static str> {
        if until > deadline {
            return Err("waited too long behind repeated failures");
        }
        if waiting.is_none() {
            *waiting = Some(self.start_waiting().ok_or("too many logins waiting")?);
        }
        self.delayed.fetch_add(1, Ordering::Relaxed);
        let pause = until.saturating_duration_since(Instant::now());
        self.info(peer, || {
            format!(
                "broker: login of {} from {} held {} ms after repeated failures from this address or for this user",
                shown(user),
                peer_text(peer),
                pause.as_millis()
            )
        });
        tokio::time::sleep_until(until).await;
        Ok(())
    }

    /// Refuses a login whose credentials were checked and found wrong, logging why and what the next
    /// login from this address or for this user waits.
    fn refuse_credentials(
        &self,
        peer: Option<SocketAddr>,
        user: &str,
        password: Option<&[u8]>,
        owed: Duration,
    ) -> LoginOutcome {
        let why = match (self.users.contains_key(user), password.is_some()) {
            (false, _) => "unknown user",
            (true, false) => "missing password",
            (true, true) => "wrong password",
        };
        self.warn(peer, || {
            let next = if owed.is_zero() {
                String::new()
            } else {
                format!(
                    "; the next login from this address or for this user waits {} s",
                    owed.as_secs_f32()
                )
            };
            format!(
                "broker: login of {} from {} refused (bad user name or password: {why}){next}",
                shown(user),
                peer_text(peer)
            )
        });
        LoginOutcome::BadCredentials
    }

    fn start_waiting(&self) -> Option<Waiting<'_>> {
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let guard = Waiting(&self.waiting);
        (before < MAX_WAITING_LOGINS).then_some(guard)
    }

    fn refuse_unchecked(&self, peer: Option<SocketAddr>, user: &str, why: &str) -> LoginOutcome {
        self.refused_unchecked.fetch_add(1, Ordering::Relaxed);
        self.warn(peer, || {
            format!(
                "broker: login of {} from {} refused unchecked (not authorized): {why}",
                shown(user),
                peer_text(peer)
            )
        });
        LoginOutcome::NotAuthorized
    }

    /// True when `password` is `user`'s; the same argon2 work whether the user exists or not.
    async fn verify(&self, user: &str, password: Option<&[u8]>) -> bool {
        let (stored, known) = match self.users.get(user) {
            Some(Some(stored)) => (stored.clone(), true),
            _ => match &self.decoy {
                Some(decoy) => (decoy.clone(), false),
                // No user has a usable hash: there is no name to hide.
                None => return false,
            },
        };
        let given = password.is_some();
        let password = password.unwrap_or_default();
        let credential = self.keys.credential(user, password, &stored);
        if lock(&self.cache).hit(&credential, Instant::now()) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return known && given;
        }
        let matched = self.work.verify(stored, password.to_vec()).await;
        let accepted = matched && known && given;
        if accepted {
            lock(&self.cache).insert(credential, Instant::now());
        }
        accepted
    }

    fn warn(&self, peer: Option<SocketAddr>, line: impl FnOnce() -> String) {
        match self.refusals_log.admit(&log_key(peer)) {
            Some(suppressed) => {
                let text = peer_text(peer);
                log::warn!(peer = text.as_str(); "{}{}", line(), suppressed_suffix(suppressed));
            }
            None => {
                self.suppressed_lines.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn info(&self, peer: Option<SocketAddr>, line: impl FnOnce() -> String) {
        match self.holds_log.admit(&log_key(peer)) {
            Some(suppressed) => {
                let text = peer_text(peer);
                log::info!(peer = text.as_str(); "{}{}", line(), suppressed_suffix(suppressed));
            }
            None => {
                self.suppressed_lines.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_string(), |p| p.to_string())
}

/// Lines are limited per address, not per connection (a guesser opens a new port each time).
fn log_key(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".to_string(), |p| p.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    fn peer(last: u8) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip(last), 40000))
    }

    fn name(n: &str) -> NameKey {
        let mut key = [0u8; 16];
        key[..n.len().min(16)].copy_from_slice(&n.as_bytes()[..n.len().min(16)]);
        NameKey(key)
    }

    /// An argon2id hash with tiny costs, so the tests stay fast in debug builds.
    fn cheap_hash(password: &str) -> String {
        let params = Params::new(64, 1, 1, None).unwrap();
        let salt = SaltString::encode_b64(b"sensorgate-tests").unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    fn logins() -> Logins {
        Logins::with_slots(
            [
                ("alice".to_string(), cheap_hash("wonderland")),
                ("bob".to_string(), cheap_hash("builder")),
                ("carol".to_string(), cheap_hash("singer")),
            ],
            false,
            Throttle::default(),
            2,
        )
    }

    /// Runs one attempt through the brake as `check` does, without waiting: the admission, then the
    /// outcome.
    fn attempt(brake: &mut Brake, ip: IpAddr, user: NameKey, now: Instant, ok: bool) -> Admission {
        let admission = brake.admit(Some(ip), user, now);
        let go = match admission {
            Admission::Exempt => true,
            Admission::Go(None) => true,
            Admission::Go(Some(until)) => until <= now,
            Admission::Busy | Admission::Full => false,
        };
        if go {
            if ok {
                brake.succeeded(Some(ip), user, now);
            } else {
                brake.failed(Some(ip), user, now);
            }
        }
        if let Admission::Go(_) = admission {
            brake.release(Some(ip), user);
        }
        admission
    }

    #[test]
    fn gaps_are_free_then_double_up_to_the_cap() {
        let throttle = Throttle::default();
        let gaps: Vec<u64> = (0..11).map(|f| throttle.gap(f).as_secs()).collect();
        assert_eq!(gaps, vec![0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60]);
        assert_eq!(throttle.gap(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn failures_from_an_address_make_the_next_attempt_wait() {
        let mut brake = Brake::new(Throttle::default(), 16);
        let now = Instant::now();
        for i in 0..4u8 {
            let admission = attempt(&mut brake, ip(1), name(&format!("u{i}")), now, false);
            assert_eq!(admission, Admission::Go(None), "free failure {i}");
        }
        let next = brake.admit(Some(ip(1)), name("u9"), now);
        assert_eq!(next, Admission::Go(Some(now + Duration::from_secs(1))));
        assert_eq!(
            brake.admit(Some(ip(1)), name("u8"), now),
            Admission::Busy,
            "one waiting attempt at a time"
        );
        brake.release(Some(ip(1)), name("u9"));
        assert_eq!(
            brake.admit(Some(ip(2)), name("u9"), now),
            Admission::Go(None),
            "another address is not slowed"
        );
    }

    #[test]
    fn a_success_on_ones_own_account_does_not_reset_the_guessers_count() {
        let mut brake = Brake::new(Throttle::default(), 16);
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert!(matches!(
                attempt(&mut brake, ip(1), name("mallory"), now, true),
                Admission::Exempt | Admission::Go(None)
            ));
            match brake.admit(Some(ip(1)), name("bob"), now) {
                Admission::Go(until) => {
                    let at = until.unwrap_or(now).max(now);
                    waits.push(at.saturating_duration_since(now).as_secs());
                    now = at;
                    brake.failed(Some(ip(1)), name("bob"), now);
                    brake.release(Some(ip(1)), name("bob"));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, vec![0, 0, 0, 0, 1, 2, 4, 8]);
    }

    #[test]
    fn parallel_guesses_are_no_faster_than_sequential_ones() {
        let mut brake = Brake::new(Throttle::default(), 16);
        let now = Instant::now();
        let admitted: Vec<Admission> = (0..10)
            .map(|_| brake.admit(Some(ip(1)), name("bob"), now))
            .collect();
        let free = admitted
            .iter()
            .filter(|a| **a == Admission::Go(None))
            .count();
        assert_eq!(free, 4, "{admitted:?}");
        assert!(admitted[4..].iter().all(|a| *a == Admission::Busy));
    }

    #[test]
    fn a_trusted_pair_gets_in_while_its_address_is_slowed_and_a_new_name_waits() {
        let mut brake = Brake::new(Throttle::default(), 16);
        let now = Instant::now();
        assert_eq!(
            attempt(&mut brake, ip(1), name("carol"), now, true),
            Admission::Go(None)
        );
        for _ in 0..6 {
            let admission = brake.admit(Some(ip(1)), name("bob"), now);
            assert!(matches!(admission, Admission::Go(_)), "{admission:?}");
            brake.failed(Some(ip(1)), name("bob"), now);
            brake.release(Some(ip(1)), name("bob"));
        }
        assert_eq!(
            attempt(&mut brake, ip(1), name("carol"), now, true),
            Admission::Exempt
        );
        assert_eq!(
            attempt(&mut brake, ip(1), name("carol"), now, true),
            Admission::Exempt,
            "trust is renewed by each success"
        );
        assert!(
            matches!(brake.admit(Some(ip(1)), name("dave"), now), Admission::Go(Some(until)) if until > now),
            "a name never seen from this address waits, but is not refused"
        );
        brake.release(Some(ip(1)), name("dave"));
        assert_eq!(
            attempt(&mut brake, ip(2), name("bob"), now, true),
            Admission::Go(Some(now + Duration::from_secs(4))),
            "bob's own count slows bob from anywhere he was not trusted"
        );
    }

    #[test]
    fn a_failure_ends_a_pairs_trust_and_trust_expires() {
        let throttle = Throttle {
            trust_for: Duration::from_millis(500),
            ..Throttle::default()
        };
        let mut brake = Brake::new(throttle, 16);
        let now = Instant::now();
        attempt(&mut brake, ip(1), name("bob"), now, true);
        assert_eq!(
            attempt(&mut brake, ip(1), name("bob"), now, false),
            Admission::Exempt
        );
        assert_eq!(
            brake.admit(Some(ip(1)), name("bob"), now),
            Admission::Go(None),
            "no longer trusted: counted like anyone"
        );
        brake.release(Some(ip(1)), name("bob"));
        attempt(&mut brake, ip(2), name("eve"), now, true);
        for i in 0..4 {
            attempt(&mut brake, ip(2), name(&format!("x{i}")), now, false);
        }
        let soon = now + Duration::from_millis(400);
        assert_eq!(
            attempt(&mut brake, ip(2), name("eve"), soon, true),
            Admission::Exempt
        );
        let later = soon + Duration::from_millis(501);
        assert_eq!(
            brake.admit(Some(ip(2)), name("eve"), later),
            Admission::Go(Some(now + Duration::from_secs(1))),
            "trust expired: eve waits behind the address's failures"
        );
    }

    #[test]
    fn counts_are_forgotten_and_tables_stay_bounded() {
        let throttle = Throttle::default();
        let mut brake = Brake::new(throttle, 100);
        let now = Instant::now();
        for _ in 0..6 {
            attempt(&mut brake, ip(1), name("bob"), now, false);
        }
        let later = now + throttle.forget_after + Duration::from_secs(1);
        assert_eq!(
            brake.admit(Some(ip(1)), name("bob"), later),
            Admission::Go(None)
        );
        brake.release(Some(ip(1)), name("bob"));
        for i in 0..10_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let at = later + Duration::from_millis(u64::from(i));
            attempt(&mut brake, addr, name(&format!("n{i}")), at, false);
        }
        let (addresses, users, trusted) = brake.sizes();
        assert!(addresses <= 100 && users <= 100 && trusted <= 100);
        assert!(brake.evicted() >= 9_800, "{}", brake.evicted());
    }

    #[test]
    fn the_cache_is_bounded_and_expires() {
        let mut cache = CredentialCache::new(4, Duration::from_secs(300));
        let now = Instant::now();
        for i in 0..6u8 {
            cache.insert([i; 32], now + Duration::from_secs(u64::from(i)));
        }
        assert_eq!(cache.entries.len(), 4);
        assert_eq!(cache.evicted, 2);
        assert!(
            !cache.hit(&[0; 32], now + Duration::from_secs(6)),
            "oldest evicted"
        );
        assert!(cache.hit(&[5; 32], now + Duration::from_secs(6)));
        assert!(
            !cache.hit(&[5; 32], now + Duration::from_secs(306)),
            "expired"
        );
    }

    #[test]
    fn credential_keys_depend_on_key_user_password_and_hash() {
        let keys = Keys::random();
        let a = StoredHash::parse(&cheap_hash("a")).unwrap();
        let b = a.decoy();
        let k = keys.credential("alice", b"pw", &a);
        assert_eq!(k, keys.credential("alice", b"pw", &a));
        assert_ne!(k, keys.credential("alice", b"pw2", &a));
        assert_ne!(k, keys.credential("alicep", b"w", &a), "fields are framed");
        assert_ne!(k, keys.credential("alice", b"pw", &b));
        assert_ne!(k, Keys::random().credential("alice", b"pw", &a));
        assert!(!k.windows(2).any(|w| w == b"pw"));
    }

    #[tokio::test]
    async fn logins_accept_refuse_and_cache() {
        let logins = logins();
        let p = peer(9);
        assert_eq!(
            logins.check(p, Some("alice"), Some(b"wonderland")).await,
            LoginOutcome::Accepted
        );
        assert_eq!(
            logins.check(p, None, None).await,
            LoginOutcome::NotAuthorized
        );
        assert_eq!(
            logins.check(p, Some("mallory"), Some(b"wonderland")).await,
            LoginOutcome::BadCredentials
        );
        assert_eq!(
            logins.check(p, Some("alice"), None).await,
            LoginOutcome::BadCredentials
        );
        assert_eq!(
            logins.check(p, Some("alice"), Some(b"x")).await,
            LoginOutcome::BadCredentials
        );
        let before = logins.stats();
        for _ in 0..5 {
            assert_eq!(
                logins
                    .check(peer(10), Some("alice"), Some(b"wonderland"))
                    .await,
                LoginOutcome::Accepted
            );
        }
        let after = logins.stats();
        assert_eq!(
            after.verifications, before.verifications,
            "all from the cache"
        );
        assert_eq!(after.cache_hits, before.cache_hits + 5);
        assert_eq!(
            logins.check(p, Some("alice"), Some(b"wonderlan")).await,
            LoginOutcome::BadCredentials,
            "a wrong password is never taken from the cache"
        );
    }

    #[tokio::test]
    async fn unknown_names_and_missing_passwords_cost_a_verification_too() {
        let logins = logins();
        let p = peer(9);
        logins.check(p, Some("alice"), Some(b"nope")).await;
        logins.check(p, Some("nobody"), Some(b"nope")).await;
        logins.check(p, Some("alice"), None).await;
        logins.check(p, Some("nobody"), None).await;
        assert_eq!(logins.stats().verifications, 4);
        let empty = Logins::with_slots(Vec::new(), true, Throttle::default(), 1);
        assert_eq!(
            empty.check(p, Some("x"), Some(b"y")).await,
            LoginOutcome::BadCredentials
        );
        assert_eq!(empty.check(p, None, None).await, LoginOutcome::Accepted);
    }

    #[tokio::test]
    async fn the_decoy_has_the_most_common_cost() {
        let odd = {
            let params = Params::new(128, 1, 1, None).unwrap();
            let salt = SaltString::encode_b64(b"sensorgate-tests").unwrap();
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(b"x", &salt)
                .unwrap()
                .to_string()
        };
        let logins = Logins::with_slots(
            [
                ("odd".to_string(), odd),
                ("a".to_string(), cheap_hash("a")),
                ("b".to_string(), cheap_hash("b")),
            ],
            false,
            Throttle::default(),
            1,
        );
        let common = StoredHash::parse(&cheap_hash("a")).unwrap();
        assert!(logins.decoy.as_ref().is_some_and(|d| d.same_cost(&common)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_guesser_waits_and_a_trusted_user_of_the_same_address_does_not() {
        let logins = Arc::new(logins());
        let p = peer(1);
        assert_eq!(
            logins.check(p, Some("carol"), Some(b"singer")).await,
            LoginOutcome::Accepted
        );
        let started = Instant::now();
        for guess in 0..7 {
            assert_eq!(
                logins.check(p, Some("alice"), Some(b"wonderland")).await,
                LoginOutcome::Accepted,
                "own account"
            );
            assert_eq!(
                logins
                    .check(p, Some("bob"), Some(format!("guess{guess}").as_bytes()))
                    .await,
                LoginOutcome::BadCredentials
            );
        }
        assert!(
            started.elapsed() >= Duration::from_secs(1 + 2 + 4),
            "{:?}",
            started.elapsed()
        );
        // While the guesser waits for its next try, carol (trusted here) gets in at once.
        let guesser = {
            let logins = logins.clone();
            tokio::spawn(async move { logins.check(p, Some("bob"), Some(b"guess7")).await })
        };
        tokio::task::yield_now().await;
        let carol_at = Instant::now();
        assert_eq!(
            logins.check(p, Some("carol"), Some(b"singer")).await,
            LoginOutcome::Accepted
        );
        assert!(carol_at.elapsed() < Duration::from_millis(100));
        // dave, never seen here, is slowed, not refused.
        let dave = {
            let logins = Logins::with_slots(
                [("dave".to_string(), cheap_hash("d"))],
                false,
                Throttle::default(),
                1,
            );
            for guess in 0..5 {
                logins
                    .check(p, Some("eve"), Some(format!("{guess}").as_bytes()))
                    .await;
            }
            let at = Instant::now();
            let outcome = logins.check(p, Some("dave"), Some(b"d")).await;
            (outcome, at.elapsed(), logins.stats().delayed)
        };
        assert_eq!(dave.0, LoginOutcome::Accepted);
        assert!(dave.1 >= Duration::from_secs(1), "{:?}", dave.1);
        assert_eq!(dave.2, 2);
        assert_eq!(guesser.await.unwrap(), LoginOutcome::BadCredentials);
        assert_eq!(logins.stats().refused_unchecked, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_parallel_burst_guesses_no_faster_and_waiting_is_bounded() {
        let logins = Arc::new(logins());
        let p = peer(1);
        let started = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let logins = logins.clone();
                tokio::spawn(async move {
                    let outcome = logins
                        .check(p, Some("bob"), Some(format!("g{i}").as_bytes()))
                        .await;
                    (outcome, Instant::now())
                })
            })
            .collect();
        let mut finished = Vec::new();
        for task in tasks {
            finished.push(task.await.unwrap());
        }
        let refused = finished
            .iter()
            .filter(|(o, _)| *o == LoginOutcome::NotAuthorized)
            .count();
        let last = finished.iter().map(|(_, at)| *at).max().unwrap();
        // 4 free, then pauses of 1, 2, 4 and 8 s (15 s), or refused after waiting 60 s.
        assert!(
            last.duration_since(started) >= Duration::from_secs(15),
            "{:?}",
            last.duration_since(started)
        );
        assert_eq!(refused, 0);
        assert_eq!(logins.stats().verifications, 8);
    }
}
