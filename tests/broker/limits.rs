//! Limits of the embedded broker with real clients on 127.0.0.1: maximum connections (CONNACK 3 beyond
//! it), maximum packet size (the connection is closed, nothing is delivered), the outbound inflight window
//! per client, and immediate reconnects with the same client id.

use sensorgate_testkit::broker as support;
use sensorgate_testkit::raw;

use std::time::Duration;

use raw::{Connect, RawClient, PUBACK, PUBLISH};
use sensorgate::broker::{Broker, BrokerSettings};
use sensorgate::model::Message;

async fn start(settings: &BrokerSettings) -> (Broker, std::net::SocketAddr) {
    let broker = Broker::start(settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];
    (broker, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_get_server_unavailable() {
    let settings = BrokerSettings {
        max_connections: 3,
        ..support::local_settings()
    };
    let (_broker, addr) = start(&settings).await;
    let mut held = Vec::new();
    for i in 0..3 {
        let (client, code, _) = RawClient::connect(addr, &Connect::new(&format!("c{i}"))).await;
        assert_eq!(code, 0);
        held.push(client);
    }
    let (_, code, _) = RawClient::connect(addr, &Connect::new("c3")).await;
    assert_eq!(code, 3, "CONNACK 3: server unavailable");
    held.pop().unwrap().disconnect().await;
    let mut code = 3;
    for _ in 0..20 {
        code = RawClient::connect(addr, &Connect::new("c4")).await.1;
        if code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, 0, "a freed slot is usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_larger_than_max_packet_size_close_the_connection_and_are_not_delivered() {
    let settings = BrokerSettings {
        max_packet_size: 1024,
        ..support::local_settings()
    };
    let (_broker, addr) = start(&settings).await;
    let (mut watcher, _, _) = RawClient::connect(addr, &Connect::new("watcher")).await;
    assert_eq!(watcher.subscribe("big/#", 1, 1).await, vec![1]);
    let (mut sender, _, _) = RawClient::connect(addr, &Connect::new("sender")).await;
    sender
        .publish("big/ok", &[b'x'; 900], 1, false, 1, false)
        .await;
    sender.expect(PUBACK).await;
    sender
        .publish("big/too", &[b'x'; 2000], 1, false, 2, false)
        .await;
    let mut closed = false;
    for _ in 0..10 {
        match sender.read_within(Duration::from_secs(3)).await {
            None => {
                closed = true;
                break;
            }
            Some(packet) => assert_ne!(packet.kind, PUBACK, "oversized publish acknowledged"),
        }
    }
    assert!(closed, "the broker closes the connection");
    let got = watcher.collect_publishes(Duration::from_millis(500)).await;
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["big/ok"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_has_at_most_max_inflight_unacknowledged_messages() {
    let settings = BrokerSettings {
        max_inflight: 2,
        ..support::local_settings()
    };
    let (broker, addr) = start(&settings).await;
    let (mut slow, _, _) = RawClient::connect(addr, &Connect::new("slow")).await;
    assert_eq!(slow.subscribe("infl/#", 1, 1).await, vec![1]);
    for i in 0..5 {
        broker
            .publish(&Message {
                topic: "infl/x".into(),
                payload: i.to_string().into_bytes(),
                qos: 1,
                retain: false,
            })
            .await
            .unwrap();
    }
    let mut ids = Vec::new();
    while let Some(packet) = slow.read_within(Duration::from_millis(700)).await {
        if packet.kind == PUBLISH {
            ids.push(slow.decode_publish(&packet).packet_id.unwrap());
        }
    }
    assert_eq!(ids.len(), 2, "two in flight until acknowledged");
    for id in ids {
        slow.ack(PUBACK, id).await;
    }
    let rest = slow.collect_publishes(Duration::from_millis(1500)).await;
    let payloads: Vec<String> = rest
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(
        payloads,
        vec!["2", "3", "4"],
        "the queued rest follows once acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_reconnects_with_the_same_client_id_are_accepted() {
    let (_broker, addr) = start(&support::local_settings()).await;
    let mut refused = Vec::new();
    for i in 0..200 {
        let clean = i % 2 == 0;
        let (client, code, _) = RawClient::connect(
            addr,
            &Connect {
                clean,
                ..Connect::new("same-id")
            },
        )
        .await;
        if code != 0 {
            refused.push(code);
        }
        drop(client);
    }
    assert!(
        refused.is_empty(),
        "refused {} of 200: {refused:?}",
        refused.len()
    );
}
