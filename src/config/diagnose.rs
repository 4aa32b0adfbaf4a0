//! Turns what the TOML parser and serde report ("unknown field `buad`, expected one of ...", "invalid
//! type: string \"fast\", expected u32") into messages that name the key the way users read it and say
//! what to write instead, with "did you mean" suggestions. It owns that wording; it never decides what
//! is valid (serde and `validate.rs` do) and never finds positions itself (`locate.rs` does).

use super::locate::{KeyPath, Locator};
use super::source::keys_for_kind;

/// A toml/serde error message rewritten for its key path.
pub fn rewrite(message: &str, path: &KeyPath, locator: &Locator<'_>) -> String {
    let first_line = message.lines().next().unwrap_or(message).trim();
    if let Some(rest) = first_line.strip_prefix("unknown field `") {
        let unknown = rest.split('`').next().unwrap_or(rest);
        return unknown_key(unknown, rest, path, locator);
    }
    if let Some(rest) = first_line.strip_prefix("unknown variant `") {
        let unknown = rest.split('`').next().unwrap_or(rest);
        let valid = backticked_after_expected(rest);
        let suggestion = closest(unknown, &valid)
            .map(|s| format!("did you mean \"{s}\"? "))
            .unwrap_or_default();
        let choices: Vec<String> = valid.iter().map(|v| format!("\"{v}\"")).collect();
        return locator.message(
            path,
            &format!(
                "unknown value \"{unknown}\"; {suggestion}write one of {}",
                choices.join(", ")
            ),
        );
    }
    if let Some(rest) = first_line.strip_prefix("missing field `") {
        let missing = rest.split('`').next().unwrap_or(rest);
        let hint = example(missing)
            .map(|e| format!(", e.g. {missing} = {e}"))
            .unwrap_or_default();
        return locator.message(path, &format!("missing key `{missing}`{hint}"));
    }
    for (prefix, is_type) in [("invalid type: ", true), ("invalid value: ", false)] {
        if let Some(rest) = first_line.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return locator.message(path, &wrong_value(found, expected, is_type, path));
            }
        }
    }
    // The project's own deserialisers (durations, sizes, URLs) already say what to write; others (a
    // socket address) get the key's example.
    let mut joined = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if !joined.contains("write") && !joined.contains("e.g.") {
        if let Some((key, example)) = path.last_key().and_then(|k| Some((k, example(k)?))) {
            joined.push_str(&format!("; write e.g. {key} = {example}"));
        }
    }
    locator.message(path, &joined)
}

/// A TOML syntax error's message on one line.
pub fn syntax(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    format!("TOML syntax: {}", lines.join("; "))
}

/// "unknown key `buad`; did you mean `baud`? ..." at the table that holds it.
fn unknown_key(unknown: &str, rest: &str, path: &KeyPath, locator: &Locator<'_>) -> String {
    let mut table = path.clone();
    if table.last_key() == Some(unknown) {
        table.0.pop();
    }
    let valid: Vec<String> = match source_kind(&table, locator) {
        Some(keys) => keys.into_iter().map(str::to_string).collect(),
        None => backticked_after_expected(rest),
    };
    let suggestion = closest(unknown, &valid)
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    let listing = if valid.is_empty() {
        "this table takes no keys".to_string()
    } else {
        format!("valid keys here: {}", valid.join(", "))
    };
    locator.message(
        &table,
        &format!("unknown key `{unknown}`; {suggestion}{listing}"),
    )
}

/// For a path `source[i]` whose `kind` is known, the keys of that kind.
fn source_kind(table: &KeyPath, locator: &Locator<'_>) -> Option<Vec<&'static str>> {
    use super::locate::Seg;
    match table.0.as_slice() {
        [Seg::Key(key), Seg::Index(_)] if key == "source" => {
            keys_for_kind(locator.string(&table.key("kind"))?)
        }
        _ => None,
    }
}

/// "expected a positive integer, found string \"fast\"; write e.g. baud = 115200".
fn wrong_value(found: &str, expected: &str, is_type: bool, path: &KeyPath) -> String {
    let key = path.last_key().unwrap_or("value");
    let wanted = match expected {
        "u8" => "an integer from 0 to 255",
        "u16" => "an integer from 0 to 65535",
        "u32" if key == "baud" => "a positive integer",
        "u32" => "an integer from 0 to 4294967295",
        "u64" | "usize" => "a non-negative integer",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" => "a string in quotes",
        "a sequence" => "a list in brackets, e.g. [\"sensorgate/#\"]",
        "socket address" | "a socket address" => "an address with a port, e.g. \"127.0.0.1:1883\"",
        other if other.starts_with("struct ") || other == "a map" => "a table",
        other => other,
    };
    let mut message = if is_type {
        format!("expected {wanted}, found {found}")
    } else {
        format!(
            "{} is out of range; expected {wanted}",
            found.replace('`', "")
        )
    };
    // A number in quotes: say to drop the quotes.
    let quoted_number = found
        .strip_prefix("string \"")
        .and_then(|s| s.strip_suffix('"'))
        .filter(|s| s.replace('_', "").parse::<f64>().is_ok() && wanted.contains("integer"));
    let unquoted = found
        .strip_prefix("integer `")
        .or_else(|| found.strip_prefix("floating point `"))
        .and_then(|s| s.strip_suffix('`'))
        .filter(|_| expected == "a string");
    if let Some(number) = unquoted {
        message.push_str(&format!("; write it in quotes: {key} = \"{number}\""));
    } else if let Some(number) = quoted_number {
        message.push_str(&format!("; write it without quotes: {key} = {number}"));
    } else if let Some(example) = example(key) {
        message.push_str(&format!("; write e.g. {key} = {example}"));
    }
    message
}

/// An example value for keys whose type errors are common.
fn example(key: &str) -> Option<&'static str> {
    Some(match key {
        "baud" => "115200",
        "frequency" => "868_100_000",
        "bandwidth" => "125_000",
        "spreading_factor" => "7",
        "address" => "\"17\"",
        "bind" => "\"127.0.0.1:1883\"",
        "qos" => "1",
        "devices" => "3",
        "name" => "\"uart0\"",
        "kind" => "\"serial\"",
        "path" => "\"/dev/ttyUSB0\"",
        "url" => "\"mqtts://mqtt.example.com:8883\"",
        "filter" => "\"sensorgate/#\"",
        "topic" => "\"alarms/kitchen\"",
        "source" => "\"uart0\"",
        "password_hash" => "\"$argon2id$...\"",
        "cert_file" => "\"/etc/sensorgate/cert.pem\"",
        "key_file" => "\"/etc/sensorgate/key.pem\"",
        "coding_rate" => "\"4/5\"",
        "sync_word" => "0x12",
        "read" | "write" => "[\"sensorgate/#\"]",
        _ => return None,
    })
}

/// The backticked names after "expected" in serde's "expected one of `a`, `b`" / "expected `a` or `b`".
fn backticked_after_expected(text: &str) -> Vec<String> {
    let Some((_, list)) = text.split_once("expected") else {
        return Vec::new();
    };
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The candidate closest to `word` (optimal string alignment distance, so `buad` -> `baud`), if close.
pub fn closest(word: &str, candidates: &[String]) -> Option<String> {
    let limit = match word.chars().count() {
        0..=3 => 1,
        4..=7 => 2,
        _ => 3,
    };
    candidates
        .iter()
        .map(|c| {
            (
                strsim::osa_distance(&word.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn closest_catches_transpositions_and_typos() {
        let keys = strings(&["name", "baud", "path", "data_bits"]);
        assert_eq!(closest("buad", &keys).as_deref(), Some("baud"));
        assert_eq!(closest("databits", &keys).as_deref(), Some("data_bits"));
        assert_eq!(closest("Path", &keys).as_deref(), Some("path"));
        assert_eq!(closest("frequency", &keys), None);
    }

    #[test]
    fn expected_lists_are_read_from_serde_messages() {
        assert_eq!(
            backticked_after_expected("buad`, expected one of `name`, `kind`, `baud`"),
            strings(&["name", "kind", "baud"])
        );
        assert_eq!(
            backticked_after_expected("xml`, expected `json` or `lpp`"),
            strings(&["json", "lpp"])
        );
        assert!(backticked_after_expected("x`, there are no fields").is_empty());
    }
}
