//! The checks that run after the tree is deserialised: values that relate to each other (unique names, a
//! `[[device]]` naming an existing `[[source]]`, TLS files in pairs, `mqtt://` only with
//! `allow_plaintext`), ranges serde cannot express, topic names and filters, password hashes. Each check
//! reports a [`Problem`] at the key path at fault; this module never reads files and never changes the tree.

use std::collections::HashMap;
use std::time::Duration;

use super::locate::{KeyPath, Locator, Part};
use super::Config;

/// A validation failure: the key path at fault, which part of it to point at, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: KeyPath,
    pub part: Part,
    pub message: String,
}

impl Problem {
    /// A problem with a key itself (unknown, misplaced).
    pub fn key(path: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            path,
            part: Part::Key,
            message: message.into(),
        }
    }

    /// A problem with a value (or, for a table path, with the table: a missing key).
    pub fn value(path: KeyPath, message: impl Into<String>) -> Problem {
        Problem {
            path,
            part: Part::Value,
            message: message.into(),
        }
    }
}

/// Checks an MQTT topic name as the gateway publishes it: not empty, no `+`, `#` or NUL, no empty levels
/// (`a//b`, a leading or trailing `/`), at most 65535 bytes. The error says what is wrong.
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("is empty".to_string());
    }
    if topic.len() > 65_535 {
        return Err("is longer than MQTT's 65535 bytes".to_string());
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        let shown = if c == '\0' {
            "NUL".to_string()
        } else {
            format!("'{c}'")
        };
        return Err(format!(
            "\"{topic}\" contains {shown}, which a topic name cannot hold (wildcards belong in filters)"
        ));
    }
    if topic.split('/').any(str::is_empty) {
        return Err(format!(
            "\"{topic}\" has an empty level (\"//\", or a leading or trailing '/'); write e.g. \"home/sensors\""
        ));
    }
    Ok(())
}

/// Checks an MQTT topic filter: not empty, no NUL, `+` and `#` only as whole levels, `#` only last.
/// `%u` (user name) and `%c` (client id) are plain characters here.
pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("is empty; e.g. \"sensorgate/#\"".to_string());
    }
    if filter.len() > 65_535 {
        return Err("is longer than MQTT's 65535 bytes".to_string());
    }
    if filter.contains('\0') {
        return Err(format!("\"{}\" contains NUL", filter.escape_debug()));
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "\"{filter}\": '#' must be a whole level and the last one, e.g. \"sensorgate/#\""
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "\"{filter}\": '+' must be a whole level, e.g. \"sensorgate/+/temperature_1\""
            ));
        }
    }
    Ok(())
}

fn check_qos(qos: u8, path: KeyPath) -> Result<(), Problem> {
    if qos <= 2 {
        Ok(())
    } else {
        Err(Problem::value(
            path,
            format!("{qos} is not an MQTT QoS; write 0, 1 or 2"),
        ))
    }
}

fn check_positive(duration: Duration, path: KeyPath, example: &str) -> Result<(), Problem> {
    if duration.is_zero() {
        Err(Problem::value(
            path,
            format!("must be longer than zero, e.g. \"{example}\""),
        ))
    } else {
        Ok(())
    }
}

/// The line of a path's value, for "already used on line N" messages.
fn line_of(locator: &Locator<'_>, path: &KeyPath) -> usize {
    locator.position(path, Part::Value).0
}

/// Runs every cross-field check, in the order of the file's sections; the first problem wins.
pub fn validate(config: &Config, locator: &Locator<'_>) -> Result<(), Problem> {
    let root = KeyPath::root();
    check_gateway(config, &root.key("gateway"))?;
    check_broker(config, locator, &root.key("broker"))?;
    check_qos(config.publish.qos, root.key("publish").key("qos"))?;
    check_positive(
        config.publish.stats_interval,
        root.key("publish").key("stats_interval"),
        "60s",
    )?;
    check_sources(config, locator)?;
    check_positive(
        config.devices.offline_after,
        root.key("devices").key("offline_after"),
        "15m",
    )?;
    check_devices(config, locator)?;
    check_upstream(config, &root.key("upstream"))
}

fn check_gateway(config: &Config, at: &KeyPath) -> Result<(), Problem> {
    let id = &config.gateway.id;
    if id.is_empty() || id.contains(['/', '+', '#', '\0']) {
        return Err(Problem::value(
            at.key("id"),
            format!("\"{id}\" is not a gateway id; use one word without '/', '+' or '#', e.g. \"garden-pi\""),
        ));
    }
    check_topic_name(&config.gateway.base_topic)
        .map_err(|message| Problem::value(at.key("base_topic"), message))?;
    if config.gateway.state_dir.as_os_str().is_empty() {
        return Err(Problem::value(
            at.key("state_dir"),
            "is empty; e.g. \"/var/lib/sensorgate\"",
        ));
    }
    Ok(())
}

fn check_broker(config: &Config, locator: &Locator<'_>, at: &KeyPath) -> Result<(), Problem> {
    let broker = &config.broker;
    if broker.listeners.is_empty() {
        return Err(Problem::value(
            at.key("listener"),
            "no listener; add a [[broker.listener]] with bind = \"127.0.0.1:1883\"",
        ));
    }
    let mut binds = HashMap::new();
    for (i, listener) in broker.listeners.iter().enumerate() {
        let path = at.key("listener").index(i);
        if let Some(first) = binds.insert(listener.bind, i) {
            let first_line = line_of(locator, &at.key("listener").index(first).key("bind"));
            return Err(Problem::value(
                path.key("bind"),
                format!(
                    "{} is already the bind of the listener on line {first_line}",
                    listener.bind
                ),
            ));
        }
        if let Some(tls) = &listener.tls {
            for (key, file) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                if file.as_os_str().is_empty() {
                    return Err(Problem::value(
                        path.key("tls").key(key),
                        "is empty; write the PEM file's path",
                    ));
                }
            }
        }
    }
    let ranges: [(&str, u64, u64, u64); 4] = [
        (
            "max_connections",
            broker.max_connections as u64,
            1,
            u64::from(u32::MAX),
        ),
        ("max_packet_size", broker.max_packet_size, 16, 268_435_455),
        (
            "max_inflight",
            u64::from(broker.max_inflight),
            1,
            u64::from(u16::MAX),
        ),
        (
            "max_queued_messages",
            broker.max_queued_messages as u64,
            1,
            u64::from(u32::MAX),
        ),
    ];
    for (key, value, low, high) in ranges {
        if !(low..=high).contains(&value) {
            return Err(Problem::value(
                at.key(key),
                format!("{value} is outside {low}..={high}"),
            ));
        }
    }
    check_positive(broker.handshake_timeout, at.key("handshake_timeout"), "5s")?;
    let mut names = HashMap::new();
    for (i, user) in broker.users.iter().enumerate() {
        let path = at.key("user").index(i);
        if user.name.is_empty() {
            return Err(Problem::value(
                path.key("name"),
                "is empty; write the MQTT user name",
            ));
        }
        if let Some(first) = names.insert(user.name.as_str(), i) {
            let first_line = line_of(locator, &at.key("user").index(first).key("name"));
            return Err(Problem::value(
                path.key("name"),
                format!("\"{}\" is already the name of the [[broker.user]] on line {first_line}; user names must be unique", user.name),
            ));
        }
        let is_argon2id = user.password_hash.starts_with("$argon2id$")
            && argon2::PasswordHash::new(&user.password_hash).is_ok();
        if !is_argon2id {
            return Err(Problem::value(
                path.key("password_hash"),
                "is not an argon2id hash (\"$argon2id$...\"); run `sensorgate hash-password`, type the password, and paste the line it prints",
            ));
        }
        for (key, filters) in [("read", &user.read), ("write", &user.write)] {
            for (j, filter) in filters.iter().enumerate() {
                check_topic_filter(filter)
                    .map_err(|message| Problem::value(path.key(key).index(j), message))?;
            }
        }
    }
    Ok(())
}

fn check_sources(config: &Config, locator: &Locator<'_>) -> Result<(), Problem> {
    let mut names = HashMap::new();
    for (i, source) in config.sources.iter().enumerate() {
        if let Some(first) = names.insert(source.name.as_str(), i) {
            let first_line = line_of(
                locator,
                &KeyPath::root().key("source").index(first).key("name"),
            );
            return Err(Problem::value(
                KeyPath::root().key("source").index(i).key("name"),
                format!(
                    "\"{}\" is already the name of the [[source]] on line {first_line}; source names must be unique",
                    source.name
                ),
            ));
        }
    }
    Ok(())
}

fn check_devices(config: &Config, locator: &Locator<'_>) -> Result<(), Problem> {
    let mut names = HashMap::new();
    let mut addresses = HashMap::new();
    for (i, device) in config.device.iter().enumerate() {
        let path = KeyPath::root().key("device").index(i);
        check_topic_name(&device.name)
            .map_err(|message| Problem::value(path.key("name"), message))?;
        if device.name.contains('/') || device.name == "gateway" {
            return Err(Problem::value(
                path.key("name"),
                format!(
                    "\"{}\" cannot be a device name: it must be one topic level without '/', and \"gateway\" is the gateway's own",
                    device.name
                ),
            ));
        }
        if let Some(first) = names.insert(device.name.as_str(), i) {
            let first_line = line_of(
                locator,
                &KeyPath::root().key("device").index(first).key("name"),
            );
            return Err(Problem::value(
                path.key("name"),
                format!(
                    "\"{}\" is already the name of the [[device]] on line {first_line}",
                    device.name
                ),
            ));
        }
        if !config.sources.iter().any(|s| s.name == device.source) {
            let known: Vec<String> = config
                .sources
                .iter()
                .map(|s| format!("\"{}\"", s.name))
                .collect();
            let known = if known.is_empty() {
                "there is no [[source]] yet".to_string()
            } else {
                format!("the sources are {}", known.join(", "))
            };
            return Err(Problem::value(
                path.key("source"),
                format!("no [[source]] is named \"{}\"; {known}", device.source),
            ));
        }
        if device.address.is_empty() {
            return Err(Problem::value(
                path.key("address"),
                "is empty; write the address its header or payload carries, e.g. \"17\"",
            ));
        }
        let key = (device.source.as_str(), device.address.as_str());
        if let Some(first) = addresses.insert(key, i) {
            return Err(Problem::value(
                path.key("address"),
                format!(
                    "address \"{}\" on source \"{}\" is already the [[device]] \"{}\"",
                    device.address, device.source, config.device[first].name
                ),
            ));
        }
        if let Some(offline_after) = device.offline_after {
            check_positive(offline_after, path.key("offline_after"), "5m")?;
        }
        if let Some(will) = &device.will {
            check_topic_name(&will.topic)
                .map_err(|message| Problem::value(path.key("will").key("topic"), message))?;
            check_qos(will.qos, path.key("will").key("qos"))?;
        }
    }
    Ok(())
}

fn check_upstream(config: &Config, at: &KeyPath) -> Result<(), Problem> {
    let Some(upstream) = &config.upstream else {
        return Ok(());
    };
    if !upstream.url.tls && !upstream.allow_plaintext {
        return Err(Problem::value(
            at.key("url"),
            format!(
                "\"{}\" sends passwords and data unencrypted; use mqtts://, or set allow_plaintext = true in [upstream] for a broker on a trusted network",
                upstream.url
            ),
        ));
    }
    if upstream.client_id.is_empty() || upstream.client_id.contains('\0') {
        return Err(Problem::value(
            at.key("client_id"),
            "must be non-empty text without NUL",
        ));
    }
    match (&upstream.cert_file, &upstream.key_file) {
        (Some(_), None) => {
            return Err(Problem::value(
                at.key("cert_file"),
                "a client certificate needs its key: add key_file",
            ))
        }
        (None, Some(_)) => {
            return Err(Problem::value(
                at.key("key_file"),
                "a client key needs its certificate: add cert_file",
            ))
        }
        _ => {}
    }
    if upstream.keep_alive < Duration::from_secs(1)
        || upstream.keep_alive > Duration::from_secs(65_535)
    {
        return Err(Problem::value(
            at.key("keep_alive"),
            "must be between \"1s\" and \"18h12m15s\" (MQTT's 65535 s)",
        ));
    }
    if upstream.max_inflight == 0 {
        return Err(Problem::value(at.key("max_inflight"), "must be 1 or more"));
    }
    for (i, rule) in upstream.forward.iter().enumerate() {
        let path = at.key("forward").index(i);
        check_topic_filter(&rule.filter)
            .map_err(|message| Problem::value(path.key("filter"), message))?;
        if !rule.prefix.is_empty() {
            check_topic_name(&format!("{}x", rule.prefix)).map_err(|_| {
                Problem::value(
                    path.key("prefix"),
                    format!(
                        "\"{}\" would make invalid remote topics (no '+', '#', NUL, leading '/' or \"//\"); e.g. \"sites/garden/\"",
                        rule.prefix
                    ),
                )
            })?;
        }
        check_qos(rule.qos, path.key("qos"))?;
    }
    let spool = &upstream.spool;
    let at = at.key("spool");
    if spool.max_bytes < 64 * 1024 {
        return Err(Problem::value(
            at.key("max_bytes"),
            "is below 64KiB; e.g. \"64MiB\"",
        ));
    }
    check_positive(spool.max_age, at.key("max_age"), "7d")?;
    if let super::SyncMode::Every(period) = spool.sync {
        check_positive(period, at.key("sync"), "1s")?;
    }
    if spool.segment_bytes < 4 * 1024 || spool.segment_bytes > spool.max_bytes {
        return Err(Problem::value(
            at.key("segment_bytes"),
            format!(
                "must be between 4KiB and max_bytes ({}); e.g. \"4MiB\"",
                super::units::format_size(spool.max_bytes)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(check_topic_name("home/sensors").is_ok());
        for bad in ["", "a//b", "/a", "a/", "a/+/b", "a/#", "a\0b"] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic_name("a//b")
            .unwrap_err()
            .contains("empty level"));
    }

    #[test]
    fn topic_filters() {
        for good in ["#", "a/#", "a/+/b", "+", "clients/%u/#", "%c/+", "a//b"] {
            assert!(check_topic_filter(good).is_ok(), "{good}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "#/a", "a\0"] {
            assert!(check_topic_filter(bad).is_err(), "{bad:?}");
        }
    }
}
