//! Commands through the real daemon: MQTT 5 clients on 127.0.0.1 publish on set topics, node simulators
//! on the other ends of pseudo-terminals read what the daemon wrote and decode it with the gateway's own
//! deframer, CRC check, header split, AES-CCM opening and payload decoders (LPP, JSON and MySensors behind
//! COBS + CRC + node16, and LPP sealed behind SLIP). Results arrive on `set/result` and on the request's
//! response topic with its correlation data echoed; a client without the write right, a source without
//! `commands` and an unknown device are refused; the counters reach `{base}/gateway/stats`. Every wait is
//! bounded.

use sensorgate_testkit::broker;
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
use sensorgate::frame::crc::{check_and_strip, CrcMode};
use sensorgate::frame::{Deframer, Framing};
use sensorgate::model::Value;

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";

const CONFIG: &str = r##"
[gateway]
id = "cmd-gw"
base_topic = "sensorgate"
state_dir = "{state_dir}"

[broker]
allow_anonymous = false

[[broker.listener]]
bind = "127.0.0.1:{port}"

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

[publish]
stats_interval = "1s"

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
"##;

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
    let mut config = CONFIG
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

    // JSON to an unmapped device ({source}-{address}).
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
    // Refused: a source without commands, an unknown device, a payload LPP cannot carry.
    ops.publish("sensorgate/uart4-1/set", r#"{"relay": 1}"#, None)
        .await;
    let (refused, _) = ops.result("sensorgate/uart4-1/set/result", "refused").await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("commands are off"),
        "{refused}"
    );
    ops.publish("sensorgate/nobody/set", r#"{"relay": 1}"#, None)
        .await;
    let (refused, _) = ops.result("sensorgate/nobody/set/result", "refused").await;
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
