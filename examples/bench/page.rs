//! What the status page costs the daemon in CPU: one daemon with 50 simulated devices each sending once
//! a minute (a `simulator` source, `devices = 50`, `interval = "60s"`) and `[http]` on 127.0.0.1 with
//! anonymous reading, measured first with no page open, then with one page open as its script runs in
//! a browser: the page itself once (gzip), then every 2 s the five JSON requests of its `refresh()`
//! (`/api/gateway`, `/api/sources`, `/api/devices`, `/api/frames?after=N` with the last id it saw,
//! `/api/heard`), each over its own HTTP/1.1 connection from this process. CPU is the on-CPU time of
//! the daemon's threads (`/proc/PID/task/*/schedstat`, nanoseconds) over each window, in percent of one
//! core. Targets: <= 0.1 % with no page open, and the page adding <= 0.5 %.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemon::Daemon;
use crate::resources::Threads;

/// The page's refresh period (`setInterval(refresh, 2000)` in `src/http/page.html`).
const REFRESH: Duration = Duration::from_secs(2);
/// The daemon is given this long after it listens before the first window.
const SETTLE: Duration = Duration::from_secs(3);
/// One request may take this long before it counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(5);
/// Simulated devices, each sending once a minute.
pub const DEVICES: u32 = 50;

/// The two windows' figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Length of each window, s.
    pub window_seconds: f64,
    /// The daemon's CPU with no page open, % of one core (`None`: no schedstat).
    pub closed_percent: Option<f64>,
    /// The same with one page open and refreshing.
    pub open_percent: Option<f64>,
    /// Refreshes done in the open window, and requests that failed.
    pub refreshes: u64,
    pub failed_requests: u64,
    /// Bytes the page's requests received in the open window.
    pub bytes_received: u64,
}

impl Report {
    /// What the open page added, in points of one core.
    pub fn added_percent(&self) -> Option<f64> {
        Some(self.open_percent? - self.closed_percent?)
    }
}

/// The daemon's configuration: the devices, and the page on a port the kernel chooses.
pub fn body() -> String {
    format!(
        "[[source]]\nname = \"sim\"\nkind = \"simulator\"\ndevices = {DEVICES}\ninterval = \"60s\"\n\
         [http]\nbind = \"127.0.0.1:0\"\nanonymous = \"read\"\n"
    )
}

/// One GET over a fresh connection: the status code and the body's length, or why it failed.
async fn get(addr: SocketAddr, path: &str, gzip: bool) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let encoding = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{encoding}Connection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no status line: {:?}", text.lines().next()))?;
        let body = match answer.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => answer[end + 4..].to_vec(),
            None => Vec::new(),
        };
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_LIMIT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_LIMIT:?}")))
}

/// The highest frame id of an `/api/frames` answer, or `after` when it has none.
pub fn last_frame_id(body: &[u8], after: u64) -> u64 {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return after;
    };
    json["frames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|frame| frame["id"].as_u64())
        .fold(after, u64::max)
}

/// On-CPU seconds of the daemon `pid` over `window` while `during` runs (or nothing).
async fn oncpu_over<F: std::future::Future<Output = ()>>(
    pid: u32,
    window: Duration,
    during: F,
) -> (Option<f64>, f64) {
    let before = Threads::of(pid);
    let start = Instant::now();
    let _ = tokio::time::timeout(window, during).await;
    let seconds = start.elapsed().as_secs_f64();
    let after = Threads::of(pid);
    let oncpu = before
        .oncpu_ns
        .zip(after.oncpu_ns)
        .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
    (oncpu, seconds)
}

/// The page open: loads it, then refreshes every [`REFRESH`] until cancelled by the window's end.
async fn page_open(addr: SocketAddr, report: &mut Report) {
    match get(addr, "/", true).await {
        Ok((200, body)) => report.bytes_received += body.len() as u64,
        _ => report.failed_requests += 1,
    }
    let mut after = 0;
    let mut ticks = tokio::time::interval(REFRESH);
    loop {
        ticks.tick().await;
        for path in ["/api/gateway", "/api/sources", "/api/devices", "/api/heard"] {
            match get(addr, path, false).await {
                Ok((200, body)) => report.bytes_received += body.len() as u64,
                _ => report.failed_requests += 1,
            }
        }
        match get(addr, &format!("/api/frames?after={after}"), false).await {
            Ok((200, body)) => {
                report.bytes_received += body.len() as u64;
                after = last_frame_id(&body, after);
            }
            _ => report.failed_requests += 1,
        }
        report.refreshes += 1;
    }
}

/// Both windows on one daemon.
pub async fn run(quick: bool) -> Report {
    let window = Duration::from_secs(if quick { 20 } else { 120 });
    let daemon = Daemon::start(&body()).await;
    let addr = daemon.listener("http", 0);
    tokio::time::sleep(SETTLE).await;
    let pid = daemon.pid();
    let mut report = Report::default();
    let (closed, closed_seconds) = oncpu_over(pid, window, std::future::pending()).await;
    let mut open_report = Report::default();
    let (open, open_seconds) = oncpu_over(pid, window, page_open(addr, &mut open_report)).await;
    report.window_seconds = closed_seconds;
    report.closed_percent = closed.map(|s| s / closed_seconds * 100.0);
    report.open_percent = open.map(|s| s / open_seconds * 100.0);
    report.refreshes = open_report.refreshes;
    report.failed_requests = open_report.failed_requests;
    report.bytes_received = open_report.bytes_received;
    eprintln!(
        "  page: closed {:?} %, open {:?} %, {} refreshes, {} failed",
        report.closed_percent, report.open_percent, report.refreshes, report.failed_requests
    );
    drop(daemon);
    report
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.3} %"))
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let met = |value: Option<f64>, limit: f64| match value {
        Some(v) if v <= limit => "yes",
        Some(_) => "**no**",
        None => "-",
    };
    format!(
        "## The status page's CPU\n\n\
         The daemon with {DEVICES} simulated devices sending once a minute and `[http]` on 127.0.0.1, first\n\
         with no page open, then with one page open as its script runs in a browser (the page once, then\n\
         every 2 s the five JSON requests of its refresh: gateway, sources, devices, frames after the last\n\
         id seen, heard), each request over its own HTTP/1.1 connection. CPU is the on-CPU time of the\n\
         daemon's threads (schedstat) over each window of {:.0} s, in percent of one core.\n\n\
         | window | daemon CPU | target | met |\n\
         |---|---:|---:|---|\n\
         | no page open | {} | <= 0.1 % | {} |\n\
         | one page open | {} | | |\n\
         | added by the page | {} | <= 0.5 % | {} |\n\n\
         The open window made {} refreshes ({} requests failed) and received {} bytes.\n",
        report.window_seconds,
        percent(report.closed_percent),
        met(report.closed_percent, 0.1),
        percent(report.open_percent),
        percent(report.added_percent()),
        met(report.added_percent(), 0.5),
        report.refreshes,
        report.failed_requests,
        crate::thousands(report.bytes_received as f64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_frame_id_is_the_highest_seen() {
        let body = br#"{"overwritten":0,"frames":[{"id":7},{"id":12},{"id":9}]}"#;
        assert_eq!(last_frame_id(body, 3), 12);
        assert_eq!(last_frame_id(br#"{"frames":[]}"#, 3), 3);
        assert_eq!(last_frame_id(b"not json", 5), 5);
    }

    #[test]
    fn the_section_shows_both_windows_and_the_budgets() {
        let report = Report {
            window_seconds: 120.0,
            closed_percent: Some(0.05),
            open_percent: Some(0.75),
            refreshes: 60,
            failed_requests: 0,
            bytes_received: 123_456,
        };
        let text = markdown(&report);
        assert!(text.starts_with("## The status page's CPU\n"), "{text}");
        assert!(
            text.contains("| no page open | 0.050 % | <= 0.1 % | yes |"),
            "{text}"
        );
        assert!(
            text.contains("| added by the page | 0.700 % | <= 0.5 % | **no** |"),
            "{text}"
        );
        assert!(text.contains("60 refreshes (0 requests failed) and received 123,456 bytes"));
    }

    #[test]
    fn the_configuration_is_valid() {
        let text = crate::daemon::configuration(&body(), "/tmp/state");
        let text = text.replace("{port}", "0");
        sensorgate::config::Config::parse(&text, std::path::Path::new("page.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
}
