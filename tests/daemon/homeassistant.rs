//! Home Assistant discovery end to end: the real daemon with a pseudo-terminal as its serial dongle and a
//! simulated SX1276 radio, and a real MQTT client (rumqttc) on 127.0.0.1 subscribed to `#` that validates
//! every discovery config it receives against Home Assistant's schema for its platform ([`validate`],
//! written from Home Assistant's MQTT integration: `sensor.py`, `binary_sensor.py`, `device_tracker.py`,
//! `switch.py`, `number.py`, `mixins.py` (availability, device, origin), `discovery.py` (the topic pattern), and the device class
//! tables of `sensor/const.py` and `binary_sensor/__init__.py` as Home Assistant 2024.3.3 has them,
//! dumped into [`HA_TABLES`]). The lifecycle: first frame, new field, a radio device without a
//! `[[device]]` kept out, availability with the device's will and the gateway's, the birth message,
//! rename and override off on reload, removal from the configuration across a restart. The forgotten
//! device is the in-process test at the end (the registry forgets a device only beyond its 10,000-device
//! cap, which a daemon test would have to fill). Controls: an LPP node with a digital and an analog output
//! on a source with `commands = true` gets a `switch` and a `number`, and `ON` published on the switch's
//! command topic, as Home Assistant does, reaches the node on its serial port. Every wait is bounded.

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon;
use sensorgate_testkit::mqtt;
use sensorgate_testkit::pty;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use daemon::Daemon;
use pty::FakeDongle;
use serde_json::Value as Json;

const WAIT: Duration = Duration::from_secs(10);

/// `DEVICE_CLASS_UNITS`, `DEVICE_CLASS_STATE_CLASSES`, `SensorDeviceClass`, `SensorStateClass` and
/// `BinarySensorDeviceClass` of Home Assistant 2024.3.3, dumped with its own Python (`""` is `None`).
const HA_TABLES: &str = include_str!("homeassistant_tables.json");

/// Keys each platform's discovery schema knows (the common entity schema plus the platform's own).
const COMMON_KEYS: &[&str] = &[
    "name",
    "unique_id",
    "object_id",
    "icon",
    "entity_category",
    "enabled_by_default",
    "availability",
    "availability_mode",
    "availability_topic",
    "availability_template",
    "payload_available",
    "payload_not_available",
    "device",
    "origin",
    "json_attributes_topic",
    "json_attributes_template",
    "qos",
    "encoding",
];
const SENSOR_KEYS: &[&str] = &[
    "state_topic",
    "value_template",
    "device_class",
    "unit_of_measurement",
    "state_class",
    "expire_after",
    "force_update",
    "last_reset_value_template",
    "suggested_display_precision",
    "options",
];
const BINARY_SENSOR_KEYS: &[&str] = &[
    "state_topic",
    "value_template",
    "device_class",
    "expire_after",
    "force_update",
    "off_delay",
    "payload_on",
    "payload_off",
];
const DEVICE_TRACKER_KEYS: &[&str] = &[
    "state_topic",
    "value_template",
    "payload_home",
    "payload_not_home",
    "payload_reset",
    "source_type",
];

const SWITCH_KEYS: &[&str] = &[
    "state_topic",
    "value_template",
    "command_topic",
    "command_template",
    "device_class",
    "optimistic",
    "payload_on",
    "payload_off",
    "state_on",
    "state_off",
    "retain",
];
const NUMBER_KEYS: &[&str] = &[
    "state_topic",
    "value_template",
    "command_topic",
    "command_template",
    "device_class",
    "unit_of_measurement",
    "optimistic",
    "min",
    "max",
    "step",
    "mode",
    "payload_reset",
    "retain",
];

fn tables() -> Json {
    serde_json::from_str(HA_TABLES).expect("tables are JSON")
}

fn strings(value: &Json) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Home Assistant's rules for one discovery config on `topic`; the error says which.
fn validate(prefix: &str, topic: &str, config: &Json) -> Result<(), String> {
    let tables = tables();
    // discovery.py: {prefix}/{component}/[{node_id}/]{object_id}/config, ids [a-zA-Z0-9_-]+.
    let rest = topic
        .strip_prefix(prefix)
        .and_then(|t| t.strip_prefix('/'))
        .ok_or("not under the prefix")?;
    let levels: Vec<&str> = rest.split('/').collect();
    let id_ok = |id: &str| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if levels.len() != 4 || levels[3] != "config" || !id_ok(levels[1]) || !id_ok(levels[2]) {
        return Err(format!(
            "topic {topic} does not match the discovery pattern"
        ));
    }
    let component = levels[0];
    let own = match component {
        "sensor" => SENSOR_KEYS,
        "binary_sensor" => BINARY_SENSOR_KEYS,
        "device_tracker" => DEVICE_TRACKER_KEYS,
        "switch" => SWITCH_KEYS,
        "number" => NUMBER_KEYS,
        other => return Err(format!("unexpected component {other}")),
    };
    let object = config.as_object().ok_or("config is not a JSON object")?;
    for key in object.keys() {
        if !COMMON_KEYS.contains(&key.as_str()) && !own.contains(&key.as_str()) {
            return Err(format!("{component}: unknown key {key}"));
        }
    }
    let text = |key: &str| object.get(key).and_then(Json::as_str);
    for key in [
        "name",
        "unique_id",
        "state_topic",
        "command_topic",
        "value_template",
        "icon",
        "device_class",
        "unit_of_measurement",
    ] {
        if object.contains_key(key) && text(key).is_none() {
            return Err(format!("{key} is not a string"));
        }
    }
    if text("unique_id").is_none_or(str::is_empty) {
        return Err("no unique_id".into());
    }
    if let Some(icon) = text("icon") {
        if !icon.contains(':') {
            return Err(format!("icon {icon} is not prefix:name"));
        }
    }
    // Availability (mixins.py): a list of {topic, payload_available?, payload_not_available?}, exclusive
    // with availability_topic; availability_mode all | any | latest.
    if object.contains_key("availability") && object.contains_key("availability_topic") {
        return Err("availability and availability_topic together".into());
    }
    let availability = object
        .get("availability")
        .and_then(Json::as_array)
        .ok_or("no availability list")?;
    for entry in availability {
        let topic = entry
            .get("topic")
            .and_then(Json::as_str)
            .ok_or("availability entry without topic")?;
        if topic.is_empty() || topic.contains('\0') {
            return Err("availability topic invalid".into());
        }
        for key in entry.as_object().ok_or("entry not an object")?.keys() {
            if ![
                "topic",
                "payload_available",
                "payload_not_available",
                "value_template",
            ]
            .contains(&key.as_str())
            {
                return Err(format!("availability entry key {key}"));
            }
        }
    }
    if !matches!(text("availability_mode"), Some("all" | "any" | "latest")) {
        return Err("availability_mode is not all/any/latest".into());
    }
    // Device (mixins.py): at least one identifier or connection; strings only.
    let device = object.get("device").ok_or("no device block")?;
    if strings(&device["identifiers"]).is_empty() {
        return Err("device without identifiers".into());
    }
    for key in device.as_object().ok_or("device not an object")?.keys() {
        let known = [
            "identifiers",
            "connections",
            "manufacturer",
            "model",
            "name",
            "hw_version",
            "serial_number",
            "sw_version",
            "via_device",
            "suggested_area",
            "configuration_url",
        ];
        if !known.contains(&key.as_str()) {
            return Err(format!("device key {key}"));
        }
    }
    if let Some(origin) = object.get("origin") {
        if origin.get("name").and_then(Json::as_str).is_none() {
            return Err("origin without name".into());
        }
    }
    // entity_category: sensors and binary sensors may only be diagnostic; controls also config.
    if let Some(category) = object.get("entity_category") {
        let control = matches!(component, "switch" | "number");
        if category != "diagnostic" && !(control && category == "config") {
            return Err(format!("entity_category {category}"));
        }
    }
    // A control's command topic (mqtt/util.py valid_publish_topic): a topic name, no wildcards.
    if matches!(component, "switch" | "number") {
        let command = text("command_topic").ok_or(format!("{component} without command_topic"))?;
        if command.is_empty() || command.contains(['+', '#', '\0']) {
            return Err(format!(
                "command_topic {command:?} is not a topic to publish on"
            ));
        }
        if object.contains_key("retain") && !object["retain"].is_boolean() {
            return Err("retain is not a boolean".into());
        }
    }
    match component {
        "sensor" => {
            text("state_topic").ok_or("sensor without state_topic")?;
            let classes = strings(&tables["sensor_device_classes"]);
            let state_classes = strings(&tables["state_classes"]);
            let unit = text("unit_of_measurement");
            if let Some(state_class) = text("state_class") {
                if !state_classes.contains(&state_class.to_string()) {
                    return Err(format!("state_class {state_class}"));
                }
            }
            if let Some(class) = text("device_class") {
                if !classes.contains(&class.to_string()) {
                    return Err(format!("sensor device_class {class}"));
                }
                if let Some(units) = tables["units"].get(class) {
                    let units = strings(units);
                    let given = unit.unwrap_or("");
                    if !units.contains(&given.to_string()) {
                        return Err(format!(
                            "unit {given:?} not valid for device_class {class}: {units:?}"
                        ));
                    }
                }
                if let (Some(state_class), Some(allowed)) = (
                    text("state_class"),
                    tables["state_classes_by_class"].get(class),
                ) {
                    if !strings(allowed).contains(&state_class.to_string()) {
                        return Err(format!(
                            "state_class {state_class} impossible with device_class {class}"
                        ));
                    }
                }
                if ["timestamp", "date", "enum"].contains(&class)
                    && (unit.is_some() || text("state_class").is_some())
                {
                    return Err(format!("{class} with a unit or state_class"));
                }
            }
        }
        "binary_sensor" => {
            text("state_topic").ok_or("binary_sensor without state_topic")?;
            if let Some(class) = text("device_class") {
                if !strings(&tables["binary_sensor_device_classes"]).contains(&class.to_string()) {
                    return Err(format!("binary_sensor device_class {class}"));
                }
            }
            let on = text("payload_on").unwrap_or("ON");
            let off = text("payload_off").unwrap_or("OFF");
            let template = text("value_template").unwrap_or("");
            if !template.contains(&format!("'{on}'")) || !template.contains(&format!("'{off}'")) {
                return Err(format!("template {template} does not render {on}/{off}"));
            }
        }
        "switch" => {
            // switch.py: device_class outlet | switch; the template renders state_on/state_off, which
            // default to payload_on/payload_off ("ON"/"OFF").
            if !matches!(text("device_class"), None | Some("outlet" | "switch")) {
                return Err("switch device_class".into());
            }
            let on = text("state_on").or(text("payload_on")).unwrap_or("ON");
            let off = text("state_off").or(text("payload_off")).unwrap_or("OFF");
            if let Some(template) = text("value_template") {
                if !template.contains(&format!("'{on}'")) || !template.contains(&format!("'{off}'"))
                {
                    return Err(format!("template {template} does not render {on}/{off}"));
                }
            }
        }
        "number" => {
            // number.py: min < max (defaults 1 and 100), step >= 0.001, mode auto | box | slider.
            let float = |key: &str, default: f64| match object.get(key) {
                None => Ok(default),
                Some(value) => value.as_f64().ok_or(format!("{key} is not a number")),
            };
            let (min, max, step) = (
                float("min", 1.0)?,
                float("max", 100.0)?,
                float("step", 1.0)?,
            );
            if min >= max {
                return Err(format!("min {min} is not below max {max}"));
            }
            if step < 1e-3 {
                return Err(format!("step {step} is below 0.001"));
            }
            if !matches!(text("mode"), None | Some("auto" | "box" | "slider")) {
                return Err("number mode".into());
            }
        }
        "device_tracker" => {
            if text("state_topic").is_none() && text("json_attributes_topic").is_none() {
                return Err("device_tracker without state_topic or json_attributes_topic".into());
            }
            if !matches!(
                text("source_type"),
                None | Some("gps" | "router" | "bluetooth" | "bluetooth_le")
            ) {
                return Err("source_type".into());
            }
        }
        _ => {}
    }
    Ok(())
}

/// The fields a template reads (`value_json['x']`).
fn template_fields(template: &str) -> Vec<String> {
    template
        .split("value_json['")
        .skip(1)
        .filter_map(|rest| rest.split_once("']").map(|(field, _)| field.to_string()))
        .collect()
}

/// What the subscriber has seen: the latest config per discovery topic (`None`: cleared), the latest
/// payload of every other topic, and every config message in arrival order.
#[derive(Default)]
struct Seen {
    configs: BTreeMap<String, Option<Json>>,
    topics: BTreeMap<String, String>,
    log: Vec<(Instant, String, bool)>,
    counts: BTreeMap<String, usize>,
    /// Bytes of every config message (topic and payload).
    config_bytes: usize,
}

struct Watch {
    sub: mqtt::Subscriber,
    seen: Seen,
    prefix: &'static str,
}

impl Watch {
    async fn new(addr: std::net::SocketAddr, id: &str, filter: &str) -> Watch {
        Watch {
            sub: mqtt::subscribe(addr, id, filter, 1).await,
            seen: Seen::default(),
            prefix: "homeassistant",
        }
    }

    fn take(&mut self, message: mqtt::Received) {
        *self.seen.counts.entry(message.topic.clone()).or_default() += 1;
        if message.topic.starts_with("homeassistant/") && message.topic.ends_with("/config") {
            self.seen.config_bytes += message.topic.len() + message.payload.len();
            let config = if message.payload.is_empty() {
                None
            } else {
                let config: Json =
                    serde_json::from_slice(&message.payload).expect("config is JSON");
                if let Err(error) = validate(self.prefix, &message.topic, &config) {
                    panic!(
                        "Home Assistant would refuse {}: {error}\n{config:#}",
                        message.topic
                    );
                }
                Some(config)
            };
            self.seen
                .log
                .push((Instant::now(), message.topic.clone(), config.is_some()));
            self.seen.configs.insert(message.topic, config);
        } else {
            let text = message.text();
            self.seen.topics.insert(message.topic, text);
        }
    }

    /// Takes messages until `done` holds; panics after `within`.
    async fn until(&mut self, what: &str, within: Duration, mut done: impl FnMut(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.seen) {
            match tokio::time::timeout_at(deadline, self.sub.rx.recv()).await {
                Ok(Some(message)) => self.take(message),
                _ => panic!(
                    "{what}: not seen within {within:?}; configs: {:#?}",
                    self.seen.configs.keys().collect::<Vec<_>>()
                ),
            }
        }
    }

    fn config(&self, topic: &str) -> &Json {
        match self.seen.configs.get(topic) {
            Some(Some(config)) => config,
            other => panic!("no config on {topic}: {other:?}"),
        }
    }

    /// Every live config whose device state is known reads only fields that state has.
    fn check_templates(&self) {
        for (topic, config) in &self.seen.configs {
            let Some(config) = config else { continue };
            let state_topic = config["state_topic"]
                .as_str()
                .or(config["json_attributes_topic"].as_str())
                .unwrap_or("");
            let Some(state) = self.seen.topics.get(state_topic) else {
                continue;
            };
            let Ok(state) = serde_json::from_str::<Json>(state) else {
                continue;
            };
            for key in ["value_template", "json_attributes_template"] {
                for field in template_fields(config[key].as_str().unwrap_or("")) {
                    assert!(
                        state.get(&field).is_some(),
                        "{topic} reads {field}, which {state_topic} lacks: {state}"
                    );
                }
            }
        }
    }
}

fn live(seen: &Seen, part: &str) -> usize {
    seen.configs
        .iter()
        .filter(|(topic, config)| topic.contains(part) && config.is_some())
        .count()
}

/// The configuration, its placeholders filled by `config`.
fn base_config() -> String {
    ConfigBuilder::new("ha-test")
        .publish(r#"stats_interval = "1s""#)
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
baud = 115200
framing = "lines"
payload = "json"

[[source]]
name = "lora"
kind = "sx1276"
backend = "simulator"
frequency = 868_100_000
spreading_factor = 7
bandwidth = 125_000
devices = 2
interval = "200ms"

[homeassistant]
discovery = true

[[device]]
name = "{kitchen}"
source = "uart0"
address = "17"
offline_after = "2s"
fields = { soil = { device_class = "moisture" } }
{devices}
"#,
        )
        .toml()
}

const GREENHOUSE: &str =
    "\n[[device]]\nname = \"greenhouse\"\nsource = \"lora\"\naddress = \"1\"\n";
const SHED_OFF: &str =
    "\n[[device]]\nname = \"shed\"\nsource = \"uart0\"\naddress = \"5\"\nhomeassistant = false\n";

fn config(dir: &Path, kitchen: &str, devices: &str) -> String {
    base_config()
        .replace("{link}", &dir.join("ttyUSB-ha").display().to_string())
        .replace("{kitchen}", kitchen)
        .replace("{devices}", devices)
}

const KITCHEN: &str = "homeassistant/sensor/sensorgate_ha-test_uart0_17";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_follows_devices_through_their_life() {
    let dir = tempfile::tempdir().unwrap();
    let mut dongle = FakeDongle::plug(&dir.path().join("ttyUSB-ha"));
    let daemon = Daemon::start(dir.path(), &config(dir.path(), "kitchen", GREENHOUSE));
    daemon.wait_for_log("open at 115200 baud", 1, WAIT);
    let mut watch = Watch::new(daemon.addr, "ha-watch", "#").await;

    // The gateway device and its diagnostic entities.
    watch
        .until("gateway entities", WAIT, |seen| {
            live(seen, "sensorgate_ha-test/") == 3
        })
        .await;
    let frames = watch
        .config("homeassistant/sensor/sensorgate_ha-test/frames/config")
        .clone();
    assert_eq!(frames["state_topic"], "sensorgate/gateway/stats");
    assert_eq!(frames["entity_category"], "diagnostic");

    // First frame: one device, typed entities, the device's and the gateway's availability.
    dongle
        .write(b"{\"id\":17,\"temperature\":21.5,\"soil\":30}\n")
        .await;
    watch
        .until("kitchen's first entities", WAIT, |seen| {
            live(seen, "_uart0_17/") == 3
        })
        .await;
    let temperature = watch
        .config(&format!("{KITCHEN}/temperature/config"))
        .clone();
    assert_eq!(
        (
            &temperature["device_class"],
            &temperature["unit_of_measurement"],
            &temperature["state_class"]
        ),
        (
            &Json::from("temperature"),
            &Json::from("°C"),
            &Json::from("measurement")
        )
    );
    assert_eq!(temperature["state_topic"], "sensorgate/kitchen");
    assert_eq!(
        temperature["unique_id"],
        "sensorgate_ha-test_uart0_17_temperature"
    );
    assert_eq!(
        temperature["availability"],
        serde_json::json!([{"topic": "sensorgate/kitchen/availability"}, {"topic": "sensorgate/gateway/availability"}])
    );
    assert_eq!(temperature["availability_mode"], "all");
    assert_eq!(temperature["device"]["name"], "kitchen");
    assert_eq!(temperature["device"]["via_device"], "sensorgate_ha-test");
    assert_eq!(temperature["device"]["model"], "JSON over serial");
    let soil = watch.config(&format!("{KITCHEN}/soil/config")).clone();
    assert_eq!(
        (&soil["device_class"], &soil["unit_of_measurement"]),
        (&Json::from("moisture"), &Json::from("%"))
    );
    let last_seen = watch.config(&format!("{KITCHEN}/last_seen/config")).clone();
    assert_eq!(
        (&last_seen["device_class"], &last_seen["entity_category"]),
        (&Json::from("timestamp"), &Json::from("diagnostic"))
    );

    // A new field: only its config is published.
    dongle.write(b"{\"id\":17,\"humidity\":40.5}\n").await;
    watch
        .until("kitchen's humidity", WAIT, |seen| {
            live(seen, "_uart0_17/") == 4
        })
        .await;
    assert_eq!(
        watch.seen.counts[&format!("{KITCHEN}/temperature/config")],
        1,
        "not published again"
    );

    // An unconfigured serial device is announced ("auto"), a boolean as a binary_sensor.
    dongle.write(b"{\"id\":5,\"door\":true}\n").await;
    watch
        .until("uart0-5's door", WAIT, |seen| live(seen, "_uart0_5/") == 2)
        .await;
    let door = watch
        .config("homeassistant/binary_sensor/sensorgate_ha-test_uart0_5/door/config")
        .clone();
    assert_eq!(door["device_class"], "door");

    // Radio: the named node is announced with its signal as diagnostics; the other is heard and kept out.
    watch
        .until("greenhouse's entities", WAIT, |seen| {
            live(seen, "_lora_1/") >= 6
        })
        .await;
    let rssi = watch
        .config("homeassistant/sensor/sensorgate_ha-test_lora_1/rssi/config")
        .clone();
    assert_eq!(
        (&rssi["device_class"], &rssi["unit_of_measurement"]),
        (&Json::from("signal_strength"), &Json::from("dBm"))
    );
    assert_eq!(rssi["device"]["model"], "Cayenne LPP over SX1276 LoRa");
    watch
        .until("lora-2 heard twice", WAIT, |seen| {
            seen.counts.get("sensorgate/lora-2").copied().unwrap_or(0) >= 2
        })
        .await;
    assert_eq!(
        live(&watch.seen, "_lora_2"),
        0,
        "an unnamed radio device reached Home Assistant"
    );

    // Availability flips with the device's will, on the topic the config names.
    watch
        .until("kitchen offline", WAIT, |seen| {
            seen.topics
                .get("sensorgate/kitchen/availability")
                .map(String::as_str)
                == Some("offline")
        })
        .await;
    watch.check_templates();

    // Home Assistant's birth message: every config again, spread over a few seconds.
    let before: usize = watch.seen.log.len();
    let live_now = watch.seen.configs.values().filter(|c| c.is_some()).count();
    let born = Instant::now();
    watch
        .sub
        .client
        .publish(
            "homeassistant/status",
            rumqttc::QoS::AtLeastOnce,
            false,
            "online",
        )
        .await
        .unwrap();
    watch
        .until("every config again", WAIT, |seen| {
            let again: BTreeSet<&String> = seen.log[before..]
                .iter()
                .filter(|(_, _, live)| *live)
                .map(|(_, t, _)| t)
                .collect();
            again.len() >= live_now
        })
        .await;
    let last = watch.seen.log.last().unwrap().0;
    assert!(
        last - born < Duration::from_secs(5),
        "re-publication took {:?}",
        last - born
    );
    println!(
        "birth: {live_now} configs re-published in {:?}",
        last - born
    );

    // Reload: kitchen renamed (same unique ids and config topics, new state topic, nothing cleared), and
    // uart0-5 switched off by an override (its configs cleared).
    std::fs::write(
        &daemon.config_path,
        config(dir.path(), "cuisine", &format!("{GREENHOUSE}{SHED_OFF}"))
            .replace("{port}", &daemon.addr.port().to_string())
            .replace(
                "{state_dir}",
                &dir.path().join("state").display().to_string(),
            ),
    )
    .unwrap();
    let mark = watch.seen.log.len();
    daemon.signal("HUP");
    watch
        .until("rename and override off", WAIT, |seen| {
            let renamed = seen
                .configs
                .iter()
                .filter(|(t, c)| {
                    t.contains("_uart0_17/")
                        && c.as_ref()
                            .is_some_and(|c| c["state_topic"] == "sensorgate/cuisine")
                })
                .count();
            renamed == 4 && live(seen, "_uart0_5/") == 0
        })
        .await;
    let cleared: Vec<&String> = watch.seen.log[mark..]
        .iter()
        .filter(|(_, _, live)| !live)
        .map(|(_, t, _)| t)
        .collect();
    assert!(
        cleared.iter().all(|t| t.contains("_uart0_5/")),
        "only the switched-off device is cleared: {cleared:?}"
    );
    assert_eq!(
        watch.config(&format!("{KITCHEN}/temperature/config"))["device"]["name"],
        "cuisine"
    );
    assert_eq!(
        watch.config(&format!("{KITCHEN}/temperature/config"))["unique_id"],
        "sensorgate_ha-test_uart0_17_temperature"
    );

    // The gateway's will: every entity lists the gateway's availability, which goes offline at a stop.
    let (status, _) = daemon.stop();
    assert!(status.success());
    watch
        .until("gateway offline", WAIT, |seen| {
            seen.topics
                .get("sensorgate/gateway/availability")
                .map(String::as_str)
                == Some("offline")
        })
        .await;
    drop(watch);

    // Restart without greenhouse's [[device]]: removed from Home Assistant before it is heard again.
    let state_file = dir.path().join("state").join("homeassistant.json");
    assert!(std::fs::read_to_string(&state_file)
        .unwrap()
        .contains("\"lora\""));
    let daemon = Daemon::start(dir.path(), &config(dir.path(), "cuisine", SHED_OFF));
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(&state_file)
        .unwrap_or_default()
        .contains("\"lora\"")
    {
        assert!(
            Instant::now() < deadline,
            "greenhouse still in the state file:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut retained = Watch::new(daemon.addr, "ha-retained", "homeassistant/#").await;
    retained
        .until("retained configs", WAIT, |seen| {
            live(seen, "_uart0_17/") == 4 && live(seen, "sensorgate_ha-test/") == 3
        })
        .await;
    // A probe published after the subscription: everything retained has arrived before it.
    retained
        .sub
        .client
        .publish("homeassistant/probe", rumqttc::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    retained
        .until("probe", WAIT, |seen| {
            seen.topics.contains_key("homeassistant/probe")
        })
        .await;
    assert_eq!(
        live(&retained.seen, "_lora_"),
        0,
        "greenhouse left a ghost: {:?}",
        retained.seen.configs.keys()
    );
    assert_eq!(live(&retained.seen, "_uart0_5/"), 0);
    let (status, _) = daemon.stop();
    assert!(status.success());
}

/// Anonymous clients may write `#` (the default), yet the gateway's discovery configs stay the
/// gateway's: a replaced `state_topic` and an entity made up under one of the gateway's node ids are
/// refused, while another integration's discovery config under the same prefix is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_replace_the_gateways_discovery_configs() {
    let dir = tempfile::tempdir().unwrap();
    let _dongle = FakeDongle::plug(&dir.path().join("ttyUSB-ha"));
    let daemon = Daemon::start(dir.path(), &config(dir.path(), "kitchen", ""));
    let mut watch = Watch::new(daemon.addr, "ha-attacker", "homeassistant/#").await;
    watch
        .until("gateway entities", WAIT, |seen| {
            live(seen, "sensorgate_ha-test/") == 3
        })
        .await;
    let frames_topic = "homeassistant/sensor/sensorgate_ha-test/frames/config";
    let mut forged = watch.config(frames_topic).clone();
    forged["state_topic"] = Json::from("attacker/frames");
    let made_up = "homeassistant/sensor/sensorgate_ha-test_uart0_99/door/config";
    let foreign = "homeassistant/sensor/zigbee_1/temperature/config";
    for topic in [frames_topic, made_up, foreign] {
        forged["unique_id"] = Json::from(topic.replace('/', "_"));
        watch
            .sub
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, forged.to_string())
            .await
            .unwrap();
    }
    // The last one comes back: the broker has taken the two before it (one connection, in order).
    watch
        .until("the foreign config", WAIT, |seen| {
            seen.configs.contains_key(foreign)
        })
        .await;
    drop(watch);

    // What a Home Assistant that connects now receives: the retained configs (streamed, so a live
    // message may overtake them: wait for the two that must be there), then a probe.
    let mut ha = Watch::new(daemon.addr, "ha-after", "homeassistant/#").await;
    ha.until("the retained configs", WAIT, |seen| {
        seen.configs.contains_key(foreign) && seen.configs.contains_key(frames_topic)
    })
    .await;
    ha.sub
        .client
        .publish("homeassistant/probe", rumqttc::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    ha.until("probe", WAIT, |seen| {
        seen.topics.contains_key("homeassistant/probe")
    })
    .await;
    assert_eq!(
        ha.config(foreign)["state_topic"],
        "attacker/frames",
        "another integration's discovery topic is writable"
    );
    assert_eq!(
        ha.config(frames_topic)["state_topic"],
        "sensorgate/gateway/stats",
        "the gateway's config was replaced"
    );
    assert!(
        !ha.seen.configs.contains_key(made_up),
        "an entity was made up under the gateway's node id"
    );
    let (status, _) = daemon.stop();
    assert!(status.success());
}

/// A Home Assistant stand-in that keeps running across the gateway's restart, as Home Assistant does: on
/// every connection it subscribes to `homeassistant/#` and then publishes its birth `online` on
/// `homeassistant/status`; when the broker goes away it reconnects with a backoff (250 ms doubling to
/// 2 s), but only while `reconnect` allows it, so that a test can hold it away until the restarted
/// gateway has published what it publishes at start.
struct HomeAssistant {
    rx: tokio::sync::mpsc::UnboundedReceiver<mqtt::Received>,
    reconnect: tokio::sync::watch::Sender<bool>,
    births: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// The latest config per discovery topic (`None`: removed).
    entities: BTreeMap<String, Option<Json>>,
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HomeAssistant {
    fn start(addr: std::net::SocketAddr) -> HomeAssistant {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        use std::sync::atomic::Ordering;
        let mut options = MqttOptions::new("home-assistant", "127.0.0.1", addr.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (reconnect, mut allowed) = tokio::sync::watch::channel(true);
        let births = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let born = births.clone();
        let task = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(250);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff = Duration::from_millis(250);
                        let _ = client.subscribe("homeassistant/#", QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = client
                            .publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
                            .await;
                        born.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send(mqtt::Received {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            qos: p.qos as u8,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if allowed.wait_for(|allowed| *allowed).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
        HomeAssistant {
            rx,
            reconnect,
            births,
            task,
            entities: BTreeMap::new(),
        }
    }

    /// Takes messages until `done` holds; panics after `within`.
    async fn until(
        &mut self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&BTreeMap<String, Option<Json>>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.entities) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) if message.topic.ends_with("/config") => {
                    let config = (!message.payload.is_empty())
                        .then(|| serde_json::from_slice(&message.payload).expect("config is JSON"));
                    self.entities.insert(message.topic, config);
                }
                Ok(Some(_)) => {}
                _ => panic!(
                    "{what}: not seen within {within:?}; live: {:#?}",
                    self.entities
                        .iter()
                        .filter(|(_, c)| c.is_some())
                        .map(|(t, _)| t)
                        .collect::<Vec<_>>()
                ),
            }
        }
    }
}

fn live_entities(entities: &BTreeMap<String, Option<Json>>, part: &str) -> usize {
    entities
        .iter()
        .filter(|(topic, config)| topic.contains(part) && config.is_some())
        .count()
}

/// Home Assistant keeps running while the gateway restarts with a device switched off: the removals
/// the gateway publishes at its start reach nobody (Home Assistant has not reconnected yet), so they go
/// out again after Home Assistant's birth, and the device's entities are removed on its side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_running_across_a_restart_sees_the_removals() {
    let dir = tempfile::tempdir().unwrap();
    let mut dongle = FakeDongle::plug(&dir.path().join("ttyUSB-ha"));
    let daemon = Daemon::start(dir.path(), &config(dir.path(), "kitchen", ""));
    daemon.wait_for_log("open at 115200 baud", 1, WAIT);
    let port = daemon.addr.port();
    let mut ha = HomeAssistant::start(daemon.addr);
    dongle
        .write(b"{\"id\":17,\"temperature\":21.5}\n{\"id\":5,\"door\":true}\n")
        .await;
    ha.until("kitchen's and shed's entities", WAIT, |e| {
        live_entities(e, "_uart0_17/") == 2 && live_entities(e, "_uart0_5/") == 2
    })
    .await;

    // The gateway restarts with the shed switched off; Home Assistant comes back only after the
    // restarted gateway has published its start messages (the removals among them).
    ha.reconnect.send_replace(false);
    let (status, _) = daemon.stop();
    assert!(status.success());
    let daemon = Daemon::start_on(dir.path(), &config(dir.path(), "kitchen", SHED_OFF), port);
    let state_file = dir.path().join("state").join("homeassistant.json");
    let deadline = Instant::now() + WAIT;
    loop {
        let state: Json = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap())
            .expect("state file is JSON");
        let announced = state["devices"].as_array().cloned().unwrap_or_default();
        if !announced.iter().any(|device| device["address"] == "5") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "shed still announced:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let births_before = ha.births.load(std::sync::atomic::Ordering::SeqCst);
    ha.reconnect.send_replace(true);
    ha.until("shed's entities removed in Home Assistant", WAIT, |e| {
        live_entities(e, "_uart0_5/") == 0
    })
    .await;
    assert!(ha.births.load(std::sync::atomic::Ordering::SeqCst) > births_before);
    assert_eq!(
        live_entities(&ha.entities, "_uart0_17/"),
        2,
        "the kitchen stays"
    );
    // Seen once: not kept any longer.
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(&state_file)
        .unwrap_or_default()
        .contains("_uart0_5/")
    {
        assert!(
            Instant::now() < deadline,
            "removals still kept after the birth"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = daemon.stop();
    assert!(status.success());
}

/// A daemon of simulated nodes.
fn simulated_config() -> String {
    ConfigBuilder::new("ha-flood")
        .publish(r#"stats_interval = "1s""#)
        .table(
            r#"
[[source]]
name = "sim"
kind = "simulator"
devices = 20
interval = "200ms"
payload = "json"

[homeassistant]
discovery = true
"#,
        )
        .toml()
}

/// 100 birth messages within a second cost at most two complete re-publications (the first answers at
/// once, the others are coalesced into one that follows the 3 s window); the coalesced births are counted
/// in `{base}/gateway/stats`. Without coalescing every birth restarted the re-publication, each with the
/// gateway's configs and a first slice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_births_is_coalesced() {
    const BIRTHS: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &simulated_config());
    let mut watch = Watch::new(daemon.addr, "ha-flood", "homeassistant/#").await;
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    watch
        .until("every simulated device announced", WAIT, |seen| {
            // temperature, humidity, battery_voltage and last_seen
            (1..=20).all(|i| live(seen, &format!("_sim_{i}/")) == 4)
        })
        .await;
    // The readings carry the same fields every time: after two stats reports (a second each, five
    // rounds of readings) nothing new is announced.
    let settled = watch.seen.log.len();
    for _ in 0..2 {
        stats.next(WAIT).await.expect("a stats report");
    }
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(1), watch.sub.rx.recv()).await
    {
        watch.take(message);
    }
    assert_eq!(watch.seen.log.len(), settled, "still announcing");
    let full_set = live(&watch.seen, "homeassistant/");

    let mark = watch.seen.log.len();
    let bytes_before = watch.seen.config_bytes;
    let birth_bytes = BIRTHS * ("homeassistant/status".len() + "online".len());
    // One birth every 10 ms for 1 s, while this task keeps taking what the gateway publishes.
    let flood = mqtt::subscribe(daemon.addr, "flood", "flood/none", 0).await;
    let births = flood.client.clone();
    let flooding = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(10));
        for _ in 0..BIRTHS {
            pace.tick().await;
            births
                .publish(
                    "homeassistant/status",
                    rumqttc::QoS::AtMostOnce,
                    false,
                    "online",
                )
                .await
                .unwrap();
        }
    });
    // Every birth answered: all but the first coalesced.
    let mut coalesced = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while coalesced < BIRTHS as u64 - 1 {
        tokio::select! {
            Some(message) = watch.sub.rx.recv() => watch.take(message),
            Some(report) = stats.rx.recv() => {
                let report: Json = serde_json::from_slice(&report.payload).unwrap();
                coalesced = report["homeassistant"]["births_coalesced"].as_u64().unwrap_or(0);
            }
            _ = tokio::time::sleep_until(deadline) => {
                panic!("births_coalesced {coalesced} of {}", BIRTHS - 1)
            }
        }
    }
    flooding.await.unwrap();
    drop(flood);
    // Two complete re-publications: every config twice, the second time a window after the first.
    let twice = |seen: &Seen| {
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for (_, topic, _) in &seen.log[mark..] {
            *counts.entry(topic).or_default() += 1;
        }
        counts.len() >= full_set && counts.values().all(|n| *n >= 2)
    };
    watch
        .until("two complete re-publications", WAIT, twice)
        .await;
    let frames: Vec<Instant> = watch.seen.log[mark..]
        .iter()
        .filter(|(_, topic, _)| topic.ends_with("sensorgate_ha-flood/frames/config"))
        .map(|(at, _, _)| *at)
        .collect();
    assert!(
        frames[1] - frames[0] >= Duration::from_millis(2500),
        "the second re-publication follows the window: {:?}",
        frames[1] - frames[0]
    );
    // Nothing more follows it: a probe published now arrives after whatever was still under way.
    let before_probe = watch.seen.log.len();
    watch
        .sub
        .client
        .publish("homeassistant/probe", rumqttc::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    watch
        .until("probe", WAIT, |seen| {
            seen.topics.contains_key("homeassistant/probe")
        })
        .await;
    let sent = watch.seen.log.len() - mark;
    println!(
        "{BIRTHS} births ({birth_bytes} bytes) -> {sent} configs ({} bytes; {} after the probe was sent), one complete set is {full_set}",
        watch.seen.config_bytes - bytes_before,
        watch.seen.log.len() - before_probe
    );
    assert!(
        sent <= 2 * full_set,
        "{BIRTHS} births cost {sent} configs, more than two complete re-publications of {full_set}"
    );
    let (status, _) = daemon.stop();
    assert!(status.success());
}

/// A daemon whose devices have controls.
fn controls_config() -> String {
    ConfigBuilder::new("ha-cmd")
        .broker(
            r#"
# What an anonymous Home Assistant needs: its birth/will topic and the controls' command topics.
anonymous_write = ["sensorgate/+/set/+", "homeassistant/status"]
"#,
        )
        .table(
            r#"
[[source]]
name = "uart0"
kind = "serial"
path = "{link}"
baud = 115200
framing = "cobs"
crc = "crc16-ccitt-false"
header = "node16"
payload = "lpp"
commands = true

[homeassistant]
discovery = true

[[device]]
name = "relay"
source = "uart0"
address = "17"
"#,
        )
        .toml()
}

/// The link of [`controls_config()`]'s source, as the node puts its frames on it and reads the gateway's.
const LINK: sensorgate::encode::link::LinkSpec = sensorgate::encode::link::LinkSpec {
    header: sensorgate::decode::HeaderFormat::Node16,
    crc: sensorgate::frame::crc::CrcMode::Crc16CcittFalse,
    framing: Some(sensorgate::frame::Framing::Cobs),
    gateway_address: 0,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_become_controls_and_home_assistant_switches_a_relay() {
    use sensorgate::model::Value;
    let dir = tempfile::tempdir().unwrap();
    let mut dongle = FakeDongle::plug(&dir.path().join("ttyUSB-relay"));
    let config = controls_config().replace("{link}", &dongle.link.display().to_string());
    let daemon = Daemon::start(dir.path(), &config);
    daemon.wait_for_log("open at 115200 baud", 1, WAIT);
    let mut watch = Watch::new(daemon.addr, "ha-controls", "#").await;

    // The node reports its relay (off), an analog output and a temperature.
    let payload = sensorgate::encode::lpp::encode(&[
        ("digital_out_1".to_string(), Value::Int(0)),
        ("analog_out_2".to_string(), Value::Float(1.5)),
        ("temperature_3".to_string(), Value::Float(21.5)),
    ])
    .unwrap();
    let frame = sensorgate::encode::link::wrap(&LINK, 17, 1, &payload, None).unwrap();
    dongle.write(&frame).await;
    let node = "sensorgate_ha-cmd_uart0_17";
    let switch_topic = format!("homeassistant/switch/{node}/digital_out_1/config");
    let number_topic = format!("homeassistant/number/{node}/analog_out_2/config");
    watch
        .until("a switch, a number and a sensor", WAIT, |seen| {
            [&switch_topic, &number_topic]
                .iter()
                .all(|t| matches!(seen.configs.get(*t), Some(Some(_))))
                && live(seen, &format!("sensor/{node}/temperature_3/")) == 1
        })
        .await;
    let switch = watch.config(&switch_topic).clone();
    assert_eq!(
        switch["command_topic"],
        "sensorgate/relay/set/digital_out_1"
    );
    assert_eq!(switch["state_topic"], "sensorgate/relay");
    assert_eq!(switch["unique_id"], format!("{node}_digital_out_1"));
    assert_eq!(
        switch["availability"],
        serde_json::json!([{"topic": "sensorgate/relay/availability"}, {"topic": "sensorgate/gateway/availability"}])
    );
    let number = watch.config(&number_topic).clone();
    assert_eq!(number["command_topic"], "sensorgate/relay/set/analog_out_2");
    assert!(number["min"].as_f64().unwrap() < number["max"].as_f64().unwrap());
    assert!(
        watch
            .seen
            .configs
            .keys()
            .all(|t| !t.contains(&format!("binary_sensor/{node}/digital_out_1"))),
        "the relay is a switch, not also a binary_sensor"
    );
    watch
        .until("the relay's state", WAIT, |seen| {
            seen.topics.contains_key("sensorgate/relay")
        })
        .await;
    watch.check_templates();

    // Home Assistant switches the relay on: `ON` on the command topic reaches the node.
    watch
        .sub
        .client
        .publish(
            switch["command_topic"].as_str().unwrap(),
            rumqttc::QoS::AtLeastOnce,
            false,
            switch["payload_on"].as_str().unwrap(),
        )
        .await
        .unwrap();
    let wire = dongle.read_until(WAIT, |got| got.contains(&0)).await;
    let mut deframer = sensorgate::frame::Deframer::new(sensorgate::frame::Framing::Cobs, 1024);
    deframer.push(&wire);
    let frame = deframer
        .next_frame()
        .unwrap_or_else(|| panic!("no whole frame in {wire:02x?}:\n{}", daemon.log()))
        .expect("a valid frame");
    let body = sensorgate::frame::crc::check_and_strip(LINK.crc, &frame).expect("CRC matches");
    let (link, payload) = sensorgate::decode::header::split_header(LINK.header, body).unwrap();
    assert_eq!(link.address.as_deref(), Some("17"));
    assert_eq!(
        sensorgate::decode::lpp::decode(payload).unwrap().fields,
        vec![("digital_out_1".to_string(), Value::Int(1))]
    );
    let (status, _) = daemon.stop();
    assert!(status.success());
}

/// The registry forgets a device (its cap makes room for a new one): discovery clears its configs.
#[test]
fn a_forgotten_device_is_removed() {
    use sensorgate::decode::PayloadFormat;
    use sensorgate::devices::{Registry, RegistrySettings};
    use sensorgate::homeassistant::{Announce, Discovery, DiscoverySettings, Link, SourceInfo};
    use sensorgate::model::{Reading, Value};

    let mut registry = Registry::with_device_cap(
        RegistrySettings {
            base_topic: "sg".into(),
            qos: 1,
            retain: true,
            field_topics: false,
            offline_after: Duration::from_secs(60),
            dedup_window: Duration::from_secs(10),
            max_fields: 64,
            devices: Vec::new(),
        },
        1,
    );
    let mut discovery = Discovery::new(
        DiscoverySettings {
            prefix: "homeassistant".into(),
            announce: Announce::All,
            base_topic: "sg".into(),
            gateway_id: "gw".into(),
            qos: 1,
            sources: [(
                "uart0".to_string(),
                SourceInfo {
                    link: Link::Serial,
                    payload: PayloadFormat::Json,
                    commands: false,
                },
            )]
            .into(),
            devices: Default::default(),
            uplink: false,
            sw_version: "test".into(),
            max_entities: 100,
        },
        None,
    );
    let reading = |address: &str| Reading {
        source: "uart0".into(),
        address: address.into(),
        seq: None,
        fields: vec![("temperature".into(), Value::Float(20.0))],
        received_at: std::time::SystemTime::now(),
        radio: None,
        lorawan: None,
    };
    let now = std::time::Instant::now();
    registry.on_reading(&reading("1"), now);
    let announced = discovery.after_reading(&registry, "uart0", "1");
    assert_eq!(announced.len(), 2);
    registry.shutdown(); // offline: the one the cap may evict
    registry.on_reading(&reading("2"), now);
    let forgotten = registry.take_forgotten();
    assert_eq!(forgotten, [("uart0".to_string(), "1".to_string())]);
    let removed = discovery.forget("uart0", "1");
    let topics: BTreeSet<&str> = announced.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        removed
            .iter()
            .map(|m| m.topic.as_str())
            .collect::<BTreeSet<_>>(),
        topics
    );
    assert!(removed.iter().all(|m| m.payload.is_empty() && m.retain));
    assert_eq!(discovery.after_reading(&registry, "uart0", "2").len(), 2);
}

/// The validator itself refuses what Home Assistant refuses.
#[test]
fn the_validator_refuses_what_home_assistant_refuses() {
    let good = serde_json::json!({
        "name": "Temperature", "unique_id": "u", "state_topic": "sg/k", "value_template": "{{ value_json['t'] }}",
        "device_class": "temperature", "unit_of_measurement": "°C", "state_class": "measurement",
        "availability": [{"topic": "sg/k/availability"}], "availability_mode": "all",
        "device": {"identifiers": ["d"], "name": "k"},
    });
    let topic = "homeassistant/sensor/node/t/config";
    assert_eq!(validate("homeassistant", topic, &good), Ok(()));
    let with = |key: &str, value: Json| {
        let mut config = good.clone();
        config[key] = value;
        validate("homeassistant", topic, &config)
    };
    assert!(with("unit_of_measurement", Json::from("%")).is_err());
    assert!(with("state_class", Json::from("total_increasing")).is_err());
    assert!(with("device_class", Json::from("temprature")).is_err());
    assert!(with("entity_category", Json::from("config")).is_err());
    assert!(with("availability_mode", Json::from("every")).is_err());
    assert!(with("device", serde_json::json!({"name": "k"})).is_err());
    assert!(with("icon", Json::from("sprout")).is_err());
    assert!(with("unknown_key", Json::from(1)).is_err());
    assert!(validate(
        "homeassistant",
        "homeassistant/sensor/no de/t/config",
        &good
    )
    .is_err());
    let mut binary = good.clone();
    binary.as_object_mut().unwrap().retain(|k, _| {
        !["device_class", "unit_of_measurement", "state_class"].contains(&k.as_str())
    });
    binary["value_template"] = Json::from("{{ 'ON' if value_json['d'] else 'OFF' }}");
    assert_eq!(
        validate(
            "homeassistant",
            "homeassistant/binary_sensor/node/d/config",
            &binary
        ),
        Ok(())
    );
    binary["unit_of_measurement"] = Json::from("%");
    assert!(validate(
        "homeassistant",
        "homeassistant/binary_sensor/node/d/config",
        &binary
    )
    .is_err());
    let switch_topic = "homeassistant/switch/node/r/config";
    let mut switch = good.clone();
    switch.as_object_mut().unwrap().retain(|k, _| {
        !["device_class", "unit_of_measurement", "state_class"].contains(&k.as_str())
    });
    switch["value_template"] = Json::from("{{ 'ON' if value_json['r'] else 'OFF' }}");
    assert!(
        validate("homeassistant", switch_topic, &switch).is_err(),
        "no command_topic"
    );
    switch["command_topic"] = Json::from("sg/k/set/r");
    assert_eq!(validate("homeassistant", switch_topic, &switch), Ok(()));
    let mut wildcard = switch.clone();
    wildcard["command_topic"] = Json::from("sg/+/set/r");
    assert!(validate("homeassistant", switch_topic, &wildcard).is_err());
    let mut unit = switch.clone();
    unit["unit_of_measurement"] = Json::from("%");
    assert!(validate("homeassistant", switch_topic, &unit).is_err());
    let mut number = switch.clone();
    number.as_object_mut().unwrap().remove("value_template");
    for (key, value) in [("min", -1.0), ("max", 1.0), ("step", 0.01)] {
        number[key] = Json::from(value);
    }
    let number_topic = "homeassistant/number/node/r/config";
    assert_eq!(validate("homeassistant", number_topic, &number), Ok(()));
    let mut inverted = number.clone();
    inverted["min"] = Json::from(2.0);
    assert!(validate("homeassistant", number_topic, &inverted).is_err());
    let mut fine = number.clone();
    fine["step"] = Json::from(0.0001);
    assert!(validate("homeassistant", number_topic, &fine).is_err());
    let mut state_class = number;
    state_class["state_class"] = Json::from("measurement");
    assert!(validate("homeassistant", number_topic, &state_class).is_err());
}

/// Overrides Home Assistant would refuse are refused by the configuration, at the key at fault.
#[test]
fn the_configuration_refuses_overrides_home_assistant_would_refuse() {
    use sensorgate::config::Config;
    let base = "[[source]]\nname = \"u\"\nkind = \"serial\"\npath = \"/dev/x\"\nframing = \"cobs\"\npayload = \"lpp\"\n\n[[device]]\nname = \"k\"\nsource = \"u\"\naddress = \"1\"\n";
    let error = |extra: &str| {
        Config::parse(&format!("{base}{extra}"), Path::new("t.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let unit = error("fields = { temperature_1 = { unit = \"%\" } }\n");
    assert!(
        unit.starts_with("t.toml:12:37: ")
            && unit.contains("not a unit Home Assistant allows for device class \"temperature\""),
        "{unit}"
    );
    let class = error("fields = { soil = { device_class = \"temprature\" } }\n");
    assert!(
        class.starts_with("t.toml:12:36: ") && class.contains("not a sensor device class"),
        "{class}"
    );
    let binary = error(
        "fields = { door = { component = \"binary_sensor\", device_class = \"humidity\" } }\n",
    );
    assert!(
        binary.contains("not a binary_sensor device class"),
        "{binary}"
    );
    let switch = error("fields = { pump = { component = \"switch\" } }\n");
    assert!(
        switch.starts_with("t.toml:12:33: ") && switch.contains("write commands = true"),
        "{switch}"
    );
    let commands = base.replace(
        "payload = \"lpp\"\n",
        "payload = \"lpp\"\ncommands = true\n",
    );
    let slash = Config::parse(
        &format!("{commands}fields = {{ \"a/b\" = {{ component = \"switch\" }} }}\n"),
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(slash.contains("cannot hold '/'"), "{slash}");
    let named = Config::parse(
        &format!("{commands}fields = {{ pump = {{ component = \"switch\", name = \"Pump\" }} }}\n"),
        Path::new("t.toml"),
    );
    assert!(named.is_ok(), "{named:?}");
    let state = error("fields = { energy_1 = { state_class = \"measurement\" } }\n");
    assert!(
        state.contains("does not go with device class \"energy\""),
        "{state}"
    );
    let ok = Config::parse(
        &format!("{base}homeassistant = false\nfields = {{ soil = {{ device_class = \"moisture\" }}, relay = {{ component = \"none\" }} }}\n"),
        Path::new("t.toml"),
    );
    assert!(ok.is_ok(), "{ok:?}");
    let overlap = Config::parse(
        "[gateway]\nbase_topic = \"homeassistant\"\n",
        Path::new("t.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        overlap.contains("overlaps [gateway] base_topic"),
        "{overlap}"
    );
    let mode = Config::parse("[homeassistant]\ndevices = \"some\"\n", Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(mode.starts_with("t.toml:2:"), "{mode}");
}
