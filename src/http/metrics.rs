//! `/metrics`: the gateway's counters in the Prometheus text exposition format 0.0.4. Names follow
//! Prometheus' conventions: the `sensorgate_` prefix, base units in the name (`_seconds`, `_bytes`,
//! `_ratio`; radio levels keep their own units `_dbm` and `_db`), `_total` on every counter, a HELP and a
//! TYPE line for every family (also when it has no sample yet). Per-device families have one sample per
//! device the registry tracks, so the registry's device cap bounds them. Pure: everything is passed in.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::UNIX_EPOCH;

use serde_json::Value as Json;

use super::counters::HttpCounts;
use crate::broker::BrokerCounters;
use crate::live::Snapshot;
use crate::stats::CommandCounters;

/// Everything one scrape shows.
pub struct MetricsInput<'a> {
    pub version: &'a str,
    pub snapshot: Option<&'a Snapshot>,
    pub broker: BrokerCounters,
    pub broker_clients: i64,
    pub broker_sessions: i64,
    /// The uplink's statistics (`UplinkStatsHandle::snapshot`), when there is an upstream.
    pub uplink: Option<Json>,
    pub commands: BTreeMap<String, CommandCounters>,
    pub inspector_overwritten: u64,
    pub http: HttpCounts,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The exposition text being written.
struct Exposition {
    out: String,
}

impl Exposition {
    /// One family: its HELP and TYPE lines, then its samples. Only the loop is generic; the writing is
    /// not, so that each family's call adds little code.
    fn family<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels<'a>, f64)>,
    ) {
        self.header(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&'static str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help, [(Vec::new(), value)]);
    }
}

/// A label value with `\`, `"` and line feeds escaped as the format asks.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// The exposition text of one scrape.
pub fn render(input: &MetricsInput<'_>) -> String {
    let mut x = Exposition { out: String::new() };
    x.family(
        "sensorgate_build_info",
        "gauge",
        "The running sensorgate's version (always 1).",
        [(vec![("version", input.version)], 1.0)],
    );
    sources(&mut x, input.snapshot);
    devices(&mut x, input.snapshot);
    broker(&mut x, input);
    uplink(&mut x, input.uplink.as_ref());
    commands(&mut x, &input.commands);
    x.single(
        "sensorgate_inspector_frames_overwritten_total",
        "counter",
        "Frames pushed out of the frame inspector's per-source ring by newer ones.",
        input.inspector_overwritten as f64,
    );
    let http = &input.http;
    x.single(
        "sensorgate_http_requests_total",
        "counter",
        "Requests the status page's server answered.",
        http.requests as f64,
    );
    x.family(
        "sensorgate_http_refused_total",
        "counter",
        "What the status page's server refused, by reason.",
        [
            (vec![("reason", "busy")], http.connections_refused as f64),
            (vec![("reason", "request")], http.requests_refused as f64),
            (vec![("reason", "login")], http.logins_refused as f64),
        ],
    );
    x.out
}

fn sources(x: &mut Exposition, snapshot: Option<&Snapshot>) {
    let sources: Vec<_> = snapshot
        .map(|s| s.stats.sources().collect())
        .unwrap_or_default();
    let per_source = |pick: fn(&crate::stats::SourceCounters) -> u64| {
        sources
            .iter()
            .map(move |(name, c)| (vec![("source", *name)], pick(c) as f64))
    };
    x.family(
        "sensorgate_source_up",
        "gauge",
        "Whether the source's link (port, radio) is up.",
        sources
            .iter()
            .map(|(name, c)| (vec![("source", *name)], flag(c.up))),
    );
    x.family(
        "sensorgate_source_frames_total",
        "counter",
        "Frames the source delivered.",
        per_source(|c| c.frames),
    );
    x.family(
        "sensorgate_source_readings_total",
        "counter",
        "Readings decoded from the source's frames and published.",
        per_source(|c| c.readings),
    );
    x.family(
        "sensorgate_source_errors_total",
        "counter",
        "Frames refused, by kind: frame (framing, too long), decode (CRC, payload), auth (encrypted \
         frame not authentic), replay (counter not above the device's mark).",
        sources.iter().flat_map(|(name, c)| {
            [
                ("frame", c.frame_errors),
                ("decode", c.decode_errors),
                ("auth", c.auth_failed),
                ("replay", c.replayed),
            ]
            .map(|(kind, n)| (vec![("source", *name), ("kind", kind)], n as f64))
        }),
    );
    x.family(
        "sensorgate_source_duplicates_total",
        "counter",
        "Readings dropped as duplicates (same device and sequence number within the dedup window).",
        per_source(|c| c.duplicates),
    );
    x.family(
        "sensorgate_source_link_losses_total",
        "counter",
        "Times the source's link was lost.",
        per_source(|c| c.link_losses),
    );
}

fn device_labels(d: &crate::devices::DeviceSnapshot) -> Labels<'_> {
    vec![("device", d.name.as_str()), ("source", d.source.as_str())]
}

fn devices(x: &mut Exposition, snapshot: Option<&Snapshot>) {
    let devices = snapshot.map(|s| s.devices.as_slice()).unwrap_or_default();
    let number = |d: &crate::devices::DeviceSnapshot, key: &str| d.state.get(key)?.as_f64();
    x.single(
        "sensorgate_devices_online",
        "gauge",
        "Devices online now.",
        snapshot.map_or(0, |s| s.devices_online) as f64,
    );
    x.single(
        "sensorgate_devices_known",
        "gauge",
        "Devices tracked (heard since the start and not evicted by the device cap).",
        snapshot.map_or(0, |s| s.devices_known) as f64,
    );
    x.family(
        "sensorgate_device_online",
        "gauge",
        "Whether the device is online (heard within its offline_after).",
        devices.iter().map(|d| (device_labels(d), flag(d.online))),
    );
    x.family(
        "sensorgate_device_last_seen_timestamp_seconds",
        "gauge",
        "When the device's last reading arrived, Unix time.",
        devices.iter().filter_map(|d| {
            let snapshot = snapshot?;
            let at = snapshot
                .wall_time(d.last_heard)
                .duration_since(UNIX_EPOCH)
                .ok()?;
            Some((device_labels(d), at.as_secs_f64().floor()))
        }),
    );
    x.family(
        "sensorgate_device_rssi_dbm",
        "gauge",
        "Received signal strength of the device's last frame, dBm (radio sources).",
        devices
            .iter()
            .filter_map(|d| Some((device_labels(d), number(d, crate::publish::STATE_KEY_RSSI)?))),
    );
    x.family(
        "sensorgate_device_snr_db",
        "gauge",
        "Signal-to-noise ratio of the device's last frame, dB (radio sources).",
        devices
            .iter()
            .filter_map(|d| Some((device_labels(d), number(d, crate::publish::STATE_KEY_SNR)?))),
    );
    x.family(
        "sensorgate_device_battery_ratio",
        "gauge",
        "The device's battery level (its `battery` field, percent) as a ratio 0 to 1.",
        devices
            .iter()
            .filter_map(|d| Some((device_labels(d), number(d, "battery")? / 100.0))),
    );
    let (over_cap, fields) = snapshot.map_or((0, 0), |s| {
        (s.stats.dropped_over_device_cap, s.stats.fields_dropped)
    });
    x.family(
        "sensorgate_dropped_total",
        "counter",
        "Readings and fields dropped by the registry's bounds: device_cap (a new device while the \
         registry was full), fields (a device over max_fields).",
        [
            (vec![("what", "device_cap")], over_cap as f64),
            (vec![("what", "fields")], fields as f64),
        ],
    );
}

fn broker(x: &mut Exposition, input: &MetricsInput<'_>) {
    let b = &input.broker;
    x.single(
        "sensorgate_broker_clients",
        "gauge",
        "MQTT clients connected to the embedded broker.",
        input.broker_clients as f64,
    );
    x.single(
        "sensorgate_broker_sessions",
        "gauge",
        "MQTT sessions: connected clients plus persistent sessions kept for absent ones.",
        input.broker_sessions as f64,
    );
    x.single(
        "sensorgate_broker_messages_received_total",
        "counter",
        "PUBLISH packets the embedded broker received from MQTT clients (not the gateway's own publishes).",
        b.messages_received as f64,
    );
    x.single(
        "sensorgate_broker_messages_sent_total",
        "counter",
        "Messages the embedded broker handed to subscribers' connections: fresh, retained and wills, after each receiver's read right.",
        b.messages_sent as f64,
    );
    x.single(
        "sensorgate_broker_routes_forgotten_total",
        "counter",
        "Topic names the broker's route cache forgot because it was full; their subscribers are matched afresh.",
        b.routes_forgotten as f64,
    );
    let refused = input.snapshot.map_or(0, |s| s.stats.refused_publishes);
    x.family(
        "sensorgate_broker_dropped_total",
        "counter",
        "What the embedded broker dropped, refused or closed to stay within its bounds, by reason.",
        [
            ("slow_subscriber", b.dropped_for_slow_subscribers),
            ("uplink_queue", b.dropped_for_the_uplink),
            ("commands_queue", b.commands_dropped),
            ("session_evicted", b.sessions_evicted),
            ("silent_connection", b.silent_connections_closed),
            ("retained_full", b.retained_refused),
            ("retained_torn_tail", b.retained_torn_tails),
            ("gateway_publish_refused", refused),
            ("client_publish_refused", b.publishes_refused),
        ]
        .map(|(reason, n)| (vec![("reason", reason)], n as f64)),
    );
}

fn uplink(x: &mut Exposition, uplink: Option<&Json>) {
    let field = |key: &str| uplink.and_then(|u| u.get(key)?.as_f64());
    let gauge = |x: &mut Exposition, name: &str, help: &str, key: &str| {
        x.family(name, "gauge", help, field(key).map(|v| (Vec::new(), v)));
    };
    x.family(
        "sensorgate_uplink_connected",
        "gauge",
        "Whether the uplink to the cloud broker is connected (no sample without an [upstream]).",
        uplink.map(|u| {
            let connected = u.get("state").and_then(Json::as_str) == Some("connected");
            (Vec::new(), flag(connected))
        }),
    );
    gauge(
        x,
        "sensorgate_uplink_spool_bytes",
        "Bytes in the uplink's disk spool.",
        "spool_bytes",
    );
    gauge(
        x,
        "sensorgate_uplink_spool_messages",
        "Messages in the uplink's disk spool.",
        "spool_messages",
    );
    gauge(
        x,
        "sensorgate_uplink_oldest_age_seconds",
        "Age of the oldest message not yet acknowledged by the cloud broker (0 when none waits).",
        "oldest_age_s",
    );
    x.family(
        "sensorgate_uplink_acked_total",
        "counter",
        "Messages the cloud broker acknowledged.",
        field("acked").map(|v| (Vec::new(), v)),
    );
    x.family(
        "sensorgate_uplink_dropped_total",
        "counter",
        "Messages the spool dropped, by reason: budget (spool full), age (max_age), too_large.",
        ["budget", "age", "too_large"]
            .into_iter()
            .filter_map(|reason| {
                let value = field(&format!("dropped_{reason}"))?;
                Some((vec![("reason", reason)], value))
            }),
    );
    x.family(
        "sensorgate_flash_written_bytes_total",
        "counter",
        "Bytes the uplink's spool wrote to storage (the gateway's flash wear).",
        field("written_bytes").map(|v| (Vec::new(), v)),
    );
}

fn commands(x: &mut Exposition, commands: &BTreeMap<String, CommandCounters>) {
    x.family(
        "sensorgate_commands_total",
        "counter",
        "Commands to devices by source and result: received (queued), sent, expired, refused.",
        commands.iter().flat_map(|(source, c)| {
            [
                ("received", c.received),
                ("sent", c.sent),
                ("expired", c.expired),
                ("refused", c.refused),
            ]
            .map(|(result, n)| {
                (
                    vec![("source", source.as_str()), ("result", result)],
                    n as f64,
                )
            })
        }),
    );
    x.family(
        "sensorgate_radio_airtime_seconds_total",
        "counter",
        "Time on air of the frames the gateway sent, by source.",
        commands.iter().map(|(source, c)| {
            (
                vec![("source", source.as_str())],
                c.airtime_ms as f64 / 1000.0,
            )
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant, SystemTime};

    fn input_with(snapshot: Option<&Snapshot>) -> MetricsInput<'_> {
        MetricsInput {
            version: "1.2.3",
            snapshot,
            broker: BrokerCounters::default(),
            broker_clients: 2,
            broker_sessions: 3,
            uplink: None,
            commands: BTreeMap::new(),
            inspector_overwritten: 0,
            http: HttpCounts::default(),
        }
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let text = render(&input_with(None));
        let mut families = 0;
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            families += 1;
            let mut parts = line.split(' ').skip(2);
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("sensorgate_"), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name} is a {kind}"
            );
        }
        assert!(families >= 25, "{families} families");
        assert!(text.contains("sensorgate_build_info{version=\"1.2.3\"} 1\n"));
        assert!(text.contains("sensorgate_broker_clients 2\n"));
    }

    #[test]
    fn broker_messages_in_out_refused_and_forgotten_routes_come_from_its_counters() {
        let mut input = input_with(None);
        input.broker.messages_received = 5;
        input.broker.messages_sent = 9;
        input.broker.publishes_refused = 2;
        input.broker.routes_forgotten = 1024;
        let text = render(&input);
        for expected in [
            "# TYPE sensorgate_broker_messages_received_total counter\n",
            "sensorgate_broker_messages_received_total 5\n",
            "sensorgate_broker_messages_sent_total 9\n",
            "sensorgate_broker_dropped_total{reason=\"client_publish_refused\"} 2\n",
            "sensorgate_broker_routes_forgotten_total 1024\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn sources_devices_and_uplink_appear_with_escaped_labels() {
        let mut stats = crate::stats::Stats::new();
        stats.source("uart\"0").frames = 7;
        stats.source("uart\"0").decode_errors = 2;
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut state = serde_json::Map::new();
        state.insert("rssi".into(), serde_json::json!(-97.5));
        state.insert("battery".into(), serde_json::json!(80));
        let snapshot = Snapshot {
            stats,
            devices: vec![crate::devices::DeviceSnapshot {
                name: "kitchen".into(),
                source: "uart\"0".into(),
                address: "3".into(),
                configured: true,
                online: true,
                last_heard: now - Duration::from_secs(10),
                offline_after: Duration::from_secs(60),
                state,
            }],
            devices_online: 1,
            devices_known: 1,
            started: now,
            taken: now,
            taken_wall: wall,
        };
        let mut input = input_with(Some(&snapshot));
        input.uplink = Some(
            serde_json::json!({"state": "connected", "spool_bytes": 4096,
            "dropped_age": 1, "dropped_budget": 0, "dropped_too_large": 0, "written_bytes": 9}),
        );
        let text = render(&input);
        for expected in [
            "sensorgate_source_frames_total{source=\"uart\\\"0\"} 7\n",
            "sensorgate_source_errors_total{source=\"uart\\\"0\",kind=\"decode\"} 2\n",
            "sensorgate_device_rssi_dbm{device=\"kitchen\",source=\"uart\\\"0\"} -97.5\n",
            "sensorgate_device_battery_ratio{device=\"kitchen\",source=\"uart\\\"0\"} 0.8\n",
            "sensorgate_device_last_seen_timestamp_seconds{device=\"kitchen\",source=\"uart\\\"0\"} 999990\n",
            "sensorgate_uplink_connected 1\n",
            "sensorgate_uplink_spool_bytes 4096\n",
            "sensorgate_uplink_dropped_total{reason=\"age\"} 1\n",
            "sensorgate_flash_written_bytes_total 9\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains("sensorgate_device_snr_db{"), "no SNR known");
    }
}
