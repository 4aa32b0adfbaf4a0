//! `sensorgate lorawan keys` and `sensorgate lorawan decode`: "why is my device not showing up". Both
//! read the stored sessions (blocking IO, read only: nothing is written, the running daemon is not
//! disturbed) and build the JSON report; `crate::app` finds the device in the configuration and reads
//! its key files. No key is ever printed.

use std::path::Path;
use std::time::{Instant, SystemTime};

use serde_json::{json, Value as Json};

use super::dedup::Heard;
use super::payload::{decode_fields, Fields};
use super::persist;
use super::server::{Activation, NetworkServer, Outcome};
use super::server::{ServedDevice, ServerSettings};
use super::settings::{DeviceActivation, LorawanDevice};
use super::RxMeta;
use crate::statefile::{Loaded, StateFile};

/// The configured device a command is about.
pub struct CliDevice<'a> {
    pub name: &'a str,
    /// Its semtech-udp source, whose state file holds its session.
    pub source: &'a str,
    pub lorawan: LorawanDevice,
    pub state_dir: &'a Path,
}

/// The stored sessions of `source`, read without taking the state file over.
fn stored(state_dir: &Path, source: &str) -> Vec<super::session::SessionRecord> {
    match StateFile::open(state_dir, &persist::state_name(source)).1 {
        Loaded::Found(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Loaded::Fresh | Loaded::Lost(_) => Vec::new(),
    }
}

/// `lorawan keys --dev-eui ID`: the device's activation and its stored session (DevAddr, counters,
/// join inputs), never a key.
pub fn keys(device: &CliDevice) -> Result<String, String> {
    let records = stored(device.state_dir, device.source);
    let record = records.iter().find(|r| r.device == device.name);
    let activation = match &device.lorawan.activation {
        DeviceActivation::Otaa {
            dev_eui, join_eui, ..
        } => {
            json!({"mode": "otaa", "dev_eui": format!("{dev_eui:016x}"), "join_eui": format!("{join_eui:016x}")})
        }
        DeviceActivation::Abp { dev_addr, .. } => {
            json!({"mode": "abp", "dev_addr": format!("{dev_addr:08x}")})
        }
    };
    let session = match record {
        None => Json::Null,
        Some(record) => json!({
            "dev_addr": format!("{:08x}", record.dev_addr),
            "fcnt_up_at_least": record.fcnt_up_floor,
            "fcnt_down_next": record.fcnt_down_lease,
            "join": record.join.map(|j| json!({"join_nonce": j.join_nonce, "net_id": format!("{:06x}", j.net_id), "dev_nonce": j.dev_nonce})),
        }),
    };
    let report = json!({
        "device": device.name,
        "source": device.source,
        "activation": activation,
        "session": session,
        "note": if record.is_none() { "no stored session: an OTAA device has not joined yet (or joined since the last write); an ABP device starts at counter 0" } else { "" },
    });
    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())
}

/// The fields the device's codec makes of `payload` on `port` (compiled here, once).
fn codec_fields(device: &LorawanDevice, port: u8, payload: &[u8]) -> Json {
    let Some(codec) = &device.codec else {
        return json!("no codec loaded for this device");
    };
    let input = crate::codec::UplinkInput {
        bytes: payload.to_vec(),
        fport: port,
        recv_time_ms: None,
        variables: codec.variables.clone(),
    };
    let decoded = crate::codec::Codec::load(
        &codec.path.display().to_string(),
        &codec.script,
        codec.limits,
    )
    .and_then(|mut loaded| loaded.decode_uplink(&input))
    .and_then(|decoded| crate::codec::sources::fields_of(&decoded.data));
    match decoded {
        Ok(fields) => Json::Object(
            fields
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        ),
        Err(error) => json!(format!("not decoded by the codec: {error}")),
    }
}

/// `lorawan decode --dev-eui ID HEX`: the PHYPayload checked as the server would (MIC, counter against
/// the stored session, decryption) and decoded with the device's decoder; `devices` are the source's
/// devices with their keys. Returns the report and whether the server would accept the frame.
pub fn decode(
    device: &CliDevice,
    settings: ServerSettings,
    devices: Vec<(ServedDevice, LorawanDevice)>,
    phy_hex: &str,
) -> Result<(String, bool), String> {
    let phy = crate::crypto::parse_hex(phy_hex)?;
    let (served, decoders): (Vec<_>, Vec<_>) = devices.into_iter().unzip();
    let otaa = served
        .iter()
        .any(|d| d.name == device.name && matches!(d.activation, Activation::Otaa { .. }));
    let mut server = NetworkServer::new(settings, served, &stored(device.state_dir, device.source));
    let heard = Heard {
        phy,
        best: RxMeta {
            gateway: 0,
            tmst: 0,
            frequency: 0,
            spreading_factor: 7,
            bandwidth_khz: 125,
            rssi: 0.0,
            snr: 0.0,
        },
        gateways: Vec::new(),
    };
    let outcome = server.handle(&heard, Instant::now(), SystemTime::now());
    let accepted = !matches!(outcome, Outcome::Refused(_));
    let report = match outcome {
        Outcome::Data(accepted) => {
            let name = server.device(accepted.device).map(|d| d.name.clone());
            let fields = match decoders.get(accepted.device) {
                Some(decoder) => match decode_fields(decoder, accepted.fport, &accepted.payload) {
                    Fields::Decoded(fields) => Json::Object(
                        fields
                            .iter()
                            .map(|(k, v)| (k.clone(), v.to_json()))
                            .collect(),
                    ),
                    Fields::NoDecoder(port) => json!(format!("no decoder for FPort {port}")),
                    Fields::Refused(_, error) => json!(format!("not decoded: {error}")),
                    Fields::ByCodec(port) => codec_fields(decoder, port, &accepted.payload),
                },
                None => Json::Null,
            };
            json!({
                "accepted": true,
                "device": name,
                "fcnt": accepted.fcnt,
                "fport": accepted.fport,
                "confirmed": accepted.confirmed,
                "frm_payload": accepted.payload.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "fields": fields,
            })
        }
        Outcome::Joined { .. } => json!({"accepted": true, "join_request": true}),
        Outcome::Refused(refusal) => {
            let hint = if otaa {
                " (an OTAA device's session keys come from its last join the daemon stored)"
            } else {
                ""
            };
            json!({"accepted": false, "reason": format!("{refusal}{hint}")})
        }
    };
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    Ok((text, accepted))
}
