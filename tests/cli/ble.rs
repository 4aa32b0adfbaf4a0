//! `sensorgate decode --payload bthome|pvvx|atc1441 [--mac MAC] [--key-file F] HEX`, run as a user runs
//! it: the published example adverts, and encrypted adverts sealed by an independent encoder (Python's
//! `cryptography`, `tests/sources/ble/adverts.py`, which checks bthome.io's and ble_monitor's published adverts
//! first) that the real binary must open to the fields they were made from; the wrong bindkey, a missing
//! key or MAC, and options that do not belong are refused with exit 2 and one line saying what to do.

use std::path::Path;

use sensorgate_testkit::python;
use serde_json::{json, Value};

use crate::commands::run;

const IO_KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";
const IO_MAC: &str = "54:48:E6:8F:80:A5";

/// A private key file holding `hex` in `dir`.
fn key_file(dir: &Path, name: &str, hex: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// `sensorgate decode ARGS`, which must succeed and print one reading.
fn decoded(args: &[&str]) -> Value {
    let mut all = vec!["decode"];
    all.extend_from_slice(args);
    let outcome = run(&all);
    assert_eq!(outcome.code(), Some(0), "{args:?}: {}", outcome.dump());
    assert_eq!(outcome.stderr, "", "{args:?}");
    let readings: Value = serde_json::from_str(&outcome.stdout).unwrap();
    let readings = readings.as_array().unwrap();
    assert_eq!(readings.len(), 1, "{args:?}");
    readings[0].clone()
}

#[test]
fn decode_prints_ble_readings() {
    // bthome.io's example advert (bthome-ble test_bthome_temperature_humidity), from the UUID on.
    assert_eq!(
        decoded(&["--payload", "bthome", "d2fc4002ca0903bf13"]),
        json!({
            "address": "", "seq": null, "counter": null, "trigger_based": false,
            "fields": { "temperature": 25.06, "humidity": 50.55 }
        })
    );
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "bthome.key", IO_KEY);
    // bthome.io's encrypted example, with its bindkey and MAC.
    assert_eq!(
        decoded(&[
            "--payload",
            "bthome",
            "--mac",
            IO_MAC,
            "--key-file",
            &key,
            "d2fc41a47266c95f730011223378237214",
        ]),
        json!({
            "address": IO_MAC, "seq": null, "counter": 0x3322_1100u32, "trigger_based": false,
            "fields": { "temperature": 25.06, "humidity": 50.55 }
        })
    );
    // ble_monitor's pvvx custom and atc1441 service data (test_atc_custom, test_atc_atc1441).
    assert_eq!(
        decoded(&["--payload", "pvvx", "1a18f4830238c1a4a9066911b60b58f70d"]),
        json!({
            "address": "A4:C1:38:02:83:F4", "seq": 247, "counter": null, "trigger_based": false,
            "fields": { "temperature": 17.05, "humidity": 44.57, "voltage": 2.998, "battery": 88,
                        "opening": true, "switch": false }
        })
    );
    assert_eq!(
        decoded(&[
            "--payload",
            "atc1441",
            "1a18 a4c1380283f4 00a2 2f 5f 0bf8 19"
        ]),
        json!({
            "address": "A4:C1:38:02:83:F4", "seq": 25, "counter": null, "trigger_based": false,
            "fields": { "temperature": 16.2, "humidity": 47, "voltage": 3.064, "battery": 95 }
        })
    );
}

/// One advert for the independent encoder and what the binary must make of it.
struct Case {
    request: &'static str,
    key: &'static str,
    mac: &'static str,
    format: &'static str,
    expected: Value,
}

#[test]
fn adverts_sealed_by_an_independent_encoder_open_to_their_fields() {
    let other_key = "000102030405060708090a0b0c0d0e0f";
    let cases = [
        Case {
            // Temperature -12.34 °C, humidity 99.99 %, battery 7 %; counter 0.
            request: "bthome 231d39c1d7cc1ab1aee224cd096db932 54:48:E6:8F:80:A5 0 022efb030f270107",
            key: IO_KEY,
            mac: IO_MAC,
            format: "bthome",
            expected: json!({ "seq": null, "counter": 0, "trigger_based": false,
                "fields": { "temperature": -12.34, "humidity": 99.99, "battery": 7 } }),
        },
        Case {
            // Three button objects (the second "no event"), trigger-based; the largest counter.
            request: "bthome 000102030405060708090a0b0c0d0e0f A4:C1:38:8D:18:B2 4294967295 3a013a003a04 trigger",
            key: other_key,
            mac: "A4:C1:38:8D:18:B2",
            format: "bthome",
            expected: json!({ "seq": null, "counter": 4294967295u32, "trigger_based": true,
                "fields": { "button_1": "press", "button_3": "long_press" } }),
        },
        Case {
            // Packet id 7, a dimmer turned right 3 steps back (-3), text "abc".
            request: "bthome 231d39c1d7cc1ab1aee224cd096db932 54:48:E6:8F:80:A5 1 00073c02fd5303616263",
            key: IO_KEY,
            mac: IO_MAC,
            format: "bthome",
            expected: json!({ "seq": 7, "counter": 1, "trigger_based": false,
                "fields": { "dimmer": "rotate_right", "dimmer_steps": -3, "text": "abc" } }),
        },
        Case {
            // Battery 80 %, then an id bthome.io does not define: the walk stops there.
            request: "bthome 231d39c1d7cc1ab1aee224cd096db932 54:48:E6:8F:80:A5 2 0150ff02ca09",
            key: IO_KEY,
            mac: IO_MAC,
            format: "bthome",
            expected: json!({ "seq": null, "counter": 2, "trigger_based": false,
                "fields": { "battery": 80 } }),
        },
        Case {
            // Binary sensors, among them the renamed ones (power, battery low, moisture).
            request: "bthome 231d39c1d7cc1ab1aee224cd096db932 54:48:E6:8F:80:A5 3 0f0110011500200121012d00",
            key: IO_KEY,
            mac: IO_MAC,
            format: "bthome",
            expected: json!({ "seq": null, "counter": 3, "trigger_based": false,
                "fields": { "generic": true, "power_on": true, "battery_low": false,
                            "water_leak": true, "motion": true, "window": false } }),
        },
        Case {
            // pvvx encrypted: -5.5 °C, 99.99 %, 100 %, GPIO_TRG set; count 200.
            request: "pvvx 000102030405060708090a0b0c0d0e0f A4:C1:38:63:37:8B 200 dafd0f276402",
            key: other_key,
            mac: "A4:C1:38:63:37:8B",
            format: "pvvx",
            expected: json!({ "seq": 200, "counter": 200, "trigger_based": false,
                "fields": { "temperature": -5.5, "humidity": 99.99, "battery": 100,
                            "opening": false, "switch": true } }),
        },
        Case {
            // atc1441 encrypted: (21.5 + 40) x 2, 55 x 2, battery 87 % with the GPIO_TRG bit; count 9.
            request: "atc1441 000102030405060708090a0b0c0d0e0f A4:C1:38:BC:7C:4E 9 7b6ed7",
            key: other_key,
            mac: "A4:C1:38:BC:7C:4E",
            format: "atc1441",
            expected: json!({ "seq": 9, "counter": 9, "trigger_based": false,
                "fields": { "temperature": 21.5, "humidity": 55.0, "battery": 87, "switch": true } }),
        },
    ];
    let input: String = cases.iter().map(|c| format!("{}\n", c.request)).collect();
    let sealed = python::run_script(
        "cryptography",
        "python3-cryptography",
        "tests/sources/ble/adverts.py",
        &[],
        &input,
    );
    let lines: Vec<&str> = sealed.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{sealed}");
    let dir = tempfile::tempdir().unwrap();
    for (case, advert) in cases.iter().zip(lines) {
        let key = key_file(dir.path(), "device.key", case.key);
        let mut reading = decoded(&[
            "--payload",
            case.format,
            "--mac",
            case.mac,
            "--key-file",
            &key,
            advert,
        ]);
        assert_eq!(reading["address"], json!(case.mac), "{}", case.request);
        reading.as_object_mut().unwrap().remove("address");
        assert_eq!(reading, case.expected, "{}", case.request);
    }
}

#[test]
fn decode_refuses_what_cannot_be_opened_or_does_not_belong() {
    let dir = tempfile::tempdir().unwrap();
    let right = key_file(dir.path(), "right.key", IO_KEY);
    let wrong = key_file(dir.path(), "wrong.key", "000102030405060708090a0b0c0d0e0f");
    let short = key_file(dir.path(), "short.key", "0001");
    let encrypted = "d2fc41a47266c95f730011223378237214";
    let cases: &[(&[&str], &[&str])] = &[
        (
            &[
                "--payload",
                "bthome",
                "--mac",
                IO_MAC,
                "--key-file",
                &wrong,
                encrypted,
            ],
            &["did not authenticate"],
        ),
        (
            &[
                "--payload",
                "bthome",
                "--mac",
                "54:48:E6:8F:80:A6",
                "--key-file",
                &right,
                encrypted,
            ],
            &["did not authenticate"],
        ),
        (
            &["--payload", "bthome", "--mac", IO_MAC, encrypted],
            &["encrypted", "bindkey"],
        ),
        (
            &["--payload", "bthome", "--key-file", &right, encrypted],
            &["encrypted", "MAC"],
        ),
        (
            &[
                "--payload",
                "bthome",
                "--mac",
                IO_MAC,
                "--key-file",
                &short,
                encrypted,
            ],
            &["short.key", "32 hex digits"],
        ),
        (
            &["--payload", "bthome", "--mac", "54:48:E6", "d2fc4002ca09"],
            &["--mac", "54:48:E6:8F:80:A5"],
        ),
        (
            &["--payload", "pvvx", "d2fc4002ca09"],
            &["0xFCD2", "0x181A"],
        ),
        (
            &["--payload", "atc1441", "1a18a4c1"],
            &["atc1441", "13 bytes plain"],
        ),
        (&["--payload", "bthome", "d2fce102000c"], &["version 7"]),
        (&["--payload", "bthome", ""], &["no service data", "UUID"]),
        (&["--payload", "bthome", "d2fc40zz"], &["hexadecimal"]),
        (
            &["--payload", "bthome", "--header", "node16", "d2fc4002ca09"],
            &["--header"],
        ),
        (
            &["--payload", "lpp", "--mac", IO_MAC, "03670110"],
            &["--mac", "bthome"],
        ),
    ];
    for (args, said) in cases {
        let mut all = vec!["decode"];
        all.extend_from_slice(args);
        let outcome = run(&all);
        assert_eq!(outcome.code(), Some(2), "{args:?}: {}", outcome.dump());
        assert_eq!(outcome.stdout, "", "{args:?}");
        let lines = outcome.stderr_lines();
        assert_eq!(lines.len(), 1, "{args:?}: {}", outcome.dump());
        for fragment in *said {
            assert!(
                lines[0].contains(fragment),
                "{args:?}: says {fragment:?}: {}",
                lines[0]
            );
        }
        assert!(
            !lines[0].contains(IO_KEY),
            "{args:?}: a key byte in {}",
            lines[0]
        );
    }
}
