//! Which of a codec's fields TTN's `normalizeUplink` named: the normalized output (The Things
//! Network's schema: `air.temperature`, `air.relativeHumidity`, `soil.moisture`, `battery`...) says
//! what a measurement is, in a unit the schema fixes, but not which field of `data` it came from. A
//! normalized number is matched to the one field of the decoded fields that holds the same number; a
//! number that several fields hold (two sensors both at 0) names none of them. The result feeds the
//! Home Assistant types of fields whose names say nothing (`TempC_SHT`); this module knows no Home
//! Assistant type itself.
//!
//! TTN allows the normalized data to be a list of measurements; the first is read.

use serde_json::Value as Json;

use crate::model::Value;

/// (field, normalized path) for each field the normalized output names, in the fields' order; the
/// path is dotted (`air.temperature`).
pub fn field_paths(fields: &[(String, Value)], normalized: &Json) -> Vec<(String, String)> {
    let measurement = match normalized {
        Json::Array(items) => items.first().unwrap_or(&Json::Null),
        other => other,
    };
    let mut leaves = Vec::new();
    numeric_leaves(measurement, "", &mut leaves);
    let mut named = Vec::new();
    for (path, number) in leaves {
        let mut holders = fields
            .iter()
            .filter(|(_, value)| as_number(value) == Some(number));
        if let (Some((field, _)), None) = (holders.next(), holders.next()) {
            if !named
                .iter()
                .any(|(known, _): &(String, String)| known == field)
            {
                named.push((field.clone(), path));
            }
        }
    }
    named.sort_by_key(|(field, _)| fields.iter().position(|(name, _)| name == field));
    named
}

/// At most this deep into the normalized object (the schema is two levels deep).
const MAX_DEPTH: usize = 4;

fn numeric_leaves(value: &Json, path: &str, found: &mut Vec<(String, f64)>) {
    match value {
        Json::Number(number) => {
            if let Some(number) = number.as_f64() {
                found.push((path.to_string(), number));
            }
        }
        Json::Object(members) if path.matches('.').count() < MAX_DEPTH => {
            for (key, member) in members {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                numeric_leaves(member, &inner, found);
            }
        }
        _ => {}
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(number) => Some(*number as f64),
        Value::Float(number) => Some(*number),
        Value::Bool(_) | Value::Text(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(list: &[(&str, Value)]) -> Vec<(String, Value)> {
        list.iter()
            .map(|(name, value)| (name.to_string(), value.clone()))
            .collect()
    }

    #[test]
    fn a_normalized_number_names_the_one_field_holding_it() {
        let decoded = fields(&[
            ("TempC_SHT", Value::Float(21.5)),
            ("Hum_SHT", Value::Int(40)),
            ("BatV", Value::Float(3.05)),
            ("status", Value::Text("ok".into())),
        ]);
        let normalized = json!({
            "air": {"temperature": 21.5, "relativeHumidity": 40.0},
            "battery": 3.05,
            "time": "2026-12-06T00:00:00Z"
        });
        assert_eq!(
            field_paths(&decoded, &normalized),
            vec![
                ("TempC_SHT".to_string(), "air.temperature".to_string()),
                ("Hum_SHT".to_string(), "air.relativeHumidity".to_string()),
                ("BatV".to_string(), "battery".to_string()),
            ]
        );
    }

    #[test]
    fn a_number_several_fields_hold_names_none_and_a_list_gives_its_first() {
        let decoded = fields(&[
            ("a", Value::Int(0)),
            ("b", Value::Int(0)),
            ("c", Value::Int(7)),
        ]);
        let normalized =
            json!([{"air": {"temperature": 0, "co2": 7}}, {"air": {"temperature": 1}}]);
        assert_eq!(
            field_paths(&decoded, &normalized),
            vec![("c".to_string(), "air.co2".to_string())]
        );
        assert!(field_paths(&decoded, &json!(null)).is_empty());
        assert!(field_paths(&decoded, &json!([])).is_empty());
    }
}
