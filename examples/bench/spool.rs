//! The uplink's disk spool: append throughput with `sync = "1s"` (group commit) and `sync = "always"`
//! (fsync per batch), in batches of 1 and 100; bytes written per message, by the spool's own count and
//! by what the kernel accounted to this process (`/proc/self/io`), and per byte of topic + payload; and
//! the drain rate of a spooled backlog (100,000 messages, 10,000 with `--quick`) through a real
//! `Uplink` to a local mosquitto. Appends run on a blocking thread, never on the runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sensorgate::uplink::spool::{now_ms, Outbound, Spool};
use sensorgate::uplink::{ForwardRule, SpoolSettings, SyncPolicy, Uplink, UplinkSettings};

use crate::measure::disk_write_bytes;
use crate::mosquitto::{BrokerConfig, Mosquitto, Subscriber, MOSQUITTO};

/// The prefix of every spooled topic (the forward rule's `sites/garden/` before the local topic).
const TOPIC_PREFIX: &str = "sites/garden/sensorgate/node-";
/// The uplink's `max_inflight` during the drain.
const MAX_INFLIGHT: u16 = 100;
/// The drain gives up when nothing arrives for this long...
const STALL: Duration = Duration::from_secs(30);
/// ...or after this long in all.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

/// One append run.
#[derive(Clone, Debug)]
pub struct AppendRun {
    /// `"1s"` or `"always"`.
    pub sync: &'static str,
    pub batch: u64,
    /// Messages appended (fewer than asked when the run hit its time limit).
    pub messages: u64,
    pub per_second: f64,
    /// Bytes the spool wrote to its files, per message.
    pub spool_bytes_per_message: f64,
    /// `write_bytes` of `/proc/self/io` over the run, per message; `None` where it cannot be read.
    pub disk_bytes_per_message: Option<f64>,
    /// Bytes the spool wrote per byte of topic + payload.
    pub bytes_per_payload_byte: f64,
}

/// The spool's figures.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Messages/s delivered from a spooled backlog to a local mosquitto.
    pub drain_per_second: f64,
    /// Bytes written to the spool per byte of topic + payload, `sync = "1s"` (the larger of its two
    /// batch sizes).
    pub bytes_per_payload_byte: f64,
    pub appends: Vec<AppendRun>,
    /// Mean topic + payload of a message, bytes.
    pub message_bytes: f64,
    /// Messages spooled before the drain started.
    pub backlog: u64,
    /// Messages the subscriber received from the backlog; 0 when mosquitto is not installed.
    pub drained: u64,
    /// Messages/s acknowledged by mosquitto and deleted from the spool, until the spool was empty.
    pub acked_per_second: f64,
}

/// Reading `i` as the uplink spools it: a remote topic and a three-field JSON payload, QoS 1.
pub fn reading(i: u64) -> Outbound {
    Outbound {
        topic: format!("{TOPIC_PREFIX}{}", i % 16),
        payload: format!(
            "{{\"temperature\":21.{},\"humidity\":48,\"seq\":{i}}}",
            i % 10
        )
        .into_bytes(),
        qos: 1,
        retain: false,
    }
}

/// Bytes written per byte of topic + payload; 0 when nothing was appended.
pub fn per_payload_byte(written: u64, topic_and_payload: u64) -> f64 {
    if topic_and_payload == 0 {
        0.0
    } else {
        written as f64 / topic_and_payload as f64
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

const ONE_SECOND: SyncPolicy = SyncPolicy::Every(Duration::from_secs(1));

/// Appends up to `count` messages in batches of `batch` (stopping early after `limit`), committing once
/// a second with `"1s"`; with `"always"` every batch is fsync'ed by the append itself. Blocking.
fn append_run(dir: &Path, sync: SyncPolicy, count: u64, batch: u64, limit: Duration) -> AppendRun {
    let mut spool =
        Spool::open(dir, settings(sync)).expect("open a spool in a temporary directory");
    let disk_before = disk_write_bytes();
    let started = Instant::now();
    let mut last_commit = started;
    let mut appended = 0;
    let mut message_bytes = 0u64;
    while appended < count && started.elapsed() < limit {
        let messages: Vec<Outbound> = (appended..(appended + batch).min(count))
            .map(reading)
            .collect();
        appended += messages.len() as u64;
        message_bytes += messages
            .iter()
            .map(|m| (m.topic.len() + m.payload.len()) as u64)
            .sum::<u64>();
        spool
            .append(&messages, now_ms())
            .expect("append to the spool");
        if let SyncPolicy::Every(period) = sync {
            if last_commit.elapsed() >= period {
                spool.commit(now_ms()).expect("commit the spool");
                last_commit = Instant::now();
            }
        }
    }
    spool.commit(now_ms()).expect("commit the spool");
    let elapsed = started.elapsed().as_secs_f64();
    let written = spool.stats().written_bytes;
    let per_message = |bytes: u64| bytes as f64 / appended.max(1) as f64;
    AppendRun {
        sync: match sync {
            SyncPolicy::Always => "always",
            SyncPolicy::Every(_) => "1s",
        },
        batch,
        messages: appended,
        per_second: appended as f64 / elapsed.max(1e-9),
        spool_bytes_per_message: per_message(written),
        disk_bytes_per_message: disk_before
            .zip(disk_write_bytes())
            .map(|(before, after)| per_message(after.saturating_sub(before))),
        bytes_per_payload_byte: per_payload_byte(written, message_bytes),
    }
}

/// The four append runs, one after the other on a blocking thread.
async fn appends(quick: bool) -> Vec<AppendRun> {
    let (group_n, always_n, limit) = if quick {
        (50_000, 500, Duration::from_secs(5))
    } else {
        (300_000, 3_000, Duration::from_secs(20))
    };
    tokio::task::spawn_blocking(move || {
        let base = tempfile::tempdir().expect("a temporary directory");
        let plan = [
            ("a", ONE_SECOND, group_n, 1),
            ("b", ONE_SECOND, group_n, 100),
            ("c", SyncPolicy::Always, always_n, 1),
            ("d", SyncPolicy::Always, always_n * 20, 100),
        ];
        plan.into_iter()
            .map(|(dir, sync, count, batch)| {
                let run = append_run(&base.path().join(dir), sync, count, batch, limit);
                eprintln!(
                    "  append, sync \"{}\", batches of {}: {:.0} messages/s",
                    run.sync, run.batch, run.per_second
                );
                run
            })
            .collect()
    })
    .await
    .expect("the spool append thread failed")
}

/// Spools `count` messages into `{state}/spool` (as the daemon would have while the link was down).
/// Blocking.
fn fill(state: &Path, count: u64) {
    let mut spool =
        Spool::open(&state.join("spool"), settings(ONE_SECOND)).expect("open the backlog spool");
    let mut i = 0;
    while i < count {
        let batch: Vec<Outbound> = (i..(i + 1000).min(count)).map(reading).collect();
        i += batch.len() as u64;
        spool
            .append(&batch, now_ms())
            .expect("append to the backlog spool");
    }
    spool.commit(now_ms()).expect("commit the backlog spool");
}

fn uplink_settings(url: String, state_dir: PathBuf) -> UplinkSettings {
    UplinkSettings {
        url: url.parse().expect("the bench broker's URL is an MQTT URL"),
        allow_plaintext: true,
        client_id: "bench-gw".into(),
        ca_file: None,
        cert_file: None,
        key_file: None,
        username: None,
        password_file: None,
        keep_alive: Duration::from_secs(30),
        max_inflight: MAX_INFLIGHT,
        protocol: Default::default(),
        base_topic: "sensorgate".into(),
        forwards: vec![ForwardRule {
            filter: "sensorgate/#".into(),
            prefix: "sites/garden/".into(),
            qos: 1,
        }],
        spool: settings(ONE_SECOND),
        state_dir,
    }
}

/// What the drain measured: messages received, delivered/s, acknowledged and deleted/s.
struct Drain {
    received: u64,
    delivered_per_second: f64,
    acked_per_second: f64,
}

/// Fills a spool with `count` messages, then lets an uplink drain it into a local mosquitto, with one
/// subscriber counting what arrives.
async fn drain(count: u64) -> Drain {
    let state = tempfile::tempdir().expect("a temporary directory");
    let state_dir = state.path().to_path_buf();
    let broker = tokio::task::spawn_blocking(move || {
        fill(&state_dir, count);
        Mosquitto::start(BrokerConfig::default())
    })
    .await
    .expect("the backlog is spooled and mosquitto starts");
    let mut sub = Subscriber::connect(broker.addr(), "bench-cloud", "sites/#", 1, false).await;
    let settings = uplink_settings(broker.plain_url(), state.path().to_path_buf());
    let uplink = tokio::task::spawn_blocking(move || Uplink::open(settings))
        .await
        .expect("the uplink opens")
        .expect("open the uplink on the backlog");
    let stats = uplink.stats();
    let (_input, rx) = tokio::sync::mpsc::channel(sensorgate::broker::TAP_CAPACITY);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let mut task = tokio::spawn(uplink.run(rx, shutdown.clone()));
    let mut received = 0;
    let mut last_receipt = started;
    while received < count && started.elapsed() < DRAIN_LIMIT {
        match sub.next(STALL).await {
            Some(p) if p.topic.starts_with(TOPIC_PREFIX) => {
                received += 1;
                last_receipt = Instant::now();
            }
            Some(_) => {}
            None => {
                eprintln!("  the drain stalled at {received} of {count} messages");
                break;
            }
        }
    }
    let delivered = last_receipt.duration_since(started).as_secs_f64();
    // Acknowledged and deleted: the spool is empty (bounded: 30 s more).
    let deadline = Instant::now() + STALL;
    while stats.snapshot()["spool_messages"] != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked = if stats.snapshot()["spool_messages"] == 0 {
        count as f64 / started.elapsed().as_secs_f64().max(1e-9)
    } else {
        0.0
    };
    shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(10), &mut task)
        .await
        .is_err()
    {
        task.abort();
    }
    drop(sub);
    let _ = tokio::task::spawn_blocking(move || drop(broker)).await;
    Drain {
        received,
        delivered_per_second: received as f64 / delivered.max(1e-9),
        acked_per_second: acked,
    }
}

/// The append runs, then the drain.
pub async fn run(quick: bool) -> Report {
    let appends = appends(quick).await;
    let backlog: u64 = if quick { 10_000 } else { 100_000 };
    let drain = if Path::new(MOSQUITTO).exists() {
        let drain = drain(backlog).await;
        eprintln!(
            "  drain: {:.0} messages/s delivered",
            drain.delivered_per_second
        );
        drain
    } else {
        eprintln!("  {MOSQUITTO} is not installed (Debian package mosquitto): no drain");
        Drain {
            received: 0,
            delivered_per_second: 0.0,
            acked_per_second: 0.0,
        }
    };
    let sample = 10_000;
    let message_bytes = (0..sample)
        .map(reading)
        .map(|m| (m.topic.len() + m.payload.len()) as f64)
        .sum::<f64>()
        / sample as f64;
    Report {
        drain_per_second: drain.delivered_per_second,
        bytes_per_payload_byte: appends
            .iter()
            .filter(|a| a.sync == "1s")
            .map(|a| a.bytes_per_payload_byte)
            .fold(0.0, f64::max),
        appends,
        message_bytes,
        backlog,
        drained: drain.received,
        acked_per_second: drain.acked_per_second,
    }
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "## Spool (uplink)\n\n\
         The uplink's disk spool in a temporary directory, with QoS 1 messages of about {:.0} bytes\n\
         of topic + payload (`{TOPIC_PREFIX}N`, a three-field JSON reading).\n\
         Appends run in batches of 1 and 100, with `sync = \"1s\"` (a group commit once a second) and\n\
         `sync = \"always\"` (an fsync per batch). Bytes per message are the spool's own count of what it\n\
         wrote to its files, and what the kernel accounted to this process in `/proc/self/io`\n\
         (`write_bytes`: a page each time it goes from clean to dirty; the file system's journal is not\n\
         counted).\n\n\
         | append | messages | messages/s | spool bytes/message | disk bytes/message | spool bytes per byte of topic + payload |\n\
         |---|---:|---:|---:|---:|---:|\n",
        report.message_bytes
    );
    for a in &report.appends {
        out.push_str(&format!(
            "| `sync = \"{}\"`, batches of {} | {} | {} | {:.1} | {} | {:.2} |\n",
            a.sync,
            a.batch,
            crate::thousands(a.messages as f64),
            crate::thousands(a.per_second),
            a.spool_bytes_per_message,
            a.disk_bytes_per_message
                .map(crate::thousands)
                .unwrap_or_else(|| "n/a".into()),
            a.bytes_per_payload_byte,
        ));
    }
    out.push_str(&format!(
        "\nThe drain: a backlog spooled before start, sent by a real `Uplink` (QoS 1,\n\
         `max_inflight = {MAX_INFLIGHT}`) to a local mosquitto and received by one subscriber; delivered/s\n\
         runs to the last receipt, acknowledged/s until the spool is empty.\n\n\
         | drain to local mosquitto | backlog | received | delivered/s | acknowledged and deleted/s |\n\
         |---|---:|---:|---:|---:|\n\
         | spooled backlog | {} | {} | {} | {} |\n",
        crate::thousands(report.backlog as f64),
        crate::thousands(report.drained as f64),
        if report.drained == 0 {
            "not measured".to_string()
        } else {
            crate::thousands(report.drain_per_second)
        },
        if report.acked_per_second > 0.0 {
            crate::thousands(report.acked_per_second)
        } else {
            "-".to_string()
        },
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_byte_of_topic_and_payload() {
        // The old bench's figure: 105-byte records for 77 bytes of topic + payload.
        assert!((per_payload_byte(105 * 1_000, 77 * 1_000) - 1.364).abs() < 0.001);
        assert_eq!(per_payload_byte(0, 0), 0.0);
    }

    #[test]
    fn readings_are_forwarded_topics_with_json() {
        let m = reading(12_345);
        assert_eq!(m.topic, format!("{TOPIC_PREFIX}9"));
        let value: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON");
        assert_eq!(value["seq"], 12_345);
        assert_eq!(m.qos, 1);
    }

    #[test]
    fn a_short_run_counts_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = append_run(dir.path(), ONE_SECOND, 200, 10, Duration::from_secs(10));
        assert_eq!(run.messages, 200);
        assert_eq!(run.sync, "1s");
        assert!(
            run.bytes_per_payload_byte > 1.0 && run.bytes_per_payload_byte < 2.0,
            "{run:?}"
        );
    }

    #[test]
    fn the_section_shows_appends_and_the_drain() {
        let report = Report {
            drain_per_second: 25_000.0,
            bytes_per_payload_byte: 1.36,
            appends: vec![AppendRun {
                sync: "1s",
                batch: 100,
                messages: 300_000,
                per_second: 1_234_567.0,
                spool_bytes_per_message: 104.2,
                disk_bytes_per_message: Some(104.0),
                bytes_per_payload_byte: 1.36,
            }],
            message_bytes: 76.6,
            backlog: 100_000,
            drained: 100_000,
            acked_per_second: 24_000.0,
        };
        let text = markdown(&report);
        assert!(text.starts_with("## Spool (uplink)\n"));
        assert!(text.ends_with("|\n"));
        assert!(
            text.contains(
                "| `sync = \"1s\"`, batches of 100 | 300,000 | 1,234,567 | 104.2 | 104 | 1.36 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| spooled backlog | 100,000 | 100,000 | 25,000 | 24,000 |"),
            "{text}"
        );
    }
}
