//! The checks that run after the tree is deserialised: values that relate to each other (unique names, a
//! `[[device]]` naming an existing `[[source]]`, TLS files in pairs, `mqtt://` only with
//! `allow_plaintext`), the ranges of `limits.rs` applied at their keys, topic names and filters (and no
//! gateway topic starting with `$`), password hashes, and the uplink's own forward-rule validator mapped
//! onto `[[upstream.forward]]`. Each check reports a [`Problem`] at the key path at fault; this module never
//! reads files and never changes the tree.

use std::collections::HashMap;
use std::time::Duration;

use super::limits::{self, CountRange, DurationRange, SizeRange};
use super::locate::{KeyPath, Locator, Part};
use super::{BrokerConfig, Config, ForwardRule, UpstreamConfig, UserConfig};
use crate::topic::{self, TopicError};
use crate::uplink::SpoolSettings;

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

/// Checks an MQTT topic name as the gateway publishes it: MQTT's grammar ([`crate::topic::check_name`]:
/// not empty, no `+`, `#` or NUL, at most 65535 bytes) and, the gateway's own rule, no empty levels
/// (`a//b`, a leading or trailing `/`). The error says what is wrong.
pub fn check_topic_name(topic: &str) -> Result<(), String> {
    topic::check_name(topic, usize::MAX).map_err(|error| match error {
        TopicError::Empty => error.to_string(),
        TopicError::Nul => format!("\"{}\" contains NUL", topic.escape_debug()),
        other => format!("\"{topic}\" {other}"),
    })?;
    if topic::has_empty_level(topic) {
        return Err(format!(
            "\"{topic}\" has an empty level (\"//\", or a leading or trailing '/'); write e.g. \"home/sensors\""
        ));
    }
    Ok(())
}

/// Checks an MQTT topic filter ([`crate::topic::check_filter`]): not empty, no NUL, `+` and `#` only as
/// whole levels, `#` only last. `%u` (user name) and `%c` (client id) are plain characters here.
pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    topic::check_filter(filter, usize::MAX).map_err(|error| match error {
        TopicError::Empty => "is empty; e.g. \"sensorgate/#\"".to_string(),
        TopicError::Nul => format!("\"{}\" contains NUL", filter.escape_debug()),
        other => format!("\"{filter}\": {other}"),
    })
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

/// A duration key against its documented range (`limits.rs`).
pub(super) fn check_duration(
    range: &DurationRange,
    value: Duration,
    path: KeyPath,
) -> Result<(), Problem> {
    limits::check_duration(range, value).map_err(|message| Problem::value(path, message))
}

fn check_size(range: &SizeRange, value: u64, path: KeyPath) -> Result<(), Problem> {
    limits::check_size(range, value).map_err(|message| Problem::value(path, message))
}

fn check_count(range: &CountRange, value: u64, path: KeyPath) -> Result<(), Problem> {
    limits::check_count(range, value).map_err(|message| Problem::value(path, message))
}

/// A topic the gateway publishes under (`base_topic`, a device name, a will topic): a valid topic name,
/// not starting with `$` (the broker's own namespace, `$SYS`, where clients cannot publish), and with
/// `below` more levels under it still within `max_topic_levels`.
fn check_gateway_topic(
    topic: &str,
    below: usize,
    max_topic_levels: usize,
    example: &str,
) -> Result<(), String> {
    check_topic_name(topic)?;
    if let Some(c) = topic.chars().find(|c| c.is_control()) {
        return Err(format!(
            "\"{}\" contains the control character {:?}, which does not belong in a topic; write e.g. \"{example}\"",
            topic.escape_debug(),
            c
        ));
    }
    if topic.starts_with('$') {
        return Err(format!(
            "\"{topic}\" starts with '$': topics starting with '$' belong to the broker ($SYS) and nothing can be published under them; write e.g. \"{example}\""
        ));
    }
    let levels = topic.split('/').count();
    if levels + below > max_topic_levels {
        let under = if below == 0 {
            String::new()
        } else {
            format!(" (plus {below} for the gateway's topics under it)")
        };
        return Err(format!(
            "\"{topic}\" has {levels} levels{under}, more than [broker] max_topic_levels = {max_topic_levels}; write fewer levels or raise max_topic_levels"
        ));
    }
    Ok(())
}

/// The line of a path's value, for "already used on line N" messages.
fn line_of(locator: &Locator<'_>, path: &KeyPath) -> usize {
    locator.position(path, Part::Value).0
}

/// Runs every cross-field check, mostly in the order of the file's sections; the first problem wins.
pub fn validate(config: &Config, locator: &Locator<'_>) -> Result<(), Problem> {
    let root = KeyPath::root();
    // [broker] first: base_topic's depth is checked against its max_topic_levels, once that is valid.
    check_broker(config, locator, &root.key("broker"))?;
    check_gateway(config, &root.key("gateway"))?;
    check_qos(config.publish.qos, root.key("publish").key("qos"))?;
    check_duration(
        &limits::STATS_INTERVAL,
        config.publish.stats_interval,
        root.key("publish").key("stats_interval"),
    )?;
    check_sources(config, locator)?;
    check_duration(
        &limits::OFFLINE_AFTER,
        config.devices.offline_after,
        root.key("devices").key("offline_after"),
    )?;
    check_duration(
        &limits::DEDUP_WINDOW,
        config.devices.dedup_window,
        root.key("devices").key("dedup_window"),
    )?;
    check_lorawan(config)?;
    check_simulated_lorawan_devices(config)?;
    check_devices(config, locator)?;
    check_homeassistant(config)?;
    check_http(config, &root.key("http"))?;
    check_upstream(config, &root.key("upstream"))
}

/// `[http]`: the feature's own rules, at the key they name.
fn check_http(config: &Config, at: &KeyPath) -> Result<(), Problem> {
    let Some(http) = &config.http else {
        return Ok(());
    };
    if !cfg!(feature = "http") {
        return Err(Problem::key(
            at.clone(),
            "this sensorgate was built without the status page: rebuild with `--features http`, or \
             remove the [http] section",
        ));
    }
    let users_with_right = config
        .broker
        .users
        .iter()
        .filter(|u| u.http.is_some())
        .count();
    http.check(users_with_right)
        .map_err(|problem| Problem::value(at.key(problem.key), problem.message))
}

fn check_gateway(config: &Config, at: &KeyPath) -> Result<(), Problem> {
    let id = &config.gateway.id;
    if id.is_empty() || id.contains(['/', '+', '#', '\0']) {
        return Err(Problem::value(
            at.key("id"),
            format!("\"{id}\" is not a gateway id; use one word without '/', '+' or '#', e.g. \"garden-pi\""),
        ));
    }
    // The deepest topic the gateway builds is {base}/{device}/{field}: two levels below the base.
    let max_levels = config.broker.max_topic_levels;
    check_gateway_topic(&config.gateway.base_topic, 2, max_levels, "sensorgate")
        .map_err(|message| Problem::value(at.key("base_topic"), message))?;
    if config.gateway.state_dir.as_os_str().is_empty() {
        return Err(Problem::value(
            at.key("state_dir"),
            "is empty; e.g. \"/var/lib/sensorgate\"",
        ));
    }
    check_count(
        &limits::WORKER_THREADS,
        config.gateway.worker_threads as u64,
        at.key("worker_threads"),
    )
}

/// `[broker]`: its listeners, its limits against `limits.rs`, then its users.
fn check_broker(config: &Config, locator: &Locator<'_>, at: &KeyPath) -> Result<(), Problem> {
    let broker = &config.broker;
    check_listeners(broker, locator, at)?;
    check_broker_limits(broker, at)?;
    check_users(broker, locator, at)
}

/// At least one `[[broker.listener]]`, no bind address twice, TLS file paths not empty, and a WebSocket
/// `path` that a request can name.
fn check_listeners(
    broker: &BrokerConfig,
    locator: &Locator<'_>,
    at: &KeyPath,
) -> Result<(), Problem> {
    if broker.listeners.is_empty() {
        return Err(Problem::value(
            at.key("listener"),
            "no listener; add a [[broker.listener]] with bind = \"127.0.0.1:1883\"",
        ));
    }
    let mut binds = HashMap::new();
    for (i, listener) in broker.listeners.iter().enumerate() {
        let path = at.key("listener").index(i);
        // Port 0 is the kernel's choice, a different port for each listener (the ports file says which).
        let fixed = listener.bind.port() != 0;
        if let Some(first) = binds.insert(listener.bind, i).filter(|_| fixed) {
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
        if let Some(ws_path) = &listener.path {
            check_websocket_path(ws_path)
                .map_err(|message| Problem::value(path.key("path"), message))?;
        }
    }
    Ok(())
}

/// Checks a WebSocket listener's `path`: the path part of a request line, which the upgrade compares
/// exactly, so it starts with '/' and holds no query (`?`), fragment (`#`), space or control character.
/// `"mqtt"` or `""` would refuse every upgrade.
pub fn check_websocket_path(ws_path: &str) -> Result<(), String> {
    let fix = "write the path clients use, starting with '/', e.g. \"/mqtt\"";
    if ws_path.is_empty() {
        return Err(format!("is empty; {fix}"));
    }
    if !ws_path.starts_with('/') {
        return Err(format!(
            "\"{}\" does not start with '/', so no request can name it; {fix}",
            ws_path.escape_debug()
        ));
    }
    if let Some(bad) = ws_path
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "\"{}\" contains {bad:?}, which no request path holds; {fix}",
            ws_path.escape_debug()
        ));
    }
    Ok(())
}

/// The broker's counts, packet size and durations against their documented ranges.
fn check_broker_limits(broker: &BrokerConfig, at: &KeyPath) -> Result<(), Problem> {
    let counts = [
        (&limits::MAX_CONNECTIONS, broker.max_connections as u64),
        (&limits::BROKER_MAX_INFLIGHT, u64::from(broker.max_inflight)),
        (
            &limits::MAX_QUEUED_MESSAGES,
            broker.max_queued_messages as u64,
        ),
        (&limits::MAX_TOPIC_LEVELS, broker.max_topic_levels as u64),
        (
            &limits::MAX_RETAINED_MESSAGES,
            broker.max_retained_messages as u64,
        ),
        (
            &limits::MAX_OFFLINE_SESSIONS,
            broker.max_offline_sessions as u64,
        ),
    ];
    for (range, value) in counts {
        check_count(range, value, key_path(range.key))?;
    }
    check_size(
        &limits::MAX_PACKET_SIZE,
        broker.max_packet_size,
        at.key("max_packet_size"),
    )?;
    for (range, value) in [
        (&limits::HANDSHAKE_TIMEOUT, broker.handshake_timeout),
        (&limits::SESSION_EXPIRY, broker.session_expiry),
        (
            &limits::ANONYMOUS_SESSION_EXPIRY,
            broker.anonymous_session_expiry,
        ),
        (&limits::RETAINED_SYNC, broker.retained_sync),
    ] {
        check_duration(range, value, key_path(range.key))?;
    }
    Ok(())
}

/// Every `[[broker.user]]`: a name, used once, then its password hash and ACL filters.
fn check_users(broker: &BrokerConfig, locator: &Locator<'_>, at: &KeyPath) -> Result<(), Problem> {
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
        check_user_credentials(user, &path)?;
    }
    Ok(())
}

/// One user's password hash, as the broker checks it at start, and its `read`/`write` filters.
fn check_user_credentials(user: &UserConfig, path: &KeyPath) -> Result<(), Problem> {
    // The broker's own check (format and cost maxima), as the broker runs it at start.
    if let Err(error) = crate::broker::password::check_hash(&user.password_hash) {
        return Err(Problem::value(
            path.key("password_hash"),
            format!("{error}; run `sensorgate hash-password`, type the password, and paste the line it prints"),
        ));
    }
    for (key, filters) in [("read", &user.read), ("write", &user.write)] {
        for (j, filter) in filters.iter().enumerate() {
            check_topic_filter(filter)
                .map_err(|message| Problem::value(path.key(key).index(j), message))?;
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
    for (i, source) in config.sources.iter().enumerate() {
        check_lorawan_radio(config, source, &KeyPath::root().key("source").index(i))?;
    }
    Ok(())
}

/// A radio with `payload = "lorawan"` forwards to one semtech-udp source: the one `forward_to` names, or
/// the only one there is.
fn check_lorawan_radio(
    config: &Config,
    source: &super::SourceConfig,
    at: &KeyPath,
) -> Result<(), Problem> {
    let super::SourceKind::Radio(super::RadioConfig {
        lorawan: Some(forwarding),
        ..
    }) = &source.kind
    else {
        return Ok(());
    };
    if config.lorawan_server_of(source).is_some() {
        return Ok(());
    }
    let servers: Vec<String> = config
        .sources
        .iter()
        .filter(|s| matches!(s.kind, super::SourceKind::SemtechUdp(_)))
        .map(|s| format!("\"{}\"", s.name))
        .collect();
    if let Some(name) = &forwarding.forward_to {
        let known = if servers.is_empty() {
            "there is none; add one".to_string()
        } else {
            format!("write one of {}", servers.join(", "))
        };
        return Err(Problem::value(
            at.key("forward_to"),
            format!("\"{name}\" is not a [[source]] with kind = \"semtech-udp\"; {known}"),
        ));
    }
    let message = if servers.is_empty() {
        "payload = \"lorawan\" forwards the radio's frames to the network server of a semtech-udp source, \
         and there is none; add one, e.g. [[source]] name = \"lns\" kind = \"semtech-udp\" \
         bind = \"127.0.0.1:1700\" gateways = [\"any\"], with a [lorawan] table"
            .to_string()
    } else {
        format!(
            "there are several semtech-udp sources ({}); say which one the radio forwards to, e.g. forward_to = {}",
            servers.join(", "),
            servers[0]
        )
    };
    Err(Problem::value(at.key("payload"), message))
}

fn check_devices(config: &Config, locator: &Locator<'_>) -> Result<(), Problem> {
    let mut names = HashMap::new();
    let mut addresses = HashMap::new();
    for (i, device) in config.device.iter().enumerate() {
        let path = KeyPath::root().key("device").index(i);
        let max_levels = config.broker.max_topic_levels;
        check_device_name(config, locator, i, &mut names)?;
        check_device_source(config, &device.source, &path)?;
        if device.deliver.is_some() {
            check_device_command_key(config, locator, device, &path, "deliver")?;
        }
        if device.raw_commands {
            check_device_command_key(config, locator, device, &path, "raw_commands")?;
        }
        check_lorawan_device(config, locator, device, &path)?;
        for (key, written) in [
            ("downlink_fport", device.downlink_fport.is_some()),
            ("downlink_confirmed", device.downlink_confirmed.is_some()),
        ] {
            if written {
                check_device_command_key(config, locator, device, &path, key)?;
            }
        }
        if device.address.is_empty() {
            return Err(Problem::value(
                path.key("address"),
                "is empty; write the address its header or payload carries, e.g. \"17\"",
            ));
        }
        let source = config.sources.iter().find(|s| s.name == device.source);
        let on_ble = source.is_some_and(|s| matches!(s.kind, super::SourceKind::Ble(_)));
        if on_ble && crate::ble::Mac::parse(&device.address).is_none() {
            return Err(Problem::value(
                path.key("address"),
                format!(
                    "\"{}\" is not a Bluetooth MAC; write its six bytes, e.g. \"A4:C1:38:8D:18:B2\" (`{{base}}/gateway/heard` lists the sensors heard)",
                    device.address
                ),
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
        if let Some(key_file) = &device.key_file {
            check_device_key(config, device, key_file, &path)?;
        }
        if let Some(offline_after) = device.offline_after {
            check_duration(
                &limits::DEVICE_OFFLINE_AFTER,
                offline_after,
                path.key("offline_after"),
            )?;
        }
        if let Some(will) = &device.will {
            check_gateway_topic(&will.topic, 0, max_levels, "alarms/kitchen")
                .map_err(|message| Problem::value(path.key("will").key("topic"), message))?;
            check_qos(will.qos, path.key("will").key("qos"))?;
        }
    }
    Ok(())
}

/// A `[[device]]`'s name: one topic level, not `gateway`, and not the name of an earlier device
/// (`names`: the names so far, with their index).
fn check_device_name<'c>(
    config: &'c Config,
    locator: &Locator<'_>,
    i: usize,
    names: &mut HashMap<&'c str, usize>,
) -> Result<(), Problem> {
    let device = &config.device[i];
    let path = KeyPath::root().key("device").index(i);
    check_gateway_topic(&device.name, 0, config.broker.max_topic_levels, "kitchen")
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
    Ok(())
}

/// A `[[device]]`'s `source`: the name of a `[[source]]`, else the names there are.
fn check_device_source(config: &Config, source: &str, path: &KeyPath) -> Result<(), Problem> {
    if !config.sources.iter().any(|s| s.name == source) {
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
            format!("no [[source]] is named \"{}\"; {known}", source),
        ));
    }
    Ok(())
}

/// The LoRaWAN keys of a `[[device]]`, as `crate::lorawan::settings` checks them: only on a semtech-udp
/// source, where they are required (OTAA or ABP, and a decoder) and replace `address`.
fn check_lorawan_device(
    config: &Config,
    locator: &Locator<'_>,
    device: &super::DeviceConfig,
    path: &KeyPath,
) -> Result<(), Problem> {
    let keys = device.lorawan_keys();
    let source = config.sources.iter().find(|s| s.name == device.source);
    let Some(source) = source.and_then(|s| config.lorawan_server_of(s)) else {
        if let Some(key) = keys.first_written() {
            return Err(Problem::key(
                path.key(key),
                format!(
                    "`{key}` is a key of LoRaWAN devices, and the [[source]] \"{}\" is neither a semtech-udp source nor a radio with payload = \"lorawan\"",
                    device.source
                ),
            ));
        }
        return Ok(());
    };
    let written: Vec<String> = locator.keys(path).into_iter().map(|(key, _)| key).collect();
    let checked = keys.check().map_err(|error| {
        let at = if written.iter().any(|k| k == error.key) {
            path.key(error.key)
        } else {
            path.clone()
        };
        Problem::value(at, error.message)
    })?;
    let on_own_radio = source.name != device.source;
    if checked.adr && on_own_radio {
        return Err(Problem::value(
            path.key("adr"),
            format!(
                "the radio \"{}\" is a single-channel gateway on one data rate, and ADR would move the device off it; remove adr (or write adr = false) and set the device's data rate on the device",
                device.source
            ),
        ));
    }
    if written.iter().any(|k| k == "deliver") {
        return Err(Problem::key(
            path.key("deliver"),
            "a LoRaWAN Class A device listens only in the receive windows after its uplinks, where its commands always go; remove deliver",
        ));
    }
    if written.iter().any(|k| k == "address") {
        return Err(Problem::key(
            path.key("address"),
            format!(
                "a LoRaWAN device is known by its dev_eui (OTAA) or dev_addr (ABP); remove address (it is \"{}\")",
                checked.address()
            ),
        ));
    }
    if config.lorawan.is_none() {
        return Err(Problem::value(
            path.key("source"),
            format!(
                "the semtech-udp source \"{}\" needs a [lorawan] table with the region, e.g. [lorawan] region = \"EU868\"",
                source.name
            ),
        ));
    }
    Ok(())
}

/// `[lorawan]`: its settings as the server checks them, and at most `max_devices` LoRaWAN devices.
fn check_lorawan(config: &Config) -> Result<(), Problem> {
    let at = KeyPath::root().key("lorawan");
    let Some(lorawan) = &config.lorawan else {
        return Ok(());
    };
    lorawan
        .server_settings()
        .map_err(|error| Problem::value(at.key(error.key), error.message))?;
    let devices = config
        .device
        .iter()
        .filter(|d| d.dev_eui.is_some() || d.dev_addr.is_some())
        .count();
    if devices > lorawan.max_devices() {
        return Err(Problem::value(
            at.clone(),
            format!(
                "{devices} LoRaWAN devices are configured, more than max_devices = {}; raise max_devices",
                lorawan.max_devices()
            ),
        ));
    }
    Ok(())
}

/// A semtech-udp source's `simulate`: each name a `[[device]]` of that source.
fn check_simulated_lorawan_devices(config: &Config) -> Result<(), Problem> {
    for (index, source) in config.sources.iter().enumerate() {
        let super::SourceKind::SemtechUdp(udp) = &source.kind else {
            continue;
        };
        for (position, name) in udp.simulate.iter().enumerate() {
            let of_source = config
                .device
                .iter()
                .any(|d| &d.name == name && d.source == source.name);
            if !of_source {
                let at = KeyPath::root()
                    .key("source")
                    .index(index)
                    .key("simulate")
                    .index(position);
                return Err(Problem::value(
                    at,
                    format!(
                        "no [[device]] \"{name}\" has source = \"{}\"; simulate names this source's LoRaWAN devices (with their own keys)",
                        source.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A `[[device]] deliver` (when that device gets its commands) or `raw_commands` (whether raw bytes may
/// reach it): its source must send commands.
fn check_device_command_key(
    config: &Config,
    locator: &Locator<'_>,
    device: &super::DeviceConfig,
    path: &KeyPath,
    key: &str,
) -> Result<(), Problem> {
    let Some((index, source)) = config
        .sources
        .iter()
        .enumerate()
        .find(|(_, s)| s.name == device.source)
    else {
        return Ok(()); // check_devices reported it.
    };
    if source.commands.is_some() {
        return Ok(());
    }
    let line = line_of(
        locator,
        &KeyPath::root().key("source").index(index).key("name"),
    );
    Err(Problem::key(
        path.key(key),
        format!(
            "[[source]] \"{}\" (line {line}) sends no commands, so {key} has nothing to apply to; write commands = true in that [[source]], or remove {key}",
            source.name
        ),
    ))
}

/// A `[[device]] key_file`: its source must be encrypted (which implies a header, checked with the
/// source), and the address must be one the header carries, since the key is chosen by the header's
/// address before anything is decrypted.
fn check_device_key(
    config: &Config,
    device: &super::DeviceConfig,
    key_file: &std::path::Path,
    path: &KeyPath,
) -> Result<(), Problem> {
    if key_file.as_os_str().is_empty() {
        return Err(Problem::value(
            path.key("key_file"),
            "is empty; write the path of a file holding the 32 hex digits of the key",
        ));
    }
    let Some(source) = config.sources.iter().find(|s| s.name == device.source) else {
        return Ok(());
    };
    // A Bluetooth LE device's bindkey: its adverts say themselves whether they are encrypted.
    if matches!(source.kind, super::SourceKind::Ble(_)) {
        return Ok(());
    }
    if source.encryption.is_none() {
        return Err(Problem::key(
            path.key("key_file"),
            format!(
                "the [[source]] \"{}\" is not encrypted; add encryption = \"aes-128-ccm\" to it, or remove this key_file",
                source.name
            ),
        ));
    }
    if matches!(source.kind, super::SourceKind::Simulator(_)) {
        return Err(Problem::key(
            path.key("key_file"),
            format!(
                "the [[source]] \"{}\" is a simulator, whose nodes all seal with the source's key_file; remove this key_file",
                source.name
            ),
        ));
    }
    if crate::crypto::guard::device_address(source.header, &device.address).is_none() {
        let range = match source.header {
            crate::decode::HeaderFormat::RadioHead => "0-255",
            _ => "0-65535",
        };
        return Err(Problem::value(
            path.key("address"),
            format!(
                "\"{}\" is not a {} address ({range}); a device with a key_file is named by its header's address, in decimal",
                device.address,
                source.header.name()
            ),
        ));
    }
    Ok(())
}

/// `[upstream]`, when present: the connection, each forward rule, the rules as the uplink checks them,
/// then the spool.
fn check_upstream(config: &Config, at: &KeyPath) -> Result<(), Problem> {
    let Some(upstream) = &config.upstream else {
        return Ok(());
    };
    check_upstream_connection(upstream, at)?;
    for (i, rule) in upstream.forward.iter().enumerate() {
        check_forward_rule(rule, &at.key("forward").index(i))?;
    }
    check_forward_rules_as_the_uplink_does(config, at)?;
    check_spool(&upstream.spool, &at.key("spool"))
}

/// The URL's encryption, the client id, certificate and key in pairs, a password only with a user name,
/// keep-alive and in-flight window against their ranges.
fn check_upstream_connection(upstream: &UpstreamConfig, at: &KeyPath) -> Result<(), Problem> {
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
    if upstream.password_file.is_some() && upstream.username.is_none() {
        return Err(Problem::value(
            at.key("password_file"),
            "a password needs its user name: add username, or remove password_file",
        ));
    }
    check_duration(
        &limits::KEEP_ALIVE,
        upstream.keep_alive,
        at.key("keep_alive"),
    )?;
    check_count(
        &limits::UPSTREAM_MAX_INFLIGHT,
        u64::from(upstream.max_inflight),
        at.key("max_inflight"),
    )
}

/// One `[[upstream.forward]]` at `path`: its filter, prefix, QoS and end-to-end encryption key.
fn check_forward_rule(rule: &ForwardRule, path: &KeyPath) -> Result<(), Problem> {
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
    if let Some(encrypt) = &rule.encrypt {
        if encrypt.key_file.as_os_str().is_empty() {
            return Err(Problem::value(
                path.key("encrypt").key("key_file"),
                "is empty; write the path of a file holding the 64 hex digits of the key",
            ));
        }
        if encrypt.key_id > 255 {
            return Err(Problem::value(
                path.key("encrypt").key("key_id"),
                format!("{} is not a key id; write 0-255", encrypt.key_id),
            ));
        }
    }
    Ok(())
}

/// `[upstream.spool]` at `at`: size, age and sync period against their ranges, and the segment size
/// within a quarter of the budget, as the spool clamps it.
fn check_spool(spool: &SpoolSettings, at: &KeyPath) -> Result<(), Problem> {
    check_size(
        &limits::SPOOL_MAX_BYTES,
        spool.max_bytes,
        at.key("max_bytes"),
    )?;
    check_duration(&limits::SPOOL_MAX_AGE, spool.max_age, at.key("max_age"))?;
    if let super::SyncPolicy::Every(period) = spool.sync {
        check_duration(&limits::SPOOL_SYNC, period, at.key("sync")).map_err(|mut problem| {
            problem.message.push_str(", or \"always\"");
            problem
        })?;
    }
    limits::check_size_within(
        &limits::SPOOL_SEGMENT_BYTES,
        spool.segment_bytes,
        limits::segment_bytes_max(spool.max_bytes),
    )
    .map_err(|message| {
        Problem::value(
            at.key("segment_bytes"),
            format!("{message} (at most a quarter of max_bytes, so dropping one segment never drops more than a quarter of the spool)"),
        )
    })?;
    Ok(())
}

/// The uplink's own check of the forward rules ([`crate::uplink::forward::Forwarder::new`]), its refusal
/// mapped onto the rule's key, so `check-config` refuses exactly what the uplink would at start.
fn check_forward_rules_as_the_uplink_does(config: &Config, at: &KeyPath) -> Result<(), Problem> {
    use crate::uplink::forward::{ForwardError, Forwarder};
    let Some(upstream) = &config.upstream else {
        return Ok(());
    };
    let rules = upstream
        .forward
        .iter()
        .map(|rule| crate::uplink::ForwardRule {
            filter: rule.filter.clone(),
            prefix: rule.prefix.clone(),
            qos: rule.qos,
        })
        .collect();
    match Forwarder::new(rules, &config.gateway.base_topic) {
        Ok(_) => Ok(()),
        Err(error) => {
            let (index, key) = match &error {
                ForwardError::Filter { index, .. } => (*index, "filter"),
                ForwardError::Prefix { index, .. } => (*index, "prefix"),
                ForwardError::Qos { index, .. } => (*index, "qos"),
            };
            Err(Problem::value(
                at.key("forward").index(index).key(key),
                error.to_string(),
            ))
        }
    }
}

/// `[homeassistant]` and the `homeassistant`/`fields` keys of each `[[device]]`: the prefix is a topic of
/// its own (not inside `base_topic`, where Home Assistant could not publish its birth message), and every
/// field override passes Home Assistant's rules as `crate::homeassistant::types` applies them (the
/// same function the discovery stage runs), so a config Home Assistant would refuse is refused here.
fn check_homeassistant(config: &Config) -> Result<(), Problem> {
    check_discovery_prefix(config)?;
    for (i, device) in config.device.iter().enumerate() {
        let Some(source) = config.sources.iter().find(|s| s.name == device.source) else {
            continue; // check_devices reported it.
        };
        let path = KeyPath::root().key("device").index(i).key("fields");
        for (field, over) in &device.fields {
            check_field_override(source, field, over, path.key(field))?;
        }
    }
    Ok(())
}

/// `[homeassistant] prefix`: a topic with room for discovery's four levels below it, apart from the
/// gateway's base topic.
fn check_discovery_prefix(config: &Config) -> Result<(), Problem> {
    let at = KeyPath::root().key("homeassistant");
    let prefix = &config.homeassistant.prefix;
    // {prefix}/{component}/{node_id}/{object_id}/config: four levels below the prefix.
    check_gateway_topic(prefix, 4, config.broker.max_topic_levels, "homeassistant")
        .map_err(|message| Problem::value(at.key("prefix"), message))?;
    let base = &config.gateway.base_topic;
    let inside =
        |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
    if inside(base, prefix) || inside(prefix, base) {
        return Err(Problem::value(
            at.key("prefix"),
            format!(
                "\"{prefix}\" overlaps [gateway] base_topic \"{base}\": Home Assistant publishes its birth message on {prefix}/status, which only the gateway may write under its base topic; write e.g. \"homeassistant\""
            ),
        ));
    }
    Ok(())
}

/// One `fields.<name>` override of a device on `source` at `at_field`: a named field, a switch only
/// where the source sends commands and its field fits a topic level, and what Home Assistant accepts.
fn check_field_override(
    source: &super::SourceConfig,
    field: &str,
    over: &crate::homeassistant::FieldOverride,
    at_field: KeyPath,
) -> Result<(), Problem> {
    if field.is_empty() {
        return Err(Problem::key(
            at_field,
            "an empty field name; write the field's name as the device sends it",
        ));
    }
    if over.component.as_deref() == Some("switch") {
        if source.commands.is_none() {
            return Err(Problem::value(
                        at_field.key("component"),
                        format!(
                            "a switch sends commands, and [[source]] \"{}\" has none; write commands = true in that [[source]], or another component",
                            source.name
                        ),
                    ));
        }
        if field.contains(['/', '+', '#']) || field.chars().any(char::is_control) {
            return Err(Problem::key(
                        at_field.clone(),
                        "a switch's field is a level of its command topic ({base}/{device}/set/{field}) and cannot hold '/', '+', '#' or control characters",
                    ));
        }
    }
    crate::homeassistant::types::resolve(
        source.payload,
        field,
        crate::homeassistant::ValueKind::Number,
        Some(over),
    )
    .map_err(|error| {
        let path = if over.gives(error.key) {
            at_field.key(error.key)
        } else {
            at_field.clone()
        };
        Problem::value(path, error.message)
    })?;
    Ok(())
}

/// The path of a dotted key of `limits.rs` without indexes (`broker.max_inflight`).
fn key_path(dotted: &str) -> KeyPath {
    dotted
        .split('.')
        .fold(KeyPath::root(), |path, key| path.key(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_refused_by_a_build_without_the_page() {
        let text = "[gateway]\nstate_dir = \"/tmp\"\n\n[http]\nanonymous = \"read\"\n";
        let parsed = crate::config::Config::parse(text, std::path::Path::new("web.toml"));
        if cfg!(feature = "http") {
            assert!(parsed.is_ok(), "{parsed:?}");
        } else {
            let error = parsed.expect_err("[http] without the http feature");
            assert_eq!((error.line, error.column), (4, 2), "{error}");
            assert!(error.message.contains("--features http"), "{error}");
        }
    }

    #[test]
    fn worker_threads_outside_1_to_16_are_refused_where_written() {
        for (value, ok) in [("0", false), ("1", true), ("16", true), ("17", false)] {
            let text = format!("[gateway]\nstate_dir = \"/tmp\"\nworker_threads = {value}\n");
            let parsed = crate::config::Config::parse(&text, std::path::Path::new("t.toml"));
            if ok {
                assert!(parsed.is_ok(), "{value}: {parsed:?}");
            } else {
                let error = parsed.expect_err(value);
                assert_eq!(error.line, 3, "{value}: {error}");
                assert!(
                    error.message.contains("1") && error.message.contains("16"),
                    "{error}"
                );
            }
        }
    }

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

    #[test]
    fn websocket_paths() {
        for good in ["/", "/mqtt", "/ws/mqtt", "/a-b_c.d~e"] {
            assert!(check_websocket_path(good).is_ok(), "{good}");
        }
        for bad in ["", "mqtt", "ws/mqtt", "/mqtt?x=1", "/a#b", "/a b", "/a\tb"] {
            let message = check_websocket_path(bad).unwrap_err();
            assert!(message.contains("starting with '/'"), "{bad:?}: {message}");
        }
    }
}
