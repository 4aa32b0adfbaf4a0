//! The command line as a user meets it: the real binary, its output and exit codes.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sensorgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sensorgate"))
        .args(args)
        .output()
        .expect("run sensorgate")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("broken.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn version_and_the_shipped_files_check_clean() {
    let version = sensorgate(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
    for file in ["config/demo.toml", "config/sensorgate.toml"] {
        let checked = sensorgate(&["check-config", file]);
        assert!(checked.status.success(), "{file}: {}", stderr(&checked));
    }
}

#[test]
fn broken_files_are_refused_with_path_line_column_and_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\nbuad = 9600\n", 5, "baud"),
        ("[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\nbaud = \"fast\"\n", 5, "baud"),
        ("[[source]]\nname = \"a\"\nkind = \"simulator\"\n\n[[source]]\nname = \"a\"\nkind = \"simulator\"\n", 6, "a"),
        ("[gateway]\nbase_topic = \"sensor+gate\"\n", 2, "base_topic"),
        ("[[source]]\nname = \"s\"\nkind = \"simulator\"\npayload = \"xml\"\n", 4, "json"),
        (
            "[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nbackend = \"simulator\"\nfrequency = 868100000\nspreading_factor = 13\n",
            6,
            "spreading_factor",
        ),
        ("[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nbackend = \"simulator\"\nfrequency = 868100000\nbandwidth = 100000\n", 6, "125000"),
    ];
    for (text, line, hint) in cases {
        let path = write(dir.path(), text);
        let checked = sensorgate(&["check-config", &path]);
        let message = stderr(&checked);
        assert_eq!(checked.status.code(), Some(2), "{text}\n{message}");
        let first = message.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("{path}:{line}:")),
            "{text}\nwanted {path}:{line}:COL, got {first}"
        );
        assert!(
            first.contains(hint),
            "{text}\nthe message should mention {hint:?}: {first}"
        );

        let run = sensorgate(&["run", "-c", &path]);
        assert_eq!(run.status.code(), Some(2), "run refuses it too");
        assert_eq!(
            stderr(&run).lines().next(),
            Some(first),
            "with the same message"
        );
    }
    let missing = sensorgate(&["check-config", "/nonexistent/sensorgate.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/sensorgate.toml"));
}

#[test]
fn a_listener_that_cannot_bind_exits_1_saying_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = format!(
        "[gateway]\nstate_dir = \"{}\"\n[[broker.listener]]\nbind = \"127.0.0.1:{port}\"\n",
        dir.path().join("state").display()
    );
    let path = dir.path().join("sensorgate.toml");
    std::fs::write(&path, config).unwrap();
    let run = sensorgate(&["run", "-c", &path.display().to_string()]);
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let message = stderr(&run);
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains("bind"),
        "{message}"
    );
}

#[test]
fn hash_password_prints_an_argon2id_hash_the_broker_accepts() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sensorgate"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(sensorgate::broker::verify_password(
        "correct horse",
        hash.trim()
    ));
    assert!(!sensorgate::broker::verify_password("wrong", hash.trim()));

    let empty = Command::new(env!("CARGO_BIN_EXE_sensorgate"))
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(2));
}

#[test]
fn decode_prints_readings_as_json() {
    let lpp = sensorgate(&["decode", "--payload", "lpp", "03 67 01 10 05 67 00 FF"]);
    assert!(lpp.status.success(), "{}", stderr(&lpp));
    let json: serde_json::Value = serde_json::from_slice(&lpp.stdout).unwrap();
    assert_eq!(json[0]["fields"]["temperature_3"], serde_json::json!(27.2));
    assert_eq!(json[0]["fields"]["temperature_5"], serde_json::json!(25.5));

    let mysensors = sensorgate(&[
        "decode",
        "--payload",
        "mysensors",
        "--text",
        "12;6;1;0;0;21.5",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&mysensors.stdout).unwrap();
    assert_eq!(json[0]["address"], "12");
    assert_eq!(json[0]["fields"]["temp_6"], serde_json::json!(21.5));

    let radiohead = sensorgate(&[
        "decode",
        "--header",
        "radiohead",
        "--payload",
        "lpp",
        "FF 2A 07 00 03 67 01 10",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&radiohead.stdout).unwrap();
    assert_eq!(
        (json[0]["address"].as_str(), json[0]["seq"].as_u64()),
        (Some("42"), Some(7))
    );

    let bad = sensorgate(&["decode", "--payload", "lpp", "zz"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("hexadecimal"), "{}", stderr(&bad));
}
