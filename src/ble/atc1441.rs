//! The atc1441 format of the ATC_MiThermometer firmware (the original custom firmware of the Xiaomi
//! LYWSD03MMC), service data of UUID 0x181A, after the UUID, plain (13 bytes) or encrypted (8 bytes):
//!
//! ```text
//! plain:     MAC (6, most significant first) | temperature i16 BE 0.1 °C | humidity u8 % | battery % u8 |
//!            battery mV u16 BE | measurement count u8
//! encrypted: measurement count u8 | ciphertext (3) | MIC (4)
//!            plaintext: temperature u8 (x / 2 - 40 °C) | humidity u8 (x / 2 %) |
//!            battery % (bits 0-6) and the GPIO_TRG output (bit 7)
//! ```
//!
//! Encrypted adverts open as pvvx's do ([`super::pvvx`]: the same nonce and associated data). The
//! measurement count is the reading's `seq`. Fields: `temperature`, `humidity`, `battery` (%), `voltage`
//! (V, plain only), `switch` (encrypted only).

use super::pvvx::open_short_format;
use super::{scaled, BleError, BleReading, Mac};
use crate::crypto::keys::FrameKey;
use crate::decode::PayloadFields;
use crate::model::Value;

const FORMAT: &str = "atc1441";
const PLAIN_LEN: usize = 13;
const ENCRYPTED_LEN: usize = 8;

/// Decodes atc1441 service data that starts after the UUID. `mac` is needed to open an encrypted advert
/// (a plain one carries its own).
pub fn decode(
    payload: &[u8],
    mac: Option<Mac>,
    key: Option<&FrameKey>,
) -> Result<BleReading, BleError> {
    let (mac, count, fields, counter) = match payload.len() {
        PLAIN_LEN => {
            let p = payload;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&p[..6]);
            let fields = vec![
                (
                    "temperature".to_string(),
                    Value::Float(scaled(i64::from(i16::from_be_bytes([p[6], p[7]])), 1)),
                ),
                ("humidity".to_string(), Value::Int(i64::from(p[8]))),
                ("battery".to_string(), Value::Int(i64::from(p[9]))),
                (
                    "voltage".to_string(),
                    Value::Float(scaled(i64::from(u16::from_be_bytes([p[10], p[11]])), 3)),
                ),
            ];
            (Mac(mac), p[12], fields, None)
        }
        ENCRYPTED_LEN => {
            let (count, plain) = open_short_format(FORMAT, payload, mac, key)?;
            let mac = mac.ok_or(BleError::NeedsMac { format: FORMAT })?;
            let fields = vec![
                (
                    "temperature".to_string(),
                    Value::Float(f64::from(plain[0]) / 2.0 - 40.0),
                ),
                (
                    "humidity".to_string(),
                    Value::Float(f64::from(plain[1]) / 2.0),
                ),
                (
                    "battery".to_string(),
                    Value::Int(i64::from(plain[2] & 0x7F)),
                ),
                ("switch".to_string(), Value::Bool(plain[2] & 0x80 != 0)),
            ];
            (mac, count, fields, Some(u32::from(count)))
        }
        have => {
            return Err(BleError::UnknownLayout {
                format: FORMAT,
                have,
                layouts: "13 bytes plain, 8 encrypted",
            })
        }
    };
    Ok(BleReading {
        fields: PayloadFields {
            address: Some(mac.to_string()),
            seq: Some(u32::from(count)),
            fields,
        },
        counter,
        trigger_based: false,
    })
}
