//! The LoRaWAN network server in process, on one core: uplinks per second from 1,000 ABP devices heard
//! by 8 gateways through the server (MIC check, 32-bit counter, FRMPayload decryption), the device's LPP
//! decoder and the registry (the state and field messages the broker then publishes; the broker's own
//! cost is the broker section's); join requests per second (MIC with the AppKey, JoinAccept built and
//! encrypted, session keys derived; the server's rate limit of 20 joins/s is stepped over, so this is
//! its CPU cost); resident memory per device session (ABP sessions with a counter, 20,000 of them); and
//! the session file's writes per day at 50 devices sending once a minute (the counter marks at work).
//! Frames are built beforehand with the `lorawan` crate as a device builds them; the dedup window is
//! not in the loop (the packet-forwarder's datagrams are the e2e sections' subject).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lorawan::creator::DataPayloadCreator;
use lorawan::keys::{AppSKey, NewSKey};
use lorawan::parser::FCtrl;
use sensorgate::devices::{Registry, RegistrySettings};
use sensorgate::lorawan::dedup::Heard;
use sensorgate::lorawan::dev_nonce::LorawanVersion;
use sensorgate::lorawan::payload::{decode_fields, Fields};
use sensorgate::lorawan::region::Region;
use sensorgate::lorawan::server::{
    Activation, NetworkServer, Outcome, ServedDevice, ServerSettings,
};
use sensorgate::lorawan::settings::{DeviceActivation, LorawanDevice};
use sensorgate::lorawan::RxMeta;
use sensorgate::model::{LorawanMeta, Reading};

const DEVICES: usize = 1_000;
const GATEWAYS: u64 = 8;
/// The devices of the flash figure and their interval.
const FLASH_DEVICES: usize = 50;
const SESSIONS_FOR_MEMORY: usize = 20_000;

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub uplinks: usize,
    pub uplinks_per_s: f64,
    pub joins: usize,
    pub joins_per_s: f64,
    pub bytes_per_session: f64,
    pub writes_per_day: u64,
    pub bytes_per_day: u64,
}

fn settings() -> ServerSettings {
    ServerSettings {
        region: Region::Eu868.params(),
        net_id: 0x13,
        rx1_delay: 1,
        join_accept_delay1: 5,
        rx2_frequency: 869_525_000,
        rx2_data_rate: 0,
    }
}

fn key(seed: usize, salt: u8) -> [u8; 16] {
    let mut key = [salt; 16];
    key[..8].copy_from_slice(&(seed as u64).to_le_bytes());
    key
}

fn dev_addr(i: usize) -> u32 {
    0x2600_0000 | i as u32
}

fn abp_devices(count: usize) -> Vec<(ServedDevice, LorawanDevice)> {
    (0..count)
        .map(|i| {
            let served = ServedDevice {
                name: format!("node-{i}"),
                activation: Activation::Abp {
                    dev_addr: dev_addr(i),
                    nwk_s_key: key(i, 1),
                    app_s_key: key(i, 2),
                },
                version: LorawanVersion::default(),
                adr: false,
            };
            let decoder = LorawanDevice {
                activation: DeviceActivation::Abp {
                    dev_addr: dev_addr(i),
                    nwk_s_key_file: "n".into(),
                    app_s_key_file: "a".into(),
                },
                payload: Some(sensorgate::decode::PayloadFormat::Lpp),
                fports: Default::default(),
                version: LorawanVersion::default(),
                codec: None,
                downlink_fport: 1,
                downlink_confirmed: false,
                adr: false,
            };
            (served, decoder)
        })
        .collect()
}

/// Device `i`'s uplink with counter `fcnt`: temperature, humidity and battery voltage in LPP.
fn uplink(i: usize, fcnt: u32) -> Vec<u8> {
    let payload = sensorgate::decode::LppWriter::new()
        .temperature(1, 20.0 + (fcnt % 10) as f64 / 10.0)
        .relative_humidity(2, 50.0)
        .voltage(3, 3.3)
        .into_bytes();
    let mut creator = DataPayloadCreator::new();
    creator
        .set_confirmed(false)
        .set_uplink(true)
        .set_dev_addr(&dev_addr(i).to_le_bytes())
        .set_fctrl(&FCtrl::new(0, true))
        .set_fcnt(fcnt)
        .set_f_port(10);
    creator
        .build(
            &payload,
            &[],
            &NewSKey::from(key(i, 1)),
            &AppSKey::from(key(i, 2)),
        )
        .map(|frame| frame.to_vec())
        .unwrap_or_default()
}

fn heard(phy: Vec<u8>, n: usize) -> Heard {
    let gateway = 0xaa55_5a00_0000_0000 | (n as u64 % GATEWAYS);
    Heard {
        phy,
        best: RxMeta {
            gateway,
            tmst: n as u32,
            frequency: 868_100_000,
            spreading_factor: 7,
            bandwidth_khz: 125,
            rssi: -80.0,
            snr: 7.0,
        },
        gateways: vec![gateway, 0xaa55_5a00_0000_0000 | ((n as u64 + 1) % GATEWAYS)],
    }
}

fn registry() -> Registry {
    Registry::with_device_cap(
        RegistrySettings {
            base_topic: "sensorgate".into(),
            qos: 1,
            retain: true,
            field_topics: true,
            offline_after: Duration::from_secs(3600),
            dedup_window: Duration::from_secs(10),
            max_fields: 64,
            devices: Vec::new(),
        },
        DEVICES * 2,
    )
}

/// Uplinks through server, decoder and registry; the messages made are counted so nothing is elided.
fn uplinks_per_second(rounds: u32) -> (usize, f64) {
    let (served, decoders): (Vec<_>, Vec<_>) = abp_devices(DEVICES).into_iter().unzip();
    let mut server = NetworkServer::new(settings(), served, &[]);
    let mut registry = registry();
    let frames: Vec<Heard> = (1..=rounds)
        .flat_map(|fcnt| (0..DEVICES).map(move |i| (i, fcnt)))
        .enumerate()
        .map(|(n, (i, fcnt))| heard(uplink(i, fcnt), n))
        .collect();
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut messages = 0usize;
    let started = Instant::now();
    for heard in &frames {
        let Outcome::Data(accepted) = server.handle(heard, Instant::now(), wall) else {
            continue;
        };
        let Some(decoder) = decoders.get(accepted.device) else {
            continue;
        };
        let Fields::Decoded(fields) = decode_fields(decoder, accepted.fport, &accepted.payload)
        else {
            continue;
        };
        let reading = Reading {
            source: "lns".into(),
            address: decoder.address(),
            seq: None,
            fields,
            received_at: wall,
            radio: None,
            lorawan: Some(LorawanMeta {
                fcnt: accepted.fcnt,
                fport: accepted.fport,
                gateway: format!("{:016x}", heard.best.gateway),
            }),
        };
        if let sensorgate::devices::ReadingOutcome::Publish { messages: made, .. } =
            registry.on_reading(&reading, Instant::now())
        {
            messages += made.len();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if messages == 0 {
        eprintln!("lorawan: no uplink was accepted");
    }
    (frames.len(), frames.len() as f64 / elapsed)
}

/// A join request of device `i` with `dev_nonce`, MIC'd with its AppKey.
fn join_request(i: usize, dev_nonce: u16) -> Vec<u8> {
    use aes::cipher::KeyInit;
    use cmac::Mac;
    let mut request = vec![0u8];
    request.extend_from_slice(&0x42u64.to_le_bytes());
    request.extend_from_slice(&(0x70b3_d57e_d000_0000 | i as u64).to_le_bytes());
    request.extend_from_slice(&dev_nonce.to_le_bytes());
    let mut mac = <cmac::Cmac<aes::Aes128> as KeyInit>::new(&key(i, 3).into());
    mac.update(&request);
    let mic = mac.finalize().into_bytes();
    request.extend_from_slice(&mic[..4]);
    request
}

fn joins_per_second(count: usize) -> (usize, f64) {
    let served: Vec<ServedDevice> = (0..count)
        .map(|i| ServedDevice {
            name: format!("otaa-{i}"),
            activation: Activation::Otaa {
                dev_eui: 0x70b3_d57e_d000_0000 | i as u64,
                join_eui: 0x42,
                app_key: key(i, 3),
            },
            version: LorawanVersion::V1_0_4,
            adr: false,
        })
        .collect();
    let mut server = NetworkServer::new(settings(), served, &[]);
    let requests: Vec<Heard> = (0..count).map(|i| heard(join_request(i, 1), i)).collect();
    let wall = SystemTime::now();
    let start = Instant::now();
    let mut joined = 0;
    let timer = Instant::now();
    for (n, request) in requests.iter().enumerate() {
        // One second per 20 joins of the server's clock: under its total rate limit.
        let now = start + Duration::from_millis(50 * n as u64 + 50);
        if let Outcome::Joined { .. } = server.handle(request, now, wall) {
            joined += 1;
        }
    }
    let elapsed = timer.elapsed().as_secs_f64();
    if joined != count {
        eprintln!("lorawan: {joined} of {count} joins accepted");
    }
    (joined, joined as f64 / elapsed)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Resident bytes per ABP session after one uplink each: the configured device (name, keys, decoder),
/// the server's tables and the session with its counters (the registry's per-device state is the
/// broker memory section's).
fn bytes_per_session() -> f64 {
    let frames: Vec<Heard> = (0..SESSIONS_FOR_MEMORY)
        .map(|i| heard(uplink(i, 1), i))
        .collect();
    let before = rss_bytes();
    let (served, decoders): (Vec<_>, Vec<_>) = abp_devices(SESSIONS_FOR_MEMORY).into_iter().unzip();
    let mut server = NetworkServer::new(settings(), served, &[]);
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for heard in &frames {
        std::hint::black_box(server.handle(heard, Instant::now(), wall));
    }
    let after = rss_bytes();
    std::hint::black_box((&server, &decoders));
    after.saturating_sub(before) as f64 / SESSIONS_FOR_MEMORY as f64
}

/// Session file writes and bytes in a day of 50 devices at one uplink a minute.
fn flash_per_day() -> (u64, u64) {
    let (served, _): (Vec<_>, Vec<_>) = abp_devices(FLASH_DEVICES).into_iter().unzip();
    let mut server = NetworkServer::new(settings(), served, &[]);
    let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (mut writes, mut bytes) = (0u64, 0u64);
    for minute in 1..=24 * 60u32 {
        for i in 0..FLASH_DEVICES {
            let heard = heard(uplink(i, minute), i);
            server.handle(&heard, Instant::now(), wall);
            if let Some(records) = server.records_due() {
                writes += 1;
                // The state file's header and checksum come on top: a few dozen bytes.
                bytes += serde_json::to_vec(&records).map_or(0, |v| v.len() as u64);
            }
        }
    }
    (writes, bytes)
}

/// Runs every figure on this thread.
pub fn run(quick: bool) -> Report {
    let (rounds, join_count) = if quick { (5, 500) } else { (20, 2_000) };
    let (uplinks, uplinks_per_s) = uplinks_per_second(rounds);
    let (joins, joins_per_s) = joins_per_second(join_count);
    let bytes_per_session = bytes_per_session();
    let (writes_per_day, bytes_per_day) = flash_per_day();
    Report {
        uplinks,
        uplinks_per_s,
        joins,
        joins_per_s,
        bytes_per_session,
        writes_per_day,
        bytes_per_day,
    }
}

pub fn markdown(report: &Report) -> String {
    format!(
        "## LoRaWAN\n\n\
         The network server in process on one core ({DEVICES} ABP devices, {GATEWAYS} gateways): an uplink\n\
         through the MIC check, the 32-bit counter, FRMPayload decryption, the LPP decoder (3 fields) and the\n\
         registry (state and field messages, ready for the broker); a join through the JoinRequest MIC, the\n\
         JoinAccept (encrypted, with the CFList) and the session keys; the resident memory of a session (ABP,\n\
         after one uplink, {SESSIONS_FOR_MEMORY} of them); and the session file's writes in a simulated day of\n\
         {FLASH_DEVICES} devices sending once a minute. Targets: >= 10,000 uplinks/s, <= 1 KiB per session,\n\
         the flash budget of 10 MiB/day.\n\n\
         | figure | value | target |\n\
         |---|---:|---:|\n\
         | uplinks per second (MIC, decrypt, decode, messages) | {:.0} ({} uplinks) | >= 10,000 |\n\
         | join requests per second (CPU; the server admits 20/s) | {:.0} ({} joins) | - |\n\
         | resident bytes per device session | {:.0} | <= 1,024 |\n\
         | session file writes per day, 50 devices x 1/min | {} ({:.1} KiB/day) | <= 10 MiB/day |\n",
        report.uplinks_per_s,
        report.uplinks,
        report.joins_per_s,
        report.joins,
        report.bytes_per_session,
        report.writes_per_day,
        report.bytes_per_day as f64 / 1024.0,
    )
}
