//! Test harness: the real `sensorgate` binary, started with a generated configuration on a free 127.0.0.1
//! port and a temporary state directory, stopped by PID (SIGTERM for a clean stop, SIGKILL on drop).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Held while a test creates file descriptors that a child must not inherit (a pty master) and while it
/// spawns a daemon, so that no fork happens between the creation and the FD_CLOEXEC flag.
pub static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The daemon binary cargo built for this test run: named by cargo to integration tests
/// (`CARGO_BIN_EXE_sensorgate`), else found beside the running test or example (`target/<profile>/`).
pub fn sensorgate_binary() -> PathBuf {
    if let Some(path) = option_env!("CARGO_BIN_EXE_sensorgate") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join("sensorgate"))
        .find(|candidate| candidate.is_file())
        .expect("target/<profile>/sensorgate: build it first (cargo test builds it)")
}

/// The ports [`free_port`] hands out: below Linux's ephemeral range (32768-60999), so that no outgoing
/// connection of a parallel test (whose local port the kernel takes from that range) can hold one
/// between the check and the listener's bind.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next candidate in [`TEST_PORTS`]: starts at an offset derived from the process id and moves on
/// with every call, so that the tests of one binary never get the same port twice.
static NEXT_TEST_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A free port on 127.0.0.1 (bound, then released for the daemon or broker that will listen on it).
pub fn free_port() -> u16 {
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let offset = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let step = NEXT_TEST_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = TEST_PORTS.start + ((offset + step) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {TEST_PORTS:?} on 127.0.0.1");
}

/// Runs `start` (which takes fresh ports with [`free_port`] and says why its server did not come up),
/// again when the why contains `taken` (another process bound a port between the check and the
/// server's bind): 3 tries. Any other failure panics with its why.
pub fn on_free_ports<T>(
    what: &str,
    taken: &str,
    mut start: impl FnMut() -> Result<T, String>,
) -> T {
    let mut failures = Vec::new();
    for _ in 0..3 {
        match start() {
            Ok(server) => return server,
            Err(why) if why.contains(taken) => failures.push(why),
            Err(why) => panic!("{why}"),
        }
    }
    panic!(
        "{what} found its ports taken 3 times:\n{}",
        failures.join("\n")
    );
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Writes `config` (which must contain `{port}` and `{state_dir}` placeholders) into `dir` and starts
    /// the daemon; returns once its broker accepts TCP connections (within 20 s). Should another
    /// process take the port before the daemon binds it, it starts again on another (3 tries).
    pub fn start(dir: &Path, config: &str) -> Daemon {
        on_free_ports("sensorgate", "os error 98", || {
            let mut daemon = Daemon::spawn(dir, config, free_port(), &[]);
            daemon.listening(Duration::from_secs(20)).map(|()| daemon)
        })
    }

    /// Starts the daemon on `port` (which the test chose, e.g. to restart on the same one).
    pub fn start_on(dir: &Path, config: &str, port: u16) -> Daemon {
        Daemon::start_with_env(dir, config, port, &[])
    }

    /// Like [`Daemon::start_on`], with extra environment variables (e.g. a `NOTIFY_SOCKET`).
    pub fn start_with_env(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::spawn(dir, config, port, env);
        if let Err(why) = daemon.listening(Duration::from_secs(20)) {
            panic!("{why}");
        }
        daemon
    }

    /// Writes the configuration and spawns the daemon, without waiting for it.
    fn spawn(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Daemon {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{state_dir}", &state_dir.display().to_string());
        let config_path = dir.join("sensorgate.toml");
        std::fs::write(&config_path, text).expect("write config");
        let log_path = dir.join(format!("daemon-{port}-{}.log", std::process::id()));
        let log = std::fs::File::create(&log_path).expect("log file");
        let spawn_guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let child = Command::new(sensorgate_binary())
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "debug")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sensorgate");
        drop(spawn_guard);
        Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            config_path,
            log_path,
        }
    }

    /// Waits until the broker accepts TCP connections, or says why not (the daemon exited, or time ran out).
    fn listening(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "sensorgate exited early with {status}:\n{}",
                    self.log()
                ));
            }
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "sensorgate did not listen on {} within {within:?}:\n{}",
            self.addr,
            self.log()
        ))
    }

    /// A kB figure of the daemon's `/proc/PID/status` (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, key: &str) -> u64 {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle` `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log().matches(needle).count() < count {
            assert!(
                Instant::now() < deadline,
                "no {count}x {needle:?} in the log within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "kill -{signal} {}",
            self.child.id()
        );
    }

    /// SIGTERM, then waits (bounded) for the exit; returns the status and how long the stop took.
    pub fn stop(mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        self.signal("TERM");
        let deadline = started + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, started.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "sensorgate did not stop within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: a power cut, as far as the daemon can tell.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
