//! The daemon these tests run: a simulator (three LPP nodes), a pty serial port whose LPP frames carry
//! a CRC, and `[http]` on a free port, whose address is read from the log line the daemon writes.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use sensorgate_testkit::config::{demo, ConfigBuilder};
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::pty::FakeDongle;

/// The configuration these tests run: the simulator, the serial port in `dir` (with `serial_keys`
/// more) and its kitchen node at address 7; `[http]` and users still to add.
pub fn config_with_serial(dir: &Path, serial_keys: &str) -> ConfigBuilder {
    ConfigBuilder::new("test-gw")
        .publish(r#"stats_interval = "1s""#)
        .source(
            "sim",
            "simulator",
            "devices = 3\ninterval = \"1s\"\npayload = \"lpp\"",
        )
        .serial(
            "uart0",
            &serial_link(dir),
            &format!(
                "baud = 115200\nframing = \"cobs\"\npayload = \"lpp\"\nheader = \"node16\"\n\
                 crc = \"crc16-ccitt-false\"\n{serial_keys}"
            ),
        )
        .device("kitchen", "uart0", "7")
}

/// [`config_with_serial`] with the serial port as it is.
pub fn config(dir: &Path) -> ConfigBuilder {
    config_with_serial(dir, "")
}

/// Users `root` (the page's admin) and `alice` (its reader), both with password `hash`.
pub fn admin_and_reader(config: ConfigBuilder, hash: &str) -> ConfigBuilder {
    config
        .user("root", hash, "http = \"admin\"")
        .user("alice", hash, "http = \"read\"")
}

/// The serial port's pseudo-terminal in `dir`.
fn serial_link(dir: &Path) -> std::path::PathBuf {
    dir.join("usb-serial-port0")
}

pub struct Running {
    pub daemon: Daemon,
    pub dongle: FakeDongle,
    pub page: SocketAddr,
}

/// Starts the daemon with [`config`] and the page open for reading from this machine.
pub fn start_anonymous_read(dir: &Path) -> Running {
    start(dir, config(dir).http(r#"anonymous = "read""#))
}

/// Starts the daemon with `config` (a [`config`] or [`config_with_serial`] of `dir` and more), waits
/// for the serial port to open and the page to listen.
pub fn start(dir: &Path, config: ConfigBuilder) -> Running {
    let dongle = FakeDongle::plug(&serial_link(dir));
    let daemon = Daemon::start(dir, &config.toml());
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    daemon.wait_for_log("status page on http", 1, Duration::from_secs(10));
    let log = daemon.log();
    let page = log
        .split("status page on http")
        .nth(1)
        .and_then(|rest| rest.split("://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no status page address in the log:\n{log}"));
    Running {
        daemon,
        dongle,
        page,
    }
}

/// A node16 header (address 7, sequence `seq`), an LPP temperature of 21.5 °C, its CRC, COBS, delimiter.
pub fn kitchen_frame(seq: u8, good_crc: bool) -> Vec<u8> {
    frame_from(7, seq, good_crc)
}

/// [`kitchen_frame`] from the node at `address` (`uart0-{address}` when no `[[device]]` names it).
pub fn frame_from(address: u8, seq: u8, good_crc: bool) -> Vec<u8> {
    use sensorgate::frame::crc::{append_crc, CrcMode};
    let body = [0x00, address, seq, 0x01, 0x67, 0x00, 0xd7];
    let mut framed = append_crc(CrcMode::Crc16CcittFalse, &body);
    if !good_crc {
        let last = framed.len() - 1;
        framed[last] ^= 0x5a;
    }
    let mut bytes = sensorgate::frame::cobs::encode(&framed);
    bytes.push(0);
    bytes
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `config/demo.toml` as it ships, ready for the harness (the testkit's [`demo`]); `users`
/// (`[[broker.user]]` tables) are appended, anonymous MQTT clients still allowed.
pub fn demo_config(users: &str) -> String {
    let mut config = demo();
    if let Some(broker) = config.get_mut("broker").and_then(toml::Value::as_table_mut) {
        broker.insert("allow_anonymous".into(), true.into());
    }
    format!(
        "{}\n{users}",
        toml::to_string(&config).expect("serialise the demo")
    )
}
