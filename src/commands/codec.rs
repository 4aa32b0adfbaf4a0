//! Commands to devices whose source decodes with a JavaScript codec: the command's fields go through the
//! codec's `encodeDownlink({data, variables})` (on a codec thread of its own, never on the router's task),
//! and the bytes it returns are sent as a `{"raw": ...}` command would be. The codec's `errors`, a throw or
//! a call over its bounds refuse the command with the codec's message.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::oneshot;

use super::payload;
use crate::codec::settings::CodecSettings;
use crate::codec::sources::CodecMap;
use crate::codec::worker::CodecWorker;
use crate::encode::{to_hex, CommandPayload};

/// Commands waiting per codec; beyond it a command is refused.
const QUEUE: usize = 8;
/// Beyond the codec's own time budget, how long the router waits for its answer (the thread may be
/// finishing an earlier call).
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

struct Encoder {
    settings: CodecSettings,
    worker: CodecWorker,
}

/// The encoders of the codec sources and of their devices with a codec of their own.
#[derive(Default)]
pub struct CodecEncoders {
    encoders: HashMap<(String, Option<String>), Encoder>,
}

impl CodecEncoders {
    /// A thread per codec; one that cannot start is logged and its commands refused.
    pub fn start(codecs: &CodecMap) -> CodecEncoders {
        let mut encoders = HashMap::new();
        for (key, settings) in codecs {
            let name = settings.path.display().to_string();
            match CodecWorker::spawn(&name, settings.script.clone(), settings.limits, QUEUE) {
                Ok(worker) => {
                    encoders.insert(
                        key.clone(),
                        Encoder {
                            settings: settings.clone(),
                            worker,
                        },
                    );
                }
                Err(error) => {
                    log::error!(source = key.0.as_str(); "codec thread for commands not started: {error}")
                }
            }
        }
        CodecEncoders { encoders }
    }

    /// Whether commands to the device at `address` of `source` go through a codec (its own, or its
    /// source's).
    pub fn covers(&self, source: &str, address: &str) -> bool {
        self.encoders.keys().any(|(name, device)| {
            name == source && device.as_deref().is_none_or(|device| device == address)
        })
    }

    /// The command's payload through the device's codec: `Ok` with the payload as raw bytes to send and
    /// the fPort the codec chose, or `Err` with why it is refused. Raw commands pass unchanged.
    pub async fn encode(
        &self,
        source: &str,
        address: &str,
        field: Option<&str>,
        payload: &[u8],
    ) -> Result<(Vec<u8>, Option<u8>), String> {
        let parsed = payload::parse_payload(field, payload).map_err(|error| error.to_string())?;
        if let CommandPayload::Raw(_) = parsed {
            return Ok((payload.to_vec(), None));
        }
        let data = payload::fields_json(&parsed);
        let encoder = self
            .encoders
            .get(&(source.to_string(), Some(address.to_string())))
            .or_else(|| self.encoders.get(&(source.to_string(), None)))
            .ok_or_else(|| format!("the codec of source {source:?} is not running"))?;
        let variables = encoder.settings.variables.clone();
        let (answer, answered) = oneshot::channel();
        encoder
            .worker
            .submit(Box::new(move |codec| {
                let result = codec
                    .map_err(Clone::clone)
                    .and_then(|codec| codec.encode_downlink(&data, None, &variables));
                let _ = answer.send(result);
            }))
            .map_err(|error| error.to_string())?;
        let wait = encoder.settings.limits.time_budget + ANSWER_MARGIN;
        let encoded = tokio::time::timeout(wait, answered)
            .await
            .map_err(|_| format!("the codec did not answer within {wait:?}"))?
            .map_err(|_| "the codec's thread is gone".to_string())?
            .map_err(|error| error.to_string())?;
        let raw = serde_json::json!({ "raw": to_hex(&encoded.bytes) })
            .to_string()
            .into_bytes();
        Ok((raw, encoded.fport))
    }
}
