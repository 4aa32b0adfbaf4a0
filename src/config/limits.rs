//! The documented range of every configuration key that has one: each duration and size key, and the
//! bounded counts of `[broker]` and `[upstream]`, as one table of named constants, checked by the three
//! functions at the bottom so every range refusal reads the same (`key: "x" is above the maximum "y";
//! write ... from "a" to "b", e.g. "c"`). This module owns the ranges the configuration decides itself;
//! where a stage owns the fact (the uplink's in-flight limit, the spool's segment bounds, the radio's
//! per-chip tables) the constant is imported from the stage, never copied. It never reads the tree or the
//! text: `validate.rs` applies these ranges at the keys' paths.
//!
//! Why the maxima: a duration is added to a clock (`Instant + period`), and a large enough one overflows
//! and panics in the task that holds it (`sync = "213503982334601d"` killed the uplink). 30 days is the
//! ceiling unless a key needs more (`max_age` up to 365 days) or its meaning asks for less (a handshake
//! or an MQTT keep-alive).

use std::time::Duration;

use crate::units::{format_duration, format_size};

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const DAY: u64 = 86_400;

/// The range of a duration key, and an example to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationRange {
    /// The key as the reference writes it, dotted (`upstream.spool.sync`, `source[].interval`).
    pub key: &'static str,
    pub min: Duration,
    pub max: Duration,
    pub example: &'static str,
}

/// The range of a size key (bytes), and an example to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub example: &'static str,
}

/// The range of an integer key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountRange {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
}

/// The least duration a "longer than zero" key takes.
const ONE_MS: Duration = Duration::from_millis(1);

pub const HANDSHAKE_TIMEOUT: DurationRange = DurationRange {
    key: "broker.handshake_timeout",
    min: ONE_MS,
    max: secs(60),
    example: "5s",
};
pub const SESSION_EXPIRY: DurationRange = DurationRange {
    key: "broker.session_expiry",
    min: Duration::ZERO,
    max: secs(7 * DAY),
    example: "2h",
};
pub const ANONYMOUS_SESSION_EXPIRY: DurationRange = DurationRange {
    key: "broker.anonymous_session_expiry",
    min: Duration::ZERO,
    max: secs(7 * DAY),
    example: "5m",
};
/// At least a second (a shorter period is an fsync a burst of changes keeps paying), at most a day of
/// last values held only in memory.
pub const RETAINED_SYNC: DurationRange = DurationRange {
    key: "broker.retained_sync",
    min: secs(1),
    max: secs(DAY),
    example: "15m",
};
pub const STATS_INTERVAL: DurationRange = DurationRange {
    key: "publish.stats_interval",
    min: ONE_MS,
    max: secs(30 * DAY),
    example: "60s",
};
pub const OFFLINE_AFTER: DurationRange = DurationRange {
    key: "devices.offline_after",
    min: ONE_MS,
    max: secs(30 * DAY),
    example: "15m",
};
pub const DEDUP_WINDOW: DurationRange = DurationRange {
    key: "devices.dedup_window",
    min: Duration::ZERO,
    max: secs(30 * DAY),
    example: "10s",
};
pub const DEVICE_OFFLINE_AFTER: DurationRange = DurationRange {
    key: "device[].offline_after",
    min: ONE_MS,
    max: secs(30 * DAY),
    example: "5m",
};
/// `interval` of a simulator source and of a radio with `backend = "simulator"`.
pub const SOURCE_INTERVAL: DurationRange = DurationRange {
    key: "source[].interval",
    min: ONE_MS,
    max: secs(30 * DAY),
    example: "2s",
};
/// MQTT carries the keep-alive in two bytes of seconds.
pub const KEEP_ALIVE: DurationRange = DurationRange {
    key: "upstream.keep_alive",
    min: secs(1),
    max: secs(65_535),
    example: "30s",
};
pub const SPOOL_MAX_AGE: DurationRange = DurationRange {
    key: "upstream.spool.max_age",
    min: ONE_MS,
    max: secs(365 * DAY),
    example: "7d",
};
/// `sync` when it is a duration (it may also be `"always"`).
pub const SPOOL_SYNC: DurationRange = DurationRange {
    key: "upstream.spool.sync",
    min: ONE_MS,
    max: secs(30 * DAY),
    example: "1s",
};

/// Every duration key, for the reference's tests and the agreement test.
pub const DURATIONS: [DurationRange; 12] = [
    HANDSHAKE_TIMEOUT,
    SESSION_EXPIRY,
    ANONYMOUS_SESSION_EXPIRY,
    RETAINED_SYNC,
    STATS_INTERVAL,
    OFFLINE_AFTER,
    DEDUP_WINDOW,
    DEVICE_OFFLINE_AFTER,
    SOURCE_INTERVAL,
    KEEP_ALIVE,
    SPOOL_MAX_AGE,
    SPOOL_SYNC,
];

/// MQTT's remaining-length field tops out at 268,435,455 bytes; 16 bytes is the smallest useful packet.
pub const MAX_PACKET_SIZE: SizeRange = SizeRange {
    key: "broker.max_packet_size",
    min: 16,
    max: 268_435_455,
    example: "256KiB",
};
pub const SPOOL_MAX_BYTES: SizeRange = SizeRange {
    key: "upstream.spool.max_bytes",
    min: 64 << 10,
    max: 1 << 40,
    example: "64MiB",
};
/// Its upper bound is `max_bytes / SEGMENTS_PER_BUDGET`, the spool's own rule; see [`segment_bytes_max`].
pub const SPOOL_SEGMENT_BYTES: SizeRange = SizeRange {
    key: "upstream.spool.segment_bytes",
    min: crate::uplink::spool::MIN_SEGMENT_BYTES,
    max: SPOOL_MAX_BYTES.max / crate::uplink::spool::SEGMENTS_PER_BUDGET,
    example: "4MiB",
};

/// What one client's waiting commands may hold on a source: room for one command with its reply, up to
/// what a Pi may spend; its upper bound is the source's `command_queue_bytes`.
pub const CLIENT_QUEUE_BYTES: SizeRange = SizeRange {
    key: "source[].client_queue_bytes",
    min: 4 << 10,
    max: 64 << 20,
    example: "256KiB",
};
/// What all waiting commands of a source may hold.
pub const COMMAND_QUEUE_BYTES: SizeRange = SizeRange {
    key: "source[].command_queue_bytes",
    min: 4 << 10,
    max: 64 << 20,
    example: "1MiB",
};

/// Every size key.
pub const SIZES: [SizeRange; 5] = [
    MAX_PACKET_SIZE,
    SPOOL_MAX_BYTES,
    SPOOL_SEGMENT_BYTES,
    CLIENT_QUEUE_BYTES,
    COMMAND_QUEUE_BYTES,
];

/// The largest segment the spool uses for a budget: anything above it the spool would lower silently.
pub fn segment_bytes_max(max_bytes: u64) -> u64 {
    (max_bytes / crate::uplink::spool::SEGMENTS_PER_BUDGET).max(SPOOL_SEGMENT_BYTES.min)
}

/// The async runtime's worker threads (default `defaults::WORKER_THREADS`); 16 is four
/// times the largest Pi's cores.
pub const WORKER_THREADS: CountRange = CountRange {
    key: "gateway.worker_threads",
    min: 1,
    max: 16,
};
/// At most Linux's default `fs.nr_open` (1,048,576): no process can hold more sockets. The broker also
/// checks it against the process's own descriptor limit at start.
pub const MAX_CONNECTIONS: CountRange = CountRange {
    key: "broker.max_connections",
    min: 1,
    max: 1 << 20,
};
pub const BROKER_MAX_INFLIGHT: CountRange = CountRange {
    key: "broker.max_inflight",
    min: 1,
    max: u16::MAX as u64,
};
pub const MAX_QUEUED_MESSAGES: CountRange = CountRange {
    key: "broker.max_queued_messages",
    min: 1,
    max: u32::MAX as u64,
};
pub const MAX_TOPIC_LEVELS: CountRange = CountRange {
    key: "broker.max_topic_levels",
    min: 1,
    max: 1024,
};
pub const MAX_RETAINED_MESSAGES: CountRange = CountRange {
    key: "broker.max_retained_messages",
    min: 1,
    max: 1_000_000,
};
pub const MAX_OFFLINE_SESSIONS: CountRange = CountRange {
    key: "broker.max_offline_sessions",
    min: 0,
    max: 100_000,
};
/// The uplink's own limit ([`crate::uplink::MAX_INFLIGHT_LIMIT`]): more would reuse packet ids.
pub const UPSTREAM_MAX_INFLIGHT: CountRange = CountRange {
    key: "upstream.max_inflight",
    min: 1,
    max: crate::uplink::MAX_INFLIGHT_LIMIT as u64,
};

/// A simulator source's devices: its node addresses are 16 bits (the simulator clamps to
/// `u16::MAX`, so a larger value would run fewer devices than written).
pub const SIMULATOR_DEVICES: CountRange = CountRange {
    key: "source[].devices",
    min: 1,
    max: u16::MAX as u64,
};

/// Commands one client may have waiting on a source: at most one per device a source queues for.
pub const CLIENT_QUEUE: CountRange = CountRange {
    key: "source[].client_queue",
    min: 1,
    max: crate::commands::outbox::MAX_DEVICES as u64,
};

/// Every bounded count of `[gateway]`, `[broker]`, `[upstream]` and the sources.
pub const COUNTS: [CountRange; 10] = [
    WORKER_THREADS,
    SIMULATOR_DEVICES,
    CLIENT_QUEUE,
    MAX_CONNECTIONS,
    BROKER_MAX_INFLIGHT,
    MAX_QUEUED_MESSAGES,
    MAX_TOPIC_LEVELS,
    MAX_RETAINED_MESSAGES,
    MAX_OFFLINE_SESSIONS,
    UPSTREAM_MAX_INFLIGHT,
];

/// `Ok` inside the range; else the message to show at the key's value.
pub fn check_duration(range: &DurationRange, value: Duration) -> Result<(), String> {
    if (range.min..=range.max).contains(&value) {
        return Ok(());
    }
    let (min, max) = (format_duration(range.min), format_duration(range.max));
    let shown = format_duration(value);
    let what = if value < range.min {
        if range.min == ONE_MS {
            format!("\"{shown}\" is too short: it must be longer than zero")
        } else {
            format!("\"{shown}\" is below the minimum \"{min}\"")
        }
    } else {
        format!("\"{shown}\" is above the maximum \"{max}\"")
    };
    Err(format!(
        "{what}; write a duration from \"{min}\" to \"{max}\", e.g. \"{}\"",
        range.example
    ))
}

/// `Ok` inside `min..=max` (`max` given, for keys whose bound depends on another); else the message.
pub fn check_size_within(range: &SizeRange, value: u64, max: u64) -> Result<(), String> {
    if (range.min..=max).contains(&value) {
        return Ok(());
    }
    let (low, high) = (format_size(range.min), format_size(max));
    let shown = format_size(value);
    let what = if value < range.min {
        format!("\"{shown}\" is below the minimum \"{low}\"")
    } else {
        format!("\"{shown}\" is above the maximum \"{high}\"")
    };
    Err(format!(
        "{what}; write a size from \"{low}\" to \"{high}\", e.g. \"{}\"",
        range.example
    ))
}

/// [`check_size_within`] with the key's own maximum.
pub fn check_size(range: &SizeRange, value: u64) -> Result<(), String> {
    check_size_within(range, value, range.max)
}

/// `Ok` inside the range; else the message.
pub fn check_count(range: &CountRange, value: u64) -> Result<(), String> {
    if (range.min..=range.max).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{value} is outside {}..={}; write an integer from {} to {}",
            range.min, range.max, range.min, range.max
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_refused_above_their_maximum_with_what_to_write() {
        let message = check_duration(&SPOOL_SYNC, Duration::from_secs(213_503_982_334_601 * DAY))
            .unwrap_err();
        assert!(message.contains("above the maximum \"30d\""), "{message}");
        assert!(
            message.contains("from \"1ms\" to \"30d\", e.g. \"1s\""),
            "{message}"
        );
        assert!(check_duration(&SPOOL_SYNC, secs(30 * DAY)).is_ok());
        assert!(check_duration(&SPOOL_MAX_AGE, secs(365 * DAY)).is_ok());
        let message = check_duration(&OFFLINE_AFTER, Duration::ZERO).unwrap_err();
        assert!(message.contains("longer than zero"), "{message}");
        assert!(check_duration(&DEDUP_WINDOW, Duration::ZERO).is_ok());
        let message = check_duration(&KEEP_ALIVE, Duration::from_millis(500)).unwrap_err();
        assert!(message.contains("below the minimum \"1s\""), "{message}");
    }

    #[test]
    fn every_range_is_sane_and_every_key_is_listed_once() {
        let mut keys: Vec<&str> = DURATIONS.iter().map(|r| r.key).collect();
        keys.extend(SIZES.iter().map(|r| r.key));
        keys.extend(COUNTS.iter().map(|r| r.key));
        let count = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), count);
        for range in DURATIONS {
            assert!(range.min <= range.max, "{}", range.key);
            let example = crate::units::parse_duration(range.example).unwrap();
            assert!(check_duration(&range, example).is_ok(), "{}", range.key);
            // Every maximum can be added to the clock without overflow.
            assert!(std::time::Instant::now().checked_add(range.max).is_some());
        }
        for range in SIZES {
            let example = crate::units::parse_size(range.example).unwrap();
            assert!(check_size(&range, example).is_ok(), "{}", range.key);
        }
        for range in COUNTS {
            assert!(range.min <= range.max, "{}", range.key);
        }
    }

    #[test]
    fn segments_follow_the_spools_rule() {
        assert_eq!(segment_bytes_max(64 << 20), 16 << 20);
        assert_eq!(segment_bytes_max(64 << 10), 16 << 10);
        assert_eq!(segment_bytes_max(1), SPOOL_SEGMENT_BYTES.min);
        let message = check_size_within(&SPOOL_SEGMENT_BYTES, 32 << 20, 16 << 20).unwrap_err();
        assert!(message.contains("above the maximum \"16MiB\""), "{message}");
    }

    #[test]
    fn counts_say_their_range() {
        let message = check_count(&UPSTREAM_MAX_INFLIGHT, 61_000).unwrap_err();
        assert!(message.contains("1..=60000"), "{message}");
        assert!(check_count(&MAX_OFFLINE_SESSIONS, 0).is_ok());
    }
}
