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

/// A free port on 127.0.0.1 (bound, then released for the daemon).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
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
    /// the daemon; returns once its broker accepts TCP connections (within 20 s).
    pub fn start(dir: &Path, config: &str) -> Daemon {
        let port = free_port();
        Daemon::start_on(dir, config, port)
    }

    pub fn start_on(dir: &Path, config: &str, port: u16) -> Daemon {
        Daemon::start_with_env(dir, config, port, &[])
    }

    /// Like [`Daemon::start_on`], with extra environment variables (e.g. a `NOTIFY_SOCKET`).
    pub fn start_with_env(dir: &Path, config: &str, port: u16, env: &[(&str, &str)]) -> Daemon {
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
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut daemon = Daemon {
            child,
            addr,
            config_path,
            log_path,
        };
        daemon.wait_listening(Duration::from_secs(20));
        daemon
    }

    fn wait_listening(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sensorgate exited early with {status}:\n{}", self.log());
            }
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "sensorgate did not listen on {} within {within:?}:\n{}",
            self.addr,
            self.log()
        );
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
