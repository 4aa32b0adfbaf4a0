//! `/metrics` read by promtool and by Python's prometheus_client; counters never go down between scrapes.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use sensorgate_testkit::{mqtt, python};

use crate::client::get;
use crate::daemon::{start_anonymous_read, wait_for};

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/test installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

type Families = HashMap<String, serde_json::Value>;

fn parse(text: &str) -> Families {
    let json = python::run_script(
        "prometheus_client",
        "python3-prometheus-client",
        "tests/http/families.py",
        &[],
        text,
    );
    serde_json::from_str(&json).expect("families as JSON")
}

/// Every counter sample (`name{labels}` -> value).
fn counter_samples(families: &Families) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for family in families.values().filter(|f| f["type"] == "counter") {
        for sample in family["samples"].as_array().unwrap() {
            let key = format!("{}{}", sample[0].as_str().unwrap(), sample[1]);
            samples.insert(key, sample[2].as_f64().unwrap());
        }
    }
    samples
}

fn frames_of_sim(families: &Families) -> f64 {
    families["sensorgate_source_frames"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[1]["source"] == "sim")
        .and_then(|s| s[2].as_f64())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_and_prometheus_client_read_every_family_and_counters_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_anonymous_read(dir.path());
    let scrape = || {
        let answer = get(running.page, "/metrics", None);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        answer.body
    };
    // The simulator's three nodes have been heard (the snapshot is taken once a second).
    let first_text = wait_for(Duration::from_secs(15), "three simulated devices", || {
        let text = scrape();
        text.contains("sensorgate_device_last_seen_timestamp_seconds{device=\"sim-3\"")
            .then_some(text)
    });
    let (ok, said) = promtool(&first_text);
    assert!(
        ok,
        "promtool check metrics refused the output: {said}\n{first_text}"
    );
    let first = parse(&first_text);
    for family in [
        "sensorgate_build_info",
        "sensorgate_source_up",
        "sensorgate_source_frames",
        "sensorgate_source_readings",
        "sensorgate_source_errors",
        "sensorgate_source_duplicates",
        "sensorgate_device_last_seen_timestamp_seconds",
        "sensorgate_device_online",
        "sensorgate_broker_clients",
        "sensorgate_broker_dropped",
        "sensorgate_commands",
        "sensorgate_uplink_connected",
        "sensorgate_flash_written_bytes",
        "sensorgate_http_refused",
    ] {
        assert!(first.contains_key(family), "no family {family}: {first:?}");
    }
    assert_eq!(first["sensorgate_source_frames"]["type"], "counter");
    assert_eq!(first["sensorgate_source_up"]["type"], "gauge");
    assert!(!first["sensorgate_source_up"]["help"]
        .as_str()
        .unwrap()
        .is_empty());
    let frames_before = frames_of_sim(&first);

    let second = wait_for(Duration::from_secs(15), "more simulator frames", || {
        let families = parse(&scrape());
        (frames_of_sim(&families) > frames_before).then_some(families)
    });
    let (before, after) = (counter_samples(&first), counter_samples(&second));
    assert!(before.len() >= 20, "{before:?}");
    for (sample, value) in &before {
        let later = after.get(sample).unwrap_or_else(|| panic!("{sample} gone"));
        assert!(later >= value, "{sample} went down: {value} -> {later}");
    }
    running.daemon.stop();
}

/// One sample's value in a scrape's text (`name{labels} value`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_messages_in_out_and_refused_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_anonymous_read(dir.path());
    let scrape = || get(running.page, "/metrics", None).body;
    let received = "sensorgate_broker_messages_received_total";
    let sent = "sensorgate_broker_messages_sent_total";
    let refused = "sensorgate_broker_dropped_total{reason=\"client_publish_refused\"}";
    let before = scrape();
    let mut subscriber =
        mqtt::subscribe(running.daemon.addr, "metrics-in-out", "metrics/#", 1).await;
    const COUNT: usize = 20;
    for i in 0..COUNT {
        subscriber
            .client
            .publish(format!("metrics/{i}"), mqtt::qos(1), false, vec![b'x'])
            .await
            .unwrap();
    }
    // A topic the gateway owns: anonymous clients may not write it.
    subscriber
        .client
        .publish("sensorgate/kitchen", mqtt::qos(1), false, vec![b'x'])
        .await
        .unwrap();
    let mut seen = 0;
    while seen < COUNT {
        let got = subscriber.next(Duration::from_secs(10)).await;
        assert!(got.is_some(), "only {seen} of {COUNT} delivered");
        seen += 1;
    }
    let after = wait_for(Duration::from_secs(10), "the refusal counted", || {
        let text = scrape();
        (sample(&text, refused) >= sample(&before, refused) + 1.0).then_some(text)
    });
    let (ok, said) = promtool(&after);
    assert!(ok, "promtool: {said}");
    assert!(
        sample(&after, received) >= sample(&before, received) + (COUNT + 1) as f64,
        "received {} -> {}",
        sample(&before, received),
        sample(&after, received)
    );
    assert!(
        sample(&after, sent) >= sample(&before, sent) + COUNT as f64,
        "sent {} -> {}",
        sample(&before, sent),
        sample(&after, sent)
    );
    let families = parse(&after);
    assert_eq!(
        families["sensorgate_broker_messages_received"]["type"],
        "counter"
    );
    assert_eq!(
        families["sensorgate_broker_messages_sent"]["type"],
        "counter"
    );
    running.daemon.stop();
}
