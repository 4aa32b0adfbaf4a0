//! The codecs of the running sources, for the pipeline: one [`CodecWorker`] per codec source, the
//! payloads handed to them without waiting, and their outcomes coming back on one bounded channel that
//! the pipeline selects on beside its other events. A codec that is slow or hostile delays only its own
//! queue; a payload that finds its queue full is dropped, counted (`codec_dropped` per source in
//! `{base}/gateway/stats`) and answered at once as an error outcome, so that the frame is still reported.
//!
//! The decoded `data` goes through the JSON payload decoder ([`crate::decode::json`]), so it is
//! flattened and named exactly as a JSON payload's fields are; what the codec's `normalizeUplink` said
//! of them comes along ([`CodecOutcome::normalized`]) for Home Assistant's types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value as Json};
use tokio::sync::mpsc;

use super::normalized::field_paths;
use super::settings::CodecSettings;
use super::worker::CodecWorker;
use super::{CodecError, UplinkInput};
use crate::decode::header::HeaderFields;
use crate::decode::{json, PayloadFields};
use crate::model::{Packet, RadioMeta};

/// The codecs to run: by (source name, `None`) for a source's, (source name, `Some(address)`) for a
/// device's own.
pub type CodecMap = HashMap<(String, Option<String>), CodecSettings>;

/// Payloads waiting per codec; beyond it they are dropped and counted.
pub const QUEUE: usize = 64;
/// Outcomes waiting for the pipeline (all codecs together); a full channel holds the codec threads
/// back, and their queues then drop.
const OUTCOMES: usize = 256;

/// One payload's outcome, with what the pipeline needs to make a reading or report the error.
#[derive(Debug)]
pub struct CodecOutcome {
    pub source: String,
    /// The header's address and sequence number (empty / `None` without a header).
    pub address: String,
    pub seq: Option<u32>,
    pub received_at: SystemTime,
    pub radio: Option<RadioMeta>,
    /// The payload the codec was given (for the error topic).
    pub raw: Vec<u8>,
    pub fport: u8,
    pub result: Result<PayloadFields, CodecError>,
    /// (field, path in TTN's normalized schema) for the fields the codec's `normalizeUplink` named
    /// ([`super::normalized::field_paths`]); empty without one.
    pub normalized: Vec<(String, String)>,
}

struct SourceCodec {
    settings: CodecSettings,
    worker: CodecWorker,
    variables: Arc<Map<String, Json>>,
}

/// The codec workers of the configured sources and the channel their outcomes arrive on.
pub struct CodecSources {
    sources: HashMap<(String, Option<String>), SourceCodec>,
    outcomes_tx: mpsc::Sender<CodecOutcome>,
    outcomes: mpsc::Receiver<CodecOutcome>,
}

impl CodecSources {
    /// Starts a worker per codec source and per device with a codec of its own.
    pub fn start(settings: &CodecMap) -> CodecSources {
        let (outcomes_tx, outcomes) = mpsc::channel(OUTCOMES);
        let mut codecs = CodecSources {
            sources: HashMap::new(),
            outcomes_tx,
            outcomes,
        };
        codecs.reconfigure(settings);
        codecs
    }

    /// A reload: sources whose codec settings are unchanged keep their worker; the others get a new
    /// one (the old thread ends after its queued calls) or none.
    pub fn reconfigure(&mut self, settings: &CodecMap) {
        self.sources
            .retain(|name, running| settings.get(name) == Some(&running.settings));
        for (name, wanted) in settings {
            if self.sources.contains_key(name) {
                continue;
            }
            let (source, _) = name;
            for failure in &wanted.example_failures {
                log::warn!(source = source.as_str(); "codec used despite a failing example (codec_examples = \"warn\"): {failure}");
            }
            match CodecWorker::spawn(
                &wanted.path.display().to_string(),
                wanted.script.clone(),
                wanted.limits,
                QUEUE,
            ) {
                Ok(worker) => {
                    self.sources.insert(
                        name.clone(),
                        SourceCodec {
                            settings: wanted.clone(),
                            worker,
                            variables: Arc::new(wanted.variables.clone()),
                        },
                    );
                }
                Err(error) => {
                    log::error!(source = source.as_str(); "codec thread not started, its frames are reported as errors: {error}");
                }
            }
        }
    }

    /// Hands one payload to its source's codec. `Err` when it could not be queued (no codec, or its
    /// queue full): the outcome to report at once.
    pub fn submit(
        &self,
        packet: &Packet,
        link: &HeaderFields,
        payload: &[u8],
    ) -> Result<(), Box<CodecOutcome>> {
        let device_key = (packet.source.clone(), link.address.clone());
        let codec = self
            .sources
            .get(&device_key)
            .or_else(|| self.sources.get(&(packet.source.clone(), None)));
        let fport = codec.map_or(1, |codec| codec.settings.fport);
        let outcome = CodecOutcome {
            source: packet.source.clone(),
            address: link.address.clone().unwrap_or_default(),
            seq: link.seq,
            received_at: packet.received_at,
            radio: packet.radio,
            raw: payload.to_vec(),
            fport,
            result: Err(CodecError::Busy),
            normalized: Vec::new(),
        };
        let Some(codec) = codec else {
            return Err(Box::new(CodecOutcome {
                result: Err(CodecError::Engine(
                    "no codec running for this source".into(),
                )),
                ..outcome
            }));
        };
        let input = UplinkInput {
            bytes: outcome.raw.clone(),
            fport,
            recv_time_ms: packet
                .received_at
                .duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|since| u64::try_from(since.as_millis()).ok()),
            variables: (*codec.variables).clone(),
        };
        let back = self.outcomes_tx.clone();
        let answer = |result| CodecOutcome {
            source: packet.source.clone(),
            address: outcome.address.clone(),
            seq: outcome.seq,
            received_at: outcome.received_at,
            radio: outcome.radio,
            raw: outcome.raw.clone(),
            fport,
            result,
            normalized: Vec::new(),
        };
        let busy = answer(Err(CodecError::Busy));
        codec
            .worker
            .submit(Box::new(move |loaded| {
                let decoded = loaded
                    .map_err(Clone::clone)
                    .and_then(|codec| codec.decode_uplink(&input));
                let normalized = decoded.as_ref().ok().and_then(|d| d.normalized.clone());
                let result = decoded.and_then(|decoded| fields_of(&decoded.data));
                let normalized = match (&result, normalized) {
                    (Ok(found), Some(normalized)) => field_paths(&found.fields, &normalized),
                    _ => Vec::new(),
                };
                // The pipeline is gone only at shutdown, when nothing waits for this outcome.
                let _ = back.blocking_send(CodecOutcome {
                    result,
                    normalized,
                    ..outcome
                });
            }))
            .map_err(|_| Box::new(busy))
    }

    /// The next outcome of any codec (pending forever while there is none).
    pub async fn next(&mut self) -> CodecOutcome {
        match self.outcomes.recv().await {
            Some(outcome) => outcome,
            // Never: this struct holds a sender itself.
            None => std::future::pending().await,
        }
    }
}

/// The codec's `data` as fields, flattened and named as a JSON payload's.
pub fn fields_of(data: &Map<String, Json>) -> Result<PayloadFields, CodecError> {
    let text =
        serde_json::to_vec(data).map_err(|error| CodecError::BadResult(error.to_string()))?;
    json::decode(&text).map_err(|error| CodecError::BadResult(error.to_string()))
}
