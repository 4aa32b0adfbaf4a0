//! The publisher: the messages one reading of a named device becomes (its merged JSON state, its field
//! topics). The topics themselves are built by [`crate::topic::gateway`] (re-exported here for the
//! stages that publish). It is pure: it never names devices, never tracks liveness (that is the registry
//! in `devices.rs`), and never talks to the broker.
//!
//! A device keeps at most `max_fields` fields ([`merge_state`]): the first names it sends are kept, a new
//! name beyond them is dropped (not in the state, no field topic) and counted, so a sender inventing names
//! cannot grow the state or the broker's retained topics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json};

use crate::model::{Message, Reading};
pub use crate::topic::gateway::{
    availability_topic, device_of_availability_topic, device_of_state_topic, device_topic,
    field_topic, gateway_availability_topic, gateway_heard_topic, gateway_stats_topic,
    is_valid_base_topic, sanitize_level, AVAILABILITY_LEVEL, GATEWAY_NAME, MAX_LEVEL_BYTES,
    OFFLINE, ONLINE,
};

/// The JSON keys the gateway adds to a device's state. A field of the same name is shadowed in the JSON
/// state (the field topic still carries it).
pub const STATE_KEY_LAST_SEEN: &str = "last_seen";
/// Received signal strength in dBm, when a radio heard the reading.
pub const STATE_KEY_RSSI: &str = "rssi";
/// Signal-to-noise ratio in dB, when a radio heard the reading.
pub const STATE_KEY_SNR: &str = "snr";
/// The sender's sequence number, when the reading carries one.
pub const STATE_KEY_SEQ: &str = "seq";
/// The `[[source]]` the reading arrived on.
pub const STATE_KEY_SOURCE: &str = "source";

/// Every key the gateway adds to a device's state: not fields, and not counted against `max_fields`.
pub const STATE_KEYS: [&str; 5] = [
    STATE_KEY_LAST_SEEN,
    STATE_KEY_RSSI,
    STATE_KEY_SNR,
    STATE_KEY_SEQ,
    STATE_KEY_SOURCE,
];

/// The keys a LoRaWAN device's state adds (`model::LorawanMeta` and its radio metadata): frame counter,
/// FPort, best gateway's EUI, frequency (Hz) and spreading factor. Set from each LoRaWAN reading (a
/// field of the same name is shadowed in the JSON state); other devices' states never carry them.
pub const LORAWAN_STATE_KEYS: [&str; 5] = ["fcnt", "fport", "gateway", "frequency", "sf"];

/// How the gateway publishes device data (the `[publish]` section plus the base topic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishSettings {
    /// The first topic level(s), e.g. `sensorgate`. Checked by [`is_valid_base_topic`].
    pub base_topic: String,
    /// QoS of the gateway's own messages (0-2).
    pub qos: u8,
    /// Whether device state and field topics are retained.
    pub retain: bool,
    /// Whether `{base}/{device}/{field}` topics are published besides the JSON state.
    pub field_topics: bool,
}

/// `time` as RFC 3339 UTC with milliseconds, clamped to what RFC 3339 can say (1970 to year 9999), so a
/// wrong system clock cannot make formatting fail.
pub fn format_last_seen(time: SystemTime) -> String {
    // 9999-12-31T23:59:59.999Z, the last instant humantime formats.
    const LATEST: Duration = Duration::from_millis(253_402_300_799_999);
    let since_epoch = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(LATEST);
    humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch).to_string()
}

/// A radio measurement as JSON with the digits the radio gave (`-97.3`, not `-97.30000305175781`);
/// `None` when it is not finite.
fn radio_number(value: f32) -> Option<Json> {
    let shortest: f64 = value.to_string().parse().ok()?;
    serde_json::Number::from_f64(shortest).map(Json::Number)
}

/// Whether `key` is one the gateway adds to a device's state ([`STATE_KEYS`]).
pub fn is_state_key(key: &str) -> bool {
    STATE_KEYS.contains(&key)
}

/// How many fields `state` holds: its keys besides the gateway's own.
pub fn field_count(state: &Map<String, Json>) -> usize {
    let gateway_keys = STATE_KEYS
        .iter()
        .filter(|key| state.contains_key(**key))
        .count();
    state.len() - gateway_keys
}

/// Keeps the first `max_fields` fields of `state` (in its key order) and its gateway keys; returns how
/// many fields were removed. For a state restored from disk or carried over a reload that lowered the bound.
pub fn truncate_fields(state: &mut Map<String, Json>, max_fields: usize) -> usize {
    let excess: Vec<String> = state
        .keys()
        .filter(|key| !is_state_key(key))
        .skip(max_fields)
        .cloned()
        .collect();
    for key in &excess {
        state.remove(key);
    }
    excess.len()
}

/// Merges `reading` into a device's JSON `state` (Zigbee2MQTT style): the reading's fields replace those
/// of the same name, fields only earlier readings had are kept, `last_seen` and `source` are set, and
/// `rssi`, `snr` and `seq` describe this reading only (removed when it has none). The gateway's keys win
/// over fields of the same name. A field whose name the state does not hold yet is added only while the
/// state has fewer than `max_fields` fields; otherwise it is dropped. Returns how many fields were dropped.
pub fn merge_state(state: &mut Map<String, Json>, reading: &Reading, max_fields: usize) -> usize {
    let mut fields = field_count(state);
    let mut dropped = 0;
    for (name, value) in &reading.fields {
        if let Some(known) = state.get_mut(name) {
            *known = value.to_json();
        } else if is_state_key(name) {
            state.insert(name.clone(), value.to_json()); // overwritten below; never a new field
        } else if fields < max_fields {
            state.insert(name.clone(), value.to_json());
            fields += 1;
        } else {
            dropped += 1;
        }
    }
    let radio = reading.radio.as_ref();
    let meta = [
        (STATE_KEY_RSSI, radio.and_then(|r| radio_number(r.rssi_dbm))),
        (STATE_KEY_SNR, radio.and_then(|r| radio_number(r.snr_db))),
        (STATE_KEY_SEQ, reading.seq.map(Json::from)),
    ];
    for (key, value) in meta {
        match value {
            Some(value) => state.insert(key.to_string(), value),
            None => state.remove(key),
        };
    }
    if let Some(lorawan) = &reading.lorawan {
        let values = [
            Json::from(lorawan.fcnt),
            lorawan.fport.map_or(Json::Null, Json::from),
            Json::String(lorawan.gateway.clone()),
            radio.map_or(Json::Null, |r| Json::from(r.frequency_hz)),
            radio.map_or(Json::Null, |r| Json::from(r.spreading_factor)),
        ];
        for (key, value) in LORAWAN_STATE_KEYS.iter().zip(values) {
            state.insert((*key).to_string(), value);
        }
    }
    state.insert(
        STATE_KEY_SOURCE.to_string(),
        Json::String(reading.source.clone()),
    );
    state.insert(
        STATE_KEY_LAST_SEEN.to_string(),
        Json::String(format_last_seen(reading.received_at)),
    );
    dropped
}

/// The messages one reading of `device` becomes: the JSON `state` (already merged with the reading by
/// [`merge_state`]) on `{base}/{device}`, then, with `field_topics`, each of the reading's fields the state
/// kept (and those named like a gateway key) as plain text on `{base}/{device}/{field}`, in the reading's
/// order. All at the configured QoS and retain flag.
pub fn reading_messages(
    settings: &PublishSettings,
    device: &str,
    state: &Map<String, Json>,
    reading: &Reading,
) -> Vec<Message> {
    let base = settings.base_topic.as_str();
    let field_count = if settings.field_topics {
        reading.fields.len()
    } else {
        0
    };
    let mut messages = Vec::with_capacity(1 + field_count);
    messages.push(Message {
        topic: device_topic(base, device),
        payload: Json::Object(state.clone()).to_string().into_bytes(),
        qos: settings.qos,
        retain: settings.retain,
    });
    if settings.field_topics {
        let kept = reading
            .fields
            .iter()
            .filter(|(name, _)| state.contains_key(name) || is_state_key(name));
        for (name, value) in kept {
            messages.push(Message {
                topic: field_topic(base, device, name),
                payload: value.to_plain_text().into_bytes(),
                qos: settings.qos,
                retain: settings.retain,
            });
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RadioMeta, Value};

    fn settings(retain: bool, field_topics: bool) -> PublishSettings {
        PublishSettings {
            base_topic: "sg".into(),
            qos: 1,
            retain,
            field_topics,
        }
    }

    fn reading(fields: Vec<(&str, Value)>) -> Reading {
        Reading {
            source: "uart0".into(),
            address: "17".into(),
            seq: Some(5),
            fields: fields
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            radio: Some(RadioMeta {
                rssi_dbm: -97.3,
                snr_db: 7.25,
                frequency_hz: 868_100_000,
                spreading_factor: 7,
            }),
            lorawan: None,
        }
    }

    #[test]
    fn a_lorawan_reading_adds_its_counter_port_gateway_frequency_and_sf() {
        let mut state = Map::new();
        let r = Reading {
            lorawan: Some(crate::model::LorawanMeta {
                fcnt: 70_000,
                fport: Some(10),
                gateway: "b827ebfffe6f4e3c".into(),
            }),
            ..reading(vec![("t", Value::Int(1))])
        };
        merge_state(&mut state, &r, 64);
        assert_eq!(state["fcnt"], 70_000);
        assert_eq!(state["fport"], 10);
        assert_eq!(state["gateway"], "b827ebfffe6f4e3c");
        assert_eq!(state["frequency"], 868_100_000);
        assert_eq!(state["sf"], 7);
        assert_eq!(state["rssi"], -97.3);
        let mut plain = Map::new();
        merge_state(&mut plain, &reading(vec![]), 64);
        assert!(LORAWAN_STATE_KEYS.iter().all(|k| !plain.contains_key(*k)));
    }

    fn json(message: &Message) -> Json {
        serde_json::from_slice(&message.payload).unwrap()
    }

    #[test]
    fn last_seen_is_rfc3339_and_never_fails() {
        assert_eq!(
            format_last_seen(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_last_seen(UNIX_EPOCH - Duration::from_secs(10)),
            "1970-01-01T00:00:00.000Z"
        );
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(format_last_seen(far), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn state_has_fields_and_metadata() {
        let r = reading(vec![
            ("temperature_3", Value::Float(21.5)),
            ("ok", Value::Bool(true)),
        ]);
        let mut state = Map::new();
        merge_state(&mut state, &r, 64);
        let messages = reading_messages(&settings(true, false), "kitchen", &state, &r);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].topic, "sg/kitchen");
        assert!(messages[0].retain);
        assert_eq!(messages[0].qos, 1);
        assert_eq!(
            json(&messages[0]),
            serde_json::json!({
                "temperature_3": 21.5, "ok": true, "rssi": -97.3, "snr": 7.25, "seq": 5,
                "source": "uart0", "last_seen": "2023-11-14T22:13:20.123Z"
            })
        );
    }

    #[test]
    fn state_merges_earlier_fields_and_drops_stale_metadata() {
        let mut state = Map::new();
        merge_state(
            &mut state,
            &reading(vec![
                ("temp", Value::Float(20.0)),
                ("battery", Value::Int(90)),
            ]),
            64,
        );
        let mut second = reading(vec![
            ("temp", Value::Float(21.0)),
            ("door", Value::Text("open".into())),
        ]);
        second.radio = None;
        second.seq = None;
        merge_state(&mut state, &second, 64);
        let state = Json::Object(state);
        assert_eq!(state["temp"], 21.0);
        assert_eq!(state["battery"], 90);
        assert_eq!(state["door"], "open");
        assert!(
            state.get("rssi").is_none() && state.get("snr").is_none() && state.get("seq").is_none()
        );
    }

    #[test]
    fn state_keeps_the_first_max_fields_names_and_drops_new_ones() {
        let mut state = Map::new();
        let mut dropped = 0;
        for i in 0..1_000 {
            dropped += merge_state(
                &mut state,
                &reading(vec![(&format!("f{i:04}"), Value::Int(i))]),
                3,
            );
        }
        assert_eq!(dropped, 997);
        assert_eq!(field_count(&state), 3);
        assert_eq!(state.len(), 3 + STATE_KEYS.len());
        // A kept name is still updated; a reading mixing kept and new names keeps the known ones only.
        let mixed = reading(vec![("f0001", Value::Int(-1)), ("new", Value::Int(1))]);
        assert_eq!(merge_state(&mut state, &mixed, 3), 1);
        assert_eq!(state["f0001"], -1);
        assert!(!state.contains_key("new"));
        // Names like the gateway's keys are not counted against the bound (and the gateway's value wins).
        let meta = reading(vec![
            ("source", Value::Int(1)),
            ("last_seen", Value::Int(2)),
        ]);
        assert_eq!(merge_state(&mut state, &meta, 3), 0);
        assert_eq!(state["source"], "uart0");
        // Only the kept fields get a field topic.
        let messages = reading_messages(&settings(true, true), "kitchen", &state, &mixed);
        let topics: Vec<_> = messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["sg/kitchen", "sg/kitchen/f0001"]);
        // No fields at all with a bound of 0.
        let mut empty = Map::new();
        assert_eq!(merge_state(&mut empty, &mixed, 0), 2);
        assert_eq!(field_count(&empty), 0);
    }

    #[test]
    fn truncating_keeps_the_first_fields_and_the_gateway_keys() {
        let mut state = Map::new();
        let fields: Vec<(String, Value)> =
            (0..10).map(|i| (format!("f{i}"), Value::Int(i))).collect();
        let r = Reading {
            fields,
            ..reading(vec![])
        };
        merge_state(&mut state, &r, 64);
        assert_eq!(field_count(&state), 10);
        assert_eq!(truncate_fields(&mut state, 4), 6);
        let kept: Vec<_> = state.keys().filter(|k| !is_state_key(k)).cloned().collect();
        assert_eq!(kept, ["f0", "f1", "f2", "f3"]);
        assert!(STATE_KEYS.iter().all(|key| state.contains_key(*key)));
        assert_eq!(truncate_fields(&mut state, 4), 0);
    }

    #[test]
    fn gateway_keys_win_over_fields_of_the_same_name() {
        let mut state = Map::new();
        merge_state(
            &mut state,
            &reading(vec![("source", Value::Text("spoofed".into()))]),
            64,
        );
        assert_eq!(state["source"], "uart0");
    }

    #[test]
    fn field_topics_on_and_off_with_retain_flag() {
        let r = reading(vec![
            ("temp", Value::Float(0.1 * 272.0)),
            ("door", Value::Text("open".into())),
        ]);
        let mut state = Map::new();
        merge_state(&mut state, &r, 64);

        let with_fields = reading_messages(&settings(false, true), "kitchen", &state, &r);
        let topics: Vec<_> = with_fields.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["sg/kitchen", "sg/kitchen/temp", "sg/kitchen/door"]);
        assert_eq!(with_fields[1].payload, b"27.2");
        assert_eq!(with_fields[2].payload, b"open");
        assert!(with_fields.iter().all(|m| !m.retain && m.qos == 1));

        let without = reading_messages(&settings(true, false), "kitchen", &state, &r);
        assert_eq!(without.len(), 1);
        assert!(without[0].retain);
    }
}
