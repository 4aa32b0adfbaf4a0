//! A simulated packet forwarder with simulated LoRaWAN devices behind it (`simulate` of a
//! `kind = "semtech-udp"` source), so the network server can be tried, and the demo run, without a
//! gateway. It speaks the real Semtech UDP protocol over real UDP from 127.0.0.1 to the source's own
//! socket: PULL_DATA every `keepalive`, PUSH_DATA with one `rxpk` per uplink (`tmst` from its own
//! microsecond counter, `freq`, `datr`, `rssi`, `lsnr`, `data`), and a TX_ACK for every PULL_RESP,
//! whose frame it hands to its devices (`simulated_device.rs`) at once rather than at `tmst`. Its
//! gateway EUI ([`gateway_eui`]) is derived from the source's name, allowed by the source without
//! being listed in `gateways`, and logged. Each device sends every `simulate_interval` (an OTAA device
//! joins first, and again every [`JOIN_RETRY`] until a JoinAccept arrives). It stops with the source.
//!
//! Bounds: at most `crate::lorawan::settings::MAX_SIMULATED_DEVICES` devices; one datagram buffer;
//! nothing it receives is kept beyond the device that takes it.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::region::{RegionParams, Rx1Rule};
use super::semtech::{PULL_RESP, VERSION};
use super::semtech_gateway::{self, FromServer, HeardPacket};
use super::server::{NetworkServer, ServedDevice};
use super::settings::{LorawanDevice, SemtechUdpConfig};
use super::simulated_device::{Received, SimulatedDevice};
use crate::decode::PayloadFormat;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::simulator::seed_from_name;

/// How long an OTAA device waits for its JoinAccept before it asks again (JOIN_ACCEPT_DELAY2 and a
/// margin).
pub const JOIN_RETRY: Duration = Duration::from_secs(10);
/// The delay between the forwarder's first PULL_DATA and its devices' first frames.
const FIRST_FRAME_AFTER: Duration = Duration::from_millis(500);
/// The delay between a JoinAccept and the device's first uplink.
const FIRST_UPLINK_AFTER_JOIN: Duration = Duration::from_secs(1);

/// The data rate of every simulated uplink (SF7BW125: DR5 in EU868).
const UPLINK_SPREADING_FACTOR: u8 = 7;
const UPLINK_BANDWIDTH_KHZ: u16 = 125;

/// The simulated forwarder's EUI for the source `source`: `00005efffe` and three bytes of the name's
/// hash (00-00-5E is IANA's, never a vendor's).
pub fn gateway_eui(source: &str) -> u64 {
    0x0000_5eff_fe00_0000 | (seed_from_name(source) & 0x00ff_ffff)
}

/// A running simulation: its gateway's EUI; dropping it stops the forwarder.
pub struct Simulation {
    pub gateway: u64,
    _stop: DropGuard,
}

/// Starts the forwarder of the devices `udp.simulate` names (`None` when it names none, or none of
/// them is served), sending to the source's socket bound at `bound`. A device resumes the session the
/// server holds of it (see [`SimulatedDevice::new`]): after a restart it goes on without joining.
pub fn start(
    source: &str,
    udp: &SemtechUdpConfig,
    server: &NetworkServer,
    decoders: &[LorawanDevice],
    region: &'static RegionParams,
    bound: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<Simulation> {
    let devices: Vec<SimulatedDevice> = udp
        .simulate
        .iter()
        .filter_map(|name| {
            let index =
                (0..decoders.len()).find(|&i| server.device(i).is_some_and(|d| &d.name == name))?;
            let served: &ServedDevice = server.device(index)?;
            Some(SimulatedDevice::new(
                served,
                lpp_fport(&decoders[index]),
                server.session(index),
            ))
        })
        .collect();
    if devices.is_empty() {
        return None;
    }
    let gateway = gateway_eui(source);
    let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
    log::info!(
        source = source;
        "LoRaWAN simulation: gateway {gateway:016x} on 127.0.0.1 forwards {} every {} (allowed without being in gateways)",
        names.join(", "),
        humantime::format_duration(udp.simulate_interval)
    );
    let stop = shutdown.child_token();
    let forwarder = Forwarder {
        source: source.to_string(),
        gateway,
        target: semtech_gateway::destination(bound),
        interval: udp.simulate_interval,
        keepalive: udp.keepalive,
        channels: uplink_channels(region),
        devices,
        rng: StdRng::seed_from_u64(seed_from_name(source)),
        started: Instant::now(),
        token: 0,
        warnings: RateLimiter::new(Duration::from_secs(60)),
    };
    tokio::spawn(forwarder.run(stop.clone()));
    Some(Simulation {
        gateway,
        _stop: stop.drop_guard(),
    })
}

/// The FPort a device's uplinks use: its first FPort decoded as LPP, else 1 (its default decoder).
fn lpp_fport(device: &LorawanDevice) -> u8 {
    device
        .fports
        .iter()
        .find(|(_, format)| **format == PayloadFormat::Lpp)
        .map_or(1, |(port, _)| *port)
}

/// The frequencies the devices hop over: the region's CFList channels (EU-style regions), or the first
/// eight 125 kHz channels (channel-mask regions).
fn uplink_channels(region: &RegionParams) -> Vec<u32> {
    match region.rx1 {
        Rx1Rule::EightDownlinkChannels {
            first_uplink_hz, ..
        } => (0..8).map(|i| first_uplink_hz + i * 200_000).collect(),
        Rx1Rule::SameChannel if !region.cf_list.is_empty() => region.cf_list.to_vec(),
        Rx1Rule::SameChannel => vec![region.rx2_frequency],
    }
}

struct Forwarder {
    source: String,
    gateway: u64,
    target: SocketAddr,
    interval: Duration,
    keepalive: Duration,
    channels: Vec<u32>,
    devices: Vec<SimulatedDevice>,
    /// Radio conditions (RSSI, SNR, channel), seeded by the source's name.
    rng: StdRng,
    /// Zero of the concentrator's microsecond counter.
    started: Instant,
    token: u16,
    warnings: RateLimiter,
}

impl Forwarder {
    async fn run(mut self, stop: CancellationToken) {
        let local = match self.target {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        };
        let socket = match UdpSocket::bind(local).await {
            Ok(socket) => socket,
            Err(error) => {
                log::error!(source = self.source.as_str(); "LoRaWAN simulation not started: cannot bind {local}: {error}");
                return;
            }
        };
        let mut keepalive = tokio::time::interval(self.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first = tokio::time::Instant::now() + FIRST_FRAME_AFTER;
        let spacing = self.interval / self.devices.len().max(1) as u32;
        let mut due: Vec<tokio::time::Instant> = (0..self.devices.len())
            .map(|i| first + spacing * i as u32)
            .collect();
        let mut buffer = vec![0u8; 65_536];
        loop {
            let (next, at) = due
                .iter()
                .copied()
                .enumerate()
                .min_by_key(|(_, at)| *at)
                .unwrap_or((0, tokio::time::Instant::now() + self.interval));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = keepalive.tick() => {
                    let pull = semtech_gateway::pull_data(self.next_token(), self.gateway);
                    self.send(&socket, &pull).await;
                }
                _ = tokio::time::sleep_until(at) => {
                    if let Some(slot) = due.get_mut(next) {
                        *slot = self.device_turn(&socket, next).await;
                    }
                }
                received = socket.recv_from(&mut buffer) => {
                    if let Ok((len, from)) = received {
                        if from == self.target {
                            if let Some((device, joined)) = self.on_datagram(&socket, &buffer[..len]).await {
                                if joined {
                                    if let Some(slot) = due.get_mut(device) {
                                        *slot = tokio::time::Instant::now() + FIRST_UPLINK_AFTER_JOIN;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Device `index` sends (its JoinRequest, or an uplink); returns when it sends next.
    async fn device_turn(&mut self, socket: &UdpSocket, index: usize) -> tokio::time::Instant {
        let now = SystemTime::now();
        let Some(device) = self.devices.get_mut(index) else {
            return tokio::time::Instant::now() + self.interval;
        };
        let (phy, wait) = if device.joined() {
            (device.uplink(now), self.interval)
        } else {
            (device.join_request(), JOIN_RETRY)
        };
        if let Some(phy) = phy {
            let push = self.push_data(&phy);
            self.send(socket, &push).await;
        }
        tokio::time::Instant::now() + wait
    }

    /// A datagram from the source: a PULL_RESP is acknowledged and its frame offered to the devices.
    /// Returns the device that took it and whether it joined with it.
    async fn on_datagram(&mut self, socket: &UdpSocket, datagram: &[u8]) -> Option<(usize, bool)> {
        let [version, token_high, token_low, identifier, ..] = datagram else {
            return None;
        };
        if *version != VERSION || *identifier != PULL_RESP {
            return None;
        }
        let token = u16::from_be_bytes([*token_high, *token_low]);
        self.send(socket, &semtech_gateway::tx_ack(token, self.gateway, None))
            .await;
        let Ok(FromServer::PullResp { txpk, .. }) = semtech_gateway::parse(datagram) else {
            return None;
        };
        let phy = txpk.phy;
        self.devices
            .iter_mut()
            .enumerate()
            .find_map(|(index, device)| match device.receive(&phy) {
                Received::Joined { dev_addr } => {
                    log::info!(
                        source = self.source.as_str();
                        "LoRaWAN simulation: {} received its JoinAccept (DevAddr {dev_addr:08x})",
                        device.name
                    );
                    Some((index, true))
                }
                Received::Data { fcnt, ack } => {
                    log::debug!(
                        source = self.source.as_str();
                        "LoRaWAN simulation: {} received downlink {fcnt} (ack {ack})",
                        device.name
                    );
                    Some((index, false))
                }
                Received::NotMine => None,
            })
    }

    /// A new token for a datagram of ours.
    fn next_token(&mut self) -> u16 {
        self.token = self.token.wrapping_add(1);
        self.token
    }

    /// PUSH_DATA with `phy` received now on a channel of the plan, with plausible radio conditions.
    fn push_data(&mut self, phy: &[u8]) -> Vec<u8> {
        let tmst = (self.started.elapsed().as_micros() & 0xffff_ffff) as u32;
        let frequency = self
            .channels
            .get(self.rng.random_range(0..self.channels.len().max(1)))
            .copied()
            .unwrap_or(868_100_000);
        let rssi: i32 = self.rng.random_range(-95..-55);
        let snr_tenths = self.rng.random_range(-20..=100_i32);
        let heard = HeardPacket {
            tmst,
            frequency_hz: frequency,
            spreading_factor: UPLINK_SPREADING_FACTOR,
            bandwidth_khz: UPLINK_BANDWIDTH_KHZ,
            coding_rate: 5,
            rssi_dbm: rssi as f32,
            snr_db: snr_tenths as f32 / 10.0,
            phy,
        };
        semtech_gateway::push_rxpk(self.next_token(), self.gateway, &heard)
    }

    async fn send(&self, socket: &UdpSocket, datagram: &[u8]) {
        if let Err(error) = socket.send_to(datagram, self.target).await {
            if let Some(suppressed) = self.warnings.admit("send") {
                log::warn!(
                    source = self.source.as_str();
                    "LoRaWAN simulation: sending to {}: {error}{}",
                    self.target,
                    suppressed_suffix(suppressed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::region::Region;

    #[test]
    fn its_gateway_eui_is_stable_per_source_and_marked() {
        assert_eq!(gateway_eui("lorawan"), gateway_eui("lorawan"));
        assert_ne!(gateway_eui("lorawan"), gateway_eui("lns"));
        assert_eq!(gateway_eui("lns") >> 24, 0x0000_005e_fffe);
    }

    #[test]
    fn devices_hop_over_the_regions_uplink_channels() {
        let eu = uplink_channels(Region::Eu868.params());
        assert_eq!(eu.first(), Some(&867_100_000));
        assert_eq!(eu.len(), 5);
        let us = uplink_channels(Region::Us915.params());
        assert_eq!(us.first(), Some(&902_300_000));
        assert_eq!(us.len(), 8);
        for region in [Region::Au915, Region::As923, Region::In865, Region::Kr920] {
            assert!(!uplink_channels(region.params()).is_empty(), "{region:?}");
        }
    }
}
