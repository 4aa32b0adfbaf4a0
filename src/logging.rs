//! Where log records go and which ones pass: the journal (with structured fields such as `SOURCE=`,
//! `DEVICE=` and `PEER=` from the records' key-values, and syslog priorities 3/4/6/7 for
//! error/warn/info/debug) when stderr is the journal stream systemd gave us, one plain line per record on
//! stderr otherwise. The configured level can be overridden by `RUST_LOG`; the broker library's chatty
//! info and debug records are lowered one level so its warnings and errors stand out, and its warnings
//! and errors are rate-limited per call site (one line per 10 s, then a suppressed count): the engine
//! logs one WARN per failed TLS handshake, and a client that fails 1,200 handshakes must not write 1,200
//! lines. This module installs the process-wide `log` logger once and never decides what the rest of the
//! daemon logs.

use std::fmt::Write as _;
use std::io::Write as _;

use std::time::Duration;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::JournalLog;

use crate::ratelimit::{suppressed_suffix, RateLimiter};

/// At most one warning or error per call site of the broker library in this interval.
const BROKER_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Targets of the embedded broker library, whose info and debug records are lowered one level.
const BROKER_TARGET_PREFIX: &str = "rmqtt";

/// Where the installed logger writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogBackend {
    /// Native journald protocol, with structured fields.
    Journal,
    /// One line per record on stderr.
    Stderr,
}

/// Why [`init`] could not install the logger.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A `log` logger was installed before (only the first call in a process can succeed).
    #[error("a logger is already installed")]
    AlreadyInstalled,
}

/// Installs the process-wide logger. `level` is the configured level; `rust_log` (the value of `RUST_LOG`:
/// `level` or `target=level,...` directives) overrides it where it says something. When `journal_stream`
/// (the value of `JOURNAL_STREAM`) names the device and inode of our stderr, records go to the journal;
/// otherwise to stderr. Directives that cannot be parsed are reported with a warning once installed.
pub fn init(
    level: LevelFilter,
    rust_log: Option<String>,
    journal_stream: Option<String>,
) -> Result<LogBackend, LoggingError> {
    let (filter, rejected) = Filter::new(level, rust_log.as_deref());
    let journal = if stderr_is_journal(journal_stream.as_deref()) {
        match JournalLog::new() {
            Ok(journal) => Some(journal),
            Err(error) => {
                eprintln!(
                    "WARN sensorgate::logging: journald unreachable ({error}), logging to stderr"
                );
                None
            }
        }
    } else {
        None
    };
    let backend = if journal.is_some() {
        LogBackend::Journal
    } else {
        LogBackend::Stderr
    };
    let max_level = filter.max_level();
    let logger = Logger {
        filter,
        journal,
        broker_warnings: RateLimiter::new(BROKER_WARNING_INTERVAL),
    };
    log::set_boxed_logger(Box::new(logger)).map_err(|_| LoggingError::AlreadyInstalled)?;
    log::set_max_level(max_level);
    for directive in rejected {
        log::warn!(directive = directive.as_str(); "ignoring unreadable RUST_LOG directive");
    }
    Ok(backend)
}

/// [`init`] with `RUST_LOG` and `JOURNAL_STREAM` taken from the process environment.
pub fn init_from_env(level: LevelFilter) -> Result<LogBackend, LoggingError> {
    let var = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    init(level, var("RUST_LOG"), var("JOURNAL_STREAM"))
}

/// Whether `journal_stream` (`"DEV:INODE"`, as systemd sets `JOURNAL_STREAM`) is our stderr.
fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some(journal_stream) = journal_stream else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr()) {
        Ok(stat) => journal_stream_matches(journal_stream, stat.st_dev, stat.st_ino),
        Err(_) => false,
    }
}

fn journal_stream_matches(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((want_dev, want_ino)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    want_dev.parse() == Ok(dev) && want_ino.parse() == Ok(ino)
}

/// Which records pass: a default level and per-target directives (longest matching prefix wins).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    default: LevelFilter,
    /// Sorted by target length, longest first.
    directives: Vec<(String, LevelFilter)>,
}

impl Filter {
    /// The configured `level`, overridden by whatever `rust_log` says. Also returns the directives of
    /// `rust_log` that could not be read (they are ignored).
    pub fn new(level: LevelFilter, rust_log: Option<&str>) -> (Self, Vec<String>) {
        let mut filter = Self {
            default: level,
            directives: Vec::new(),
        };
        let mut rejected = Vec::new();
        for directive in rust_log.unwrap_or_default().split(',').map(str::trim) {
            if directive.is_empty() {
                continue;
            }
            match directive.split_once('=') {
                None => match directive.parse::<LevelFilter>() {
                    Ok(level) => filter.default = level,
                    // A bare target enables everything it logs.
                    Err(_) => filter.set(directive, LevelFilter::Trace),
                },
                Some((target, level)) => match level.trim().parse::<LevelFilter>() {
                    Ok(level) if !target.trim().is_empty() => filter.set(target.trim(), level),
                    _ => rejected.push(directive.to_owned()),
                },
            }
        }
        filter
            .directives
            .sort_by_key(|(target, _)| std::cmp::Reverse(target.len()));
        (filter, rejected)
    }

    fn set(&mut self, target: &str, level: LevelFilter) {
        self.directives.retain(|(t, _)| t != target);
        self.directives.push((target.to_owned(), level));
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        self.directives
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, level)| *level)
    }

    /// The level a record of `level` from `target` is treated as, or `None` if it is filtered out.
    pub fn admit(&self, target: &str, level: Level) -> Option<Level> {
        let level = effective_level(target, level);
        (level <= self.level_for(target)).then_some(level)
    }

    /// The most verbose level any target can log at.
    pub fn max_level(&self) -> LevelFilter {
        self.directives
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, Ord::max)
    }
}

/// The broker library's info is our debug and its debug our trace; everything else keeps its level.
fn effective_level(target: &str, level: Level) -> Level {
    if !target.starts_with(BROKER_TARGET_PREFIX) {
        return level;
    }
    match level {
        Level::Info => Level::Debug,
        Level::Debug | Level::Trace => Level::Trace,
        other => other,
    }
}

/// The level handed to the journal logger so it writes the priority we want: it maps info to 5 (notice)
/// and debug to 6, whereas an operator expects info 6 and debug 7.
fn journal_level(level: Level) -> Level {
    match level {
        Level::Info => Level::Debug,
        Level::Debug | Level::Trace => Level::Trace,
        other => other,
    }
}

struct Logger {
    filter: Filter,
    journal: Option<JournalLog>,
    /// Per call site of the broker library (file:line), for its warnings and errors.
    broker_warnings: RateLimiter,
}

impl Logger {
    /// `None` to drop the record (rate-limited); else the suffix to append (empty for most records).
    fn rate_limit(&self, record: &Record, level: Level) -> Option<String> {
        if level > Level::Warn || !record.target().starts_with(BROKER_TARGET_PREFIX) {
            return Some(String::new());
        }
        let site = format!(
            "{}:{}",
            record.file().unwrap_or(record.target()),
            record.line().unwrap_or(0)
        );
        self.broker_warnings.admit(&site).map(suppressed_suffix)
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter
            .admit(metadata.target(), metadata.level())
            .is_some()
    }

    fn log(&self, record: &Record) {
        let Some(level) = self.filter.admit(record.target(), record.level()) else {
            return;
        };
        let Some(suffix) = self.rate_limit(record, level) else {
            return;
        };
        let args = format_args!("{}{suffix}", record.args());
        let record = &Record::builder()
            .args(args)
            .level(record.level())
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .key_values(record.key_values())
            .build();
        match &self.journal {
            Some(journal) => {
                let relevelled = Record::builder()
                    .args(*record.args())
                    .level(journal_level(level))
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .key_values(record.key_values())
                    .build();
                // The log interface cannot report failures; a lost journal write must not stop the daemon.
                let _ = journal.journal_send(&relevelled);
            }
            None => {
                let line = stderr_line(level, record);
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// `LEVEL target: message key=value ...`, newline-terminated. Values with spaces are quoted.
fn stderr_line(level: Level, record: &Record) -> String {
    let mut line = format!("{level} {}: {}", record.target(), record.args());
    let _ = record.key_values().visit(&mut KeyValueWriter(&mut line));
    line.push('\n');
    line
}

struct KeyValueWriter<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for KeyValueWriter<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let text = value.to_string();
        if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '"') {
            let _ = write!(self.0, " {key}={text:?}");
        } else {
            let _ = write!(self.0, " {key}={text}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(level: LevelFilter, rust_log: Option<&str>) -> Filter {
        let (filter, rejected) = Filter::new(level, rust_log);
        assert!(rejected.is_empty(), "rejected {rejected:?}");
        filter
    }

    #[test]
    fn configured_level_applies_without_rust_log() {
        let f = filter(LevelFilter::Info, None);
        assert_eq!(f.admit("sensorgate::app", Level::Info), Some(Level::Info));
        assert_eq!(f.admit("sensorgate::app", Level::Debug), None);
        assert_eq!(f.max_level(), LevelFilter::Info);
    }

    #[test]
    fn a_bare_rust_log_level_overrides_the_configured_one() {
        let f = filter(LevelFilter::Info, Some("debug"));
        assert_eq!(f.admit("sensorgate::app", Level::Debug), Some(Level::Debug));
        let f = filter(LevelFilter::Debug, Some("WARN"));
        assert_eq!(f.admit("sensorgate::app", Level::Info), None);
        assert_eq!(f.admit("sensorgate::app", Level::Warn), Some(Level::Warn));
    }

    #[test]
    fn target_directives_win_by_longest_prefix() {
        let f = filter(
            LevelFilter::Info,
            Some("warn, sensorgate=info ,sensorgate::uplink=trace"),
        );
        assert_eq!(f.admit("rumqttc::state", Level::Info), None);
        assert_eq!(f.admit("sensorgate::app", Level::Info), Some(Level::Info));
        assert_eq!(f.admit("sensorgate::app", Level::Debug), None);
        assert_eq!(
            f.admit("sensorgate::uplink::spool", Level::Trace),
            Some(Level::Trace)
        );
        assert_eq!(f.max_level(), LevelFilter::Trace);
    }

    #[test]
    fn a_bare_target_enables_all_its_levels_and_off_silences() {
        let f = filter(LevelFilter::Info, Some("sensorgate::devices,rumqttc=off"));
        assert_eq!(
            f.admit("sensorgate::devices", Level::Trace),
            Some(Level::Trace)
        );
        assert_eq!(f.admit("rumqttc", Level::Error), None);
    }

    #[test]
    fn unreadable_directives_are_rejected_and_the_rest_applies() {
        let (f, rejected) = Filter::new(LevelFilter::Info, Some("sensorgate=loud,=debug,debug"));
        assert_eq!(
            rejected,
            vec!["sensorgate=loud".to_owned(), "=debug".to_owned()]
        );
        assert_eq!(f.admit("sensorgate::app", Level::Debug), Some(Level::Debug));
    }

    #[test]
    fn broker_info_is_our_debug_and_its_warnings_still_pass() {
        let f = filter(LevelFilter::Info, None);
        assert_eq!(f.admit("rmqtt::v5", Level::Info), None);
        assert_eq!(f.admit("rmqtt_net::builder", Level::Info), None);
        assert_eq!(f.admit("rmqtt::v5", Level::Warn), Some(Level::Warn));
        assert_eq!(f.admit("rmqtt::v5", Level::Error), Some(Level::Error));
        let f = filter(LevelFilter::Info, Some("debug"));
        assert_eq!(f.admit("rmqtt::v5", Level::Info), Some(Level::Debug));
        assert_eq!(f.admit("rmqtt::v5", Level::Debug), None);
    }

    #[test]
    fn journal_priorities_are_3_4_6_7() {
        // systemd-journal-logger writes error 3, warn 4, info 5, debug 6, trace 7.
        assert_eq!(journal_level(Level::Error), Level::Error);
        assert_eq!(journal_level(Level::Warn), Level::Warn);
        assert_eq!(journal_level(Level::Info), Level::Debug);
        assert_eq!(journal_level(Level::Debug), Level::Trace);
    }

    #[test]
    fn journal_stream_must_match_device_and_inode() {
        assert!(journal_stream_matches("8:1234", 8, 1234));
        assert!(journal_stream_matches("8:1234\n", 8, 1234));
        assert!(!journal_stream_matches("8:1235", 8, 1234));
        assert!(!journal_stream_matches("9:1234", 8, 1234));
        assert!(!journal_stream_matches("garbage", 8, 1234));
        assert!(!stderr_is_journal(None));
    }

    #[test]
    fn stderr_lines_carry_level_target_message_and_fields() {
        let line = stderr_line(
            Level::Warn,
            &Record::builder()
                .args(format_args!("port vanished"))
                .level(Level::Warn)
                .target("sensorgate::source::serial")
                .key_values(&[("source", "uart0"), ("device", "kitchen sink")])
                .build(),
        );
        assert_eq!(
            line,
            "WARN sensorgate::source::serial: port vanished source=uart0 device=\"kitchen sink\"\n"
        );
        let line = stderr_line(
            Level::Error,
            &Record::builder()
                .args(format_args!("disk full"))
                .target("sensorgate::uplink")
                .build(),
        );
        assert_eq!(line, "ERROR sensorgate::uplink: disk full\n");
    }
}
