//! The baseline users run today, under the same workload as [`crate::e2e`]: one Python bridge per
//! serial port as a typical tutorial writes it (`bench/baseline_bridge.py`: pyserial `readline`,
//! `json.loads`, paho-mqtt `publish` to `sensors/<id>`) into Debian's mosquitto, the subscriber on
//! mosquitto. CPU seconds and resident memory are summed over mosquitto and every bridge, against
//! sensorgate's single process with its embedded broker, and every figure is a ratio within one run.
//!
//! The bridges run on Debian's `/usr/bin/python3` (where `python3-serial` and `python3-paho-mqtt`
//! install); `$BENCH_PYTHON` names another interpreter.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use rumqttc::QoS;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::e2e::{self, Case, Row, Target};
use crate::measure;
use crate::mosquitto::{BrokerConfig, Mosquitto};

/// What the baseline run gave: its rows, or why it could not run.
pub struct Report {
    pub rows: Vec<Row>,
    pub unavailable: Option<String>,
}

fn python() -> PathBuf {
    std::env::var_os("BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/python3".into())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/baseline_bridge.py")
}

/// Starts one bridge on `serial` and waits (up to 15 s) for its "ready" line.
async fn bridge(serial: &str, broker_port: u16, qos: QoS) -> Result<Child, String> {
    let mut child = Command::new(python())
        .arg(script())
        .args(["--serial", serial, "--broker-port"])
        .arg(broker_port.to_string())
        .args(["--qos", &(qos as u8).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", python().display()))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await {
        Ok(Ok(Some(line))) if line == "ready" => Ok(child),
        other => {
            let status = child.try_wait().ok().flatten();
            Err(format!(
                "the Python bridge did not get ready ({other:?}, exit {status:?}); it needs Debian's \
                 python3-serial and python3-paho-mqtt: apt install python3-serial python3-paho-mqtt"
            ))
        }
    }
}

/// mosquitto plus one bridge per port.
pub async fn start(case: Case) -> Result<Target, String> {
    let broker = Mosquitto::start(BrokerConfig::default());
    let mut pids: Vec<u32> = broker.pid().into_iter().collect();
    let mut masters = Vec::new();
    let mut bridges = Vec::new();
    for _ in 0..case.ports {
        let (master, path) = e2e::pty();
        let child = bridge(&path, broker.port, case.qos).await?;
        pids.extend(child.id());
        masters.push(master);
        bridges.push(child);
    }
    Ok(Target {
        masters,
        broker_port: broker.port,
        filter: "sensors/+".into(),
        pids,
        keep_alive: Box::new((bridges, broker)),
    })
}

/// Every case of [`e2e::cases`] through the baseline.
pub async fn run(quick: bool) -> Report {
    let mut rows = Vec::new();
    for case in e2e::cases(quick) {
        match start(case).await {
            Ok(target) => {
                let row = e2e::run_case(case, target).await;
                eprintln!(
                    "  baseline: {}: {:.0} readings/s",
                    case.label(),
                    row.per_second
                );
                rows.push(row);
            }
            Err(reason) => {
                eprintln!("  baseline: {reason}");
                return Report {
                    rows,
                    unavailable: Some(reason),
                };
            }
        }
    }
    Report {
        rows,
        unavailable: None,
    }
}

/// `ours / theirs` with two significant decimals, or `-` when either is missing or zero.
pub fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    let divided = ours
        .filter(|&o| o > 0.0)
        .zip(theirs)
        .and_then(|(o, t)| measure::ratio(o, t));
    match divided {
        Some(r) => {
            if r >= 10.0 {
                format!("{r:.1}")
            } else if r >= 0.1 {
                format!("{r:.2}")
            } else {
                format!("{r:.3}")
            }
        }
        None => "-".into(),
    }
}

/// The markdown section: the baseline's own table, then sensorgate ÷ baseline case by case.
pub fn markdown(ours: &[Row], report: &Report) -> String {
    let mut out = String::from(
        "## The same workload through the baseline: Python + mosquitto\n\n\
         What many users run today: one `bench/baseline_bridge.py` per port (pyserial `readline`,\n\
         `json.loads`, paho-mqtt `publish` to `sensors/<id>` at the case's QoS, as a typical tutorial\n\
         writes it) on Debian's Python, into Debian's mosquitto; the same rumqttc subscriber on\n\
         `sensors/+`. CPU and peak RSS are summed over mosquitto and every bridge process.\n\n",
    );
    if let Some(reason) = &report.unavailable {
        out.push_str(&format!("Not run: {reason}\n\n"));
    }
    out.push_str(&e2e::table(&report.rows));
    out.push_str(
        "\nsensorgate ÷ baseline, case by case (throughput: higher is better for sensorgate; latency,\n\
         CPU and memory: lower is better):\n\n\
         | case | readings/s | p99 latency | CPU per reading | peak RSS |\n|---|---:|---:|---:|---:|\n",
    );
    for theirs in &report.rows {
        let Some(mine) = ours.iter().find(|o| o.case.label() == theirs.case.label()) else {
            continue;
        };
        let as_f64 = |ns: Option<u64>| ns.map(|v| v as f64);
        out.push_str(&format!(
            "| {} | {}× | {} | {} | {} |\n",
            theirs.case.label(),
            ratio(Some(mine.per_second), Some(theirs.per_second)),
            ratio(as_f64(mine.p99_ns), as_f64(theirs.p99_ns)),
            ratio(
                Some(mine.cpu_us_per_reading),
                Some(theirs.cpu_us_per_reading)
            ),
            ratio(
                Some(mine.peak_rss_kib as f64),
                Some(theirs.peak_rss_kib as f64)
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_ours_over_theirs() {
        assert_eq!(ratio(Some(40_000.0), Some(4_000.0)), "10.0");
        assert_eq!(ratio(Some(1.0), Some(4.0)), "0.25");
        assert_eq!(
            ratio(Some(1.53), Some(764.55)),
            "0.002",
            "small ratios keep a digit"
        );
        assert_eq!(ratio(Some(1.0), Some(0.0)), "-");
        assert_eq!(ratio(None, Some(3.0)), "-");
    }

    #[test]
    fn the_bridge_script_is_where_the_bench_looks() {
        let text = std::fs::read_to_string(script()).expect("bench/baseline_bridge.py");
        assert!(text.contains("readline()") && text.contains("publish("));
    }
}
