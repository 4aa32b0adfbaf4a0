//! `[gateway] worker_threads`: the async runtime runs as many worker threads as written (by default
//! one per core, at most 4), as the runtime itself reports at start.

use sensorgate::app::WORKER_THREADS_MARKER;
use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;

use std::time::Duration;

fn reported_workers(gateway_keys: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new("runtime").gateway(gateway_keys).toml();
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log(WORKER_THREADS_MARKER, 1, Duration::from_secs(10));
    let log = daemon.log();
    let line = log
        .lines()
        .find_map(|line| line.split_once(WORKER_THREADS_MARKER))
        .map(|(_, count)| count.trim().to_string());
    line.unwrap_or_else(|| panic!("no {WORKER_THREADS_MARKER:?} in the log:\n{log}"))
}

#[test]
fn one_worker_thread_per_core_by_default_and_as_many_as_written() {
    // The daemon inherits this process's CPUs.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(
        reported_workers(""),
        cores.clamp(1, 4).to_string(),
        "the default on {cores} cores"
    );
    assert_eq!(reported_workers("worker_threads = 1"), "1", "written");
    assert_eq!(reported_workers("worker_threads = 3"), "3", "written");
}
