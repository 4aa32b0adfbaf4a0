//! The link header in front of a payload: none, `node16` (2-byte big-endian address, 1-byte sequence)
//! or RadioHead's four bytes (TO, FROM, ID, FLAGS; FROM is the address, ID the sequence). This module
//! splits a header off and writes one; it never looks at the payload behind it.

use super::{DecodeError, HeaderFormat};

/// Length of a `node16` header: address (2, big-endian), sequence (1).
pub const NODE16_LEN: usize = 3;
/// Length of a RadioHead header: TO, FROM, ID, FLAGS.
pub const RADIOHEAD_LEN: usize = 4;
/// RadioHead's broadcast address, written as TO by [`encode_header`].
pub const RADIOHEAD_BROADCAST: u8 = 0xFF;
/// The RadioHead FLAGS bit of an acknowledgement (RH_FLAGS_ACK): such a packet carries no reading.
pub const RADIOHEAD_FLAG_ACK: u8 = 0x80;

/// What a header says about the packet behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFields {
    /// The sender's address in decimal (`"17"`), when the format carries one.
    pub address: Option<String>,
    /// The sender's sequence number, when the format carries one.
    pub seq: Option<u32>,
    /// False for packets that carry no reading (RadioHead acknowledgements).
    pub carries_reading: bool,
}

/// Splits the header off `bytes`: what it says and the payload after it. A packet shorter than its
/// header is refused. RadioHead's TO is not checked (the gateway listens to every node) and a packet
/// with the ACK flag is marked as carrying no reading.
pub fn split_header(
    format: HeaderFormat,
    bytes: &[u8],
) -> Result<(HeaderFields, &[u8]), DecodeError> {
    let too_short = |need: usize| DecodeError::HeaderTooShort {
        format: format.name(),
        need,
        have: bytes.len(),
    };
    match format {
        HeaderFormat::None => Ok((
            HeaderFields {
                address: None,
                seq: None,
                carries_reading: true,
            },
            bytes,
        )),
        HeaderFormat::Node16 => match bytes {
            [hi, lo, seq, payload @ ..] => Ok((
                HeaderFields {
                    address: Some(u16::from_be_bytes([*hi, *lo]).to_string()),
                    seq: Some(u32::from(*seq)),
                    carries_reading: true,
                },
                payload,
            )),
            _ => Err(too_short(NODE16_LEN)),
        },
        HeaderFormat::RadioHead => match bytes {
            [_to, from, id, flags, payload @ ..] => Ok((
                HeaderFields {
                    address: Some(from.to_string()),
                    seq: Some(u32::from(*id)),
                    carries_reading: flags & RADIOHEAD_FLAG_ACK == 0,
                },
                payload,
            )),
            _ => Err(too_short(RADIOHEAD_LEN)),
        },
    }
}

/// The header a sender with `address` and sequence `seq` puts in front of its payload. `node16` writes
/// the address big-endian; RadioHead writes TO = broadcast, FROM = the address's low byte, ID = `seq`,
/// FLAGS = 0.
pub fn encode_header(format: HeaderFormat, address: u16, seq: u8) -> Vec<u8> {
    match format {
        HeaderFormat::None => Vec::new(),
        HeaderFormat::Node16 => {
            let [hi, lo] = address.to_be_bytes();
            vec![hi, lo, seq]
        }
        HeaderFormat::RadioHead => {
            vec![RADIOHEAD_BROADCAST, address.to_be_bytes()[1], seq, 0]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node16_round_trip() {
        let mut packet = encode_header(HeaderFormat::Node16, 0x0111, 9);
        assert_eq!(packet, [0x01, 0x11, 0x09]);
        packet.extend_from_slice(b"rest");
        let (fields, payload) = split_header(HeaderFormat::Node16, &packet).unwrap();
        assert_eq!(fields.address.as_deref(), Some("273"));
        assert_eq!(fields.seq, Some(9));
        assert!(fields.carries_reading);
        assert_eq!(payload, b"rest");
    }

    #[test]
    fn radiohead_from_is_the_address_and_id_the_sequence() {
        let mut packet = encode_header(HeaderFormat::RadioHead, 17, 200);
        assert_eq!(packet, [0xFF, 17, 200, 0]);
        packet.push(0x42);
        let (fields, payload) = split_header(HeaderFormat::RadioHead, &packet).unwrap();
        assert_eq!(fields.address.as_deref(), Some("17"));
        assert_eq!(fields.seq, Some(200));
        assert_eq!(payload, [0x42]);

        let ack = [0x01, 0x02, 0x03, RADIOHEAD_FLAG_ACK, b'!'];
        let (fields, _) = split_header(HeaderFormat::RadioHead, &ack).unwrap();
        assert!(!fields.carries_reading);
    }

    #[test]
    fn no_header_passes_everything_through() {
        let (fields, payload) = split_header(HeaderFormat::None, b"abc").unwrap();
        assert_eq!(fields.address, None);
        assert_eq!(fields.seq, None);
        assert_eq!(payload, b"abc");
        assert!(encode_header(HeaderFormat::None, 5, 5).is_empty());
    }

    #[test]
    fn truncated_headers_are_refused() {
        assert_eq!(
            split_header(HeaderFormat::Node16, &[0x00, 0x11]),
            Err(DecodeError::HeaderTooShort {
                format: "node16",
                need: 3,
                have: 2
            })
        );
        assert_eq!(
            split_header(HeaderFormat::RadioHead, &[0xFF, 1, 2]),
            Err(DecodeError::HeaderTooShort {
                format: "radiohead",
                need: 4,
                have: 3
            })
        );
        assert!(split_header(HeaderFormat::RadioHead, &[]).is_err());
        // A header with nothing behind it is fine here; the payload decoder judges the empty payload.
        assert!(split_header(HeaderFormat::Node16, &[0, 1, 2]).is_ok());
    }
}
