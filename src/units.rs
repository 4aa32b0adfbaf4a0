//! Durations and sizes as the configuration spells them: `"90s"`, `"15m"`, `"7d"`, `"1h30m"`; `"64MiB"`,
//! `"512KiB"`, `"100B"` or a plain integer of bytes. This module owns their grammar, their serde helpers
//! (which a feature's own settings type names, so that `config` can compose it) and the suggestions
//! printed when a value does not fit; it never decides which values a key accepts (that is validation's
//! job).
//!
//! Durations accept a deliberately small subset of what `humantime` reads: integer amounts with the units
//! `ms`, `s`, `m`, `h`, `d`, written together (`"1h30m"`). `humantime` alone would also take `"15 minutes"`
//! and `"1M"` (a month, easily mistaken for a minute); such values are refused with the compact spelling
//! to write instead.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// The duration units, longest first, with their length in milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a duration in the configuration's grammar: one or more `<integer><unit>` pairs, units `ms`, `s`,
/// `m`, `h`, `d`. The error is the message to show, with a suggested spelling when one is clear.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if is_compact_duration(text) {
        if let Ok(duration) = humantime::parse_duration(text) {
            return Ok(duration);
        }
    }
    let hint = match humantime::parse_duration(text.trim()) {
        Ok(duration) if duration.subsec_nanos().is_multiple_of(1_000_000) => {
            format!("write \"{}\"", format_duration(duration))
        }
        _ => "write an integer with a unit: ms, s, m, h or d, e.g. \"90s\", \"15m\", \"7d\", \"1h30m\""
            .to_string(),
    };
    Err(format!("\"{text}\" is not a duration; {hint}"))
}

/// Whether `text` is `<digits><unit>` repeated, with no spaces and only the units this grammar knows.
fn is_compact_duration(text: &str) -> bool {
    let mut rest = text;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        if !matches!(&rest[..letters], "ms" | "s" | "m" | "h" | "d") {
            return false;
        }
        rest = &rest[letters..];
    }
    true
}

/// The compact spelling of a duration in this grammar (`900s` -> `"15m"`, `5400s` -> `"1h30m"`).
pub fn format_duration(duration: Duration) -> String {
    let mut millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in DURATION_UNITS {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

/// Parses a size: a plain number of bytes (`"4096"`), or an integer with `B`, `KiB`, `MiB`, `GiB` (powers of
/// 1024) or `kB`/`KB`, `MB`, `GB` (powers of 1000). Spaces between number and unit are allowed.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "\"{text}\" is not a size; write an integer with B, KiB, MiB or GiB, e.g. \"64MiB\", \"512KiB\", \"100B\""
            ))
        }
    };
    let value: u64 = number.parse().map_err(|_| {
        format!("\"{text}\" is not a size; it must start with an integer, e.g. \"64MiB\"")
    })?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// The shortest exact spelling of a size (`67108864` -> `"64MiB"`).
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// `deserialize_with` for a [`Duration`] written as a string.
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// `deserialize_with` for an optional [`Duration`]; use with `#[serde(default)]`.
pub fn option_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    duration(deserializer).map(Some)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string such as \"90s\", \"15m\" or \"7d\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse_duration(text).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a duration needs a unit and quotes: write \"{number}s\" for seconds or \"{number}m\" for minutes"
        )))
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "a duration needs a unit and quotes: write \"{number}s\" for seconds or \"{number}m\" for minutes"
        )))
    }
}

/// `deserialize_with` for a size in bytes, written as a string with a unit or as a plain integer.
pub fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(SizeVisitor)
}

/// `deserialize_with` for an optional size; use with `#[serde(default)]`.
pub fn option_size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    size(deserializer).map(Some)
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"64MiB\", \"512KiB\" or a number of bytes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<u64, E> {
        parse_size(text).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, number: u64) -> Result<u64, E> {
        Ok(number)
    }

    fn visit_i64<E: de::Error>(self, number: i64) -> Result<u64, E> {
        u64::try_from(number)
            .map_err(|_| E::custom(format!("{number} is negative; a size is 0 or more bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn spelled_out_durations_are_refused_with_the_compact_spelling() {
        let message = parse_duration("15 minutes").unwrap_err();
        assert!(message.contains("write \"15m\""), "{message}");
        let message = parse_duration("1h 30m").unwrap_err();
        assert!(message.contains("write \"1h30m\""), "{message}");
        // "1M" is a month to humantime; the compact grammar has no month unit.
        assert!(parse_duration("1M").is_err());
    }

    #[test]
    fn durations_without_units_or_numbers_are_refused() {
        for bad in ["15", "", "m", "1.5s", "-1s", "1 s", "1sec"] {
            let message = parse_duration(bad).unwrap_err();
            assert!(message.contains("is not a duration"), "{bad}: {message}");
        }
    }

    #[test]
    fn format_duration_round_trips() {
        for text in ["15m", "1h30m", "7d", "1s", "250ms", "1d1h1m1s1ms"] {
            let duration = parse_duration(text).unwrap();
            assert_eq!(format_duration(duration), text);
        }
    }

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("64 megabytes")
            .unwrap_err()
            .contains("\"64MiB\""));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn format_size_picks_the_largest_exact_unit() {
        assert_eq!(format_size(64 << 20), "64MiB");
        assert_eq!(format_size(256 << 10), "256KiB");
        assert_eq!(format_size(1000), "1000B");
    }

    #[derive(Debug, serde::Deserialize)]
    struct Probe {
        #[serde(deserialize_with = "duration")]
        interval: Duration,
        #[serde(deserialize_with = "size")]
        bytes: u64,
    }

    #[test]
    fn serde_helpers_read_strings_and_integers() {
        let probe: Probe = toml::from_str("interval = \"2s\"\nbytes = 1024").unwrap();
        assert_eq!(probe.interval, Duration::from_secs(2));
        assert_eq!(probe.bytes, 1024);
        let probe: Probe = toml::from_str("interval = \"1m\"\nbytes = \"1KiB\"").unwrap();
        assert_eq!(probe.bytes, 1024);
        let error = toml::from_str::<Probe>("interval = 5\nbytes = 1").unwrap_err();
        assert!(error.message().contains("\"5s\""), "{}", error.message());
    }
}
