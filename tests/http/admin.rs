//! Admin actions: a command sent from the page's API goes through the commands path (the demo's
//! greenhouse relay switches, the result is published), and only an `http = "admin"` user may send one.

use std::time::Duration;

use base64::Engine;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use crate::client::exchange;
use crate::daemon::{demo_config, wait_for};

fn post(page: std::net::SocketAddr, user: &str, body: &str) -> u16 {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:wonderland"));
    let request = format!(
        "POST /api/command HTTP/1.1\r\nAuthorization: Basic {token}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(page, request.as_bytes()).status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_switches_the_demo_relay_through_the_commands_path() {
    let dir = tempfile::tempdir().unwrap();
    let hash = sensorgate::broker::hash_password("wonderland").unwrap();
    let users = format!(
        "[[broker.user]]\nname = \"root\"\npassword_hash = \"{hash}\"\nhttp = \"admin\"\n\n\
         [[broker.user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\nhttp = \"read\"\n"
    );
    let daemon = Daemon::start(dir.path(), &demo_config(&users));
    daemon.wait_for_log("status page on http://", 1, Duration::from_secs(10));
    let log = daemon.log();
    let page: std::net::SocketAddr = log
        .split("status page on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in\n{log}"));
    let mut results =
        mqtt::subscribe(daemon.addr, "watch-results", "sensorgate/greenhouse/#", 0).await;
    // The greenhouse node is heard (the radio sends commands to heard or configured devices).
    wait_for(Duration::from_secs(20), "greenhouse heard", || {
        crate::client::get(page, "/api/devices", None)
            .body
            .contains("\"name\":\"greenhouse\"")
            .then_some(())
    });
    let command = r#"{"device": "greenhouse", "command": {"digital_output_1": 1}}"#;
    assert_eq!(post(page, "alice", command), 403, "alice may only read");
    assert_eq!(post(page, "root", "not json"), 400);
    assert_eq!(
        post(page, "root", r#"{"device": "a/b", "command": 1}"#),
        400
    );
    assert_eq!(post(page, "root", command), 202);
    let mut seen = Vec::new();
    let result = results
        .wait_for(Duration::from_secs(20), &mut seen, |m| {
            m.topic == "sensorgate/greenhouse/set/result"
        })
        .await
        .unwrap_or_else(|| panic!("no result: {seen:?}"));
    let result: serde_json::Value = serde_json::from_slice(&result.payload).unwrap();
    assert_ne!(result["status"], "refused", "{result}");
    // The simulated node switched its relay and reports it.
    let state = results
        .wait_for(Duration::from_secs(20), &mut seen, |m| {
            m.topic == "sensorgate/greenhouse"
                && serde_json::from_slice::<serde_json::Value>(&m.payload)
                    .is_ok_and(|s| s["digital_out_1"] == 1)
        })
        .await;
    assert!(state.is_some(), "the relay did not follow: {seen:?}");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}
