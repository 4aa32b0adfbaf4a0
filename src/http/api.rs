//! The JSON the page shows, one function per `/api/` path, built from the read-only views the server
//! holds ([`super::Views`]). Pure apart from reading those views and the clock.
//!
//! - `/api/gateway`: version, uptime, broker clients, health, whether the login asking is an admin (the
//!   page then shows its admin actions), and the `{base}/gateway/stats` report (sources, totals, broker
//!   drops, uplink, commands) as the pipeline last counted it.
//! - `/api/sources`: per configured source: kind, state (`receiving`, `up`, `lost`), counters, last frame.
//! - `/api/devices`: per tracked device: name, source, address, configured, online, last seen (RFC 3339
//!   and seconds ago), stale, RSSI, SNR, battery, and its fields.
//! - `/api/frames?after=ID&source=S&device=D&limit=N`: the frame inspector's entries after `ID`.
//! - `/api/heard`: unknown senders (devices without a `[[device]]`) per source, each with the TOML to paste.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value as Json};

use super::Views;
use crate::devices::DeviceSnapshot;
use crate::live::{FrameOutcome, InspectedFrame, Snapshot};

/// Frames one `/api/frames` answer carries at most.
pub const MAX_FRAMES_PER_ANSWER: usize = 500;
/// A source whose last frame is younger than this is `receiving`.
const RECEIVING_WITHIN: Duration = Duration::from_secs(120);

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn age_s(now: SystemTime, at: SystemTime) -> u64 {
    now.duration_since(at).map_or(0, |d| d.as_secs())
}

/// `/api/gateway`; `admin`: whether the login asking has the `admin` right.
pub fn gateway(views: &Views, admin: bool) -> Json {
    let snapshot = views.live.snapshot();
    let report = views.stats_report(snapshot.as_deref());
    let wedged = views.wedged();
    json!({
        "version": views.version,
        "uptime_s": views.started.elapsed().as_secs(),
        "broker_clients": views.broker_clients(),
        "healthy": wedged.is_empty(),
        "wedged": wedged,
        "admin": admin,
        "stats": report,
    })
}

/// `/api/sources`.
pub fn sources(views: &Views) -> Json {
    let snapshot = views.live.snapshot();
    let now = SystemTime::now();
    let sources: Vec<Json> = views
        .sources
        .iter()
        .map(|(name, kind)| {
            let counters = snapshot
                .as_deref()
                .and_then(|s| s.stats.sources().find(|(n, _)| n == name))
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            let last = views
                .live
                .frames(0, Some(name), 1)
                .pop()
                .map(|frame| frame.at);
            let state = match (counters.up, last) {
                (false, _) => "lost",
                (true, Some(at)) if age_s(now, at) < RECEIVING_WITHIN.as_secs() => "receiving",
                (true, _) => "up",
            };
            json!({
                "name": name,
                "kind": kind,
                "state": state,
                "counters": counters,
                "last_frame": last.map(rfc3339),
                "last_frame_age_s": last.map(|at| age_s(now, at)),
            })
        })
        .collect();
    Json::Array(sources)
}

fn device_json(snapshot: &Snapshot, device: &DeviceSnapshot, now: SystemTime) -> Json {
    let seen = snapshot.wall_time(device.last_heard);
    let fields: Map<String, Json> = device
        .state
        .iter()
        .filter(|(key, _)| !crate::publish::STATE_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let age = age_s(now, seen);
    json!({
        "name": device.name,
        "source": device.source,
        "address": device.address,
        "configured": device.configured,
        "online": device.online,
        "last_seen": rfc3339(seen),
        "last_seen_age_s": age,
        "stale": !device.online || age > device.offline_after.as_secs(),
        "rssi": device.state.get(crate::publish::STATE_KEY_RSSI),
        "snr": device.state.get(crate::publish::STATE_KEY_SNR),
        "battery": device.state.get("battery"),
        "fields": fields,
    })
}

/// `/api/devices`.
pub fn devices(views: &Views) -> Json {
    let Some(snapshot) = views.live.snapshot() else {
        return json!([]);
    };
    let now = SystemTime::now();
    Json::Array(
        snapshot
            .devices
            .iter()
            .map(|device| device_json(&snapshot, device, now))
            .collect(),
    )
}

fn frame_json(frame: &InspectedFrame) -> Json {
    let raw: String = frame.raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut entry = json!({
        "id": frame.id,
        "time": humantime::format_rfc3339_millis(frame.at).to_string(),
        "source": frame.source,
        "raw": raw,
        "cut": frame.cut,
    });
    if let Json::Object(fields) = &mut entry {
        match &frame.outcome {
            FrameOutcome::Decoded(readings) => {
                fields.insert("readings".into(), Json::Array(readings.clone()));
            }
            FrameOutcome::Refused(error) => {
                fields.insert("error".into(), Json::String(error.clone()));
            }
        }
    }
    entry
}

fn names_device(frame: &InspectedFrame, device: &str) -> bool {
    match &frame.outcome {
        FrameOutcome::Decoded(readings) => readings
            .iter()
            .any(|r| r.get("device").and_then(Json::as_str) == Some(device)),
        FrameOutcome::Refused(_) => false,
    }
}

/// `/api/frames`: `after` (an id, default 0), `source`, `device`, `limit` (at most
/// [`MAX_FRAMES_PER_ANSWER`]).
pub fn frames(
    views: &Views,
    after: Option<&str>,
    source: Option<&str>,
    device: Option<&str>,
    limit: Option<&str>,
) -> Json {
    let after = after.and_then(|a| a.parse().ok()).unwrap_or(0);
    let limit = limit
        .and_then(|l| l.parse().ok())
        .unwrap_or(MAX_FRAMES_PER_ANSWER)
        .min(MAX_FRAMES_PER_ANSWER);
    let source = source.filter(|s| !s.is_empty());
    let mut frames = views.live.frames(after, source, usize::MAX);
    if let Some(device) = device.filter(|d| !d.is_empty()) {
        frames.retain(|frame| names_device(frame, device));
    }
    let skip = frames.len().saturating_sub(limit);
    json!({
        "overwritten": views.live.frames_overwritten(),
        "frames": frames[skip..].iter().map(frame_json).collect::<Vec<_>>(),
    })
}

/// The `[[device]]` entry that names an unknown sender.
pub fn device_toml(source: &str, address: &str) -> String {
    let name: String = format!("{source}-{address}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let quoted = |text: &str| serde_json::to_string(text).unwrap_or_default();
    format!(
        "[[device]]\nname = {}\nsource = {}\naddress = {}\n",
        quoted(&name),
        quoted(source),
        quoted(address)
    )
}

/// `/api/heard`.
pub fn heard(views: &Views) -> Json {
    let mut by_source = Map::new();
    let Some(snapshot) = views.live.snapshot() else {
        return Json::Object(by_source);
    };
    let now = SystemTime::now();
    let mut unknown: Vec<DeviceSnapshot> = snapshot
        .devices
        .iter()
        .filter(|d| !d.configured)
        .cloned()
        .collect();
    crate::devices::sort_snapshots(&mut unknown, |a, b| b.last_heard.cmp(&a.last_heard));
    for device in &unknown {
        let entry = json!({
            "address": device.address,
            "name": device.name,
            "last_seen": rfc3339(snapshot.wall_time(device.last_heard)),
            "last_seen_age_s": age_s(now, snapshot.wall_time(device.last_heard)),
            "rssi": device.state.get(crate::publish::STATE_KEY_RSSI),
            "toml": device_toml(&device.source, &device.address),
        });
        if let Json::Array(list) = by_source
            .entry(device.source.clone())
            .or_insert_with(|| Json::Array(Vec::new()))
        {
            list.push(entry);
        }
    }
    Json::Object(by_source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_toml_is_pasteable() {
        let toml_text = device_toml("lora", "7\"x");
        assert_eq!(
            toml_text,
            "[[device]]\nname = \"lora-7_x\"\nsource = \"lora\"\naddress = \"7\\\"x\"\n"
        );
        let parsed: toml::Value = toml::from_str(&toml_text).unwrap();
        assert_eq!(parsed["device"][0]["address"].as_str(), Some("7\"x"));
    }

    #[test]
    fn frames_show_hex_and_the_error_or_the_readings() {
        let refused = InspectedFrame {
            id: 4,
            at: SystemTime::UNIX_EPOCH,
            source: "uart".into(),
            raw: vec![0x01, 0xab],
            cut: false,
            outcome: FrameOutcome::Refused("CRC mismatch".into()),
        };
        let entry = frame_json(&refused);
        assert_eq!(entry["raw"], "01ab");
        assert_eq!(entry["error"], "CRC mismatch");
        assert_eq!(entry["time"], "1970-01-01T00:00:00.000Z");
        let decoded = InspectedFrame {
            outcome: FrameOutcome::Decoded(vec![json!({"device": "kitchen"})]),
            ..refused.clone()
        };
        assert!(names_device(&decoded, "kitchen"));
        assert!(!names_device(&decoded, "garage"));
        assert!(!names_device(&refused, "kitchen"));
        assert_eq!(frame_json(&decoded)["readings"][0]["device"], "kitchen");
    }
}
