//! MQTT over WebSockets, as a browser dashboard or a proxied Home Assistant add-on uses it: the real
//! daemon with `[[broker.listener]] transport = "websocket"` listeners (plain ws and, with `tls`, wss),
//! driven by Python paho-mqtt with `transport="websockets"` (Debian's python3-paho-mqtt, installed by
//! scripts/test). Publish, subscribe, retained and will, over ws and wss; the anonymous rights
//! (`anonymous_read` / `anonymous_write`) apply there as on TCP; a WebSocket connection that never sends
//! CONNECT is closed; only the listener's `path` is upgraded. Byte-level clients check the WebSocket
//! bounds: messages and frames within `max_packet_size`, binary messages only, and a silent upgraded
//! connection costing about what a TCP one does.

use sensorgate_testkit::certs;
use sensorgate_testkit::daemon;
use sensorgate_testkit::raw::{self, Connect};
use sensorgate_testkit::websocket::{self, RawWebSocket, BINARY, CONTINUATION, PING, TEXT};

use std::time::Duration;

use daemon::Daemon;
use sensorgate_testkit::config::ConfigBuilder;
use tokio::io::AsyncReadExt;

/// One run over one WebSocket listener; prints one line per check, `ok NAME` or `FAIL NAME: why`.
const SCRIPT: &str = r#"
import queue, socket, ssl, sys, time
import paho.mqtt.client as mqtt

port, tls, ca = int(sys.argv[1]), sys.argv[2] == "tls", sys.argv[3]
V311 = mqtt.MQTTv311

def client(cid, will=None):
    options = dict(client_id=cid, protocol=V311, transport="websockets")
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2 (Debian 13) asks which callbacks
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION1, **options)
    else:
        c = mqtt.Client(**options)
    c.ws_set_options(path="/mqtt")
    if tls:
        c.tls_set(ca_certs=ca)
    if will:
        c.will_set(will, b"gone", qos=1, retain=False)
    got = queue.Queue()
    c.on_message = lambda _c, _u, m: got.put((m.topic, m.payload, m.retain))
    acks = queue.Queue()
    c.on_subscribe = lambda _c, _u, _mid, granted: acks.put(granted)
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c, got, acks

def check(name, ok, why=""):
    print(("ok " if ok else "FAIL ") + name + ("" if ok else ": " + why), flush=True)

def wait(q, within=5.0):
    try:
        return q.get(timeout=within)
    except queue.Empty:
        return None

pub, _, _ = client("ws-pub")
pub.publish("ws/retained", b"kept", qos=1, retain=True).wait_for_publish(5)
sub, got, acks = client("ws-sub")
sub.subscribe("ws/#", qos=1)
granted = wait(acks)
check("subscribe", granted == (1,), repr(granted))
m = wait(got)
check("retained", m == ("ws/retained", b"kept", True), repr(m))
pub.publish("ws/live", b"hello", qos=1).wait_for_publish(5)
m = wait(got)
check("publish", m == ("ws/live", b"hello", False), repr(m))
dying, _, _ = client("ws-dying", will="ws/will")
time.sleep(0.3)
dying.loop_stop()
dying.socket().close()
m = wait(got, 10.0)
check("will", m == ("ws/will", b"gone", False), repr(m))
sub.subscribe("private/#", qos=1)
granted = wait(acks)
check("anonymous_read", granted is not None and granted[0] == 128, repr(granted))
pub.publish("private/x", b"no", qos=1).wait_for_publish(5)
pub.publish("ws/retained", b"", qos=1, retain=True).wait_for_publish(5)
sub.disconnect(); pub.disconnect()
"#;

/// The Python that has paho-mqtt.
fn python_with_paho() -> &'static str {
    sensorgate_testkit::python::python_with("paho.mqtt.client", "python3-paho-mqtt")
}

fn run_paho(port: u16, tls: bool, ca: &str) -> String {
    let output = std::process::Command::new(python_with_paho())
        .arg("-c")
        .arg(SCRIPT)
        .arg(port.to_string())
        .arg(if tls { "tls" } else { "plain" })
        .arg(ca)
        .output()
        .expect("python3 runs (scripts/test installs python3-paho-mqtt)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_over_ws_and_wss_publishes_subscribes_and_gets_retained_and_wills() {
    let pki = certs::make_pki();
    let dir = tempfile::tempdir().unwrap();
    let tls = format!(
        "tls = {{ cert_file = {:?}, key_file = {:?} }}",
        pki.server_cert_file.display().to_string(),
        pki.server_key_file.display().to_string()
    );
    let config = ConfigBuilder::new("ws")
        .broker(
            "handshake_timeout = \"1s\"\nanonymous_read = [\"ws/#\"]\nanonymous_write = [\"ws/#\"]",
        )
        .listener("transport = \"websocket\"")
        .listener(&format!(
            "transport = \"websocket\"\npath = \"/mqtt\"\n{tls}"
        ))
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    let (ws, wss) = (
        daemon.listener("ws", 0).port(),
        daemon.listener("wss", 0).port(),
    );
    let ca = pki.ca_file.display().to_string();
    for (port, tls) in [(ws, false), (wss, true)] {
        let out = tokio::task::spawn_blocking({
            let ca = ca.clone();
            move || run_paho(port, tls, &ca)
        })
        .await
        .unwrap();
        eprintln!("{} {port}:\n{out}", if tls { "wss" } else { "ws" });
        for check in ["subscribe", "retained", "publish", "will", "anonymous_read"] {
            assert!(
                out.lines().any(|l| l == format!("ok {check}")),
                "{check} over {}: {out}\n{}",
                if tls { "wss" } else { "ws" },
                daemon.log()
            );
        }
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_connection_that_never_sends_connect_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = websocket_daemon(dir.path(), "handshake_timeout = \"1s\"");
    let ws = daemon.listener("ws", 0).port();
    // One socket that says nothing, one that completes the WebSocket upgrade and then says nothing.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", ws))
        .await
        .unwrap();
    let mut upgraded = RawWebSocket::upgrade(ws, "/mqtt")
        .await
        .expect("the upgrade is answered")
        .stream;
    for (name, socket) in [("silent", &mut silent), ("upgraded", &mut upgraded)] {
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(6), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{name} socket still open after 6 s");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: closed after {:?} (handshake_timeout = 1s)",
            started.elapsed()
        );
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listeners_path_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new("ws")
        .listener("transport = \"websocket\"\npath = \"/gateway/mqtt\"")
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    let ws = daemon.listener("ws", 0).port();
    let mut answers = Vec::new();
    for path in ["/gateway/mqtt", "/mqtt", "/"] {
        let status = match RawWebSocket::upgrade(ws, path).await {
            Ok(_) => "HTTP/1.1 101".to_string(),
            Err(status) => status,
        };
        answers.push((path, status[..12].to_string()));
    }
    assert_eq!(
        answers,
        vec![
            ("/gateway/mqtt", "HTTP/1.1 101".to_string()),
            ("/mqtt", "HTTP/1.1 404".to_string()),
            ("/", "HTTP/1.1 404".to_string()),
        ]
    );
    drop(daemon);
}

/// A daemon with a WebSocket listener (path "/mqtt", its port `listener("ws", 0)`) and `broker` under
/// `[broker]`.
fn websocket_daemon(dir: &std::path::Path, broker: &str) -> Daemon {
    let config = ConfigBuilder::new("ws")
        .broker(broker)
        .listener("transport = \"websocket\"")
        .toml();
    Daemon::start(dir, &config)
}

/// A binary WebSocket frame holding an MQTT 3.1.1 CONNACK (accepted, no session): what the broker
/// answers a CONNECT with.
const CONNACK_FRAME: [u8; 6] = [0x82, 0x04, 0x20, 0x02, 0x00, 0x00];

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_and_frames_beyond_max_packet_size_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = websocket_daemon(
        dir.path(),
        "max_packet_size = \"16KiB\"\nhandshake_timeout = \"20s\"",
    );
    let ws = daemon.listener("ws", 0).port();

    // An unfinished fragmented message that grows past 16 KiB (4 KiB fragments, 256 KiB at most).
    let mut growing = RawWebSocket::upgrade(ws, "/mqtt").await.unwrap();
    let chunk = vec![0x30u8; 4096];
    let mut sent = 0usize;
    if growing.send(&websocket::frame(BINARY, false, &chunk)).await {
        sent += chunk.len();
        while sent < 256 * 1024
            && growing
                .send(&websocket::frame(CONTINUATION, false, &chunk))
                .await
        {
            sent += chunk.len();
        }
    }
    let (_, closed) = growing.read_within(Duration::from_secs(3)).await;
    assert!(
        closed,
        "an unfinished message of {sent} bytes (max_packet_size = 16 KiB) still open:\n{}",
        daemon.log()
    );

    // One frame whose header announces 1 MiB: closed without waiting for the payload.
    let mut announced = RawWebSocket::upgrade(ws, "/mqtt").await.unwrap();
    assert!(
        announced
            .send(&websocket::frame_header(BINARY, true, 1 << 20))
            .await
    );
    let (_, closed) = announced.read_within(Duration::from_secs(3)).await;
    assert!(closed, "a 1 MiB frame header left the connection open");

    // Within the bound, a CONNECT split over two fragments is answered.
    let mut split = RawWebSocket::upgrade(ws, "/mqtt").await.unwrap();
    let connect = raw::connect_packet(&Connect::new("ws-split"));
    let (head, tail) = connect.split_at(5);
    assert!(split.send(&websocket::frame(BINARY, false, head)).await);
    assert!(
        split
            .send(&websocket::frame(CONTINUATION, true, tail))
            .await
    );
    let (answer, _) = split.read_within(Duration::from_secs(2)).await;
    assert!(holds(&answer, &CONNACK_FRAME), "CONNACK: {answer:02x?}");
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_text_messages_close_the_connection_and_pings_are_no_mqtt() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = websocket_daemon(dir.path(), "handshake_timeout = \"20s\"");
    let ws = daemon.listener("ws", 0).port();

    // MQTT travels in binary messages only: a CONNECT in a text message is refused by closing.
    let mut text = RawWebSocket::upgrade(ws, "/mqtt").await.unwrap();
    let connect = raw::connect_packet(&Connect::new("ws-text"));
    assert!(text.send(&websocket::frame(TEXT, true, &connect)).await);
    let (answer, closed) = text.read_within(Duration::from_secs(3)).await;
    assert!(
        !holds(&answer, &CONNACK_FRAME),
        "a text CONNECT was answered: {answer:02x?}"
    );
    assert!(closed, "a text message left the connection open");

    // A ping (answered with a pong) before a binary CONNECT is not taken for MQTT bytes.
    let mut pinged = RawWebSocket::upgrade(ws, "/mqtt").await.unwrap();
    assert!(pinged.send(&websocket::frame(PING, true, b"hi")).await);
    let connect = raw::connect_packet(&Connect::new("ws-pinged"));
    assert!(pinged.send(&websocket::frame(BINARY, true, &connect)).await);
    let (answer, _) = pinged.read_within(Duration::from_secs(2)).await;
    assert!(
        holds(&answer, &[0x8a, 0x02, b'h', b'i']),
        "pong: {answer:02x?}"
    );
    assert!(
        holds(&answer, &CONNACK_FRAME),
        "CONNACK after a ping: {answer:02x?}\n{}",
        daemon.log()
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_websocket_upgrades_cost_what_tcp_connections_cost() {
    const UPGRADES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let daemon = websocket_daemon(dir.path(), "handshake_timeout = \"30s\"");
    let ws = daemon.listener("ws", 0).port();
    let before = daemon.status_kib("VmRSS");
    let mut upgraded = Vec::new();
    for _ in 0..UPGRADES {
        upgraded.push(RawWebSocket::upgrade(ws, "/mqtt").await.unwrap());
    }
    // Every connection has reached its first read (the broker answers a ping on each).
    for socket in &mut upgraded {
        assert!(socket.send(&websocket::frame(PING, true, b"p")).await);
        let pong = socket.read_exact_within(3, Duration::from_secs(5)).await;
        assert_eq!(pong, Some(vec![0x8a, 0x01, b'p']), "pong");
    }
    let after = daemon.status_kib("VmRSS");
    let per_connection = after.saturating_sub(before) * 1024 / UPGRADES as u64;
    eprintln!("{UPGRADES} silent upgrades: VmRSS {before} -> {after} KiB, {per_connection} B each");
    // tungstenite's default read buffer alone was 128 KiB per connection.
    assert!(
        per_connection < 48 * 1024,
        "{per_connection} bytes per silent WebSocket connection (VmRSS {before} -> {after} KiB)"
    );
    drop(upgraded);
    drop(daemon);
}
