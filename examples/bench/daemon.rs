//! The daemon under test: the testkit's harness (`sensorgate_testkit::daemon`, the one the tests use)
//! with the benchmark's configuration preamble, the binary of the same build as this benchmark (or
//! `$SENSORGATE_BIN`), its own state directory and a broker port the kernel chose; killed by PID when
//! dropped.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use sensorgate_testkit::daemon::{self as harness, READY_WITHIN};

/// A running daemon.
pub struct Daemon {
    process: harness::Daemon,
    /// Port of its embedded broker's plain listener on 127.0.0.1 (0 until [`Daemon::wait_listening`]).
    pub port: u16,
    /// Holds the configuration file, the log and the state directory.
    _dir: tempfile::TempDir,
    /// When it was spawned.
    pub spawned_at: Instant,
}

/// The daemon binary: `$SENSORGATE_BIN`, or `sensorgate` of the profile this benchmark was built with
/// (`target/<profile>/examples/bench` -> `target/<profile>/sensorgate`).
pub fn binary() -> std::path::PathBuf {
    harness::sensorgate_binary()
}

/// The configuration the benchmark runs: `[gateway] state_dir`, `[log] level = "warn"`, one broker
/// listener on the port the kernel chooses, then `body` (sources, `[publish]`, `[broker]` limits...).
pub fn configuration(body: &str, state_dir: &str) -> String {
    format!(
        "[gateway]\nstate_dir = \"{state_dir}\"\n[log]\nlevel = \"warn\"\n[[broker.listener]]\nbind = \"127.0.0.1:{{port}}\"\n{body}"
    )
}

impl Daemon {
    /// Spawns the daemon on [`configuration`] of `body` with `env` added to the environment. Does not
    /// wait: see [`Daemon::wait_listening`].
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
        let state = state_dir
            .map(|dir| dir.display().to_string())
            .unwrap_or_else(|| "{state_dir}".to_string());
        // The daemon logs at the configured level, not the tests' debug.
        let mut env: Vec<(&str, &std::ffi::OsStr)> =
            env.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        env.push(("RUST_LOG", std::ffi::OsStr::new("warn")));
        let process = harness::Daemon::launch(dir.path(), &configuration(body, &state), 0, &env);
        let spawned_at = process.spawned_at;
        Daemon {
            process,
            port: 0,
            _dir: dir,
            spawned_at,
        }
    }

    /// [`Daemon::spawn`], then waits until it listens and gives the sources half a second to open their
    /// ports.
    pub async fn start(body: &str) -> Daemon {
        let mut daemon = Daemon::spawn(body, &[]);
        daemon.wait_listening().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        daemon
    }

    /// Waits (up to the harness's 20 s) until the daemon's ports file says where its broker listens.
    pub async fn wait_listening(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.process.poll_ready() {
                Some(Ok(())) => break,
                Some(Err(why)) => panic!("{why}"),
                None => assert!(
                    Instant::now() < deadline,
                    "the daemon did not listen within {READY_WITHIN:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.port = self.process.addr.port();
    }

    /// Where its `index`-th listener of `scheme` (`mqtt`, `mqtts`, `ws`...) is bound, from its ports
    /// file (after [`Daemon::wait_listening`]).
    pub fn listener(&self, scheme: &str, index: usize) -> std::net::SocketAddr {
        self.process.listener(scheme, index)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.child.try_wait().ok().flatten()
    }

    /// A clean stop: SIGTERM, then up to 20 s for the daemon to write what it holds and exit (killed
    /// after that). Whether it exited by itself.
    pub async fn stop(mut self) -> bool {
        let pid = rustix::process::Pid::from_raw(self.process.pid() as i32);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
