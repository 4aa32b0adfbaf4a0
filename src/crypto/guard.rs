//! The gateway side of encrypted sensor frames: which key opens a frame (a `[[device]] key_file` for its
//! header address, else its source's `key_file`), opening it, and the replay check, before the payload
//! decoder sees a byte. [`FrameGuard::open`] takes a packet as the source delivered it and returns the
//! decoder and packet to decode: the same ones for a source without encryption; for an encrypted one,
//! the header followed by the plaintext, without the CRC trailer (already checked). A frame that fails
//! is a [`Refusal`], counted per source (`auth_failed`, `replayed`) and never decoded. It holds keys but
//! never logs or formats one.

use std::borrow::Cow;
use std::collections::HashMap;

use super::frame::{self, Direction, OpenError};
use super::keys::FrameKey;
use crate::decode::{header, DecodeError, HeaderFormat, PacketDecoder};
use crate::frame::crc::{self, CrcMode};
use crate::model::Packet;
use crate::replay::{Replay, ReplayGuard};
use crate::stats::SourceCounters;

/// The keys of one encrypted source.
#[derive(Debug, Clone, Default)]
pub struct SourceKeys {
    /// The source's `key_file`: every device without a key of its own.
    pub default: Option<FrameKey>,
    /// `[[device]] key_file`, by header address.
    pub devices: HashMap<u32, FrameKey>,
}

impl SourceKeys {
    fn key_for(&self, address: u32) -> Option<&FrameKey> {
        self.devices.get(&address).or(self.default.as_ref())
    }
}

/// The keys of every encrypted source, by source name; sources not in it are not encrypted.
#[derive(Debug, Clone, Default)]
pub struct FrameKeys {
    pub sources: HashMap<String, SourceKeys>,
}

/// Why an encrypted frame was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The CRC trailer or the header is wrong: counted as a decode error, as for plain frames.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(
        "no key for address {address}: neither a [[device]] key_file nor the source's key_file"
    )]
    NoKey { address: u32 },
    #[error("address {address}: {error}")]
    Auth { address: u32, error: OpenError },
    #[error("address {address}: {error}")]
    Replayed { address: u32, error: Replay },
}

impl Refusal {
    /// Counts the refusal in its source's counters.
    pub fn count(&self, counters: &mut SourceCounters) {
        match self {
            Refusal::Decode(_) => counters.decode_errors += 1,
            Refusal::NoKey { .. } | Refusal::Auth { .. } => counters.auth_failed += 1,
            Refusal::Replayed { .. } => counters.replayed += 1,
        }
    }
}

/// Keys and replay marks: what the pipeline asks before decoding.
#[derive(Debug, Clone)]
pub struct FrameGuard {
    keys: FrameKeys,
    replay: ReplayGuard,
}

impl FrameGuard {
    /// No encrypted source (marks kept in memory only).
    pub fn none() -> FrameGuard {
        FrameGuard::new(FrameKeys::default(), ReplayGuard::in_memory())
    }

    pub fn new(keys: FrameKeys, replay: ReplayGuard) -> FrameGuard {
        FrameGuard { keys, replay }
    }

    /// New keys after a reload; the replay marks stay.
    pub fn set_keys(&mut self, keys: FrameKeys) {
        self.keys = keys;
    }

    /// The decoder and packet to decode (see the module).
    pub fn open<'a>(
        &self,
        decoder: &PacketDecoder,
        packet: &'a Packet,
    ) -> Result<(PacketDecoder, Cow<'a, Packet>), Refusal> {
        let Some(keys) = self.keys.sources.get(&packet.source) else {
            return Ok((*decoder, Cow::Borrowed(packet)));
        };
        let body = crc::check_and_strip(decoder.crc, &packet.bytes).map_err(DecodeError::from)?;
        // The header's own length check (and error) before it is used as associated data.
        header::split_header(decoder.header, body)?;
        let (header_bytes, sealed) =
            body.split_at(frame::header_len(decoder.header).min(body.len()));
        let address = frame::header_address(decoder.header, header_bytes);
        let key = keys.key_for(address).ok_or(Refusal::NoKey { address })?;
        let opened = frame::open(key, Direction::Uplink, address, header_bytes, sealed)
            .map_err(|error| Refusal::Auth { address, error })?;
        self.replay
            .check(&packet.source, address, opened.counter)
            .map_err(|error| Refusal::Replayed { address, error })?;
        let mut bytes = Vec::with_capacity(header_bytes.len() + opened.plaintext.len());
        bytes.extend_from_slice(header_bytes);
        bytes.extend_from_slice(&opened.plaintext);
        let plain = PacketDecoder {
            crc: CrcMode::None,
            ..*decoder
        };
        Ok((
            plain,
            Cow::Owned(Packet {
                source: packet.source.clone(),
                bytes,
                received_at: packet.received_at,
                radio: packet.radio,
            }),
        ))
    }
}

/// The header format's address of a `[[device]]` address as written (`"17"`), for choosing its key;
/// `None` when it is not a number the header can carry.
pub fn device_address(format: HeaderFormat, address: &str) -> Option<u32> {
    let value: u32 = address.trim().parse().ok()?;
    let max = match format {
        HeaderFormat::None => return None,
        HeaderFormat::Node16 => u32::from(u16::MAX),
        HeaderFormat::RadioHead => u32::from(u8::MAX),
    };
    (value <= max).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::PayloadFormat;
    use crate::model::Value;
    use std::time::SystemTime;

    fn key(byte: u8) -> FrameKey {
        FrameKey::from_bytes([byte; 16])
    }

    fn guard() -> FrameGuard {
        let mut keys = SourceKeys {
            default: Some(key(1)),
            ..SourceKeys::default()
        };
        keys.devices.insert(9, key(2));
        let mut all = FrameKeys::default();
        all.sources.insert("uart0".into(), keys);
        FrameGuard::new(all, ReplayGuard::in_memory())
    }

    const DECODER: PacketDecoder = PacketDecoder {
        crc: CrcMode::Crc16CcittFalse,
        header: HeaderFormat::Node16,
        payload: PayloadFormat::Lpp,
    };

    fn packet(source: &str, key: &FrameKey, address: u16, counter: u32) -> Packet {
        let header = header::encode_header(HeaderFormat::Node16, address, counter as u8);
        let lpp = crate::decode::LppWriter::new()
            .temperature(1, 21.5)
            .into_bytes();
        let sealed = frame::seal(
            key,
            Direction::Uplink,
            address.into(),
            &header,
            counter,
            &lpp,
        )
        .unwrap();
        Packet {
            source: source.into(),
            bytes: crc::append_crc(CrcMode::Crc16CcittFalse, &sealed),
            received_at: SystemTime::UNIX_EPOCH,
            radio: None,
        }
    }

    fn decode(guard: &FrameGuard, packet: &Packet) -> Result<Vec<crate::model::Reading>, Refusal> {
        let (decoder, packet) = guard.open(&DECODER, packet)?;
        Ok(decoder.decode(&packet)?)
    }

    #[test]
    fn device_keys_win_over_the_source_key_and_counters_must_grow() {
        let guard = guard();
        let readings = decode(&guard, &packet("uart0", &key(1), 17, 5)).unwrap();
        assert_eq!(readings[0].address, "17");
        assert_eq!(
            readings[0].fields,
            vec![("temperature_1".into(), Value::Float(21.5))]
        );
        assert!(decode(&guard, &packet("uart0", &key(2), 9, 5)).is_ok());
        assert!(matches!(
            decode(&guard, &packet("uart0", &key(1), 9, 6)),
            Err(Refusal::Auth {
                address: 9,
                error: OpenError::Mic
            })
        ));
        assert!(matches!(
            decode(&guard, &packet("uart0", &key(1), 17, 5)),
            Err(Refusal::Replayed { address: 17, .. })
        ));
        assert!(decode(&guard, &packet("uart0", &key(1), 17, 6)).is_ok());
    }

    #[test]
    fn plain_sources_pass_and_bad_crcs_stay_decode_errors() {
        let guard = guard();
        let plain = packet("other", &key(1), 17, 5);
        let (decoder, opened) = guard.open(&DECODER, &plain).unwrap();
        assert_eq!(decoder, DECODER);
        assert!(matches!(opened, Cow::Borrowed(_)));
        let mut bad = packet("uart0", &key(1), 17, 5);
        bad.bytes[4] ^= 1;
        let refusal = guard.open(&DECODER, &bad).unwrap_err();
        assert!(matches!(refusal, Refusal::Decode(_)));
        let mut counters = SourceCounters::default();
        refusal.count(&mut counters);
        Refusal::NoKey { address: 1 }.count(&mut counters);
        assert_eq!((counters.decode_errors, counters.auth_failed), (1, 1));
    }

    #[test]
    fn a_source_with_device_keys_only_refuses_other_devices() {
        let mut keys = SourceKeys::default();
        keys.devices.insert(9, key(2));
        let mut all = FrameKeys::default();
        all.sources.insert("uart0".into(), keys);
        let guard = FrameGuard::new(all, ReplayGuard::in_memory());
        assert_eq!(
            decode(&guard, &packet("uart0", &key(1), 17, 5)).unwrap_err(),
            Refusal::NoKey { address: 17 }
        );
    }

    #[test]
    fn device_addresses_within_the_header() {
        assert_eq!(device_address(HeaderFormat::Node16, "65535"), Some(65535));
        assert_eq!(device_address(HeaderFormat::Node16, "65536"), None);
        assert_eq!(device_address(HeaderFormat::RadioHead, "256"), None);
        assert_eq!(device_address(HeaderFormat::RadioHead, "kitchen"), None);
        assert_eq!(device_address(HeaderFormat::None, "1"), None);
    }
}
