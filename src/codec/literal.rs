//! JavaScript literals read as data: the examples of a codec (ChirpStack's `test_*.json` carry
//! comments, hex numbers and trailing commas; TTN's YAML embeds JSON values) are read by QuickJS itself,
//! in a bounded runtime of their own, so that they mean exactly what the vendor's JavaScript sees. Used
//! by [`super::examples`] and [`super::yaml`]; it never runs a codec.

use serde_json::{Map, Value as Json};

use super::{Codec, CodecError, CodecLimits, UplinkInput};

/// Reads a JavaScript literal (JSON plus comments, hex numbers, trailing commas) in a bounded QuickJS
/// runtime of its own.
pub fn read_literal(text: &str) -> Result<Json, CodecError> {
    let script =
        format!("function decodeUplink(i) {{ return {{ data: {{ v: (\n{text}\n) }} }}; }}");
    let mut reader = Codec::load("examples", &script, CodecLimits::default())?;
    let decoded = reader.decode_uplink(&UplinkInput {
        bytes: Vec::new(),
        fport: 1,
        recv_time_ms: None,
        variables: Map::new(),
    })?;
    Ok(decoded.data.get("v").cloned().unwrap_or(Json::Null))
}
