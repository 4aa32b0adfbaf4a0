//! sensorgate patch: connections that have not delivered their CONNECT yet ("half-open").
//!
//! Each connection gets a [`HalfOpenSlot`] when it is accepted and keeps it until its whole CONNECT
//! is read. Its TLS or WebSocket handshake runs under the slot with the handshake's own timeout; once
//! it is ready for MQTT, the first packet's probe (`Dispatcher::probe_version`) and the CONNECT read
//! (`recv_connect`) both run under the slot, so a connection has `handshake_timeout` in all, counted
//! from that moment, to deliver its CONNECT. And at most [`HalfOpen::max`] connections hold a slot at
//! once, whatever their stage: a new one beyond it ends the oldest. Both are decided per connection, never by address, and counted ([`HalfOpen::closed`]).
//!
//! Upstream read the first packet without any timeout, so a socket that said nothing was kept for
//! ever and did not count against `max_connections`.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::MqttError;
use crate::Result;

/// The half-open connections of every listener that shares it.
#[derive(Debug)]
pub struct HalfOpen {
    max: usize,
    /// Slots in the order they were taken (oldest first), each with the signal that ends it.
    waiting: Mutex<VecDeque<(u64, Arc<Notify>)>>,
    next_id: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
}

impl HalfOpen {
    /// At most `max` half-open connections (at least 1).
    pub fn new(max: usize) -> Arc<HalfOpen> {
        Arc::new(HalfOpen {
            max: max.max(1),
            waiting: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections ended because their CONNECT did not arrive in time, or because newer ones came
    /// beyond the bound.
    pub fn closed(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed) + self.evicted.load(Ordering::Relaxed)
    }

    /// Connections holding a slot now.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// A slot for a connection that has `timeout` from now to deliver its CONNECT; ends the oldest
    /// connection when this one is beyond the bound.
    pub fn enter(self: &Arc<Self>, timeout: Duration) -> HalfOpenSlot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ended = Arc::new(Notify::new());
        let oldest = {
            let mut waiting = self.lock();
            waiting.push_back((id, ended.clone()));
            if waiting.len() > self.max {
                waiting.pop_front()
            } else {
                None
            }
        };
        if let Some((_, signal)) = oldest {
            // A stored permit: the oldest connection ends even if it is not reading at this moment.
            signal.notify_one();
        }
        HalfOpenSlot { gate: self.clone(), id, ended, deadline: Instant::now() + timeout }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Notify>)>> {
        // A queue of ids and signals: a panic elsewhere cannot leave it inconsistent.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One half-open connection's place; given back when dropped (the CONNECT was read, or the
/// connection ended).
#[derive(Debug)]
pub struct HalfOpenSlot {
    gate: Arc<HalfOpen>,
    id: u64,
    ended: Arc<Notify>,
    deadline: Instant,
}

impl HalfOpenSlot {
    /// The connection is ready for MQTT (its TLS or WebSocket handshake is done): from now it has
    /// `timeout` to deliver its CONNECT.
    pub(crate) fn restart(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
    }

    /// Runs `read` until it finishes, the connection's time is up (`MqttError::ReadTimeout`) or a
    /// newer connection beyond the bound ends it.
    pub async fn bound<T>(&self, read: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            result = read => result,
            _ = tokio::time::sleep_until(self.deadline) => {
                self.gate.timed_out.fetch_add(1, Ordering::Relaxed);
                log::debug!("connection closed: no CONNECT within handshake_timeout");
                Err(MqttError::ReadTimeout.into())
            }
            _ = self.ended.notified() => {
                self.gate.evicted.fetch_add(1, Ordering::Relaxed);
                log::debug!("connection closed: {} newer connections have not sent CONNECT either", self.gate.max);
                Err(MqttError::ServiceUnavailable.into())
            }
        }
    }
}

/// Runs `read` under `slot` when there is one ([`HalfOpenSlot::bound`]), else as it is.
pub async fn within<T>(slot: Option<&HalfOpenSlot>, read: impl Future<Output = Result<T>>) -> Result<T> {
    match slot {
        Some(slot) => slot.bound(read).await,
        None => read.await,
    }
}

impl Drop for HalfOpenSlot {
    fn drop(&mut self) {
        let mut waiting = self.gate.lock();
        if let Some(at) = waiting.iter().position(|(id, _)| *id == self.id) {
            waiting.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_has_the_timeout_in_all_to_deliver_its_connect() {
        let gate = HalfOpen::new(10);
        let slot = gate.enter(Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(3)).await;
        let first = slot.bound(async { Ok(1) }).await.unwrap();
        assert_eq!(first, 1);
        // The CONNECT read gets only what is left of the 5 s.
        let started = Instant::now();
        let never = slot.bound(std::future::pending::<Result<()>>()).await;
        assert!(never.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(gate.closed(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_bound_the_oldest_connection_ends_and_only_it() {
        let gate = HalfOpen::new(2);
        let oldest = gate.enter(Duration::from_secs(60));
        let middle = gate.enter(Duration::from_secs(60));
        let newest = gate.enter(Duration::from_secs(60));
        assert_eq!(gate.waiting(), 2);
        assert!(oldest.bound(std::future::pending::<Result<()>>()).await.is_err());
        let still = tokio::time::timeout(
            Duration::from_secs(1),
            middle.bound(std::future::pending::<Result<()>>()),
        )
        .await;
        assert!(still.is_err(), "the middle one keeps waiting");
        assert_eq!(gate.closed(), 1);
        drop((oldest, middle, newest));
        assert_eq!(gate.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_given_back_makes_room() {
        let gate = HalfOpen::new(1);
        let spoke = gate.enter(Duration::from_secs(60));
        drop(spoke);
        let next = gate.enter(Duration::from_secs(60));
        let waited = tokio::time::timeout(
            Duration::from_secs(1),
            next.bound(std::future::pending::<Result<()>>()),
        )
        .await;
        assert!(waited.is_err(), "nobody ended it");
        assert_eq!(gate.closed(), 0);
    }
}
