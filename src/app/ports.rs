//! The ports file: where the daemon's listeners are bound, for whoever started it with port 0 (a test
//! harness, a script) and needs to know which port the kernel chose. `{state_dir}/ports` is removed at
//! the start of a run and written once every listener is bound and the daemon is ready (the moment it
//! tells systemd READY=1): one line per listener, `{scheme} {address}`, the broker's MQTT listeners
//! first in the order of the configuration's `[[broker.listener]]` tables of each transport (`mqtt` and
//! `mqtts` over TCP, then `ws` and `wss`), then the status page (`http` or `https`) when it runs:
//!
//! ```text
//! mqtt 127.0.0.1:41234
//! ws 127.0.0.1:41235
//! http 127.0.0.1:41236
//! ```
//!
//! It is written to `ports.tmp` and renamed, so a reader never sees half a file. The same list is
//! logged at INFO just before, on one line after [`LOG_MARKER`] (`mqtt 127.0.0.1:41234, ws ...`), for a
//! state directory that cannot take the file (a full disk). It is an aid, not the gateway's work: a
//! failure to write it is logged and the daemon runs on. Nothing here reads it back.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use crate::broker::BrokerSettings;

/// The file's name in the state directory.
pub const PORTS_FILE: &str = "ports";

/// What the INFO line that lists the bound listeners says before the list.
pub const LOG_MARKER: &str = "bound listeners: ";

/// One bound listener: its scheme (`mqtt`, `mqtts`, `ws`, `wss`, `http`, `https`) and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundListener {
    pub scheme: &'static str,
    pub addr: SocketAddr,
}

/// The broker's listeners as `settings` declares them, with the addresses they were bound to
/// (`Broker::local_addrs`: the TCP listeners, then the WebSocket ones, each in declaration order).
pub fn broker_listeners(settings: &BrokerSettings, bound: &[SocketAddr]) -> Vec<BoundListener> {
    let tcp = settings
        .listeners
        .iter()
        .map(|listener| match listener.tls {
            Some(_) => "mqtts",
            None => "mqtt",
        });
    let websockets = settings
        .websockets
        .iter()
        .map(|listener| match listener.tls {
            Some(_) => "wss",
            None => "ws",
        });
    tcp.chain(websockets)
        .zip(bound)
        .map(|(scheme, addr)| BoundListener {
            scheme,
            addr: *addr,
        })
        .collect()
}

/// The status page's listener.
pub fn http_listener(tls: bool, addr: SocketAddr) -> BoundListener {
    BoundListener {
        scheme: if tls { "https" } else { "http" },
        addr,
    }
}

/// The file's text: one `{scheme} {address}` line per listener.
pub fn render(listeners: &[BoundListener]) -> String {
    let mut text = String::new();
    for listener in listeners {
        let _ = writeln!(text, "{} {}", listener.scheme, listener.addr);
    }
    text
}

/// Removes the ports file of an earlier run (so that a reader waiting for it sees this run's).
pub async fn forget(state_dir: &Path) {
    match tokio::fs::remove_file(state_dir.join(PORTS_FILE)).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => log::warn!(
            "cannot remove {}: {error}",
            state_dir.join(PORTS_FILE).display()
        ),
    }
}

/// Logs the listeners, then writes the ports file (through `ports.tmp` and a rename); logs a failure
/// and carries on.
pub async fn write(state_dir: &Path, listeners: &[BoundListener]) {
    let text = render(listeners);
    log::info!(
        "{LOG_MARKER}{}",
        text.lines().collect::<Vec<_>>().join(", ")
    );
    let path = state_dir.join(PORTS_FILE);
    let tmp = state_dir.join(format!("{PORTS_FILE}.tmp"));
    let written = match tokio::fs::write(&tmp, text).await {
        Ok(()) => tokio::fs::rename(&tmp, &path).await,
        Err(error) => Err(error),
    };
    if let Err(error) = written {
        log::warn!(
            "cannot write {} (where the listeners are bound): {error}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{ListenerSettings, TlsFiles, WebSocketListener};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn tls() -> Option<TlsFiles> {
        Some(TlsFiles {
            cert_file: "c.pem".into(),
            key_file: "k.pem".into(),
            client_ca_file: None,
        })
    }

    #[test]
    fn the_broker_listeners_are_named_by_transport_and_tls_in_bind_order() {
        let settings = BrokerSettings {
            listeners: vec![
                ListenerSettings {
                    bind: addr(0),
                    tls: None,
                },
                ListenerSettings {
                    bind: addr(0),
                    tls: tls(),
                },
            ],
            websockets: vec![WebSocketListener {
                bind: addr(0),
                tls: tls(),
                path: "/mqtt".into(),
            }],
            ..BrokerSettings::default()
        };
        let listeners = broker_listeners(&settings, &[addr(41000), addr(41001), addr(41002)]);
        let text = render(&listeners);
        assert_eq!(
            text,
            "mqtt 127.0.0.1:41000\nmqtts 127.0.0.1:41001\nwss 127.0.0.1:41002\n"
        );
    }

    #[test]
    fn the_status_page_is_http_or_https() {
        assert_eq!(http_listener(false, addr(8088)).scheme, "http");
        assert_eq!(http_listener(true, addr(8443)).scheme, "https");
    }

    #[tokio::test]
    async fn the_file_is_replaced_whole_and_forgotten_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[http_listener(false, addr(1))]).await;
        write(dir.path(), &[http_listener(false, addr(2))]).await;
        let text = std::fs::read_to_string(dir.path().join(PORTS_FILE)).unwrap();
        assert_eq!(text, "http 127.0.0.1:2\n");
        assert!(!dir.path().join("ports.tmp").exists());
        forget(dir.path()).await;
        assert!(!dir.path().join(PORTS_FILE).exists());
        forget(dir.path()).await;
    }
}
