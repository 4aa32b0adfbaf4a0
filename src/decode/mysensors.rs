//! MySensors serial API 2.x lines, `node;child;command;ack;type;payload`, turned into fields. This module
//! owns the command and value-type tables; it never sees framing, CRC or headers.
//!
//! - command 1 (set): one field `<value type>_<child>`, the value type being the `V_` name in lower case
//!   without `V_` (`12;6;1;0;0;21.5` gives `temp_6` = 21.5 for node 12). All 57 types of MySensors 2.x
//!   (V_TEMP 0 ... V_POWER_FACTOR 56) are known; the deprecated aliases (V_LIGHT, V_DIMMER, V_HEATER)
//!   share numbers with, and are named after, their successors (`status`, `percentage`,
//!   `hvac_flow_state`). An unknown value type refuses the line.
//! - command 3 (internal) with type I_BATTERY_LEVEL (0): one field `battery_level` (no child suffix).
//! - presentation (0), req (2), stream (4) and every other internal message carry no reading: `Ok(None)`.
//! - A payload that reads as an integer becomes an Int, as a finite decimal number a Float, anything else
//!   Text. The payload is everything after the fifth `;` (V_POSITION's contains `;` itself).
//! - The address is the node id (`"12"`); MySensors lines carry no sequence number.
//! - Fewer than six fields, a header field that is not a decimal number in range (node, child and type
//!   0-255, command 0-4, ack 0-1), or text that is not UTF-8 refuse the line.

use super::{DecodeError, PayloadFields};
use crate::model::Value;

const COMMAND_SET: u8 = 1;
const COMMAND_INTERNAL: u8 = 3;
const LAST_COMMAND: u8 = 4;
const I_BATTERY_LEVEL: u8 = 0;

/// MySensors 2.x value types (`V_*`), indexed by number, named in lower case without `V_` (the command
/// encoder, `crate::encode::mysensors`, reads the same table).
pub(crate) const VALUE_TYPES: [&str; 57] = [
    "temp",               // 0 V_TEMP
    "hum",                // 1 V_HUM
    "status",             // 2 V_STATUS (V_LIGHT)
    "percentage",         // 3 V_PERCENTAGE (V_DIMMER)
    "pressure",           // 4 V_PRESSURE
    "forecast",           // 5 V_FORECAST
    "rain",               // 6 V_RAIN
    "rainrate",           // 7 V_RAINRATE
    "wind",               // 8 V_WIND
    "gust",               // 9 V_GUST
    "direction",          // 10 V_DIRECTION
    "uv",                 // 11 V_UV
    "weight",             // 12 V_WEIGHT
    "distance",           // 13 V_DISTANCE
    "impedance",          // 14 V_IMPEDANCE
    "armed",              // 15 V_ARMED
    "tripped",            // 16 V_TRIPPED
    "watt",               // 17 V_WATT
    "kwh",                // 18 V_KWH
    "scene_on",           // 19 V_SCENE_ON
    "scene_off",          // 20 V_SCENE_OFF
    "hvac_flow_state",    // 21 V_HVAC_FLOW_STATE (V_HEATER)
    "hvac_speed",         // 22 V_HVAC_SPEED
    "light_level",        // 23 V_LIGHT_LEVEL
    "var1",               // 24 V_VAR1
    "var2",               // 25 V_VAR2
    "var3",               // 26 V_VAR3
    "var4",               // 27 V_VAR4
    "var5",               // 28 V_VAR5
    "up",                 // 29 V_UP
    "down",               // 30 V_DOWN
    "stop",               // 31 V_STOP
    "ir_send",            // 32 V_IR_SEND
    "ir_receive",         // 33 V_IR_RECEIVE
    "flow",               // 34 V_FLOW
    "volume",             // 35 V_VOLUME
    "lock_status",        // 36 V_LOCK_STATUS
    "level",              // 37 V_LEVEL
    "voltage",            // 38 V_VOLTAGE
    "current",            // 39 V_CURRENT
    "rgb",                // 40 V_RGB
    "rgbw",               // 41 V_RGBW
    "id",                 // 42 V_ID
    "unit_prefix",        // 43 V_UNIT_PREFIX
    "hvac_setpoint_cool", // 44 V_HVAC_SETPOINT_COOL
    "hvac_setpoint_heat", // 45 V_HVAC_SETPOINT_HEAT
    "hvac_flow_mode",     // 46 V_HVAC_FLOW_MODE
    "text",               // 47 V_TEXT
    "custom",             // 48 V_CUSTOM
    "position",           // 49 V_POSITION
    "ir_record",          // 50 V_IR_RECORD
    "ph",                 // 51 V_PH
    "orp",                // 52 V_ORP
    "ec",                 // 53 V_EC
    "var",                // 54 V_VAR
    "va",                 // 55 V_VA
    "power_factor",       // 56 V_POWER_FACTOR
];

/// Decodes one line; `Ok(None)` for messages that carry no reading.
pub fn decode(bytes: &[u8]) -> Result<Option<PayloadFields>, DecodeError> {
    let line = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    let line = line.trim();
    let mut parts = line.splitn(6, ';');
    let mut header = [""; 5];
    for (i, slot) in header.iter_mut().enumerate() {
        *slot = parts.next().ok_or(DecodeError::MySensorsFieldCount(i))?;
    }
    let payload = parts.next().ok_or(DecodeError::MySensorsFieldCount(5))?;
    let [node, child, command, ack, value_type] = header;

    let node = number("node", node, u8::MAX)?;
    let child = number("child", child, u8::MAX)?;
    let command = number("command", command, LAST_COMMAND)?;
    number("ack", ack, 1)?;
    let value_type = number("type", value_type, u8::MAX)?;

    let field = match command {
        COMMAND_SET => {
            let name = VALUE_TYPES
                .get(usize::from(value_type))
                .ok_or(DecodeError::MySensorsUnknownValueType(value_type))?;
            format!("{name}_{child}")
        }
        COMMAND_INTERNAL if value_type == I_BATTERY_LEVEL => "battery_level".to_string(),
        _ => return Ok(None),
    };
    Ok(Some(PayloadFields {
        address: Some(node.to_string()),
        seq: None,
        fields: vec![(field, payload_value(payload))],
    }))
}

/// A decimal header field no greater than `max`.
fn number(field: &'static str, text: &str, max: u8) -> Result<u8, DecodeError> {
    text.parse::<u8>()
        .ok()
        .filter(|&n| n <= max && text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| DecodeError::MySensorsBadNumber {
            field,
            text: text.chars().take(16).collect(),
        })
}

/// An integer, a finite decimal number, or text.
fn payload_value(payload: &str) -> Value {
    if let Ok(int) = payload.parse::<i64>() {
        return Value::Int(int);
    }
    let numeric = !payload.is_empty()
        && payload
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    match payload.parse::<f64>() {
        Ok(float) if numeric && float.is_finite() => Value::Float(float),
        _ => Value::Text(payload.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_field(line: &str) -> (String, String, Value) {
        let decoded = decode(line.as_bytes()).unwrap().unwrap();
        assert_eq!(decoded.fields.len(), 1);
        let (name, value) = decoded.fields.into_iter().next().unwrap();
        (decoded.address.unwrap(), name, value)
    }

    #[test]
    fn reference_example() {
        assert_eq!(
            one_field("12;6;1;0;0;21.5"),
            ("12".into(), "temp_6".into(), Value::Float(21.5))
        );
    }

    #[test]
    fn set_messages_of_the_reference_table() {
        assert_eq!(one_field("3;1;1;0;1;55").1, "hum_1");
        assert_eq!(one_field("3;2;1;0;2;1").2, Value::Int(1));
        assert_eq!(one_field("3;2;1;0;2;1").1, "status_2");
        assert_eq!(one_field("3;4;1;0;4;1013.2").1, "pressure_4");
        assert_eq!(one_field("3;5;1;0;23;80").1, "light_level_5");
        assert_eq!(
            one_field("3;9;1;1;38;3.71\r"),
            ("3".into(), "voltage_9".into(), Value::Float(3.71))
        );
        assert_eq!(one_field("3;9;1;0;56;-0.5").1, "power_factor_9");
    }

    #[test]
    fn text_payloads_stay_text() {
        assert_eq!(one_field("3;1;1;0;5;sunny").2, Value::Text("sunny".into()));
        assert_eq!(
            one_field("3;1;1;0;40;ff0000").2,
            Value::Text("ff0000".into())
        );
        assert_eq!(one_field("3;1;1;0;47;inf").2, Value::Text("inf".into()));
        assert_eq!(one_field("3;1;1;0;47;").2, Value::Text(String::new()));
        // V_POSITION's payload has ';' of its own.
        assert_eq!(
            one_field("3;1;1;0;49;55.722526;13.017972;18"),
            (
                "3".into(),
                "position_1".into(),
                Value::Text("55.722526;13.017972;18".into())
            )
        );
    }

    #[test]
    fn battery_level_is_a_field() {
        assert_eq!(
            one_field("7;255;3;0;0;87"),
            ("7".into(), "battery_level".into(), Value::Int(87))
        );
    }

    #[test]
    fn messages_without_readings() {
        for line in [
            "12;6;0;0;6;Outdoor temp", // presentation
            "12;6;2;0;0;",             // req
            "0;255;3;0;14;Gateway startup complete.",
            "0;255;3;0;9;TSF:MSG:READ", // log message
            "12;255;4;0;0;0100",        // stream
        ] {
            assert_eq!(decode(line.as_bytes()), Ok(None), "{line}");
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert_eq!(
            decode(b"12;6;1;0;0"),
            Err(DecodeError::MySensorsFieldCount(5))
        );
        assert_eq!(decode(b"hello"), Err(DecodeError::MySensorsFieldCount(1)));
        assert!(matches!(
            decode(b"x;6;1;0;0;21.5"),
            Err(DecodeError::MySensorsBadNumber { field: "node", .. })
        ));
        assert!(matches!(
            decode(b"256;6;1;0;0;21.5"),
            Err(DecodeError::MySensorsBadNumber { field: "node", .. })
        ));
        assert!(matches!(
            decode(b"12;6;5;0;0;21.5"),
            Err(DecodeError::MySensorsBadNumber {
                field: "command",
                ..
            })
        ));
        assert!(matches!(
            decode(b"12;+6;1;0;0;21.5"),
            Err(DecodeError::MySensorsBadNumber { field: "child", .. })
        ));
        assert!(matches!(
            decode(b"12;6;1;2;0;21.5"),
            Err(DecodeError::MySensorsBadNumber { field: "ack", .. })
        ));
        assert_eq!(
            decode(b"12;6;1;0;57;1"),
            Err(DecodeError::MySensorsUnknownValueType(57))
        );
        assert_eq!(decode(&[b'1', b';', 0xFF]), Err(DecodeError::NotUtf8));
    }
}
