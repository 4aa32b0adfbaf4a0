//! The optional CRC trailer of a frame: CRC-16/CCITT-FALSE (also catalogued as CRC-16/IBM-3740) with
//! polynomial 0x1021, initial value 0xFFFF, input and output not reflected, final XOR 0x0000; check value
//! 0x29B1 over ASCII "123456789". The two CRC bytes follow the payload big-endian, inside the frame
//! (before COBS/SLIP stuffing). This module computes, appends, checks and strips that trailer; it never
//! looks at what the payload means.

use super::FrameError;

/// Whether frames of a source carry a CRC trailer, and which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum CrcMode {
    /// No trailer: the whole frame is payload.
    #[serde(rename = "none")]
    None,
    /// A 2-byte big-endian CRC-16/CCITT-FALSE trailer (poly 0x1021, init 0xFFFF, unreflected, xorout 0).
    #[serde(rename = "crc16-ccitt-false")]
    Crc16CcittFalse,
}

/// Length of the trailer [`CrcMode::Crc16CcittFalse`] appends.
pub const CRC16_LEN: usize = 2;

const POLY: u16 = 0x1021;
const INIT: u16 = 0xFFFF;

/// The byte-at-a-time lookup table for [`POLY`] (unreflected), built at compile time.
const TABLE: [u16; 256] = build_table();

const fn build_table() -> [u16; 256] {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC-16/CCITT-FALSE of `data`: poly 0x1021, init 0xFFFF, not reflected, xorout 0x0000.
/// `crc16_ccitt_false(b"123456789") == 0x29B1`.
pub fn crc16_ccitt_false(data: &[u8]) -> u16 {
    data.iter().fold(INIT, |crc, &byte| {
        (crc << 8) ^ TABLE[usize::from((crc >> 8) as u8 ^ byte)]
    })
}

/// `payload` followed by its trailer (nothing for [`CrcMode::None`]).
pub fn append_crc(mode: CrcMode, payload: &[u8]) -> Vec<u8> {
    match mode {
        CrcMode::None => payload.to_vec(),
        CrcMode::Crc16CcittFalse => {
            let mut out = Vec::with_capacity(payload.len() + CRC16_LEN);
            out.extend_from_slice(payload);
            out.extend_from_slice(&crc16_ccitt_false(payload).to_be_bytes());
            out
        }
    }
}

/// Checks the trailer of `frame` and returns the payload before it (all of `frame` for
/// [`CrcMode::None`]). A frame too short to hold a trailer, or whose trailer does not match, is refused.
pub fn check_and_strip(mode: CrcMode, frame: &[u8]) -> Result<&[u8], FrameError> {
    match mode {
        CrcMode::None => Ok(frame),
        CrcMode::Crc16CcittFalse => {
            let Some(split) = frame.len().checked_sub(CRC16_LEN) else {
                return Err(FrameError::CrcTooShort { len: frame.len() });
            };
            let (payload, trailer) = frame.split_at(split);
            let received = u16::from_be_bytes([trailer[0], trailer[1]]);
            let computed = crc16_ccitt_false(payload);
            if received == computed {
                Ok(payload)
            } else {
                Err(FrameError::CrcMismatch { computed, received })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow, bit-at-a-time CRC-16 with every Rocksoft parameter, to document how the variants that
    /// share the name "CCITT" differ, and to check the table-driven implementation against.
    fn crc16_reference(data: &[u8], poly: u16, init: u16, reflected: bool, xorout: u16) -> u16 {
        let mut crc = init;
        for &byte in data {
            let byte = if reflected { byte.reverse_bits() } else { byte };
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ poly
                } else {
                    crc << 1
                };
            }
        }
        let crc = if reflected { crc.reverse_bits() } else { crc };
        crc ^ xorout
    }

    #[test]
    fn check_value_is_29b1() {
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
    }

    #[test]
    fn the_crc16_variants_called_ccitt_differ() {
        let check = b"123456789";
        // CCITT-FALSE / IBM-3740: ours.
        assert_eq!(crc16_reference(check, 0x1021, 0xFFFF, false, 0), 0x29B1);
        // XMODEM, MODBUS, KERMIT, X-25: not ours; listed so nobody "fixes" the parameters.
        assert_eq!(crc16_reference(check, 0x1021, 0x0000, false, 0), 0x31C3);
        assert_eq!(crc16_reference(check, 0x8005, 0xFFFF, true, 0), 0x4B37);
        assert_eq!(crc16_reference(check, 0x1021, 0x0000, true, 0), 0x2189);
        assert_eq!(crc16_reference(check, 0x1021, 0xFFFF, true, 0xFFFF), 0x906E);
    }

    #[test]
    fn table_matches_bitwise_reference() {
        let mut state = 0x9E37_79B9u32;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            assert_eq!(
                crc16_ccitt_false(&data),
                crc16_reference(&data, 0x1021, 0xFFFF, false, 0)
            );
        }
    }

    #[test]
    fn trailer_round_trips_big_endian() {
        let framed = append_crc(CrcMode::Crc16CcittFalse, b"123456789");
        assert_eq!(&framed[9..], &[0x29, 0xB1]);
        assert_eq!(
            check_and_strip(CrcMode::Crc16CcittFalse, &framed),
            Ok(&b"123456789"[..])
        );
        assert_eq!(append_crc(CrcMode::None, b"abc"), b"abc");
        assert_eq!(check_and_strip(CrcMode::None, b"abc"), Ok(&b"abc"[..]));
        // An empty payload still carries a trailer.
        let empty = append_crc(CrcMode::Crc16CcittFalse, b"");
        assert_eq!(empty, [0xFF, 0xFF]);
        assert_eq!(
            check_and_strip(CrcMode::Crc16CcittFalse, &empty),
            Ok(&b""[..])
        );
    }

    #[test]
    fn wrong_or_missing_trailer_is_refused() {
        let mut framed = append_crc(CrcMode::Crc16CcittFalse, b"hello");
        framed[0] ^= 0x01;
        assert!(matches!(
            check_and_strip(CrcMode::Crc16CcittFalse, &framed),
            Err(FrameError::CrcMismatch { .. })
        ));
        assert_eq!(
            check_and_strip(CrcMode::Crc16CcittFalse, &[0x29]),
            Err(FrameError::CrcTooShort { len: 1 })
        );
        assert_eq!(
            check_and_strip(CrcMode::Crc16CcittFalse, &[]),
            Err(FrameError::CrcTooShort { len: 0 })
        );
    }

    #[test]
    fn config_names_parse() {
        let parse = |s: &str| serde_json::from_str::<CrcMode>(&format!("\"{s}\""));
        assert_eq!(parse("none").unwrap(), CrcMode::None);
        assert_eq!(
            parse("crc16-ccitt-false").unwrap(),
            CrcMode::Crc16CcittFalse
        );
        assert!(parse("crc16").is_err());
    }
}
