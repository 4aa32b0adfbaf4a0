//! Configurations for the daemon under test, built instead of written out: the preamble every test
//! needs (`[gateway]` with an id, base topic `sensorgate` and the test's state directory, one broker
//! listener on the port the kernel chooses) and the tables a test adds, as TOML text with the
//! `{state_dir}` and `{port}` placeholders that [`crate::daemon::Daemon::start`] fills.
//!
//! ```ignore
//! let config = ConfigBuilder::new("test-gw")
//!     .publish("stats_interval = \"1s\"")
//!     .serial("uart0", &link, "framing = \"cobs\"\npayload = \"lpp\"")
//!     .device("kitchen", "uart0", "7")
//!     .toml();
//! let daemon = Daemon::start(dir.path(), &config);
//! ```
//!
//! Keys are given as TOML lines (`key = value`, one per line), so a test says exactly what it sets;
//! tables not covered by a method go in whole with [`ConfigBuilder::table`].

use std::fmt::Write as _;
use std::path::Path;

/// A daemon configuration under construction (see the module).
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    gateway: Vec<String>,
    broker: Vec<String>,
    listeners: Vec<String>,
    publish: Vec<String>,
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
        let keys = keys.trim();
        let listener = if keys.lines().any(|l| l.trim_start().starts_with("bind")) {
            keys.to_string()
        } else {
            format!("bind = \"127.0.0.1:0\"\n{keys}")
        };
        self.listeners.push(listener);
        self
    }

    /// `[publish]` keys.
    pub fn publish(mut self, keys: &str) -> ConfigBuilder {
        push_keys(&mut self.publish, keys);
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
        let path = path.display().to_string();
        self.source(name, "serial", &format!("path = {path:?}\n{}", keys.trim()))
    }

    /// A `[[device]]` of `source` at `address`.
    pub fn device(self, name: &str, source: &str, address: &str) -> ConfigBuilder {
        self.table(&format!(
            "[[device]]\nname = {name:?}\nsource = {source:?}\naddress = {address:?}"
        ))
    }

    /// Any table (or tables) as written, appended after everything else.
    pub fn table(mut self, toml: &str) -> ConfigBuilder {
        self.tables.push(toml.trim().to_string());
        self
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
        for table in &self.tables {
            let _ = writeln!(text, "{table}\n");
        }
        text
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
            .toml()
            .replace("{state_dir}", "/tmp/state")
            .replace("{port}", "0");
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
}
