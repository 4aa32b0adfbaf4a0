//! The simulated air of a simulated chip on a UDP socket (`air = "127.0.0.1:PORT"` on a radio with
//! `backend = "simulator"`), so that nodes living in another process (the tests' independent LoRaWAN
//! device in Python) talk to the daemon's simulated radio: a datagram put on the air is a packet the chip
//! hears (when it is receiving, with the standard IQ polarity); what the chip transmits goes back to the
//! last address that put a packet on the air. Times are the simulator's clock: microseconds since the air
//! opened, stamped when a packet is heard and when the chip starts a transmission. With an air, the
//! built-in simulated nodes of `traffic.rs` do not run.
//!
//! ```text
//! to the air     {"data": "<hex>", "rssi": -80.0, "snr": 7.5}
//! answer         {"heard": true, "at_us": 1234567}
//! from the air   {"sent": "<hex>", "frequency": 868100000, "iq": "inverted"|"standard"|"garbled",
//!                 "at_us": 6234567}
//! ```
//!
//! Bounds: a datagram is at most 64 KiB; one that does not parse is logged (rate-limited) and dropped;
//! the chip's transmit log is capped by the simulator itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::hal::IqPolarity;
use super::sim_chip::Transmitted;
use super::traffic::{SimChip, Transmission};
use crate::crypto::{parse_hex, to_hex};
use crate::ratelimit::{suppressed_suffix, RateLimiter};

/// One packet put on the air.
#[derive(Debug, Deserialize)]
struct OnTheAir {
    /// The packet, hex.
    data: String,
    #[serde(default = "default_rssi")]
    rssi: f32,
    #[serde(default)]
    snr: f32,
}

fn default_rssi() -> f32 {
    -80.0
}

/// What a transmission looks like on the air.
fn sent(packet: &Transmitted, epoch: Instant) -> serde_json::Value {
    let iq = match packet.iq {
        Some(IqPolarity::Standard) => "standard",
        Some(IqPolarity::Inverted) => "inverted",
        None => "garbled",
    };
    serde_json::json!({
        "sent": to_hex(&packet.bytes),
        "frequency": packet.frequency_hz,
        "iq": iq,
        "at_us": micros_since(epoch, packet.at),
    })
}

fn micros_since(epoch: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(epoch).as_micros() as u64
}

/// Serves the air on `addr` until `stop`; logs and returns when it cannot be bound.
pub async fn serve(chip: SimChip, addr: SocketAddr, stop: CancellationToken) {
    let socket = match UdpSocket::bind(addr).await {
        Ok(socket) => socket,
        Err(error) => {
            log::error!("simulated radio: cannot open its air on {addr}: {error}");
            return;
        }
    };
    let epoch = Instant::now();
    let transmitted = chip.on_transmit();
    let warnings = RateLimiter::new(Duration::from_secs(60));
    let mut listener: Option<SocketAddr> = None;
    let mut buffer = vec![0u8; 65_536];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut buffer) => {
                let Ok((len, from)) = received else { continue };
                let packet = serde_json::from_slice::<OnTheAir>(&buffer[..len])
                    .ok()
                    .and_then(|p| Some((parse_hex(&p.data).ok()?, p.rssi, p.snr)));
                let Some((bytes, rssi_dbm, snr_db)) = packet else {
                    if let Some(suppressed) = warnings.admit("air") {
                        log::warn!("simulated radio: a datagram on its air is not {{\"data\": \"<hex>\", ...}}{}", suppressed_suffix(suppressed));
                    }
                    continue;
                };
                listener = Some(from);
                let heard = chip.inject(&Transmission { bytes, rssi_dbm, snr_db, crc_ok: true });
                let answer = serde_json::json!({ "heard": heard, "at_us": micros_since(epoch, Instant::now()) });
                let _ = socket.send_to(answer.to_string().as_bytes(), from).await;
            }
            _ = transmitted.notified() => {
                for packet in chip.take_transmitted() {
                    if let Some(to) = listener {
                        let _ = socket.send_to(sent(&packet, epoch).to_string().as_bytes(), to).await;
                    }
                }
            }
        }
    }
}
