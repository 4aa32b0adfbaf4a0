//! Every retained message a new subscription matches is delivered, at the lower of its QoS and the
//! subscription's, however many there are and however slowly the subscriber reads; `max_queued_messages`
//! bounds only live traffic. Before the retained stream (src/broker/pacing.rs), 12,001 retained topics
//! gave a late QoS 1 `#` subscriber 10,702: the rest were dropped at the subscriber's queue.

use sensorgate_testkit::broker as support;
use sensorgate_testkit::raw;

use std::collections::HashSet;
use std::time::Duration;

use raw::{Connect, RawClient, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK};
use sensorgate::broker::pacing::RETAINED_WINDOW;
use sensorgate::broker::{Broker, BrokerSettings};
use sensorgate::model::Message;
use tokio::time::Instant;

/// Publishes `count` retained messages at QoS 2 as the gateway (`sg/{i / 100}/{i % 100}`).
async fn retain(broker: &Broker, count: usize) {
    for i in 0..count {
        broker
            .publish(&Message {
                topic: format!("sg/{}/{}", i / 100, i % 100),
                payload: format!("{i}").into_bytes(),
                qos: 2,
                retain: true,
            })
            .await
            .unwrap();
    }
}

/// Sends a SUBSCRIBE without waiting for the SUBACK: retained messages may come before it, and
/// `RawClient::subscribe` would skip them. [`receive_retained`] checks the SUBACK.
async fn subscribe(client: &mut RawClient, filter: &str, qos: u8) {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(qos);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend_from_slice(&body);
    client.send(&packet).await;
}

/// Reads PUBLISHes until `expected` distinct retained topics arrived (or `within` passed), acknowledging
/// as a client must; `pause` after every `burst` publishes makes a slow reader. Returns the topics, the
/// number of publishes and the highest QoS seen.
async fn receive_retained(
    client: &mut RawClient,
    expected: usize,
    within: Duration,
    slow: Option<(usize, Duration)>,
) -> (HashSet<String>, usize, u8) {
    let deadline = Instant::now() + within;
    let mut topics = HashSet::new();
    let mut publishes = 0usize;
    let mut max_qos = 0u8;
    while topics.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(packet) = client.read_within(left).await else {
            break;
        };
        match packet.kind {
            PUBLISH => {
                let publish = client.decode_publish(&packet);
                assert!(publish.retain, "{publish:?}");
                max_qos = max_qos.max(publish.qos);
                match (publish.qos, publish.packet_id) {
                    (1, Some(id)) => client.ack(PUBACK, id).await,
                    (2, Some(id)) => client.ack(PUBREC, id).await,
                    _ => {}
                }
                topics.insert(publish.topic);
                publishes += 1;
                if let Some((burst, pause)) = slow {
                    if publishes.is_multiple_of(burst) {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            PUBREL => {
                let id = u16::from_be_bytes([packet.body[0], packet.body[1]]);
                client.ack(PUBCOMP, id).await;
            }
            SUBACK => assert!(packet.body[2] < 0x80, "subscription refused: {packet:?}"),
            _ => {}
        }
    }
    (topics, publishes, max_qos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "volume: 50,000 retained topics at QoS 0, 1 and 2"]
async fn fifty_thousand_retained_topics_reach_a_late_subscriber_at_every_qos() {
    const TOPICS: usize = 50_000;
    let broker = Broker::start(&support::local_settings(), None)
        .await
        .unwrap();
    let addr = broker.local_addrs()[0];
    retain(&broker, TOPICS).await;
    for qos in 0..=2u8 {
        let client_id = format!("late-{qos}");
        let (mut client, code, _) = RawClient::connect(addr, &Connect::new(&client_id)).await;
        assert_eq!(code, 0);
        let started = Instant::now();
        subscribe(&mut client, "sg/#", qos).await;
        let (topics, publishes, max_qos) =
            receive_retained(&mut client, TOPICS, Duration::from_secs(240), None).await;
        eprintln!(
            "QoS {qos}: {} of {TOPICS} retained topics in {:.1} s",
            topics.len(),
            started.elapsed().as_secs_f64()
        );
        assert_eq!(topics.len(), TOPICS, "QoS {qos} subscriber");
        assert_eq!(publishes, TOPICS, "QoS {qos}: each retained message once");
        assert_eq!(max_qos, qos, "delivered at the subscription's QoS");
        client.disconnect().await;
    }
    assert_eq!(broker.backlog_drops(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_retained_message_within_the_window() {
    const TOPICS: usize = 3_000;
    // A queue far smaller than the retained store: it bounds live traffic only.
    let settings = BrokerSettings {
        max_queued_messages: 100,
        max_inflight: 8,
        ..support::local_settings()
    };
    let broker = Broker::start(&settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];
    retain(&broker, TOPICS).await;

    let (mut client, code, _) = RawClient::connect(addr, &Connect::new("slow-reader")).await;
    assert_eq!(code, 0);
    subscribe(&mut client, "#", 1).await;
    // Reads nothing for a while: the broker must hold only its window for this subscriber.
    let waited = Instant::now() + Duration::from_secs(10);
    while broker.retained_pending("slow-reader") < RETAINED_WINDOW && Instant::now() < waited {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pending = broker.retained_pending("slow-reader");
    assert!(
        pending <= RETAINED_WINDOW,
        "{pending} retained messages wait for a subscriber that reads nothing"
    );
    // Then reads in bursts of 50 with pauses.
    let (topics, publishes, _) = receive_retained(
        &mut client,
        TOPICS,
        Duration::from_secs(120),
        Some((50, Duration::from_millis(20))),
    )
    .await;
    assert_eq!(topics.len(), TOPICS);
    assert_eq!(publishes, TOPICS);
    assert_eq!(broker.backlog_drops(), 0);
    assert_eq!(broker.retained_streams_abandoned(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_leaves_mid_stream_ends_its_stream() {
    let broker = Broker::start(&support::local_settings(), None)
        .await
        .unwrap();
    let addr = broker.local_addrs()[0];
    retain(&broker, 5_000).await;
    let (mut client, code, _) = RawClient::connect(addr, &Connect::new("leaver")).await;
    assert_eq!(code, 0);
    assert_eq!(client.subscribe("#", 1, 1).await, vec![1]);
    // Reads a few, never acknowledges, and goes away.
    for _ in 0..5 {
        client.expect(PUBLISH).await;
    }
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.retained_streams_abandoned() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(broker.retained_streams_abandoned(), 1);
    // A new subscriber still gets everything.
    let (mut client, _, _) = RawClient::connect(addr, &Connect::new("after")).await;
    subscribe(&mut client, "sg/#", 0).await;
    let (topics, _, _) = receive_retained(&mut client, 5_000, Duration::from_secs(60), None).await;
    assert_eq!(topics.len(), 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_do_not_match_dollar_topics() {
    let settings = BrokerSettings {
        anonymous_read: vec!["#".into(), "$SYS/#".into()],
        ..support::local_settings()
    };
    let broker = Broker::start(&settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];
    for topic in ["$SYS/uptime", "plain/a"] {
        broker
            .publish(&Message {
                topic: topic.to_string(),
                payload: b"r".to_vec(),
                qos: 1,
                retain: true,
            })
            .await
            .unwrap();
    }
    let (mut all, _, _) = RawClient::connect(addr, &Connect::new("all")).await;
    assert_eq!(all.subscribe("#", 1, 1).await, vec![1]);
    let (mut two, _, _) = RawClient::connect(addr, &Connect::new("two")).await;
    assert_eq!(two.subscribe("+/+", 1, 1).await, vec![1]);
    let (mut sys, _, _) = RawClient::connect(addr, &Connect::new("sys")).await;
    assert_eq!(sys.subscribe("$SYS/#", 1, 1).await, vec![1]);
    // Live: the gateway publishes a $-topic and an ordinary one.
    for topic in ["$SYS/load", "plain/b"] {
        broker
            .publish(&Message {
                topic: topic.to_string(),
                payload: b"l".to_vec(),
                qos: 1,
                retain: false,
            })
            .await
            .unwrap();
    }
    let topics = |got: Vec<raw::RawPublish>| {
        let mut t: Vec<String> = got.into_iter().map(|p| p.topic).collect();
        t.sort();
        t
    };
    assert_eq!(
        topics(all.collect_publishes(Duration::from_millis(800)).await),
        vec!["plain/a", "plain/b"]
    );
    assert_eq!(
        topics(two.collect_publishes(Duration::from_millis(300)).await),
        vec!["plain/a", "plain/b"]
    );
    assert_eq!(
        topics(sys.collect_publishes(Duration::from_millis(300)).await),
        vec!["$SYS/load", "$SYS/uptime"]
    );
}
