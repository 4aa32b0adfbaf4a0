//! A LoRaWAN device decoded per FPort: LPP on one, a vendor's ChirpStack codec (a fixture of
//! tests/fixtures/codecs) on another, its decodeUplink given the frame's real FPort.

use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use super::{
    check_config, device_json, device_with, devices, free_udp_port, network, wait_state,
    write_keys, WAIT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fport_decoded_by_the_devices_codec_gets_the_real_fport() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let codec = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/codecs/chirpstack/tabs-tbhh100.js");
    let udp = free_udp_port();
    let meter = format!(
        "fports = {{ 2 = \"lpp\", 103 = \"codec\" }}\ncodec = \"{}\"",
        codec.display()
    );
    let config = devices(network(udp, ""), dir.path(), "", &meter);
    let daemon = Daemon::start(dir.path(), &config.toml());
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    // FPort 2: LPP, as before.
    device_with("abp", dir.path(), udp, &[1]).await;
    let lpp = wait_state(&mut states, "meter", |s| s["fcnt"] == 1).await;
    assert_eq!(lpp["temperature_1"], 0.1, "{lpp}");
    // FPort 103: the TBHH100's temperature/humidity frame, through its codec.
    let params = serde_json::json!({
        "fcnts": [2],
        "fport": 103,
        "payload_hex": "080b232fffffffff",
    });
    device_json("abp", dir.path(), udp, params).await;
    let decoded = wait_state(&mut states, "meter", |s| s["fcnt"] == 2).await;
    assert_eq!(decoded["fPort"], 103, "{decoded}");
    assert_eq!(decoded["temperature"], 3, "{decoded}");
    assert_eq!(decoded["humidity"], 47, "{decoded}");
    assert_eq!(decoded["battery_volt"], 3.6, "{decoded}");
    assert_eq!(decoded["fport"], 103, "{decoded}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn a_codec_fport_without_a_codec_is_refused_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = devices(
        network(1700, ""),
        dir.path(),
        "",
        r#"fports = { 2 = "codec" }"#,
    )
    .toml_at(dir.path(), 1883);
    let (code, said, line) = check_config(dir.path(), &config, "fports");
    assert_eq!(code, Some(2), "{said}");
    assert!(
        said.contains(&format!("sensorgate.toml:{line}:")) && said.contains("add codec ="),
        "{said}"
    );
}
