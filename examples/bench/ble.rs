//! The Bluetooth LE source. Throughput: HCI advertising-report events of 200 encrypted BTHome
//! thermometers (sealed beforehand by the independent Python encoder `tests/sources/ble/adverts.py`, every advert
//! a new counter), each through what the source and the pipeline do with it in the daemon: the HCI
//! parse, the AD structures, AES-CCM opening with the device's bindkey, the counter check against the
//! replay marks, the registry's packet-id dedup and the state and field messages handed to the broker's
//! publish (the broker itself is the broker section's). The peer in the same run: the same path with the
//! same thermometers' plain adverts (no decryption, no counter). CPU: the release daemon replaying 200
//! adverts a second (`hci_replay`, 50 sensors, each advert a new reading published, `devices = "all"`)
//! against the same daemon whose replay is silent; `/proc/PID/stat` over the window.

use std::ffi::OsString;
use std::time::{Duration, Instant, SystemTime};

use sensorgate::ble::hci;
use sensorgate::ble::scan::adapter::Heard;
use sensorgate::ble::scan::listener::Listener;
use sensorgate::ble::scan::{BleSettings, BleStart};
use sensorgate::ble::Mac;
use sensorgate::crypto::keys::FrameKey;
use sensorgate::devices::{ReadingOutcome, Registry, RegistrySettings};
use sensorgate::replay::ReplayGuard;
use sensorgate::source::rtl433::DevicesMode;
use sensorgate::source::SourceEvent;

use crate::daemon::Daemon;
use crate::measure::Usage;

const DEVICES: usize = 200;
const RATE: u32 = 200;

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub encrypted_per_second: f64,
    pub plain_per_second: f64,
    pub adverts: usize,
    pub idle_cpu_percent: f64,
    pub busy_cpu_percent: f64,
    pub window_seconds: f64,
}

fn mac(device: usize) -> Mac {
    Mac([0xA4, 0xC1, 0x38, 0x00, (device >> 8) as u8, device as u8])
}

fn key(device: usize) -> [u8; 16] {
    let mut key = [0x5A; 16];
    key[0] = device as u8;
    key
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An HCI legacy report event from `mac` carrying `service_data` (from its UUID on).
fn event(mac: Mac, service_data: &[u8]) -> Vec<u8> {
    let mut data = vec![0x02, 0x01, 0x06, service_data.len() as u8 + 1, 0x16];
    data.extend_from_slice(service_data);
    let mut params = vec![0x02, 0x01, 0x00, 0x00];
    params.extend_from_slice(&mac.to_le());
    params.push(data.len() as u8);
    params.extend_from_slice(&data);
    params.push(0xC4);
    let mut event = vec![0x04, 0x3E, params.len() as u8];
    event.extend_from_slice(&params);
    event
}

/// The plaintext of advert `n` of a device: temperature and humidity.
fn plain(n: usize) -> Vec<u8> {
    let temperature = 2000 + (n % 500) as i16;
    let humidity = 4000 + (n % 900) as u16;
    let mut bytes = vec![0x02];
    bytes.extend_from_slice(&temperature.to_le_bytes());
    bytes.push(0x03);
    bytes.extend_from_slice(&humidity.to_le_bytes());
    bytes
}

/// `rounds` adverts per device: sealed (by the Python encoder) and plain (with a packet id).
fn adverts(rounds: usize) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut requests = String::new();
    let mut plain_events = Vec::new();
    let mut order = Vec::new();
    for n in 0..rounds {
        for device in 0..DEVICES {
            let counter = n + 1;
            requests.push_str(&format!(
                "bthome {} {} {counter} {}\n",
                hex(&key(device)),
                mac(device),
                hex(&plain(n))
            ));
            let mut service_data = vec![0xD2, 0xFC, 0x40, 0x00, counter as u8];
            service_data.extend_from_slice(&plain(n));
            plain_events.push(event(mac(device), &service_data));
            order.push(device);
        }
    }
    let sealed = sensorgate_testkit::python::run_script(
        "cryptography",
        "python3-cryptography",
        "tests/sources/ble/adverts.py",
        &[],
        &requests,
    );
    let sealed_events = sealed
        .lines()
        .zip(&order)
        .map(|(line, device)| {
            let bytes: Vec<u8> = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&line[i..i + 2], 16).expect("hex"))
                .collect();
            event(mac(*device), &bytes)
        })
        .collect();
    (sealed_events, plain_events)
}

/// One pass over `events` with a fresh source state and registry; the messages made.
fn pass(events: &[Vec<u8>], keyed: bool) -> usize {
    let keys = if keyed {
        (0..DEVICES)
            .map(|d| (mac(d), FrameKey::from_bytes(key(d))))
            .collect()
    } else {
        Default::default()
    };
    let start = BleStart {
        settings: BleSettings {
            devices: DevicesMode::All,
            ..BleSettings::default()
        },
        keys,
        marks: ReplayGuard::in_memory(),
    };
    let mut listener = Listener::new("ble", &start);
    let mut registry = Registry::new(RegistrySettings {
        base_topic: "sensorgate".into(),
        qos: 1,
        retain: true,
        field_topics: true,
        offline_after: Duration::from_secs(900),
        dedup_window: Duration::from_secs(10),
        max_fields: 64,
        devices: Vec::new(),
    });
    let now = Instant::now();
    let mut messages = 0;
    for bytes in events {
        for advert in hci::parse_event(bytes).unwrap_or_default() {
            let heard = Heard {
                advert,
                at: SystemTime::now(),
            };
            for event in listener.hear(&heard) {
                if let SourceEvent::Reading { reading, .. } = event {
                    if let ReadingOutcome::Publish { messages: m, .. } =
                        registry.on_reading(&reading, now)
                    {
                        messages += m.len();
                    }
                }
            }
        }
    }
    messages
}

fn rate(events: &[Vec<u8>], keyed: bool, round: Duration) -> f64 {
    assert!(
        pass(events, keyed) >= events.len(),
        "every advert published"
    );
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < round {
        pass(events, keyed);
        done += events.len();
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The daemon's CPU over `window` replaying `lines` every 5 ms (or a silent file).
async fn cpu(lines: &[String], window: Duration) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("capture.hci");
    std::fs::write(&file, lines.join("\n") + "\n# end\n").expect("write the capture");
    let body = format!(
        "[[source]]\nname = \"air\"\nkind = \"ble\"\nhci_replay = \"{}\"\nreplay_interval = \"{}ms\"\n\
         replay_loop = true\ndevices = \"all\"\nscan_watchdog = \"24h\"\n",
        file.display(),
        1000 / RATE
    );
    let mut daemon = Daemon::spawn(&body, &[] as &[(&str, OsString)]);
    daemon.wait_listening().await;
    tokio::time::sleep(Duration::from_secs(2)).await; // every sensor seen once
    let before = Usage::of(&[daemon.pid()]);
    tokio::time::sleep(window).await;
    let after = Usage::of(&[daemon.pid()]);
    daemon.stop().await;
    100.0 * (after.cpu_seconds - before.cpu_seconds) / window.as_secs_f64()
}

pub async fn run(quick: bool) -> Report {
    let rounds = if quick { 10 } else { 50 };
    let (sealed, plain_events) = adverts(rounds);
    let round = Duration::from_secs(if quick { 1 } else { 5 });
    let encrypted_per_second = rate(&sealed, true, round);
    let plain_per_second = rate(&plain_events, false, round);
    // 50 sensors, 8 packet ids each: every advert a new reading.
    let replay: Vec<String> = (0..8)
        .flat_map(|n| {
            (0..50).map(move |device| {
                let mut service_data = vec![0xD2, 0xFC, 0x40, 0x00, n as u8 + 1];
                service_data.extend_from_slice(&plain(n));
                hex(&event(mac(device), &service_data))
            })
        })
        .collect();
    let window = Duration::from_secs(if quick { 10 } else { 60 });
    let idle_cpu_percent = cpu(&[], window).await;
    let busy_cpu_percent = cpu(&replay, window).await;
    eprintln!(
        "  ble: {encrypted_per_second:.0} encrypted adverts/s, {plain_per_second:.0} plain; {idle_cpu_percent:.2} % CPU idle, {busy_cpu_percent:.2} % at {RATE}/s"
    );
    Report {
        encrypted_per_second,
        plain_per_second,
        adverts: sealed.len(),
        idle_cpu_percent,
        busy_cpu_percent,
        window_seconds: window.as_secs_f64(),
    }
}

/// The markdown section.
pub fn markdown(report: &Report) -> String {
    let extra = (report.busy_cpu_percent - report.idle_cpu_percent).max(0.0);
    let per_advert_us = extra / 100.0 * 1e6 / f64::from(RATE);
    format!(
        "## Bluetooth LE\n\n\
         Adverts through the source and the pipeline in one thread (HCI parse, AD structures, AES-CCM\n\
         with the bindkey, the counter against the replay marks, the registry's dedup, the state and field\n\
         messages for the broker): {} encrypted BTHome adverts of {DEVICES} thermometers, each a new\n\
         counter, sealed by the independent Python encoder; the peer is the same thermometers' plain\n\
         adverts. Target: 50,000 adverts/s.\n\n\
         | adverts | per second | vs plain |\n|---|---:|---:|\n\
         | encrypted (BTHome v2, AES-CCM) | {:.0} | {:.2} |\n\
         | plain (BTHome v2, packet id) | {:.0} | 1 |\n\n\
         The daemon's own CPU replaying {RATE} adverts/s (`hci_replay`, 50 sensors, every advert a new\n\
         reading published with its field topics) against the same daemon with a silent replay; {:.0} s\n\
         windows, `/proc/PID/stat`.\n\n\
         | adverts/s | daemon CPU |\n|---:|---:|\n| 0 | {:.2} % |\n| {RATE} | {:.2} % |\n\n\
         Per advert: {:.0} µs of the daemon's CPU.\n",
        report.adverts,
        report.encrypted_per_second,
        report.encrypted_per_second / report.plain_per_second.max(1.0),
        report.plain_per_second,
        report.window_seconds,
        report.idle_cpu_percent,
        report.busy_cpu_percent,
        per_advert_us,
    )
}
