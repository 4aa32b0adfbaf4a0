//! One line of rtl_433's JSON output (`-F json -M time:unix:usec:utc -M protocol -M level -M stats`)
//! read into what the source needs: a decoded transmission (model, id, channel, its fields and the
//! receive metadata), or the periodic statistics line (`-M stats`) that proves the receiver is alive.
//! Pure: bytes in, a value out.
//!
//! The rules:
//! - A line is one JSON object; anything else is refused ([`LineError`]), counted by the caller.
//! - An object with `model` is a transmission. Its identity is `model`, `id` (integer or string) and
//!   `channel` (integer or letter) where the protocol has them. `time` is dropped (the gateway stamps
//!   `last_seen` itself), `model`, `id` and `channel` are the identity, not fields.
//! - Every other key is a field, named as rtl_433 names it (`temperature_C`, `humidity`, `battery_ok`,
//!   ...), flattened and sanitised as the JSON payload decoder does ([`crate::decode::json`]); the
//!   metadata (`rssi`, `snr`, `noise`, `freq`, `protocol`, `mic`, `mod`) stays among them, so it is in
//!   the device's state JSON.
//! - An object with `enabled` and `frames` but no `model` is the statistics line; any other object
//!   without `model` (a status report) is [`Line::Other`].

use crate::decode::json;
use crate::model::Value;

/// The keys that are metadata of the reception, not of the sensor: left out of repeat detection.
pub const METADATA_FIELDS: [&str; 9] = [
    "rssi", "snr", "noise", "freq", "freq1", "freq2", "mic", "mod", "protocol",
];

/// What one line is.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A decoded transmission.
    Event(Event),
    /// rtl_433's periodic statistics (`-M stats`).
    Stats,
    /// Any other object (a status report): activity, nothing to publish.
    Other,
}

/// One decoded transmission.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The decoder's model name (`"Nexus-TH"`).
    pub model: String,
    /// The sensor's id, where the protocol has one.
    pub id: Option<String>,
    /// The channel, where the protocol has one (`"1"`, `"A"`).
    pub channel: Option<String>,
    /// Fields in rtl_433's order, metadata included.
    pub fields: Vec<(String, Value)>,
}

impl Event {
    /// The received signal strength, dBm, when rtl_433 measured one (`-M level`).
    pub fn rssi(&self) -> Option<f64> {
        self.fields
            .iter()
            .find_map(|(name, value)| match (name.as_str(), value) {
                ("rssi", Value::Float(f)) => Some(*f),
                ("rssi", Value::Int(i)) => Some(*i as f64),
                _ => None,
            })
    }
}

/// Fields of events: a button pressed, a contact opened, an alarm.
const TRIGGER_FIELDS: [&str; 10] = [
    "button",
    "cmd",
    "event",
    "alarm",
    "tamper",
    "contact_open",
    "motion",
    "code",
    "state",
    "arm",
];
/// Field name prefixes of measurements: a sensor sending them reports on a schedule.
const MEASUREMENT_PREFIXES: [&str; 12] = [
    "temperature",
    "humidity",
    "moisture",
    "pressure",
    "wind_",
    "rain_",
    "power",
    "energy",
    "light",
    "uv",
    "current",
    "voltage",
];

impl Event {
    /// Whether this is a trigger-type device (a button, a door contact): it sends event fields and no
    /// measurement, so its silence says nothing about whether it is there.
    pub fn is_trigger(&self) -> bool {
        let measures = self
            .fields
            .iter()
            .any(|(name, _)| MEASUREMENT_PREFIXES.iter().any(|p| name.starts_with(p)));
        !measures
            && self
                .fields
                .iter()
                .any(|(name, _)| TRIGGER_FIELDS.contains(&name.as_str()))
    }
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Not a JSON object (or malformed JSON).
    #[error("not an rtl_433 JSON object: {0}")]
    NotJson(String),
    /// `model` is present but not a non-empty string.
    #[error("the model is not a non-empty string")]
    BadModel,
}

/// Reads one line (without its newline).
pub fn parse(bytes: &[u8]) -> Result<Line, LineError> {
    let payload = json::decode(bytes).map_err(|error| LineError::NotJson(error.to_string()))?;
    let mut model = None;
    let mut channel = None;
    let mut statistics = false;
    let mut fields = Vec::with_capacity(payload.fields.len());
    for (name, value) in payload.fields {
        match name.as_str() {
            "model" => model = Some(value),
            "channel" => channel = Some(value.to_plain_text()),
            "time" => {}
            "enabled" => statistics = true,
            _ => fields.push((name, value)),
        }
    }
    let Some(model) = model else {
        let frames = fields.iter().any(|(name, _)| name.starts_with("frames_"));
        return Ok(if statistics && frames {
            Line::Stats
        } else {
            Line::Other
        });
    };
    let model = match model {
        Value::Text(text) if !text.is_empty() => text,
        _ => return Err(LineError::BadModel),
    };
    Ok(Line::Event(Event {
        model,
        id: payload.address,
        channel,
        fields,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian's rtl_433 22.11 printed for `-R 19 -y {36}5b80d7f37...` with these options.
    const NEXUS: &str = r#"{"time" : "1700000000.123456", "protocol" : 19, "model" : "Nexus-TH", "id" : 91, "channel" : 1, "battery_ok" : 1, "temperature_C" : 21.500, "humidity" : 55, "mod" : "ASK", "freq" : 433.920, "rssi" : -7.1, "snr" : 21.5, "noise" : -28.6}"#;

    #[test]
    fn a_transmission_gives_identity_fields_and_metadata() {
        let Line::Event(event) = parse(NEXUS.as_bytes()).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(event.model, "Nexus-TH");
        assert_eq!(event.id.as_deref(), Some("91"));
        assert_eq!(event.channel.as_deref(), Some("1"));
        let names: Vec<&str> = event.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "protocol",
                "battery_ok",
                "temperature_C",
                "humidity",
                "mod",
                "freq",
                "rssi",
                "snr",
                "noise"
            ]
        );
        assert_eq!(event.fields[2].1, Value::Float(21.5));
        assert_eq!(event.rssi(), Some(-7.1));
    }

    #[test]
    fn letters_for_channels_strings_for_ids_and_no_id_at_all() {
        let line = br#"{"model":"Acurite-Tower","id":"0x1a2b","channel":"A","temperature_C":3.5}"#;
        let Line::Event(event) = parse(line).unwrap() else {
            panic!()
        };
        assert_eq!(event.id.as_deref(), Some("0x1a2b"));
        assert_eq!(event.channel.as_deref(), Some("A"));
        let Line::Event(event) = parse(br#"{"model":"Doorbell","cmd":3}"#).unwrap() else {
            panic!()
        };
        assert_eq!((&event.id, &event.channel), (&None, &None));
        assert_eq!(event.rssi(), None);
    }

    #[test]
    fn buttons_and_contacts_are_triggers_thermometers_are_not() {
        let event = |line: &[u8]| match parse(line).unwrap() {
            Line::Event(event) => event,
            other => panic!("{other:?}"),
        };
        assert!(event(
            br#"{"model":"Chuango-Security","id":19746,"cmd":"Single Delay Zone","cmd_id":10}"#
        )
        .is_trigger());
        assert!(event(
            br#"{"model":"Generic-Remote","id":1234,"cmd":42,"tristate":"00Z01Z0X0XXX"}"#
        )
        .is_trigger());
        // A soil sensor with a button bit still reports a measurement on a schedule.
        assert!(!event(br#"{"model":"Springfield-Soil","id":91,"temperature_C":21.5,"moisture":150,"button":0}"#).is_trigger());
        assert!(!event(NEXUS.as_bytes()).is_trigger());
    }

    #[test]
    fn the_statistics_line_and_other_objects() {
        let stats = br#"{"time" : "@2.621440s", "enabled" : 191, "since" : "2026-12-06T16:55:44", "frames" : {"count" : 0, "fsk" : 0, "events" : 0}, "stats" : []}"#;
        assert_eq!(parse(stats).unwrap(), Line::Stats);
        assert_eq!(
            parse(br#"{"center_frequency": 433920000}"#).unwrap(),
            Line::Other
        );
    }

    #[test]
    fn refused_lines() {
        assert!(matches!(
            parse(b"Tuned to 433.920MHz."),
            Err(LineError::NotJson(_))
        ));
        assert!(matches!(parse(b"[1,2]"), Err(LineError::NotJson(_))));
        assert!(matches!(
            parse(br#"{"model": 3}"#),
            Err(LineError::BadModel)
        ));
        assert!(matches!(
            parse(br#"{"model": ""}"#),
            Err(LineError::BadModel)
        ));
        assert!(matches!(
            parse(br#"{"model": "x""#),
            Err(LineError::NotJson(_))
        ));
    }
}
