//! JavaScript payload codecs through the real daemon on 127.0.0.1: a vendor's codec (ChirpStack's Browan
//! TBHH100, MIT, tests/fixtures/codecs/chirpstack) decoding the payload a serial node sends behind a node16
//! header; and hostile codecs (an endless loop, an allocation bomb, runaway recursion, a throw, undefined,
//! NaN) each failing only their own source's payloads, published on `{base}/{device}/error` and counted,
//! while a good device's readings keep arriving on time. Every wait is bounded.
#![cfg(feature = "codecs")]

use std::time::{Duration, Instant};

use sensorgate::decode::{encode_header, HeaderFormat};
use sensorgate::frame::{encode_frame, Deframer, Framing};
use sensorgate_testkit::config::{demo, ConfigBuilder};
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty::FakeDongle;
use serde_json::{json, Value as Json};

/// The gateway every test here runs: stats every second, sources and devices still to add.
fn gateway() -> ConfigBuilder {
    ConfigBuilder::new("test-gw").publish(r#"stats_interval = "1s""#)
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/codecs/chirpstack/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_codec_decodes_a_serial_nodes_payload_into_the_devices_fields() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyTBHH");
    let mut dongle = FakeDongle::plug(&link);
    let config = gateway()
        .serial(
            "uart0",
            &link,
            &format!(
                "framing = \"cobs\"\nheader = \"node16\"\npayload = \"codec\"\ncodec = {:?}\nfport = 103",
                fixture("tabs-tbhh100.js")
            ),
        )
        .device("office", "uart0", "17")
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    let mut watch = mqtt::subscribe(daemon.addr, "watch", "sensorgate/office/#", 0).await;
    let mut state = mqtt::subscribe(daemon.addr, "state", "sensorgate/office", 0).await;

    // The vendor's own example: 3.6 V, 3 degC, 47 %RH.
    let mut frame = encode_header(HeaderFormat::Node16, 17, 1);
    frame.extend([0x08, 0x0b, 0x23, 0x2f, 0xff, 0xff, 0xff, 0xff]);
    dongle.write(&encode_frame(Framing::Cobs, &frame)).await;
    let message = state
        .next(Duration::from_secs(10))
        .await
        .expect("the decoded state within 10 s");
    let device: Json = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(device["battery_volt"], json!(3.6));
    assert_eq!(device["temperature"], json!(3));
    assert_eq!(device["humidity"], json!(47));
    assert_eq!(device["fPort"], json!(103));
    assert_eq!(device["seq"], json!(1));

    // A payload the codec cannot read (wrong length for FPort 103) still reaches the codec, whose answer
    // without `data` errors is published as fields: this vendor reports it as a message field.
    let mut short = encode_header(HeaderFormat::Node16, 17, 2);
    short.extend([0x08, 0x0b]);
    dongle.write(&encode_frame(Framing::Cobs, &short)).await;
    let mut seen = Vec::new();
    let message = watch
        .wait_for(Duration::from_secs(10), &mut seen, |m| {
            m.topic == "sensorgate/office/message"
        })
        .await
        .expect("the codec's own message field");
    assert_eq!(message.text(), "Invalid fPort or payload length");
    let (status, _) = daemon.stop();
    assert!(status.success(), "clean stop: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_gets_its_own_codec_and_variables_over_its_sources() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyMIX");
    let mut dongle = FakeDongle::plug(&link);
    std::fs::write(
        dir.path().join("site.js"),
        "function decodeUplink(i) { return { data: { site: i.variables.site, bed: i.variables.bed || 'none', v: i.bytes[0] } }; }",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("other.js"),
        "function Decoder(bytes, port) { return { other: bytes[0] * 2, port: port }; }",
    )
    .unwrap();
    // Relative codec paths are taken from the configuration file's folder (the daemon runs elsewhere).
    let config = gateway()
        .serial(
            "uart0",
            &link,
            r#"
framing = "cobs"
header = "node16"
payload = "codec"
codec = "site.js"
fport = 7
variables = { site = "north", bed = "1" }"#,
        )
        .device_keys(
            "with-variables",
            "uart0",
            "address = \"17\"\nvariables = { bed = \"2\" }",
        )
        .device_keys(
            "own-codec",
            "uart0",
            "address = \"18\"\ncodec = \"other.js\"",
        )
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    let mut states = mqtt::subscribe(daemon.addr, "states", "sensorgate/+", 0).await;
    for address in [17u16, 18, 19] {
        let mut frame = encode_header(HeaderFormat::Node16, address, 1);
        frame.push(21);
        dongle.write(&encode_frame(Framing::Cobs, &frame)).await;
    }
    let got = states
        .collect_until(Duration::from_secs(10), |got| {
            ["with-variables", "own-codec", "uart0-19"]
                .iter()
                .all(|device| got.contains_key(&format!("sensorgate/{device}")))
        })
        .await;
    let state = |device: &str| -> Json {
        let message = got
            .get(&format!("sensorgate/{device}"))
            .unwrap_or_else(|| panic!("no state of {device}: {:?}", got.keys()));
        serde_json::from_slice(&message.payload).unwrap()
    };
    let with_variables = state("with-variables");
    assert_eq!(
        (
            &with_variables["site"],
            &with_variables["bed"],
            &with_variables["v"]
        ),
        (&json!("north"), &json!("2"), &json!(21))
    );
    let own = state("own-codec");
    assert_eq!((&own["other"], &own["port"]), (&json!(42), &json!(7)));
    assert!(own.get("site").is_none(), "{own}");
    let plain = state("uart0-19");
    assert_eq!(
        (&plain["site"], &plain["bed"]),
        (&json!("north"), &json!("1"))
    );
    let (status, _) = daemon.stop();
    assert!(status.success(), "clean stop: {status}");
}

/// `{base}/{device}/set` on a codec source: the fields go through the codec's encodeDownlink and its bytes
/// reach the node behind the header; the codec's errors refuse the command with its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_to_a_codec_device_go_through_encode_downlink() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyCMD");
    let mut dongle = FakeDongle::plug(&link);
    let codec = concat!(env!("CARGO_MANIFEST_DIR"), "/config/codecs/example-th.js");
    let config = gateway()
        .broker(r#"anonymous_write = ["sensorgate/+/set"]"#)
        .serial(
            "uart0",
            &link,
            &format!(
                "framing = \"cobs\"\nheader = \"node16\"\npayload = \"codec\"\ncodec = {codec:?}\ncommands = true"
            ),
        )
        .device("node", "uart0", "17")
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    let mut results = mqtt::subscribe(daemon.addr, "ops", "sensorgate/node/set/result", 0).await;
    results
        .client
        .publish(
            "sensorgate/node/set",
            mqtt::qos(0),
            false,
            r#"{"interval": 600}"#,
        )
        .await
        .unwrap();
    let wire = dongle
        .read_until(Duration::from_secs(10), |got| got.contains(&0))
        .await;
    let mut deframer = Deframer::new(Framing::Cobs, 1024);
    deframer.push(&wire);
    let frame = deframer
        .next_frame()
        .unwrap_or_else(|| panic!("no whole frame in {wire:02x?}"))
        .expect("a valid frame");
    // node16: address 17, the gateway's sequence number; then encodeDownlink's bytes for 600 s.
    assert_eq!(&frame[..2], &[0, 17]);
    assert_eq!(&frame[3..], &[2, 88]);
    let result = results
        .next(Duration::from_secs(10))
        .await
        .expect("a result");
    assert_eq!(
        serde_json::from_slice::<Json>(&result.payload).unwrap()["status"],
        json!("queued")
    );

    results
        .client
        .publish(
            "sensorgate/node/set",
            mqtt::qos(0),
            false,
            r#"{"interval": 1}"#,
        )
        .await
        .unwrap();
    // The first command's "sent" may come first.
    let mut seen = Vec::new();
    let refused = results
        .wait_for(Duration::from_secs(10), &mut seen, |m| {
            serde_json::from_slice::<Json>(&m.payload)
                .is_ok_and(|r| r["status"] == json!("refused"))
        })
        .await
        .unwrap_or_else(|| panic!("no refusal; results: {seen:?}"));
    let result: Json = serde_json::from_slice(&refused.payload).unwrap();
    assert!(
        result["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("interval must be 10 to 65535 seconds"),
        "{result}"
    );
    let (status, _) = daemon.stop();
    assert!(status.success(), "clean stop: {status}");
}

const GOOD_INTERVAL: Duration = Duration::from_millis(200);

/// Each hostile codec, and the words its error must carry.
const HOSTILE: [(&str, &str, &str); 6] = [
    ("loops", "function decodeUplink(i) { while (true) {} }", "time budget"),
    (
        "bomb",
        "function decodeUplink(i) { var a = []; while (true) { a.push(new Uint8Array(1e6)); } }",
        "heap limit",
    ),
    (
        "recurses",
        "function f(n) { return f(n + 1) + 1; } function decodeUplink(i) { return { data: { v: f(0) } }; }",
        "stack limit",
    ),
    ("throws", "function decodeUplink(i) { throw new Error('vendor bug'); }", "vendor bug"),
    ("undefined", "function decodeUplink(i) { }", "undefined"),
    ("nan", "function decodeUplink(i) { return { data: { t: 0 / 0 } }; }", "t is NaN"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_codecs_fail_only_their_own_devices_and_a_good_device_keeps_its_pace() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = gateway().source(
        "good",
        "simulator",
        &format!(
            "payload = \"lpp\"\ndevices = 1\ninterval = \"{}ms\"",
            GOOD_INTERVAL.as_millis()
        ),
    );
    for (name, script, _) in HOSTILE {
        let path = dir.path().join(format!("{name}.js"));
        std::fs::write(&path, script).unwrap();
        // 20 payloads a second; the endless loop gets 100 a second, ten times what a codec that spends
        // its 100 ms budget on each can take, so its queue (64) fills and drops too.
        let interval = if name == "loops" { "10ms" } else { "50ms" };
        config = config.source(
            name,
            "simulator",
            &format!(
                "payload = \"codec\"\ncodec = {:?}\ndevices = 1\ninterval = \"{interval}\"",
                path.display().to_string()
            ),
        );
    }
    let daemon = Daemon::start(dir.path(), &config.toml());
    let mut all = mqtt::subscribe(daemon.addr, "all", "sensorgate/#", 0).await;

    let window = Duration::from_secs(6);
    let started = Instant::now();
    let mut good_arrivals = Vec::new();
    let mut errors: std::collections::BTreeMap<String, Json> = Default::default();
    let mut stats = None;
    while started.elapsed() < window {
        let Some(message) = all.next(window.saturating_sub(started.elapsed())).await else {
            break;
        };
        let levels: Vec<&str> = message.topic.split('/').collect();
        match levels.as_slice() {
            ["sensorgate", device] if device.starts_with("good-") && !message.retain => {
                good_arrivals.push(Instant::now());
            }
            ["sensorgate", device, "error"] => {
                let source = device.split('-').next().unwrap_or_default().to_string();
                errors
                    .entry(source)
                    .or_insert_with(|| serde_json::from_slice(&message.payload).unwrap());
            }
            ["sensorgate", "gateway", "stats"] => {
                stats = Some(serde_json::from_slice::<Json>(&message.payload).unwrap());
            }
            _ => {}
        }
    }

    for (name, _, words) in HOSTILE {
        let error = errors
            .get(name)
            .unwrap_or_else(|| panic!("{name}: no error published (errors: {errors:?})"));
        assert!(
            error["error"].as_str().unwrap_or_default().contains(words),
            "{name}: {error}"
        );
        assert!(
            error["raw"].as_str().is_some_and(|raw| !raw.is_empty()),
            "{error}"
        );
        assert_eq!(error["fport"], json!(1));
    }
    // The good device: a reading every 200 ms over 6 s (about 30), none late by more than a second.
    assert!(
        good_arrivals.len() >= 20,
        "{} good readings",
        good_arrivals.len()
    );
    let worst_gap = good_arrivals
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    assert!(
        worst_gap < Duration::from_secs(1),
        "worst gap {worst_gap:?}"
    );
    let stats = stats.expect("stats published");
    assert!(
        stats["sources"]["good"]["codec_errors"] == json!(0),
        "{stats}"
    );
    assert!(
        stats["sources"]["loops"]["codec_dropped"].as_u64() > Some(0),
        "{stats}"
    );
    assert!(
        stats["sources"]["loops"]["codec_errors"].as_u64() > Some(5),
        "{stats}"
    );
    assert!(
        stats["totals"]["codec_errors"].as_u64() > Some(20),
        "{stats}"
    );
    let (status, _) = daemon.stop();
    assert!(status.success(), "clean stop: {status}");
}

/// A codec that does not compile, or fails its own examples, refuses the configuration at start and in
/// check-config, at the `codec` key; `codec_examples = "warn"` accepts it.
#[test]
fn broken_codecs_are_refused_at_the_codec_key_unless_examples_may_warn() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.js");
    std::fs::write(&broken, "function decodeUplink(i) { return {").unwrap();
    let source = |codec: &str, extra: &str| {
        format!(
            "[[source]]\nname = \"radio\"\nkind = \"simulator\"\npayload = \"codec\"\ncodec = \"{codec}\"\n{extra}"
        )
    };
    let check = |text: &str| {
        let file = dir.path().join("sensorgate.toml");
        std::fs::write(&file, text).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_sensorgate"))
            .args(["check-config", file.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = check(&source(&broken.display().to_string(), ""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("sensorgate.toml:5:9:") && stderr.contains("codec does not load"),
        "{stderr}"
    );

    let g62 = fixture("digital-matter-g62.js");
    let out = check(&source(&g62, ""));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sensorgate.toml:5:9:"), "{stderr}");
    assert!(
        stderr.contains("test_decode_digital-matter-g62.json:2:3"),
        "{stderr}"
    );
    assert!(stderr.contains("codec_examples = \"warn\""), "{stderr}");

    let out = check(&source(&g62, "codec_examples = \"warn\"\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A device's own codec or variables need a codec source with a header, said at the device's key.
#[test]
fn device_codec_keys_need_a_codec_source_with_a_header() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.js"),
        "function decodeUplink(i) { return { data: { v: 1 } }; }",
    )
    .unwrap();
    let check = |text: &str| {
        let file = dir.path().join("sensorgate.toml");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sensorgate"))
            .args(["check-config", file.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let json_source = "[[source]]\nname = \"s\"\nkind = \"simulator\"\npayload = \"json\"\n";
    let device = "[[device]]\nname = \"d\"\nsource = \"s\"\naddress = \"1\"\n";
    let (code, stderr) = check(&format!(
        "{json_source}{device}variables = {{ a = \"b\" }}\n"
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("sensorgate.toml:9:13:"), "{stderr}");
    assert!(
        stderr.contains("`variables` applies to a device of a source with payload = \"codec\""),
        "{stderr}"
    );
    let headerless = "[[source]]\nname = \"s\"\nkind = \"simulator\"\nheader = \"none\"\npayload = \"codec\"\ncodec = \"c.js\"\n";
    let (code, stderr) = check(&format!("{headerless}{device}codec = \"c.js\"\n"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("sensorgate.toml:11:9:") && stderr.contains("header"),
        "{stderr}"
    );
    let with_header = headerless.replace("header = \"none\"\n", "");
    let (code, stderr) = check(&format!("{with_header}{device}codec = \"c.js\"\n"));
    assert_eq!(code, Some(0), "{stderr}");
}

/// Home Assistant types from a codec's `normalizeUplink`: a vendor's names that say nothing
/// (`TempC_SHT`) are typed by the normalized schema's measurement of the same value; a name the table
/// knows keeps its type even where the normalized output disagrees (TTN's Milesight EM300-TH puts its
/// battery percentage where the schema has volts). The TTN codec's own example (its `-codec.yaml`) is
/// checked at start: the daemon would refuse it otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_types_codec_fields_from_normalize_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyNORM");
    let mut dongle = FakeDongle::plug(&link);
    std::fs::write(
        dir.path().join("vendor-x.js"),
        "function decodeUplink(i) { var b = i.bytes; return { data: { TempC_SHT: ((b[0] << 8) | b[1]) / 10, \
         Hum_SHT: b[2], BatV: ((b[3] << 8) | b[4]) / 1000, Mode: 0 } }; } \
         function normalizeUplink(i) { return { data: { air: { temperature: i.data.TempC_SHT, \
         relativeHumidity: i.data.Hum_SHT }, battery: i.data.BatV } }; }",
    )
    .unwrap();
    let em300_codec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/codecs/ttn/em300-th.js"
    );
    let config = gateway()
        .homeassistant("discovery = true")
        .serial(
            "uart0",
            &link,
            &format!(
                "framing = \"cobs\"\nheader = \"node16\"\npayload = \"codec\"\ncodec = {em300_codec:?}"
            ),
        )
        .device("em300", "uart0", "17")
        .device_keys("vendor-x", "uart0", "address = \"18\"\ncodec = \"vendor-x.js\"")
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    let mut configs = mqtt::subscribe(daemon.addr, "ha", "homeassistant/+/+/+/config", 0).await;
    let mut em300 = encode_header(HeaderFormat::Node16, 17, 1);
    // The example of em300-th-codec.yaml: battery 50 %, 20.0 degC, 30 %RH.
    em300.extend([0x01, 0x75, 0x32, 0x03, 0x67, 0xC8, 0x00, 0x04, 0x68, 0x3C]);
    dongle.write(&encode_frame(Framing::Cobs, &em300)).await;
    let mut vendor = encode_header(HeaderFormat::Node16, 18, 1);
    vendor.extend([0x00, 0xD7, 40, 0x0B, 0xEA]); // 21.5 degC, 40 %RH, 3.05 V
    dongle.write(&encode_frame(Framing::Cobs, &vendor)).await;

    let entity =
        |device: &str, field: &str| format!("_uart0_{device}/{}/config", field.to_lowercase());
    let wanted: Vec<String> = [
        ("17", "battery"),
        ("17", "temperature"),
        ("18", "TempC_SHT"),
        ("18", "Hum_SHT"),
        ("18", "BatV"),
        ("18", "Mode"),
    ]
    .iter()
    .map(|(device, field)| entity(device, field))
    .collect();
    let got = configs
        .collect_until(Duration::from_secs(10), |got| {
            wanted
                .iter()
                .all(|end| got.keys().any(|topic| topic.to_lowercase().ends_with(end)))
        })
        .await;
    let config_of = |device: &str, field: &str| -> Json {
        let end = entity(device, field);
        let (_, message) = got
            .iter()
            .find(|(topic, _)| topic.to_lowercase().ends_with(&end))
            .unwrap_or_else(|| panic!("no config for {field} of {device}: {:?}", got.keys()));
        serde_json::from_slice(&message.payload).unwrap()
    };
    let typed = |config: &Json| {
        (
            config["device_class"].as_str().map(str::to_string),
            config["unit_of_measurement"].as_str().map(str::to_string),
        )
    };
    let expect = |class: &str, unit: &str| (Some(class.to_string()), Some(unit.to_string()));
    assert_eq!(
        typed(&config_of("18", "TempC_SHT")),
        expect("temperature", "°C")
    );
    assert_eq!(typed(&config_of("18", "Hum_SHT")), expect("humidity", "%"));
    assert_eq!(typed(&config_of("18", "BatV")), expect("voltage", "V"));
    assert_eq!(typed(&config_of("18", "Mode")), (None, None));
    assert_eq!(
        typed(&config_of("17", "temperature")),
        expect("temperature", "°C")
    );
    assert_eq!(typed(&config_of("17", "battery")), expect("battery", "%"));
    let (status, _) = daemon.stop();
    assert!(status.success(), "clean stop: {status}");
}

/// The demo's codec source as config/demo.toml ships it: the simulator's payload decoded by
/// config/codecs/demo-node.js (its examples checked at start), the fields typed from its
/// normalizeUplink in Home Assistant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_codec_source_decodes_the_simulators_payload() {
    let demo = demo();
    let mut coded = demo["source"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(toml::Value::as_table)
        .find(|source| source.get("payload").and_then(toml::Value::as_str) == Some("codec"))
        .expect("the demo has a codec source")
        .clone();
    coded.insert("interval".into(), "200ms".into());
    let mut sources = toml::Table::new();
    sources.insert("source".into(), vec![toml::Value::Table(coded)].into());
    let config = gateway()
        .homeassistant("discovery = true")
        .table(&toml::to_string(&sources).unwrap())
        .toml();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &config);
    let mut state = mqtt::subscribe(daemon.addr, "state", "sensorgate/coded-1", 0).await;
    let mut ha = mqtt::subscribe(daemon.addr, "ha", "homeassistant/sensor/+/+/config", 0).await;
    let message = state
        .next(Duration::from_secs(10))
        .await
        .expect("the codec device's state within 10 s");
    let device: Json = serde_json::from_slice(&message.payload).unwrap();
    for field in ["TempC", "Hum", "BatV"] {
        assert!(device[field].is_number(), "{field} in {device}");
    }
    let got = ha
        .collect_until(Duration::from_secs(10), |got| {
            got.keys().any(|topic| topic.ends_with("/TempC/config"))
        })
        .await;
    let (_, temperature) = got
        .iter()
        .find(|(topic, _)| topic.ends_with("/TempC/config"))
        .unwrap_or_else(|| panic!("TempC announced: {:?}", got.keys()));
    let temperature: Json = serde_json::from_slice(&temperature.payload).unwrap();
    assert_eq!(temperature["device_class"], json!("temperature"));
    let (status, _) = daemon.stop();
    assert!(status.success(), "clean stop: {status}");
}
