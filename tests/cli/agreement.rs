//! `check-config` and `run` agree on every key with a range or a table ("one owner per key", src/config/mod.rs):
//! a value `check-config` accepts is one the daemon starts with and runs, and a value it refuses is refused
//! by `check-config` and by `run` alike, with exit status 2 and one `PATH:LINE:COL: message` line pointing
//! at the value and naming the key. The accepted side is proven with two daemon starts (every key at the
//! low end of its range in one file, at the high end in the other; the LoRa bandwidth table spread over
//! both), each with simulated radios that must report `receiving` and an uplink that must connect to a
//! cloud broker on 127.0.0.1 (the high file must also forward a reading). The refused side runs the real
//! binary once per value for each of the two commands. The three disagreements found before, and the
//! duration that panicked the uplink, are regression tests of their own.
//!
//! `max_connections` is the one key whose high end is not started: the broker refuses, at start (exit 1),
//! a value whose sockets would not fit under the process's descriptor limit, which depends on the
//! machine, not on the file (documented in the reference).

use sensorgate_testkit::broker;
use sensorgate_testkit::mqtt;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sensorgate_testkit::daemon::Daemon;

/// How long one refused invocation may take before the test calls it hung (and kills it).
const RUN_BOUND: Duration = Duration::from_secs(20);

/// The tables of the generated file that the keys below live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Gateway,
    Broker,
    Publish,
    Devices,
    /// A `kind = "simulator"` source named "probe".
    Probe,
    /// A simulated SX1276 named "r1276".
    Sx1276,
    /// A simulated SX1262 named "r1262".
    Sx1262,
    /// The `[[device]]` "kitchen".
    Device,
    Upstream,
    Spool,
}

/// A key with a range or a table: values at its two ends that must start, and values that must be refused.
struct Key {
    table: Table,
    key: &'static str,
    low: &'static str,
    high: &'static str,
    refused: &'static [&'static str],
}

const fn key(
    table: Table,
    key: &'static str,
    low: &'static str,
    high: &'static str,
    refused: &'static [&'static str],
) -> Key {
    Key {
        table,
        key,
        low,
        high,
        refused,
    }
}

use Table::*;

/// Every key with a range or a table, at the ends of its documented range (config/sensorgate.toml).
const KEYS: &[Key] = &[
    key(
        Gateway,
        "base_topic",
        "\"sensorgate\"",
        "\"sensorgate\"",
        &["\"$SYS\"", "\"$x/y\""],
    ),
    key(Gateway, "worker_threads", "1", "16", &["0", "17"]),
    // The high end (1048576) depends on the descriptor limit; see the module documentation.
    key(Broker, "max_connections", "1", "64", &["0", "1048577"]),
    key(Broker, "max_offline_sessions", "0", "100000", &["100001"]),
    key(
        Broker,
        "max_packet_size",
        "\"16B\"",
        "\"268435455B\"",
        &["\"15B\"", "\"256MiB\""],
    ),
    key(Broker, "max_inflight", "1", "65535", &["0", "65536"]),
    key(
        Broker,
        "max_queued_messages",
        "1",
        "4294967295",
        &["0", "4294967296"],
    ),
    // 5 is the least every topic the gateway builds fits in: {base}/{device}/{field} with a one-level
    // base_topic, and Home Assistant's {prefix}/{component}/{node}/{object}/config.
    key(Broker, "max_topic_levels", "5", "1024", &["0", "1025"]),
    key(
        Broker,
        "max_retained_messages",
        "1",
        "1000000",
        &["0", "1000001"],
    ),
    key(
        Broker,
        "handshake_timeout",
        "\"1ms\"",
        "\"1m\"",
        &["\"0s\"", "\"1m1ms\""],
    ),
    key(Broker, "session_expiry", "\"0s\"", "\"7d\"", &["\"7d1ms\""]),
    key(
        Broker,
        "retained_sync",
        "\"1s\"",
        "\"24h\"",
        &["\"999ms\"", "\"24h1ms\""],
    ),
    key(
        Broker,
        "anonymous_session_expiry",
        "\"0s\"",
        "\"7d\"",
        &["\"7d1ms\""],
    ),
    key(
        Publish,
        "stats_interval",
        "\"1ms\"",
        "\"30d\"",
        &["\"0s\"", "\"30d1ms\""],
    ),
    key(
        Devices,
        "offline_after",
        "\"1ms\"",
        "\"30d\"",
        &["\"0s\"", "\"30d1ms\""],
    ),
    key(
        Devices,
        "dedup_window",
        "\"0s\"",
        "\"30d\"",
        &["\"30d1ms\""],
    ),
    key(
        Probe,
        "interval",
        "\"1ms\"",
        "\"30d\"",
        &["\"0s\"", "\"30d1ms\""],
    ),
    key(Probe, "devices", "1", "65535", &["0", "65536"]),
    key(
        Sx1276,
        "frequency",
        "137_000_000",
        "1_020_000_000",
        &["136_999_999", "1_020_000_001"],
    ),
    key(Sx1276, "spreading_factor", "7", "12", &["6", "13"]),
    key(
        Sx1276,
        "bandwidth",
        "7_800",
        "500_000",
        &["7_799", "100_000"],
    ),
    key(Sx1276, "devices", "1", "254", &["0", "255"]),
    key(
        Sx1276,
        "interval",
        "\"1ms\"",
        "\"30d\"",
        &["\"0s\"", "\"30d1ms\""],
    ),
    key(
        Sx1262,
        "frequency",
        "150_000_000",
        "960_000_000",
        &["149_999_999", "960_000_001"],
    ),
    key(Sx1262, "spreading_factor", "5", "12", &["4", "13"]),
    key(Sx1262, "bandwidth", "7_800", "500_000", &["125_001"]),
    key(Device, "name", "\"kitchen\"", "\"kitchen\"", &["\"$x\""]),
    key(
        Device,
        "offline_after",
        "\"1ms\"",
        "\"30d\"",
        &["\"0s\"", "\"30d1ms\""],
    ),
    key(
        Upstream,
        "keep_alive",
        "\"1s\"",
        "\"65535s\"",
        &["\"999ms\"", "\"65536s\""],
    ),
    key(Upstream, "max_inflight", "1", "60000", &["0", "60001"]),
    key(
        Spool,
        "max_bytes",
        "\"64KiB\"",
        "\"1024GiB\"",
        &["\"65535B\"", "\"1025GiB\""],
    ),
    // The high end is max_bytes / 4 of the high file; with the default max_bytes (64MiB) the refused
    // values straddle the spool's own bounds.
    key(
        Spool,
        "segment_bytes",
        "\"4KiB\"",
        "\"256GiB\"",
        &["\"4095B\"", "\"17MiB\""],
    ),
    key(
        Spool,
        "max_age",
        "\"1ms\"",
        "\"365d\"",
        &["\"0s\"", "\"365d1ms\""],
    ),
    key(
        Spool,
        "sync",
        "\"1ms\"",
        "\"30d\"",
        &["\"0s\"", "\"30d1ms\""],
    ),
];

/// The LoRa bandwidth table beyond its two ends, started as extra simulated SX1276s: half in each file.
const OTHER_BANDWIDTHS: [[u32; 4]; 2] = [
    [10_400, 15_600, 20_800, 31_250],
    [41_700, 62_500, 125_000, 250_000],
];

/// The lines each table starts with, before the keys under test.
fn base_lines(table: Table) -> (&'static str, Vec<&'static str>) {
    match table {
        Gateway => (
            "[gateway]",
            vec!["id = \"agree\"", "state_dir = \"{state_dir}\""],
        ),
        Broker => ("[broker]", vec!["max_connections = 64"]),
        Publish => ("[publish]", vec![]),
        Devices => ("[devices]", vec![]),
        Probe => (
            "[[source]]",
            vec!["name = \"probe\"", "kind = \"simulator\"", "devices = 1"],
        ),
        Sx1276 => (
            "[[source]]",
            vec![
                "name = \"r1276\"",
                "kind = \"sx1276\"",
                "backend = \"simulator\"",
                "frequency = 868_100_000",
                "devices = 1",
            ],
        ),
        Sx1262 => (
            "[[source]]",
            vec![
                "name = \"r1262\"",
                "kind = \"sx1262\"",
                "backend = \"simulator\"",
                "frequency = 868_300_000",
                "devices = 1",
            ],
        ),
        Device => (
            "[[device]]",
            vec![
                "name = \"kitchen\"",
                "source = \"traffic\"",
                "address = \"1\"",
            ],
        ),
        Upstream => (
            "[upstream]",
            vec![
                "url = \"mqtt://127.0.0.1:{cloud_port}\"",
                "allow_plaintext = true",
            ],
        ),
        Spool => ("[upstream.spool]", vec![]),
    }
}

const TABLES: [Table; 10] = [
    Gateway, Broker, Publish, Devices, Probe, Sx1276, Sx1262, Device, Upstream, Spool,
];

/// A configuration file: the base of every table with `values` (table, key, TOML value) written into it
/// (replacing a base line of the same key), plus a simulator "traffic" whose readings the uplink forwards
/// and `extra_bandwidths` simulated SX1276s. Returns the text and the 1-based line of each value.
fn render(values: &[(Table, &str, &str)], extra_bandwidths: &[u32]) -> (String, Vec<usize>) {
    let mut lines: Vec<String> = Vec::new();
    let mut value_lines = vec![0; values.len()];
    for table in TABLES {
        let (header, base) = base_lines(table);
        lines.push(header.to_string());
        for line in base {
            let written_key = line.split(" = ").next().unwrap_or_default();
            let replaced = values
                .iter()
                .any(|(t, k, _)| *t == table && *k == written_key);
            if !replaced {
                lines.push(line.to_string());
            }
        }
        for (i, (t, k, v)) in values.iter().enumerate() {
            if *t == table {
                lines.push(format!("{k} = {v}"));
                value_lines[i] = lines.len();
            }
        }
        if table == Broker {
            lines.push(String::new());
            lines.push("[[broker.listener]]".to_string());
            lines.push("bind = \"127.0.0.1:{port}\"".to_string());
        }
        if table == Probe {
            lines.push(String::new());
            lines.push("[[source]]".to_string());
            lines.push("name = \"traffic\"".to_string());
            lines.push("kind = \"simulator\"".to_string());
            lines.push("devices = 2".to_string());
            lines.push("interval = \"200ms\"".to_string());
        }
        if table == Upstream {
            lines.push(String::new());
            lines.push("[[upstream.forward]]".to_string());
            lines.push("filter = \"sensorgate/#\"".to_string());
            lines.push("prefix = \"cloud/\"".to_string());
            lines.push("qos = 0".to_string());
        }
        lines.push(String::new());
    }
    for bandwidth in extra_bandwidths {
        lines.push("[[source]]".to_string());
        lines.push(format!("name = \"bw{bandwidth}\""));
        lines.push("kind = \"sx1276\"".to_string());
        lines.push("backend = \"simulator\"".to_string());
        lines.push("frequency = 868_100_000".to_string());
        lines.push("devices = 1".to_string());
        lines.push(format!("bandwidth = {bandwidth}"));
        lines.push(String::new());
    }
    (lines.join("\n"), value_lines)
}

/// What one invocation of the binary did.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `sensorgate ARGS` with the systemd and logging variables cleared, bounded by [`RUN_BOUND`]
/// (killed by its own handle if it overstays).
fn sensorgate(dir: &Path, args: &[&str]) -> Outcome {
    let out_path = dir.join("stdout");
    let err_path = dir.join("stderr");
    let stdout = std::fs::File::create(&out_path).unwrap();
    let stderr = std::fs::File::create(&err_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sensorgate"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sensorgate {args:?} still running after {RUN_BOUND:?}:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap(),
        stderr: std::fs::read_to_string(&err_path).unwrap(),
    }
}

/// Writes `text` (placeholders filled with harmless values) and asserts that `check-config` and `run`
/// both refuse it with exit 2 and the same single line, located at `line` on the value after `key = `,
/// naming `key`; returns that line.
fn assert_refused(dir: &Path, name: &str, text: &str, line: usize, key: &str) -> String {
    let text = text
        .replace("{port}", "1")
        .replace("{cloud_port}", "2")
        .replace("{state_dir}", &dir.join("state").display().to_string());
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, &text).unwrap();
    let path = path.display().to_string();
    let written = text.lines().nth(line - 1).unwrap();
    let column = written.find(" = ").unwrap() + 4;
    let location = format!("{path}:{line}:{column}: ");

    let checked = sensorgate(dir, &["check-config", &path]);
    assert_eq!(
        checked.code,
        Some(2),
        "{name}: check-config: {}",
        checked.stderr
    );
    assert_eq!(checked.stdout, "", "{name}");
    let lines: Vec<&str> = checked.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: one line: {}", checked.stderr);
    assert!(
        lines[0].starts_with(&location),
        "{name}: wanted {location}..., got {}",
        lines[0]
    );
    assert!(lines[0].contains(key), "{name}: names {key}: {}", lines[0]);

    let refused = sensorgate(dir, &["run", "-c", &path]);
    assert_eq!(refused.code, Some(2), "{name}: run: {}", refused.stderr);
    assert_eq!(refused.stderr, checked.stderr, "{name}: run says the same");
    assert!(!dir.join("state").exists(), "{name}: run started something");
    lines[0].to_string()
}

/// Refuses `key = value` in `table` of the otherwise valid base file.
fn assert_value_refused(dir: &Path, table: Table, key: &str, value: &str) -> String {
    let (text, lines) = render(&[(table, key, value)], &[]);
    let name = format!("{table:?}-{key}-{}", value.replace(['"', '/', '$'], ""));
    assert_refused(dir, &name, &text, lines[0], key)
}

#[test]
fn every_refused_value_is_refused_by_check_config_and_run_alike_located() {
    let dir = tempfile::tempdir().unwrap();
    let mut count = 0;
    for key in KEYS {
        for value in key.refused {
            assert_value_refused(dir.path(), key.table, key.key, value);
            count += 1;
        }
    }
    assert!(count >= 50, "{count} refused values");
}

/// The base file itself is valid: the refusals above are about their one value.
#[test]
fn the_base_file_and_both_ends_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    for (name, values) in [
        ("base", vec![]),
        ("low", ends(|k| k.low)),
        ("high", ends(|k| k.high)),
    ] {
        let (text, _) = render(&values, &OTHER_BANDWIDTHS[0]);
        let text = text
            .replace("{port}", "1")
            .replace("{cloud_port}", "2")
            .replace("{state_dir}", "/tmp/unused");
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &text).unwrap();
        let outcome = sensorgate(dir.path(), &["check-config", &path.display().to_string()]);
        assert_eq!(outcome.code, Some(0), "{name}: {}\n{text}", outcome.stderr);
    }
}

fn ends(pick: impl Fn(&Key) -> &'static str) -> Vec<(Table, &'static str, &'static str)> {
    KEYS.iter().map(|k| (k.table, k.key, pick(k))).collect()
}

/// Starts the daemon with every key at one end of its range and asserts that it runs: every radio
/// receiving, the uplink connected to a cloud broker on 127.0.0.1 (and, when `expect_forwarding`, a
/// reading arriving there), then a clean stop by SIGTERM with exit 0 and no panic in the log.
async fn assert_starts_and_runs(
    values: Vec<(Table, &'static str, &'static str)>,
    bandwidths: &[u32],
    expect_forwarding: bool,
) {
    let cloud = sensorgate::broker::Broker::start(&broker::local_settings(), None)
        .await
        .unwrap();
    let cloud_addr = cloud.local_addrs()[0];
    let mut watcher = mqtt::subscribe(cloud_addr, "agreement-watcher", "cloud/#", 0).await;

    let dir = tempfile::tempdir().unwrap();
    let (text, _) = render(&values, bandwidths);
    let text = text.replace("{cloud_port}", &cloud_addr.port().to_string());
    let daemon = tokio::task::block_in_place(|| {
        Daemon::start_with_env(dir.path(), &text, &[("RUST_LOG", "info")])
    });
    let value = |table: Table, key: &str, default: &'static str| {
        values
            .iter()
            .find(|(t, k, _)| *t == table && *k == key)
            .map_or(default, |(_, _, v)| *v)
    };
    let mut radios = vec![
        ("r1276", "sx1276", value(Sx1276, "devices", "1").to_string()),
        ("r1262", "sx1262", "1".to_string()),
    ];
    let names: Vec<String> = bandwidths.iter().map(|b| format!("bw{b}")).collect();
    for name in &names {
        radios.push((name.as_str(), "sx1276", "1".to_string()));
    }
    tokio::task::block_in_place(|| {
        for (name, chip, devices) in &radios {
            daemon.wait_for_log(
                &format!("radio source {name}: simulated {chip} with {devices} nodes receiving"),
                1,
                Duration::from_secs(20),
            );
        }
        daemon.wait_for_log(
            &format!("uplink: connected to 127.0.0.1:{}", cloud_addr.port()),
            1,
            Duration::from_secs(20),
        );
    });
    if expect_forwarding {
        let forwarded = watcher
            .wait_for(Duration::from_secs(20), &mut Vec::new(), |m| {
                m.topic.starts_with("cloud/sensorgate/") && !m.topic.contains("/gateway/")
            })
            .await;
        assert!(
            forwarded.is_some(),
            "no reading forwarded within 20 s:\n{}",
            daemon.log()
        );
    }
    let log_path = daemon.log_path.clone();
    let (status, took) = tokio::task::block_in_place(|| daemon.stop());
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(status.success(), "exit {status} after {took:?}:\n{log}");
    assert!(!log.contains("panicked"), "a task panicked:\n{log}");
    assert!(
        !log.contains("stays idle"),
        "a source refused its settings:\n{log}"
    );
    drop(cloud);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_at_the_low_end_of_its_range_starts_and_runs() {
    assert_starts_and_runs(ends(|k| k.low), &OTHER_BANDWIDTHS[0], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_at_the_high_end_of_its_range_starts_runs_and_forwards() {
    assert_starts_and_runs(ends(|k| k.high), &OTHER_BANDWIDTHS[1], true).await;
}

// The regression cases, each refused where it used to pass check-config and then fail or be
// ignored at run time. Their accepted neighbours (60000, 1_020_000_000, max_bytes / 4) start above.

#[test]
fn regression_upstream_max_inflight_61000_is_refused_at_the_key_not_by_the_uplink_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let line = assert_value_refused(dir.path(), Upstream, "max_inflight", "61000");
    assert!(line.contains("upstream.max_inflight"), "{line}");
    assert!(line.contains("1..=60000"), "{line}");
}

#[test]
fn regression_frequency_1_020_500_000_is_refused_by_the_radios_own_range() {
    let dir = tempfile::tempdir().unwrap();
    let line = assert_value_refused(dir.path(), Sx1276, "frequency", "1_020_500_000");
    assert!(line.contains("[[source]] \"r1276\": frequency"), "{line}");
    assert!(line.contains("1020000000"), "{line}");
    // The SX1262's own range, not the SX1276's.
    let line = assert_value_refused(dir.path(), Sx1262, "frequency", "1_000_000_000");
    assert!(
        line.contains("sx1262") && line.contains("960000000"),
        "{line}"
    );
}

#[test]
fn regression_segment_bytes_the_spool_would_clamp_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The spool clamps a segment to a quarter of max_bytes: 64MiB / 4 = 16MiB. "64MiB" passed before.
    for (name, segment) in [("quarter-plus", "\"32MiB\""), ("all", "\"64MiB\"")] {
        let (text, lines) = render(
            &[
                (Spool, "max_bytes", "\"64MiB\""),
                (Spool, "segment_bytes", segment),
            ],
            &[],
        );
        let line = assert_refused(dir.path(), name, &text, lines[1], "segment_bytes");
        assert!(line.contains("maximum \"16MiB\""), "{line}");
        assert!(line.contains("quarter of max_bytes"), "{line}");
    }
    let (text, _) = render(
        &[
            (Spool, "max_bytes", "\"64MiB\""),
            (Spool, "segment_bytes", "\"16MiB\""),
        ],
        &[],
    );
    let path = dir.path().join("quarter.toml");
    let text = text
        .replace("{port}", "1")
        .replace("{cloud_port}", "2")
        .replace("{state_dir}", "/tmp/unused");
    std::fs::write(&path, text).unwrap();
    let outcome = sensorgate(dir.path(), &["check-config", &path.display().to_string()]);
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
}

#[test]
fn regression_a_sync_period_that_overflowed_the_uplinks_clock_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = assert_value_refused(dir.path(), Spool, "sync", "\"213503982334601d\"");
    assert!(line.contains("above the maximum \"30d\""), "{line}");
    assert!(line.contains("e.g. \"1s\""), "{line}");
}

#[test]
fn topics_under_dollar_and_deeper_than_max_topic_levels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let line = assert_value_refused(dir.path(), Gateway, "base_topic", "\"$SYS\"");
    assert!(line.contains("starts with '$'"), "{line}");
    let line = assert_value_refused(dir.path(), Device, "name", "\"$x\"");
    assert!(line.contains("[[device]] \"$x\": name"), "{line}");
    // A base of 2 levels leaves no room for {device}/{field} under max_topic_levels = 3.
    let (text, lines) = render(
        &[
            (Gateway, "base_topic", "\"home/sensors\""),
            (Broker, "max_topic_levels", "3"),
        ],
        &[],
    );
    let line = assert_refused(dir.path(), "too-deep", &text, lines[0], "base_topic");
    assert!(line.contains("max_topic_levels = 3"), "{line}");
}
