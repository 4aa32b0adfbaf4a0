//! The embedded broker beside Debian's mosquitto, in the same run: messages/s received from publishers to
//! subscribers of one topic (rumqttc clients in this process, 64-byte payloads, 127.0.0.1): one to one at
//! QoS 0, 1 and 2 (and over TLS 1.3 at QoS 0 and 1), one to ten (fan-out) and a hundred to one at QoS 0
//! and 1, through
//! the real `sensorgate` daemon (no sources, one plain listener, its default `[broker]` limits) and
//! through `/usr/sbin/mosquitto` (the test harness's configuration), with the ratio per case, and each
//! broker's CPU per message and peak resident memory. Both brokers are separate processes, started on
//! free ports and killed by PID.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::tokio_rustls::rustls::ClientConfig;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::daemon::Daemon;
use crate::measure::{ratio, PeakRss, Usage};
use crate::mosquitto::{BrokerConfig, Certs, Mosquitto, TlsListener, MOSQUITTO};

/// Payload size of every message.
pub const PAYLOAD_BYTES: usize = 64;
/// How long a case may take in all, publishing and collecting.
const CASE_LIMIT: Duration = Duration::from_secs(120);
/// A case ends when nothing more arrived for this long (QoS 0 may drop).
const QUIET: Duration = Duration::from_secs(2);

/// One workload: `messages` published in all, shared among `publishers`, each received by every one of
/// `subscribers`, over plain TCP or TLS.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub qos: QoS,
    pub messages: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// Every client connects to the broker's TLS listener.
    pub tls: bool,
}

impl Case {
    pub fn label(&self) -> String {
        format!(
            "{} -> {}, QoS {}{}",
            self.publishers,
            self.subscribers,
            self.qos as u8,
            if self.tls { ", TLS" } else { "" }
        )
    }

    /// A short name without spaces, for client ids and for `--case`: `p1-s10-qos1`, `p1-s1-qos0-tls`.
    pub fn tag(&self) -> String {
        format!(
            "p{}-s{}-qos{}{}",
            self.publishers,
            self.subscribers,
            self.qos as u8,
            if self.tls { "-tls" } else { "" }
        )
    }

    /// What the subscribers receive in all when nothing is dropped.
    pub fn deliveries(&self) -> usize {
        self.messages * self.subscribers
    }
}

/// The cases of a run: one to one at QoS 0, 1 and 2; one to ten and a hundred to one at QoS 0 and 1;
/// one to one over TLS at QoS 0 and 1.
pub fn cases(quick: bool) -> Vec<Case> {
    let scale = if quick { 1 } else { 5 };
    let case = |qos, messages: usize, publishers, subscribers| Case {
        qos,
        messages: messages * scale,
        publishers,
        subscribers,
        tls: false,
    };
    let tls = |case: Case| Case { tls: true, ..case };
    vec![
        case(QoS::AtMostOnce, 60_000, 1, 1),
        case(QoS::AtLeastOnce, 20_000, 1, 1),
        case(QoS::ExactlyOnce, 10_000, 1, 1),
        case(QoS::AtMostOnce, 10_000, 1, 10),
        case(QoS::AtLeastOnce, 4_000, 1, 10),
        case(QoS::AtMostOnce, 60_000, 100, 1),
        case(QoS::AtLeastOnce, 20_000, 100, 1),
        tls(case(QoS::AtMostOnce, 60_000, 1, 1)),
        tls(case(QoS::AtLeastOnce, 20_000, 1, 1)),
    ]
}

/// Where one broker listens: its plain port, and its TLS port with the configuration its clients
/// trust it with.
#[derive(Clone)]
struct Endpoint {
    pid: u32,
    plain: u16,
    tls: Option<(u16, Arc<ClientConfig>)>,
}

/// How a client of `case` reaches the broker: the port and, over TLS, the client configuration.
struct Reach {
    port: u16,
    tls: Option<Arc<ClientConfig>>,
}

impl Endpoint {
    /// `None` when the case wants TLS and the broker has no TLS listener.
    fn reach(&self, case: Case) -> Option<Reach> {
        if !case.tls {
            return Some(Reach {
                port: self.plain,
                tls: None,
            });
        }
        let (port, config) = self.tls.clone()?;
        Some(Reach {
            port,
            tls: Some(config),
        })
    }
}

/// What one broker did in one case.
#[derive(Clone, Copy, Debug, Default)]
pub struct Side {
    /// Messages received by the subscriber per second, from the first publish to the last receipt.
    pub per_second: f64,
    pub received: usize,
    /// The broker process's user + system CPU over the case, per message received.
    pub cpu_us_per_message: f64,
    /// The broker process's peak resident memory during the case (sampled every 20 ms), KiB.
    pub peak_rss_kib: u64,
}

/// One case, both brokers.
#[derive(Clone, Debug)]
pub struct Row {
    pub case: Case,
    pub sensorgate: Side,
    /// `None` when mosquitto is not installed.
    pub mosquitto: Option<Side>,
}

/// Every case, plus each broker's resident memory before the first case and its high-water mark
/// (VmHWM) at the end.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub sensorgate_idle_rss_kib: u64,
    pub sensorgate_hwm_kib: u64,
    pub mosquitto_idle_rss_kib: Option<u64>,
    pub mosquitto_hwm_kib: Option<u64>,
}

fn options(id: String, reach: &Reach) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", reach.port);
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_inflight(100);
    if let Some(config) = &reach.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            config.clone(),
        )));
    }
    options
}

/// Connects a subscriber of `topic` and waits (bounded) for its SUBACK.
async fn subscriber(reach: &Reach, id: String, topic: &str, qos: QoS) -> rumqttc::EventLoop {
    let port = reach.port;
    let (sub, mut sub_loop) = AsyncClient::new(options(id, reach), 100);
    sub.subscribe(topic, qos)
        .await
        .expect("the subscriber's request queue is open");
    let subscribed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match sub_loop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    assert!(
        matches!(subscribed, Ok(true)),
        "the subscriber got no SUBACK from 127.0.0.1:{port} within 5 s"
    );
    // The client handle is dropped: the event loop keeps the connection.
    sub_loop
}

/// `case.publishers` publishers share `case.messages` messages, every one of `case.subscribers`
/// subscribers counts what it receives; returns messages/s received (all subscribers) and how many.
async fn publish_and_count(reach: &Reach, case: Case, tag: &str) -> (f64, usize) {
    let topic = format!("bench/{tag}");
    let mut loops = Vec::with_capacity(case.subscribers);
    for n in 0..case.subscribers {
        loops.push(subscriber(reach, format!("sub-{tag}-{n}"), &topic, case.qos).await);
    }

    let received = Arc::new(AtomicUsize::new(0));
    let last_nanos = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let counters: Vec<_> = loops
        .into_iter()
        .map(|mut sub_loop| {
            let (received, last_nanos) = (received.clone(), last_nanos.clone());
            tokio::spawn(async move {
                while let Ok(event) = sub_loop.poll().await {
                    if let Event::Incoming(Packet::Publish(_)) = event {
                        received.fetch_add(1, Ordering::Relaxed);
                        last_nanos.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let deadline = start + CASE_LIMIT;
    let mut publishers = Vec::with_capacity(case.publishers);
    for n in 0..case.publishers {
        let (publisher, mut pub_loop) =
            AsyncClient::new(options(format!("pub-{tag}-{n}"), reach), 1000);
        let pump = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
        let share =
            case.messages / case.publishers + usize::from(n < case.messages % case.publishers);
        let topic = topic.clone();
        let sending = tokio::spawn(async move {
            let payload = vec![b'x'; PAYLOAD_BYTES];
            for _ in 0..share {
                let sent = tokio::time::timeout_at(
                    deadline.into(),
                    publisher.publish(&topic, case.qos, false, payload.clone()),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
            publisher
        });
        publishers.push((pump, sending));
    }
    let mut kept = Vec::with_capacity(publishers.len());
    for (pump, sending) in publishers {
        kept.push((pump, sending.await.expect("a publisher's task ends")));
    }
    // Until everything arrived, or nothing more arrived for QUIET, or the case's time is up.
    let expected = case.deliveries();
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let now_received = received.load(Ordering::Relaxed);
        if now_received >= expected {
            break;
        }
        if now_received != seen {
            seen = now_received;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for counter in counters {
        counter.abort();
    }
    for (pump, _publisher) in kept {
        pump.abort();
    }
    let got = received.load(Ordering::Relaxed);
    let seconds = Duration::from_nanos(last_nanos.load(Ordering::Relaxed)).as_secs_f64();
    (
        if seconds > 0.0 {
            got as f64 / seconds
        } else {
            0.0
        },
        got,
    )
}

/// One case against the broker process `pid` reached through `reach`, with its CPU and memory.
async fn measure(reach: &Reach, pid: u32, case: Case, tag: &str) -> Side {
    let before = Usage::of(&[pid]);
    let peak = PeakRss::start(vec![pid]);
    let (per_second, received) = publish_and_count(reach, case, tag).await;
    let after = Usage::of(&[pid]);
    let peak_rss_kib = tokio::task::spawn_blocking(move || peak.finish())
        .await
        .expect("the memory sampler stops");
    Side {
        per_second,
        received,
        cpu_us_per_message: (after.cpu_seconds - before.cpu_seconds) * 1e6 / received.max(1) as f64,
        peak_rss_kib,
    }
}

/// Starts both brokers (each with a plain and a TLS 1.3 listener, the same certificate), runs every
/// case on each (sensorgate first; only the cases whose tag is in `only`, when it names some), stops
/// them.
pub async fn run(quick: bool, only: &[String]) -> Report {
    let pki = tempfile::tempdir().expect("tempdir");
    let certs = Certs::generate(pki.path());
    let client_tls = match sensorgate::uplink::tls::client_config(Some(&certs.ca), None, None) {
        Ok(config) => Some(config),
        Err(why) => {
            eprintln!("  no TLS client configuration ({why}): the TLS cases are left out");
            None
        }
    };
    let daemon = Daemon::start(&format!(
        "[[broker.listener]]\nbind = \"127.0.0.1:0\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n",
        certs.server_cert.display(),
        certs.server_key.display()
    ))
    .await;
    let ours = Endpoint {
        pid: daemon.pid(),
        plain: daemon.port,
        tls: client_tls
            .clone()
            .map(|config| (daemon.listener("mqtts", 0).port(), config)),
    };
    let mosquitto = if Path::new(MOSQUITTO).exists() {
        let tls = TlsListener {
            cert: certs.server_cert.clone(),
            key: certs.server_key.clone(),
            require_client_ca: None,
        };
        Some(
            tokio::task::spawn_blocking(move || {
                Mosquitto::start(BrokerConfig {
                    tls: Some(tls),
                    ..BrokerConfig::default()
                })
            })
            .await
            .expect("mosquitto starts"),
        )
    } else {
        eprintln!("  {MOSQUITTO} is not installed (Debian package mosquitto): sensorgate only");
        None
    };
    let theirs = mosquitto.as_ref().and_then(|m| {
        Some(Endpoint {
            pid: m.pid()?,
            plain: m.port,
            tls: m.tls_port.zip(client_tls.clone()),
        })
    });
    let mut report = Report {
        sensorgate_idle_rss_kib: Usage::of(&[ours.pid]).rss_kib,
        mosquitto_idle_rss_kib: theirs.as_ref().map(|m| Usage::of(&[m.pid]).rss_kib),
        ..Report::default()
    };
    for case in cases(quick) {
        let tag = case.tag();
        if !only.is_empty() && !only.contains(&tag) {
            continue;
        }
        let Some(reach) = ours.reach(case) else {
            continue;
        };
        let sensorgate = measure(&reach, ours.pid, case, &format!("sg-{tag}")).await;
        eprintln!(
            "  sensorgate {}: {:.0} msg/s ({} of {} received)",
            case.label(),
            sensorgate.per_second,
            sensorgate.received,
            case.deliveries()
        );
        let mosquitto = match theirs.as_ref().and_then(|m| Some((m.reach(case)?, m.pid))) {
            Some((reach, pid)) => {
                let side = measure(&reach, pid, case, &format!("mq-{tag}")).await;
                eprintln!(
                    "  mosquitto {}: {:.0} msg/s ({} of {} received)",
                    case.label(),
                    side.per_second,
                    side.received,
                    case.deliveries()
                );
                Some(side)
            }
            None => None,
        };
        report.rows.push(Row {
            case,
            sensorgate,
            mosquitto,
        });
    }
    report.sensorgate_hwm_kib = Usage::of(&[ours.pid]).peak_rss_kib;
    report.mosquitto_hwm_kib = theirs.as_ref().map(|m| Usage::of(&[m.pid]).peak_rss_kib);
    drop(daemon);
    if let Some(mosquitto) = mosquitto {
        let _ = tokio::task::spawn_blocking(move || drop(mosquitto)).await;
    }
    report
}

/// `12,345 (of 50,000)`-style received column: the count, bold when some were lost.
fn received(side: &Side, sent: usize) -> String {
    let count = crate::thousands(side.received as f64);
    if side.received < sent {
        format!("**{count}**")
    } else {
        count
    }
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let mut out = String::from(
        "## Embedded broker vs Debian's mosquitto (same run)\n\n\
         rumqttc publishers send 64-byte messages as fast as they can to rumqttc subscribers of the same\n\
         topic, over 127.0.0.1: one to one, one to ten (every subscriber receives every message) and a\n\
         hundred publishers sharing the messages to one subscriber, and one to one over TLS 1.3 (each broker's\n\
         TLS listener, the same server certificate, rustls clients with ring); the rate is messages received per\n\
         second by all subscribers, from the first publish to the last receipt (a count in bold: the broker\n\
         dropped the rest). sensorgate is the real daemon with\n\
         no sources, its default `[broker]` limits (`max_inflight = 32`, `max_queued_messages = 10000`)\n\
         and its default runtime (one worker thread for the connections, as mosquitto's one loop, and the\n\
         pipeline on a thread of its own; docs/broker-performance.md measures more threads);\n\
         mosquitto 2 runs with `max_inflight_messages 100`, `max_queued_messages 0` (unlimited), no\n\
         persistence, logging to a file at info level. CPU is each broker process's user + system time over\n\
         the case per message received; RSS is its peak during the case (the cases run in turn on the same\n\
         two broker processes, so memory a broker kept from an earlier case counts in the later ones). The\n\
         clients run in the benchmark process and share the cores with the broker. sensorgate holds at\n\
         most `max_queued_messages` waiting for one subscriber: beyond it a client's publisher is held up\n\
         to 500 ms for room, at any QoS, and the message is dropped only if none came (mosquitto drops a\n\
         QoS 0 message for a full queue at once; here its queue is unlimited), so memory stays bounded when\n\
         a publisher outruns a subscriber.\n\n\
         | case | deliveries | sensorgate msg/s | received | mosquitto msg/s | received | sensorgate / mosquitto | sensorgate CPU µs/msg | mosquitto CPU µs/msg | sensorgate peak RSS KiB | mosquitto peak RSS KiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let dash = || "-".to_string();
    for row in &report.rows {
        let sent = row.case.deliveries();
        let (theirs_rate, theirs_received, theirs_cpu, theirs_rss, ratio_text) =
            match &row.mosquitto {
                Some(m) => (
                    crate::thousands(m.per_second),
                    received(m, sent),
                    format!("{:.1}", m.cpu_us_per_message),
                    crate::thousands(m.peak_rss_kib as f64),
                    ratio(row.sensorgate.per_second, m.per_second)
                        .map(|r| format!("{r:.2}"))
                        .unwrap_or_else(dash),
                ),
                None => (dash(), dash(), dash(), dash(), dash()),
            };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {theirs_rate} | {theirs_received} | {ratio_text} | {:.1} | {theirs_cpu} | {} | {theirs_rss} |\n",
            row.case.label(),
            crate::thousands(sent as f64),
            crate::thousands(row.sensorgate.per_second),
            received(&row.sensorgate, sent),
            row.sensorgate.cpu_us_per_message,
            crate::thousands(row.sensorgate.peak_rss_kib as f64),
        ));
    }
    out.push_str(&format!(
        "\nResident memory before the first case and high-water mark (VmHWM) at the end: sensorgate {} and {} KiB, {}.\n",
        crate::thousands(report.sensorgate_idle_rss_kib as f64),
        crate::thousands(report.sensorgate_hwm_kib as f64),
        match (report.mosquitto_idle_rss_kib, report.mosquitto_hwm_kib) {
            (Some(idle), Some(hwm)) => format!(
                "mosquitto {} and {} KiB",
                crate::thousands(idle as f64),
                crate::thousands(hwm as f64)
            ),
            _ => format!("mosquitto not measured ({MOSQUITTO} is not installed)"),
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_cases_are_smaller() {
        let (quick, full) = (cases(true), cases(false));
        assert_eq!(quick.len(), full.len());
        assert!(quick
            .iter()
            .zip(&full)
            .all(|(q, f)| q.messages < f.messages));
        let one_to_one: Vec<u8> = quick
            .iter()
            .filter(|c| c.publishers == 1 && c.subscribers == 1 && !c.tls)
            .map(|c| c.qos as u8)
            .collect();
        assert_eq!(one_to_one, [0, 1, 2]);
        let over_tls: Vec<u8> = quick
            .iter()
            .filter(|c| c.tls)
            .map(|c| c.qos as u8)
            .collect();
        assert_eq!(over_tls, [0, 1], "one to one over TLS at QoS 0 and 1");
        assert!(quick.iter().any(|c| c.subscribers == 10));
        assert!(quick.iter().any(|c| c.publishers == 100));
    }

    #[test]
    fn the_table_shows_the_ratio_and_losses() {
        let side = |per_second: f64, received: usize| Side {
            per_second,
            received,
            cpu_us_per_message: 12.5,
            peak_rss_kib: 9_000,
        };
        let report = Report {
            rows: vec![Row {
                case: Case {
                    qos: QoS::AtMostOnce,
                    messages: 50_000,
                    publishers: 1,
                    subscribers: 1,
                    tls: true,
                },
                sensorgate: side(40_000.0, 45_000),
                mosquitto: Some(side(80_000.0, 50_000)),
            }],
            sensorgate_idle_rss_kib: 7_000,
            sensorgate_hwm_kib: 12_000,
            mosquitto_idle_rss_kib: Some(3_000),
            mosquitto_hwm_kib: Some(9_500),
        };
        let text = markdown(&report);
        assert!(text.starts_with("## Embedded broker vs Debian's mosquitto (same run)\n"));
        assert!(text.ends_with(".\n"));
        assert!(
            text.contains(
                "| 1 -> 1, QoS 0, TLS | 50,000 | 40,000 | **45,000** | 80,000 | 50,000 | 0.50 | 12.5 | 12.5 | 9,000 | 9,000 |"
            ),
            "{text}"
        );
        assert!(text.contains("sensorgate 7,000 and 12,000 KiB, mosquitto 3,000 and 9,500 KiB"));
    }
}
