//! The daemon under test: the real `sensorgate` binary of the same build as this benchmark (or
//! `$SENSORGATE_BIN`), started on a generated configuration with its own state directory and a free
//! 127.0.0.1 broker port, and killed by PID when dropped.

use std::ffi::OsString;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mosquitto::free_port;

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    /// Port of its embedded broker's plain listener on 127.0.0.1.
    pub port: u16,
    /// Holds the configuration file and the state directory.
    _dir: tempfile::TempDir,
    /// When it was spawned.
    pub spawned_at: Instant,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon binary: `$SENSORGATE_BIN`, or `sensorgate` of the profile this benchmark was built with
/// (`target/<profile>/examples/bench` -> `target/<profile>/sensorgate`).
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SENSORGATE_BIN") {
        return path.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("sensorgate")))
        .unwrap_or_else(|| "target/release/sensorgate".into())
}

impl Daemon {
    /// Writes a configuration of `[gateway] state_dir`, `[log] level = "warn"`, one broker listener and
    /// then `body` (sources, `[publish]`, `[broker]` limits...), and spawns the daemon on it with `env`
    /// added to the environment. Does not wait: see [`Daemon::wait_listening`].
    pub fn spawn(body: &str, env: &[(&str, OsString)]) -> Daemon {
        Daemon::spawn_in(body, env, None)
    }

    /// [`Daemon::spawn`] with the state directory at `state_dir` (the flash section puts it on a file
    /// system of its own).
    pub fn spawn_with_state(body: &str, env: &[(&str, OsString)], state_dir: &Path) -> Daemon {
        Daemon::spawn_in(body, env, Some(state_dir))
    }

    fn spawn_in(body: &str, env: &[(&str, OsString)], state_dir: Option<&Path>) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let state = state_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().join("state"));
        let config = format!(
            "[gateway]\nstate_dir = \"{}\"\n[log]\nlevel = \"warn\"\n[[broker.listener]]\nbind = \"127.0.0.1:{port}\"\n{body}",
            state.display()
        );
        let config_path = dir.path().join("bench.toml");
        std::fs::write(&config_path, config).expect("write the bench configuration");
        let binary = binary();
        let mut command = Command::new(&binary);
        command
            .args(["run", "-c"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let spawned_at = Instant::now();
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it first: bench/run.sh does)",
                binary.display()
            )
        });
        Daemon {
            child,
            port,
            _dir: dir,
            spawned_at,
        }
    }

    /// [`Daemon::spawn`], then waits (up to 20 s) until the broker accepts connections and gives the
    /// sources half a second to open their ports.
    pub async fn start(body: &str) -> Daemon {
        let daemon = Daemon::spawn(body, &[]);
        daemon.wait_listening().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        daemon
    }

    /// Waits (up to 20 s) until the embedded broker accepts a TCP connection.
    pub async fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the daemon did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A clean stop: SIGTERM, then up to 20 s for the daemon to write what it holds and exit (killed
    /// after that). Whether it exited by itself.
    pub async fn stop(mut self) -> bool {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
