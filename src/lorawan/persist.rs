//! The LoRaWAN sessions on disk: one JSON list of [`SessionRecord`]s per semtech-udp source in the
//! state directory's `lorawan-sessions-{source}` state file (`crate::statefile`: two checksummed copies), written only when a
//! session passes a stored counter mark or joins (see `session.rs`), on a blocking thread.
//!
//! Lost sessions fail closed: when no good copy is left (both damaged, or a copy that does not read as
//! sessions), the ABP devices' counters are unknown, so the server refuses their frames
//! (`NetworkServer::fail_closed`) and nothing is written over the damaged copies, until an operator
//! runs `sensorgate reset-state -c CONFIG` (which moves them aside, [`reset_lost`]) and restarts.

use std::path::Path;

use crate::statefile::{Loaded, StateFile};

use super::session::SessionRecord;

/// The state file's name in the state directory, before the source's name.
pub const STATE_PREFIX: &str = "lorawan-sessions-";

/// What the state file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The sessions (none at a first start).
    Sessions(Vec<SessionRecord>),
    /// No good copy: see the module.
    Lost,
}

/// Reads the stored sessions (blocking IO). A first start gives none; no good copy gives
/// [`Stored::Lost`] with an ERROR saying what it costs and how to recover.
pub fn load(dir: &Path, source: &str) -> (StateFile, Stored) {
    let (file, loaded) = StateFile::open(dir, &state_name(source));
    let lost = |why: String| {
        log::error!(
            "LoRaWAN sessions of source \"{source}\" lost ({why}): OTAA devices join again; ABP devices' frames are refused (counted as replayed) until an operator runs `sensorgate reset-state -c CONFIG` and restarts the gateway (their last frame counters are unknown)"
        );
        Stored::Lost
    };
    let stored = match loaded {
        Loaded::Fresh => Stored::Sessions(Vec::new()),
        Loaded::Found(bytes) => match serde_json::from_slice(&bytes) {
            Ok(records) => Stored::Sessions(records),
            Err(error) => lost(format!("{} does not read: {error}", file.describe())),
        },
        Loaded::Lost(reason) => lost(reason),
    };
    (file, stored)
}

/// The state file's name of `source`'s sessions.
pub fn state_name(source: &str) -> String {
    format!("{STATE_PREFIX}{source}")
}

/// `sensorgate reset-state` for `source`'s sessions: moves lost copies aside (also good copies that
/// do not read as sessions), so that the next start is a first start: ABP counters from 0, OTAA devices
/// join. Sessions that read are left alone. Blocking IO; run with the gateway stopped.
pub fn reset_lost(dir: &Path, source: &str) -> std::io::Result<String> {
    let name = state_name(source);
    let (_, loaded) = StateFile::open(dir, &name);
    if let Loaded::Found(bytes) = loaded {
        if serde_json::from_slice::<Vec<SessionRecord>>(&bytes).is_err() {
            crate::statefile::move_copies_aside(dir, &name)?;
            return Ok(format!(
                "{name}: the copies in {} do not read as sessions and were moved aside (*.damaged)",
                dir.display()
            ));
        }
    }
    crate::statefile::reset(dir, &name)
}

/// Writes `records` (blocking IO: run it on a blocking thread). A failed write is logged by the state
/// file (once per run as a WARN naming the file system) and the caller retries with its next write.
pub fn write(file: &mut StateFile, records: &[SessionRecord]) -> std::io::Result<()> {
    let payload = serde_json::to_vec(records).map_err(std::io::Error::other)?;
    file.write(&payload)
}
