//! Durations as the configuration spells them: `"90s"`, `"15m"`, `"7d"`, `"1h30m"`. This module owns
//! their grammar, the serde helpers every settings type reads them with (a feature's own settings as
//! well as `crate::config`'s), and the suggestion printed when a value does not fit; it never decides
//! which values a key accepts.
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
}
