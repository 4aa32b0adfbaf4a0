//! Broker throughput: messages/s from one publisher to one subscriber (rumqttc, 64-byte payloads, loopback)
//! at QoS 0 and QoS 1, through sensorgate's embedded broker and, in the same run, through Debian's
//! mosquitto (`/usr/sbin/mosquitto`, started on a free port with a generated config and killed by PID), with
//! the ratio; plus the resident memory of this process (which hosts the embedded broker) and of mosquitto.
//!
//! `cargo bench --bench broker` (about a minute) or `cargo bench --bench broker -- --quick` (under 30 s).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sensorgate::broker::{Broker, BrokerSettings, ListenerSettings};

const PAYLOAD: [u8; 64] = [b'x'; 64];

/// Kills mosquitto when dropped.
struct Mosquitto {
    child: Child,
    _dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn start_mosquitto() -> Option<Mosquitto> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\nlog_dest none\n"
        ),
    )
    .ok()?;
    let child = Command::new("/usr/sbin/mosquitto")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let broker = Mosquitto {
        child,
        _dir: dir,
        addr,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Some(broker);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Samples the peak RSS of `pid` until dropped.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PeakRss {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        PeakRss {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn options(id: String, addr: SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(100);
    options
}

/// One publisher, one subscriber, `count` messages at `qos`; returns messages/s received and how many.
async fn run_case(addr: SocketAddr, qos: QoS, count: usize, tag: &str) -> (f64, usize) {
    let topic = format!("bench/{tag}");
    let (sub, mut sub_loop) = AsyncClient::new(options(format!("sub-{tag}"), addr), 100);
    sub.subscribe(&topic, qos).await.expect("subscribe queued");
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
    assert!(matches!(subscribed, Ok(true)), "subscriber ready");

    let received = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let last_nanos = Arc::new(AtomicU64::new(0));
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
    let (publisher, mut pub_loop) = AsyncClient::new(options(format!("pub-{tag}"), addr), 1000);
    let pump = tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    for _ in 0..count {
        if publisher
            .publish(&topic, qos, false, PAYLOAD.to_vec())
            .await
            .is_err()
        {
            break;
        }
    }
    // Wait until everything arrived, or nothing more arrived for 2 s (QoS 0 may drop), bounded at 120 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let now_received = received.load(Ordering::Relaxed);
        if now_received >= count {
            break;
        }
        if now_received != seen {
            seen = now_received;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(2) {
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

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (qos0_count, qos1_count) = if quick {
        (50_000, 20_000)
    } else {
        (300_000, 100_000)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let settings = BrokerSettings {
            listeners: vec![ListenerSettings {
                bind: "127.0.0.1:0".parse().expect("addr"),
                tls: None,
            }],
            ..BrokerSettings::default()
        };
        let idle_rss = rss_kib(std::process::id());
        let broker = Broker::start(&settings, None).await.expect("embedded broker");
        let embedded = broker.local_addrs()[0];
        let mosquitto = start_mosquitto();
        if mosquitto.is_none() {
            eprintln!("mosquitto not available (/usr/sbin/mosquitto): embedded broker only");
        }
        println!(
            "broker bench ({}): 1 publisher -> 1 subscriber, 64-byte payloads, loopback",
            if quick { "quick" } else { "full" }
        );
        println!("| case | messages | sensorgate msg/s | mosquitto msg/s | ratio |");
        println!("|---|---|---|---|---|");
        let own_rss = PeakRss::start(std::process::id());
        let mosq_rss = mosquitto.as_ref().map(|m| PeakRss::start(m.child.id()));
        for (name, qos, count) in [("QoS 0", QoS::AtMostOnce, qos0_count), ("QoS 1", QoS::AtLeastOnce, qos1_count)] {
            let tag = name.replace(' ', "").to_lowercase();
            let (ours, ours_got) = run_case(embedded, qos, count, &format!("sg-{tag}")).await;
            let theirs = match &mosquitto {
                Some(m) => Some(run_case(m.addr, qos, count, &format!("mq-{tag}")).await),
                None => None,
            };
            let (theirs_text, ratio) = match theirs {
                Some((rate, got)) => (
                    format!("{rate:.0} ({got} received)"),
                    if rate > 0.0 { format!("{:.2}", ours / rate) } else { "-".into() },
                ),
                None => ("-".into(), "-".into()),
            };
            println!("| {name} | {count} | {ours:.0} ({ours_got} received) | {theirs_text} | {ratio} |");
        }
        let own_peak = own_rss.finish();
        println!(
            "RSS of this process (embedded broker + bench clients): {idle_rss} KiB before start, peak {own_peak} KiB"
        );
        if let Some(peak) = mosq_rss.map(PeakRss::finish) {
            println!("RSS of mosquitto: peak {peak} KiB");
        }
        drop(mosquitto);
        let _ = broker.shutdown().await;
    });
}
