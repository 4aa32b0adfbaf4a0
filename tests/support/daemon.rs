//! Test harness: the real `sensorgate` binary, started with a generated configuration and a state
//! directory in the test's directory, its listeners on ports the kernel chose (`127.0.0.1:0`, read back
//! from the daemon's ports file `{state_dir}/ports`), stopped by PID (SIGTERM for a clean stop, SIGKILL
//! on drop). The benchmark (`examples/bench/daemon.rs`) starts its daemons through this same code.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Held while a test creates file descriptors that a child must not inherit (a pty master) and while it
/// spawns a daemon, so that no fork happens between the creation and the FD_CLOEXEC flag.
pub static SPAWN_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long a daemon may take to bind its listeners and say so in its ports file.
pub const READY_WITHIN: Duration = Duration::from_secs(20);

/// The daemon binary: `$SENSORGATE_BIN` when set (the benchmark's release build), else the one cargo
/// built for this test run (`CARGO_BIN_EXE_sensorgate`), else the one beside the running test or
/// example (`target/<profile>/`).
pub fn sensorgate_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SENSORGATE_BIN") {
        return PathBuf::from(path);
    }
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

/// Runs the daemon binary with `args` (a command such as `check-config`), killed by its PID if it has
/// not exited within 10 s: returns its exit code, its standard error and how long it ran.
pub fn run_bounded(args: &[&OsStr]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(sensorgate_binary())
        .args(args)
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sensorgate {args:?} still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

/// `check-config` and `run` on the configuration at `config`, each of which must refuse it with exit
/// code 2 before anything starts: what each said on its standard error, by command.
pub fn refused_by_check_config_and_run(config: &Path) -> [(&'static str, String); 2] {
    ["check-config", "run"].map(|command| {
        let (code, stderr, _) = run_bounded(&[command.as_ref(), "-c".as_ref(), config.as_os_str()]);
        assert_eq!(code, Some(2), "{command}: {stderr}");
        (command, stderr)
    })
}

/// A free port on 127.0.0.1 (bound, then released for a server that will listen on it). Only for the
/// servers that cannot report the port the kernel gave them (mosquitto, see [`on_free_ports`]) and for a
/// port a test needs before any server exists (a client's source port); the daemon binds port 0 and
/// says which port it got (see [`Daemon::start`]).
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

/// One line of the daemon's ports file: a listener's scheme (`mqtt`, `mqtts`, `ws`, `wss`, `http`,
/// `https`) and the address it is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub scheme: String,
    pub addr: SocketAddr,
}

/// Reads a ports file's text (`{scheme} {address}` per line).
pub fn parse_ports(text: &str) -> Result<Vec<Listener>, String> {
    text.lines()
        .map(|line| {
            let (scheme, addr) = line
                .split_once(' ')
                .ok_or_else(|| format!("not `scheme address`: {line:?}"))?;
            let addr = addr
                .parse()
                .map_err(|e| format!("not an address in {line:?}: {e}"))?;
            Ok(Listener {
                scheme: scheme.to_string(),
                addr,
            })
        })
        .collect()
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    /// Its first MQTT listener (the `{port}` of the configuration); 127.0.0.1:0 until it is ready.
    pub addr: SocketAddr,
    /// Every listener, as its ports file says (empty until it is ready).
    pub listeners: Vec<Listener>,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub state_dir: PathBuf,
    /// When it was spawned.
    pub spawned_at: Instant,
}

impl Daemon {
    /// Writes `config` into `dir` and starts the daemon; returns once it is ready (its ports file is
    /// written, within [`READY_WITHIN`]). In `config`, `{state_dir}` becomes `dir/state` and `{port}`
    /// becomes 0: the kernel chooses the port and [`Daemon::addr`] is what it chose; a listener of
    /// another port written `127.0.0.1:0` is found with [`Daemon::listener`].
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Daemon::start_with_env(dir, config, &[])
    }

    /// Like [`Daemon::start_with_env`], the daemon confined to one CPU (it inherits the affinity of
    /// the thread that spawns it): its write system calls are then its own writes, without the
    /// wake-ups a thread on another CPU would write to its worker's event descriptor.
    pub fn start_on_one_cpu(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        // SAFETY: cpu_set_t is plain data (all zeros is the empty set); with pid 0 the affinity calls
        // read and change only this thread's mask, which is restored before returning.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(
            unsafe { libc::sched_getaffinity(0, size, &mut saved) },
            0,
            "this thread's CPUs"
        );
        let first = (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &saved) })
            .expect("this thread may run on some CPU");
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(first, &mut one) };
        assert_eq!(
            unsafe { libc::sched_setaffinity(0, size, &one) },
            0,
            "pinned to one CPU"
        );
        let daemon = Daemon::start_with_env(dir, config, env);
        assert_eq!(
            unsafe { libc::sched_setaffinity(0, size, &saved) },
            0,
            "CPUs restored"
        );
        daemon
    }

    /// Like [`Daemon::start`], with extra environment variables (e.g. a `NOTIFY_SOCKET`).
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::started(Daemon::launch(dir, config, 0, &os_env(env)))
    }

    /// Starts the daemon with `{port}` = `port`: a restart on the port an earlier run of the test got
    /// from the kernel, so that its clients find it again.
    pub fn start_on(dir: &Path, config: &str, port: u16) -> Daemon {
        Daemon::started(Daemon::launch(dir, config, port, &[]))
    }

    fn started(mut daemon: Daemon) -> Daemon {
        if let Err(why) = daemon.wait_ready(READY_WITHIN) {
            panic!("{why}");
        }
        daemon
    }

    /// Writes the configuration (placeholders as in [`Daemon::start`], `{port}` = `port`) and spawns
    /// the daemon with `env` added to its environment (`RUST_LOG` is `debug` unless `env` says
    /// otherwise), its log in `dir`, without waiting for it: see [`Daemon::poll_ready`].
    pub fn launch(dir: &Path, config: &str, port: u16, env: &[(&str, &OsStr)]) -> Daemon {
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).expect("state dir");
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{state_dir}", &state_dir.display().to_string());
        let state_dir = configured_state_dir(&text).unwrap_or(state_dir);
        // A ports file of an earlier run in this directory must not pass for this one's.
        let _ = std::fs::remove_file(state_dir.join(sensorgate::app::ports::PORTS_FILE));
        let config_path = dir.join("sensorgate.toml");
        std::fs::write(&config_path, text).expect("write config");
        let log_path = dir.join(format!(
            "daemon-{}-{}.log",
            std::process::id(),
            NEXT_LOG.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let log = std::fs::File::create(&log_path).expect("log file");
        let binary = sensorgate_binary();
        let spawn_guard = SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let spawned_at = Instant::now();
        let child = Command::new(&binary)
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
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()));
        drop(spawn_guard);
        Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            config_path,
            log_path,
            state_dir,
            spawned_at,
        }
    }

    /// One look at whether the daemon is ready: `Some(Ok)` once its ports file is there, or the log
    /// line that lists the same when the state directory cannot take the file (a full disk), and then
    /// [`Daemon::addr`] and [`Daemon::listeners`] are set; `Some(Err)` when it exited, `None` while it
    /// is still starting.
    pub fn poll_ready(&mut self) -> Option<Result<(), String>> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(Err(format!(
                "sensorgate exited early with {status}:\n{}",
                self.log()
            )));
        }
        let text = std::fs::read_to_string(self.state_dir.join(sensorgate::app::ports::PORTS_FILE))
            .ok()
            .or_else(|| listeners_logged(&self.log()))?;
        let listeners = match parse_ports(&text) {
            Ok(listeners) => listeners,
            Err(why) => return Some(Err(format!("the daemon's ports file: {why}"))),
        };
        let Some(first) = listeners.iter().find(|l| l.scheme.starts_with("mqtt")) else {
            return Some(Err(format!("no MQTT listener in the ports file:\n{text}")));
        };
        self.addr = first.addr;
        self.listeners = listeners;
        Some(Ok(()))
    }

    /// Waits until the daemon is ready ([`Daemon::poll_ready`]), or says why not (it exited, or time
    /// ran out).
    pub fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(ready) = self.poll_ready() {
                return ready;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "sensorgate wrote no ports file within {within:?}:\n{}",
            self.log()
        ))
    }

    /// The address of the `index`-th listener of `scheme` (`mqtt`, `mqtts`, `ws`, `wss`, `http`,
    /// `https`), in the configuration's order.
    pub fn listener(&self, scheme: &str, index: usize) -> SocketAddr {
        self.listeners
            .iter()
            .filter(|l| l.scheme == scheme)
            .nth(index)
            .map(|l| l.addr)
            .unwrap_or_else(|| panic!("no {scheme} listener #{index} in {:?}", self.listeners))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// How many write-family system calls the daemon made so far (`syscw` of `/proc/PID/io`: every
    /// `write`/`writev`, to sockets, files and the runtime's own wake-up descriptor alike).
    pub fn write_system_calls(&self) -> u64 {
        let pid = self.child.id();
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
        io.lines()
            .find_map(|line| line.strip_prefix("syscw:"))
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no syscw in /proc/{pid}/io"))
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

/// Numbers the log files of one test process (a restart in the same directory gets a new file).
static NEXT_LOG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn os_env<'a>(env: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, &'a OsStr)> {
    env.iter()
        .map(|(key, value)| (*key, OsStr::new(*value)))
        .collect()
}

/// What the daemon's log line `bound listeners: mqtt 127.0.0.1:41234, ws ...` lists, as the ports
/// file would say it.
fn listeners_logged(log: &str) -> Option<String> {
    let (_, list) = log
        .lines()
        .find_map(|line| line.split_once(sensorgate::app::ports::LOG_MARKER))?;
    Some(list.replace(", ", "\n"))
}

/// `[gateway] state_dir` of a configuration's text, when it sets one.
fn configured_state_dir(text: &str) -> Option<PathBuf> {
    let table: toml::Table = text.parse().ok()?;
    let dir = table.get("gateway")?.get("state_dir")?.as_str()?;
    Some(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ports_file_reads_as_listeners_in_order() {
        let listeners = parse_ports("mqtt 127.0.0.1:41000\nws 127.0.0.1:41001\n").unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[1].scheme, "ws");
        assert_eq!(listeners[1].addr.port(), 41001);
        assert!(parse_ports("mqtt\n").is_err());
        assert!(parse_ports("mqtt nowhere\n").is_err());
    }

    #[test]
    fn the_logged_list_reads_as_the_ports_file() {
        let log = "INFO sensorgate::app: starting\n\
                   INFO sensorgate::app::ports: bound listeners: mqtt 127.0.0.1:41000, http 127.0.0.1:41001\n";
        let text = listeners_logged(log).unwrap();
        let listeners = parse_ports(&text).unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[1].scheme, "http");
        assert_eq!(listeners_logged("INFO nothing yet\n"), None);
    }

    #[test]
    fn the_state_dir_is_read_from_the_configuration() {
        let text =
            "[gateway]\nstate_dir = \"/tmp/x\"\n[[broker.listener]]\nbind = \"127.0.0.1:0\"\n";
        assert_eq!(configured_state_dir(text), Some(PathBuf::from("/tmp/x")));
        assert_eq!(configured_state_dir("[log]\nlevel = \"warn\"\n"), None);
    }
}
