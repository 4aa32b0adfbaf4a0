//! Payload security: authenticated, encrypted sensor frames (AES-128-CCM, [`frame`]), the end-to-end
//! encrypted uplink envelope (ChaCha20-Poly1305, [`envelope`]), key files ([`keys`]) and the gateway's
//! check of incoming frames ([`guard`]); replay marks live in [`crate::replay`]. The wire formats are
//! written out in `docs/formats.md` and pinned by its test vectors. This module also turns the configuration's
//! `key_file`s into keys at start and reload (blocking IO: callers run it on a blocking thread), with
//! errors as `KEYFILE:LINE:COL: message` naming the configuration key that points at the file, and a
//! warning for each key file readable by group or others. No key byte is ever logged or formatted.

pub mod cli;
pub mod envelope;
pub mod frame;
pub mod guard;
pub mod keys;

use std::path::Path;

pub use envelope::Sealer;
pub use guard::{FrameGuard, FrameKeys, Refusal, SourceKeys};
pub use keys::{EnvelopeKey, FrameKey, KeyError, KeyFile};

use crate::config::{Config, ConfigError};

/// What loading the key files found: the keys, and one warning per file readable by group or others.
#[derive(Debug, Default)]
pub struct LoadedKeys {
    pub frames: FrameKeys,
    /// `(index of the [[upstream.forward]] rule, its sealer)`.
    pub sealers: Vec<(usize, Sealer)>,
    pub warnings: Vec<String>,
}

/// A key file error as a configuration error: the key file's path, line and column, and which
/// configuration key names it.
pub(crate) fn config_error(error: KeyError, named_by: &str) -> ConfigError {
    match error {
        KeyError::Read { path, source } => ConfigError {
            path,
            line: 0,
            column: 0,
            message: format!(
                "cannot read the key file: {source} ({named_by}; check the path and that sensorgate may read it)"
            ),
        },
        KeyError::Malformed {
            path,
            line,
            column,
            message,
        } => ConfigError {
            path,
            line,
            column,
            message: format!("{message} ({named_by})"),
        },
    }
}

fn frame_key(
    path: &Path,
    named_by: &str,
    warnings: &mut Vec<String>,
) -> Result<FrameKey, ConfigError> {
    let file = keys::load_frame_key(path).map_err(|e| config_error(e, named_by))?;
    warnings.extend(file.warning(path));
    Ok(file.key)
}

/// Reads every key file the configuration names: each encrypted source's `key_file`, each `[[device]]
/// key_file`, each `[[upstream.forward]] encrypt.key_file`. Blocking IO.
pub fn load_keys(config: &Config) -> Result<LoadedKeys, ConfigError> {
    let mut loaded = LoadedKeys::default();
    for (i, source) in config.sources.iter().enumerate() {
        let Some(encryption) = &source.encryption else {
            continue;
        };
        let mut keys = SourceKeys::default();
        if let Some(path) = &encryption.key_file {
            let named_by = format!("source[{i}].key_file of [[source]] \"{}\"", source.name);
            keys.default = Some(frame_key(path, &named_by, &mut loaded.warnings)?);
        }
        loaded.frames.sources.insert(source.name.clone(), keys);
    }
    for (i, device) in config.device.iter().enumerate() {
        let Some(path) = &device.key_file else {
            continue;
        };
        let named_by = format!("device[{i}].key_file of [[device]] \"{}\"", device.name);
        let source = config.sources.iter().find(|s| s.name == device.source);
        // The configuration's validation guarantees an encrypted source with a header and a numeric
        // address; a device that still does not fit is skipped rather than given a wrong key.
        let Some(source) = source else { continue };
        let Some(address) = guard::device_address(source.header, &device.address) else {
            continue;
        };
        let key = frame_key(path, &named_by, &mut loaded.warnings)?;
        if let Some(keys) = loaded.frames.sources.get_mut(&source.name) {
            keys.devices.insert(address, key);
        }
    }
    if let Some(upstream) = &config.upstream {
        for (i, rule) in upstream.forward.iter().enumerate() {
            let Some(encrypt) = &rule.encrypt else {
                continue;
            };
            let named_by = format!("upstream.forward[{i}].encrypt.key_file");
            let file = keys::load_envelope_key(&encrypt.key_file)
                .map_err(|e| config_error(e, &named_by))?;
            loaded.warnings.extend(file.warning(&encrypt.key_file));
            let key_id = u8::try_from(encrypt.key_id).unwrap_or(u8::MAX);
            loaded.sealers.push((i, Sealer::new(file.key, key_id)));
        }
    }
    Ok(loaded)
}

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
