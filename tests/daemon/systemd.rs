//! The daemon under a service manager: readiness, watchdog pings and stopping through a fake
//! `NOTIFY_SOCKET`, and configuration reload on SIGHUP (valid, invalid, partly changed). The real binary,
//! a pseudo-terminal as its serial port, a real MQTT client; every wait bounded.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use pty::FakeDongle;
use sensorgate_testkit::daemon::Daemon;

/// The configuration, its placeholders filled by `config`.
fn base_config() -> String {
    ConfigBuilder::new("test-gw")
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
payload = "json"

[[source]]
name = "demo"
kind = "simulator"
devices = 1
interval = "{interval}"
payload = "json"
{devices}
"#,
        )
        .toml()
}

fn config(link: &Path, interval: &str, devices: &str) -> String {
    base_config()
        .replace("{link}", &link.display().to_string())
        .replace("{interval}", interval)
        .replace("{devices}", devices)
}

/// Rewrites the running daemon's configuration file (placeholders filled as at its start).
fn rewrite(daemon: &Daemon, dir: &Path, text: String) {
    let text = text
        .replace("{port}", &daemon.addr.port().to_string())
        .replace("{state_dir}", &dir.join("state").display().to_string());
    std::fs::write(&daemon.config_path, text).unwrap();
}

/// Collects datagrams until one contains `needle`; returns everything received.
fn wait_for_notification(socket: &UnixDatagram, needle: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(count) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..count]).into_owned();
            let found = text.contains(needle);
            seen.push(text);
            if found {
                return seen;
            }
        }
    }
    panic!("no {needle:?} within {within:?}; got {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_after_start_watchdog_pings_while_healthy_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-test");
    let _dongle = FakeDongle::plug(&link);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let socket_env = socket_path.display().to_string();
    let daemon = Daemon::start_with_env(
        dir.path(),
        &config(&link, "1s", ""),
        &[
            ("NOTIFY_SOCKET", socket_env.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let ready = wait_for_notification(&socket, "READY=1", Duration::from_secs(10));
    assert!(ready.iter().all(|m| !m.contains("STOPPING")), "{ready:?}");
    wait_for_notification(&socket, "WATCHDOG=1", Duration::from_secs(5));
    let status = wait_for_notification(&socket, "STATUS=", Duration::from_secs(5));
    assert!(
        status.last().is_some_and(|s| s.contains("devices online")),
        "{status:?}"
    );

    daemon.signal("TERM");
    wait_for_notification(&socket, "STOPPING=1", Duration::from_secs(5));
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_valid_file_refuses_an_invalid_one_and_restarts_only_changed_sources() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyUSB-test");
    let mut dongle = FakeDongle::plug(&link);
    let daemon = Daemon::start(dir.path(), &config(&link, "1s", ""));
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let mut seen = Vec::new();
    dongle.write(b"{\"id\": 5, \"temperature\": 20.5}\n").await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| {
        m.topic == "sensorgate/uart0-5/availability" && m.text() == "online"
    })
    .await
    .expect("unmapped device online");

    // A broken file: refused with its position, the running configuration kept.
    rewrite(
        &daemon,
        dir.path(),
        config(
            &link,
            "1s",
            "[[device]]\nname = \"office\"\nsource = \"nowhere\"\naddress = \"5\"\n",
        ),
    );
    daemon.signal("HUP");
    daemon.wait_for_log("configuration not reloaded", 1, Duration::from_secs(10));
    let log = daemon.log();
    assert!(
        log.contains("sensorgate.toml:"),
        "the refusal names the file, line and column:\n{log}"
    );
    dongle.write(b"{\"id\": 5, \"temperature\": 20.6}\n").await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| {
        m.topic == "sensorgate/uart0-5/temperature" && m.text() == "20.6"
    })
    .await
    .expect("the old configuration still runs");

    // A valid file that names the device and changes only the simulator: the device is renamed (its old
    // name's will is published), the serial port is not reopened, the MQTT client stays connected.
    rewrite(
        &daemon,
        dir.path(),
        config(
            &link,
            "2s",
            "[[device]]\nname = \"office\"\nsource = \"uart0\"\naddress = \"5\"\n",
        ),
    );
    daemon.signal("HUP");
    daemon.wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| {
        m.topic == "sensorgate/uart0-5/availability" && m.text() == "offline"
    })
    .await
    .expect("the old name's will");
    dongle.write(b"{\"id\": 5, \"temperature\": 20.7}\n").await;
    sub.wait_for(Duration::from_secs(10), &mut seen, |m| {
        m.topic == "sensorgate/office/temperature" && m.text() == "20.7"
    })
    .await
    .expect("the new name is used");
    let log = daemon.log();
    assert_eq!(
        log.matches("open at 115200 baud").count(),
        1,
        "the unchanged serial source kept running:\n{log}"
    );
    assert!(
        log.contains("source restarted for the new configuration source=demo"),
        "{log}"
    );
    assert!(
        !seen
            .iter()
            .any(|m| m.topic == "sensorgate/demo-1/availability" && m.text() == "offline"),
        "the simulator's device kept its identity and stayed online"
    );
    let (status, _) = daemon.stop();
    assert!(status.success());
}
