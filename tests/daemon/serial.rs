//! The daemon end to end: the real binary, a pseudo-terminal as its serial dongle, a real MQTT client
//! (rumqttc) on 127.0.0.1. Every wait is bounded.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;

use std::path::Path;
use std::time::Duration;

use daemon::Daemon;
use pty::FakeDongle;

/// The configuration, its placeholders filled by `start`.
fn base_config() -> String {
    ConfigBuilder::new("test-gw")
        .broker(r#"retained_sync = "1s""#)
        .publish(r#"stats_interval = "1s""#)
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
baud = 115200
framing = "lines"
payload = "json"

[devices]
offline_after = "{offline_after}"
dedup_window = "10s"

[[device]]
name = "kitchen"
source = "uart0"
address = "17"
"#,
        )
        .toml()
}

const OPENED: &str = "open at 115200 baud";

fn start(dir: &Path, offline_after: &str) -> (Daemon, FakeDongle) {
    let link = dir.join("usb-FTDI_FT232R_A50285BI-if00-port0");
    let dongle = FakeDongle::plug(&link);
    let config = base_config()
        .replace("{link}", &link.display().to_string())
        .replace("{offline_after}", offline_after);
    let daemon = Daemon::start(dir, &config);
    daemon.wait_for_log(OPENED, 1, Duration::from_secs(10));
    (daemon, dongle)
}

fn json(value: &serde_json::Value) -> String {
    format!("{value}\n")
}

fn state(message: &mqtt::Received) -> serde_json::Value {
    serde_json::from_slice(&message.payload).expect("state is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_gets_the_retained_state_of_500_devices_at_qos_0_and_1() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), "15m");
    let mut last = mqtt::subscribe(
        daemon.addr,
        "watch-last",
        "sensorgate/uart0-1500/temperature",
        1,
    )
    .await;
    for id in 1001..=1500 {
        let line = json(
            &serde_json::json!({"id": id, "seq": 1, "temperature": 20.0 + f64::from(id) / 100.0, "ok": true}),
        );
        dongle.write(line.as_bytes()).await;
    }
    let mut seen = Vec::new();
    last.wait_for(Duration::from_secs(30), &mut seen, |m| {
        m.topic == "sensorgate/uart0-1500/temperature"
    })
    .await
    .expect("the last device's reading arrives");

    for level in [0u8, 1] {
        let mut late =
            mqtt::subscribe(daemon.addr, &format!("late-{level}"), "sensorgate/#", level).await;
        // Retained messages come in the store's order, so the gateway's own availability may be last.
        let devices = |got: &std::collections::BTreeMap<String, mqtt::Received>| {
            got.contains_key("sensorgate/gateway/availability")
                && (1001..=1500).all(|id| {
                    got.contains_key(&format!("sensorgate/uart0-{id}"))
                        && got.contains_key(&format!("sensorgate/uart0-{id}/availability"))
                        && got.contains_key(&format!("sensorgate/uart0-{id}/temperature"))
                        && got.contains_key(&format!("sensorgate/uart0-{id}/ok"))
                })
        };
        let got = late.collect_until(Duration::from_secs(30), devices).await;
        assert!(
            devices(&got),
            "QoS {level}: all 500 devices' retained topics arrive (got {}, e.g. {:?})",
            got.len(),
            got.keys()
                .filter(|t| !t.contains("uart0-"))
                .chain(got.keys().take(6))
                .collect::<Vec<_>>()
        );
        let device = state(&got["sensorgate/uart0-1250"]);
        assert_eq!(device["temperature"], serde_json::json!(32.5));
        assert_eq!(device["seq"], serde_json::json!(1));
        assert_eq!(device["source"], serde_json::json!("uart0"));
        assert!(
            device["last_seen"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{device}"
        );
        assert_eq!(got["sensorgate/uart0-1250/temperature"].text(), "32.5");
        assert_eq!(got["sensorgate/uart0-1250/ok"].text(), "true");
        assert_eq!(got["sensorgate/uart0-1250/availability"].text(), "online");
        assert!(
            got["sensorgate/uart0-1250"].retain && got["sensorgate/gateway/availability"].retain
        );
        assert_eq!(got["sensorgate/gateway/availability"].text(), "online");
    }
    drop(dongle);
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_goes_offline_after_silence_and_online_when_heard_again() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), "1s");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/kitchen/availability", 1).await;
    let mut seen = Vec::new();
    dongle
        .write(json(&serde_json::json!({"id": 17, "temperature": 21.5})).as_bytes())
        .await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| m.text() == "online")
        .await
        .expect("online on first frame");
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| {
        m.text() == "offline"
    })
    .await
    .expect("offline after silence");
    dongle
        .write(json(&serde_json::json!({"id": 17, "temperature": 21.6})).as_bytes())
        .await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| m.text() == "online")
        .await
        .expect("online again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplugged_dongle_publishes_wills_and_its_devices_come_back_after_replug() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), "15m");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/kitchen/availability", 1).await;
    let mut seen = Vec::new();
    dongle
        .write(json(&serde_json::json!({"id": 17, "temperature": 21.5})).as_bytes())
        .await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| m.text() == "online")
        .await
        .expect("online");

    dongle.unplug();
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| {
        m.text() == "offline"
    })
    .await
    .unwrap_or_else(|| panic!("will on unplug:\n{}", daemon.log()));

    dongle.replug();
    daemon.wait_for_log(OPENED, 2, Duration::from_secs(30));
    dongle
        .write(json(&serde_json::json!({"id": 17, "temperature": 21.7})).as_bytes())
        .await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| m.text() == "online")
        .await
        .expect("online after replug");
    let (status, _) = daemon.stop();
    assert!(
        status.success(),
        "the daemon survived the unplug and stops cleanly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_malformed_frames_are_dropped_counted_and_do_not_stop_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), "15m");
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/kitchen", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    let first = json(&serde_json::json!({"id": 17, "seq": 1, "temperature": 21.0}));
    dongle.write(first.as_bytes()).await;
    dongle.write(first.as_bytes()).await; // a retransmission: same device, same seq
    dongle.write(b"\xff\xfe\x00binary noise\x80\n").await; // not UTF-8
    dongle.write(b"[1, 2, 3]\n").await; // JSON, but not an object
    dongle.write(b"{\"id\": 17, \"temperature\": \n").await; // truncated
    dongle
        .write(json(&serde_json::json!({"id": 17, "seq": 2, "temperature": 22.0})).as_bytes())
        .await;

    let mut seen = Vec::new();
    let one = states
        .wait_for(Duration::from_secs(10), &mut seen, |_| true)
        .await
        .expect("first reading");
    assert_eq!(state(&one)["seq"], 1);
    let two = states
        .wait_for(Duration::from_secs(10), &mut seen, |_| true)
        .await
        .expect("next reading");
    assert_eq!(
        state(&two)["seq"],
        2,
        "the duplicate was not published, the good frame after the bad ones was"
    );

    let counted = stats
        .wait_for(Duration::from_secs(10), &mut seen, |m| {
            let stats: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            let uart = stats.pointer("/sources/uart0").cloned().unwrap_or_default();
            uart["duplicates"] == 1 && uart["frame_errors"] == 1 && uart["decode_errors"] == 2
        })
        .await;
    assert!(
        counted.is_some(),
        "stats count 1 duplicate, 1 frame error, 2 decode errors; saw {:?}",
        seen.last().map(|m| m.text())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_publishes_offline_and_state_is_restored_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), "15m");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+/availability", 1).await;
    let mut seen = Vec::new();
    dongle
        .write(json(&serde_json::json!({"id": 17, "temperature": 19.5})).as_bytes())
        .await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| {
        m.topic == "sensorgate/kitchen/availability" && m.text() == "online"
    })
    .await
    .expect("online");

    let port = daemon.addr.port();
    let (status, took) = daemon.stop();
    assert!(status.success(), "exit 0 after SIGTERM, got {status}");
    assert!(took < Duration::from_secs(2), "stopped in {took:?}");
    let will = sub
        .wait_for(Duration::from_secs(5), &mut seen, |m| {
            m.topic == "sensorgate/kitchen/availability" && m.text() == "offline"
        })
        .await;
    assert!(
        will.is_some(),
        "the device's will was published before the exit: {seen:?}"
    );

    let config = std::fs::read_to_string(dir.path().join("sensorgate.toml")).unwrap();
    let restarted = Daemon::start_on(dir.path(), &config, port);
    let mut late = mqtt::subscribe(restarted.addr, "late", "sensorgate/#", 1).await;
    let got = late
        .collect_until(Duration::from_secs(10), |got| {
            got.contains_key("sensorgate/kitchen")
                && got.contains_key("sensorgate/kitchen/availability")
        })
        .await;
    assert_eq!(
        state(&got["sensorgate/kitchen"])["temperature"],
        serde_json::json!(19.5),
        "last state restored"
    );
    assert_eq!(
        got["sensorgate/kitchen/availability"].text(),
        "offline",
        "offline until heard"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_restored_devices_come_back_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), "15m");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/kitchen/availability", 1).await;
    let mut seen = Vec::new();
    dongle
        .write(json(&serde_json::json!({"id": 17, "temperature": 18.0})).as_bytes())
        .await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| m.text() == "online")
        .await
        .expect("online");
    // The retained log is written within retained_sync; wait for it rather than guess.
    let snapshot = daemon
        .config_path
        .parent()
        .unwrap()
        .join("state/retained.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !std::fs::read(&snapshot).is_ok_and(|b| {
        let topic = b"sensorgate/kitchen/availability";
        b.windows(topic.len()).any(|w| w == topic)
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot written within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let port = daemon.addr.port();
    daemon.kill();

    let config = std::fs::read_to_string(dir.path().join("sensorgate.toml")).unwrap();
    let restarted = Daemon::start_on(dir.path(), &config, port);
    let mut late = mqtt::subscribe(restarted.addr, "late", "sensorgate/kitchen/#", 1).await;
    let got = late
        .collect_until(Duration::from_secs(10), |got| {
            got.contains_key("sensorgate/kitchen/availability")
        })
        .await;
    assert_eq!(got["sensorgate/kitchen/availability"].text(), "offline");
}
