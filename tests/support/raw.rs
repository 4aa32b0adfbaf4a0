//! Test helper: a byte-level MQTT 3.1.1 / 5.0 client over TCP on 127.0.0.1, for what a library client
//! hides: CONNACK codes, v5 reason codes, a QoS 2 PUBLISH re-sent with DUP after a reconnect, dropping the
//! socket without DISCONNECT. Every read is bounded in time.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Packet types (high nibble of the first byte).
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBREL: u8 = 6;
pub const PUBCOMP: u8 = 7;
pub const SUBACK: u8 = 9;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// A will in a CONNECT.
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT options.
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub v5: bool,
    pub clean: bool,
    pub keep_alive: u16,
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    pub will: Option<Will<'a>>,
}

impl<'a> Connect<'a> {
    pub fn new(client_id: &'a str) -> Self {
        Connect {
            client_id,
            v5: false,
            clean: true,
            keep_alive: 60,
            user: None,
            password: None,
            will: None,
        }
    }
}

/// One received packet.
#[derive(Debug, Clone)]
pub struct RawPacket {
    pub kind: u8,
    pub flags: u8,
    pub body: Vec<u8>,
}

/// A received PUBLISH, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPublish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub packet_id: Option<u16>,
}

pub struct RawClient {
    pub stream: TcpStream,
    pub v5: bool,
}

/// Appends `s` with its two-byte length, as MQTT strings and binary data are written.
pub fn push_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn push_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// One packet: the first byte, the remaining length, the body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    push_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// The CONNECT packet for `options` (a 5.0 one without clean start asks for a 1 h session).
pub fn connect_packet(options: &Connect<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    push_str(&mut body, b"MQTT");
    body.push(if options.v5 { 5 } else { 4 });
    let mut flags = 0u8;
    if options.clean {
        flags |= 0x02;
    }
    if let Some(will) = &options.will {
        flags |= 0x04 | (will.qos << 3);
        if will.retain {
            flags |= 0x20;
        }
    }
    if options.user.is_some() {
        flags |= 0x80;
    }
    if options.password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&options.keep_alive.to_be_bytes());
    if options.v5 {
        if options.clean {
            body.push(0);
        } else {
            // Session Expiry Interval = 1 h so the session outlives the connection.
            body.extend_from_slice(&[5, 0x11, 0, 0, 0x0e, 0x10]);
        }
    }
    push_str(&mut body, options.client_id.as_bytes());
    if let Some(will) = &options.will {
        if options.v5 {
            body.push(0);
        }
        push_str(&mut body, will.topic.as_bytes());
        push_str(&mut body, will.payload);
    }
    if let Some(user) = options.user {
        push_str(&mut body, user.as_bytes());
    }
    if let Some(password) = options.password {
        push_str(&mut body, password.as_bytes());
    }
    frame(0x10, &body)
}

impl RawClient {
    /// Connects and returns the client with the CONNACK return/reason code and session-present flag.
    pub async fn connect(addr: SocketAddr, options: &Connect<'_>) -> (RawClient, u8, bool) {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("TCP connect within 5 s")
            .expect("TCP connect");
        let mut client = RawClient {
            stream,
            v5: options.v5,
        };
        client.send(&connect_packet(options)).await;
        let connack = client.expect(CONNACK).await;
        let session_present = connack.body.first().is_some_and(|b| b & 1 == 1);
        let code = connack.body.get(1).copied().unwrap_or(0xFF);
        (client, code, session_present)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to broker");
    }

    /// Sends a PUBLISH.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        packet_id: u16,
        dup: bool,
    ) {
        let packet = self.publish_packet(topic, payload, qos, retain, packet_id, dup);
        self.send(&packet).await;
    }

    /// A PUBLISH's bytes, for the caller to write (with others in one write, say).
    pub fn publish_packet(
        &self,
        topic: &str,
        payload: &[u8],
        qos: u8,
        retain: bool,
        packet_id: u16,
        dup: bool,
    ) -> Vec<u8> {
        let mut first = 0x30 | (qos << 1);
        if retain {
            first |= 0x01;
        }
        if dup {
            first |= 0x08;
        }
        let mut body = Vec::new();
        push_str(&mut body, topic.as_bytes());
        if qos > 0 {
            body.extend_from_slice(&packet_id.to_be_bytes());
        }
        if self.v5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        frame(first, &body)
    }

    pub async fn pubrel(&mut self, packet_id: u16) {
        let id = packet_id.to_be_bytes();
        self.send(&frame(0x62, &id)).await;
    }

    pub async fn ack(&mut self, kind: u8, packet_id: u16) {
        let id = packet_id.to_be_bytes();
        let first = if kind == PUBREL { 0x62 } else { kind << 4 };
        self.send(&frame(first, &id)).await;
    }

    /// The SUBSCRIBE packet of one filter (no properties on 5.0).
    pub fn subscribe_packet(&self, filter: &str, qos: u8, packet_id: u16) -> Vec<u8> {
        let mut body = packet_id.to_be_bytes().to_vec();
        if self.v5 {
            body.push(0);
        }
        push_str(&mut body, filter.as_bytes());
        body.push(qos);
        frame(0x82, &body)
    }

    /// Subscribes and returns the SUBACK return codes.
    pub async fn subscribe(&mut self, filter: &str, qos: u8, packet_id: u16) -> Vec<u8> {
        self.send(&self.subscribe_packet(filter, qos, packet_id))
            .await;
        let suback = self.expect(SUBACK).await;
        let skip = if self.v5 {
            2 + 1 + suback.body.get(2).copied().unwrap_or(0) as usize
        } else {
            2
        };
        suback.body[skip..].to_vec()
    }

    pub async fn disconnect(mut self) {
        let body: &[u8] = if self.v5 { &[0] } else { &[] };
        self.send(&frame(0xE0, body)).await;
        let _ = self.stream.shutdown().await;
    }

    /// Reads one packet, or None when the socket closes or nothing arrives within `within`.
    pub async fn read_within(&mut self, within: Duration) -> Option<RawPacket> {
        tokio::time::timeout(within, self.read_packet())
            .await
            .ok()
            .flatten()
    }

    async fn read_packet(&mut self) -> Option<RawPacket> {
        read_packet(&mut self.stream).await
    }

    /// Reads packets until one of `kind` arrives (bounded); panics otherwise.
    pub async fn expect(&mut self, kind: u8) -> RawPacket {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_within(left).await {
                Some(p) if p.kind == kind => return p,
                Some(_) => continue,
                None => panic!("expected packet type {kind} within {READ_TIMEOUT:?}"),
            }
        }
    }

    /// Decodes a PUBLISH packet.
    pub fn decode_publish(&self, packet: &RawPacket) -> RawPublish {
        let qos = (packet.flags >> 1) & 0x03;
        let topic_len = u16::from_be_bytes([packet.body[0], packet.body[1]]) as usize;
        let topic = String::from_utf8_lossy(&packet.body[2..2 + topic_len]).into_owned();
        let mut at = 2 + topic_len;
        let packet_id = if qos > 0 {
            let id = u16::from_be_bytes([packet.body[at], packet.body[at + 1]]);
            at += 2;
            Some(id)
        } else {
            None
        };
        if self.v5 {
            // Property length is a variable byte integer; small in these tests.
            let props = packet.body[at] as usize;
            at += 1 + props;
        }
        RawPublish {
            topic,
            payload: packet.body[at..].to_vec(),
            qos,
            retain: packet.flags & 0x01 == 1,
            dup: packet.flags & 0x08 == 0x08,
            packet_id,
        }
    }

    /// The TCP segments with data this client's socket has received so far (`tcpi_data_segs_in` of
    /// `TCP_INFO`): over 127.0.0.1 with `TCP_NODELAY`, one per write system call of the broker.
    pub fn data_segments_received(&self) -> u32 {
        use std::os::fd::AsRawFd;
        // SAFETY: tcp_info is plain data (all zeros is a valid value); getsockopt writes at most `len`
        // bytes into it and the descriptor is this client's open socket.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let read = unsafe {
            libc::getsockopt(
                self.stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(read, 0, "TCP_INFO of a connected socket");
        info.tcpi_data_segs_in
    }

    /// Collects the PUBLISHes arriving within `within`, acknowledging QoS 1 and 2 as a client must.
    pub async fn collect_publishes(&mut self, within: Duration) -> Vec<RawPublish> {
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return got;
            }
            let Some(packet) = self.read_within(left).await else {
                return got;
            };
            match packet.kind {
                PUBLISH => {
                    let publish = self.decode_publish(&packet);
                    match (publish.qos, publish.packet_id) {
                        (1, Some(id)) => self.ack(PUBACK, id).await,
                        (2, Some(id)) => self.ack(PUBREC, id).await,
                        _ => {}
                    }
                    got.push(publish);
                }
                PUBREL => {
                    let id = u16::from_be_bytes([packet.body[0], packet.body[1]]);
                    self.ack(PUBCOMP, id).await;
                }
                _ => {}
            }
        }
    }
}

/// Reads one whole packet from `stream` (unbounded: wrap it in a timeout), or None when it closes.
pub async fn read_packet(stream: &mut TcpStream) -> Option<RawPacket> {
    let first = stream.read_u8().await.ok()?;
    let mut len = 0usize;
    let mut shift = 0;
    for _ in 0..4 {
        let byte = stream.read_u8().await.ok()?;
        len |= ((byte & 0x7F) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(RawPacket {
        kind: first >> 4,
        flags: first & 0x0F,
        body,
    })
}
