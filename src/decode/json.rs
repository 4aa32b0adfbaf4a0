//! JSON payloads: one UTF-8 object per frame, turned into fields in the order they arrive. This module
//! owns the mapping from JSON to field names and values; it never sees framing, CRC or headers.
//!
//! The rules:
//! - The frame must be an object; an array, number, string, boolean or null is refused.
//! - Top-level `"id"` (a string or an integer) is the device address, not a field. A string id must be
//!   usable in a topic: non-empty, without `+ # /`, NUL or control characters, else the frame is refused.
//!   When the link header carries an address, the header wins and `id` is ignored.
//! - Top-level `"seq"` must be an integer 0..=4294967295 and is the sequence number, not a field (a header
//!   sequence wins over it).
//! - Nested objects are flattened with `_` (`{"a":{"b":1}}` gives `a_b`); arrays are flattened by index
//!   (`{"v":[1,2]}` gives `v_0`, `v_1`), also when they hold objects or arrays (`a_0_b`).
//! - Booleans, integers, floats and strings become [`Value`]s (an integer above `i64::MAX` becomes a
//!   float); `null` fields are skipped; empty objects and arrays give no field.
//! - Field names are sanitised into one MQTT topic level exactly as device names are
//!   ([`crate::publish::sanitize_level`]): `+`, `#`, `/`, NUL and other control characters become `_`, so
//!   does a leading `$` (`$x` gives `_x`), and a name is cut to 128 bytes. An empty key (at any depth)
//!   refuses the frame. Repeated names (also those that became equal by sanitising) are kept in order;
//!   whoever keeps the latest state sees the last one.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{DecodeError, PayloadFields};
use crate::model::Value;

/// Decodes one JSON object into fields, address (`id`) and sequence number (`seq`).
pub fn decode(bytes: &[u8]) -> Result<PayloadFields, DecodeError> {
    let shape = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        Some(b'-' | b'0'..=b'9') => Some("a number"),
        _ => None,
    };
    if let Some(shape) = shape {
        return Err(DecodeError::JsonNotObject(shape));
    }
    let mut out = PayloadFields::default();
    let mut problem = None;
    let mut parser = serde_json::Deserializer::from_slice(bytes);
    let parsed = parser
        .deserialize_any(TopLevel {
            out: &mut out,
            problem: &mut problem,
        })
        .and_then(|()| parser.end());
    match (parsed, problem) {
        (Ok(()), _) => Ok(out),
        (Err(_), Some(problem)) => Err(problem),
        (Err(error), None) => Err(DecodeError::Json(error.to_string())),
    }
}

/// Whether `c` may not appear in an MQTT topic level (or should not: control characters).
fn is_topic_unsafe(c: char) -> bool {
    matches!(c, '+' | '#' | '/') || c.is_control()
}

/// Records why the frame is refused (the parser's own error only says "custom") and stops the parse.
fn refuse<E: serde::de::Error>(problem: &mut Option<DecodeError>, why: DecodeError) -> E {
    let message = why.to_string();
    *problem = Some(why);
    E::custom(message)
}

/// The top-level object: `id` and `seq` are picked out, everything else is flattened into fields.
struct TopLevel<'a> {
    out: &'a mut PayloadFields,
    problem: &'a mut Option<DecodeError>,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut name = String::new();
        while let Some(key) = map.next_key_seed(Key)? {
            match &*key {
                "id" => {
                    let id = address_of(map.next_value::<serde_json::Value>()?)
                        .map_err(|why| refuse(self.problem, why))?;
                    self.out.address = Some(id);
                }
                "seq" => {
                    let seq = map
                        .next_value::<serde_json::Value>()?
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| refuse(self.problem, DecodeError::JsonBadSeq))?;
                    self.out.seq = Some(seq);
                }
                "" => return Err(refuse(self.problem, DecodeError::JsonEmptyKey)),
                key => {
                    name.clear();
                    name.push_str(key);
                    map.next_value_seed(Flatten {
                        name: &mut name,
                        fields: &mut self.out.fields,
                        problem: &mut *self.problem,
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// The address an `id` value gives, or why it gives none.
fn address_of(id: serde_json::Value) -> Result<String, DecodeError> {
    match id {
        serde_json::Value::String(text) => {
            if text.is_empty() {
                Err(DecodeError::JsonBadId("is empty"))
            } else if text.chars().any(is_topic_unsafe) {
                Err(DecodeError::JsonBadId(
                    "contains + # / or a control character",
                ))
            } else {
                Ok(text)
            }
        }
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(DecodeError::JsonBadId("is not a string or an integer")),
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// One value at the path `name`: scalars become fields, objects and arrays recurse with a longer name.
/// Nesting depth is bounded by serde_json's recursion limit (128).
struct Flatten<'a> {
    name: &'a mut String,
    fields: &'a mut Vec<(String, Value)>,
    problem: &'a mut Option<DecodeError>,
}

impl Flatten<'_> {
    /// The field at the path built so far, its name sanitised into one topic level.
    fn push(self, value: Value) {
        self.fields
            .push((crate::publish::sanitize_level(self.name), value));
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.push(Value::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.push(Value::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.push(match i64::try_from(v) {
            Ok(v) => Value::Int(v),
            Err(_) => Value::Float(v as f64),
        });
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.push(Value::Float(v));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.push(Value::Text(v.to_owned()));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.push(Value::Text(v));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let base = self.name.len();
        while let Some(key) = map.next_key_seed(Key)? {
            if key.is_empty() {
                return Err(refuse(self.problem, DecodeError::JsonEmptyKey));
            }
            self.name.truncate(base);
            self.name.push('_');
            self.name.push_str(&key);
            map.next_value_seed(Flatten {
                name: &mut *self.name,
                fields: &mut *self.fields,
                problem: &mut *self.problem,
            })?;
        }
        self.name.truncate(base);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let base = self.name.len();
        for index in 0usize.. {
            self.name.truncate(base);
            self.name.push('_');
            self.name.push_str(&index.to_string());
            let element = seq.next_element_seed(Flatten {
                name: &mut *self.name,
                fields: &mut *self.fields,
                problem: &mut *self.problem,
            })?;
            if element.is_none() {
                break;
            }
        }
        self.name.truncate(base);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Vec<(String, Value)> {
        decode(json.as_bytes()).unwrap().fields
    }

    fn field(name: &str, value: Value) -> (String, Value) {
        (name.to_string(), value)
    }

    #[test]
    fn scalars_in_arrival_order() {
        assert_eq!(
            fields(
                r#"{"t":21.5,"n":3,"ok":true,"s":"dry","skip":null,"big":18446744073709551615}"#
            ),
            vec![
                field("t", Value::Float(21.5)),
                field("n", Value::Int(3)),
                field("ok", Value::Bool(true)),
                field("s", Value::Text("dry".into())),
                field("big", Value::Float(18446744073709551615.0)),
            ]
        );
        // Not sorted: "z" stays before "a".
        assert_eq!(
            fields(r#"{"z":1,"a":2}"#),
            vec![field("z", Value::Int(1)), field("a", Value::Int(2))]
        );
    }

    #[test]
    fn id_and_seq_are_not_fields() {
        let decoded = decode(br#"{"id":"kitchen","seq":7,"t":1}"#).unwrap();
        assert_eq!(decoded.address.as_deref(), Some("kitchen"));
        assert_eq!(decoded.seq, Some(7));
        assert_eq!(decoded.fields, vec![field("t", Value::Int(1))]);

        let decoded = decode(br#"{"id":17}"#).unwrap();
        assert_eq!(decoded.address.as_deref(), Some("17"));
        assert!(decoded.fields.is_empty());
    }

    #[test]
    fn nested_objects_and_arrays_flatten() {
        assert_eq!(
            fields(r#"{"a":{"b":1,"c":{"d":"x"}},"v":[1,2.5],"w":[{"k":true}],"e":{},"f":[]}"#),
            vec![
                field("a_b", Value::Int(1)),
                field("a_c_d", Value::Text("x".into())),
                field("v_0", Value::Int(1)),
                field("v_1", Value::Float(2.5)),
                field("w_0_k", Value::Bool(true)),
            ]
        );
        // A nested "id" is an ordinary field.
        assert_eq!(
            fields(r#"{"x":{"id":3}}"#),
            vec![field("x_id", Value::Int(3))]
        );
    }

    #[test]
    fn topic_unsafe_names_are_sanitised_and_empty_keys_refused() {
        assert_eq!(
            fields(r#"{"a/b":1,"c+d#":2,"e\u0000f":3,"g":{"h/i":4}}"#),
            vec![
                field("a_b", Value::Int(1)),
                field("c_d_", Value::Int(2)),
                field("e_f", Value::Int(3)),
                field("g_h_i", Value::Int(4)),
            ]
        );
        // A leading `$` (the broker refuses `$` levels below the first), also one nested names start with.
        assert_eq!(
            fields(r#"{"$x":1,"+":2,"$":{"$y":3},"a$":4}"#),
            vec![
                field("_x", Value::Int(1)),
                field("_", Value::Int(2)),
                field("__$y", Value::Int(3)),
                field("a$", Value::Int(4)),
            ]
        );
        // Long names are cut like device names.
        let long = format!(r#"{{"{}":1}}"#, "n".repeat(1_000));
        assert_eq!(fields(&long)[0].0.len(), crate::publish::MAX_LEVEL_BYTES);
        assert_eq!(decode(br#"{"":1}"#), Err(DecodeError::JsonEmptyKey));
        assert_eq!(decode(br#"{"a":{"":1}}"#), Err(DecodeError::JsonEmptyKey));
    }

    #[test]
    fn frames_that_are_not_objects_are_refused() {
        assert_eq!(
            decode(b"[1,2]"),
            Err(DecodeError::JsonNotObject("an array"))
        );
        assert_eq!(decode(b" 42"), Err(DecodeError::JsonNotObject("a number")));
        assert_eq!(
            decode(b"\"x\""),
            Err(DecodeError::JsonNotObject("a string"))
        );
        assert_eq!(decode(b"null"), Err(DecodeError::JsonNotObject("null")));
        assert!(matches!(decode(b"{\"a\":"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(b"{} {}"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(b"garbage"), Err(DecodeError::Json(_))));
        assert!(matches!(decode(b""), Err(DecodeError::Json(_))));
    }

    #[test]
    fn bad_id_and_seq_are_refused() {
        assert!(matches!(
            decode(br#"{"id":1.5}"#),
            Err(DecodeError::JsonBadId(_))
        ));
        assert!(matches!(
            decode(br#"{"id":"a/b"}"#),
            Err(DecodeError::JsonBadId(_))
        ));
        assert!(matches!(
            decode(br#"{"id":""}"#),
            Err(DecodeError::JsonBadId(_))
        ));
        assert_eq!(decode(br#"{"seq":-1}"#), Err(DecodeError::JsonBadSeq));
        assert_eq!(
            decode(br#"{"seq":4294967296}"#),
            Err(DecodeError::JsonBadSeq)
        );
        assert_eq!(decode(br#"{"seq":"7"}"#), Err(DecodeError::JsonBadSeq));
        assert_eq!(
            decode(br#"{"seq":4294967295}"#).unwrap().seq,
            Some(u32::MAX)
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(decode(deep.as_bytes()), Err(DecodeError::Json(_))));
    }
}
