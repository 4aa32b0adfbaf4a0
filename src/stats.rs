//! The gateway's counters: what the pipeline counts per source and the JSON published on
//! `{base}/gateway/stats`. Pure: time is passed in; it never publishes, never logs and never reads a
//! clock.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::broker::BrokerCounters;

/// What happened on one source since the gateway started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounters {
    /// Frames (packets) the source delivered.
    pub frames: u64,
    /// Readings decoded from them.
    pub readings: u64,
    /// Frames that could not be framed (too long, bad escape, CRC error...).
    pub frame_errors: u64,
    /// Frames that could not be decoded into a reading.
    pub decode_errors: u64,
    /// Payloads a JavaScript codec failed on (also counted in `decode_errors`; each published on
    /// `{base}/{device}/error`).
    pub codec_errors: u64,
    /// Payloads dropped unrun because their codec's queue was full (also counted in `codec_errors`).
    pub codec_dropped: u64,
    /// Readings dropped as duplicates.
    pub duplicates: u64,
    /// Encrypted frames that failed authentication (wrong key, changed bytes, no key for the device).
    pub auth_failed: u64,
    /// Authentic encrypted frames refused because their counter was not above the device's mark.
    pub replayed: u64,
    /// Plaintext adverts of a Bluetooth LE device that has a bindkey, refused.
    #[serde(skip_serializing_if = "is_zero")]
    pub plaintext_refused: u64,
    /// Times the link was lost (port vanished, radio stopped answering).
    pub link_losses: u64,
    /// Whether the link is up now.
    pub up: bool,
    /// A supervised receiver's state (rtl_433): running, stalled, restarting, lost, finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
    /// Times a supervised receiver stalled and was killed.
    #[serde(skip_serializing_if = "is_zero")]
    pub stalls: u64,
    /// Times a supervised receiver was started again.
    #[serde(skip_serializing_if = "is_zero")]
    pub restarts: u64,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// Commands to the devices of one source (`crate::commands`), in `{base}/gateway/stats` as the source's
/// `commands` (sources with `commands = true` only) and in `totals.commands`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CommandCounters {
    /// Commands accepted into a device's queue.
    pub received: u64,
    /// Frames sent to the device.
    pub sent: u64,
    /// Commands whose `command_ttl` ended before they could be sent (link down, no uplink, duty cycle).
    pub expired: u64,
    /// Commands refused (no right, commands off, unknown device, bad payload, raw bytes the device may
    /// not get, a full queue or a client's or the source's bound). Those for no configured source count
    /// in the totals only.
    pub refused: u64,
    /// Time on air of the frames sent, milliseconds (radios).
    pub airtime_ms: u64,
    /// Heard addresses forgotten to keep the source's set of heard devices bounded.
    pub heard_forgotten: u64,
    /// Results of refused commands not published, to keep one client's refusals from flooding.
    pub results_dropped: u64,
}

/// Adds each source's command counters to a `{base}/gateway/stats` report made by [`stats_json`], and
/// their sum as `totals.commands`.
pub fn add_command_counters(report: &mut Json, commands: &BTreeMap<String, CommandCounters>) {
    let mut totals = CommandCounters::default();
    for (source, counters) in commands {
        totals.received += counters.received;
        totals.sent += counters.sent;
        totals.expired += counters.expired;
        totals.refused += counters.refused;
        totals.airtime_ms += counters.airtime_ms;
        totals.heard_forgotten += counters.heard_forgotten;
        totals.results_dropped += counters.results_dropped;
        if let Some(Json::Object(fields)) = report.pointer_mut(&format!("/sources/{source}")) {
            fields.insert("commands".to_string(), json!(counters));
        }
    }
    if let Some(Json::Object(fields)) = report.pointer_mut("/totals") {
        fields.insert("commands".to_string(), json!(totals));
    }
}

/// Discovery's counters for `{base}/gateway/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiscoveryCounters {
    /// Fields not announced because discovery tracked `max_entities` fields.
    pub fields_over_cap: u64,
    /// Birth messages answered by the re-publication that follows the current window.
    pub births_coalesced: u64,
    /// Removals published once but not kept for Home Assistant's next birth (`max_entities` were kept).
    pub removals_over_cap: u64,
}

/// Adds Home Assistant discovery's counters to a `{base}/gateway/stats` report made by [`stats_json`]:
/// `"homeassistant": {"fields_over_cap", "births_coalesced", "removals_over_cap"}`: the fields not
/// announced because discovery tracked its maximum (20,000) over all devices, the birth messages answered
/// by the re-publication that follows the current window instead of one of their own, and the removals
/// published once but not kept for Home Assistant's next birth. Left out while discovery is off.
pub fn add_discovery_counters(report: &mut Json, counters: &DiscoveryCounters) {
    if let Json::Object(fields) = report {
        fields.insert("homeassistant".to_string(), json!(counters));
    }
}

/// The pipeline's counters: per source, plus what the registry's bounds dropped and the publishes the broker
/// refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    sources: BTreeMap<String, SourceCounters>,
    /// Readings dropped because the registry tracks as many devices as it may.
    pub dropped_over_device_cap: u64,
    /// Fields dropped because their device already had `max_fields` fields.
    pub fields_dropped: u64,
    /// The pipeline's own publishes the broker refused.
    pub refused_publishes: u64,
    /// Devices an admin had forgotten (the status page's `POST /api/forget`).
    pub devices_forgotten: u64,
}

impl Stats {
    /// No counters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of the source `name`, created at zero (and down) the first time. Call it with
    /// configured source names only, so the map stays as small as the configuration.
    pub fn source(&mut self, name: &str) -> &mut SourceCounters {
        self.sources.entry(name.to_string()).or_default()
    }

    /// Every source's counters, by name.
    pub fn sources(&self) -> impl Iterator<Item = (&str, &SourceCounters)> {
        self.sources
            .iter()
            .map(|(name, counters)| (name.as_str(), counters))
    }
}

/// The JSON of `{base}/gateway/stats`:
/// `{"uptime_s", "devices": {"online", "known", "dropped_over_cap", "fields_dropped", "forgotten"},
/// "sources": {name: counters (a supervised receiver adds "state", "stalls", "restarts")}, "totals": {frames, readings, frame_errors, decode_errors, codec_errors, codec_dropped, duplicates,
/// auth_failed, replayed, link_losses}, "broker": {"dropped_for_slow_subscribers", "dropped_for_the_uplink", "sessions_evicted",
/// "silent_connections_closed", "retained_refused", "retained_torn_tails", "dropped_for_commands", "refused_gateway_publishes"}, "uplink"}`;
/// `broker` is what the broker dropped, refused or closed to stay within its bounds. `uplink` (the uplink's own counters: spool depth and age...) is left
/// out when there is no upstream.
pub fn stats_json(
    stats: &Stats,
    devices_online: usize,
    devices_known: usize,
    broker: &BrokerCounters,
    uplink: Option<Json>,
    uptime: Duration,
) -> Json {
    let mut totals = SourceCounters::default();
    for counters in stats.sources.values() {
        totals.frames += counters.frames;
        totals.readings += counters.readings;
        totals.frame_errors += counters.frame_errors;
        totals.decode_errors += counters.decode_errors;
        totals.codec_errors += counters.codec_errors;
        totals.codec_dropped += counters.codec_dropped;
        totals.duplicates += counters.duplicates;
        totals.auth_failed += counters.auth_failed;
        totals.replayed += counters.replayed;
        totals.link_losses += counters.link_losses;
    }
    let sources: serde_json::Map<String, Json> = stats
        .sources
        .iter()
        .map(|(name, counters)| (name.clone(), json!(counters)))
        .collect();
    let mut report = json!({
        "uptime_s": uptime.as_secs(),
        "devices": {
            "online": devices_online,
            "known": devices_known,
            "dropped_over_cap": stats.dropped_over_device_cap,
            "fields_dropped": stats.fields_dropped,
            "forgotten": stats.devices_forgotten,
        },
        "sources": sources,
        "totals": {
            "frames": totals.frames,
            "readings": totals.readings,
            "frame_errors": totals.frame_errors,
            "decode_errors": totals.decode_errors,
            "codec_errors": totals.codec_errors,
            "codec_dropped": totals.codec_dropped,
            "duplicates": totals.duplicates,
            "auth_failed": totals.auth_failed,
            "replayed": totals.replayed,
            "link_losses": totals.link_losses,
        },
        "broker": {
            "dropped_for_slow_subscribers": broker.dropped_for_slow_subscribers,
            "dropped_for_the_uplink": broker.dropped_for_the_uplink,
            "sessions_evicted": broker.sessions_evicted,
            "silent_connections_closed": broker.silent_connections_closed,
            "retained_refused": broker.retained_refused,
            "retained_torn_tails": broker.retained_torn_tails,
            "dropped_for_commands": broker.commands_dropped,
            "refused_gateway_publishes": stats.refused_publishes,
        },
    });
    if let (Some(uplink), Json::Object(fields)) = (uplink, &mut report) {
        fields.insert("uplink".to_string(), uplink);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_json_shape() {
        let mut stats = Stats::new();
        let uart = stats.source("uart0");
        uart.frames = 10;
        uart.readings = 8;
        uart.decode_errors = 2;
        uart.up = true;
        stats.source("lora").frames = 5;
        stats.source("lora").duplicates = 1;
        stats.source("lora").link_losses = 1;
        stats.dropped_over_device_cap = 3;
        stats.fields_dropped = 9;
        stats.refused_publishes = 1;

        let report = stats_json(
            &stats,
            2,
            4,
            &BrokerCounters {
                dropped_for_slow_subscribers: 12,
                dropped_for_the_uplink: 2,
                sessions_evicted: 3,
                silent_connections_closed: 4,
                retained_refused: 5,
                commands_dropped: 6,
                retained_torn_tails: 1,
                ..BrokerCounters::default()
            },
            Some(json!({"spool_messages": 7})),
            Duration::from_millis(61_900),
        );
        assert_eq!(
            report,
            json!({
                "uptime_s": 61,
                "devices": {"online": 2, "known": 4, "dropped_over_cap": 3, "fields_dropped": 9, "forgotten": 0},
                "sources": {
                    "lora": {"frames": 5, "readings": 0, "frame_errors": 0, "decode_errors": 0,
                             "codec_errors": 0, "codec_dropped": 0, "duplicates": 1, "auth_failed": 0, "replayed": 0, "link_losses": 1,
                             "up": false},
                    "uart0": {"frames": 10, "readings": 8, "frame_errors": 0, "decode_errors": 2,
                              "codec_errors": 0, "codec_dropped": 0, "duplicates": 0, "auth_failed": 0, "replayed": 0, "link_losses": 0,
                              "up": true},
                },
                "totals": {"frames": 15, "readings": 8, "frame_errors": 0, "decode_errors": 2,
                           "codec_errors": 0, "codec_dropped": 0, "duplicates": 1, "auth_failed": 0, "replayed": 0, "link_losses": 1},
                "broker": {"dropped_for_slow_subscribers": 12, "dropped_for_the_uplink": 2,
                           "sessions_evicted": 3, "silent_connections_closed": 4,
                           "retained_refused": 5, "retained_torn_tails": 1,
                           "dropped_for_commands": 6, "refused_gateway_publishes": 1},
                "uplink": {"spool_messages": 7},
            })
        );
        let without_uplink = stats_json(
            &stats,
            0,
            0,
            &BrokerCounters::default(),
            None,
            Duration::ZERO,
        );
        assert!(without_uplink.get("uplink").is_none());
        assert!(without_uplink.get("homeassistant").is_none());
        let mut with_discovery = without_uplink;
        add_discovery_counters(
            &mut with_discovery,
            &DiscoveryCounters {
                fields_over_cap: 3,
                births_coalesced: 2,
                removals_over_cap: 1,
            },
        );
        assert_eq!(
            with_discovery["homeassistant"],
            json!({"fields_over_cap": 3, "births_coalesced": 2, "removals_over_cap": 1})
        );
        let names: Vec<_> = stats.sources().map(|(name, _)| name).collect();
        assert_eq!(names, ["lora", "uart0"]);
    }
}
