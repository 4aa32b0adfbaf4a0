//! The demo configuration's resident memory stays flat: the real daemon runs `config/demo.toml` (its
//! sources, devices and publish settings, read from the file at test time) on a free 127.0.0.1 port and a
//! temporary state directory, with the simulators sending every 100 ms instead of every few seconds so
//! that a minute carries the traffic of about an hour of the demo (the simulated LoRaWAN device every
//! second: its sessions are written every 64 uplinks). VmRSS is sampled every second; after a
//! warm-up, the last sample must not be more than [`ALLOWED_GROWTH_KIB`] above the warm-up sample.
//!
//! What it caught: the simulated radio kept a trace entry for every SPI transaction forever (the demo grew
//! about 75 KiB a minute; at this test's pace about 1.5 MiB over the measured 40 s).

use sensorgate_testkit::config::demo;
use sensorgate_testkit::daemon;
use sensorgate_testkit::mqtt;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon::Daemon;

/// When the reference sample is taken (start-up allocations, the broker's first sessions and the
/// devices' first states are behind it).
const WARM_UP: Duration = Duration::from_secs(20);
/// How long the daemon runs in all.
const RUN: Duration = Duration::from_secs(60);
/// The interval the test gives every `[[source]]` of the demo.
const FAST_INTERVAL: &str = "100ms";
/// The simulated LoRaWAN device's interval in the test (its shortest).
const FAST_SIMULATED_LORAWAN: &str = "1s";
/// Device states each source must have produced for the run to count (about 1,800 are expected).
const MIN_STATES: u64 = 300;
/// How far the last sample may lie above the warm-up sample (allocator noise is well under this).
const ALLOWED_GROWTH_KIB: u64 = 512;

/// The demo's configuration ready for the harness (the testkit's [`demo`]), its sources at the
/// test's pace.
fn demo_config() -> String {
    let mut config = demo();
    let sources = config
        .get_mut("source")
        .and_then(toml::Value::as_array_mut)
        .expect("[[source]] in the demo");
    assert!(
        sources.len() >= 2,
        "the demo has a serial-style simulator and a radio"
    );
    // The sources that send at an `interval` (the simulators) and the simulated LoRaWAN device at its
    // shortest (`simulate_interval`); the BLE replay keeps its own pace.
    for source in sources.iter_mut() {
        let source = source.as_table_mut().expect("a [[source]] table");
        if source.contains_key("interval") {
            source.insert("interval".into(), FAST_INTERVAL.into());
        }
        if source.contains_key("simulate_interval") {
            source.insert("simulate_interval".into(), FAST_SIMULATED_LORAWAN.into());
        }
    }
    toml::to_string(&config).expect("serialise the test configuration")
}

/// The process's resident set, KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: 80 s of real time (the demo's memory sampled for a minute)"]
async fn the_demo_configuration_runs_in_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &demo_config());
    let pid = daemon.child.id();

    // Drain everything the gateway publishes (as a dashboard would), and count the states per source.
    let mut subscriber = mqtt::subscribe(daemon.addr, "demo-memory", "sensorgate/#", 0).await;
    let states = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let counts = states.clone();
    let counter = tokio::spawn(async move {
        while let Some(message) = subscriber.rx.recv().await {
            let Ok(state) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
                continue;
            };
            let slot = match state.get("source").and_then(serde_json::Value::as_str) {
                Some("sim") => 0,
                Some("lora") => 1,
                _ => continue,
            };
            counts[slot].fetch_add(1, Ordering::Relaxed);
        }
    });

    let started = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut reference = None;
    while started.elapsed() < RUN {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("sensorgate exited with {status}:\n{}", daemon.log());
        }
        let at = started.elapsed();
        let rss = vm_rss_kib(pid);
        samples.push((at.as_secs(), rss));
        if reference.is_none() && at >= WARM_UP {
            reference = Some(rss);
        }
    }
    counter.abort();
    let (sim, lora) = (
        states[0].load(Ordering::Relaxed),
        states[1].load(Ordering::Relaxed),
    );
    let (status, _) = daemon.stop();
    assert!(status.success(), "sensorgate stopped with {status}");

    let figures: Vec<String> = samples
        .iter()
        .map(|(s, kib)| format!("{s}s:{kib}"))
        .collect();
    eprintln!("VmRSS KiB over the run: {}", figures.join(" "));
    eprintln!("device states received: {sim} from the simulator, {lora} from the radio");
    assert!(
        sim >= MIN_STATES && lora >= MIN_STATES,
        "too little traffic to judge memory by: {sim} simulator and {lora} radio states"
    );
    let reference = reference.expect("a sample after the warm-up");
    let &(_, last) = samples.last().expect("samples");
    let growth = last.saturating_sub(reference);
    eprintln!(
        "VmRSS at {}s: {reference} KiB, at the end: {last} KiB, growth {growth} KiB",
        WARM_UP.as_secs()
    );
    assert!(
        growth <= ALLOWED_GROWTH_KIB,
        "resident memory grew {growth} KiB after the warm-up (allowed {ALLOWED_GROWTH_KIB} KiB): \
         {reference} -> {last} KiB"
    );
}
