//! A full state file system through the real daemon: its state directory is a small tmpfs the test
//! mounts (as root) and fills to the last byte before the daemon starts, with the cloud broker down
//! (what a reboot on a full card looks like). The daemon must start, keep serving MQTT and retaining
//! readings, count what the spool could not keep, warn once per writer naming the file system, retry,
//! and deliver what it kept once there is space and the cloud is back; the retained log written on
//! a retry is what the next start restores. Below that, the two writers on a filled tmpfs in
//! process: a write the full disk refuses leaves the spool and the retained log as they were.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mosquitto::{BrokerConfig, Mosquitto, Subscriber as CloudSubscriber};
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty::FakeDongle;
use sensorgate_testkit::tmpfs::SmallFs;

use std::time::Duration;

use sensorgate::broker::retained_log::RetainedLog;
use sensorgate::model::Message;
use sensorgate::uplink::spool::{self, Outbound, Spool, SpoolSettings, SyncPolicy};

use crate::end_to_end::{
    collect_cloud, number, send_readings, seq_of, wait_local, wait_port_open, wait_uplink_stats,
};

/// The configuration, its placeholders filled by the test.
fn base_config() -> String {
    ConfigBuilder::new("full")
        .broker(r#"retained_sync = "1s""#)
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
allow_plaintext = true
client_id = "sensorgate-full-disk"
keep_alive = "2s"
max_inflight = 100

[[upstream.forward]]
filter = "sensorgate/meter"
prefix = "sites/full/"
qos = 1

[upstream.spool]
max_bytes = "64MiB"
sync = "1s"
"#,
        )
        .toml()
}

const CLOUD_STATE: &str = "sites/full/sensorgate/meter";
/// More readings than the uplink's memory holds ([`sensorgate::uplink::MAX_BATCH`]) while the disk
/// is full: the rest must be dropped and counted, not end the daemon.
const OUTAGE_READINGS: u64 = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_state_file_system_degrades_and_the_spool_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let small = match SmallFs::mount(&dir.path().join("state"), 4096) {
        Ok(small) => small,
        Err(why) => {
            eprintln!("SKIPPED: cannot give the daemon a small state file system: {why}");
            return;
        }
    };
    // The cloud: a mosquitto that is down until the end.
    let mut cloud = Mosquitto::start(BrokerConfig {
        persistence: true,
        ..BrokerConfig::default()
    });
    let mut dashboard =
        CloudSubscriber::connect(cloud.addr(), "dashboard", "sites/#", 1, true).await;
    cloud.stop();

    let link = dir.path().join("usb-meter-if00-port0");
    let mut dongle = FakeDongle::plug(&link);
    let config = base_config()
        .replace("{link}", &link.display().to_string())
        .replace("{url}", &cloud.plain_url());
    let filler = small.fill();
    let daemon = Daemon::start(dir.path(), &config);
    wait_port_open(&daemon);
    let mut local = mqtt::subscribe(daemon.addr, "local-before", "sensorgate/meter", 0).await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    send_readings(&mut dongle, 1..=OUTAGE_READINGS).await;
    wait_local(&mut local, OUTAGE_READINGS).await;

    let uplink = wait_uplink_stats(
        &mut stats,
        "every reading kept in memory or dropped and counted, with the disk full",
        Duration::from_secs(30),
        |u| {
            u["disk_full"] == true
                && u["dropped_disk_full"].as_u64().unwrap_or(0)
                    + u["memory_messages"].as_u64().unwrap_or(0)
                    == OUTAGE_READINGS
        },
    )
    .await;
    let dropped = number(&uplink, "dropped_disk_full");
    assert_eq!(
        dropped,
        OUTAGE_READINGS - sensorgate::uplink::MAX_BATCH as u64,
        "memory keeps MAX_BATCH, the newest: {uplink}"
    );
    assert!(
        number(&uplink, "dropped") >= dropped,
        "the total counts them: {uplink}"
    );

    // Everything local keeps running: the daemon is alive, a new client is served the last reading
    // (retained), and new readings flow.
    let mut daemon = daemon;
    assert!(
        matches!(daemon.child.try_wait(), Ok(None)),
        "the daemon ended on a full disk:\n{}",
        daemon.log()
    );
    let mut late = mqtt::subscribe(daemon.addr, "local-after", "sensorgate/meter", 0).await;
    let retained = late
        .next(Duration::from_secs(10))
        .await
        .expect("retained state");
    assert!(retained.retain, "the reading is retained");
    assert_eq!(seq_of(&retained.payload), Some(OUTAGE_READINGS));
    daemon.wait_for_log(
        "retained log: the file system is full",
        1,
        Duration::from_secs(10),
    );
    let log = daemon.log();
    for writer in ["uplink", "retained log"] {
        let warnings: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("{writer}: the file system is full")))
            .collect();
        assert_eq!(warnings.len(), 1, "one WARN per writer and episode:\n{log}");
        assert!(
            warnings[0].contains(&format!("mounted on {}", small.path().display())),
            "the WARN names the file system: {}",
            warnings[0]
        );
    }

    // Space returns: what memory kept goes to the spool at the next try (within DISK_FULL_RETRY).
    std::fs::remove_file(&filler).unwrap();
    let uplink = wait_uplink_stats(
        &mut stats,
        "memory written to the spool once there is space",
        Duration::from_secs(30),
        |u| u["disk_full"] == false && u["memory_messages"] == 0,
    )
    .await;
    assert_eq!(
        number(&uplink, "spool_messages"),
        sensorgate::uplink::MAX_BATCH as u64,
        "{uplink}"
    );
    daemon.wait_for_log("uplink: there is space again", 1, Duration::from_secs(10));
    daemon.wait_for_log(
        "retained log: there is space again",
        1,
        Duration::from_secs(10),
    );
    // Then the cloud: what was kept is delivered, in order, and a live reading after it.
    cloud.resume();
    let last = OUTAGE_READINGS + 1;
    send_readings(&mut dongle, last..=last).await;
    let seqs = collect_cloud(&mut dashboard, CLOUD_STATE, last, Duration::from_secs(60)).await;
    let kept = OUTAGE_READINGS + 1 - dropped;
    assert!(
        seqs.len() as u64 >= kept.min(sensorgate::uplink::MAX_BATCH as u64),
        "{} of the {kept} kept readings reached the cloud",
        seqs.len()
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let uplink = wait_uplink_stats(
        &mut stats,
        "the spool drained",
        Duration::from_secs(30),
        |u| u["spool_messages"] == 0 && u["acked_seq"] == last,
    )
    .await;
    assert_eq!(number(&uplink, "dropped_disk_full"), dropped, "{uplink}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "clean stop: {status}");

    // The retained log holds the last reading: the next start serves it.
    let daemon = Daemon::start(dir.path(), &config);
    let mut restored = mqtt::subscribe(daemon.addr, "local-restored", "sensorgate/meter", 0).await;
    let retained = restored
        .next(Duration::from_secs(10))
        .await
        .expect("retained state restored");
    assert_eq!(seq_of(&retained.payload), Some(last), "{}", daemon.log());
}

/// A small tmpfs at `dir/name`, or `None` (and why, on stderr) when the test cannot mount one.
fn small_fs(dir: &std::path::Path, size_kib: u64) -> Option<SmallFs> {
    match SmallFs::mount(&dir.join("state"), size_kib) {
        Ok(small) => Some(small),
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a small file system to fill: {why}");
            None
        }
    }
}

fn records(first: u64, count: u64) -> Vec<Outbound> {
    (first..first + count)
        .map(|i| Outbound {
            topic: format!("site/meter/{i}"),
            payload: vec![b'x'; 1000],
            qos: 1,
            retain: false,
        })
        .collect()
}

/// An append the full disk refuses changes nothing (no torn record, no count), and the same records
/// appended once there is space are all read back after a reopen, none cut.
#[test]
fn an_append_a_full_disk_refuses_leaves_the_spool_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let Some(small) = small_fs(dir.path(), 512) else {
        return;
    };
    let spool_dir = small.path().join("spool");
    let settings = SpoolSettings {
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(86_400),
        sync: SyncPolicy::Every(Duration::from_secs(1)),
        segment_bytes: 64 << 10,
    };
    let mut spool = Spool::open(&spool_dir, settings.clone()).unwrap();
    spool.append(&records(1, 100), spool::now_ms()).unwrap();
    spool.sync().unwrap();
    let before = spool.stats().clone();

    let filler = small.fill();
    let error = spool
        .append(&records(101, 100), spool::now_ms())
        .expect_err("the file system is full");
    assert!(error.is_disk_full(), "{error}");
    let after = spool.stats();
    assert_eq!(
        (after.appended, after.messages, after.bytes, after.next_seq),
        (
            before.appended,
            before.messages,
            before.bytes,
            before.next_seq
        ),
        "a refused append counts nothing"
    );

    std::fs::remove_file(filler).unwrap();
    spool.append(&records(101, 100), spool::now_ms()).unwrap();
    spool.sync().unwrap();
    drop(spool);
    let mut spool = Spool::open(&spool_dir, settings).unwrap();
    assert_eq!(spool.stats().corrupt_cuts, 0, "{:?}", spool.stats());
    let read = spool.read(1000, spool::now_ms()).unwrap();
    let seqs: Vec<u64> = read.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    assert_eq!(read[150].topic, "site/meter/151");
}

fn retained(topic: &str, payload: Vec<u8>) -> Message {
    Message {
        topic: topic.into(),
        payload,
        qos: 1,
        retain: true,
    }
}

/// A sync of the retained log that the full disk refuses leaves no torn record behind, so the same
/// changes written once there is space are what a reopen gives.
#[test]
fn a_retained_log_sync_a_full_disk_refuses_is_written_whole_later() {
    let dir = tempfile::tempdir().unwrap();
    let Some(small) = small_fs(dir.path(), 1024) else {
        return;
    };
    let (mut log, _) = RetainedLog::open(small.path()).unwrap();
    log.sync(&[retained("sensorgate/meter", b"1".to_vec())])
        .unwrap();
    let filler = small.fill();
    // Beyond the blocks the log reserved ahead.
    let big = vec![
        retained("sensorgate/meter", b"2".to_vec()),
        retained("sensorgate/camera", vec![b'j'; 200 << 10]),
    ];
    let error = log.sync(&big).expect_err("the file system is full");
    assert!(error.is_disk_full(), "{error}");
    std::fs::remove_file(filler).unwrap();
    log.sync(&big).unwrap();
    drop(log);
    let (log, messages) = RetainedLog::open(small.path()).unwrap();
    assert_eq!(log.stats().torn_cuts, 0);
    let payloads: Vec<(&str, usize)> = messages
        .iter()
        .map(|m| (m.topic.as_str(), m.payload.len()))
        .collect();
    assert_eq!(
        payloads,
        vec![("sensorgate/camera", 200 << 10), ("sensorgate/meter", 1)]
    );
}

/// A first start on a full disk, before the spool directory exists (no inode left for it): the spool
/// opens empty, an append says "full" (what the uplink rides out), and once there is space the
/// directory and the records are written.
#[test]
fn a_spool_opened_on_a_full_disk_before_its_directory_exists_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let Some(small) = small_fs(dir.path(), 512) else {
        return;
    };
    let fillers = small.fill_inodes();
    let spool_dir = small.path().join("spool");
    let settings = SpoolSettings {
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(86_400),
        sync: SyncPolicy::Every(Duration::from_secs(1)),
        segment_bytes: 64 << 10,
    };
    let mut spool = Spool::open(&spool_dir, settings.clone()).expect("opens on a full disk");
    assert!(!spool_dir.exists());
    let error = spool
        .append(&records(1, 3), spool::now_ms())
        .expect_err("no inode for the directory");
    assert!(error.is_disk_full(), "{error}");
    for filler in fillers {
        std::fs::remove_file(filler).unwrap();
    }
    spool.append(&records(1, 3), spool::now_ms()).unwrap();
    spool.sync().unwrap();
    drop(spool);
    let mut spool = Spool::open(&spool_dir, settings).unwrap();
    assert_eq!(spool.read(10, spool::now_ms()).unwrap().len(), 3);
}
