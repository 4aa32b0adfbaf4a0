//! TLS listeners of the embedded broker with a real client (rumqttc over rustls) on 127.0.0.1: a listener
//! without client certificates and one that requires them side by side, and handshakes that run
//! concurrently, so 50 idle TCP connections do not keep a real client out.

use sensorgate_testkit::broker as support;
use sensorgate_testkit::certs;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use sensorgate::broker::{Broker, BrokerSettings, ListenerSettings, TlsFiles};

fn tls_settings(pki: &certs::TestPki) -> BrokerSettings {
    let tls = |client_ca_file| ListenerSettings {
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: Some(TlsFiles {
            cert_file: pki.server_cert_file.clone(),
            key_file: pki.server_key_file.clone(),
            client_ca_file,
        }),
    };
    BrokerSettings {
        listeners: vec![tls(None), tls(Some(pki.ca_file.clone()))],
        ..support::local_settings()
    }
}

/// Connects over TLS and waits (bounded) for CONNACK; returns the client and its event loop task, or the
/// connection error.
async fn tls_client(
    addr: SocketAddr,
    pki: &certs::TestPki,
    with_client_cert: bool,
    client_id: &str,
) -> Result<
    (
        AsyncClient,
        tokio::sync::mpsc::UnboundedReceiver<String>,
        tokio::task::JoinHandle<()>,
    ),
    String,
> {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: pki.ca_pem.clone().into_bytes(),
        alpn: None,
        client_auth: with_client_cert.then(|| {
            (
                pki.client_cert_pem.clone().into_bytes(),
                pki.client_key_pem.clone().into_bytes(),
            )
        }),
    }));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let connected = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| "no CONNACK within 5 s".to_string())?;
    connected?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                let _ = tx.send(String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    });
    Ok((client, rx, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_and_without_client_certificates_side_by_side() {
    let pki = certs::make_pki();
    let broker = Broker::start(&tls_settings(&pki), None).await.unwrap();
    let (open, mutual) = (broker.local_addrs()[0], broker.local_addrs()[1]);

    let (sub, mut rx, _sub_task) = tls_client(open, &pki, false, "tls-sub")
        .await
        .expect("server-auth TLS");
    sub.subscribe("tls/#", QoS::AtLeastOnce).await.unwrap();
    let refused = tls_client(mutual, &pki, false, "no-cert").await;
    assert!(
        refused.is_err(),
        "the mutual-TLS listener requires a client certificate"
    );
    let (publisher, _rx, _pub_task) = tls_client(mutual, &pki, true, "with-cert")
        .await
        .expect("client certificate accepted");
    // The subscription is in place once a probe round-trips.
    let mut got = None;
    for i in 0..20 {
        publisher
            .publish("tls/x", QoS::AtLeastOnce, false, format!("m{i}"))
            .await
            .unwrap();
        if let Ok(Some(text)) = tokio::time::timeout(Duration::from_millis(250), rx.recv()).await {
            got = Some(text);
            break;
        }
    }
    assert!(
        got.is_some_and(|t| t.starts_with('m')),
        "a message crossed from the mTLS to the TLS listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_idle_tcp_connections_do_not_delay_a_tls_client() {
    let pki = certs::make_pki();
    let broker = Broker::start(&tls_settings(&pki), None).await.unwrap();
    let addr = broker.local_addrs()[0];
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    let connected = tls_client(addr, &pki, false, "real").await;
    let took = started.elapsed();
    assert!(connected.is_ok(), "{:?}", connected.err());
    assert!(
        took < Duration::from_secs(1),
        "TLS client connected after {took:?}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_certificate_file_is_a_clear_start_error() {
    let pki = certs::make_pki();
    let mut settings = tls_settings(&pki);
    if let Some(tls) = settings.listeners[0].tls.as_mut() {
        tls.cert_file = pki.dir.path().join("missing.pem");
    }
    let error = Broker::start(&settings, None)
        .await
        .err()
        .expect("start fails");
    let text = error.to_string();
    assert!(text.contains("cert_file"), "{text}");
}
