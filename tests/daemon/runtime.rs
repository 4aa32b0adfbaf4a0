//! `[gateway] worker_threads`: the async runtime runs as many worker threads as written (by default
//! one), as the runtime itself reports at start; the pipeline runs beside them on a thread of its own.

use sensorgate::app::WORKER_THREADS_MARKER;
use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;

use std::time::Duration;

/// The worker count the daemon logs at start, and the names of its threads then.
fn reported_workers(gateway_keys: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigBuilder::new("runtime").gateway(gateway_keys).toml();
    // Ready (the ports file written) comes after the pipeline started.
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log(WORKER_THREADS_MARKER, 1, Duration::from_secs(10));
    let log = daemon.log();
    let line = log
        .lines()
        .find_map(|line| line.split_once(WORKER_THREADS_MARKER))
        .map(|(_, count)| count.trim().to_string());
    let count = line.unwrap_or_else(|| panic!("no {WORKER_THREADS_MARKER:?} in the log:\n{log}"));
    (count, thread_names(daemon.pid()))
}

/// The kernel's names of a process's threads (at most 15 bytes each).
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_string())
        .collect()
}

#[test]
fn one_worker_thread_by_default_as_many_as_written_and_the_pipeline_beside_them() {
    let (workers, threads) = reported_workers("");
    assert_eq!(workers, "1", "the default");
    // "sensorgate-pipeline", cut to the kernel's 15 bytes.
    assert!(
        threads.iter().any(|name| name == "sensorgate-pipe"),
        "no pipeline thread among {threads:?}"
    );
    assert_eq!(reported_workers("worker_threads = 1").0, "1", "written");
    assert_eq!(reported_workers("worker_threads = 3").0, "3", "written");
}
