//! The gateway's own radio as a single-channel LoRaWAN packet forwarder (`payload = "lorawan"` on an
//! `sx1276`/`sx1262` source): the radio run loop of `crate::source::radio` receives on its one channel
//! (sync word 0x34, standard IQ) and this task speaks the Semtech UDP protocol v2 to the daemon's own
//! semtech-udp source over the loopback, exactly as a concentrator's `lora_pkt_fwd` would: PULL_DATA
//! every `keepalive` of that source, one PUSH_DATA `rxpk` per packet (its `tmst` from a local microsecond counter
//! stamped at RxDone), a `stat` every [`STAT_INTERVAL`], and each PULL_RESP `txpk` transmitted on the
//! radio at its `tmst` (or at once with `imme`) with the IQ polarity it asks for (inverted, for every
//! LoRaWAN downlink), answered by TX_ACK `NONE` or its refusal (TOO_LATE, TOO_EARLY, COLLISION_PACKET,
//! TX_FREQ for another channel or data rate than the radio's). The network server thereby treats the
//! radio as one more gateway: dedup with the LAN's gateways, joins, ACKs and downlinks come for free.
//!
//! It never decodes a frame and never publishes: packets go to the network server, the radio's link
//! state (`Up`, `Lost`) and frame errors go to the pipeline as any radio's. The server's address is
//! handed over in-process when its socket is bound ([`ServerAddress`]), and followed if it changes.
//! Bounds: at most [`MAX_SCHEDULED`] downlinks wait for their time (more are refused COLLISION_PACKET),
//! RxDone stamps are kept for at most [`MAX_STAMPS`] packets. Refused downlinks are counted by the
//! server from their TX_ACKs (`tx_errors` in `{base}/gateway/stats`); refusals, malformed datagrams from
//! the server and downlinks due while the radio is down are logged here, rate-limited.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::semtech_gateway::{
    self, DownlinkRequest, FromServer, GatewayStat, HeardPacket, TxRefusal,
};
use crate::lock::lock;
use crate::model::Packet;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::radio::{self, IqPolarity, RadioBackend, RadioSettings, Wakeup};
use crate::source::transmit::{CommandPort, CommandQueue, TxRequest};
use crate::source::{SourceContext, SourceEvent};

/// How often it sends a `stat` object.
pub const STAT_INTERVAL: Duration = Duration::from_secs(30);
/// Downlinks scheduled at most (a Class A network has one or two per uplink in flight).
pub const MAX_SCHEDULED: usize = 8;
/// RxDone stamps kept for packets the forwarder has not taken yet.
pub const MAX_STAMPS: usize = 32;
/// The furthest ahead a downlink may be scheduled: the second join window (6 s) plus a margin, as
/// `lora_pkt_fwd`'s just-in-time queue allows.
pub const MAX_ADVANCE: Duration = Duration::from_secs(7);
/// How early a downlink is handed to the radio thread, which then waits for its instant itself (a
/// thread's timed wait is far more precise than the async runtime's timer under load).
const HANDOVER_LEAD: Duration = Duration::from_millis(10);
/// Frequencies closer than this to the radio's are its channel (the protocol writes MHz as decimals).
const FREQUENCY_TOLERANCE_HZ: u32 = 100;

/// Where the semtech-udp source's socket is bound, once it is (`None` before): the source sends it, each
/// forwarder of its radios watches it.
pub type ServerAddress = watch::Receiver<Option<SocketAddr>>;

/// What a forwarder runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwarderSettings {
    pub radio: RadioSettings,
    pub backend: RadioBackend,
    /// The EUI it speaks as.
    pub gateway_eui: u64,
    /// How often it pulls: its server's `keepalive`, so that the server sees it online.
    pub keepalive: Duration,
}

/// A microsecond counter from `epoch`, wrapping at 2^32 as a concentrator's does (about 71 minutes).
fn counter_at(epoch: Instant, at: Instant) -> u32 {
    at.saturating_duration_since(epoch).as_micros() as u32
}

/// One downlink waiting for its time.
#[derive(Debug, Clone, PartialEq)]
struct Scheduled {
    /// When it starts, as an offset from the counter's epoch.
    start: Duration,
    /// Its time on air.
    airtime: Duration,
    phy: Vec<u8>,
    polarity: IqPolarity,
}

/// Decides where a downlink goes: refused (and why), or its start from the counter's epoch. `now` is the
/// counter's reading now (as a duration from its epoch), `scheduled` what is already waiting. Pure.
fn plan(
    request: &DownlinkRequest,
    radio: &RadioSettings,
    now: Duration,
    scheduled: &[Scheduled],
) -> Result<Scheduled, TxRefusal> {
    if request.frequency_hz.abs_diff(radio.frequency_hz) > FREQUENCY_TOLERANCE_HZ
        || request.spreading_factor != radio.spreading_factor
        || u32::from(request.bandwidth_khz) * 1000 != radio.bandwidth_hz
    {
        return Err(TxRefusal::TxFreq);
    }
    let start = if request.immediate {
        now
    } else {
        let now_counter = now.as_micros() as u32;
        let ahead = request.tmst.wrapping_sub(now_counter) as i32;
        if ahead < 0 {
            return Err(TxRefusal::TooLate);
        }
        let ahead = Duration::from_micros(ahead as u64);
        if ahead > MAX_ADVANCE {
            return Err(TxRefusal::TooEarly);
        }
        now + ahead
    };
    let airtime = radio::time_on_air(radio, request.phy.len());
    let overlaps = scheduled
        .iter()
        .any(|other| start < other.start + other.airtime && other.start < start + airtime);
    if overlaps || scheduled.len() >= MAX_SCHEDULED {
        return Err(TxRefusal::CollisionPacket);
    }
    Ok(Scheduled {
        start,
        airtime,
        phy: request.phy.clone(),
        polarity: if request.inverted_iq {
            IqPolarity::Inverted
        } else {
            IqPolarity::Standard
        },
    })
}

/// The radio thread's end of the forwarder: one transmission handed over at its time, and the instant
/// of each RxDone.
struct RadioPort {
    name: String,
    request: Mutex<Option<TxRequest>>,
    doorbell: Mutex<Option<Wakeup>>,
    link: AtomicBool,
    ready: Notify,
    stamps: Mutex<VecDeque<Instant>>,
}

impl RadioPort {
    /// Hands `request` to the radio thread and wakes it; a request still waiting (the thread is busy
    /// transmitting) is answered as failed.
    fn hand_over(&self, request: TxRequest) {
        if let Some(stale) = lock(&self.request).replace(request) {
            let _ = stale
                .done
                .send(Err("replaced by the next downlink".to_string()));
        }
        self.ready.notify_one();
        if let Some(line) = lock(&self.doorbell).as_ref() {
            line.poke();
        }
    }

    /// The RxDone instant of the oldest packet not taken yet.
    fn take_stamp(&self) -> Option<Instant> {
        lock(&self.stamps).pop_front()
    }
}

impl CommandQueue for RadioPort {
    fn set_link(&self, up: bool) {
        self.link.store(up, Ordering::SeqCst);
        if !up {
            if let Some(request) = lock(&self.request).take() {
                let _ = request.done.send(Err("the radio is down".to_string()));
            }
        }
    }

    fn heard(&self, _packet: &Packet) {
        let mut stamps = lock(&self.stamps);
        if stamps.len() >= MAX_STAMPS {
            stamps.pop_front();
        }
        stamps.push_back(Instant::now());
    }

    /// No commands queue here: the network server sends its downlinks through PULL_RESP.
    fn heard_device(&self, _address: &str) -> bool {
        false
    }

    fn take_request(&self) -> Option<TxRequest> {
        lock(&self.request).take()
    }

    fn request_ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.ready.notified())
    }

    fn set_doorbell(&self, line: Option<Wakeup>) {
        *lock(&self.doorbell) = line;
    }

    fn source(&self) -> &str {
        &self.name
    }
}

/// Waits until the server's socket is bound; `None` at shutdown or when its source is gone for good.
async fn server_address(ctx: &SourceContext, server: &mut ServerAddress) -> Option<SocketAddr> {
    loop {
        if let Some(bound) = *server.borrow_and_update() {
            return Some(semtech_gateway::destination(bound));
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            changed = server.changed() => if changed.is_err() {
                log::error!(source = ctx.name.as_str(); "LoRaWAN forwarder: its network server is not running; the radio stays off");
                ctx.shutdown.cancelled().await;
                return None;
            },
        }
    }
}

/// `stat.time` as `lora_pkt_fwd` writes it: `2026-12-06 22:18:30 GMT`.
fn stat_time(now: SystemTime) -> String {
    humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace('T', " ")
        .replace('Z', " GMT")
}

/// Runs the radio and its forwarder until shutdown.
pub async fn run(ctx: SourceContext, settings: ForwarderSettings, mut server: ServerAddress) {
    let Some(mut to) = server_address(&ctx, &mut server).await else {
        return;
    };
    let local: SocketAddr = match to.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = match UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(error) => {
            let reason = format!("LoRaWAN forwarder: cannot open a UDP socket: {error}");
            log::error!(source = ctx.name.as_str(); "{reason}");
            if ctx.emit_lost(reason).await {
                ctx.shutdown.cancelled().await;
            }
            return;
        }
    };
    log::info!(source = ctx.name.as_str(); "LoRaWAN forwarder: gateway {:016x} forwarding to {to}", settings.gateway_eui);
    let port = Arc::new(RadioPort {
        name: ctx.name.clone(),
        request: Mutex::new(None),
        doorbell: Mutex::new(None),
        link: AtomicBool::new(false),
        ready: Notify::new(),
        stamps: Mutex::new(VecDeque::new()),
    });
    let (events_tx, mut events) = mpsc::channel::<SourceEvent>(64);
    let radio_ctx = SourceContext {
        name: ctx.name.clone(),
        out: events_tx,
        shutdown: ctx.shutdown.child_token(),
    };
    let radio_task = tokio::spawn(radio::run_with_commands(
        radio_ctx.clone(),
        settings.radio.clone(),
        settings.backend.clone(),
        Some(CommandPort::new(port.clone())),
    ));
    let mut forwarder = Forwarder {
        epoch: Instant::now(),
        gateway: settings.gateway_eui,
        radio: settings.radio,
        port,
        token: 0,
        stat: GatewayStat::default(),
        pushed: 0,
        acknowledged: 0,
        scheduled: Vec::new(),
        warnings: RateLimiter::new(Duration::from_secs(60)),
    };
    let mut keepalive = tokio::time::interval(settings.keepalive);
    let mut stat =
        tokio::time::interval_at(tokio::time::Instant::now() + STAT_INTERVAL, STAT_INTERVAL);
    let mut buffer = vec![0u8; 65_536];
    loop {
        let next_downlink = forwarder.next_start();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            _ = keepalive.tick() => {
                let datagram = semtech_gateway::pull_data(forwarder.next_token(), forwarder.gateway);
                forwarder.send(&socket, &datagram, to).await;
            }
            _ = stat.tick() => {
                let datagram = forwarder.stat_datagram();
                forwarder.send(&socket, &datagram, to).await;
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                if let SourceEvent::Packet(packet) = event {
                    if let Some(datagram) = forwarder.uplink(&packet) {
                        forwarder.send(&socket, &datagram, to).await;
                    }
                } else if !ctx.emit(event).await {
                    break;
                }
            }
            received = socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) if from == to => {
                    if let Some(answer) = forwarder.on_server_datagram(&buffer[..len]) {
                        forwarder.send(&socket, &answer, to).await;
                    }
                }
                Ok(_) => {}
                Err(error) => forwarder.warn("recv", format!("receiving: {error}")),
            },
            _ = sleep_until_or_forever(next_downlink) => forwarder.start_due(),
            changed = server.changed() => match changed {
                Ok(()) => {
                    if let Some(bound) = *server.borrow_and_update() {
                        to = semtech_gateway::destination(bound);
                        log::info!(source = ctx.name.as_str(); "LoRaWAN forwarder: forwarding to {to}");
                    }
                }
                // The server's source is gone (the daemon is stopping): wait for the shutdown.
                Err(_) => {
                    ctx.shutdown.cancelled().await;
                    break;
                }
            },
        }
    }
    radio_ctx.shutdown.cancel();
    let _ = radio_task.await;
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The forwarder's state between events.
struct Forwarder {
    /// The counter's zero.
    epoch: Instant,
    gateway: u64,
    radio: RadioSettings,
    port: Arc<RadioPort>,
    token: u16,
    stat: GatewayStat,
    /// PUSH_DATA sent and acknowledged since the last `stat`.
    pushed: u32,
    acknowledged: u32,
    /// Downlinks waiting for their start, soonest first.
    scheduled: Vec<Scheduled>,
    warnings: RateLimiter,
}

impl Forwarder {
    fn next_token(&mut self) -> u16 {
        self.token = self.token.wrapping_add(1);
        self.token
    }

    fn warn(&self, kind: &str, message: String) {
        if let Some(suppressed) = self.warnings.admit(kind) {
            log::warn!(
                "LoRaWAN forwarder: {message}{}",
                suppressed_suffix(suppressed)
            );
        }
    }

    async fn send(&self, socket: &UdpSocket, datagram: &[u8], to: SocketAddr) {
        if let Err(error) = socket.send_to(datagram, to).await {
            self.warn("send", format!("sending to {to}: {error}"));
        }
    }

    /// The PUSH_DATA of one packet the radio heard, stamped with its RxDone.
    fn uplink(&mut self, packet: &Packet) -> Option<Vec<u8>> {
        let meta = packet.radio.as_ref()?;
        let at = self.port.take_stamp().unwrap_or_else(Instant::now);
        self.stat.received += 1;
        self.stat.received_ok += 1;
        self.stat.forwarded += 1;
        self.pushed += 1;
        let heard = HeardPacket {
            tmst: counter_at(self.epoch, at),
            frequency_hz: meta.frequency_hz,
            spreading_factor: meta.spreading_factor,
            bandwidth_khz: (self.radio.bandwidth_hz / 1000) as u16,
            coding_rate: self.radio.coding_rate,
            rssi_dbm: meta.rssi_dbm,
            snr_db: meta.snr_db,
            phy: &packet.bytes,
        };
        let token = self.next_token();
        Some(semtech_gateway::push_rxpk(token, self.gateway, &heard))
    }

    fn stat_datagram(&mut self) -> Vec<u8> {
        self.stat.acknowledged_percent = if self.pushed == 0 {
            100.0
        } else {
            100.0 * self.acknowledged as f32 / self.pushed as f32
        };
        let datagram = semtech_gateway::push_stat(
            self.next_token(),
            self.gateway,
            &stat_time(SystemTime::now()),
            &self.stat,
        );
        self.stat = GatewayStat::default();
        self.pushed = 0;
        self.acknowledged = 0;
        datagram
    }

    /// A datagram from the server; the TX_ACK to send back for a PULL_RESP.
    fn on_server_datagram(&mut self, datagram: &[u8]) -> Option<Vec<u8>> {
        match semtech_gateway::parse(datagram) {
            Ok(FromServer::PushAck { .. }) => {
                self.acknowledged += 1;
                None
            }
            Ok(FromServer::PullAck { .. }) => None,
            Ok(FromServer::PullResp { token, txpk }) => {
                self.stat.downlinks += 1;
                let now = self.epoch.elapsed();
                let refusal = match plan(&txpk, &self.radio, now, &self.scheduled) {
                    Ok(scheduled) => {
                        let at = self
                            .scheduled
                            .partition_point(|s| s.start <= scheduled.start);
                        self.scheduled.insert(at, scheduled);
                        None
                    }
                    Err(refusal) => {
                        self.warn("refused", format!("downlink refused: {}", refusal.name()));
                        Some(refusal)
                    }
                };
                Some(semtech_gateway::tx_ack(token, self.gateway, refusal))
            }
            Err(error) => {
                self.warn(
                    "malformed",
                    format!("malformed datagram from the server: {error}"),
                );
                None
            }
        }
    }

    /// When the next downlink is handed to the radio thread: [`HANDOVER_LEAD`] before it starts.
    fn next_start(&self) -> Option<tokio::time::Instant> {
        let first = self.scheduled.first()?;
        let start = self.epoch + first.start;
        Some(tokio::time::Instant::from_std(
            start.checked_sub(HANDOVER_LEAD).unwrap_or(start),
        ))
    }

    /// Hands the downlinks whose time has (nearly) come to the radio thread, each with its instant.
    fn start_due(&mut self) {
        let now = self.epoch.elapsed() + HANDOVER_LEAD;
        while self.scheduled.first().is_some_and(|s| s.start <= now) {
            let due = self.scheduled.remove(0);
            if !self.port.link.load(Ordering::SeqCst) {
                self.warn(
                    "down",
                    "a downlink came due while the radio is down: not sent".to_string(),
                );
                continue;
            }
            let (done, _) = oneshot::channel();
            let (acknowledged, _) = oneshot::channel();
            self.stat.transmitted += 1;
            // The network server addressed and encoded it; the radio only sends it at its instant.
            self.port.hand_over(TxRequest {
                address: String::new(),
                bytes: due.phy,
                fport: None,
                polarity: due.polarity,
                start_at: Some(self.epoch + due.start),
                done,
                acknowledged,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tmst: u32, frequency_hz: u32, spreading_factor: u8) -> DownlinkRequest {
        DownlinkRequest {
            immediate: false,
            tmst,
            frequency_hz,
            spreading_factor,
            bandwidth_khz: 125,
            power_dbm: Some(14),
            inverted_iq: true,
            phy: vec![0x20; 17],
        }
    }

    #[test]
    fn a_downlink_on_the_radios_channel_is_scheduled_at_its_tmst() {
        let radio = RadioSettings::default();
        let now = Duration::from_secs(10);
        let planned = plan(&request(15_000_000, 868_100_000, 7), &radio, now, &[]).unwrap();
        assert_eq!(planned.start, Duration::from_secs(15));
        assert_eq!(planned.polarity, IqPolarity::Inverted);
        assert_eq!(planned.airtime, radio::time_on_air(&radio, 17));
        // Its wrapped counter: 2^32 us after the epoch the counter reads small again.
        let wrapped_now = Duration::from_micros(u64::from(u32::MAX) - 1_000);
        let planned = plan(
            &request(1_000_000, 868_100_000, 7),
            &radio,
            wrapped_now,
            &[],
        )
        .unwrap();
        assert_eq!(
            planned.start,
            wrapped_now + Duration::from_micros(1_001_001)
        );
    }

    #[test]
    fn downlinks_it_cannot_send_are_refused_with_the_protocols_errors() {
        let radio = RadioSettings::default();
        let now = Duration::from_secs(10);
        let refused = |r: &DownlinkRequest, scheduled: &[Scheduled]| {
            plan(r, &radio, now, scheduled).unwrap_err()
        };
        assert_eq!(
            refused(&request(9_999_000, 868_100_000, 7), &[]),
            TxRefusal::TooLate
        );
        assert_eq!(
            refused(&request(17_500_000, 868_100_000, 7), &[]),
            TxRefusal::TooEarly
        );
        // RX2 of EU868 (869.525 MHz, SF12) is not the radio's channel.
        assert_eq!(
            refused(&request(12_000_000, 869_525_000, 12), &[]),
            TxRefusal::TxFreq
        );
        assert_eq!(
            refused(&request(12_000_000, 868_100_000, 9), &[]),
            TxRefusal::TxFreq
        );
        let first = plan(&request(12_000_000, 868_100_000, 7), &radio, now, &[]).unwrap();
        assert_eq!(
            refused(
                &request(12_010_000, 868_100_000, 7),
                std::slice::from_ref(&first)
            ),
            TxRefusal::CollisionPacket
        );
        let later = plan(
            &request(12_500_000, 868_100_000, 7),
            &radio,
            now,
            std::slice::from_ref(&first),
        );
        assert!(later.is_ok());
        let full = vec![first; MAX_SCHEDULED];
        let mut far = full.clone();
        for (i, s) in far.iter_mut().enumerate() {
            s.start = Duration::from_secs(20 + i as u64);
        }
        assert_eq!(
            refused(&request(12_000_000, 868_100_000, 7), &far),
            TxRefusal::CollisionPacket
        );
        let mut immediate = request(0, 868_100_000, 7);
        immediate.immediate = true;
        assert_eq!(plan(&immediate, &radio, now, &[]).unwrap().start, now);
    }

    #[test]
    fn the_stat_time_reads_as_the_forwarders() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_595_510);
        assert_eq!(stat_time(at), "2026-12-06 22:18:30 GMT");
    }
}
