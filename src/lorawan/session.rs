//! A device's LoRaWAN 1.0.x session and what of it is stored: DevAddr, the two session keys' derivation
//! inputs (for OTAA the JoinNonce, NetID and DevNonce, so the keys themselves are never written: they
//! are derived again from the AppKey at start), the uplink counter mark, the downlink counter lease, and
//! the DevNonces already used.
//!
//! # Counters without a write per uplink
//! The uplink counter is stored as a mark [`UPLINK_MARK_STEP`] past the last accepted counter, written
//! only when an uplink passes its stored mark; after a restart the session accepts only counters above
//! the stored mark. A power cut therefore costs at most [`UPLINK_MARK_STEP`] uplinks of a device after
//! the restart (refused as replays, counted), and no captured frame can be replayed across it. Every
//! write moves every session's mark (all sessions live in one file), so devices sending at similar
//! rates pass their marks together: 50 devices at one uplink a minute cause about 1440 / 64 = 23
//! writes a day of a few KiB each, not one per device per mark. The downlink counter is leased the same way: the stored
//! value is the next counter a restart may use, written [`DOWNLINK_LEASE`] ahead, so a restart never
//! reuses a downlink counter. A clean stop writes the counters exactly, so it costs nothing.

use serde::{Deserialize, Serialize};

/// Uplinks a power cut may cost a device (refused after the restart) against one write per that many.
pub const UPLINK_MARK_STEP: u32 = 64;
/// Downlink counters reserved ahead of use.
pub const DOWNLINK_LEASE: u32 = 64;
/// DevNonces remembered per OTAA device (LoRaWAN 1.0.2/1.0.3 devices draw them at random).
pub const DEV_NONCE_HISTORY: usize = 32;

/// The live session of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub dev_addr: u32,
    pub nwk_s_key: [u8; 16],
    pub app_s_key: [u8; 16],
    /// The last accepted uplink counter (32 bits), or `None` before the first uplink of the session.
    pub fcnt_up: Option<u32>,
    /// The next downlink counter to use.
    pub fcnt_down: u32,
    /// What the stored copy says: uplinks at or below `fcnt_up_floor` are refused.
    pub fcnt_up_floor: Option<u32>,
    /// The stored downlink lease: counters below it may be used without a write.
    pub fcnt_down_lease: u32,
    /// OTAA: what the keys were derived from.
    pub join: Option<JoinInputs>,
}

/// OTAA: the inputs of the session keys' derivation (stored instead of the keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinInputs {
    pub join_nonce: u32,
    pub net_id: u32,
    pub dev_nonce: u16,
}

impl Session {
    /// A new session (a join, or an ABP device's first start): counters from zero.
    pub fn new(dev_addr: u32, nwk_s_key: [u8; 16], app_s_key: [u8; 16]) -> Session {
        Session {
            dev_addr,
            nwk_s_key,
            app_s_key,
            fcnt_up: None,
            fcnt_down: 0,
            fcnt_up_floor: None,
            fcnt_down_lease: 0,
            join: None,
        }
    }

    /// Whether the stored copy must be written now: an uplink counter past the stored mark or a downlink
    /// counter at the lease.
    pub fn needs_write(&self) -> bool {
        let up = match (self.fcnt_up, self.fcnt_up_floor) {
            (Some(up), Some(floor)) => up > floor,
            (Some(_), None) => true,
            _ => false,
        };
        up || self.fcnt_down >= self.fcnt_down_lease
    }

    /// The record to store while running, moving the marks ahead (uplink mark rounded up, downlink
    /// lease ahead), so that a power cut before the next write is safe.
    pub fn to_record(&mut self, device: &str) -> SessionRecord {
        if let Some(up) = self.fcnt_up {
            let mark = up.saturating_add(UPLINK_MARK_STEP);
            self.fcnt_up_floor = Some(mark.max(self.fcnt_up_floor.unwrap_or(0)));
        }
        if self.fcnt_down >= self.fcnt_down_lease {
            self.fcnt_down_lease = self.fcnt_down.saturating_add(DOWNLINK_LEASE);
        }
        self.record(device)
    }

    /// The record to store at a clean stop: the counters exactly (nothing is lost across the restart).
    pub fn to_exact_record(&mut self, device: &str) -> SessionRecord {
        self.fcnt_up_floor = self.fcnt_up;
        self.fcnt_down_lease = self.fcnt_down;
        self.record(device)
    }

    fn record(&self, device: &str) -> SessionRecord {
        SessionRecord {
            device: device.to_string(),
            dev_addr: self.dev_addr,
            fcnt_up_floor: self.fcnt_up_floor,
            fcnt_down_lease: self.fcnt_down_lease,
            join: self.join,
            dev_nonces: Vec::new(),
        }
    }
}

/// One device's stored session (no keys: OTAA keys are derived again, ABP keys come from their files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub device: String,
    pub dev_addr: u32,
    /// Uplinks at or below it are refused after a restart.
    pub fcnt_up_floor: Option<u32>,
    /// The first downlink counter a restart may use.
    pub fcnt_down_lease: u32,
    pub join: Option<JoinInputs>,
    /// OTAA: the DevNonces used (the last [`DEV_NONCE_HISTORY`]; for a LoRaWAN 1.0.4 device only the
    /// last one, `crate::lorawan::dev_nonce`), refused again after a restart.
    #[serde(default)]
    pub dev_nonces: Vec<u16>,
}

impl SessionRecord {
    /// The session a restart resumes: counters from the stored marks.
    pub fn resume(&self, nwk_s_key: [u8; 16], app_s_key: [u8; 16]) -> Session {
        Session {
            dev_addr: self.dev_addr,
            nwk_s_key,
            app_s_key,
            fcnt_up: self.fcnt_up_floor,
            fcnt_down: self.fcnt_down_lease,
            fcnt_up_floor: self.fcnt_up_floor,
            fcnt_down_lease: self.fcnt_down_lease,
            join: self.join,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_move_ahead_only_past_the_stored_mark() {
        let mut session = Session::new(1, [0; 16], [0; 16]);
        assert!(!session.needs_write() || session.fcnt_down >= session.fcnt_down_lease);
        session.fcnt_up = Some(5);
        assert!(session.needs_write());
        let record = session.to_record("door");
        assert_eq!(record.fcnt_up_floor, Some(5 + UPLINK_MARK_STEP));
        assert_eq!(record.fcnt_down_lease, DOWNLINK_LEASE);
        for up in 6..=5 + UPLINK_MARK_STEP {
            session.fcnt_up = Some(up);
            assert!(!session.needs_write(), "no write at {up}");
        }
        session.fcnt_up = Some(6 + UPLINK_MARK_STEP);
        assert!(session.needs_write());
        assert_eq!(
            session.to_record("door").fcnt_up_floor,
            Some(6 + 2 * UPLINK_MARK_STEP)
        );
    }

    #[test]
    fn a_clean_stop_stores_the_counters_exactly() {
        let mut session = Session::new(7, [1; 16], [2; 16]);
        session.fcnt_up = Some(10);
        session.fcnt_down = 3;
        let resumed = session.to_exact_record("door").resume([1; 16], [2; 16]);
        assert_eq!((resumed.fcnt_up, resumed.fcnt_down), (Some(10), 3));
    }

    #[test]
    fn a_resumed_session_refuses_up_to_the_mark_and_never_reuses_a_downlink_counter() {
        let mut session = Session::new(7, [1; 16], [2; 16]);
        session.fcnt_up = Some(10);
        session.fcnt_down = 3;
        let record = session.to_record("door");
        let resumed = record.resume([1; 16], [2; 16]);
        assert_eq!(resumed.fcnt_up, Some(10 + UPLINK_MARK_STEP));
        assert_eq!(resumed.fcnt_down, 3 + DOWNLINK_LEASE);
        assert!(!resumed.needs_write() || resumed.fcnt_down >= resumed.fcnt_down_lease);
    }
}
