//! MQTT 5 behaviours as the Eclipse Paho interoperability suite (`client_test5.py`) checks them, each with
//! raw packets against the embedded broker: server keep-alive, session expiry (also set to 0 by the
//! DISCONNECT), request/response properties, topic aliases both ways and undefined ones, shared
//! subscriptions (no retained messages for them), Message Expiry only where given, receive maximum, subscribe refusals with reason codes, the DISCONNECT reason code when
//! the broker ends a connection, and the client's Maximum Packet Size. `$`-topics and wildcards: tests/broker_retained.rs.

use sensorgate_testkit::broker as support;

use std::net::SocketAddr;
use std::time::Duration;

use sensorgate::broker::{Broker, BrokerSettings, TOPIC_ALIASES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const SUBACK: u8 = 9;
const DISCONNECT: u8 = 14;

const MESSAGE_EXPIRY: u8 = 0x02;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SESSION_EXPIRY: u8 = 0x11;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;

fn varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// MQTT 5 properties, as written.
#[derive(Default, Clone)]
struct Props(Vec<u8>);

impl Props {
    fn u16(mut self, id: u8, value: u16) -> Self {
        self.0.push(id);
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn u32(mut self, id: u8, value: u32) -> Self {
        self.0.push(id);
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn bytes(mut self, id: u8, value: &[u8]) -> Self {
        self.0.push(id);
        string(&mut self.0, value);
        self
    }
    fn encode(&self, out: &mut Vec<u8>) {
        varint(out, self.0.len());
        out.extend_from_slice(&self.0);
    }
}

/// Properties as read: (identifier, value bytes).
fn parse_props(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let id = bytes[at];
        at += 1;
        let len = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => bytes[at..].iter().position(|b| b & 0x80 == 0).unwrap() + 1,
            0x26 => {
                let k = u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize;
                let v = u16::from_be_bytes([bytes[at + 2 + k], bytes[at + 3 + k]]) as usize;
                4 + k + v
            }
            _ => 2 + u16::from_be_bytes([bytes[at], bytes[at + 1]]) as usize,
        };
        out.push((id, bytes[at..at + len].to_vec()));
        at += len;
    }
    out
}

fn read_varint(bytes: &[u8]) -> (usize, usize) {
    let mut n = 0usize;
    for (i, b) in bytes.iter().enumerate().take(4) {
        n |= ((b & 0x7F) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return (n, i + 1);
        }
    }
    panic!("bad variable byte integer");
}

struct Packet {
    kind: u8,
    flags: u8,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Pub {
    topic: String,
    qos: u8,
    packet_id: Option<u16>,
    props: Vec<(u8, Vec<u8>)>,
    payload: Vec<u8>,
}

impl Pub {
    fn prop(&self, id: u8) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| v.as_slice())
    }
}

struct Connack {
    code: u8,
    present: bool,
    props: Vec<(u8, Vec<u8>)>,
}

impl Connack {
    fn prop(&self, id: u8) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| v.as_slice())
    }
}

struct Client {
    stream: TcpStream,
}

impl Client {
    async fn connect(
        addr: SocketAddr,
        client_id: &str,
        clean: bool,
        keep_alive: u16,
        props: Props,
    ) -> (Client, Connack) {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let mut client = Client { stream };
        let mut body = Vec::new();
        string(&mut body, b"MQTT");
        body.push(5);
        body.push(if clean { 0x02 } else { 0 });
        body.extend_from_slice(&keep_alive.to_be_bytes());
        props.encode(&mut body);
        string(&mut body, client_id.as_bytes());
        client.send(0x10, &body).await;
        let packet = client.expect(CONNACK).await;
        let (len, used) = read_varint(&packet.body[2..]);
        let connack = Connack {
            present: packet.body[0] & 1 == 1,
            code: packet.body[1],
            props: parse_props(&packet.body[2 + used..2 + used + len]),
        };
        (client, connack)
    }

    async fn send(&mut self, first: u8, body: &[u8]) {
        let mut out = vec![first];
        varint(&mut out, body.len());
        out.extend_from_slice(body);
        self.stream.write_all(&out).await.unwrap();
    }

    async fn subscribe(&mut self, filters: &[(&str, u8)]) -> Vec<u8> {
        let mut body = vec![0, 1, 0];
        for (filter, qos) in filters {
            string(&mut body, filter.as_bytes());
            body.push(*qos);
        }
        self.send(0x82, &body).await;
        let suback = self.expect(SUBACK).await;
        let (len, used) = read_varint(&suback.body[2..]);
        suback.body[2 + used + len..].to_vec()
    }

    async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        packet_id: u16,
        props: Props,
    ) {
        let mut body = Vec::new();
        string(&mut body, topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&packet_id.to_be_bytes());
        }
        props.encode(&mut body);
        body.extend_from_slice(payload);
        self.send(0x30 | (qos << 1), &body).await;
    }

    async fn puback(&mut self, packet_id: u16) {
        self.send(PUBACK << 4, &packet_id.to_be_bytes()).await;
    }

    async fn disconnect(mut self, props: Props) {
        let mut body = vec![0];
        props.encode(&mut body);
        self.send(0xE0, &body).await;
        let _ = self.stream.shutdown().await;
    }

    /// One packet, or None when the connection closes or nothing comes within `within`.
    async fn read(&mut self, within: Duration) -> Option<Packet> {
        tokio::time::timeout(within, async {
            let first = self.stream.read_u8().await.ok()?;
            let mut len = 0usize;
            for shift in 0..4 {
                let byte = self.stream.read_u8().await.ok()?;
                len |= ((byte & 0x7F) as usize) << (7 * shift);
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(Packet {
                kind: first >> 4,
                flags: first & 0x0F,
                body,
            })
        })
        .await
        .ok()
        .flatten()
    }

    async fn expect(&mut self, kind: u8) -> Packet {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                Some(p) if p.kind == kind => return p,
                Some(_) => continue,
                None => panic!("no packet of type {kind} within 5 s"),
            }
        }
    }

    /// The next PUBLISH within `within` (other packets skipped), acknowledged when `ack`.
    async fn next_publish(&mut self, within: Duration, ack: bool) -> Option<Pub> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let packet = self.read(left).await?;
            if packet.kind != PUBLISH {
                continue;
            }
            let publish = decode_publish(&packet);
            if let (true, Some(id), 1) = (ack, publish.packet_id, publish.qos) {
                self.puback(id).await;
            }
            return Some(publish);
        }
    }

    /// The reason code of the DISCONNECT the broker sends within `within` (other packets skipped), or
    /// None when the connection closes without one or nothing comes.
    async fn disconnect_reason(&mut self, within: Duration) -> Option<u8> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let packet = self.read(left).await?;
            if packet.kind == DISCONNECT {
                return Some(packet.body.first().copied().unwrap_or(0));
            }
        }
    }
}

fn decode_publish(packet: &Packet) -> Pub {
    let qos = (packet.flags >> 1) & 3;
    let topic_len = u16::from_be_bytes([packet.body[0], packet.body[1]]) as usize;
    let topic = String::from_utf8(packet.body[2..2 + topic_len].to_vec()).unwrap();
    let mut at = 2 + topic_len;
    let packet_id = (qos > 0).then(|| {
        at += 2;
        u16::from_be_bytes([packet.body[at - 2], packet.body[at - 1]])
    });
    let (len, used) = read_varint(&packet.body[at..]);
    let props = parse_props(&packet.body[at + used..at + used + len]);
    Pub {
        topic,
        qos,
        packet_id,
        props,
        payload: packet.body[at + used + len..].to_vec(),
    }
}

async fn broker() -> (Broker, SocketAddr) {
    broker_with(support::local_settings()).await
}

async fn broker_with(settings: BrokerSettings) -> (Broker, SocketAddr) {
    let broker = Broker::start(&settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];
    (broker, addr)
}

const SHORT: Duration = Duration::from_millis(400);
const LONG: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_keep_alive_is_answered_with_the_servers() {
    let (_broker, addr) = broker().await;
    let (_client, connack) = Client::connect(addr, "ka-long", true, 120, Props::default()).await;
    assert_eq!(connack.code, 0);
    assert_eq!(
        connack.prop(SERVER_KEEP_ALIVE),
        Some(&60u16.to_be_bytes()[..])
    );
    let (_client, connack) = Client::connect(addr, "ka-short", true, 30, Props::default()).await;
    assert_eq!(
        connack.prop(SERVER_KEEP_ALIVE),
        Some(&30u16.to_be_bytes()[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_is_honoured_and_a_disconnect_can_end_it() {
    let (broker, addr) = broker().await;
    let one_second = || Props::default().u32(SESSION_EXPIRY, 1);
    // A DISCONNECT with Session Expiry Interval 0 ends the session at once.
    let (mut client, connack) = Client::connect(addr, "se", true, 60, one_second()).await;
    assert!(!connack.present);
    assert_eq!(client.subscribe(&[("se/t", 1)]).await, vec![1]);
    client
        .disconnect(Props::default().u32(SESSION_EXPIRY, 0))
        .await;
    // Its connection ends after the DISCONNECT: kept (the bug) it would stay among the sessions.
    let deadline = Instant::now() + Duration::from_secs(3);
    while broker.sessions() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (client, connack) = Client::connect(addr, "se", false, 60, one_second()).await;
    assert_eq!(connack.code, 0);
    assert!(
        !connack.present,
        "the DISCONNECT set the session expiry to 0"
    );
    client.disconnect(Props::default()).await;
    // A session kept for 1 s is present right after, and gone once the second passed.
    let (client, connack) = Client::connect(addr, "se", false, 60, one_second()).await;
    assert!(connack.present, "kept for its expiry interval");
    client.disconnect(Props::default()).await;
    // The absent session is counted until its second is over.
    let deadline = Instant::now() + Duration::from_secs(5);
    while broker.sessions() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(broker.sessions(), 0, "expired within 5 s");
    let (_client, connack) = Client::connect(addr, "se", false, 60, Props::default()).await;
    assert!(!connack.present, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_properties_pass_through() {
    let (_broker, addr) = broker().await;
    let (mut requester, _) = Client::connect(addr, "requester", true, 60, Props::default()).await;
    assert_eq!(requester.subscribe(&[("rr/response", 1)]).await, vec![1]);
    let (mut responder, _) = Client::connect(addr, "responder", true, 60, Props::default()).await;
    assert_eq!(responder.subscribe(&[("rr/request", 1)]).await, vec![1]);
    let request = Props::default()
        .bytes(RESPONSE_TOPIC, b"rr/response")
        .bytes(CORRELATION_DATA, b"334");
    requester
        .publish("rr/request", b"request", 1, 1, request)
        .await;
    let got = responder.next_publish(LONG, true).await.expect("request");
    assert_eq!(got.prop(RESPONSE_TOPIC), Some(&b"\x00\x0brr/response"[..]));
    assert_eq!(got.prop(CORRELATION_DATA), Some(&b"\x00\x03334"[..]));
    let response = Props::default().bytes(CORRELATION_DATA, b"334");
    responder
        .publish("rr/response", b"response", 1, 1, response)
        .await;
    let got = requester.next_publish(LONG, true).await.expect("response");
    assert_eq!(got.payload, b"response");
    assert_eq!(got.prop(CORRELATION_DATA), Some(&b"\x00\x03334"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_aliases_work_both_ways() {
    let (_broker, addr) = broker().await;
    let (mut subscriber, connack) = Client::connect(
        addr,
        "alias-sub",
        true,
        60,
        Props::default().u16(TOPIC_ALIAS_MAXIMUM, 1),
    )
    .await;
    assert_eq!(
        connack.prop(TOPIC_ALIAS_MAXIMUM),
        Some(&TOPIC_ALIASES.to_be_bytes()[..])
    );
    assert_eq!(subscriber.subscribe(&[("alias/t", 0)]).await, vec![0]);
    let (mut publisher, _) = Client::connect(addr, "alias-pub", true, 60, Props::default()).await;
    let alias = || Props::default().u16(TOPIC_ALIAS, 1);
    publisher.publish("alias/t", b"one", 0, 0, alias()).await;
    publisher.publish("", b"two", 0, 0, alias()).await;
    // The broker resolved the client's alias, and uses one of its own towards the subscriber.
    let first = subscriber.next_publish(LONG, true).await.expect("first");
    let second = subscriber.next_publish(LONG, true).await.expect("second");
    assert_eq!(
        (first.topic.as_str(), &first.payload[..]),
        ("alias/t", &b"one"[..])
    );
    let server_alias = first
        .prop(TOPIC_ALIAS)
        .expect("the broker sets an alias")
        .to_vec();
    assert_eq!(
        (second.topic.as_str(), &second.payload[..]),
        ("", &b"two"[..])
    );
    assert_eq!(second.prop(TOPIC_ALIAS), Some(&server_alias[..]));
    // A client that allows none gets none.
    let (mut plain, connack) =
        Client::connect(addr, "alias-none", true, 60, Props::default()).await;
    assert_eq!(connack.code, 0);
    assert_eq!(plain.subscribe(&[("alias/t", 0)]).await, vec![0]);
    publisher
        .publish("alias/t", b"three", 0, 0, Props::default())
        .await;
    publisher
        .publish("alias/t", b"four", 0, 0, Props::default())
        .await;
    for _ in 0..2 {
        let got = plain.next_publish(LONG, true).await.expect("message");
        assert_eq!(got.topic, "alias/t");
        assert_eq!(got.prop(TOPIC_ALIAS), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undefined_or_excessive_topic_alias_ends_the_connection() {
    let (_broker, addr) = broker().await;
    let (mut subscriber, _) = Client::connect(addr, "watch", true, 60, Props::default()).await;
    assert_eq!(subscriber.subscribe(&[("#", 1)]).await, vec![1]);
    let (mut client, _) = Client::connect(addr, "undefined", true, 60, Props::default()).await;
    client
        .publish("", b"where", 1, 1, Props::default().u16(TOPIC_ALIAS, 7))
        .await;
    assert_eq!(
        client.disconnect_reason(LONG).await,
        Some(0x82),
        "an unknown alias is a protocol error"
    );
    let (mut client, _) = Client::connect(addr, "excessive", true, 60, Props::default()).await;
    client
        .publish(
            "alias/x",
            b"far",
            1,
            1,
            Props::default().u16(TOPIC_ALIAS, TOPIC_ALIASES + 1),
        )
        .await;
    assert_eq!(
        client.disconnect_reason(LONG).await,
        Some(0x94),
        "an alias beyond the maximum is Topic Alias invalid"
    );
    assert!(
        subscriber.next_publish(SHORT, true).await.is_none(),
        "nothing delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_broker_ends_gets_a_disconnect_saying_why() {
    let (_broker, addr) = broker().await;
    // Topic alias 0 cannot be decoded (the property is 1 to Topic Alias Maximum): DISCONNECT 0x81
    // (Malformed Packet), sent before the socket closes.
    let (mut client, _) = Client::connect(addr, "alias-zero", true, 60, Props::default()).await;
    client
        .publish(
            "alias/z",
            b"zero",
            1,
            1,
            Props::default().u16(TOPIC_ALIAS, 0),
        )
        .await;
    assert_eq!(client.disconnect_reason(LONG).await, Some(0x81));

    // More unacknowledged QoS 2 PUBLISHes than the broker's Receive Maximum: DISCONNECT 0x93.
    let (mut client, connack) = Client::connect(addr, "flood", true, 60, Props::default()).await;
    let receive_maximum = connack
        .prop(RECEIVE_MAXIMUM)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .expect("the broker announces its Receive Maximum");
    for id in 1..=receive_maximum + 1 {
        client
            .publish("flood/t", b"m", 2, id, Props::default())
            .await;
    }
    assert_eq!(client.disconnect_reason(LONG).await, Some(0x93));

    // The same client comes straight back (its old session, still saying goodbye, is taken over).
    let started = Instant::now();
    let (_again, connack) = Client::connect(addr, "flood", true, 60, Props::default()).await;
    assert_eq!(connack.code, 0, "reconnect accepted");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reconnect answered in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_expiry_interval_is_sent_only_when_the_publisher_gave_one() {
    let (_broker, addr) = broker().await;
    let (mut subscriber, _) = Client::connect(addr, "expiry-sub", true, 60, Props::default()).await;
    assert_eq!(subscriber.subscribe(&[("expiry/t", 1)]).await, vec![1]);
    let (mut publisher, _) = Client::connect(addr, "expiry-pub", true, 60, Props::default()).await;
    publisher
        .publish("expiry/t", b"plain", 1, 1, Props::default())
        .await;
    publisher
        .publish(
            "expiry/t",
            b"expiring",
            1,
            2,
            Props::default().u32(MESSAGE_EXPIRY, 100),
        )
        .await;
    let plain = subscriber.next_publish(LONG, true).await.expect("plain");
    assert_eq!(plain.payload, b"plain");
    assert_eq!(
        plain.prop(MESSAGE_EXPIRY),
        None,
        "no expiry it was not given"
    );
    let expiring = subscriber.next_publish(LONG, true).await.expect("expiring");
    let left = expiring
        .prop(MESSAGE_EXPIRY)
        .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        .expect("the time left");
    assert!((90..=100).contains(&left), "{left} s left of 100");
}

/// The store keeps a retained message as its topic, payload, QoS and sender, with MQTT 5 properties
/// only when there are any: a late subscriber still gets each property its publisher gave (response
/// topic, correlation data, content type, user property, the time left of its expiry) and none it did
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_keeps_its_properties_for_a_late_subscriber() {
    const CONTENT_TYPE: u8 = 0x03;
    const USER_PROPERTY: u8 = 0x26;
    let (_broker, addr) = broker().await;
    let (mut publisher, _) = Client::connect(addr, "props-pub", true, 60, Props::default()).await;
    let mut user_property = Props::default().bytes(USER_PROPERTY, b"unit");
    string(&mut user_property.0, b"celsius");
    let mut rich = user_property
        .bytes(RESPONSE_TOPIC, b"answers/here")
        .bytes(CORRELATION_DATA, b"\x00\x01req")
        .bytes(CONTENT_TYPE, b"text/plain")
        .u32(MESSAGE_EXPIRY, 100);
    rich.0.push(0x01); // Payload Format Indicator: UTF-8
    rich.0.push(1);
    let mut body = Vec::new();
    string(&mut body, b"props/rich");
    body.extend_from_slice(&1u16.to_be_bytes());
    rich.encode(&mut body);
    body.extend_from_slice(b"21.5");
    publisher.send(0x33, &body).await; // PUBLISH, QoS 1, retain
    publisher.expect(PUBACK).await;
    let mut body = Vec::new();
    string(&mut body, b"props/plain");
    body.extend_from_slice(&2u16.to_be_bytes());
    Props::default().encode(&mut body);
    body.extend_from_slice(b"48");
    publisher.send(0x33, &body).await;
    publisher.expect(PUBACK).await;

    let (mut late, _) = Client::connect(addr, "props-late", true, 60, Props::default()).await;
    assert_eq!(late.subscribe(&[("props/#", 1)]).await, vec![1]);
    let plain = late.next_publish(LONG, true).await.expect("props/plain");
    assert_eq!(
        (plain.topic.as_str(), plain.payload.as_slice()),
        ("props/plain", &b"48"[..])
    );
    assert_eq!(plain.props, Vec::new(), "no property it was not given");
    let rich = late.next_publish(LONG, true).await.expect("props/rich");
    assert_eq!(
        (rich.topic.as_str(), rich.payload.as_slice()),
        ("props/rich", &b"21.5"[..])
    );
    assert_eq!(rich.qos, 1);
    assert_eq!(
        rich.prop(RESPONSE_TOPIC),
        Some(&b"\x00\x0canswers/here"[..])
    );
    assert_eq!(
        rich.prop(CORRELATION_DATA),
        Some(&b"\x00\x05\x00\x01req"[..])
    );
    assert_eq!(rich.prop(CONTENT_TYPE), Some(&b"\x00\x0atext/plain"[..]));
    assert_eq!(
        rich.prop(0x01),
        Some(&[1u8][..]),
        "the payload format indicator"
    );
    assert_eq!(
        rich.prop(USER_PROPERTY),
        Some(&b"\x00\x04unit\x00\x07celsius"[..])
    );
    let left = rich
        .prop(MESSAGE_EXPIRY)
        .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        .expect("the time left");
    assert!((90..=100).contains(&left), "{left} s left of 100");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_gets_no_retained_messages() {
    let (_broker, addr) = broker().await;
    let (mut publisher, _) = Client::connect(addr, "retain-pub", true, 60, Props::default()).await;
    let mut body = Vec::new();
    string(&mut body, b"shared/r");
    body.extend_from_slice(&1u16.to_be_bytes());
    Props::default().encode(&mut body);
    body.extend_from_slice(b"last");
    publisher.send(0x33, &body).await; // PUBLISH, QoS 1, retain
    publisher.expect(PUBACK).await;
    // A plain subscription gets the retained message (the control) ...
    let (mut plain, _) = Client::connect(addr, "plain", true, 60, Props::default()).await;
    assert_eq!(plain.subscribe(&[("shared/r", 1)]).await, vec![1]);
    let got = plain
        .next_publish(LONG, true)
        .await
        .expect("the retained one");
    assert_eq!(got.payload, b"last");
    // ... a shared one does not (MQTT 5, 4.8.2), but gets what is published next.
    let (mut member, _) = Client::connect(addr, "member", true, 60, Props::default()).await;
    assert_eq!(member.subscribe(&[("$share/g/shared/r", 1)]).await, vec![1]);
    assert!(
        member.next_publish(SHORT, true).await.is_none(),
        "no retained message for a shared subscription"
    );
    publisher
        .publish("shared/r", b"live", 1, 2, Props::default())
        .await;
    let live = member.next_publish(LONG, true).await.expect("a live one");
    assert_eq!(live.payload, b"live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_delivers_each_message_once_in_turn() {
    let (_broker, addr) = broker().await;
    let mut members = Vec::new();
    for name in ["member-a", "member-b"] {
        let (mut member, connack) = Client::connect(addr, name, true, 60, Props::default()).await;
        assert_eq!(connack.code, 0);
        assert_eq!(member.subscribe(&[("$share/g/shared/t", 1)]).await, vec![1]);
        members.push(member);
    }
    let (mut publisher, _) = Client::connect(addr, "shared-pub", true, 60, Props::default()).await;
    for i in 0..10u16 {
        publisher
            .publish(
                "shared/t",
                format!("{i}").as_bytes(),
                1,
                i + 1,
                Props::default(),
            )
            .await;
    }
    let mut counts = Vec::new();
    for member in &mut members {
        let mut n = 0;
        while member.next_publish(SHORT, true).await.is_some() {
            n += 1;
        }
        counts.push(n);
    }
    assert_eq!(counts.iter().sum::<usize>(), 10, "{counts:?}");
    assert!(counts.iter().all(|&n| n >= 3), "taken in turn: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receive_maximum_of_a_client_is_honoured() {
    let (_broker, addr) = broker().await;
    let (mut receiver, _) = Client::connect(
        addr,
        "rm-sub",
        true,
        60,
        Props::default().u16(RECEIVE_MAXIMUM, 2),
    )
    .await;
    assert_eq!(receiver.subscribe(&[("rm/t", 1)]).await, vec![1]);
    let (mut publisher, _) = Client::connect(addr, "rm-pub", true, 60, Props::default()).await;
    for i in 1..=3u16 {
        publisher
            .publish("rm/t", b"m", 1, i, Props::default())
            .await;
    }
    let first = receiver.next_publish(LONG, false).await.expect("first");
    let _second = receiver.next_publish(LONG, false).await.expect("second");
    assert!(
        receiver.next_publish(SHORT, false).await.is_none(),
        "a third while two are unacknowledged"
    );
    receiver.puback(first.packet_id.unwrap()).await;
    assert!(
        receiver.next_publish(LONG, false).await.is_some(),
        "the third after an ack"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscriptions_carry_their_reason_codes() {
    let (_broker, addr) = broker_with(BrokerSettings {
        anonymous_read: vec!["allowed/#".into()],
        ..support::local_settings()
    })
    .await;
    let (mut client, _) = Client::connect(addr, "refused", true, 60, Props::default()).await;
    let deep = vec!["d"; 200].join("/");
    let codes = client
        .subscribe(&[
            ("allowed/x", 1),
            ("test/nosubscribe", 1),
            (deep.as_str(), 0),
            ("a/#/b", 0),
        ])
        .await;
    assert_eq!(codes, vec![0x01, 0x87, 0x8F, 0x8F]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_maximum_packet_size_is_honoured() {
    let (_broker, addr) = broker().await;
    let (mut client, connack) = Client::connect(
        addr,
        "small",
        true,
        60,
        Props::default().u32(MAXIMUM_PACKET_SIZE, 64),
    )
    .await;
    assert_eq!(connack.code, 0);
    assert_eq!(client.subscribe(&[("mps/t", 1)]).await, vec![1]);
    let (mut publisher, _) = Client::connect(addr, "mps-pub", true, 60, Props::default()).await;
    publisher
        .publish("mps/t", &[b'x'; 100], 1, 1, Props::default())
        .await;
    publisher
        .publish("mps/t", b"fits", 1, 2, Props::default())
        .await;
    let got = client
        .next_publish(LONG, true)
        .await
        .expect("the small one");
    assert_eq!(got.payload, b"fits", "the large one is not sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_announcing_a_tiny_maximum_packet_size_is_accepted() {
    let (_broker, addr) = broker().await;
    let (_client, connack) = Client::connect(
        addr,
        "tiny",
        true,
        60,
        Props::default().u32(MAXIMUM_PACKET_SIZE, 20),
    )
    .await;
    assert_eq!(connack.code, 0);
}

/// No Local (MQTT 5, 3.8.3.1) holds for every publish on a topic, the first and those after it (the
/// broker remembers a topic's routes; an answer that depends on the publisher is never remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_holds_for_every_publish_on_a_topic() {
    const NO_LOCAL: u8 = 0x04;
    let (_broker, addr) = broker().await;
    let (mut own, _) = Client::connect(addr, "nl-own", true, 60, Props::default()).await;
    assert_eq!(own.subscribe(&[("nl/t", NO_LOCAL)]).await, vec![0]);
    let (mut other, _) = Client::connect(addr, "nl-other", true, 60, Props::default()).await;
    assert_eq!(other.subscribe(&[("nl/t", 0)]).await, vec![0]);
    for payload in [b"own-1", b"own-2"] {
        own.publish("nl/t", payload, 0, 0, Props::default()).await;
        let got = other
            .next_publish(LONG, true)
            .await
            .expect("the other subscriber");
        assert_eq!(got.payload, payload);
    }
    other
        .publish("nl/t", b"from-other", 0, 0, Props::default())
        .await;
    // Anything routed to `own` before this would have come first (one session's deliveries keep
    // their order).
    let got = own
        .next_publish(LONG, true)
        .await
        .expect("the other's publish");
    assert_eq!(
        got.payload, b"from-other",
        "its own publishes are not sent back"
    );
}
