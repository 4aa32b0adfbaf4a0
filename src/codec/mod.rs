//! Payload codecs in JavaScript: the vendors' own decoders (The Things Network's device repository,
//! ChirpStack's device profiles, the LoRa Alliance TS013 API) run in QuickJS inside the daemon. A source
//! with `payload = "codec"` hands each payload (after its CRC and header) to its codec's `decodeUplink`,
//! and the decoded `data` becomes the device's fields as a JSON payload's would.
//!
//! - [`engine`]: one compiled codec and its bounded calls (time from each call's start, heap, stack).
//! - [`worker`]: a thread per codec that owns it, fed through a bounded queue; the async side never runs
//!   JavaScript.
//! - [`examples`]: the codec's own examples (ChirpStack `test_decode_*.json` / `test_encode_*.json`, TTN's
//!   codec YAML read by [`yaml`]), run and compared before the codec is used and by `sensorgate codec test`.
//! - [`settings`]: the configuration keys of a codec source. [`cli`]: `sensorgate codec ...`.
//! - [`sources`]: the running sources' codecs, as the pipeline uses them.
//! - [`normalized`]: which fields TTN's `normalizeUplink` output names (`air.temperature`...).
//!
//! The API for any caller that has an FPort (a LoRaWAN stage included) is
//! [`engine::Codec::decode_uplink`]: bytes, FPort and variables in, fields or a [`CodecError`] out.

pub mod cli;
#[cfg_attr(not(feature = "codecs"), path = "engine_absent.rs")]
pub mod engine;
pub mod examples;
pub mod literal;
pub mod normalized;
pub mod settings;
pub mod sources;
pub mod worker;
pub mod yaml;

use std::time::Duration;

use serde_json::{Map, Value as Json};

pub use engine::{Codec, UplinkInput};

/// What bounds each call of a codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecLimits {
    /// The longest one call may run, from its own start.
    pub time_budget: Duration,
    /// The most heap its runtime may hold.
    pub heap_bytes: usize,
    /// The most stack its calls may use.
    pub stack_bytes: usize,
}

impl Default for CodecLimits {
    /// 100 ms, 16 MiB of heap, 256 KiB of stack.
    fn default() -> Self {
        CodecLimits {
            time_budget: Duration::from_millis(100),
            heap_bytes: 16 << 20,
            stack_bytes: 256 << 10,
        }
    }
}

/// Why a codec call gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The script did not compile, or its top-level code threw.
    #[error("codec does not load: {0}")]
    Compile(String),
    /// The call threw (the exception's message and where).
    #[error("codec threw: {0}")]
    Thrown(String),
    /// The codec answered with `errors` (or an answer that is not one: undefined, NaN...).
    #[error("codec errors: {}", .0.join("; "))]
    Errors(Vec<String>),
    #[error("codec ran over its time budget of {0:?}")]
    Timeout(Duration),
    #[error("codec ran out of its heap limit")]
    OutOfMemory,
    #[error("codec overflowed its stack limit")]
    StackOverflow,
    /// The glue's answer was not the JSON it should be (never expected).
    #[error("codec result unreadable: {0}")]
    BadResult(String),
    /// QuickJS could not start a runtime (out of memory at start).
    #[error("JavaScript engine: {0}")]
    Engine(String),
    /// The codec's queue was full: the call was dropped, not run.
    #[error("codec busy: its queue is full")]
    Busy,
}

/// What `decodeUplink` gave: `data` (an object) and its warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub data: Map<String, Json>,
    pub warnings: Vec<String>,
    /// `normalizeUplink`'s data, when the codec has one.
    pub normalized: Option<Json>,
}

impl Decoded {
    /// Reads the glue's `{data, warnings, errors, normalized}`; non-empty `errors` fail.
    pub fn from_result(result: Json) -> Result<Decoded, CodecError> {
        let errors = texts(&result["errors"]);
        if !errors.is_empty() {
            return Err(CodecError::Errors(errors));
        }
        let Json::Object(data) = result["data"].clone() else {
            return Err(CodecError::BadResult("no data object".into()));
        };
        Ok(Decoded {
            data,
            warnings: texts(&result["warnings"]),
            normalized: result.get("normalized").cloned(),
        })
    }
}

/// What `encodeDownlink` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub fport: Option<u8>,
    pub warnings: Vec<String>,
}

impl Encoded {
    /// Reads the glue's `{bytes, fPort, warnings, errors}`; non-empty `errors` fail.
    pub fn from_result(result: Json) -> Result<Encoded, CodecError> {
        let errors = texts(&result["errors"]);
        if !errors.is_empty() {
            return Err(CodecError::Errors(errors));
        }
        let bytes = serde_json::from_value::<Vec<u8>>(result["bytes"].clone())
            .map_err(|error| CodecError::BadResult(format!("bytes: {error}")))?;
        Ok(Encoded {
            bytes,
            fport: result["fPort"]
                .as_u64()
                .and_then(|port| u8::try_from(port).ok()),
            warnings: texts(&result["warnings"]),
        })
    }
}

fn texts(list: &Json) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    Json::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}
