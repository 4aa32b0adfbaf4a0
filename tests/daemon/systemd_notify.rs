//! The sd_notify conversation as systemd sees it: a fake `NOTIFY_SOCKET` (a Unix datagram socket bound in a
//! temporary directory or in the abstract namespace) receives what the notifier and the watchdog task send.
//! Watchdog timing runs on tokio's paused clock, so intervals of seconds take no wall time; every wait is
//! bounded.

use std::os::linux::net::SocketAddrExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sensorgate::systemd::{run_watchdog, Health, Notifier};
use tokio::net::UnixDatagram;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

/// The service manager's end: a bound datagram socket and the notifier pointed at it.
struct FakeSystemd {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl FakeSystemd {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self {
            socket,
            _dir: dir,
            path,
        }
    }

    fn notifier(&self) -> Notifier {
        let notifier = Notifier::for_socket(&self.path);
        assert!(notifier.is_enabled());
        notifier
    }

    /// The next datagram, or `None` if nothing arrives within `within` (on the paused clock in timing tests).
    async fn recv_within(&self, within: Duration) -> Option<String> {
        let mut buf = vec![0u8; 4096];
        match timeout(within, self.socket.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(String::from_utf8(buf[..n].to_vec()).unwrap()),
            Ok(Err(error)) => panic!("recv failed: {error}"),
            Err(_) => None,
        }
    }

    async fn recv(&self) -> String {
        self.recv_within(Duration::from_secs(5))
            .await
            .expect("no notification within 5 s")
    }

    /// Receives until a message satisfying `wanted` arrives (at most `limit` messages).
    async fn recv_until(&self, limit: usize, wanted: impl Fn(&str) -> bool) -> String {
        for _ in 0..limit {
            let message = self.recv().await;
            if wanted(&message) {
                return message;
            }
        }
        panic!("no wanted message among {limit}");
    }
}

fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[tokio::test]
async fn lifecycle_messages_arrive_in_order() {
    let systemd = FakeSystemd::bind();
    let notifier = systemd.notifier();

    notifier.ready();
    assert_eq!(systemd.recv().await, "READY=1");

    notifier.status("3 devices online\nuplink connected");
    assert_eq!(
        systemd.recv().await,
        "STATUS=3 devices online uplink connected"
    );

    let before = monotonic_usec();
    notifier.reloading();
    let after = monotonic_usec();
    let reloading = systemd.recv().await;
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("unexpected {reloading:?}"));
    let usec: u64 = usec.parse().unwrap();
    assert!(
        (before..=after).contains(&usec),
        "{usec} not in {before}..={after}"
    );

    notifier.ready();
    assert_eq!(systemd.recv().await, "READY=1");
    notifier.stopping();
    assert_eq!(systemd.recv().await, "STOPPING=1");
    notifier.watchdog();
    assert_eq!(systemd.recv().await, "WATCHDOG=1");
}

#[tokio::test]
async fn abstract_socket_names_are_reached() {
    let name = format!(
        "sensorgate-test-{}-{}",
        std::process::id(),
        monotonic_usec()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    std_socket.set_nonblocking(true).unwrap();
    let socket = UnixDatagram::from_std(std_socket).unwrap();

    let notifier = Notifier::for_socket(format!("@{name}"));
    assert!(notifier.is_enabled());
    notifier.ready();
    let mut buf = [0u8; 64];
    let n = timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .expect("no datagram within 5 s")
        .unwrap();
    assert_eq!(&buf[..n], b"READY=1");
}

#[tokio::test]
async fn a_missing_socket_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let notifier = Notifier::for_socket(dir.path().join("nobody-listens.sock"));
    // Sends fail (no such socket) and are only logged.
    notifier.ready();
    notifier.watchdog();
    notifier.stopping();
}

/// The watchdog task on the paused clock, with a status line counting "devices".
struct Watchdog {
    systemd: FakeSystemd,
    health: Health,
    devices: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Watchdog {
    /// systemd's `WatchdogSec=2s`: pings are due every second.
    fn start(health: Health) -> Self {
        let systemd = FakeSystemd::bind();
        let devices = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let count = Arc::clone(&devices);
        let task = tokio::spawn(run_watchdog(
            systemd.notifier(),
            Duration::from_secs(2),
            health.clone(),
            move || format!("{} devices online", count.load(Ordering::Relaxed)),
            shutdown.clone(),
        ));
        Self {
            systemd,
            health,
            devices,
            shutdown,
            task,
        }
    }

    /// Every message received during the next `span` of (paused) time.
    async fn messages_during(&self, span: Duration) -> Vec<String> {
        let end = Instant::now() + span;
        let mut messages = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            match self.systemd.recv_within(left).await {
                Some(message) => messages.push(message),
                None => break,
            }
        }
        messages
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(Duration::from_secs(5), self.task)
            .await
            .expect("watchdog task did not end on shutdown")
            .unwrap();
    }
}

fn pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| *m == "WATCHDOG=1").count()
}

#[tokio::test(start_paused = true)]
async fn pings_at_half_the_interval_while_healthy_and_sends_status_on_change() {
    let health = Health::new();
    let stage = health.register("pipeline", Duration::from_secs(5));
    let watchdog = Watchdog::start(health);

    assert_eq!(watchdog.systemd.recv().await, "WATCHDOG=1");
    assert_eq!(watchdog.systemd.recv().await, "STATUS=0 devices online");

    // The stage keeps beating: ten seconds bring about ten more pings and no repeated status.
    let mut messages = Vec::new();
    for _ in 0..10 {
        stage.beat();
        messages.extend(watchdog.messages_during(Duration::from_secs(1)).await);
    }
    let count = pings(&messages);
    assert!(
        (9..=11).contains(&count),
        "{count} pings in 10 s: {messages:?}"
    );
    assert!(
        messages.iter().all(|m| m == "WATCHDOG=1"),
        "unexpected {messages:?}"
    );

    watchdog.devices.store(3, Ordering::Relaxed);
    let status = watchdog
        .systemd
        .recv_until(4, |m| m.starts_with("STATUS="))
        .await;
    assert_eq!(status, "STATUS=3 devices online");

    stage.retire();
    watchdog.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_stage_stops_the_pings_until_it_beats_again() {
    let health = Health::new();
    let decoder = health.register("decoder", Duration::from_secs(3));
    let watchdog = Watchdog::start(health);

    // Silent for more than 3 s: the status names the stage and the pings stop.
    let status = watchdog
        .systemd
        .recv_until(20, |m| m.starts_with("STATUS=wedged"))
        .await;
    assert_eq!(status, "STATUS=wedged: decoder; 0 devices online");
    let quiet = watchdog.messages_during(Duration::from_secs(30)).await;
    assert_eq!(pings(&quiet), 0, "pinged while wedged: {quiet:?}");
    assert_eq!(watchdog.health.wedged(Instant::now()), vec!["decoder"]);

    // It recovers: pings resume and the status is plain again.
    decoder.beat();
    let resumed = watchdog.messages_during(Duration::from_millis(1500)).await;
    assert!(pings(&resumed) >= 1, "no ping after recovery: {resumed:?}");
    assert!(resumed.contains(&"STATUS=0 devices online".to_owned()));

    decoder.retire();
    watchdog.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_stage_that_died_stops_the_pings_for_good() {
    let health = Health::new();
    let source = health.register("source uart0", Duration::from_secs(60));
    let watchdog = Watchdog::start(health);
    assert_eq!(watchdog.systemd.recv().await, "WATCHDOG=1");

    // The source task ends without retiring its heartbeat (it panicked or returned early).
    drop(source);
    let status = watchdog
        .systemd
        .recv_until(4, |m| m.starts_with("STATUS=wedged"))
        .await;
    assert_eq!(status, "STATUS=wedged: source uart0; 0 devices online");
    let quiet = watchdog.messages_during(Duration::from_secs(120)).await;
    assert_eq!(pings(&quiet), 0, "pinged after a stage died: {quiet:?}");
    watchdog.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retired_stages_do_not_count_and_shutdown_ends_the_task() {
    let health = Health::new();
    let source = health.register("source demo", Duration::from_secs(1));
    source.retire();
    let watchdog = Watchdog::start(health);
    let messages = watchdog.messages_during(Duration::from_secs(10)).await;
    assert!(pings(&messages) >= 9, "{messages:?}");
    assert!(messages.iter().all(|m| !m.contains("wedged")));
    watchdog.stop().await;
}
