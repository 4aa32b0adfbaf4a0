//! The command payloads: on `{base}/{device}/set` a JSON object of fields (or `{"raw": "hex"}`), on
//! `{base}/{device}/set/{field}` a plain value (the topics are `crate::topic::commands`'). This module
//! parses a payload into a [`CommandPayload`]; it never looks a device up and never encodes for a source.

use crate::encode::{parse_hex, CommandPayload};
use crate::model::Value;

/// The most fields one command may set.
pub const MAX_FIELDS: usize = 64;

/// Why a payload is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not UTF-8 text")]
    NotUtf8,
    #[error("the payload is not a JSON object of fields: {0}")]
    NotObject(String),
    #[error("field {0:?}: nested objects, arrays and null cannot be sent")]
    Unsupported(String),
    #[error("\"raw\": {0}")]
    BadRaw(String),
    #[error("\"raw\" goes alone, without other fields")]
    RawWithFields,
    #[error("more than {MAX_FIELDS} fields")]
    TooMany,
    #[error("field names may not be empty")]
    EmptyName,
}

/// A plain value of `set/{field}`: `true`/`false` (also `ON`/`OFF`, as Home Assistant switches send by
/// default), an integer, a finite number, or text.
pub fn plain_value(text: &str) -> Value {
    let trimmed = text.trim();
    match trimmed.to_ascii_lowercase().as_str() {
        "true" | "on" => return Value::Bool(true),
        "false" | "off" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(int) = trimmed.parse::<i64>() {
        return Value::Int(int);
    }
    match trimmed.parse::<f64>() {
        Ok(float) if float.is_finite() && !trimmed.is_empty() => Value::Float(float),
        _ => Value::Text(trimmed.to_string()),
    }
}

/// The command in a payload: for `set/{field}` its plain value, for `set` a JSON object of fields with
/// booleans, numbers and strings, or `{"raw": "hex"}`.
pub fn parse_payload(field: Option<&str>, payload: &[u8]) -> Result<CommandPayload, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    if let Some(field) = field {
        if field == "raw" {
            return parse_hex(text.trim())
                .map(CommandPayload::Raw)
                .map_err(PayloadError::BadRaw);
        }
        return Ok(CommandPayload::Fields(vec![(
            field.to_string(),
            plain_value(text),
        )]));
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| PayloadError::NotObject(e.to_string()))?;
    if object.len() > MAX_FIELDS {
        return Err(PayloadError::TooMany);
    }
    if let Some(raw) = object.get("raw") {
        if object.len() > 1 {
            return Err(PayloadError::RawWithFields);
        }
        let hex = raw
            .as_str()
            .ok_or_else(|| PayloadError::BadRaw("is not a string of hex digits".to_string()))?;
        return parse_hex(hex)
            .map(CommandPayload::Raw)
            .map_err(PayloadError::BadRaw);
    }
    let mut fields = Vec::with_capacity(object.len());
    for (name, value) in object {
        if name.is_empty() {
            return Err(PayloadError::EmptyName);
        }
        let value = match value {
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => match n.as_f64() {
                    Some(f) => Value::Float(f),
                    None => return Err(PayloadError::Unsupported(name)),
                },
            },
            serde_json::Value::String(s) => Value::Text(s),
            _ => return Err(PayloadError::Unsupported(name)),
        };
        fields.push((name, value));
    }
    Ok(CommandPayload::Fields(fields))
}

/// The fields of a command as the result message shows them.
pub fn fields_json(payload: &CommandPayload) -> serde_json::Value {
    match payload {
        CommandPayload::Raw(bytes) => {
            serde_json::json!({ "raw": crate::encode::to_hex(bytes) })
        }
        CommandPayload::Fields(fields) => serde_json::Value::Object(
            fields
                .iter()
                .map(|(name, value)| (name.clone(), value.to_json()))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(
            parse_payload(
                None,
                br#"{"digital_output_1": 1, "relay": true, "x": 2.5, "t": "hi"}"#
            )
            .unwrap(),
            CommandPayload::Fields(vec![
                ("digital_output_1".into(), Value::Int(1)),
                ("relay".into(), Value::Bool(true)),
                ("t".into(), Value::Text("hi".into())),
                ("x".into(), Value::Float(2.5)),
            ])
        );
        assert_eq!(
            parse_payload(None, br#"{"raw": "0a0b"}"#).unwrap(),
            CommandPayload::Raw(vec![10, 11])
        );
        assert_eq!(
            parse_payload(Some("relay"), b"ON").unwrap(),
            CommandPayload::Fields(vec![("relay".into(), Value::Bool(true))])
        );
        assert_eq!(plain_value("21.5"), Value::Float(21.5));
        assert_eq!(plain_value("-3"), Value::Int(-3));
        assert_eq!(plain_value("open"), Value::Text("open".into()));
        assert!(parse_payload(None, b"[1]").is_err());
        assert!(parse_payload(None, br#"{"a": {"b": 1}}"#).is_err());
        assert!(parse_payload(None, br#"{"raw": "0a", "x": 1}"#).is_err());
        assert!(parse_payload(None, br#"{"raw": "0"}"#).is_err());
        assert!(parse_payload(None, &[0xFF]).is_err());
    }
}
