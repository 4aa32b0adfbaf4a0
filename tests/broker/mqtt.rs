//! MQTT semantics of the embedded broker for external clients, each pinned with a real client on 127.0.0.1
//! (rumqttc, a byte-level client, and Debian's mosquitto_pub/mosquitto_sub): QoS 0/1/2 in both directions
//! and exactly once at QoS 2 (also across a reconnect), wills, retained messages published by clients, and
//! persistent sessions, and a SUBSCRIBE written before another client's PUBLISH getting that publish.

use sensorgate_testkit::broker as support;
use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::raw;

use std::collections::BTreeMap;
use std::time::Duration;

use raw::{Connect, RawClient, Will, PUBCOMP, PUBREC};
use sensorgate::broker::{Broker, BrokerSettings};
use sensorgate::model::Message;

async fn start(settings: &BrokerSettings) -> (Broker, std::net::SocketAddr) {
    let broker = Broker::start(settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];
    (broker, addr)
}

/// Receives until `count` publishes arrived, then keeps listening `grace` for duplicates.
async fn receive_all(
    sub: &mut mqtt::Subscriber,
    count: usize,
    grace: Duration,
) -> Vec<mqtt::Received> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < count {
        match tokio::time::timeout_at(deadline, sub.rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            _ => break,
        }
    }
    while let Ok(Some(m)) = tokio::time::timeout(grace, sub.rx.recv()).await {
        got.push(m);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_in_both_directions_each_message_once_at_the_lower_qos() {
    let (_broker, addr) = start(&support::local_settings()).await;
    for pub_qos in 0..=2u8 {
        for sub_qos in 0..=2u8 {
            let topic = format!("qos/{pub_qos}{sub_qos}");
            let mut sub =
                mqtt::subscribe(addr, &format!("sub-{pub_qos}{sub_qos}"), &topic, sub_qos).await;
            let publisher =
                mqtt::subscribe(addr, &format!("pub-{pub_qos}{sub_qos}"), "unused", 0).await;
            for i in 0..20 {
                publisher
                    .client
                    .publish(&topic, mqtt::qos(pub_qos), false, i.to_string())
                    .await
                    .unwrap();
            }
            let got = receive_all(&mut sub, 20, Duration::from_millis(300)).await;
            let payloads: Vec<String> = got.iter().map(|m| m.text()).collect();
            let expected: Vec<String> = (0..20).map(|i| i.to_string()).collect();
            if pub_qos == 0 || sub_qos == 0 {
                // QoS 0 may lose messages in principle; on loopback none may be duplicated.
                let mut unique = payloads.clone();
                unique.dedup();
                assert_eq!(
                    unique.len(),
                    payloads.len(),
                    "pub {pub_qos} sub {sub_qos}: {payloads:?}"
                );
            } else {
                assert_eq!(
                    payloads, expected,
                    "pub {pub_qos} sub {sub_qos}: all, once, in order"
                );
            }
            assert!(
                !got.is_empty(),
                "pub {pub_qos} sub {sub_qos}: nothing arrived"
            );
            assert!(got.iter().all(|m| m.qos == pub_qos.min(sub_qos)));
        }
    }
}

/// Kills the child process it holds when dropped.
struct ChildGuard(tokio::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_exchange_qos_2_messages() {
    use tokio::io::AsyncBufReadExt;

    let (broker, addr) = start(&support::local_settings()).await;
    let port = addr.port().to_string();
    let mut sub = ChildGuard(
        tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "mosq/#",
                "-q",
                "2",
                "-v",
                "-i",
                "msub",
            ])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("mosquitto_sub installed (Debian package mosquitto-clients)"),
    );
    let stdout = sub
        .0
        .stdout
        .take()
        .expect("mosquitto_sub's stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    // mosquitto_sub is subscribed once it prints a probe published after it connected: probe every 100 ms
    // until one arrives (bounded), so no real message is published before the subscription exists.
    let subscribed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut probe = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = probe.tick() => {
                    let ready = Message {
                        topic: "mosq/probe".into(),
                        payload: b"ready".to_vec(),
                        qos: 0,
                        retain: false,
                    };
                    broker.publish(&ready).await.unwrap();
                }
                line = lines.next_line() => match line {
                    Ok(Some(line)) if line.starts_with("mosq/probe ") => return true,
                    Ok(Some(_)) => {}
                    _ => return false,
                },
            }
        }
    })
    .await;
    assert_eq!(subscribed, Ok(true), "mosquitto_sub subscribed within 10 s");

    for (topic, text) in [("mosq/a", "one"), ("mosq/b", "two"), ("mosq/a", "three")] {
        let status = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                topic,
                "-q",
                "2",
                "-m",
                text,
            ])
            .status()
            .await
            .expect("mosquitto_pub installed (Debian package mosquitto-clients)");
        assert!(status.success());
    }
    // A probe still in flight may come before them; everything else is what mosquitto_pub sent, in order.
    let received = tokio::time::timeout(Duration::from_secs(10), async {
        let mut received = Vec::new();
        while received.len() < 3 {
            match lines.next_line().await {
                Ok(Some(line)) if line.starts_with("mosq/probe ") => {}
                Ok(Some(line)) => received.push(line),
                _ => break,
            }
        }
        received
    })
    .await
    .expect("mosquitto_sub got 3 messages within 10 s");
    assert_eq!(received, ["mosq/a one", "mosq/b two", "mosq/a three"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_2_publish_re_sent_after_a_reconnect_is_delivered_once() {
    let (_broker, addr) = start(&support::local_settings()).await;
    let mut sub = mqtt::subscribe(addr, "q2-watcher", "q2/#", 2).await;
    let persistent = Connect {
        clean: false,
        ..Connect::new("q2-sender")
    };
    let (mut sender, code, _) = RawClient::connect(addr, &persistent).await;
    assert_eq!(code, 0);
    sender
        .publish("q2/once", b"exactly", 2, false, 42, false)
        .await;
    let first = tokio::time::timeout(Duration::from_secs(5), sub.rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.text(), "exactly");
    // The connection dies before the sender saw PUBREC; it reconnects and re-sends with DUP set.
    drop(sender);
    let mut resumed = None;
    for _ in 0..20 {
        let (client, code, present) = RawClient::connect(addr, &persistent).await;
        if code == 0 {
            assert!(present, "the persistent session is resumed");
            resumed = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut sender = resumed.expect("reconnected within 1 s");
    sender
        .publish("q2/once", b"exactly", 2, false, 42, true)
        .await;
    sender.expect(PUBREC).await;
    sender.pubrel(42).await;
    sender.expect(PUBCOMP).await;
    // A new message with the same packet id afterwards is delivered normally.
    sender
        .publish("q2/once", b"next", 2, false, 42, false)
        .await;
    sender.expect(PUBREC).await;
    sender.pubrel(42).await;
    sender.expect(PUBCOMP).await;
    let rest = receive_all(&mut sub, 1, Duration::from_millis(500)).await;
    let texts: Vec<String> = rest.iter().map(|m| m.text()).collect();
    assert_eq!(
        texts,
        vec!["next"],
        "the re-sent publish was not delivered a second time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_fire_on_lost_connections_and_keep_alive_expiry_but_not_after_disconnect() {
    let (_broker, addr) = start(&support::local_settings()).await;
    let mut sub = mqtt::subscribe(addr, "will-watcher", "wills/#", 1).await;
    let with_will = |id: &'static str, keep_alive: u16| Connect {
        keep_alive,
        will: Some(Will {
            topic: Box::leak(format!("wills/{id}").into_boxed_str()),
            payload: b"gone",
            qos: 1,
            retain: false,
        }),
        ..Connect::new(id)
    };

    let (clean, code, _) = RawClient::connect(addr, &with_will("polite", 60)).await;
    assert_eq!(code, 0);
    clean.disconnect().await;

    let (dropped, _, _) = RawClient::connect(addr, &with_will("dropped", 60)).await;
    drop(dropped);
    let mut seen = Vec::new();
    let will = sub
        .wait_for(Duration::from_secs(3), &mut seen, |m| {
            m.topic == "wills/dropped"
        })
        .await;
    assert!(
        will.is_some(),
        "will after a socket closed without DISCONNECT"
    );

    let started = std::time::Instant::now();
    let (_silent, _, _) = RawClient::connect(addr, &with_will("silent", 1)).await;
    let will = sub
        .wait_for(Duration::from_secs(5), &mut seen, |m| {
            m.topic == "wills/silent"
        })
        .await;
    assert!(will.is_some(), "will after keep-alive (1 s) expired");
    assert!(started.elapsed() >= Duration::from_millis(900));

    let late = sub
        .wait_for(Duration::from_millis(500), &mut seen, |m| {
            m.topic == "wills/polite"
        })
        .await;
    assert!(
        late.is_none() && seen.iter().all(|m| m.topic != "wills/polite"),
        "no will after DISCONNECT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retained_messages_are_set_delivered_and_cleared_only_by_empty_retained() {
    let (broker, addr) = start(&support::local_settings()).await;
    let (mut client, _, _) = RawClient::connect(addr, &Connect::new("retainer")).await;
    client.publish("ret/a", b"1", 1, true, 1, false).await;
    client.publish("ret/b/c", b"2", 1, true, 2, false).await;
    client.expect(raw::PUBACK).await;
    client.expect(raw::PUBACK).await;

    for (filter, expected) in [
        ("ret/a", vec!["ret/a"]),
        ("ret/+", vec!["ret/a"]),
        ("ret/#", vec!["ret/a", "ret/b/c"]),
        ("+/b/+", vec!["ret/b/c"]),
    ] {
        let mut sub = mqtt::subscribe(addr, "ret-sub", filter, 1).await;
        let got = sub
            .collect_until(Duration::from_secs(3), |m| m.len() == expected.len())
            .await;
        let topics: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(topics, expected, "filter {filter}");
        assert!(
            got.values().all(|m| m.retain),
            "filter {filter}: delivered as retained"
        );
    }

    client.publish("ret/a", b"", 1, false, 3, false).await;
    client.expect(raw::PUBACK).await;
    assert_eq!(
        broker.retained_messages().await.len(),
        2,
        "a plain empty publish clears nothing"
    );
    client.publish("ret/a", b"", 1, true, 4, false).await;
    client.expect(raw::PUBACK).await;
    let topics: Vec<String> = broker
        .retained_messages()
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(topics, vec!["ret/b/c"], "an empty retained publish clears");
    let mut sub = mqtt::subscribe(addr, "ret-sub-after", "ret/#", 1).await;
    let got = sub
        .collect_until(Duration::from_millis(800), |_| false)
        .await;
    assert_eq!(got.keys().collect::<Vec<_>>(), vec!["ret/b/c"]);
}

async fn offline_then_back(settings: &BrokerSettings, sent: usize) -> (bool, Vec<String>) {
    let (broker, addr) = start(settings).await;
    let persistent = Connect {
        clean: false,
        ..Connect::new("away")
    };
    let (mut client, _, _) = RawClient::connect(addr, &persistent).await;
    assert_eq!(client.subscribe("away/#", 1, 1).await, vec![1]);
    client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..sent {
        broker
            .publish(&Message {
                topic: "away/n".into(),
                payload: i.to_string().into_bytes(),
                qos: 1,
                retain: false,
            })
            .await
            .unwrap();
    }
    let (mut client, code, present) = RawClient::connect(addr, &persistent).await;
    assert_eq!(code, 0);
    let got = client.collect_publishes(Duration::from_millis(1500)).await;
    (
        present,
        got.into_iter()
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_qos_1_messages_queued_while_away_within_the_bound() {
    let (present, got) = offline_then_back(&support::local_settings(), 200).await;
    assert!(present);
    let expected: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(got, expected, "all 200, once, in order");

    let bounded = BrokerSettings {
        max_queued_messages: 50,
        ..support::local_settings()
    };
    let (_, got) = offline_then_back(&bounded, 120).await;
    let mut counts = BTreeMap::new();
    for payload in &got {
        *counts.entry(payload.clone()).or_insert(0) += 1;
    }
    assert!(counts.values().all(|&n| n == 1));
    assert!(
        (50..=50 + 32).contains(&got.len()),
        "beyond max_queued_messages (50, plus the inflight window) messages are dropped: got {}",
        got.len()
    );
}

/// Rounds of the subscribe-then-publish race per protocol version.
const ORDER_ROUNDS: usize = 100;

/// Whether a PUBLISH to `topic` arrives within `within` (other packets are skipped).
async fn receives(client: &mut RawClient, topic: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.read_within(left).await {
            Some(packet) if packet.kind == raw::PUBLISH => {
                if client.decode_publish(&packet).topic == topic {
                    return true;
                }
            }
            Some(_) => continue,
            None => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_written_before_another_clients_publish_gets_that_publish() {
    // The Paho MQTT 5 suite's test_request_response: one client's SUBSCRIBE is written, and another
    // client publishes to that topic at once, without waiting for the SUBACK. The broker lets other
    // connections' reads be handled once per read of the publisher's socket, before the first PUBLISH
    // it handles from that read; so in one round of three that PUBLISH comes second in one write,
    // after one to another topic, and in one of three after a PINGREQ.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &ConfigBuilder::new("order").toml());
    let mut missed = Vec::new();
    for v5 in [false, true] {
        let mut options = Connect::new("order-publisher");
        options.v5 = v5;
        let (mut publisher, code, _) = RawClient::connect(daemon.addr, &options).await;
        assert_eq!(code, 0);
        for round in 0..ORDER_ROUNDS {
            let id = format!("order-subscriber-{round}");
            let mut options = Connect::new(&id);
            options.v5 = v5;
            let (mut subscriber, code, _) = RawClient::connect(daemon.addr, &options).await;
            assert_eq!(code, 0);
            let topic = format!("order/{}/{round}", if v5 { 5 } else { 3 });
            let subscribe = subscriber.subscribe_packet(&topic, 1, 1);
            subscriber.send(&subscribe).await;
            let packet_id = (round + 1) as u16;
            let request = publisher.publish_packet(&topic, b"request", 1, false, packet_id, false);
            let mut write = match round % 3 {
                1 => publisher.publish_packet("order/elsewhere", b"x", 0, false, 0, false),
                2 => vec![0xC0, 0x00], // PINGREQ
                _ => Vec::new(),
            };
            write.extend_from_slice(&request);
            publisher.send(&write).await;
            if !receives(&mut subscriber, &topic, Duration::from_millis(500)).await {
                missed.push(topic);
            }
            subscriber.disconnect().await;
        }
    }
    assert!(
        missed.is_empty(),
        "{} of {} publishes missed by a subscriber whose SUBSCRIBE was written first: {missed:?}",
        missed.len(),
        2 * ORDER_ROUNDS
    );
}
