//! The encrypted sensor frame, to the byte (`docs/formats.md`, "Encrypted sensor frames"): after the
//! optional link header and before the optional CRC trailer,
//!
//! ```text
//! counter: u32 little-endian | ciphertext (as long as the plaintext payload) | MIC: 4 bytes
//! ```
//!
//! AES-128-CCM with a 4-byte tag and a 13-byte nonce `"SG" | direction | address u32 BE | counter u32 BE |
//! 00 00`; the associated data is the header exactly as on the wire (empty without one), so a changed
//! address, sequence number or RadioHead flag fails like a changed ciphertext. This module owns the
//! format: seal, open, the nonce and the address a header puts into it. Pure: no state, no IO; whether a
//! counter is new is [`crate::replay`]'s business.

use aes::Aes128;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U4};
use ccm::Ccm;

use super::keys::FrameKey;
use crate::decode::header::{NODE16_LEN, RADIOHEAD_LEN};
use crate::decode::HeaderFormat;

type Aes128Ccm = Ccm<Aes128, U4, U13>;

/// Bytes of the frame counter.
pub const COUNTER_LEN: usize = 4;
/// Bytes of the message integrity code (the CCM tag).
pub const MIC_LEN: usize = 4;
/// Bytes an encrypted frame adds to its plaintext payload.
pub const OVERHEAD: usize = COUNTER_LEN + MIC_LEN;
/// Longest plaintext payload: CCM with a 13-byte nonce has a 2-byte length field.
pub const MAX_PAYLOAD: usize = 65_535;

/// Which way a frame goes: the nonce's third byte, so a frame can never be reflected back to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// 0x00: node -> gateway (readings).
    Uplink,
    /// 0x01: gateway -> node (commands).
    Downlink,
}

impl Direction {
    fn byte(self) -> u8 {
        match self {
            Direction::Uplink => 0x00,
            Direction::Downlink => 0x01,
        }
    }
}

/// Why an encrypted frame did not open. Every one of them counts as `auth_failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{have} bytes after the header, an encrypted frame has at least {OVERHEAD} (counter and MIC)")]
    TooShort { have: usize },
    #[error("payload of {have} bytes, longer than AES-CCM's {MAX_PAYLOAD} with this nonce")]
    TooLong { have: usize },
    #[error("MIC mismatch (wrong key, or header, counter, ciphertext or MIC changed)")]
    Mic,
}

/// Why a frame could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("payload of {have} bytes, longer than AES-CCM's {MAX_PAYLOAD} with this nonce")]
    TooLong { have: usize },
}

/// The 13-byte CCM nonce.
pub fn nonce(direction: Direction, address: u32, counter: u32) -> [u8; 13] {
    let mut nonce = [0u8; 13];
    nonce[0] = b'S';
    nonce[1] = b'G';
    nonce[2] = direction.byte();
    nonce[3..7].copy_from_slice(&address.to_be_bytes());
    nonce[7..11].copy_from_slice(&counter.to_be_bytes());
    nonce
}

/// The address a header puts into the nonce: node16's 16-bit address, RadioHead's FROM, 0 without a
/// header (or for a header too short to carry one, which the decoder refuses anyway).
pub fn header_address(format: HeaderFormat, header: &[u8]) -> u32 {
    match (format, header) {
        (HeaderFormat::Node16, [hi, lo, ..]) => u32::from(u16::from_be_bytes([*hi, *lo])),
        (HeaderFormat::RadioHead, [_to, from, ..]) => u32::from(*from),
        _ => 0,
    }
}

/// Length of a header format on the wire.
pub fn header_len(format: HeaderFormat) -> usize {
    match format {
        HeaderFormat::None => 0,
        HeaderFormat::Node16 => NODE16_LEN,
        HeaderFormat::RadioHead => RADIOHEAD_LEN,
    }
}

fn cipher(key: &FrameKey) -> Aes128Ccm {
    Aes128Ccm::new(&key.0.into())
}

/// `counter LE | ciphertext | MIC` for `plaintext` behind `header` (which is not copied into the result).
pub fn seal_body(
    key: &FrameKey,
    direction: Direction,
    address: u32,
    header: &[u8],
    counter: u32,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    if plaintext.len() > MAX_PAYLOAD {
        return Err(SealError::TooLong {
            have: plaintext.len(),
        });
    }
    let mut body = Vec::with_capacity(OVERHEAD + plaintext.len());
    body.extend_from_slice(&counter.to_le_bytes());
    let mut ciphertext = plaintext.to_vec();
    let nonce = nonce(direction, address, counter);
    let tag = cipher(key)
        .encrypt_in_place_detached(&nonce.into(), header, &mut ciphertext)
        .map_err(|_| SealError::TooLong {
            have: plaintext.len(),
        })?;
    body.extend_from_slice(&ciphertext);
    body.extend_from_slice(&tag);
    Ok(body)
}

/// The whole frame as a node sends it (before any CRC and framing): `header | counter | ciphertext | MIC`.
pub fn seal(
    key: &FrameKey,
    direction: Direction,
    address: u32,
    header: &[u8],
    counter: u32,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut frame = header.to_vec();
    frame.extend(seal_body(
        key, direction, address, header, counter, plaintext,
    )?);
    Ok(frame)
}

/// An opened frame: its counter and plaintext payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub counter: u32,
    pub plaintext: Vec<u8>,
}

/// Opens `body` (everything after `header`, CRC already stripped): checks the MIC over header, counter
/// and ciphertext. Nothing of an unauthenticated frame is returned.
pub fn open(
    key: &FrameKey,
    direction: Direction,
    address: u32,
    header: &[u8],
    body: &[u8],
) -> Result<Opened, OpenError> {
    if body.len() < OVERHEAD {
        return Err(OpenError::TooShort { have: body.len() });
    }
    let (counter_bytes, rest) = body.split_at(COUNTER_LEN);
    let (ciphertext, mic) = rest.split_at(rest.len() - MIC_LEN);
    if ciphertext.len() > MAX_PAYLOAD {
        return Err(OpenError::TooLong {
            have: ciphertext.len(),
        });
    }
    let counter = u32::from_le_bytes([
        counter_bytes[0],
        counter_bytes[1],
        counter_bytes[2],
        counter_bytes[3],
    ]);
    let nonce = nonce(direction, address, counter);
    let mut plaintext = ciphertext.to_vec();
    let tag: [u8; MIC_LEN] = [mic[0], mic[1], mic[2], mic[3]];
    cipher(key)
        .decrypt_in_place_detached(&nonce.into(), header, &mut plaintext, &tag.into())
        .map_err(|_| OpenError::Mic)?;
    Ok(Opened { counter, plaintext })
}

/// The first frame counter a sealer takes from the clock: 16 per second since 1_700_000_000
/// (2023-11-14), so counters keep growing across restarts; saturates at u32::MAX in 2032.
pub fn clock_counter(now: std::time::SystemTime) -> u32 {
    let seconds = now
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_sub(1_700_000_000);
    u32::try_from(seconds.saturating_mul(16)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
            .collect()
    }

    fn design_key() -> FrameKey {
        FrameKey::from_bytes(core::array::from_fn(|i| i as u8))
    }

    const LPP: &str = "03 67 01 10 05 67 00 FF";
    const FRAME: &str = "001107 01000000 0ebed6a866c9e61e bc43fa98";

    /// `docs/formats.md`, "Encrypted sensor frames": the test vector, sealed.
    #[test]
    fn design_vector_seals() {
        let header = hex("00 11 07");
        assert_eq!(header_address(HeaderFormat::Node16, &header), 0x11);
        assert_eq!(
            nonce(Direction::Uplink, 0x11, 1).to_vec(),
            hex("53470000000011000000010000")
        );
        let frame = seal(
            &design_key(),
            Direction::Uplink,
            0x11,
            &header,
            1,
            &hex(LPP),
        )
        .unwrap();
        assert_eq!(frame, hex(FRAME));
    }

    /// The same vector, opened; and every single-bit change anywhere in it refused.
    #[test]
    fn design_vector_opens_and_any_flipped_bit_is_refused() {
        let frame = hex(FRAME);
        let (header, body) = frame.split_at(3);
        let opened = open(&design_key(), Direction::Uplink, 0x11, header, body).unwrap();
        assert_eq!(
            opened,
            Opened {
                counter: 1,
                plaintext: hex(LPP)
            }
        );
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let (header, body) = bad.split_at(3);
            let address = header_address(HeaderFormat::Node16, header);
            assert_eq!(
                open(&design_key(), Direction::Uplink, address, header, body),
                Err(OpenError::Mic),
                "bit {bit}"
            );
        }
        // The other direction, another key, and a truncated frame.
        assert!(open(&design_key(), Direction::Downlink, 0x11, header, body).is_err());
        let other = FrameKey::from_bytes([0; 16]);
        assert!(open(&other, Direction::Uplink, 0x11, header, body).is_err());
        assert_eq!(
            open(&design_key(), Direction::Uplink, 0x11, header, &body[..7]),
            Err(OpenError::TooShort { have: 7 })
        );
    }

    #[test]
    fn radiohead_and_headerless_addresses() {
        assert_eq!(
            header_address(HeaderFormat::RadioHead, &[0xff, 42, 7, 0]),
            42
        );
        assert_eq!(header_address(HeaderFormat::None, &[]), 0);
        assert_eq!(
            header_address(HeaderFormat::Node16, &[0xff, 0xfe, 1]),
            0xfffe
        );
        let empty = seal(&design_key(), Direction::Uplink, 0, &[], 9, &[]).unwrap();
        assert_eq!(empty.len(), OVERHEAD);
        assert_eq!(
            open(&design_key(), Direction::Uplink, 0, &[], &empty).unwrap(),
            Opened {
                counter: 9,
                plaintext: vec![]
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Round trip over random keys, addresses, counters, headers and payloads; a different counter
        /// (the replayed-under-a-new-number attack) never opens.
        #[test]
        fn seal_then_open_round_trips(
            key in any::<[u8; 16]>(),
            address in any::<u32>(),
            counter in any::<u32>(),
            header in proptest::collection::vec(any::<u8>(), 0..5),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let key = FrameKey::from_bytes(key);
            let frame = seal(&key, Direction::Uplink, address, &header, counter, &payload).unwrap();
            prop_assert_eq!(frame.len(), header.len() + payload.len() + OVERHEAD);
            let (h, body) = frame.split_at(header.len());
            let opened = open(&key, Direction::Uplink, address, h, body).unwrap();
            prop_assert_eq!(opened.counter, counter);
            prop_assert_eq!(&opened.plaintext, &payload);
            let mut renumbered = body.to_vec();
            renumbered[..4].copy_from_slice(&counter.wrapping_add(1).to_le_bytes());
            prop_assert!(open(&key, Direction::Uplink, address, h, &renumbered).is_err());
        }
    }

    #[test]
    fn the_clock_counter_counts_16_a_second_from_2023_and_saturates() {
        let at = |s| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(clock_counter(at(1_000_000_000)), 0);
        assert_eq!(clock_counter(at(1_700_000_000)), 0);
        assert_eq!(clock_counter(at(1_700_000_010)), 160);
        assert_eq!(clock_counter(at(2_000_000_000)), u32::MAX);
    }
}
