//! Encrypted devices through the daemon: bthome.io's encrypted example and ble_monitor's encrypted pvvx
//! event open with their bindkeys; a repeat of the last advert is a duplicate, an older counter is
//! `replayed`, plaintext from a keyed device `plaintext_refused`, an advert sealed with another key
//! `auth_failed`, and none of them changes the state. The marks survive a clean stop exactly and kill -9
//! with the restart margin; a battery change (the counter back at 1) is accepted after
//! `counter_reset_after` consecutive adverts.

use std::time::Duration;

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::mqtt;

use super::{advert, count, key_file, sealed, start, state_until, stats_until, IO_KEY, IO_MAC};

/// bthome.io's encrypted example: counter 0x33221100, temperature 25.06 °C, humidity 50.55 %.
const IO_ENCRYPTED: &str = "d2fc41a47266c95f730011223378237214";
/// ble_monitor's `test_atc_custom_encrypted` event and bindkey: 23.45 °C, 41.73 %, 61 %.
const PVVX_ENCRYPTED_EVENT: &str = "043e1b02010000b2188d38c1a40f0e161a1811d603fbfa7b6dfb1e26fde2";
const PVVX_KEY: &str = "b9ea895fac7eea6d30532432a516f3a3";

/// The two encrypted sensors, their keys written to files in `dir`.
fn keyed_devices(config: ConfigBuilder, dir: &std::path::Path) -> ConfigBuilder {
    let thermo = key_file(dir, "thermo.key", IO_KEY);
    let kitchen = key_file(dir, "kitchen.key", PVVX_KEY);
    config
        .device_keys(
            "thermo",
            "air",
            &format!("address = {IO_MAC:?}\nkey_file = {thermo:?}"),
        )
        .device_keys(
            "kitchen",
            "air",
            &format!("address = \"A4:C1:38:8D:18:B2\"\nkey_file = {kitchen:?}"),
        )
}

/// `bthome IO_KEY IO_MAC counter plain`, sealed, as an advert line.
fn io_advert(counter: u32, plain: &str) -> String {
    let request = format!("bthome {IO_KEY} {IO_MAC} {counter} {plain}");
    advert(IO_MAC, &sealed(&[request])[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_plaintext_spoofs_and_the_wrong_key_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let wrong_key = sealed(&[format!(
        "bthome 000102030405060708090a0b0c0d0e0f {IO_MAC} 857870600 02d007"
    )]);
    let lines = vec![
        advert(IO_MAC, IO_ENCRYPTED),
        PVVX_ENCRYPTED_EVENT.to_string(),
        advert(IO_MAC, IO_ENCRYPTED),
        io_advert(857_870_000, "02e803"),
        advert(IO_MAC, "d2fc4002ac26"),
        advert(IO_MAC, &wrong_key[0]),
        io_advert(857_870_593, "021008"),
    ];
    let daemon = start(dir.path(), &lines, "", |c| keyed_devices(c, dir.path()));
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let air = stats_until(&mut sub, Duration::from_secs(20), |air| {
        count(air, "readings") >= 3
            && count(air, "replayed") >= 1
            && count(air, "plaintext_refused") >= 1
            && count(air, "auth_failed") >= 1
    })
    .await;
    assert_eq!(count(&air, "replayed"), 1, "the repeat is no replay: {air}");
    assert_eq!(count(&air, "plaintext_refused"), 1, "{air}");
    assert_eq!(count(&air, "auth_failed"), 1, "{air}");
    assert_eq!(count(&air, "readings"), 3, "{air}");
    let thermo = state_until(daemon.addr, "thermo", Duration::from_secs(10), |_| true).await;
    assert_eq!(
        thermo["temperature"], 20.64,
        "only authentic new adverts: {thermo}"
    );
    assert_eq!(thermo["humidity"], 50.55, "{thermo}");
    let kitchen = state_until(daemon.addr, "kitchen", Duration::from_secs(10), |_| true).await;
    assert_eq!(kitchen["temperature"], 23.45, "{kitchen}");
    assert_eq!(kitchen["humidity"], 41.73, "{kitchen}");
    daemon.wait_for_log(
        "a plaintext bthome advert from a device with a bindkey",
        1,
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_a_clean_stop_exactly_and_kill_9_with_the_margin() {
    let dir = tempfile::tempdir().unwrap();
    let devices = |c| keyed_devices(c, dir.path());
    let first = start(dir.path(), &[io_advert(1000, "02e803")], "", devices);
    state_until(first.addr, "thermo", Duration::from_secs(20), |s| {
        s["temperature"] == 10.0
    })
    .await;
    let (status, _) = first.stop();
    assert!(status.success(), "{status:?}");

    // After a clean stop, the mark is exact: 1000 again is the last advert repeated (a duplicate), 999
    // a replay, 1001 new.
    let lines = [
        io_advert(1000, "02e803"),
        io_advert(999, "02e703"),
        io_advert(1001, "024c04"),
    ];
    let second = start(dir.path(), &lines, "", devices);
    let mut sub = mqtt::subscribe(second.addr, "watch", "sensorgate/#", 1).await;
    let air = stats_until(&mut sub, Duration::from_secs(20), |air| {
        count(air, "readings") >= 1
    })
    .await;
    assert_eq!(count(&air, "replayed"), 1, "{air}");
    assert_eq!(count(&air, "duplicates"), 1, "{air}");
    state_until(second.addr, "thermo", Duration::from_secs(10), |s| {
        s["temperature"] == 11.0
    })
    .await;
    drop(sub);
    second.kill();

    // After kill -9, every counter up to the stored mark plus 32 is refused.
    let lines = [
        io_advert(1001, "024c04"),
        io_advert(1020, "02f803"),
        io_advert(1040, "021004"),
    ];
    let third = start(dir.path(), &lines, "", devices);
    let mut sub = mqtt::subscribe(third.addr, "watch", "sensorgate/#", 1).await;
    let air = stats_until(&mut sub, Duration::from_secs(20), |air| {
        count(air, "readings") >= 1
    })
    .await;
    assert_eq!(count(&air, "replayed"), 2, "{air}");
    state_until(third.addr, "thermo", Duration::from_secs(10), |s| {
        s["temperature"] == 10.4
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battery_change_is_accepted_after_counter_reset_after_adverts() {
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![
        io_advert(5000, "02e803"),
        io_advert(1, "026400"),
        io_advert(2, "02c800"),
        io_advert(3, "022c01"),
    ];
    let daemon = start(dir.path(), &lines, "counter_reset_after = 3", |c| {
        keyed_devices(c, dir.path())
    });
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let air = stats_until(&mut sub, Duration::from_secs(20), |air| {
        count(air, "readings") >= 2
    })
    .await;
    assert_eq!(count(&air, "replayed"), 2, "{air}");
    state_until(daemon.addr, "thermo", Duration::from_secs(10), |s| {
        s["temperature"] == 3.0
    })
    .await;
    daemon.wait_for_log("counter starts anew at 3", 1, Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_battery_change_is_accepted_after_the_reset_counter_command() {
    let dir = tempfile::tempdir().unwrap();
    let devices = |c| keyed_devices(c, dir.path());
    let first = start(dir.path(), &[io_advert(5000, "02e803")], "", devices);
    state_until(first.addr, "thermo", Duration::from_secs(20), |s| {
        s["temperature"] == 10.0
    })
    .await;
    let (status, _) = first.stop();
    assert!(status.success(), "{status:?}");

    // The sensor's battery was changed: it counts from 7. The adapter (the replay file) is missing
    // while the command is given, then comes back.
    let replay = dir.path().join("after.hci");
    let config = super::config(&replay, "").broker(r#"anonymous_write = ["sensorgate/+/set"]"#);
    let config = keyed_devices(config, dir.path()).toml();
    let second = sensorgate_testkit::daemon::Daemon::start(dir.path(), &config);
    let mut sub = mqtt::subscribe(second.addr, "watch", "sensorgate/thermo/set/result", 1).await;
    let published = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &second.addr.port().to_string()])
        .args([
            "-t",
            "sensorgate/thermo/set",
            "-m",
            r#"{"reset_counter": true}"#,
        ])
        .status()
        .expect("mosquitto_pub (Debian: mosquitto-clients)");
    assert!(published.success());
    let mut seen = Vec::new();
    let result = sub
        .wait_for(Duration::from_secs(20), &mut seen, |m| {
            super::json(m)["status"] != "queued"
        })
        .await
        .expect("a result after queued");
    let result = super::json(&result);
    assert_eq!(result["status"], "sent", "{result}");
    std::fs::write(&replay, io_advert(7, "022c01") + "\n").unwrap();
    state_until(second.addr, "thermo", Duration::from_secs(30), |s| {
        s["temperature"] == 3.0
    })
    .await;
    second.wait_for_log("counter is reset by command", 1, Duration::from_secs(5));
}
