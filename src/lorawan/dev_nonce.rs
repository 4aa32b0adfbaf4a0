//! The DevNonces an OTAA device used, and which of its join requests are therefore replays. Which rule
//! holds depends on the device's LoRaWAN version (`lorawan_version` of its `[[device]]`):
//! - 1.0.4 devices count their DevNonce up from 0 and keep it in non-volatile memory: a join request is
//!   accepted only with a DevNonce above the last one accepted, so every earlier request, however old,
//!   stays refused with one number stored;
//! - 1.0.2 and 1.0.3 devices draw it at random: a DevNonce among the last [`DEV_NONCE_HISTORY`] accepted
//!   is refused (a bounded history, so an old enough request could be replayed: the spec's own limit).
//!
//! This module owns the version's names and that rule; the server asks it before a join and tells it
//! after one, and the stored session keeps what [`DevNonces::stored`] gives.

use std::collections::VecDeque;

use serde::{Deserialize, Deserializer};

use super::session::DEV_NONCE_HISTORY;

/// The LoRaWAN version a device implements (its data sheet says it; 1.1 devices are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LorawanVersion {
    V1_0_2,
    /// The default: random DevNonces, kept in a bounded history.
    #[default]
    V1_0_3,
    /// DevNonce a counter: only a DevNonce above the last accepted joins.
    V1_0_4,
}

impl LorawanVersion {
    pub fn name(self) -> &'static str {
        match self {
            LorawanVersion::V1_0_2 => "1.0.2",
            LorawanVersion::V1_0_3 => "1.0.3",
            LorawanVersion::V1_0_4 => "1.0.4",
        }
    }

    /// The version written as `text`, or what to write instead.
    pub fn parse(text: &str) -> Result<LorawanVersion, String> {
        match text {
            "1.0.2" => Ok(LorawanVersion::V1_0_2),
            "1.0.3" => Ok(LorawanVersion::V1_0_3),
            "1.0.4" => Ok(LorawanVersion::V1_0_4),
            "1.0" | "1.0.0" | "1.0.1" => Err(format!(
                "LoRaWAN {text} devices are not supported; write \"1.0.2\", \"1.0.3\" or \"1.0.4\" as the device's data sheet says (most 1.0.x devices join as \"1.0.2\")"
            )),
            _ if text.starts_with("1.1") => Err(format!(
                "LoRaWAN {text} devices are not supported (no 1.1 join server here); set the device to LoRaWAN 1.0.4 (or 1.0.3) if it offers it and write \"1.0.4\""
            )),
            _ => Err(format!(
                "\"{text}\" is not a LoRaWAN version; write \"1.0.2\", \"1.0.3\" or \"1.0.4\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for LorawanVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        LorawanVersion::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One device's used DevNonces under its version's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevNonces {
    /// 1.0.4: the last DevNonce accepted.
    Counter(Option<u16>),
    /// 1.0.2, 1.0.3: the last [`DEV_NONCE_HISTORY`] accepted, oldest first.
    History(VecDeque<u16>),
}

impl DevNonces {
    /// The rule of `version`, resuming the stored nonces and the stored session's own DevNonce.
    pub fn restore(
        version: LorawanVersion,
        stored: &[u16],
        session_nonce: Option<u16>,
    ) -> DevNonces {
        let all = stored.iter().copied().chain(session_nonce);
        match version {
            LorawanVersion::V1_0_4 => DevNonces::Counter(all.max()),
            LorawanVersion::V1_0_2 | LorawanVersion::V1_0_3 => {
                let mut history = VecDeque::new();
                for nonce in all {
                    if !history.contains(&nonce) {
                        if history.len() >= DEV_NONCE_HISTORY {
                            history.pop_front();
                        }
                        history.push_back(nonce);
                    }
                }
                DevNonces::History(history)
            }
        }
    }

    /// Whether a join request with `nonce` may be served (it is not a replay).
    pub fn admits(&self, nonce: u16) -> bool {
        match self {
            DevNonces::Counter(last) => last.is_none_or(|last| nonce > last),
            DevNonces::History(history) => !history.contains(&nonce),
        }
    }

    /// `nonce` joined.
    pub fn record(&mut self, nonce: u16) {
        match self {
            DevNonces::Counter(last) => *last = Some(last.map_or(nonce, |l| l.max(nonce))),
            DevNonces::History(history) => {
                if history.len() >= DEV_NONCE_HISTORY {
                    history.pop_front();
                }
                history.push_back(nonce);
            }
        }
    }

    /// What the session file keeps: the last nonce, or the history.
    pub fn stored(&self) -> Vec<u16> {
        match self {
            DevNonces::Counter(last) => last.iter().copied().collect(),
            DevNonces::History(history) => history.iter().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_1_0_4_device_joins_only_with_a_higher_nonce_across_a_restart() {
        let mut nonces = DevNonces::restore(LorawanVersion::V1_0_4, &[], None);
        assert!(nonces.admits(0));
        nonces.record(0);
        assert!(!nonces.admits(0));
        assert!(nonces.admits(1));
        nonces.record(5);
        for old in 0..=5 {
            assert!(!nonces.admits(old), "{old} is a replay");
        }
        let resumed = DevNonces::restore(LorawanVersion::V1_0_4, &nonces.stored(), Some(5));
        assert_eq!(resumed.stored(), vec![5]);
        assert!(!resumed.admits(4));
        assert!(!resumed.admits(5));
        assert!(resumed.admits(6));
        assert!(!resumed.admits(u16::MAX.wrapping_add(1)));
    }

    #[test]
    fn earlier_versions_refuse_the_bounded_history_and_forget_beyond_it() {
        let mut nonces = DevNonces::restore(LorawanVersion::V1_0_3, &[], None);
        nonces.record(900);
        assert!(!nonces.admits(900));
        assert!(nonces.admits(3), "random nonces: a lower one is fine");
        for n in 0..DEV_NONCE_HISTORY as u16 {
            nonces.record(n);
        }
        assert!(nonces.admits(900), "the oldest left the history");
        assert_eq!(nonces.stored().len(), DEV_NONCE_HISTORY);
        let resumed = DevNonces::restore(LorawanVersion::V1_0_2, &nonces.stored(), Some(7));
        assert!(!resumed.admits(7));
        assert!(!resumed.admits(0));
        assert_eq!(resumed.stored().len(), DEV_NONCE_HISTORY);
    }

    #[test]
    fn versions_read_and_1_1_is_refused_with_what_to_write() {
        assert_eq!(LorawanVersion::parse("1.0.4"), Ok(LorawanVersion::V1_0_4));
        assert_eq!(LorawanVersion::parse("1.0.2"), Ok(LorawanVersion::V1_0_2));
        let message = LorawanVersion::parse("1.1").unwrap_err();
        assert!(message.contains("not supported") && message.contains("\"1.0.4\""));
        assert!(LorawanVersion::parse("1.0.1").is_err());
        assert!(LorawanVersion::parse("2")
            .unwrap_err()
            .contains("\"1.0.3\""));
        assert_eq!(LorawanVersion::default().name(), "1.0.3");
    }
}
