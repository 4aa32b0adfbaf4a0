//! End to end: readings written as JSON lines to N pseudo-terminal serial ports go through a system
//! under test to one MQTT client subscribed on 127.0.0.1, at QoS 0 and 1, as fast as the system takes
//! them (readings/s) and at fixed rates (latency from just before the line is written to the client's
//! receipt: p50, p99, max). The system is either sensorgate (the real daemon: decoding, registry and its
//! embedded broker) or the baseline of [`crate::baseline`] (Python bridges into mosquitto); both get
//! the same workload, and CPU seconds and resident memory are summed over all of their processes.

use std::any::Any;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::{SerialPort, SerialStream};

use crate::daemon::Daemon;
use crate::measure::{due, now_ns, percentile, Usage};

/// Distinct devices the readings rotate over.
pub const DEVICES: u64 = 1_000;

/// One workload.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub ports: usize,
    pub qos: QoS,
    /// `None`: as fast as the system takes them.
    pub rate: Option<u64>,
    pub readings: u64,
}

impl Case {
    pub fn label(&self) -> String {
        match self.rate {
            Some(rate) => format!(
                "{} port, QoS {}, {}/s",
                self.ports,
                self.qos as u8,
                crate::thousands(rate as f64)
            ),
            None => format!(
                "{} port{}, QoS {}, saturation",
                self.ports,
                if self.ports == 1 { "" } else { "s" },
                self.qos as u8
            ),
        }
    }
}

/// The cases of a run: saturation on 1, 4 and 16 ports at QoS 0, on 1 port at QoS 1, and one port at
/// 100, 1,000 and 10,000 readings/s. The counts are sized for the baseline, which takes a full run's
/// 50,000 readings at a few hundred a second. The 1,000/s case runs 50 s in a full run, long enough
/// for the daemon's memory to reach its steady state (it grows for the first 30-40 s, as the retained
/// store, the registry and the allocator's pools fill), since its peak RSS is a budget.
pub fn cases(quick: bool) -> Vec<Case> {
    let total: u64 = if quick { 5_000 } else { 50_000 };
    let mut cases = Vec::new();
    for ports in [1usize, 4, 16] {
        cases.push(Case {
            ports,
            qos: QoS::AtMostOnce,
            rate: None,
            readings: total,
        });
    }
    cases.push(Case {
        ports: 1,
        qos: QoS::AtLeastOnce,
        rate: None,
        readings: total,
    });
    for (rate, seconds) in [(100u64, 10u64), (1_000, 50), (10_000, 5)] {
        cases.push(Case {
            ports: 1,
            qos: QoS::AtMostOnce,
            rate: Some(rate),
            readings: (rate * if quick { 2 } else { seconds }).min(total),
        });
    }
    cases
}

/// What one case measured.
#[derive(Clone, Debug)]
pub struct Row {
    pub case: Case,
    pub received: u64,
    pub per_second: f64,
    pub p50_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: Option<u64>,
    /// User + system CPU of every process of the system during the case, per reading received.
    pub cpu_us_per_reading: f64,
    /// Peak resident memory of the system's processes (summed), KiB.
    pub peak_rss_kib: u64,
}

/// A system ready for a case: the port masters to write to, where to subscribe, which processes to
/// measure, and whatever keeps it alive (dropped at the end of the case).
pub struct Target {
    pub masters: Vec<SerialStream>,
    pub broker_port: u16,
    pub filter: String,
    pub pids: Vec<u32>,
    pub keep_alive: Box<dyn Any + Send>,
}

/// A pseudo-terminal pair: the master we write to and the slave's path, closed so the system under test
/// opens it as it would open `/dev/ttyUSB0`.
pub fn pty() -> (SerialStream, String) {
    let (master, slave) = SerialStream::pair().expect("a pseudo-terminal");
    let path = slave.name().expect("the pty's path");
    drop(slave);
    (master, path)
}

/// sensorgate on `ports` pty serial sources, JSON payloads, state topics only, default `[broker]`
/// limits (the queues sized for a Pi).
pub async fn sensorgate(ports: usize) -> Target {
    let mut body = String::from("[publish]\nfield_topics = false\nqos = 1\n");
    let mut masters = Vec::new();
    for i in 0..ports {
        let (master, path) = pty();
        body.push_str(&format!(
            "[[source]]\nname = \"p{i}\"\nkind = \"serial\"\npath = \"{path}\"\npayload = \"json\"\nmax_frame_len = 256\n"
        ));
        masters.push(master);
    }
    let daemon = Daemon::start(&body).await;
    Target {
        masters,
        broker_port: daemon.port,
        filter: "sensorgate/+".into(),
        pids: vec![daemon.pid()],
        keep_alive: Box::new(daemon),
    }
}

/// One JSON reading stamped with the wall clock, as a sensor node would print it.
pub fn line(device: u64, sent_ns: u64) -> Vec<u8> {
    format!("{{\"id\":{device},\"t\":{sent_ns},\"temperature\":21.5,\"humidity\":48}}\n")
        .into_bytes()
}

/// A subscriber to `filter`; yields (receive time ns, the reading's `t` stamp) per reading.
pub async fn subscribe(
    port: u16,
    filter: &str,
    qos: QoS,
) -> (AsyncClient, mpsc::UnboundedReceiver<(u64, u64)>) {
    let mut options = MqttOptions::new(format!("bench-{}", now_ns()), "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 100_000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (subacked_tx, mut subacked_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let received = now_ns();
                    let Some(sent) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["t"].as_u64())
                    else {
                        continue; // the gateway's own topics
                    };
                    if tx.send((received, sent)).is_err() {
                        return;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = subacked_tx.send(());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client.subscribe(filter, qos).await.expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), subacked_rx.recv())
        .await
        .expect("SUBACK within 10 s")
        .expect("the client is alive");
    (client, rx)
}

/// Runs one case against a started system and tears it down.
pub async fn run_case(case: Case, mut target: Target) -> Row {
    let (_client, mut rx) = subscribe(target.broker_port, &target.filter, case.qos).await;
    let before = Usage::of(&target.pids);
    let start = Instant::now();
    for n in 0..case.readings {
        if let Some(rate) = case.rate {
            tokio::time::sleep_until(due(start, n, rate).into()).await;
        }
        let index = (n as usize) % target.masters.len();
        let bytes = line(n % DEVICES, now_ns());
        let _ = target.masters[index].write_all(&bytes).await;
    }
    // Collect until everything arrived, or nothing arrived for 5 s, or 5 minutes in all.
    let mut latencies = Vec::with_capacity(case.readings as usize);
    let mut last_receipt = start;
    let overall = Instant::now() + Duration::from_secs(300);
    while (latencies.len() as u64) < case.readings && Instant::now() < overall {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((at, sent))) => {
                latencies.push(at.saturating_sub(sent));
                last_receipt = Instant::now();
            }
            _ => break,
        }
    }
    let after = Usage::of(&target.pids);
    let received = latencies.len() as u64;
    latencies.sort_unstable();
    drop(target.keep_alive);
    Row {
        case,
        received,
        per_second: received as f64 / last_receipt.duration_since(start).as_secs_f64().max(1e-9),
        p50_ns: percentile(&latencies, 0.5),
        p99_ns: percentile(&latencies, 0.99),
        max_ns: percentile(&latencies, 1.0),
        cpu_us_per_reading: (after.cpu_seconds - before.cpu_seconds) * 1e6 / received.max(1) as f64,
        peak_rss_kib: after.peak_rss_kib,
    }
}

/// Every case of [`cases`] against sensorgate.
pub async fn run(quick: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for case in cases(quick) {
        let target = sensorgate(case.ports).await;
        let row = run_case(case, target).await;
        eprintln!(
            "  sensorgate: {}: {:.0} readings/s",
            case.label(),
            row.per_second
        );
        rows.push(row);
    }
    rows
}

/// Milliseconds with two decimals, or `-`.
pub fn ms(ns: Option<u64>) -> String {
    ns.map(|ns| format!("{:.2}", ns as f64 / 1e6))
        .unwrap_or_else(|| "-".into())
}

/// The markdown table of some rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| case | readings | received | readings/s | p50 ms | p99 ms | max ms | CPU µs/reading | peak RSS KiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |\n",
            row.case.label(),
            crate::thousands(row.case.readings as f64),
            crate::thousands(row.received as f64),
            crate::thousands(row.per_second),
            ms(row.p50_ns),
            ms(row.p99_ns),
            ms(row.max_ns),
            row.cpu_us_per_reading,
            crate::thousands(row.peak_rss_kib as f64),
        ));
    }
    out
}

/// The markdown section.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "## End to end: pty serial ports -> sensorgate -> one MQTT client\n\n\
         The real daemon, with its default `[broker]` limits, reads JSON lines (4 fields, 1,000 distinct\n\
         devices, `field_topics = false`) from N\n\
         pseudo-terminal serial ports; one rumqttc client subscribes to `sensorgate/+`. Latency runs from\n\
         just before a line is written to the port until the client receives the state message. Under\n\
         \"saturation\" the writer outruns the daemon, so the latency columns there measure the queue, not\n\
         the path. CPU is the daemon's user + system time over the case divided by the readings; at low\n\
         rates it includes fixed background work (timers, stats) divided by few readings.\n\n",
    );
    out.push_str(&table(rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cases_cover_the_issue() {
        let cases = cases(true);
        let ports: Vec<usize> = cases
            .iter()
            .filter(|c| c.rate.is_none())
            .map(|c| c.ports)
            .collect();
        assert_eq!(ports, [1, 4, 16, 1]);
        let rates: Vec<u64> = cases.iter().filter_map(|c| c.rate).collect();
        assert_eq!(rates, [100, 1_000, 10_000]);
        assert!(cases.iter().any(|c| c.qos == QoS::AtLeastOnce));
        assert!(
            cases
                .iter()
                .filter(|c| c.rate == Some(1_000))
                .all(|c| c.readings >= DEVICES),
            "the 1,000/s case reaches all 1,000 devices"
        );
    }

    #[test]
    fn a_line_carries_its_stamp() {
        let value: serde_json::Value =
            serde_json::from_slice(line(7, 123_456).trim_ascii_end()).expect("JSON");
        assert_eq!(value["t"], 123_456);
        assert_eq!(value["id"], 7);
    }
}
