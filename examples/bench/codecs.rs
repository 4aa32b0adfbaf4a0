//! JavaScript payload codecs: the per-call decode time of a vendor codec (Decentlab DL-5TM from
//! ChirpStack's device profiles, tests/fixtures/codecs/chirpstack) compiled once and reused, as the
//! gateway runs it, against a fresh QuickJS runtime per call (runtime, context, compile and call each
//! time), as ChirpStack does; in one run. The compiled-once codec is measured three ways: called
//! directly, through its codec thread as the daemon calls it (`CodecWorker`: a job through the bounded
//! queue, the answer back through a channel), and in a helper process over pipes, the design the gateway
//! did not take (this program run again as the helper, speaking length-prefixed JSON on stdin and
//! stdout, as a `sensorgate-codec` process would). Also the heap one loaded codec holds and the helper
//! process's resident memory.

use std::io::{BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use sensorgate::codec::worker::CodecWorker;
use sensorgate::codec::{Codec, CodecLimits, Decoded, UplinkInput};
use serde_json::{json, Value as Json};

const CODEC: &str = "tests/fixtures/codecs/chirpstack/dl-5tm.js";
/// The codec's first decode example.
const PAYLOAD: [u8; 11] = [2, 2, 59, 0, 3, 0, 55, 2, 113, 12, 96];
/// Set to the codec's path, it makes this program the codec helper ([`serve_helper`]).
pub const HELPER_ENV: &str = "SENSORGATE_BENCH_CODEC_HELPER";
/// The longest message the helper takes or gives.
const MAX_MESSAGE: usize = 1 << 20;

/// What one run measured; per-call times.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub direct: Duration,
    pub through_thread: Duration,
    pub helper_process: Option<Duration>,
    pub fresh_runtime: Duration,
    pub calls: usize,
    pub fresh_calls: usize,
    pub heap_bytes: usize,
    pub helper_rss_kib: Option<u64>,
    pub script_bytes: usize,
}

/// Rounds each way is measured in, interleaved; the median round is reported (the machine is shared).
const ROUNDS: usize = 5;

/// Runs every way; `None` when the codec cannot be read or loaded (printed to stderr).
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
    let expected = codec.decode_uplink(&input).ok()?;
    let heap_bytes = codec.heap_bytes();
    let mut thread = Threaded::start(&script, limits, &input)?;
    let mut helper = Helper::start(&path, &input, &expected)
        .map_err(|error| eprintln!("codecs: the helper process: {error}"))
        .ok();
    let (per_round, fresh_per_round) = (calls / ROUNDS, fresh_calls / ROUNDS);
    let mut rounds: [Vec<Duration>; 4] = Default::default();
    for _ in 0..ROUNDS {
        rounds[0].push(timed(per_round, || codec.decode_uplink(&input).is_ok())?);
        rounds[1].push(timed(per_round, || thread.call())?);
        if let Some(running) = &mut helper {
            match timed(per_round, || running.call().is_ok()) {
                Some(time) => rounds[2].push(time),
                None => helper = None,
            }
        }
        rounds[3].push(timed(fresh_per_round, || {
            Codec::load(CODEC, &script, limits)
                .and_then(|mut fresh| fresh.decode_uplink(&input))
                .is_ok()
        })?);
    }
    let helper_rss_kib = helper.as_ref().and_then(Helper::rss_kib);
    drop(helper);
    let [direct, through_thread, helper_process, fresh_runtime] = rounds.map(median);
    Some(Report {
        direct: direct?,
        through_thread: through_thread?,
        helper_process,
        fresh_runtime: fresh_runtime?,
        calls: per_round * ROUNDS,
        fresh_calls: fresh_per_round * ROUNDS,
        heap_bytes,
        helper_rss_kib,
        script_bytes: script.len(),
    })
}

/// The time per call of `calls` calls; `None` when one fails.
fn timed(calls: usize, mut call: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    for _ in 0..calls {
        if !call() {
            return None;
        }
    }
    Some(started.elapsed() / calls.max(1) as u32)
}

fn median(mut rounds: Vec<Duration>) -> Option<Duration> {
    rounds.sort();
    rounds.get(rounds.len() / 2).copied()
}

/// The daemon's path: each call a job on the codec's thread, its answer back through a channel.
struct Threaded {
    worker: CodecWorker,
    input: UplinkInput,
    answers: std::sync::mpsc::Sender<bool>,
    answered: std::sync::mpsc::Receiver<bool>,
}

impl Threaded {
    fn start(script: &str, limits: CodecLimits, input: &UplinkInput) -> Option<Threaded> {
        let worker = CodecWorker::spawn(CODEC, script.to_string(), limits, 64).ok()?;
        let (answers, answered) = std::sync::mpsc::channel();
        let mut threaded = Threaded {
            worker,
            input: input.clone(),
            answers,
            answered,
        };
        // The codec compiles on its thread first.
        threaded.call().then_some(threaded)
    }

    fn call(&mut self) -> bool {
        let input = self.input.clone();
        let answers = self.answers.clone();
        let submitted = self.worker.submit(Box::new(move |codec| {
            let outcome = codec
                .map_err(Clone::clone)
                .and_then(|codec| codec.decode_uplink(&input));
            let _ = answers.send(outcome.is_ok());
        }));
        submitted.is_ok()
            && self
                .answered
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or(false)
    }
}

/// The helper process, this program run again with [`HELPER_ENV`]: requests and answers as JSON, as
/// the daemon would need them.
struct Helper {
    child: Child,
    to_helper: ChildStdin,
    from_helper: ChildStdout,
    request: Vec<u8>,
}

impl Helper {
    fn start(path: &str, input: &UplinkInput, expected: &Decoded) -> Result<Helper, String> {
        let exe = std::env::current_exe().map_err(|error| error.to_string())?;
        let mut child = Command::new(exe)
            .env(HELPER_ENV, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| error.to_string())?;
        let (Some(to_helper), Some(from_helper)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no pipes".into());
        };
        let mut helper = Helper {
            child,
            to_helper,
            from_helper,
            request: json!({"bytes": input.bytes, "fPort": input.fport})
                .to_string()
                .into_bytes(),
        };
        // The first call waits for the helper to start and compile the codec.
        if &helper.call()? != expected {
            return Err("the helper decoded differently".into());
        }
        Ok(helper)
    }

    fn call(&mut self) -> Result<Decoded, String> {
        write_message(&mut self.to_helper, &self.request).map_err(|error| error.to_string())?;
        let answer = read_message(&mut self.from_helper).map_err(|error| error.to_string())?;
        let result: Json = serde_json::from_slice(&answer).map_err(|error| error.to_string())?;
        Decoded::from_result(result).map_err(|error| error.to_string())
    }

    fn rss_kib(&self) -> Option<u64> {
        vm_rss_kib(self.child.id())
    }
}

impl Drop for Helper {
    /// Killed by its PID, then reaped.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This program as the codec helper: loads the codec at `path`, then answers each length-prefixed JSON
/// request `{bytes, fPort}` on stdin with the codec's `{data, warnings, errors}` on stdout, until stdin
/// ends.
pub fn serve_helper(path: &str) -> std::io::Result<()> {
    let script = std::fs::read_to_string(path)?;
    let mut codec = Codec::load(path, &script, CodecLimits::default())
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let mut requests = BufReader::new(std::io::stdin().lock());
    let mut answers = BufWriter::new(std::io::stdout().lock());
    loop {
        let request = match read_message(&mut requests) {
            Ok(request) => request,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error),
        };
        let answer = serde_json::from_slice::<Json>(&request)
            .map_err(|error| error.to_string())
            .and_then(|request| {
                let input = UplinkInput {
                    bytes: serde_json::from_value(request["bytes"].clone())
                        .map_err(|error| error.to_string())?,
                    fport: request["fPort"]
                        .as_u64()
                        .and_then(|port| u8::try_from(port).ok())
                        .unwrap_or(1),
                    recv_time_ms: None,
                    variables: Default::default(),
                };
                codec
                    .decode_uplink_raw(&input)
                    .map_err(|error| error.to_string())
            })
            .unwrap_or_else(|error| json!({"data": null, "errors": [error]}));
        write_message(&mut answers, answer.to_string().as_bytes())?;
        answers.flush()?;
    }
}

fn write_message(to: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(body.len()).map_err(std::io::Error::other)?;
    to.write_all(&length.to_le_bytes())?;
    to.write_all(body)?;
    to.flush()
}

fn read_message(from: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 4];
    from.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "a message of {length} bytes, over {MAX_MESSAGE}"
        )));
    }
    let mut body = vec![0u8; length];
    from.read_exact(&mut body)?;
    Ok(body)
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn markdown(report: &Option<Report>) -> String {
    let Some(report) = report else {
        return "## Payload codecs\n\nNot measured: the codec did not load (see stderr).\n"
            .to_string();
    };
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    let ratio =
        |duration: Duration| report.fresh_runtime.as_secs_f64() / duration.as_secs_f64().max(1e-12);
    let helper_row = match report.helper_process {
        Some(per_call) => format!(
            "| compiled once, in a helper process over pipes (length-prefixed JSON) | {:.1} | {:.1}x |\n",
            micros(per_call),
            ratio(per_call)
        ),
        None => "| compiled once, in a helper process over pipes | not measured (see stderr) | |\n"
            .to_string(),
    };
    let helper_rss = report
        .helper_rss_kib
        .map_or("not measured".to_string(), |kib| format!("{kib} KiB"));
    format!(
        "## Payload codecs\n\n\
         One vendor codec (Decentlab DL-5TM, {} bytes of JavaScript) decoding its own first example:\n\
         compiled once and called {} times each way, against a fresh QuickJS runtime per call (runtime,\n\
         context, compile and call, as ChirpStack does it) {} times; interleaved in {ROUNDS} rounds, the\n\
         median round shown.\n\n\
         | per call | µs | fresh runtime / this |\n|---|---:|---:|\n\
         | compiled once, called directly | {:.1} | {:.1}x |\n\
         | compiled once, through its codec thread (the daemon's path) | {:.1} | {:.1}x |\n\
         {helper_row}\
         | fresh runtime per call (ChirpStack) | {:.1} | 1.0x |\n\n\
         Heap of one loaded codec after a call (QuickJS's own count): {} bytes. Resident memory of the\n\
         helper process after its calls (this bench program run as the helper, so an upper bound for a\n\
         dedicated `sensorgate-codec`): {helper_rss}.\n",
        report.script_bytes,
        report.calls,
        report.fresh_calls,
        micros(report.direct),
        ratio(report.direct),
        micros(report.through_thread),
        ratio(report.through_thread),
        micros(report.fresh_runtime),
        report.heap_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_length_prefixed_and_bounded() {
        let mut wire = Vec::new();
        write_message(&mut wire, b"{\"a\":1}").unwrap();
        assert_eq!(&wire[..4], &7u32.to_le_bytes());
        assert_eq!(read_message(&mut wire.as_slice()).unwrap(), b"{\"a\":1}");
        let huge = ((MAX_MESSAGE + 1) as u32).to_le_bytes();
        assert!(read_message(&mut huge.as_slice()).is_err());
    }
}
