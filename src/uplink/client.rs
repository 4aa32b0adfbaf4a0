//! The MQTT connection to the cloud broker: drives the connection to [`super::Endpoint`] in a task of
//! its own (rumqttc's options, persistent session, will, credentials and TLS, for MQTT 3.1.1 or 5, are
//! [`super::protocol`]'s), reporting what the uplink needs (connected, publish written with packet id N,
//! N acknowledged, N refused, connection lost) on a channel. Answers read just before a connection
//! failed are reported before its end. It reconnects with [`Backoff`], reset only once a connection stayed up. It never decides what
//! to send: the spool and the in-flight window do.
//!
//! What rumqttc does on its own, and why it is harmless here (read in rumqttc 0.24's `eventloop.rs` and
//! `state.rs`): on a connection error `EventLoop::clean` moves unacknowledged publishes and queued requests
//! into `pending` and sends them first on the next connection. This task drops the `EventLoop` after every
//! error and builds a fresh one (with a fresh request channel), so nothing rumqttc held survives a
//! reconnect; the uplink re-sends from its own window instead, so the spool stays the single source of
//! truth. `poll` is never cancelled while a connection is up (its flush is not cancel-safe), except at
//! stop, when the connection is dropped anyway.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

use super::protocol::{Client, ConnectOptions, Happened, Session};
use super::stats::{LinkState, UplinkStatsHandle};

/// What the connection task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK received; publish through this client until `Down`. With MQTT 5, the server's receive
    /// maximum, when it set one.
    Connected {
        client: Client,
        receive_maximum: Option<u16>,
    },
    /// The next queued publish was written, with this packet id (0 at QoS 0).
    Sent(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) for this packet id.
    Acked(u16),
    /// MQTT 5: the broker refused this packet id's publish (a reason code of 0x80 or above).
    Refused { pkid: u16, reason: String },
    /// The connection (or the attempt) failed; why, for the operator.
    Down(String),
}

/// Reconnect schedule of the connection task.
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    pub initial: Duration,
    pub max: Duration,
    /// A connection must stay up this long before the backoff starts over.
    pub stable_after: Duration,
}

/// The event about a publish that `happened` is, if it is one.
fn publish_event(happened: Happened) -> Option<LinkEvent> {
    match happened {
        Happened::Sent(pkid) => Some(LinkEvent::Sent(pkid)),
        Happened::Acked(pkid) => Some(LinkEvent::Acked(pkid)),
        Happened::Refused { pkid, reason } => Some(LinkEvent::Refused { pkid, reason }),
        _ => None,
    }
}

/// A CONNACK: counted (a reconnect after the first), the link up, logged.
fn mark_connected(stats: &UplinkStatsHandle, peer: &str) {
    {
        let mut c = stats.lock();
        if c.connects > 0 {
            c.reconnects += 1;
        }
        c.connects += 1;
        c.state = LinkState::Connected;
    }
    log::info!("uplink: connected to {peer}");
}

/// The link down for `reason`: its state and last error, logged as lost (it `was_up`) or as a failed
/// connect, with the `delay` before the next attempt.
fn mark_down(stats: &UplinkStatsHandle, reason: &str, was_up: bool, delay: Duration) {
    {
        let mut c = stats.lock();
        c.state = LinkState::Disconnected;
        c.last_error = Some(reason.to_string());
    }
    if was_up {
        log::warn!("uplink: connection lost: {reason}; retrying in {delay:?}");
    } else {
        log::error!("uplink: cannot connect: {reason}; retrying in {delay:?}");
    }
}

/// Drives connections until `stop`: one fresh rumqttc `EventLoop` per attempt.
pub async fn drive(
    options: ConnectOptions,
    reconnect: Reconnect,
    events: mpsc::Sender<LinkEvent>,
    stop: CancellationToken,
    stats: UplinkStatsHandle,
) {
    let peer = options.endpoint.peer();
    let capacity = options.client_inflight as usize + 8;
    let mut backoff = Backoff::new(reconnect.initial, reconnect.max);
    loop {
        let (client, mut session) = Session::new(&options, capacity);
        stats.lock().state = LinkState::Connecting;
        let mut up_since: Option<Instant> = None;
        let reason = loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => return,
                // The uplink is gone (dropped without a clean stop): drop the connection with it.
                _ = events.closed() => return,
                polled = session.poll(&peer) => polled,
            };
            let event = match polled {
                Ok(Happened::ConnAck { receive_maximum }) => {
                    up_since = Some(Instant::now());
                    mark_connected(&stats, &peer);
                    LinkEvent::Connected {
                        client: client.clone(),
                        receive_maximum,
                    }
                }
                Ok(Happened::AwaitAck(pkid)) => {
                    break format!("{peer}: packet id {pkid} still unacknowledged; reconnecting");
                }
                Ok(happened) => match publish_event(happened) {
                    Some(event) => event,
                    None => continue,
                },
                Err(reason) => {
                    // Answers read before the failure still count (a refusal, then the close).
                    for event in session.leftover().into_iter().filter_map(publish_event) {
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    break reason;
                }
            };
            if events.send(event).await.is_err() {
                return;
            }
        };
        drop(session);
        if up_since.is_some_and(|t| t.elapsed() >= reconnect.stable_after) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        mark_down(&stats, &reason, up_since.is_some(), delay);
        if events.send(LinkEvent::Down(reason)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = events.closed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}
