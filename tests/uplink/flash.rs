//! The uplink's durability promise and what it costs the disk, against a real mosquitto: every forwarded
//! message is acknowledged by the cloud or fsync'ed within `sync` of its arrival. What the cloud
//! acknowledges in time never touches the disk (no segment, no cursor, no fsync); with the cloud hung
//! (SIGSTOP: the connection stays, nothing is acknowledged) or down, messages reach the disk within
//! `sync`, and a crash loses only messages younger than that; a clean stop loses nothing; with
//! `sync = "always"` everything is written before it is sent. A crash here is the uplink's task dropped
//! without its clean stop (no final write), as `kill -9` leaves the process; the daemon-level `kill -9`
//! tests are in tests/uplink_daemon.rs.

use sensorgate_testkit::mosquitto;

use std::path::Path;
use std::time::{Duration, Instant};

use mosquitto::{BrokerConfig, Mosquitto, Subscriber};
use sensorgate::model::Message;
use sensorgate::uplink::{SpoolSettings, SyncPolicy, UplinkSettings};

use crate::running::{self, Running};

const WAIT: Duration = Duration::from_secs(60);
const SYNC: Duration = Duration::from_secs(1);
const TOPIC: &str = "site/sg/meter";

fn settings(port: u16, state_dir: &Path, sync: SyncPolicy) -> UplinkSettings {
    let spool = SpoolSettings {
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(86_400),
        sync,
        segment_bytes: 1 << 20,
    };
    running::settings(
        format!("mqtt://127.0.0.1:{port}"),
        "gw-flash",
        state_dir,
        spool,
    )
}

impl Running {
    fn send_range(&self, seqs: std::ops::RangeInclusive<u64>) {
        for i in seqs {
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

    fn stat(&self, key: &str) -> u64 {
        self.stats.snapshot()[key].as_u64().unwrap_or(0)
    }
}

/// The spool directory's files.
fn spool_files(state: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("spool"))
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Receives readings on [`TOPIC`] until every one of `first..=must` arrived (repeats allowed, no
/// reordering of new ones), then for `linger` more; returns the distinct ones in arrival order.
async fn receive(sub: &mut Subscriber, first: u64, must: u64, linger: Duration) -> Vec<u64> {
    let mut fresh: Vec<u64> = Vec::new();
    let mut highest = first - 1;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut linger_until: Option<tokio::time::Instant> = None;
    loop {
        if highest >= must && linger_until.is_none() {
            linger_until = Some(tokio::time::Instant::now() + linger);
        }
        let until = linger_until.unwrap_or(deadline);
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let Some(publish) = sub.next(left).await else {
            assert!(
                linger_until.is_some(),
                "only {} of {first}..={must} arrived (highest {highest})",
                fresh.len()
            );
            return fresh;
        };
        if publish.topic != TOPIC {
            continue;
        }
        let value: u64 = std::str::from_utf8(&publish.payload)
            .unwrap()
            .parse()
            .unwrap();
        if value > highest {
            assert_eq!(
                value,
                highest + 1,
                "gap or reordering: {value} after {highest}"
            );
            highest = value;
            fresh.push(value);
        }
    }
}

/// A broker with persistence and a persistent cloud subscriber, so that queued messages survive a
/// broker stop.
async fn cloud() -> (Mosquitto, Subscriber) {
    let broker = Mosquitto::start(BrokerConfig {
        persistence: true,
        ..BrokerConfig::default()
    });
    let sub = Subscriber::connect(broker.addr(), "cloud-app", "site/#", 1, true).await;
    (broker, sub)
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn what_the_cloud_acknowledges_in_time_never_touches_the_disk() {
    let (broker, mut sub) = cloud().await;
    let state = tempfile::tempdir().unwrap();
    let running = Running::start(settings(broker.port, state.path(), SyncPolicy::Every(SYNC)));
    running
        .wait_stats(WAIT, "connected", |s| s["state"] == "connected")
        .await;
    for chunk in 0..20u64 {
        running.send_range(chunk * 100 + 1..=chunk * 100 + 100);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receive(&mut sub, 1, 2000, Duration::ZERO).await;
    assert_eq!(got, (1..=2000).collect::<Vec<_>>());
    running
        .wait_stats(WAIT, "all acknowledged", |s| s["acked_seq"] == 2000)
        .await;
    let snap = running.stats.snapshot();
    assert_eq!(snap["appended"], 2000, "{snap}");
    assert_eq!(snap["synced_seq"], 2000, "{snap}");
    assert_eq!(
        (&snap["spooled"], &snap["written_bytes"], &snap["fsyncs"]),
        (&0.into(), &0.into(), &0.into()),
        "{snap}"
    );
    assert_eq!(spool_files(state.path()), Vec::<String>::new());
    // An idle uplink writes nothing either, and a clean stop has nothing to write.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(running.stat("written_bytes"), 0);
    running.stop(WAIT).await;
    assert_eq!(spool_files(state.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_hung_cloud_gets_messages_to_disk_within_sync_and_a_crash_loses_only_younger_ones() {
    let (mut broker, mut sub) = cloud().await;
    let state = tempfile::tempdir().unwrap();
    let s = settings(broker.port, state.path(), SyncPolicy::Every(SYNC));
    let running = Running::start(s.clone());
    running.send_range(1..=100);
    assert_eq!(
        receive(&mut sub, 1, 100, Duration::ZERO).await,
        (1..=100).collect::<Vec<_>>()
    );
    running
        .wait_stats(WAIT, "100 acknowledged", |s| s["acked_seq"] == 100)
        .await;
    assert_eq!(running.stat("spooled"), 0, "acknowledged in time");

    // The cloud hangs: the connection stays up, nothing is acknowledged any more.
    let pid = broker.pid().expect("mosquitto runs");
    signal(pid, "STOP");
    let older_sent = Instant::now();
    running.send_range(101..=200);
    running
        .wait_stats(WAIT, "101..=200 durable", |s| {
            s["synced_seq"].as_u64() >= Some(200)
        })
        .await;
    let durable_after = older_sent.elapsed();
    assert!(
        durable_after <= SYNC,
        "fsync'ed {durable_after:?} after arrival, beyond sync = {SYNC:?}"
    );
    assert!(running.stat("spooled") >= 100);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Younger than sync when the uplink dies: these may be lost.
    running.send_range(201..=300);
    running.crash().await;

    signal(pid, "CONT");
    let restarted = Running::start(s);
    let got = receive(&mut sub, 101, 200, Duration::from_secs(2)).await;
    assert!(
        got.len() >= 100,
        "everything older than sync arrived: {got:?}"
    );
    restarted.stop(WAIT).await;
    broker.stop();
}

#[tokio::test]
async fn with_the_cloud_down_a_crash_loses_nothing_older_than_sync_and_a_clean_stop_nothing() {
    let (mut broker, mut sub) = cloud().await;
    broker.stop();
    let state = tempfile::tempdir().unwrap();
    let s = settings(broker.port, state.path(), SyncPolicy::Every(SYNC));

    let running = Running::start(s.clone());
    let older_sent = Instant::now();
    running.send_range(1..=100);
    running
        .wait_stats(WAIT, "1..=100 durable", |s| {
            s["synced_seq"].as_u64() >= Some(100)
        })
        .await;
    assert!(older_sent.elapsed() <= SYNC, "{:?}", older_sent.elapsed());
    running.send_range(101..=150);
    running.crash().await;

    // Restarted while the cloud is still down; then a clean stop right after more messages came in.
    let second = Running::start(s.clone());
    let kept = second.stat("spool_messages");
    assert!(kept >= 100, "the spool kept 1..=100: {kept} messages");
    second.send_range(1001..=1100);
    second.stop(WAIT).await;

    broker.resume();
    let third = Running::start(s);
    let mut values: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !values.contains(&1100) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let publish = sub.next(left).await.expect("the backlog arrives");
        if publish.topic == TOPIC {
            values.push(
                std::str::from_utf8(&publish.payload)
                    .unwrap()
                    .parse()
                    .unwrap(),
            );
        }
    }
    let position = |v: u64| values.iter().position(|x| *x == v);
    for v in (1..=100).chain(1001..=1100) {
        assert!(position(v).is_some(), "{v} lost: {values:?}");
    }
    assert!(position(100) < position(1001), "order kept across restarts");
    third.stop(WAIT).await;
}

#[tokio::test]
async fn sync_always_writes_before_it_sends() {
    let (broker, mut sub) = cloud().await;
    let state = tempfile::tempdir().unwrap();
    let running = Running::start(settings(broker.port, state.path(), SyncPolicy::Always));
    running.send_range(1..=300);
    assert_eq!(
        receive(&mut sub, 1, 300, Duration::ZERO).await,
        (1..=300).collect::<Vec<_>>()
    );
    running
        .wait_stats(WAIT, "all acknowledged", |s| s["acked_seq"] == 300)
        .await;
    assert_eq!(running.stat("spooled"), 300);
    running.stop(WAIT).await;
}
