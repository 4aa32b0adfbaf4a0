//! Logins and per-topic rights of the embedded broker, with real MQTT clients on 127.0.0.1: CONNACK codes
//! for refused logins (3.1.1 and 5.0), the brake on repeated failures, and read/write rights for publish,
//! subscribe, retained messages and wills (including `%u`/`%c` and the gateway's own topics).

use sensorgate_testkit::broker as support;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::raw;

use std::time::Duration;

use raw::{Connect, RawClient, Will, PUBACK};
use sensorgate::broker::{Broker, BrokerSettings};

fn settings() -> BrokerSettings {
    BrokerSettings {
        users: vec![
            support::user(
                "alice",
                "wonderland",
                &["sensorgate/#", "home/#"],
                &["home/#"],
            ),
            support::user(
                "node",
                "n0de",
                &["users/%u/#", "clients/%c/#"],
                &["users/%u/#", "sensorgate/cmd/+"],
            ),
        ],
        allow_anonymous: false,
        ..support::local_settings()
    }
}

fn login<'a>(client_id: &'a str, user: &'a str, password: &'a str) -> Connect<'a> {
    Connect {
        user: Some(user),
        password: Some(password),
        ..Connect::new(client_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_get_the_right_connack_code_in_3_1_1_and_5() {
    let broker = Broker::start(&settings(), None).await.unwrap();
    let addr = broker.local_addrs()[0];
    for v5 in [false, true] {
        let (bad, good, not_authorized) = if v5 { (0x86, 0x00, 0x87) } else { (4, 0, 5) };
        let with = |c: Connect<'static>| Connect { v5, ..c };
        let (_, code, _) =
            RawClient::connect(addr, &with(login("c1", "alice", "wonderland"))).await;
        assert_eq!(code, good, "v5={v5}: right password");
        let (_, code, _) = RawClient::connect(addr, &with(login("c2", "alice", "nope"))).await;
        assert_eq!(code, bad, "v5={v5}: wrong password");
        let (_, code, _) = RawClient::connect(addr, &with(login("c3", "mallory", "x"))).await;
        assert_eq!(code, bad, "v5={v5}: unknown user");
        let (_, code, _) = RawClient::connect(addr, &with(Connect::new("c4"))).await;
        assert_eq!(
            code, not_authorized,
            "v5={v5}: anonymous while anonymous access is off"
        );
        let (_, code, _) =
            RawClient::connect(addr, &with(login("c5", "alice", "wonderland"))).await;
        assert_eq!(
            code, good,
            "v5={v5}: a success clears the address's failures"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_from_one_address_are_slowed_down() {
    let broker = Broker::start(&settings(), None).await.unwrap();
    let addr = broker.local_addrs()[0];
    for attempt in 0..4 {
        let (_, code, _) =
            RawClient::connect(addr, &login(&format!("guess{attempt}"), "alice", "guess")).await;
        assert_eq!(code, 4);
    }
    // The brake holds instead of refusing (a shared address must not lock its other users out): after
    // the 4th failure the next login is held 1 s, then checked.
    let held_from = std::time::Instant::now();
    let (_, code, _) = RawClient::connect(addr, &login("right", "alice", "wonderland")).await;
    assert_eq!(code, 0, "the right password is accepted after the hold");
    let waited = held_from.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "accepted after {waited:?}, before the 1 s hold ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rights_v3_acks_and_drops_v5_says_not_authorized() {
    let (tap_tx, mut tap_rx) = sensorgate::broker::tap(vec!["#".into()], 1024);
    let broker = Broker::start(&settings(), Some(tap_tx)).await.unwrap();
    let addr = broker.local_addrs()[0];
    let (mut watcher, code, _) =
        RawClient::connect(addr, &login("watcher", "alice", "wonderland")).await;
    assert_eq!(code, 0);
    assert_eq!(watcher.subscribe("#", 1, 1).await, vec![1]);

    let (mut alice, _, _) =
        RawClient::connect(addr, &login("alice-pub", "alice", "wonderland")).await;
    alice.publish("secret/x", b"no", 1, false, 1, false).await;
    alice.expect(PUBACK).await;
    alice
        .publish("sensorgate/kitchen", b"forged", 1, false, 2, false)
        .await;
    alice.expect(PUBACK).await;
    alice.publish("home/x", b"yes", 1, false, 3, false).await;
    alice.expect(PUBACK).await;

    let got = watcher.collect_publishes(Duration::from_millis(800)).await;
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        vec!["home/x"],
        "only the writable publish is delivered"
    );
    let tapped = tap_rx.recv().await.unwrap();
    assert_eq!(tapped.topic, "home/x");
    assert!(
        tap_rx.try_recv().is_err(),
        "refused publishes never reach the uplink tap"
    );

    let (mut alice5, code, _) = RawClient::connect(
        addr,
        &Connect {
            v5: true,
            ..login("alice-v5", "alice", "wonderland")
        },
    )
    .await;
    assert_eq!(code, 0);
    alice5.publish("secret/x", b"no", 1, false, 9, false).await;
    let puback = alice5.expect(PUBACK).await;
    assert_eq!(
        puback.body.get(2).copied(),
        Some(0x87),
        "v5 PUBACK reason: not authorized"
    );
    alice5.publish("home/y", b"yes", 1, false, 10, false).await;
    let puback = alice5.expect(PUBACK).await;
    assert_eq!(puback.body.get(2).copied().unwrap_or(0), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_retained_messages_respect_read_rights() {
    let broker = Broker::start(&settings(), None).await.unwrap();
    let addr = broker.local_addrs()[0];
    support::gateway_publish(&broker, "sensorgate/kitchen", "21.5", true).await;
    support::gateway_publish(&broker, "secret/key", "hunter2", true).await;

    let (mut alice, _, _) =
        RawClient::connect(addr, &login("alice-sub", "alice", "wonderland")).await;
    assert_eq!(
        alice.subscribe("secret/#", 1, 1).await,
        vec![0x80],
        "nothing readable can match"
    );
    assert_eq!(
        alice.subscribe("#", 1, 2).await,
        vec![1],
        "granted; delivery is filtered"
    );
    let retained = alice.collect_publishes(Duration::from_millis(800)).await;
    let topics: Vec<&str> = retained.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        vec!["sensorgate/kitchen"],
        "retained secret/key is never delivered"
    );
    assert!(retained[0].retain);

    support::gateway_publish(&broker, "secret/live", "x", false).await;
    support::gateway_publish(&broker, "home/live", "y", false).await;
    let live = alice.collect_publishes(Duration::from_millis(800)).await;
    let topics: Vec<&str> = live.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["home/live"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_client_placeholders_expand_per_client() {
    let broker = Broker::start(&settings(), None).await.unwrap();
    let addr = broker.local_addrs()[0];
    let (mut node, code, _) = RawClient::connect(addr, &login("n1", "node", "n0de")).await;
    assert_eq!(code, 0);
    assert_eq!(node.subscribe("users/node/#", 1, 1).await, vec![1]);
    assert_eq!(node.subscribe("users/other/#", 1, 2).await, vec![0x80]);
    assert_eq!(node.subscribe("clients/n1/#", 1, 3).await, vec![1]);
    assert_eq!(node.subscribe("clients/n2/#", 1, 4).await, vec![0x80]);
    let (mut alice, _, _) =
        RawClient::connect(addr, &login("alice-w", "alice", "wonderland")).await;
    assert_eq!(alice.subscribe("sensorgate/#", 1, 1).await, vec![1]);
    node.publish("users/node/out", b"mine", 1, false, 5, false)
        .await;
    node.publish("users/other/out", b"theirs", 1, false, 6, false)
        .await;
    node.publish("sensorgate/cmd/reboot", b"explicit", 1, false, 7, false)
        .await;
    node.publish("sensorgate/kitchen", b"forged", 1, false, 8, false)
        .await;
    let got = node.collect_publishes(Duration::from_millis(800)).await;
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["users/node/out"]);
    let got = alice.collect_publishes(Duration::from_millis(500)).await;
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        vec!["sensorgate/cmd/reboot"],
        "a write rule inside the gateway's topics grants exactly those topics"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_to_a_topic_its_client_may_not_write_is_never_published() {
    let (tap_tx, mut tap_rx) = sensorgate::broker::tap(vec!["#".into()], 1024);
    let broker = Broker::start(&settings(), Some(tap_tx)).await.unwrap();
    let addr = broker.local_addrs()[0];
    let (mut watcher, _, _) =
        RawClient::connect(addr, &login("watcher", "alice", "wonderland")).await;
    assert_eq!(watcher.subscribe("#", 1, 1).await, vec![1]);

    let forbidden = Connect {
        will: Some(Will {
            topic: "sensorgate/bridge/status",
            payload: b"offline",
            qos: 1,
            retain: true,
        }),
        ..login("forger", "alice", "wonderland")
    };
    let (client, code, _) = RawClient::connect(addr, &forbidden).await;
    assert_eq!(code, 5, "refused at CONNECT, like mosquitto");
    drop(client);

    let allowed = Connect {
        will: Some(Will {
            topic: "home/alice/status",
            payload: b"offline",
            qos: 1,
            retain: false,
        }),
        ..login("honest", "alice", "wonderland")
    };
    let (client, code, _) = RawClient::connect(addr, &allowed).await;
    assert_eq!(code, 0);
    drop(client); // socket closed without DISCONNECT: the will fires
    let got = watcher.collect_publishes(Duration::from_secs(2)).await;
    let topics: Vec<&str> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, vec!["home/alice/status"]);
    let tapped = tokio::time::timeout(Duration::from_secs(2), tap_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tapped.topic, "home/alice/status");
    assert!(tap_rx.try_recv().is_err());
    let retained: Vec<String> = broker
        .retained_messages()
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert!(retained.is_empty(), "{retained:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_defaults_read_everything_and_write_all_but_the_gateway_topics() {
    let broker = Broker::start(&support::local_settings(), None)
        .await
        .unwrap();
    let addr = broker.local_addrs()[0];
    let mut sub = mqtt::subscribe(addr, "anon-sub", "#", 1).await;
    let (mut anon, code, _) = RawClient::connect(addr, &Connect::new("anon-pub")).await;
    assert_eq!(code, 0);
    anon.publish("sensorgate/kitchen", b"forged", 1, false, 1, false)
        .await;
    anon.expect(PUBACK).await;
    anon.publish("zigbee2mqtt/lamp/set", b"ON", 1, false, 2, false)
        .await;
    anon.expect(PUBACK).await;
    support::gateway_publish(&broker, "sensorgate/kitchen", "real", false).await;
    let mut seen = Vec::new();
    let first = sub
        .wait_for(Duration::from_secs(3), &mut seen, |m| {
            m.topic.starts_with("zigbee")
        })
        .await;
    assert!(first.is_some());
    let real = sub
        .wait_for(Duration::from_secs(3), &mut seen, |m| {
            m.topic == "sensorgate/kitchen"
        })
        .await
        .expect("the gateway's own publish arrives");
    assert_eq!(real.text(), "real");
    assert!(seen.iter().all(|m| m.text() != "forged"), "{seen:?}");
}
