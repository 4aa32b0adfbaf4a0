//! Deliveries at full speed through the real daemon: the messages ready for a subscriber are written to
//! its socket together (not one write system call per message), a subscriber that keeps reading loses no
//! QoS 0 message of a publisher's burst (its publisher is slowed down instead), and QoS 1 deliveries written together
//! still arrive whole and in order within the inflight window.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::raw;

use std::time::Duration;

use raw::{Connect, RawClient, PUBLISH};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// One QoS 0 or 1 PUBLISH (MQTT 3.1.1) of `payload` on `topic`.
fn publish_frame(topic: &str, payload: &[u8], qos: u8, packet_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + topic.len() + payload.len());
    raw::push_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&packet_id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    raw::frame(0x30 | (qos << 1), &body)
}

/// `messages` publishes on `topic`, numbered in their payload, as one buffer.
fn burst(topic: &str, messages: usize, qos: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages * 80);
    for n in 0..messages {
        let payload = format!("{n:064}");
        let packet_id = (n % usize::from(u16::MAX)) as u16 + 1;
        out.extend_from_slice(&publish_frame(topic, payload.as_bytes(), qos, packet_id));
    }
    out
}

/// A subscriber of `filter` at `qos` and a publisher, both MQTT 3.1.1.
async fn pair(daemon: &Daemon, tag: &str, filter: &str, qos: u8) -> (RawClient, RawClient) {
    let (mut subscriber, code, _) =
        RawClient::connect(daemon.addr, &Connect::new(&format!("{tag}-sub"))).await;
    assert_eq!(code, 0);
    assert_eq!(subscriber.subscribe(filter, qos, 1).await, vec![qos]);
    let (publisher, code, _) =
        RawClient::connect(daemon.addr, &Connect::new(&format!("{tag}-pub"))).await;
    assert_eq!(code, 0);
    (subscriber, publisher)
}

/// Writes `bytes` from the publisher on its own task (the subscriber reads meanwhile).
fn write_burst(mut publisher: RawClient, bytes: Vec<u8>) -> tokio::task::JoinHandle<RawClient> {
    tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(30), publisher.stream.write_all(&bytes))
            .await
            .expect("burst written within 30 s")
            .expect("burst written");
        publisher
    })
}

/// Reads PUBLISHes until `expected` arrived or none came for 2 s (bounded by 60 s in all); returns
/// their payloads' numbers in arrival order, acknowledging QoS 1 ones.
async fn read_numbers(subscriber: &mut RawClient, expected: usize) -> Vec<usize> {
    let mut numbers = Vec::with_capacity(expected);
    let deadline = Instant::now() + Duration::from_secs(60);
    while numbers.len() < expected && Instant::now() < deadline {
        let Some(packet) = subscriber.read_within(Duration::from_secs(2)).await else {
            break;
        };
        if packet.kind != PUBLISH {
            continue;
        }
        let publish = subscriber.decode_publish(&packet);
        if let Some(id) = publish.packet_id {
            subscriber.ack(raw::PUBACK, id).await;
        }
        let number = std::str::from_utf8(&publish.payload)
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or(usize::MAX);
        numbers.push(number);
    }
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_its_subscriber_in_few_writes() {
    const MESSAGES: usize = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &ConfigBuilder::new("delivery").toml());
    let (mut subscriber, publisher) = pair(&daemon, "writes", "writes/#", 0).await;

    let before = subscriber.data_segments_received();
    let writing = write_burst(publisher, burst("writes/x", MESSAGES, 0));
    let numbers = read_numbers(&mut subscriber, MESSAGES).await;
    let writes = subscriber.data_segments_received() - before;
    let _publisher = writing.await.unwrap();

    assert_eq!(
        numbers.len(),
        MESSAGES,
        "every message of the burst arrived"
    );
    // One write per delivered PUBLISH was the engine's way (about one segment per message); together,
    // several messages per write.
    assert!(
        writes as usize * 2 < MESSAGES,
        "{writes} TCP segments (one per write of the broker) for {MESSAGES} messages to one subscriber"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_keeps_reading_loses_no_qos0_message_at_full_speed() {
    // A burst written at once, 300 times a small max_queued_messages: the subscriber falls behind
    // its publisher many times over, and reads all the time.
    const MESSAGES: usize = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new("delivery").broker("max_queued_messages = 100");
    let daemon = Daemon::start(dir.path(), &config.toml());
    let (mut subscriber, publisher) = pair(&daemon, "full-speed", "speed/#", 0).await;

    let writing = write_burst(publisher, burst("speed/x", MESSAGES, 0));
    let numbers = read_numbers(&mut subscriber, MESSAGES).await;
    let _publisher = writing.await.unwrap();

    assert_eq!(
        numbers.len(),
        MESSAGES,
        "a subscriber reading all the time received {} of {MESSAGES} QoS 0 messages",
        numbers.len()
    );
    assert!(numbers.windows(2).all(|pair| pair[0] < pair[1]), "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_deliveries_written_together_arrive_whole_and_in_order() {
    const MESSAGES: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &ConfigBuilder::new("delivery").toml());
    let (mut subscriber, publisher) = pair(&daemon, "qos1", "qos1/#", 1).await;

    let writing = write_burst(publisher, burst("qos1/x", MESSAGES, 1));
    let numbers = read_numbers(&mut subscriber, MESSAGES).await;
    let _publisher = writing.await.unwrap();

    assert_eq!(
        numbers,
        (0..MESSAGES).collect::<Vec<_>>(),
        "every QoS 1 message once, in order"
    );
}
