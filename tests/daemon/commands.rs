//! Commands through the real daemon: MQTT 5 clients on 127.0.0.1 publish on set topics, node simulators
//! on the other ends of pseudo-terminals read what the daemon wrote and decode it with the gateway's own
//! deframer, CRC check, header split, AES-CCM opening and payload decoders (LPP, JSON and MySensors behind
//! COBS + CRC + node16, and LPP sealed behind SLIP). Results arrive on `set/result` and on the request's
//! response topic with its correlation data echoed; a client without the write right, a source without
//! `commands` and an unknown device are refused; the counters reach `{base}/gateway/stats`. Every wait is
//! bounded.

use sensorgate_testkit::broker;
use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon;
use sensorgate_testkit::pty;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use daemon::Daemon;
use pty::FakeDongle;
use sensorgate::crypto::frame::{open, Direction};
use sensorgate::crypto::FrameKey;
use sensorgate::decode::{header, json, lpp, mysensors};
use sensorgate::frame::crc::{append_crc, check_and_strip, CrcMode};
use sensorgate::frame::{encode_frame, Deframer, Framing};
use sensorgate::model::Value;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";

/// The configuration of the commands test, its placeholders filled by the test.
fn base_config() -> String {
    ConfigBuilder::new("cmd-gw")
        .broker("allow_anonymous = false")
        .publish(r#"stats_interval = "1s""#)
        .table(
            r##"
[[broker.user]]
name = "ops"
password_hash = "{ops_hash}"
read = ["#"]
write = ["sensorgate/+/set", "sensorgate/+/set/+", "replies/ops/#"]

[[broker.user]]
name = "viewer"
password_hash = "{viewer_hash}"
read = ["#"]
write = []

[[source]]
name = "uart0"
kind = "serial"
path = "{link0}"
framing = "cobs"
crc = "crc16-ccitt-false"
header = "node16"
payload = "lpp"
commands = true

[[source]]
name = "uart1"
kind = "serial"
path = "{link1}"
framing = "cobs"
crc = "crc16-ccitt-false"
header = "node16"
payload = "json"
commands = true

[[source]]
name = "uart2"
kind = "serial"
path = "{link2}"
framing = "cobs"
crc = "crc16-ccitt-false"
header = "node16"
payload = "mysensors"
commands = true

[[source]]
name = "uart3"
kind = "serial"
path = "{link3}"
framing = "slip"
crc = "crc16-ccitt-false"
header = "node16"
payload = "lpp"
encryption = "aes-128-ccm"
key_file = "{key_file}"
commands = true

[[source]]
name = "uart4"
kind = "serial"
path = "{link4}"
payload = "json"

[[device]]
name = "relay"
source = "uart0"
address = "17"

[[device]]
name = "dimmer"
source = "uart2"
address = "12"

[[device]]
name = "sealed"
source = "uart3"
address = "5"
"##,
        )
        .toml()
}

/// An MQTT 5 client whose publishes arrive on a channel.
struct Client {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Publish>,
    /// Publishes received while waiting for others, in order.
    seen: Vec<Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(addr: SocketAddr, id: &str, user: &str, subscribe: &[&str]) -> Client {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_credentials(user, format!("{user}-password"));
    options.set_keep_alive(Duration::from_secs(30));
    // Room for answers that echo big correlation data.
    options.set_max_packet_size(Some(256 << 10));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (acked_tx, mut acked) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(p);
                }
                Ok(Event::Incoming(Packet::ConnAck(_)))
                | Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = acked_tx.send(());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let within = Duration::from_secs(10);
    tokio::time::timeout(within, acked.recv())
        .await
        .expect("CONNACK within 10 s");
    for filter in subscribe {
        client
            .subscribe(*filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
        tokio::time::timeout(within, acked.recv())
            .await
            .expect("SUBACK within 10 s");
    }
    Client {
        client,
        rx,
        seen: Vec::new(),
        task,
    }
}

impl Client {
    async fn publish(&self, topic: &str, payload: &str, reply: Option<(&str, &str)>) {
        let properties = PublishProperties {
            response_topic: reply.map(|(t, _)| t.to_string()),
            correlation_data: reply.map(|(_, c)| Bytes::copy_from_slice(c.as_bytes())),
            ..PublishProperties::default()
        };
        self.client
            .publish_with_properties(
                topic,
                QoS::AtLeastOnce,
                false,
                payload.to_string(),
                properties,
            )
            .await
            .expect("publish queued");
    }

    /// The next publish on `topic` whose JSON payload has `status`, within 10 s.
    async fn result(&mut self, topic: &str, status: &str) -> (serde_json::Value, Publish) {
        let matches = |publish: &Publish| {
            publish.topic == topic.as_bytes()
                && serde_json::from_slice::<serde_json::Value>(&publish.payload)
                    .is_ok_and(|json| json["status"] == status)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(at) = self.seen.iter().position(matches) {
                let publish = self.seen.remove(at);
                let json = serde_json::from_slice(&publish.payload).expect("result is JSON");
                return (json, publish);
            }
            let publish = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no {status:?} result on {topic} within 10 s"))
                .expect("client alive");
            self.seen.push(publish);
        }
    }
}

/// One frame the daemon wrote to a dongle, deframed and its CRC checked: header and body.
async fn frame_from(dongle: &mut FakeDongle, framing: Framing) -> Vec<u8> {
    let wire = dongle
        .read_until(Duration::from_secs(10), |got| match framing {
            Framing::Cobs => got.contains(&0),
            _ => got.iter().filter(|&&b| b == 0xC0).count() >= 2,
        })
        .await;
    let mut deframer = Deframer::new(framing, 1024);
    deframer.push(&wire);
    let frame = deframer
        .next_frame()
        .unwrap_or_else(|| panic!("no whole frame in {wire:02x?}"))
        .expect("a valid frame");
    check_and_strip(CrcMode::Crc16CcittFalse, &frame)
        .expect("CRC matches")
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_nodes_on_serial_ports_in_every_format_and_results_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("uart3.key");
    std::fs::write(&key_file, KEY_HEX).unwrap();
    let mut perms = std::fs::metadata(&key_file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&key_file, perms).unwrap();
    let mut dongles: Vec<FakeDongle> = (0..5)
        .map(|i| FakeDongle::plug(&dir.path().join(format!("dongle{i}"))))
        .collect();
    let mut config = base_config()
        .replace("{ops_hash}", &broker::cheap_hash("ops-password"))
        .replace("{viewer_hash}", &broker::cheap_hash("viewer-password"))
        .replace("{key_file}", &key_file.display().to_string());
    for (i, dongle) in dongles.iter().enumerate() {
        config = config.replace(&format!("{{link{i}}}"), &dongle.link.display().to_string());
    }
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("open at 115200 baud", 5, Duration::from_secs(15));

    let mut ops = connect(
        daemon.addr,
        "ops-1",
        "ops",
        &["sensorgate/+/set/result", "replies/ops/#"],
    )
    .await;

    // LPP behind COBS + CRC + node16, to a [[device]] name, with an MQTT 5 response topic.
    ops.publish(
        "sensorgate/relay/set",
        r#"{"digital_out_1": 1}"#,
        Some(("replies/ops/1", "req-1")),
    )
    .await;
    let body = frame_from(&mut dongles[0], Framing::Cobs).await;
    let (link, payload) =
        header::split_header(sensorgate::decode::HeaderFormat::Node16, &body).unwrap();
    assert_eq!(link.address.as_deref(), Some("17"));
    assert_eq!(
        lpp::decode(payload).unwrap().fields,
        vec![("digital_out_1".to_string(), Value::Int(1))]
    );
    let (queued, _) = ops.result("sensorgate/relay/set/result", "queued").await;
    assert_eq!(queued["fields"], serde_json::json!({"digital_out_1": 1}));
    ops.result("sensorgate/relay/set/result", "sent").await;
    for status in ["queued", "sent"] {
        let (json, publish) = ops.result("replies/ops/1", status).await;
        assert_eq!(json["fields"], serde_json::json!({"digital_out_1": 1}));
        let correlation = publish.properties.and_then(|p| p.correlation_data);
        assert_eq!(
            correlation.as_deref(),
            Some(&b"req-1"[..]),
            "correlation data echoed"
        );
    }

    // JSON to an unmapped device ({source}-{address}), once its source has heard it.
    let mut states = connect(daemon.addr, "ops-states", "ops", &["sensorgate/uart1-300"]).await;
    let uplink = append_crc(CrcMode::Crc16CcittFalse, b"\x01\x2c\x01{\"t\":1}");
    dongles[1]
        .write(&encode_frame(Framing::Cobs, &uplink))
        .await;
    tokio::time::timeout(Duration::from_secs(10), states.rx.recv())
        .await
        .expect("uart1-300's reading within 10 s")
        .expect("client alive");
    ops.publish(
        "sensorgate/uart1-300/set",
        r#"{"relay": true, "level": 3}"#,
        None,
    )
    .await;
    let body = frame_from(&mut dongles[1], Framing::Cobs).await;
    let (link, payload) =
        header::split_header(sensorgate::decode::HeaderFormat::Node16, &body).unwrap();
    assert_eq!(link.address.as_deref(), Some("300"));
    let decoded = json::decode(payload).unwrap();
    assert_eq!(decoded.address.as_deref(), Some("300"));
    assert_eq!(
        decoded.fields,
        vec![
            ("level".to_string(), Value::Int(3)),
            ("relay".to_string(), Value::Bool(true)),
        ]
    );
    ops.result("sensorgate/uart1-300/set/result", "sent").await;

    // Raw MySensors bytes for node 5 through node 12's topic: refused, nothing written.
    let for_node_5: String = b"5;1;1;0;2;1".iter().map(|b| format!("{b:02x}")).collect();
    ops.publish(
        "sensorgate/uart2-12/set/raw",
        &for_node_5,
        Some(("replies/ops/raw", "raw-1")),
    )
    .await;
    let (refused, _) = ops.result("replies/ops/raw", "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("raw_commands = true"),
        "{refused}"
    );

    // MySensors C_SET from a plain value on set/{field}.
    ops.publish("sensorgate/uart2-12/set/status_3", "ON", None)
        .await;
    let body = frame_from(&mut dongles[2], Framing::Cobs).await;
    let (_, payload) =
        header::split_header(sensorgate::decode::HeaderFormat::Node16, &body).unwrap();
    assert_eq!(payload, b"12;3;1;0;2;1");
    let decoded = mysensors::decode(payload).unwrap().unwrap();
    assert_eq!(
        decoded.fields,
        vec![("status_3".to_string(), Value::Int(1))]
    );

    // Sealed LPP behind SLIP + CRC + node16: the node opens it with its key, gateway -> node direction.
    ops.publish("sensorgate/uart3-5/set", r#"{"digital_out_2": 0}"#, None)
        .await;
    let body = frame_from(&mut dongles[3], Framing::Slip).await;
    let (head, sealed) = body.split_at(3);
    assert_eq!(head[..2], [0, 5]);
    let key = FrameKey::parse(KEY_HEX, &key_file).unwrap();
    let opened = open(&key, Direction::Downlink, 5, head, sealed).expect("the node opens it");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = 16 * (now.saturating_sub(1_700_000_000 + 60)) as u32;
    assert!(
        opened.counter >= clock,
        "the gateway's counter starts from the clock"
    );
    assert_eq!(
        lpp::decode(&opened.plaintext).unwrap().fields,
        vec![("digital_out_2".to_string(), Value::Int(0))]
    );
    ops.result("sensorgate/uart3-5/set/result", "sent").await;

    // Refused: no write right (the broker drops the publish; the router answers and logs the client).
    let viewer = connect(daemon.addr, "viewer-1", "viewer", &[]).await;
    viewer
        .publish("sensorgate/relay/set", r#"{"digital_out_1": 0}"#, None)
        .await;
    let (refused, _) = ops.result("sensorgate/relay/set/result", "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("not authorized"),
        "{refused}"
    );
    daemon.wait_for_log(
        r#"from client "viewer-1" (user "viewer") refused"#,
        1,
        Duration::from_secs(5),
    );
    // Refused: a source without commands, an unknown device (answered on the response topic only:
    // neither is a device the gateway knows), a payload LPP cannot carry.
    ops.publish(
        "sensorgate/uart4-1/set",
        r#"{"relay": 1}"#,
        Some(("replies/ops/2", "req-2")),
    )
    .await;
    let (refused, _) = ops.result("replies/ops/2", "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("commands are off"),
        "{refused}"
    );
    ops.publish(
        "sensorgate/nobody/set",
        r#"{"relay": 1}"#,
        Some(("replies/ops/3", "req-3")),
    )
    .await;
    let (refused, _) = ops.result("replies/ops/3", "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("unknown device"),
        "{refused}"
    );
    ops.publish("sensorgate/relay/set", r#"{"relay": 1}"#, None)
        .await;
    let (refused, _) = ops.result("sensorgate/relay/set/result", "refused").await;
    assert!(
        refused["reason"].as_str().unwrap().contains("Cayenne"),
        "{refused}"
    );
    // Nothing else was written to the relay's port.
    let extra = dongles[0]
        .read_until(Duration::from_millis(300), |_| false)
        .await;
    assert!(extra.is_empty(), "{extra:02x?}");

    // The counters.
    let mut stats = connect(
        daemon.addr,
        "ops-stats",
        "ops",
        &["sensorgate/gateway/stats"],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let publish = tokio::time::timeout_at(deadline, stats.rx.recv())
            .await
            .expect("stats within 10 s")
            .expect("client alive");
        let json: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
        let uart0 = &json["sources"]["uart0"]["commands"];
        if uart0["sent"] == 1 && json["totals"]["commands"]["sent"] == 4 {
            assert_eq!(uart0["received"], 1, "{json}");
            assert_eq!(
                uart0["refused"], 2,
                "no right, and the field LPP cannot carry: {json}"
            );
            assert!(json["sources"]["uart4"].get("commands").is_none(), "{json}");
            break;
        }
    }
    drop(dongles);
    daemon.stop();
}

/// Sources and devices for the bounds: `uart0` and `uart1` keep commands until the device's next uplink
/// (`uart1` with small byte bounds), `uart2` is a JSON-lines link whose payload carries the node's id.
fn bounds_config() -> String {
    ConfigBuilder::new("bounds-gw")
        .broker("allow_anonymous = false")
        .publish(r#"stats_interval = "1s""#)
        .table(
            r##"
[[broker.user]]
name = "ops"
password_hash = "{ops_hash}"
read = ["#"]
write = ["sensorgate/+/set", "sensorgate/+/set/+", "replies/ops/#"]

[[broker.user]]
name = "ops2"
password_hash = "{ops2_hash}"
read = ["#"]
write = ["sensorgate/+/set", "sensorgate/+/set/+", "replies/ops2/#"]

[[broker.user]]
name = "ops3"
password_hash = "{ops3_hash}"
read = ["#"]
write = ["sensorgate/+/set", "sensorgate/+/set/+", "replies/ops3/#"]

[[broker.user]]
name = "viewer"
password_hash = "{viewer_hash}"
read = ["#"]
write = []

[[source]]
name = "uart0"
kind = "serial"
path = "{link0}"
framing = "cobs"
crc = "crc16-ccitt-false"
header = "node16"
payload = "lpp"
commands = true
deliver = "after_uplink"

[[source]]
name = "uart1"
kind = "serial"
path = "{link1}"
framing = "cobs"
crc = "crc16-ccitt-false"
header = "node16"
payload = "lpp"
commands = true
deliver = "after_uplink"
client_queue_bytes = "256KiB"
command_queue_bytes = "512KiB"

[[source]]
name = "uart2"
kind = "serial"
path = "{link2}"
framing = "lines"
payload = "json"
commands = true

[[device]]
name = "relay"
source = "uart0"
address = "17"

[[device]]
name = "valve"
source = "uart1"
address = "21"

[[device]]
name = "lamp"
source = "uart2"
address = "17"

[[device]]
name = "lamp2"
source = "uart2"
address = "18"
raw_commands = true
"##,
        )
        .toml()
}

/// The daemon with [`bounds_config()`], its three dongles plugged in and open.
fn start_bounds(dir: &std::path::Path) -> (Daemon, Vec<FakeDongle>) {
    let dongles: Vec<FakeDongle> = (0..3)
        .map(|i| FakeDongle::plug(&dir.join(format!("dongle{i}"))))
        .collect();
    let mut config = bounds_config().to_string();
    for user in ["ops", "ops2", "ops3", "viewer"] {
        config = config.replace(
            &format!("{{{user}_hash}}"),
            &broker::cheap_hash(&format!("{user}-password")),
        );
    }
    for (i, dongle) in dongles.iter().enumerate() {
        config = config.replace(&format!("{{link{i}}}"), &dongle.link.display().to_string());
    }
    let daemon = Daemon::start(dir, &config);
    daemon.wait_for_log("open at 115200 baud", 3, Duration::from_secs(15));
    (daemon, dongles)
}

/// The next `{base}/gateway/stats` report `accept` takes, within 20 s.
async fn stats_until(
    stats: &mut Client,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut last = serde_json::Value::Null;
    loop {
        let Ok(publish) = tokio::time::timeout_at(deadline, stats.rx.recv()).await else {
            panic!("no stats report as expected within 20 s; the last: {last}");
        };
        let publish = publish.expect("client alive");
        last = serde_json::from_slice(&publish.payload).expect("stats are JSON");
        if accept(&last) {
            return last;
        }
    }
}

/// A node16 + LPP uplink (a temperature) from `address`, with its CRC, COBS-framed.
fn lpp_uplink(address: u16, seq: u8) -> Vec<u8> {
    let [hi, lo] = address.to_be_bytes();
    let frame = append_crc(CrcMode::Crc16CcittFalse, &[hi, lo, seq, 1, 0x67, 0, 200]);
    encode_frame(Framing::Cobs, &frame)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_to_a_thousand_made_up_devices_leave_a_real_device_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongles) = start_bounds(dir.path());
    let ops = connect(daemon.addr, "ops-flood", "ops", &[]).await;
    let mut ops2 = connect(daemon.addr, "ops2-1", "ops2", &["replies/ops2/#"]).await;
    let mut stats = connect(
        daemon.addr,
        "ops-stats",
        "ops",
        &["sensorgate/gateway/stats"],
    )
    .await;

    // One command to each of 1,024 devices nobody configured and no node sent a frame from, in
    // batches the router's input holds; each batch handled before the next.
    for batch in 0..4 {
        for i in 0..256 {
            let device = format!("sensorgate/uart0-{}/set", 1000 + batch * 256 + i);
            ops.publish(&device, r#"{"digital_out_1": 1}"#, None).await;
        }
        let handled = (batch + 1) * 256;
        stats_until(&mut stats, |json| {
            let uart0 = &json["sources"]["uart0"]["commands"];
            uart0["received"].as_u64().unwrap_or(0) + uart0["refused"].as_u64().unwrap_or(0)
                >= handled
        })
        .await;
    }
    let json = stats_until(&mut stats, |_| true).await;
    let uart0 = &json["sources"]["uart0"]["commands"];
    assert_eq!(
        uart0["received"], 0,
        "no made-up device got a queue: {json}"
    );
    assert_eq!(uart0["refused"], 1024, "{json}");

    // A configured device's command from another client is still queued, and sent after its uplink.
    ops2.publish(
        "sensorgate/relay/set",
        r#"{"digital_out_1": 0}"#,
        Some(("replies/ops2/1", "relay-1")),
    )
    .await;
    let (queued, _) = ops2.result("replies/ops2/1", "queued").await;
    assert_eq!(queued["fields"], serde_json::json!({"digital_out_1": 0}));
    dongles[0].write(&lpp_uplink(17, 1)).await;
    let body = frame_from(&mut dongles[0], Framing::Cobs).await;
    let (link, payload) =
        header::split_header(sensorgate::decode::HeaderFormat::Node16, &body).unwrap();
    assert_eq!(link.address.as_deref(), Some("17"));
    assert_eq!(
        lpp::decode(payload).unwrap().fields,
        vec![("digital_out_1".to_string(), Value::Int(0))]
    );
    ops2.result("replies/ops2/1", "sent").await;

    // A device heard once is commandable under its {source}-{address} name.
    dongles[0].write(&lpp_uplink(300, 1)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        ops2.publish(
            "sensorgate/uart0-300/set",
            r#"{"digital_out_1": 1}"#,
            Some(("replies/ops2/2", "heard-1")),
        )
        .await;
        let answer = tokio::time::timeout_at(deadline, async {
            loop {
                let publish = ops2.rx.recv().await.expect("client alive");
                if publish.topic == "replies/ops2/2".as_bytes() {
                    return serde_json::from_slice::<serde_json::Value>(&publish.payload).unwrap();
                }
            }
        })
        .await
        .expect("an answer for uart0-300 within 10 s");
        if answer["status"] == "queued" {
            break;
        }
        // Refused: the uplink was not read yet; the next answer comes after it.
        assert!(
            answer["reason"]
                .as_str()
                .unwrap()
                .contains("unknown device"),
            "{answer}"
        );
    }
    drop(dongles);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_heard_before_a_restart_is_still_commandable() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongles) = start_bounds(dir.path());
    let mut states = connect(daemon.addr, "ops-states", "ops", &["sensorgate/uart0-300"]).await;
    dongles[0].write(&lpp_uplink(300, 1)).await;
    tokio::time::timeout(Duration::from_secs(10), states.rx.recv())
        .await
        .expect("uart0-300's reading within 10 s")
        .expect("client alive");
    drop(states);
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status:?}");
    drop(dongles);

    // Restarted: the device has sent nothing since, and its name still takes commands.
    let (daemon, dongles) = start_bounds(dir.path());
    let mut ops = connect(daemon.addr, "ops-after", "ops", &["replies/ops/#"]).await;
    ops.publish(
        "sensorgate/uart0-300/set",
        r#"{"digital_out_1": 1}"#,
        Some(("replies/ops/1", "after-restart")),
    )
    .await;
    ops.result("replies/ops/1", "queued").await;
    // A name never heard still does not.
    ops.publish(
        "sensorgate/uart0-301/set",
        r#"{"digital_out_1": 1}"#,
        Some(("replies/ops/2", "never-heard")),
    )
    .await;
    let (refused, _) = ops.result("replies/ops/2", "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("unknown device"),
        "{refused}"
    );
    drop(dongles);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_commands_are_bounded_in_bytes_per_client_and_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, dongles) = start_bounds(dir.path());
    // 16 KiB of raw bytes (LPP takes raw bytes) and 60 kB of correlation data: about 110 kB held each.
    let raw = format!(r#"{{"raw": "{}"}}"#, "ab".repeat(16 << 10));
    let correlation = "c".repeat(60_000);
    let mut clients = Vec::new();
    for user in ["ops", "ops2", "ops3"] {
        let filter = format!("replies/{user}/#");
        clients.push(connect(daemon.addr, &format!("{user}-bytes"), user, &[&filter]).await);
    }
    let mut answers = Vec::new();
    for (client, user, tries) in [(0, "ops", 3), (1, "ops2", 3), (2, "ops3", 1)] {
        for i in 0..tries {
            let topic = format!("replies/{user}/{i}");
            clients[client]
                .publish("sensorgate/valve/set", &raw, Some((&topic, &correlation)))
                .await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let answer = loop {
                let publish = tokio::time::timeout_at(deadline, clients[client].rx.recv())
                    .await
                    .expect("an answer within 10 s")
                    .expect("client alive");
                if publish.topic == topic.as_bytes() {
                    let correlation_back = publish.properties.and_then(|p| p.correlation_data);
                    assert_eq!(correlation_back.as_deref(), Some(correlation.as_bytes()));
                    break serde_json::from_slice::<serde_json::Value>(&publish.payload).unwrap();
                }
            };
            answers.push((user, answer));
        }
    }
    let status: Vec<(&str, String)> = answers
        .iter()
        .map(|(user, a)| (*user, a["status"].as_str().unwrap_or("").to_string()))
        .collect();
    let expected: Vec<(&str, String)> = [
        ("ops", "queued"),
        ("ops", "queued"),
        ("ops", "refused"),
        ("ops2", "queued"),
        ("ops2", "queued"),
        ("ops2", "refused"),
        ("ops3", "refused"),
    ]
    .iter()
    .map(|(u, s)| (*u, s.to_string()))
    .collect();
    assert_eq!(status, expected);
    let reason = |i: usize| answers[i].1["reason"].as_str().unwrap_or("").to_string();
    assert!(reason(2).contains("client_queue_bytes"), "{}", reason(2));
    assert!(reason(5).contains("client_queue_bytes"), "{}", reason(5));
    assert!(reason(6).contains("command_queue_bytes"), "{}", reason(6));
    let mut stats = connect(
        daemon.addr,
        "ops-stats",
        "ops",
        &["sensorgate/gateway/stats"],
    )
    .await;
    let json = stats_until(&mut stats, |json| {
        json["sources"]["uart1"]["commands"]["refused"] == 3
    })
    .await;
    assert_eq!(
        json["sources"]["uart1"]["commands"]["received"], 4,
        "{json}"
    );
    drop(dongles);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_cannot_reach_another_node_nor_split_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, mut dongles) = start_bounds(dir.path());
    let mut ops = connect(daemon.addr, "ops-raw", "ops", &["replies/ops/#"]).await;
    let hex = |text: &str| -> String { text.bytes().map(|b| format!("{b:02x}")).collect() };

    // To lamp (17): a JSON line for node 99. JSON lines carry the node's id: refused without
    // raw_commands = true.
    let other = format!(r#"{{"raw": "{}"}}"#, hex(r#"{"id":99,"relay":1}"#));
    ops.publish("sensorgate/lamp/set", &other, Some(("replies/ops/1", "1")))
        .await;
    let (refused, _) = ops.result("replies/ops/1", "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("raw_commands = true"),
        "{refused}"
    );
    // lamp2 allows raw bytes, but not a newline: it would be two frames, the second for node 99.
    let split = format!(
        r#"{{"raw": "{}"}}"#,
        hex("{\"id\":18,\"relay\":1}\n{\"id\":99,\"relay\":1}")
    );
    ops.publish("sensorgate/lamp2/set", &split, Some(("replies/ops/2", "2")))
        .await;
    let (refused, _) = ops.result("replies/ops/2", "refused").await;
    assert!(
        refused["reason"].as_str().unwrap().contains("newline"),
        "{refused}"
    );
    // One line of raw bytes to lamp2 goes out as it is, and it is the only line written.
    let line = format!(r#"{{"raw": "{}"}}"#, hex(r#"{"id":18,"relay":1}"#));
    ops.publish("sensorgate/lamp2/set", &line, Some(("replies/ops/3", "3")))
        .await;
    ops.result("replies/ops/3", "sent").await;
    let wire = dongles[2]
        .read_until(Duration::from_secs(10), |got| got.contains(&b'\n'))
        .await;
    let more = dongles[2]
        .read_until(Duration::from_millis(300), |_| false)
        .await;
    assert_eq!(
        String::from_utf8_lossy(&[wire, more].concat()),
        "{\"id\":18,\"relay\":1}\n"
    );
    drop(dongles);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_clients_refused_commands_reach_no_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, dongles) = start_bounds(dir.path());
    let mut watcher = connect(daemon.addr, "dashboard", "ops", &["sensorgate/#"]).await;
    let viewer = connect(daemon.addr, "viewer-1", "viewer", &[]).await;
    let text = r#"{"message": "FIRE - evacuate now"}"#;
    for i in 0..20 {
        viewer
            .publish(&format!("sensorgate/made-up-{i}/set"), text, None)
            .await;
    }
    for _ in 0..50 {
        viewer.publish("sensorgate/relay/set", text, None).await;
    }
    // Every one handled: refused, and each result for the relay either published or dropped.
    let started = tokio::time::Instant::now();
    let mut seen = Vec::new();
    let deadline = started + Duration::from_secs(20);
    loop {
        let publish = tokio::time::timeout_at(deadline, watcher.rx.recv())
            .await
            .expect("the refusals handled within 20 s")
            .expect("client alive");
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        if topic == "sensorgate/gateway/stats" {
            let json: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
            let uart0 = &json["sources"]["uart0"]["commands"];
            let results = seen
                .iter()
                .filter(|(t, _)| t == "sensorgate/relay/set/result")
                .count() as u64;
            if uart0["refused"] == 50
                && uart0["results_dropped"].as_u64().unwrap_or(0) + results == 50
            {
                break;
            }
            continue;
        }
        if topic.starts_with("sensorgate/gateway") {
            continue;
        }
        seen.push((
            topic,
            String::from_utf8_lossy(&publish.payload).into_owned(),
        ));
    }
    let elapsed = started.elapsed().as_secs() as usize;
    for (topic, payload) in &seen {
        assert!(!payload.contains("FIRE"), "{topic}: {payload}");
        assert!(!topic.contains("made-up"), "{topic}: {payload}");
        assert_eq!(topic, "sensorgate/relay/set/result", "{payload}");
        let json: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(json["status"], "refused");
        assert!(json.get("fields").is_none(), "{payload}");
        assert!(
            json["reason"].as_str().unwrap().contains("not authorized"),
            "{payload}"
        );
    }
    // A burst of 10, then one a second; the dropped ones counted (above) and logged.
    assert!(!seen.is_empty());
    assert!(
        seen.len() <= 10 + elapsed + 1,
        "{} results in {elapsed} s",
        seen.len()
    );
    daemon.wait_for_log(
        r#"results of refused commands from user "viewer" dropped"#,
        1,
        Duration::from_secs(5),
    );
    drop(dongles);
    daemon.stop();
}

/// A simulated SX1276 at SF12 whose nodes 1 and 2 send every second, with a duty cycle of 0.2 % (7.2 s
/// an hour): about six 7-byte frames (1.16 s on air each), three per client at the default share.
fn radio_config() -> String {
    ConfigBuilder::new("airtime-gw")
        .broker("allow_anonymous = false")
        .publish(r#"stats_interval = "1s""#)
        .table(
            r##"
[[broker.user]]
name = "ops"
password_hash = "{ops_hash}"
read = ["#"]
write = ["sensorgate/+/set", "sensorgate/+/set/+", "replies/ops/#"]

[[broker.user]]
name = "ops2"
password_hash = "{ops2_hash}"
read = ["#"]
write = ["sensorgate/+/set", "sensorgate/+/set/+", "replies/ops2/#"]

[[source]]
name = "lora"
kind = "sx1276"
backend = "simulator"
frequency = 868_100_000
spreading_factor = 12
bandwidth = 125_000
devices = 2
interval = "1s"
commands = true
command_queue = 16
duty_cycle = "0.2%"
"##,
        )
        .toml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_sf12_commands_leave_airtime_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let config = radio_config()
        .replace("{ops_hash}", &broker::cheap_hash("ops-password"))
        .replace("{ops2_hash}", &broker::cheap_hash("ops2-password"));
    let daemon = Daemon::start(dir.path(), &config);
    let mut ops = connect(
        daemon.addr,
        "ops-1",
        "ops",
        &["replies/ops/#", "sensorgate/lora-1", "sensorgate/lora-2"],
    )
    .await;
    let mut ops2 = connect(daemon.addr, "ops2-1", "ops2", &["replies/ops2/#"]).await;
    // Both nodes heard.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut heard = std::collections::BTreeSet::new();
    while heard.len() < 2 {
        let publish = tokio::time::timeout_at(deadline, ops.rx.recv())
            .await
            .expect("both nodes heard within 20 s")
            .expect("client alive");
        heard.insert(publish.topic.to_vec());
    }

    // One client asks for ten SF12 frames: three fit its half of the budget, the rest wait.
    for i in 0..10 {
        ops.publish(
            "sensorgate/lora-1/set",
            r#"{"digital_out_1": 1}"#,
            Some((&format!("replies/ops/{i}"), "a")),
        )
        .await;
    }
    for i in 0..3 {
        let (sent, _) = ops.result(&format!("replies/ops/{i}"), "sent").await;
        assert!(
            sent["reason"].as_str().unwrap().contains("ms on air"),
            "{sent}"
        );
    }
    // Another client's command still goes out.
    ops2.publish(
        "sensorgate/lora-2/set",
        r#"{"digital_out_1": 0}"#,
        Some(("replies/ops2/1", "b")),
    )
    .await;
    ops2.result("replies/ops2/1", "sent").await;
    // The first client's fourth frame waits for its own share, not anyone else's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(publish)) = tokio::time::timeout_at(deadline, ops.rx.recv()).await {
        let json: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap_or_default();
        assert!(
            !(publish.topic == "replies/ops/3".as_bytes() && json["status"] == "sent"),
            "the first client used more than its share: {json}"
        );
    }
    daemon.stop();
}
