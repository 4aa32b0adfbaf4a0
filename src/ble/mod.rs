//! Bluetooth LE advertisements, the pure layer: the HCI LE Advertising Report events a capture or the
//! radio hands over ([`hci`]), the AD structures inside them ([`ad`]), and the three service-data
//! formats of home sensors: BTHome v2, plain and encrypted ([`bthome`], table in [`objects`]), the pvvx
//! custom format, plain and encrypted ([`pvvx`]), and the atc1441 format ([`atc1441`]). Bytes (plus the
//! sender's MAC and its bindkey, when it has one) in, a [`BleReading`] out: no IO, no clock, no state
//! between advertisements. Whether an encrypted advertisement's counter is new, whether a keyed device
//! may send plaintext, and which senders are published are the caller's business; the reading carries
//! what it needs for that (the counter, the packet id as `seq`, the trigger-based flag).
//!
//! Field names are Home Assistant's BTHome integration's (`temperature`, `humidity`, `battery`,
//! `voltage`, ...), for every format, so a thermometer's fields are named alike whatever its firmware.

pub mod ad;
pub mod atc1441;
pub mod bthome;
mod ccm;
pub mod cli;
pub mod hci;
pub mod objects;
pub mod pvvx;
pub mod scan;
#[cfg(test)]
mod vectors;

use std::fmt;
use std::time::SystemTime;

use crate::crypto::keys::FrameKey;
use crate::decode::PayloadFields;
use crate::model::Reading;

/// A Bluetooth device address, most significant byte first (as printed: `54:48:E6:8F:80:A5`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `54:48:E6:8F:80:A5` (or with `-`, or 12 hex digits), either case.
    pub fn parse(text: &str) -> Option<Mac> {
        let digits: Vec<u8> = text.bytes().filter(|b| *b != b':' && *b != b'-').collect();
        if digits.len() != 12 {
            return None;
        }
        let mut mac = [0u8; 6];
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        for (byte, pair) in mac.iter_mut().zip(digits.chunks(2)) {
            let text = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(text, 16).ok()?;
        }
        Some(Mac(mac))
    }

    /// The address as HCI and BLE payloads carry it: least significant byte first.
    pub fn from_le(bytes: [u8; 6]) -> Mac {
        let mut mac = bytes;
        mac.reverse();
        Mac(mac)
    }

    /// Least significant byte first.
    pub fn to_le(self) -> [u8; 6] {
        let mut bytes = self.0;
        bytes.reverse();
        bytes
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
    }
}

/// A service-data format; `payload = "bthome" | "pvvx" | "atc1441"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum BleFormat {
    /// BTHome v2 (service UUID 0xFCD2), plain or encrypted.
    #[serde(rename = "bthome")]
    Bthome,
    /// The pvvx custom format (service UUID 0x181A), plain or encrypted.
    #[serde(rename = "pvvx")]
    Pvvx,
    /// The atc1441 format (service UUID 0x181A), plain or encrypted.
    #[serde(rename = "atc1441")]
    Atc1441,
}

impl BleFormat {
    /// The 16-bit service UUID whose service data carries the format.
    pub fn uuid(self) -> u16 {
        match self {
            BleFormat::Bthome => bthome::UUID,
            BleFormat::Pvvx | BleFormat::Atc1441 => pvvx::UUID,
        }
    }

    /// The configuration name (`"bthome"`).
    pub fn name(self) -> &'static str {
        match self {
            BleFormat::Bthome => "bthome",
            BleFormat::Pvvx => "pvvx",
            BleFormat::Atc1441 => "atc1441",
        }
    }
}

/// What one advertisement's service data said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BleReading {
    /// The fields; `address` is the sender's MAC (`A4:C1:38:8D:18:B2`), `seq` the packet id (BTHome
    /// object 0x00, the pvvx and atc1441 measurement counter), which the registry's duplicate window
    /// drops repeats of.
    pub fields: PayloadFields,
    /// The encryption counter, when the advertisement was encrypted (and opened with the bindkey).
    pub counter: Option<u32>,
    /// BTHome's trigger-based flag: the device sends on events only, so silence is not absence.
    pub trigger_based: bool,
}

impl BleReading {
    /// The reading as the registry takes it, heard on `source` at `received_at`.
    pub fn into_reading(self, source: &str, received_at: SystemTime) -> Reading {
        Reading {
            source: source.to_string(),
            address: self.fields.address.unwrap_or_default(),
            seq: self.fields.seq,
            fields: self.fields.fields,
            received_at,
            radio: None,
            lorawan: None,
        }
    }
}

/// Why service data gave no reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BleError {
    #[error("service data is {have} bytes, too short for {format}")]
    TooShort { format: &'static str, have: usize },
    #[error("service data is for UUID 0x{found:04X}, {format} uses 0x{expected:04X}")]
    WrongUuid {
        format: &'static str,
        found: u16,
        expected: u16,
    },
    #[error("BTHome version {0} in the device information byte; only version 2 is decoded")]
    BthomeVersion(u8),
    #[error("{format} service data of {have} bytes is none of its layouts ({layouts})")]
    UnknownLayout {
        format: &'static str,
        have: usize,
        layouts: &'static str,
    },
    #[error("{format} advertisement is encrypted; give the device's bindkey (a key file of 32 hex digits)")]
    NeedsKey { format: &'static str },
    #[error(
        "{format} advertisement is encrypted and its payload carries no MAC; give the sender's MAC"
    )]
    NeedsMac { format: &'static str },
    #[error(
        "{format} advertisement did not authenticate (wrong bindkey or MAC, or changed bytes)"
    )]
    Mic { format: &'static str },
}

/// Decodes the service data of `format` that starts at its 16-bit UUID (`d2 fc ...` for BTHome, as
/// the AD structure carries it after its type byte). `mac` is the advertiser's address (needed to open
/// encrypted adverts whose payload does not carry it), `key` its bindkey.
pub fn decode_service_data(
    format: BleFormat,
    service_data: &[u8],
    mac: Option<Mac>,
    key: Option<&FrameKey>,
) -> Result<BleReading, BleError> {
    let [lo, hi, payload @ ..] = service_data else {
        return Err(BleError::TooShort {
            format: format.name(),
            have: service_data.len(),
        });
    };
    let found = u16::from_le_bytes([*lo, *hi]);
    if found != format.uuid() {
        return Err(BleError::WrongUuid {
            format: format.name(),
            found,
            expected: format.uuid(),
        });
    }
    match format {
        BleFormat::Bthome => bthome::decode(payload, mac, key),
        BleFormat::Pvvx => pvvx::decode(payload, mac, key),
        BleFormat::Atc1441 => atc1441::decode(payload, mac, key),
    }
}

/// Little-endian unsigned integer of up to 8 bytes.
pub(crate) fn unsigned_le(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Little-endian two's complement integer of 1 to 8 bytes.
pub(crate) fn signed_le(bytes: &[u8]) -> i64 {
    let len = bytes.len().clamp(1, 8) as u32;
    let shift = 64 - 8 * len;
    ((unsigned_le(bytes) << shift) as i64) >> shift
}

/// `value / 10^decimals` (exact for what a float can hold: 2506 at 2 decimals is 25.06).
pub(crate) fn scaled(value: i64, decimals: i32) -> f64 {
    value as f64 / 10f64.powi(decimals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print_most_significant_first() {
        let mac = Mac::parse("54:48:e6:8F:80:A5").unwrap();
        assert_eq!(mac.0, [0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5]);
        assert_eq!(mac.to_string(), "54:48:E6:8F:80:A5");
        assert_eq!(Mac::parse("5448E68F80A5"), Some(mac));
        assert_eq!(Mac::from_le(mac.to_le()), mac);
        assert_eq!(mac.to_le()[0], 0xA5);
        for bad in [
            "",
            "54:48:E6:8F:80",
            "54:48:E6:8F:80:A5:00",
            "zz:48:E6:8F:80:A5",
            "+4:48:E6:8F:80:A5",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn little_endian_integers() {
        assert_eq!(unsigned_le(&[0xCA, 0x09]), 2506);
        assert_eq!(signed_le(&[0xFF, 0xFF]), -1);
        assert_eq!(signed_le(&[0x80]), -128);
        assert_eq!(signed_le(&[0x00, 0x00, 0x00, 0x80]), i64::from(i32::MIN));
        assert_eq!(unsigned_le(&[]), 0);
        assert_eq!(scaled(2506, 2), 25.06);
    }

    /// Pseudo-random and mutated service data and HCI events: whatever comes out is a reading or an
    /// error, never a panic.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let key = FrameKey::from_bytes([7; 16]);
        let mac = Mac([1, 2, 3, 4, 5, 6]);
        let seeds: [&[u8]; 4] = [
            &[
                0xD2, 0xFC, 0x40, 0x00, 0x09, 0x53, 0x02, 0x41, 0x42, 0x3C, 0x01, 0x03, 0x02, 0xCA,
                0x09,
            ],
            &[
                0xD2, 0xFC, 0x43, 1, 2, 3, 4, 5, 6, 0xA4, 0x72, 0x66, 0, 0x11, 0x22, 0x33, 1, 2, 3,
                4,
            ],
            &[
                0x1A, 0x18, 0xF4, 0x83, 0x02, 0x38, 0xC1, 0xA4, 0xA9, 0x06, 0x69, 0x11, 0xB6, 0x0B,
                0x58, 0xF7, 0x0D,
            ],
            &[
                0x1A, 0x18, 0x11, 0xD6, 0x03, 0xFB, 0xFA, 0x7B, 0x6D, 0xFB, 0x1E, 0x26, 0xFD,
            ],
        ];
        let mut decoded = 0;
        for round in 0..4000 {
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                (0..next() % 40).map(|_| next() as u8).collect()
            } else {
                seeds[round % 4].to_vec()
            };
            for _ in 0..next() % 4 {
                if bytes.is_empty() {
                    break;
                }
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] ^= 1 << (next() % 8),
                    1 => drop(bytes.remove(at)),
                    _ => bytes.insert(at, next() as u8),
                }
            }
            for format in [BleFormat::Bthome, BleFormat::Pvvx, BleFormat::Atc1441] {
                for (mac, key) in [(None, None), (Some(mac), Some(&key))] {
                    if decode_service_data(format, &bytes, mac, key).is_ok() {
                        decoded += 1;
                    }
                }
            }
            let mut event = vec![0x04, 0x3E, bytes.len() as u8];
            event.extend_from_slice(&bytes);
            let _ = hci::parse_event(&event);
            let _ = hci::parse_event(&bytes);
            let _ = ad::service_data(&bytes).count();
        }
        assert!(decoded > 50, "decoded {decoded}");
    }

    /// A BTHome device repeats each advert several times with the same packet id: the registry's
    /// duplicate window drops the repeats, and takes the next packet id.
    #[test]
    fn a_repeated_packet_id_is_a_duplicate_for_the_registry() {
        use crate::devices::{ReadingOutcome, Registry, RegistrySettings};
        use std::time::{Duration, Instant};
        let mut registry = Registry::new(RegistrySettings {
            base_topic: "sg".into(),
            qos: 1,
            retain: true,
            field_topics: false,
            offline_after: Duration::from_secs(900),
            dedup_window: Duration::from_secs(10),
            max_fields: 64,
            devices: Vec::new(),
        });
        let mac = Mac::parse("A4:C1:38:8D:18:B2");
        let heard = |hex: &str| {
            let bytes = crate::crypto::parse_hex(hex).unwrap();
            decode_service_data(BleFormat::Bthome, &bytes, mac, None)
                .unwrap()
                .into_reading("ble0", SystemTime::UNIX_EPOCH)
        };
        let t0 = Instant::now();
        // bthome-ble test_bthome_packet_id_temperature_humidity_battery: packet id 9.
        let first = heard("d2fc400009015d025d0903b718");
        assert_eq!(
            (first.address.as_str(), first.seq),
            ("A4:C1:38:8D:18:B2", Some(9))
        );
        assert!(matches!(
            registry.on_reading(&first, t0),
            ReadingOutcome::Publish { .. }
        ));
        let again = heard("d2fc400009015d025d0903b718");
        assert_eq!(
            registry.on_reading(&again, t0 + Duration::from_millis(300)),
            ReadingOutcome::Duplicate
        );
        let next = heard("d2fc40000a015d025d0903b718");
        assert!(matches!(
            registry.on_reading(&next, t0 + Duration::from_secs(1)),
            ReadingOutcome::Publish { .. }
        ));
    }

    #[test]
    fn service_data_is_checked_for_its_uuid() {
        let error = decode_service_data(BleFormat::Pvvx, &[0xD2, 0xFC, 0x40], None, None);
        assert!(matches!(
            error,
            Err(BleError::WrongUuid {
                found: 0xFCD2,
                expected: 0x181A,
                ..
            })
        ));
        assert!(matches!(
            decode_service_data(BleFormat::Bthome, &[0xD2], None, None),
            Err(BleError::TooShort { .. })
        ));
    }
}
