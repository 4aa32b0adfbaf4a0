//! Encrypted sensor frames end to end: an independent node-side implementation (Python's `cryptography`,
//! `tests/security/frames.py`, which checks the test vector of docs/formats.md first) seals AES-128-CCM frames
//! with a node16 header and a CRC trailer; the real daemon reads them COBS-framed through a pseudo-
//! terminal, publishes what authenticates, and counts the rest per source (`auth_failed`, `replayed`):
//! tampered header, ciphertext or MIC, the wrong key, replays before and after a clean restart, and after
//! `kill -9` (a power cut) within the documented restart margin. Every wait is bounded.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;
use sensorgate_testkit::python;
use sensorgate_testkit::tmpfs::SmallFs;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pty::FakeDongle;
use sensorgate::frame::{encode_frame, Framing};
use sensorgate_testkit::daemon::{refused_by_check_config_and_run, run_bounded, Daemon};

const SOURCE_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const PORCH_KEY: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";

/// The configuration, its placeholders filled by the tests.
fn base_config() -> String {
    ConfigBuilder::new("test-gw")
        .publish(r#"stats_interval = "1s""#)
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
framing = "cobs"
crc = "crc16-ccitt-false"
header = "node16"
payload = "lpp"
encryption = "aes-128-ccm"
key_file = "{source_key}"

[devices]
dedup_window = "0s"

[[device]]
name = "kitchen"
source = "uart0"
address = "17"

[[device]]
name = "porch"
source = "uart0"
address = "9"
key_file = "{porch_key}"
"#,
        )
        .toml()
}

const OPENED: &str = "open at 115200 baud";

fn write_key(path: &Path, hex: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    // Grouped and on two lines: whitespace is ignored.
    std::fs::write(path, format!("{}\n{}\n", &hex[..16], &hex[16..])).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn start(dir: &Path, dongle: Option<FakeDongle>) -> (Daemon, FakeDongle) {
    let link = dir.join("usb-node-bridge");
    let dongle = dongle.unwrap_or_else(|| FakeDongle::plug(&link));
    let source_key = dir.join("uart0.key");
    let porch_key = dir.join("porch.key");
    if !source_key.exists() {
        write_key(&source_key, SOURCE_KEY, 0o600);
        write_key(&porch_key, PORCH_KEY, 0o644);
    }
    let config = base_config()
        .replace("{link}", &link.display().to_string())
        .replace("{source_key}", &source_key.display().to_string())
        .replace("{porch_key}", &porch_key.display().to_string());
    let daemon = Daemon::start(dir, &config);
    daemon.wait_for_log(OPENED, 1, Duration::from_secs(10));
    (daemon, dongle)
}

/// One frame request for the Python node: key, address, counter, temperature, and an optional tamper.
struct Node<'a> {
    key: &'a str,
    address: u16,
    counter: u32,
    temperature: f64,
    tamper: Option<&'a str>,
}

fn node(key: &str, address: u16, counter: u32, temperature: f64) -> Node<'_> {
    Node {
        key,
        address,
        counter,
        temperature,
        tamper: None,
    }
}

/// Cayenne LPP: channel 1, temperature, 0.1 °C big-endian.
fn lpp_temperature(celsius: f64) -> String {
    let value = (celsius * 10.0).round() as i16;
    format!("0167{:04x}", value as u16)
}

/// Frames sealed by the Python implementation, COBS-framed for the wire.
fn python_frames(nodes: &[Node<'_>]) -> Vec<u8> {
    let mut input = String::new();
    for n in nodes {
        input.push_str(&format!(
            "{} {} {} {} {} {}\n",
            n.key,
            n.address,
            n.counter as u8,
            n.counter,
            lpp_temperature(n.temperature),
            n.tamper.unwrap_or("")
        ));
    }
    let text = python::run_script(
        "cryptography",
        "python3-cryptography",
        "tests/security/frames.py",
        &[],
        &input,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), nodes.len());
    let mut wire = Vec::new();
    for line in lines {
        let frame: Vec<u8> = (0..line.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&line[i..i + 2], 16).unwrap())
            .collect();
        wire.extend(encode_frame(Framing::Cobs, &frame));
    }
    wire
}

fn state(message: &mqtt::Received) -> serde_json::Value {
    serde_json::from_slice(&message.payload).expect("state is JSON")
}

/// Waits for `device`'s state with this temperature.
async fn wait_state(sub: &mut mqtt::Subscriber, device: &str, temperature: f64) {
    let topic = format!("sensorgate/{device}");
    let mut seen = Vec::new();
    let got = sub
        .wait_for(Duration::from_secs(10), &mut seen, |m| {
            m.topic == topic && state(m)["temperature_1"] == serde_json::json!(temperature)
        })
        .await;
    assert!(
        got.is_some(),
        "{device} at {temperature}: saw {:?}",
        seen.iter()
            .map(|m| (m.topic.clone(), m.text()))
            .collect::<Vec<_>>()
    );
}

/// Waits until uart0's counters in `{base}/gateway/stats` satisfy `check` (`what` names the wait);
/// returns them.
async fn wait_counters(
    stats: &mut mqtt::Subscriber,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    stats
        .stats_until(what, "/sources/uart0", Duration::from_secs(10), check)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_frames_are_accepted_and_tampered_replayed_or_foreign_ones_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), None);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    let tampered = |tamper| Node {
        tamper: Some(tamper),
        ..node(SOURCE_KEY, 17, 50, 99.0)
    };
    let frames = python_frames(&[
        node(SOURCE_KEY, 17, 100, 21.5),
        node(PORCH_KEY, 9, 5, 12.0),
        // The source's key for a device that has its own: refused, counted.
        node(SOURCE_KEY, 9, 6, 99.0),
        tampered("header"),
        tampered("ciphertext"),
        tampered("tag"),
        // Replays: the same counter, and an older one.
        node(SOURCE_KEY, 17, 100, 21.5),
        node(SOURCE_KEY, 17, 99, 99.0),
        // The devices go on unaffected.
        node(PORCH_KEY, 9, 7, 13.0),
        node(SOURCE_KEY, 17, 101, 22.5),
    ]);
    dongle.write(&frames).await;

    wait_state(&mut states, "kitchen", 21.5).await;
    wait_state(&mut states, "porch", 12.0).await;
    wait_state(&mut states, "porch", 13.0).await;
    wait_state(&mut states, "kitchen", 22.5).await;
    let counters = wait_counters(&mut stats, "4 auth failures, 2 replays, 4 readings", |c| {
        c["auth_failed"] == 4 && c["replayed"] == 2 && c["readings"] == 4
    })
    .await;
    assert_eq!(counters["decode_errors"], 0, "{counters}");
    assert_eq!(counters["frames"], 10, "{counters}");

    let log = daemon.log();
    assert!(
        log.contains("porch.key is readable by group or others"),
        "a warning for the 0644 key file:\n{log}"
    );
    for key in [SOURCE_KEY, PORCH_KEY, &SOURCE_KEY[..16], &PORCH_KEY[16..]] {
        assert!(
            !log.to_lowercase().contains(key),
            "a key in the log:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_refused_after_a_clean_restart_and_after_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start(dir.path(), None);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let recorded = python_frames(&[node(SOURCE_KEY, 17, 1000, 20.0)]);
    dongle.write(&recorded).await;
    wait_state(&mut states, "kitchen", 20.0).await;
    drop(states);
    let (status, _) = daemon.stop();
    assert!(status.success());

    // Clean restart: the marks are exact. The recorded frame is refused; the next counter is accepted.
    let (daemon, mut dongle) = start(dir.path(), Some(dongle));
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    dongle.write(&recorded).await;
    let next = python_frames(&[node(SOURCE_KEY, 17, 1001, 21.0)]);
    dongle.write(&next).await;
    wait_state(&mut states, "kitchen", 21.0).await;
    wait_counters(
        &mut stats,
        "the recorded frame refused after a clean restart",
        |c| c["replayed"] == 1 && c["readings"] == 1,
    )
    .await;
    drop((states, stats));

    // A power cut: the file holds 1000 (1001 did not ask for a write), so the daemon refuses every counter
    // up to 1000 + 32 (the restart margin), the recorded frames included, and accepts 1033.
    daemon.kill();
    let (daemon, mut dongle) = start(dir.path(), Some(dongle));
    assert!(
        daemon.log().contains("restored after an unclean stop"),
        "{}",
        daemon.log()
    );
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    dongle.write(&recorded).await;
    dongle.write(&next).await;
    let after = python_frames(&[
        node(SOURCE_KEY, 17, 1032, 98.0),
        node(SOURCE_KEY, 17, 1033, 23.0),
    ]);
    dongle.write(&after).await;
    wait_state(&mut states, "kitchen", 23.0).await;
    let counters = wait_counters(&mut stats, "three refused within the margin", |c| {
        c["replayed"] == 3 && c["readings"] == 1
    })
    .await;
    assert_eq!(counters["auth_failed"], 0, "{counters}");
    let (status, _) = daemon.stop();
    assert!(status.success());
    let marks = stored_marks(&dir.path().join("state"));
    assert_eq!(marks["clean"], true, "{marks}");
    assert_eq!(marks["devices"][0]["counter"], 1033, "{marks}");
}

/// The replay marks the daemon wrote: the newest good copy, as JSON.
fn stored_marks(state_dir: &Path) -> serde_json::Value {
    use sensorgate::statefile::{Loaded, StateFile};
    match StateFile::open(state_dir, sensorgate::replay::STATE_NAME).1 {
        Loaded::Found(bytes) => serde_json::from_slice(&bytes).unwrap(),
        other => panic!("no replay marks: {other:?}"),
    }
}

/// The copy of the replay marks with the highest generation (bytes 8..16 of its header).
fn newest_copy(state_dir: &Path) -> std::path::PathBuf {
    (0..2)
        .map(|slot| state_dir.join(format!("replay.{slot}")))
        .max_by_key(|path| {
            let bytes = std::fs::read(path).unwrap_or_default();
            bytes
                .get(8..16)
                .map_or(0, |g| u64::from_le_bytes(g.try_into().unwrap()))
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_replay_marks_fall_back_to_the_other_copy_or_refuse_every_frame_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let (daemon, mut dongle) = start(dir.path(), None);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let recorded = python_frames(&[node(SOURCE_KEY, 17, 1000, 20.0)]);
    dongle.write(&recorded).await;
    wait_state(&mut states, "kitchen", 20.0).await;
    drop(states);
    assert!(daemon.stop().0.success());

    // One damaged write (the newest copy truncated): the other copy still holds the mark (written
    // unclean when the device first appeared: 1000 + the margin), so the recording is refused.
    let newest = newest_copy(&state_dir);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let (daemon, mut dongle) = start(dir.path(), Some(dongle));
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    dongle.write(&recorded).await;
    dongle
        .write(&python_frames(&[node(SOURCE_KEY, 17, 1040, 21.0)]))
        .await;
    wait_state(&mut states, "kitchen", 21.0).await;
    wait_counters(&mut stats, "the recording refused", |c| {
        c["replayed"] == 1 && c["readings"] == 1
    })
    .await;
    assert!(
        daemon.log().contains("one copy is damaged"),
        "{}",
        daemon.log()
    );
    drop((states, stats));
    assert!(daemon.stop().0.success());

    // Both copies damaged (garbage), and then an old single replay.json that does not parse: the marks
    // are lost, and every encrypted frame is refused, the recording and new counters alike, with one
    // ERROR naming the reset; until `sensorgate reset-state`.
    let lose_both = |state_dir: &Path| {
        for slot in 0..2 {
            std::fs::write(state_dir.join(format!("replay.{slot}")), b"garbage").unwrap();
        }
    };
    let lose_legacy = |state_dir: &Path| {
        for slot in 0..2 {
            std::fs::remove_file(state_dir.join(format!("replay.{slot}"))).unwrap();
        }
        std::fs::write(
            state_dir.join("replay.json"),
            b"{\"format\":\"sensorgate-re",
        )
        .unwrap();
    };
    let mut dongle = Some(dongle);
    for (case, lose) in [
        ("both copies", &lose_both as &dyn Fn(&Path)),
        ("replay.json", &lose_legacy),
    ] {
        lose(&state_dir);
        let (daemon, mut plugged) = start(dir.path(), dongle.take());
        let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
        plugged.write(&recorded).await;
        plugged
            .write(&python_frames(&[node(SOURCE_KEY, 17, 5000, 22.0)]))
            .await;
        let counters = wait_counters(&mut stats, case, |c| c["replayed"] == 2).await;
        assert_eq!(counters["readings"], 0, "{case}: {counters}");
        let log = daemon.log();
        assert_eq!(
            log.matches("replay marks lost").count(),
            1,
            "{case}: one ERROR:\n{log}"
        );
        assert!(log.contains("sensorgate reset-state"), "{case}: {log}");
        drop(stats);
        assert!(daemon.stop().0.success());
        // Still lost at the next start: the daemon neither wrote over nor moved the damaged files.
        let reset = Command::new(env!("CARGO_BIN_EXE_sensorgate"))
            .args(["reset-state", "-c"])
            .arg(dir.path().join("sensorgate.toml"))
            .env_remove("STATE_DIRECTORY")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&reset.stdout);
        assert!(reset.status.success(), "{case}: {said}");
        assert!(said.contains("moved"), "{case}: {said}");
        // After the reset: a first start for the marks; a new counter is accepted.
        let (daemon, mut plugged) = start(dir.path(), Some(plugged));
        let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
        plugged
            .write(&python_frames(&[node(SOURCE_KEY, 17, 6000, 23.0)]))
            .await;
        wait_state(&mut states, "kitchen", 23.0).await;
        drop(states);
        assert!(daemon.stop().0.success());
        dongle = Some(plugged);
    }
}

#[test]
fn a_malformed_key_file_is_refused_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "00010203 04050607\n08090a0b 0c0d0eXf\n").unwrap();
    let config = dir.path().join("sensorgate.toml");
    let text = base_config()
        .replace(
            "{state_dir}",
            &dir.path().join("state").display().to_string(),
        )
        .replace("{port}", "1")
        .replace("{link}", "/dev/null")
        .replace("{source_key}", &key.display().to_string())
        .replace("{porch_key}", &key.display().to_string());
    std::fs::write(&config, text).unwrap();
    // check-config reads the key files as `run` does; `run` refuses before anything starts. Exit 2.
    for (command, stderr) in refused_by_check_config_and_run(&config) {
        let expected = format!("{}:2:16: not a hex digit", key.display());
        assert!(stderr.contains(&expected), "{command}: {stderr}");
        assert!(stderr.contains("source[0].key_file"), "{command}: {stderr}");
        assert!(!stderr.contains("0c0d0e"), "no key digits: {stderr}");
    }
}

/// The test configuration with `source_key` as the source's key file, written into `dir`.
fn config_with_source_key(dir: &Path, source_key: &Path, porch_key: &Path) -> std::path::PathBuf {
    let config = dir.join("sensorgate.toml");
    let text = base_config()
        .replace("{state_dir}", &dir.join("state").display().to_string())
        .replace("{port}", "0")
        .replace("{link}", "/dev/null")
        .replace("{source_key}", &source_key.display().to_string())
        .replace("{porch_key}", &porch_key.display().to_string());
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_device_a_fifo_or_a_huge_file_as_key_file_is_refused_at_once_by_check_config_run_and_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let porch = dir.path().join("porch.key");
    write_key(&porch, PORCH_KEY, 0o600);
    let fifo = dir.path().join("key.fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let huge = dir.path().join("huge.key");
    std::fs::write(&huge, format!("{SOURCE_KEY}{}", " ".repeat(1 << 20))).unwrap();
    let cases: [(&Path, &str); 3] = [
        (Path::new("/dev/zero"), "is a character device"),
        (&fifo, "is a FIFO"),
        (&huge, "is larger than 4096 bytes"),
    ];
    for (key, what) in cases {
        let config = config_with_source_key(dir.path(), key, &porch);
        for command in ["check-config", "run"] {
            let (code, stderr, took) =
                run_bounded(&[command.as_ref(), "-c".as_ref(), config.as_os_str()]);
            assert_eq!(code, Some(2), "{command} {key:?}: {stderr}");
            let expected = format!("{}: {what}", key.display());
            assert!(stderr.contains(&expected), "{command}: {stderr}");
            assert!(stderr.contains("source[0].key_file"), "{command}: {stderr}");
            assert!(took < Duration::from_secs(5), "{command} took {took:?}");
        }
        let (code, stderr, took) = run_bounded(&[
            "encrypt".as_ref(),
            "--key-file".as_ref(),
            key.as_os_str(),
            "--counter".as_ref(),
            "1".as_ref(),
            "00".as_ref(),
        ]);
        assert_eq!(code, Some(2), "encrypt {key:?}: {stderr}");
        assert!(stderr.contains(what), "encrypt: {stderr}");
        assert!(took < Duration::from_secs(5), "encrypt took {took:?}");
    }
}

#[test]
fn an_encrypted_source_without_a_header_is_refused_by_check_config_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("uart0.key");
    write_key(&key, SOURCE_KEY, 0o600);
    // Without a header every node would seal with nonce address 0 and share one replay mark.
    let text = ConfigBuilder::new("test-gw")
        .serial(
            "uart0",
            Path::new("/dev/null"),
            &format!(
                "framing = \"cobs\"\nheader = \"none\"\npayload = \"lpp\"\n\
                 encryption = \"aes-128-ccm\"\nkey_file = {:?}",
                key.display().to_string()
            ),
        )
        .toml_at(&dir.path().join("state"), 0);
    let config = dir.path().join("sensorgate.toml");
    std::fs::write(&config, &text).unwrap();
    let line = text[..text.find("encryption =").unwrap()]
        .matches('\n')
        .count()
        + 1;
    for (command, stderr) in refused_by_check_config_and_run(&config) {
        let located = format!("{}:{line}:", config.display());
        assert!(stderr.contains(&located), "{command}: {stderr}");
        assert!(
            stderr.contains("header = \"node16\" or \"radiohead\""),
            "{command}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: waits the daemon's 30 s retry of a failed replay-mark write (real time)"]
async fn a_full_state_file_system_keeps_the_replay_marks_working_and_they_are_written_once_it_has_room(
) {
    let dir = tempfile::tempdir().unwrap();
    let small = match SmallFs::mount(&dir.path().join("state"), 4096) {
        Ok(small) => small,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let (daemon, mut dongle) = start(dir.path(), None);
    let mut states = mqtt::subscribe(daemon.addr, "watch", "sensorgate/+", 1).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    // The disk is full: a new device's mark (written at once) cannot be written. Its frames are
    // accepted, the marks work in memory (the recording is refused), one WARN names the file system,
    // and the daemon runs on.
    let filler = small.fill();
    let kitchen = python_frames(&[node(SOURCE_KEY, 17, 1000, 20.0)]);
    dongle.write(&kitchen).await;
    wait_state(&mut states, "kitchen", 20.0).await;
    daemon.wait_for_log("is full", 1, Duration::from_secs(10));
    dongle.write(&kitchen).await;
    dongle
        .write(&python_frames(&[node(SOURCE_KEY, 17, 1001, 21.0)]))
        .await;
    wait_state(&mut states, "kitchen", 21.0).await;
    wait_counters(&mut stats, "the recording refused", |c| {
        c["replayed"] == 1 && c["readings"] == 2
    })
    .await;
    let log = daemon.log();
    let warning = log
        .lines()
        .find(|l| l.contains("is full"))
        .unwrap_or_default()
        .to_string();
    assert!(
        warning.contains("replay") && warning.contains(&small.path().display().to_string()),
        "the WARN names the marks and the file system: {warning}"
    );
    assert_eq!(log.matches("is full").count(), 1, "one WARN:\n{log}");

    // Room again: the write is tried again (every 30 s) and succeeds; a power cut after it keeps the
    // kitchen's mark, so its recording stays refused.
    std::fs::remove_file(&filler).unwrap();
    daemon.wait_for_log("replay: written again", 1, Duration::from_secs(45));
    drop((states, stats));
    daemon.kill();
    let (daemon, mut dongle) = start(dir.path(), Some(dongle));
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    dongle.write(&kitchen).await;
    wait_counters(
        &mut stats,
        "the kitchen's recording refused after the cut",
        |c| c["replayed"] == 1 && c["readings"] == 0,
    )
    .await;
    drop(stats);
    assert!(daemon.stop().0.success());
}
