//! Cayenne LPP command payloads: fields named `<type>_<channel>` back into `[channel][type][data]`
//! records, from the decoder's own type table ([`crate::decode::lpp`]), so every type the gateway reads it
//! can also write. The output types are the usual commands (`digital_out_1` = 1 switches a relay,
//! `analog_out_2` = 12.5 sets a level); `digital_output_N` and `analog_output_N` are accepted as their
//! other common names. Multi-value types need every component (`colour_2_r`, `colour_2_g`, `colour_2_b`).
//! A value is scaled by the type's resolution and rounded; one that does not fit the type's bytes is
//! refused (a command is not saturated, unlike the simulator's readings). Booleans are 1 and 0.

use super::{Control, EncodeError};
use crate::decode::lpp::{Layout, LppType, TYPES};
use crate::model::Value;

/// Other names of the output types, as some network servers and dashboards write them.
const ALIASES: [(&str, &str); 2] = [
    ("digital_output", "digital_out"),
    ("analog_output", "analog_out"),
];

/// The components of a multi-value type, in record order.
fn components(layout: Layout) -> &'static [&'static str] {
    match layout {
        Layout::Axes(_) => &["x", "y", "z"],
        Layout::Gps => &["latitude", "longitude", "altitude"],
        Layout::Rgb => &["r", "g", "b"],
        _ => &[],
    }
}

/// A field name split into its type, channel and component (`colour_2_r` -> colour, 2, Some("r")).
fn parse_name(name: &str) -> Option<(&'static LppType, u8, Option<&'static str>)> {
    for lpp_type in TYPES {
        let names = std::iter::once(lpp_type.name).chain(
            ALIASES
                .iter()
                .filter(|(_, canonical)| *canonical == lpp_type.name)
                .map(|(alias, _)| *alias),
        );
        for type_name in names {
            let Some(rest) = name
                .strip_prefix(type_name)
                .and_then(|r| r.strip_prefix('_'))
            else {
                continue;
            };
            let wanted = components(lpp_type.layout);
            let (channel, component) = match rest.split_once('_') {
                Some((channel, part)) => {
                    let part = wanted.iter().find(|c| **c == part).copied()?;
                    (channel, Some(part))
                }
                None if wanted.is_empty() => (rest, None),
                None => continue,
            };
            let digits_only = !channel.is_empty() && channel.bytes().all(|b| b.is_ascii_digit());
            if let (true, Ok(channel)) = (digits_only, channel.parse::<u8>()) {
                return Some((lpp_type, channel, component));
            }
        }
    }
    None
}

/// The value as a number, or why not.
fn number(value: &Value) -> Result<f64, String> {
    match value {
        Value::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) if f.is_finite() => Ok(*f),
        Value::Float(_) => Err("is not a finite number".to_string()),
        Value::Text(t) => Err(format!("{t:?} is not a number")),
    }
}

/// `value * factor`, rounded, as big-endian bytes of `size`, if it fits (`signed` or not).
fn scaled(value: f64, factor: f64, size: usize, signed: bool) -> Result<Vec<u8>, String> {
    let raw = (value * factor).round();
    let bits = 8 * size as i32;
    let (min, max) = if signed {
        (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0)
    } else {
        (0.0, 2f64.powi(bits) - 1.0)
    };
    if raw < min || raw > max {
        return Err(format!(
            "{value} is outside {}..={} for this type",
            min / factor,
            max / factor
        ));
    }
    let raw = raw as i64;
    Ok(raw.to_be_bytes()[8 - size..].to_vec())
}

/// The data bytes of one single-value record.
fn single(lpp_type: &LppType, value: f64) -> Result<Vec<u8>, String> {
    match lpp_type.layout {
        Layout::Unsigned => scaled(value, 1.0, lpp_type.size, false),
        Layout::Signed => scaled(value, 1.0, lpp_type.size, true),
        Layout::UnsignedScaled(factor) => scaled(value, factor, lpp_type.size, false),
        Layout::SignedScaled(factor) => scaled(value, factor, lpp_type.size, true),
        Layout::Axes(_) | Layout::Gps | Layout::Rgb => Err("needs its components".to_string()),
    }
}

/// The data bytes of a multi-value record from its components' values, in record order.
fn multi(lpp_type: &LppType, values: &[f64]) -> Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(lpp_type.size);
    for (i, &value) in values.iter().enumerate() {
        let part = match lpp_type.layout {
            Layout::Axes(factor) => scaled(value, factor, 2, true)?,
            Layout::Gps => scaled(value, if i < 2 { 10_000.0 } else { 100.0 }, 3, true)?,
            Layout::Rgb => scaled(value, 1.0, 1, false)?,
            _ => return Err("is not a multi-value type".to_string()),
        };
        data.extend(part);
    }
    Ok(data)
}

/// The records for `fields`, in the order their first field appears.
pub fn encode(fields: &[(String, Value)]) -> Result<Vec<u8>, EncodeError> {
    let refuse = |field: &str, why: String| EncodeError::Field {
        field: field.to_string(),
        why,
    };
    let mut bytes = Vec::new();
    // Multi-value records already written, by (type, channel).
    let mut written: Vec<(u8, u8)> = Vec::new();
    for (name, value) in fields {
        let Some((lpp_type, channel, component)) = parse_name(name) else {
            return Err(refuse(
                name,
                "is not a Cayenne LPP field (<type>_<channel>, e.g. digital_out_1)".to_string(),
            ));
        };
        let data = match component {
            None => single(lpp_type, number(value).map_err(|why| refuse(name, why))?)
                .map_err(|why| refuse(name, why))?,
            Some(_) => {
                if written.contains(&(lpp_type.id, channel)) {
                    continue;
                }
                written.push((lpp_type.id, channel));
                let base = format!("{}_{channel}", lpp_type.name);
                let mut values = Vec::new();
                for part in components(lpp_type.layout) {
                    let wanted = |n: &str| {
                        parse_name(n).is_some_and(|(t, c, p)| {
                            t.id == lpp_type.id && c == channel && p == Some(part)
                        })
                    };
                    let Some((_, value)) = fields.iter().find(|(n, _)| wanted(n)) else {
                        return Err(refuse(&base, format!("needs its component {base}_{part}")));
                    };
                    values.push(number(value).map_err(|why| refuse(&base, why))?);
                }
                multi(lpp_type, &values).map_err(|why| refuse(&base, why))?
            }
        };
        bytes.push(channel);
        bytes.push(lpp_type.id);
        bytes.extend(data);
    }
    Ok(bytes)
}

/// `digital_out_N` is a switch; `analog_out_N` a number (-327.68..327.67 in steps of 0.01).
pub fn control_of(field: &str) -> Option<Control> {
    let (lpp_type, _, _) = parse_name(field)?;
    match lpp_type.name {
        "digital_out" => Some(Control::Switch),
        "analog_out" => Some(Control::Number {
            min: -327.68,
            max: 327.67,
            step: 0.01,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::lpp::decode;

    fn field(name: &str, value: Value) -> (String, Value) {
        (name.to_string(), value)
    }

    #[test]
    fn output_types_and_aliases() {
        let bytes = encode(&[
            field("digital_output_1", Value::Bool(true)),
            field("analog_out_2", Value::Float(12.5)),
        ])
        .unwrap();
        assert_eq!(bytes, [1, 1, 1, 2, 3, 0x04, 0xE2]);
        assert_eq!(
            decode(&bytes).unwrap().fields,
            vec![
                field("digital_out_1", Value::Int(1)),
                field("analog_out_2", Value::Float(12.5))
            ]
        );
    }

    #[test]
    fn any_type_by_name_including_components() {
        let fields = vec![
            field("temperature_3", Value::Float(-4.1)),
            field("colour_2_r", Value::Int(255)),
            field("colour_2_g", Value::Int(128)),
            field("colour_2_b", Value::Int(0)),
        ];
        let bytes = encode(&fields).unwrap();
        assert_eq!(bytes, [3, 103, 0xFF, 0xD7, 2, 135, 255, 128, 0]);
        assert_eq!(decode(&bytes).unwrap().fields, fields);
    }

    #[test]
    fn refusals_name_the_field() {
        let err = |fields: &[(String, Value)]| encode(fields).unwrap_err().to_string();
        assert!(err(&[field("relay", Value::Int(1))]).contains("relay"));
        assert!(err(&[field("digital_out_1", Value::Int(256))]).contains("outside"));
        assert!(err(&[field("digital_out_1", Value::Int(-1))]).contains("outside"));
        assert!(err(&[field("digital_out_x", Value::Int(1))]).contains("not a Cayenne"));
        assert!(err(&[field("digital_out_256", Value::Int(1))]).contains("not a Cayenne"));
        assert!(err(&[field("colour_2_r", Value::Int(1))]).contains("colour_2_g"));
        assert!(err(&[field("analog_out_1", Value::Text("x".into()))]).contains("not a number"));
    }
}
