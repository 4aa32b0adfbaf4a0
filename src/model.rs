//! The types that cross stages: a [`Packet`] as a source hands it over, the [`Reading`] a decoder makes of
//! it, the [`Value`]s inside, and the [`Message`] the registry asks the broker to publish. This module holds
//! data only: no IO, no clock, no configuration.

use std::time::SystemTime;

/// How a radio heard a packet. Serial sources have none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RadioMeta {
    /// Received signal strength of the packet, dBm.
    pub rssi_dbm: f32,
    /// Signal-to-noise ratio of the packet, dB.
    pub snr_db: f32,
    /// Centre frequency the radio listened on, Hz.
    pub frequency_hz: u32,
    /// LoRa spreading factor (6-12).
    pub spreading_factor: u8,
}

/// What a LoRaWAN network server adds to a reading: the frame counter, the FPort, and the gateway that
/// heard the uplink best (its EUI, 16 hex digits). Frequency and spreading factor are in [`RadioMeta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LorawanMeta {
    pub fcnt: u32,
    pub fport: Option<u8>,
    pub gateway: String,
}

/// One frame as a source hands it over: the bytes between two delimiters (serial) or one radio packet,
/// still carrying its CRC trailer and header, if the source is configured with them.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The `[[source]]` name it arrived on.
    pub source: String,
    /// The frame's bytes, delimiters and escaping removed.
    pub bytes: Vec<u8>,
    /// When the last byte of the frame arrived.
    pub received_at: SystemTime,
    /// Radio receive metadata, when a radio heard it.
    pub radio: Option<RadioMeta>,
}

/// One field value of a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as a field topic carries it: `21.5`, `true`, `ok`.
    pub fn to_plain_text(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f),
            Value::Text(s) => s.clone(),
        }
    }

    /// The value as JSON; a non-finite float becomes `null`.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// Formats a float the shortest way that reads back to the same value (`21.5`, not `21.500000001`),
/// rounding away binary noise from scaled integers (`0.1 * 272` prints as `27.2`).
pub fn format_float(f: f64) -> String {
    if !f.is_finite() {
        return "null".to_string();
    }
    let rounded = (f * 1e9).round() / 1e9;
    let text = format!("{rounded}");
    if text == "-0" {
        "0".to_string()
    } else {
        text
    }
}

/// What a decoder made of one packet: one device's fields at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The `[[source]]` name it arrived on.
    pub source: String,
    /// The device address the header or payload carries (`"17"`), or empty when neither carries one.
    pub address: String,
    /// The sender's sequence number, when the header or payload carries one (used for duplicate detection).
    pub seq: Option<u32>,
    /// Field name and value, in the order they were decoded.
    pub fields: Vec<(String, Value)>,
    /// When the packet arrived.
    pub received_at: SystemTime,
    /// Radio receive metadata, when a radio heard it.
    pub radio: Option<RadioMeta>,
    /// LoRaWAN metadata, when a LoRaWAN network server accepted it.
    pub lorawan: Option<LorawanMeta>,
}

/// An MQTT message the gateway wants published on the embedded broker (or one the broker saw published).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_without_binary_noise() {
        assert_eq!(format_float(0.1 * 272.0), "27.2");
        assert_eq!(format_float(21.5), "21.5");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
    }
}
