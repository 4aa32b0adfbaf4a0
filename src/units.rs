//! Durations and sizes as the configuration spells them: `"90s"`, `"15m"`, `"7d"`, `"1h30m"`; `"64MiB"`,
//! `"512KiB"`, `"100B"` or a plain integer of bytes. This module owns their grammar, their serde helpers
//! (which a feature's own settings type names, so that `config` can compose it) and the suggestions
//! printed when a value does not fit; it never decides which values a key accepts (that is validation's
//! job).
//!
//! The duration grammar is `crate::duration`'s (the features' settings types read it too); this module
//! re-exports it for the configuration's types.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

pub use crate::duration::{duration, format_duration, option_duration, parse_duration};

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
    use std::time::Duration;

    use super::*;

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
