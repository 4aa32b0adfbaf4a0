//! MQTT over WebSockets, as a browser dashboard or a proxied Home Assistant add-on uses it: the real
//! daemon with `[[broker.listener]] transport = "websocket"` listeners (plain ws and, with `tls`, wss),
//! driven by Python paho-mqtt with `transport="websockets"` (Debian's python3-paho-mqtt, installed by
//! scripts/test). Publish, subscribe, retained and will, over ws and wss; the anonymous rights
//! (`anonymous_read` / `anonymous_write`) apply there as on TCP; and the janitor closes a WebSocket
//! connection that never sends CONNECT; only the listener's `path` is upgraded.

use sensorgate_testkit::certs;
use sensorgate_testkit::daemon;

use std::time::Duration;

use daemon::{free_port, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let (ws, wss) = (free_port(), free_port());
    let config = format!(
        r#"
[gateway]
id = "ws"
base_topic = "sensorgate"
state_dir = "{{state_dir}}"

[[broker.listener]]
bind = "127.0.0.1:{{port}}"

[[broker.listener]]
bind = "127.0.0.1:{ws}"
transport = "websocket"

[[broker.listener]]
bind = "127.0.0.1:{wss}"
transport = "websocket"
path = "/mqtt"
tls = {{ cert_file = "{cert}", key_file = "{key}" }}

[broker]
handshake_timeout = "1s"
anonymous_read = ["ws/#"]
anonymous_write = ["ws/#"]
"#,
        cert = pki.server_cert_file.display(),
        key = pki.server_key_file.display(),
    );
    let daemon = Daemon::start(dir.path(), &config);
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
    let ws = free_port();
    let config = format!(
        "[gateway]\nid = \"ws\"\nbase_topic = \"sensorgate\"\nstate_dir = \"{{state_dir}}\"\n\n\
         [[broker.listener]]\nbind = \"127.0.0.1:{{port}}\"\n\n\
         [[broker.listener]]\nbind = \"127.0.0.1:{ws}\"\ntransport = \"websocket\"\n\n\
         [broker]\nhandshake_timeout = \"1s\"\n"
    );
    let daemon = Daemon::start(dir.path(), &config);
    // One socket that says nothing, one that completes the WebSocket upgrade and then says nothing.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", ws))
        .await
        .unwrap();
    let mut upgraded = tokio::net::TcpStream::connect(("127.0.0.1", ws))
        .await
        .unwrap();
    upgraded
        .write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        )
        .await
        .unwrap();
    let mut response = [0u8; 12];
    upgraded.read_exact(&mut response).await.unwrap();
    assert_eq!(&response, b"HTTP/1.1 101", "the upgrade is answered");
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
    let ws = free_port();
    let config = format!(
        "[gateway]\nid = \"ws\"\nbase_topic = \"sensorgate\"\nstate_dir = \"{{state_dir}}\"\n\n\
         [[broker.listener]]\nbind = \"127.0.0.1:{{port}}\"\n\n\
         [[broker.listener]]\nbind = \"127.0.0.1:{ws}\"\ntransport = \"websocket\"\npath = \"/gateway/mqtt\"\n"
    );
    let daemon = Daemon::start(dir.path(), &config);
    let mut answers = Vec::new();
    for path in ["/gateway/mqtt", "/mqtt", "/"] {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", ws))
            .await
            .unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut status = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut status))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        answers.push((path, String::from_utf8_lossy(&status).into_owned()));
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
