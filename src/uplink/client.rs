//! The MQTT connection to the cloud broker: parses `upstream.url` and drives the connection in a task of
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

use std::sync::Arc;
use std::time::Duration;

use rumqttc::tokio_rustls::rustls::ClientConfig;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

use super::protocol::{Client, Happened, Protocol, Session};
use super::stats::{LinkState, UplinkStatsHandle};

/// Where the cloud broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    /// Parses `mqtts://host[:port]` (default 8883) or `mqtt://host[:port]` (default 1883, only with
    /// `allow_plaintext`). IPv6 hosts go in brackets.
    pub fn parse(url: &str, allow_plaintext: bool) -> Result<Endpoint, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            if !allow_plaintext {
                return Err(format!(
                    "upstream.url {url:?}: mqtt:// sends readings and passwords in clear; use mqtts://, \
                     or set allow_plaintext = true"
                ));
            }
            (false, rest)
        } else {
            return Err(format!(
                "upstream.url {url:?}: must start with mqtts:// (or mqtt://)"
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "upstream.url {url:?}: only scheme, host and port are allowed"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("upstream.url {url:?}: unclosed ["))?;
            match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if after.is_empty() => (host, None),
                None => return Err(format!("upstream.url {url:?}: bad port")),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(format!("upstream.url {url:?}: no host"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("upstream.url {url:?}: bad port {p:?}"))?,
            None => default_port,
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
            tls,
        })
    }

    /// `host:port`, as errors name the peer.
    pub fn peer(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The connection options of one uplink.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub endpoint: Endpoint,
    pub tls: Option<Arc<ClientConfig>>,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    /// rumqttc's `inflight` (the packet-id cycle), from the window.
    pub client_inflight: u16,
    pub availability_topic: String,
    /// MQTT 3.1.1 or 5 ([`super::protocol`]).
    pub protocol: Protocol,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        let e = Endpoint::parse("mqtts://mqtt.example.com", false).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("mqtt.example.com", 8883, true)
        );
        let e = Endpoint::parse("mqtts://127.0.0.1:18883/", false).unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 18883));
        let e = Endpoint::parse("mqtt://[::1]:1884", true).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("::1", 1884, false));
        assert_eq!(e.peer(), "[::1]:1884");
    }

    #[test]
    fn plaintext_needs_consent_and_junk_is_refused() {
        let error = Endpoint::parse("mqtt://broker:1883", false).unwrap_err();
        assert!(error.contains("allow_plaintext"), "{error}");
        assert!(Endpoint::parse("http://broker", true).is_err());
        assert!(Endpoint::parse("mqtts://broker:0", true).is_err());
        assert!(Endpoint::parse("mqtts://broker:99999", true).is_err());
        assert!(Endpoint::parse("mqtts://user@broker", true).is_err());
        assert!(Endpoint::parse("mqtts://:8883", true).is_err());
    }
}
