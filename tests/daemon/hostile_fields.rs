//! A node that invents JSON field names (README, "Limits": `max_fields`). The real daemon reads a pseudo-terminal as its
//! serial dongle; a node sends 200 frames of 100 new field names each (20,000 names) plus three names no
//! topic level may carry (`$x`, `a/b`, `+`) in every frame. The device keeps at most `max_fields` fields
//! (in its JSON state and as retained field topics), the rest are counted in `{base}/gateway/stats`
//! (`devices.fields_dropped`), the daemon's resident memory stays bounded, the bad names are sanitised
//! (`_x`, `a_b`, `_`) and never reach the log once per frame, and a state restored with more fields than a
//! lowered `max_fields` keeps only that many. Every wait is bounded.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use daemon::Daemon;
use pty::FakeDongle;
use serde_json::{json, Map, Value};

/// The configuration, its placeholders filled by the test.
fn base_config() -> String {
    ConfigBuilder::new("test-gw")
        .publish(
            r#"
stats_interval = "1s"
field_topics = true
"#,
        )
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
baud = 115200
framing = "lines"
payload = "json"
max_frame_len = 4096

[devices]
max_fields = {max_fields}
"#,
        )
        .toml()
}

const OPENED: &str = "open at 115200 baud";
const FRAMES: usize = 200;
const NAMES_PER_FRAME: usize = 100;
/// Present in every frame, before the invented names: none may become a topic level as it is.
const BAD_NAMES: [&str; 3] = ["$x", "a/b", "+"];
/// What the three become.
const SANITISED: [&str; 3] = ["_x", "a_b", "_"];
/// The keys the gateway adds to a device's state: not fields.
const GATEWAY_KEYS: [&str; 5] = ["last_seen", "rssi", "snr", "seq", "source"];

fn start(dir: &Path, max_fields: usize) -> (Daemon, FakeDongle) {
    let link = dir.join("usb-hostile-node");
    let dongle = FakeDongle::plug(&link);
    let config = base_config()
        .replace("{link}", &link.display().to_string())
        .replace("{max_fields}", &max_fields.to_string());
    let daemon = Daemon::start(dir, &config);
    daemon.wait_for_log(OPENED, 1, Duration::from_secs(10));
    (daemon, dongle)
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn frame(fields: &Map<String, Value>) -> String {
    format!("{}\n", Value::Object(fields.clone()))
}

fn hostile_frame(n: usize) -> String {
    let mut fields = Map::new();
    fields.insert("id".into(), json!("7"));
    for (i, bad) in BAD_NAMES.iter().enumerate() {
        fields.insert((*bad).into(), json!(i));
    }
    for i in 0..NAMES_PER_FRAME {
        fields.insert(format!("f{n}_{i}"), json!(i));
    }
    // serde_json's map is sorted: the bad names ("$x", "+", "a/b") sort before "f..", and "id" after.
    frame(&fields)
}

fn simple_frame(id: &str, field: &str) -> String {
    let mut fields = Map::new();
    fields.insert("id".into(), json!(id));
    fields.insert(field.into(), json!(1));
    frame(&fields)
}

fn field_names(state: &Value) -> Vec<String> {
    state
        .as_object()
        .expect("state is a JSON object")
        .keys()
        .filter(|key| !GATEWAY_KEYS.contains(&key.as_str()))
        .cloned()
        .collect()
}

/// Waits for a stats report whose total of readings is at least `readings`; returns it.
async fn stats_after(stats: &mut mqtt::Subscriber, readings: u64) -> Value {
    let mut seen = Vec::new();
    let report = stats
        .wait_for(Duration::from_secs(15), &mut seen, |m| {
            let report: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            report
                .pointer("/totals/readings")
                .and_then(Value::as_u64)
                .is_some_and(|n| n >= readings)
        })
        .await
        .unwrap_or_else(|| panic!("no stats with {readings} readings; last {:?}", seen.last()));
    serde_json::from_slice(&report.payload).expect("stats JSON")
}

/// Every retained topic a late `sensorgate/#` subscriber receives: subscribes, then sends one frame of a
/// new device; its field topic is queued after the retained messages the SUBSCRIBE queued.
async fn retained_topics(
    daemon: &Daemon,
    dongle: &mut FakeDongle,
    client_id: &str,
    sentinel: &str,
) -> BTreeMap<String, mqtt::Received> {
    let mut late = mqtt::subscribe(daemon.addr, client_id, "sensorgate/#", 0).await;
    dongle.write(simple_frame(sentinel, "end").as_bytes()).await;
    let end = format!("sensorgate/uart0-{sentinel}/end");
    let got = late
        .collect_until(Duration::from_secs(15), |got| got.contains_key(&end))
        .await;
    assert!(
        got.contains_key(&end),
        "the sentinel arrives ({} topics)",
        got.len()
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_invented_field_names_are_bounded_counted_and_sanitised() {
    const MAX_FIELDS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), MAX_FIELDS);
    let pid = daemon.child.id();
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    // Warm up (first device, first publishes, stats report) before the baseline is taken.
    dongle.write(simple_frame("warm", "t").as_bytes()).await;
    stats_after(&mut stats, 1).await;
    let (rss_before, _) = memory_kib(pid);

    for n in 0..FRAMES {
        dongle.write(hostile_frame(n).as_bytes()).await;
    }
    let report = stats_after(&mut stats, 1 + FRAMES as u64).await;
    let (rss_after, peak) = memory_kib(pid);
    let got = retained_topics(&daemon, &mut dongle, "late", "sentinel").await;
    let device_topics: Vec<&String> = got
        .keys()
        .filter(|t| t.starts_with("sensorgate/uart0-7/") || *t == "sensorgate/uart0-7")
        .collect();
    let state: Value = serde_json::from_slice(&got["sensorgate/uart0-7"].payload).expect("state");
    let fields = field_names(&state);
    let dropped = report
        .pointer("/devices/fields_dropped")
        .and_then(Value::as_u64);
    let log = daemon.log();
    let bad_lines = log
        .lines()
        .filter(|line| {
            BAD_NAMES
                .iter()
                .any(|bad| line.contains(&format!("uart0-7/{bad}")))
        })
        .count();
    let error_lines = log.lines().filter(|line| line.contains("ERROR")).count();
    let cap_warnings = log
        .lines()
        .filter(|line| {
            line.contains("WARN") && line.contains("uart0-7") && line.contains("max_fields")
        })
        .count();
    eprintln!(
        "{} field names: VmRSS {rss_before} KiB before, {rss_after} KiB after (+{} KiB), peak {peak} KiB; \
         {} retained topics for the device, {} fields in its state, fields_dropped {dropped:?}, \
         {bad_lines} log lines naming a bad topic, {error_lines} ERROR lines, {cap_warnings} cap warnings",
        FRAMES * (NAMES_PER_FRAME + BAD_NAMES.len()),
        rss_after.saturating_sub(rss_before),
        device_topics.len(),
        fields.len(),
    );

    // The state: the three sanitised names and the first 61 invented ones; nothing else.
    assert_eq!(fields.len(), MAX_FIELDS, "{fields:?}");
    for name in SANITISED {
        assert!(fields.iter().any(|f| f == name), "{name} kept: {fields:?}");
    }
    // Retained topics: the state, the availability, one per kept field.
    assert_eq!(device_topics.len(), MAX_FIELDS + 2, "{device_topics:?}");
    for topic in got.keys() {
        let levels: Vec<&str> = topic.split('/').collect();
        assert!(
            levels.len() <= 3
                && levels
                    .iter()
                    .all(|l| !l.starts_with('$') && !l.contains(['+', '#'])),
            "a bad name reached a topic: {topic:?}"
        );
    }
    for name in SANITISED {
        assert!(
            got.contains_key(&format!("sensorgate/uart0-7/{name}")),
            "{name} published"
        );
    }
    // Counted: every field of every frame, less the 64 kept in the first frame and the three bad names
    // (kept, sanitised) in each later one.
    let total = FRAMES * (NAMES_PER_FRAME + BAD_NAMES.len());
    let kept = MAX_FIELDS + (FRAMES - 1) * BAD_NAMES.len();
    assert_eq!(dropped, Some((total - kept) as u64), "{report}");
    // Logged once, not once per frame.
    assert_eq!(
        cap_warnings, 1,
        "one warning naming the device and the limit:\n{log}"
    );
    assert_eq!(bad_lines, 0, "no line per frame about a bad topic");
    assert_eq!(error_lines, 0, "nothing refused, nothing lost:\n{log}");
    // Memory: 20,000 names must not cost 20,000 retained topics. 4 MiB is generous for a debug build
    // (the figure measured before the bound, printed above, was far larger).
    assert!(
        rss_after.saturating_sub(rss_before) < 4 * 1024,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );

    // Restart with a lower bound: the restored state keeps the first 16 fields, new names are dropped.
    let (status, _) = daemon.stop();
    assert!(status.success());
    drop(dongle);
    let (daemon, mut dongle) = start(dir.path(), 16);
    let (rss_restored, _) = memory_kib(daemon.child.id());
    let mut states = mqtt::subscribe(daemon.addr, "states", "sensorgate/uart0-7", 0).await;
    let mut seen = Vec::new();
    dongle
        .write(simple_frame("7", "brand_new").as_bytes())
        .await;
    let fresh = states
        .wait_for(Duration::from_secs(10), &mut seen, |m| !m.retain)
        .await
        .expect("a live state after the restart");
    let state: Value = serde_json::from_slice(&fresh.payload).expect("state");
    let fields = field_names(&state);
    eprintln!(
        "after restart with max_fields = 16: VmRSS {rss_restored} KiB, {} fields",
        fields.len()
    );
    assert_eq!(fields.len(), 16, "{fields:?}");
    assert!(!fields.iter().any(|f| f == "brand_new"), "{fields:?}");
    let (status, _) = daemon.stop();
    assert!(status.success());
}
