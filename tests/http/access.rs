//! Logins: the broker's `[[broker.user]]` over HTTP Basic with their `http` right; a wrong password is
//! refused (and counted), a user without the right is forbidden, `/healthz` stays open; and
//! check-config refuses `anonymous = "read"` on an address other machines can reach, at its line.

use sensorgate_testkit::daemon::refused_by_check_config_and_run;

use std::time::Duration;

use base64::Engine;

use crate::client::{exchange, get, get_page};
use crate::daemon::{config, start};
use sensorgate_testkit::config::ConfigBuilder;

/// The page for logins only: `alice` reads it, `bob` (MQTT reader) has no right to it, `root` is its
/// admin; all with password `hash`.
fn users(dir: &std::path::Path, hash: &str) -> ConfigBuilder {
    config(dir)
        .http(r#"anonymous = "none""#)
        .user("alice", hash, "read = [\"#\"]\nhttp = \"read\"")
        .user("bob", hash, "read = [\"#\"]")
        .user("root", hash, "http = \"admin\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_required_and_a_wrong_password_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hash = sensorgate::broker::hash_password("wonderland").unwrap();
    let running = start(dir.path(), users(dir.path(), &hash));
    let page = running.page;

    let anonymous = get(page, "/", None);
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"sensorgate\", charset=\"UTF-8\"")
    );
    assert_eq!(get(page, "/metrics", None).status, 401);
    assert_eq!(get(page, "/api/devices", None).status, 401);
    assert_eq!(get(page, "/", Some(("alice", "guess"))).status, 401);
    assert_eq!(get(page, "/", Some(("mallory", "wonderland"))).status, 401);
    assert_eq!(
        get(page, "/", Some(("bob", "wonderland"))).status,
        403,
        "bob has no http right"
    );
    let alice = get_page(page, Some(("alice", "wonderland")));
    assert_eq!(alice.status, 200);
    assert_eq!(alice.header("content-encoding"), Some("gzip"));
    assert_eq!(alice.header("vary"), Some("Accept-Encoding"));
    assert!(alice.body.contains("<title>sensorgate</title>"));
    // A client that takes no gzip is told how to ask.
    let plain = get(page, "/", Some(("alice", "wonderland")));
    assert_eq!(plain.status, 406, "{}", plain.body);
    assert!(
        plain.body.contains("Accept-Encoding: gzip"),
        "{}",
        plain.body
    );
    assert_eq!(
        get(page, "/api/reload", Some(("alice", "wonderland"))).status,
        405,
        "reload is a POST"
    );
    // Reloading is for admins; it takes the SIGHUP path (the file is validated, then applied).
    let post = |user: &str| {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:wonderland"));
        let request = format!(
            "POST /api/reload HTTP/1.1\r\nAuthorization: Basic {token}\r\nX-Sensorgate-Request: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        exchange(page, request.as_bytes()).status
    };
    assert_eq!(post("alice"), 403, "alice may only read");
    assert_eq!(post("root"), 202);
    running
        .daemon
        .wait_for_log("configuration reloaded from", 1, Duration::from_secs(10));
    let healthz = get(page, "/healthz", None);
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "ok\n"));

    let metrics = get(page, "/metrics", Some(("alice", "wonderland"))).body;
    let refused_logins = metrics
        .lines()
        .find(|l| l.starts_with("sensorgate_http_refused_total{reason=\"login\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no login refusals in\n{metrics}"));
    assert_eq!(refused_logins, 7, "{metrics}");
    let log = running.daemon.log();
    assert!(!log.contains("wonderland"), "a password reached the log");
    running.daemon.stop();
}

#[test]
fn check_config_refuses_anonymous_reading_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(
        &path,
        "[gateway]\nstate_dir = \"/tmp\"\n\n[http]\nbind = \"0.0.0.0:8088\"\nanonymous = \"read\"\n",
    )
    .unwrap();
    for (command, said) in refused_by_check_config_and_run(&path) {
        let expected = format!("{}:6:13: ", path.display());
        assert!(said.contains(&expected), "{command}: {said}");
        assert!(said.contains("loopback"), "{command}: {said}");
    }
}
