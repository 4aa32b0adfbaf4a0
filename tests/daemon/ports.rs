//! Ports from the kernel: every listener written `127.0.0.1:0` gets its own port, and the daemon says
//! which in `{state_dir}/ports` (one `scheme address` line per listener, MQTT listeners first in the
//! configuration's order, then the status page), written once it is ready.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::{self, Daemon};

use std::net::TcpStream;
use std::time::Duration;

#[test]
fn every_listener_on_port_0_gets_its_own_port_and_the_ports_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new("ports")
        .listener("")
        .listener("transport = \"websocket\"")
        .table("[http]\nbind = \"127.0.0.1:0\"\nanonymous = \"read\"")
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    let text = std::fs::read_to_string(dir.path().join("state/ports")).unwrap();
    let listeners = daemon::parse_ports(&text).unwrap();
    let schemes: Vec<&str> = listeners.iter().map(|l| l.scheme.as_str()).collect();
    assert_eq!(schemes, ["mqtt", "mqtt", "ws", "http"], "{text}");
    let mut ports: Vec<u16> = listeners.iter().map(|l| l.addr.port()).collect();
    assert!(ports.iter().all(|&port| port != 0), "{text}");
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 4, "four listeners, four ports: {text}");
    for listener in &listeners {
        assert!(
            TcpStream::connect_timeout(&listener.addr, Duration::from_secs(2)).is_ok(),
            "nothing listens on {listener:?}"
        );
    }
    assert_eq!(daemon.addr, listeners[0].addr);
    let log = daemon.log();
    assert!(
        log.contains(&format!("MQTT broker listening on {}", listeners[0].addr)),
        "the log names the port too:\n{log}"
    );
}
