//! The gateway's own radio as a single-channel packet forwarder (`payload = "lorawan"` on a simulated
//! SX1276 or SX1262 whose air is a UDP socket): an OTAA device joins over the air (the JoinAccept sent with
//! inverted IQ 5 s after the join request by the simulator's clock, decrypted by the Python device), its
//! uplinks heard by the radio are published, and one heard by the radio and by a Python gateway on the
//! LAN is published once, with the best of the two. The device is configured on the radio source.

use std::path::Path;
use std::time::Duration;

use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::python;

use super::{
    check_config, free_udp_port, network, wait_counters, wait_state, write_keys, APP_KEY, DEV_EUI,
    JOIN_EUI, WAIT,
};

/// The radio's default EUI: "SG" then the FNV-1a hash of its name `lora`.
const RADIO_EUI: &str = "5347f7ad712249e1";

/// The scenario: the `lns` network of the other tests (gateways A and B) and a simulated `chip` (sx1276 or
/// sx1262) `lora` on 868.1 MHz, SF7, forwarding to it, with its air on `127.0.0.1:{air}`; the OTAA door
/// on `lora`.
fn config(dir: &Path, chip: &str, udp: u16, air: u16) -> sensorgate_testkit::config::ConfigBuilder {
    let dir = dir.display();
    network(udp, "")
        .source(
            "lora",
            chip,
            &format!(
                "backend = \"simulator\"\nair = \"127.0.0.1:{air}\"\nfrequency = 868_100_000\n\
                 payload = \"lorawan\""
            ),
        )
        .device_keys(
            "door",
            "lora",
            &format!(
                "dev_eui = {DEV_EUI:?}\njoin_eui = {JOIN_EUI:?}\napp_key_file = \"{dir}/door.key\"\n\
                 payload = \"lpp\""
            ),
        )
}

async fn radio_device(udp: u16, air: u16) -> serde_json::Value {
    let params = serde_json::json!({
        "port": udp,
        "air": air,
        "app_key": APP_KEY,
        "dev_eui": DEV_EUI,
        "join_eui": JOIN_EUI,
    })
    .to_string();
    let output = tokio::task::spawn_blocking(move || {
        python::run_script(
            "cryptography",
            "python3-cryptography",
            "tests/sources/lorawan/radio_device.py",
            &[],
            &params,
        )
    })
    .await
    .unwrap();
    serde_json::from_str(output.trim()).unwrap_or_else(|e| panic!("{e}: {output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_joins_and_sends_through_the_gateways_own_sx1276() {
    joins_and_sends_through_the_gateways_own("sx1276").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_joins_and_sends_through_the_gateways_own_sx1262() {
    joins_and_sends_through_the_gateways_own("sx1262").await;
}

async fn joins_and_sends_through_the_gateways_own(chip: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let (udp, air) = (free_udp_port(), free_udp_port());
    let daemon = Daemon::start(dir.path(), &config(dir.path(), chip, udp, air).toml());
    daemon.wait_for_log(
        &format!("LoRaWAN forwarder: gateway {RADIO_EUI} forwarding to 127.0.0.1:{udp}"),
        1,
        WAIT,
    );
    daemon.wait_for_log(
        &format!("radio source lora: simulated {chip} with its air"),
        1,
        WAIT,
    );
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    let report = radio_device(udp, air).await;
    // The JoinAccept: on the air with inverted IQ (nothing with the standard polarity, which the device
    // would not hear), in RX1 of the join (5 s after the join request by the simulator's clock) on the
    // radio's channel (868.1 MHz as the chip tunes it: the SX1276 in 61 Hz steps), decrypted and checked
    // by Python.
    assert_eq!(report["not_inverted"], 0, "{report}");
    let delay = report["join_delay_us"].as_i64().unwrap();
    // Within 10 ms: a device's receive window opens on time and waits a few preamble symbols (SF7: about
    // 1 ms each), and LoRaMac-node allows 10 ms of timing error by default.
    assert!(
        (5_000_000..5_010_000).contains(&delay),
        "JoinAccept {delay} us after the join request: {report}"
    );
    let frequency = report["join_frequency"].as_i64().unwrap();
    assert!((frequency - 868_100_000).abs() < 100, "{report}");
    println!("JoinAccept started {delay} us after the join request was heard");

    // FCnt 0, confirmed and heard by the radio alone: acknowledged on the air (FCtrl ACK bit), published
    // with the radio as its gateway.
    assert_eq!(
        report["ack_fctrl"].as_u64().map(|fctrl| fctrl & 0x20),
        Some(0x20),
        "{report}"
    );
    let first = wait_state(&mut states, "door", |s| s["fcnt"] == 0).await;
    assert_eq!(first["temperature_1"], 19.5, "{first}");
    assert_eq!(first["gateway"], RADIO_EUI, "{first}");
    assert_eq!(first["frequency"], 868_100_000, "{first}");
    assert_eq!(first["sf"], 7, "{first}");
    assert_eq!(first["rssi"].as_f64(), Some(-70.0), "{first}");
    // FCnt 1, heard by gateway A (-110 dBm) and the radio (-60 dBm): once, with the radio.
    let second = wait_state(&mut states, "door", |s| s["fcnt"] == 1).await;
    assert_eq!(second["temperature_1"], 20.5, "{second}");
    assert_eq!(second["gateway"], RADIO_EUI, "{second}");
    assert_eq!(second["rssi"].as_f64(), Some(-60.0), "{second}");
    let counters = wait_counters(
        &mut stats,
        "the radio's and gateway A's copies merged",
        |c| c["duplicates_merged"] == 1 && c["uplinks"] == 2,
    )
    .await;
    assert_eq!(counters["joins"], 1, "{counters}");
    let gateways = &counters["gateways"];
    assert!(gateways[RADIO_EUI].is_object(), "{counters}");
    assert!(gateways["aa555a0000000001"].is_object(), "{counters}");
    // Nothing more for FCnt 1: a second publish would have come with the first (the dedup window is
    // 200 ms, and a stats message a second later has come since).
    let mut seen = Vec::new();
    let again = states
        .wait_for(Duration::from_millis(300), &mut seen, |m| {
            m.topic == "sensorgate/door" && m.text().contains("\"fcnt\":1")
        })
        .await;
    assert!(again.is_none(), "FCnt 1 published twice");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_lorawan_radio_refuses_another_sync_word_and_needs_a_network_server() {
    let dir = tempfile::tempdir().unwrap();
    let radio = "backend = \"simulator\"\nfrequency = 868_100_000\npayload = \"lorawan\"";
    let config = config(dir.path(), "sx1276", 1700, 1701)
        .toml_at(dir.path(), 1883)
        .replace(
            "payload = \"lorawan\"",
            "payload = \"lorawan\"\nsync_word = 0x12",
        );
    let (code, said, line) = check_config(dir.path(), &config, "sync_word");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!("sensorgate.toml:{line}:")) && said.contains("sync_word = 0x34"),
        "{said}"
    );
    // Without a semtech-udp source: the radio's `payload` says what to add.
    let lone = sensorgate_testkit::config::ConfigBuilder::new("test-gw")
        .source("lora", "sx1276", radio)
        .toml_at(dir.path(), 1883);
    let (code, said, line) = check_config(dir.path(), &lone, "payload");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!("sensorgate.toml:{line}:"))
            && said.contains("kind = \"semtech-udp\""),
        "{said}"
    );
}

/// ADR would move a device off the radio's one data rate: `adr = true` on a device of the radio is
/// refused, pointing at the key.
#[test]
fn adr_is_refused_on_a_device_of_the_single_channel_radio() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "sx1276", 1700, 1701)
        .toml_at(dir.path(), 1883)
        .replace("payload = \"lpp\"", "payload = \"lpp\"\nadr = true");
    let (code, said, line) = check_config(dir.path(), &config, "adr");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!("sensorgate.toml:{line}:")) && said.contains("remove adr"),
        "{said}"
    );
}
