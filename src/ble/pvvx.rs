//! The pvvx custom format of the Xiaomi LYWSD03MMC (and kin) thermometer firmware, service data of UUID
//! 0x181A (Environmental Sensing), after the UUID, plain (15 bytes) or encrypted (11 bytes):
//!
//! ```text
//! plain:     MAC (6, LE) | temperature i16 LE 0.01 °C | humidity u16 LE 0.01 % | battery mV u16 LE |
//!            battery % u8 | measurement count u8 | flags u8
//! encrypted: measurement count u8 | ciphertext (6) | MIC (4)
//!            plaintext: temperature i16 LE 0.01 °C | humidity u16 LE 0.01 % | battery % u8 | flags u8
//! ```
//!
//! Flags: bit 0 the reed switch input (`opening`), bit 1 the GPIO_TRG output (`switch`). Encrypted
//! adverts are AES-128-CCM with a 4-byte MIC, the nonce `MAC (LE) | AD length | 16 1a 18 | count` (the
//! first five bytes of the AD structure as sent) and the associated data `0x11`; the key is the
//! device's bindkey. The measurement count is the reading's `seq` (the firmware repeats an advert until
//! it measures again). Fields: `temperature`, `humidity`, `voltage` (V), `battery` (%), `opening`,
//! `switch`; the encrypted layout carries no voltage.

use super::ccm::{self, U11};
use super::{scaled, signed_le, unsigned_le, BleError, BleReading, Mac};
use crate::crypto::keys::FrameKey;
use crate::decode::PayloadFields;
use crate::model::Value;

/// The Environmental Sensing service UUID, which pvvx and atc1441 use.
pub const UUID: u16 = 0x181A;

const FORMAT: &str = "pvvx";
const PLAIN_LEN: usize = 15;
const ENCRYPTED_LEN: usize = 11;

/// Decodes pvvx service data that starts after the UUID. `mac` is needed to open an encrypted advert
/// (a plain one carries its own).
pub fn decode(
    payload: &[u8],
    mac: Option<Mac>,
    key: Option<&FrameKey>,
) -> Result<BleReading, BleError> {
    match payload.len() {
        PLAIN_LEN => Ok(plain(payload)),
        ENCRYPTED_LEN => encrypted(payload, mac, key),
        have => Err(BleError::UnknownLayout {
            format: FORMAT,
            have,
            layouts: "15 bytes plain, 11 encrypted",
        }),
    }
}

fn plain(p: &[u8]) -> BleReading {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&p[..6]);
    let fields = vec![
        temperature(&p[6..8]),
        humidity(&p[8..10]),
        (
            "voltage".to_string(),
            Value::Float(scaled(unsigned_le(&p[10..12]) as i64, 3)),
        ),
        ("battery".to_string(), Value::Int(i64::from(p[12]))),
    ];
    reading(Mac::from_le(mac), p[13], fields, p[14], None)
}

fn encrypted(p: &[u8], mac: Option<Mac>, key: Option<&FrameKey>) -> Result<BleReading, BleError> {
    let (count, plaintext) = open_short_format(FORMAT, p, mac, key)?;
    let mac = mac.ok_or(BleError::NeedsMac { format: FORMAT })?;
    let fields = vec![
        temperature(&plaintext[0..2]),
        humidity(&plaintext[2..4]),
        ("battery".to_string(), Value::Int(i64::from(plaintext[4]))),
    ];
    Ok(reading(
        mac,
        count,
        fields,
        plaintext[5],
        Some(u32::from(count)),
    ))
}

fn temperature(bytes: &[u8]) -> (String, Value) {
    (
        "temperature".to_string(),
        Value::Float(scaled(signed_le(bytes), 2)),
    )
}

fn humidity(bytes: &[u8]) -> (String, Value) {
    (
        "humidity".to_string(),
        Value::Float(scaled(unsigned_le(bytes) as i64, 2)),
    )
}

fn reading(
    mac: Mac,
    count: u8,
    mut fields: Vec<(String, Value)>,
    flags: u8,
    counter: Option<u32>,
) -> BleReading {
    fields.push(("opening".to_string(), Value::Bool(flags & 0x01 != 0)));
    fields.push(("switch".to_string(), Value::Bool(flags & 0x02 != 0)));
    BleReading {
        fields: PayloadFields {
            address: Some(mac.to_string()),
            seq: Some(u32::from(count)),
            fields,
        },
        counter,
        trigger_based: false,
    }
}

/// Opens the encrypted layout shared by pvvx and atc1441: `count | ciphertext | MIC`, with the nonce
/// `MAC (LE) | AD length | 16 | UUID (LE) | count` and the associated data `0x11`. Returns the count and
/// the plaintext.
pub(crate) fn open_short_format(
    format: &'static str,
    p: &[u8],
    mac: Option<Mac>,
    key: Option<&FrameKey>,
) -> Result<(u8, Vec<u8>), BleError> {
    let key = key.ok_or(BleError::NeedsKey { format })?;
    let mac = mac.ok_or(BleError::NeedsMac { format })?;
    let Some((&count, rest)) = p.split_first() else {
        return Err(BleError::TooShort { format, have: 0 });
    };
    let Some(ciphertext_len) = rest.len().checked_sub(ccm::MIC_LEN) else {
        return Err(BleError::TooShort {
            format,
            have: p.len(),
        });
    };
    let (ciphertext, mic) = rest.split_at(ciphertext_len);
    // The AD structure's length byte counts its type byte, the UUID and the service data.
    let ad_len = (p.len() + 3) as u8;
    let uuid = UUID.to_le_bytes();
    let mut nonce = [0u8; 11];
    nonce[..6].copy_from_slice(&mac.to_le());
    nonce[6..].copy_from_slice(&[ad_len, 0x16, uuid[0], uuid[1], count]);
    let plaintext = ccm::open::<U11>(key, (&nonce).into(), &[0x11], ciphertext, mic)
        .ok_or(BleError::Mic { format })?;
    Ok((count, plaintext))
}
