//! The configuration the Debian package installs as `/etc/sensorgate/sensorgate.toml`
//! (`config/packaged.toml`): the package maps it there and ships the full reference beside it under
//! `/usr/share/doc/sensorgate/`; it needs nothing the machine may lack (no serial port, radio, key,
//! certificate or password file; the broker on 127.0.0.1 only), `check-config` accepts it and `run`
//! starts with it and serves MQTT; and each source it only shows in comments, uncommented, is one
//! `check-config` accepts.

use std::path::Path;
use std::time::Duration;

use sensorgate::config::{Config, SourceKind};
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use crate::commands::{run, write_file};

const PACKAGED: &str = include_str!("../../config/packaged.toml");
const MANIFEST: &str = include_str!("../../Cargo.toml");

/// Where the package puts each file of the checkout (`[package.metadata.deb] assets`).
fn packaged_files() -> Vec<(String, String)> {
    let manifest: toml::Value = toml::from_str(MANIFEST).expect("Cargo.toml parses");
    manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|asset| {
            let field = |i: usize| asset[i].as_str().expect("asset field").to_string();
            (field(0), field(1))
        })
        .collect()
}

#[test]
fn the_package_installs_the_packaged_file_and_the_reference_beside_it() {
    let files = packaged_files();
    let installed = |source: &str| {
        files
            .iter()
            .find(|(from, _)| from == source)
            .map(|(_, to)| to.as_str())
    };
    assert_eq!(
        installed("config/packaged.toml"),
        Some("etc/sensorgate/sensorgate.toml")
    );
    assert_eq!(
        installed("config/sensorgate.toml"),
        Some("usr/share/doc/sensorgate/sensorgate.toml"),
        "the reference goes beside it, not into /etc"
    );
    assert!(PACKAGED.contains("/usr/share/doc/sensorgate/sensorgate.toml"));
}

#[test]
fn the_packaged_file_needs_nothing_the_machine_may_lack() {
    let config = Config::parse(PACKAGED, Path::new("packaged.toml")).expect("parses");
    assert!(!config.sources.is_empty(), "something to publish");
    for source in &config.sources {
        assert!(
            matches!(source.kind, SourceKind::Simulator(_)),
            "{}: hardware in the packaged file",
            source.name
        );
        assert!(source.encryption.is_none(), "{}: a key file", source.name);
    }
    for listener in &config.broker.listeners {
        assert!(listener.bind.ip().is_loopback(), "{}", listener.bind);
        assert!(listener.tls.is_none(), "certificates in the packaged file");
    }
    assert!(config.broker.users.is_empty(), "password files");
    assert!(
        config.upstream.is_none(),
        "an upstream broker and its files"
    );
    let outcome = run(&["check-config", "config/packaged.toml"]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert_eq!(outcome.stdout, "config/packaged.toml: ok\n");
}

/// The `[[source]]` examples the packaged file shows in comments, uncommented: each `# [[source]]` line
/// and the `# key = value` lines that follow it, up to the first line that is not one.
fn commented_sources() -> Vec<String> {
    let mut sources: Vec<String> = Vec::new();
    let mut inside = false;
    for line in PACKAGED.lines() {
        let code = line.strip_prefix("# ");
        if code == Some("[[source]]") {
            sources.push(String::new());
            inside = true;
        } else if let (true, Some(code), Some(source)) = (inside, code, sources.last_mut()) {
            source.push_str(code);
            source.push('\n');
        } else {
            inside = false;
        }
    }
    sources
}

#[test]
fn every_commented_source_is_one_check_config_accepts() {
    let examples = commented_sources();
    assert_eq!(examples.len(), 2, "a serial and a radio example");
    let dir = tempfile::tempdir().unwrap();
    for (i, example) in examples.iter().enumerate() {
        assert!(example.contains("kind = "), "{example}");
        let text = format!("{PACKAGED}\n[[source]]\n{example}");
        let path = write_file(dir.path(), &format!("example-{i}.toml"), &text);
        let outcome = run(&["check-config", &path]);
        assert_eq!(outcome.code(), Some(0), "{example}\n{}", outcome.dump());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_file_starts_and_serves_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    // The same file, on a free port and in a temporary state directory.
    let config = PACKAGED
        .replace("127.0.0.1:1883", "127.0.0.1:{port}")
        .replace("\"/var/lib/sensorgate\"", "\"{state_dir}\"");
    assert_ne!(config, PACKAGED);
    let daemon = Daemon::start(dir.path(), &config);
    let mut sub = mqtt::subscribe(daemon.addr, "packaged", "sensorgate/sim-1", 0).await;
    let reading = sub
        .next(Duration::from_secs(30))
        .await
        .expect("a simulated reading within 30 s");
    let state: serde_json::Value = serde_json::from_slice(&reading.payload).unwrap();
    assert!(state.get("temperature").is_some(), "{state}");
    let (status, _) = daemon.stop();
    assert!(status.success());
}
