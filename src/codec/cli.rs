//! What `sensorgate codec decode | encode | test` do: load one codec file with the default limits and
//! decode one payload, encode one command, or run its examples. Each returns the text to print and
//! whether it succeeded (exit 0: no `errors`, or every example matched; else 1).

use std::path::Path;

use serde_json::{json, Map, Value as Json};

use super::examples::run_examples;
use super::{Codec, CodecLimits, UplinkInput};
use crate::crypto::parse_hex;

/// The outcome of one command: what to print on standard output, and whether it succeeded.
pub struct Outcome {
    pub output: String,
    pub ok: bool,
}

fn failed(message: String) -> Outcome {
    Outcome {
        output: message,
        ok: false,
    }
}

fn load(file: &Path) -> Result<Codec, String> {
    let script = std::fs::read_to_string(file)
        .map_err(|error| format!("{}: cannot read: {error}", file.display()))?;
    Codec::load(&file.display().to_string(), &script, CodecLimits::default())
        .map_err(|error| format!("{}: {error}", file.display()))
}

/// `codec decode FILE [--fport N] HEX`: decodeUplink's `{data, warnings, errors}` as JSON.
pub fn decode(file: &Path, fport: u8, hex: &str) -> Outcome {
    let bytes = match parse_hex(hex) {
        Ok(bytes) => bytes,
        Err(error) => return failed(format!("payload: {error}")),
    };
    let mut codec = match load(file) {
        Ok(codec) => codec,
        Err(error) => return failed(error),
    };
    let input = UplinkInput {
        bytes,
        fport,
        recv_time_ms: None,
        variables: Map::new(),
    };
    print_result(codec.decode_uplink_raw(&input))
}

/// `codec encode FILE JSON`: encodeDownlink's `{bytes, fPort, warnings, errors}` as JSON.
pub fn encode(file: &Path, data: &str) -> Outcome {
    let data: Json = match serde_json::from_str(data) {
        Ok(data) => data,
        Err(error) => return failed(format!("data is not JSON: {error}")),
    };
    let mut codec = match load(file) {
        Ok(codec) => codec,
        Err(error) => return failed(error),
    };
    print_result(codec.encode_downlink_raw(&data, None, &Map::new()))
}

fn print_result(result: Result<Json, super::CodecError>) -> Outcome {
    let result = result.unwrap_or_else(|error| json!({ "errors": [error.to_string()] }));
    let ok = result["errors"].as_array().is_none_or(Vec::is_empty);
    Outcome {
        output: result.to_string(),
        ok,
    }
}

/// `codec test FILE`: runs the examples beside the codec, one line per failure and a count.
pub fn test(file: &Path) -> Outcome {
    let mut codec = match load(file) {
        Ok(codec) => codec,
        Err(error) => return failed(error),
    };
    match run_examples(file, &mut codec) {
        Ok(report) => {
            let mut lines: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
            lines.push(format!(
                "{}: {} examples, {} failed",
                file.display(),
                report.run,
                report.failures.len()
            ));
            Outcome {
                output: lines.join("\n"),
                ok: report.failures.is_empty() && report.run > 0,
            }
        }
        Err(error) => failed(error),
    }
}
