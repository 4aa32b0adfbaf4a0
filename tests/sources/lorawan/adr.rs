//! Network-side ADR through the real daemon: the Python ABP meter with `adr = true` sets the ADR bit and
//! is heard at SF10 with 7 dB of SNR; once 20 uplinks are in its history it gets a LinkADRReq in an empty
//! unconfirmed downlink (DR5, TXPower 1, EU868 channels 0-7, NbTrans 1) that it parses after checking the
//! MIC, answers LinkADRAns accepted at SF7, and no further request comes. Without `adr = true` the same
//! uplinks get none. Every wait is bounded.

use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use super::{device_json, free_udp_port, network, wait_counters, write_keys, WAIT};

/// Uplinks `fcnts` of the meter with the ADR bit at `datr` and `lsnr`, with `fopts` on the first; a
/// short wait for each window but the last (a late downlink still shows in the next window).
fn adr_uplinks(
    fcnts: std::ops::RangeInclusive<u32>,
    datr: &str,
    lsnr: f64,
    fopts: &str,
) -> Vec<serde_json::Value> {
    let last = *fcnts.end();
    let first = *fcnts.start();
    fcnts
        .map(|fcnt| {
            serde_json::json!({
                "fcnt": fcnt,
                "adr": true,
                "datr": datr,
                "lsnr": lsnr,
                "fopts": if fcnt == first { fopts } else { "" },
                "wait": if fcnt == last { 1.5 } else { 0.3 },
            })
        })
        .collect()
}

/// The meter's windows after `uplinks`.
async fn windows(
    dir: &std::path::Path,
    udp: u16,
    uplinks: Vec<serde_json::Value>,
) -> Vec<serde_json::Value> {
    let report = device_json(
        "downlink",
        dir,
        udp,
        serde_json::json!({ "uplinks": uplinks }),
    )
    .await;
    report["windows"].as_array().unwrap().clone()
}

fn start(dir: &std::path::Path, udp: u16, meter_keys: &str) -> Daemon {
    write_keys(dir);
    let config = super::devices(
        network(udp, ""),
        dir,
        "",
        &format!("payload = \"lpp\"\n{meter_keys}"),
    );
    let daemon = Daemon::start(dir, &config.toml());
    daemon.wait_for_log("LoRaWAN packet forwarders: listening", 1, WAIT);
    daemon
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_adr_and_margin_is_moved_to_dr5_and_answers_once() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let daemon = start(dir.path(), udp, "adr = true");
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;

    // SF10 (DR2) at 7 dB: 7 + 15 - 10 = 12 dB of margin, four 3 dB steps.
    let history = windows(dir.path(), udp, adr_uplinks(1..=20, "SF10BW125", 7.0, "")).await;
    for (i, window) in history.iter().take(19).enumerate() {
        assert!(
            window.is_null(),
            "uplink {}: history not full: {window}",
            i + 1
        );
    }
    let request = &history[19];
    assert!(
        request.is_object(),
        "no LinkADRReq after 20 uplinks: {history:?}"
    );
    assert_eq!(request["fport"], serde_json::Value::Null, "{request}");
    assert_eq!(request["confirmed"], false, "{request}");
    assert_eq!(
        request["link_adr_req"],
        serde_json::json!([{ "data_rate": 5, "tx_power": 1, "ch_mask": 255, "ch_mask_cntl": 0, "nb_trans": 1 }]),
        "{request}"
    );
    // In RX1 of the SF10 uplink: SF10.
    assert_eq!(request["datr"], "SF10BW125", "{request}");

    // The device takes it: LinkADRAns with its three ACK bits, now at SF7 (DR5) with 4 dB (4 + 7.5 - 10
    // = 1.5 dB, no step). Nothing more is asked.
    let after = windows(
        dir.path(),
        udp,
        adr_uplinks(21..=25, "SF7BW125", 4.0, "0307"),
    )
    .await;
    assert!(after.iter().all(serde_json::Value::is_null), "{after:?}");
    let counters = wait_counters(&mut stats, "25 uplinks", |c| c["uplinks"] == 25).await;
    assert_eq!(counters["adr_requests"], 1, "{counters}");
    assert_eq!(counters["adr_accepted"], 1, "{counters}");
    assert_eq!(counters["adr_refused"], 0, "{counters}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_adr_configured_never_gets_a_link_adr_req() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let daemon = start(dir.path(), udp, "");
    let mut stats = mqtt::subscribe(daemon.addr, "stats", "sensorgate/gateway/stats", 0).await;
    let all = windows(dir.path(), udp, adr_uplinks(1..=22, "SF10BW125", 7.0, "")).await;
    assert!(all.iter().all(serde_json::Value::is_null), "{all:?}");
    let counters = wait_counters(&mut stats, "22 uplinks", |c| c["uplinks"] == 22).await;
    assert_eq!(counters["adr_requests"], 0, "{counters}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}
