//! The LoRaWAN sessions on disk: one JSON list of [`SessionRecord`]s per semtech-udp source in the
//! state directory's `lorawan-sessions-{source}` state file (`crate::statefile`: two checksummed copies), written only when a
//! session passes a stored counter mark or joins (see `session.rs`), on a blocking thread.

use std::path::Path;

use crate::statefile::{Loaded, StateFile};

use super::session::SessionRecord;

/// The state file's name in the state directory, before the source's name.
pub const STATE_PREFIX: &str = "lorawan-sessions-";

/// Reads the stored sessions (blocking IO). A first start gives none; a damaged file gives none with
/// an ERROR: every OTAA device joins again, ABP devices start their counters from zero.
pub fn load(dir: &Path, source: &str) -> (StateFile, Vec<SessionRecord>) {
    let (file, loaded) = StateFile::open(dir, &format!("{STATE_PREFIX}{source}"));
    let records = match loaded {
        Loaded::Fresh => Vec::new(),
        Loaded::Found(bytes) => match serde_json::from_slice(&bytes) {
            Ok(records) => records,
            Err(error) => {
                log::error!(
                    "LoRaWAN sessions in {} do not read ({error}); devices join again",
                    file.describe()
                );
                Vec::new()
            }
        },
        Loaded::Lost(reason) => {
            log::error!("LoRaWAN sessions lost ({reason}); OTAA devices join again");
            Vec::new()
        }
    };
    (file, records)
}

/// Writes `records` (blocking IO: run it on a blocking thread). A failed write is logged by the state
/// file (once per run as a WARN naming the file system) and the caller retries with its next write.
pub fn write(file: &mut StateFile, records: &[SessionRecord]) -> std::io::Result<()> {
    let payload = serde_json::to_vec(records).map_err(std::io::Error::other)?;
    file.write(&payload)
}
