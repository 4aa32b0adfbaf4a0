//! The rtl_433 source through the real daemon on 127.0.0.1: a fake `rtl_433` (`fake_rtl_433.sh`) that
//! replays JSON lines then goes silent, exits 3 on a stall, hangs after its stall message, finds no
//! stick, meets the DVB driver, writes a 1 MB line and invalid UTF-8, or floods; each ends in the right
//! state within a bounded time, with a real restart. And Debian's real `rtl_433` decoding a test code
//! quoted from rtl_433's own sources (`-y`) and a recording (`-r`, generated here) into retained
//! readings (scripts/test installs it).
//! Every wait is bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt::{self, Received, Subscriber};
use serde_json::Value as Json;

/// The gateway running `command` as the `rf` source (stats every second, more source keys) and the
/// garden's Nexus sensor as its device.
fn config(command: &Path, source_keys: &str) -> ConfigBuilder {
    ConfigBuilder::new("test-gw")
        .publish(r#"stats_interval = "1s""#)
        .rtl_433(
            "rf",
            command,
            &format!("stats_interval = \"1s\"\n{source_keys}"),
        )
        .device("garden", "rf", "Nexus-TH/91/1")
}

fn fake() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sources/rtl433/fake_rtl_433.sh")
}

/// [`config`] running the fake, which resets the stick, publishing `devices`.
fn fake_config(devices: &str) -> ConfigBuilder {
    config(&fake(), &format!("usb_reset = true\ndevices = {devices:?}"))
}

/// The daemon running the fake in `mode`.
fn start_fake(dir: &Path, mode: &str, devices: &str) -> Daemon {
    start_fake_with(dir, mode, fake_config(devices))
}

/// The daemon running the fake in `mode` with `config` (a [`fake_config`] and more).
fn start_fake_with(dir: &Path, mode: &str, config: ConfigBuilder) -> Daemon {
    let fake_dir = dir.display().to_string();
    Daemon::start_with_env(
        dir,
        &config.toml(),
        &[("FAKE_RTL433_MODE", mode), ("FAKE_RTL433_DIR", &fake_dir)],
    )
}

fn json(message: &Received) -> Json {
    serde_json::from_slice(&message.payload).expect("JSON")
}

/// Waits (bounded) for a stats report whose `sources.rf` satisfies `done`; returns it.
async fn stats_until(
    sub: &mut Subscriber,
    within: Duration,
    done: impl FnMut(&Json) -> bool,
) -> Json {
    sub.stats_until("rf's stats", "/sources/rf", within, done)
        .await
}

fn count(rf: &Json, key: &str) -> u64 {
    rf[key].as_u64().unwrap_or(0)
}

fn runs(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("runs"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_lines_then_silence_is_a_stall_the_group_is_killed_and_rtl_433_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_fake(dir.path(), "silent", "configured");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let mut seen = Vec::new();
    let state = sub
        .wait_for(Duration::from_secs(10), &mut seen, |m| {
            m.topic == "sensorgate/garden"
        })
        .await
        .expect("the configured sensor's reading is published");
    let state = json(&state);
    assert_eq!(state["temperature_C"], 21.5);
    assert_eq!(state["humidity"], 55);
    assert_eq!(state["battery_ok"], 1);
    assert_eq!(state["rssi"], -7.1);
    assert_eq!(state["snr"], 21.5);
    assert_eq!(state["protocol"], 19);
    let child = std::fs::read_to_string(dir.path().join("child.pid")).unwrap();
    let child: i32 = child.trim().parse().unwrap();
    // Silence for two stats intervals (2 s): killed, restarted.
    let rf = stats_until(&mut sub, Duration::from_secs(15), |rf| {
        count(rf, "stalls") >= 1 && count(rf, "restarts") >= 1
    })
    .await;
    assert!(count(&rf, "duplicates") >= 2, "repeats dropped: {rf}");
    daemon.wait_for_log(
        "rtl_433 stalled: no output for 2s",
        1,
        Duration::from_secs(5),
    );
    daemon.wait_for_log("stick not reset over USB", 1, Duration::from_secs(5));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(child) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(child),
        "the fake's child {child} died with its process group"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs(dir.path()) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(runs(dir.path()) >= 2, "rtl_433 started again");
    // The neighbour (id 92) is not published, it is heard: the list is retained for late subscribers.
    let mut late = mqtt::subscribe(daemon.addr, "late", "sensorgate/gateway/heard", 1).await;
    let heard = late
        .next(Duration::from_secs(5))
        .await
        .expect("the heard list is retained");
    assert!(heard.retain);
    let heard = json(&heard);
    assert_eq!(heard["rf"][0]["address"], "Nexus-TH/92/1", "{heard}");
    assert!(heard["rf"][0]["count"].as_u64().unwrap() >= 1);
    assert_eq!(heard["rf"][0]["rssi"], -7.1);
    assert!(
        !seen.iter().any(|m| m.topic.contains("Nexus")),
        "neighbours are not published"
    );
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_status_3_is_a_stall_and_a_hang_after_the_stall_message_is_killed() {
    for mode in ["exit3", "hang"] {
        let dir = tempfile::tempdir().unwrap();
        let daemon = start_fake(dir.path(), mode, "configured");
        let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/gateway/stats", 0).await;
        let rf = stats_until(&mut sub, Duration::from_secs(15), |rf| {
            count(rf, "stalls") >= 2 && count(rf, "restarts") >= 2
        })
        .await;
        assert_eq!(rf["up"], true, "{mode}: {rf}");
        let expected = match mode {
            "exit3" => "exited with status 3",
            _ => "was still running 3s later",
        };
        daemon.wait_for_log(expected, 1, Duration::from_secs(5));
        assert!(runs(dir.path()) >= 2, "{mode}: restarted");
        let (status, _) = daemon.stop();
        assert!(status.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stick_is_a_lost_link_with_wills_retried_and_the_dvb_driver_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_fake(dir.path(), "nostick", "configured");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    sub.expect(
        "sensorgate/garden/availability",
        "online",
        Duration::from_secs(10),
    )
    .await;
    sub.expect(
        "sensorgate/garden/availability",
        "offline",
        Duration::from_secs(10),
    )
    .await;
    let rf = stats_until(&mut sub, Duration::from_secs(10), |rf| {
        rf["state"] == "lost" && count(rf, "link_losses") >= 1
    })
    .await;
    assert_eq!(rf["up"], false);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs(dir.path()) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(runs(dir.path()) >= 3, "retried with backoff");
    daemon.wait_for_log("found no RTL-SDR stick", 1, Duration::from_secs(1));
    assert_eq!(
        daemon.log().matches("found no RTL-SDR stick").count(),
        1,
        "said once"
    );
    let (status, _) = daemon.stop();
    assert!(status.success());

    let dir = tempfile::tempdir().unwrap();
    let daemon = start_fake(dir.path(), "dvb", "configured");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while runs(dir.path()) < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.wait_for_log("blacklist dvb_usb_rtl28xxu", 1, Duration::from_secs(5));
    assert_eq!(
        daemon.log().matches("blacklist dvb_usb_rtl28xxu").count(),
        1,
        "named once"
    );
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_mb_line_invalid_utf8_and_text_are_counted_and_the_next_reading_goes_through() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_fake(dir.path(), "garbage", "configured");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let mut seen = Vec::new();
    let state = sub
        .wait_for(Duration::from_secs(10), &mut seen, |m| {
            m.topic == "sensorgate/garden"
        })
        .await
        .expect("the reading after the garbage is published");
    assert_eq!(json(&state)["temperature_C"], 21.5);
    let rf = stats_until(&mut sub, Duration::from_secs(10), |rf| {
        count(rf, "frame_errors") >= 2 && count(rf, "decode_errors") >= 1
    })
    .await;
    assert_eq!(rf["state"], "running");
    assert_eq!(
        count(&rf, "stalls"),
        0,
        "statistics lines keep it alive: {rf}"
    );
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_senders_leaves_a_bounded_heard_list() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_fake(dir.path(), "flood", "configured");
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let mut seen = Vec::new();
    sub.wait_for(Duration::from_secs(60), &mut seen, |m| {
        m.topic == "sensorgate/garden"
    })
    .await
    .expect("the configured sensor after the flood is published");
    // The list is published at most once a second: the one after the flood ends with its last sender,
    // published before or after the configured sensor's state (whichever the throttle allows first).
    let last_sender = |m: &Received| {
        m.topic == "sensorgate/gateway/heard" && json(m)["rf"][0]["address"] == "Nexus-TH/20000/1"
    };
    let heard = match seen.iter().find(|m| last_sender(m)).cloned() {
        Some(heard) => heard,
        None => sub
            .wait_for(Duration::from_secs(10), &mut seen, last_sender)
            .await
            .expect("the heard list follows"),
    };
    let heard = json(&heard);
    let list = heard["rf"].as_array().unwrap();
    assert_eq!(list.len(), sensorgate::heard::MAX_PER_SOURCE);
    assert_eq!(list[0]["address"], "Nexus-TH/20000/1");
    let heard_publishes = seen
        .iter()
        .filter(|m| m.topic == "sensorgate/gateway/heard")
        .count();
    assert!(heard_publishes < 60, "throttled: {heard_publishes}");
    let (status, _) = daemon.stop();
    assert!(status.success());
}

/// A Nexus-TH (protocol 19): id 91, channel 1, battery ok, 21.5 °C, 55 %: its 36 bits.
const NEXUS_BITS: &str = "5b80d7f37";

/// A recording of that sensor as an RTL-SDR stick at 250 kS/s would make it (`.cu8`: unsigned I/Q
/// bytes): OOK pulse-position code, 500 µs pulses, 1000 µs gaps for 0, 2000 µs for 1, 4000 µs between
/// the eight repeats.
fn nexus_recording(path: &Path) {
    let samples = |micros: usize| micros * 250_000 / 1_000_000;
    let (on, off) = ([255u8, 127], [127u8, 127]);
    let mut cu8 = Vec::new();
    let mut add = |level: [u8; 2], micros: usize| {
        for _ in 0..samples(micros) {
            cu8.extend_from_slice(&level);
        }
    };
    add(off, 10_000);
    for _ in 0..8 {
        for nibble in NEXUS_BITS.chars().map(|c| c.to_digit(16).unwrap()) {
            for bit in (0..4).rev().map(|i| (nibble >> i) & 1) {
                add(on, 500);
                add(off, if bit == 1 { 2000 } else { 1000 });
            }
        }
        add(on, 500);
        add(off, 4000);
    }
    add(off, 20_000);
    std::fs::write(path, cu8).unwrap();
}

/// A Bresser 6-in-1 weather station's transmission as rtl_433's own documentation gives it: the test code
/// quoted from the comment atop `src/devices/bresser_6in1.c` in github.com/merbanan/rtl_433 (commit
/// 91b2ebdb42e59798f98b4ebc192f137d2acbf66d; rtl_433 is GPL-2.0-or-later, this is one line of its test
/// data, used here as input only), where it is annotated "[Hum 94% Temp 2.8 C Wind 0.4 m/s]". Debian
/// 12's rtl_433 22.11 has that decoder (protocol 172).
const BRESSER_6IN1_CODE: &str = "{202}55555555545ba813403100058631ff77fe6810050929ffe1180";

/// What Debian's rtl_433 decodes from [`BRESSER_6IN1_CODE`]: its identity (model/id/channel).
const BRESSER_6IN1_ADDRESS: &str = "Bresser-6in1/411042499/0";

/// Runs the daemon with Debian's rtl_433 replaying `args` once (protocol `protocol` only) and `device`
/// (name and address of one more `[[device]]`, if any) named; waits for the replay's end and returns the daemon and what a late
/// subscriber finds retained under `state_topic` once it and `field_topic` are there.
async fn replay_once(
    dir: &Path,
    args: [&str; 2],
    protocol: u32,
    device: Option<(&str, &str)>,
    state_topic: &str,
    field_topic: &str,
) -> (Daemon, std::collections::BTreeMap<String, Received>) {
    let source_keys = format!(
        "usb_reset = false\ndevices = \"configured\"\nprotocols = [{protocol}]\nargs = {args:?}"
    );
    let mut config = config(Path::new("rtl_433"), &source_keys);
    if let Some((name, address)) = device {
        config = config.device(name, "rf", address);
    }
    let daemon = Daemon::start(dir, &config.toml());
    daemon.wait_for_log("finished its one-shot replay", 1, Duration::from_secs(15));
    let mut late = mqtt::subscribe(daemon.addr, "late", "sensorgate/#", 1).await;
    let got = late
        .collect_until(Duration::from_secs(10), |got| {
            got.contains_key(state_topic) && got.contains_key(field_topic)
        })
        .await;
    let mut sub = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    let rf = stats_until(&mut sub, Duration::from_secs(5), |rf| {
        rf["state"] == "finished"
    })
    .await;
    assert_eq!(
        count(&rf, "restarts"),
        0,
        "{args:?}: a replay is not restarted: {rf}"
    );
    (daemon, got)
}

fn installed() {
    assert!(
        std::process::Command::new("rtl_433")
            .arg("-V")
            .output()
            .is_ok(),
        "rtl_433 is not installed: apt-get install rtl-433 (scripts/test does)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_rtl_433_decodes_rtl_433s_own_test_code_into_retained_readings_and_ends() {
    installed();
    let dir = tempfile::tempdir().unwrap();
    let (daemon, got) = replay_once(
        dir.path(),
        ["-y", BRESSER_6IN1_CODE],
        172,
        Some(("station", BRESSER_6IN1_ADDRESS)),
        "sensorgate/station",
        "sensorgate/station/temperature_C",
    )
    .await;
    let state = &got["sensorgate/station"];
    assert!(state.retain);
    let state = json(state);
    // The values the code's annotation in rtl_433 names: 94 %, 2.8 °C, 0.4 m/s.
    assert_eq!(state["temperature_C"], 2.8, "{state}");
    assert_eq!(state["humidity"], 94, "{state}");
    assert_eq!(state["wind_avg_m_s"], 0.4, "{state}");
    assert_eq!(state["wind_dir_deg"], 340, "{state}");
    assert_eq!(state["battery_ok"], 0, "{state}");
    assert_eq!(got["sensorgate/station/temperature_C"].text(), "2.8");
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_rtl_433_decodes_a_recording_into_retained_readings_and_ends() {
    installed();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nexus_433.92M_250k.cu8");
    nexus_recording(&path);
    let path = path.display().to_string();
    let (daemon, got) = replay_once(
        dir.path(),
        ["-r", &path],
        19,
        None,
        "sensorgate/garden",
        "sensorgate/garden/temperature_C",
    )
    .await;
    let state = &got["sensorgate/garden"];
    assert!(state.retain);
    let state = json(state);
    assert_eq!(state["temperature_C"], 21.5, "{state}");
    assert_eq!(state["humidity"], 55);
    assert_eq!(state["battery_ok"], 1);
    assert_eq!(got["sensorgate/garden/temperature_C"].text(), "21.5");
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battery_swap_keeps_the_name_a_button_stays_online_and_discovery_types_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let config = fake_config("all")
        .device("tower", "rf", "Acurite-Tower/*/A")
        .table("[devices]\noffline_after = \"1s\"")
        .homeassistant("discovery = true\ndevices = \"all\"");
    let daemon = start_fake_with(dir.path(), "swap", config);
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "#", 1).await;
    let mut seen = Vec::new();
    let after_swap = sub
        .wait_for(Duration::from_secs(10), &mut seen, |m| {
            m.topic == "sensorgate/tower" && json(m)["temperature_C"] == 4.0
        })
        .await
        .expect("the reading after the battery swap is the same device's");
    assert_eq!(json(&after_swap)["humidity"], 40);
    sub.wait_for(Duration::from_secs(5), &mut seen, |m| {
        m.topic == "sensorgate/tower/availability" && m.text() == "offline"
    })
    .await
    .expect("the tower goes offline after 1 s of silence");
    // Two more stats reports: time for the button to have gone offline too, were it a sensor.
    for _ in 0..2 {
        sub.wait_for(Duration::from_secs(5), &mut seen, |m| {
            m.topic == "sensorgate/gateway/stats"
        })
        .await
        .expect("stats");
    }
    let remote = seen
        .iter()
        .find(|m| {
            m.topic.starts_with("sensorgate/rf-Generic-Remote")
                && m.topic.ends_with("/availability")
        })
        .map(|m| m.topic.clone())
        .expect("the remote (devices = \"all\") is published");
    let remote_offline = seen
        .iter()
        .any(|m| m.topic == remote && m.text() == "offline");
    assert!(!remote_offline, "a button is not taken offline by silence");
    assert!(
        !seen.iter().any(|m| m.topic.contains("Acurite-Tower_877")),
        "no second device for the new id"
    );
    let config = |component: &str, field: &str| {
        seen.iter()
            .rev()
            .find(|m| {
                m.topic.starts_with(&format!("homeassistant/{component}/"))
                    && m.topic.contains(field)
            })
            .map(json)
            .unwrap_or_else(|| panic!("no {component} config for {field}"))
    };
    assert!(
        !seen.iter().any(|m| m.topic.starts_with("homeassistant/")
            && (m.topic.contains("noise") || m.topic.contains("mic"))),
        "reception metadata gets no entity (rtl_433's noise is RF noise, not sound pressure)"
    );
    let battery = config("binary_sensor", "battery_ok");
    assert_eq!(battery["device_class"], "battery", "{battery}");
    let temperature = config("sensor", "temperature_C");
    assert_eq!(temperature["unit_of_measurement"], "°C", "{temperature}");
    assert_eq!(temperature["device_class"], "temperature");
    let (status, _) = daemon.stop();
    assert!(status.success());
}
