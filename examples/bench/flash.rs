//! Flash writes: what the real release daemon writes to its state directory, extrapolated to a day,
//! for the SD card of a Raspberry Pi. Each row starts the daemon on a freshly made ext4 file system on a
//! loop device (as root; elsewhere the state directory is a plain temporary directory and only the
//! process's own `/proc/PID/io` `write_bytes` is read, which the report says), lets it start up, then
//! counts over a window what the file system wrote (`/sys/fs/ext4/<dev>/lifetime_write_kbytes`, journal
//! and metadata included, after a `syncfs` at both ends so that page-cache writes still waiting for
//! writeback are counted) and what the process caused to be written (`write_bytes`). Rows: 50 devices x
//! one reading a minute forwarded to a local mosquitto that acknowledges at once (the budget row), the
//! same with the cloud down the whole window, 500 devices, and an idle gateway; beside them the bytes of
//! the forwarded messages themselves (the floor) and the figure the issue measured before this work.
//! What one group commit (append + fdatasync) costs on the same file system is measured apart, as the
//! fixed cost of the cloud-down row.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::daemon::Daemon;
use crate::mosquitto::{free_port, BrokerConfig, Mosquitto, MOSQUITTO};

/// What the issue measured before this work, with `/proc/PID/io` (50 devices, cloud up).
pub const BEFORE_BYTES_PER_DAY: f64 = 1.2e9;
/// The budget of the 50-device, cloud-up row.
pub const BUDGET_BYTES_PER_DAY: f64 = 10.0 * 1024.0 * 1024.0;
/// The cloud-down row's budget per byte of spooled topic and payload, beside the fixed cost.
pub const BUDGET_PER_SPOOLED_BYTE: f64 = 1.5;
/// The uplink's default hold (`sync = "1s"`): messages arriving within it share one group commit.
const HOLD: Duration = Duration::from_millis(750);
const PREFIX: &str = "site/";
/// What a spool record adds to a message's topic and payload.
const RECORD_HEADER: u64 = sensorgate::uplink::spool::RECORD_OVERHEAD as u64;

/// A fresh ext4 file system on a loop device, mounted on a temporary directory; unmounted and detached
/// when dropped.
struct Ext4 {
    _image_dir: tempfile::TempDir,
    mount: tempfile::TempDir,
    device: String,
    counter: PathBuf,
}

fn command(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

impl Ext4 {
    /// 256 MiB, inode tables and journal initialised at mkfs time (no background lazy init that would
    /// be counted as the daemon's writes).
    fn make() -> Result<Ext4, String> {
        if rustix::process::geteuid().as_raw() != 0 {
            return Err("not root".into());
        }
        let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = image_dir.path().join("flash.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(256 << 20))
            .map_err(|e| format!("image: {e}"))?;
        let image_text = image.display().to_string();
        let device = command("losetup", &["--find", "--show", &image_text])?;
        let made = command(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                &device,
            ],
        );
        let mount = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_text = mount.path().display().to_string();
        let mounted = made.and_then(|_| command("mount", &[&device, &mount_text]));
        if let Err(e) = mounted {
            let _ = command("losetup", &["-d", &device]);
            return Err(e);
        }
        let name = device.trim_start_matches("/dev/").to_string();
        Ok(Ext4 {
            _image_dir: image_dir,
            mount,
            counter: PathBuf::from(format!("/sys/fs/ext4/{name}/lifetime_write_kbytes")),
            device,
        })
    }

    /// Bytes the file system wrote since it was made, after writing back everything dirty on it.
    fn written(&self) -> Option<u64> {
        syncfs(self.mount.path());
        let text = std::fs::read_to_string(&self.counter).ok()?;
        Some(text.trim().parse::<u64>().ok()? * 1024)
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let mount = self.mount.path().display().to_string();
        let _ = command("umount", &[&mount]);
        let _ = command("losetup", &["-d", &self.device]);
    }
}

fn syncfs(dir: &Path) {
    let _ = command("sync", &["-f", &dir.display().to_string()]);
}

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
    /// Group commits those messages need when none is acknowledged in time (arrival bursts one hold
    /// apart).
    pub commits: u64,
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
    /// What one group commit (a small append and an fdatasync) costs on a fresh ext4, in bytes.
    pub commit_cost: Option<f64>,
    /// The size of the commits that cost was measured with (the cloud-down row's average).
    pub commit_bytes: usize,
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

/// Counts what the daemon's broker publishes under `sensorgate/#` (as the forward rule selects it),
/// with the arrival times for the group-commit count.
struct Tap {
    messages: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    counting: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    async fn connect(port: u16) -> Tap {
        let mut options = MqttOptions::new(format!("flash-tap-{port}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let messages = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let counting = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let _ = client.subscribe("sensorgate/#", QoS::AtMostOnce).await;
        let task = {
            let (messages, bytes, arrivals, counting) = (
                messages.clone(),
                bytes.clone(),
                arrivals.clone(),
                counting.clone(),
            );
            tokio::spawn(async move {
                let _client = client;
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            // The uplink owns the gateway's availability upstream: not forwarded.
                            if !counting.load(Ordering::Relaxed)
                                || p.topic == "sensorgate/gateway/availability"
                            {
                                continue;
                            }
                            messages.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(
                                (PREFIX.len() + p.topic.len() + p.payload.len()) as u64,
                                Ordering::Relaxed,
                            );
                            if let Ok(mut a) = arrivals.lock() {
                                a.push(Instant::now());
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        };
        Tap {
            messages,
            bytes,
            arrivals,
            counting,
            task,
        }
    }

    /// Messages, bytes and group commits counted.
    fn finish(self) -> (u64, u64, u64) {
        self.task.abort();
        let arrivals = self.arrivals.lock().map(|a| a.clone()).unwrap_or_default();
        (
            self.messages.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            group_commits(&arrivals, HOLD),
        )
    }
}

/// How many group commits arrivals need when each commit takes everything that arrived within `hold`
/// of the oldest message it writes (the uplink's rule when nothing is acknowledged in time).
pub fn group_commits(arrivals: &[Instant], hold: Duration) -> u64 {
    let mut commits = 0;
    let mut open_until: Option<Instant> = None;
    for &at in arrivals {
        if open_until.is_none_or(|until| at >= until) {
            commits += 1;
            open_until = Some(at + hold);
        }
    }
    commits
}

fn config(devices: u64, cloud_port: u16, retained_sync: Option<&str>) -> String {
    let source = if devices > 0 {
        format!(
            "[[source]]\nname = \"sim\"\nkind = \"simulator\"\ndevices = {devices}\ninterval = \"60s\"\npayload = \"lpp\"\n"
        )
    } else {
        String::new()
    };
    let broker = retained_sync
        .map(|period| format!("[broker]\nretained_sync = \"{period}\"\n"))
        .unwrap_or_default();
    format!(
        "{source}{broker}[upstream]\nurl = \"mqtt://127.0.0.1:{cloud_port}\"\nallow_plaintext = true\n\
         client_id = \"bench-flash\"\n[[upstream.forward]]\nfilter = \"sensorgate/#\"\n\
         prefix = \"{PREFIX}\"\nqos = 1\n"
    )
}

async fn measure(case: &Case, cloud: Option<&Mosquitto>) -> (Row, Option<String>) {
    let Case {
        what,
        devices,
        settle,
        window,
        ..
    } = *case;
    let (ext4, fallback) = match Ext4::make() {
        Ok(fs) => (Some(fs), None),
        Err(why) => (None, Some(why)),
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let state: PathBuf = match &ext4 {
        Some(fs) => fs.mount.path().join("state"),
        None => scratch.path().join("state"),
    };
    let cloud_port = cloud.map(|c| c.port).unwrap_or_else(free_port);
    let daemon = Daemon::spawn_with_state(
        &config(devices, cloud_port, case.retained_sync),
        &[],
        &state,
    );
    daemon.wait_listening().await;
    let tap = Tap::connect(daemon.port).await;
    // Start-up: the spool directory, the first retained state, the devices' first readings.
    tokio::time::sleep(settle).await;
    let pid = daemon.pid();
    let fs0 = ext4.as_ref().and_then(Ext4::written);
    let p0 = process_write_bytes(pid).unwrap_or(0);
    tap.counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let fs1 = ext4.as_ref().and_then(Ext4::written);
    let p1 = process_write_bytes(pid).unwrap_or(0);
    let window_s = started.elapsed().as_secs_f64();
    let (forwarded, forwarded_bytes, commits) = tap.finish();
    drop(daemon);
    let row = Row {
        what,
        devices,
        cloud_up: cloud.is_some(),
        retained_sync: case.retained_sync,
        window_s,
        fs_bytes: fs0.zip(fs1).map(|(a, b)| b.saturating_sub(a)),
        process_bytes: p1.saturating_sub(p0),
        forwarded,
        forwarded_bytes,
        commits,
    };
    (row, fallback)
}

/// Appends small records with an fdatasync each on a fresh ext4: bytes the file system writes per
/// commit beyond the data.
fn commit_cost(record: usize) -> Option<f64> {
    let fs = Ext4::make().ok()?;
    let path = fs.mount.path().join("probe.seg");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    use std::io::Write;
    let before = fs.written()?;
    const COMMITS: u64 = 200;
    let bytes = vec![b'x'; record];
    for _ in 0..COMMITS {
        file.write_all(&bytes).ok()?;
        file.sync_data().ok()?;
    }
    let after = fs.written()?;
    Some((after - before) as f64 / COMMITS as f64 - record as f64)
}

/// One row to measure: its devices, whether the cloud is up, its `[broker] retained_sync` (`None`: the
/// default, "15m") and its start-up and window.
struct Case {
    what: &'static str,
    devices: u64,
    cloud_up: bool,
    retained_sync: Option<&'static str>,
    settle: Duration,
    window: Duration,
}

/// The rows. A full run measures the two 50-device rows (the budget rows) in the default
/// configuration over 900 s, which holds one write of the retained log (the default `retained_sync`
/// is 15 minutes; the first write after start-up is no larger than a later one, since every device
/// reports within the period); the 500-device and idle rows run 180 s with `retained_sync = "60s"`,
/// 15 times as often as the default, so they bound it from above. The idle row starts its window
/// after the first retained write (the gateway's availability, a start-up cost). A quick run uses
/// 20 s windows with `retained_sync = "10s"`: coarse, and upper bounds.
fn cases(quick: bool) -> Vec<Case> {
    let secs = Duration::from_secs;
    let case = |what, devices, cloud_up, retained_sync, settle, window| Case {
        what,
        devices,
        cloud_up,
        retained_sync,
        settle,
        window,
    };
    if quick {
        let fast = Some("10s");
        vec![
            case(CLOUD_UP_50, 50, true, fast, secs(5), secs(20)),
            case(CLOUD_DOWN_50, 50, false, fast, secs(5), secs(20)),
            case(CLOUD_UP_500, 500, true, fast, secs(5), secs(20)),
            case(IDLE, 0, true, fast, secs(12), secs(20)),
        ]
    } else {
        let bound = Some("60s");
        vec![
            case(CLOUD_UP_50, 50, true, None, secs(15), secs(900)),
            case(CLOUD_DOWN_50, 50, false, None, secs(15), secs(900)),
            case(CLOUD_UP_500, 500, true, bound, secs(15), secs(180)),
            case(IDLE, 0, true, bound, secs(75), secs(180)),
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
        let (row, why) = measure(&case, if case.cloud_up { cloud.as_ref() } else { None }).await;
        fallback = fallback.or(why);
        rows.push(row);
    }
    // The fixed cost of one commit, measured with commits of the cloud-down row's own average size
    // (a file system's cost per commit depends on how often a commit allocates a new block).
    let commit_bytes = rows
        .iter()
        .find(|row| row.what == CLOUD_DOWN_50 && row.commits > 0)
        .map(|row| ((row.forwarded_bytes + RECORD_HEADER * row.forwarded) / row.commits) as usize)
        .unwrap_or(200)
        .clamp(1, 64 * 1024);
    let commit_cost = tokio::task::spawn_blocking(move || commit_cost(commit_bytes))
        .await
        .ok()
        .flatten();
    Report {
        rows,
        fallback,
        commit_cost,
        commit_bytes,
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
            "The release daemon with its state directory on a freshly made 256 MiB ext4 on a loop device \
             (one per row); **file system** is `/sys/fs/ext4/<dev>/lifetime_write_kbytes` (data, metadata \
             and journal), **process** is `/proc/PID/io` `write_bytes`, both after a `syncfs`, over the \
             window after start-up, times a day. Simulator devices send Cayenne LPP once a minute; the \
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
             files') is {} a day, {:.2} bytes per byte of spooled topic + payload in all ({} group \
             commits in the window for {} messages).",
            mib(row.per_day(written as u64)),
            written / spooled,
            row.commits,
            row.forwarded
        ));
        if let Some(cost) = report.commit_cost {
            let variable = (written - row.commits as f64 * cost).max(0.0) / spooled;
            out.push_str(&format!(
                " The fixed cost is one group commit (one append and one fdatasync) per `sync` period in \
                 which messages arrived: {:.1} KiB each on this ext4 beyond the data (measured apart: 200 \
                 commits of {} bytes, this row's average), which at this rate is {} a day; less that, \
                 {variable:.2} bytes per spooled byte (a record adds {RECORD_HEADER} bytes of header to topic + \
                 payload).",
                cost / 1024.0,
                report.commit_bytes,
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
    fn arrivals_within_one_hold_share_a_commit() {
        let t = Instant::now();
        let ms = |n: u64| t + Duration::from_millis(n);
        let arrivals = [ms(0), ms(100), ms(700), ms(760), ms(800), ms(3000)];
        assert_eq!(group_commits(&arrivals, Duration::from_millis(750)), 3);
        assert_eq!(group_commits(&[], Duration::from_millis(750)), 0);
    }

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
        };
        assert_eq!(row.bytes_per_day(), 1024.0 * 720.0);
        let report = Report {
            rows: vec![row],
            fallback: None,
            commit_cost: Some(16384.0),
            commit_bytes: 425,
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
