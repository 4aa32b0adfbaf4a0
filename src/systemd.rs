//! The conversation with systemd: readiness, reload and stop notifications (`sd_notify` spoken directly over
//! the `$NOTIFY_SOCKET` datagram socket, path or abstract `@` name), the watchdog, and the health registry
//! that decides whether the watchdog is fed. Every stage that must stay alive holds a [`Heartbeat`]; the
//! watchdog task pings systemd only while no heartbeat is overdue or gone, so a wedged daemon is restarted.
//! This module never reads the process environment except in the explicit `*_from_env` constructors, never
//! fails the daemon over a notification that could not be sent, and never blocks the runtime (the socket is
//! non-blocking; a full queue drops the message).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Sends state changes to the service manager. Cheap to clone; a no-op when the daemon is not run by systemd
/// (no `NOTIFY_SOCKET`) or the socket address is unusable.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Arc<NotifyTarget>>,
}

#[derive(Debug)]
struct NotifyTarget {
    socket: UnixDatagram,
    addr: SocketAddr,
    display: String,
}

impl Notifier {
    /// A notifier for the socket named by the `NOTIFY_SOCKET` environment variable; a no-op when it is unset.
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) => Self::for_socket(path),
            None => Self::disabled(),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Self { target: None }
    }

    /// A notifier for `path`: an absolute socket path, or `@name` for a socket in the abstract namespace (as
    /// systemd writes it into `NOTIFY_SOCKET`). Anything else gives a no-op notifier (logged at debug).
    pub fn for_socket(path: impl AsRef<OsStr>) -> Self {
        let path = path.as_ref();
        match NotifyTarget::open(path) {
            Ok(target) => Self {
                target: Some(Arc::new(target)),
            },
            Err(error) => {
                log::debug!(
                    "sd_notify disabled: socket {}: {error}",
                    path.to_string_lossy()
                );
                Self::disabled()
            }
        }
    }

    /// Whether messages are actually sent somewhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `READY=1`: startup finished (the broker listens, the sources run), or a reload finished.
    pub fn ready(&self) {
        self.send("READY=1");
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC` timestamp systemd 253+ requires for `Type=notify-reload`.
    /// Send [`Notifier::ready`] once the reload is over, whether it was applied or refused.
    pub fn reloading(&self) {
        match monotonic_usec() {
            Some(usec) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
            None => self.send("RELOADING=1"),
        }
    }

    /// `STOPPING=1`: the daemon has begun a clean shutdown. Sending it more than once is harmless.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// `STATUS=line`, shown by `systemctl status`. Line breaks are replaced by spaces.
    pub fn status(&self, line: &str) {
        let line: String = line
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send(&format!("STATUS={line}"));
    }

    /// `WATCHDOG=1`: feeds the service watchdog.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        if let Err(error) = target.socket.send_to_addr(message.as_bytes(), &target.addr) {
            let first = message.lines().next().unwrap_or_default();
            log::debug!("sd_notify {first} to {} failed: {error}", target.display);
        }
    }
}

impl NotifyTarget {
    fn open(path: &OsStr) -> io::Result<Self> {
        let bytes = path.as_bytes();
        let addr = match bytes.first() {
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
            Some(b'/') => SocketAddr::from_pathname(path)?,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an @abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            addr,
            display: path.to_string_lossy().into_owned(),
        })
    }
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> Option<u64> {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u64::try_from(now.tv_nsec).ok()?;
    secs.checked_mul(1_000_000)?.checked_add(nanos / 1_000)
}

/// The watchdog interval systemd asks for, from the values of `WATCHDOG_USEC` and `WATCHDOG_PID`: `None` when
/// the watchdog is off, the value is malformed or zero, or the watchdog is meant for another process.
pub fn watchdog_interval(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    let usec: u64 = watchdog_usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = watchdog_pid {
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// [`watchdog_interval`] for this process, from its environment.
pub fn watchdog_interval_from_env() -> Option<Duration> {
    let usec = std::env::var_os("WATCHDOG_USEC").map(lossy);
    let pid = std::env::var_os("WATCHDOG_PID").map(lossy);
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn lossy(value: OsString) -> String {
    value.to_string_lossy().into_owned()
}

const ALIVE: u8 = 0;
const RETIRED: u8 = 1;
const ENDED: u8 = 2;

/// One stage's liveness as the registry and the stage's [`Heartbeat`] share it.
#[derive(Debug)]
struct BeatCell {
    stage: String,
    max_silence: Duration,
    /// Nanoseconds since the registry's epoch at the last beat.
    last_beat: AtomicU64,
    state: AtomicU8,
}

#[derive(Debug)]
struct HealthInner {
    epoch: Instant,
    stages: Mutex<Vec<Arc<BeatCell>>>,
}

/// The registry of stages that must stay alive. Cloning gives another handle to the same registry.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// An empty registry: healthy until a stage registers and then falls silent or ends.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(HealthInner {
                epoch: Instant::now(),
                stages: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Registers `stage`, which must beat at least every `max_silence`. Registering counts as a first beat.
    pub fn register(&self, stage: &str, max_silence: Duration) -> Heartbeat {
        let cell = Arc::new(BeatCell {
            stage: stage.to_owned(),
            max_silence,
            last_beat: AtomicU64::new(self.since_epoch(Instant::now())),
            state: AtomicU8::new(ALIVE),
        });
        self.lock().push(Arc::clone(&cell));
        Heartbeat {
            cell,
            epoch: self.inner.epoch,
        }
    }

    /// The stages that are wedged at `now`: silent for longer than their `max_silence`, or ended without
    /// being retired. Empty when all is well.
    pub fn wedged(&self, now: Instant) -> Vec<String> {
        let now = self.since_epoch(now);
        let mut stages = self.lock();
        stages.retain(|cell| cell.state.load(Ordering::Acquire) != RETIRED);
        stages
            .iter()
            .filter(|cell| match cell.state.load(Ordering::Acquire) {
                ENDED => true,
                _ => {
                    let silent = now.saturating_sub(cell.last_beat.load(Ordering::Relaxed));
                    u128::from(silent) > cell.max_silence.as_nanos()
                }
            })
            .map(|cell| cell.stage.clone())
            .collect()
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        nanos_since(self.inner.epoch, at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<BeatCell>>> {
        // The vector stays consistent even if a holder panicked: every mutation is a single push or retain.
        self.inner
            .stages
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A stage's proof of life. [`Heartbeat::beat`] is cheap (a clock read and an atomic store). Dropping it
/// means the stage ended, which makes the daemon unhealthy; a stage that ends on purpose calls
/// [`Heartbeat::retire`] instead.
#[derive(Debug)]
pub struct Heartbeat {
    cell: Arc<BeatCell>,
    epoch: Instant,
}

impl Heartbeat {
    /// Records that the stage is making progress.
    pub fn beat(&self) {
        self.cell
            .last_beat
            .store(nanos_since(self.epoch, Instant::now()), Ordering::Relaxed);
    }

    /// Ends the stage on purpose (a clean shutdown, a source removed by a reload): it is no longer watched.
    pub fn retire(self) {
        self.cell.state.store(RETIRED, Ordering::Release);
    }

    /// The stage name this heartbeat was registered under.
    pub fn stage(&self) -> &str {
        &self.cell.stage
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        // A retired cell stays retired; anything else ending here is a stage that died.
        let _ = self
            .cell
            .state
            .compare_exchange(ALIVE, ENDED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Pings `WATCHDOG=1` every half `interval` while no stage is wedged. When one is, logs (once per episode)
/// which stages are wedged and stops pinging, so systemd restarts the service; if every stage recovers,
/// pinging resumes. Sends `STATUS=` with the line from `status` whenever it changes. Returns when `shutdown`
/// is cancelled. `STOPPING=1` is the caller's to send (see [`Notifier::stopping`]).
///
/// When systemd set no watchdog ([`watchdog_interval`] is `None`) this can still run for the status line:
/// systemd ignores `WATCHDOG=1` from a unit without `WatchdogSec=`.
pub async fn run_watchdog(
    notifier: Notifier,
    interval: Duration,
    health: Health,
    status: impl Fn() -> String + Send + 'static,
    shutdown: CancellationToken,
) {
    let period = (interval / 2).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut reported_wedged: Vec<String> = Vec::new();
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let wedged = health.wedged(Instant::now());
        let mut line = status();
        if wedged.is_empty() {
            if !reported_wedged.is_empty() {
                log::warn!("all stages are alive again; feeding the systemd watchdog");
                reported_wedged.clear();
            }
            notifier.watchdog();
        } else {
            if wedged != reported_wedged {
                log::error!(
                    "stage(s) wedged: {}; no longer feeding the systemd watchdog, expect a restart",
                    wedged.join(", ")
                );
                reported_wedged.clone_from(&wedged);
            }
            line = format!("wedged: {}; {line}", wedged.join(", "));
        }
        if line != last_status {
            notifier.status(&line);
            last_status = line;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_reads_usec_for_this_process() {
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("42"), 42),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval(Some("1500"), None, 42),
            Some(Duration::from_micros(1500))
        );
    }

    #[test]
    fn watchdog_interval_is_none_when_off_malformed_or_for_another_process() {
        assert_eq!(watchdog_interval(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval(Some("-5"), None, 42), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("43"), 42), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("pid"), 42), None);
    }

    #[test]
    fn relative_or_empty_socket_paths_give_a_noop_notifier() {
        assert!(!Notifier::for_socket("").is_enabled());
        assert!(!Notifier::for_socket("run/notify").is_enabled());
        assert!(!Notifier::disabled().is_enabled());
        // Sending through a disabled notifier is a no-op, not an error.
        Notifier::disabled().ready();
    }

    #[test]
    fn monotonic_clock_is_readable_and_advances() {
        let a = monotonic_usec().unwrap();
        let b = monotonic_usec().unwrap();
        assert!(a > 0 && b >= a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stage_is_wedged_until_it_beats_again() {
        let health = Health::new();
        let beat = health.register("decoder", Duration::from_secs(10));
        assert!(health.wedged(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(health.wedged(Instant::now()), vec!["decoder".to_owned()]);
        beat.beat();
        assert!(health.wedged(Instant::now()).is_empty());
        assert_eq!(beat.stage(), "decoder");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_heartbeat_is_wedged_and_a_retired_one_is_forgotten() {
        let health = Health::new();
        let died = health.register("source uart0", Duration::from_secs(60));
        let done = health.register("source demo", Duration::from_secs(60));
        drop(died);
        done.retire();
        assert_eq!(
            health.wedged(Instant::now()),
            vec!["source uart0".to_owned()]
        );
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(
            health.wedged(Instant::now()),
            vec!["source uart0".to_owned()]
        );
    }
}
