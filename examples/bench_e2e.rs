//! End-to-end benchmark: N pseudo-terminal serial ports -> the real release daemon (decoding, registry,
//! embedded broker) -> one subscribing MQTT client on 127.0.0.1. Prints a markdown table of readings/s at
//! saturation (QoS 0 and 1), latency from the last byte written to the client's receipt (p50/p99/max) at
//! fixed rates, and the daemon's RSS and CPU time per reading.
//!
//! Run: `cargo build --release && cargo run --release --example bench_e2e -- [--quick]`
//! (`SENSORGATE_BIN` overrides the daemon path, default `target/release/sensorgate`). Every run is
//! bounded in count and time and uses 127.0.0.1 only.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::{SerialPort, SerialStream};

/// The value at quantile `q` (0..=1) of sorted samples (nearest rank); `None` when empty.
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Absolute-deadline pacing: the time at which send number `n` is due at `rate` per second, so a late
/// send does not push every later one back.
fn due(start: Instant, n: u64, rate: u64) -> Instant {
    start + Duration::from_nanos(n.saturating_mul(1_000_000_000) / rate.max(1))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(utime + stime)` seconds and VmHWM KiB of a process.
fn resources(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, hwm)
}

/// Starts the daemon with `ports` pty sources; returns it and the pty masters.
async fn start(ports: usize) -> (Daemon, Vec<SerialStream>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut config = format!(
        "[gateway]\nstate_dir = \"{}\"\n[log]\nlevel = \"warn\"\n[[broker.listener]]\nbind = \"127.0.0.1:{port}\"\n\
         [broker]\nmax_queued_messages = 100000\n[publish]\nfield_topics = false\nqos = 1\n",
        dir.path().join("state").display()
    );
    let mut masters = Vec::new();
    for i in 0..ports {
        let (master, slave) = SerialStream::pair().expect("pty");
        let path = slave.name().expect("pty path");
        drop(slave);
        config.push_str(&format!(
            "[[source]]\nname = \"p{i}\"\nkind = \"serial\"\npath = \"{path}\"\npayload = \"json\"\nmax_frame_len = 256\n"
        ));
        masters.push(master);
    }
    let config_path = dir.path().join("bench.toml");
    std::fs::write(&config_path, config).expect("config");
    let binary = std::env::var_os("SENSORGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "target/release/sensorgate".into());
    let child = Command::new(&binary)
        .args(["run", "-c"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it with cargo build --release)",
                binary.display()
            )
        });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "daemon did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let every source open its port before writing (the stats topic would say so; a bounded pause is
    // enough for a benchmark, whose figures do not depend on it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    (
        Daemon {
            child,
            port,
            _dir: dir,
        },
        masters,
    )
}

/// A subscriber to every device state; yields (receive time ns, payload `t` field).
async fn subscribe(port: u16, qos: QoS) -> (AsyncClient, mpsc::UnboundedReceiver<(u64, u64)>) {
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
                Ok(Event::Incoming(Packet::Publish(p)))
                    if !p.topic.ends_with("availability") && !p.topic.contains("gateway") =>
                {
                    let received = now_ns();
                    let sent = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["t"].as_u64())
                        .unwrap_or(0);
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
    client
        .subscribe("sensorgate/+", qos)
        .await
        .expect("subscribe");
    tokio::time::timeout(Duration::from_secs(10), subacked_rx.recv())
        .await
        .expect("SUBACK")
        .expect("client alive");
    (client, rx)
}

fn line(device: u64, sent_ns: u64) -> Vec<u8> {
    format!("{{\"id\":{device},\"t\":{sent_ns},\"temperature\":21.5,\"humidity\":48}}\n")
        .into_bytes()
}

/// Writes `total` readings round-robin over the ports as fast as they take them, or at `rate`/s; returns
/// (readings received, seconds from first write to last receipt, latencies ns).
async fn run(
    masters: &mut [SerialStream],
    rx: &mut mpsc::UnboundedReceiver<(u64, u64)>,
    total: u64,
    rate: Option<u64>,
    devices: u64,
) -> (u64, f64, Vec<u64>) {
    let start = Instant::now();
    for n in 0..total {
        if let Some(rate) = rate {
            tokio::time::sleep_until(due(start, n, rate).into()).await;
        }
        let index = (n as usize) % masters.len();
        let bytes = line(n % devices, now_ns());
        let _ = masters[index].write_all(&bytes).await;
    }
    let mut latencies = Vec::with_capacity(total as usize);
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while received < total {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((at, sent))) => {
                received += 1;
                latencies.push(at.saturating_sub(sent));
            }
            _ => break,
        }
    }
    latencies.sort_unstable();
    (received, start.elapsed().as_secs_f64(), latencies)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total: u64 = if quick { 20_000 } else { 100_000 };
    println!("| case | readings | received | readings/s | p50 ms | p99 ms | max ms | daemon CPU µs/reading | daemon peak RSS KiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut cases: Vec<(usize, QoS, Option<u64>, u64)> = Vec::new();
    for ports in [1usize, 4, 16] {
        cases.push((ports, QoS::AtMostOnce, None, total));
    }
    cases.push((1, QoS::AtLeastOnce, None, total));
    for rate in [100u64, 1_000, 10_000] {
        let count = (rate * if quick { 2 } else { 10 }).min(total);
        cases.push((1, QoS::AtMostOnce, Some(rate), count));
    }
    for (ports, qos, rate, count) in cases {
        let (daemon, mut masters) = start(ports).await;
        let (_client, mut rx) = subscribe(daemon.port, qos).await;
        let (cpu_before, _) = resources(daemon.child.id());
        let (received, seconds, latencies) = run(&mut masters, &mut rx, count, rate, 1_000).await;
        let (cpu_after, hwm) = resources(daemon.child.id());
        let ms = |q: f64| {
            percentile(&latencies, q)
                .map(|ns| format!("{:.2}", ns as f64 / 1e6))
                .unwrap_or_else(|| "-".into())
        };
        let case = match rate {
            Some(rate) => format!("{ports} port, QoS {}, {rate}/s", qos as u8),
            None => format!("{ports} port(s), QoS {}, saturation", qos as u8),
        };
        println!(
            "| {case} | {count} | {received} | {:.0} | {} | {} | {} | {:.1} | {hwm} |",
            received as f64 / seconds,
            ms(0.5),
            ms(0.99),
            ms(1.0),
            (cpu_after - cpu_before) * 1e6 / received.max(1) as f64
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), Some(50));
        assert_eq!(percentile(&samples, 0.99), Some(99));
        assert_eq!(percentile(&samples, 1.0), Some(100));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn the_pacer_keeps_absolute_deadlines() {
        let start = Instant::now();
        assert_eq!(due(start, 0, 1000), start);
        assert_eq!(due(start, 1000, 1000), start + Duration::from_secs(1));
        assert_eq!(due(start, 3, 2), start + Duration::from_millis(1500));
        assert_eq!(
            due(start, 5, 0),
            start + Duration::from_secs(5),
            "a zero rate is taken as 1/s"
        );
    }
}
