//! A scan that never stops silently: silence for `scan_watchdog` restarts the scan (counted as the
//! source's `restarts`), and a lost adapter (the replay file's `lost` line) takes its devices offline
//! with their wills, and is reopened with backoff, their readings flowing again.

use std::time::Duration;

use sensorgate_testkit::config::ConfigBuilder;
use sensorgate_testkit::mqtt;

use super::{advert, count, start, stats_until, IO_MAC};

/// bthome.io's example sensor.
fn thermo(config: ConfigBuilder) -> ConfigBuilder {
    config.device("thermo", "air", "54:48:E6:8F:80:A5")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_restarts_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [advert(IO_MAC, "d2fc4002c40903bf13")];
    let daemon = start(dir.path(), &lines, "scan_watchdog = \"1s\"", thermo);
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    // A stats message may catch the source between a restart's stop and start ("restarting"): wait for
    // one that shows it running again after two restarts.
    let air = stats_until(&mut sub, Duration::from_secs(20), |air| {
        count(air, "restarts") >= 2 && air["state"] == "running"
    })
    .await;
    assert_eq!(count(&air, "link_losses"), 0, "{air}");
    daemon.wait_for_log(
        "no advertisement for 1s: restarting the scan",
        1,
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_adapter_publishes_the_wills_and_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        advert(IO_MAC, "d2fc40000102c409"),
        "lost".to_string(),
        advert(IO_MAC, "d2fc40000202ca09"),
    ];
    let daemon = start(dir.path(), &lines, "", thermo);
    let mut sub = mqtt::subscribe(daemon.addr, "watch", "sensorgate/#", 1).await;
    let within = Duration::from_secs(20);
    sub.expect("sensorgate/thermo/availability", "offline", within)
        .await;
    sub.expect("sensorgate/thermo/availability", "online", within)
        .await;
    let air = stats_until(&mut sub, within, |air| count(air, "readings") >= 2).await;
    assert_eq!(count(&air, "link_losses"), 1, "{air}");
    assert_eq!(air["up"], true, "{air}");
    daemon.wait_for_log(
        "the Bluetooth adapter is lost: the replay file says `lost` at line 2",
        1,
        within,
    );
}
