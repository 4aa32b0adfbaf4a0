//! Commands to LoRaWAN devices (`commands = true` on the semtech-udp source): a command published on
//! `{base}/{device}/set` reaches the Python ABP device in the RX1 window of its next uplink (tmst + 1 s,
//! the uplink's frequency and data rate, inverted IQ), on the device's `downlink_fport`, its MIC right
//! and its FRMPayload decrypted by the device with its AppSKey, and its result goes `queued` then
//! `sent`; a confirmed downlink is sent again (a new FCntDown each time) after each uplink without the
//! ACK bit until the device acknowledges (result `acknowledged`), and given up after three
//! transmissions (result `expired`, counted); a command to a device that never sends expires. Every
//! wait is bounded.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use super::{
    device_json, free_udp_port, network, wait_counters, write_keys, ABP_APP, ABP_NWK, APP_KEY, WAIT,
};

/// The `lns` source with commands (kept at most `ttl`), the ABP meter with `meter_keys` and the OTAA
/// door that never joins in these tests.
fn scenario(dir: &std::path::Path, udp: u16, ttl: &str, meter_keys: &str) -> ConfigBuilder {
    let config = network(udp, &format!("commands = true\ncommand_ttl = \"{ttl}\""))
        .broker(r#"anonymous_write = ["sensorgate/+/set"]"#);
    super::devices(config, dir, "", &format!("payload = \"lpp\"\n{meter_keys}"))
}

async fn command(client: &mqtt::Subscriber, device: &str, payload: &str) {
    client
        .client
        .publish(
            format!("sensorgate/{device}/set"),
            mqtt::qos(1),
            false,
            payload.to_string(),
        )
        .await
        .expect("publish queued");
}

/// The next result of `device` with `status` (bounded).
async fn result(results: &mut mqtt::Subscriber, device: &str, status: &str) -> serde_json::Value {
    let topic = format!("sensorgate/{device}/set/result");
    let mut seen = Vec::new();
    let found = results
        .wait_for(WAIT, &mut seen, |m| {
            m.topic == topic
                && serde_json::from_str::<serde_json::Value>(&m.text())
                    .is_ok_and(|r| r["status"] == status)
        })
        .await;
    match found {
        Some(message) => serde_json::from_str(&message.text()).unwrap(),
        None => panic!(
            "no {status} result for {device}; seen: {:?}",
            seen.iter()
                .map(|m| (m.topic.clone(), m.text()))
                .collect::<Vec<_>>()
        ),
    }
}

/// The ABP device's uplinks (`(fcnt, ack)`), and what came in each receive window.
async fn uplinks(
    dir: &std::path::Path,
    udp: u16,
    uplinks: &[(u32, bool)],
) -> Vec<serde_json::Value> {
    let list: Vec<serde_json::Value> = uplinks
        .iter()
        .map(|(fcnt, ack)| serde_json::json!({ "fcnt": fcnt, "ack": ack }))
        .collect();
    let report = device_json(
        "downlink",
        dir,
        udp,
        serde_json::json!({ "uplinks": list, "wait": 1.5 }),
    )
    .await;
    report["windows"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_the_device_in_rx1_encrypted_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let udp = free_udp_port();
    let daemon = Daemon::start(
        dir.path(),
        &scenario(dir.path(), udp, "4s", "downlink_fport = 3").toml(),
    );
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut results = mqtt::subscribe(daemon.addr, "ops", "sensorgate/+/set/result", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    command(&results, "meter", r#"{"digital_out_1": 1}"#).await;
    result(&mut results, "meter", "queued").await;
    // A device that never sends (the door never joins): its command expires at the ttl.
    command(&results, "door", r#"{"digital_out_1": 0}"#).await;
    result(&mut results, "door", "queued").await;

    let windows = uplinks(dir.path(), udp, &[(1, false), (2, false)]).await;
    let first = &windows[0];
    assert!(
        first.is_object(),
        "no downlink after the first uplink: {windows:?}"
    );
    // RX1: 1 s after the uplink, on its channel and data rate (EU868 RX1DROffset 0), inverted IQ.
    assert_eq!(first["tmst"], 1_000_000, "{first}");
    assert_eq!(first["freq"], 868.1, "{first}");
    assert_eq!(first["datr"], "SF7BW125", "{first}");
    assert_eq!(first["ipol"], true, "{first}");
    // The LPP command on the device's FPort, decrypted by the device; the session's first FCntDown.
    assert_eq!(first["fport"], 3, "{first}");
    assert_eq!(first["payload"], "010101", "{first}");
    assert_eq!(first["fcnt_down"], 0, "{first}");
    assert_eq!(first["confirmed"], false, "{first}");
    assert_eq!(first["ack"], false, "{first}");
    // One command, one window: nothing after the second uplink.
    assert!(windows[1].is_null(), "{windows:?}");

    let sent = result(&mut results, "meter", "sent").await;
    assert_eq!(sent["fields"]["digital_out_1"], 1, "{sent}");
    assert!(
        sent["reason"].as_str().unwrap().ends_with("ms on air"),
        "{sent}"
    );
    let expired = result(&mut results, "door", "expired").await;
    assert!(
        expired["reason"]
            .as_str()
            .unwrap()
            .contains("sent no frame"),
        "{expired}"
    );
    // Longer than EU868's RX2 (DR0, 51 bytes) carries: refused at once, saying so.
    let long = format!(r#"{{"raw": "{}"}}"#, "00".repeat(52));
    command(&results, "meter", &long).await;
    let refused = result(&mut results, "meter", "refused").await;
    assert!(
        refused["reason"].as_str().unwrap().contains(
            "52 bytes are more than the 51 a LoRaWAN downlink carries in EU868 at RX2's DR0"
        ),
        "{refused}"
    );
    let counters = wait_counters(&mut stats, "one command downlink", |c| {
        c["command_downlinks"] == 1
    })
    .await;
    assert_eq!(counters["downlinks"], 1, "{counters}");
    assert_eq!(counters["duty_cycle_dropped"], 0, "{counters}");
    let log = daemon.log();
    for key in [APP_KEY, ABP_NWK, ABP_APP] {
        assert!(!log.to_lowercase().contains(key), "a key in the log");
    }
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_downlink_is_sent_again_until_acknowledged_then_given_up_after_three() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let udp = free_udp_port();
    let daemon = Daemon::start(
        dir.path(),
        &scenario(dir.path(), udp, "1h", "downlink_confirmed = true").toml(),
    );
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut results = mqtt::subscribe(daemon.addr, "ops", "sensorgate/+/set/result", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    command(&results, "meter", r#"{"raw": "a1"}"#).await;
    result(&mut results, "meter", "queued").await;
    command(&results, "meter", r#"{"raw": "b2"}"#).await;
    result(&mut results, "meter", "queued").await;

    // a1 twice (no ACK after the first), acknowledged by the third uplink, which gets b2; b2 three
    // times without an ACK, then given up: the sixth uplink's window is empty.
    let windows = uplinks(
        dir.path(),
        udp,
        &[
            (1, false),
            (2, false),
            (3, true),
            (4, false),
            (5, false),
            (6, false),
        ],
    )
    .await;
    let sent: Vec<(String, bool, u64, u64)> = windows[..5]
        .iter()
        .map(|w| {
            assert!(w.is_object(), "{windows:?}");
            (
                w["payload"].as_str().unwrap().to_string(),
                w["confirmed"].as_bool().unwrap(),
                w["fcnt_down"].as_u64().unwrap(),
                w["fport"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, bool, u64, u64)> = ["a1", "a1", "b2", "b2", "b2"]
        .iter()
        .zip(0u64..)
        .map(|(p, fcnt)| (p.to_string(), true, fcnt, 1))
        .collect();
    assert_eq!(sent, expected, "{windows:?}");
    assert!(windows[5].is_null(), "{windows:?}");

    let counters = wait_counters(&mut stats, "one acknowledged, one given up", |c| {
        c["confirmed_acknowledged"] == 1 && c["confirmed_unacknowledged"] == 1
    })
    .await;
    assert_eq!(counters["command_downlinks"], 5, "{counters}");
    // Both commands were sent (at their first transmission); a1 was acknowledged, b2 given up.
    result(&mut results, "meter", "sent").await;
    let acknowledged = result(&mut results, "meter", "acknowledged").await;
    assert_eq!(acknowledged["fields"]["raw"], "a1", "{acknowledged}");
    let given_up = result(&mut results, "meter", "expired").await;
    assert_eq!(given_up["fields"]["raw"], "b2", "{given_up}");
    assert!(
        given_up["reason"]
            .as_str()
            .unwrap()
            .contains("did not acknowledge it in 3 transmissions"),
        "{given_up}"
    );
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

/// `downlink_fport` outside 1..=223, a downlink key on a source without commands, and `deliver` on a
/// LoRaWAN device: refused by check-config at the key's line, saying what to write.
#[test]
fn downlink_keys_are_checked_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let cases = [
        (
            scenario(dir.path(), udp, "1h", "downlink_fport = 224"),
            "downlink_fport",
            "1..=223",
        ),
        (
            super::devices(
                network(udp, ""),
                dir.path(),
                "",
                "payload = \"lpp\"\ndownlink_confirmed = true",
            ),
            "downlink_confirmed",
            "write commands = true",
        ),
        (
            scenario(dir.path(), udp, "1h", "deliver = \"now\""),
            "deliver",
            "remove deliver",
        ),
    ];
    for (config, key, says) in cases {
        let config = config.toml_at(dir.path(), 1883);
        let (code, said, line) = super::check_config(dir.path(), &config, key);
        assert_eq!(code, Some(2), "{key}: {said}");
        assert!(
            said.contains(&format!("sensorgate.toml:{line}:")) && said.contains(says),
            "{key}: {said}"
        );
    }
}

/// A device whose downlink FPort its vendor codec decodes: a command's fields go through the codec's
/// encodeDownlink, and the frame goes on the fPort the codec chose (3), not the device's
/// `downlink_fport` (5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codec_command_goes_on_the_fport_its_encode_downlink_chose() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let udp = free_udp_port();
    let codec = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/codecs/chirpstack/pulsedrop.js");
    let meter = format!(
        "fports = {{ 5 = \"codec\" }}\ncodec = \"{}\"\ndownlink_fport = 5",
        codec.display()
    );
    let config =
        network(udp, "commands = true").broker(r#"anonymous_write = ["sensorgate/+/set"]"#);
    let config = super::devices(config, dir.path(), "", &meter).toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut results = mqtt::subscribe(daemon.addr, "ops", "sensorgate/+/set/result", 1).await;
    command(&results, "meter", r#"{"factoryReset": true}"#).await;
    result(&mut results, "meter", "queued").await;
    let windows = uplinks(dir.path(), udp, &[(1, false)]).await;
    let window = &windows[0];
    assert!(window.is_object(), "{windows:?}");
    assert_eq!(window["fport"], 3, "{window}");
    assert_eq!(window["payload"], "46000000000000000000", "{window}");
    result(&mut results, "meter", "sent").await;
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}
