//! What the source publishes: bthome.io's plain example, ble_monitor's pvvx (legacy report) and atc1441
//! (extended report) events, each under its `[[device]]` (a MAC written in any case), with Home
//! Assistant's field names; a BTHome sender without a `[[device]]` in `{base}/gateway/heard`, and a phone's
//! advert nowhere.

use std::time::Duration;

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::mqtt;

use super::{advert, json, start, IO_MAC};

/// The three sensors, their MACs written in three ways.
fn devices(config: ConfigBuilder) -> ConfigBuilder {
    config
        .device("thermo", "air", "54:48:e6:8f:80:a5")
        .device("kitchen", "air", "A4-C1-38-8D-18-B2")
        .device("balcony", "air", "A4:C1:38:BC:7C:4E")
}

/// ble_monitor's `test_atc_custom_v2_9` (pvvx, legacy report) and `test_atc_atc1441_ext` (atc1441,
/// extended report).
const PVVX_EVENT: &str =
    "043E2202010000B2188D38C1A41602010612161A18B2188D38C1A42B089011F70A43200FC2";
const ATC_EXTENDED_EVENT: &str =
    "043E2B0D011300004E7CBC38C1A40100FF7FB90000000000000000001110161A18A4C138BC7C4E0102284F0B6720";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_sensors_are_published_and_other_sensors_are_heard() {
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![
        // bthome.io: temperature 25.00 °C, humidity 50.55 %.
        advert(IO_MAC, "d2fc4002c40903bf13"),
        PVVX_EVENT.to_string(),
        ATC_EXTENDED_EVENT.to_string(),
        advert("11:22:33:44:55:66", "d2fc4002c40903bf13"),
        // A phone's service data (Battery Service, 0x180F): no sensor.
        advert("66:55:44:33:22:11", "0f1864"),
    ];
    let daemon = start(dir.path(), &lines, "replay_loop = true", devices);
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let latest = sub
        .collect_until(Duration::from_secs(20), |latest| {
            ["thermo", "kitchen", "balcony", "gateway/heard"]
                .iter()
                .all(|t| latest.contains_key(&format!("sensorgate/{t}")))
        })
        .await;
    let state = |device: &str| {
        json(
            latest
                .get(&format!("sensorgate/{device}"))
                .unwrap_or_else(|| panic!("no state of {device}: {:?}", latest.keys())),
        )
    };
    let thermo = state("thermo");
    assert_eq!(thermo["temperature"], 25.0, "{thermo}");
    assert_eq!(thermo["humidity"], 50.55, "{thermo}");
    let kitchen = state("kitchen");
    assert_eq!(kitchen["temperature"], 20.91, "{kitchen}");
    assert_eq!(kitchen["humidity"], 44.96, "{kitchen}");
    assert_eq!(kitchen["battery"], 67, "{kitchen}");
    assert_eq!(kitchen["voltage"], 2.807, "{kitchen}");
    let balcony = state("balcony");
    assert_eq!(balcony["temperature"], 25.8, "{balcony}");
    assert_eq!(balcony["humidity"], 40, "{balcony}");
    let heard = state("gateway/heard");
    let senders: Vec<&str> = heard["air"]
        .as_array()
        .unwrap_or_else(|| panic!("{heard}"))
        .iter()
        .filter_map(|s| s["address"].as_str())
        .collect();
    assert_eq!(senders, ["11:22:33:44:55:66"], "{heard}");
    assert!(
        !latest.keys().any(|t| t.contains("66:55")),
        "a phone is never published: {:?}",
        latest.keys()
    );
}
