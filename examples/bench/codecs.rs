//! JavaScript payload codecs: the per-call decode time of a vendor codec (Decentlab DL-5TM from
//! ChirpStack's device profiles, tests/fixtures/codecs/chirpstack) compiled once and reused, as the
//! gateway runs it, against a fresh QuickJS runtime per call (compile included), as ChirpStack does; in
//! one run, on one core. Also the heap one loaded codec holds.

use std::time::{Duration, Instant};

use sensorgate::codec::{Codec, CodecLimits, UplinkInput};

const CODEC: &str = "tests/fixtures/codecs/chirpstack/dl-5tm.js";
/// The codec's first decode example.
const PAYLOAD: [u8; 11] = [2, 2, 59, 0, 3, 0, 55, 2, 113, 12, 96];

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub compiled_once: Duration,
    pub fresh_runtime: Duration,
    pub calls: usize,
    pub fresh_calls: usize,
    pub heap_bytes: usize,
    pub script_bytes: usize,
}

/// Runs both ways; `None` when the codec cannot be read or loaded (printed to stderr).
pub fn run(quick: bool) -> Option<Report> {
    let path = format!("{}/{CODEC}", env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(&path)
        .map_err(|error| eprintln!("codecs: {path}: {error}"))
        .ok()?;
    let input = UplinkInput {
        bytes: PAYLOAD.to_vec(),
        fport: 1,
        recv_time_ms: None,
        variables: Default::default(),
    };
    let (calls, fresh_calls) = if quick { (2_000, 100) } else { (20_000, 1_000) };
    let limits = CodecLimits::default();
    let mut codec = Codec::load(CODEC, &script, limits)
        .map_err(|error| eprintln!("codecs: {error}"))
        .ok()?;
    codec.decode_uplink(&input).ok()?;
    let heap_bytes = codec.heap_bytes();
    let started = Instant::now();
    for _ in 0..calls {
        codec.decode_uplink(&input).ok()?;
    }
    let compiled_once = started.elapsed() / calls as u32;
    let started = Instant::now();
    for _ in 0..fresh_calls {
        Codec::load(CODEC, &script, limits)
            .ok()?
            .decode_uplink(&input)
            .ok()?;
    }
    let fresh_runtime = started.elapsed() / fresh_calls as u32;
    Some(Report {
        compiled_once,
        fresh_runtime,
        calls,
        fresh_calls,
        heap_bytes,
        script_bytes: script.len(),
    })
}

pub fn markdown(report: &Option<Report>) -> String {
    let Some(report) = report else {
        return "## Payload codecs\n\nNot measured: the codec did not load (see stderr).\n"
            .to_string();
    };
    format!(
        "## Payload codecs\n\n\
         One vendor codec (Decentlab DL-5TM, {} bytes of JavaScript) decoding its own first example,\n\
         compiled once and called {} times, against a fresh QuickJS runtime per call (compile included,\n\
         as ChirpStack does it) {} times; one core, in this run.\n\n\
         | per call | µs |\n|---|---:|\n\
         | compiled once (sensorgate) | {:.1} |\n\
         | fresh runtime per call | {:.1} |\n\
         | ratio | {:.1}x |\n\n\
         Heap of one loaded codec after a call: {} bytes.\n",
        report.script_bytes,
        report.calls,
        report.fresh_calls,
        report.compiled_once.as_secs_f64() * 1e6,
        report.fresh_runtime.as_secs_f64() * 1e6,
        report.fresh_runtime.as_secs_f64() / report.compiled_once.as_secs_f64().max(1e-12),
        report.heap_bytes,
    )
}
