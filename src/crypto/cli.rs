//! What `sensorgate encrypt` and `sensorgate decrypt` do, for firmware authors and backend receivers:
//! build one encrypted sensor frame from a key file, header, address, counter and payload; open one
//! uplink envelope with a key file and the topic it arrived on. Errors say what to write instead and
//! never show a key byte.

use std::path::Path;

use anyhow::{anyhow, Context};

use super::{encrypt_frame, envelope, keys, parse_hex, to_hex, EncryptRequest};
use crate::decode::HeaderFormat;
use crate::frame::crc::CrcMode;
use crate::frame::Framing;

/// A name given on the command line (`lpp`, `node16`, `crc16-ccitt-false`) read as the configuration
/// spells it; the error names `what` and the `valid` names.
pub fn parse_name<T: serde::de::DeserializeOwned>(
    value: &str,
    what: &str,
    valid: &str,
) -> anyhow::Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|_| anyhow!("unknown {what} {value:?}: write {valid}"))
}

/// The frame as lower-case hex.
#[allow(clippy::too_many_arguments)]
pub fn encrypt_one(
    key_file: &Path,
    header: &str,
    address: u32,
    seq: u8,
    counter: u32,
    crc: &str,
    framing: Option<&str>,
    payload: &str,
) -> anyhow::Result<String> {
    let header: HeaderFormat = parse_name(header, "header", "none, node16 or radiohead")?;
    let crc: CrcMode = parse_name(crc, "crc", "none or crc16-ccitt-false")?;
    let framing = match framing {
        None => None,
        Some(name) => match parse_name::<Framing>(name, "framing", "cobs or slip")? {
            Framing::Lines => {
                return Err(anyhow!(
                    "encrypted frames are binary: write --framing cobs or slip"
                ))
            }
            framing => Some(framing),
        },
    };
    let payload = parse_hex(payload).map_err(|e| anyhow!("payload: {e}"))?;
    let key = keys::load_frame_key(key_file)?.key;
    let request = EncryptRequest {
        header,
        address,
        seq,
        counter,
        crc,
        framing,
        payload,
    };
    Ok(to_hex(
        &encrypt_frame(&key, &request).map_err(|e| anyhow!(e))?,
    ))
}

/// The payload of an envelope received on `topic`; `hex`: the input is hexadecimal text.
pub fn decrypt_one(
    key_file: &Path,
    topic: &str,
    input: &[u8],
    hex: bool,
) -> anyhow::Result<Vec<u8>> {
    let envelope_bytes = if hex {
        let text = std::str::from_utf8(input).context("--hex input is not text")?;
        parse_hex(text).map_err(|e| anyhow!("--hex input: {e}"))?
    } else {
        input.to_vec()
    };
    let key = keys::load_envelope_key(key_file)?.key;
    let (_key_id, payload) = envelope::open(&key, None, topic, &envelope_bytes)
        .map_err(|e| anyhow!("envelope not opened: {e}"))?;
    Ok(payload)
}
