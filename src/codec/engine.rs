//! One loaded codec: a QuickJS runtime (through `rquickjs`) with the vendor's script compiled once, and
//! the calls into it. Every call is bounded: a time budget measured from the call's own start (an
//! interrupt handler that QuickJS polls while it runs, so a `while(true){}` ends with the call), a heap
//! limit for the runtime (an allocation bomb gets "out of memory") and a stack limit (runaway recursion
//! gets a stack overflow). Each failure is that call's [`CodecError`]; after a timeout, heap or stack
//! failure the codec is compiled afresh before its next call, so nothing a failed call left behind (a
//! half-built global, a fragmented heap) outlives it.
//!
//! A `Codec` is not `Send`: it lives on the thread that loaded it ([`super::worker`] gives each codec
//! one), never on the async runtime.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::{Context, Ctx, Function, Runtime};
use serde_json::{json, Map, Value as Json};

use super::{CodecError, CodecLimits, Decoded, Encoded};

const BUFFER_SHIM: &str = include_str!("buffer.js");
const GLUE: &str = include_str!("glue.js");

/// Loading a codec runs its top-level code: bounded like a call, with at least this much time (a large
/// vendor script takes longer to compile than one call may run).
const MIN_LOAD_BUDGET: Duration = Duration::from_secs(1);

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

/// The compiled codec and its runtime.
pub struct Codec {
    name: String,
    script: String,
    limits: CodecLimits,
    loaded: Option<Loaded>,
}

struct Loaded {
    // Dropped before the runtime that owns its memory.
    context: Context,
    runtime: Runtime,
    deadline: Rc<Cell<Option<Instant>>>,
}

impl Codec {
    /// Compiles `script` (named `name` in its error messages and stack traces). A syntax error, a throw
    /// at top level, or top-level code over its budget, heap or stack refuses the codec.
    pub fn load(name: &str, script: &str, limits: CodecLimits) -> Result<Codec, CodecError> {
        let loaded = Loaded::new(name, script, &limits)?;
        Ok(Codec {
            name: name.to_string(),
            script: script.to_string(),
            limits,
            loaded: Some(loaded),
        })
    }

    /// The codec's name, as given to [`Codec::load`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The heap the runtime holds now, in bytes (the memory per loaded codec).
    pub fn heap_bytes(&self) -> usize {
        self.loaded.as_ref().map_or(0, |loaded| {
            usize::try_from(loaded.runtime.memory_usage().memory_used_size).unwrap_or(0)
        })
    }

    /// `decodeUplink(input)` (or the legacy `Decode`/`Decoder`) as the codec returned it: the
    /// `{data, warnings, errors}` object, `normalized` too when the codec has `normalizeUplink`.
    pub fn decode_uplink_raw(&mut self, input: &UplinkInput) -> Result<Json, CodecError> {
        self.call("__sensorgateDecodeUplink", &input_json(input))
    }

    /// `decodeDownlink(input)` as the codec returned it.
    pub fn decode_downlink_raw(&mut self, input: &UplinkInput) -> Result<Json, CodecError> {
        self.call("__sensorgateDecodeDownlink", &input_json(input))
    }

    /// `encodeDownlink({data, fPort, variables})` (or the legacy `Encode`/`Encoder`) as the codec
    /// returned it: `{bytes, fPort, warnings, errors}`.
    pub fn encode_downlink_raw(
        &mut self,
        data: &Json,
        fport: Option<u8>,
        variables: &Map<String, Json>,
    ) -> Result<Json, CodecError> {
        let request = json!({ "data": data, "fPort": fport, "variables": variables });
        self.call("__sensorgateEncodeDownlink", &request.to_string())
    }

    /// The decoded `data` of one uplink; the codec's `errors` are a [`CodecError::Errors`].
    pub fn decode_uplink(&mut self, input: &UplinkInput) -> Result<Decoded, CodecError> {
        Decoded::from_result(self.decode_uplink_raw(input)?)
    }

    /// The bytes (and FPort) of one downlink; the codec's `errors` are a [`CodecError::Errors`].
    pub fn encode_downlink(
        &mut self,
        data: &Json,
        fport: Option<u8>,
        variables: &Map<String, Json>,
    ) -> Result<Encoded, CodecError> {
        Encoded::from_result(self.encode_downlink_raw(data, fport, variables)?)
    }

    fn call(&mut self, entry: &str, input: &str) -> Result<Json, CodecError> {
        let loaded = match self.loaded.take() {
            Some(loaded) => loaded,
            None => Loaded::new(&self.name, &self.script, &self.limits)?,
        };
        let started = Instant::now();
        loaded.deadline.set(Some(started + self.limits.time_budget));
        let outcome = loaded.context.with(|ctx| {
            let function: Function = ctx
                .globals()
                .get(entry)
                .map_err(|error| CodecError::Thrown(error.to_string()))?;
            let text: String = function
                .call((input,))
                .map_err(|error| thrown(&ctx, error))?;
            serde_json::from_str::<Json>(&text)
                .map_err(|error| CodecError::BadResult(error.to_string()))
        });
        loaded.deadline.set(None);
        let outcome = outcome.map_err(|error| classify(error, started, &self.limits));
        // A call that ran out of time, heap or stack may have left the runtime in any state: the next
        // call compiles the codec afresh.
        if !matches!(
            outcome,
            Err(CodecError::Timeout(_) | CodecError::OutOfMemory | CodecError::StackOverflow)
        ) {
            self.loaded = Some(loaded);
        }
        outcome
    }
}

impl Loaded {
    fn new(name: &str, script: &str, limits: &CodecLimits) -> Result<Loaded, CodecError> {
        let runtime = Runtime::new().map_err(|error| CodecError::Engine(error.to_string()))?;
        runtime.set_memory_limit(limits.heap_bytes);
        runtime.set_max_stack_size(limits.stack_bytes);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let polled = Rc::clone(&deadline);
        runtime.set_interrupt_handler(Some(Box::new(move || {
            polled.get().is_some_and(|at| Instant::now() >= at)
        })));
        let context =
            Context::full(&runtime).map_err(|error| CodecError::Engine(error.to_string()))?;
        let started = Instant::now();
        let load_limits = CodecLimits {
            time_budget: limits.time_budget.max(MIN_LOAD_BUDGET),
            ..*limits
        };
        deadline.set(Some(started + load_limits.time_budget));
        let compiled = context.with(|ctx| {
            for (file, text) in [
                ("buffer.js", BUFFER_SHIM),
                (name, script),
                ("glue.js", GLUE),
            ] {
                let mut options = EvalOptions::default();
                options.strict = false;
                options.filename = Some(file.to_string());
                ctx.eval_with_options::<(), _>(text, options)
                    .map_err(|error| thrown(&ctx, error))?;
            }
            Ok(())
        });
        deadline.set(None);
        compiled.map_err(|error| match classify(error, started, &load_limits) {
            CodecError::Thrown(message) => CodecError::Compile(message),
            other => other,
        })?;
        Ok(Loaded {
            context,
            runtime,
            deadline,
        })
    }
}

fn input_json(input: &UplinkInput) -> String {
    json!({
        "bytes": input.bytes,
        "fPort": input.fport,
        "recvTime": input.recv_time_ms,
        "variables": input.variables,
    })
    .to_string()
}

/// The exception a failed call left in the context, as text (an `Error`'s message and the first line
/// of its stack, which names the codec's file and line).
fn thrown(ctx: &Ctx<'_>, error: rquickjs::Error) -> CodecError {
    if !error.is_exception() {
        return CodecError::Thrown(error.to_string());
    }
    let value = ctx.catch();
    if let Some(exception) = value.as_exception() {
        let message = exception.message().unwrap_or_default();
        let at = exception
            .stack()
            .and_then(|stack| {
                stack
                    .lines()
                    .map(str::trim)
                    .find(|line| !line.is_empty())
                    .map(str::to_string)
            })
            .map(|line| format!(" ({line})"))
            .unwrap_or_default();
        return CodecError::Thrown(format!("{message}{at}"));
    }
    if value.is_null() || value.is_undefined() {
        // QuickJS could not even allocate the exception: the heap is exhausted.
        return CodecError::OutOfMemory;
    }
    let text = ctx
        .json_stringify(value)
        .ok()
        .flatten()
        .and_then(|text| text.to_string().ok())
        .unwrap_or_else(|| "a value".to_string());
    CodecError::Thrown(format!("threw {text}"))
}

/// Names the bound a failed call hit: its time (the deadline passed), heap or stack, else what it threw.
fn classify(error: CodecError, started: Instant, limits: &CodecLimits) -> CodecError {
    let CodecError::Thrown(message) = &error else {
        return error;
    };
    if started.elapsed() >= limits.time_budget || message.starts_with("interrupted") {
        return CodecError::Timeout(limits.time_budget);
    }
    if message.contains("out of memory") {
        return CodecError::OutOfMemory;
    }
    if message.contains("stack overflow") || message.contains("Maximum call stack size exceeded") {
        return CodecError::StackOverflow;
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(bytes: &[u8], fport: u8) -> UplinkInput {
        UplinkInput {
            bytes: bytes.to_vec(),
            fport,
            recv_time_ms: Some(1_700_000_000_000),
            variables: Map::new(),
        }
    }

    fn load(script: &str) -> Codec {
        Codec::load("test.js", script, CodecLimits::default()).expect("codec loads")
    }

    #[test]
    fn decode_uplink_returns_the_data() {
        let mut codec = load(
            "function decodeUplink(input) { return { data: { t: (input.bytes[0] << 8 | input.bytes[1]) / 10, \
             port: input.fPort, year: input.recvTime.getUTCFullYear() } }; }",
        );
        let decoded = codec.decode_uplink(&input(&[0x00, 0xd7], 7)).unwrap();
        assert_eq!(
            Json::Object(decoded.data),
            json!({"t": 21.5, "port": 7, "year": 2023})
        );
    }

    #[test]
    fn legacy_chirpstack_v3_and_ttn_v2_shapes_are_shimmed() {
        let mut v3 = load("function Decode(fPort, bytes, variables) { return { a: bytes[0], p: fPort, v: variables.k }; }");
        let mut vars = Map::new();
        vars.insert("k".into(), json!("x"));
        let decoded = v3
            .decode_uplink(&UplinkInput {
                variables: vars,
                ..input(&[5], 3)
            })
            .unwrap();
        assert_eq!(
            Json::Object(decoded.data),
            json!({"a": 5, "p": 3, "v": "x"})
        );
        let mut v2 = load("function Decoder(bytes, port) { return { a: bytes[0] + 1, p: port }; }");
        let decoded = v2.decode_uplink(&input(&[5], 9)).unwrap();
        assert_eq!(Json::Object(decoded.data), json!({"a": 6, "p": 9}));
        let mut v3enc =
            load("function Encode(fPort, obj, variables) { return [obj.level, fPort]; }");
        let encoded = v3enc
            .encode_downlink(&json!({"level": 3}), Some(10), &Map::new())
            .unwrap();
        assert_eq!(encoded.bytes, vec![3, 10]);
        let mut v2enc = load("function Encoder(obj, port) { return [obj.level]; }");
        assert_eq!(
            v2enc
                .encode_downlink(&json!({"level": 4}), None, &Map::new())
                .unwrap()
                .bytes,
            vec![4]
        );
    }

    #[test]
    fn decode_downlink_reads_what_encode_downlink_wrote() {
        let mut codec = load(
            "function encodeDownlink(i) { return { bytes: [i.data.level], fPort: 3 }; } \
             function decodeDownlink(i) { return { data: { level: i.bytes[0], port: i.fPort } }; }",
        );
        let encoded = codec
            .encode_downlink(&json!({"level": 9}), None, &Map::new())
            .unwrap();
        let decoded = codec
            .decode_downlink_raw(&input(&encoded.bytes, encoded.fport.unwrap_or(0)))
            .unwrap();
        assert_eq!(decoded["data"], json!({"level": 9, "port": 3}));
        let mut uplink_only = load("function decodeUplink(i) { return { data: {} }; }");
        let missing = uplink_only.decode_downlink_raw(&input(&[1], 1)).unwrap();
        assert_eq!(
            missing["errors"],
            json!(["the codec has no decodeDownlink function"])
        );
    }

    #[test]
    fn normalize_uplink_runs_when_present() {
        let mut codec = load(
            "function decodeUplink(i) { return { data: { t: 215 } }; } \
             function normalizeUplink(i) { return { data: { air: { temperature: i.data.t / 10 } } }; }",
        );
        let raw = codec.decode_uplink_raw(&input(&[], 1)).unwrap();
        assert_eq!(raw["normalized"], json!({"air": {"temperature": 21.5}}));
        assert_eq!(raw["data"], json!({"t": 215}));
    }

    #[test]
    fn the_buffer_shim_reads_integers_floats_and_hex() {
        let mut codec = load(
            "function decodeUplink(i) { var b = Buffer.from(i.bytes); return { data: { \
             u16: b.readUInt16BE(0), i16: b.readInt16LE(0), hex: b.toString('hex'), \
             b64: Buffer.from('AQL/', 'base64').toString('hex'), f: Buffer.from('3fc00000', 'hex').readFloatBE(0), \
             sub: b.slice(1).readUInt8(0) } }; }",
        );
        let decoded = codec.decode_uplink(&input(&[0xff, 0x38], 1)).unwrap();
        assert_eq!(
            Json::Object(decoded.data),
            json!({"u16": 65336, "i16": 14591, "hex": "ff38", "b64": "0102ff", "f": 1.5, "sub": 0x38})
        );
    }

    #[test]
    fn codec_errors_undefined_and_nan_fail_the_call() {
        let mut errors =
            load("function decodeUplink(i) { return { errors: ['unknown port ' + i.fPort] }; }");
        assert_eq!(
            errors.decode_uplink(&input(&[], 9)).unwrap_err(),
            CodecError::Errors(vec!["unknown port 9".into()])
        );
        let mut undefined = load("function decodeUplink(i) { }");
        assert!(
            matches!(undefined.decode_uplink(&input(&[], 1)), Err(CodecError::Errors(e)) if e[0].contains("undefined"))
        );
        let mut nan = load("function decodeUplink(i) { return { data: { t: 0/0, ok: 1 } }; }");
        assert_eq!(
            nan.decode_uplink(&input(&[], 1)).unwrap_err(),
            CodecError::Errors(vec!["t is NaN".into()])
        );
        let mut throws = load("function decodeUplink(i) { throw new Error('bad frame'); }");
        assert!(
            matches!(throws.decode_uplink(&input(&[], 1)), Err(CodecError::Thrown(m)) if m.starts_with("bad frame"))
        );
    }

    #[test]
    fn a_loop_ends_at_the_budget_measured_from_the_call_start_and_the_codec_recovers() {
        let limits = CodecLimits {
            time_budget: Duration::from_millis(50),
            ..CodecLimits::default()
        };
        let mut codec = Codec::load(
            "loop.js",
            "function decodeUplink(i) { if (i.fPort == 1) { while (true) {} } return { data: { ok: 1 } }; }",
            limits,
        )
        .unwrap();
        let started = Instant::now();
        assert_eq!(
            codec.decode_uplink(&input(&[], 1)).unwrap_err(),
            CodecError::Timeout(Duration::from_millis(50))
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(codec.decode_uplink(&input(&[], 2)).is_ok());
    }

    #[test]
    fn heap_and_stack_limits_fail_the_call_only() {
        let mut bomb = load(
            "function decodeUplink(i) { if (i.fPort == 1) { var a = []; while (true) { a.push(new Uint8Array(1e6)); } } \
             return { data: { ok: 1 } }; }",
        );
        assert_eq!(
            bomb.decode_uplink(&input(&[], 1)).unwrap_err(),
            CodecError::OutOfMemory
        );
        assert!(bomb.decode_uplink(&input(&[], 2)).is_ok());
        let mut deep = load(
            "function f(n) { return f(n + 1) + 1; } \
             function decodeUplink(i) { if (i.fPort == 1) { f(0); } return { data: { ok: 1 } }; }",
        );
        assert_eq!(
            deep.decode_uplink(&input(&[], 1)).unwrap_err(),
            CodecError::StackOverflow
        );
        assert!(deep.decode_uplink(&input(&[], 2)).is_ok());
    }

    #[test]
    fn syntax_errors_and_top_level_loops_refuse_the_codec() {
        let syntax = Codec::load(
            "broken.js",
            "function decodeUplink(i) { return {",
            CodecLimits::default(),
        );
        match syntax {
            Err(CodecError::Compile(message)) => {
                assert!(message.contains("broken.js"), "{message}")
            }
            other => panic!("{:?}", other.err()),
        }
        let looping = Codec::load("loop.js", "while (true) {}", CodecLimits::default());
        assert!(matches!(looping, Err(CodecError::Timeout(_))));
    }

    #[test]
    fn a_200_kb_codec_compiles_once_and_its_calls_do_not_pay_for_it() {
        let mut script = String::from("var TABLE = [");
        while script.len() < 200 * 1024 {
            script.push_str("{ name: 'sensor', scale: 0.1, offset: -40.5, unit: 'degC' },\n");
        }
        script.push_str("];\nfunction decodeUplink(i) { var e = TABLE[i.bytes[0]]; return { data: { v: i.bytes[1] * e.scale + e.offset } }; }");
        assert!(script.len() >= 200 * 1024);
        let mut codec = Codec::load("big.js", &script, CodecLimits::default())
            .expect("loads within its budget");
        let started = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                Json::Object(codec.decode_uplink(&input(&[7, 100], 1)).unwrap().data),
                json!({"v": -30.5})
            );
        }
        // 100 calls in well under one call's budget each: the 200 KB are not compiled again.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn encode_downlink_checks_the_bytes() {
        let mut codec = load(
            "function encodeDownlink(i) { if (i.data.bad) return { bytes: [300] }; \
             if (i.data.refuse) return { errors: ['no such command'] }; return { bytes: [1, i.data.level], fPort: 5 }; }",
        );
        let encoded = codec
            .encode_downlink(&json!({"level": 2}), None, &Map::new())
            .unwrap();
        assert_eq!((encoded.bytes, encoded.fport), (vec![1, 2], Some(5)));
        assert!(
            matches!(codec.encode_downlink(&json!({"bad": 1}), None, &Map::new()), Err(CodecError::Errors(e)) if e[0].contains("0-255"))
        );
        assert_eq!(
            codec
                .encode_downlink(&json!({"refuse": 1}), None, &Map::new())
                .unwrap_err(),
            CodecError::Errors(vec!["no such command".into()])
        );
    }
}
