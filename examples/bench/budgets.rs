//! The budgets, checked against one run's figures: each is met, missed, or not measured in
//! this run (a section left out with `--only`, or a baseline that delivered nothing). They are benchmark targets on the 2-core build machine,
//! printed in `BENCHMARKS.md`, never test assertions.

use rumqttc::QoS;

use crate::e2e::Row;
use crate::measure::ratio;
use crate::{broker, devices, flash, memory, resources, sizes, spool};

/// One budget and how the run did.
#[derive(Debug, PartialEq)]
pub struct Budget {
    pub what: &'static str,
    pub figure: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
    /// Where the profile of a missed budget is: why it is missed and what meeting it would take.
    pub if_missed: Option<&'static str>,
}

impl Budget {
    /// Names the document that explains this budget when a run misses it.
    fn explained_in(self, document: &'static str) -> Budget {
        Budget {
            if_missed: Some(document),
            ..self
        }
    }
}

/// What the budgets are checked against.
pub struct Figures<'a> {
    pub sensorgate: &'a [Row],
    pub baseline: &'a [Row],
    pub spool: Option<&'a spool::Report>,
    pub resources: Option<&'a resources::Report>,
    pub flash: Option<&'a flash::Report>,
    pub sizes: Option<&'a [sizes::Row]>,
    pub memory: Option<&'a memory::Report>,
    pub devices: Option<&'a devices::Report>,
    pub ble: Option<&'a crate::ble::Report>,
    pub broker: Option<&'a broker::Report>,
}

fn saturation_one_port(rows: &[Row]) -> Option<&Row> {
    rows.iter()
        .find(|r| r.case.ports == 1 && r.case.qos == QoS::AtMostOnce && r.case.rate.is_none())
}

fn at_rate(rows: &[Row], rate: u64) -> Option<&Row> {
    rows.iter().find(|r| r.case.rate == Some(rate))
}

fn budget(what: &'static str, measured: Option<(String, bool)>) -> Budget {
    match measured {
        Some((figure, met)) => Budget {
            what,
            figure,
            met: Some(met),
            if_missed: None,
        },
        None => Budget {
            what,
            figure: "not measured in this run".into(),
            met: None,
            if_missed: None,
        },
    }
}

/// A budget that compares with the baseline. A baseline that delivered no reading (it could not run, or
/// it stalled) leaves nothing to compare with: not measured, never met by dividing by nothing.
fn against_baseline(
    what: &'static str,
    both: Option<(&Row, &Row)>,
    compare: impl FnOnce(&Row, &Row) -> Option<(String, bool)>,
) -> Budget {
    match both {
        Some((_, theirs)) if theirs.received == 0 => Budget {
            what,
            figure: "not measured: the baseline delivered no reading".into(),
            met: None,
            if_missed: None,
        },
        _ => budget(what, both.and_then(|(ours, theirs)| compare(ours, theirs))),
    }
}

/// The plain-TCP broker row of `publishers -> subscribers` at `qos`, measured against mosquitto.
fn broker_row(
    report: Option<&broker::Report>,
    publishers: usize,
    subscribers: usize,
    qos: QoS,
) -> Option<(&broker::Side, &broker::Side)> {
    let row = report?.rows.iter().find(|r| {
        (
            r.case.publishers,
            r.case.subscribers,
            r.case.qos,
            r.case.tls,
        ) == (publishers, subscribers, qos, false)
    })?;
    Some((&row.sensorgate, row.mosquitto.as_ref()?))
}

/// Throughput at least mosquitto's and CPU per message at most mosquitto's, in one row.
fn ahead_of_mosquitto(what: &'static str, both: Option<(&broker::Side, &broker::Side)>) -> Budget {
    budget(
        what,
        both.and_then(|(ours, theirs)| {
            let speed = ratio(ours.per_second, theirs.per_second)?;
            Some((
                format!(
                    "{speed:.2}x its throughput, {:.1} vs {:.1} µs CPU per message",
                    ours.cpu_us_per_message, theirs.cpu_us_per_message
                ),
                speed >= 1.0 && ours.cpu_us_per_message <= theirs.cpu_us_per_message,
            ))
        }),
    )
}

/// The embedded broker's budgets against mosquitto, from the broker section.
fn broker_budgets(report: Option<&broker::Report>) -> Vec<Budget> {
    let one_to_one_qos0 = broker_row(report, 1, 1, QoS::AtMostOnce);
    vec![
        ahead_of_mosquitto(
            "broker 1 -> 1, QoS 0: throughput ≥ mosquitto's, CPU per message ≤ mosquitto's",
            one_to_one_qos0,
        ),
        ahead_of_mosquitto(
            "broker 1 -> 1, QoS 1: throughput ≥ mosquitto's, CPU per message ≤ mosquitto's",
            broker_row(report, 1, 1, QoS::AtLeastOnce),
        ),
        ahead_of_mosquitto(
            "broker 1 -> 10, QoS 0: throughput ≥ mosquitto's, CPU per message ≤ mosquitto's",
            broker_row(report, 1, 10, QoS::AtMostOnce),
        ),
        ahead_of_mosquitto(
            "broker 1 -> 10, QoS 1: throughput ≥ mosquitto's, CPU per message ≤ mosquitto's",
            broker_row(report, 1, 10, QoS::AtLeastOnce),
        ),
        budget(
            "broker 1 -> 1, QoS 0: no message dropped for a subscriber that keeps up",
            report
                .and_then(|r| {
                    r.rows.iter().find(|row| {
                        (
                            row.case.publishers,
                            row.case.subscribers,
                            row.case.qos,
                            row.case.tls,
                        ) == (1, 1, QoS::AtMostOnce, false)
                    })
                })
                .map(|row| {
                    let sent = row.case.deliveries();
                    (
                        format!(
                            "{} of {} received",
                            crate::thousands(row.sensorgate.received as f64),
                            crate::thousands(sent as f64)
                        ),
                        row.sensorgate.received >= sent,
                    )
                }),
        ),
    ]
}

/// Every budget, in the order BENCHMARKS.md lists them.
pub fn check(f: &Figures) -> Vec<Budget> {
    let mut budgets = end_to_end_and_resources(f);
    budgets.extend(broker_budgets(f.broker));
    budgets
}

/// The budgets of the end-to-end, spool, resources, flash and sizes sections.
fn end_to_end_and_resources(f: &Figures) -> Vec<Budget> {
    let ours = saturation_one_port(f.sensorgate);
    let theirs = saturation_one_port(f.baseline);
    let both = ours.zip(theirs);
    vec![
        budget(
            "≥ 20,000 readings/s end to end on one port at QoS 0",
            ours.map(|r| (crate::thousands(r.per_second), r.per_second >= 20_000.0)),
        ),
        budget(
            "p99 latency ≤ 2 ms at 1,000 readings/s",
            at_rate(f.sensorgate, 1_000).and_then(|r| {
                let p99 = r.p99_ns? as f64 / 1e6;
                Some((format!("{p99:.2} ms"), p99 <= 2.0))
            }),
        ),
        against_baseline(
            "≥ 10× the Python + mosquitto baseline's throughput (one port, QoS 0)",
            both,
            |o, t| {
                let ratio = ratio(o.per_second, t.per_second)?;
                Some((format!("{ratio:.1}×"), ratio >= 10.0))
            },
        ),
        against_baseline(
            "≤ 1/4 of the baseline's CPU per reading (one port, QoS 0, saturation)",
            both,
            |o, t| {
                let ratio = ratio(o.cpu_us_per_reading, t.cpu_us_per_reading)?;
                let figure = format!(
                    "{ratio:.3} ({:.1} vs {:.1} µs)",
                    o.cpu_us_per_reading, t.cpu_us_per_reading
                );
                Some((figure, ratio <= 0.25))
            },
        ),
        budget(
            "RSS ≤ 16 MiB at 1,000 readings/s with 1,000 devices",
            at_rate(f.sensorgate, 1_000).map(|r| {
                let mib = r.peak_rss_kib as f64 / 1024.0;
                let seconds = r.case.readings / 1_000;
                (format!("{mib:.1} MiB peak over {seconds} s"), mib <= 16.0)
            }),
        ),
        budget(
            "idle CPU ≤ 0.1 %",
            f.resources.map(|r| {
                let (percent, source) = r.idle_percent();
                (
                    format!("{percent:.3} % over {:.0} s ({source})", r.idle_seconds),
                    percent <= 0.1,
                )
            }),
        ),
        budget(
            "READY ≤ 100 ms after start",
            f.resources.map(|r| {
                (
                    format!("{:.1} ms (slowest of {} starts)", r.ready_ms_max, r.starts),
                    r.ready_ms_max <= 100.0,
                )
            }),
        ),
        budget(
            "spool drain ≥ 10,000 messages/s",
            f.spool.map(|s| {
                (
                    format!("{}/s", crate::thousands(s.drain_per_second)),
                    s.drain_per_second >= 10_000.0,
                )
            }),
        ),
        budget(
            "≤ 1.5 bytes written per byte of forwarded topic + payload",
            f.spool.map(|s| {
                (
                    format!("{:.2} (`sync = \"1s\"`)", s.bytes_per_payload_byte),
                    s.bytes_per_payload_byte <= 1.5,
                )
            }),
        ),
        budget(
            "≤ 10 MiB a day written at 50 devices × 1/min, cloud up",
            f.flash.and_then(|r| r.row(flash::CLOUD_UP_50)).map(|row| {
                let per_day = row.bytes_per_day();
                (
                    format!(
                        "{:.2} MiB/day ({})",
                        per_day / (1024.0 * 1024.0),
                        if row.fs_bytes.is_some() {
                            "ext4 lifetime_write_kbytes"
                        } else {
                            "write_bytes only"
                        }
                    ),
                    per_day <= flash::BUDGET_BYTES_PER_DAY,
                )
            }),
        ),
        budget(
            "cloud down: the spool writes ≤ 1.5 bytes per spooled byte plus one group commit per `sync`",
            f.flash.and_then(|r| {
                let row = r.row(flash::CLOUD_DOWN_50)?;
                let cost = r.commit_cost?;
                row.fs_bytes?;
                let (written, spooled) = flash::spool_share(r, row);
                let allowed = flash::BUDGET_PER_SPOOLED_BYTE * spooled + row.commits as f64 * cost;
                Some((
                    format!(
                        "{:.2} of the allowed ({} commits × {:.1} KiB)",
                        written / allowed.max(1.0),
                        row.commits,
                        cost / 1024.0
                    ),
                    written <= allowed,
                ))
            }),
        ),
        budget(
            "idle gateway: nothing written after start-up",
            f.flash.and_then(|r| r.row(flash::IDLE)).map(|row| {
                let bytes = row.fs_bytes.unwrap_or(row.process_bytes);
                (
                    format!("{bytes} bytes in {:.0} s", row.window_s),
                    bytes == 0,
                )
            }),
        ),
        budget(
            "aarch64 binary ≤ 8 MiB (stripped)",
            f.sizes.and_then(sizes::aarch64).map(|bytes| {
                (
                    format!("{} bytes", crate::thousands(bytes as f64)),
                    bytes <= sizes::BUDGET_BYTES,
                )
            }),
        ),
        budget(
            "idle MQTT client ≤ 2 KiB resident (the largest idle-client count)",
            f.memory.and_then(|m| {
                let row = m
                    .rows
                    .iter()
                    .filter(|r| r.case.kind == memory::Kind::IdleClients)
                    .max_by_key(|r| r.case.count)?;
                let bytes = row.sensorgate.bytes_each(row.case.count)?;
                Some((
                    format!(
                        "{} bytes ({} clients)",
                        crate::thousands(bytes),
                        crate::thousands(row.case.count as f64)
                    ),
                    bytes <= 2048.0,
                ))
            }),
        )
        .explained_in("docs/memory.md, \"An idle client\""),
        budget(
            "a device with three fields ≤ 1.5 KiB all in (with Home Assistant discovery)",
            f.devices.map(|d| {
                let bytes = d.sensorgate.bytes_each(d.devices);
                (
                    format!(
                        "{} bytes ({} devices)",
                        crate::thousands(bytes),
                        crate::thousands(d.devices as f64)
                    ),
                    bytes <= 1536.0,
                )
            }),
        )
        .explained_in("docs/memory.md, \"A device\""),
        budget(
            "the devices end to end ≤ 1/3 of the Python + mosquitto baseline's RSS",
            f.devices.and_then(|d| {
                let ratio = devices::rss_ratio(d)?;
                let theirs = d.baseline.as_ref().ok()?;
                Some((
                    format!(
                        "{ratio:.2} ({} vs {} KiB, {} devices)",
                        crate::thousands(d.sensorgate.after_kib as f64),
                        crate::thousands(theirs.after_kib as f64),
                        crate::thousands(d.devices as f64)
                    ),
                    ratio <= 1.0 / 3.0,
                ))
            }),
        )
        .explained_in("docs/memory.md, \"What remains for 1.5 KiB, and the 1/3 target\""),
        budget(
            "≥ 50,000 Bluetooth LE adverts/s through parse, decrypt, dedup and publish",
            f.ble.map(|r| {
                (
                    format!("{} encrypted adverts/s", crate::thousands(r.encrypted_per_second)),
                    r.encrypted_per_second >= 50_000.0,
                )
            }),
        ),
    ]
}

/// The markdown table.
pub fn markdown(budgets: &[Budget]) -> String {
    let mut out = String::from("| budget | this run | met |\n|---|---|---|\n");
    for b in budgets {
        let met = match (b.met, b.if_missed) {
            (Some(true), _) => "yes".to_string(),
            (Some(false), Some(document)) => {
                format!("**no** (why, and what it would take: {document})")
            }
            (Some(false), None) => "**no**".to_string(),
            (None, _) => "-".to_string(),
        };
        out.push_str(&format!("| {} | {} | {met} |\n", b.what, b.figure));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::Case;

    fn row(rate: Option<u64>, per_second: f64, p99_ms: f64, cpu: f64, rss_kib: u64) -> Row {
        Row {
            case: Case {
                ports: 1,
                qos: QoS::AtMostOnce,
                rate,
                readings: 1_000,
            },
            received: 1_000,
            per_second,
            p50_ns: Some(100_000),
            p99_ns: Some((p99_ms * 1e6) as u64),
            max_ns: Some(5_000_000),
            cpu_us_per_reading: cpu,
            peak_rss_kib: rss_kib,
        }
    }

    #[test]
    fn budgets_are_met_missed_or_unmeasured() {
        let ours = [
            row(None, 40_000.0, 100.0, 20.0, 15_000),
            row(Some(1_000), 1_000.0, 0.3, 70.0, 17_000),
        ];
        let theirs = [row(None, 3_000.0, 500.0, 100.0, 30_000)];
        let budgets = check(&Figures {
            sensorgate: &ours,
            baseline: &theirs,
            spool: None,
            resources: None,
            flash: None,
            sizes: None,
            memory: None,
            devices: None,
            ble: None,
            broker: None,
        });
        let met: Vec<Option<bool>> = budgets.iter().map(|b| b.met).collect();
        assert_eq!(
            met,
            [
                Some(true),  // 40,000 ≥ 20,000
                Some(true),  // 0.3 ms ≤ 2 ms
                Some(true),  // 13.3× ≥ 10×
                Some(true),  // 0.2 ≤ 0.25
                Some(false), // 16.6 MiB > 16 MiB
                None,
                None,
                None,
                None,
                None, // flash: 50 devices, cloud up (no flash report)
                None, // flash: cloud down, per spooled byte
                None, // flash: idle
                None, // binary size (no sizes)
                None, // idle client (no memory report)
                None, // per device (no devices report)
                None, // devices vs the baseline
                None, // Bluetooth LE (no ble report)
                None, // broker 1 -> 1, QoS 0 (no broker report)
                None, // broker 1 -> 1, QoS 1
                None, // broker 1 -> 10, QoS 0
                None, // broker 1 -> 10, QoS 1
                None, // broker: no QoS 0 drops
            ]
        );
        assert_eq!(budgets[2].figure, "13.3×");
        assert_eq!(budgets[4].figure, "16.6 MiB peak over 1 s");
        assert!(markdown(&budgets).contains(
            "| RSS ≤ 16 MiB at 1,000 readings/s with 1,000 devices | 16.6 MiB peak over 1 s | **no** |"
        ));
    }

    #[test]
    fn a_slow_baseline_ratio_below_ten_is_a_miss() {
        let ours = [row(None, 40_000.0, 100.0, 20.0, 15_000)];
        let theirs = [row(None, 5_000.0, 500.0, 60.0, 30_000)];
        let budgets = check(&Figures {
            sensorgate: &ours,
            baseline: &theirs,
            spool: None,
            resources: None,
            flash: None,
            sizes: None,
            memory: None,
            devices: None,
            ble: None,
            broker: None,
        });
        assert_eq!(budgets[2].met, Some(false), "8× is not 10×");
        assert_eq!(budgets[3].met, Some(false), "20/60 is over a quarter");
        assert_eq!(budgets[1].met, None, "no 1,000/s case");
    }

    #[test]
    fn a_baseline_that_delivered_nothing_leaves_its_ratios_unmeasured() {
        let ours = [row(None, 40_000.0, 100.0, 20.0, 15_000)];
        let stalled = Row {
            received: 0,
            per_second: 0.0,
            ..row(None, 0.0, 0.0, 0.0, 30_000)
        };
        let budgets = check(&Figures {
            sensorgate: &ours,
            baseline: &[stalled],
            spool: None,
            resources: None,
            flash: None,
            sizes: None,
            memory: None,
            devices: None,
            ble: None,
            broker: None,
        });
        assert_eq!((budgets[2].met, budgets[3].met), (None, None));
        assert_eq!(
            budgets[2].figure,
            "not measured: the baseline delivered no reading"
        );
        assert_eq!(budgets[0].met, Some(true), "the other budgets still count");
    }

    #[test]
    fn idle_cpu_uses_the_precise_figure_when_there_is_one() {
        let coarse = resources::Report {
            idle_cpu_percent: 0.1,
            idle_seconds: 10.0,
            idle_oncpu_seconds: Some(0.0046),
            ready_ms_max: 150.0,
            starts: 5,
            ..resources::Report::default()
        };
        let check_idle = |r: &resources::Report| {
            check(&Figures {
                sensorgate: &[],
                baseline: &[],
                spool: None,
                resources: Some(r),
                flash: None,
                sizes: None,
                memory: None,
                devices: None,
                ble: None,
                broker: None,
            })
        };
        let budgets = check_idle(&coarse);
        assert_eq!(budgets[5].figure, "0.046 % over 10 s (schedstat)");
        assert_eq!(budgets[5].met, Some(true));
        assert_eq!(
            budgets[6].met,
            Some(false),
            "150 ms is over the READY budget"
        );
        let without = resources::Report {
            idle_oncpu_seconds: None,
            idle_cpu_percent: 0.2,
            ..coarse
        };
        let budgets = check_idle(&without);
        assert_eq!(budgets[5].figure, "0.200 % over 10 s (stat)");
        assert_eq!(budgets[5].met, Some(false));
    }

    #[test]
    fn the_broker_is_measured_against_mosquitto_row_by_row() {
        let side = |per_second: f64, received: usize, cpu_us_per_message: f64| broker::Side {
            per_second,
            received,
            cpu_us_per_message,
            peak_rss_kib: 9_000,
        };
        let row = |subscribers, qos, ours: broker::Side, theirs: broker::Side| broker::Row {
            case: broker::Case {
                qos,
                messages: 1_000,
                publishers: 1,
                subscribers,
                tls: false,
            },
            sensorgate: ours,
            mosquitto: Some(theirs),
        };
        let report = broker::Report {
            rows: vec![
                row(
                    1,
                    QoS::AtMostOnce,
                    side(90_000.0, 1_000, 9.0),
                    side(80_000.0, 1_000, 10.0),
                ),
                row(
                    1,
                    QoS::AtLeastOnce,
                    side(30_000.0, 1_000, 30.0),
                    side(28_000.0, 1_000, 28.0),
                ),
                row(
                    10,
                    QoS::AtMostOnce,
                    side(50_000.0, 9_000, 5.0),
                    side(60_000.0, 10_000, 6.0),
                ),
            ],
            ..broker::Report::default()
        };
        let budgets = broker_budgets(Some(&report));
        let met: Vec<Option<bool>> = budgets.iter().map(|b| b.met).collect();
        assert_eq!(
            met,
            [
                Some(true),  // faster, less CPU
                Some(false), // faster, more CPU
                Some(false), // slower
                None,        // 1 -> 10 at QoS 1 not measured
                Some(true),  // 1,000 of 1,000
            ]
        );
        assert_eq!(
            budgets[0].figure,
            "1.12x its throughput, 9.0 vs 10.0 µs CPU per message"
        );
    }

    #[test]
    fn a_missed_device_budget_names_where_its_profile_is() {
        let side = |before_kib, after_kib| devices::Side {
            before_kib,
            after_kib,
            peak_kib: after_kib,
            received: 1_000,
        };
        let missed = devices::Report {
            devices: 1_000,
            sensorgate: side(10_000, 20_000),
            baseline: Ok(side(30_000, 30_000)),
        };
        let met = devices::Report {
            sensorgate: side(10_000, 10_500),
            ..missed.clone()
        };
        let device_row = |report: &devices::Report| {
            let budgets = end_to_end_and_resources(&Figures {
                sensorgate: &[],
                baseline: &[],
                spool: None,
                resources: None,
                flash: None,
                sizes: None,
                memory: None,
                devices: Some(report),
                ble: None,
                broker: None,
            });
            let row = budgets
                .into_iter()
                .find(|b| b.what.starts_with("a device with three fields"));
            row.map(|b| markdown(&[b])).unwrap_or_default()
        };
        assert!(device_row(&missed)
            .contains("| **no** (why, and what it would take: docs/memory.md, \"A device\") |"));
        let met_row = device_row(&met);
        assert!(met_row.ends_with("| yes |\n"), "{met_row}");
    }
}
