//! The LoRaWAN devices' JavaScript codecs (`codec = "vendor.js"` with `payload = "codec"` or `"codec"`
//! in `fports`): one `crate::codec` worker thread per codec file, shared by the devices naming it
//! (each call carries the device's own `variables`), the FRMPayload handed over with its real FPort
//! without waiting, and the decoded reading coming back on one bounded channel the source task selects
//! on. A codec that is slow or hostile delays only its own queue; a full queue answers at once with
//! `CodecError::Busy` (counted by the caller as a payload error; the reading is still published).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use tokio::sync::mpsc;

use super::settings::LorawanDevice;
use crate::codec::settings::CodecSettings;
use crate::codec::sources::{fields_of, QUEUE};
use crate::codec::worker::CodecWorker;
use crate::codec::{CodecError, UplinkInput};
use crate::model::Reading;

/// Decoded readings waiting for the source task (all codecs together); a full channel holds the codec
/// threads back, and their queues then refuse.
const DONE: usize = 256;

/// A codec call's outcome: the reading (without fields yet) and the fields, or why there are none.
#[derive(Debug)]
pub struct CodecDone {
    pub reading: Reading,
    pub fport: u8,
    pub result: Result<Vec<(String, crate::model::Value)>, CodecError>,
}

/// The codec workers of one semtech-udp source.
pub struct DeviceCodecs {
    workers: HashMap<PathBuf, CodecWorker>,
    done_tx: mpsc::Sender<CodecDone>,
    done: mpsc::Receiver<CodecDone>,
}

impl DeviceCodecs {
    /// A worker per distinct codec file of `devices` (a worker that cannot start is logged; its
    /// devices' payloads are then reported as errors).
    pub fn start(source: &str, devices: &[LorawanDevice]) -> DeviceCodecs {
        let (done_tx, done) = mpsc::channel(DONE);
        let mut workers = HashMap::new();
        for codec in devices.iter().filter_map(|d| d.codec.as_ref()) {
            if workers.contains_key(&codec.path) {
                continue;
            }
            let name = codec.path.display().to_string();
            match CodecWorker::spawn(&name, codec.script.clone(), codec.limits, QUEUE) {
                Ok(worker) => {
                    workers.insert(codec.path.clone(), worker);
                }
                Err(error) => log::error!(
                    source = source;
                    "codec thread for {name} not started, its devices' payloads are reported as errors: {error}"
                ),
            }
        }
        DeviceCodecs {
            workers,
            done_tx,
            done,
        }
    }

    /// Hands `payload` of `fport` to `codec`'s worker; the reading comes back from [`Self::next`].
    /// `Err` when it could not be queued: the outcome to report at once.
    pub fn submit(
        &self,
        codec: &CodecSettings,
        fport: u8,
        payload: Vec<u8>,
        reading: Reading,
    ) -> Result<(), Box<CodecDone>> {
        let Some(worker) = self.workers.get(&codec.path) else {
            return Err(Box::new(CodecDone {
                reading,
                fport,
                result: Err(CodecError::Engine(
                    "no codec running for this device".into(),
                )),
            }));
        };
        let input = UplinkInput {
            bytes: payload,
            fport,
            recv_time_ms: reading
                .received_at
                .duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|since| u64::try_from(since.as_millis()).ok()),
            variables: codec.variables.clone(),
        };
        let back = self.done_tx.clone();
        let busy = reading.clone();
        worker
            .submit(Box::new(move |loaded| {
                let result = loaded
                    .map_err(Clone::clone)
                    .and_then(|codec| codec.decode_uplink(&input))
                    .and_then(|decoded| fields_of(&decoded.data))
                    .map(|fields| fields.fields);
                // The source task is gone only at shutdown, when nothing waits for this reading.
                let _ = back.blocking_send(CodecDone {
                    reading,
                    fport,
                    result,
                });
            }))
            .map_err(|error| {
                Box::new(CodecDone {
                    reading: busy,
                    fport,
                    result: Err(error),
                })
            })
    }

    /// The next decoded reading of any codec (pending forever while there is none).
    pub async fn next(&mut self) -> CodecDone {
        match self.done.recv().await {
            Some(done) => done,
            // Never: this struct holds a sender itself.
            None => std::future::pending().await,
        }
    }
}
