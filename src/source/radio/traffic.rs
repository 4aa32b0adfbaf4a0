//! Simulated LoRa sensor nodes for the radio demo: each node sends a RadioHead packet (TO broadcast, FROM
//! its address, ID its sequence number, FLAGS 0) carrying a Cayenne LPP payload (temperature on channel 1,
//! relative humidity on channel 2, battery voltage on channel 3), heard with a plausible RSSI and SNR;
//! now and then a packet arrives with a bad CRC, and now and then one is retransmitted with the same ID.
//! Packets are written with the decoders' own encoders ([`encode_header`], [`LppWriter`]), so the demo
//! sends exactly what the pipeline reads. [`Traffic`] is pure and seeded (tests replay it); [`drive`] paces
//! it into a simulated chip. It never touches the drivers or the pipeline.
//!
//! Each node also has a relay on LPP channel 1 that follows the gateway's commands: a packet the chip
//! transmits with RadioHead TO = a node's address and an LPP `digital_out_1` record switches it
//! ([`Traffic::hear`]); the node answers at once with its readings and the relay's state
//! (`digital_out_1`), which it reports in every packet from then on.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::hal::IqPolarity;
use super::sim_sx1262::Sx1262Sim;
use super::sim_sx1276::{Sx1276Sim, Transmitted};
use crate::decode::header::{split_header, RADIOHEAD_LEN};
use crate::decode::{encode_header, HeaderFormat, LppWriter};
use crate::model::Value;

/// One packet in ten is followed by a retransmission.
const RETRANSMIT_ONE_IN: u32 = 10;
/// One packet in twenty arrives corrupted.
const BAD_CRC_ONE_IN: u32 = 20;

/// One packet on the simulated air.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmission {
    pub bytes: Vec<u8>,
    pub rssi_dbm: f32,
    pub snr_db: f32,
    pub crc_ok: bool,
}

#[derive(Debug, Clone)]
struct Node {
    address: u8,
    seq: u8,
    rssi_dbm: f32,
    temperature_c: f64,
    humidity_pct: f64,
    battery_v: f64,
    /// The relay on LPP channel 1, once the gateway has switched it.
    relay: Option<u8>,
}

/// The simulated nodes and their random walk.
#[derive(Debug)]
pub struct Traffic {
    nodes: Vec<Node>,
    rng: StdRng,
}

/// The Cayenne LPP payload of one reading: temperature on channel 1 (0.1 C), relative humidity on
/// channel 2 (0.5 %), battery voltage on channel 3 (0.01 V). Out-of-range values saturate.
pub fn lpp_payload(temperature_c: f64, humidity_pct: f64, battery_v: f64) -> Vec<u8> {
    LppWriter::new()
        .temperature(1, temperature_c)
        .relative_humidity(2, humidity_pct)
        .voltage(3, battery_v)
        .into_bytes()
}

impl Traffic {
    /// `devices` nodes at addresses 1..=devices (at most 254), replayable from `seed`.
    pub fn new(devices: u32, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let nodes = (1..=devices.min(254))
            .map(|address| Node {
                address: address as u8,
                seq: rng.random(),
                rssi_dbm: rng.random_range(-118.0..-60.0),
                temperature_c: rng.random_range(15.0..25.0),
                humidity_pct: rng.random_range(35.0..70.0),
                battery_v: rng.random_range(3.6..4.2),
                relay: None,
            })
            .collect();
        Traffic { nodes, rng }
    }

    /// One round: every node sends once (some twice, the second a retransmission with the same ID).
    pub fn next_round(&mut self) -> Vec<Transmission> {
        let mut round = Vec::new();
        for node in &mut self.nodes {
            node.seq = node.seq.wrapping_add(1);
            node.temperature_c =
                (node.temperature_c + self.rng.random_range(-0.3..0.3)).clamp(-20.0, 45.0);
            node.humidity_pct =
                (node.humidity_pct + self.rng.random_range(-1.0..1.0)).clamp(5.0, 100.0);
            node.battery_v = (node.battery_v - self.rng.random_range(0.0..0.002)).max(3.0);
            let bytes = node.packet();
            let rssi_dbm = node.rssi_dbm + self.rng.random_range(-2.0..2.0);
            // Strong signals are well above the noise floor; weak ones fall below it.
            let snr_db =
                ((rssi_dbm + 110.0) * 0.3 + self.rng.random_range(-1.0..1.0)).clamp(-15.0, 12.0);
            let crc_ok = self.rng.random_range(0..BAD_CRC_ONE_IN) != 0;
            let transmission = Transmission {
                bytes,
                rssi_dbm,
                snr_db,
                crc_ok,
            };
            if crc_ok && self.rng.random_range(0..RETRANSMIT_ONE_IN) == 0 {
                round.push(transmission.clone());
            }
            round.push(transmission);
        }
        round
    }
}

impl Node {
    /// RadioHead header, then the readings (and the relay, once set).
    fn packet(&self) -> Vec<u8> {
        let mut bytes = encode_header(HeaderFormat::RadioHead, u16::from(self.address), self.seq);
        bytes.extend(lpp_payload(
            self.temperature_c,
            self.humidity_pct,
            self.battery_v,
        ));
        if let Some(relay) = self.relay {
            bytes.extend([1, 1, relay]);
        }
        bytes
    }
}

impl Traffic {
    /// A packet the gateway sent: a node addressed by RadioHead TO with an LPP `digital_out_1` record
    /// switches its relay and answers with its state at once (strong signal, good CRC).
    pub fn hear(&mut self, packet: &[u8]) -> Option<Transmission> {
        if packet.len() < RADIOHEAD_LEN {
            return None;
        }
        let to = packet[0];
        let (_, payload) = split_header(HeaderFormat::RadioHead, packet).ok()?;
        let fields = crate::decode::lpp::decode(payload).ok()?.fields;
        let relay = fields
            .iter()
            .find_map(|(name, value)| match (name.as_str(), value) {
                ("digital_out_1", Value::Int(v)) => u8::try_from(*v).ok(),
                _ => None,
            })?;
        let node = self.nodes.iter_mut().find(|n| n.address == to)?;
        node.relay = Some(relay);
        node.seq = node.seq.wrapping_add(1);
        Some(Transmission {
            bytes: node.packet(),
            rssi_dbm: node.rssi_dbm,
            snr_db: 9.0,
            crc_ok: true,
        })
    }
}

/// A simulated chip of either kind, as the traffic sees it.
#[derive(Debug, Clone)]
pub enum SimChip {
    Sx1276(Sx1276Sim),
    Sx1262(Sx1262Sim),
}

impl SimChip {
    /// Puts one packet on the air; returns whether the chip heard it.
    pub fn inject(&self, t: &Transmission) -> bool {
        match self {
            SimChip::Sx1276(chip) => chip.inject(&t.bytes, t.rssi_dbm, t.snr_db, t.crc_ok),
            SimChip::Sx1262(chip) => chip.inject(&t.bytes, t.rssi_dbm, t.snr_db, t.crc_ok),
        }
    }

    /// Takes what the chip transmitted.
    pub fn take_transmitted(&self) -> Vec<Transmitted> {
        match self {
            SimChip::Sx1276(chip) => chip.take_transmitted(),
            SimChip::Sx1262(chip) => chip.take_transmitted(),
        }
    }

    /// Notified whenever the chip transmits.
    pub fn on_transmit(&self) -> std::sync::Arc<tokio::sync::Notify> {
        match self {
            SimChip::Sx1276(chip) => chip.on_transmit(),
            SimChip::Sx1262(chip) => chip.on_transmit(),
        }
    }
}

/// How long a node takes to answer a command (the chip must be back in RX to hear it).
const ANSWER_DELAY: Duration = Duration::from_millis(50);

/// Feeds `traffic` into `chip` until `shutdown`: one round per `interval`, its packets spread evenly
/// over it so that the driver reads each before the next arrives.
pub async fn drive(
    chip: SimChip,
    mut traffic: Traffic,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let transmitted = chip.on_transmit();
    loop {
        let round = traffic.next_round();
        let gap = interval / (round.len().max(1) as u32);
        for transmission in round {
            let due = tokio::time::Instant::now() + gap;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(due) => break,
                    _ = transmitted.notified() => {
                        for packet in chip.take_transmitted() {
                            if !packet.heard_with(IqPolarity::Standard) {
                                continue;
                            }
                            if let Some(answer) = traffic.hear(&packet.bytes) {
                                tokio::time::sleep(ANSWER_DELAY).await;
                                chip.inject(&answer);
                            }
                        }
                    }
                }
            }
            if !chip.inject(&transmission) {
                log::debug!("simulated radio packet not heard (chip not receiving)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::header::RADIOHEAD_BROADCAST;

    #[test]
    fn lpp_payload_encodes_the_three_fields() {
        assert_eq!(
            lpp_payload(27.2, 45.5, 3.91),
            vec![1, 103, 0x01, 0x10, 2, 104, 91, 3, 116, 0x01, 0x87]
        );
        assert_eq!(lpp_payload(-4.1, 0.0, 0.0)[2..4], [0xFF, 0xD7]);
    }

    #[test]
    fn rounds_carry_radiohead_headers_retransmissions_and_bad_crcs() {
        let mut traffic = Traffic::new(3, 7);
        let mut packets = 0;
        let mut bad = 0;
        let mut repeats = 0;
        let mut last_seq = [None::<u8>; 4];
        for _ in 0..200 {
            let round = traffic.next_round();
            for pair in round.windows(2) {
                if pair[0] == pair[1] {
                    repeats += 1;
                }
            }
            for t in round {
                packets += 1;
                assert_eq!(t.bytes[0], RADIOHEAD_BROADCAST);
                assert!((1..=3).contains(&t.bytes[1]));
                assert_eq!(t.bytes[3], 0);
                assert_eq!(t.bytes.len(), 15);
                assert!((-125.0..=-55.0).contains(&t.rssi_dbm), "{}", t.rssi_dbm);
                assert!((-15.0..=12.0).contains(&t.snr_db));
                let from = usize::from(t.bytes[1]);
                if let Some(previous) = last_seq[from] {
                    assert!(t.bytes[2] == previous || t.bytes[2] == previous.wrapping_add(1));
                }
                last_seq[from] = Some(t.bytes[2]);
                if !t.crc_ok {
                    bad += 1;
                }
            }
        }
        assert!(packets > 600);
        assert!((10..=60).contains(&bad), "{bad} bad CRCs");
        assert!((20..=100).contains(&repeats), "{repeats} retransmissions");
    }

    #[test]
    fn packets_decode_with_the_radio_decoder_into_the_nodes_readings() {
        use crate::decode::{PacketDecoder, PayloadFormat};
        use crate::frame::CrcMode;
        use crate::model::{Packet, Value};

        let decoder = PacketDecoder {
            crc: CrcMode::None,
            header: HeaderFormat::RadioHead,
            payload: PayloadFormat::Lpp,
        };
        let mut traffic = Traffic::new(2, 11);
        for t in traffic.next_round() {
            let packet = Packet {
                source: "lora".to_string(),
                bytes: t.bytes.clone(),
                received_at: std::time::SystemTime::UNIX_EPOCH,
                radio: None,
            };
            let readings = decoder.decode(&packet).unwrap();
            assert_eq!(readings.len(), 1);
            let reading = &readings[0];
            assert_eq!(reading.address, t.bytes[1].to_string());
            assert_eq!(reading.seq, Some(u32::from(t.bytes[2])));
            let names: Vec<&str> = reading.fields.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["temperature_1", "relative_humidity_2", "voltage_3"]);
            let Value::Float(celsius) = reading.fields[0].1 else {
                panic!("temperature is not a float: {:?}", reading.fields[0]);
            };
            assert!((14.0..26.0).contains(&celsius), "{celsius}");
        }
    }
}
