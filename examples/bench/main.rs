//! The benchmark suite, one command: `bench/run.sh [--quick]` builds the release daemon and this
//! program and runs every benchmark on this machine: the decoders, the embedded broker beside Debian's
//! mosquitto, the uplink spool, the daemon end to end from pseudo-terminal serial ports to an MQTT
//! client, the same workload through the baseline users run today (a Python pyserial + paho-mqtt
//! bridge into mosquitto), the daemon's idle cost and start-up time, and the physical limits of the
//! links. It prints the markdown report and writes it to `BENCHMARKS.md` with the machine and the date,
//! then checks the budgets (`budgets.rs`). Every comparison is a ratio measured in the same run.
//!
//! Options: `--quick` (smaller counts, about two minutes), `--out PATH` (default: `BENCHMARKS.md` of the
//! repository; `-` prints only), `--only a,b` (sections: decoders, broker, memory, spool, e2e, baseline,
//! devices, resources, physical, flash, commits, security, rtl433, ble, sizes, codecs, lorawan, page; printed only unless `--out` is given), `--case TAG` (the broker section runs
//! only the cases named, e.g. `--case p1-s1-qos0,p1-s10-qos1`; `--list-cases` prints every tag). The flash section (what the
//! daemon writes to its state directory per day) and the commits section want root for their loop-device ext4 file systems. Every run is bounded in count and time
//! and uses 127.0.0.1 only; the processes it starts are killed by PID.

use sensorgate_testkit::mosquitto;

mod baseline;
mod ble;
mod broker;
mod budgets;
mod codecs;
mod commits;
mod daemon;
mod decoders;
mod devices;
mod e2e;
mod ext4;
mod flash;
mod lorawan;
mod machine;
mod measure;
mod memory;
mod page;
mod physical;
mod resources;
mod rtl433;
mod security;
mod sizes;
mod spool;

use std::path::PathBuf;
use std::time::Instant;

/// The sections, in the order they run and are written.
const SECTIONS: [&str; 18] = [
    "physical",
    "decoders",
    "broker",
    "memory",
    "spool",
    "e2e",
    "baseline",
    "devices",
    "resources",
    "flash",
    "commits",
    "security",
    "rtl433",
    "ble",
    "sizes",
    "codecs",
    "lorawan",
    "page",
];

/// The command line.
#[derive(Debug, PartialEq)]
struct Options {
    quick: bool,
    out: Option<PathBuf>,
    only: Vec<String>,
    /// The broker section's cases to run, by tag (`broker::Case::tag`); empty: every case.
    cases: Vec<String>,
    /// Print the broker section's case tags and stop.
    list_cases: bool,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        quick: false,
        out: None,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        cases: Vec::new(),
        list_cases: false,
    };
    let mut out = None;
    let mut only_given = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => options.quick = true,
            "--out" => {
                out = Some(
                    args.next()
                        .ok_or("--out needs a path (or - to print only)")?,
                )
            }
            "--only" => {
                let list = args
                    .next()
                    .ok_or("--only needs a list, e.g. --only e2e,baseline")?;
                options.only = list.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = options
                    .only
                    .iter()
                    .find(|s| !SECTIONS.contains(&s.as_str()))
                {
                    return Err(format!(
                        "--only: no section `{bad}`; write some of {}",
                        SECTIONS.join(",")
                    ));
                }
                only_given = true;
            }
            "--case" => {
                let list = args
                    .next()
                    .ok_or("--case needs a list of tags, e.g. --case p1-s1-qos0")?;
                let tags: Vec<String> = broker::cases(false).iter().map(|c| c.tag()).collect();
                for tag in list.split(',').map(str::trim) {
                    if !tags.iter().any(|t| t == tag) {
                        return Err(format!(
                            "--case: no broker case `{tag}`; write some of {}",
                            tags.join(",")
                        ));
                    }
                    options.cases.push(tag.to_string());
                }
            }
            "--list-cases" => options.list_cases = true,
            other => {
                return Err(format!(
                    "unknown argument `{other}`; write --quick, --out PATH, --only SECTIONS, \
                     --case TAGS or --list-cases"
                ))
            }
        }
    }
    options.out = match out.as_deref() {
        Some("-") => None,
        Some(path) => Some(PathBuf::from(path)),
        None if only_given => None,
        None => Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md")),
    };
    Ok(options)
}

/// A count or rate with thousands separators, rounded to a whole number.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if value < -0.5 {
        out.insert(0, '-');
    }
    out
}

fn main() {
    // Run again as the codec section's helper process, the bench answers codec calls on its pipes.
    if let Some(path) = std::env::var_os(codecs::HELPER_ENV) {
        if let Err(error) = codecs::serve_helper(&path.to_string_lossy()) {
            eprintln!("codec helper: {error}");
            std::process::exit(1);
        }
        return;
    }
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run_all()),
        Err(error) => {
            eprintln!("bench: no tokio runtime: {error}");
            std::process::exit(1);
        }
    }
}

async fn run_all() {
    let options = match parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("bench: {message}");
            std::process::exit(2);
        }
    };
    if options.list_cases {
        for case in broker::cases(options.quick) {
            println!("{}", case.tag());
        }
        return;
    }
    let wanted = |s: &str| options.only.iter().any(|o| o == s);
    let started = Instant::now();
    let mut sections = Vec::new();
    if wanted("physical") {
        sections.push(physical::markdown());
    }
    if wanted("decoders") {
        eprintln!("decoders...");
        sections.push(decoders::markdown(&decoders::run(options.quick).await));
    }
    let broker = if wanted("broker") {
        eprintln!("broker vs mosquitto...");
        let report = broker::run(options.quick, &options.cases).await;
        sections.push(broker::markdown(&report));
        Some(report)
    } else {
        None
    };
    let memory = if wanted("memory") {
        eprintln!("broker memory vs mosquitto...");
        let report = memory::run(options.quick).await;
        sections.push(memory::markdown(&report));
        Some(report)
    } else {
        None
    };
    let spool = if wanted("spool") {
        eprintln!("spool...");
        let report = spool::run(options.quick).await;
        sections.push(spool::markdown(&report));
        Some(report)
    } else {
        None
    };
    let ours = if wanted("e2e") {
        eprintln!("end to end...");
        let rows = e2e::run(options.quick).await;
        sections.push(e2e::markdown(&rows));
        rows
    } else {
        Vec::new()
    };
    let theirs = if wanted("baseline") {
        eprintln!("baseline (Python + mosquitto)...");
        let report = baseline::run(options.quick).await;
        sections.push(baseline::markdown(&ours, &report));
        report.rows
    } else {
        Vec::new()
    };
    let devices = if wanted("devices") {
        eprintln!("memory per device (sensorgate and the baseline)...");
        let report = devices::run(options.quick).await;
        sections.push(devices::markdown(&report));
        Some(report)
    } else {
        None
    };
    let resources = if wanted("resources") {
        eprintln!("resources...");
        let report = resources::run(options.quick).await;
        sections.push(resources::markdown(&report));
        Some(report)
    } else {
        None
    };
    let flash = if wanted("flash") {
        eprintln!("flash writes...");
        let report = flash::run(options.quick).await;
        sections.push(flash::markdown(&report));
        Some(report)
    } else {
        None
    };
    if wanted("commits") {
        eprintln!("spool commits by size...");
        sections.push(commits::markdown(&commits::run(options.quick).await));
    }
    if wanted("security") {
        eprintln!("security...");
        sections.push(security::markdown(&security::run(options.quick).await));
    }
    if wanted("rtl433") {
        eprintln!("rtl_433 source...");
        sections.push(rtl433::markdown(&rtl433::run(options.quick).await));
    }
    let mut ble = None;
    if wanted("ble") {
        eprintln!("Bluetooth LE source...");
        let report = ble::run(options.quick).await;
        sections.push(ble::markdown(&report));
        ble = Some(report);
    }
    let sizes = wanted("sizes").then(sizes::run);
    if let Some(rows) = &sizes {
        sections.push(sizes::markdown(rows));
    }
    if wanted("codecs") {
        eprintln!("payload codecs...");
        sections.push(codecs::markdown(&codecs::run(options.quick)));
    }
    if wanted("lorawan") {
        eprintln!("lorawan network server...");
        sections.push(lorawan::markdown(&lorawan::run(options.quick)));
    }
    if wanted("page") {
        eprintln!("the status page's CPU...");
        sections.push(page::markdown(&page::run(options.quick).await));
    }
    let budgets = budgets::check(&budgets::Figures {
        sensorgate: &ours,
        baseline: &theirs,
        spool: spool.as_ref(),
        resources: resources.as_ref(),
        flash: flash.as_ref(),
        sizes: sizes.as_deref(),
        memory: memory.as_ref(),
        devices: devices.as_ref(),
        ble: ble.as_ref(),
        broker: broker.as_ref(),
    });
    let mut report = format!(
        "# Benchmarks\n\n\
         Measured on {} on {}.\n\
         The machine is shared with other work, so absolute figures are noisy; ratios within one run are\n\
         what count. Everything runs on 127.0.0.1. This is {}: `bench/run.sh` reruns the full suite and\n\
         rewrites this file, `bench/run.sh --quick` runs it with smaller counts.\n\n## Budgets\n\n{}",
        machine::today(),
        machine::describe(),
        if options.quick { "a quick run" } else { "a full run" },
        budgets::markdown(&budgets),
    );
    for section in &sections {
        report.push('\n');
        report.push_str(section);
    }
    report.push_str(&format!(
        "\nThis run took {:.0} s{}.\n",
        started.elapsed().as_secs_f64(),
        if options.quick { " (`--quick`)" } else { "" }
    ));
    println!("{report}");
    if let Some(path) = &options.out {
        if let Err(e) = std::fs::write(path, &report) {
            eprintln!("bench: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        eprintln!("written to {}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Options, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn the_default_run_writes_benchmarks_md() {
        let options = args(&[]).expect("parses");
        assert!(!options.quick);
        assert_eq!(options.only.len(), SECTIONS.len());
        assert!(options.out.expect("a path").ends_with("BENCHMARKS.md"));
    }

    #[test]
    fn only_prints_unless_told_where_to_write() {
        let options = args(&["--quick", "--only", "e2e,baseline"]).expect("parses");
        assert!(options.quick);
        assert_eq!(options.only, ["e2e", "baseline"]);
        assert_eq!(options.out, None);
        let options = args(&["--only", "spool", "--out", "/tmp/b.md"]).expect("parses");
        assert_eq!(options.out, Some(PathBuf::from("/tmp/b.md")));
        assert_eq!(args(&["--out", "-"]).expect("parses").out, None);
    }

    #[test]
    fn bad_arguments_say_what_to_write() {
        let error = args(&["--only", "e2e,gpu"]).expect_err("no gpu section");
        assert!(
            error.contains("`gpu`") && error.contains("decoders,broker"),
            "{error}"
        );
        assert!(args(&["--fast"]).expect_err("unknown").contains("--quick"));
        assert!(args(&["--out"]).is_err());
        let error = args(&["--case", "p1-s1-qos0,p9-s9-qos0"]).expect_err("no such case");
        assert!(
            error.contains("`p9-s9-qos0`") && error.contains("p1-s10-qos1"),
            "{error}"
        );
    }

    #[test]
    fn cases_are_named_by_their_tags() {
        let options =
            args(&["--only", "broker", "--case", "p1-s1-qos0, p1-s1-qos1-tls"]).expect("parses");
        assert_eq!(options.cases, ["p1-s1-qos0", "p1-s1-qos1-tls"]);
        assert!(args(&["--list-cases"]).expect("parses").list_cases);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(37_858.2), "37,858");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-1_500.0), "-1,500");
    }
}
