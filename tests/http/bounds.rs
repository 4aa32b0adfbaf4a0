//! Hostile requests: oversize headers, a path traversal, a client that never finishes its request, and
//! 1,000 connections held open at once. The daemon answers each with a bounded refusal, counts it, and
//! keeps serving.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use sensorgate_testkit::mqtt;

use crate::client::{exchange, get};
use crate::daemon::{start_anonymous_read, wait_for};

fn refused(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("sensorgate_http_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {reason} refusals in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_traversal_and_slow_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_anonymous_read(dir.path());
    let page = running.page;

    let mut big = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(64 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(exchange(page, &big).status, 431);

    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/../../etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
    ] {
        let answer = get(page, path, None);
        assert_eq!(answer.status, 404, "{path}");
        assert!(!answer.body.contains("root:"), "{path}");
    }
    let body = format!(
        "POST /api/reload HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        1024 * 1024
    );
    assert_eq!(exchange(page, body.as_bytes()).status, 413);

    // A client that sends half a request line and then nothing is answered 408 within the bound.
    let started = Instant::now();
    let slow = exchange(page, b"GET /metr");
    assert_eq!(slow.status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    let metrics = get(page, "/metrics", None).body;
    assert_eq!(refused(&metrics, "request"), 3, "{metrics}");
    // The same counts in {base}/gateway/stats (published every second here).
    let mut stats = mqtt::subscribe(
        running.daemon.addr,
        "watch-stats",
        "sensorgate/gateway/stats",
        0,
    )
    .await;
    let mut seen = Vec::new();
    let report = stats
        .wait_for(Duration::from_secs(10), &mut seen, |message| {
            serde_json::from_slice::<serde_json::Value>(&message.payload)
                .is_ok_and(|report| report["http"]["requests_refused"] == 3)
        })
        .await;
    assert!(
        report.is_some(),
        "no stats with http.requests_refused = 3: {seen:?}"
    );
    assert_eq!(get(page, "/healthz", None).status, 200);
    running.daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_are_bounded_and_the_page_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let running = start_anonymous_read(dir.path());
    let page = running.page;
    let mut idle = Vec::new();
    let opening = std::time::Instant::now();
    for _ in 0..1000 {
        let mut stream =
            TcpStream::connect_timeout(&page, Duration::from_secs(5)).expect("connect");
        // A request started and never finished: each holds a slot until the read timeout.
        stream.write_all(b"GET / HT").unwrap();
        idle.push(stream);
    }
    // Beyond the 64 slots, connections are closed at once and counted.
    wait_for(Duration::from_secs(10), "refusals logged", || {
        running
            .daemon
            .log()
            .contains("connections open")
            .then_some(())
    });
    drop(idle);
    // The held ones end at the read timeout; then the page answers again.
    let metrics = wait_for(Duration::from_secs(20), "the page answers again", || {
        let answer = std::panic::catch_unwind(|| get(page, "/metrics", None)).ok()?;
        (answer.status == 200).then_some(answer.body)
    });
    // 64 slots, each freed by the 10 s read timeout: while the 1,000 connections were being opened
    // (slowly on a loaded machine), at most 64 per started 10 s got a slot; the others were refused,
    // except those still waiting in the listen backlog when the test let go: accepted then, already
    // closed by their client, they need no refusal (128 of them allowed for).
    let periods = opening.elapsed().as_secs() / 10 + 1;
    let least = 1000u64.saturating_sub(64 * periods + 128);
    let busy = refused(&metrics, "busy");
    assert!(
        (least..=1000).contains(&busy),
        "{busy} refused as busy, expected at least {least}:\n{metrics}"
    );
    assert_eq!(get(page, "/healthz", None).status, 200);
    let (status, _) = running.daemon.stop();
    assert!(status.success(), "{status}");
}
