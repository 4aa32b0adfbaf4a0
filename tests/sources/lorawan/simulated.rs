//! The demo's LoRaWAN device (`simulate` of its semtech-udp source): a simulated OTAA device behind a
//! simulated packet forwarder, through the real daemon running `config/demo.toml` (the testkit's
//! `config::demo()`: ports the kernel's). It joins (the device opens the JoinAccept), its LPP
//! readings publish with their LoRaWAN metadata, availability and Home Assistant discovery, a
//! confirmed uplink is acknowledged, its session survives a clean restart and a kill -9 without a new
//! join, and a taken forwarder port does not stop the rest of the demo. Outside the demo: an ABP device
//! simulated behind a `gateways` list that does not name the simulated gateway, and `simulate` checked
//! by check-config as `FILE:LINE:COL`. Every wait is bounded.

use std::time::Duration;

use sensorgate::lorawan::simulated_forwarder::gateway_eui;
use sensorgate_testkit::config::demo;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use super::wait_state;

/// The demo's LoRaWAN source and its simulated device.
const SOURCE: &str = "lorawan";
const DEVICE: &str = "lorawan-1";
const DEV_EUI: &str = "70b3d57ed0000d01";
/// Long enough for a join (the source's first PULL_DATA, the JoinRequest, the dedup window) and the
/// first uplink a second later, on a loaded machine.
const JOINED_WITHIN: Duration = Duration::from_secs(20);

/// The demo with its simulated device sending every second, stats every second, and the LoRaWAN
/// source's `bind` replaced by `bind` when given.
fn fast_demo(bind: Option<&str>) -> String {
    let mut config = demo();
    let publish = config
        .get_mut("publish")
        .and_then(toml::Value::as_table_mut)
        .expect("[publish] in the demo");
    publish.insert("stats_interval".into(), "1s".into());
    let lorawan = config
        .get_mut("source")
        .and_then(toml::Value::as_array_mut)
        .expect("[[source]] in the demo")
        .iter_mut()
        .filter_map(toml::Value::as_table_mut)
        .find(|s| s.get("name").and_then(toml::Value::as_str) == Some(SOURCE))
        .expect("the demo's LoRaWAN source");
    assert_eq!(
        lorawan.get("simulate").map(ToString::to_string),
        Some(format!("[\"{DEVICE}\"]"))
    );
    lorawan.insert("simulate_interval".into(), "1s".into());
    if let Some(bind) = bind {
        lorawan.insert("bind".into(), bind.into());
    }
    toml::to_string(&config).unwrap()
}

/// The LoRaWAN counters of the demo's source once `check` holds (bounded).
async fn wait_counters(
    stats: &mut mqtt::Subscriber,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    stats
        .stats_until(what, &format!("/lorawan/{SOURCE}"), JOINED_WITHIN, check)
        .await
}

/// The next state of the device above `fcnt` (or any, with `None`), bounded by [`JOINED_WITHIN`].
async fn state_after(watch: &mut mqtt::Subscriber, fcnt: Option<u64>) -> serde_json::Value {
    let topic = format!("sensorgate/{DEVICE}");
    let mut seen = Vec::new();
    let found = watch
        .wait_for(JOINED_WITHIN, &mut seen, |m| {
            m.topic == topic
                && serde_json::from_str::<serde_json::Value>(&m.text()).is_ok_and(|s| {
                    s["fcnt"]
                        .as_u64()
                        .is_some_and(|f| fcnt.is_none_or(|after| f > after))
                })
        })
        .await;
    let message = found.unwrap_or_else(|| {
        panic!(
            "no state of {DEVICE} above fcnt {fcnt:?}; seen: {:?}",
            seen.iter()
                .map(|m| (&m.topic, m.text()))
                .collect::<Vec<_>>()
        )
    });
    serde_json::from_str(&message.text()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_joins_its_simulated_device_and_publishes_its_readings() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &fast_demo(None));
    let mut watch = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let mut discovery = mqtt::subscribe(daemon.addr, "ha", "homeassistant/#", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    // The device opened its JoinAccept (MIC checked with its AppKey, keys derived) and the server
    // accepted its first uplink with the keys it derived: both sides derived the same.
    let first = wait_state(&mut watch, DEVICE, |s| s["fcnt"] == 0).await;
    daemon.wait_for_log(
        "LoRaWAN device lorawan-1 joined as DevAddr",
        1,
        JOINED_WITHIN,
    );
    daemon.wait_for_log("lorawan-1 received its JoinAccept", 1, JOINED_WITHIN);
    let gateway = format!("{:016x}", gateway_eui(SOURCE));
    assert_eq!(first["gateway"], gateway.as_str(), "{first}");
    assert_eq!(first["fport"], 1, "{first}");
    assert_eq!(first["source"], SOURCE, "{first}");
    assert_eq!(first["sf"], 7, "{first}");
    let rssi = first["rssi"].as_f64().expect("rssi");
    assert!((-95.0..=-55.0).contains(&rssi), "{first}");
    assert!(first["snr"].as_f64().is_some(), "{first}");
    let temperature = first["temperature_1"].as_f64().expect("temperature_1");
    assert!((5.0..=35.0).contains(&temperature), "{first}");
    assert!(first["relative_humidity_2"].as_f64().is_some(), "{first}");
    assert!(first["voltage_3"].as_f64().is_some(), "{first}");
    // FCntUp goes up.
    wait_state(&mut watch, DEVICE, |s| s["fcnt"] == 1).await;

    // Like every device: its availability and its Home Assistant entities.
    let availability = format!("sensorgate/{DEVICE}/availability");
    let mut late = mqtt::subscribe(daemon.addr, "late", &availability, 1).await;
    let online = late
        .wait_for(JOINED_WITHIN, &mut Vec::new(), |m| {
            m.topic == availability && m.text() == "online" && m.retain
        })
        .await;
    assert!(online.is_some(), "{DEVICE} never online");
    let entity = discovery
        .wait_for(JOINED_WITHIN, &mut Vec::new(), |m| {
            m.topic.contains(DEV_EUI) && m.topic.ends_with("temperature_1/config")
        })
        .await;
    let entity = entity.expect("a Home Assistant temperature entity of the LoRaWAN device");
    assert!(entity.text().contains(DEVICE), "{}", entity.text());

    // Now and then a confirmed uplink: acknowledged by the server, the ACK taken by the device.
    daemon.wait_for_log("(ack true)", 1, Duration::from_secs(60));
    let counters = wait_counters(&mut stats, "a join, uplinks and an ACK", |c| {
        c["joins"] == 1 && c["uplinks"].as_u64() >= Some(2) && c["downlinks"].as_u64() >= Some(2)
    })
    .await;
    // The simulated gateway was taken though the demo lists none but "any", and is online.
    assert_eq!(counters["gateways"][&gateway]["online"], true, "{counters}");
    assert_eq!(counters["unknown_gateway_datagrams"], 0, "{counters}");

    let key = std::fs::read_to_string("config/demo-lorawan.key").unwrap();
    assert!(!daemon.log().contains(key.trim()), "the AppKey in the log");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_device_keeps_its_session_across_a_restart_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let config = fast_demo(None);
    let daemon = Daemon::start(dir.path(), &config);
    let port = daemon.addr.port();
    let mut watch = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let before = state_after(&mut watch, Some(1)).await;
    let last = before["fcnt"].as_u64().unwrap();
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");

    // A clean stop wrote the counters exactly: the device goes on above its last counter, without
    // joining again (the server's stats count no join and no refusal).
    let daemon = Daemon::start_on(dir.path(), &config, port);
    let mut watch = mqtt::subscribe(daemon.addr, "watch-2", "sensorgate/#", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats-2", "sensorgate/gateway/stats", 0).await;
    let resumed = state_after(&mut watch, Some(last)).await;
    let resumed_at = resumed["fcnt"].as_u64().unwrap();
    let counters = wait_counters(&mut stats, "uplinks after the restart", |c| {
        c["uplinks"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(counters["joins"], 0, "{counters}");
    assert_eq!(counters["replayed"], 0, "{counters}");
    assert!(!daemon.log().contains("received its JoinAccept"));

    // A kill -9: the stored mark is ahead of the last counter; the device resumes above it.
    daemon.kill();
    let daemon = Daemon::start_on(dir.path(), &config, port);
    let mut watch = mqtt::subscribe(daemon.addr, "watch-3", "sensorgate/#", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats-3", "sensorgate/gateway/stats", 0).await;
    state_after(&mut watch, Some(resumed_at)).await;
    let counters = wait_counters(&mut stats, "uplinks after the kill", |c| {
        c["uplinks"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(counters["joins"], 0, "{counters}");
    assert_eq!(counters["replayed"], 0, "{counters}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_forwarder_port_does_not_stop_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let daemon = Daemon::start(dir.path(), &fast_demo(Some(&bind)));
    let mut watch = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    // The rest of the demo runs; the LoRaWAN source says why it waits.
    let mut seen = Vec::new();
    let other = watch
        .wait_for(JOINED_WITHIN, &mut seen, |m| {
            m.text().contains("\"source\":\"sim\"")
        })
        .await;
    assert!(other.is_some(), "the simulator's devices did not publish");
    daemon.wait_for_log(&format!("cannot bind {bind}"), 1, JOINED_WITHIN);
    assert!(
        !seen
            .iter()
            .any(|m| m.topic == format!("sensorgate/{DEVICE}")),
        "the LoRaWAN device published without its source's port"
    );
    // The port is freed: the source binds it at its next try and the device joins.
    drop(taken);
    state_after(&mut watch, None).await;
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn simulate_names_only_devices_of_its_source_and_check_config_points_at_it() {
    let dir = tempfile::tempdir().unwrap();
    super::write_keys(dir.path());
    let udp = super::free_udp_port();
    for (keys, says) in [
        (
            "simulate = [\"nobody\"]",
            "no [[device]] \"nobody\" has source = \"lns\"",
        ),
        ("simulate = [\"door\", \"door\"]", "named twice"),
        (
            "simulate = [\"door\"]\nsimulate_interval = \"100ms\"",
            "must be between \"1s\" and \"1h\"",
        ),
    ] {
        let network = super::network(udp, keys);
        let config = super::devices(network, dir.path(), "", r#"fports = { 2 = "lpp" }"#)
            .toml_at(dir.path(), 1883);
        let key = if keys.contains("100ms") {
            "simulate_interval"
        } else {
            "simulate"
        };
        let (code, said, line) = super::check_config(dir.path(), &config, key);
        assert_eq!(code, Some(2), "{said}");
        assert!(
            said.contains(&format!("sensorgate.toml:{line}:")) && said.contains(says),
            "{keys}: {said}"
        );
    }
    // Both of the scenario's devices, OTAA and ABP, may be simulated.
    let network = super::network(udp, "simulate = [\"door\", \"meter\"]");
    let config = super::devices(network, dir.path(), "", r#"fports = { 2 = "lpp" }"#)
        .toml_at(dir.path(), 1883);
    let (code, said, _) = super::check_config(dir.path(), &config, "simulate");
    assert_eq!(code, Some(0), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_abp_device_is_heard_through_a_gateway_list_that_does_not_name_it() {
    let dir = tempfile::tempdir().unwrap();
    super::write_keys(dir.path());
    let udp = super::free_udp_port();
    let network = super::network(udp, "simulate = [\"meter\"]\nsimulate_interval = \"1s\"");
    let config = super::devices(network, dir.path(), "", r#"fports = { 2 = "lpp" }"#);
    let daemon = Daemon::start(dir.path(), &config.toml());
    let mut watch = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    // ABP: no join; its uplinks on the FPort its configuration decodes as LPP, through the simulated
    // gateway, which `gateways` does not list.
    let first = wait_state(&mut watch, "meter", |s| s["fcnt"] == 0).await;
    assert_eq!(first["fport"], 2, "{first}");
    assert_eq!(
        first["gateway"],
        format!("{:016x}", gateway_eui("lns")),
        "{first}"
    );
    assert!(first["temperature_1"].as_f64().is_some(), "{first}");
    wait_state(&mut watch, "meter", |s| s["fcnt"] == 1).await;
    let counters = stats
        .stats_until("uplinks of the meter", "/lorawan/lns", JOINED_WITHIN, |c| {
            c["uplinks"].as_u64() >= Some(2)
        })
        .await;
    assert_eq!(counters["joins"], 0, "{counters}");
    assert_eq!(counters["unknown_gateway_datagrams"], 0, "{counters}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}
