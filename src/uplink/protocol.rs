//! The MQTT version the uplink speaks (`[upstream] protocol`): 3.1.1 (the default) or 5. Only this file
//! names the two rumqttc flavours: it builds each one's options from [`ConnectOptions`], and turns each
//! one's events into the few the connection task reports ([`Happened`]), so that the task, the window
//! and the spool are the same for both. What MQTT 5 adds here is an answer to a refused publish: a
//! PUBACK (or PUBREC) with a reason code of 0x80 or above (0x87 "not authorized" for a topic outside
//! the device's policy) names the message, which is then set aside at once instead of being guessed
//! from disconnects; and the server's receive maximum, which bounds the packet-id cycle.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::tokio_rustls::rustls::ClientConfig;
use rumqttc::v5::mqttbytes::v5::PubRecReason;
use rumqttc::v5::mqttbytes::v5::{LastWill as LastWill5, Packet as Packet5, PubAckReason};
use rumqttc::{Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};

use super::endpoint::Endpoint;
use super::tls::{describe_connection_error, describe_connection_error_v5};

/// `[upstream] protocol`: `"mqtt311"` or `"mqtt5"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MQTT 3.1.1: a refused publish can only be guessed from the broker closing the connection.
    #[default]
    Mqtt311,
    /// MQTT 5: the broker says which publish it refused, and why.
    Mqtt5,
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
    /// MQTT 3.1.1 or 5.
    pub protocol: Protocol,
}

/// Maps 0/1/2 to rumqttc's QoS (anything above 2 is 2; the spool never stores more).
pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn qos5(level: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as Q;
    match level {
        0 => Q::AtMostOnce,
        1 => Q::AtLeastOnce,
        _ => Q::ExactlyOnce,
    }
}

/// A handle to publish on the current connection, of either version.
#[derive(Debug, Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The request could not be queued (the connection is going down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotQueued;

impl Client {
    pub fn try_publish(
        &self,
        topic: impl Into<String>,
        level: u8,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), NotQueued> {
        let payload: Vec<u8> = payload.into();
        match self {
            Client::V311(client) => client
                .try_publish(topic, qos(level), retain, payload)
                .map_err(|_| NotQueued),
            Client::V5(client) => client
                .try_publish(topic, qos5(level), retain, payload)
                .map_err(|_| NotQueued),
        }
    }

    pub fn try_disconnect(&self) -> Result<(), NotQueued> {
        match self {
            Client::V311(client) => client.try_disconnect().map_err(|_| NotQueued),
            Client::V5(client) => client.try_disconnect().map_err(|_| NotQueued),
        }
    }
}

/// What the connection task needs to know of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Happened {
    /// CONNACK; with MQTT 5, the server's receive maximum when it set one.
    ConnAck { receive_maximum: Option<u16> },
    /// The next queued publish was written with this packet id (0 at QoS 0).
    Sent(u16),
    /// Acknowledged (PUBACK at QoS 1, PUBCOMP at QoS 2).
    Acked(u16),
    /// Refused with a reason code (MQTT 5 only): `reason` for the operator.
    Refused { pkid: u16, reason: String },
    /// A publish still unacknowledged when rumqttc needed its id or a ping went unanswered.
    AwaitAck(u16),
    /// Nothing the uplink acts on.
    Other,
}

/// One connection attempt's event loop, of either version.
pub enum Session {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Session {
    /// A fresh client and event loop (nothing connects before the first poll).
    pub fn new(options: &ConnectOptions, capacity: usize) -> (Client, Session) {
        match options.protocol {
            Protocol::Mqtt311 => {
                let (client, eventloop) = rumqttc::AsyncClient::new(options_311(options), capacity);
                (Client::V311(client), Session::V311(Box::new(eventloop)))
            }
            Protocol::Mqtt5 => {
                let (client, eventloop) =
                    rumqttc::v5::AsyncClient::new(options_5(options), capacity);
                (Client::V5(client), Session::V5(Box::new(eventloop)))
            }
        }
    }

    /// The next event, or why the connection (or the attempt) ended, for the operator.
    pub async fn poll(&mut self, peer: &str) -> Result<Happened, String> {
        match self {
            Session::V311(eventloop) => match eventloop.poll().await {
                Ok(event) => Ok(happened_311(event)),
                Err(error) => Err(describe_connection_error(&error, peer)),
            },
            Session::V5(eventloop) => match eventloop.poll().await {
                Ok(event) => Ok(happened_5(event)),
                Err(error) => Err(describe_connection_error_v5(&error, peer)),
            },
        }
    }
}

impl Session {
    /// What rumqttc had read and not handed out yet when the connection failed: a broker that answers
    /// a publish and closes the connection at once (mosquitto 2.0.11 refusing an MQTT 5 publish does)
    /// leaves that answer here.
    pub fn leftover(&mut self) -> Vec<Happened> {
        match self {
            Session::V311(eventloop) => {
                eventloop.state.events.drain(..).map(happened_311).collect()
            }
            Session::V5(eventloop) => eventloop.state.events.drain(..).map(happened_5).collect(),
        }
    }
}

fn happened_outgoing(outgoing: Outgoing) -> Happened {
    match outgoing {
        Outgoing::Publish(pkid) => Happened::Sent(pkid),
        Outgoing::AwaitAck(pkid) => Happened::AwaitAck(pkid),
        _ => Happened::Other,
    }
}

fn happened_311(event: Event) -> Happened {
    match event {
        Event::Incoming(Packet::ConnAck(_)) => Happened::ConnAck {
            receive_maximum: None,
        },
        Event::Incoming(Packet::PubAck(ack)) => Happened::Acked(ack.pkid),
        Event::Incoming(Packet::PubComp(comp)) => Happened::Acked(comp.pkid),
        Event::Incoming(_) => Happened::Other,
        Event::Outgoing(outgoing) => happened_outgoing(outgoing),
    }
}

fn happened_5(event: rumqttc::v5::Event) -> Happened {
    use rumqttc::v5::Event as E;
    match event {
        E::Incoming(Packet5::ConnAck(connack)) => Happened::ConnAck {
            receive_maximum: connack.properties.and_then(|p| p.receive_max),
        },
        E::Incoming(Packet5::PubAck(ack)) => match ack.reason {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                Happened::Acked(ack.pkid)
            }
            reason => Happened::Refused {
                pkid: ack.pkid,
                reason: describe_refusal(
                    &format!("PUBACK {reason:?}"),
                    ack.properties.and_then(|p| p.reason_string),
                ),
            },
        },
        E::Incoming(Packet5::PubRec(rec)) => match rec.reason {
            PubRecReason::Success | PubRecReason::NoMatchingSubscribers => Happened::Other,
            reason => Happened::Refused {
                pkid: rec.pkid,
                reason: describe_refusal(
                    &format!("PUBREC {reason:?}"),
                    rec.properties.and_then(|p| p.reason_string),
                ),
            },
        },
        E::Incoming(Packet5::PubComp(comp)) => Happened::Acked(comp.pkid),
        E::Incoming(_) => Happened::Other,
        E::Outgoing(outgoing) => happened_outgoing(outgoing),
    }
}

fn describe_refusal(code: &str, reason_string: Option<String>) -> String {
    match reason_string {
        Some(text) => format!("{code}: {}", text.escape_debug()),
        None => code.to_string(),
    }
}

/// Keep-alive below one second is raised to one (rumqttc panics below it); 0 disables.
fn keep_alive(options: &ConnectOptions) -> Duration {
    if options.keep_alive.is_zero() {
        Duration::ZERO
    } else {
        options.keep_alive.max(Duration::from_secs(1))
    }
}

fn transport(tls: &Option<std::sync::Arc<ClientConfig>>) -> Option<Transport> {
    tls.as_ref()
        .map(|config| Transport::tls_with_config(TlsConfiguration::Rustls(config.clone())))
}

/// The spool refuses bigger records; the broker may still refuse what it finds too big.
const MAX_OUTGOING_PACKET: usize = super::spool::MAX_PAYLOAD_BYTES + 70_000;
const MAX_INCOMING_PACKET: usize = 1024 * 1024;

fn options_311(o: &ConnectOptions) -> MqttOptions {
    let mut options = MqttOptions::new(&o.client_id, &o.endpoint.host, o.endpoint.port);
    options
        .set_keep_alive(keep_alive(o))
        .set_clean_session(o.client_id.is_empty())
        .set_inflight(o.client_inflight.max(1))
        .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
        .set_last_will(LastWill::new(
            &o.availability_topic,
            crate::topic::gateway::OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = &o.credentials {
        options.set_credentials(user, password);
    }
    if let Some(transport) = transport(&o.tls) {
        options.set_transport(transport);
    }
    options
}

fn options_5(o: &ConnectOptions) -> rumqttc::v5::MqttOptions {
    let mut options =
        rumqttc::v5::MqttOptions::new(&o.client_id, &o.endpoint.host, o.endpoint.port);
    options
        .set_keep_alive(keep_alive(o))
        .set_clean_start(o.client_id.is_empty())
        // The session outlives a disconnect, as the 3.1.1 one does.
        .set_session_expiry_interval(Some(u32::MAX))
        .set_outgoing_inflight_upper_limit(o.client_inflight.max(1))
        .set_max_packet_size(Some(MAX_INCOMING_PACKET as u32))
        .set_last_will(LastWill5::new(
            &o.availability_topic,
            crate::topic::gateway::OFFLINE,
            qos5(1),
            true,
            None,
        ));
    if let Some((user, password)) = &o.credentials {
        options.set_credentials(user, password);
    }
    if let Some(transport) = transport(&o.tls) {
        options.set_transport(transport);
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckProperties};

    #[test]
    fn an_mqtt5_puback_with_a_failure_code_is_a_refusal_naming_it() {
        let refused = happened_5(rumqttc::v5::Event::Incoming(Packet5::PubAck(PubAck {
            pkid: 7,
            reason: PubAckReason::NotAuthorized,
            properties: Some(PubAckProperties {
                reason_string: Some("policy".into()),
                user_properties: vec![],
            }),
        })));
        assert_eq!(
            refused,
            Happened::Refused {
                pkid: 7,
                reason: "PUBACK NotAuthorized: policy".into()
            }
        );
        let ok = happened_5(rumqttc::v5::Event::Incoming(Packet5::PubAck(PubAck::new(
            8, None,
        ))));
        assert_eq!(ok, Happened::Acked(8));
    }
}
