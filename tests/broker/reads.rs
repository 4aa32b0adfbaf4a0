//! How the broker reads a client's packets: the engine's decoders, driven the way tokio-util's `Framed`
//! drives them (reserve a byte, read into the spare room, decode until nothing more is whole), read
//! a stream of small PUBLISH packets in fewer reads than packets, whether the client wrote them all at
//! once or one at a time, at MQTT 3.1.1 and 5. (Each read is a system call of the daemon's, and the
//! read buffer of a connection starts at 512 bytes.)

use bytes::{BufMut, BytesMut};
use rmqtt::codec::{v3, v5};
use tokio_util::codec::Decoder;

/// The read buffer a connection starts with (`rmqtt-net`'s, as patched).
const READ_BUFFER_START: usize = 512;

/// A QoS 0 PUBLISH of `payload` bytes to `topic`; MQTT 5 adds an empty property length.
fn publish(version: u8, topic: &str, payload: usize) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_u16(topic.len() as u16);
    body.put_slice(topic.as_bytes());
    if version == 5 {
        body.put_u8(0);
    }
    body.resize(body.len() + payload, b'x');
    assert!(body.len() < 128, "one byte of remaining length");
    let mut packet = vec![0x30, body.len() as u8];
    packet.extend(body);
    packet
}

/// Decodes `stream` arriving as `arrivals` says (how many bytes the client has written when a read
/// starts at byte `at`) and returns (packets decoded, reads made). The last packets decoded stay alive
/// for a while, as the daemon's do until they are routed and written out: the buffer they were
/// decoded from is then shared and cannot be reused in place.
fn read_all<D: Decoder>(
    decoder: &mut D,
    stream: &[u8],
    arrivals: impl Fn(usize) -> usize,
) -> (usize, usize)
where
    D::Error: std::fmt::Debug,
{
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_START);
    let mut in_flight = std::collections::VecDeque::new();
    let (mut at, mut decoded, mut reads) = (0, 0, 0);
    loop {
        while let Some(packet) = decoder.decode(&mut buffer).expect("a well-formed PUBLISH") {
            decoded += 1;
            in_flight.push_back(packet);
            if in_flight.len() > 8 {
                in_flight.pop_front();
            }
        }
        if at == stream.len() {
            return (decoded, reads);
        }
        buffer.reserve(1);
        let written = arrivals(at).min(stream.len());
        let take = (buffer.capacity() - buffer.len()).min(written - at);
        buffer.put_slice(&stream[at..at + take]);
        at += take;
        reads += 1;
    }
}

fn reads_for(version: u8, all_at_once: bool) -> (usize, usize, usize) {
    const PACKETS: usize = 1_000;
    let packet = publish(version, "sensors/room-1/temperature", 56);
    let stream = packet.repeat(PACKETS);
    let size = packet.len();
    // Written all at once, or one packet at a time, each read finding just the next one.
    let arrivals = move |at: usize| {
        if all_at_once {
            usize::MAX
        } else {
            (at / size + 1) * size
        }
    };
    let (decoded, reads) = if version == 5 {
        read_all(&mut v5::Codec::new(0, 0), &stream, arrivals)
    } else {
        read_all(&mut v3::Codec::new(0), &stream, arrivals)
    };
    (PACKETS, decoded, reads)
}

#[test]
fn packets_written_together_are_read_several_at_a_time() {
    for version in [3, 5] {
        let (packets, decoded, reads) = reads_for(version, true);
        assert_eq!(decoded, packets, "MQTT {version}");
        // Upstream's decoders left room for the next header alone: about 2 reads per packet once the
        // first 512 bytes were used (1,950 here). Now a read takes what the room holds, 86 here.
        assert!(
            reads * 5 < packets,
            "MQTT {version}: {reads} reads for {packets} packets written together"
        );
    }
}

#[test]
fn a_packet_written_alone_takes_one_read() {
    for version in [3, 5] {
        let (packets, decoded, reads) = reads_for(version, false);
        assert_eq!(decoded, packets, "MQTT {version}");
        // Upstream: the header, then the body (1,885 to 1,995 reads here). Now 1,000.
        assert!(
            reads * 10 < packets * 11,
            "MQTT {version}: {reads} reads for {packets} packets written one at a time"
        );
    }
}

#[test]
fn the_first_packet_of_each_read_is_marked() {
    // The engine yields before routing a PUBLISH only when it came first in a read of its socket.
    for version in [3u8, 5] {
        let mut codec = if version == 5 {
            rmqtt::codec::MqttCodec::V5(v5::Codec::new(0, 0))
        } else {
            rmqtt::codec::MqttCodec::V3(v3::Codec::new(0))
        };
        let packet = publish(version, "a/b", 4);
        let mut buffer = BytesMut::with_capacity(READ_BUFFER_START);
        let mut marks = Vec::new();
        // Three reads: three packets, one packet, and two packets with half of a third.
        for read in [packet.repeat(3), packet.clone(), {
            let mut bytes = packet.repeat(2);
            bytes.extend_from_slice(&packet[..3]);
            bytes
        }] {
            buffer.put_slice(&read);
            while codec.decode(&mut buffer).expect("well-formed").is_some() {
                marks.push(codec.first_of_read());
            }
        }
        buffer.put_slice(&packet[3..]);
        while codec.decode(&mut buffer).expect("well-formed").is_some() {
            marks.push(codec.first_of_read());
        }
        assert_eq!(
            marks,
            [true, false, false, true, true, false, true],
            "MQTT {version}"
        );
    }
}
