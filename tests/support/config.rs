//! Configurations for the daemon under test, built instead of written out: the preamble every test
//! needs (`[gateway]` with an id, base topic `sensorgate` and the test's state directory, one broker
//! listener on the port the kernel chooses) and the tables a test adds, as TOML text with the
//! `{state_dir}` and `{port}` placeholders that [`crate::daemon::Daemon::start`] fills.
//!
//! ```no_run
//! # use sensorgate_testkit::config::ConfigBuilder;
//! # use sensorgate_testkit::daemon::Daemon;
//! # let dir = tempfile::tempdir().unwrap();
//! # let link = dir.path().join("usb-if00");
//! let config = ConfigBuilder::new("test-gw")
//!     .publish("stats_interval = \"1s\"")
//!     .serial("uart0", &link, "framing = \"cobs\"\npayload = \"lpp\"")
//!     .device("kitchen", "uart0", "7")
//!     .toml();
//! let daemon = Daemon::start(dir.path(), &config);
//! ```
//!
//! Keys are given as TOML lines (`key = value`, one per line), so a test says exactly what it sets;
//! the feature tables (`[http]`, `[lorawan]`, `[homeassistant]`), broker users, the sources the tests
//! run (serial, simulator, semtech-udp, ble replay, rtl_433) and devices each have a method; tables
//! not covered by one go in whole with [`ConfigBuilder::table`]. The demo's own file is at hand too,
//! made ready for the harness, for the tests that run what users run first ([`demo`]).

use std::fmt::Write as _;
use std::path::Path;

/// A daemon configuration under construction (see the module).
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    gateway: Vec<String>,
    broker: Vec<String>,
    listeners: Vec<String>,
    publish: Vec<String>,
    /// The feature tables (`[http]`, ...) in the order first given, each with its keys.
    features: Vec<(&'static str, Vec<String>)>,
    tables: Vec<String>,
}

impl ConfigBuilder {
    /// `[gateway]` with `id`, `base_topic = "sensorgate"` and `state_dir = "{state_dir}"`, and one
    /// `[[broker.listener]]` on `127.0.0.1:{port}`.
    pub fn new(id: &str) -> ConfigBuilder {
        ConfigBuilder {
            gateway: vec![
                format!("id = {id:?}"),
                "base_topic = \"sensorgate\"".into(),
                "state_dir = \"{state_dir}\"".into(),
            ],
            broker: Vec::new(),
            listeners: vec!["bind = \"127.0.0.1:{port}\"".into()],
            publish: Vec::new(),
            features: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// More `[gateway]` keys.
    pub fn gateway(mut self, keys: &str) -> ConfigBuilder {
        push_keys(&mut self.gateway, keys);
        self
    }

    /// `[broker]` keys (limits, `retained_sync`, anonymous rights...).
    pub fn broker(mut self, keys: &str) -> ConfigBuilder {
        push_keys(&mut self.broker, keys);
        self
    }

    /// More keys of the first listener (`127.0.0.1:{port}`), e.g. its `tls`.
    pub fn listener_keys(mut self, keys: &str) -> ConfigBuilder {
        self.listeners[0].push('\n');
        self.listeners[0].push_str(keys.trim());
        self
    }

    /// Another `[[broker.listener]]` with these keys; `bind = "127.0.0.1:0"` when they name no bind
    /// (its port is then `Daemon::listener(scheme, index)`).
    pub fn listener(mut self, keys: &str) -> ConfigBuilder {
        self.listeners.push(bound_by_the_kernel(keys));
        self
    }

    /// A `[[broker.user]]` named `name` with this password hash (`broker::hash_password`) and more keys
    /// (`read`, `write`, `http`...).
    pub fn user(self, name: &str, password_hash: &str, keys: &str) -> ConfigBuilder {
        self.table(&format!(
            "[[broker.user]]\nname = {name:?}\npassword_hash = {password_hash:?}\n{}",
            keys.trim()
        ))
    }

    /// `[publish]` keys.
    pub fn publish(mut self, keys: &str) -> ConfigBuilder {
        push_keys(&mut self.publish, keys);
        self
    }

    /// `[http]` keys; `bind = "127.0.0.1:0"` when they name no bind (the harness reads the page's
    /// port from the log or the ports file).
    pub fn http(self, keys: &str) -> ConfigBuilder {
        self.feature("[http]", keys)
    }

    /// `[lorawan]` keys (`region`, `net_id`...).
    pub fn lorawan(self, keys: &str) -> ConfigBuilder {
        self.feature("[lorawan]", keys)
    }

    /// `[homeassistant]` keys (`discovery = true`...).
    pub fn homeassistant(self, keys: &str) -> ConfigBuilder {
        self.feature("[homeassistant]", keys)
    }

    /// Adds `keys` to the feature table `header`, written after `[publish]`.
    fn feature(mut self, header: &'static str, keys: &str) -> ConfigBuilder {
        match self.features.iter_mut().find(|(h, _)| *h == header) {
            Some((_, table)) => push_keys(table, keys),
            None => {
                let mut table = Vec::new();
                push_keys(&mut table, keys);
                self.features.push((header, table));
            }
        }
        self
    }

    /// A `[[source]]` named `name` of `kind`, with more keys.
    pub fn source(self, name: &str, kind: &str, keys: &str) -> ConfigBuilder {
        let keys = keys.trim();
        self.table(&format!(
            "[[source]]\nname = {name:?}\nkind = {kind:?}\n{keys}"
        ))
    }

    /// A serial `[[source]]` on the pseudo-terminal (or any device) at `path`, with more keys.
    pub fn serial(self, name: &str, path: &Path, keys: &str) -> ConfigBuilder {
        self.source_at(name, "serial", ("path", path), keys)
    }

    /// A `kind = "semtech-udp"` `[[source]]` listening on `127.0.0.1:{udp_port}`, with more keys
    /// (`gateways`, `keepalive`...).
    pub fn semtech_udp(self, name: &str, udp_port: u16, keys: &str) -> ConfigBuilder {
        let bind = format!("bind = \"127.0.0.1:{udp_port}\"\n{}", keys.trim());
        self.source(name, "semtech-udp", &bind)
    }

    /// A `kind = "ble"` `[[source]]` replaying the HCI capture at `replay`, with more keys.
    pub fn ble_replay(self, name: &str, replay: &Path, keys: &str) -> ConfigBuilder {
        self.source_at(name, "ble", ("hci_replay", replay), keys)
    }

    /// A `kind = "rtl_433"` `[[source]]` running `command`, with more keys.
    pub fn rtl_433(self, name: &str, command: &Path, keys: &str) -> ConfigBuilder {
        self.source_at(name, "rtl_433", ("command", command), keys)
    }

    /// A `[[source]]` whose `file` key (its device, capture or program) names a path, with more keys.
    fn source_at(self, name: &str, kind: &str, file: (&str, &Path), keys: &str) -> ConfigBuilder {
        let (key, path) = file;
        let path = path.display().to_string();
        self.source(name, kind, &format!("{key} = {path:?}\n{}", keys.trim()))
    }

    /// A `[[device]]` of `source` at `address`.
    pub fn device(self, name: &str, source: &str, address: &str) -> ConfigBuilder {
        self.device_keys(name, source, &format!("address = {address:?}"))
    }

    /// A `[[device]]` of `source` with these keys (an address, LoRaWAN identities and keys, a codec...).
    pub fn device_keys(self, name: &str, source: &str, keys: &str) -> ConfigBuilder {
        self.table(&format!(
            "[[device]]\nname = {name:?}\nsource = {source:?}\n{}",
            keys.trim()
        ))
    }

    /// Any table (or tables) as written, appended after everything else.
    pub fn table(mut self, toml: &str) -> ConfigBuilder {
        self.tables.push(toml.trim().to_string());
        self
    }

    /// The configuration's text with `{state_dir}` and `{port}` filled, for a test that writes the file
    /// itself (check-config, or `run` outside the harness).
    pub fn toml_at(&self, state_dir: &Path, port: u16) -> String {
        self.toml()
            .replace("{state_dir}", &state_dir.display().to_string())
            .replace("{port}", &port.to_string())
    }

    /// The configuration's text, placeholders left for the harness.
    pub fn toml(&self) -> String {
        let mut text = String::new();
        let mut section = |header: &str, keys: &[String]| {
            if !keys.is_empty() {
                let _ = writeln!(text, "{header}\n{}\n", keys.join("\n"));
            }
        };
        section("[gateway]", &self.gateway);
        section("[broker]", &self.broker);
        for listener in &self.listeners {
            section("[[broker.listener]]", std::slice::from_ref(listener));
        }
        section("[publish]", &self.publish);
        for (header, keys) in &self.features {
            if *header == "[http]" {
                section(header, &[bound_by_the_kernel(&keys.join("\n"))]);
            } else {
                section(header, keys);
            }
        }
        for table in &self.tables {
            let _ = writeln!(text, "{table}\n");
        }
        text
    }
}

/// `config/demo.toml` as it ships, ready for [`crate::daemon::Daemon::start`] once written with
/// `toml::to_string`: `state_dir = "{state_dir}"`, one broker listener on `127.0.0.1:{port}` in place
/// of the demo's (its other `[broker]` keys kept), the `[http]` page on a port the kernel chooses, and
/// the codec paths (relative to `config/`) absolute. A test changes what it needs before writing it.
pub fn demo() -> toml::Table {
    let text = include_str!("../../config/demo.toml");
    let mut config: toml::Table = text.parse().expect("config/demo.toml parses");
    table(&mut config, "gateway").insert("state_dir".into(), "{state_dir}".into());
    let mut listener = toml::Table::new();
    listener.insert("bind".into(), "127.0.0.1:{port}".into());
    let listeners = vec![toml::Value::from(listener)];
    table(&mut config, "broker").insert("listener".into(), listeners.into());
    table(&mut config, "http").insert("bind".into(), "127.0.0.1:0".into());
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let sources = config
        .get_mut("source")
        .and_then(toml::Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table_mut);
    for source in sources {
        if let Some(codec) = source.get("codec").and_then(toml::Value::as_str) {
            let path = config_dir.join(codec).display().to_string();
            source.insert("codec".into(), path.into());
        }
        // The LoRaWAN packet-forwarder port is the kernel's, as the listeners' are: tests run side
        // by side (its simulated forwarder sends to whatever port it got).
        if source.get("kind").and_then(toml::Value::as_str) == Some("semtech-udp") {
            source.insert("bind".into(), "127.0.0.1:0".into());
        }
    }
    config
}

/// The table `key` of `config`, made when it has none.
fn table<'a>(config: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    config
        .entry(key)
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .unwrap_or_else(|| panic!("[{key}] in the demo is a table"))
}

/// A listener's or the page's keys, with `bind = "127.0.0.1:0"` first when they name no bind.
fn bound_by_the_kernel(keys: &str) -> String {
    let keys = keys.trim();
    if keys.lines().any(|l| l.trim_start().starts_with("bind")) {
        keys.to_string()
    } else {
        format!("bind = \"127.0.0.1:0\"\n{keys}")
    }
}

/// Adds `keys` (trimmed) to a table's lines, unless there are none.
fn push_keys(table: &mut Vec<String>, keys: &str) {
    if !keys.trim().is_empty() {
        table.push(keys.trim().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preamble_and_tables_parse_as_the_daemon_reads_them() {
        let text = ConfigBuilder::new("test-gw")
            .broker("retained_sync = \"1s\"")
            .listener("transport = \"websocket\"")
            .publish("stats_interval = \"1s\"")
            .serial("uart0", Path::new("/dev/ttyX"), "payload = \"json\"")
            .device("kitchen", "uart0", "7")
            .toml_at(Path::new("/tmp/state"), 0);
        let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(table["gateway"]["id"].as_str(), Some("test-gw"));
        assert_eq!(table["gateway"]["state_dir"].as_str(), Some("/tmp/state"));
        assert_eq!(table["broker"]["retained_sync"].as_str(), Some("1s"));
        let listeners = table["broker"]["listener"].as_array().unwrap();
        assert_eq!(listeners.len(), 2);
        assert_eq!(listeners[1]["bind"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(table["source"][0]["path"].as_str(), Some("/dev/ttyX"));
        assert_eq!(table["device"][0]["address"].as_str(), Some("7"));
        let config = sensorgate::config::Config::parse(&text, Path::new("test.toml"));
        assert!(config.is_ok(), "{:?}\n{text}", config.err());
    }

    #[test]
    fn feature_tables_users_and_sources_land_where_the_daemon_reads_them() {
        let text = ConfigBuilder::new("test-gw")
            .http("anonymous = \"read\"")
            .lorawan("region = \"EU868\"")
            .homeassistant("discovery = true")
            .http("max_clients = 4")
            .user("alice", "$argon2id$x", "http = \"read\"")
            .semtech_udp("lns", 1700, "gateways = [\"aa555a0000000001\"]")
            .ble_replay(
                "air",
                Path::new("/tmp/capture.hci"),
                "replay_interval = \"20ms\"",
            )
            .rtl_433("rf", Path::new("/usr/bin/rtl_433"), "usb_reset = false")
            .device_keys("door", "lns", "dev_eui = \"70b3d57ed0000001\"")
            .toml();
        let table: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(table["http"]["bind"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(table["http"]["anonymous"].as_str(), Some("read"));
        assert_eq!(table["http"]["max_clients"].as_integer(), Some(4));
        assert_eq!(table["lorawan"]["region"].as_str(), Some("EU868"));
        assert_eq!(table["homeassistant"]["discovery"].as_bool(), Some(true));
        let user = &table["broker"]["user"][0];
        assert_eq!(user["name"].as_str(), Some("alice"));
        assert_eq!(user["password_hash"].as_str(), Some("$argon2id$x"));
        assert_eq!(user["http"].as_str(), Some("read"));
        let sources = table["source"].as_array().unwrap();
        let kinds: Vec<_> = sources.iter().map(|s| s["kind"].as_str()).collect();
        assert_eq!(kinds, [Some("semtech-udp"), Some("ble"), Some("rtl_433")]);
        assert_eq!(sources[0]["bind"].as_str(), Some("127.0.0.1:1700"));
        assert_eq!(sources[1]["hci_replay"].as_str(), Some("/tmp/capture.hci"));
        assert_eq!(sources[2]["command"].as_str(), Some("/usr/bin/rtl_433"));
        assert_eq!(
            table["device"][0]["dev_eui"].as_str(),
            Some("70b3d57ed0000001")
        );
    }

    #[test]
    fn the_demo_is_ready_for_the_harness_and_still_the_demo() {
        let demo = demo();
        assert_eq!(demo["gateway"]["state_dir"].as_str(), Some("{state_dir}"));
        let listeners = demo["broker"]["listener"].as_array().unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0]["bind"].as_str(), Some("127.0.0.1:{port}"));
        assert!(demo["broker"].get("anonymous_write").is_some(), "{demo:?}");
        assert_eq!(demo["http"]["bind"].as_str(), Some("127.0.0.1:0"));
        let codecs: Vec<&str> = demo["source"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|source| source.get("codec")?.as_str())
            .collect();
        assert!(!codecs.is_empty(), "the demo has a codec source");
        for codec in codecs {
            assert!(Path::new(codec).is_file(), "{codec}");
        }
        let text = toml::to_string(&demo)
            .unwrap()
            .replace("{state_dir}", "/tmp/state")
            .replace("{port}", "0");
        match sensorgate::config::Config::parse(&text, Path::new("demo.toml")) {
            Ok(_) => {}
            // The kit alone (`cargo test -p sensorgate-testkit`) builds sensorgate without its
            // default features, which refuses the demo's status page and codecs by naming the
            // feature to build with; any other refusal is the demo's or the harness's fault.
            Err(refusal) if refusal.to_string().contains("--features") => {}
            Err(refusal) => panic!("{refusal}\n{text}"),
        }
    }
}
