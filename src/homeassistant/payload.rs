//! The discovery messages themselves: the config topic of each entity
//! (`{prefix}/{component}/{node_id}/{object_id}/config`, both ids within Home Assistant's
//! `[a-zA-Z0-9_-]+`), its `unique_id`, and its config JSON (state topic and `value_template`, the
//! `availability` list with `availability_mode: all`, the `device` block with `via_device`, `origin`;
//! a `switch` or `number` also its `command_topic`, `payload_on`/`payload_off` or `min`/`max`/`step`).
//! Pure functions from an [`EntityType`] and the device's identity to JSON; no state, no IO.
//!
//! Identifiers are made from what identifies a device, never from its name: `sensorgate_{gateway id}` for
//! the gateway, `sensorgate_{gateway id}_{source}_{address}` for a device, plus `_{field}` for an entity.
//! So they survive renames and restarts. A part that holds characters outside `[A-Za-z0-9_-]` (an address
//! with `_` or `.`, a field name with spaces) has them replaced by `_` and a hash of the original appended,
//! so two different parts never share an identifier.

use serde_json::{json, Map, Value as Json};

use super::types::{Component, Control, EntityType, Render};
use crate::topic::gateway::{OFFLINE, ONLINE};

/// The device-level facts every entity's config carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBlock {
    /// Home Assistant's device identifier and the discovery topic's node id.
    pub node_id: String,
    /// The sensorgate name (`{base}/{name}`), shown as the device's name.
    pub name: String,
    /// What it is: payload format and link, e.g. `Cayenne LPP over SX1276 LoRa`.
    pub model: String,
    /// The JSON state topic the entities read.
    pub state_topic: String,
    /// Where its availability is published, with the payloads that mean up and down.
    pub availability_topic: String,
    pub online_payload: String,
    pub offline_payload: String,
}

/// What every config shares: the discovery prefix, the gateway's identity and availability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub prefix: String,
    /// `sensorgate_{gateway id}`: the gateway device's identifier, every device's `via_device`.
    pub gateway_node_id: String,
    pub gateway_availability_topic: String,
    pub sw_version: String,
}

/// `text` as one identifier part: itself when it is made of `[A-Za-z0-9_-]` (or `[A-Za-z0-9-]` when
/// `allow_underscore` is false), otherwise the other characters become `_` and `_` plus a hash of the
/// original is appended.
pub fn id_part(text: &str, allow_underscore: bool) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || (allow_underscore && c == '_');
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_string();
    }
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{cleaned}_{:08x}", fnv1a(text.as_bytes()))
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The gateway's node id: `sensorgate_{gateway id}`.
pub fn gateway_node_id(gateway_id: &str) -> String {
    format!("sensorgate_{}", id_part(gateway_id, true))
}

/// A device's node id: `{gateway node id}_{source}_{address}`.
pub fn device_node_id(gateway_node: &str, source: &str, address: &str) -> String {
    format!(
        "{gateway_node}_{}_{}",
        id_part(source, true),
        id_part(address, false)
    )
}

/// The config topic of one entity.
pub fn config_topic(prefix: &str, component: Component, node_id: &str, object_key: &str) -> String {
    format!(
        "{prefix}/{}/{node_id}/{}/config",
        component.as_str(),
        id_part(object_key, true)
    )
}

/// `value_json['name']`, quoted for a Jinja string literal.
fn json_ref(field: &str) -> String {
    let escaped = field.replace('\\', "\\\\").replace('\'', "\\'");
    format!("value_json['{escaped}']")
}

/// The template that reads `field` from the device's JSON state as `entity` wants it.
pub fn value_template(field: &str, render: &Render) -> Option<String> {
    let value = json_ref(field);
    let truthy = format!("{value} | string | lower in ('1', 'true', 'on', 'open', 'yes')");
    match render {
        Render::Plain => Some(format!("{{{{ {value} }}}}")),
        Render::Binary => Some(format!("{{{{ 'ON' if {truthy} else 'OFF' }}}}")),
        Render::BinaryInverted => Some(format!("{{{{ 'OFF' if {truthy} else 'ON' }}}}")),
        Render::UnixTime => Some(format!(
            "{{{{ {value} | int(0) | timestamp_custom('%Y-%m-%dT%H:%M:%S+00:00', false) }}}}"
        )),
        Render::Location { .. } => None,
    }
}

/// The attributes template of a tracker: latitude, longitude (and altitude) from the JSON state.
fn location_template(latitude: &str, longitude: &str, altitude: Option<&str>) -> String {
    let mut parts = vec![
        format!("'latitude': {}", json_ref(latitude)),
        format!("'longitude': {}", json_ref(longitude)),
        "'gps_accuracy': 0".to_string(),
    ];
    if let Some(altitude) = altitude {
        parts.push(format!("'altitude': {}", json_ref(altitude)));
    }
    format!("{{{{ {{{}}} | tojson }}}}", parts.join(", "))
}

fn origin(common: &Common) -> Json {
    json!({
        "name": "sensorgate",
        "sw_version": common.sw_version,
    })
}

fn availability_entry(topic: &str, online: &str, offline: &str) -> Json {
    let mut entry = Map::new();
    entry.insert("topic".into(), Json::from(topic));
    if online != ONLINE {
        entry.insert("payload_available".into(), Json::from(online));
    }
    if offline != OFFLINE {
        entry.insert("payload_not_available".into(), Json::from(offline));
    }
    Json::Object(entry)
}

/// The config of the entity of `field` of `device`: its topic and JSON.
pub fn entity_config(
    common: &Common,
    device: &DeviceBlock,
    field: &str,
    entity: &EntityType,
) -> (String, Json) {
    let topic = config_topic(&common.prefix, entity.component, &device.node_id, field);
    let mut config = Map::new();
    config.insert("name".into(), Json::from(entity.name.as_str()));
    config.insert(
        "unique_id".into(),
        Json::from(format!("{}_{}", device.node_id, id_part(field, true))),
    );
    insert_state_source(&mut config, device, field, &entity.render);
    if entity.component == Component::BinarySensor {
        config.insert("payload_on".into(), Json::from("ON"));
        config.insert("payload_off".into(), Json::from("OFF"));
    }
    for (key, value) in [
        ("device_class", &entity.device_class),
        ("unit_of_measurement", &entity.unit),
        ("state_class", &entity.state_class),
        ("icon", &entity.icon),
    ] {
        if let Some(value) = value {
            config.insert(key.into(), Json::from(value.as_str()));
        }
    }
    if entity.diagnostic {
        config.insert("entity_category".into(), Json::from("diagnostic"));
    }
    insert_availability_and_device(&mut config, common, device);
    config.insert("origin".into(), origin(common));
    (topic, Json::Object(config))
}

/// Where the entity's state comes from: a tracker's attributes from the device's state topic, any
/// other entity's value from the state topic through its template.
fn insert_state_source(
    config: &mut Map<String, Json>,
    device: &DeviceBlock,
    field: &str,
    render: &Render,
) {
    match render {
        Render::Location {
            latitude,
            longitude,
            altitude,
        } => {
            config.insert(
                "json_attributes_topic".into(),
                Json::from(device.state_topic.as_str()),
            );
            config.insert(
                "json_attributes_template".into(),
                Json::from(location_template(latitude, longitude, altitude.as_deref())),
            );
            config.insert("source_type".into(), Json::from("gps"));
        }
        render => {
            config.insert(
                "state_topic".into(),
                Json::from(device.state_topic.as_str()),
            );
            if let Some(template) = value_template(field, render) {
                config.insert("value_template".into(), Json::from(template));
            }
        }
    }
}

/// The entity's availability (the device's and the gateway's, both needed) and its device block.
fn insert_availability_and_device(
    config: &mut Map<String, Json>,
    common: &Common,
    device: &DeviceBlock,
) {
    config.insert(
        "availability".into(),
        json!([
            availability_entry(
                &device.availability_topic,
                &device.online_payload,
                &device.offline_payload
            ),
            availability_entry(&common.gateway_availability_topic, ONLINE, OFFLINE),
        ]),
    );
    config.insert("availability_mode".into(), Json::from("all"));
    config.insert(
        "device".into(),
        json!({
            "identifiers": [device.node_id],
            "name": device.name,
            "model": device.model,
            "manufacturer": "sensorgate",
            "via_device": common.gateway_node_id,
        }),
    );
}

/// The config of a control (a `switch` or `number` entity from [`super::types::control_entity`]): what
/// [`entity_config`] gives a sensor (state topic and template, availability, device), plus the topic
/// Home Assistant publishes commands on (`{base}/{device}/set/{field}`, which takes `ON`/`OFF` and
/// numbers) and, for a switch, the payloads it sends and reads (`ON`/`OFF`, what the template renders),
/// for a number its range. Commands are not retained (Home Assistant's default).
pub fn control_config(
    common: &Common,
    device: &DeviceBlock,
    field: &str,
    entity: &EntityType,
    control: Control,
    command_topic: &str,
) -> (String, Json) {
    let (topic, mut config) = entity_config(common, device, field, entity);
    if let Json::Object(map) = &mut config {
        map.insert("command_topic".into(), Json::from(command_topic));
        match control {
            Control::Switch => {
                map.insert("payload_on".into(), Json::from("ON"));
                map.insert("payload_off".into(), Json::from("OFF"));
            }
            Control::Number { min, max, step } => {
                map.insert("min".into(), Json::from(min));
                map.insert("max".into(), Json::from(max));
                map.insert("step".into(), Json::from(step));
                map.insert("mode".into(), Json::from("box"));
            }
        }
    }
    (topic, config)
}

/// One diagnostic entity of the gateway device, read from `{base}/gateway/stats`.
struct GatewayEntity {
    key: &'static str,
    name: &'static str,
    template: &'static str,
    unit: Option<&'static str>,
    state_class: Option<&'static str>,
    icon: &'static str,
    /// Only with an `[upstream]`.
    uplink: bool,
}

const GATEWAY_ENTITIES: &[GatewayEntity] = &[
    GatewayEntity {
        key: "devices_online",
        name: "Devices online",
        template: "{{ value_json.devices.online }}",
        unit: Some("devices"),
        state_class: Some("measurement"),
        icon: "mdi:access-point-network",
        uplink: false,
    },
    GatewayEntity {
        key: "frames",
        name: "Frames",
        template: "{{ value_json.totals.frames }}",
        unit: Some("frames"),
        state_class: Some("total_increasing"),
        icon: "mdi:counter",
        uplink: false,
    },
    GatewayEntity {
        key: "decode_errors",
        name: "Decode errors",
        template: "{{ value_json.totals.decode_errors }}",
        unit: Some("frames"),
        state_class: Some("total_increasing"),
        icon: "mdi:alert-circle-outline",
        uplink: false,
    },
    GatewayEntity {
        key: "uplink_state",
        name: "Uplink",
        template: "{{ value_json.uplink.state if value_json.uplink is defined else 'none' }}",
        unit: None,
        state_class: None,
        icon: "mdi:cloud-upload-outline",
        uplink: true,
    },
    GatewayEntity {
        key: "spool_depth",
        name: "Spool depth",
        template: "{{ value_json.uplink.spool_messages if value_json.uplink is defined else 0 }}",
        unit: Some("messages"),
        state_class: Some("measurement"),
        icon: "mdi:tray-full",
        uplink: true,
    },
];

/// The gateway device's entities: each config topic and JSON. `stats_topic` is `{base}/gateway/stats`.
pub fn gateway_configs(
    common: &Common,
    gateway_id: &str,
    stats_topic: &str,
    uplink: bool,
) -> Vec<(String, Json)> {
    GATEWAY_ENTITIES
        .iter()
        .filter(|entity| uplink || !entity.uplink)
        .map(|entity| {
            let topic = config_topic(&common.prefix, Component::Sensor, &common.gateway_node_id, entity.key);
            let mut config = json!({
                "name": entity.name,
                "unique_id": format!("{}_{}", common.gateway_node_id, entity.key),
                "state_topic": stats_topic,
                "value_template": entity.template,
                "entity_category": "diagnostic",
                "icon": entity.icon,
                "availability": [availability_entry(&common.gateway_availability_topic, ONLINE, OFFLINE)],
                "availability_mode": "all",
                "device": {
                    "identifiers": [common.gateway_node_id],
                    "name": format!("sensorgate {gateway_id}"),
                    "model": "sensor gateway",
                    "manufacturer": "sensorgate",
                    "sw_version": common.sw_version,
                },
                "origin": origin(common),
            });
            if let Json::Object(fields) = &mut config {
                if let Some(unit) = entity.unit {
                    fields.insert("unit_of_measurement".into(), Json::from(unit));
                }
                if let Some(state_class) = entity.state_class {
                    fields.insert("state_class".into(), Json::from(state_class));
                }
            }
            (topic, config)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::PayloadFormat;
    use crate::homeassistant::types::{infer, ValueKind};

    fn common() -> Common {
        Common {
            prefix: "homeassistant".into(),
            gateway_node_id: gateway_node_id("garden-pi"),
            gateway_availability_topic: "sg/gateway/availability".into(),
            sw_version: "1.0".into(),
        }
    }

    fn device() -> DeviceBlock {
        DeviceBlock {
            node_id: device_node_id(&gateway_node_id("garden-pi"), "uart0", "17"),
            name: "kitchen".into(),
            model: "Cayenne LPP over serial".into(),
            state_topic: "sg/kitchen".into(),
            availability_topic: "sg/kitchen/availability".into(),
            online_payload: "online".into(),
            offline_payload: "offline".into(),
        }
    }

    #[test]
    fn identifiers_are_valid_and_distinct() {
        assert_eq!(id_part("uart0", true), "uart0");
        assert_eq!(id_part("17", false), "17");
        let odd = id_part("a_b", false);
        assert!(odd.starts_with("a_b_") && odd.len() == 12, "{odd}");
        assert_ne!(id_part("a b", true), id_part("a_b", true));
        assert_ne!(id_part("a.b", true), id_part("a b", true));
        for text in ["ü", "", "x/y", "temp'1"] {
            let id = id_part(text, true);
            assert!(
                !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{id}"
            );
        }
        assert_eq!(device().node_id, "sensorgate_garden-pi_uart0_17");
    }

    #[test]
    fn a_sensor_config_has_what_home_assistant_needs() {
        let entity = infer(PayloadFormat::Lpp, "temperature_3", ValueKind::Number).unwrap();
        let (topic, config) = entity_config(&common(), &device(), "temperature_3", &entity);
        assert_eq!(
            topic,
            "homeassistant/sensor/sensorgate_garden-pi_uart0_17/temperature_3/config"
        );
        assert_eq!(
            config["unique_id"],
            "sensorgate_garden-pi_uart0_17_temperature_3"
        );
        assert_eq!(config["state_topic"], "sg/kitchen");
        assert_eq!(
            config["value_template"],
            "{{ value_json['temperature_3'] }}"
        );
        assert_eq!(config["device_class"], "temperature");
        assert_eq!(config["unit_of_measurement"], "°C");
        assert_eq!(config["availability_mode"], "all");
        assert_eq!(
            config["availability"],
            json!([{"topic": "sg/kitchen/availability"}, {"topic": "sg/gateway/availability"}])
        );
        assert_eq!(config["device"]["via_device"], "sensorgate_garden-pi");
        assert_eq!(
            config["device"]["identifiers"],
            json!(["sensorgate_garden-pi_uart0_17"])
        );
    }

    #[test]
    fn binary_tracker_and_custom_will_configs() {
        let door = infer(PayloadFormat::Json, "door", ValueKind::Bool).unwrap();
        let (topic, config) = entity_config(&common(), &device(), "door", &door);
        assert!(topic.starts_with("homeassistant/binary_sensor/"));
        assert_eq!(
            config["value_template"],
            "{{ 'ON' if value_json['door'] | string | lower in ('1', 'true', 'on', 'open', 'yes') else 'OFF' }}"
        );
        let gps = infer(PayloadFormat::Lpp, "gps_1_latitude", ValueKind::Number).unwrap();
        let (topic, config) = entity_config(&common(), &device(), "gps_1_latitude", &gps);
        assert!(topic.starts_with("homeassistant/device_tracker/"));
        assert_eq!(config["json_attributes_topic"], "sg/kitchen");
        assert!(config.get("state_topic").is_none());
        let mut custom = device();
        custom.availability_topic = "alarms/kitchen".into();
        custom.offline_payload = "lost".into();
        let (_, config) = entity_config(&common(), &custom, "door", &door);
        assert_eq!(
            config["availability"][0],
            json!({"topic": "alarms/kitchen", "payload_not_available": "lost"})
        );
        assert_eq!(json_ref("it's"), "value_json['it\\'s']");
    }

    #[test]
    fn switch_and_number_configs_carry_their_command_topics() {
        use crate::homeassistant::types::control_entity;
        let relay = control_entity(
            PayloadFormat::Lpp,
            "digital_out_1",
            ValueKind::Number,
            None,
            Control::Switch,
        )
        .unwrap();
        let (topic, config) = control_config(
            &common(),
            &device(),
            "digital_out_1",
            &relay,
            Control::Switch,
            "sg/kitchen/set/digital_out_1",
        );
        assert_eq!(
            topic,
            "homeassistant/switch/sensorgate_garden-pi_uart0_17/digital_out_1/config"
        );
        assert_eq!(config["command_topic"], "sg/kitchen/set/digital_out_1");
        assert_eq!(config["state_topic"], "sg/kitchen");
        assert_eq!(
            (&config["payload_on"], &config["payload_off"]),
            (&json!("ON"), &json!("OFF"))
        );
        let template = config["value_template"].as_str().unwrap();
        assert!(
            template.contains("'ON'") && template.contains("'OFF'"),
            "{template}"
        );
        assert_eq!(config["availability_mode"], "all");
        let range = Control::Number {
            min: -327.68,
            max: 327.67,
            step: 0.01,
        };
        let level = control_entity(
            PayloadFormat::Lpp,
            "analog_out_2",
            ValueKind::Number,
            None,
            range,
        )
        .unwrap();
        let (topic, config) = control_config(
            &common(),
            &device(),
            "analog_out_2",
            &level,
            range,
            "sg/kitchen/set/analog_out_2",
        );
        assert!(topic.starts_with("homeassistant/number/"), "{topic}");
        assert_eq!(
            (&config["min"], &config["max"], &config["step"]),
            (&json!(-327.68), &json!(327.67), &json!(0.01))
        );
        assert_eq!(config["value_template"], "{{ value_json['analog_out_2'] }}");
        assert!(config.get("payload_on").is_none() && config.get("state_class").is_none());
    }

    #[test]
    fn gateway_entities_follow_the_uplink() {
        assert_eq!(
            gateway_configs(&common(), "garden-pi", "sg/gateway/stats", false).len(),
            3
        );
        let all = gateway_configs(&common(), "garden-pi", "sg/gateway/stats", true);
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|(topic, config)| topic
            .starts_with("homeassistant/sensor/sensorgate_garden-pi/")
            && config["entity_category"] == "diagnostic"));
    }
}
