//! `sensorgate codec decode | encode | test` on real vendor codecs (tests/fixtures/codecs/chirpstack, MIT;
//! tests/fixtures/codecs/ttn, one codec of The Things Network's device repository), with node as an independent oracle: the same codec run by node on the same payloads must give the same
//! `data`.

use std::process::Command;

use serde_json::{json, Value as Json};

use super::commands::sensorgate;

const CHIRPSTACK: &str = "tests/fixtures/codecs/chirpstack";
const TTN_EM300: &str = "tests/fixtures/codecs/ttn/em300-th.js";

fn stdout_json(args: &[&str]) -> (Option<i32>, Json) {
    let outcome = sensorgate(args, None, &[]);
    let parsed = serde_json::from_str(outcome.stdout.trim())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", outcome.dump()));
    (outcome.code(), parsed)
}

#[test]
fn codec_decode_prints_the_vendor_codecs_data_and_exits_0() {
    // Browan TBHH100 on FPort 103: battery 3.6 V, 3 degC, 47 %RH (the vendor's own first example).
    let (code, out) = stdout_json(&[
        "codec",
        "decode",
        &format!("{CHIRPSTACK}/tabs-tbhh100.js"),
        "--fport",
        "103",
        "080b232fffffffff",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out["data"],
        json!({"fPort":103,"battery_volt":3.6,"temperature":3,"humidity":47,"thh_type":0,"CO2":0,"VOC":0})
    );
    assert_eq!(out["errors"], json!([]));
}

#[test]
fn codec_decode_exits_1_with_the_codecs_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strict.js");
    std::fs::write(
        &file,
        "function decodeUplink(i) { return i.bytes.length ? { data: { v: i.bytes[0] } } : { errors: ['empty payload'] }; }",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, out) = stdout_json(&["codec", "decode", file, ""]);
    assert_eq!((code, &out["errors"]), (Some(1), &json!(["empty payload"])));
    let (code, out) = stdout_json(&["codec", "decode", file, "2a"]);
    assert_eq!((code, &out["data"]), (Some(0), &json!({"v": 42})));
}

#[test]
fn codec_encode_prints_the_bytes_of_a_command() {
    let (code, out) = stdout_json(&[
        "codec",
        "encode",
        &format!("{CHIRPSTACK}/dl-5tm.js"),
        r#"{"command": "set period + save", "parameter": 3600}"#,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out["bytes"], json!([0, 2, 14, 16, 72, 164]));
    assert_eq!(out["fPort"], json!(1));
    let (code, out) = stdout_json(&[
        "codec",
        "encode",
        &format!("{CHIRPSTACK}/dl-5tm.js"),
        r#"{"command": "no such command"}"#,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(!out["errors"].as_array().unwrap().is_empty(), "{out}");
}

#[test]
fn codec_test_runs_the_vendor_examples() {
    for codec in ["tabs-tbhh100.js", "dl-5tm.js", "pulsedrop.js"] {
        let outcome = sensorgate(
            &["codec", "test", &format!("{CHIRPSTACK}/{codec}")],
            None,
            &[],
        );
        assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
        assert!(
            outcome.stdout.contains(" failed") && outcome.stdout.contains(", 0 failed"),
            "{}",
            outcome.dump()
        );
    }
}

#[test]
fn codec_test_reports_a_failing_example_at_its_path_line_and_column() {
    // The Digital Matter G62 codec resolves its timestamps against `new Date()`: its own examples only
    // pass on the day they were written.
    let outcome = sensorgate(
        &[
            "codec",
            "test",
            &format!("{CHIRPSTACK}/digital-matter-g62.js"),
        ],
        None,
        &[],
    );
    assert_eq!(outcome.code(), Some(1), "{}", outcome.dump());
    let first = outcome.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!(
            "{CHIRPSTACK}/test_decode_digital-matter-g62.json:2:3: example \"Test 1 digital matter g62\" failed: expected "
        )),
        "{}",
        outcome.dump()
    );
    assert!(
        first.contains("\"time\":\"2026-01-02T11:40:59.000Z\""),
        "{first}"
    );
}

/// The independent oracle: node runs the codec (in a fresh vm context, as its vendor tested it) on every
/// decode example's input; the gateway's `codec decode` must give the same data.
#[test]
fn codec_decode_agrees_with_node_on_every_example() {
    let node_script = r#"
        const fs = require('fs'), vm = require('vm');
        const [codecPath, testsPath] = process.argv.slice(1);
        const ctx = vm.createContext({ Buffer });
        vm.runInContext(fs.readFileSync(codecPath, 'utf8'), ctx);
        const tests = vm.runInContext('(' + fs.readFileSync(testsPath, 'utf8') + ')', vm.createContext({}));
        const out = tests.map(t => ({
            fPort: t.input.fPort,
            hex: Buffer.from(t.input.bytes).toString('hex'),
            data: JSON.parse(JSON.stringify(ctx.decodeUplink({ bytes: t.input.bytes, fPort: t.input.fPort, variables: {} }).data)),
        }));
        console.log(JSON.stringify(out));
    "#;
    let mut compared = 0;
    for codec in ["tabs-tbhh100", "dl-5tm", "pulsedrop"] {
        let codec_path = format!("{}/{CHIRPSTACK}/{codec}.js", env!("CARGO_MANIFEST_DIR"));
        let tests_path = format!(
            "{}/{CHIRPSTACK}/test_decode_{codec}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let node = Command::new("node")
            .args(["-e", node_script, &codec_path, &tests_path])
            .output()
            .expect("node runs (the oracle)");
        assert!(
            node.status.success(),
            "node: {}",
            String::from_utf8_lossy(&node.stderr)
        );
        let cases: Vec<Json> = serde_json::from_slice(&node.stdout).unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let fport = case["fPort"].to_string();
            let (code, ours) = stdout_json(&[
                "codec",
                "decode",
                &codec_path,
                "--fport",
                &fport,
                case["hex"].as_str().unwrap(),
            ]);
            assert_eq!(code, Some(0), "{codec} {case}: {ours}");
            assert_eq!(ours["data"], case["data"], "{codec} on {}", case["hex"]);
            compared += 1;
        }
    }
    assert_eq!(compared, 5, "every decode example of the three codecs");
}

#[test]
fn codec_test_reads_ttn_codec_yaml_examples_too() {
    let outcome = sensorgate(&["codec", "test", "config/codecs/example-th.js"], None, &[]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    // 3 + 1 ChirpStack-style examples, 2 + 1 in the TTN codec file.
    assert!(
        outcome.stdout.contains(": 7 examples, 0 failed"),
        "{}",
        outcome.dump()
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("config/codecs/example-th.js", dir.path().join("th.js")).unwrap();
    std::fs::write(
        dir.path().join("th.yaml"),
        "uplinkDecoder:\n  fileName: th.js\n  examples:\n    - description: wrong on purpose\n      input:\n        fPort: 1\n        bytes: [0, 215, 48, 12, 238]\n      output:\n        data: {temperature: 22, humidity: 48, battery_voltage: 3.31}\n",
    )
    .unwrap();
    let file = dir.path().join("th.js");
    let outcome = sensorgate(&["codec", "test", file.to_str().unwrap()], None, &[]);
    assert_eq!(outcome.code(), Some(1), "{}", outcome.dump());
    let yaml = dir.path().join("th.yaml");
    assert!(
        outcome.stdout.starts_with(&format!(
            "{}:4:5: example \"wrong on purpose\" failed: expected ",
            yaml.display()
        )),
        "{}",
        outcome.dump()
    );
    assert!(
        outcome.stdout.contains("\"temperature\":21.5"),
        "{}",
        outcome.dump()
    );
}

#[test]
fn a_ttn_codec_runs_the_examples_of_its_codec_yaml() {
    // TTN names the codec file NAME-codec.yaml; its one example must be found and pass.
    let outcome = sensorgate(&["codec", "test", TTN_EM300], None, &[]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert!(
        outcome.stdout.contains(": 1 examples, 0 failed"),
        "{}",
        outcome.dump()
    );
}

/// node as the oracle for the TTN codec: `decodeUplink` then `normalizeUplink`, as The Things Stack
/// chains them, on the codec file's example and on payloads around it (a negative temperature, a
/// frame with one channel, an unknown channel that ends the loop).
#[test]
fn a_ttn_codec_decodes_and_normalizes_as_node_does() {
    let node_script = r#"
        const fs = require('fs'), vm = require('vm');
        const [codecPath, ...hexes] = process.argv.slice(1);
        const ctx = vm.createContext({});
        vm.runInContext(fs.readFileSync(codecPath, 'utf8'), ctx);
        const out = hexes.map(hex => {
            const bytes = Array.from(Buffer.from(hex, 'hex'));
            const decoded = ctx.decodeUplink({ bytes, fPort: 1 });
            const normalized = ctx.normalizeUplink({ data: decoded.data });
            return JSON.parse(JSON.stringify({ hex, data: decoded.data, normalized: normalized.data }));
        });
        console.log(JSON.stringify(out));
    "#;
    let payloads = [
        "0175320367c80004683c",
        "01756403679cff046891",
        "0367fa00",
        "04685a0501ff",
    ];
    let mut args = vec!["-e", node_script, TTN_EM300];
    args.extend(payloads);
    let node = Command::new("node")
        .args(&args)
        .output()
        .expect("node runs (the oracle)");
    assert!(
        node.status.success(),
        "node: {}",
        String::from_utf8_lossy(&node.stderr)
    );
    let cases: Vec<Json> = serde_json::from_slice(&node.stdout).unwrap();
    assert_eq!(cases.len(), payloads.len());
    // The codec file's example, as node computed it: the oracle agrees with the vendor.
    assert_eq!(
        cases[0]["data"],
        json!({"battery": 50, "temperature": 20, "humidity": 30})
    );
    for case in cases {
        let hex = case["hex"].as_str().unwrap();
        let (code, ours) = stdout_json(&["codec", "decode", TTN_EM300, "--fport", "1", hex]);
        assert_eq!(code, Some(0), "{hex}: {ours}");
        assert_eq!(ours["data"], case["data"], "data of {hex}");
        assert_eq!(
            ours["normalized"], case["normalized"],
            "normalized of {hex}"
        );
    }
}
