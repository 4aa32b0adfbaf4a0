//! The codec engine of a build without the `codecs` feature (no QuickJS): the same API as
//! `engine.rs`, where loading any codec fails with a message saying how to get one, so that a codec
//! source is refused at start and by `check-config` like any other bad configuration.

use serde_json::{Map, Value as Json};

use super::{CodecError, CodecLimits, Decoded, Encoded};

/// A codec's input for `decodeUplink` (and `decodeDownlink`).
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkInput {
    pub bytes: Vec<u8>,
    pub fport: u8,
    /// Milliseconds since the Unix epoch; the codec sees a `Date`.
    pub recv_time_ms: Option<u64>,
    /// The device's `variables`, as configured.
    pub variables: Map<String, Json>,
}

/// Never built: [`Codec::load`] always fails in this build.
pub enum Codec {}

fn absent() -> CodecError {
    CodecError::Engine(
        "this sensorgate was built without the JavaScript engine: rebuild with `--features codecs`"
            .to_string(),
    )
}

impl Codec {
    /// Fails: this build has no engine.
    pub fn load(_name: &str, _script: &str, _limits: CodecLimits) -> Result<Codec, CodecError> {
        Err(absent())
    }

    pub fn name(&self) -> &str {
        match *self {}
    }

    pub fn heap_bytes(&self) -> usize {
        match *self {}
    }

    pub fn decode_uplink_raw(&mut self, _input: &UplinkInput) -> Result<Json, CodecError> {
        match *self {}
    }

    pub fn decode_downlink_raw(&mut self, _input: &UplinkInput) -> Result<Json, CodecError> {
        match *self {}
    }

    pub fn encode_downlink_raw(
        &mut self,
        _data: &Json,
        _fport: Option<u8>,
        _variables: &Map<String, Json>,
    ) -> Result<Json, CodecError> {
        match *self {}
    }

    pub fn decode_uplink(&mut self, _input: &UplinkInput) -> Result<Decoded, CodecError> {
        match *self {}
    }

    pub fn encode_downlink(
        &mut self,
        _data: &Json,
        _fport: Option<u8>,
        _variables: &Map<String, Json>,
    ) -> Result<Encoded, CodecError> {
        match *self {}
    }
}
