//! Encoding: a command's fields back into the bytes a node reads, the inverse of [`crate::decode`] and
//! [`crate::frame`]. Payloads first ([`encode_payload`]: JSON lines `{"id": ..., fields}`, Cayenne LPP
//! records, MySensors `C_SET` lines, or raw bytes), then the link ([`link`]: the header with the device as
//! the destination and the gateway's sequence number, optional AES-128-CCM sealing in the gateway ->
//! node direction, the CRC trailer and, on a serial port, the framing). Every function here is pure: no
//! IO, no clock, no state between calls (the caller chooses sequence numbers and counters), and each
//! encoder is tested as the inverse of its decoder (`decode(encode(x)) == x`, property tests in
//! `tests/properties/encoders.rs`).

pub mod json;
pub mod link;
pub mod lpp;
pub mod mysensors;

use crate::decode::PayloadFormat;
use crate::model::Value;

/// Why a command could not be encoded; the message is what the `set/result` reason says.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A field this payload format cannot carry, or a value out of its range.
    #[error("field {field:?}: {why}")]
    Field { field: String, why: String },
    /// Nothing to send.
    #[error("no fields to set")]
    Empty,
    /// The device's address does not fit what the header or payload carries.
    #[error("address {address:?} {why}")]
    Address { address: String, why: &'static str },
    /// Longer than the link carries (a radio packet is at most 255 bytes).
    #[error("{len} bytes, longer than the {max} bytes the link carries")]
    TooLong { len: usize, max: usize },
    /// A frame on a line link holding a newline, which would reach the node as two frames.
    #[error("the frame holds a newline, which ends a frame on this line link: it would reach the node as two frames")]
    Delimiter,
    /// The source decodes with a JavaScript codec (`crate::codec`), whose own encoder writes its commands.
    #[error("the source's payload is a JavaScript codec; its commands are its encodeDownlink's")]
    Codec,
    /// Sealing failed (only for payloads beyond AES-CCM's length field).
    #[error("cannot seal the frame: {0}")]
    Seal(String),
}

/// What a command asks a device to do: set named fields, or send bytes as they are.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandPayload {
    /// Field names as the decoder of the source's payload format names them, with their new values.
    Fields(Vec<(String, Value)>),
    /// `{"raw": "0a0b"}`: the payload bytes themselves (header, sealing, CRC and framing still apply).
    Raw(Vec<u8>),
}

/// One payload as it goes behind the header, with the fields it carries (for the result message).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPayload {
    pub bytes: Vec<u8>,
    /// The fields this payload sets (empty for raw bytes).
    pub fields: Vec<(String, Value)>,
}

/// The payloads a command becomes for a device at `address` on a source with `format`: one for JSON,
/// LPP and raw bytes; one per field for MySensors (a `C_SET` message carries one value).
pub fn encode_payload(
    format: PayloadFormat,
    address: &str,
    payload: &CommandPayload,
) -> Result<Vec<EncodedPayload>, EncodeError> {
    let fields = match payload {
        CommandPayload::Raw(bytes) if bytes.is_empty() => return Err(EncodeError::Empty),
        CommandPayload::Raw(bytes) => {
            return Ok(vec![EncodedPayload {
                bytes: bytes.clone(),
                fields: Vec::new(),
            }])
        }
        CommandPayload::Fields(fields) if fields.is_empty() => return Err(EncodeError::Empty),
        CommandPayload::Fields(fields) => fields,
    };
    match format {
        PayloadFormat::Codec => Err(EncodeError::Codec),
        PayloadFormat::Json => Ok(vec![EncodedPayload {
            bytes: json::encode(address, fields)?,
            fields: fields.clone(),
        }]),
        PayloadFormat::Lpp => Ok(vec![EncodedPayload {
            bytes: lpp::encode(fields)?,
            fields: fields.clone(),
        }]),
        PayloadFormat::MySensors => {
            let node = mysensors::node_of(address)?;
            fields
                .iter()
                .map(|(name, value)| {
                    Ok(EncodedPayload {
                        bytes: mysensors::encode_set(node, name, value)?,
                        fields: vec![(name.clone(), value.clone())],
                    })
                })
                .collect()
        }
    }
}

/// Whether a payload of this format names its node (JSON lines' `"id"`, MySensors' node id), so that raw
/// bytes could address another node than the one commanded.
pub fn address_in_payload(format: PayloadFormat) -> bool {
    match format {
        PayloadFormat::Json | PayloadFormat::MySensors => true,
        // A codec source carries a header (its devices' addresses), and its codec writes the payload.
        PayloadFormat::Lpp | PayloadFormat::Codec => false,
    }
}

/// What kind of control a commandable field is, for Home Assistant (`switch` or `number`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Control {
    /// On/off: `1`/`0` (LPP digital output, MySensors V_STATUS, V_ARMED, V_LOCK_STATUS...).
    Switch,
    /// A number within a range, in steps.
    Number { min: f64, max: f64, step: f64 },
}

/// Whether `field` of a device with this payload format is an output the gateway knows how to command,
/// and as what control: LPP `digital_out_N` (also `digital_output_N`) and `analog_out_N`
/// (`analog_output_N`), MySensors actuator value types (`status_N`, `percentage_N`, `armed_N`,
/// `lock_status_N`, `hvac_setpoint_heat_N`...). JSON devices have no output types: their commandable
/// fields are the ones the configuration names. Every field name that encodes can still be set through
/// `set`; this is only what is worth announcing.
pub fn control_of(format: PayloadFormat, field: &str) -> Option<Control> {
    match format {
        PayloadFormat::Json | PayloadFormat::Codec => None,
        PayloadFormat::Lpp => lpp::control_of(field),
        PayloadFormat::MySensors => mysensors::control_of(field),
    }
}

/// Hex digits (whitespace and `:` ignored) into bytes, for `{"raw": "0a0b"}`.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("has an odd number of hex digits".to_string());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(text, 16).map_err(|_| format!("{text:?} is not hexadecimal"))
        })
        .collect()
}

/// Bytes as lower-case hex, the way `{"raw": ...}` is echoed in results.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_refusals() {
        assert_eq!(parse_hex("0a0B ff").unwrap(), vec![0x0A, 0x0B, 0xFF]);
        assert_eq!(to_hex(&[0x0A, 0x0B]), "0a0b");
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn mysensors_gives_one_payload_per_field_and_lpp_one_for_all() {
        let fields = CommandPayload::Fields(vec![
            ("status_1".into(), Value::Bool(true)),
            ("percentage_2".into(), Value::Int(40)),
        ]);
        let lines = encode_payload(PayloadFormat::MySensors, "12", &fields).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].bytes, b"12;1;1;0;2;1");
        assert_eq!(lines[1].bytes, b"12;2;1;0;3;40");
        let lpp = CommandPayload::Fields(vec![
            ("digital_out_1".into(), Value::Int(1)),
            ("analog_out_2".into(), Value::Float(-1.5)),
        ]);
        let one = encode_payload(PayloadFormat::Lpp, "", &lpp).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].bytes, [1, 1, 1, 2, 3, 0xFF, 0x6A]);
        assert_eq!(
            encode_payload(PayloadFormat::Json, "1", &CommandPayload::Fields(vec![])),
            Err(EncodeError::Empty)
        );
    }

    #[test]
    fn controls_for_announcing() {
        assert_eq!(
            control_of(PayloadFormat::Lpp, "digital_out_3"),
            Some(Control::Switch)
        );
        assert!(matches!(
            control_of(PayloadFormat::Lpp, "analog_output_2"),
            Some(Control::Number { .. })
        ));
        assert_eq!(control_of(PayloadFormat::Lpp, "temperature_1"), None);
        assert_eq!(
            control_of(PayloadFormat::MySensors, "status_4"),
            Some(Control::Switch)
        );
        assert_eq!(control_of(PayloadFormat::MySensors, "temp_4"), None);
        assert_eq!(control_of(PayloadFormat::Json, "relay"), None);
    }
}
