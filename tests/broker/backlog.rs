//! A publisher faster than a subscriber cannot grow the broker without bound: the messages waiting for one
//! subscriber stay at `max_queued_messages`, the rest are dropped and counted, and every message is
//! either delivered or counted as dropped.

use sensorgate_testkit::broker as support;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::raw;

use std::time::Duration;

use raw::{Connect, RawClient, PUBLISH};
use sensorgate::broker::backlog::BACKLOG_WAIT;
use sensorgate::broker::{Broker, BrokerSettings};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const LIMIT: usize = 200;
const MESSAGES: usize = 30_000;

fn publish_frame(topic: &str, payload: &[u8]) -> Vec<u8> {
    let len = 2 + topic.len() + payload.len();
    let mut out = vec![0x30];
    let mut rest = len;
    loop {
        let mut byte = (rest % 128) as u8;
        rest /= 128;
        if rest > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_slower_than_its_publisher_gets_a_bounded_backlog() {
    let settings = BrokerSettings {
        max_queued_messages: LIMIT,
        ..support::local_settings()
    };
    let broker = Broker::start(&settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];

    let (mut subscriber, code, _) = RawClient::connect(addr, &Connect::new("slow-sub")).await;
    assert_eq!(code, 0);
    assert_eq!(subscriber.subscribe("burst/#", 0, 1).await, vec![0]);
    let (mut publisher, code, _) = RawClient::connect(addr, &Connect::new("fast-pub")).await;
    assert_eq!(code, 0);

    // The subscriber reads nothing while the whole burst is written at once.
    let payload = [0x5Au8; 256];
    let mut burst = Vec::with_capacity(MESSAGES * 270);
    for _ in 0..MESSAGES {
        burst.extend_from_slice(&publish_frame("burst/x", &payload));
    }
    let writing = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(20), publisher.stream.write_all(&burst))
            .await
            .expect("burst written within 20 s")
            .expect("burst written");
        publisher
    });
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !writing.is_finished() && Instant::now() < deadline {
        peak = peak.max(broker.backlog("slow-sub"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _publisher = writing.await.unwrap();
    // Wait (bounded) until the broker has routed the last of the burst: the drop count stands still
    // for longer than a publisher is held up for room before a message is dropped, once the subscriber's
    // socket is full and drops began (until then the publisher is only held up).
    let mut drops = broker.backlog_drops();
    let settle_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(BACKLOG_WAIT + Duration::from_millis(300)).await;
        peak = peak.max(broker.backlog("slow-sub"));
        let now = broker.backlog_drops();
        if (now == drops && now > 0) || Instant::now() > settle_deadline {
            drops = now;
            break;
        }
        drops = now;
    }
    // A dropped message is counted until the engine has reported its drop: one over, per publisher.
    assert!(
        peak <= LIMIT + 1,
        "backlog of the slow subscriber reached {peak} (limit {LIMIT})"
    );
    assert!(
        drops > 0,
        "a {MESSAGES}-message burst to a stalled subscriber dropped nothing"
    );

    // Now the subscriber reads everything there is.
    // Until every message is accounted for (a loaded machine may still be routing the burst's tail),
    // then a little longer, so that a message delivered twice or delivered and counted would show.
    let mut received = 0usize;
    let read_deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < read_deadline
        && (received as u64 + broker.backlog_drops()) < MESSAGES as u64
    {
        if let Some(packet) = subscriber.read_within(Duration::from_secs(1)).await {
            if packet.kind == PUBLISH {
                received += 1;
            }
        }
    }
    while let Some(packet) = subscriber.read_within(Duration::from_millis(500)).await {
        if packet.kind == PUBLISH {
            received += 1;
        }
    }
    assert!(received > 0);
    assert_eq!(
        received as u64 + broker.backlog_drops(),
        MESSAGES as u64,
        "every message is delivered or counted as dropped ({received} received, {} dropped)",
        broker.backlog_drops()
    );
    assert_eq!(broker.backlog("slow-sub"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_qos1_subscriber_holds_its_publisher_up_only_briefly() {
    const QOS1_MESSAGES: u16 = 3_000;
    let settings = BrokerSettings {
        max_queued_messages: LIMIT,
        ..support::local_settings()
    };
    let broker = Broker::start(&settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];

    // Subscribes at QoS 1 and then neither reads nor acknowledges anything.
    let (mut subscriber, code, _) = RawClient::connect(addr, &Connect::new("stalled-sub")).await;
    assert_eq!(code, 0);
    assert_eq!(subscriber.subscribe("q1/#", 1, 1).await, vec![1]);
    let (mut publisher, code, _) = RawClient::connect(addr, &Connect::new("q1-pub")).await;
    assert_eq!(code, 0);

    let started = Instant::now();
    for id in 1..=QOS1_MESSAGES {
        publisher
            .publish("q1/x", b"reading", 1, false, id, false)
            .await;
    }
    let mut acked = 0u16;
    let deadline = started + Duration::from_secs(10);
    while acked < QOS1_MESSAGES && Instant::now() < deadline {
        match publisher.read_within(Duration::from_secs(2)).await {
            Some(packet) if packet.kind == raw::PUBACK => acked += 1,
            Some(_) => {}
            None => break,
        }
    }
    let took = started.elapsed();
    assert_eq!(acked, QOS1_MESSAGES, "PUBACKs within 10 s");
    assert!(
        took < Duration::from_secs(5),
        "the publisher was held up {took:?} by a stalled subscriber"
    );
    assert!(broker.backlog("stalled-sub") <= LIMIT + 1);
    assert!(broker.backlog_drops() > 0);
    drop(subscriber);
}

/// A subscriber that stops reading is cut off once a write to it has waited for its socket for the
/// engine's send timeout (10 s), and the broker goes on serving the others. This is the slow path of
/// a packet fed to a connection, the only one under the timeout
/// (`patches/rmqtt-net/0013-send-timeout-only-when-waiting.patch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: waits out the broker's 10 s send timeout"]
async fn a_subscriber_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let broker = Broker::start(&support::local_settings(), None)
        .await
        .unwrap();
    let addr = broker.local_addrs()[0];
    let (mut stalled, code, _) = RawClient::connect(addr, &Connect::new("stops-reading")).await;
    assert_eq!(code, 0);
    assert_eq!(stalled.subscribe("big/#", 0, 1).await, vec![0]);
    let mut reader = mqtt::subscribe(addr, "keeps-reading", "fence/#", 0).await;
    assert_eq!(broker.connections(), 2);

    // 25 MiB for the stalled subscriber, far more than its socket's buffers hold.
    let payload = "x".repeat(64 * 1024);
    let filled = Instant::now();
    for _ in 0..400 {
        support::gateway_publish(&broker, "big/x", &payload, false).await;
    }
    let mut cut_off = None;
    while filled.elapsed() < Duration::from_secs(30) {
        if broker.connections() == 1 {
            cut_off = Some(filled.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_off = cut_off.expect("the stalled subscriber is cut off within 30 s");
    assert!(
        cut_off >= Duration::from_secs(9),
        "cut off after {cut_off:?}, before its writes could have waited 10 s"
    );
    support::gateway_publish(&broker, "fence/after", "still serving", false).await;
    let fence = reader.next(Duration::from_secs(5)).await.expect("a fence");
    assert_eq!(fence.text(), "still serving");
    drop(stalled);
}
