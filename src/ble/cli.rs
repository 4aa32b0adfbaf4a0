//! What `sensorgate decode --payload bthome|pvvx|atc1441 [--mac MAC] [--key-file F] HEX` does: decode one
//! advertisement's service data, given from its 16-bit UUID on (`d2fc40...` for BTHome, `1a18...` for
//! pvvx and atc1441), and print the reading as JSON in the shape of the other payloads' (`address`,
//! `seq`, `fields`), plus the encryption `counter` and the `trigger_based` flag. The bindkey comes from a
//! key file of 32 hex digits (the frame key format); errors never show a key byte.

use std::path::Path;

use anyhow::anyhow;

use super::{decode_service_data, BleFormat, Mac};
use crate::crypto::{keys, parse_hex};

/// The reading of `service_data_hex` as pretty JSON: an array of one reading.
pub fn decode_one(
    format: BleFormat,
    service_data_hex: &str,
    mac: Option<&str>,
    key_file: Option<&Path>,
) -> anyhow::Result<String> {
    let bytes = parse_hex(service_data_hex).map_err(|e| anyhow!("{e}"))?;
    let mac = match mac {
        None => None,
        Some(text) => Some(Mac::parse(text).ok_or_else(|| {
            anyhow!("--mac {text:?} is not a Bluetooth address: write it as 54:48:E6:8F:80:A5")
        })?),
    };
    let key = match key_file {
        None => None,
        Some(path) => {
            let loaded = keys::load_frame_key(path)?;
            if let Some(warning) = loaded.warning(path) {
                eprintln!("sensorgate: {warning}");
            }
            Some(loaded.key)
        }
    };
    let reading = decode_service_data(format, &bytes, mac, key.as_ref())?;
    let mut json = crate::decode::reading_json(
        reading.fields.address.as_deref().unwrap_or_default(),
        reading.fields.seq,
        &reading.fields.fields,
    );
    if let Some(object) = json.as_object_mut() {
        object.insert("counter".into(), reading.counter.into());
        object.insert("trigger_based".into(), reading.trigger_based.into());
    }
    Ok(serde_json::to_string_pretty(&serde_json::Value::Array(
        vec![json],
    ))?)
}
