//! Which join requests are replays by the device's LoRaWAN version (a 1.0.4 device's DevNonce is a
//! counter, across a restart), and lost sessions failing closed for ABP devices until
//! `sensorgate reset-state`: through the daemon with the Python device.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use super::{
    check_config, config, daemon_config, device_json, device_with, devices, free_udp_port, network,
    wait_counters, wait_state, write_keys, WAIT,
};

/// The scenario's configuration on `udp` with the door speaking LoRaWAN `version`, its keys written.
fn door_speaking(dir: &std::path::Path, udp: u16, version: &str) -> ConfigBuilder {
    write_keys(dir);
    let door = format!("lorawan_version = {version:?}");
    devices(network(udp, ""), dir, &door, r#"fports = { 2 = "lpp" }"#)
}

async fn answered(dir: &std::path::Path, udp: u16, nonces: &[u16]) -> Vec<bool> {
    let report = device_json("joins", dir, udp, serde_json::json!({ "nonces": nonces })).await;
    serde_json::from_value(report["answered"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_0_4_device_joins_only_with_a_dev_nonce_above_its_last_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let config = door_speaking(dir.path(), udp, "1.0.4").toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    // 4 was never used, but a 1.0.4 device counts up: it is a replay of an old request.
    assert_eq!(answered(dir.path(), udp, &[5, 4]).await, [true, false]);
    let counters = wait_counters(&mut stats, "one join refused", |c| c["join_refused"] == 1).await;
    assert_eq!(counters["joins"], 1, "{counters}");
    let port = daemon.addr.port();
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");

    let daemon = Daemon::start_on(dir.path(), &config, port);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    assert_eq!(answered(dir.path(), udp, &[5, 6]).await, [false, true]);
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_sessions_refuse_abp_frames_until_reset_state() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    write_keys(dir.path());
    let config = config(dir.path(), udp).toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    device_with("abp", dir.path(), udp, &[1, 2]).await;
    wait_state(&mut states, "meter", |s| s["fcnt"] == 2).await;
    let port = daemon.addr.port();
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
    // Both copies damaged: the last counter 2 is unknown now.
    let state = dir.path().join("state");
    for slot in 0..2 {
        let path = state.join(format!("lorawan-sessions-lns.{slot}"));
        assert!(path.exists(), "{}", path.display());
        std::fs::write(&path, b"damaged").unwrap();
    }

    let daemon = Daemon::start_on(dir.path(), &config, port);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    daemon.wait_for_log("sensorgate reset-state", 1, WAIT);
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    // Counter 1 again (a replay, had the counters started from 0) and a new 3: both refused.
    device_with("abp", dir.path(), udp, &[1, 3]).await;
    let counters = wait_counters(&mut stats, "two refused", |c| c["replayed"] == 2).await;
    assert_eq!(counters["uplinks"], 0, "{counters}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
    // The clean stop wrote nothing over the damaged copies.
    let damaged = std::fs::read(state.join("lorawan-sessions-lns.0")).unwrap();
    assert_eq!(damaged, b"damaged");

    let reset = std::process::Command::new(sensorgate_testkit::daemon::sensorgate_binary())
        .arg("-c")
        .arg(daemon_config(&dir))
        .arg("reset-state")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&reset.stdout);
    assert!(reset.status.success(), "{said}");
    assert!(
        said.contains("lorawan-sessions-lns") && said.contains("moved aside"),
        "{said}"
    );

    let daemon = Daemon::start_on(dir.path(), &config, port);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut states = mqtt::subscribe(daemon.addr, "watch-2", "sensorgate/+", 1).await;
    device_with("abp", dir.path(), udp, &[4]).await;
    wait_state(&mut states, "meter", |s| s["fcnt"] == 4).await;
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_lorawan_1_1_device_is_refused_at_its_key_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = door_speaking(dir.path(), free_udp_port(), "1.1").toml_at(dir.path(), 1883);
    let (code, said, line) = check_config(dir.path(), &config, "lorawan_version");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!("sensorgate.toml:{line}:"))
            && said.contains("LoRaWAN 1.1 devices are not supported")
            && said.contains("\"1.0.4\""),
        "{said}"
    );
}
