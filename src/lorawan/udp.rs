//! The `kind = "semtech-udp"` source: a UDP socket on `bind` speaking the packet forwarder protocol to
//! the gateways allowed by `gateways`. PUSH_DATA is acknowledged and its packets go through the dedup
//! window into the network server (`server.rs`); accepted uplinks become readings decoded with the
//! device's own decoder; JoinAccepts and ACKs go back as PULL_RESP to the address of the last
//! PULL_DATA of the gateway that heard the device best, in RX1, and again in RX2 when the gateway's
//! TX_ACK says RX1 was not possible (TOO_LATE, TOO_EARLY, COLLISION_PACKET...). Sessions are written through `persist.rs` on a
//! blocking thread when a counter mark is passed or a device joins, and at a clean stop with the
//! counters exactly. Each gateway's availability (`gateway_watch.rs`: online from its first PULL_DATA,
//! offline after missed keepalives, with the devices only it heard) is emitted as
//! `SourceEvent::GatewayAvailability` and shown as `online` in its stats.
//!
//! Commands (`commands = true`): when an accepted uplink's device has commands queued, the task tells
//! its [`CommandPort`] (`heard_device`), waits at most [`COMMAND_WAIT`] for the dispatcher's request
//! and sends that command in the uplink's RX1 (RX2 on a TX_ACK error) in place of the server's own
//! downlink, whose ACK and MAC answers it carries (`NetworkServer::with_command`); one command per
//! uplink. A request handed over outside such a moment is answered as failed (back into its queue). Its
//! answer comes with the gateway's TX_ACK, or after [`TX_ACK_WAIT`] without one. A confirmed command
//! (`downlink_confirmed`) is sent again after each uplink without the ACK bit, [`CONFIRMED_TRANSMISSIONS`]
//! times in all, and its end (acknowledged or given up) is answered on the request's second channel.
//! Every downlink is charged to its gateway's duty cycle (`airtime.rs`): a command that does not fit
//! stays queued, a JoinAccept or ACK that does not fit is dropped and counted.
//!
//! Bounds: datagrams from gateways not allowed are dropped and counted; malformed datagrams are counted
//! and never stop the task; the dedup window holds at most [`MAX_PENDING_UPLINKS`] uplinks; at most
//! [`counters::MAX_GATEWAYS`] gateway addresses are kept. Log lines are rate-limited per kind.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::airtime::{downlink_airtime, GatewayAirtime};
use super::codecs::{CodecDone, DeviceCodecs};
use super::counters::{self, LorawanCounters};
use super::dedup::{Dedup, Heard, Offered};
use super::gateway_watch::{GatewayChange, GatewayWatch};
use super::payload::{decode_fields, Fields};
use super::persist;
use super::semtech::{self, FromGateway, Txpk};
use super::server::{
    Accepted, CommandFrame, Downlink, NetworkServer, Outcome, ServedDevice, ServerSettings,
};
use super::settings::{Gateways, LorawanDevice, SemtechUdpConfig};
use super::RxMeta;
use crate::model::{LorawanMeta, RadioMeta, Reading};
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::transmit::{AckResult, CommandPort, TxRequest, TxResult};
use crate::source::{SourceContext, SourceEvent};
use crate::statefile::StateFile;

/// Uplinks waiting in the dedup window at most.
pub const MAX_PENDING_UPLINKS: usize = 1024;
/// Transmit power of downlinks, dBm (EU868's 14 dBm ERP default).
pub const DOWNLINK_POWER_DBM: u8 = 14;
/// Downlinks remembered until their gateway's TX_ACK (to move them to RX2 when RX1 failed).
pub const MAX_AWAITING_ACK: usize = 64;
/// How long an accepted uplink's answer waits for a command of its device (the dispatcher hands it
/// within milliseconds; RX1 is a second or more after the uplink).
pub const COMMAND_WAIT: Duration = Duration::from_millis(50);
/// How long a command's downlink waits for its gateway's TX_ACK before it counts as sent (a forwarder
/// may send none).
pub const TX_ACK_WAIT: Duration = Duration::from_secs(3);
/// Transmissions of one confirmed downlink at most: the first and this many less one again, each after
/// an uplink without the ACK bit.
pub const CONFIRMED_TRANSMISSIONS: u8 = 3;
/// Delay before binding again after the socket could not be bound.
const REBIND_DELAY: Duration = Duration::from_secs(5);

/// What the source task is started with.
#[derive(Debug, Clone)]
pub struct LorawanStart {
    pub server: ServerSettings,
    pub udp: SemtechUdpConfig,
    pub dedup_window: Duration,
    /// Each device with its keys and its decoders, in configuration order.
    pub devices: Vec<(ServedDevice, LorawanDevice)>,
    pub state_dir: PathBuf,
    pub counters: Arc<LorawanCounters>,
    /// Told the socket's address once bound: the daemon's own radios forward to it (`forwarder.rs`).
    pub bound: Arc<tokio::sync::watch::Sender<Option<SocketAddr>>>,
}

impl LorawanStart {
    /// Whether `other` runs the same server (settings, socket, devices and keys); counters aside.
    pub fn same_setup(&self, other: &LorawanStart) -> bool {
        self.server == other.server
            && self.udp == other.udp
            && self.dedup_window == other.dedup_window
            && self.devices == other.devices
            && self.state_dir == other.state_dir
    }
}

/// Runs the source until shutdown; with `commands`, its devices get the commands queued for them in
/// the receive window after their uplinks.
pub async fn run(ctx: SourceContext, start: LorawanStart, commands: Option<CommandPort>) {
    let Some(mut task) = Task::start(&ctx, start, commands).await else {
        return;
    };
    if let Some(port) = &task.commands {
        port.set_link(true);
    }
    if !ctx
        .emit(SourceEvent::Up {
            source: ctx.name.clone(),
        })
        .await
    {
        return;
    }
    let mut buffer = vec![0u8; 65_536];
    loop {
        let deadline = task
            .dedup
            .next_deadline()
            .map(tokio::time::Instant::from_std);
        let silent_gateway = task
            .watch
            .next_deadline()
            .map(tokio::time::Instant::from_std);
        let unanswered = task
            .awaiting_ack
            .iter()
            .filter_map(|a| a.command.as_ref().map(|c| c.deadline))
            .min();
        tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            request = next_request(&task.commands) => refuse_outside_window(request),
            _ = sleep_until_or_forever(unanswered) => task.answer_unacknowledged(tokio::time::Instant::now()),
            received = task.socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) => {
                    if !task.on_datagram(&ctx, &buffer[..len], from).await {
                        return;
                    }
                }
                Err(error) => task.warn("recv", format!("receiving: {error}")),
            },
            done = task.codecs.next() => {
                if !task.on_codec_done(&ctx, done).await {
                    return;
                }
            }
            _ = sleep_until_or_forever(silent_gateway) => {
                for change in task.watch.expire(Instant::now()) {
                    if !task.announce(&ctx, change).await {
                        return;
                    }
                }
            }
            _ = sleep_until_or_forever(deadline) => {
                for heard in task.dedup.due(Instant::now()) {
                    if !task.on_uplink(&ctx, heard).await {
                        return;
                    }
                }
            }
        }
    }
    if let Some(port) = &task.commands {
        port.set_link(false);
    }
    let records = task.server.exact_records();
    task.store(records).await;
}

/// The next command the dispatcher hands over, or never without commands.
async fn next_request(commands: &Option<CommandPort>) -> TxRequest {
    match commands {
        Some(port) => port.next_request().await,
        None => std::future::pending().await,
    }
}

/// A command handed over while no receive window waits for it: back into its queue.
fn refuse_outside_window(request: TxRequest) {
    let _ = request.done.send(Err(format!(
        "no receive window of {} is open (it opens after the device's next uplink)",
        request.address
    )));
}

/// Binds the socket, retrying every [`REBIND_DELAY`] (the source reported lost meanwhile).
async fn bind(ctx: &SourceContext, addr: SocketAddr) -> Option<UdpSocket> {
    loop {
        match UdpSocket::bind(addr).await {
            Ok(socket) => return Some(socket),
            Err(error) => {
                let reason = format!("cannot bind {addr}: {error}");
                log::error!(source = ctx.name.as_str(); "{reason}; retrying every {}s", REBIND_DELAY.as_secs());
                let lost = SourceEvent::Lost {
                    source: ctx.name.clone(),
                    reason,
                };
                if !ctx.emit(lost).await {
                    return None;
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(REBIND_DELAY) => {}
                }
            }
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A downlink sent, until its gateway's TX_ACK.
struct AwaitingAck {
    token: u16,
    downlink: Downlink,
    /// The command it carries, answered at the TX_ACK (or at its deadline when none comes).
    command: Option<PendingCommand>,
}

/// A command's downlink waiting for its TX_ACK.
struct PendingCommand {
    done: oneshot::Sender<TxResult>,
    airtime: Duration,
    deadline: tokio::time::Instant,
}

/// A confirmed downlink the device has not acknowledged yet.
struct Confirmed {
    fport: u8,
    payload: Vec<u8>,
    transmissions: u8,
    /// Told when the device acknowledges it or it is given up.
    acknowledged: oneshot::Sender<AckResult>,
}

/// A command for a receive window: its downlink, its answer, and what to keep of a confirmed one.
struct WindowCommand {
    downlink: Downlink,
    done: Option<oneshot::Sender<TxResult>>,
    /// A confirmed command's first transmission (a confirmed one sent again has none).
    confirmed: Option<Confirmed>,
}

struct Task {
    codecs: DeviceCodecs,
    socket: UdpSocket,
    gateways: Gateways,
    server: NetworkServer,
    decoders: Vec<LorawanDevice>,
    dedup: Dedup,
    counters: Arc<LorawanCounters>,
    /// `None` after a write thread died (sessions then stay in memory only; logged).
    file: Option<StateFile>,
    /// Where each gateway's last PULL_DATA came from: its downlink path.
    pull_addresses: HashMap<u64, SocketAddr>,
    /// Gateways already logged (with `gateways = ["any"]`).
    seen: HashSet<u64>,
    token: u16,
    /// Downlinks sent and not acknowledged by their gateway yet (bounded: the oldest are forgotten).
    awaiting_ack: std::collections::VecDeque<AwaitingAck>,
    /// The commands' end, with `commands = true`.
    commands: Option<CommandPort>,
    /// Each gateway's duty-cycle budgets.
    airtime: GatewayAirtime,
    /// The confirmed downlink each device has not acknowledged yet, by device index (bounded by the
    /// devices configured).
    unacknowledged: HashMap<usize, Confirmed>,
    warnings: RateLimiter,
    watch: GatewayWatch,
    /// The simulated forwarder of `simulate`, stopped with the task.
    _simulation: Option<super::simulated_forwarder::Simulation>,
}

impl Task {
    /// The stored sessions read (failing closed when they are lost), the socket bound, the codecs
    /// started. `None` when the sessions could not be read or the source stopped while binding.
    async fn start(
        ctx: &SourceContext,
        start: LorawanStart,
        commands: Option<CommandPort>,
    ) -> Option<Task> {
        let dir = start.state_dir.clone();
        let name = ctx.name.clone();
        let loaded = tokio::task::spawn_blocking(move || persist::load(&dir, &name)).await;
        let (file, stored) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                log::error!(source = ctx.name.as_str(); "LoRaWAN sessions could not be read: {error}");
                return None;
            }
        };
        let (served, decoders): (Vec<_>, Vec<_>) = start.devices.into_iter().unzip();
        let (mut server, file) = match stored {
            persist::Stored::Sessions(records) => (
                NetworkServer::new(start.server, served, &records),
                Some(file),
            ),
            // Nothing is written over the damaged copies: every restart fails closed again until reset.
            persist::Stored::Lost => (NetworkServer::new(start.server, served, &[]), None),
        };
        if file.is_none() {
            server.fail_closed();
        }
        let socket = bind(ctx, start.udp.bind).await?;
        start.bound.send_replace(socket.local_addr().ok());
        log::info!(source = ctx.name.as_str(); "LoRaWAN packet forwarders: listening on {}", start.udp.bind);
        let codecs = DeviceCodecs::start(&ctx.name, &decoders);
        let airtime = GatewayAirtime::new(start.server.region);
        let simulation = match socket.local_addr() {
            Ok(bound) => super::simulated_forwarder::start(
                &ctx.name,
                &start.udp,
                &server,
                &decoders,
                start.server.region,
                bound,
                &ctx.shutdown,
            ),
            Err(error) => {
                log::error!(source = ctx.name.as_str(); "LoRaWAN simulation not started: {error}");
                None
            }
        };
        let gateways = match &simulation {
            Some(simulation) => start.udp.gateways.and(simulation.gateway),
            None => start.udp.gateways,
        };
        Some(Task {
            codecs,
            socket,
            gateways,
            _simulation: simulation,
            server,
            decoders,
            dedup: Dedup::new(start.dedup_window, MAX_PENDING_UPLINKS),
            counters: start.counters,
            file,
            pull_addresses: HashMap::new(),
            seen: HashSet::new(),
            token: 0,
            awaiting_ack: std::collections::VecDeque::new(),
            commands,
            airtime,
            unacknowledged: HashMap::new(),
            warnings: RateLimiter::new(Duration::from_secs(60)),
            watch: GatewayWatch::new(start.udp.keepalive),
        })
    }

    fn warn(&self, kind: &str, message: String) {
        if let Some(suppressed) = self.warnings.admit(kind) {
            log::warn!("LoRaWAN: {message}{}", suppressed_suffix(suppressed));
        }
    }

    /// A gateway's availability changed: its stats, and the event the pipeline publishes. Returns false
    /// when the pipeline is gone.
    async fn announce(&self, ctx: &SourceContext, change: GatewayChange) -> bool {
        self.counters
            .gateway(change.gateway, |g| g.online = Some(change.online));
        if !change.online {
            log::warn!(
                source = ctx.name.as_str();
                "LoRaWAN gateway {:016x} is offline: no PULL_DATA for {} keepalive intervals ({} of its devices go offline with it)",
                change.gateway,
                super::gateway_watch::MISSED_KEEPALIVES,
                change.devices_offline.len()
            );
        }
        ctx.emit(SourceEvent::GatewayAvailability {
            source: ctx.name.clone(),
            gateway: change.gateway,
            online: change.online,
            devices_offline: change.devices_offline,
        })
        .await
    }

    /// A codec's reading: its fields, or no fields with the error counted and logged. Returns false
    /// when the pipeline is gone.
    async fn on_codec_done(&self, ctx: &SourceContext, done: CodecDone) -> bool {
        let mut reading = done.reading;
        match done.result {
            Ok(fields) => reading.fields = fields,
            Err(error) => {
                self.counters.count(|c| c.payload_errors += 1);
                self.warn(
                    "payload",
                    format!(
                        "FRMPayload on FPort {} not decoded by the codec: {error}",
                        done.fport
                    ),
                );
            }
        }
        ctx.emit(SourceEvent::Reading {
            reading,
            trigger: false,
        })
        .await
    }

    /// One datagram. Returns false when the pipeline is gone.
    async fn on_datagram(
        &mut self,
        ctx: &SourceContext,
        datagram: &[u8],
        from: SocketAddr,
    ) -> bool {
        let parsed = match semtech::parse(datagram) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.counters.count(|c| c.malformed_datagrams += 1);
                self.warn(
                    "malformed",
                    format!("malformed datagram from {from}: {error}"),
                );
                return true;
            }
        };
        let gateway = match &parsed {
            FromGateway::PushData { gateway, .. }
            | FromGateway::PullData { gateway, .. }
            | FromGateway::TxAck { gateway, .. } => *gateway,
        };
        if !self.gateways.allows(gateway) {
            self.counters.count(|c| c.unknown_gateway_datagrams += 1);
            self.warn(
                "gateway",
                format!("datagram from gateway {gateway:016x} ({from}) dropped: not in gateways"),
            );
            return true;
        }
        if self.gateways == Gateways::Any
            && self.seen.len() < counters::MAX_GATEWAYS
            && self.seen.insert(gateway)
        {
            log::info!("LoRaWAN: new gateway {gateway:016x} at {from}");
        }
        match parsed {
            FromGateway::PushData {
                token,
                rxpk,
                skipped,
                stat,
                ..
            } => {
                self.send(&semtech::push_ack(token), from).await;
                self.on_push_data(gateway, rxpk, skipped, stat);
                true
            }
            FromGateway::PullData { token, .. } => {
                self.send(&semtech::pull_ack(token), from).await;
                self.on_pull_data(ctx, gateway, from).await
            }
            FromGateway::TxAck { token, error, .. } => {
                self.on_tx_ack(gateway, token, error).await;
                true
            }
        }
    }

    /// A PUSH_DATA's packets into deduplication; its skipped entries and `stat` counted.
    fn on_push_data(
        &mut self,
        gateway: u64,
        rxpk: Vec<(Vec<u8>, RxMeta)>,
        skipped: usize,
        stat: Option<serde_json::Value>,
    ) {
        if skipped > 0 {
            self.counters.count(|c| c.rxpk_skipped += skipped as u64);
        }
        if let Some(stat) = stat {
            self.counters.stat(gateway, stat);
        }
        let now = Instant::now();
        for (phy, meta) in rxpk {
            self.counters.gateway(gateway, |g| g.packets += 1);
            match self.dedup.offer(&phy, meta, now) {
                Offered::First => {}
                Offered::Merged => self.counters.count(|c| c.duplicates_merged += 1),
                Offered::Full => self.counters.count(|c| c.dedup_full += 1),
            }
        }
    }

    /// A PULL_DATA: its address becomes the gateway's downlink path (bounded), the gateway alive.
    /// Returns false when the pipeline is gone.
    async fn on_pull_data(&mut self, ctx: &SourceContext, gateway: u64, from: SocketAddr) -> bool {
        if self.pull_addresses.len() < counters::MAX_GATEWAYS
            || self.pull_addresses.contains_key(&gateway)
        {
            self.pull_addresses.insert(gateway, from);
        }
        self.counters.pulled(gateway, SystemTime::now());
        match self.watch.pulled(gateway, Instant::now()) {
            Some(change) => self.announce(ctx, change).await,
            None => true,
        }
    }

    /// A TX_ACK: the downlink it acknowledges forgotten (its command answered as sent); on an error,
    /// counted and the same frame sent again in RX2 when it was an RX1 downlink (else its command goes
    /// back to its queue).
    async fn on_tx_ack(&mut self, gateway: u64, token: u16, error: Option<String>) {
        let position = self.awaiting_ack.iter().position(|a| a.token == token);
        let sent = position.and_then(|i| self.awaiting_ack.remove(i));
        let Some(error) = error else {
            if let Some(command) = sent.and_then(|a| a.command) {
                let _ = command.done.send(Ok(Some(command.airtime)));
            }
            return;
        };
        self.counters
            .count(|c| *c.tx_errors.entry(error.clone()).or_default() += 1);
        let Some(sent) = sent else {
            self.warn(
                "tx",
                format!("gateway {gateway:016x} did not send a downlink: {error}"),
            );
            return;
        };
        // RX1 not possible (too late, a collision...): the same frame in RX2.
        let done = sent.command.map(|c| c.done);
        match sent.downlink.in_rx2() {
            Some(rx2) => {
                self.counters.count(|c| c.rx2_fallbacks += 1);
                self.transmit(&rx2, done).await;
            }
            None => {
                self.warn(
                    "tx",
                    format!("gateway {gateway:016x} did not send a downlink: {error}"),
                );
                if let Some(done) = done {
                    let _ = done.send(Err(format!("the gateway did not send it: {error}")));
                }
            }
        }
    }

    /// The commands whose gateway sent no TX_ACK within [`TX_ACK_WAIT`]: answered as sent (a forwarder
    /// may send no TX_ACK).
    fn answer_unacknowledged(&mut self, now: tokio::time::Instant) {
        for awaiting in &mut self.awaiting_ack {
            if awaiting.command.as_ref().is_some_and(|c| c.deadline <= now) {
                if let Some(command) = awaiting.command.take() {
                    let _ = command.done.send(Ok(Some(command.airtime)));
                }
            }
        }
    }

    /// What goes into the receive window of an accepted uplink: a confirmed command sent again, or the
    /// next command queued for the device, with the server's ACK and MAC answers merged in; else the
    /// server's own downlink (ACK, MAC answers), if any.
    async fn answer_window(&mut self, ctx: &SourceContext, heard: &Heard, accepted: &Accepted) {
        self.settle_confirmed(ctx, accepted);
        if let Some(command) = self.command_downlink(heard, accepted).await {
            if self.transmit(&command.downlink, command.done).await {
                self.counters.count(|c| c.command_downlinks += 1);
                if let Some(first) = command.confirmed {
                    self.unacknowledged.insert(accepted.device, first);
                }
                if let Some(pending) = self.unacknowledged.get_mut(&accepted.device) {
                    pending.transmissions += 1;
                }
                return;
            }
        }
        if let Some(downlink) = &accepted.downlink {
            self.transmit(downlink, None).await;
        }
    }

    /// The device's confirmed downlink, acknowledged by this uplink's ACK bit (counted), or given up
    /// after [`CONFIRMED_TRANSMISSIONS`] (counted and logged).
    fn settle_confirmed(&mut self, ctx: &SourceContext, accepted: &Accepted) {
        let Some(pending) = self.unacknowledged.get(&accepted.device) else {
            return;
        };
        if accepted.acks {
            if let Some(pending) = self.unacknowledged.remove(&accepted.device) {
                let _ = pending.acknowledged.send(Ok(()));
            }
            self.counters.count(|c| c.confirmed_acknowledged += 1);
        } else if pending.transmissions >= CONFIRMED_TRANSMISSIONS {
            if let Some(pending) = self.unacknowledged.remove(&accepted.device) {
                let _ = pending.acknowledged.send(Err(format!(
                    "the device did not acknowledge it in {CONFIRMED_TRANSMISSIONS} transmissions, each after one of its uplinks"
                )));
            }
            self.counters.count(|c| c.confirmed_unacknowledged += 1);
            let name = self.server.device(accepted.device).map(|d| d.name.clone());
            self.warn(
                "unacknowledged",
                format!(
                    "source {}: device {} did not acknowledge a confirmed downlink sent {CONFIRMED_TRANSMISSIONS} times; given up",
                    ctx.name,
                    name.unwrap_or_default()
                ),
            );
        }
    }

    /// The command of this receive window: the device's unacknowledged confirmed downlink sent again,
    /// or the command the dispatcher hands over within [`COMMAND_WAIT`] when one waits for the device
    /// (on the fPort its codec chose, else the device's `downlink_fport`).
    async fn command_downlink(
        &mut self,
        heard: &Heard,
        accepted: &Accepted,
    ) -> Option<WindowCommand> {
        let port = self.commands.clone()?;
        let device = self.decoders.get(accepted.device)?;
        if let Some(pending) = self.unacknowledged.get(&accepted.device) {
            let frame = CommandFrame {
                fport: pending.fport,
                payload: &pending.payload,
                confirmed: true,
            };
            return match self.server.with_command(accepted, heard, frame) {
                Ok(downlink) => Some(WindowCommand {
                    downlink,
                    done: None,
                    confirmed: None,
                }),
                Err(refusal) => {
                    self.warn(
                        "command",
                        format!("confirmed downlink not sent again: {refusal}"),
                    );
                    None
                }
            };
        }
        let address = device.address();
        let (fport, confirmed) = (device.downlink_fport, device.downlink_confirmed);
        if !port.heard_device(&address) {
            return None;
        }
        let request = tokio::time::timeout(COMMAND_WAIT, port.next_request())
            .await
            .ok()?;
        if request.address != address {
            refuse_outside_window(request);
            return None;
        }
        let fport = request.fport.unwrap_or(fport);
        let frame = CommandFrame {
            fport,
            payload: &request.bytes,
            confirmed,
        };
        match self.server.with_command(accepted, heard, frame) {
            Ok(downlink) => Some(WindowCommand {
                downlink,
                done: Some(request.done),
                confirmed: confirmed.then(|| Confirmed {
                    fport,
                    payload: request.bytes.clone(),
                    transmissions: 0,
                    acknowledged: request.acknowledged,
                }),
            }),
            Err(refusal) => {
                let _ = request.done.send(Err(refusal.to_string()));
                None
            }
        }
    }

    async fn send(&self, datagram: &[u8], to: SocketAddr) {
        if let Err(error) = self.socket.send_to(datagram, to).await {
            self.warn("send", format!("sending to {to}: {error}"));
        }
    }

    /// One deduplicated uplink through the server. Returns false when the pipeline is gone.
    async fn on_uplink(&mut self, ctx: &SourceContext, heard: Heard) -> bool {
        let now = SystemTime::now();
        match self.server.handle(&heard, Instant::now(), now) {
            Outcome::Joined { device, downlink } => {
                self.counters.count(|c| c.joins += 1);
                if let (Some(served), Some(session)) =
                    (self.server.device(device), self.server.session(device))
                {
                    log::info!(
                        source = ctx.name.as_str();
                        "LoRaWAN device {} joined as DevAddr {:08x}", served.name, session.dev_addr
                    );
                }
                self.transmit(&downlink, None).await;
                let records = self.server.all_records();
                self.store(records).await;
                true
            }
            Outcome::Data(accepted) => {
                if let Some(device) = self.decoders.get(accepted.device) {
                    self.watch
                        .heard(&device.address(), heard.gateways.iter().copied());
                }
                self.counters.count(|c| {
                    c.uplinks += 1;
                    c.unknown_mac_commands += u64::from(accepted.unknown_mac_commands);
                    c.adr_requests += u64::from(accepted.adr.requested);
                    c.adr_accepted += u64::from(accepted.adr.accepted);
                    c.adr_refused += u64::from(accepted.adr.refused);
                });
                if accepted.adr.refused {
                    let name = self.server.device(accepted.device).map(|d| d.name.clone());
                    self.warn(
                        "adr refused",
                        format!(
                            "device {} refused the data rate, power or channels of a LinkADRReq; not asked the same again for a while",
                            name.unwrap_or_default()
                        ),
                    );
                }
                self.answer_window(ctx, &heard, &accepted).await;
                if let Some(records) = self.server.records_due() {
                    self.store(records).await;
                }
                let Some(reading) = self.reading(ctx, &heard, &accepted, now) else {
                    return true;
                };
                ctx.emit(SourceEvent::Reading {
                    reading,
                    trigger: false,
                })
                .await
            }
            Outcome::Refused(refusal) => {
                self.counters.refused(&refusal, heard.best.gateway);
                log::debug!(source = ctx.name.as_str(); "LoRaWAN uplink refused: {refusal}");
                // Strangers' frames are routine on a shared band: counted per gateway, not logged.
                if !matches!(refusal, super::server::Refusal::UnknownDevAddr(_)) {
                    self.warn(refusal.kind(), format!("uplink refused: {refusal}"));
                }
                true
            }
        }
    }

    /// The reading of an accepted uplink: the FRMPayload decoded with the device's decoder of its
    /// FPort (no fields when it has none or the decoder refuses it: counted). `None` also when the
    /// device's codec decodes it: the reading then comes back from the codec (or is reported at once
    /// when the codec's queue is full).
    fn reading(
        &self,
        ctx: &SourceContext,
        heard: &Heard,
        accepted: &super::server::Accepted,
        now: SystemTime,
    ) -> Option<Reading> {
        let decoder = self.decoders.get(accepted.device)?;
        let radio = RadioMeta {
            rssi_dbm: heard.best.rssi,
            snr_db: heard.best.snr,
            frequency_hz: heard.best.frequency,
            spreading_factor: heard.best.spreading_factor,
        };
        let mut reading = Reading {
            source: ctx.name.clone(),
            address: decoder.address(),
            seq: None,
            fields: Vec::new(),
            received_at: now,
            radio: Some(radio),
            lorawan: Some(LorawanMeta {
                fcnt: accepted.fcnt,
                fport: accepted.fport,
                gateway: format!("{:016x}", heard.best.gateway),
            }),
        };
        match decode_fields(decoder, accepted.fport, &accepted.payload) {
            Fields::Decoded(fields) => reading.fields = fields,
            Fields::NoDecoder(_) => self.counters.count(|c| c.undecoded_fport += 1),
            Fields::Refused(fport, error) => {
                self.counters.count(|c| c.payload_errors += 1);
                self.warn(
                    "payload",
                    format!("FRMPayload on FPort {fport} not decoded: {error}"),
                );
            }
            Fields::ByCodec(fport) => {
                let Some(codec) = &decoder.codec else {
                    self.counters.count(|c| c.undecoded_fport += 1);
                    return Some(reading);
                };
                let payload = accepted.payload.clone();
                return match self.codecs.submit(codec, fport, payload, reading) {
                    Ok(()) => None,
                    Err(done) => {
                        self.counters.count(|c| c.payload_errors += 1);
                        self.warn(
                            "payload",
                            format!(
                                "FRMPayload on FPort {fport} not decoded by the codec: {}",
                                done.result
                                    .as_ref()
                                    .err()
                                    .map(ToString::to_string)
                                    .unwrap_or_default()
                            ),
                        );
                        Some(done.reading)
                    }
                };
            }
        }
        Some(reading)
    }

    /// Sends a downlink as PULL_RESP through the gateway's last PULL_DATA address, within the
    /// gateway's duty cycle; `done` answers the command it carries (at its TX_ACK). A downlink that
    /// cannot be sent is counted, and its command answered as failed (it stays queued). Returns whether
    /// it was sent.
    async fn transmit(
        &mut self,
        downlink: &Downlink,
        done: Option<oneshot::Sender<TxResult>>,
    ) -> bool {
        let Some(&address) = self.pull_addresses.get(&downlink.gateway) else {
            self.counters.count(|c| c.no_downlink_path += 1);
            let reason = format!(
                "no downlink path to gateway {:016x}: it has not sent PULL_DATA",
                downlink.gateway
            );
            self.warn("path", reason.clone());
            if let Some(done) = done {
                let _ = done.send(Err(reason));
            }
            return false;
        };
        let airtime = downlink_airtime(downlink.data_rate, downlink.phy.len());
        let now = tokio::time::Instant::now();
        if let Err(reason) = self
            .airtime
            .charge(downlink.gateway, downlink.frequency, airtime, now)
        {
            match done {
                Some(done) => {
                    let _ = done.send(Err(reason));
                }
                None => {
                    self.counters.count(|c| c.duty_cycle_dropped += 1);
                    self.warn("duty", format!("downlink dropped: {reason}"));
                }
            }
            return false;
        }
        self.token = self.token.wrapping_add(1);
        let txpk = Txpk::lorawan(
            &downlink.phy,
            downlink.tmst,
            downlink.frequency,
            downlink.data_rate,
            DOWNLINK_POWER_DBM,
        );
        self.send(&semtech::pull_resp(self.token, &txpk), address)
            .await;
        self.counters.count(|c| c.downlinks += 1);
        let command = done.map(|done| PendingCommand {
            done,
            airtime,
            deadline: now + TX_ACK_WAIT,
        });
        if downlink.rx2.is_some() || command.is_some() {
            if self.awaiting_ack.len() >= MAX_AWAITING_ACK {
                if let Some(command) = self.awaiting_ack.pop_front().and_then(|a| a.command) {
                    let _ = command.done.send(Ok(Some(command.airtime)));
                }
            }
            self.awaiting_ack.push_back(AwaitingAck {
                token: self.token,
                downlink: downlink.clone(),
                command,
            });
        }
        true
    }

    /// Writes the sessions on a blocking thread.
    async fn store(&mut self, records: Vec<super::session::SessionRecord>) {
        let Some(mut file) = self.file.take() else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            // The state file logs a failed write itself (once per run as a WARN).
            let _ = persist::write(&mut file, &records);
            file
        })
        .await;
        match written {
            Ok(file) => self.file = Some(file),
            Err(error) => log::error!(
                "LoRaWAN sessions: the write thread failed ({error}); sessions are kept in memory only until a restart"
            ),
        }
    }
}
