//! Spool and uplink figures: append throughput with `sync = "1s"` and `"always"`, bytes written per
//! message (the spool's own count, and what the kernel accounted in /proc/self/io), and the drain rate
//! of a spooled backlog to a local mosquitto. Prints a markdown table.
//!
//! `cargo bench --bench spool` (100,000-message backlog), or `cargo bench --bench spool -- --quick`
//! (or `SPOOL_BENCH_QUICK=1`) for a run under 30 s.

#[path = "../tests/support/mosquitto.rs"]
mod mosquitto;

use std::path::Path;
use std::time::{Duration, Instant};

use sensorgate::uplink::spool::{now_ms, Outbound, Spool};
use sensorgate::uplink::{ForwardRule, SpoolSettings, SyncPolicy, Uplink, UplinkSettings};

fn disk_write_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/io").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

fn reading(i: u64) -> Outbound {
    Outbound {
        topic: format!("sites/garden/sensorgate/node-{}", i % 16),
        payload: format!(
            "{{\"temperature\":21.{},\"humidity\":48,\"seq\":{i}}}",
            i % 10
        )
        .into_bytes(),
        qos: 1,
        retain: false,
    }
}

fn settings(sync: SyncPolicy) -> SpoolSettings {
    SpoolSettings {
        max_bytes: 256 << 20,
        max_age: Duration::from_secs(7 * 86_400),
        sync,
        segment_bytes: 4 << 20,
    }
}

struct AppendResult {
    label: String,
    messages: u64,
    per_second: f64,
    spool_bytes_per_message: f64,
    disk_bytes_per_message: Option<f64>,
}

/// Appends `count` messages in batches of `batch`, committing once a second (group commit) or, with
/// "always", fsync'ing every batch.
fn append_run(dir: &Path, label: &str, sync: SyncPolicy, count: u64, batch: u64) -> AppendResult {
    let mut spool = Spool::open(dir, settings(sync)).expect("open spool");
    let disk_before = disk_write_bytes();
    let started = Instant::now();
    let mut last_commit = Instant::now();
    let mut i = 0;
    while i < count {
        let messages: Vec<Outbound> = (i..(i + batch).min(count)).map(reading).collect();
        i += messages.len() as u64;
        spool.append(&messages, now_ms()).expect("append");
        if let SyncPolicy::Every(period) = sync {
            if last_commit.elapsed() >= period {
                spool.commit(now_ms()).expect("commit");
                last_commit = Instant::now();
            }
        }
    }
    spool.commit(now_ms()).expect("commit");
    let elapsed = started.elapsed().as_secs_f64();
    let stats = spool.stats().clone();
    AppendResult {
        label: label.to_string(),
        messages: count,
        per_second: count as f64 / elapsed,
        spool_bytes_per_message: stats.written_bytes as f64 / count as f64,
        disk_bytes_per_message: disk_before
            .zip(disk_write_bytes())
            .map(|(a, b)| (b - a) as f64 / count as f64),
    }
}

/// Fills a spool with `count` messages, then lets an uplink drain it into a local mosquitto.
fn drain_run(count: u64) -> (f64, f64) {
    let state = tempfile::tempdir().expect("tempdir");
    {
        let mut spool = Spool::open(
            &state.path().join("spool"),
            settings(SyncPolicy::Every(Duration::from_secs(1))),
        )
        .expect("open spool");
        let mut i = 0;
        while i < count {
            let batch: Vec<Outbound> = (i..(i + 1000).min(count)).map(reading).collect();
            i += batch.len() as u64;
            spool.append(&batch, now_ms()).expect("append");
        }
        spool.commit(now_ms()).expect("commit");
    }
    let broker = mosquitto::Mosquitto::start(mosquitto::BrokerConfig::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut sub =
            mosquitto::Subscriber::connect(broker.port, "bench-cloud", "sites/#", false).await;
        let uplink = Uplink::open(UplinkSettings {
            url: broker.plain_url(),
            allow_plaintext: true,
            client_id: "bench-gw".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password_file: None,
            keep_alive: Duration::from_secs(30),
            max_inflight: 100,
            base_topic: "sensorgate".into(),
            forwards: vec![ForwardRule {
                filter: "sensorgate/#".into(),
                prefix: "sites/garden/".into(),
                qos: 1,
            }],
            spool: settings(SyncPolicy::Every(Duration::from_secs(1))),
            state_dir: state.path().to_path_buf(),
        })
        .expect("open uplink");
        let stats = uplink.stats();
        let (_input, rx) = tokio::sync::mpsc::unbounded_channel();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(uplink.run(rx, shutdown.clone()));
        let mut received = 0;
        while received < count {
            match sub.next(Duration::from_secs(30)).await {
                Some(p) if p.topic.starts_with("sites/garden/sensorgate/node-") => received += 1,
                Some(_) => {}
                None => panic!("drain stalled at {received} of {count}"),
            }
        }
        let delivered = started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stats.snapshot()["spool_messages"] != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let acked = started.elapsed().as_secs_f64();
        shutdown.cancel();
        let _ = task.await;
        (count as f64 / delivered, count as f64 / acked)
    })
}

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("SPOOL_BENCH_QUICK").is_some();
    let (every_n, always_n, backlog) = if quick {
        (50_000, 500, 10_000)
    } else {
        (300_000, 3_000, 100_000)
    };
    let base = tempfile::tempdir().expect("tempdir");
    let every = SyncPolicy::Every(Duration::from_secs(1));
    let runs = [
        append_run(
            &base.path().join("a"),
            "sync = \"1s\", batches of 1",
            every,
            every_n,
            1,
        ),
        append_run(
            &base.path().join("b"),
            "sync = \"1s\", batches of 100",
            every,
            every_n,
            100,
        ),
        append_run(
            &base.path().join("c"),
            "sync = \"always\", batches of 1",
            SyncPolicy::Always,
            always_n,
            1,
        ),
        append_run(
            &base.path().join("d"),
            "sync = \"always\", batches of 100",
            SyncPolicy::Always,
            always_n * 20,
            100,
        ),
    ];
    println!("| append ({} B payload, QoS 1) | messages | messages/s | spool bytes/message | disk bytes/message (/proc/self/io) |", reading(1).payload.len());
    println!("|---|---:|---:|---:|---:|");
    for r in &runs {
        let disk = r
            .disk_bytes_per_message
            .map(|d| format!("{d:.0}"))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "| {} | {} | {:.0} | {:.1} | {} |",
            r.label, r.messages, r.per_second, r.spool_bytes_per_message, disk
        );
    }
    let (delivered, acked) = drain_run(backlog);
    println!();
    println!("| drain to local mosquitto (QoS 1, max_inflight 100) | messages | delivered/s | acknowledged and deleted/s |");
    println!("|---|---:|---:|---:|");
    println!("| spooled backlog | {backlog} | {delivered:.0} | {acked:.0} |");
}
