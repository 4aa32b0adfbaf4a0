//! JSON command payloads: one object `{"id": ..., fields...}`, the inverse of [`crate::decode::json`]. The
//! `id` is the device's address (an integer when the address is one, so `"17"` is written `17`, as nodes
//! usually send it), then the fields in the order given. Field names are written as they are: a name
//! the decoder would read back differently (`id`, `seq`, an empty name) is refused, and so is a
//! non-finite number, which JSON cannot carry.

use super::EncodeError;
use crate::model::Value;

/// `{"id":<address>,<fields>}`; without an address, no `id`.
pub fn encode(address: &str, fields: &[(String, Value)]) -> Result<Vec<u8>, EncodeError> {
    let mut members: Vec<String> = Vec::with_capacity(fields.len() + 1);
    if !address.is_empty() {
        let id = match address.parse::<u64>() {
            Ok(number) if number.to_string() == address => serde_json::Value::from(number),
            _ => serde_json::Value::String(address.to_string()),
        };
        members.push(format!("\"id\":{id}"));
    }
    for (name, value) in fields {
        let refuse = |why: &str| EncodeError::Field {
            field: name.clone(),
            why: why.to_string(),
        };
        if name.is_empty() || name == "id" || name == "seq" {
            return Err(refuse("is not a field name a JSON node reads as a field"));
        }
        let json = match value {
            Value::Float(f) if !f.is_finite() => return Err(refuse("is not a finite number")),
            other => other.to_json(),
        };
        // Written by hand so the order is the command's (serde_json's map sorts its keys).
        members.push(format!(
            "{}:{json}",
            serde_json::Value::String(name.clone())
        ));
    }
    Ok(format!("{{{}}}", members.join(",")).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json::decode;

    #[test]
    fn writes_the_id_first_and_reads_back() {
        let fields = vec![
            ("relay".to_string(), Value::Bool(true)),
            ("level".to_string(), Value::Float(2.5)),
        ];
        let bytes = encode("17", &fields).unwrap();
        assert_eq!(bytes, br#"{"id":17,"relay":true,"level":2.5}"#);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.address.as_deref(), Some("17"));
        assert_eq!(back.fields, fields);
        assert_eq!(encode("n1", &[]).unwrap(), br#"{"id":"n1"}"#);
        assert_eq!(encode("007", &[]).unwrap(), br#"{"id":"007"}"#);
    }

    #[test]
    fn names_and_values_json_cannot_carry_are_refused() {
        for name in ["id", "seq", ""] {
            assert!(encode("1", &[(name.to_string(), Value::Int(1))]).is_err());
        }
        assert!(encode("1", &[("x".to_string(), Value::Float(f64::NAN))]).is_err());
    }
}
