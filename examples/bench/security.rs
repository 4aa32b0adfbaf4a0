//! What security costs, per message, for one typical reading (an 11-byte Cayenne LPP frame behind a
//! RadioHead header on the radio; its JSON state message upstream), all rows measured in the same run.
//! The real daemon reads the frames from a pseudo-terminal serial port (COBS) and forwards each state
//! message at QoS 1 to Debian's mosquitto through a counting TCP relay, which counts the bytes on the
//! socket in both directions: over plain MQTT, over TLS 1.3, payload-encrypted (the ChaCha20-Poly1305
//! envelope) over either, and with encrypted sensor frames (AES-128-CCM, decrypt + replay check). The
//! gateway's CPU per message is the daemon's user + system time (`/proc/PID/stat`) over the window
//! divided by the messages, beside the ratio to the plain row; since that includes everything else the
//! daemon does per reading and the machine is noisy, each layer's own crypto is also timed in-process
//! over many iterations (the rustls record seal of the PUBLISH and open of the PUBACK, the envelope
//! seal, the frame guard's open), as a share of the plain row. The TLS handshake (full and resumed, with
//! the uplink's own rustls configuration) is measured through the relay as bytes and milliseconds from
//! TCP connect to CONNACK. Airtime comes from the radio drivers' time-on-air formula.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::tokio_rustls::rustls::{self, pki_types::ServerName};
use rumqttc::tokio_rustls::TlsConnector;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use sensorgate::crypto::envelope;
use sensorgate::crypto::frame::{self, Direction};
use sensorgate::crypto::{EnvelopeKey, FrameGuard, FrameKey, FrameKeys, Sealer, SourceKeys};
use sensorgate::decode::{encode_header, HeaderFormat, LppWriter, PacketDecoder, PayloadFormat};
use sensorgate::frame::crc::CrcMode;
use sensorgate::frame::{encode_frame, Framing};
use sensorgate::replay::ReplayGuard;
use sensorgate::source::radio::{time_on_air, RadioSettings};

use crate::daemon::Daemon;
use crate::measure::{due, ratio, Usage};
use crate::mosquitto::{BrokerConfig, Certs, Mosquitto, TlsListener, MOSQUITTO};

const SOURCE: &str = "lora";
/// Distinct nodes the frames rotate over (RadioHead FROM 1..=DEVICES).
const DEVICES: u64 = 20;
const PREFIX: &str = "site/";
/// Frames per second written to the port.
const RATE: u64 = 1_000;
const KEY_ID: u8 = 7;
const FRAME_KEY: [u8; 16] = [0x2b; 16];
const ENVELOPE_KEY: [u8; 32] = [0x5c; 32];

/// The typical reading: temperature, humidity, battery voltage (11 bytes of LPP).
pub fn lpp() -> Vec<u8> {
    LppWriter::new()
        .temperature(1, 21.5)
        .relative_humidity(2, 48.0)
        .voltage(3, 3.3)
        .into_bytes()
}

/// The frame as the node sends it on the radio (header, payload; sealed when `key` is given).
pub fn radio_frame(address: u8, counter: u32, key: Option<&FrameKey>) -> Vec<u8> {
    let header = encode_header(HeaderFormat::RadioHead, address.into(), counter as u8);
    let payload = lpp();
    match key {
        Some(key) => frame::seal(
            key,
            Direction::Uplink,
            address.into(),
            &header,
            counter,
            &payload,
        )
        .expect("an 11-byte payload seals"),
        None => [header, payload].concat(),
    }
}

/// Milliseconds on air at `spreading_factor` (125 kHz, 4/5, preamble 8, explicit header, CRC).
pub fn airtime_ms(spreading_factor: u8, bytes: usize) -> f64 {
    let settings = RadioSettings {
        spreading_factor,
        ..RadioSettings::default()
    };
    time_on_air(&settings, bytes).as_secs_f64() * 1e3
}

/// Bytes one relayed connection carried.
#[derive(Debug, Default)]
struct Counts {
    up: AtomicU64,
    down: AtomicU64,
}

/// A TCP relay on 127.0.0.1 to `target`, counting the bytes of each connection both ways (up: client to
/// broker). Stopped when dropped.
struct Relay {
    port: u16,
    connections: Arc<Mutex<Vec<Arc<Counts>>>>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: impl Fn(u64),
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count(n as u64);
                if to.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

impl Relay {
    async fn start(target: u16) -> Result<Relay, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("relay: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("relay: {e}"))?
            .port();
        let connections: Arc<Mutex<Vec<Arc<Counts>>>> = Arc::default();
        let list = connections.clone();
        let task = tokio::spawn(async move {
            let mut pumps = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let _ = (client.set_nodelay(true), broker.set_nodelay(true));
                let counts = Arc::new(Counts::default());
                if let Ok(mut list) = list.lock() {
                    list.push(counts.clone());
                }
                let (client_read, client_write) = client.into_split();
                let (broker_read, broker_write) = broker.into_split();
                let up = counts.clone();
                pumps.spawn(pump(client_read, broker_write, move |n| {
                    up.up.fetch_add(n, Ordering::Relaxed);
                }));
                pumps.spawn(pump(broker_read, client_write, move |n| {
                    counts.down.fetch_add(n, Ordering::Relaxed);
                }));
            }
        });
        Ok(Relay {
            port,
            connections,
            task,
        })
    }

    /// (up, down) over every connection so far.
    fn totals(&self) -> (u64, u64) {
        let list = self
            .connections
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        list.iter().fold((0, 0), |(u, d), c| {
            (
                u + c.up.load(Ordering::Relaxed),
                d + c.down.load(Ordering::Relaxed),
            )
        })
    }

    /// (up, down) of the newest connection.
    fn last(&self) -> (u64, u64) {
        self.connections
            .lock()
            .ok()
            .and_then(|l| l.last().cloned())
            .map(|c| (c.up.load(Ordering::Relaxed), c.down.load(Ordering::Relaxed)))
            .unwrap_or((0, 0))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A received message: topic and payload.
type Message = (String, Vec<u8>);

/// A subscriber on mosquitto's plain listener counting the forwarded state messages.
struct Cloud {
    messages: Arc<AtomicU64>,
    payload_bytes: Arc<AtomicU64>,
    sample: Arc<Mutex<Option<Message>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cloud {
    fn count(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    async fn wait_for(&self, target: u64, quiet: Duration, overall: Duration) -> u64 {
        let deadline = Instant::now() + overall;
        let mut last = self.count();
        let mut last_change = Instant::now();
        while self.count() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = self.count();
            if now != last {
                last = now;
                last_change = Instant::now();
            } else if last_change.elapsed() > quiet {
                break;
            }
        }
        self.count()
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscriber to `site/sensorgate/+` whose SUBACK has arrived (10 s bound).
async fn cloud(port: u16) -> Result<Cloud, String> {
    let mut options = MqttOptions::new(format!("bench-security-{port}"), "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 16, 1 << 16);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let messages = Arc::new(AtomicU64::new(0));
    let payload_bytes = Arc::new(AtomicU64::new(0));
    let sample: Arc<Mutex<Option<Message>>> = Arc::default();
    let (subacked_tx, mut subacked) = tokio::sync::mpsc::unbounded_channel();
    let task = {
        let (messages, payload_bytes, sample) =
            (messages.clone(), payload_bytes.clone(), sample.clone());
        let client = client.clone();
        tokio::spawn(async move {
            let _client = client;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        payload_bytes.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        if let Ok(mut s) = sample.lock() {
                            *s = Some((p.topic.clone(), p.payload.to_vec()));
                        }
                        messages.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacked_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    };
    client
        .subscribe(format!("{PREFIX}sensorgate/+"), QoS::AtMostOnce)
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), subacked.recv())
        .await
        .map_err(|_| "no SUBACK from mosquitto within 10 s".to_string())?;
    Ok(Cloud {
        messages,
        payload_bytes,
        sample,
        task,
    })
}

/// One uplink configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    Plain,
    Tls,
    Envelope,
    EnvelopeTls,
    Frames,
}

impl Layer {
    pub const ALL: [Layer; 5] = [
        Layer::Plain,
        Layer::Tls,
        Layer::Envelope,
        Layer::EnvelopeTls,
        Layer::Frames,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Layer::Plain => "MQTT plain",
            Layer::Tls => "MQTT over TLS 1.3",
            Layer::Envelope => "payload-encrypted, plain transport",
            Layer::EnvelopeTls => "payload-encrypted over TLS",
            Layer::Frames => "encrypted sensor frame (decrypt + replay check)",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Layer::Tls | Layer::EnvelopeTls)
    }

    fn envelope(self) -> bool {
        matches!(self, Layer::Envelope | Layer::EnvelopeTls)
    }

    fn frames(self) -> bool {
        self == Layer::Frames
    }
}

/// What one uplink configuration measured.
#[derive(Clone, Debug)]
pub struct Row {
    pub layer: Layer,
    pub sent: u64,
    pub received: u64,
    /// Bytes per message gateway -> broker and back (PUBACKs), on the socket.
    pub up: f64,
    pub down: f64,
    /// Mean payload the cloud received, bytes.
    pub payload: f64,
    /// Mean bytes of a frame on the radio (header, payload, counter and MIC when sealed).
    pub radio_bytes: usize,
    pub cpu_us: f64,
    /// For payload-encrypted rows: whether a received envelope opened with the key under its topic.
    pub opened: Option<bool>,
    /// The last message the cloud received (topic, payload).
    pub sample: Option<(String, Vec<u8>)>,
}

/// The configuration of one row.
pub fn body(layer: Layer, pty: &str, cloud_port: u16, ca: &Path, keys: &Path) -> String {
    let mut body = format!(
        "[publish]\nfield_topics = false\n\
         [[source]]\nname = \"{SOURCE}\"\nkind = \"serial\"\npath = \"{pty}\"\nframing = \"cobs\"\n\
         header = \"radiohead\"\npayload = \"lpp\"\n"
    );
    if layer.frames() {
        body.push_str(&format!(
            "encryption = \"aes-128-ccm\"\nkey_file = \"{}\"\n",
            keys.join("frame.key").display()
        ));
    }
    if layer.tls() {
        body.push_str(&format!(
            "[upstream]\nurl = \"mqtts://127.0.0.1:{cloud_port}\"\nca_file = \"{}\"\n",
            ca.display()
        ));
    } else {
        body.push_str(&format!(
            "[upstream]\nurl = \"mqtt://127.0.0.1:{cloud_port}\"\nallow_plaintext = true\n"
        ));
    }
    body.push_str(&format!(
        "client_id = \"bench-security\"\n[[upstream.forward]]\nfilter = \"sensorgate/+\"\n\
         prefix = \"{PREFIX}\"\nqos = 1\n"
    ));
    if layer.envelope() {
        body.push_str(&format!(
            "encrypt = {{ key_file = \"{}\", key_id = {KEY_ID} }}\n",
            keys.join("uplink.key").display()
        ));
    }
    body
}

fn write_keys(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    for (name, bytes) in [
        ("frame.key", FRAME_KEY.to_vec()),
        ("uplink.key", ENVELOPE_KEY.to_vec()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, sensorgate::crypto::to_hex(&bytes) + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn uplink_row(
    layer: Layer,
    broker: &Mosquitto,
    certs: &Certs,
    keys: &Path,
    messages: u64,
) -> Result<Row, String> {
    let target = if layer.tls() {
        broker.tls_port.ok_or("mosquitto has no TLS listener")?
    } else {
        broker.port
    };
    let relay = Relay::start(target).await?;
    let cloud = cloud(broker.port).await?;
    let (mut master, path) = crate::e2e::pty();
    let daemon = Daemon::start(&body(layer, &path, relay.port, &certs.ca, keys)).await;
    let key = FrameKey::from_bytes(FRAME_KEY);
    let key = layer.frames().then_some(&key);
    let mut counter = 0u32;
    let mut radio_bytes = 0;
    // The COBS-framed bytes of frame `n` (a node's counter grows with every frame).
    let mut next = |n: u64| {
        counter += 1;
        let frame = radio_frame((n % DEVICES + 1) as u8, counter, key);
        radio_bytes = frame.len();
        encode_frame(Framing::Cobs, &frame)
    };
    // Warm-up: every node once, which also waits for the uplink's connection.
    for n in 0..DEVICES {
        let _ = AsyncWriteExt::write_all(&mut master, &next(n)).await;
    }
    let warm = cloud
        .wait_for(DEVICES, Duration::from_secs(15), Duration::from_secs(20))
        .await;
    if warm < DEVICES {
        return Err(format!(
            "{}: the cloud received {warm} of {DEVICES} warm-up messages within 20 s",
            layer.label()
        ));
    }
    let (count0, payload0) = (cloud.count(), cloud.payload_bytes.load(Ordering::Relaxed));
    let (up0, down0) = relay.totals();
    let before = Usage::of(&[daemon.pid()]);
    let start = Instant::now();
    for n in 0..messages {
        tokio::time::sleep_until(due(start, n, RATE).into()).await;
        let _ = AsyncWriteExt::write_all(&mut master, &next(n)).await;
    }
    let received = cloud
        .wait_for(
            count0 + messages,
            Duration::from_secs(5),
            Duration::from_secs(60),
        )
        .await
        - count0;
    // The last PUBACKs: wait until the relay has been quiet for 100 ms (2 s at most).
    let settle = Instant::now() + Duration::from_secs(2);
    let mut last = relay.totals();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = relay.totals();
        if now == last || Instant::now() > settle {
            break;
        }
        last = now;
    }
    let after = Usage::of(&[daemon.pid()]);
    let (up1, down1) = relay.totals();
    drop(daemon);
    let per = |bytes: u64| bytes as f64 / received.max(1) as f64;
    let sample = cloud.sample.lock().ok().and_then(|s| s.clone());
    let opened = layer.envelope().then(|| {
        sample.clone().is_some_and(|(topic, payload)| {
            envelope::open(
                &EnvelopeKey::from_bytes(ENVELOPE_KEY),
                Some(KEY_ID),
                &topic,
                &payload,
            )
            .is_ok()
        })
    });
    Ok(Row {
        layer,
        sent: messages,
        received,
        up: per(up1 - up0),
        down: per(down1 - down0),
        payload: per(cloud.payload_bytes.load(Ordering::Relaxed) - payload0),
        radio_bytes,
        cpu_us: (after.cpu_seconds - before.cpu_seconds) * 1e6 / received.max(1) as f64,
        opened,
        sample,
    })
}

/// Bytes and time from TCP connect to CONNACK.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub up: u64,
    pub down: u64,
    pub ms: f64,
    /// Until the TLS handshake (or the TCP connect) completed.
    pub handshake_ms: f64,
    pub resumed: bool,
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    variable.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    variable.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, variable.len() as u8];
    packet.extend(variable);
    packet
}

/// One MQTT connection through `relay` to CONNACK; TLS with `config` when given.
async fn set_up(relay: &Relay, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Setup, String> {
    let start = Instant::now();
    let tcp = TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tcp_ms = start.elapsed().as_secs_f64() * 1e3;
    let connect = connect_packet("bench-handshake");
    let mut connack = [0u8; 4];
    let resumed = match tls {
        Some(config) => {
            let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
            let mut stream = TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with mosquitto: {e}"))?;
            let handshake_ms = start.elapsed().as_secs_f64() * 1e3;
            stream
                .write_all(&connect)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .read_exact(&mut connack)
                .await
                .map_err(|e| format!("CONNACK: {e}"))?;
            let resumed =
                stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            let (up, down) = relay.last();
            let _ = stream.write_all(&[0xe0, 0]).await;
            let _ = stream.shutdown().await;
            return Ok(Setup {
                up,
                down,
                ms,
                handshake_ms,
                resumed,
            });
        }
        None => {
            let mut tcp = tcp;
            tcp.write_all(&connect).await.map_err(|e| e.to_string())?;
            tcp.read_exact(&mut connack)
                .await
                .map_err(|e| format!("CONNACK: {e}"))?;
            false
        }
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let (up, down) = relay.last();
    Ok(Setup {
        up,
        down,
        ms,
        handshake_ms: tcp_ms,
        resumed,
    })
}

/// The median of each figure over `runs` set-ups (bytes: the median too, they hardly vary).
fn median_setup(mut runs: Vec<Setup>) -> Setup {
    if runs.is_empty() {
        return Setup::default();
    }
    let mid = runs.len() / 2;
    let resumed = runs.iter().all(|r| r.resumed);
    runs.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let ms = runs[mid].ms;
    runs.sort_by(|a, b| a.handshake_ms.total_cmp(&b.handshake_ms));
    let handshake_ms = runs[mid].handshake_ms;
    runs.sort_by_key(|r| r.up + r.down);
    Setup {
        ms,
        handshake_ms,
        resumed,
        ..runs[mid].clone()
    }
}

/// Connection set-up: plain, TLS full, TLS resumed.
#[derive(Clone, Debug, Default)]
pub struct Handshakes {
    pub plain: Setup,
    pub full: Setup,
    pub resumed: Setup,
    pub suite: String,
    pub runs: usize,
}

async fn handshakes(broker: &Mosquitto, certs: &Certs, runs: usize) -> Result<Handshakes, String> {
    let plain_relay = Relay::start(broker.port).await?;
    let tls_relay = Relay::start(broker.tls_port.ok_or("no TLS listener")?).await?;
    let config = || {
        sensorgate::uplink::tls::client_config(Some(&certs.ca), None, None)
            .map_err(|e| e.to_string())
    };
    let (mut plain, mut full, mut resumed) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        plain.push(set_up(&plain_relay, None).await?);
        full.push(set_up(&tls_relay, Some(&config()?)).await?);
    }
    // A configuration that has seen one full handshake (and its tickets) resumes afterwards, as the
    // uplink's does on a reconnect.
    let shared = config()?;
    set_up(&tls_relay, Some(&shared)).await?;
    for _ in 0..runs {
        resumed.push(set_up(&tls_relay, Some(&shared)).await?);
    }
    let suite = {
        let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect(("127.0.0.1", tls_relay.port))
            .await
            .map_err(|e| e.to_string())?;
        let stream = TlsConnector::from(config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, connection) = stream.get_ref();
        format!(
            "{:?}, {:?}",
            connection.protocol_version().ok_or("no version")?,
            connection
                .negotiated_cipher_suite()
                .ok_or("no suite")?
                .suite()
        )
    };
    Ok(Handshakes {
        plain: median_setup(plain),
        full: median_setup(full),
        resumed: median_setup(resumed),
        suite,
        runs,
    })
}

/// Each layer's own work per message, timed in-process (µs).
#[derive(Clone, Debug, Default)]
pub struct Crypto {
    pub iterations: u64,
    /// rustls: seal the PUBLISH into a record and open the PUBACK's.
    pub tls_us: f64,
    pub envelope_us: f64,
    /// Frame guard open (CCM decrypt + replay check) and decode, beside decode alone.
    pub frame_open_decode_us: f64,
    pub decode_us: f64,
}

fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let remaining = 2 + topic.len() + 2 + payload.len();
    let mut packet = vec![0x32];
    let mut left = remaining;
    loop {
        let mut byte = (left % 128) as u8;
        left /= 128;
        if left > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if left == 0 {
            break;
        }
    }
    packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    packet.extend_from_slice(topic.as_bytes());
    packet.extend_from_slice(&[0, 1]);
    packet.extend_from_slice(payload);
    packet
}

/// Moves every pending TLS record from one connection to the other.
fn transfer(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl rustls::SideData>>,
) -> Result<(), String> {
    let mut buffer = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buffer).map_err(|e| e.to_string())?;
    }
    let mut slice = &buffer[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).map_err(|e| e.to_string())?;
        to.process_new_packets().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn pem_chain(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).map_err(|e| e.to_string())?);
    rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

fn tls_cost(certs: &Certs, publish: &[u8], iterations: u64) -> Result<f64, String> {
    let chain = pem_chain(&certs.server_cert)?;
    let mut reader =
        std::io::BufReader::new(std::fs::File::open(&certs.server_key).map_err(|e| e.to_string())?);
    let key = rustls_pemfile::private_key(&mut reader)
        .map_err(|e| e.to_string())?
        .ok_or("no server key")?;
    let client_config = sensorgate::uplink::tls::client_config(Some(&certs.ca), None, None)
        .map_err(|e| e.to_string())?;
    // The uplink's own provider, whichever the tree builds rustls with.
    let provider = client_config.crypto_provider().clone();
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut client =
        rustls::ClientConnection::new(client_config, name).map_err(|e| e.to_string())?;
    let mut server =
        rustls::ServerConnection::new(Arc::new(server_config)).map_err(|e| e.to_string())?;
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        transfer(&mut client, &mut server)?;
        transfer(&mut server, &mut client)?;
    }
    transfer(&mut server, &mut client)?; // session tickets
                                         // The broker's PUBACK records, made beforehand: only the gateway's side is timed.
    let mut pubacks = Vec::with_capacity(iterations as usize);
    for _ in 0..iterations {
        server
            .writer()
            .write_all(&[0x40, 2, 0, 1])
            .map_err(|e| e.to_string())?;
        let mut record = Vec::new();
        server.write_tls(&mut record).map_err(|e| e.to_string())?;
        pubacks.push(record);
    }
    let mut sink = Vec::with_capacity(4096);
    let mut ack = [0u8; 4];
    let start = Instant::now();
    for record in &pubacks {
        client
            .writer()
            .write_all(publish)
            .map_err(|e| e.to_string())?;
        sink.clear();
        client.write_tls(&mut sink).map_err(|e| e.to_string())?;
        black_box(&sink);
        let mut slice = &record[..];
        client.read_tls(&mut slice).map_err(|e| e.to_string())?;
        client.process_new_packets().map_err(|e| e.to_string())?;
        client
            .reader()
            .read_exact(&mut ack)
            .map_err(|e| e.to_string())?;
        black_box(&ack);
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / iterations as f64)
}

fn crypto_costs(
    certs: &Certs,
    topic: &str,
    payload: &[u8],
    iterations: u64,
) -> Result<Crypto, String> {
    let tls_us = tls_cost(certs, &mqtt_publish(topic, payload), iterations)?;

    let sealer = Sealer::new(EnvelopeKey::from_bytes(ENVELOPE_KEY), KEY_ID);
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(
            sealer
                .seal(black_box(topic), black_box(payload))
                .map_err(|e| e.to_string())?,
        );
    }
    let envelope_us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;

    let decoder = PacketDecoder {
        crc: CrcMode::None,
        header: HeaderFormat::RadioHead,
        payload: PayloadFormat::Lpp,
    };
    let packet = |bytes: Vec<u8>| sensorgate::model::Packet {
        source: SOURCE.into(),
        bytes,
        received_at: SystemTime::now(),
        radio: None,
    };
    let key = FrameKey::from_bytes(FRAME_KEY);
    let sealed: Vec<_> = (1..=iterations as u32)
        .map(|c| packet(radio_frame(5, c, Some(&key))))
        .collect();
    let plain = packet(radio_frame(5, 1, None));
    let mut keys = FrameKeys::default();
    keys.sources.insert(
        SOURCE.into(),
        SourceKeys {
            default: Some(key),
            ..SourceKeys::default()
        },
    );
    let guard = FrameGuard::new(keys, ReplayGuard::in_memory());
    let start = Instant::now();
    for p in &sealed {
        let (decoder, opened) = guard.open(&decoder, p).map_err(|e| e.to_string())?;
        black_box(decoder.decode(&opened).map_err(|e| e.to_string())?);
    }
    let frame_open_decode_us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(
            decoder
                .decode(black_box(&plain))
                .map_err(|e| e.to_string())?,
        );
    }
    let decode_us = start.elapsed().as_secs_f64() * 1e6 / iterations as f64;
    Ok(Crypto {
        iterations,
        tls_us,
        envelope_us,
        frame_open_decode_us,
        decode_us,
    })
}

/// Everything the section shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub handshakes: Handshakes,
    pub crypto: Crypto,
    pub sample_topic: String,
    pub sample_payload: usize,
    pub failed: Option<String>,
}

pub async fn run(quick: bool) -> Report {
    match measure(quick).await {
        Ok(report) => report,
        Err(why) => Report {
            failed: Some(why),
            ..Report::default()
        },
    }
}

async fn measure(quick: bool) -> Result<Report, String> {
    if !Path::new(MOSQUITTO).exists() {
        return Err(format!("{MOSQUITTO} is missing (Debian package mosquitto)"));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let certs = Certs::generate(dir.path());
    let keys: PathBuf = dir.path().to_path_buf();
    write_keys(&keys)?;
    let broker = Mosquitto::start(BrokerConfig {
        tls: Some(TlsListener {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            require_client_ca: None,
        }),
        ..BrokerConfig::default()
    });
    let messages = if quick { 500 } else { 10_000 };
    let mut rows = Vec::new();
    for layer in Layer::ALL {
        let row = uplink_row(layer, &broker, &certs, &keys, messages).await?;
        eprintln!(
            "  {}: {:.0} + {:.0} bytes/message, {:.1} µs CPU/message",
            layer.label(),
            row.up,
            row.down,
            row.cpu_us
        );
        rows.push(row);
    }
    let handshakes = handshakes(&broker, &certs, if quick { 5 } else { 21 }).await?;
    // The in-process timings take the plain row's real message.
    let (sample_topic, sample_payload) = rows
        .first()
        .and_then(|r| r.sample.clone())
        .ok_or("the plain row received no message")?;
    let iterations = if quick { 5_000 } else { 100_000 };
    let crypto = tokio::task::block_in_place(|| {
        crypto_costs(&certs, &sample_topic, &sample_payload, iterations)
    })?;
    Ok(Report {
        rows,
        handshakes,
        crypto,
        sample_topic,
        sample_payload: sample_payload.len(),
        failed: None,
    })
}

fn plain_row(report: &Report) -> Option<&Row> {
    report.rows.iter().find(|r| r.layer == Layer::Plain)
}

fn times(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.2}×"))
        .unwrap_or_else(|| "-".into())
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::from(
        "## Security: what each layer costs per message\n\n\
         One typical reading: an 11-byte Cayenne LPP frame (temperature, humidity, battery voltage) behind a\n\
         4-byte RadioHead header, read by the real daemon from a pty serial port, and its JSON state message\n\
         forwarded at QoS 1 to Debian's mosquitto through a counting TCP relay. Bytes are counted on the\n\
         socket (TCP payload; up = PUBLISH to the broker, down = its PUBACK). Gateway CPU is the daemon's\n\
         user + system time over the window divided by the messages, so it includes all of its work per\n\
         reading (decoding, the embedded broker, the uplink); the layer's own crypto is timed in-process\n\
         over many iterations, beside it as a share of the plain row's CPU. The rows run one after another\n\
         in the same run; the machine is shared, so compare the ratios.\n\n",
    );
    if let Some(why) = &report.failed {
        out.push_str(&format!("Not run: {why}\n\n"));
        return out;
    }
    let plain = plain_row(report);
    let plain_bytes = plain.map(|r| r.up + r.down).unwrap_or(0.0);
    let plain_cpu = plain.map(|r| r.cpu_us).unwrap_or(0.0);
    let c = &report.crypto;
    let h = &report.handshakes;
    let share = |us: f64| match ratio(us, plain_cpu) {
        Some(r) => format!("{us:.2} ({:.1} % of plain)", r * 100.0),
        None => format!("{us:.2}"),
    };
    out.push_str(
        "| layer | bytes per message on the wire | vs plain | CPU µs per message (gateway) | vs plain | the layer's own crypto, µs per message | extra |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for row in &report.rows {
        let bytes = row.up + row.down;
        let (bytes_cell, bytes_ratio) = if row.layer.frames() {
            (
                format!(
                    "{} on the radio ({} plain); upstream {:.0} ({:.0} up + {:.0} down)",
                    row.radio_bytes,
                    row.radio_bytes - frame::OVERHEAD,
                    bytes,
                    row.up,
                    row.down
                ),
                times(ratio(
                    row.radio_bytes as f64,
                    (row.radio_bytes - frame::OVERHEAD) as f64,
                )) + " (radio)",
            )
        } else {
            (
                format!("{bytes:.0} ({:.0} up + {:.0} down)", row.up, row.down),
                times(ratio(bytes, plain_bytes)),
            )
        };
        let own = match row.layer {
            Layer::Plain => "-".to_string(),
            Layer::Tls => format!("{} record seal + open (rustls)", share(c.tls_us)),
            Layer::Envelope => format!("{} envelope seal", share(c.envelope_us)),
            Layer::EnvelopeTls => {
                format!("{} both", share(c.tls_us + c.envelope_us))
            }
            Layer::Frames => format!(
                "{} decrypt + replay check ({:.2} open + decode vs {:.2} decode: {})",
                share((c.frame_open_decode_us - c.decode_us).max(0.0)),
                c.frame_open_decode_us,
                c.decode_us,
                times(ratio(c.frame_open_decode_us, c.decode_us))
            ),
        };
        let mut extra = format!("payload {:.0} bytes", row.payload);
        if row.received < row.sent {
            extra.push_str(&format!(
                "; only {} of {} arrived",
                crate::thousands(row.received as f64),
                crate::thousands(row.sent as f64)
            ));
        }
        if row.opened == Some(false) {
            extra.push_str("; the envelope did NOT open with the key");
        } else if row.opened == Some(true) {
            extra.push_str(" (opens with the key under its topic)");
        }
        if row.layer == Layer::Tls {
            extra.push_str(&format!(
                "; TCP connect to CONNACK: full handshake {} bytes ({} up + {} down), handshake {:.1} ms, CONNACK at {:.1} ms; resumed{} {} bytes ({} up + {} down), {:.1} ms, {:.1} ms; plain MQTT {} bytes, CONNACK at {:.1} ms ({})",
                h.full.up + h.full.down,
                h.full.up,
                h.full.down,
                h.full.handshake_ms,
                h.full.ms,
                if h.resumed.resumed { "" } else { " (NOT resumed: the broker gave no ticket)" },
                h.resumed.up + h.resumed.down,
                h.resumed.up,
                h.resumed.down,
                h.resumed.handshake_ms,
                h.resumed.ms,
                h.plain.up + h.plain.down,
                h.plain.ms,
                h.suite
            ));
        }
        if row.layer.frames() {
            let plain_len = row.radio_bytes - frame::OVERHEAD;
            let (p7, e7) = (airtime_ms(7, plain_len), airtime_ms(7, row.radio_bytes));
            let (p12, e12) = (airtime_ms(12, plain_len), airtime_ms(12, row.radio_bytes));
            extra.push_str(&format!(
                "; airtime SF7 {p7:.1} -> {e7:.1} ms (+{:.1}, {}), SF12 {p12:.0} -> {e12:.0} ms (+{:.0}, {})",
                e7 - p7,
                times(ratio(e7, p7)),
                e12 - p12,
                times(ratio(e12, p12))
            ));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {} | {} | {} |\n",
            row.layer.label(),
            bytes_cell,
            bytes_ratio,
            row.cpu_us,
            times(ratio(row.cpu_us, plain_cpu)),
            own,
            extra
        ));
    }
    let messages = report.rows.first().map(|r| r.sent).unwrap_or(0);
    out.push_str(&format!(
        "\n{} messages per row at {}/s after a warm-up of one per node ({DEVICES} nodes); handshakes: the\n\
         median of {} connections each, with the uplink's own rustls configuration (`resumed`: the same\n\
         configuration again, as on the uplink's reconnects); in-process timings over {} iterations with\n\
         the typical message (`{}`, {} bytes of payload). Airtime: the radio drivers' time-on-air formula\n\
         (125 kHz, 4/5, preamble 8, explicit header, CRC); it counts against the duty cycle. The gap between the\n\
         TLS handshake and the CONNACK (about the 40 ms delayed-ACK timer) is most likely mosquitto's default\n\
         without `set_tcp_nodelay`: Nagle's algorithm holding a small write after its session tickets.\n",
        crate::thousands(messages as f64),
        crate::thousands(RATE as f64),
        h.runs,
        crate::thousands(c.iterations as f64),
        report.sample_topic,
        report.sample_payload,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typical_reading_is_eleven_bytes_of_lpp() {
        assert_eq!(lpp().len(), 11);
        assert_eq!(radio_frame(5, 1, None).len(), 15);
        let key = FrameKey::from_bytes(FRAME_KEY);
        assert_eq!(radio_frame(5, 1, Some(&key)).len(), 15 + frame::OVERHEAD);
    }

    #[test]
    fn airtime_matches_the_readme() {
        assert!(
            (airtime_ms(7, 15) - 46.3).abs() < 0.1,
            "{}",
            airtime_ms(7, 15)
        );
        assert!((airtime_ms(7, 23) - 61.7).abs() < 0.1);
        assert!((airtime_ms(12, 15) - 1155.1).abs() < 1.0);
    }

    #[test]
    fn a_publish_packet_has_its_remaining_length() {
        let packet = mqtt_publish("a/b", &[0u8; 200]);
        assert_eq!(packet[0], 0x32);
        assert_eq!(packet.len(), 1 + 2 + 2 + 3 + 2 + 200);
        assert_eq!(&packet[1..3], &[(207 % 128) as u8 | 0x80, 1]);
    }

    #[test]
    fn the_configurations_are_valid() {
        for layer in Layer::ALL {
            let text = format!(
                "[gateway]\nstate_dir = \"/tmp/x/state\"\n[log]\nlevel = \"warn\"\n\
                 [[broker.listener]]\nbind = \"127.0.0.1:18830\"\n{}",
                body(
                    layer,
                    "/dev/pts/77",
                    1883,
                    Path::new("/tmp/ca.pem"),
                    Path::new("/tmp")
                )
            );
            sensorgate::config::Config::parse(&text, Path::new("bench.toml"))
                .unwrap_or_else(|e| panic!("{layer:?}: {e}\n{text}"));
        }
    }

    #[test]
    fn a_failed_run_says_so() {
        let report = Report {
            failed: Some("no mosquitto".into()),
            ..Report::default()
        };
        assert!(markdown(&report).contains("\nNot run: no mosquitto"));
    }
}
