//! The uplink proven at the daemon level: the real `sensorgate` binary reading JSON lines from a
//! pseudo-terminal, forwarding over TLS (a CA generated in the test) to Debian's mosquitto as the cloud
//! broker, watched by a cloud-side subscriber with a persistent session and by local subscribers on the
//! embedded broker (readings and `sensorgate/gateway/stats`). Covered: live flow under the forward prefix,
//! a 2,000-reading outage, `kill -9` after a group commit, the cloud-side will (process death and
//! keep-alive expiry) and the stats' `uplink` section. Every wait is bounded and waits for an event.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon;
use sensorgate_testkit::mosquitto;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use daemon::Daemon;
use mosquitto::{BrokerConfig, Certs, Mosquitto, Subscriber as CloudSubscriber, TlsListener};
use pty::FakeDongle;
use serde_json::Value;

/// `upstream.max_inflight` in every configuration below: the bound on duplicates after a reconnect.
const INFLIGHT: u64 = 100;
const PREFIX: &str = "sites/garden/";
/// Where the device's JSON state lands in the cloud.
const CLOUD_STATE: &str = "sites/garden/sensorgate/meter";
const CLOUD_AVAILABILITY: &str = "sites/garden/sensorgate/gateway/availability";

/// The configuration, its placeholders filled by the tests.
fn base_config() -> String {
    ConfigBuilder::new("garden")
        .publish(r#"stats_interval = "1s""#)
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
framing = "lines"
payload = "json"

[[device]]
name = "meter"
source = "uart0"
address = "1"

[upstream]
url = "{url}"
ca_file = "{ca}"
client_id = "sensorgate-garden-uplink-daemon"
keep_alive = "2s"
max_inflight = 100

[[upstream.forward]]
filter = "{filter}"
prefix = "sites/garden/"
qos = 1

[upstream.spool]
max_bytes = "64MiB"
max_age = "7d"
sync = "{sync}"
"#,
        )
        .toml()
}

/// The cloud broker: mosquitto with a TLS listener (certificate from a CA made here) and persistence, so
/// the dashboard's session and its queued messages survive a stop and start.
struct Cloud {
    _pki: tempfile::TempDir,
    certs: Certs,
    broker: Mosquitto,
}

impl Cloud {
    fn start() -> Cloud {
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
            ..BrokerConfig::default()
        });
        Cloud {
            _pki: pki,
            certs,
            broker,
        }
    }

    /// A dashboard on the cloud broker's plain listener, subscribed at QoS 1.
    async fn subscribe(&self, client_id: &str, filter: &str, persistent: bool) -> CloudSubscriber {
        CloudSubscriber::connect(self.broker.addr(), client_id, filter, 1, persistent).await
    }
}

/// One gateway: its directory (config, state, spool), its fake dongle and the running daemon.
struct Gateway {
    dir: tempfile::TempDir,
    dongle: FakeDongle,
    daemon: Option<Daemon>,
}

impl Gateway {
    /// Starts the daemon forwarding `filter` to `cloud` with `sync`, and waits until its serial port is
    /// open.
    fn start(cloud: &Cloud, filter: &str, sync: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let link: PathBuf = dir.path().join("usb-meter-if00-port0");
        let dongle = FakeDongle::plug(&link);
        let config = base_config()
            .replace("{link}", &link.display().to_string())
            .replace("{url}", &cloud.broker.tls_url())
            .replace("{ca}", &cloud.certs.ca.display().to_string())
            .replace("{filter}", filter)
            .replace("{sync}", sync);
        let daemon = Daemon::start(dir.path(), &config);
        wait_port_open(&daemon);
        Gateway {
            dir,
            dongle,
            daemon: Some(daemon),
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("daemon running")
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.daemon().addr
    }

    /// SIGKILL: what a power cut looks like to the process.
    fn kill(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// Starts the binary again on the same port, configuration and state directory.
    fn restart(&mut self, port: u16) {
        assert!(self.daemon.is_none(), "still running");
        let config = std::fs::read_to_string(self.dir.path().join("sensorgate.toml")).unwrap();
        let daemon = Daemon::start_on(self.dir.path(), &config, port);
        wait_port_open(&daemon);
        self.daemon = Some(daemon);
    }

    /// Writes one JSON line per sequence number (`{"id":1,"seq":S,"n":S}`), in writes of about 4 KiB.
    async fn send(&mut self, seqs: RangeInclusive<u64>) {
        send_readings(&mut self.dongle, seqs).await;
    }
}

/// Writes one JSON line per sequence number (`{"id":1,"seq":S,"n":S}`) to `dongle`, in writes of about
/// 4 KiB.
pub(crate) async fn send_readings(dongle: &mut FakeDongle, seqs: RangeInclusive<u64>) {
    let mut batch = String::new();
    for seq in seqs {
        batch.push_str(&format!("{{\"id\":1,\"seq\":{seq},\"n\":{seq}}}\n"));
        if batch.len() >= 4000 {
            dongle.write(batch.as_bytes()).await;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        dongle.write(batch.as_bytes()).await;
    }
}

pub(crate) fn wait_port_open(daemon: &Daemon) {
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
}

/// The `seq` of a device state payload.
pub(crate) fn seq_of(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<Value>(payload)
        .ok()?
        .get("seq")?
        .as_u64()
}

/// Waits (bounded) until the embedded broker published the state with `seq`: the reading went through
/// the pipeline, and so into the uplink's input.
pub(crate) async fn wait_local(local: &mut mqtt::Subscriber, seq: u64) {
    let mut seen = Vec::new();
    let found = local
        .wait_for(Duration::from_secs(30), &mut seen, |m| {
            seq_of(&m.payload) == Some(seq)
        })
        .await;
    assert!(
        found.is_some(),
        "seq {seq} not published locally within 30 s ({} others seen)",
        seen.len()
    );
}

/// Reads `{base}/gateway/stats` messages until one's `uplink` section satisfies `ok`; returns that
/// section. Panics after `within` with the last section seen.
pub(crate) async fn wait_uplink_stats(
    stats: &mut mqtt::Subscriber,
    what: &str,
    within: Duration,
    mut ok: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    let mut last = Value::Null;
    loop {
        match tokio::time::timeout_at(deadline, stats.rx.recv()).await {
            Ok(Some(message)) => {
                let report: Value = serde_json::from_slice(&message.payload).unwrap_or_default();
                let uplink = report.get("uplink").cloned().unwrap_or_default();
                if ok(&uplink) {
                    return uplink;
                }
                last = uplink;
            }
            _ => panic!("stats never showed {what} within {within:?}; last uplink section: {last}"),
        }
    }
}

pub(crate) fn number(uplink: &Value, key: &str) -> u64 {
    uplink[key]
        .as_u64()
        .unwrap_or_else(|| panic!("uplink.{key} is not a number: {uplink}"))
}

/// The `seq` of every state the cloud subscriber receives on `topic`, in arrival order, until `until`
/// arrives (bounded by `within`).
pub(crate) async fn collect_cloud(
    cloud: &mut CloudSubscriber,
    topic: &str,
    until: u64,
    within: Duration,
) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&until) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match cloud.next(left).await {
            Some(p) if p.topic == topic => match seq_of(&p.payload) {
                Some(seq) => seqs.push(seq),
                None => panic!("state without seq on {topic}: {:?}", p.payload),
            },
            Some(_) => {}
            None => panic!(
                "seq {until} did not reach the cloud within {within:?}: {} received, last {:?}",
                seqs.len(),
                seqs.last()
            ),
        }
    }
    seqs
}

/// A cloud-side delivery checked against the readings `first..=` in order.
#[derive(Debug)]
struct Delivery {
    /// The highest sequence number reached without a gap.
    through: u64,
    /// Each repeated value with the highest value delivered before it came again.
    duplicates: Vec<(u64, u64)>,
}

/// Checks that `seqs` delivers `first, first + 1, ...` without a gap or a reordering; a value at or below
/// the highest one delivered so far is a duplicate (recorded, for the caller's policy). A gap is an error.
fn check_order(seqs: &[u64], first: u64) -> Result<Delivery, String> {
    let mut through = first - 1;
    let mut duplicates = Vec::new();
    for (i, &seq) in seqs.iter().enumerate() {
        if seq == through + 1 {
            through = seq;
        } else if seq <= through {
            duplicates.push((seq, through));
        } else {
            return Err(format!(
                "out of order or lost: after {through} came {seq} (message {i} of {}): {}..={} missing",
                seqs.len(),
                through + 1,
                seq - 1
            ));
        }
    }
    Ok(Delivery {
        through,
        duplicates,
    })
}

/// The duplicates further behind what had already been delivered than one in-flight window, except
/// those `allowed_anyway` accepts.
fn duplicates_outside_window(
    delivery: &Delivery,
    allowed_anyway: impl Fn(u64) -> bool,
) -> Vec<(u64, u64)> {
    delivery
        .duplicates
        .iter()
        .copied()
        .filter(|&(seq, highest)| !allowed_anyway(seq) && highest - seq >= INFLIGHT)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_the_cloud_under_the_forward_prefix_in_order_with_retain_kept() {
    let cloud = Cloud::start();
    let mut dashboard = cloud
        .subscribe("dashboard", "sites/garden/sensorgate/#", false)
        .await;
    let mut gateway = Gateway::start(&cloud, "sensorgate/#", "1s");
    let mut stats = mqtt::subscribe(gateway.addr(), "stats", "sensorgate/gateway/stats", 0).await;

    // A local message no rule selects never reaches the uplink (the broker's tap carries only what a
    // forward rule selects), let alone the cloud.
    let mut lab_in_the_cloud = cloud
        .subscribe("lab-watch", "sites/garden/lab/#", false)
        .await;
    wait_uplink_stats(
        &mut stats,
        "the uplink connected",
        Duration::from_secs(20),
        |u| u["state"] == "connected",
    )
    .await;
    let publisher = mqtt::subscribe(gateway.addr(), "lab", "lab/#", 1).await;
    publisher
        .client
        .publish("lab/noise", mqtt::qos(1), false, "not for the cloud")
        .await
        .unwrap();

    gateway.send(1..=300).await;
    let mut states = Vec::new();
    let mut fields = Vec::new();
    let mut topics = std::collections::BTreeSet::new();
    let mut cloud_stats = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fields.last() != Some(&300) || cloud_stats.is_none() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(p) = dashboard.next(left).await else {
            panic!(
                "not everything reached the cloud within 30 s: states {}, fields {}, topics {topics:?}",
                states.len(),
                fields.len()
            );
        };
        topics.insert(p.topic.clone());
        let text = String::from_utf8_lossy(&p.payload).into_owned();
        match p.topic.as_str() {
            CLOUD_STATE => states.push(seq_of(&p.payload).expect("state has seq")),
            "sites/garden/sensorgate/meter/n" => fields.push(text.parse::<u64>().unwrap()),
            "sites/garden/sensorgate/gateway/stats" => {
                let report: Value = serde_json::from_str(&text).unwrap();
                if report["uplink"]["state"] == "connected" {
                    cloud_stats = Some(report);
                }
            }
            _ => {}
        }
    }
    assert!(
        lab_in_the_cloud
            .next(Duration::from_millis(300))
            .await
            .is_none(),
        "lab/noise matches no forward rule"
    );
    // No outage, no reconnect: exactly once, exactly in order, on both topics.
    assert_eq!(states, (1..=300).collect::<Vec<_>>(), "states in order");
    assert_eq!(
        fields,
        (1..=300).collect::<Vec<_>>(),
        "field values in order"
    );
    assert!(
        topics.iter().all(|t| t.starts_with(PREFIX)),
        "every forwarded topic carries the prefix: {topics:?}"
    );
    assert!(topics.contains("sites/garden/sensorgate/meter/availability"));
    assert!(!topics.contains("sites/garden/lab/noise"), "{topics:?}");

    // Retained flags are kept: a dashboard arriving later gets the last state and the availability.
    let mut late = cloud
        .subscribe("late-dashboard", "sites/garden/sensorgate/meter/#", false)
        .await;
    let mut retained = std::collections::BTreeMap::new();
    while retained.len() < 3 {
        let p = late
            .next(Duration::from_secs(10))
            .await
            .expect("retained messages for a late cloud subscriber");
        assert!(p.retain, "{} arrives retained", p.topic);
        retained.insert(p.topic.clone(), p.payload.to_vec());
    }
    assert_eq!(retained.get(CLOUD_STATE).and_then(|p| seq_of(p)), Some(300));
    assert_eq!(
        retained
            .get("sites/garden/sensorgate/meter/n")
            .map(|p| p.as_slice()),
        Some(b"300".as_slice())
    );
    assert_eq!(
        retained
            .get("sites/garden/sensorgate/meter/availability")
            .map(|p| p.as_slice()),
        Some(b"online".as_slice())
    );

    let (status, _) = gateway.daemon.take().unwrap().stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "volume: 2,150 readings through an outage"]
async fn a_2000_reading_outage_arrives_complete_and_in_order_and_the_stats_show_the_spool() {
    let mut cloud = Cloud::start();
    let mut dashboard = cloud.subscribe("dashboard", CLOUD_STATE, true).await;
    // Only the device state is forwarded: one spool record per reading, so the depth is exact.
    let mut gateway = Gateway::start(&cloud, "sensorgate/meter", "1s");
    let mut local = mqtt::subscribe(gateway.addr(), "local", "sensorgate/meter", 1).await;
    let mut stats = mqtt::subscribe(gateway.addr(), "stats", "sensorgate/gateway/stats", 0).await;

    gateway.send(1..=100).await;
    let live = collect_cloud(&mut dashboard, CLOUD_STATE, 100, Duration::from_secs(30)).await;
    assert_eq!(live, (1..=100).collect::<Vec<_>>());
    let up = wait_uplink_stats(
        &mut stats,
        "connected and drained",
        Duration::from_secs(10),
        |u| {
            u["state"] == "connected"
                && u["spool_messages"] == 0
                && u["acked"].as_u64() >= Some(100)
        },
    )
    .await;
    assert_eq!(number(&up, "in_flight"), 0, "{up}");

    // The cloud goes away; the uplink notices before the readings come in.
    cloud.broker.stop();
    let down = wait_uplink_stats(&mut stats, "the link down", Duration::from_secs(15), |u| {
        u["state"] == "connecting" || u["state"] == "disconnected"
    })
    .await;
    let reconnects_before = number(&down, "reconnects");
    let outage_started = Instant::now();
    gateway.send(101..=2100).await;
    wait_local(&mut local, 2100).await;
    let spooled = wait_uplink_stats(&mut stats, "2000 spooled", Duration::from_secs(15), |u| {
        u["spool_messages"] == 2000
    })
    .await;
    assert!(
        spooled["state"] != "connected",
        "still no cloud broker: {spooled}"
    );
    // Each record holds at least its 28-byte header, the topic and the JSON state.
    let bytes = number(&spooled, "spool_bytes");
    assert!(
        bytes >= 2000 * (28 + CLOUD_STATE.len() as u64 + 20),
        "spool_bytes {bytes} for 2000 records: {spooled}"
    );
    assert!(spooled["oldest_age_s"].as_f64() > Some(0.0), "{spooled}");
    assert_eq!(number(&spooled, "dropped"), 0, "{spooled}");

    // The cloud is back: the backlog drains, then live readings follow it.
    cloud.broker.resume();
    let resumed = Instant::now();
    gateway.send(2101..=2150).await;
    let seqs = collect_cloud(&mut dashboard, CLOUD_STATE, 2150, Duration::from_secs(90)).await;
    let drained = resumed.elapsed();
    let delivery = check_order(&seqs, 101).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(delivery.through, 2150, "every reading arrived");
    let stray = duplicates_outside_window(&delivery, |_| false);
    assert!(
        stray.is_empty(),
        "duplicates beyond the in-flight window: {stray:?}"
    );

    let after = wait_uplink_stats(
        &mut stats,
        "reconnected and drained",
        Duration::from_secs(15),
        |u| u["state"] == "connected" && u["spool_messages"] == 0,
    )
    .await;
    assert!(
        number(&after, "replayed") >= 2000,
        "backlog counted as replayed: {after}"
    );
    assert!(number(&after, "reconnects") > reconnects_before, "{after}");
    assert_eq!(number(&after, "dropped"), 0, "{after}");
    eprintln!(
        "outage of {:?}: 2000 spooled in {bytes} bytes; after the broker came back, backlog and 50 live \
         readings arrived in {drained:?}; {} duplicates; stats {after}",
        resumed - outage_started,
        delivery.duplicates.len()
    );
    let (status, _) = gateway.daemon.take().unwrap().stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_outage_loses_nothing_that_was_fsynced() {
    const CHUNK: u64 = 500;
    let mut cloud = Cloud::start();
    let mut dashboard = cloud.subscribe("dashboard", CLOUD_STATE, true).await;
    // Group commit every second: what the stats call synced is what must survive.
    let mut gateway = Gateway::start(&cloud, "sensorgate/meter", "1s");
    let mut local = mqtt::subscribe(gateway.addr(), "local", "sensorgate/meter", 1).await;
    let mut stats = mqtt::subscribe(gateway.addr(), "stats", "sensorgate/gateway/stats", 0).await;

    gateway.send(1..=50).await;
    collect_cloud(&mut dashboard, CLOUD_STATE, 50, Duration::from_secs(30)).await;
    // 50 readings made 50 records, all acknowledged: spool sequence number N is reading N from here on.
    wait_uplink_stats(
        &mut stats,
        "50 appended and acked",
        Duration::from_secs(10),
        |u| u["appended"] == 50 && u["acked_seq"] == 50 && u["spool_messages"] == 0,
    )
    .await;

    cloud.broker.stop();
    wait_uplink_stats(&mut stats, "the link down", Duration::from_secs(15), |u| {
        u["state"] == "connecting" || u["state"] == "disconnected"
    })
    .await;
    // Readings keep coming until a group commit covers at least one chunk of the outage; then one more
    // chunk, which is appended but (most likely) not yet fsync'ed when the process dies.
    let mut next = 51;
    let mut synced = 0;
    for _ in 0..20 {
        gateway.send(next..=next + CHUNK - 1).await;
        next += CHUNK;
        wait_local(&mut local, next - 1).await;
        let up = wait_uplink_stats(
            &mut stats,
            "a stats report",
            Duration::from_secs(10),
            |_| true,
        )
        .await;
        synced = number(&up, "synced_seq");
        if synced >= 50 + CHUNK {
            break;
        }
    }
    assert!(synced >= 50 + CHUNK, "no group commit covered the outage");
    gateway.send(next..=next + CHUNK - 1).await;
    let sent_last = next + CHUNK - 1;
    wait_local(&mut local, sent_last).await;
    let port = gateway.addr().port();
    gateway.kill();

    // Restart first, then the cloud comes back; live readings follow.
    gateway.restart(port);
    cloud.broker.resume();
    const LIVE: u64 = 1_000_000;
    gateway.send(LIVE + 1..=LIVE + 20).await;
    let seqs = collect_cloud(
        &mut dashboard,
        CLOUD_STATE,
        LIVE + 20,
        Duration::from_secs(90),
    )
    .await;

    let first_live = seqs.iter().position(|&s| s > LIVE).unwrap();
    let (backlog, live) = seqs.split_at(first_live);
    assert_eq!(
        live,
        (LIVE + 1..=LIVE + 20).collect::<Vec<_>>().as_slice(),
        "live after the backlog"
    );
    let delivery = check_order(backlog, 51).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        delivery.through >= synced,
        "fsync'ed through {synced} before the kill, but only 51..={} arrived",
        delivery.through
    );
    // Acknowledged before the outage but after the last persisted ack cursor: may be sent once more.
    let stray = duplicates_outside_window(&delivery, |seq| seq <= 50);
    assert!(
        stray.is_empty(),
        "duplicates beyond the in-flight window: {stray:?}"
    );
    eprintln!(
        "kill -9 with readings through {sent_last} appended and through {synced} reported fsync'ed: \
         51..={} arrived, {} duplicates",
        delivery.through,
        delivery.duplicates.len()
    );
    let (status, _) = gateway.daemon.take().unwrap().stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_will_says_offline_on_kill_and_on_keepalive_expiry_and_online_when_back() {
    let cloud = Cloud::start();
    let mut watcher = cloud
        .subscribe("watcher", "sites/garden/sensorgate/#", false)
        .await;
    let mut gateway = Gateway::start(&cloud, "sensorgate/meter", "1s");
    watcher
        .expect(CLOUD_AVAILABILITY, "online", Duration::from_secs(20))
        .await;

    // A hung gateway (SIGSTOP keeps its socket open): only the 2 s keep-alive can tell, after 1.5 x 2 s
    // of silence counted from the last packet, which is the reading just forwarded.
    gateway.send(1..=1).await;
    collect_cloud(&mut watcher, CLOUD_STATE, 1, Duration::from_secs(20)).await;
    let frozen = Instant::now();
    gateway.daemon().signal("STOP");
    watcher
        .expect(CLOUD_AVAILABILITY, "offline", Duration::from_secs(15))
        .await;
    let silent_for = frozen.elapsed();
    assert!(
        silent_for >= Duration::from_secs(2),
        "offline after {silent_for:?}: before the keep-alive could have expired"
    );
    // The broker's own account: a persistent session with a 2 s keep-alive, ended by its expiry.
    let log = cloud.broker.log();
    assert!(
        log.contains("as sensorgate-garden-uplink-daemon (p2, c0, k2)"),
        "connected with clean session 0 and keep-alive 2 s:\n{log}"
    );
    assert!(
        log.contains("sensorgate-garden-uplink-daemon has exceeded timeout"),
        "disconnected by the keep-alive:\n{log}"
    );
    gateway.daemon().signal("CONT");
    watcher
        .expect(CLOUD_AVAILABILITY, "online", Duration::from_secs(20))
        .await;

    // Process death: the will without waiting for the keep-alive, and `online` once it runs again.
    let port = gateway.addr().port();
    let killed = Instant::now();
    gateway.kill();
    watcher
        .expect(CLOUD_AVAILABILITY, "offline", Duration::from_secs(10))
        .await;
    let will_after_kill = killed.elapsed();
    gateway.restart(port);
    watcher
        .expect(CLOUD_AVAILABILITY, "online", Duration::from_secs(20))
        .await;
    eprintln!(
        "will: {silent_for:?} after SIGSTOP (keep_alive 2s), {will_after_kill:?} after kill -9"
    );

    // A clean stop says offline itself.
    let (status, _) = gateway.daemon.take().unwrap().stop();
    assert!(status.success());
    watcher
        .expect(CLOUD_AVAILABILITY, "offline", Duration::from_secs(10))
        .await;
}

#[test]
fn check_order_accepts_window_duplicates_and_refuses_gaps() {
    let delivery = check_order(&[1, 2, 3, 2, 3, 4], 1).unwrap();
    assert_eq!(delivery.through, 4);
    assert_eq!(delivery.duplicates, vec![(2, 3), (3, 3)]);
    assert!(duplicates_outside_window(&delivery, |_| false).is_empty());
    assert!(check_order(&[1, 3], 1)
        .unwrap_err()
        .contains("2..=2 missing"));
    assert!(
        check_order(&[2, 1], 1).is_err(),
        "2 before 1 is a reordering"
    );
    let mut long: Vec<u64> = (1..=300).collect();
    long.push(150);
    long.push(201);
    let delivery = check_order(&long, 1).unwrap();
    assert_eq!(
        duplicates_outside_window(&delivery, |_| false),
        vec![(150, 300)]
    );
    assert!(duplicates_outside_window(&delivery, |seq| seq <= 150).is_empty());
}

/// A 100,000-message burst from a local client on a forwarded topic: the broker's tap to the uplink is
/// bounded, and with the uplink's spool-first back-pressure nothing is dropped on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "volume: 100,000 messages through the real daemon"]
async fn a_burst_of_100000_messages_reaches_the_cloud_without_a_drop_at_the_tap() {
    use tokio::io::AsyncWriteExt;
    const BURST: usize = 100_000;
    let cloud = Cloud::start();
    let mut dashboard = cloud
        .subscribe("burst-watch", "sites/garden/burst/#", false)
        .await;
    let gateway = Gateway::start(&cloud, "burst/#", "1s");
    let mut stats = mqtt::subscribe(gateway.addr(), "stats", "sensorgate/gateway/stats", 0).await;
    wait_uplink_stats(
        &mut stats,
        "the uplink connected",
        Duration::from_secs(20),
        |u| u["state"] == "connected",
    )
    .await;

    // One raw MQTT 3.1.1 client writes the whole burst as QoS 0 PUBLISH packets, as fast as TCP takes them.
    let mut client = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .unwrap();
    let mut connect = vec![0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 6];
    connect.extend_from_slice(b"burst1");
    client.write_all(&connect).await.unwrap();
    let mut packets = Vec::with_capacity(BURST * 24);
    for i in 0..BURST {
        let topic = format!("burst/{}", i % 100);
        let payload = i.to_string();
        let body_len = 2 + topic.len() + payload.len();
        packets.push(0x30);
        packets.push(body_len as u8);
        packets.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        packets.extend_from_slice(topic.as_bytes());
        packets.extend_from_slice(payload.as_bytes());
    }
    client.write_all(&packets).await.unwrap();

    let mut received = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while received < BURST {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if dashboard.next(left).await.is_none() {
            break;
        }
        received += 1;
    }
    let message = tokio::time::timeout(Duration::from_secs(5), stats.rx.recv())
        .await
        .expect("a stats report")
        .expect("stats subscription open");
    let report = serde_json::from_slice::<Value>(&message.payload).unwrap();
    assert_eq!(
        report["broker"]["dropped_for_the_uplink"], 0,
        "nothing dropped at the tap: {report}"
    );
    assert_eq!(
        received, BURST,
        "every message of the burst reached the cloud"
    );
}
