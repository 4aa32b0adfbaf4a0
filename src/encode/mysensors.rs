//! MySensors command payloads: one field `<value type>_<child>` (`status_3`) into one `C_SET` message
//! `node;child;1;0;type;value` (`12;3;1;0;2;1`), the inverse of [`crate::decode::mysensors`], from the
//! decoder's own value-type table. The node is the device's address (0-254; 255 is MySensors' broadcast
//! and unassigned id); no acknowledgement is requested. Booleans are written `1`/`0`, as MySensors
//! sketches read them. The line has no line ending: the `lines` framing adds one on a serial port.

use super::{Control, EncodeError};
use crate::decode::mysensors::VALUE_TYPES;
use crate::model::{format_float, Value};

const COMMAND_SET: u8 = 1;

/// The value types worth announcing as controls: on/off actuators, and the levels and set points.
const SWITCHES: [&str; 6] = ["status", "armed", "lock_status", "up", "down", "stop"];
const NUMBERS: [(&str, f64, f64, f64); 4] = [
    ("percentage", 0.0, 100.0, 1.0),
    ("hvac_setpoint_heat", 5.0, 35.0, 0.5),
    ("hvac_setpoint_cool", 5.0, 35.0, 0.5),
    ("var1", -1e9, 1e9, 1.0),
];

/// The MySensors node id of a device address.
pub fn node_of(address: &str) -> Result<u8, EncodeError> {
    match address.parse::<u8>() {
        Ok(node) if node < 255 && node.to_string() == address => Ok(node),
        _ => Err(EncodeError::Address {
            address: address.to_string(),
            why: "is not a MySensors node id (0-254)",
        }),
    }
}

/// `<value type>_<child>` into (value type number, child).
fn parse_name(name: &str) -> Option<(u8, u8)> {
    let (type_name, child) = name.rsplit_once('_')?;
    let value_type = VALUE_TYPES.iter().position(|t| *t == type_name)?;
    let digits_only = !child.is_empty() && child.bytes().all(|b| b.is_ascii_digit());
    let child: u8 = child.parse().ok().filter(|_| digits_only)?;
    Some((u8::try_from(value_type).ok()?, child))
}

/// The `C_SET` message for one field.
pub fn encode_set(node: u8, field: &str, value: &Value) -> Result<Vec<u8>, EncodeError> {
    let refuse = |why: &str| EncodeError::Field {
        field: field.to_string(),
        why: why.to_string(),
    };
    let (value_type, child) = parse_name(field)
        .ok_or_else(|| refuse("is not a MySensors field (<value type>_<child>, e.g. status_1)"))?;
    let text = match value {
        Value::Bool(b) => u8::from(*b).to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) if f.is_finite() => format_float(*f),
        Value::Float(_) => return Err(refuse("is not a finite number")),
        Value::Text(t) => {
            if t.chars().any(char::is_control) || t.trim() != t {
                return Err(refuse(
                    "text with control characters or surrounding spaces does not survive a MySensors line",
                ));
            }
            t.clone()
        }
    };
    Ok(format!("{node};{child};{COMMAND_SET};0;{value_type};{text}").into_bytes())
}

/// `status_N` and the other on/off types are switches; levels and set points numbers.
pub fn control_of(field: &str) -> Option<Control> {
    let (value_type, _) = parse_name(field)?;
    let name = VALUE_TYPES[usize::from(value_type)];
    if SWITCHES.contains(&name) {
        return Some(Control::Switch);
    }
    NUMBERS
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(_, min, max, step)| Control::Number { min, max, step })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::mysensors::decode;

    #[test]
    fn set_messages_read_back() {
        let line = encode_set(12, "status_3", &Value::Bool(true)).unwrap();
        assert_eq!(line, b"12;3;1;0;2;1");
        let back = decode(&line).unwrap().unwrap();
        assert_eq!(back.address.as_deref(), Some("12"));
        assert_eq!(back.fields, vec![("status_3".to_string(), Value::Int(1))]);
        let line = encode_set(4, "hvac_setpoint_heat_1", &Value::Float(21.5)).unwrap();
        assert_eq!(line, b"4;1;1;0;45;21.5");
        let line = encode_set(4, "text_2", &Value::Text("hello world".into())).unwrap();
        assert_eq!(line, b"4;2;1;0;47;hello world");
    }

    #[test]
    fn refusals() {
        assert!(encode_set(1, "relay", &Value::Int(1)).is_err());
        assert!(encode_set(1, "status_x", &Value::Int(1)).is_err());
        assert!(encode_set(1, "text_1", &Value::Text("a\nb".into())).is_err());
        assert!(node_of("255").is_err());
        assert!(node_of("07").is_err());
        assert_eq!(node_of("7").unwrap(), 7);
    }
}
