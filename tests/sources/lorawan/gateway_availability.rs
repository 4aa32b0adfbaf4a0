//! A packet forwarder's availability through the daemon: online from its first PULL_DATA, offline
//! after `keepalive` x 3 without one, and the device only it heard going offline with it.

use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use super::{device_with, devices, free_udp_port, network, wait_counters, write_keys, WAIT};

const GATEWAY_A: &str = "aa555a0000000001";

/// The next message on `topic` with `payload` (bounded).
async fn wait_message(watch: &mut mqtt::Subscriber, topic: &str, payload: &str) {
    let mut seen = Vec::new();
    let found = watch
        .wait_for(WAIT, &mut seen, |m| m.topic == topic && m.text() == payload)
        .await;
    assert!(
        found.is_some(),
        "no {payload} on {topic}; seen: {:?}",
        seen.iter()
            .map(|m| (m.topic.clone(), m.text()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_pulling_goes_offline_with_the_devices_only_it_heard() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let udp = free_udp_port();
    let network = network(udp, r#"keepalive = "1s""#);
    let config = devices(network, dir.path(), "", r#"fports = { 2 = "lpp" }"#);
    let daemon = Daemon::start(dir.path(), &config.toml());
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut watch = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let availability = format!("sensorgate/gateway/lorawan/{GATEWAY_A}/availability");
    // Gateway A pulls once and forwards the meter's uplink, then its forwarder is gone.
    device_with("abp", dir.path(), udp, &[1]).await;
    wait_message(&mut watch, &availability, "online").await;
    wait_message(&mut watch, "sensorgate/meter/availability", "online").await;
    // 3 keepalives of 1 s without PULL_DATA.
    wait_message(&mut watch, &availability, "offline").await;
    wait_message(&mut watch, "sensorgate/meter/availability", "offline").await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    let counters = wait_counters(&mut stats, "gateway offline", |c| {
        c["gateways"][GATEWAY_A]["online"] == false
    })
    .await;
    assert_eq!(counters["gateways"][GATEWAY_A]["packets"], 1, "{counters}");
    // Retained for a late subscriber.
    let mut late = mqtt::subscribe(daemon.addr, "late", &availability, 1).await;
    wait_message(&mut late, &availability, "offline").await;
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}
