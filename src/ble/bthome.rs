//! BTHome v2 service data (UUID 0xFCD2), after the UUID:
//!
//! ```text
//! device information (1 byte) | [MAC, 6 bytes LE, if bit 1] | objects | [counter u32 LE | MIC 4 bytes, if bit 0]
//! ```
//!
//! The device information byte: bit 0 encrypted, bit 1 MAC included (BTHome's early adverts), bit 2
//! trigger-based (sends on events only), bits 5-7 the version, which must be 2. Encrypted adverts are
//! AES-128-CCM with a 4-byte MIC, the nonce `MAC (most significant byte first) | d2 fc | device
//! information | counter (as on the wire)` and no associated data, as bthome.io's encryption page has it;
//! the key is the device's bindkey. Objects are an id byte and data whose length the id fixes (text and
//! raw: a length byte first), walked in order through [`super::objects`]; the walk stops at the first id
//! the table does not know (its length is unknown, so nothing after it can be found) and at an object cut
//! short, keeping what came before. A repeated name gets `_1`, `_2`, ... on every occurrence, counting
//! events that carried "no event" too (as Home Assistant numbers a four-button remote's buttons). The
//! packet id (object 0x00) is the reading's `seq`; a button event is a field `button` with Home
//! Assistant's event type (`long_press`), a dimmer event `dimmer` (`rotate_left`) and `dimmer_steps`.

use super::ccm::{self, U13};
use super::objects::{self, Encoding, Scale};
use super::{scaled, signed_le, unsigned_le, BleError, BleReading, Mac};
use crate::crypto::keys::FrameKey;
use crate::decode::PayloadFields;
use crate::model::Value;

/// The BTHome service UUID.
pub const UUID: u16 = 0xFCD2;

const FORMAT: &str = "BTHome";
const FLAG_ENCRYPTED: u8 = 0x01;
const FLAG_MAC_INCLUDED: u8 = 0x02;
const FLAG_TRIGGER_BASED: u8 = 0x04;
/// Counter and MIC after the ciphertext.
const ENCRYPTION_OVERHEAD: usize = 4 + ccm::MIC_LEN;

/// Decodes BTHome v2 service data that starts after the UUID (at the device information byte). `mac` is
/// the advertiser's address: the reading's address, and part of the nonce of an encrypted advert (a MAC
/// inside the payload takes precedence for both).
pub fn decode(
    payload: &[u8],
    mac: Option<Mac>,
    key: Option<&FrameKey>,
) -> Result<BleReading, BleError> {
    let [info, rest @ ..] = payload else {
        return Err(BleError::TooShort {
            format: FORMAT,
            have: payload.len(),
        });
    };
    let info = *info;
    let version = info >> 5;
    if version != 2 {
        return Err(BleError::BthomeVersion(version));
    }
    let (mac, body) = if info & FLAG_MAC_INCLUDED != 0 {
        let Some((mac_bytes, body)) = rest.split_first_chunk::<6>() else {
            return Err(BleError::TooShort {
                format: FORMAT,
                have: payload.len(),
            });
        };
        (Some(Mac::from_le(*mac_bytes)), body)
    } else {
        (mac, rest)
    };
    let (objects, counter) = if info & FLAG_ENCRYPTED != 0 {
        let (plaintext, counter) = open(info, body, mac, key)?;
        (plaintext, Some(counter))
    } else {
        (body.to_vec(), None)
    };
    let (seq, fields) = decode_objects(&objects);
    Ok(BleReading {
        fields: PayloadFields {
            address: mac.map(|mac| mac.to_string()),
            seq,
            fields,
        },
        counter,
        trigger_based: info & FLAG_TRIGGER_BASED != 0,
    })
}

/// Opens an encrypted body: `ciphertext | counter | MIC`.
fn open(
    info: u8,
    body: &[u8],
    mac: Option<Mac>,
    key: Option<&FrameKey>,
) -> Result<(Vec<u8>, u32), BleError> {
    let key = key.ok_or(BleError::NeedsKey { format: FORMAT })?;
    let mac = mac.ok_or(BleError::NeedsMac { format: FORMAT })?;
    let Some(ciphertext_len) = body.len().checked_sub(ENCRYPTION_OVERHEAD) else {
        return Err(BleError::TooShort {
            format: "encrypted BTHome (counter and MIC)",
            have: body.len(),
        });
    };
    let (ciphertext, trailer) = body.split_at(ciphertext_len);
    let (counter_bytes, mic) = trailer.split_at(4);
    let mut nonce = [0u8; 13];
    nonce[..6].copy_from_slice(&mac.0);
    nonce[6..8].copy_from_slice(&UUID.to_le_bytes());
    nonce[8] = info;
    nonce[9..].copy_from_slice(counter_bytes);
    let plaintext = ccm::open::<U13>(key, (&nonce).into(), &[], ciphertext, mic)
        .ok_or(BleError::Mic { format: FORMAT })?;
    Ok((plaintext, unsigned_le(counter_bytes) as u32))
}

/// One decoded object: its name and what it carried (nothing for "no event" and text that is not UTF-8,
/// which still count for the numbering of repeated names).
struct Decoded {
    name: &'static str,
    values: Vec<(Option<&'static str>, Value)>,
}

/// Walks the objects: the packet id, and the fields with repeated names numbered.
fn decode_objects(bytes: &[u8]) -> (Option<u32>, Vec<(String, Value)>) {
    let mut seq = None;
    let mut decoded = Vec::new();
    let mut offset = 0;
    while let Some(&id) = bytes.get(offset) {
        let Some(object) = objects::lookup(id) else {
            break;
        };
        let (data, next) = match object.encoding {
            Encoding::Text | Encoding::Raw => {
                let Some(&len) = bytes.get(offset + 1) else {
                    break;
                };
                let start = offset + 2;
                (
                    bytes.get(start..start + usize::from(len)),
                    start + usize::from(len),
                )
            }
            _ => {
                let start = offset + 1;
                (bytes.get(start..start + object.len), start + object.len)
            }
        };
        let Some(data) = data else {
            break;
        };
        offset = next;
        if object.encoding == Encoding::PacketId {
            seq = Some(u32::from(data[0]));
            continue;
        }
        decoded.push(Decoded {
            name: object.name,
            values: values(object.encoding, data),
        });
    }
    (seq, number_repeats(decoded))
}

/// The values of one object's data (which has the table's length).
fn values(encoding: Encoding, data: &[u8]) -> Vec<(Option<&'static str>, Value)> {
    let number = |raw: i64, scale: Scale| match scale {
        Scale::One => Value::Int(raw),
        Scale::Decimals(decimals) => Value::Float(scaled(raw, decimals)),
        Scale::Times(factor) => Value::Float(raw as f64 * factor),
    };
    match encoding {
        Encoding::Unsigned(scale) => vec![(None, number(unsigned_le(data) as i64, scale))],
        Encoding::Signed(scale) => vec![(None, number(signed_le(data), scale))],
        Encoding::Binary => vec![(None, Value::Bool(data.first().is_some_and(|b| *b != 0)))],
        Encoding::Button => data
            .first()
            .and_then(|b| objects::button_event(*b))
            .map(|event| (None, Value::Text(event.to_string())))
            .into_iter()
            .collect(),
        Encoding::Dimmer => match data {
            [event, steps, ..] => match objects::dimmer_event(*event) {
                Some(event) => vec![
                    (None, Value::Text(event.to_string())),
                    (Some("steps"), Value::Int(i64::from(*steps as i8))),
                ],
                None => Vec::new(),
            },
            _ => Vec::new(),
        },
        Encoding::Text => match std::str::from_utf8(data) {
            Ok(text) if !text.is_empty() => vec![(None, Value::Text(text.to_string()))],
            _ => Vec::new(),
        },
        Encoding::Raw if data.is_empty() => Vec::new(),
        Encoding::Raw => vec![(
            None,
            Value::Text(data.iter().map(|b| format!("{b:02x}")).collect()),
        )],
        Encoding::FirmwareVersion => {
            let parts: Vec<String> = data.iter().rev().map(u8::to_string).collect();
            vec![(None, Value::Text(parts.join(".")))]
        }
        Encoding::PacketId => Vec::new(),
    }
}

/// Names the values: `name` (`dimmer`, `dimmer_steps`), with `_1`, `_2`, ... after names that occur more
/// than once.
fn number_repeats(decoded: Vec<Decoded>) -> Vec<(String, Value)> {
    let occurrences = |name: &str| decoded.iter().filter(|d| d.name == name).count();
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut fields = Vec::new();
    for object in &decoded {
        let postfix = if occurrences(object.name) > 1 {
            let count = match seen.iter_mut().find(|(name, _)| *name == object.name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    seen.push((object.name, 1));
                    1
                }
            };
            format!("_{count}")
        } else {
            String::new()
        };
        for (part, value) in &object.values {
            let name = match part {
                Some(part) => format!("{}_{part}{postfix}", object.name),
                None => format!("{}{postfix}", object.name),
            };
            fields.push((name, value.clone()));
        }
    }
    fields
}
