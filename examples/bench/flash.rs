//! Flash writes: what the real release daemon writes to its state directory, extrapolated to a day,
//! for the SD card of a Raspberry Pi. Each row starts the daemon on a freshly made ext4 file system with
//! 4 KiB blocks (Raspberry Pi OS's root file system has them) on a loop device (as root; elsewhere the
//! state directory is a plain temporary directory and only the process's own `/proc/PID/io`
//! `write_bytes` is read, which the report says), as a gateway that has run before (a first run of a
//! few seconds, stopped cleanly, has created the retained log: once in a card's life, not once a day),
//! lets it start up, then counts over a window what the
//! file system wrote (`/sys/fs/ext4/<dev>/lifetime_write_kbytes`, journal and metadata included, after a
//! `syncfs` at both ends so that page-cache writes still waiting for writeback are counted) and what the
//! process caused to be written (`write_bytes`). The window runs from one of the daemon's stats messages
//! to a later one, so that the spool's own counters (`uplink.fsyncs`, `uplink.written_bytes`) cover
//! exactly the same span. Rows: 50 devices x one reading a minute forwarded to a local mosquitto that
//! acknowledges at once (the budget row), the same with the cloud down the whole window, 500 devices, and
//! an idle gateway; beside them the bytes of the forwarded messages themselves (the floor) and the figure
//! measured before this work. What one group commit costs on the same file system is measured
//! apart with the spool itself (one minimal record per commit, at the cloud-down row's commit rate), as
//! the fixed cost of the cloud-down row.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sensorgate::uplink::spool::{Outbound, Spool};
use sensorgate::uplink::{SpoolSettings, SyncPolicy};
use tokio::sync::mpsc;

use crate::daemon::Daemon;
use crate::ext4::Ext4;
use crate::mosquitto::{free_port, BrokerConfig, Mosquitto, MOSQUITTO};

/// What was measured before this work, with `/proc/PID/io` (50 devices, cloud up).
pub const BEFORE_BYTES_PER_DAY: f64 = 1.2e9;
/// The budget of the 50-device, cloud-up row.
pub const BUDGET_BYTES_PER_DAY: f64 = 10.0 * 1024.0 * 1024.0;
/// The cloud-down row's budget per byte of spooled topic and payload, beside the fixed cost.
pub const BUDGET_PER_SPOOLED_BYTE: f64 = 1.5;
const PREFIX: &str = "site/";
/// What a spool record adds to a message's topic and payload.
const RECORD_HEADER: u64 = sensorgate::uplink::spool::RECORD_OVERHEAD as u64;
/// How long the first run of each row's gateway lasts before its clean stop (see [`measure`]).
const WARM_UP: Duration = Duration::from_secs(5);
/// Where the daemon publishes its counters (`{base}/gateway/stats`, base `sensorgate`).
const STATS_TOPIC: &str = "sensorgate/gateway/stats";

/// `write_bytes` of `/proc/PID/io`.
fn process_write_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// One measured case.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub what: &'static str,
    pub devices: u64,
    pub cloud_up: bool,
    /// `[broker] retained_sync` (`None`: the default, "15m").
    pub retained_sync: Option<&'static str>,
    pub window_s: f64,
    /// Bytes the file system wrote in the window (`None` without a loop device).
    pub fs_bytes: Option<u64>,
    /// Bytes the process caused to be written in the window.
    pub process_bytes: u64,
    /// Messages the forward rule selected in the window, and their remote topic + payload bytes.
    pub forwarded: u64,
    pub forwarded_bytes: u64,
    /// The spool's fsyncs in the window (its `uplink.fsyncs`: group commits, and a directory's when a
    /// segment is created).
    pub commits: u64,
    /// Bytes the spool wrote to its files in the window (its `uplink.written_bytes`: records and
    /// segment headers).
    pub spool_bytes: u64,
}

impl Row {
    fn per_day(&self, bytes: u64) -> f64 {
        bytes as f64 * 86_400.0 / self.window_s.max(1e-9)
    }

    /// The file system's count where there is one, else the process's.
    pub fn bytes_per_day(&self) -> f64 {
        self.per_day(self.fs_bytes.unwrap_or(self.process_bytes))
    }
}

/// The section's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<Row>,
    /// `None` with a loop device; otherwise why there is none.
    pub fallback: Option<String>,
    /// What one group commit of the spool (one minimal record, fdatasync) costs on a fresh ext4 at the
    /// cloud-down row's commit rate, in bytes.
    pub commit_cost: Option<f64>,
    /// How that was measured: commits, and seconds between them.
    pub probe_commits: u64,
    pub probe_interval_s: f64,
    pub quick: bool,
}

impl Report {
    pub fn row(&self, what: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.what == what)
    }
}

pub const CLOUD_UP_50: &str = "50 devices × 1/min, cloud up";
pub const CLOUD_DOWN_50: &str = "50 devices × 1/min, cloud down";
pub const CLOUD_UP_500: &str = "500 devices × 1/min, cloud up";
pub const IDLE: &str = "idle gateway (no source), cloud up";

/// What the tap had counted when one of the daemon's stats messages arrived, with the spool's
/// counters from that message.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    messages: u64,
    bytes: u64,
    fsyncs: u64,
    spool_bytes: u64,
}

/// Counts what the daemon's broker publishes under `sensorgate/#` (as the forward rule selects it), and
/// hands a [`Snapshot`] over at each stats message.
struct Tap {
    snapshots: mpsc::Receiver<Snapshot>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn connect(port: u16) -> Tap {
        let mut options = MqttOptions::new(format!("flash-tap-{port}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let _ = client.subscribe("sensorgate/#", QoS::AtMostOnce).await;
        let (tx, snapshots) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let _client = client;
            let (mut messages, mut bytes) = (0u64, 0u64);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        // The uplink owns the gateway's availability upstream: not forwarded.
                        if p.topic == "sensorgate/gateway/availability" {
                            continue;
                        }
                        messages += 1;
                        bytes += (PREFIX.len() + p.topic.len() + p.payload.len()) as u64;
                        if p.topic != STATS_TOPIC {
                            continue;
                        }
                        let Ok(stats) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        else {
                            continue;
                        };
                        let counter = |key: &str| stats["uplink"][key].as_u64().unwrap_or(0);
                        let _ = tx.try_send(Snapshot {
                            at: Instant::now(),
                            messages,
                            bytes,
                            fsyncs: counter("fsyncs"),
                            spool_bytes: counter("written_bytes"),
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Tap { snapshots, task }
    }

    /// The next snapshot, or `None` after `within`.
    async fn next(&mut self, within: Duration) -> Option<Snapshot> {
        tokio::time::timeout(within, self.snapshots.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(case: &Case, cloud_port: u16) -> String {
    let devices = case.devices;
    let source = if devices > 0 {
        format!(
            "[[source]]\nname = \"sim\"\nkind = \"simulator\"\ndevices = {devices}\ninterval = \"60s\"\npayload = \"lpp\"\n"
        )
    } else {
        String::new()
    };
    let broker = case
        .retained_sync
        .map(|period| format!("[broker]\nretained_sync = \"{period}\"\n"))
        .unwrap_or_default();
    let stats = case
        .stats_interval
        .map(|period| format!("[publish]\nstats_interval = \"{period}\"\n"))
        .unwrap_or_default();
    format!(
        "{source}{broker}{stats}[upstream]\nurl = \"mqtt://127.0.0.1:{cloud_port}\"\nallow_plaintext = true\n\
         client_id = \"bench-flash\"\n[[upstream.forward]]\nfilter = \"sensorgate/#\"\n\
         prefix = \"{PREFIX}\"\nqos = 1\n"
    )
}

async fn measure(case: &Case, cloud: Option<&Mosquitto>) -> Result<(Row, Option<String>), String> {
    let (ext4, fallback) = match Ext4::make() {
        Ok(fs) => (Some(fs), None),
        Err(why) => (None, Some(why)),
    };
    let scratch = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let state: PathBuf = match &ext4 {
        Some(fs) => fs.path().join("state"),
        None => scratch.path().join("state"),
    };
    let cloud_port = cloud.map(|c| c.port).unwrap_or_else(free_port);
    let body = config(case, cloud_port);
    // A gateway that has run before: its retained log exists (a first start creates it, once in the
    // card's life), written by a clean stop after the devices' first readings.
    let mut first_run = Daemon::spawn_with_state(&body, &[], &state);
    first_run.wait_listening().await;
    tokio::time::sleep(WARM_UP).await;
    if !first_run.stop().await {
        return Err("the first run did not stop within 20 s of SIGTERM".into());
    }
    let mut daemon = Daemon::spawn_with_state(&body, &[], &state);
    daemon.wait_listening().await;
    let mut tap = Tap::connect(daemon.port).await;
    // Start-up: the spool directory, the first retained state, the devices' first readings.
    tokio::time::sleep(case.settle).await;
    let pid = daemon.pid();
    let interval = case.stats_period();
    let bound = interval * 2 + Duration::from_secs(10);
    let missing = || format!("no stats message from the daemon within {bound:?}");
    // Drain what arrived during start-up: the window starts at the next stats message.
    while tap.snapshots.try_recv().is_ok() {}
    let first = tap.next(bound).await.ok_or_else(missing)?;
    let fs0 = ext4.as_ref().and_then(Ext4::written);
    let p0 = process_write_bytes(pid).unwrap_or(0);
    let mut last = first;
    while last.at.duration_since(first.at) + interval / 2 < case.window {
        last = tap.next(bound).await.ok_or_else(missing)?;
    }
    let fs1 = ext4.as_ref().and_then(Ext4::written);
    let p1 = process_write_bytes(pid).unwrap_or(0);
    drop(daemon);
    let row = Row {
        what: case.what,
        devices: case.devices,
        cloud_up: cloud.is_some(),
        retained_sync: case.retained_sync,
        window_s: last.at.duration_since(first.at).as_secs_f64(),
        fs_bytes: fs0.zip(fs1).map(|(a, b)| b.saturating_sub(a)),
        process_bytes: p1.saturating_sub(p0),
        forwarded: last.messages - first.messages,
        forwarded_bytes: last.bytes - first.bytes,
        commits: last.fsyncs.saturating_sub(first.fsyncs),
        spool_bytes: last.spool_bytes.saturating_sub(first.spool_bytes),
    };
    Ok((row, fallback))
}

/// What one group commit of the spool costs on a fresh ext4: the spool itself, in its default segment
/// size, appending one minimal record (a one-byte topic and payload) and fsync'ing it, `commits` times,
/// `interval` apart (a file system writes back its metadata on timers, so the rate matters). The
/// segment is created (and its blocks reserved) before the count starts, as a long outage's segments
/// are, once per 4 MiB.
fn commit_cost(commits: u64, interval: Duration) -> Option<f64> {
    let fs = Ext4::make().ok()?;
    let settings = SpoolSettings {
        max_bytes: 64 << 20,
        max_age: Duration::from_secs(7 * 86_400),
        sync: SyncPolicy::Every(Duration::from_secs(1)),
        segment_bytes: sensorgate::config::defaults::SPOOL_SEGMENT_BYTES,
    };
    let mut spool = Spool::open(&fs.path().join("spool"), settings).ok()?;
    let record = Outbound {
        topic: "p".into(),
        payload: vec![b'1'],
        qos: 1,
        retain: false,
    };
    let now = sensorgate::uplink::spool::now_ms;
    spool.append(std::slice::from_ref(&record), now()).ok()?;
    spool.sync().ok()?;
    fs.bytes_per_commit(commits, interval, |_| {
        spool
            .append(std::slice::from_ref(&record), now())
            .and_then(|_| spool.sync())
            .map_err(|e| e.to_string())
    })
    .ok()
}

/// One row to measure: its devices, whether the cloud is up, its `[broker] retained_sync` (`None`: the
/// default, "15m"), its `[publish] stats_interval` (`None`: the default, 60 s) and its start-up and
/// window.
struct Case {
    what: &'static str,
    devices: u64,
    cloud_up: bool,
    retained_sync: Option<&'static str>,
    stats_interval: Option<&'static str>,
    settle: Duration,
    window: Duration,
}

impl Case {
    fn stats_period(&self) -> Duration {
        match self.stats_interval {
            Some(text) => {
                sensorgate::config::parse_duration(text).unwrap_or(Duration::from_secs(60))
            }
            None => sensorgate::config::defaults::STATS_INTERVAL,
        }
    }
}

/// The rows. A full run measures the two 50-device rows (the budget rows) in the default
/// configuration over 900 s, which holds one write of the retained log (the default `retained_sync`
/// is 15 minutes; the first write after start-up is no larger than a later one, since every device
/// reports within the period); the 500-device and idle rows run 180 s with `retained_sync = "60s"`,
/// 15 times as often as the default, so they bound it from above. The idle row starts its window
/// after the first retained write (the gateway's availability, a start-up cost). Windows run between
/// stats messages (60 s apart by default). A quick run uses 20 s windows with `retained_sync = "10s"`
/// and `stats_interval = "5s"`: coarse, and upper bounds.
fn cases(quick: bool) -> Vec<Case> {
    let secs = Duration::from_secs;
    let case = |what, devices, cloud_up, retained_sync, stats_interval, settle, window| Case {
        what,
        devices,
        cloud_up,
        retained_sync,
        stats_interval,
        settle,
        window,
    };
    if quick {
        let (fast, stats) = (Some("10s"), Some("5s"));
        vec![
            case(CLOUD_UP_50, 50, true, fast, stats, secs(5), secs(20)),
            case(CLOUD_DOWN_50, 50, false, fast, stats, secs(5), secs(20)),
            case(CLOUD_UP_500, 500, true, fast, stats, secs(5), secs(20)),
            case(IDLE, 0, true, fast, stats, secs(12), secs(20)),
        ]
    } else {
        let bound = Some("60s");
        vec![
            case(CLOUD_UP_50, 50, true, None, None, secs(15), secs(900)),
            case(CLOUD_DOWN_50, 50, false, None, None, secs(15), secs(900)),
            case(CLOUD_UP_500, 500, true, bound, None, secs(15), secs(180)),
            case(IDLE, 0, true, bound, None, secs(75), secs(180)),
        ]
    }
}

pub async fn run(quick: bool) -> Report {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("  {MOSQUITTO} is not installed: the cloud-up rows need it");
    }
    let cloud = tokio::task::spawn_blocking(|| {
        Path::new(MOSQUITTO)
            .exists()
            .then(|| Mosquitto::start(BrokerConfig::default()))
    })
    .await
    .ok()
    .flatten();
    let mut rows = Vec::new();
    let mut fallback = None;
    for case in cases(quick) {
        if case.cloud_up && cloud.is_none() {
            continue;
        }
        eprintln!("  {} ({:.0} s)...", case.what, case.window.as_secs_f64());
        match measure(&case, if case.cloud_up { cloud.as_ref() } else { None }).await {
            Ok((row, why)) => {
                fallback = fallback.or(why);
                rows.push(row);
            }
            Err(why) => eprintln!("  {}: not measured: {why}", case.what),
        }
    }
    // The fixed cost of one commit, at the cloud-down row's own commit rate.
    let probe_interval_s = rows
        .iter()
        .find(|row| row.what == CLOUD_DOWN_50 && row.commits > 0)
        .map(|row| row.window_s / row.commits as f64)
        .unwrap_or(1.0)
        .clamp(0.1, 10.0);
    let probe_commits = if quick { 15 } else { 100 };
    let interval = Duration::from_secs_f64(probe_interval_s);
    let commit_cost = tokio::task::spawn_blocking(move || commit_cost(probe_commits, interval))
        .await
        .ok()
        .flatten();
    Report {
        rows,
        fallback,
        commit_cost,
        probe_commits,
        probe_interval_s,
        quick,
    }
}

/// The cloud-down row's bytes less the cloud-up row's (what the other files cost in both), and the
/// spooled topic + payload bytes, over the cloud-down window.
pub fn spool_share(report: &Report, down: &Row) -> (f64, f64) {
    let total = down.fs_bytes.unwrap_or(down.process_bytes) as f64;
    let others = report
        .row(CLOUD_UP_50)
        .map(|up| up.bytes_per_day() * down.window_s / 86_400.0)
        .unwrap_or(0.0);
    (
        (total - others).max(0.0),
        down.forwarded_bytes.max(1) as f64,
    )
}

fn mib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", bytes / 1024.0)
    }
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::from("## Flash writes (state directory, per day)\n\n");
    match &report.fallback {
        None => out.push_str(&format!(
            "The release daemon with its state directory on a freshly made 256 MiB ext4 with 4 KiB \
             blocks on a loop device (one per row), as a gateway that has run before (a first run of \
             5 s, stopped cleanly, created the retained log: once in a card's life); **file system** is `/sys/fs/ext4/<dev>/lifetime_write_kbytes` (data, metadata \
             and journal), **process** is `/proc/PID/io` `write_bytes`, both after a `syncfs`, over the \
             window after start-up (from one of the daemon's stats messages to a later one, so that the \
             spool's own counters cover the same span), times a day. Simulator devices send Cayenne LPP once a minute; the \
             forward rule is `sensorgate/#` at QoS 1 to a local mosquitto (cloud up) or to a port nothing \
             listens on (cloud down); `sync = \"1s\"`. The retained log is written once per \
             `retained_sync` (default 15 minutes): a row in the default configuration runs 900 s, which \
             holds one such write; a row with a shorter `retained_sync` writes it more often than the \
             default and is an upper bound for it.{}\n\n",
            if report.quick {
                " This quick run uses 20 s windows and `retained_sync = \"10s\"` throughout."
            } else {
                ""
            }
        )),
        Some(why) => out.push_str(&format!(
            "No loop device could be had ({why}): only `/proc/PID/io` `write_bytes` is read (no journal, \
             no metadata), on a temporary directory.\n\n"
        )),
    }
    out.push_str(
        "| case | `retained_sync` | window | file system / day | process / day | forwarded messages / day | their topic + payload / day |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} s | {} | {} | {} | {} |\n",
            row.what,
            row.retained_sync.unwrap_or("15m (default)"),
            row.window_s,
            row.fs_bytes
                .map(|b| mib(row.per_day(b)))
                .unwrap_or_else(|| "n/a".into()),
            mib(row.per_day(row.process_bytes)),
            crate::thousands(row.forwarded as f64 * 86_400.0 / row.window_s.max(1e-9)),
            mib(row.per_day(row.forwarded_bytes)),
        ));
    }
    if let Some(row) = report.row(CLOUD_UP_50) {
        out.push_str(&format!(
            "| the readings' own bytes (50 devices: forwarded topic + payload, the floor) | | | {} | | | |\n",
            mib(row.per_day(row.forwarded_bytes))
        ));
    }
    out.push_str(&format!(
        "| before this work (the issue's measurement, 50 devices, cloud up, `write_bytes`) | 5s (snapshot) | 134 s | | {} | | |\n\n",
        mib(BEFORE_BYTES_PER_DAY)
    ));
    if let Some(row) = report.row(CLOUD_DOWN_50) {
        let (written, spooled) = spool_share(report, row);
        out.push_str(&format!(
            "Cloud down: the spool's share (this row less the cloud-up row, whose writes are the other \
             files') is {} a day, {:.2} bytes per byte of spooled topic + payload in all; the spool \
             itself counted {} fsyncs in the window for {} messages and wrote {:.2} bytes of records per \
             byte of topic + payload (a record adds {RECORD_HEADER} bytes of header).",
            mib(row.per_day(written as u64)),
            written / spooled,
            row.commits,
            row.forwarded,
            row.spool_bytes as f64 / spooled,
        ));
        if let Some(cost) = report.commit_cost {
            let variable = (written - row.commits as f64 * cost).max(0.0) / spooled;
            out.push_str(&format!(
                " The fixed cost is one group commit (one append and one fdatasync) per `sync` period in \
                 which messages arrived: {:.1} KiB each on this ext4, data block and journal included \
                 (measured apart with the spool: {} commits of one minimal record, {:.2} s apart, this \
                 row's rate), which at this rate is {} a day; less that, {variable:.2} bytes per spooled \
                 byte.",
                cost / 1024.0,
                report.probe_commits,
                report.probe_interval_s,
                mib(row.per_day((row.commits as f64 * cost) as u64)),
            ));
        }
        out.push_str(
            " A longer `sync` (\"10s\", \"60s\") divides the fixed cost by as much, at the price of what \
             a power cut may lose.\n",
        );
    }
    if report.quick {
        out.push_str("\nA quick run: short windows, coarse figures.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_extrapolates_to_a_day() {
        let row = Row {
            what: CLOUD_UP_50,
            devices: 50,
            cloud_up: true,
            retained_sync: None,
            window_s: 120.0,
            fs_bytes: Some(1024),
            process_bytes: 0,
            forwarded: 10,
            forwarded_bytes: 100,
            commits: 0,
            spool_bytes: 0,
        };
        assert_eq!(row.bytes_per_day(), 1024.0 * 720.0);
        let report = Report {
            rows: vec![row],
            fallback: None,
            commit_cost: Some(16384.0),
            probe_commits: 15,
            probe_interval_s: 1.2,
            quick: true,
        };
        let text = markdown(&report);
        assert!(text.contains("720 KiB"), "{text}");
        assert!(text.contains("before this work"), "{text}");
        assert!(text.contains("| 15m (default) | 120 s |"), "{text}");
        assert!(
            text.contains("`retained_sync = \"10s\"` throughout"),
            "{text}"
        );
    }
}
