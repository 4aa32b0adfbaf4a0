//! A flood of connects to the embedded broker stays bounded in memory: thousands of clients with unique
//! ids, persistent sessions and wills, connecting and vanishing, leave at most `max_connections` sessions
//! and no growth of the process's resident memory beyond a small margin. Alone in a process of its own
//! (`sensorgate_testkit::alone`) so the RSS reading is not disturbed by other tests.

use sensorgate_testkit::alone;
use sensorgate_testkit::broker as support;
use sensorgate_testkit::raw;

use std::time::Duration;

use raw::{Connect, RawClient, Will};
use sensorgate::broker::{Broker, BrokerSettings};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn wave(addr: std::net::SocketAddr, wave: usize, clients: usize) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..clients {
        let id = format!("flood-{wave}-{i}");
        let options = Connect {
            clean: i % 2 == 0,
            will: Some(Will {
                topic: "flood/will",
                payload: b"gone",
                qos: 1,
                retain: false,
            }),
            ..Connect::new(&id)
        };
        let (client, code, _) = RawClient::connect(addr, &options).await;
        match code {
            0 => accepted += 1,
            3 => refused += 1,
            other => panic!("unexpected CONNACK {other}"),
        }
        drop(client);
    }
    (accepted, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "volume: 5,000 connects, then the process's memory"]
async fn a_flood_of_connects_is_bounded_in_sessions_and_memory() {
    if !alone::in_own_process("flood::a_flood_of_connects_is_bounded_in_sessions_and_memory") {
        return;
    }
    let settings = BrokerSettings {
        max_connections: 300,
        ..support::local_settings()
    };
    let broker = Broker::start(&settings, None).await.unwrap();
    let addr = broker.local_addrs()[0];
    wave(addr, 0, 1000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = rss_kib();
    let mut refused_total = 0;
    for w in 1..=4 {
        let (_, refused) = wave(addr, w, 1000).await;
        refused_total += refused;
        assert!(
            broker.sessions() <= 300,
            "sessions {} after wave {w}",
            broker.sessions()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = rss_kib().saturating_sub(baseline);
    assert_eq!(
        refused_total, 0,
        "absent persistent sessions make room for new clients instead of locking them out"
    );
    assert!(
        broker.sessions_evicted() > 0,
        "the sessions absent the longest were ended"
    );
    assert!(
        grown < 16 * 1024,
        "RSS grew {grown} KiB over 4000 more connects"
    );
    println!("flood: 4000 connects after warm-up, RSS +{grown} KiB, {refused_total} refused, {} sessions", broker.sessions());
}
