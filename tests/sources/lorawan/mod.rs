//! LoRaWAN end to end through the real daemon on 127.0.0.1: an independent end device and two packet
//! forwarders in Python (`tests/sources/lorawan/device.py`, `cryptography` only) speak the Semtech UDP protocol
//! to a `kind = "semtech-udp"` source. OTAA join (the JoinAccept decrypted and its MIC and keys checked
//! on the device side, its replay refused), an uplink heard by two gateways published once with the
//! best one, a confirmed uplink ACKed in RX1 with the right `tmst` (and in RX2 after the forwarder's
//! TOO_LATE), a replay and a wrong MIC refused,
//! an ABP device's counter rolling over past 65,535, malformed datagrams and a gateway not allowed
//! counted and unanswered, a stranger's DevAddr counted per gateway and never published, and a clean
//! restart in the middle of the session. Every wait is bounded.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::python;

mod adr;
mod downlinks;
mod fport_codec;
mod gateway_availability;
mod joins_and_lost_sessions;
mod own_radio;
mod simulated;

const APP_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const ABP_NWK: &str = "000102030405060708090a0b0c0d0e0f";
const ABP_APP: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
const DEV_EUI: &str = "70b3d57ed0000001";
const JOIN_EUI: &str = "0000000000000042";
const ABP_DEV_ADDR: &str = "26011bda";
const EXTRA_DEV_ADDR: &str = "26011bdb";
const WAIT: Duration = Duration::from_secs(10);

/// The scenario's network before its devices: `[lorawan]` in EU868 and the `lns` source on
/// `127.0.0.1:{udp}` for gateways A and B, with more `source_keys`; stats every second.
fn network(udp: u16, source_keys: &str) -> ConfigBuilder {
    ConfigBuilder::new("test-gw")
        .publish(r#"stats_interval = "1s""#)
        .lorawan("region = \"EU868\"\nnet_id = \"000013\"")
        .semtech_udp(
            "lns",
            udp,
            &format!("gateways = [\"aa555a0000000001\", \"aa555a0000000002\"]\n{source_keys}"),
        )
}

/// The OTAA door (with `door_keys` more) and the ABP meter (its `fports` and more in `meter_keys`),
/// their key files those [`write_keys`] writes in `dir`.
fn devices(config: ConfigBuilder, dir: &Path, door_keys: &str, meter_keys: &str) -> ConfigBuilder {
    let dir = dir.display();
    config
        .device_keys(
            "door",
            "lns",
            &format!(
                "dev_eui = {DEV_EUI:?}\njoin_eui = {JOIN_EUI:?}\n{door_keys}\n\
                 app_key_file = \"{dir}/door.key\"\npayload = \"lpp\""
            ),
        )
        .device_keys(
            "meter",
            "lns",
            &format!(
                "dev_addr = {ABP_DEV_ADDR:?}\nnwk_s_key_file = \"{dir}/meter-nwk.key\"\n\
                 app_s_key_file = \"{dir}/meter-app.key\"\n{meter_keys}"
            ),
        )
}

/// The scenario as most tests run it: [`network`] and [`devices`], the meter's FPort 2 in LPP.
fn config(dir: &Path, udp: u16) -> ConfigBuilder {
    devices(network(udp, ""), dir, "", r#"fports = { 2 = "lpp" }"#)
}

/// The device a reload adds: `probe`, with the meter's keys and another DevAddr.
fn probe(config: ConfigBuilder, dir: &Path) -> ConfigBuilder {
    let dir = dir.display();
    config.device_keys(
        "probe",
        "lns",
        &format!(
            "dev_addr = {EXTRA_DEV_ADDR:?}\nnwk_s_key_file = \"{dir}/meter-nwk.key\"\n\
             app_s_key_file = \"{dir}/meter-app.key\"\npayload = \"lpp\""
        ),
    )
}

/// Writes `config` to `dir/sensorgate.toml` and runs `sensorgate check-config` on it: its exit code,
/// what it said, and the file's line (from 1) that starts with `key`, where it should point.
fn check_config(dir: &Path, config: &str, key: &str) -> (Option<i32>, String, usize) {
    let path = dir.join("sensorgate.toml");
    std::fs::write(&path, config).unwrap();
    let line = config
        .lines()
        .position(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("no {key} in\n{config}"))
        + 1;
    let output = std::process::Command::new(sensorgate_testkit::daemon::sensorgate_binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    (output.status.code(), said, line)
}

/// The door's and the meter's key files in `dir`.
fn write_keys(dir: &Path) {
    write_key(dir, "door.key", APP_KEY);
    write_key(dir, "meter-nwk.key", ABP_NWK);
    write_key(dir, "meter-app.key", ABP_APP);
}

fn write_key(dir: &Path, name: &str, hex: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A UDP port free on 127.0.0.1 now.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

async fn device(phase: &str, dir: &Path, udp: u16) -> serde_json::Value {
    device_with(phase, dir, udp, &[]).await
}

async fn device_with(phase: &str, dir: &Path, udp: u16, fcnts: &[u32]) -> serde_json::Value {
    device_json(phase, dir, udp, serde_json::json!({ "fcnts": fcnts })).await
}

/// Runs `device.py PHASE` with the scenario's parameters and `extra` (an object) over them.
async fn device_json(
    phase: &str,
    dir: &Path,
    udp: u16,
    extra: serde_json::Value,
) -> serde_json::Value {
    let state = dir.join("device-session.json");
    let mut params = serde_json::json!({
        "port": udp,
        "app_key": APP_KEY,
        "dev_eui": DEV_EUI,
        "join_eui": JOIN_EUI,
        "abp_nwk": ABP_NWK,
        "abp_app": ABP_APP,
        "abp_dev_addr": ABP_DEV_ADDR,
        "extra_dev_addr": EXTRA_DEV_ADDR,
    });
    if let (Some(params), Some(extra)) = (params.as_object_mut(), extra.as_object()) {
        params.extend(extra.clone());
    }
    let params = params.to_string();
    let phase = phase.to_string();
    let output = tokio::task::spawn_blocking(move || {
        python::run_script(
            "cryptography",
            "python3-cryptography",
            "tests/sources/lorawan/device.py",
            &[Path::new(&phase), &state],
            &params,
        )
    })
    .await
    .unwrap();
    serde_json::from_str(output.trim()).unwrap_or_else(|e| panic!("{e}: {output}"))
}

/// The next state of `device` for which `check` holds (bounded).
async fn wait_state(
    states: &mut mqtt::Subscriber,
    device: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let topic = format!("sensorgate/{device}");
    let mut seen = Vec::new();
    let found = states
        .wait_for(WAIT, &mut seen, |m| {
            m.topic == topic && serde_json::from_str(&m.text()).is_ok_and(|s| check(&s))
        })
        .await;
    match found {
        Some(message) => serde_json::from_str(&message.text()).unwrap(),
        None => panic!(
            "no matching state of {device}; seen: {:?}",
            seen.iter()
                .map(|m| (m.topic.clone(), m.text()))
                .collect::<Vec<_>>()
        ),
    }
}

/// Waits until the `lns` source's LoRaWAN counters in `{base}/gateway/stats` satisfy `check` (`what`
/// names the wait); returns them.
async fn wait_counters(
    stats: &mut mqtt::Subscriber,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    stats.stats_until(what, "/lorawan/lns", WAIT, check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_end_device_joins_sends_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let udp = free_udp_port();
    let scenario = config(dir.path(), udp);
    let daemon = Daemon::start(dir.path(), &scenario.toml());
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    let report = device("session", dir.path(), udp).await;
    // The JoinAccept: RX1 of gateway A, 5 s after the join request (tmst 1 000 000), inverted IQ, with
    // EU868's CFList (867.1 MHz first: 8 671 000 x 100 Hz, little-endian 18 4f 84).
    assert_eq!(report["join_tmst"], 6_000_000, "{report}");
    assert_eq!(report["join_ipol"], true, "{report}");
    assert_eq!(report["join_freq"], 868.1, "{report}");
    assert!(
        report["cf_list"].as_str().unwrap().starts_with("184f84"),
        "{report}"
    );
    assert_eq!(report["replayed_join_answered"], false, "{report}");
    // DevAddr from the NetID's NwkID (0x13 << 25).
    let dev_addr = u32::from_str_radix(report["dev_addr"].as_str().unwrap(), 16).unwrap();
    assert_eq!(dev_addr >> 25, 0x13, "{report}");
    // The confirmed uplink (tmst 30 000 000 at gateway B): an unconfirmed downlink with ACK in RX1 (1 s),
    // answering LinkCheckReq (CID 02) in FOpts, heard by one gateway.
    // The forwarder answers TOO_LATE to RX1 (tmst + 1 s): the same frame comes in RX2 (tmst + 2 s, EU868's
    // 869.525 MHz at SF12).
    assert_eq!(report["ack_rx1_tmst"], 31_000_000, "{report}");
    assert_eq!(report["ack_tmst"], 32_000_000, "{report}");
    assert_eq!(report["ack_rx2_freq"], 869.525, "{report}");
    assert_eq!(report["ack_rx2_datr"], "SF12BW125", "{report}");
    assert_eq!(report["ack_bit"], true, "{report}");
    assert_eq!(report["ack_mtype"], 3, "{report}");
    assert_eq!(report["ack_ipol"], true, "{report}");
    let fopts = report["ack_fopts"].as_str().unwrap();
    assert!(fopts.starts_with("02") && fopts.ends_with("01"), "{report}");

    // FCnt 0 heard by both gateways: published once, with the best (B, -50 dBm).
    let first = wait_state(&mut states, "door", |s| s["fcnt"] == 0).await;
    assert_eq!(first["temperature_1"], 21.5, "{first}");
    assert_eq!(first["gateway"], "aa555a0000000002", "{first}");
    assert_eq!(first["rssi"].as_f64(), Some(-50.0), "{first}");
    assert_eq!(first["snr"].as_f64(), Some(9.0), "{first}");
    assert_eq!(first["fport"], 10, "{first}");
    assert_eq!(first["frequency"], 868_100_000, "{first}");
    assert_eq!(first["sf"], 7, "{first}");
    let second = wait_state(&mut states, "door", |s| s["fcnt"] == 1).await;
    assert_eq!(second["temperature_1"], 22.0, "{second}");
    // The ABP device's counter past 65,535.
    wait_state(&mut states, "meter", |s| s["fcnt"] == 65_535).await;
    let rolled = wait_state(&mut states, "meter", |s| s["fcnt"] == 65_536).await;
    assert_eq!(rolled["temperature_1"], 6.5, "{rolled}");

    let counters = wait_counters(&mut stats, "replay, bad MIC, stranger, dedup", |c| {
        c["replayed"] == 1 && c["bad_mic"] == 1 && c["unknown_devaddr"] == 1 && c["uplinks"] == 4
    })
    .await;
    assert_eq!(counters["joins"], 1, "{counters}");
    assert_eq!(counters["rx2_fallbacks"], 1, "{counters}");
    assert_eq!(counters["tx_errors"]["TOO_LATE"], 1, "{counters}");
    assert_eq!(counters["join_refused"], 1, "{counters}");
    assert_eq!(counters["duplicates_merged"], 1, "{counters}");
    assert_eq!(counters["uplinks"], 4, "{counters}");
    // Two malformed datagrams and one from a gateway not allowed: counted, unanswered, and the frames
    // after them were still taken (the rollover above came after).
    assert_eq!(report["hostile_answered"], false, "{report}");
    assert_eq!(counters["malformed_datagrams"], 2, "{counters}");
    assert_eq!(counters["unknown_gateway_datagrams"], 1, "{counters}");
    assert_eq!(
        counters["gateways"]["aa555a0000000001"]["unknown_devaddr"], 1,
        "{counters}"
    );
    assert!(
        counters["gateways"]["aa555a0000000002"]["last_pull"].is_string(),
        "{counters}"
    );
    assert_eq!(
        counters["gateways"]["aa555a0000000001"]["stat"]["rxok"], 1,
        "{counters}"
    );

    // A clean restart in the middle of the session: the device goes on without joining again.
    let port = daemon.addr.port();
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
    let daemon = Daemon::start_on(dir.path(), &scenario.toml(), port);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut states = mqtt::subscribe(daemon.addr, "watch-2", "sensorgate/+", 1).await;
    let resumed = device("resume", dir.path(), udp).await;
    assert_eq!(resumed["acked_after_restart"], true, "{resumed}");
    let after = wait_state(&mut states, "door", |s| s["fcnt"] == 2).await;
    assert_eq!(after["temperature_1"], 23.5, "{after}");

    // A reload that adds a device: the source restarts (its sessions written and read back), the new
    // device is heard, and the joined device goes on without joining again.
    let reloaded = probe(scenario, dir.path()).toml_at(&dir.path().join("state"), port);
    std::fs::write(&daemon.config_path, reloaded).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("source restarted for the new configuration", 1, WAIT);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 2, WAIT);
    let extra = device("extra", dir.path(), udp).await;
    assert_eq!(extra["acked_after_reload"], true, "{extra}");
    let probe = wait_state(&mut states, "probe", |s| s["fcnt"] == 1).await;
    assert_eq!(probe["temperature_1"], 3.0, "{probe}");
    wait_state(&mut states, "door", |s| s["fcnt"] == 3).await;

    let log = daemon.log();
    for key in [APP_KEY, ABP_NWK, ABP_APP] {
        assert!(
            !log.to_lowercase().contains(key),
            "a key in the log:\n{log}"
        );
    }
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");

    // The tools read the stored session: DevAddr and counters, never a key.
    let keys = tool(&daemon_config(&dir), &["keys", "--dev-eui", DEV_EUI]);
    assert!(keys.0.success(), "{keys:?}");
    let json: serde_json::Value = serde_json::from_str(&keys.1).unwrap();
    assert_eq!(json["session"]["dev_addr"], report["dev_addr"], "{json}");
    assert_eq!(json["session"]["fcnt_up_at_least"], 3, "{json}");
    assert_eq!(json["session"]["join"]["dev_nonce"], 0x0101, "{json}");
    assert!(!keys.1.to_lowercase().contains(APP_KEY), "{}", keys.1);
    // A frame of the meter (ABP) above its stored counter decodes; the same with a changed byte does not.
    let frame = abp_frame(70_000, &[1, 0x67, 0x00, 0x64]);
    let decoded = tool(
        &daemon_config(&dir),
        &["decode", "--dev-eui", ABP_DEV_ADDR, &hex(&frame)],
    );
    assert!(decoded.0.success(), "{decoded:?}");
    let json: serde_json::Value = serde_json::from_str(&decoded.1).unwrap();
    assert_eq!(json["fcnt"], 70_000, "{json}");
    assert_eq!(json["fields"]["temperature_1"], 10.0, "{json}");
    let mut bad = frame.clone();
    bad[9] ^= 1;
    let refused = tool(
        &daemon_config(&dir),
        &["decode", "--dev-eui", ABP_DEV_ADDR, &hex(&bad)],
    );
    assert_eq!(refused.0.code(), Some(1), "{refused:?}");
    assert!(refused.1.contains("wrong MIC"), "{refused:?}");
}

/// A power cut (kill -9) costs an ABP device at most the counter margin (64 uplinks after the last
/// stored mark), refused as replays and counted; it never lets a counter below the mark through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_costs_at_most_the_counter_margin() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path());
    let udp = free_udp_port();
    let config = config(dir.path(), udp).toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    device_with("abp", dir.path(), udp, &[1, 2]).await;
    wait_state(&mut states, "meter", |s| s["fcnt"] == 2).await;
    let port = daemon.addr.port();
    daemon.kill();

    let daemon = Daemon::start_on(dir.path(), &config, port);
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    let mut states = mqtt::subscribe(daemon.addr, "watch-2", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    // Counter 1 was stored with its mark 1 + 64: 3 and 65 are refused, 66 is taken.
    device_with("abp", dir.path(), udp, &[3, 65, 66]).await;
    let after = wait_state(&mut states, "meter", |s| s["fcnt"] == 66).await;
    assert_eq!(after["temperature_1"], 6.6, "{after}");
    let counters = wait_counters(&mut stats, "two replays", |c| c["uplinks"] == 1).await;
    assert_eq!(counters["replayed"], 2, "{counters}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

fn daemon_config(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("sensorgate.toml")
}

/// `sensorgate -c CONFIG lorawan ARGS...`: exit status and standard output.
fn tool(config: &Path, args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = std::process::Command::new(sensorgate_testkit::daemon::sensorgate_binary())
        .arg("-c")
        .arg(config)
        .arg("lorawan")
        .args(args)
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An uplink of the ABP meter, as its firmware builds it (the lorawan crate's creator).
fn abp_frame(fcnt: u32, payload: &[u8]) -> Vec<u8> {
    let key = |text: &str| -> [u8; 16] {
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        bytes.try_into().unwrap()
    };
    let addr = u32::from_str_radix(ABP_DEV_ADDR, 16).unwrap();
    let mut creator = lorawan::creator::DataPayloadCreator::new();
    creator
        .set_confirmed(false)
        .set_uplink(true)
        .set_dev_addr(&addr.to_le_bytes())
        .set_fctrl(&lorawan::parser::FCtrl::new(0, true))
        .set_fcnt(fcnt)
        .set_f_port(2);
    creator
        .build(
            payload,
            &[],
            &lorawan::keys::NewSKey::from(key(ABP_NWK)),
            &lorawan::keys::AppSKey::from(key(ABP_APP)),
        )
        .unwrap()
        .to_vec()
}
