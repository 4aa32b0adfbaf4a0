//! The link around a command payload, in the order a node undoes it: framing (serial only), the CRC
//! trailer, the header, and the sealed body of an encrypted source. Headers address the device: `node16`
//! carries its address and the gateway's sequence number; RadioHead carries TO = the device, FROM = the
//! gateway's own `address`, ID = the sequence number, FLAGS = 0. Sealing is the encrypted-frames format
//! (`crate::crypto::frame`) in the gateway -> node direction (0x01) with the gateway's own counter for
//! the device; the nonce's address is the device's (node16's address, RadioHead's TO), so two devices
//! that share their source's key never share a nonce. Pure: the caller supplies sequence numbers and
//! counters.

use super::EncodeError;
use crate::crypto::frame::{self as sealed, Direction};
use crate::crypto::FrameKey;
use crate::decode::header::{NODE16_LEN, RADIOHEAD_LEN};
use crate::decode::HeaderFormat;
use crate::frame::crc::{append_crc, CrcMode};
use crate::frame::lines::DELIMITER as LINE_DELIMITER;
use crate::frame::{encode_frame, Framing};

/// The largest packet an SX1276/SX1262 sends (its FIFO and length register are 8 bits).
pub const RADIO_MAX_PACKET: usize = 255;

/// How one source wraps what it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSpec {
    pub header: HeaderFormat,
    pub crc: CrcMode,
    /// The serial framing; `None` on a radio, where a packet is a frame.
    pub framing: Option<Framing>,
    /// The gateway's own RadioHead address (FROM).
    pub gateway_address: u8,
}

/// The longest frame the link carries after framing.
fn max_len(spec: &LinkSpec) -> usize {
    match spec.framing {
        None => RADIO_MAX_PACKET,
        Some(_) => 65_536,
    }
}

/// The numeric destination a header needs for `address` (node16: 0-65535, RadioHead: 0-254; 255 is
/// RadioHead's broadcast), or 0 without a header.
pub fn destination(format: HeaderFormat, address: &str) -> Result<u16, EncodeError> {
    let refuse = |why| EncodeError::Address {
        address: address.to_string(),
        why,
    };
    let parsed = address
        .parse::<u16>()
        .ok()
        .filter(|n| n.to_string() == address);
    match format {
        HeaderFormat::None => Ok(0),
        HeaderFormat::Node16 => parsed.ok_or(refuse("is not a node16 address (0-65535)")),
        HeaderFormat::RadioHead => parsed
            .filter(|n| *n < 255)
            .ok_or(refuse("is not a RadioHead address (0-254)")),
    }
}

/// The header the gateway puts in front of a command to `to` with sequence number `seq`.
pub fn header(spec: &LinkSpec, to: u16, seq: u8) -> Vec<u8> {
    match spec.header {
        HeaderFormat::None => Vec::new(),
        HeaderFormat::Node16 => {
            let [hi, lo] = to.to_be_bytes();
            vec![hi, lo, seq]
        }
        HeaderFormat::RadioHead => vec![to.to_be_bytes()[1], spec.gateway_address, seq, 0],
    }
}

/// A key and the gateway's counter for sealing one frame.
#[derive(Debug, Clone, Copy)]
pub struct Seal<'a> {
    pub key: &'a FrameKey,
    pub counter: u32,
}

/// The bytes that go on the wire (serial) or into the radio's FIFO: header, payload (sealed when `seal`
/// is given), CRC trailer, framing. On a line link a frame holding a `\n` is refused: the node would
/// read it as two frames (COBS and SLIP stuff their delimiters away).
pub fn wrap(
    spec: &LinkSpec,
    to: u16,
    seq: u8,
    payload: &[u8],
    seal: Option<Seal<'_>>,
) -> Result<Vec<u8>, EncodeError> {
    let header = header(spec, to, seq);
    let body = match seal {
        None => {
            let mut body = header;
            body.extend_from_slice(payload);
            body
        }
        Some(seal) => sealed::seal(
            seal.key,
            Direction::Downlink,
            u32::from(to),
            &header,
            seal.counter,
            payload,
        )
        .map_err(|e| EncodeError::Seal(e.to_string()))?,
    };
    let with_crc = append_crc(spec.crc, &body);
    if spec.framing == Some(Framing::Lines) && with_crc.contains(&LINE_DELIMITER) {
        return Err(EncodeError::Delimiter);
    }
    let wire = match spec.framing {
        Some(framing) => encode_frame(framing, &with_crc),
        None => with_crc,
    };
    if wire.len() > max_len(spec) {
        return Err(EncodeError::TooLong {
            len: wire.len(),
            max: max_len(spec),
        });
    }
    Ok(wire)
}

/// Header bytes of a format.
pub fn header_len(format: HeaderFormat) -> usize {
    match format {
        HeaderFormat::None => 0,
        HeaderFormat::Node16 => NODE16_LEN,
        HeaderFormat::RadioHead => RADIOHEAD_LEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::header::split_header;
    use crate::frame::{Deframer, Framing};

    const RADIO: LinkSpec = LinkSpec {
        header: HeaderFormat::RadioHead,
        crc: CrcMode::None,
        framing: None,
        gateway_address: 0,
    };

    #[test]
    fn radiohead_addresses_the_device_from_the_gateway() {
        let spec = LinkSpec {
            gateway_address: 9,
            ..RADIO
        };
        let bytes = wrap(&spec, 17, 5, &[1, 1, 1], None).unwrap();
        assert_eq!(bytes, [17, 9, 5, 0, 1, 1, 1]);
        let (fields, payload) = split_header(HeaderFormat::RadioHead, &bytes).unwrap();
        assert_eq!(fields.address.as_deref(), Some("9"), "FROM is the gateway");
        assert_eq!(payload, [1, 1, 1]);
        assert!(destination(HeaderFormat::RadioHead, "255").is_err());
        assert!(destination(HeaderFormat::RadioHead, "x").is_err());
        assert_eq!(destination(HeaderFormat::None, "anything").unwrap(), 0);
    }

    #[test]
    fn cobs_crc_node16_reads_back_through_the_deframer() {
        let spec = LinkSpec {
            header: HeaderFormat::Node16,
            crc: CrcMode::Crc16CcittFalse,
            framing: Some(Framing::Cobs),
            gateway_address: 0,
        };
        let wire = wrap(&spec, 0x0111, 7, &[0, 1, 0], None).unwrap();
        assert_eq!(*wire.last().unwrap(), 0);
        let mut deframer = Deframer::new(Framing::Cobs, 64);
        deframer.push(&wire);
        let frame = deframer.next_frame().unwrap().unwrap();
        let body = crate::frame::crc::check_and_strip(CrcMode::Crc16CcittFalse, &frame).unwrap();
        assert_eq!(body, [0x01, 0x11, 7, 0, 1, 0]);
    }

    #[test]
    fn a_line_frame_never_holds_a_newline() {
        let lines = LinkSpec {
            header: HeaderFormat::None,
            crc: CrcMode::None,
            framing: Some(Framing::Lines),
            gateway_address: 0,
        };
        assert_eq!(
            wrap(&lines, 0, 0, b"{\"id\":17}\n{\"id\":99}", None),
            Err(EncodeError::Delimiter)
        );
        assert_eq!(wrap(&lines, 0, 0, b"a;b", None).unwrap(), b"a;b\n");
        let cobs = LinkSpec {
            framing: Some(Framing::Cobs),
            ..lines
        };
        assert!(wrap(&cobs, 0, 0, b"a\nb", None).is_ok(), "COBS stuffs it");
    }

    #[test]
    fn a_radio_packet_is_at_most_255_bytes() {
        assert!(wrap(&RADIO, 1, 0, &[7; 251], None).is_ok());
        assert_eq!(
            wrap(&RADIO, 1, 0, &[7; 252], None),
            Err(EncodeError::TooLong { len: 256, max: 255 })
        );
    }
}
