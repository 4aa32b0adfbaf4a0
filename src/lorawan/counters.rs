//! What a semtech-udp source counts, shared with the pipeline's stats line (`lorawan` in
//! `{base}/gateway/stats`): refusals by reason, joins, downlinks, and per gateway its packets, the
//! frames of DevAddrs not configured, its last PULL_DATA and its last `stat`. Bounded: at most
//! [`MAX_GATEWAYS`] gateways are tracked (with `gateways = ["any"]`, the rest are summed as
//! `other_gateways`), and a `stat` larger than [`MAX_STAT_BYTES`] is not kept.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value as Json;

use super::server::Refusal;

/// Gateways tracked per source.
pub const MAX_GATEWAYS: usize = 256;
/// The largest `stat` object kept per gateway (its JSON text).
pub const MAX_STAT_BYTES: usize = 2048;

/// One source's counters.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    /// Datagrams that are not the forwarder protocol (too short, wrong version, bad JSON...).
    pub malformed_datagrams: u64,
    /// Datagrams from gateways not in `gateways`, dropped.
    pub unknown_gateway_datagrams: u64,
    /// `rxpk` entries skipped: bad CRC, not LoRa, unreadable fields.
    pub rxpk_skipped: u64,
    /// Copies of an uplink another gateway heard too (merged).
    pub duplicates_merged: u64,
    /// Uplinks dropped because too many were waiting in the dedup window.
    pub dedup_full: u64,
    pub uplinks: u64,
    pub joins: u64,
    /// Join requests refused: a DevNonce used before, a JoinEUI not configured.
    pub join_refused: u64,
    /// Join requests over the rate limit (per DevEUI, or in total).
    pub join_rate_limited: u64,
    pub bad_mic: u64,
    pub replayed: u64,
    pub counter_gaps: u64,
    pub unknown_devaddr: u64,
    pub unknown_deveui: u64,
    pub lorawan11_refused: u64,
    pub malformed_frames: u64,
    pub unknown_mac_commands: u64,
    /// ADR: LinkADRReqs sent, and the device's LinkADRAns accepting or refusing them.
    pub adr_requests: u64,
    pub adr_accepted: u64,
    pub adr_refused: u64,
    /// Application FPorts with no decoder configured (the reading carries no fields).
    pub undecoded_fport: u64,
    /// FRMPayloads the device's decoder refused (the reading carries no fields).
    pub payload_errors: u64,
    /// Downlinks not sent: the gateway that heard the device has not sent PULL_DATA yet.
    pub no_downlink_path: u64,
    pub downlinks: u64,
    /// Downlinks sent again in RX2 after the gateway could not send them in RX1.
    pub rx2_fallbacks: u64,
    /// Downlinks carrying a command (or a confirmed one sent again).
    pub command_downlinks: u64,
    /// JoinAccepts and ACKs not sent: their gateway's duty-cycle budget had no room.
    pub duty_cycle_dropped: u64,
    /// Confirmed downlinks the device acknowledged, and those given up unacknowledged.
    pub confirmed_acknowledged: u64,
    pub confirmed_unacknowledged: u64,
    /// TX_ACKs with an error (TOO_LATE, TOO_EARLY, COLLISION_PACKET, TX_FREQ...), by error.
    pub tx_errors: BTreeMap<String, u64>,
    /// Packets of gateways beyond [`MAX_GATEWAYS`].
    pub other_gateways: u64,
}

/// One gateway's state.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GatewayState {
    pub packets: u64,
    /// Frames from DevAddrs not configured (a city gateway hears many strangers).
    pub unknown_devaddr: u64,
    /// RFC 3339 time of its last PULL_DATA.
    pub last_pull: Option<String>,
    /// Its last `stat` object, as sent.
    pub stat: Option<Json>,
    /// Pulling (online) or silent for its missed keepalives (offline); `None` before its first
    /// PULL_DATA.
    pub online: Option<bool>,
}

/// Shared between the source task and the stats line.
#[derive(Debug, Default)]
pub struct LorawanCounters {
    inner: Mutex<(Counts, BTreeMap<String, GatewayState>)>,
}

impl LorawanCounters {
    /// Applies `change` to the counts.
    pub fn count(&self, change: impl FnOnce(&mut Counts)) {
        if let Ok(mut inner) = self.inner.lock() {
            change(&mut inner.0);
        }
    }

    /// Applies `change` to gateway `eui`'s state (or counts it in `other_gateways` beyond the bound).
    pub fn gateway(&self, eui: u64, change: impl FnOnce(&mut GatewayState)) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let key = format!("{eui:016x}");
        let (counts, gateways) = &mut *inner;
        if !gateways.contains_key(&key) && gateways.len() >= MAX_GATEWAYS {
            counts.other_gateways += 1;
            return;
        }
        change(gateways.entry(key).or_default());
    }

    /// A PULL_DATA from `eui` at `now`.
    pub fn pulled(&self, eui: u64, now: SystemTime) {
        self.gateway(eui, |state| {
            state.last_pull = Some(crate::publish::format_last_seen(now));
        });
    }

    /// A gateway's `stat`, kept if small.
    pub fn stat(&self, eui: u64, stat: Json) {
        if stat.to_string().len() <= MAX_STAT_BYTES {
            self.gateway(eui, |state| state.stat = Some(stat));
        }
    }

    /// Counts a refusal (a frame from a DevAddr not configured also on the gateway that heard it best).
    pub fn refused(&self, refusal: &Refusal, gateway: u64) {
        if let Refusal::UnknownDevAddr(_) = refusal {
            self.gateway(gateway, |state| state.unknown_devaddr += 1);
        }
        self.count(|c| match refusal {
            Refusal::Malformed | Refusal::NotUplink => c.malformed_frames += 1,
            Refusal::Lorawan11(_) => c.lorawan11_refused += 1,
            Refusal::UnknownDevAddr(_) => c.unknown_devaddr += 1,
            Refusal::UnknownDevEui(_) => c.unknown_deveui += 1,
            Refusal::WrongJoinEui { .. } | Refusal::DevNonceReused(_) => c.join_refused += 1,
            Refusal::JoinRateLimited(_) => c.join_rate_limited += 1,
            Refusal::BadMic => c.bad_mic += 1,
            Refusal::Replay(_) | Refusal::AbpCountersLost => c.replayed += 1,
            Refusal::CounterGap | Refusal::CounterExhausted => c.counter_gaps += 1,
        });
    }

    /// The JSON of the stats line: the counts with `gateways` keyed by EUI.
    pub fn to_json(&self) -> Json {
        let Ok(inner) = self.inner.lock() else {
            return Json::Null;
        };
        let mut json = serde_json::to_value(&inner.0).unwrap_or(Json::Null);
        if let Json::Object(map) = &mut json {
            map.insert(
                "gateways".to_string(),
                serde_json::to_value(&inner.1).unwrap_or(Json::Null),
            );
        }
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_are_bounded_and_strangers_counted_per_gateway() {
        let counters = LorawanCounters::default();
        counters.refused(&Refusal::UnknownDevAddr(5), 0xaa);
        counters.refused(&Refusal::BadMic, 0xaa);
        for eui in 0..(MAX_GATEWAYS as u64 + 3) {
            counters.gateway(eui + 1000, |g| g.packets += 1);
        }
        let json = counters.to_json();
        assert_eq!(json["unknown_devaddr"], 1);
        assert_eq!(json["bad_mic"], 1);
        assert_eq!(json["gateways"]["00000000000000aa"]["unknown_devaddr"], 1);
        assert_eq!(json["gateways"].as_object().unwrap().len(), MAX_GATEWAYS);
        assert_eq!(json["other_gateways"], 4);
        counters.stat(0xaa, serde_json::json!({"rxnb": 1}));
        counters.stat(0xaa, Json::String("x".repeat(MAX_STAT_BYTES)));
        assert_eq!(
            counters.to_json()["gateways"]["00000000000000aa"]["stat"]["rxnb"],
            1
        );
    }
}
