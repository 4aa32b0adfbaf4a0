//! The daemon's cost when nothing happens, and how fast it is up: the real binary is started N times
//! (quick: 5, full: 20), each time fresh (new state directory, new pseudo-terminal, new broker port) with
//! `NOTIFY_SOCKET` pointing at a Unix datagram socket bound here, as systemd's would be, and the time from
//! just before the spawn to the receipt of the `READY=1` datagram is taken (median and max; a start that
//! sends no READY within 10 s, or exits, is reported as failed). Then one daemon with one pty serial
//! source that receives nothing, one MQTT client subscribed to `sensorgate/#` and the shipped unit's
//! watchdog (`WATCHDOG_USEC` of `WatchdogSec=30`) is left alone: its resident memory once settled
//! (READY + 1 s), and its CPU seconds and context switches (all threads) over an idle window of 60 s
//! (quick: 10 s), the switches being the wakeups that show whether anything polls.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::daemon::Daemon;
use crate::measure::{now_ns, status_value, Usage};

/// How long a start may take to send `READY=1` before it counts as failed.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long the idle daemon is given after READY (and the client's SUBACK) before it is measured.
const SETTLE: Duration = Duration::from_secs(1);
/// `WatchdogSec=30` of `systemd/sensorgate.service`, as systemd passes it.
const WATCHDOG_USEC: &str = "30000000";

/// What the resources benchmarks measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// User + system CPU of the idle daemon over the window, in percent of one core.
    pub idle_cpu_percent: f64,
    /// Length of the idle window, s.
    pub idle_seconds: f64,
    /// Slowest start to READY, ms; infinite when a start sent no READY within 10 s.
    pub ready_ms_max: f64,
    /// Starts attempted.
    pub starts: usize,
    /// Median start to READY over the starts that sent it, ms (`NaN` when none did).
    pub ready_ms_median: f64,
    /// Starts that sent no READY within 10 s or exited first, with why.
    pub ready_failures: Vec<String>,
    /// Start to READY of the idle daemon itself, ms (`None`: it sent none; it was then measured once its
    /// broker listened).
    pub idle_ready_ms: Option<f64>,
    /// VmRSS once settled, KiB.
    pub idle_rss_kib: u64,
    /// VmRSS at the end of the window, KiB.
    pub idle_rss_end_kib: u64,
    /// VmHWM at the end of the window (the peak since start), KiB.
    pub idle_peak_rss_kib: u64,
    /// User + system CPU seconds over the window (`/proc/PID/stat`, 10 ms resolution).
    pub idle_cpu_seconds: f64,
    /// On-CPU time of the daemon's threads over the window from `/proc/PID/task/*/schedstat`
    /// (nanosecond resolution), s; `None` when the kernel has no schedstat.
    pub idle_oncpu_seconds: Option<f64>,
    /// Voluntary + involuntary context switches of all threads over the window, per second.
    pub wakeups_per_second: f64,
    /// Threads of the daemon during the window.
    pub threads: usize,
    /// Datagrams the daemon sent to the notify socket during the window (watchdog pings, status).
    pub notifications: usize,
    /// MQTT messages the subscribed client received during the window.
    pub client_messages: usize,
}

/// The configuration of the start-up series: what users run first, the simulator (as in
/// `config/demo.toml`) and the embedded broker, plus one pty serial source.
fn ready_body(pty: &str) -> String {
    format!(
        "[[source]]\nname = \"sim\"\nkind = \"simulator\"\ndevices = 3\ninterval = \"2s\"\npayload = \"lpp\"\n\
         [[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"{pty}\"\npayload = \"json\"\n"
    )
}

/// The configuration of the idle daemon: one pty serial source that will receive nothing.
fn idle_body(pty: &str) -> String {
    format!(
        "[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"{pty}\"\npayload = \"json\"\n"
    )
}

/// Whether a notify datagram says `READY=1` (one assignment per line, as sd_notify writes them).
fn says_ready(datagram: &str) -> bool {
    datagram.lines().any(|line| line.trim() == "READY=1")
}

/// The median of some samples (the mean of the middle two for an even count); `None` when empty.
fn median(samples: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| !s.is_nan()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

impl Report {
    /// Idle CPU in percent of one core from the most precise figure there is: the threads' on-CPU time
    /// (schedstat, nanoseconds) where the kernel gives it, else `/proc/PID/stat` (10 ms steps, which
    /// over a 10 s quick window are the whole 0.1 % budget). Also names the source.
    pub fn idle_percent(&self) -> (f64, &'static str) {
        match self.idle_oncpu_seconds {
            Some(seconds) => (percent_of_core(seconds, self.idle_seconds), "schedstat"),
            None => (self.idle_cpu_percent, "stat"),
        }
    }
}

/// CPU seconds over a wall-clock window, in percent of one core.
fn percent_of_core(cpu_seconds: f64, wall_seconds: f64) -> f64 {
    if wall_seconds <= 0.0 {
        return 0.0;
    }
    cpu_seconds / wall_seconds * 100.0
}

/// `voluntary_ctxt_switches` + `nonvoluntary_ctxt_switches` of one `/proc/PID/task/TID/status`.
fn context_switches(status: &str) -> Option<u64> {
    Some(
        status_value(status, "voluntary_ctxt_switches:")?
            + status_value(status, "nonvoluntary_ctxt_switches:")?,
    )
}

/// The on-CPU nanoseconds of one `/proc/PID/task/TID/schedstat` (its first field).
fn schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// What the daemon's threads say about themselves at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Threads {
    count: usize,
    switches: u64,
    /// `None` when any thread's schedstat could not be read.
    pub oncpu_ns: Option<u64>,
}

impl Threads {
    /// Sums `/proc/PID/task/*/{status,schedstat}`. Threads that end between two readings take their
    /// counts with them, so a difference is a lower bound (an idle daemon starts and ends none).
    pub fn of(pid: u32) -> Threads {
        let mut total = Threads {
            oncpu_ns: Some(0),
            ..Threads::default()
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Threads::default();
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
                continue;
            };
            total.count += 1;
            total.switches += context_switches(&status).unwrap_or(0);
            let oncpu = std::fs::read_to_string(dir.join("schedstat"))
                .ok()
                .and_then(|s| schedstat_ns(&s));
            total.oncpu_ns = total.oncpu_ns.zip(oncpu).map(|(a, b)| a + b);
        }
        total
    }
}

/// How a wait for `READY=1` ended.
#[derive(Debug)]
enum Ready {
    /// Received this long after the spawn.
    After(Duration),
    Failed(String),
}

/// A notify socket bound in its own temporary directory, as systemd's `NOTIFY_SOCKET`.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("a temporary directory for the notify socket");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            path,
            _dir: dir,
        }
    }

    /// Waits (up to [`READY_WITHIN`]) for `READY=1`, watching that the daemon is still alive.
    async fn wait_ready(&self, daemon: &mut Daemon) -> Ready {
        let deadline = daemon.spawned_at + READY_WITHIN;
        let mut buffer = vec![0u8; 4096];
        let mut seen = Vec::new();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ready::Failed(format!(
                    "no READY=1 within {} s (received {seen:?})",
                    READY_WITHIN.as_secs()
                ));
            }
            let slice = (deadline - now).min(Duration::from_millis(100));
            match tokio::time::timeout(slice, self.socket.recv(&mut buffer)).await {
                Ok(Ok(count)) => {
                    let received = Instant::now();
                    let text = String::from_utf8_lossy(&buffer[..count]).into_owned();
                    if says_ready(&text) {
                        return Ready::After(received.duration_since(daemon.spawned_at));
                    }
                    seen.push(text);
                }
                Ok(Err(e)) => return Ready::Failed(format!("notify socket: {e}")),
                Err(_) => {
                    if let Some(status) = daemon.exited() {
                        return Ready::Failed(format!("the daemon exited before READY: {status}"));
                    }
                }
            }
        }
    }

    /// Counts every datagram into `count` until aborted or the socket fails.
    async fn count_into(self, count: Arc<AtomicUsize>) {
        let mut buffer = vec![0u8; 4096];
        while self.socket.recv(&mut buffer).await.is_ok() {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The environment that points the daemon at `socket`, plus `extra`.
fn notify_env(
    socket: &NotifySocket,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, std::ffi::OsString)> {
    let mut env = vec![("NOTIFY_SOCKET", socket.path.clone().into_os_string())];
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).into())));
    env
}

/// One fresh start of the start-up configuration: start to READY, or why not.
async fn one_start() -> Ready {
    let (_master, pty) = crate::e2e::pty();
    let socket = NotifySocket::bind();
    let mut daemon = Daemon::spawn(&ready_body(&pty), &notify_env(&socket, &[]));
    socket.wait_ready(&mut daemon).await
    // The daemon is killed here, then the pty master is closed.
}

/// An MQTT client subscribed to `sensorgate/#` at QoS 0 with a keep-alive of 60 s, counting the
/// messages it receives into `count`; returns once subscribed (SUBACK within 10 s). The task ends when
/// the connection does, or when aborted.
async fn idle_client(port: u16, count: Arc<AtomicUsize>) -> (AsyncClient, JoinHandle<()>) {
    let mut options = MqttOptions::new(format!("bench-idle-{}", now_ns()), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (subacked_tx, mut subacked_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subacked_tx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client
        .subscribe("sensorgate/#", QoS::AtMostOnce)
        .await
        .expect("queue the subscription");
    tokio::time::timeout(Duration::from_secs(10), subacked_rx.recv())
        .await
        .expect("SUBACK from the idle daemon within 10 s")
        .expect("the idle client is alive");
    (client, task)
}

/// The idle daemon: memory once settled, CPU, wakeups and traffic over `window`.
async fn idle(window: Duration, report: &mut Report) {
    let (_master, pty) = crate::e2e::pty();
    let socket = NotifySocket::bind();
    let mut daemon = Daemon::spawn(
        &idle_body(&pty),
        &notify_env(&socket, &[("WATCHDOG_USEC", WATCHDOG_USEC)]),
    );
    match socket.wait_ready(&mut daemon).await {
        Ready::After(elapsed) => report.idle_ready_ms = Some(elapsed.as_secs_f64() * 1e3),
        Ready::Failed(why) => {
            eprintln!("  idle daemon: {why}; measuring once its broker listens");
        }
    }
    // Its ports file (written before READY) says which port the kernel gave its broker.
    daemon.wait_listening().await;
    let notifications = Arc::new(AtomicUsize::new(0));
    let notify_task = tokio::spawn(socket.count_into(notifications.clone()));
    let messages = Arc::new(AtomicUsize::new(0));
    let (_client, client_task) = idle_client(daemon.port, messages.clone()).await;
    tokio::time::sleep(SETTLE).await;

    let pid = daemon.pid();
    report.idle_rss_kib = Usage::of(&[pid]).rss_kib;
    let (notifications_before, messages_before) = (
        notifications.load(Ordering::Relaxed),
        messages.load(Ordering::Relaxed),
    );
    let threads_before = Threads::of(pid);
    let before = Usage::of(&[pid]);
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = Usage::of(&[pid]);
    let threads_after = Threads::of(pid);
    let seconds = start.elapsed().as_secs_f64();
    report.notifications = notifications.load(Ordering::Relaxed) - notifications_before;
    report.client_messages = messages.load(Ordering::Relaxed) - messages_before;
    notify_task.abort();
    client_task.abort();

    report.idle_seconds = seconds;
    report.idle_cpu_seconds = (after.cpu_seconds - before.cpu_seconds).max(0.0);
    report.idle_cpu_percent = percent_of_core(report.idle_cpu_seconds, seconds);
    report.idle_oncpu_seconds = threads_before
        .oncpu_ns
        .zip(threads_after.oncpu_ns)
        .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
    report.wakeups_per_second = threads_after
        .switches
        .saturating_sub(threads_before.switches) as f64
        / seconds.max(1e-9);
    report.threads = threads_after.count;
    report.idle_rss_end_kib = after.rss_kib;
    report.idle_peak_rss_kib = after.peak_rss_kib;
}

/// Both benchmarks.
pub async fn run(quick: bool) -> Report {
    let starts = if quick { 5 } else { 20 };
    let window = Duration::from_secs(if quick { 10 } else { 60 });
    let mut report = Report {
        starts,
        ..Report::default()
    };
    let mut times = Vec::new();
    for _ in 0..starts {
        match one_start().await {
            Ready::After(elapsed) => times.push(elapsed.as_secs_f64() * 1e3),
            Ready::Failed(why) => {
                eprintln!("  start: {why}");
                report.ready_failures.push(why);
            }
        }
    }
    report.ready_ms_median = median(&times).unwrap_or(f64::NAN);
    report.ready_ms_max = if report.ready_failures.is_empty() {
        times.iter().copied().fold(f64::NAN, f64::max)
    } else {
        f64::INFINITY
    };
    eprintln!(
        "  start to READY: median {:.1} ms, max {:.1} ms over {starts} starts",
        report.ready_ms_median, report.ready_ms_max
    );
    eprintln!("  idle for {} s...", window.as_secs());
    idle(window, &mut report).await;
    eprintln!(
        "  idle: {:.4} % CPU, {:.1} wakeups/s, RSS {} KiB",
        report.idle_cpu_percent, report.wakeups_per_second, report.idle_rss_kib
    );
    report
}

/// Milliseconds with one decimal, or `-` for no figure.
fn ms(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1} ms")
    } else {
        "-".into()
    }
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let failed = report.ready_failures.len();
    let mut out = format!(
        "## Resources at idle and start-up\n\n\
         Start-up: the real daemon is started {} times, each fresh (new state directory, pty and broker\n\
         port), on a simulator source (3 devices every 2 s, as in `config/demo.toml`) and one pty serial\n\
         source, with `NOTIFY_SOCKET` pointing at a datagram socket bound by the benchmark as systemd's\n\
         would be; the time runs from just before the spawn until the `READY=1` datagram is received. The\n\
         daemon sends READY when its start sequence has returned: state directory created, the embedded\n\
         broker's retained snapshot restored and its listeners bound (a client can connect as soon as READY\n\
         arrives), the gateway's `online` published, the uplink spool opened when there is one, the pipeline\n\
         and every source spawned. A serial source opens its port in its own task, so the port may open\n\
         just after READY: READY does not wait for a device. Idle: one daemon with one pty serial source\n\
         that receives nothing, one MQTT client subscribed to `sensorgate/#` (keep-alive 60 s) and the\n\
         shipped unit's watchdog (`WATCHDOG_USEC` of `WatchdogSec=30`, so `WATCHDOG=1` every 15 s), left\n\
         alone for {:.0} s after READY + {} s. CPU is user + system time from `/proc/PID/stat` (10 ms\n\
         steps) and, to the nanosecond, the threads' on-CPU time from `/proc/PID/task/*/schedstat`;\n\
         wakeups are the voluntary + involuntary context switches of all its threads: a daemon that polls\n\
         would show hundreds per second.\n\n\
         | measure | this run |\n|---|---:|\n",
        report.starts,
        report.idle_seconds,
        SETTLE.as_secs(),
    );
    let mut row = |what: String, value: String| out.push_str(&format!("| {what} | {value} |\n"));
    row(
        format!(
            "start to READY, median of {} starts",
            report.starts - failed
        ),
        ms(report.ready_ms_median),
    );
    row(
        "start to READY, slowest".into(),
        if failed > 0 {
            format!(
                "**{failed} of {} starts sent no READY within {} s**",
                report.starts,
                READY_WITHIN.as_secs()
            )
        } else {
            ms(report.ready_ms_max)
        },
    );
    row(
        "resident memory once settled (VmRSS)".into(),
        format!("{} KiB", crate::thousands(report.idle_rss_kib as f64)),
    );
    row(
        "resident memory at the end of the idle window (VmRSS)".into(),
        format!("{} KiB", crate::thousands(report.idle_rss_end_kib as f64)),
    );
    row(
        "peak resident memory since start (VmHWM)".into(),
        format!("{} KiB", crate::thousands(report.idle_peak_rss_kib as f64)),
    );
    row(
        format!("CPU over {:.0} s idle (user + system)", report.idle_seconds),
        format!(
            "{:.0} ms = {:.3} % of one core",
            report.idle_cpu_seconds * 1e3,
            report.idle_cpu_percent
        ),
    );
    row(
        "on-CPU time over the window (schedstat)".into(),
        match report.idle_oncpu_seconds {
            Some(seconds) => format!(
                "{:.1} ms = {:.4} % of one core",
                seconds * 1e3,
                percent_of_core(seconds, report.idle_seconds)
            ),
            None => "not available".into(),
        },
    );
    row(
        format!(
            "wakeups (context switches of its {} threads)",
            report.threads
        ),
        format!("{:.1}/s", report.wakeups_per_second),
    );
    row(
        "notify datagrams / MQTT messages to the client in the window".into(),
        format!("{} / {}", report.notifications, report.client_messages),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_median_is_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0), "NaN is left out");
    }

    #[test]
    fn percent_is_of_one_core() {
        assert_eq!(percent_of_core(0.06, 60.0), 0.1);
        assert_eq!(percent_of_core(2.0, 1.0), 200.0);
        assert_eq!(percent_of_core(1.0, 0.0), 0.0, "no window, no figure");
    }

    #[test]
    fn context_switches_add_both_kinds() {
        let status = "Name:\ttokio-runtime-w\nThreads:\t3\nvoluntary_ctxt_switches:\t120\n\
                      nonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(context_switches(status), Some(127));
        assert_eq!(context_switches("voluntary_ctxt_switches:\t1\n"), None);
        assert_eq!(schedstat_ns("632329 5185452 265\n"), Some(632_329));
        assert_eq!(schedstat_ns(""), None);
    }

    #[test]
    fn this_process_has_threads_that_switch() {
        let threads = Threads::of(std::process::id());
        assert!(threads.count >= 1 && threads.switches > 0);
        assert_eq!(Threads::of(u32::MAX).count, 0, "no such process");
    }

    #[test]
    fn only_a_ready_line_is_ready() {
        assert!(says_ready("READY=1"));
        assert!(says_ready("STATUS=starting\nREADY=1\n"));
        assert!(!says_ready("STATUS=READY=1 soon"));
        assert!(!says_ready("RELOADING=1\nMONOTONIC_USEC=5"));
    }

    #[test]
    fn the_configurations_are_valid() {
        for body in [ready_body("/dev/pts/77"), idle_body("/dev/pts/77")] {
            let text = crate::daemon::configuration(&body, "/tmp/x/state").replace("{port}", "0");
            let config = sensorgate::config::Config::parse(&text, Path::new("bench.toml"))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert!(!config.sources.is_empty());
        }
        assert!(ready_body("/p").contains("kind = \"simulator\""));
        assert!(
            !idle_body("/p").contains("simulator"),
            "idle means no traffic"
        );
    }

    #[test]
    fn the_section_shows_figures_and_failures() {
        let mut report = Report {
            idle_cpu_percent: 0.0167,
            idle_seconds: 60.0,
            ready_ms_max: 14.2,
            starts: 20,
            ready_ms_median: 9.04,
            idle_rss_kib: 9_216,
            idle_rss_end_kib: 9_300,
            idle_peak_rss_kib: 10_240,
            idle_cpu_seconds: 0.01,
            idle_oncpu_seconds: Some(0.0123),
            wakeups_per_second: 2.5,
            threads: 3,
            notifications: 4,
            client_messages: 1,
            ..Report::default()
        };
        let text = markdown(&report);
        assert!(text.starts_with("## Resources at idle and start-up\n\n"));
        assert!(text.ends_with("|\n"));
        assert!(text.contains("| start to READY, median of 20 starts | 9.0 ms |"));
        assert!(text.contains("| start to READY, slowest | 14.2 ms |"));
        assert!(text.contains("| 9,216 KiB |"));
        assert!(text.contains("10 ms = 0.017 % of one core"));
        assert!(text.contains("12.3 ms = 0.0205 % of one core"));
        assert!(text.contains("| wakeups (context switches of its 3 threads) | 2.5/s |"));
        report.ready_failures = vec!["no READY=1 within 10 s".into()];
        report.ready_ms_max = f64::INFINITY;
        let text = markdown(&report);
        assert!(text.contains("median of 19 starts"));
        assert!(text.contains("**1 of 20 starts sent no READY within 10 s**"));
    }
}
