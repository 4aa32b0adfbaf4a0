//! The embedded broker beside Debian's mosquitto, in the same run: messages/s from one publisher to one
//! subscriber (rumqttc clients in this process, 64-byte payloads, 127.0.0.1) at QoS 0 and QoS 1, through
//! the real `sensorgate` daemon (no sources, one plain listener, its default `[broker]` limits) and
//! through `/usr/sbin/mosquitto` (the test harness's configuration), with the ratio per case, and each
//! broker's CPU per message and peak resident memory. Both brokers are separate processes, started on
//! free ports and killed by PID.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::daemon::Daemon;
use crate::measure::{ratio, PeakRss, Usage};
use crate::mosquitto::{BrokerConfig, Mosquitto, MOSQUITTO};

/// Payload size of every message.
pub const PAYLOAD_BYTES: usize = 64;
/// How long a case may take in all, publishing and collecting.
const CASE_LIMIT: Duration = Duration::from_secs(120);
/// A case ends when nothing more arrived for this long (QoS 0 may drop).
const QUIET: Duration = Duration::from_secs(2);

/// One workload.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub qos: QoS,
    pub messages: usize,
}

impl Case {
    pub fn label(&self) -> String {
        format!("QoS {}", self.qos as u8)
    }
}

/// The cases of a run: QoS 0 and QoS 1.
pub fn cases(quick: bool) -> [Case; 2] {
    let (qos0, qos1) = if quick {
        (50_000, 20_000)
    } else {
        (300_000, 100_000)
    };
    [
        Case {
            qos: QoS::AtMostOnce,
            messages: qos0,
        },
        Case {
            qos: QoS::AtLeastOnce,
            messages: qos1,
        },
    ]
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

fn options(id: String, port: u16) -> MqttOptions {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_inflight(100);
    options
}

/// One publisher, one subscriber, `case.messages` messages; returns messages/s received and how many.
async fn publish_and_count(port: u16, case: Case, tag: &str) -> (f64, usize) {
    let topic = format!("bench/{tag}");
    let (sub, mut sub_loop) = AsyncClient::new(options(format!("sub-{tag}"), port), 100);
    sub.subscribe(&topic, case.qos)
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

    let received = Arc::new(AtomicUsize::new(0));
    let last_nanos = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let counter = {
        let (received, last_nanos) = (received.clone(), last_nanos.clone());
        tokio::spawn(async move {
            while let Ok(event) = sub_loop.poll().await {
                if let Event::Incoming(Packet::Publish(_)) = event {
                    received.fetch_add(1, Ordering::Relaxed);
                    last_nanos.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            }
        })
    };
    let (publisher, mut pub_loop) = AsyncClient::new(options(format!("pub-{tag}"), port), 1000);
    let pump = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let deadline = start + CASE_LIMIT;
    let payload = vec![b'x'; PAYLOAD_BYTES];
    for _ in 0..case.messages {
        let sent = tokio::time::timeout_at(
            deadline.into(),
            publisher.publish(&topic, case.qos, false, payload.clone()),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
    // Until everything arrived, or nothing more arrived for QUIET, or the case's time is up.
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let now_received = received.load(Ordering::Relaxed);
        if now_received >= case.messages {
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
    counter.abort();
    pump.abort();
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

/// One case against the broker process `pid` listening on `port`, with its CPU and memory.
async fn measure(port: u16, pid: u32, case: Case, tag: &str) -> Side {
    let before = Usage::of(&[pid]);
    let peak = PeakRss::start(vec![pid]);
    let (per_second, received) = publish_and_count(port, case, tag).await;
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

/// Starts both brokers, runs every case on each (sensorgate first), stops them.
pub async fn run(quick: bool) -> Report {
    let daemon = Daemon::start("").await;
    let mosquitto = if Path::new(MOSQUITTO).exists() {
        Some(
            tokio::task::spawn_blocking(|| Mosquitto::start(BrokerConfig::default()))
                .await
                .expect("mosquitto starts"),
        )
    } else {
        eprintln!("  {MOSQUITTO} is not installed (Debian package mosquitto): sensorgate only");
        None
    };
    let mosquitto_at = mosquitto.as_ref().and_then(|m| Some((m.port, m.pid()?)));
    let mut report = Report {
        sensorgate_idle_rss_kib: Usage::of(&[daemon.pid()]).rss_kib,
        mosquitto_idle_rss_kib: mosquitto_at.map(|(_, pid)| Usage::of(&[pid]).rss_kib),
        ..Report::default()
    };
    for case in cases(quick) {
        let tag = format!("qos{}", case.qos as u8);
        let sensorgate = measure(daemon.port, daemon.pid(), case, &format!("sg-{tag}")).await;
        eprintln!(
            "  sensorgate {}: {:.0} msg/s ({} of {} received)",
            case.label(),
            sensorgate.per_second,
            sensorgate.received,
            case.messages
        );
        let mosquitto = match mosquitto_at {
            Some((port, pid)) => {
                let side = measure(port, pid, case, &format!("mq-{tag}")).await;
                eprintln!(
                    "  mosquitto {}: {:.0} msg/s ({} of {} received)",
                    case.label(),
                    side.per_second,
                    side.received,
                    case.messages
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
    report.sensorgate_hwm_kib = Usage::of(&[daemon.pid()]).peak_rss_kib;
    report.mosquitto_hwm_kib = mosquitto_at.map(|(_, pid)| Usage::of(&[pid]).peak_rss_kib);
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
         One rumqttc publisher sends 64-byte messages as fast as it can to one rumqttc subscriber of the\n\
         same topic, over 127.0.0.1; the rate is messages received per second, from the first publish to\n\
         the last receipt (a count in bold: the broker dropped the rest). sensorgate is the real daemon with\n\
         no sources and its default `[broker]` limits (`max_inflight = 32`, `max_queued_messages = 10000`);\n\
         mosquitto 2 runs with `max_inflight_messages 100`, `max_queued_messages 0` (unlimited), no\n\
         persistence, logging to a file at info level. CPU is each broker process's user + system time over\n\
         the case per message received; RSS is its peak during the case (the cases run in turn on the same\n\
         two broker processes, so memory a broker kept from the QoS 0 case counts in the QoS 1 case). The\n\
         clients run in the benchmark process and share the cores with the broker. sensorgate holds at\n\
         most `max_queued_messages` waiting for one subscriber: beyond it a QoS 0 message is dropped (as\n\
         mosquitto does with its default `max_queued_messages 1000`; here its queue is unlimited) and a\n\
         QoS 1/2 publisher is held up to 500 ms first, so memory stays bounded when a publisher outruns a\n\
         subscriber.\n\n\
         | case | messages | sensorgate msg/s | received | mosquitto msg/s | received | sensorgate / mosquitto | sensorgate CPU µs/msg | mosquitto CPU µs/msg | sensorgate peak RSS KiB | mosquitto peak RSS KiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let dash = || "-".to_string();
    for row in &report.rows {
        let sent = row.case.messages;
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
        let [q0, q1] = cases(true);
        let [f0, f1] = cases(false);
        assert_eq!((q0.qos, q1.qos), (QoS::AtMostOnce, QoS::AtLeastOnce));
        assert!(q0.messages < f0.messages && q1.messages < f1.messages);
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
                "| QoS 0 | 50,000 | 40,000 | **45,000** | 80,000 | 50,000 | 0.50 | 12.5 | 12.5 | 9,000 | 9,000 |"
            ),
            "{text}"
        );
        assert!(text.contains("sensorgate 7,000 and 12,000 KiB, mosquitto 3,000 and 9,500 KiB"));
    }
}
