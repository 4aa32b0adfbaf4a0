//! The Bluetooth LE source through the real daemon on 127.0.0.1, fed by its replay backend
//! (`hci_replay`): HCI LE Advertising Report events written here (bthome.io's example adverts, ble_monitor's
//! pvvx and atc1441 events, and encrypted adverts sealed by the independent Python encoder
//! `tests/sources/ble/adverts.py`). `readings`: what is published and what goes to the heard list; `security`:
//! replays (also across a clean stop and kill -9), plaintext from a keyed device, the wrong key, counter
//! resets; `supervision`: the scan watchdog and a lost adapter. Every wait is bounded.

mod readings;
mod security;
mod supervision;

use std::path::Path;
use std::time::Duration;

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt::{self, Received, Subscriber};
use sensorgate_testkit::python;
use serde_json::Value as Json;

/// bthome.io's example bindkey and MAC.
pub const IO_KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";
pub const IO_MAC: &str = "54:48:E6:8F:80:A5";

/// The daemon's configuration: one `ble` source named `air` replaying `replay` (an advert every 20 ms)
/// with more `source_keys`, stats every second; devices still to add.
pub fn config(replay: &Path, source_keys: &str) -> ConfigBuilder {
    ConfigBuilder::new("test-gw")
        .publish(r#"stats_interval = "1s""#)
        .ble_replay(
            "air",
            replay,
            &format!("replay_interval = \"20ms\"\n{source_keys}"),
        )
}

/// Starts the daemon on `dir` replaying `lines` (written to `dir/capture.hci`), the source with
/// `source_keys`, the devices those `with_devices` adds.
pub fn start(
    dir: &Path,
    lines: &[String],
    source_keys: &str,
    with_devices: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
) -> Daemon {
    let replay = dir.join("capture.hci");
    std::fs::write(&replay, lines.join("\n") + "\n").unwrap();
    Daemon::start(dir, &with_devices(config(&replay, source_keys)).toml())
}

/// A private key file holding `hex` in `dir`; its path.
pub fn key_file(dir: &Path, name: &str, hex: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.display().to_string()
}

/// An HCI LE Advertising Report (legacy, one report, public address, RSSI -60) from `mac` whose data
/// is the flags and one service-data AD structure (`service_data` from its UUID on, hex).
pub fn advert(mac: &str, service_data: &str) -> String {
    let service_data = hex(service_data);
    let mut data = vec![0x02, 0x01, 0x06, service_data.len() as u8 + 1, 0x16];
    data.extend_from_slice(&service_data);
    let mut params = vec![0x02, 0x01, 0x00, 0x00];
    let mut address = hex(&mac.replace(':', ""));
    address.reverse();
    params.extend_from_slice(&address);
    params.push(data.len() as u8);
    params.extend_from_slice(&data);
    params.push((-60i8) as u8);
    let mut event = vec![0x04, 0x3E, params.len() as u8];
    event.extend_from_slice(&params);
    event.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Service data sealed by `tests/sources/ble/adverts.py`, one per request line (`bthome KEY MAC COUNTER
/// PLAINHEX`, ...).
pub fn sealed(requests: &[String]) -> Vec<String> {
    let input: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let out = python::run_script(
        "cryptography",
        "python3-cryptography",
        "tests/sources/ble/adverts.py",
        &[],
        &input,
    );
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), requests.len(), "{out}");
    lines
}

pub fn json(message: &Received) -> Json {
    serde_json::from_slice(&message.payload).expect("JSON")
}

/// Waits (bounded) for a stats report whose `sources.air` satisfies `done`; returns it.
pub async fn stats_until(
    sub: &mut Subscriber,
    within: Duration,
    done: impl FnMut(&Json) -> bool,
) -> Json {
    sub.stats_until("air's stats", "/sources/air", within, done)
        .await
}

pub fn count(air: &Json, key: &str) -> u64 {
    air[key].as_u64().unwrap_or(0)
}

/// Waits (bounded) for the state of `device` satisfying `done`, retained or published later, through a
/// subscription of its own; returns it.
pub async fn state_until(
    addr: std::net::SocketAddr,
    device: &str,
    within: Duration,
    mut done: impl FnMut(&Json) -> bool,
) -> Json {
    let topic = format!("sensorgate/{device}");
    let mut sub = mqtt::subscribe(addr, &format!("state-{device}"), &topic, 1).await;
    let mut seen = Vec::new();
    let mut last = Json::Null;
    let found = sub
        .wait_for(within, &mut seen, |m| {
            last = json(m);
            done(&last)
        })
        .await;
    assert!(found.is_some(), "{topic} never matched; last: {last}");
    last
}
