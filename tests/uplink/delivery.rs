//! The uplink's delivery promises against a real mosquitto: a backlog spooled during an outage arrives
//! complete and in order; a crash after fsync loses nothing; torn and corrupt spool files are repaired
//! and the valid records delivered; the disk budget holds and drops are counted; the will says
//! `offline` when the uplink dies and `online` comes back with it.

use sensorgate_testkit::mosquitto;

use std::path::Path;
use std::time::Duration;

use mosquitto::{BrokerConfig, Mosquitto, Subscriber};
use sensorgate::model::Message;
use sensorgate::uplink::spool::{Outbound, Spool};
use sensorgate::uplink::{SpoolSettings, SyncPolicy, UplinkSettings};

use crate::running::{self, Running};

const WAIT: Duration = Duration::from_secs(60);

fn spool_settings(max_bytes: u64, segment_bytes: u64) -> SpoolSettings {
    SpoolSettings {
        max_bytes,
        max_age: Duration::from_secs(86_400),
        sync: SyncPolicy::Every(Duration::from_millis(50)),
        segment_bytes,
    }
}

fn settings(port: u16, state_dir: &Path, spool: SpoolSettings) -> UplinkSettings {
    running::settings(
        format!("mqtt://127.0.0.1:{port}"),
        "gw-delivery",
        state_dir,
        spool,
    )
}

impl Running {
    fn send(&self, i: u64) {
        self.input
            .try_send(Message {
                topic: "sg/meter".into(),
                payload: i.to_string().into_bytes(),
                qos: 1,
                retain: false,
            })
            .expect("uplink input open");
    }
}

/// A broker whose sessions survive a restart, a persistent subscriber of `site/#` registered on it, and
/// the broker stopped: the cloud during an outage.
async fn broker_in_outage() -> (Mosquitto, Subscriber) {
    let mut broker = Mosquitto::start(BrokerConfig {
        persistence: true,
        ..BrokerConfig::default()
    });
    let sub = Subscriber::connect(broker.addr(), "cloud-app", "site/#", 1, true).await;
    broker.stop();
    (broker, sub)
}

/// Collects the readings (payload numbers on `site/sg/meter`) until `expected_last` arrived, checking
/// order: each is the next new one, or a repeat of an earlier one (a duplicate, counted).
async fn collect_in_order(sub: &mut Subscriber, first: u64, expected_last: u64) -> (Vec<u64>, u64) {
    let mut fresh = Vec::new();
    let mut duplicates = 0;
    let mut highest: Option<u64> = None;
    while highest != Some(expected_last) {
        let publish = sub
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("stalled after {highest:?} ({} received)", fresh.len()));
        if publish.topic != "site/sg/meter" {
            continue;
        }
        let value: u64 = std::str::from_utf8(&publish.payload)
            .unwrap()
            .parse()
            .unwrap();
        match highest {
            Some(h) if value <= h => duplicates += 1,
            _ => {
                let expected = highest.map_or(first, |h| h + 1);
                assert!(
                    value == expected || fresh.is_empty(),
                    "gap: {value} after {highest:?}"
                );
                fresh.push(value);
                highest = Some(value);
            }
        }
    }
    (fresh, duplicates)
}

#[tokio::test]
#[ignore = "volume: 10,000 messages after an outage"]
async fn a_backlog_of_10000_arrives_complete_and_in_order_after_an_outage() {
    let (mut broker, mut sub) = broker_in_outage().await;
    let state = tempfile::tempdir().unwrap();
    let running = Running::start(settings(
        broker.port,
        state.path(),
        spool_settings(64 << 20, 1 << 20),
    ));
    for i in 0..10_000 {
        running.send(i);
    }
    running
        .wait_stats(WAIT, "all spooled", |s| {
            s["appended"] == 10_000 && s["synced_seq"] == 10_000
        })
        .await;
    assert_ne!(running.stats.snapshot()["state"], "connected");

    broker.resume();
    let started = std::time::Instant::now();
    let (fresh, duplicates) = collect_in_order(&mut sub, 0, 9_999).await;
    let elapsed = started.elapsed();
    assert_eq!(fresh, (0..10_000).collect::<Vec<_>>());
    running
        .wait_stats(WAIT, "backlog acknowledged", |s| s["spool_messages"] == 0)
        .await;
    let snap = running.stats.snapshot();
    assert!(
        duplicates <= snap["resent"].as_u64().unwrap(),
        "{duplicates} duplicates, {snap}"
    );
    assert_eq!(snap["replayed"], 10_000, "{snap}");
    assert_eq!(snap["dropped"], 0, "{snap}");
    eprintln!("10000-message backlog delivered in {elapsed:?}: {snap}");
    running.stop(WAIT).await;
}

#[tokio::test]
async fn a_crash_after_fsync_loses_nothing() {
    let (mut broker, mut sub) = broker_in_outage().await;
    let state = tempfile::tempdir().unwrap();
    let s = settings(
        broker.port,
        state.path(),
        spool_settings(64 << 20, 64 * 1024),
    );
    let running = Running::start(s.clone());
    for i in 0..3_000 {
        running.send(i);
    }
    running
        .wait_stats(WAIT, "fsync'ed", |s| s["synced_seq"] == 3_000)
        .await;
    running.crash().await;

    broker.resume();
    let restarted = Running::start(s);
    let (fresh, duplicates) = collect_in_order(&mut sub, 0, 2_999).await;
    assert_eq!(fresh.len(), 3_000);
    assert_eq!(duplicates, 0);
    restarted.stop(WAIT).await;
}

/// Fixed-size records, ten to a segment, so the test knows where each one lies.
fn write_spool(dir: &Path, count: u64) -> Vec<std::path::PathBuf> {
    let spool_dir = dir.join("spool");
    let settings = spool_settings(64 << 20, 4096);
    let mut spool = Spool::open(&spool_dir, settings).unwrap();
    for i in 0..count {
        let payload = format!("{i:0>300}");
        let message = Outbound {
            topic: "site/sg/meter".into(),
            payload: payload.into_bytes(),
            qos: 1,
            retain: false,
        };
        spool
            .append(&[message], sensorgate::uplink::spool::now_ms())
            .unwrap();
    }
    spool.commit(sensorgate::uplink::spool::now_ms()).unwrap();
    drop(spool);
    let mut segments: Vec<_> = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments
}

#[tokio::test]
async fn torn_and_corrupt_spool_files_are_cut_and_the_valid_records_delivered() {
    let state = tempfile::tempdir().unwrap();
    let segments = write_spool(state.path(), 50);
    // 4096-byte segments of 342-byte records: 12 records each (1-12, 13-24, 25-36, 37-48, 49-50).
    let record = 8 + 20 + "site/sg/meter".len() as u64 + 300;
    assert_eq!(segments.len(), 5);
    // Flip a byte inside the 3rd record of the 2nd segment (seq 15): 13 and 14 stay.
    let mut bytes = std::fs::read(&segments[1]).unwrap();
    let at = (8 + 2 * record + 40) as usize;
    bytes[at] ^= 0x01;
    std::fs::write(&segments[1], bytes).unwrap();
    // Tear the 4th segment in the middle of its 6th record (seq 42): 37-41 stay.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segments[3])
        .unwrap();
    file.set_len(8 + 5 * record + record / 2).unwrap();
    drop(file);

    let broker = Mosquitto::start(BrokerConfig::default());
    let mut sub = Subscriber::connect(broker.addr(), "cloud-app", "site/#", 1, false).await;
    let running = Running::start(settings(
        broker.port,
        state.path(),
        spool_settings(64 << 20, 4096),
    ));
    let snap = running.stats.snapshot();
    assert_eq!(snap["corrupt_cuts"], 2, "{snap}");

    let expected: Vec<u64> = (0..14).chain(24..41).chain(48..50).collect();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let publish = sub.next(WAIT).await.expect("valid records delivered");
        if publish.topic == "site/sg/meter" {
            let text = std::str::from_utf8(&publish.payload).unwrap();
            got.push(text.parse::<u64>().unwrap());
        }
    }
    assert_eq!(got, expected);
    running.stop(WAIT).await;
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn the_disk_budget_holds_and_drops_are_counted() {
    let (mut broker, mut sub) = broker_in_outage().await;
    let state = tempfile::tempdir().unwrap();
    let (max_bytes, segment_bytes) = (64 * 1024, 8 * 1024);
    let running = Running::start(settings(
        broker.port,
        state.path(),
        spool_settings(max_bytes, segment_bytes),
    ));
    let spool_dir = state.path().join("spool");
    let total = 3_000u64;
    let mut worst = 0;
    for batch in 0..30u64 {
        for i in batch * 100..(batch + 1) * 100 {
            running.send(i);
        }
        running
            .wait_stats(WAIT, "batch spooled", |s| {
                s["appended"] == (batch + 1) * 100
            })
            .await;
        worst = worst.max(dir_bytes(&spool_dir));
    }
    assert!(
        worst <= max_bytes + segment_bytes,
        "spool used {worst} bytes"
    );
    let snap = running.stats.snapshot();
    let dropped = snap["dropped_budget"].as_u64().unwrap();
    assert!(dropped > 0, "{snap}");

    broker.resume();
    let (fresh, _) = collect_in_order(&mut sub, dropped, total - 1).await;
    assert_eq!(
        fresh.len() as u64 + dropped,
        total,
        "every message delivered or counted"
    );
    assert_eq!(fresh.first(), Some(&dropped), "the oldest went first");
    running.stop(WAIT).await;
}

#[tokio::test]
async fn the_will_says_offline_when_the_uplink_dies_and_online_when_it_is_back() {
    let broker = Mosquitto::start(BrokerConfig::default());
    let mut sub = Subscriber::connect(
        broker.addr(),
        "watcher",
        "site/sg/gateway/availability",
        1,
        false,
    )
    .await;
    let state = tempfile::tempdir().unwrap();
    let s = settings(
        broker.port,
        state.path(),
        spool_settings(1 << 20, 64 * 1024),
    );
    let topic = "site/sg/gateway/availability";

    let first = Running::start(s.clone());
    sub.expect(topic, "online", WAIT).await;
    first.crash().await;
    sub.expect(topic, "offline", WAIT).await;

    let second = Running::start(s);
    sub.expect(topic, "online", WAIT).await;
    second.stop(WAIT).await;
    sub.expect(topic, "offline", WAIT).await;
}
