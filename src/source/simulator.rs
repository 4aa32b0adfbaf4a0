//! The simulator source: virtual sensor nodes that send realistic, slowly varying readings (temperature with
//! a daily swing, humidity, a slowly draining battery) and now and then fall silent, so a new user sees the
//! whole path work without hardware. Each reading is encoded in the configured payload format, header, CRC
//! and framing, and the bytes go through the same [`Deframer`] a serial port uses: the simulator exercises
//! the real decoders, it does not bypass them. With `encryption`, each node seals its frames as a real
//! encrypting node would (`crate::crypto::frame`), with a frame counter that starts from the clock
//! (16 per second since 2023-11-14), so a restarted simulator never reuses a counter unless a node sent
//! more than 16 frames a second. It never publishes anything itself.

use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::crypto::frame::Direction;
use crate::crypto::FrameKey;
use crate::decode::header::encode_header;
use crate::decode::lpp::LppWriter;
use crate::decode::{HeaderFormat, PayloadFormat};
use crate::frame::crc::{append_crc, CrcMode};
use crate::frame::{encode_frame, Deframer, Framing};
use crate::model::format_float;
use crate::source::{SourceContext, SourceEvent};

/// Everything the simulator needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatorSettings {
    /// Number of virtual nodes; their addresses are 1..=devices.
    pub devices: u32,
    /// How often each node sends.
    pub interval: Duration,
    pub payload: PayloadFormat,
    pub header: HeaderFormat,
    pub crc: CrcMode,
    pub framing: Framing,
    /// Chance per send that a node stays silent for a while (0.0 disables silences).
    pub silence_probability: f64,
    /// Seed of the random walk, so that a run can be repeated.
    pub seed: u64,
    /// Seal frames with AES-128-CCM, as the gateway's source expects them.
    pub encryption: Option<SimulatorEncryption>,
}

/// The key file of an encrypted simulator: every node seals with the source's key (the configuration
/// refuses `[[device]] key_file` on a simulator source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatorEncryption {
    pub key_file: Option<std::path::PathBuf>,
}

/// The key itself, read when the simulator starts.
#[derive(Debug)]
struct NodeKeys {
    default: Option<FrameKey>,
}

impl NodeKeys {
    fn load(encryption: &SimulatorEncryption) -> Result<NodeKeys, crate::crypto::KeyError> {
        let default = match &encryption.key_file {
            Some(path) => Some(crate::crypto::keys::load_frame_key(path)?.key),
            None => None,
        };
        Ok(NodeKeys { default })
    }
}

/// One virtual node's state (also the weather of `crate::lorawan`'s simulated devices).
#[derive(Debug, Clone)]
pub struct Node {
    address: u16,
    seq: u8,
    temperature_base: f64,
    humidity: f64,
    battery_volts: f64,
    silent_for: u32,
    /// The next frame counter (encrypted frames only).
    counter: u32,
}

impl Node {
    pub fn new(address: u16, rng: &mut StdRng) -> Self {
        Node {
            address,
            seq: rng.random(),
            temperature_base: rng.random_range(17.0..24.0),
            humidity: rng.random_range(35.0..65.0),
            battery_volts: rng.random_range(3.0..3.3),
            silent_for: 0,
            counter: crate::crypto::frame::clock_counter(SystemTime::now()),
        }
    }

    /// Advances the node one step: temperature follows a daily sine plus noise, humidity a bounded random
    /// walk, the battery drains by a few microvolts a reading.
    pub fn step(&mut self, rng: &mut StdRng, now: SystemTime) -> (f64, f64, f64) {
        let seconds_of_day = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() % 86_400)
            .unwrap_or(0);
        let phase = seconds_of_day as f64 / 86_400.0 * std::f64::consts::TAU;
        self.temperature_base =
            (self.temperature_base + rng.random_range(-0.05..0.05)).clamp(10.0, 30.0);
        self.humidity = (self.humidity + rng.random_range(-0.5..0.5)).clamp(20.0, 95.0);
        self.battery_volts = (self.battery_volts - 0.000_005).max(2.7);
        self.seq = self.seq.wrapping_add(1);
        let temperature = self.temperature_base + 2.5 * (phase - std::f64::consts::FRAC_PI_2).sin();
        (
            round_to(temperature, 0.1),
            round_to(self.humidity, 0.5),
            round_to(self.battery_volts, 0.01),
        )
    }
}

/// A stable seed per name (FNV-1a), so a demo run repeats the same walk.
pub fn seed_from_name(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn round_to(value: f64, step: f64) -> f64 {
    (value / step).round() * step
}

/// Encodes one reading the way a real node of this configuration would put it on the wire (before framing).
fn encode_reading(
    settings: &SimulatorSettings,
    node: &mut Node,
    keys: Option<&NodeKeys>,
    values: (f64, f64, f64),
) -> Vec<Vec<u8>> {
    let (temperature, humidity, battery) = values;
    let payloads: Vec<Vec<u8>> = match settings.payload {
        PayloadFormat::Json => vec![format!(
            // `battery_voltage`, not `battery`: it is volts, and `battery` means a percentage to Home
            // Assistant (and to Zigbee2MQTT, ESPHome and Tasmota, whose names the type table follows).
            "{{\"id\":{},\"seq\":{},\"temperature\":{},\"humidity\":{},\"battery_voltage\":{}}}",
            node.address,
            node.seq,
            format_float(temperature),
            format_float(humidity),
            format_float(battery)
        )
        .into_bytes()],
        // A simulator in front of a codec sends LPP, for a codec that reads it.
        PayloadFormat::Lpp | PayloadFormat::Codec => {
            vec![LppWriter::new()
                .temperature(1, temperature)
                .relative_humidity(2, humidity)
                .voltage(3, battery)
                .into_bytes()]
        }
        PayloadFormat::MySensors => [(1, 0, temperature), (2, 1, humidity), (3, 38, battery)]
            .iter()
            .map(|(child, value_type, value)| {
                format!(
                    "{};{child};1;0;{value_type};{}",
                    node.address,
                    format_float(*value)
                )
                .into_bytes()
            })
            .collect(),
    };
    payloads
        .into_iter()
        .filter_map(|payload| {
            let header = encode_header(settings.header, node.address, node.seq);
            let frame = match keys {
                None => {
                    let mut frame = header;
                    frame.extend_from_slice(&payload);
                    frame
                }
                Some(keys) => {
                    let address = crate::crypto::frame::header_address(settings.header, &header);
                    let key = keys.default.as_ref()?;
                    let counter = node.counter;
                    node.counter = node.counter.saturating_add(1);
                    crate::crypto::frame::seal(
                        key,
                        Direction::Uplink,
                        address,
                        &header,
                        counter,
                        &payload,
                    )
                    .ok()?
                }
            };
            Some(append_crc(settings.crc, &frame))
        })
        .collect()
}

/// Runs the virtual nodes until `ctx.shutdown` is cancelled or the pipeline goes away. Sends are spread
/// evenly over the interval rather than all at once.
pub async fn run(ctx: SourceContext, settings: SimulatorSettings) {
    let keys = match settings.encryption.clone() {
        None => None,
        Some(encryption) => {
            match tokio::task::spawn_blocking(move || NodeKeys::load(&encryption)).await {
                Ok(Ok(keys)) => Some(keys),
                Ok(Err(error)) => {
                    log::error!(source = ctx.name.as_str(); "simulator not started: {error}");
                    return;
                }
                Err(error) => {
                    log::error!(source = ctx.name.as_str(); "simulator not started: {error}");
                    return;
                }
            }
        }
    };
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let device_count = settings.devices.clamp(1, u32::from(u16::MAX));
    let mut nodes: Vec<Node> = (1..=device_count)
        .map(|address| Node::new(address as u16, &mut rng))
        .collect();
    let mut deframer = Deframer::new(settings.framing, 4096);
    let spacing = (settings.interval / device_count).max(Duration::from_micros(100));
    let mut ticker = tokio::time::interval(spacing);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    log::info!(source = ctx.name.as_str(); "simulating {device_count} devices every {}", humantime::format_duration(settings.interval));
    if !ctx
        .emit(SourceEvent::Up {
            source: ctx.name.clone(),
        })
        .await
    {
        return;
    }
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let index = next;
        next = (next + 1) % nodes.len();
        let node = &mut nodes[index];
        if node.silent_for > 0 {
            node.silent_for -= 1;
            continue;
        }
        if settings.silence_probability > 0.0
            && rng.random_bool(settings.silence_probability.min(1.0))
        {
            node.silent_for = rng.random_range(3..20);
            continue;
        }
        let now = SystemTime::now();
        let values = node.step(&mut rng, now);
        for frame in encode_reading(&settings, node, keys.as_ref(), values) {
            deframer.push(&encode_frame(settings.framing, &frame));
        }
        if !ctx.emit_frames(&mut deframer, now).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::PacketDecoder;
    use crate::model::Value;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    fn settings(
        payload: PayloadFormat,
        header: HeaderFormat,
        crc: CrcMode,
        framing: Framing,
    ) -> SimulatorSettings {
        SimulatorSettings {
            devices: 3,
            interval: Duration::from_millis(30),
            payload,
            header,
            crc,
            framing,
            silence_probability: 0.0,
            seed: 7,
            encryption: None,
        }
    }

    async fn first_readings(
        settings: SimulatorSettings,
        wanted: usize,
    ) -> Vec<crate::model::Reading> {
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            name: "demo".into(),
            out: tx,
            shutdown: shutdown.clone(),
        };
        let decoder = PacketDecoder {
            crc: settings.crc,
            header: settings.header,
            payload: settings.payload,
        };
        let task = tokio::spawn(run(ctx, settings));
        let mut readings = Vec::new();
        while readings.len() < wanted {
            let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            match event {
                SourceEvent::Packet(packet) => readings.extend(decoder.decode(&packet).unwrap()),
                SourceEvent::Up { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        shutdown.cancel();
        task.await.unwrap();
        readings
    }

    #[tokio::test]
    async fn lpp_over_cobs_with_node16_and_crc_decodes_to_plausible_values() {
        let readings = first_readings(
            settings(
                PayloadFormat::Lpp,
                HeaderFormat::Node16,
                CrcMode::Crc16CcittFalse,
                Framing::Cobs,
            ),
            6,
        )
        .await;
        let addresses: std::collections::BTreeSet<_> =
            readings.iter().map(|r| r.address.clone()).collect();
        assert_eq!(
            addresses.into_iter().collect::<Vec<_>>(),
            vec!["1", "2", "3"]
        );
        for reading in &readings {
            let temperature = reading
                .fields
                .iter()
                .find(|(name, _)| name == "temperature_1")
                .map(|(_, v)| v.clone());
            match temperature {
                Some(Value::Float(t)) => assert!((5.0..35.0).contains(&t), "{t}"),
                other => panic!("no temperature in {reading:?}: {other:?}"),
            }
            assert!(reading.seq.is_some());
        }
    }

    #[tokio::test]
    async fn encrypted_frames_open_with_the_key_and_counters_grow() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("k");
        std::fs::write(&key_file, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        let mut settings = settings(
            PayloadFormat::Lpp,
            HeaderFormat::Node16,
            CrcMode::Crc16CcittFalse,
            Framing::Cobs,
        );
        settings.encryption = Some(SimulatorEncryption {
            key_file: Some(key_file),
        });
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            name: "demo".into(),
            out: tx,
            shutdown: shutdown.clone(),
        };
        let decoder = PacketDecoder {
            crc: settings.crc,
            header: settings.header,
            payload: settings.payload,
        };
        let mut keys = crate::crypto::FrameKeys::default();
        keys.sources.insert(
            "demo".into(),
            crate::crypto::SourceKeys {
                default: Some(FrameKey::from_bytes(core::array::from_fn(|i| i as u8))),
                ..Default::default()
            },
        );
        let guard = crate::crypto::FrameGuard::new(keys, crate::replay::ReplayGuard::in_memory());
        let task = tokio::spawn(run(ctx, settings));
        let mut readings = 0;
        while readings < 6 {
            let event = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if let SourceEvent::Packet(packet) = event {
                // Plain decoding fails: the payload is ciphertext behind a counter.
                let (plain, opened) = guard.open(&decoder, &packet).unwrap();
                readings += plain.decode(&opened).unwrap().len();
            }
        }
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn json_lines_and_mysensors_lines_decode() {
        let json = first_readings(
            settings(
                PayloadFormat::Json,
                HeaderFormat::None,
                CrcMode::None,
                Framing::Lines,
            ),
            3,
        )
        .await;
        assert!(json
            .iter()
            .all(|r| r.fields.iter().any(|(name, _)| name == "humidity")));
        let mysensors = first_readings(
            settings(
                PayloadFormat::MySensors,
                HeaderFormat::None,
                CrcMode::None,
                Framing::Lines,
            ),
            3,
        )
        .await;
        let names: Vec<_> = mysensors
            .iter()
            .flat_map(|r| r.fields.iter().map(|(n, _)| n.clone()))
            .collect();
        assert!(names.contains(&"temp_1".to_string()), "{names:?}");
    }
}
