//! The pipeline runs on tokio's clock: with the test clock paused, a device's silence deadline and the
//! stats interval pass in virtual time, so liveness and stats are tested in milliseconds instead of
//! waiting the real `offline_after`. The broker is the real embedded one (in-process, on 127.0.0.1:0),
//! read through its retained store.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sensorgate::broker::Broker;
use sensorgate::decode::{HeaderFormat, PacketDecoder, PayloadFormat};
use sensorgate::devices::{Registry, RegistrySettings};
use sensorgate::frame::crc::CrcMode;
use sensorgate::model::Packet;
use sensorgate::pipeline::Pipeline;
use sensorgate::source::SourceEvent;
use sensorgate_testkit::broker as support;
use tokio::sync::mpsc;

const OFFLINE_AFTER: Duration = Duration::from_secs(15 * 60);

fn pipeline(state_dir: &std::path::Path) -> Pipeline {
    Pipeline {
        codecs: HashMap::new(),
        decoders: HashMap::from([(
            "uart0".to_string(),
            PacketDecoder {
                crc: CrcMode::None,
                header: HeaderFormat::None,
                payload: PayloadFormat::Json,
            },
        )]),
        registry: Registry::new(RegistrySettings {
            base_topic: "sg".into(),
            qos: 1,
            retain: true,
            field_topics: false,
            offline_after: OFFLINE_AFTER,
            dedup_window: Duration::from_secs(10),
            max_fields: 64,
            devices: Vec::new(),
        }),
        base_topic: "sg".into(),
        stats_interval: Duration::from_secs(60),
        uplink_stats: None,
        command_stats: None,
        lorawan_stats: None,
        heartbeat: None,
        devices_online: Arc::new(AtomicUsize::new(0)),
        discovery: None,
        state_dir: state_dir.to_path_buf(),
        live: None,
        http_stats: None,
        forget: None,
    }
}

async fn availability(broker: &Broker, device: &str) -> Option<String> {
    let topic = format!("sg/{device}/availability");
    broker
        .retained_messages()
        .await
        .into_iter()
        .find(|m| m.topic == topic)
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
}

/// Yields to the runtime until `check` holds (bounded in steps; virtual time does not pass while the
/// other tasks have work).
async fn settle<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return true;
        }
        tokio::task::yield_now().await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn a_silent_device_goes_offline_after_offline_after_in_virtual_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(
        Broker::start(&support::local_settings(), None)
            .await
            .unwrap(),
    );
    let (events, events_rx) = mpsc::channel(16);
    let (_updates, updates_rx) = mpsc::channel(1);
    let pipeline = pipeline(dir.path());
    let running = {
        let broker = broker.clone();
        tokio::spawn(async move { pipeline.run(&broker, events_rx, updates_rx).await })
    };

    events
        .send(SourceEvent::Packet(Packet {
            source: "uart0".into(),
            bytes: br#"{"id": 7, "t": 21.5}"#.to_vec(),
            received_at: SystemTime::now(),
            radio: None,
        }))
        .await
        .unwrap();
    assert!(
        settle(|| async { availability(&broker, "uart0-7").await.as_deref() == Some("online") })
            .await,
        "online with its first frame"
    );

    tokio::time::sleep(OFFLINE_AFTER - Duration::from_secs(1)).await;
    assert_eq!(
        availability(&broker, "uart0-7").await.as_deref(),
        Some("online"),
        "still online 1 s before the deadline"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        settle(|| async { availability(&broker, "uart0-7").await.as_deref() == Some("offline") })
            .await,
        "offline once offline_after has passed on the paused clock"
    );

    drop(events);
    let registry = running.await.unwrap();
    assert_eq!(registry.devices_online(), 0);
}
