//! What the embedded broker holds in memory per retained message and per idle client, beside Debian's
//! mosquitto in the same run. Each case gets a fresh broker process: the real `sensorgate` daemon (no
//! sources, one plain 127.0.0.1 listener, its default `[broker]` limits) or `/usr/sbin/mosquitto` (the
//! testkit's harness configuration). Its resident memory (VmRSS of `/proc/PID/status`, read once it
//! has settled) is taken before and after the load, and the delta is divided by the count. Retained:
//! one rumqttc client publishes N retained QoS 1 messages of about 60 bytes of JSON to distinct topics
//! `sg/dev{i}/temperature` and the figure is taken once every PUBACK arrived; a late QoS 1 subscriber to
//! `sg/#` then counts the retained messages each broker hands out. Idle clients: M plain MQTT 3.1.1
//! connections (raw CONNECT packets, keep-alive 60 s, clean session) each answered with CONNACK 0, held
//! open without traffic while memory is read, then closed. Every wait has a deadline; a case that
//! runs out of time gives a row saying what timed out. Brokers are killed by PID.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemon::Daemon;
use crate::measure::{ratio, Usage};
use crate::mosquitto::{BrokerConfig, Mosquitto, MOSQUITTO};

/// How long publishing N retained messages may take until the last PUBACK.
const PUBLISH_LIMIT: Duration = Duration::from_secs(120);
/// How long the late subscriber may take to receive the retained messages, and how long it may see
/// nothing before it stops counting.
const LATE_SUBSCRIBER_LIMIT: Duration = Duration::from_secs(90);
const LATE_SUBSCRIBER_QUIET: Duration = Duration::from_secs(5);
/// How long opening all idle connections may take (well inside 1.5 keep-alive periods of 60 s, after
/// which a broker may close a silent client).
const CONNECT_LIMIT: Duration = Duration::from_secs(45);
/// One connection's TCP connect and CONNACK.
const ONE_CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// Keep-alive announced by every client.
const KEEP_ALIVE_SECONDS: u16 = 60;
/// Descriptors this process keeps beyond its idle clients.
const SPARE_DESCRIPTORS: u64 = 100;

/// What a case loads the broker with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Retained,
    IdleClients,
}

/// One case: a kind and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub kind: Kind,
    pub count: usize,
}

impl Case {
    pub fn label(&self) -> &'static str {
        match self.kind {
            Kind::Retained => "retained message (QoS 1)",
            Kind::IdleClients => "idle client (MQTT 3.1.1)",
        }
    }
}

/// The cases of a run: a small and a large count of each kind.
pub fn cases(quick: bool) -> [Case; 4] {
    let (retained, clients) = if quick {
        ([2_000, 10_000], [50, 200])
    } else {
        ([10_000, 50_000], [100, 1_000])
    };
    [
        Case {
            kind: Kind::Retained,
            count: retained[0],
        },
        Case {
            kind: Kind::Retained,
            count: retained[1],
        },
        Case {
            kind: Kind::IdleClients,
            count: clients[0],
        },
        Case {
            kind: Kind::IdleClients,
            count: clients[1],
        },
    ]
}

/// What one broker did in one case.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// VmRSS before the load, KiB.
    pub before_kib: u64,
    /// VmRSS after the load, KiB; `Err` says what timed out or failed instead.
    pub after_kib: Result<u64, String>,
    /// Retained cases: how many retained messages the late subscriber received.
    pub retained_seen: Option<usize>,
    /// Retained cases: the broker's peak resident memory (VmHWM, KiB) once the late subscriber had
    /// its retained messages, to show that handing them all out does not blow it up.
    pub late_peak_kib: Option<u64>,
    /// Retained cases: from the late subscriber's SUBSCRIBE to its last retained message, when it
    /// received every one.
    pub late_all_after: Option<Duration>,
}

impl Side {
    /// Resident bytes per item: the RSS delta over the count.
    pub fn bytes_each(&self, count: usize) -> Option<f64> {
        let after = *self.after_kib.as_ref().ok()?;
        Some((after as f64 - self.before_kib as f64) * 1024.0 / count.max(1) as f64)
    }

    fn failed(before_kib: u64, why: String) -> Side {
        Side {
            before_kib,
            after_kib: Err(why),
            retained_seen: None,
            late_peak_kib: None,
            late_all_after: None,
        }
    }
}

/// One case, both brokers.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub case: Case,
    pub sensorgate: Side,
    /// `None` when mosquitto is not installed.
    pub mosquitto: Option<Side>,
}

/// Every case, and what limited the idle-client counts, if anything did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Set when this process could not raise its descriptor limit for the idle clients and the counts
    /// were lowered to fit.
    pub descriptor_note: Option<String>,
}

/// A broker process under test.
enum Broker {
    Sensorgate(Daemon),
    Mosquitto(Mosquitto),
}

impl Broker {
    async fn start(mosquitto: bool) -> Broker {
        if mosquitto {
            Broker::Mosquitto(
                tokio::task::spawn_blocking(|| Mosquitto::start(BrokerConfig::default()))
                    .await
                    .expect("mosquitto starts"),
            )
        } else {
            Broker::Sensorgate(Daemon::start("").await)
        }
    }

    fn port(&self) -> u16 {
        match self {
            Broker::Sensorgate(d) => d.port,
            Broker::Mosquitto(m) => m.port,
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Broker::Sensorgate(d) => d.pid(),
            Broker::Mosquitto(m) => m.pid().unwrap_or(u32::MAX),
        }
    }

    /// Kills it by PID and reaps it, off the runtime.
    async fn stop(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

/// VmRSS of `pids` (summed) once three readings 100 ms apart agree within 16 KiB, or after 3 s (the
/// last reading).
pub async fn settled_rss_kib(pids: &[u32]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut readings = vec![Usage::of(pids).rss_kib];
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        readings.push(Usage::of(pids).rss_kib);
        if let [.., a, b, c] = readings[..] {
            if a.max(b).max(c) - a.min(b).min(c) <= 16 {
                return c;
            }
        }
    }
    readings.last().copied().unwrap_or(0)
}

/// The payload of retained message `seq`: about 60 bytes of JSON.
pub fn payload(seq: usize) -> String {
    format!(
        "{{\"temperature\":21.5,\"humidity\":40,\"battery\":3.1,\"seq\":{}}}",
        10_000 + seq % 90_000
    )
}

fn mqtt_options(id: String, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(KEEP_ALIVE_SECONDS as u64))
        .set_clean_session(true)
        .set_inflight(100);
    options
}

/// Publishes `count` retained messages to the broker `pid` on `port`, reading its RSS before (with the
/// publisher connected) and after the last PUBACK, then lets a late subscriber count them.
async fn retained(port: u16, pid: u32, count: usize, tag: &str) -> Side {
    let (client, mut events) = AsyncClient::new(mqtt_options(format!("pub-{tag}"), port), 1000);
    let acked = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicBool::new(false));
    let pump = {
        let (acked, connected) = (acked.clone(), connected.clone());
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected.store(true, Ordering::Relaxed)
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => return format!("{e}"),
                }
            }
        })
    };
    let connect_deadline = Instant::now() + ONE_CONNECT_LIMIT;
    while !connected.load(Ordering::Relaxed)
        && Instant::now() < connect_deadline
        && !pump.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !connected.load(Ordering::Relaxed) {
        pump.abort();
        let before = Usage::of(&[pid]).rss_kib;
        return Side::failed(
            before,
            format!(
                "timed out: the publisher had no CONNACK within {} s",
                ONE_CONNECT_LIMIT.as_secs()
            ),
        );
    }
    let before = settled_rss_kib(&[pid]).await;

    let start = Instant::now();
    let deadline = start + PUBLISH_LIMIT;
    let mut queued = 0;
    for i in 0..count {
        let sent = tokio::time::timeout_at(
            deadline.into(),
            client.publish(
                format!("sg/dev{i}/temperature"),
                QoS::AtLeastOnce,
                true,
                payload(i),
            ),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
        queued += 1;
    }
    while acked.load(Ordering::Relaxed) < count && Instant::now() < deadline && !pump.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = acked.load(Ordering::Relaxed);
    if got < count {
        let why = if pump.is_finished() {
            "the publisher's connection closed".to_string()
        } else {
            format!("timed out after {} s", PUBLISH_LIMIT.as_secs())
        };
        pump.abort();
        return Side::failed(
            before,
            format!(
                "{why}: PUBACK for {} of {} ({} queued)",
                crate::thousands(got as f64),
                crate::thousands(count as f64),
                crate::thousands(queued as f64)
            ),
        );
    }
    let after = settled_rss_kib(&[pid]).await;
    eprintln!(
        "    {tag}: {} retained published and acknowledged in {:.1} s",
        crate::thousands(count as f64),
        start.elapsed().as_secs_f64()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    pump.abort();

    let (seen, all_after) = late_subscriber(port, count, tag).await;
    Side {
        before_kib: before,
        after_kib: Ok(after),
        retained_seen: Some(seen),
        late_peak_kib: Some(Usage::of(&[pid]).peak_rss_kib),
        late_all_after: all_after,
    }
}

/// A new QoS 1 subscriber to `sg/#`: how many retained messages it receives (until `count`, nothing
/// new for [`LATE_SUBSCRIBER_QUIET`], or [`LATE_SUBSCRIBER_LIMIT`]), and, when it received all
/// `count`, how long after its SUBSCRIBE the last one arrived.
async fn late_subscriber(port: u16, count: usize, tag: &str) -> (usize, Option<Duration>) {
    let (client, mut events) = AsyncClient::new(mqtt_options(format!("late-{tag}"), port), 100);
    let subscribed = Instant::now();
    if client.subscribe("sg/#", QoS::AtLeastOnce).await.is_err() {
        return (0, None);
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut last = None;
            while let Ok(event) = events.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    if p.retain {
                        last = Some(subscribed.elapsed());
                        if seen.fetch_add(1, Ordering::Relaxed) + 1 >= count {
                            return last;
                        }
                    }
                }
            }
            last
        })
    };
    let deadline = Instant::now() + LATE_SUBSCRIBER_LIMIT;
    let (mut last, mut quiet_since) = (0, Instant::now());
    while Instant::now() < deadline && !counter.is_finished() {
        let now = seen.load(Ordering::Relaxed);
        if now >= count {
            break;
        }
        if now != last {
            (last, quiet_since) = (now, Instant::now());
        } else if quiet_since.elapsed() > LATE_SUBSCRIBER_QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.load(Ordering::Relaxed);
    let all_after = if seen >= count {
        counter.await.ok().flatten()
    } else {
        counter.abort();
        None
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), client.disconnect()).await;
    (seen, all_after)
}

/// An MQTT 3.1.1 CONNECT: clean session, keep-alive 60 s, no login.
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    body.extend_from_slice(&KEEP_ALIVE_SECONDS.to_be_bytes());
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10];
    let mut length = body.len();
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if length == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

/// One idle client: connected and accepted (CONNACK return code 0), or why not.
async fn idle_client(port: u16, client_id: &str) -> Result<TcpStream, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(&connect_packet(client_id))
            .await
            .map_err(|e| format!("send CONNECT: {e}"))?;
        let mut connack = [0u8; 4];
        stream
            .read_exact(&mut connack)
            .await
            .map_err(|e| format!("read CONNACK: {e}"))?;
        match connack {
            [0x20, 2, _, 0] => Ok(stream),
            other => Err(format!("not an accepting CONNACK: {other:02x?}")),
        }
    };
    tokio::time::timeout(ONE_CONNECT_LIMIT, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no CONNACK within {} s",
                ONE_CONNECT_LIMIT.as_secs()
            ))
        })
}

/// Opens `count` idle connections to the broker `pid` on `port`, reading its RSS before and once all
/// are accepted; closes them.
async fn idle_clients(port: u16, pid: u32, count: usize, tag: &str) -> Side {
    let before = settled_rss_kib(&[pid]).await;
    let start = Instant::now();
    let deadline = start + CONNECT_LIMIT;
    let mut clients = Vec::with_capacity(count);
    let mut failure = None;
    for i in 0..count {
        if Instant::now() >= deadline {
            failure = Some(format!("timed out after {} s", CONNECT_LIMIT.as_secs()));
            break;
        }
        match idle_client(port, &format!("idle-{tag}-{i}")).await {
            Ok(stream) => clients.push(stream),
            Err(why) => {
                failure = Some(why);
                break;
            }
        }
    }
    if let Some(why) = failure {
        let opened = clients.len();
        drop(clients);
        return Side::failed(
            before,
            format!(
                "{why}: {} of {} clients connected",
                crate::thousands(opened as f64),
                crate::thousands(count as f64)
            ),
        );
    }
    let after = settled_rss_kib(&[pid]).await;
    eprintln!(
        "    {tag}: {} idle clients connected in {:.1} s",
        crate::thousands(count as f64),
        start.elapsed().as_secs_f64()
    );
    drop(clients);
    Side {
        before_kib: before,
        after_kib: Ok(after),
        retained_seen: None,
        late_peak_kib: None,
        late_all_after: None,
    }
}

/// Raises this process's soft descriptor limit to hold `clients` sockets and some spare (mosquitto,
/// started from here, inherits it; sensorgate raises its own). Returns how many clients fit.
fn descriptors_for(clients: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let needed = clients as u64 + SPARE_DESCRIPTORS;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return clients;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let raised = Rlimit {
        current: Some(needed.min(hard)),
        maximum: limit.maximum,
    };
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => needed.min(hard),
        Err(_) => soft,
    };
    (soft.saturating_sub(SPARE_DESCRIPTORS) as usize).min(clients)
}

/// Runs one case on a fresh broker (sensorgate, or mosquitto) and stops it.
async fn one(case: Case, mosquitto: bool) -> Side {
    let broker = Broker::start(mosquitto).await;
    let (port, pid) = (broker.port(), broker.pid());
    let tag = format!(
        "{}-{}-{}",
        if mosquitto { "mq" } else { "sg" },
        match case.kind {
            Kind::Retained => "retained",
            Kind::IdleClients => "idle",
        },
        case.count
    );
    let side = match case.kind {
        Kind::Retained => retained(port, pid, case.count, &tag).await,
        Kind::IdleClients => idle_clients(port, pid, case.count, &tag).await,
    };
    broker.stop().await;
    side
}

/// Every case on both brokers, sensorgate first, each on a fresh process.
pub async fn run(quick: bool) -> Report {
    let mut report = Report::default();
    let with_mosquitto = Path::new(MOSQUITTO).exists();
    if !with_mosquitto {
        eprintln!("  {MOSQUITTO} is not installed (Debian package mosquitto): sensorgate only");
    }
    let wanted = cases(quick)
        .iter()
        .filter(|c| c.kind == Kind::IdleClients)
        .map(|c| c.count)
        .max()
        .unwrap_or(0);
    let fit = descriptors_for(wanted);
    if fit < wanted {
        report.descriptor_note = Some(format!(
            "This process could not raise its file-descriptor limit for {} clients; the idle-client counts were capped at {} (the soft limit minus {SPARE_DESCRIPTORS}).",
            crate::thousands(wanted as f64),
            crate::thousands(fit as f64)
        ));
    }
    for mut case in cases(quick) {
        if case.kind == Kind::IdleClients {
            case.count = case.count.min(fit).max(1);
        }
        let sensorgate = one(case, false).await;
        let mosquitto = if with_mosquitto {
            Some(one(case, true).await)
        } else {
            None
        };
        for (name, side) in [
            ("sensorgate", Some(&sensorgate)),
            ("mosquitto", mosquitto.as_ref()),
        ] {
            if let Some(side) = side {
                eprintln!(
                    "  {name} {} x {}: {}",
                    case.label(),
                    case.count,
                    bytes_cell(side, case.count)
                );
            }
        }
        report.rows.push(Row {
            case,
            sensorgate,
            mosquitto,
        });
    }
    report
}

/// The bytes-each cell: the figure, or what went wrong.
fn bytes_cell(side: &Side, count: usize) -> String {
    match (&side.after_kib, side.bytes_each(count)) {
        (Ok(_), Some(bytes)) => crate::thousands(bytes),
        (Err(why), _) => why.clone(),
        _ => "-".to_string(),
    }
}

fn after_cell(side: &Side) -> String {
    match side.after_kib {
        Ok(kib) => crate::thousands(kib as f64),
        Err(_) => "-".to_string(),
    }
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let mut out = String::from(
        "## Broker memory\n\n\
         What each broker keeps resident per retained message and per idle client: the growth of its\n\
         resident memory (VmRSS of `/proc/PID/status`, read once three readings 100 ms apart agree) from\n\
         before the load to after it, divided by the count. Every case runs on a fresh broker process:\n\
         sensorgate is the real daemon with no sources, one plain listener and its default `[broker]`\n\
         limits (`max_retained_messages = 100000`, `persist_retained = true`, `max_connections = 1024`);\n\
         mosquitto 2 runs with the test harness's configuration (no persistence). Retained: one rumqttc\n\
         client, already connected when the first reading is taken, publishes N retained QoS 1 messages of\n\
         about 60 bytes of JSON to distinct topics `sg/dev{i}/temperature`; the second reading follows the\n\
         last PUBACK. Idle clients: M plain MQTT 3.1.1 connections (raw CONNECT, clean session, keep-alive\n\
         60 s), each answered with CONNACK 0 and then silent; the second reading follows the last CONNACK.\n\
         RSS is counted in 4 KiB pages and includes what an allocator keeps for later, so small counts are\n\
         coarse. All on 127.0.0.1.\n\n\
         | case | count | sensorgate bytes each | mosquitto bytes each | sensorgate / mosquitto | sensorgate RSS after (KiB) | mosquitto RSS after (KiB) |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let dash = || "-".to_string();
    for row in &report.rows {
        let count = row.case.count;
        let (theirs, theirs_after, ratio_text) = match &row.mosquitto {
            Some(m) => (
                bytes_cell(m, count),
                after_cell(m),
                match (row.sensorgate.bytes_each(count), m.bytes_each(count)) {
                    (Some(ours), Some(theirs)) if ours >= 0.0 => ratio(ours, theirs)
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_else(dash),
                    _ => dash(),
                },
            ),
            None => (dash(), dash(), dash()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {theirs} | {ratio_text} | {} | {theirs_after} |\n",
            row.case.label(),
            crate::thousands(count as f64),
            bytes_cell(&row.sensorgate, count),
            after_cell(&row.sensorgate),
        ));
    }
    let checks: Vec<String> = report
        .rows
        .iter()
        .filter(|r| r.case.kind == Kind::Retained)
        .map(|r| {
            let seen = |side: &Side| match (side.retained_seen, side.late_all_after) {
                (Some(n), _) if n < r.case.count => format!("**{}**", crate::thousands(n as f64)),
                (Some(n), Some(after)) => format!(
                    "{}, the last {} ms after its SUBSCRIBE",
                    crate::thousands(n as f64),
                    crate::thousands(after.as_secs_f64() * 1000.0)
                ),
                (Some(n), None) => crate::thousands(n as f64),
                (None, _) => "-".to_string(),
            };
            let peak = |side: &Side| match (side.late_peak_kib, &side.after_kib) {
                (Some(peak), Ok(after)) => format!(
                    "{} KiB ({} after the publishes)",
                    crate::thousands(peak as f64),
                    crate::thousands(*after as f64)
                ),
                _ => "-".to_string(),
            };
            format!(
                "of {}: sensorgate {}, mosquitto {}; peak RSS (VmHWM) once the subscriber had them: sensorgate {}, mosquitto {}",
                crate::thousands(r.case.count as f64),
                seen(&r.sensorgate),
                r.mosquitto.as_ref().map(seen).unwrap_or_else(dash),
                peak(&r.sensorgate),
                r.mosquitto.as_ref().map(peak).unwrap_or_else(dash)
            )
        })
        .collect();
    if !checks.is_empty() {
        out.push_str(&format!(
            "\nRetained messages a late QoS 1 subscriber to `sg/#` then received (in bold: fewer than published) and when the last one arrived: {}.\n",
            checks.join("; ")
        ));
    }
    if report.rows.iter().any(|r| r.mosquitto.is_none()) {
        out.push_str(&format!(
            "\nmosquitto was not measured ({MOSQUITTO} is not installed).\n"
        ));
    }
    if let Some(note) = &report.descriptor_note {
        out.push('\n');
        out.push_str(note);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_cases_are_smaller() {
        let quick = cases(true);
        let full = cases(false);
        assert_eq!(
            full.map(|c| c.count),
            [10_000, 50_000, 100, 1_000],
            "the issue's counts"
        );
        for (q, f) in quick.iter().zip(&full) {
            assert_eq!(q.kind, f.kind);
            assert!(q.count < f.count, "{q:?} vs {f:?}");
        }
    }

    #[test]
    fn payloads_are_about_sixty_bytes_of_json() {
        for seq in [0, 1, 12_345, 49_999, 1_000_000] {
            let text = payload(seq);
            assert!((55..=65).contains(&text.len()), "{text}: {}", text.len());
            assert!(text.starts_with("{\"temperature\":21.5,") && text.ends_with('}'));
        }
    }

    #[test]
    fn connect_packets_are_mqtt_3_1_1() {
        let packet = connect_packet("idle-1");
        assert_eq!(
            packet,
            [
                0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 6, b'i', b'd', b'l',
                b'e', b'-', b'1'
            ]
        );
        let long = connect_packet(&"x".repeat(200));
        assert_eq!(&long[..3], &[0x10, 212, 1], "a two-byte remaining length");
        assert_eq!(long.len(), 3 + 212);
    }

    #[test]
    fn the_table_shows_bytes_each_the_ratio_and_timeouts() {
        let ok = |before_kib: u64, after_kib: u64, retained_seen: Option<usize>| Side {
            before_kib,
            after_kib: Ok(after_kib),
            retained_seen,
            late_peak_kib: None,
            late_all_after: None,
        };
        let report = Report {
            rows: vec![
                Row {
                    case: Case {
                        kind: Kind::Retained,
                        count: 10_000,
                    },
                    // 2,000 KiB over 10,000 messages: 204.8 bytes each; mosquitto 1,000 KiB: 102.4.
                    sensorgate: ok(10_000, 12_000, Some(9_000)),
                    mosquitto: Some(Side {
                        late_all_after: Some(Duration::from_millis(1_234)),
                        ..ok(1_000, 2_000, Some(10_000))
                    }),
                },
                Row {
                    case: Case {
                        kind: Kind::IdleClients,
                        count: 1_000,
                    },
                    sensorgate: Side::failed(
                        10_000,
                        "timed out after 45 s: 812 of 1,000 clients connected".into(),
                    ),
                    mosquitto: Some(ok(1_000, 30_000, None)),
                },
            ],
            descriptor_note: None,
        };
        let text = markdown(&report);
        assert!(text.starts_with("## Broker memory\n\n"), "{text}");
        assert!(text.contains("VmRSS"), "{text}");
        assert!(
            text.contains("| case | count | sensorgate bytes each | mosquitto bytes each | sensorgate / mosquitto | sensorgate RSS after (KiB) | mosquitto RSS after (KiB) |\n|---|---:|---:|---:|---:|---:|---:|\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "| retained message (QoS 1) | 10,000 | 205 | 102 | 2.00 | 12,000 | 2,000 |\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("| idle client (MQTT 3.1.1) | 1,000 | timed out after 45 s: 812 of 1,000 clients connected | 29,696 | - | - | 30,000 |\n"),
            "{text}"
        );
        assert!(
            text.contains("of 10,000: sensorgate **9,000**, mosquitto 10,000, the last 1,234 ms after its SUBSCRIBE; peak RSS"),
            "{text}"
        );
        assert!(!text.contains("not installed"), "{text}");
        assert!(text.ends_with(".\n"));
    }

    #[test]
    fn without_mosquitto_its_columns_are_dashes() {
        let report = Report {
            rows: vec![Row {
                case: Case {
                    kind: Kind::IdleClients,
                    count: 100,
                },
                sensorgate: Side {
                    before_kib: 8_000,
                    after_kib: Ok(8_400),
                    retained_seen: None,
                    late_peak_kib: None,
                    late_all_after: None,
                },
                mosquitto: None,
            }],
            descriptor_note: Some("capped".into()),
        };
        let text = markdown(&report);
        assert!(
            text.contains("| idle client (MQTT 3.1.1) | 100 | 4,096 | - | - | 8,400 | - |\n"),
            "{text}"
        );
        assert!(text.contains("is not installed"), "{text}");
        assert!(text.ends_with("\ncapped\n"), "{text}");
        assert!(!text.contains("late QoS 1 subscriber"), "{text}");
    }

    #[test]
    fn a_shrinking_rss_is_shown_as_it_is() {
        let side = Side {
            before_kib: 9_000,
            after_kib: Ok(8_900),
            retained_seen: None,
            late_peak_kib: None,
            late_all_after: None,
        };
        assert_eq!(side.bytes_each(100), Some(-1024.0));
        assert_eq!(bytes_cell(&side, 100), "-1,024");
        assert_eq!(Side::failed(1, "why".into()).bytes_each(100), None);
    }
}
