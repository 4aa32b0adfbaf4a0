//! The MQTT connection to the cloud broker: parses `upstream.url`, builds rumqttc's options (persistent
//! session, will, credentials, TLS) and drives the connection in a task of its own, reporting what the
//! uplink needs (connected, publish written with packet id N, N acknowledged, connection lost) on a
//! channel. It reconnects with [`Backoff`], reset only once a connection stayed up. It never decides what
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
use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

use super::stats::{LinkState, UplinkStatsHandle};
use super::tls::describe_connection_error;

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
}

/// Maps 0/1/2 to rumqttc's QoS (anything above 2 is 2; the spool never stores more).
pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl ConnectOptions {
    /// rumqttc's options. Keep-alive below one second is raised to one (rumqttc panics below it).
    pub fn mqtt_options(&self) -> MqttOptions {
        let mut options =
            MqttOptions::new(&self.client_id, &self.endpoint.host, self.endpoint.port);
        let keep_alive = if self.keep_alive.is_zero() {
            Duration::ZERO
        } else {
            self.keep_alive.max(Duration::from_secs(1))
        };
        options
            .set_keep_alive(keep_alive)
            .set_clean_session(self.client_id.is_empty())
            .set_inflight(self.client_inflight.max(1))
            // The spool refuses bigger records; the broker may still refuse what it finds too big.
            .set_max_packet_size(1024 * 1024, super::spool::MAX_PAYLOAD_BYTES + 70_000)
            .set_last_will(LastWill::new(
                &self.availability_topic,
                crate::topic::gateway::OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        if let Some(config) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                config.clone(),
            )));
        }
        options
    }
}

/// What the connection task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK received; publish through this client until `Down`.
    Connected { client: AsyncClient },
    /// The next queued publish was written, with this packet id (0 at QoS 0).
    Sent(u16),
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) for this packet id.
    Acked(u16),
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

/// Drives connections until `stop`: one fresh rumqttc `EventLoop` per attempt.
pub async fn drive(
    options: ConnectOptions,
    reconnect: Reconnect,
    events: mpsc::Sender<LinkEvent>,
    stop: CancellationToken,
    stats: UplinkStatsHandle,
) {
    let mqtt_options = options.mqtt_options();
    let peer = options.endpoint.peer();
    let capacity = options.client_inflight as usize + 8;
    let mut backoff = Backoff::new(reconnect.initial, reconnect.max);
    loop {
        let (client, mut eventloop) = AsyncClient::new(mqtt_options.clone(), capacity);
        stats.lock().state = LinkState::Connecting;
        let mut up_since: Option<Instant> = None;
        let reason = loop {
            let polled = tokio::select! {
                _ = stop.cancelled() => return,
                // The uplink is gone (dropped without a clean stop): drop the connection with it.
                _ = events.closed() => return,
                polled = eventloop.poll() => polled,
            };
            let event = match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    up_since = Some(Instant::now());
                    {
                        let mut c = stats.lock();
                        if c.connects > 0 {
                            c.reconnects += 1;
                        }
                        c.connects += 1;
                        c.state = LinkState::Connected;
                    }
                    log::info!("uplink: connected to {peer}");
                    LinkEvent::Connected {
                        client: client.clone(),
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => LinkEvent::Sent(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => LinkEvent::Acked(ack.pkid),
                Ok(Event::Incoming(Packet::PubComp(comp))) => LinkEvent::Acked(comp.pkid),
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                    break format!("{peer}: packet id {pkid} still unacknowledged; reconnecting");
                }
                Ok(_) => continue,
                Err(error) => break describe_connection_error(&error, &peer),
            };
            if events.send(event).await.is_err() {
                return;
            }
        };
        drop(eventloop);
        if up_since.is_some_and(|t| t.elapsed() >= reconnect.stable_after) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        {
            let mut c = stats.lock();
            c.state = LinkState::Disconnected;
            c.last_error = Some(reason.clone());
        }
        if up_since.is_some() {
            log::warn!("uplink: connection lost: {reason}; retrying in {delay:?}");
        } else {
            log::error!("uplink: cannot connect: {reason}; retrying in {delay:?}");
        }
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
