//! Memory per device, all in: N devices (5,000 in a full run) each send one JSON reading of three
//! fields through one pseudo-terminal serial port, and the resident memory the system holds for them is
//! measured once every reading has reached a subscriber. sensorgate runs with its defaults plus Home
//! Assistant discovery, so each device costs what it costs in a real installation: its registry entry,
//! its retained state, field and availability topics, and one retained discovery config per field and
//! one for its last-seen time; `[broker] retained_sync = "1s"`, so that what the retained log holds
//! once it has written them (after 15 minutes by default) is in the figure. The baseline is [`crate::baseline`]'s Python bridge into mosquitto (what
//! tutorials teach: nothing retained, no registry), its RSS summed over both processes. RSS (VmRSS of
//! `/proc/PID/status`, summed over the system's processes) is read once it has settled, with the
//! subscriber connected, before the first reading and after the last; the peak is VmHWM. Every wait has a
//! deadline, and the processes are killed by PID.

use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::io::AsyncWriteExt;

use crate::daemon::Daemon;
use crate::e2e::{self, Target};
use crate::measure::{due, now_ns, Usage};
use crate::memory::settled_rss_kib;

/// Readings per second written to the port: below what the baseline's one Python bridge takes.
const RATE: u64 = 400;
/// How long the last reading may take to reach the subscriber after it was written.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// How many devices a run brings.
pub fn device_count(quick: bool) -> u64 {
    if quick {
        1_000
    } else {
        5_000
    }
}

/// What one system held.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// Settled RSS before the first reading and after the last arrived, KiB (summed).
    pub before_kib: u64,
    pub after_kib: u64,
    /// VmHWM at the end, KiB (summed over the processes: an upper bound of the peak of the sum).
    pub peak_kib: u64,
    /// Readings the subscriber received.
    pub received: u64,
}

impl Side {
    /// Resident bytes per device: the RSS growth over the device count.
    pub fn bytes_each(&self, devices: u64) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) * 1024.0 / devices.max(1) as f64
    }
}

/// Both systems; the baseline is `Err` with the reason when it could not run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub devices: u64,
    pub sensorgate: Side,
    pub baseline: Result<Side, String>,
}

/// sensorgate on one pty serial source, JSON payloads, its defaults plus Home Assistant discovery.
async fn sensorgate() -> Target {
    let (master, path) = e2e::pty();
    let body = format!(
        "[broker]\nretained_sync = \"1s\"\n[homeassistant]\ndiscovery = true\n[[source]]\nname = \"p0\"\nkind = \"serial\"\npath = \"{path}\"\npayload = \"json\"\nmax_frame_len = 256\n"
    );
    let daemon = Daemon::start(&body).await;
    Target {
        masters: vec![master],
        broker_port: daemon.port,
        filter: "sensorgate/+".into(),
        pids: vec![daemon.pid()],
        keep_alive: Box::new(daemon),
    }
}

/// Sends one reading from each of `devices` devices at [`RATE`] and waits for them at the subscriber.
async fn load(mut target: Target, devices: u64) -> Side {
    let (_client, mut rx) =
        e2e::subscribe(target.broker_port, &target.filter, QoS::AtMostOnce).await;
    let before_kib = settled_rss_kib(&target.pids).await;
    let start = Instant::now();
    for device in 0..devices {
        tokio::time::sleep_until(due(start, device, RATE).into()).await;
        let _ = target.masters[0]
            .write_all(&e2e::line(device, now_ns()))
            .await;
    }
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut received = 0;
    while received < devices {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(_)) => received += 1,
            _ => break,
        }
    }
    let after_kib = settled_rss_kib(&target.pids).await;
    let peak_kib = Usage::of(&target.pids).peak_rss_kib;
    drop(target.keep_alive);
    Side {
        before_kib,
        after_kib,
        peak_kib,
        received,
    }
}

/// Both systems in turn.
pub async fn run(quick: bool) -> Report {
    let devices = device_count(quick);
    let sensorgate = load(sensorgate().await, devices).await;
    eprintln!(
        "  sensorgate: {} devices: {:.0} bytes each",
        devices,
        sensorgate.bytes_each(devices)
    );
    let case = e2e::Case {
        ports: 1,
        qos: QoS::AtMostOnce,
        rate: Some(RATE),
        readings: devices,
    };
    let baseline = match crate::baseline::start(case).await {
        Ok(target) => Ok(load(target, devices).await),
        Err(why) => Err(why),
    };
    if let Ok(side) = &baseline {
        eprintln!(
            "  baseline: {} devices: {:.0} bytes each",
            devices,
            side.bytes_each(devices)
        );
    }
    Report {
        devices,
        sensorgate,
        baseline,
    }
}

fn row(name: &str, side: &Side, devices: u64) -> String {
    let received = if side.received < devices {
        format!("**{}**", crate::thousands(side.received as f64))
    } else {
        crate::thousands(side.received as f64)
    };
    format!(
        "| {name} | {received} | {} | {} | {} | {} |\n",
        crate::thousands(side.before_kib as f64),
        crate::thousands(side.after_kib as f64),
        crate::thousands(side.peak_kib as f64),
        crate::thousands(side.bytes_each(devices)),
    )
}

/// sensorgate's RSS after the devices over the baseline's, with two decimals, or `-`.
pub fn rss_ratio(report: &Report) -> Option<f64> {
    let theirs = report.baseline.as_ref().ok()?;
    crate::measure::ratio(report.sensorgate.after_kib as f64, theirs.after_kib as f64)
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let devices = crate::thousands(report.devices as f64);
    let mut out = format!(
        "## Memory per device: {devices} devices end to end vs the baseline\n\n\
         Each of {devices} devices sends one JSON reading of three fields (`t`, `temperature`,\n\
         `humidity`) through one pseudo-terminal serial port at {RATE} readings/s; one QoS 0\n\
         subscriber on the state topics counts them. sensorgate runs with its defaults plus\n\
         `[homeassistant] discovery = true`, so each device holds its registry entry, its retained\n\
         state, three field topics and availability, and four retained discovery configs (one per field\n\
         and one for its last-seen time), and `[broker] retained_sync = \"1s\"`, so that the retained\n\
         log's share (written after 15 minutes by default) is in the figure. The baseline is the Python\n\
         bridge into mosquitto of the section above, summed over both processes: it keeps nothing per\n\
         device. RSS is read once it\n\
         has settled (VmRSS, summed over the system's processes), before the first reading and after\n\
         the last arrived; peak is VmHWM. A count in bold: readings that did not arrive within\n\
         {} s.\n\n\
         | system | readings received | RSS before (KiB) | RSS after (KiB) | peak RSS (KiB) | bytes per device |\n\
         |---|---:|---:|---:|---:|---:|\n",
        DRAIN_LIMIT.as_secs()
    );
    out.push_str(&row("sensorgate", &report.sensorgate, report.devices));
    match &report.baseline {
        Ok(side) => {
            out.push_str(&row("Python + mosquitto", side, report.devices));
            if let Some(ratio) = rss_ratio(report) {
                out.push_str(&format!(
                    "\nsensorgate's RSS after the devices ÷ the baseline's: {ratio:.2}.\n"
                ));
            }
        }
        Err(why) => out.push_str(&format!("\nThe baseline did not run: {why}\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(before_kib: u64, after_kib: u64, received: u64) -> Side {
        Side {
            before_kib,
            after_kib,
            peak_kib: after_kib + 100,
            received,
        }
    }

    #[test]
    fn rows_give_bytes_per_device_and_the_ratio() {
        let report = Report {
            devices: 1_000,
            sensorgate: side(8_000, 9_000, 1_000),
            baseline: Ok(side(30_000, 30_000, 999)),
        };
        let text = markdown(&report);
        assert!(
            text.contains("| sensorgate | 1,000 | 8,000 | 9,000 | 9,100 | 1,024 |\n"),
            "{text}"
        );
        assert!(
            text.contains("| Python + mosquitto | **999** | 30,000 | 30,000 | 30,100 | 0 |\n"),
            "{text}"
        );
        assert!(text.contains("÷ the baseline's: 0.30."), "{text}");
    }

    #[test]
    fn a_missing_baseline_says_why() {
        let report = Report {
            devices: 10,
            sensorgate: side(8_000, 8_004, 10),
            baseline: Err("no python3-serial".into()),
        };
        let text = markdown(&report);
        assert!(text.contains("did not run: no python3-serial"), "{text}");
        assert_eq!(rss_ratio(&report), None);
    }
}
