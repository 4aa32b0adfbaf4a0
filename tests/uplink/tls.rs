//! The uplink against a real mosquitto over TLS: the right CA connects and forwards, a wrong CA and an
//! expired certificate are refused with an error naming the peer and the reason, mutual TLS, and
//! username/password logins.

use sensorgate_testkit::mosquitto;

use std::path::{Path, PathBuf};
use std::time::Duration;

use mosquitto::{BrokerConfig, Certs, Mosquitto, Subscriber, TlsListener};
use sensorgate::model::Message;
use sensorgate::uplink::{SpoolSettings, SyncPolicy, Uplink, UplinkSettings};

use crate::running::{self, Running};

const WAIT: Duration = Duration::from_secs(15);

fn settings(url: String, state_dir: &Path) -> UplinkSettings {
    let spool = SpoolSettings {
        max_bytes: 1 << 20,
        max_age: Duration::from_secs(86_400),
        sync: SyncPolicy::Every(Duration::from_millis(100)),
        segment_bytes: 64 * 1024,
    };
    UplinkSettings {
        allow_plaintext: false,
        max_inflight: 16,
        protocol: Default::default(),
        ..running::settings(url, "gw-tls-test", state_dir, spool)
    }
}

impl Running {
    /// Waits (bounded) until the uplink reports a connection error, and returns it.
    async fn first_error(&self) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let snap = self.stats.snapshot();
            if let Some(error) = snap["last_error"].as_str() {
                assert_eq!(snap["connects"], 0, "it must not have connected: {snap}");
                return error.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no error reported: {snap}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn reading(topic: &str, payload: &str) -> Message {
    Message {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        qos: 1,
        retain: false,
    }
}

fn tls_broker(certs: &Certs, expired: bool, client_ca: Option<PathBuf>) -> BrokerConfig {
    let (cert, key) = if expired {
        (certs.expired_cert.clone(), certs.expired_key.clone())
    } else {
        (certs.server_cert.clone(), certs.server_key.clone())
    };
    BrokerConfig {
        tls: Some(TlsListener {
            cert,
            key,
            require_client_ca: client_ca,
        }),
        ..BrokerConfig::default()
    }
}

/// Proves a working link: `online` on CONNACK, then a reading forwarded under the prefix.
async fn assert_forwards(broker: &Mosquitto, running: &Running) {
    let mut sub = Subscriber::connect(broker.addr(), "checker", "site/#", 1, false).await;
    sub.expect("site/sg/gateway/availability", "online", WAIT)
        .await;
    running
        .input
        .try_send(reading("sg/kitchen", "{\"t\":21.5}"))
        .expect("input open");
    sub.expect("site/sg/kitchen", "{\"t\":21.5}", WAIT).await;
}

#[tokio::test]
async fn the_right_ca_connects_and_forwards() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path());
    let broker = Mosquitto::start(tls_broker(&certs, false, None));
    let mut s = settings(broker.tls_url(), &dir.path().join("state"));
    s.ca_file = Some(certs.ca.clone());
    let running = Running::start(s);
    assert_forwards(&broker, &running).await;
    running.stop(WAIT).await;
}

#[tokio::test]
async fn a_wrong_ca_is_refused_naming_peer_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path());
    let broker = Mosquitto::start(tls_broker(&certs, false, None));
    let mut s = settings(broker.tls_url(), &dir.path().join("state"));
    s.ca_file = Some(certs.wrong_ca.clone());
    let running = Running::start(s);
    let error = running.first_error().await;
    let peer = format!("127.0.0.1:{}", broker.tls_port.unwrap());
    assert!(error.contains(&peer), "{error}");
    assert!(error.contains("not signed by a trusted CA"), "{error}");
    running.stop(WAIT).await;
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path());
    let broker = Mosquitto::start(tls_broker(&certs, true, None));
    let mut s = settings(broker.tls_url(), &dir.path().join("state"));
    s.ca_file = Some(certs.ca.clone());
    let running = Running::start(s);
    let error = running.first_error().await;
    assert!(error.contains("certificate has expired"), "{error}");
    running.stop(WAIT).await;
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path());
    let broker = Mosquitto::start(tls_broker(&certs, false, Some(certs.ca.clone())));

    let mut without = settings(broker.tls_url(), &dir.path().join("state-a"));
    without.ca_file = Some(certs.ca.clone());
    without.client_id = "gw-no-cert".into();
    let refused = Running::start(without);
    let error = refused.first_error().await;
    // TLS 1.3 finishes the client's side of the handshake before the server checks for a certificate,
    // so the refusal arrives either as the server's alert or as a reset of the connection: both name
    // the peer.
    assert!(
        error.contains("TLS with 127.0.0.1:") || error.starts_with("127.0.0.1:"),
        "{error}"
    );
    refused.stop(WAIT).await;

    let mut with = settings(broker.tls_url(), &dir.path().join("state-b"));
    with.ca_file = Some(certs.ca.clone());
    with.cert_file = Some(certs.client_cert.clone());
    with.key_file = Some(certs.client_key.clone());
    let running = Running::start(with);
    assert_forwards(&broker, &running).await;
    running.stop(WAIT).await;
}

#[tokio::test]
async fn username_and_password_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path());
    let mut config = tls_broker(&certs, false, None);
    config.users = vec![("gateway".into(), "s3cret pass".into())];
    let broker = Mosquitto::start(config);

    let wrong = dir.path().join("wrong-password");
    std::fs::write(&wrong, "nope\n").unwrap();
    let mut s = settings(broker.tls_url(), &dir.path().join("state-a"));
    s.ca_file = Some(certs.ca.clone());
    s.username = Some("gateway".into());
    s.password_file = Some(wrong);
    let refused = Running::start(s);
    let error = refused.first_error().await;
    assert!(error.contains("refused the connection"), "{error}");
    refused.stop(WAIT).await;

    let right = dir.path().join("password");
    std::fs::write(&right, "s3cret pass\n").unwrap();
    let mut s = settings(broker.tls_url(), &dir.path().join("state-b"));
    s.ca_file = Some(certs.ca.clone());
    s.username = Some("gateway".into());
    s.password_file = Some(right);
    let running = Running::start(s);
    assert_forwards(&broker, &running).await;
    running.stop(WAIT).await;
}

#[tokio::test]
async fn plaintext_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings("mqtt://127.0.0.1:1".into(), dir.path());
    let error = Uplink::open(s).unwrap_err().to_string();
    assert!(error.contains("allow_plaintext"), "{error}");
}
