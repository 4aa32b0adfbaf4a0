//! A hostile client against the real daemon's broker on 127.0.0.1: deep topics and filters, wildcard
//! and NUL topic names, silent sockets (plain and after TLS, from a port that spoke once, beyond the
//! half-open bound), a swarm of absent persistent sessions, and
//! subscribers that stop reading. Each test reproduces an attack that once crashed, froze or exhausted the
//! daemon, and asserts that it now stays alive and keeps serving. Every loop is bounded in count and time.

use sensorgate_testkit::certs;
use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;
use sensorgate_testkit::raw;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use daemon::Daemon;
use raw::{frame, Connect, RawClient, Will, PUBACK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The broker alone, with `[broker] handshake_timeout = "1s"` unless `broker` sets it.
fn broker_only(broker: &str) -> String {
    let handshake = if broker.contains("handshake_timeout") {
        ""
    } else {
        "handshake_timeout = \"1s\""
    };
    ConfigBuilder::new("hostile")
        .broker(handshake)
        .broker(broker)
        .toml()
}

fn with_len(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    raw::push_str(&mut out, s);
    out
}

/// A PUBLISH packet (no properties on 5.0).
fn publish_packet(topic: &[u8], payload: &[u8], qos: u8, retain: bool, v5: bool) -> Vec<u8> {
    let mut body = with_len(topic);
    if qos > 0 {
        body.extend_from_slice(&1u16.to_be_bytes());
    }
    if v5 {
        body.push(0);
    }
    body.extend_from_slice(payload);
    frame(0x30 | (qos << 1) | u8::from(retain), &body)
}

async fn connect(addr: SocketAddr, client_id: &str, v5: bool) -> RawClient {
    let mut options = Connect::new(client_id);
    options.v5 = v5;
    let (client, code, _) = RawClient::connect(addr, &options).await;
    assert_eq!(code, 0, "CONNACK for {client_id}");
    client
}

/// True when the daemon still answers a fresh client with a working publish/subscribe round trip.
async fn serves(addr: SocketAddr, probe: &str) -> bool {
    let mut subscriber = mqtt::subscribe(addr, &format!("{probe}-sub"), "probe/#", 1).await;
    let mut publisher = connect(addr, &format!("{probe}-pub"), false).await;
    publisher
        .send(&publish_packet(
            b"probe/x",
            probe.as_bytes(),
            0,
            false,
            false,
        ))
        .await;
    subscriber
        .wait_for(Duration::from_secs(5), &mut Vec::new(), |m| {
            m.topic == "probe/x"
        })
        .await
        .is_some()
}

fn alive(daemon: &mut Daemon) -> bool {
    matches!(daemon.child.try_wait(), Ok(None))
}

/// Open file descriptors of the daemon.
fn fd_count(daemon: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.child.id()))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_filters_and_topics_are_refused_and_the_daemon_lives() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &broker_only(""));

    // A SUBSCRIBE with a 6,000-level filter (12 KB) once overflowed the stack.
    let deep_filter = format!("x{}", "/+".repeat(5_999));
    let mut v3 = connect(daemon.addr, "deep-v3", false).await;
    assert_eq!(v3.subscribe(&deep_filter, 1, 1).await, vec![0x80]);
    let mut v5 = connect(daemon.addr, "deep-v5", true).await;
    assert_eq!(
        v5.subscribe(&deep_filter, 1, 1).await,
        vec![0x8F],
        "5.0: Topic Filter invalid"
    );
    assert_eq!(
        v5.subscribe("ok/+/within/limits", 1, 2).await,
        vec![0x01],
        "the same connection still subscribes"
    );

    // A retained PUBLISH to a 4,000-level topic (8 KB) did too.
    let deep_topic = vec!["y"; 4_000].join("/");
    v5.send(&publish_packet(deep_topic.as_bytes(), b"1", 1, true, true))
        .await;
    let puback = v5.expect(PUBACK).await;
    assert_eq!(puback.body.get(2), Some(&0x90), "5.0: Topic Name invalid");
    v3.send(&publish_packet(deep_topic.as_bytes(), b"1", 0, true, false))
        .await;
    assert!(
        v3.read_within(Duration::from_secs(5)).await.is_none(),
        "3.1.1: the connection is closed"
    );

    assert!(alive(&mut daemon), "{}", daemon.log());
    assert!(serves(daemon.addr, "after-deep").await);
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_deep_topic_is_skipped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let deep = sensorgate::model::Message {
        topic: vec!["z"; 4_000].join("/"),
        payload: b"1".to_vec(),
        qos: 0,
        retain: true,
    };
    let fine = sensorgate::model::Message {
        topic: "kept/topic".into(),
        payload: b"2".to_vec(),
        qos: 0,
        retain: true,
    };
    // The old whole-file format: migrated into the retained log at start, the deep topic skipped.
    // The old whole-file format: migrated into the retained log at start, the deep topic skipped.
    sensorgate::broker::retained::write_snapshot(&state, &[deep, fine]).unwrap();

    let mut daemon = Daemon::start(dir.path(), &broker_only(""));
    daemon.wait_for_log("1 messages skipped", 1, Duration::from_secs(5));
    let mut subscriber = mqtt::subscribe(daemon.addr, "restore", "kept/#", 0).await;
    let kept = subscriber
        .wait_for(Duration::from_secs(5), &mut Vec::new(), |m| {
            m.topic == "kept/topic"
        })
        .await;
    assert!(kept.is_some(), "the valid retained message is restored");
    assert!(alive(&mut daemon));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_and_nul_topic_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &broker_only(""));
    let mut watcher = mqtt::subscribe(daemon.addr, "watcher", "#", 0).await;

    for topic in [&b"+"[..], b"#", b"a/#", b"a/+/b", b"a\0b"] {
        let mut v3 = connect(daemon.addr, "wild-v3", false).await;
        v3.send(&publish_packet(topic, b"x", 0, false, false)).await;
        assert!(
            v3.read_within(Duration::from_secs(5)).await.is_none(),
            "3.1.1 publish to {:?}: the connection is closed",
            String::from_utf8_lossy(topic)
        );
        let mut v5 = connect(daemon.addr, "wild-v5", true).await;
        v5.send(&publish_packet(topic, b"x", 1, false, true)).await;
        match v5.read_within(Duration::from_secs(5)).await {
            Some(packet) if packet.kind == PUBACK => {
                assert_eq!(packet.body.get(2), Some(&0x90), "5.0 PUBACK reason")
            }
            // A decoder that refuses the packet outright closes with DISCONNECT; also a refusal.
            Some(packet) => assert_eq!(packet.kind, raw::DISCONNECT),
            None => {}
        }
    }
    let mut marker = connect(daemon.addr, "marker", false).await;
    marker
        .send(&publish_packet(b"marker", b"end", 0, false, false))
        .await;
    let seen = watcher
        .collect_until(Duration::from_secs(5), |latest| {
            latest.contains_key("marker")
        })
        .await;
    let wild: Vec<&String> = seen
        .keys()
        .filter(|t| t.contains(['+', '#', '\0']))
        .collect();
    assert!(wild.is_empty(), "delivered verbatim: {wild:?}");
    assert!(seen.contains_key("marker"));

    // A will whose topic holds a wildcard is refused at CONNECT.
    let mut options = Connect::new("wild-will");
    options.will = Some(Will {
        topic: "alarm/#",
        payload: b"gone",
        qos: 0,
        retain: false,
    });
    let (_client, code, _) = RawClient::connect(daemon.addr, &options).await;
    assert_ne!(code, 0, "CONNACK refuses a will topic with '#'");
    assert!(alive(&mut daemon));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_plain_connections_are_closed_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &broker_only(""));
    let before = fd_count(&daemon);
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(tokio::net::TcpStream::connect(daemon.addr).await.unwrap());
    }
    // One that sends half a CONNECT and stops.
    let mut partial = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    partial.write_all(&[0x10, 0x20, 0x00]).await.unwrap();
    silent.push(partial);

    let started = Instant::now();
    for stream in &mut silent {
        let mut buf = [0u8; 16];
        let left = Duration::from_secs(6).saturating_sub(started.elapsed());
        let read = tokio::time::timeout(left, stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection is still open after {:?}",
            started.elapsed()
        );
    }
    let closed_after = started.elapsed();
    assert!(
        closed_after < Duration::from_secs(4),
        "handshake_timeout is 1 s; closed after {closed_after:?}"
    );
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_count(&daemon) > before + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fd_count(&daemon) <= before + 5,
        "descriptors back down: {} before, {} after",
        before,
        fd_count(&daemon)
    );
    assert!(serves(daemon.addr, "after-silent").await);
}

/// A socket bound to 127.0.0.1:`local` (reusable, so that several can share the port) connected to `to`.
async fn connect_from(local: u16, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], local)))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("TCP connect within 5 s")
        .expect("TCP connect")
}

/// Waits (bounded by `within`) for the server to close `stream`; returns how long that took.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_spoke_once_shields_no_silent_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new("hostile")
        .broker("handshake_timeout = \"1s\"")
        .listener("")
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    let second = daemon.listener("mqtt", 1);

    // From one source port: a client that logs in on the first listener, and a silent socket to the
    // second listener (same peer address, another connection).
    let port = daemon::free_port();
    let mut spoke = connect_from(port, daemon.addr).await;
    spoke
        .write_all(&raw::connect_packet(&Connect::new("spoke-once")))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), spoke.read_exact(&mut connack))
        .await
        .expect("CONNACK within 5 s")
        .unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let mut beside = connect_from(port, second).await;

    // From another source port: a client that logs in, resets its connection, and comes back from the
    // same port to say nothing.
    let again = daemon::free_port();
    let mut first = connect_from(again, daemon.addr).await;
    first
        .write_all(&raw::connect_packet(&Connect::new("reset-and-back")))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), first.read_exact(&mut connack))
        .await
        .expect("CONNACK within 5 s")
        .unwrap();
    // SO_LINGER 0: the close sends a reset.
    first.set_zero_linger().unwrap();
    drop(first);
    let mut back = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            // The reset frees the port at once; retry while the kernel still holds it.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            if socket
                .bind(SocketAddr::from(([127, 0, 0, 1], again)))
                .is_ok()
            {
                if let Ok(stream) = socket.connect(daemon.addr).await {
                    return stream;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("reconnected from the same port within 5 s");

    for (name, socket) in [("beside", &mut beside), ("back", &mut back)] {
        let closed = closed_within(socket, Duration::from_secs(6)).await;
        assert!(
            closed.is_some_and(|after| after < Duration::from_secs(4)),
            "{name}: a silent socket from a port that spoke once is still open ({closed:?}; handshake_timeout = 1s)"
        );
    }
    // The client that spoke is still served.
    spoke.write_all(&[0xC0, 0x00]).await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), spoke.read_exact(&mut pong))
        .await
        .expect("PINGRESP within 5 s")
        .unwrap();
    assert_eq!(pong, [0xD0, 0x00]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_half_open_bound_the_oldest_silent_sockets_go_and_clients_get_in() {
    let dir = tempfile::tempdir().unwrap();
    // max_connections = 16 bounds half-open connections at 16; the timeout alone would take 30 s.
    let config = broker_only("handshake_timeout = \"30s\"\nmax_connections = 16");
    let daemon = Daemon::start(dir.path(), &config);
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(tokio::net::TcpStream::connect(daemon.addr).await.unwrap());
    }
    // Watched all at once for 3 s: which ones the broker closes.
    let watches: Vec<_> = silent
        .into_iter()
        .map(|mut socket| {
            tokio::spawn(async move {
                closed_within(&mut socket, Duration::from_secs(3))
                    .await
                    .is_some()
            })
        })
        .collect();
    let mut closed = 0;
    for watch in watches {
        closed += usize::from(watch.await.unwrap());
    }
    assert_eq!(
        closed, 24,
        "of 40 silent sockets, those beyond the bound of 16 are closed at once, and only they"
    );
    // A client that speaks gets in (it pushes out the oldest silent socket on its way).
    let mut fresh = connect(daemon.addr, "fresh-beside-silent", false).await;
    assert_eq!(fresh.subscribe("a/b", 0, 1).await, vec![0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_after_a_finished_tls_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = certs::make_pki();
    let config = ConfigBuilder::new("hostile")
        .broker("handshake_timeout = \"1s\"")
        .listener(&format!(
            "tls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
            pki.server_cert_file.display(),
            pki.server_key_file.display()
        ))
        .toml();
    let daemon = Daemon::start(dir.path(), &config);
    let tls_port = daemon.listener("mqtts", 0).port();
    // Python's ssl module: finish the handshake, say nothing, report how long until the server closes.
    let script = format!(
        r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile="{ca}")
ctx.check_hostname = False
raw = socket.create_connection(("127.0.0.1", {port}), timeout=10)
tls = ctx.wrap_socket(raw, server_hostname="localhost")
start = time.monotonic()
try:
    data = tls.recv(16)
except (ssl.SSLError, OSError, socket.timeout) as e:
    data = b"" if not isinstance(e, socket.timeout) else None
if data is None:
    print("still open")
    sys.exit(1)
print("closed after %.2f s" % (time.monotonic() - start))
"#,
        ca = pki.ca_file.display(),
        port = tls_port
    );
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("python finished")
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seconds: f64 = text
        .trim()
        .trim_start_matches("closed after ")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!(
        seconds < 4.0,
        "closed after {seconds} s (handshake_timeout = 1s)"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_persistent_sessions_never_lock_new_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = broker_only("max_offline_sessions = 64\nmax_connections = 256");
    let daemon = Daemon::start(dir.path(), &config);
    let before = fd_count(&daemon);
    // 1,100 anonymous clients with clean session = 0 connect and vanish without DISCONNECT.
    for batch in 0..110 {
        let mut clients = Vec::new();
        for i in 0..10 {
            let id = format!("absent-{batch}-{i}");
            let mut options = Connect::new(&id);
            options.clean = false;
            let (client, code, _) = RawClient::connect(daemon.addr, &options).await;
            assert_eq!(code, 0, "CONNACK for client {} of 1,100", batch * 10 + i);
            clients.push(client);
        }
        drop(clients);
    }
    let mut fresh = connect(daemon.addr, "fresh-after-absent", false).await;
    assert_eq!(fresh.subscribe("a/b", 0, 1).await, vec![0]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(&daemon) > before + 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = fd_count(&daemon);
    assert!(
        after <= before + 10,
        "the 64 absent sessions hold no socket: {before} fds before, {after} after"
    );
    // They are kept all the same: the last client to vanish finds its session.
    let mut options = Connect::new("absent-109-9");
    options.clean = false;
    let (_back, code, session_present) = RawClient::connect(daemon.addr, &options).await;
    assert_eq!(code, 0);
    assert!(session_present, "the absent session was kept");
}

/// A daemon with a serial source.
fn serial_config() -> String {
    ConfigBuilder::new("hostile")
        .broker("max_queued_messages = 200")
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
baud = 115200
framing = "lines"
payload = "json"
"#,
        )
        .toml()
}

/// A QoS 1 subscriber to `sensorgate/#` with a tiny receive buffer that never reads after its SUBACK.
async fn stalled_subscriber(addr: SocketAddr, n: usize) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let client_id = format!("stalled-{n}");
    let mut connect = with_len(b"MQTT");
    connect.extend_from_slice(&[4, 0x02, 0, 60]);
    connect.extend_from_slice(&with_len(client_id.as_bytes()));
    stream.write_all(&frame(0x10, &connect)).await.unwrap();
    let mut subscribe = 1u16.to_be_bytes().to_vec();
    subscribe.extend_from_slice(&with_len(b"sensorgate/#"));
    subscribe.push(1);
    stream.write_all(&frame(0x82, &subscribe)).await.unwrap();
    let mut acks = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut acks))
        .await
        .expect("CONNACK and SUBACK within 5 s")
        .unwrap();
    assert_eq!((acks[0], acks[3], acks[4]), (0x20, 0, 0x90), "{acks:?}");
    stream
}

fn start_serial(dir: &Path) -> (Daemon, pty::FakeDongle) {
    let link = dir.join("usb-hostile-if00");
    let dongle = pty::FakeDongle::plug(&link);
    let daemon = Daemon::start(
        dir,
        &serial_config().replace("{link}", &link.display().to_string()),
    );
    daemon.wait_for_log("open at 115200 baud", 1, Duration::from_secs(10));
    (daemon, dongle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_slow_only_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongle) = start_serial(dir.path());
    let mut stalled = Vec::new();
    for n in 0..50 {
        stalled.push(stalled_subscriber(daemon.addr, n).await);
    }
    // Enough readings to fill every stalled subscriber's window and backlog many times over.
    let mut lines = String::new();
    for i in 0..600 {
        lines.push_str(&format!("{{\"id\": {}, \"t\": {i}}}\n", 1 + i % 30));
    }
    let mut progress = mqtt::subscribe(daemon.addr, "progress", "sensorgate/uart0-30", 0).await;
    dongle.write(lines.as_bytes()).await;
    let last = progress
        .wait_for(Duration::from_secs(30), &mut Vec::new(), |m| {
            m.text().contains("\"t\":599")
        })
        .await;
    assert!(last.is_some(), "the burst went through");
    let mut fresh = mqtt::subscribe(daemon.addr, "fresh", "sensorgate/uart0-99/#", 1).await;
    let sent = Instant::now();
    dongle.write(b"{\"id\": 99, \"t\": 1}\n").await;
    let got = fresh
        .wait_for(Duration::from_secs(10), &mut Vec::new(), |m| {
            m.topic == "sensorgate/uart0-99"
        })
        .await;
    let latency = sent.elapsed();
    assert!(got.is_some(), "the fresh subscriber got the new reading");
    assert!(
        latency < Duration::from_secs(1),
        "a new frame reached a fresh subscriber after {latency:?} with 50 stalled ones"
    );
    let (status, took) = daemon.stop();
    assert!(status.success(), "clean stop");
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM took {took:?} with 50 stalled subscribers"
    );
    drop(stalled);
}
