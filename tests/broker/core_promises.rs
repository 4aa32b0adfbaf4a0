//! The embedded broker's core promises, with a real MQTT client: a late subscriber gets every retained
//! message at once (at QoS 0 and 1), empty retained publishes clear, and retained state survives a restart
//! (the last snapshot holds the latest state even when a periodic write is under way).

use sensorgate_testkit::mqtt;

use std::time::Duration;

use sensorgate::broker::{Broker, BrokerSettings, ListenerSettings};
use sensorgate::model::Message;

fn settings(state_dir: Option<std::path::PathBuf>) -> BrokerSettings {
    BrokerSettings {
        listeners: vec![ListenerSettings {
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        }],
        state_dir,
        ..BrokerSettings::default()
    }
}

fn retained(topic: String, payload: &str) -> Message {
    Message {
        topic,
        payload: payload.as_bytes().to_vec(),
        qos: 1,
        retain: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_gets_all_5000_retained_at_qos_0_and_1() {
    let broker = Broker::start(&settings(None), None).await.unwrap();
    let addr = broker.local_addrs()[0];
    for i in 0..5000 {
        broker
            .publish(&retained(
                format!("sensorgate/dev-{i}/temperature"),
                &i.to_string(),
            ))
            .await
            .unwrap();
    }
    for level in [0u8, 1] {
        let mut late = mqtt::subscribe(addr, &format!("late-{level}"), "sensorgate/#", level).await;
        let got = late
            .collect_until(Duration::from_secs(30), |m| m.len() == 5000)
            .await;
        assert_eq!(got.len(), 5000, "QoS {level}: every retained topic arrives");
        assert!(got.values().all(|m| m.retain));
        assert_eq!(got["sensorgate/dev-4321/temperature"].text(), "4321");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_retained_publish_clears_and_plain_empty_publish_does_not() {
    let broker = Broker::start(&settings(None), None).await.unwrap();
    broker
        .publish(&retained("a/kept".into(), "1"))
        .await
        .unwrap();
    broker
        .publish(&retained("a/cleared".into(), "1"))
        .await
        .unwrap();
    broker
        .publish(&Message {
            topic: "a/kept".into(),
            payload: vec![],
            qos: 1,
            retain: false,
        })
        .await
        .unwrap();
    broker
        .publish(&retained("a/cleared".into(), ""))
        .await
        .unwrap();
    let topics: Vec<String> = broker
        .retained_messages()
        .await
        .into_iter()
        .map(|m| m.topic)
        .collect();
    assert_eq!(topics, vec!["a/kept".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(&settings(Some(dir.path().to_path_buf())), None)
        .await
        .unwrap();
    broker
        .publish(&retained("sensorgate/kitchen".into(), "{\"t\":21.5}"))
        .await
        .unwrap();
    broker.shutdown().await.unwrap();

    let broker = Broker::start(&settings(Some(dir.path().to_path_buf())), None)
        .await
        .unwrap();
    let mut sub =
        mqtt::subscribe(broker.local_addrs()[0], "after-restart", "sensorgate/#", 1).await;
    let got = sub
        .collect_until(Duration::from_secs(10), |m| !m.is_empty())
        .await;
    assert_eq!(got["sensorgate/kitchen"].text(), "{\"t\":21.5}");
}

/// The periodic snapshot write and the last one at shutdown must not overlap: they once shared the
/// temporary file, so the last write's rename failed (seen in CI) or an older store landed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_a_periodic_snapshot_saves_the_latest_state() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..30 {
        let broker = Broker::start(
            &BrokerSettings {
                snapshot_interval: Duration::from_millis(1),
                ..settings(Some(dir.path().to_path_buf()))
            },
            None,
        )
        .await
        .unwrap();
        for value in 0..50 {
            broker
                .publish(&retained(
                    "sensorgate/kitchen".into(),
                    &format!("{round}.{value}"),
                ))
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        if let Err(error) = broker.shutdown().await {
            panic!("round {round}: shutdown failed: {error}");
        }
        let restored = sensorgate::broker::retained_log::read_for_restore(dir.path());
        assert!(
            restored.error.is_none(),
            "round {round}: {:?}",
            restored.error
        );
        let payloads: Vec<String> = restored
            .messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        assert_eq!(payloads, vec![format!("{round}.49")], "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_sees_in_process_and_client_publishes() {
    let (tx, mut rx) = sensorgate::broker::tap(vec!["#".into()], 1024);
    let broker = Broker::start(&settings(None), Some(tx)).await.unwrap();
    broker
        .publish(&retained("from/gateway".into(), "1"))
        .await
        .unwrap();
    let sub = mqtt::subscribe(broker.local_addrs()[0], "publisher", "unused/x", 0).await;
    sub.client
        .publish("from/client", rumqttc::QoS::AtLeastOnce, false, "2")
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.topic.as_str(), second.topic.as_str()),
        ("from/gateway", "from/client")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_carries_only_what_its_filters_select_and_counts_what_finds_it_full() {
    let (tx, mut rx) = sensorgate::broker::tap(vec!["kept/#".into()], 4);
    let broker = Broker::start(&settings(None), Some(tx)).await.unwrap();
    broker
        .publish(&retained("ignored/x".into(), "0"))
        .await
        .unwrap();
    for i in 0..6 {
        broker
            .publish(&retained(format!("kept/{i}"), "1"))
            .await
            .unwrap();
    }
    let mut tapped = Vec::new();
    while let Ok(message) = rx.try_recv() {
        tapped.push(message.topic);
    }
    assert_eq!(tapped, vec!["kept/0", "kept/1", "kept/2", "kept/3"]);
    assert_eq!(broker.tap_dropped(), 2, "two found the tap full");
    assert_eq!(broker.counters().dropped_for_the_uplink, 2);
}
