//! The radio path end to end, in process: a simulated SX1276 or SX1262 serviced by the real radio run
//! loop, the pipeline stage (RadioHead + Cayenne LPP decoding, the device registry, the stats topic) and
//! the embedded broker on 127.0.0.1:0, watched by a real MQTT subscriber (rumqttc). The test keeps the
//! simulated chip's handle to put packets on the air and to make the chip stop answering and recover.
//! Every wait is bounded; nothing sleeps and hopes.

use sensorgate_testkit::broker as broker_support;
use sensorgate_testkit::mqtt;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use sensorgate::broker::Broker;
use sensorgate::decode::{encode_header, HeaderFormat, LppWriter, PacketDecoder, PayloadFormat};
use sensorgate::devices::{Registry, RegistrySettings};
use sensorgate::frame::CrcMode;
use sensorgate::pipeline::{Pipeline, PipelineUpdate};
use sensorgate::source::radio::sim_sx1262::Sx1262Sim;
use sensorgate::source::radio::sim_sx1276::Sx1276Sim;
use sensorgate::source::radio::source::{sx1262_sim_opener, sx1276_sim_opener};
use sensorgate::source::radio::{run_with, Chip, RadioSettings};
use sensorgate::source::SourceContext;
use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use mqtt::{Received, Subscriber};

/// Bound on every wait for a message.
const WAIT: Duration = Duration::from_secs(10);
const BASE: &str = "sensorgate";
const SOURCE: &str = "lora";
const STATS_TOPIC: &str = "sensorgate/gateway/stats";

/// The simulated chip the test holds on to.
#[derive(Clone)]
enum SimulatedChip {
    Sx1276(Sx1276Sim),
    Sx1262(Sx1262Sim),
}

impl SimulatedChip {
    fn new(chip: Chip) -> Self {
        match chip {
            Chip::Sx1276 => SimulatedChip::Sx1276(Sx1276Sim::new()),
            Chip::Sx1262 => SimulatedChip::Sx1262(Sx1262Sim::new()),
        }
    }

    /// Puts a packet on the air; whether the chip heard it (it hears only while receiving).
    fn inject(&self, bytes: &[u8], rssi_dbm: f32, snr_db: f32, crc_ok: bool) -> bool {
        match self {
            SimulatedChip::Sx1276(chip) => chip.inject(bytes, rssi_dbm, snr_db, crc_ok),
            SimulatedChip::Sx1262(chip) => chip.inject(bytes, rssi_dbm, snr_db, crc_ok),
        }
    }

    /// Unplugged: MISO reads a constant (low for the SX1276 behind a pull-down, floating high for the
    /// SX1262) and writes are lost.
    fn stop_answering(&self) {
        match self {
            SimulatedChip::Sx1276(chip) => chip.stop_answering(0x00),
            SimulatedChip::Sx1262(chip) => chip.stop_answering(0xFF),
        }
    }

    /// Plugged back in: answering again, with its reset values (so it hears nothing until re-initialised).
    fn recover(&self) {
        match self {
            SimulatedChip::Sx1276(chip) => chip.recover(),
            SimulatedChip::Sx1262(chip) => chip.recover(),
        }
    }
}

/// A RadioHead packet from `from` with sequence `id`, carrying an LPP temperature, humidity and battery
/// voltage on channels 1, 2 and 3.
fn packet(from: u8, id: u8, celsius: f64) -> Vec<u8> {
    let mut bytes = encode_header(HeaderFormat::RadioHead, u16::from(from), id);
    bytes.extend(
        LppWriter::new()
            .temperature(1, celsius)
            .relative_humidity(2, 40.0)
            .voltage(3, 3.91)
            .into_bytes(),
    );
    bytes
}

/// How a packet is put on the air, and the RSSI and SNR the chip's registers give back for it.
struct Heard {
    from: u8,
    rssi_dbm: f32,
    snr_db: f32,
    expected_rssi: f64,
    expected_snr: f64,
}

/// Three signals per chip, the expectations worked out with the datasheet formulas from the register
/// values the chip stores (the simulators quantise the way the silicon does).
fn signals(chip: Chip) -> [Heard; 3] {
    let heard = |from, rssi_dbm, snr_db, expected_rssi, expected_snr| Heard {
        from,
        rssi_dbm,
        snr_db,
        expected_rssi,
        expected_snr,
    };
    match chip {
        // SX1276 above 779 MHz: RSSI = -157 + PktRssi * 16/15 (+ SNR when SNR < 0), SNR = PktSnr / 4.
        Chip::Sx1276 => [
            // PktRssi = 60, PktSnr = 40.
            heard(17, -93.0, 10.0, -157.0 + 60.0 * 16.0 / 15.0, 40.0 / 4.0),
            // PktRssi = round(57 * 15/16) = 53: the register's 16/15 dB steps show.
            heard(18, -100.0, 8.0, -157.0 + 53.0 * 16.0 / 15.0, 32.0 / 4.0),
            // Below the noise floor: PktRssi = 30, PktSnr = -10, and the SNR is added.
            heard(
                19,
                -127.5,
                -2.5,
                -157.0 + 30.0 * 16.0 / 15.0 - 2.5,
                -10.0 / 4.0,
            ),
        ],
        // SX1262: RSSI = -RssiPkt / 2, SNR = SnrPkt / 4.
        Chip::Sx1262 => [
            // RssiPkt = 181, SnrPkt = -21.
            heard(17, -90.5, -5.25, -181.0 / 2.0, -21.0 / 4.0),
            // RssiPkt = round(200.6) = 201, SnrPkt = round(12.4) = 12: half- and quarter-dB steps.
            heard(18, -100.3, 3.1, -201.0 / 2.0, 12.0 / 4.0),
            // RssiPkt = 240, SnrPkt = -48.
            heard(19, -120.0, -12.0, -240.0 / 2.0, -48.0 / 4.0),
        ],
    }
}

/// The broker, the pipeline and the radio source, running; stops the source when dropped.
struct Rig {
    chip: SimulatedChip,
    subscriber: Subscriber,
    /// Everything the subscriber received, in order.
    received: Vec<Received>,
    shutdown: CancellationToken,
    source: Option<JoinHandle<()>>,
    pipeline: Option<JoinHandle<Registry>>,
    /// Kept open so the pipeline's update channel stays quiet rather than closed.
    _updates: mpsc::Sender<PipelineUpdate>,
    _broker: Arc<Broker>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Rig {
    async fn start(chip_kind: Chip) -> Rig {
        let broker = Arc::new(
            Broker::start(&broker_support::local_settings(), None)
                .await
                .expect("broker on 127.0.0.1:0"),
        );
        let addr = broker.local_addrs()[0];
        let subscriber = mqtt::subscribe(addr, "radio-e2e", &format!("{BASE}/#"), 1).await;

        let registry = Registry::new(RegistrySettings {
            base_topic: BASE.to_string(),
            qos: 1,
            retain: true,
            field_topics: false,
            offline_after: Duration::from_secs(600),
            dedup_window: Duration::from_secs(600),
            max_fields: 64,
            devices: Vec::new(),
        });
        let decoder = PacketDecoder {
            crc: CrcMode::None,
            header: HeaderFormat::RadioHead,
            payload: PayloadFormat::Lpp,
        };
        let pipeline = Pipeline {
            decoders: HashMap::from([(SOURCE.to_string(), decoder)]),
            codecs: HashMap::new(),
            registry,
            base_topic: BASE.to_string(),
            stats_interval: Duration::from_millis(100),
            uplink_stats: None,
            command_stats: None,
            lorawan_stats: None,
            heartbeat: None,
            devices_online: Arc::new(AtomicUsize::new(0)),
            discovery: None,
            state_dir: std::path::PathBuf::new(),
            live: None,
            http_stats: None,
            forget: None,
        };
        let (events, events_rx) = mpsc::channel(64);
        let (updates, updates_rx) = mpsc::channel(1);
        let pipeline_broker = broker.clone();
        let pipeline =
            tokio::spawn(
                async move { pipeline.run(&pipeline_broker, events_rx, updates_rx).await },
            );

        let settings = RadioSettings {
            chip: chip_kind,
            health_interval: Duration::from_millis(100),
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            ..RadioSettings::default()
        };
        let chip = SimulatedChip::new(chip_kind);
        let opener = match &chip {
            SimulatedChip::Sx1276(sim) => sx1276_sim_opener(sim, &settings),
            SimulatedChip::Sx1262(sim) => sx1262_sim_opener(sim, &settings),
        };
        let shutdown = CancellationToken::new();
        // The source holds the only event sender: when it ends, the pipeline ends.
        let ctx = SourceContext {
            name: SOURCE.to_string(),
            out: events,
            shutdown: shutdown.clone(),
        };
        let wiring = format!("simulated {}", chip_kind.name());
        let source = tokio::spawn(run_with(ctx, settings, opener, wiring));

        Rig {
            chip,
            subscriber,
            received: Vec::new(),
            shutdown,
            source: Some(source),
            pipeline: Some(pipeline),
            _updates: updates,
            _broker: broker,
        }
    }

    /// The next message matching `predicate`, within [`WAIT`]; panics naming `what` otherwise.
    async fn wait(&mut self, what: &str, predicate: impl FnMut(&Received) -> bool) -> Received {
        let mut skipped = Vec::new();
        let found = self
            .subscriber
            .wait_for(WAIT, &mut skipped, predicate)
            .await;
        self.received.append(&mut skipped);
        match found {
            Some(message) => {
                self.received.push(message.clone());
                message
            }
            None => panic!(
                "waited {WAIT:?} in vain for {what}; last received: {:?}",
                self.received
                    .iter()
                    .rev()
                    .take(10)
                    .map(|m| (m.topic.as_str(), m.text()))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// The next stats message whose counters for the radio source satisfy `predicate`; returns them.
    async fn wait_stats(&mut self, what: &str, mut predicate: impl FnMut(&Json) -> bool) -> Json {
        let message = self
            .wait(what, |m| {
                m.topic == STATS_TOPIC && predicate(&source_counters(&m.payload))
            })
            .await;
        source_counters(&message.payload)
    }

    /// The next state JSON of `lora-{from}` with sequence number `seq`.
    async fn wait_state(&mut self, from: u8, seq: u8) -> Json {
        let topic = state_topic(from);
        let message = self
            .wait(&format!("state of lora-{from} seq {seq}"), |m| {
                m.topic == topic && json(&m.payload)["seq"] == seq
            })
            .await;
        json(&message.payload)
    }

    /// The next availability message of `lora-{from}` saying `payload`.
    async fn wait_availability(&mut self, from: u8, payload: &str) {
        let topic = availability_topic(from);
        self.wait(&format!("lora-{from} {payload}"), |m| {
            m.topic == topic && m.payload == payload.as_bytes()
        })
        .await;
    }

    /// Waits until every device in `froms` has gone offline (in whatever order the wills come).
    async fn wait_offline(&mut self, froms: &[u8]) {
        let mut pending: Vec<String> = froms.iter().map(|&from| availability_topic(from)).collect();
        while !pending.is_empty() {
            let message = self
                .wait(&format!("offline on {pending:?}"), |m| {
                    pending.contains(&m.topic) && m.payload == b"offline"
                })
                .await;
            pending.retain(|topic| *topic != message.topic);
        }
    }

    /// Payloads received so far on `topic`, in order.
    fn payloads_on(&self, topic: &str) -> Vec<String> {
        self.received
            .iter()
            .filter(|m| m.topic == topic)
            .map(Received::text)
            .collect()
    }

    /// Stops the source; the pipeline then ends on its own (its last sender is gone) and hands the
    /// registry back.
    async fn stop(mut self) -> Registry {
        self.shutdown.cancel();
        if let Some(source) = self.source.take() {
            timeout(WAIT, source)
                .await
                .expect("the radio source stops within the bound")
                .expect("the radio source task did not panic");
        }
        let pipeline = self.pipeline.take().expect("pipeline running");
        timeout(WAIT, pipeline)
            .await
            .expect("the pipeline ends after its sources")
            .expect("the pipeline task did not panic")
    }
}

fn json(payload: &[u8]) -> Json {
    serde_json::from_slice(payload).unwrap_or(Json::Null)
}

fn source_counters(payload: &[u8]) -> Json {
    json(payload)["sources"][SOURCE].clone()
}

fn state_topic(from: u8) -> String {
    format!("{BASE}/{SOURCE}-{from}")
}

fn availability_topic(from: u8) -> String {
    format!("{BASE}/{SOURCE}-{from}/availability")
}

fn assert_close(found: &Json, expected: f64, what: &str) {
    let found = found
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {found} is not a number"));
    assert!(
        (found - expected).abs() < 1e-3,
        "{what}: {found}, expected {expected}"
    );
}

async fn radio_path_end_to_end(chip_kind: Chip) {
    let mut rig = Rig::start(chip_kind).await;
    rig.wait_stats("the radio source up", |c| c["up"] == Json::Bool(true))
        .await;

    // Packets become state JSON with the RSSI and SNR the chip reported, and their devices come online.
    for heard in signals(chip_kind) {
        let bytes = packet(heard.from, 1, 21.5);
        assert!(
            rig.chip.inject(&bytes, heard.rssi_dbm, heard.snr_db, true),
            "the chip is receiving"
        );
        let state = rig.wait_state(heard.from, 1).await;
        let what = format!("{chip_kind:?} lora-{}", heard.from);
        assert_close(&state["rssi"], heard.expected_rssi, &format!("{what} rssi"));
        assert_close(&state["snr"], heard.expected_snr, &format!("{what} snr"));
        assert_close(&state["temperature_1"], 21.5, &what);
        assert_close(&state["relative_humidity_2"], 40.0, &what);
        assert_close(&state["voltage_3"], 3.91, &what);
        assert_eq!(state["source"], Json::from(SOURCE), "{what}");
        rig.wait_availability(heard.from, "online").await;
    }

    // A bad-CRC packet is counted, not published.
    assert!(rig.chip.inject(&packet(30, 1, 99.0), -80.0, 5.0, false));
    let counters = rig
        .wait_stats("a frame error counted", |c| c["frame_errors"] == 1)
        .await;
    assert_eq!(counters["frames"], 3, "{counters}");
    assert_eq!(counters["readings"], 3, "{counters}");

    // The same packet heard twice (same FROM and ID) is published once; the next ID is published again.
    let again = packet(17, 2, 22.0);
    assert!(rig.chip.inject(&again, -95.0, 9.0, true));
    let state = rig.wait_state(17, 2).await;
    assert_close(&state["temperature_1"], 22.0, "lora-17 seq 2");
    assert!(rig.chip.inject(&again, -99.0, 7.0, true));
    let counters = rig
        .wait_stats("a duplicate counted", |c| c["duplicates"] == 1)
        .await;
    assert_eq!(counters["frames"], 5, "{counters}");
    assert_eq!(counters["readings"], 4, "{counters}");
    assert!(rig.chip.inject(&packet(17, 3, 22.5), -95.0, 9.0, true));
    rig.wait_state(17, 3).await;
    let seqs: Vec<Json> = rig
        .received
        .iter()
        .filter(|m| m.topic == state_topic(17))
        .map(|m| json(&m.payload)["seq"].clone())
        .collect();
    assert_eq!(seqs, [1, 2, 3], "lora-17 states published");

    // A chip that stops answering is reported lost: its devices go offline. Once it answers again it
    // is re-initialised (a recovered chip is back at its reset values and hears nothing until then).
    rig.chip.stop_answering();
    let froms = signals(chip_kind).map(|heard| heard.from);
    rig.wait_offline(&froms).await;
    rig.wait_stats("the link loss counted", |c| {
        c["link_losses"] == 1 && c["up"] == Json::Bool(false)
    })
    .await;
    rig.chip.recover();
    rig.wait_stats("the radio source up again", |c| {
        c["link_losses"] == 1 && c["up"] == Json::Bool(true)
    })
    .await;
    assert!(
        rig.chip.inject(&packet(17, 4, 23.0), -93.0, 10.0, true),
        "the re-initialised chip is receiving"
    );
    rig.wait_state(17, 4).await;
    rig.wait_availability(17, "online").await;
    assert_eq!(
        rig.payloads_on(&availability_topic(17)),
        ["online", "offline", "online"]
    );
    assert_eq!(
        rig.payloads_on(&availability_topic(18)),
        ["online", "offline"]
    );

    // Nothing of the bad-CRC packet ever reached the broker.
    let corrupted = state_topic(30);
    assert!(
        rig.received
            .iter()
            .all(|m| !m.topic.starts_with(&corrupted)),
        "the bad-CRC packet was published"
    );

    let registry = rig.stop().await;
    assert_eq!(registry.devices_known(), 3);
    assert_eq!(registry.devices_online(), 0, "wills published on stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sx1276_radio_path_end_to_end() {
    radio_path_end_to_end(Chip::Sx1276).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sx1262_radio_path_end_to_end() {
    radio_path_end_to_end(Chip::Sx1262).await;
}
