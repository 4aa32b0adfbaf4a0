//! sensorgate patch: a SUBSCRIBE read before a client's PUBLISH is routed is applied first.
//!
//! Each connection is served by its own task, so a SUBSCRIBE that one client wrote before another
//! client's PUBLISH could still be in its hooks when that PUBLISH was routed (a subscription takes
//! about a millisecond to apply, a publish less): the subscriber missed the message although its
//! SUBSCRIBE reached the broker first (the Eclipse Paho suite's `test_request_response` writes the
//! publish without waiting for the other client's SUBACK, and missed it 1 run in 3). A subscription
//! acknowledged with SUBACK was always in effect; this is about the ones still being applied.
//!
//! A SUBSCRIBE takes a ticket when its packet is handled ([`SubscribeOrder::begin`]) and gives it back
//! once its filters are in the router (and its SUBACK is written). A new connection holds a ticket
//! from before its CONNACK until its first packet is read (a SUBSCRIBE takes its own first) or
//! [`SubscribeOrder::STARTUP_GRACE`] passed: a client that subscribes as soon as it has its CONNACK
//! (as the Paho test does) wrote that SUBSCRIBE before its session task got to read it. Before a
//! client's PUBLISH is routed, [`SubscribeOrder::wait_for_earlier`] waits until every ticket taken
//! before that moment is given back, at most [`SubscribeOrder::WAIT`]; it first yields once, so that
//! a connection woken together with it (its SUBSCRIBE written first, as in the Paho test, whose
//! subscriber is an established connection) is read and takes its ticket. With no SUBSCRIBE being applied
//! and no client just connected, which is nearly always, that is one atomic load. A SUBSCRIBE that
//! was still unread in the socket of an older connection cannot be seen.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The SUBSCRIBEs being applied, by the order they were read in.
#[derive(Debug, Default)]
pub struct SubscribeOrder {
    next_ticket: AtomicU64,
    /// How many tickets are out (the cheap check).
    applying: AtomicUsize,
    tickets: Mutex<BTreeSet<u64>>,
    done: Notify,
}

/// A SUBSCRIBE being applied (or a connection that may be about to send one); done when dropped.
#[derive(Debug)]
pub struct SubscribeTicket {
    order: Arc<SubscribeOrder>,
    ticket: u64,
}

impl SubscribeOrder {
    /// The longest a PUBLISH waits for earlier SUBSCRIBEs (a hook that stalls delays no publish more).
    pub const WAIT: Duration = Duration::from_millis(100);
    /// The longest a new connection's ticket waits for its first packet.
    pub const STARTUP_GRACE: Duration = Duration::from_millis(20);

    /// A SUBSCRIBE packet is being handled.
    pub fn begin(self: &Arc<Self>) -> SubscribeTicket {
        let mut tickets = self.lock();
        let ticket = self.next_ticket.fetch_add(1, Ordering::SeqCst);
        tickets.insert(ticket);
        self.applying.fetch_add(1, Ordering::SeqCst);
        SubscribeTicket { order: self.clone(), ticket }
    }

    /// Waits (at most `within`) until every SUBSCRIBE that began before now is done.
    pub async fn wait_for_earlier(&self, within: Duration) {
        if self.applying.load(Ordering::SeqCst) == 0 {
            return;
        }
        let now = self.next_ticket.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if self.lock().first().is_none_or(|oldest| *oldest >= now) {
                return;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                return;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        // A set of numbers: a panic elsewhere cannot leave it inconsistent.
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SubscribeTicket {
    fn drop(&mut self) {
        self.order.lock().remove(&self.ticket);
        self.order.applying.fetch_sub(1, Ordering::SeqCst);
        self.order.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_publish_waits_for_the_subscribes_read_before_it_and_no_others() {
        let order = Arc::new(SubscribeOrder::default());
        let earlier = order.begin();
        let waiting = {
            let order = order.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                order.wait_for_earlier(SubscribeOrder::WAIT).await;
                started.elapsed()
            })
        };
        tokio::task::yield_now().await;
        let later = order.begin();
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(earlier);
        let waited = waiting.await.unwrap();
        assert_eq!(waited, Duration::from_millis(10), "until the earlier one, not the later");
        drop(later);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded_and_free_when_nothing_is_applied() {
        let order = Arc::new(SubscribeOrder::default());
        let started = tokio::time::Instant::now();
        order.wait_for_earlier(SubscribeOrder::WAIT).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        let _stalled = order.begin();
        order.wait_for_earlier(SubscribeOrder::WAIT).await;
        assert_eq!(started.elapsed(), SubscribeOrder::WAIT);
    }
}
