//! The uplink as users run it: the real daemon, a pseudo-terminal serial port, and Debian's mosquitto as
//! the cloud broker over TLS with a CA made in the test. Outages, `kill -9` and the cloud-side will.
//! Every wait is bounded.

#[path = "support/daemon.rs"]
mod daemon;
#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/mqtt.rs"]
mod mqtt;
#[path = "support/pty.rs"]
mod pty;

use std::path::Path;
use std::time::Duration;

use daemon::Daemon;
use mosquitto::{BrokerConfig, Certs, Mosquitto, Subscriber, TlsListener};
use pty::FakeDongle;

const CONFIG: &str = r#"
[gateway]
id = "garden"
state_dir = "{state_dir}"

[[broker.listener]]
bind = "127.0.0.1:{port}"

[publish]
stats_interval = "1s"
field_topics = true

[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
payload = "json"

[[device]]
name = "meter"
source = "uart0"
address = "1"

[upstream]
url = "{url}"
ca_file = "{ca}"
client_id = "sensorgate-garden-test"
keep_alive = "2s"

[[upstream.forward]]
filter = "sensorgate/meter/#"
prefix = "sites/garden/"
qos = 1

[upstream.spool]
sync = "always"
"#;

const FIELD: &str = "sites/garden/sensorgate/meter/n";

fn cloud() -> (tempfile::TempDir, Certs, Mosquitto) {
    let pki = tempfile::tempdir().unwrap();
    let certs = Certs::generate(pki.path());
    let broker = Mosquitto::start(BrokerConfig {
        tls: Some(TlsListener {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            require_client_ca: None,
        }),
        users: vec![],
        persistence: true,
    });
    (pki, certs, broker)
}

fn start(dir: &Path, link: &Path, broker: &Mosquitto, certs: &Certs) -> Daemon {
    let config = CONFIG
        .replace("{link}", &link.display().to_string())
        .replace("{url}", &broker.tls_url())
        .replace("{ca}", &certs.ca.display().to_string());
    let daemon = Daemon::start(dir, &config);
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    daemon
}

async fn send_readings(dongle: &mut FakeDongle, range: std::ops::RangeInclusive<u32>) {
    for n in range {
        dongle
            .write(format!("{{\"id\": 1, \"n\": {n}}}\n").as_bytes())
            .await;
    }
}

/// Reads the field topic until `last` arrives; returns the values in arrival order.
async fn collect_until(cloud: &mut Subscriber, last: u32, within: Duration) -> Vec<u32> {
    let deadline = tokio::time::Instant::now() + within;
    let mut values = Vec::new();
    while values.last() != Some(&last) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match cloud.next(left).await {
            Some(p) if p.topic == FIELD => {
                values.push(String::from_utf8_lossy(&p.payload).parse().unwrap())
            }
            Some(_) => {}
            None => panic!(
                "{last} did not arrive within {within:?}; got {} values, last {:?}",
                values.len(),
                values.last()
            ),
        }
    }
    values
}

/// Every value of `expected` in order, duplicates (QoS 1 re-sends) removed; returns how many duplicates.
fn assert_in_order(values: &[u32], expected: std::ops::RangeInclusive<u32>) -> usize {
    let mut unique = values.to_vec();
    unique.dedup();
    let wanted: Vec<u32> = expected.collect();
    let tail = &unique[unique.len().saturating_sub(wanted.len())..];
    assert_eq!(tail, wanted.as_slice(), "every reading, in order");
    values.len() - unique.len()
}

/// Waits until two consecutive stats messages report the same appended count and synced sequence number,
/// i.e. the spool has taken everything and fsync'ed it.
async fn wait_spool_synced(local: &mut mqtt::Subscriber) -> serde_json::Value {
    let mut previous: Option<(serde_json::Value, serde_json::Value)> = None;
    let mut seen = Vec::new();
    for _ in 0..30 {
        let stats = local
            .wait_for(Duration::from_secs(10), &mut seen, |m| {
                m.topic == "sensorgate/gateway/stats"
            })
            .await
            .expect("stats every second");
        let json: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
        let now = (
            json["uplink"]["appended"].clone(),
            json["uplink"]["synced_seq"].clone(),
        );
        if previous.as_ref() == Some(&now) {
            return json;
        }
        previous = Some(now);
    }
    panic!("the spool did not settle within 30 stats intervals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_the_cloud_in_order_across_an_outage_and_a_kill_9() {
    let (_pki, certs, mut broker) = cloud();
    let mut cloud_sub = Subscriber::connect(broker.port, "dashboard", FIELD, true).await;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-meter");
    let mut dongle = FakeDongle::plug(&link);
    let daemon = start(dir.path(), &link, &broker, &certs);

    send_readings(&mut dongle, 1..=100).await;
    let values = collect_until(&mut cloud_sub, 100, Duration::from_secs(30)).await;
    assert_in_order(&values, 1..=100);

    // Outage: the cloud broker goes away; 1,000 readings arrive meanwhile.
    broker.stop();
    let mut local = mqtt::subscribe(daemon.addr, "local", "sensorgate/#", 0).await;
    send_readings(&mut dongle, 101..=1100).await;
    let mut seen = Vec::new();
    local
        .wait_for(Duration::from_secs(30), &mut seen, |m| {
            m.topic == "sensorgate/meter/n" && m.text() == "1100"
        })
        .await
        .expect("the last reading published locally");
    let stats = wait_spool_synced(&mut local).await;
    assert!(
        stats["uplink"]["spool_messages"].as_u64().unwrap_or(0) >= 1000,
        "backlog spooled: {stats}"
    );
    assert_ne!(stats["uplink"]["state"], "connected", "{stats}");

    // A power cut, as far as the daemon can tell; then everything comes back.
    let port = daemon.addr.port();
    daemon.kill();
    let config = std::fs::read_to_string(dir.path().join("sensorgate.toml")).unwrap();
    let restarted = Daemon::start_on(dir.path(), &config, port);
    broker.resume();
    let values = collect_until(&mut cloud_sub, 1100, Duration::from_secs(60)).await;
    let duplicates = assert_in_order(&values, 101..=1100);
    assert!(
        duplicates <= 100,
        "duplicates only within the in-flight window: {duplicates}"
    );
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_sees_the_gateway_offline_when_killed_and_online_when_back() {
    let (_pki, certs, broker) = cloud();
    let topic = "sites/garden/sensorgate/gateway/availability";
    let mut cloud_sub = Subscriber::connect(broker.port, "watcher", topic, false).await;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-meter");
    let _dongle = FakeDongle::plug(&link);
    let daemon = start(dir.path(), &link, &broker, &certs);
    cloud_sub
        .expect(topic, "online", Duration::from_secs(20))
        .await;

    let port = daemon.addr.port();
    daemon.kill();
    cloud_sub
        .expect(topic, "offline", Duration::from_secs(15))
        .await;

    let config = std::fs::read_to_string(dir.path().join("sensorgate.toml")).unwrap();
    let restarted = Daemon::start_on(dir.path(), &config, port);
    cloud_sub
        .expect(topic, "online", Duration::from_secs(20))
        .await;
    let (status, _) = restarted.stop();
    assert!(status.success());
    cloud_sub
        .expect(topic, "offline", Duration::from_secs(10))
        .await;
}
