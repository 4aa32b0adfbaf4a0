//! The uplink running on a task of the test, with its input channel, stats and stop token, and the
//! settings it starts from: the one harness the in-process uplink tests (delivery, flash, TLS) use.

use std::path::Path;
use std::time::Duration;

use sensorgate::model::Message;
use sensorgate::uplink::{
    ForwardRule, SpoolSettings, Uplink, UplinkError, UplinkSettings, UplinkStatsHandle,
};

/// The tests' uplink to `url` as `client_id`: `sg/#` forwarded under `site/` at QoS 1, plaintext
/// allowed, no TLS files and no login (a test sets what it needs with struct update syntax).
pub fn settings(
    url: String,
    client_id: &str,
    state_dir: &Path,
    spool: SpoolSettings,
) -> UplinkSettings {
    UplinkSettings {
        url: url.parse().expect("the test broker's URL is an MQTT URL"),
        allow_plaintext: true,
        client_id: client_id.into(),
        ca_file: None,
        cert_file: None,
        key_file: None,
        username: None,
        password_file: None,
        keep_alive: Duration::from_secs(30),
        max_inflight: 100,
        protocol: Default::default(),
        base_topic: "sg".into(),
        forwards: vec![ForwardRule {
            filter: "sg/#".into(),
            prefix: "site/".into(),
            qos: 1,
        }],
        spool,
        state_dir: state_dir.to_path_buf(),
    }
}
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct Running {
    pub input: mpsc::Sender<Message>,
    pub stats: UplinkStatsHandle,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), UplinkError>>,
}

impl Running {
    /// Opens the uplink (reconnecting every 100-400 ms) and runs it on a task.
    pub fn start(settings: UplinkSettings) -> Running {
        let uplink = Uplink::open(settings)
            .expect("open uplink")
            .with_reconnect_delays(Duration::from_millis(100), Duration::from_millis(400));
        let stats = uplink.stats();
        let (input, rx) = mpsc::channel(sensorgate::broker::TAP_CAPACITY);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(uplink.run(rx, shutdown.clone()));
        Running {
            input,
            stats,
            shutdown,
            task,
        }
    }

    /// Waits (up to `within`) until `ok` holds for the stats snapshot; panics with `what` and the last
    /// snapshot otherwise.
    pub async fn wait_stats(
        &self,
        within: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let snap = self.stats.snapshot();
            if ok(&snap) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {snap}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Drops the uplink without a clean stop: no final write, no DISCONNECT (a crash).
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// A clean stop, which must end (within `within`) without an error.
    pub async fn stop(self, within: Duration) {
        self.shutdown.cancel();
        tokio::time::timeout(within, self.task)
            .await
            .expect("uplink stops within bound")
            .expect("uplink task")
            .expect("clean stop");
    }
}
