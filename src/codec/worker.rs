//! A thread per codec: it loads the codec and runs the calls sent to it, one at a time, so JavaScript
//! never runs on the async runtime and a slow codec delays only its own devices. Calls wait in a bounded
//! queue; one that finds it full is refused at once ([`CodecError::Busy`]) and counted in
//! [`CodecWorker::dropped`]. The thread ends when the last handle is dropped, after the calls queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

use super::{Codec, CodecError, CodecLimits};

/// One call: runs on the codec's thread with the loaded codec (or why it did not load).
pub type Job = Box<dyn FnOnce(Result<&mut Codec, &CodecError>) + Send>;

/// Stack for the codec's thread beyond the JavaScript stack limit (the engine's own frames).
const NATIVE_STACK_MARGIN: usize = 1 << 20;

/// A handle on a codec's thread; clones share the thread and its queue.
#[derive(Clone)]
pub struct CodecWorker {
    jobs: SyncSender<Job>,
    dropped: Arc<AtomicU64>,
}

impl CodecWorker {
    /// Starts the thread `codec:{name}`, which compiles `script` and then serves up to `queue` waiting
    /// calls.
    pub fn spawn(
        name: &str,
        script: String,
        limits: CodecLimits,
        queue: usize,
    ) -> std::io::Result<CodecWorker> {
        let (jobs, incoming) = mpsc::sync_channel::<Job>(queue);
        let codec_name = name.to_string();
        std::thread::Builder::new()
            .name(format!("codec:{name}"))
            .stack_size(limits.stack_bytes + NATIVE_STACK_MARGIN)
            .spawn(move || {
                let mut codec = Codec::load(&codec_name, &script, limits);
                for job in incoming {
                    job(codec.as_mut().map_err(|error| &*error));
                }
            })?;
        Ok(CodecWorker {
            jobs,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Queues `job`; a full queue (or a thread that is gone) refuses it and counts it as dropped.
    pub fn submit(&self, job: Job) -> Result<(), CodecError> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Err(CodecError::Busy)
            }
        }
    }

    /// Calls refused because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, feature = "codecs"))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn calls_run_on_the_codec_thread_and_a_full_queue_drops_and_counts() {
        let limits = CodecLimits {
            time_budget: Duration::from_millis(200),
            ..CodecLimits::default()
        };
        let worker = CodecWorker::spawn(
            "slow.js",
            "function decodeUplink(i) { var t = Date.now(); while (Date.now() - t < 50) {} return { data: { n: i.bytes[0] } }; }"
                .to_string(),
            limits,
            1,
        )
        .unwrap();
        let (done, results) = std::sync::mpsc::channel();
        let mut refused = 0;
        for n in 0..5u8 {
            let done = done.clone();
            let submitted = worker.submit(Box::new(move |codec| {
                let input = crate::codec::UplinkInput {
                    bytes: vec![n],
                    fport: 1,
                    recv_time_ms: None,
                    variables: Default::default(),
                };
                let out = codec
                    .map_err(Clone::clone)
                    .and_then(|codec| codec.decode_uplink(&input));
                let _ = done.send(out.map(|decoded| decoded.data["n"].clone()));
            }));
            if submitted.is_err() {
                refused += 1;
            }
        }
        drop(done);
        let answered: Vec<_> = results.iter().collect();
        assert!(
            refused >= 1,
            "a queue of 1 cannot take 5 slow calls at once"
        );
        assert_eq!(worker.dropped(), refused);
        assert_eq!(answered.len() as u64 + refused, 5);
        assert!(answered.iter().all(Result::is_ok), "{answered:?}");
    }
}
