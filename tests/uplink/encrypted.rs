//! End-to-end encrypted uplink payloads: the real daemon forwards a device's topics under a rule with
//! `encrypt = { key_file, key_id }` to Debian's mosquitto (plain transport, so the cloud broker sees
//! exactly what it stores); Debian's `mosquitto_sub` receives what the cloud holds, and an independent
//! receiver (Python's `cryptography`, `tests/security/envelope.py`) opens the envelopes with the remote
//! topic as associated data. Proven: the cloud holds no plaintext of the encrypted rule's topics, the
//! envelopes open to the local payloads with key id 7 and 30 bytes of overhead, the same envelope fails
//! under another topic (a moved payload), other rules stay plain, and `sensorgate decrypt` agrees. Every
//! wait is bounded.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon;
use sensorgate_testkit::mosquitto;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;
use sensorgate_testkit::python;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use daemon::Daemon;
use mosquitto::{BrokerConfig, Mosquitto};
use pty::FakeDongle;

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KITCHEN: &str = "sites/garden/sensorgate/kitchen";
const KITCHEN_FIELD: &str = "sites/garden/sensorgate/kitchen/temperature";
const HALL: &str = "sites/garden/sensorgate/hall";

/// The configuration, its placeholders filled by the test.
fn base_config() -> String {
    ConfigBuilder::new("garden")
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
framing = "lines"
payload = "json"

[[device]]
name = "kitchen"
source = "uart0"
address = "17"

[[device]]
name = "hall"
source = "uart0"
address = "18"

[upstream]
url = "{url}"
allow_plaintext = true
client_id = "sensorgate-garden-security"

[[upstream.forward]]
filter = "sensorgate/kitchen/#"
prefix = "sites/garden/"
encrypt = { key_file = "{key_file}", key_id = 7 }

[[upstream.forward]]
filter = "sensorgate/#"
prefix = "sites/garden/"
"#,
        )
        .toml()
}

/// What `mosquitto_sub` received: `(topic, payload)`, bounded in count and time.
fn cloud_messages(port: u16, topics: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut command = Command::new("mosquitto_sub");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-F", "%t %x"])
        .args(["-C", &topics.len().to_string(), "-W", "15"]);
    for topic in topics {
        command.args(["-t", topic]);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_sub (scripts/test installs mosquitto-clients)");
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(topic, hex)| (topic.to_string(), unhex(hex)))
        .collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Python receiver's verdict for each `(topic as associated data, envelope)`.
fn python_open(key_file: &Path, envelopes: &[(&str, &[u8])]) -> Vec<String> {
    let input: String = envelopes
        .iter()
        .map(|(topic, envelope)| format!("{topic} {}\n", hex(envelope)))
        .collect();
    python::run_script(
        "cryptography",
        "python3-cryptography",
        "tests/security/envelope.py",
        &[key_file],
        &input,
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_stores_envelopes_that_only_the_key_and_the_right_topic_open() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = Mosquitto::start(BrokerConfig::default());
    let key_file = dir.path().join("uplink.key");
    std::fs::write(&key_file, format!("{}\n{}\n", &KEY[..32], &KEY[32..])).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let link = dir.path().join("usb-serial");
    let mut dongle = FakeDongle::plug(&link);
    let config = base_config()
        .replace("{link}", &link.display().to_string())
        .replace("{url}", &cloud.plain_url())
        .replace("{key_file}", &key_file.display().to_string());
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    let mut local = mqtt::subscribe(daemon.addr, "local", "sensorgate/kitchen", 1).await;
    dongle
        .write(b"{\"id\":17,\"temperature\":21.5}\n{\"id\":18,\"temperature\":19}\n")
        .await;
    let mut seen = Vec::new();
    let state = local
        .wait_for(Duration::from_secs(10), &mut seen, |_| true)
        .await
        .expect("the kitchen's state on the local broker");

    // Retained upstream too, so a subscriber after the fact gets all three.
    let got = cloud_messages(cloud.port, &[KITCHEN, KITCHEN_FIELD, HALL]);
    let find = |topic: &str| {
        got.iter()
            .find(|(t, _)| t == topic)
            .map(|(_, payload)| payload.clone())
            .unwrap_or_else(|| panic!("{topic} not in the cloud: {got:?}\n{}", daemon.log()))
    };
    let kitchen = find(KITCHEN);
    let field = find(KITCHEN_FIELD);
    let hall = find(HALL);
    assert_eq!(
        (kitchen[0], kitchen[1]),
        (1, 7),
        "version 1, key id 7: {kitchen:?}"
    );
    assert_eq!(
        kitchen.len(),
        state.payload.len() + 30,
        "30 bytes of overhead"
    );
    assert!(
        !String::from_utf8_lossy(&kitchen).contains("21.5"),
        "no plaintext in the cloud"
    );
    let hall_state: serde_json::Value =
        serde_json::from_slice(&hall).expect("the other rule is plain");
    assert_eq!(hall_state["temperature"], 19);

    let verdicts = python_open(
        &key_file,
        &[
            (KITCHEN, &kitchen),
            (KITCHEN_FIELD, &field),
            // Moved: the kitchen's envelope presented as the hall's, and the field's as the state's.
            (HALL, &kitchen),
            (KITCHEN, &field),
        ],
    );
    assert_eq!(verdicts.len(), 4, "{verdicts:?}");
    assert_eq!(verdicts[0], format!("OK 7 {}", hex(&state.payload)));
    assert_eq!(verdicts[1], format!("OK 7 {}", hex(b"21.5")));
    assert_eq!(verdicts[2], "FAIL InvalidTag");
    assert_eq!(verdicts[3], "FAIL InvalidTag");

    // `sensorgate decrypt` agrees, and refuses the moved topic.
    for (topic, expect_ok) in [(KITCHEN, true), (HALL, false)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sensorgate"))
            .args(["decrypt", "--key-file"])
            .arg(&key_file)
            .args(["--topic", topic])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&kitchen).unwrap();
        let output = child.wait_with_output().unwrap();
        if expect_ok {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(output.stdout, state.payload);
        } else {
            assert_eq!(output.status.code(), Some(2));
            assert!(String::from_utf8_lossy(&output.stderr).contains("authentication failed"));
        }
    }
    let (status, _) = daemon.stop();
    assert!(status.success());
}
