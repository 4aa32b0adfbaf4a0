//! Admin actions: a command sent from the page's API goes through the commands path (the demo's
//! greenhouse relay switches, the result is published); a forgotten device's retained topics and Home
//! Assistant configs are cleared; and only an `http = "admin"` user may do either.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use crate::client::{exchange, get, Answer};
use crate::daemon::{admin_and_reader, config, demo_config, frame_from, start, wait_for};

fn post(page: std::net::SocketAddr, user: &str, body: &str) -> u16 {
    post_to(page, "/api/command", user, body).status
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

/// `POST path` with `user`'s login (password "wonderland") and `body`, as a script does it (with the
/// header admin requests need); the answer.
fn post_to(page: std::net::SocketAddr, path: &str, user: &str, body: &str) -> Answer {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:wonderland"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nAuthorization: Basic {token}\r\nX-Sensorgate-Request: test\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(page, request.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_forgets_a_device_its_retained_topics_and_discovery_configs_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let hash = sensorgate::broker::hash_password("wonderland").unwrap();
    let config = config(dir.path())
        .broker("allow_anonymous = true")
        .http("")
        .homeassistant("discovery = true");
    let mut running = start(dir.path(), admin_and_reader(config, &hash));
    let page = running.page;
    let mut watch = mqtt::subscribe(running.daemon.addr, "watch-forget", "#", 0).await;
    // An unknown node on the serial port: uart0-9, heard once (the simulator's devices go on).
    running.dongle.write(&frame_from(9, 1, true)).await;
    let state_topic = "sensorgate/uart0-9";
    let mut seen = Vec::new();
    let mut discovery: BTreeSet<String> = BTreeSet::new();
    let mut state_seen = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state_seen || discovery.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = watch
            .next(left)
            .await
            .unwrap_or_else(|| panic!("no state and discovery config for uart0-9: {seen:?}"));
        state_seen |= message.topic == state_topic && !message.payload.is_empty();
        if message.topic.starts_with("homeassistant/")
            && message.text().contains(&format!("\"{state_topic}\""))
        {
            discovery.insert(message.topic.clone());
        }
        seen.push(message.topic);
    }
    wait_for(Duration::from_secs(10), "uart0-9 in the API", || {
        get(page, "/api/devices", Some(("alice", "wonderland")))
            .body
            .contains("\"name\":\"uart0-9\"")
            .then_some(())
    });

    let body = r#"{"device": "uart0-9"}"#;
    assert_eq!(post_to(page, "/api/forget", "alice", body).status, 403);
    assert_eq!(post_to(page, "/api/forget", "root", "{}").status, 400);
    assert_eq!(
        post_to(page, "/api/forget", "root", r#"{"device": "nobody"}"#).status,
        404
    );
    let answer = post_to(page, "/api/forget", "root", body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(answer["forgotten"], "uart0-9");

    // Every retained topic of the device is cleared: availability, state, each discovery config (the
    // ones seen above and the rest of its entities), as many as the answer counts.
    let cleared_topics = answer["cleared_topics"].as_u64().unwrap() as usize;
    let mut to_clear: BTreeSet<String> = discovery.clone();
    to_clear.insert(state_topic.to_string());
    to_clear.insert(format!("{state_topic}/availability"));
    let emptied_of =
        |got: &std::collections::BTreeMap<String, mqtt::Received>| -> BTreeSet<String> {
            got.values()
                .filter(|m| m.payload.is_empty())
                .map(|m| m.topic.clone())
                .collect()
        };
    let cleared = watch
        .collect_until(Duration::from_secs(10), |got| {
            let emptied = emptied_of(got);
            to_clear.is_subset(&emptied) && emptied.len() >= cleared_topics
        })
        .await;
    let emptied = emptied_of(&cleared);
    assert!(
        to_clear.is_subset(&emptied),
        "not cleared: {:?}",
        to_clear.difference(&emptied).collect::<Vec<_>>()
    );
    assert_eq!(emptied.len(), cleared_topics, "{emptied:?}");
    for topic in &emptied {
        assert!(
            topic.starts_with(state_topic) || topic.starts_with("homeassistant/"),
            "{topic} is not uart0-9's"
        );
    }
    let devices = get(page, "/api/devices", Some(("alice", "wonderland"))).body;
    assert!(!devices.contains("\"uart0-9\""), "{devices}");
    assert!(devices.contains("\"sim-1\""), "{devices}");
    // Counted in {base}/gateway/stats.
    let mut stats = mqtt::subscribe(
        running.daemon.addr,
        "watch-stats",
        "sensorgate/gateway/stats",
        0,
    )
    .await;
    let mut stats_seen = Vec::new();
    let counted = stats
        .wait_for(Duration::from_secs(10), &mut stats_seen, |m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload)
                .is_ok_and(|s| s["devices"]["forgotten"] == 1)
        })
        .await;
    assert!(counted.is_some(), "{stats_seen:?}");
    assert!(running
        .daemon
        .log()
        .contains("device \"uart0-9\" forgotten"));
    running.daemon.stop();
}
