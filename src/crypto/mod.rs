//! Payload security: authenticated, encrypted sensor frames (AES-128-CCM, [`frame`]), the end-to-end
//! encrypted uplink envelope (ChaCha20-Poly1305, [`envelope`]), key files ([`keys`]) and the gateway's
//! check of incoming frames ([`guard`]); replay marks live in [`crate::replay`]. The wire formats are
//! written out in `docs/formats.md` and pinned by its test vectors (the configuration's `key_file`s are
//! read by `crate::app::keys`). No key byte is ever logged or formatted.

pub mod cli;
pub mod envelope;
pub mod frame;
pub mod guard;
pub mod keys;

pub use envelope::Sealer;
pub use guard::{FrameGuard, FrameKeys, Refusal, SourceKeys};
pub use keys::{EnvelopeKey, FrameKey, KeyError, KeyFile};

/// Reads `text` as bytes: hexadecimal digits (whitespace and `:` ignored).
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<char> = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text: String = pair.iter().collect();
            u8::from_str_radix(&text, 16).map_err(|_| format!("not hexadecimal: {text:?}"))
        })
        .collect()
}

/// Lower-case hex, no separators.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sensorgate encrypt`: the frame a node with this key, header, address and counter sends for
/// `payload`, before CRC and framing, or with them when asked.
#[derive(Debug, Clone)]
pub struct EncryptRequest {
    pub header: crate::decode::HeaderFormat,
    pub address: u32,
    /// The header's sequence number (node16, RadioHead ID).
    pub seq: u8,
    pub counter: u32,
    pub crc: crate::frame::crc::CrcMode,
    pub framing: Option<crate::frame::Framing>,
    pub payload: Vec<u8>,
}

/// Builds the frame of [`EncryptRequest`].
pub fn encrypt_frame(key: &FrameKey, request: &EncryptRequest) -> Result<Vec<u8>, String> {
    use crate::decode::HeaderFormat;
    let header_address = match request.header {
        HeaderFormat::None => {
            return Err(
                "the gateway refuses encryption without a header (every node would share nonce address 0 and one replay mark): write --header node16 or radiohead".into(),
            )
        }
        HeaderFormat::Node16 => u16::try_from(request.address)
            .map_err(|_| format!("node16 addresses are 0-65535, not {}", request.address))?,
        HeaderFormat::RadioHead => u16::from(
            u8::try_from(request.address)
                .map_err(|_| format!("RadioHead addresses are 0-255, not {}", request.address))?,
        ),
    };
    let header = crate::decode::encode_header(request.header, header_address, request.seq);
    let address = frame::header_address(request.header, &header);
    let sealed = frame::seal(
        key,
        frame::Direction::Uplink,
        address,
        &header,
        request.counter,
        &request.payload,
    )
    .map_err(|e| e.to_string())?;
    let with_crc = crate::frame::crc::append_crc(request.crc, &sealed);
    Ok(match request.framing {
        Some(framing) => crate::frame::encode_frame(framing, &with_crc),
        None => with_crc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::HeaderFormat;
    use crate::frame::crc::CrcMode;

    #[test]
    fn the_command_line_request_gives_the_design_vector() {
        let key = FrameKey::from_bytes(core::array::from_fn(|i| i as u8));
        let request = EncryptRequest {
            header: HeaderFormat::Node16,
            address: 0x11,
            seq: 7,
            counter: 1,
            crc: CrcMode::None,
            framing: None,
            payload: parse_hex("03 67 01 10 05 67 00 FF").unwrap(),
        };
        assert_eq!(
            to_hex(&encrypt_frame(&key, &request).unwrap()),
            "001107010000000ebed6a866c9e61ebc43fa98"
        );
        let bad = EncryptRequest {
            address: 70_000,
            ..request.clone()
        };
        assert!(encrypt_frame(&key, &bad).unwrap_err().contains("0-65535"));
        let headerless = EncryptRequest {
            header: HeaderFormat::None,
            address: 0,
            ..request.clone()
        };
        assert!(encrypt_frame(&key, &headerless)
            .unwrap_err()
            .contains("--header node16"));
        assert!(parse_hex("0").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
