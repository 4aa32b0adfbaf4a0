//! The rtl_433 source's CPU cost: the daemon runs a stand-in for rtl_433 (a Python script, so that
//! rtl_433's own demodulation, which the gateway does not pay for, is out of the figure) printing
//! rtl_433's JSON lines at 100 a second, 50 sensors of which each line is a new reading (published,
//! `devices = "all"`), and its statistics line every second. The daemon's CPU time (user + system, from
//! `/proc/PID/stat`) over the window is compared with the same daemon fed only the statistics line: the
//! difference is what 100 lines/s cost (reading, parsing, identity, repeats, registry, publishing).

use std::ffi::OsString;
use std::time::Duration;

use crate::daemon::Daemon;
use crate::measure::Usage;

/// Lines a second, as a busy 433 MHz neighbourhood sends them.
const RATE: u32 = 100;

/// One measured run.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub lines_per_second: u32,
    /// What the stand-in printed in the window, per second (it counts once a second).
    pub measured_lines_per_second: f64,
    pub seconds: f64,
    pub cpu_percent: f64,
}

/// Both runs.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub idle: Row,
    pub busy: Row,
}

const FAKE: &str = r#"
import json, os, sys, time
rate = int(os.environ["BENCH_RTL433_RATE"])
count_file = os.environ["BENCH_RTL433_COUNT"]
start = time.monotonic()
n = 0
next_stats = start
while True:
    now = time.monotonic()
    if now >= next_stats:
        print('{"time" : "@1.0s", "enabled" : 191, "frames" : {"count" : 0, "fsk" : 0, "events" : 0}, "stats" : []}', flush=True)
        with open(count_file + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(count_file + ".tmp", count_file)
        next_stats += 1.0
    if rate == 0:
        time.sleep(max(0.0, next_stats - time.monotonic()))
        continue
    due = start + n / rate
    if now < due:
        time.sleep(min(due - now, max(0.0, next_stats - now)))
        continue
    sensor = n % 50 + 1
    print(json.dumps({"time": "1700000000.000001", "protocol": 19, "model": "Nexus-TH", "id": sensor,
                      "channel": 1, "battery_ok": 1, "temperature_C": round(15 + (n % 100) / 10, 1),
                      "humidity": 40 + n % 30, "mod": "ASK", "freq": 433.92, "rssi": -12.1,
                      "snr": 15.2, "noise": -27.3}), flush=True)
    n += 1
"#;

async fn one(rate: u32, window: Duration) -> Row {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("rtl_433");
    std::fs::write(&script, format!("#!/usr/bin/env python3\n{FAKE}")).expect("write the stand-in");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("make it executable");
    }
    let body = format!(
        "[[source]]\nname = \"rf\"\nkind = \"rtl_433\"\ncommand = \"{}\"\nstats_interval = \"1s\"\n\
         usb_reset = false\ndevices = \"all\"\n",
        script.display()
    );
    let count_file = dir.path().join("printed");
    let env = [
        ("BENCH_RTL433_RATE", OsString::from(rate.to_string())),
        ("BENCH_RTL433_COUNT", count_file.clone().into_os_string()),
    ];
    let printed = || {
        std::fs::read_to_string(&count_file)
            .ok()
            .and_then(|text| text.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut daemon = Daemon::spawn(&body, &env);
    daemon.wait_listening().await;
    tokio::time::sleep(Duration::from_secs(2)).await; // every sensor seen once, discovery of none
    let before = Usage::of(&[daemon.pid()]);
    let printed_before = printed();
    tokio::time::sleep(window).await;
    let after = Usage::of(&[daemon.pid()]);
    let printed_after = printed();
    let cpu = after.cpu_seconds - before.cpu_seconds;
    daemon.stop().await;
    Row {
        lines_per_second: rate,
        measured_lines_per_second: (printed_after - printed_before) / window.as_secs_f64(),
        seconds: window.as_secs_f64(),
        cpu_percent: 100.0 * cpu / window.as_secs_f64(),
    }
}

pub async fn run(quick: bool) -> Report {
    let window = Duration::from_secs(if quick { 10 } else { 60 });
    let idle = one(0, window).await;
    let busy = one(RATE, window).await;
    eprintln!(
        "  rtl_433 source: {:.2} % CPU idle, {:.2} % at {RATE} lines/s",
        idle.cpu_percent, busy.cpu_percent
    );
    Report { idle, busy }
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let extra = (report.busy.cpu_percent - report.idle.cpu_percent).max(0.0);
    let per_line_us = extra / 100.0 * 1e6 / f64::from(RATE.max(1));
    format!(
        "## The rtl_433 source\n\n\
         The daemon's own CPU with a `kind = \"rtl_433\"` source whose program is a stand-in printing\n\
         rtl_433's JSON (so rtl_433's demodulation, paid by rtl_433's process, is not counted): 50\n\
         sensors, every line a new reading published with its field topics, and the statistics line every\n\
         second; {:.0} s windows, CPU from `/proc/PID/stat` (10 ms steps).\n\n\
         | lines/s | printed (counted once a second) | daemon CPU |\n|---:|---:|---:|\n\
         | 0 (statistics line only) | - | {:.2} % |\n\
         | {} | {:.0}/s | {:.2} % |\n\n\
         Per line: {:.0} µs of the daemon's CPU (read, parse, identity, repeats, registry, publish).\n",
        report.busy.seconds,
        report.idle.cpu_percent,
        report.busy.lines_per_second,
        report.busy.measured_lines_per_second,
        report.busy.cpu_percent,
        per_line_us,
    )
}
