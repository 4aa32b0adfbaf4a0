//! The simulator source: virtual sensor nodes that send realistic, slowly varying readings (temperature with
//! a daily swing, humidity, a slowly draining battery) and now and then fall silent, so a new user sees the
//! whole path work without hardware. Each reading is encoded in the configured payload format, header, CRC
//! and framing, and the bytes go through the same [`Deframer`] a serial port uses: the simulator exercises
//! the real decoders, it does not bypass them. It never publishes anything itself.

use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
}

/// One virtual node's state.
#[derive(Debug, Clone)]
struct Node {
    address: u16,
    seq: u8,
    temperature_base: f64,
    humidity: f64,
    battery_volts: f64,
    silent_for: u32,
}

impl Node {
    fn new(address: u16, rng: &mut StdRng) -> Self {
        Node {
            address,
            seq: rng.random(),
            temperature_base: rng.random_range(17.0..24.0),
            humidity: rng.random_range(35.0..65.0),
            battery_volts: rng.random_range(3.0..3.3),
            silent_for: 0,
        }
    }

    /// Advances the node one step: temperature follows a daily sine plus noise, humidity a bounded random
    /// walk, the battery drains by a few microvolts a reading.
    fn step(&mut self, rng: &mut StdRng, now: SystemTime) -> (f64, f64, f64) {
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

fn round_to(value: f64, step: f64) -> f64 {
    (value / step).round() * step
}

/// Encodes one reading the way a real node of this configuration would put it on the wire (before framing).
fn encode_reading(
    settings: &SimulatorSettings,
    node: &Node,
    values: (f64, f64, f64),
) -> Vec<Vec<u8>> {
    let (temperature, humidity, battery) = values;
    let payloads: Vec<Vec<u8>> = match settings.payload {
        PayloadFormat::Json => vec![format!(
            "{{\"id\":{},\"seq\":{},\"temperature\":{},\"humidity\":{},\"battery\":{}}}",
            node.address,
            node.seq,
            format_float(temperature),
            format_float(humidity),
            format_float(battery)
        )
        .into_bytes()],
        PayloadFormat::Lpp => {
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
        .map(|payload| {
            let mut frame = encode_header(settings.header, node.address, node.seq);
            frame.extend_from_slice(&payload);
            append_crc(settings.crc, &frame)
        })
        .collect()
}

/// Runs the virtual nodes until `ctx.shutdown` is cancelled or the pipeline goes away. Sends are spread
/// evenly over the interval rather than all at once.
pub async fn run(ctx: SourceContext, settings: SimulatorSettings) {
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
        for frame in encode_reading(&settings, node, values) {
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
