//! One source's outgoing commands: a queue per device (at most `depth` commands, each kept at most `ttl`),
//! delivery now or right after the device's next uplink (`after_uplink`: `rx_delay` after the end of its
//! frame, inside a short window, one frame per uplink), and the seam to the source task that owns the
//! port or radio. What waits is bounded in count and in bytes ([`Command::cost`]), per device, per
//! client ([`Reply::requester`]) and for the whole source ([`QueueBounds`]), so one client can neither
//! lock the others out nor hold much memory. [`Outbox`] is the pure state machine (time passed in);
//! [`Downlink`] shares it between the router (which queues), the dispatcher (which sends) and the source
//! ([`CommandPort`]: reports the link going up and down and the devices it hears, which
//! [`HeardAddresses`] remembers, and takes one transmission at a time). It never encodes, never
//! publishes and never touches a device.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::heard::{HeardAddresses, MAX_HEARD};
use super::CommandStats;
use crate::decode::{header, HeaderFormat, PacketDecoder, PayloadFormat};
use crate::frame::crc;
use crate::lock::lock;
use crate::model::Packet;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::radio::Wakeup;
use crate::source::transmit::{CommandPort, CommandQueue, TxRequest};

/// How long after `rx_delay` a device still listens: a command sent later waits for its next uplink.
pub const RX_WINDOW: Duration = Duration::from_millis(200);
/// The most devices with commands waiting on one source.
pub const MAX_DEVICES: usize = 1024;

/// When a device gets its commands (`deliver = "now" | "after_uplink"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deliver {
    /// As soon as the link (and the duty cycle) allows: the device listens all the time.
    Now,
    /// `rx_delay` after the end of the device's next frame: battery nodes listen only then.
    AfterUplink,
}

impl Deliver {
    pub fn name(self) -> &'static str {
        match self {
            Deliver::Now => "now",
            Deliver::AfterUplink => "after_uplink",
        }
    }
}

/// Who asked, and where the answer goes besides `{base}/{device}/set/result`. The frames of one command
/// share it (`Arc`), so its correlation data is held once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub client_id: String,
    /// The login name; `None` for an anonymous client.
    pub user: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
}

impl Reply {
    /// Whom the per-client bounds (queue, airtime, results) count this command against: the login, so
    /// that one user's several connections share one allowance, and all anonymous clients together (they
    /// share one right, `anonymous_write`, and any of them can take any client id, so a client id would
    /// be an allowance anyone could renew by reconnecting under another).
    pub fn requester(&self) -> String {
        match &self.user {
            Some(user) => format!("user {user:?}"),
            None => "anonymous clients".to_string(),
        }
    }

    /// The bytes it holds.
    pub fn cost(&self) -> usize {
        std::mem::size_of::<Reply>()
            + self.client_id.len()
            + self.user.as_ref().map_or(0, String::len)
            + self.response_topic.as_ref().map_or(0, String::len)
            + self.correlation_data.as_ref().map_or(0, Vec::len)
    }
}

/// One frame for one device, encoded and wrapped for its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The device's topic name.
    pub device: String,
    /// The address its source knows it by.
    pub address: String,
    /// What goes on the wire (framed) or into the radio's FIFO.
    pub bytes: Vec<u8>,
    /// The port its payload goes on, when its encoder chose one (a codec's `encodeDownlink` fPort).
    pub fport: Option<u8>,
    /// The fields it sets, as the result shows them.
    pub fields: serde_json::Value,
    pub deliver: Deliver,
    pub reply: Arc<Reply>,
    /// The bytes it holds while it waits (see [`Command::cost_of`]), counted against the bounds.
    pub cost: usize,
}

impl Command {
    /// What a frame holds while it waits: the command itself, its wire bytes, names, the fields as its
    /// results show them, and `reply_share` (the [`Reply::cost`] for the first frame of a command, 0 for
    /// the others, which share that reply).
    pub fn cost_of(
        device: &str,
        address: &str,
        bytes: &[u8],
        fields: &serde_json::Value,
        reply_share: usize,
    ) -> usize {
        std::mem::size_of::<Queued>()
            + device.len()
            + address.len()
            + bytes.len()
            + fields.to_string().len()
            + reply_share
    }
}

/// A command in its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub command: Command,
    pub queued_at: Instant,
    pub expires: Instant,
    /// Not to be sent before this (the duty cycle said so).
    pub not_before: Option<Instant>,
    /// Why it has been held back, for its result if it expires (the duty-cycle budget).
    pub held: Option<String>,
    /// Its place in the order commands were queued in (first come, first served across devices).
    pub order: u64,
}

/// Why a command was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueRefusal {
    #[error("the device's queue is full ({0} commands waiting)")]
    Full(usize),
    #[error("{MAX_DEVICES} devices of this source have commands waiting already")]
    TooManyDevices,
    #[error("this client has {0} commands waiting on this source already (client_queue)")]
    ClientCommands(usize),
    #[error("this client's waiting commands on this source would hold more than {0} bytes (client_queue_bytes)")]
    ClientBytes(usize),
    #[error(
        "the waiting commands of this source would hold more than {0} bytes (command_queue_bytes)"
    )]
    SourceBytes(usize),
}

/// How much may wait on one source: per client (count and bytes) and in all (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBounds {
    /// `client_queue`: commands one client may have waiting.
    pub client_commands: usize,
    /// `client_queue_bytes`: bytes one client's waiting commands may hold.
    pub client_bytes: usize,
    /// `command_queue_bytes`: bytes all waiting commands may hold.
    pub source_bytes: usize,
}

impl Default for QueueBounds {
    /// 64 commands and 256 KiB per client, 1 MiB per source.
    fn default() -> Self {
        QueueBounds {
            client_commands: 64,
            client_bytes: 256 << 10,
            source_bytes: 1 << 20,
        }
    }
}

/// Depth, time-to-live and `rx_delay` of a source's queues, and the bounds of what waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    pub depth: usize,
    pub ttl: Duration,
    pub rx_delay: Duration,
    pub bounds: QueueBounds,
}

/// What one client has waiting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    commands: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct DeviceQueue {
    queue: VecDeque<Queued>,
    /// When the device's last frame ended, while its receive window may still come.
    heard: Option<Instant>,
}

/// The queues of one source. Pure: every method takes the time.
#[derive(Debug)]
pub struct Outbox {
    settings: OutboxSettings,
    devices: HashMap<String, DeviceQueue>,
    next_order: u64,
    /// What each client has waiting; a client with nothing waiting has no entry.
    clients: HashMap<String, Usage>,
    /// The bytes of everything waiting.
    bytes: usize,
}

impl Outbox {
    pub fn new(settings: OutboxSettings) -> Self {
        Outbox {
            settings,
            devices: HashMap::new(),
            next_order: 0,
            clients: HashMap::new(),
            bytes: 0,
        }
    }

    pub fn settings(&self) -> OutboxSettings {
        self.settings
    }

    /// Queues `command` until `now + ttl`.
    pub fn push(&mut self, command: Command, now: Instant) -> Result<(), QueueRefusal> {
        self.push_all(vec![command], now)
    }

    /// Queues the frames of one command until `now + ttl`: all of them, or none when any bound would
    /// be passed.
    pub fn push_all(&mut self, commands: Vec<Command>, now: Instant) -> Result<(), QueueRefusal> {
        self.check_room(&commands)?;
        for command in commands {
            self.charge(&command);
            let device = self.devices.entry(command.address.clone()).or_default();
            device.queue.push_back(Queued {
                command,
                queued_at: now,
                expires: now + self.settings.ttl,
                not_before: None,
                held: None,
                order: self.next_order,
            });
            self.next_order += 1;
        }
        Ok(())
    }

    /// Whether `commands` fit every bound.
    fn check_room(&self, commands: &[Command]) -> Result<(), QueueRefusal> {
        let bounds = self.settings.bounds;
        let mut new_devices: Vec<&str> = Vec::new();
        let mut per_device: HashMap<&str, usize> = HashMap::new();
        for command in commands {
            let address = command.address.as_str();
            if !self.devices.contains_key(address) && !new_devices.contains(&address) {
                new_devices.push(address);
            }
            *per_device.entry(address).or_default() += 1;
        }
        if self.devices.len() + new_devices.len() > MAX_DEVICES {
            return Err(QueueRefusal::TooManyDevices);
        }
        for (address, adding) in per_device {
            let waiting = self.devices.get(address).map_or(0, |d| d.queue.len());
            if waiting + adding > self.settings.depth {
                return Err(QueueRefusal::Full(waiting));
            }
        }
        let cost: usize = commands.iter().map(|c| c.cost).sum();
        if let Some(first) = commands.first() {
            let usage = self
                .clients
                .get(&first.reply.requester())
                .copied()
                .unwrap_or_default();
            if usage.commands + commands.len() > bounds.client_commands {
                return Err(QueueRefusal::ClientCommands(usage.commands));
            }
            if usage.bytes + cost > bounds.client_bytes {
                return Err(QueueRefusal::ClientBytes(bounds.client_bytes));
            }
        }
        if self.bytes + cost > bounds.source_bytes {
            return Err(QueueRefusal::SourceBytes(bounds.source_bytes));
        }
        Ok(())
    }

    /// Counts a command that starts waiting.
    fn charge(&mut self, command: &Command) {
        let usage = self.clients.entry(command.reply.requester()).or_default();
        usage.commands += 1;
        usage.bytes += command.cost;
        self.bytes += command.cost;
    }

    /// Counts a command that stops waiting (sent, expired, or taken to be sent).
    fn release(&mut self, command: &Command) {
        let requester = command.reply.requester();
        if let Some(usage) = self.clients.get_mut(&requester) {
            usage.commands = usage.commands.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(command.cost);
            if usage.commands == 0 {
                self.clients.remove(&requester);
            }
        }
        self.bytes = self.bytes.saturating_sub(command.cost);
    }

    /// The bytes of everything waiting.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Commands waiting, over all devices.
    pub fn len(&self) -> usize {
        self.devices.values().map(|d| d.queue.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device at `address` sent a frame that ended at `at`: its receive window opens `rx_delay`
    /// later. Only devices with commands waiting are remembered.
    pub fn heard(&mut self, address: &str, at: Instant) {
        if let Some(device) = self.devices.get_mut(address) {
            device.heard = Some(at);
        }
    }

    /// Whether commands wait for the device at `address`.
    pub fn has_waiting(&self, address: &str) -> bool {
        self.devices
            .get(address)
            .is_some_and(|device| !device.queue.is_empty())
    }

    /// When the device's receive window opens and closes, if it was heard.
    fn window(&self, device: &DeviceQueue) -> Option<(Instant, Instant)> {
        let opens = device.heard? + self.settings.rx_delay;
        Some((opens, opens + RX_WINDOW))
    }

    fn ready(&self, device: &DeviceQueue, now: Instant) -> bool {
        let Some(front) = device.queue.front() else {
            return false;
        };
        if front.not_before.is_some_and(|t| t > now) || front.expires <= now {
            return false;
        }
        match front.command.deliver {
            Deliver::Now => true,
            Deliver::AfterUplink => self
                .window(device)
                .is_some_and(|(opens, closes)| opens <= now && now <= closes),
        }
    }

    /// The next command to send now: of the devices ready, the one whose first command was queued first.
    /// A device commanded `after_uplink` gets one frame per uplink.
    pub fn pop_ready(&mut self, now: Instant) -> Option<Queued> {
        let address = self
            .devices
            .iter()
            .filter(|(_, device)| self.ready(device, now))
            .min_by_key(|(_, device)| device.queue.front().map(|q| q.order))
            .map(|(address, _)| address.clone())?;
        let device = self.devices.get_mut(&address)?;
        let queued = device.queue.pop_front()?;
        if queued.command.deliver == Deliver::AfterUplink {
            device.heard = None;
        }
        self.release(&queued.command);
        Some(queued)
    }

    /// The front of the device's queue, peeked (to check the duty cycle before popping).
    pub fn peek_ready(&self, now: Instant) -> Option<&Queued> {
        self.devices
            .values()
            .filter(|device| self.ready(device, now))
            .filter_map(|device| device.queue.front())
            .min_by_key(|q| q.order)
    }

    /// Holds the ready command `peek_ready` returned back until `until` (or its next window), saying why.
    pub fn hold(&mut self, address: &str, until: Option<Instant>, why: &str) {
        if let Some(device) = self.devices.get_mut(address) {
            if let Some(front) = device.queue.front_mut() {
                front.not_before = until;
                front.held = Some(why.to_string());
                if front.command.deliver == Deliver::AfterUplink {
                    // This window is lost; the next uplink opens another.
                    device.heard = None;
                }
            }
        }
    }

    /// Puts a command that could not be sent back at the head of its queue (it keeps its expiry).
    pub fn requeue_front(&mut self, queued: Queued) {
        if self.devices.len() >= MAX_DEVICES && !self.devices.contains_key(&queued.command.address)
        {
            return;
        }
        self.charge(&queued.command);
        self.devices
            .entry(queued.command.address.clone())
            .or_default()
            .queue
            .push_front(queued);
    }

    /// Removes and returns the commands whose time is up; forgets devices with nothing left to wait for.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Queued> {
        let mut expired = Vec::new();
        let rx_delay = self.settings.rx_delay;
        self.devices.retain(|_, device| {
            while let Some(position) = device.queue.iter().position(|q| q.expires <= now) {
                if let Some(queued) = device.queue.remove(position) {
                    expired.push(queued);
                }
            }
            if device
                .heard
                .is_some_and(|heard| heard + rx_delay + RX_WINDOW < now)
            {
                device.heard = None;
            }
            !device.queue.is_empty()
        });
        for queued in &expired {
            self.release(&queued.command);
        }
        expired
    }

    /// When something next becomes due: an expiry, a held command, a receive window opening. `None`
    /// when only an uplink (or a link coming up) can make something due.
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            let t = t.max(now);
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        for device in self.devices.values() {
            for queued in &device.queue {
                consider(queued.expires);
            }
            let Some(front) = device.queue.front() else {
                continue;
            };
            if let Some(not_before) = front.not_before {
                if front.command.deliver == Deliver::Now {
                    consider(not_before);
                }
            }
            if front.command.deliver == Deliver::AfterUplink {
                if let Some((opens, closes)) = self.window(device) {
                    if now <= closes {
                        consider(opens);
                    }
                }
            }
        }
        next
    }
}

/// How the source finds the address of a frame it heard.
#[derive(Debug, Clone, Copy)]
struct AddressReader {
    decoder: PacketDecoder,
    encrypted: bool,
}

impl AddressReader {
    /// The header's address, or the payload's when there is no header and the payload is readable
    /// (empty when it carries none, as the decoders name such a device).
    fn address(&self, packet: &Packet) -> Option<String> {
        let body = crc::check_and_strip(self.decoder.crc, &packet.bytes).ok()?;
        let (fields, payload) = header::split_header(self.decoder.header, body).ok()?;
        if let Some(address) = fields.address {
            return Some(address);
        }
        if self.encrypted || self.decoder.header != HeaderFormat::None {
            return None;
        }
        let address = match self.decoder.payload {
            PayloadFormat::Json => crate::decode::json::decode(payload).ok()?.address,
            PayloadFormat::MySensors => crate::decode::mysensors::decode(payload).ok()??.address,
            PayloadFormat::Lpp | PayloadFormat::Codec => None,
        };
        Some(address.unwrap_or_default())
    }
}

struct Shared {
    outbox: Mutex<Outbox>,
    /// The dispatcher waits on it: a command queued, a device heard, the link up.
    changed: Notify,
    link_up: AtomicBool,
    request: Mutex<Option<TxRequest>>,
    /// The serial source waits on it for the next request.
    request_ready: Notify,
    /// The radio thread's current interrupt line, poked when a request is waiting.
    doorbell: Mutex<Option<Wakeup>>,
    reader: AddressReader,
    /// The addresses heard since the start: who may get a queue besides the configured devices.
    heard: Mutex<HeardAddresses>,
    stats: CommandStats,
    /// At most one line a minute about heard addresses forgotten.
    forgotten_log: RateLimiter,
    source: String,
}

impl Shared {
    /// Adds `address` to the heard ones; one forgotten to make room is counted and logged.
    fn remember(&self, address: &str) {
        let forgotten = lock(&self.heard).insert(address);
        if forgotten > 0 {
            self.stats.heard_forgotten(&self.source, forgotten);
            if let Some(suppressed) = self.forgotten_log.admit("forgotten") {
                log::warn!(
                    source = self.source.as_str();
                    "more than {MAX_HEARD} addresses heard: the one heard the longest ago is forgotten, and gets commands under its {{source}}-{{address}} name again after its next frame{}",
                    suppressed_suffix(suppressed)
                );
            }
        }
    }
}

/// The router's and dispatcher's handle on one source's outbox.
#[derive(Clone)]
pub struct Downlink(Arc<Shared>);

impl Downlink {
    /// An outbox for `source`, whose frames `decoder` reads (to find who was heard); `stats` counts the
    /// heard addresses it forgets.
    pub fn new(
        source: &str,
        settings: OutboxSettings,
        decoder: PacketDecoder,
        encrypted: bool,
        stats: CommandStats,
    ) -> Self {
        Downlink(Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(settings)),
            changed: Notify::new(),
            link_up: AtomicBool::new(false),
            request: Mutex::new(None),
            request_ready: Notify::new(),
            doorbell: Mutex::new(None),
            reader: AddressReader { decoder, encrypted },
            heard: Mutex::new(HeardAddresses::default()),
            stats,
            forgotten_log: RateLimiter::new(Duration::from_secs(60)),
            source: source.to_string(),
        }))
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// The source task's end.
    pub fn port(&self) -> CommandPort {
        CommandPort::new(self.0.clone())
    }

    /// The queues, locked (briefly: never across an await).
    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.0.outbox)
    }

    /// Queues a command and wakes the dispatcher.
    pub fn push(&self, command: Command) -> Result<(), QueueRefusal> {
        self.push_all(vec![command])
    }

    /// Queues the frames of one command (all or none) and wakes the dispatcher.
    pub fn push_all(&self, commands: Vec<Command>) -> Result<(), QueueRefusal> {
        let pushed = self.outbox().push_all(commands, Instant::now());
        self.0.changed.notify_one();
        pushed
    }

    /// Whether the source heard a frame from `address` since the start, or before it (and has not
    /// forgotten it).
    pub fn heard_from(&self, address: &str) -> bool {
        lock(&self.0.heard).contains(address)
    }

    /// Counts `address` as heard: a device heard before the gateway's restart.
    pub fn remember_heard(&self, address: &str) {
        self.0.remember(address);
    }

    /// Whether the source's link is up.
    pub fn link_up(&self) -> bool {
        self.0.link_up.load(Ordering::SeqCst)
    }

    /// Waits until something changed (queued, heard, link).
    pub async fn changed(&self) {
        self.0.changed.notified().await;
    }

    /// Hands a transmission to the source task (replacing none: the dispatcher sends one at a time).
    pub fn request(&self, request: TxRequest) {
        *lock(&self.0.request) = Some(request);
        self.0.request_ready.notify_one();
        if let Some(line) = lock(&self.0.doorbell).as_ref() {
            line.poke();
        }
    }

    /// Takes a request the source has not taken (the dispatcher gave up waiting for it).
    pub fn withdraw(&self) -> Option<TxRequest> {
        lock(&self.0.request).take()
    }
}

impl CommandQueue for Shared {
    fn set_link(&self, up: bool) {
        self.link_up.store(up, Ordering::SeqCst);
        if !up {
            if let Some(request) = lock(&self.request).take() {
                let _ = request.done.send(Err("the link went down".to_string()));
            }
        }
        self.changed.notify_one();
    }

    fn heard(&self, packet: &Packet) {
        if let Some(address) = self.reader.address(packet) {
            self.remember(&address);
            lock(&self.outbox).heard(&address, Instant::now());
            self.changed.notify_one();
        }
    }

    fn heard_device(&self, address: &str) -> bool {
        self.remember(address);
        let waiting = {
            let mut outbox = lock(&self.outbox);
            outbox.heard(address, Instant::now());
            outbox.has_waiting(address)
        };
        self.changed.notify_one();
        waiting
    }

    fn take_request(&self) -> Option<TxRequest> {
        lock(&self.request).take()
    }

    fn request_ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.request_ready.notified())
    }

    fn set_doorbell(&self, line: Option<Wakeup>) {
        *lock(&self.doorbell) = line;
    }

    fn source(&self) -> &str {
        &self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(address: &str, deliver: Deliver) -> Command {
        Command {
            device: format!("dev-{address}"),
            address: address.to_string(),
            bytes: vec![1],
            fport: None,
            fields: serde_json::json!({}),
            deliver,
            reply: Arc::new(Reply::default()),
            cost: 100,
        }
    }

    fn settings() -> OutboxSettings {
        OutboxSettings {
            depth: 2,
            ttl: Duration::from_secs(60),
            rx_delay: Duration::from_secs(1),
            bounds: QueueBounds::default(),
        }
    }

    fn from(user: &str, address: &str, cost: usize) -> Command {
        Command {
            reply: Arc::new(Reply {
                client_id: format!("{user}-1"),
                user: Some(user.to_string()),
                ..Reply::default()
            }),
            cost,
            ..command(address, Deliver::AfterUplink)
        }
    }

    #[test]
    fn bounds_per_client_in_count_and_bytes_and_per_source_in_bytes() {
        let now = Instant::now();
        let mut outbox = Outbox::new(OutboxSettings {
            depth: 8,
            bounds: QueueBounds {
                client_commands: 3,
                client_bytes: 1000,
                source_bytes: 1500,
            },
            ..settings()
        });
        for address in ["1", "2", "3"] {
            outbox.push(from("a", address, 100), now).unwrap();
        }
        assert_eq!(
            outbox.push(from("a", "4", 100), now),
            Err(QueueRefusal::ClientCommands(3))
        );
        // Another client is not locked out by the first one's count.
        outbox.push(from("b", "4", 100), now).unwrap();
        assert_eq!(
            outbox.push(from("b", "5", 901), now),
            Err(QueueRefusal::ClientBytes(1000))
        );
        outbox.push(from("b", "5", 800), now).unwrap();
        assert_eq!(outbox.bytes(), 1200);
        assert_eq!(
            outbox.push(from("c", "6", 400), now),
            Err(QueueRefusal::SourceBytes(1500))
        );
        // All frames of a command or none.
        let two = vec![from("c", "7", 200), from("c", "7", 200)];
        assert_eq!(
            outbox.push_all(two, now),
            Err(QueueRefusal::SourceBytes(1500))
        );
        assert_eq!(outbox.len(), 5);
        // What expires frees its room.
        assert_eq!(outbox.take_expired(now + Duration::from_secs(60)).len(), 5);
        assert_eq!(outbox.bytes(), 0);
        assert!(outbox.clients.is_empty());
        outbox.push(from("a", "1", 100), now).unwrap();
        let popped = outbox.pop_ready(now);
        assert!(popped.is_none(), "after_uplink waits");
        outbox.heard("1", now);
        let popped = outbox.pop_ready(now + Duration::from_secs(1)).unwrap();
        assert_eq!(
            outbox.bytes(),
            0,
            "a command taken to be sent no longer waits"
        );
        outbox.requeue_front(popped);
        assert_eq!(outbox.bytes(), 100);
    }

    #[test]
    fn one_users_connections_share_one_allowance() {
        let by = |client: &str, user: Option<&str>| Reply {
            client_id: client.to_string(),
            user: user.map(str::to_string),
            ..Reply::default()
        };
        assert_eq!(
            by("a", Some("ops")).requester(),
            by("b", Some("ops")).requester()
        );
        assert_eq!(
            by("a", None).requester(),
            by("b", None).requester(),
            "anonymous clients share one allowance"
        );
        assert_ne!(
            by("ops", None).requester(),
            by("ops", Some("ops")).requester()
        );
        assert_ne!(
            by("a", Some("ops")).requester(),
            by("a", Some("ops2")).requester()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_heard_by_address_opens_its_window_and_says_whether_commands_wait() {
        let downlink = Downlink::new(
            "lns",
            OutboxSettings {
                rx_delay: Duration::ZERO,
                ..settings()
            },
            PacketDecoder {
                crc: crate::frame::crc::CrcMode::None,
                header: HeaderFormat::None,
                payload: PayloadFormat::Lpp,
            },
            false,
            CommandStats::default(),
        );
        let port = downlink.port();
        assert!(!port.heard_device("26011bda"), "nothing waits yet");
        assert!(downlink.heard_from("26011bda"));
        downlink
            .push(command("26011bda", Deliver::AfterUplink))
            .unwrap();
        assert!(downlink.outbox().pop_ready(Instant::now()).is_none());
        assert!(port.heard_device("26011bda"));
        assert!(!port.heard_device("0badbeef"));
        let sent = downlink
            .outbox()
            .pop_ready(Instant::now())
            .expect("its window");
        assert_eq!(sent.command.address, "26011bda");
        // Its window closes RX_WINDOW later: the next command waits for the next uplink.
        downlink
            .push(command("26011bda", Deliver::AfterUplink))
            .unwrap();
        assert!(downlink.outbox().pop_ready(Instant::now()).is_none());
    }

    #[test]
    fn depth_and_expiry() {
        let now = Instant::now();
        let mut outbox = Outbox::new(settings());
        outbox
            .push(command("1", Deliver::AfterUplink), now)
            .unwrap();
        outbox
            .push(command("1", Deliver::AfterUplink), now)
            .unwrap();
        assert_eq!(
            outbox.push(command("1", Deliver::AfterUplink), now),
            Err(QueueRefusal::Full(2))
        );
        assert_eq!(outbox.next_wakeup(now), Some(now + Duration::from_secs(60)));
        assert!(outbox
            .take_expired(now + Duration::from_secs(59))
            .is_empty());
        assert_eq!(outbox.take_expired(now + Duration::from_secs(60)).len(), 2);
        assert!(outbox.is_empty());
        assert_eq!(outbox.next_wakeup(now), None);
    }

    #[test]
    fn after_uplink_waits_for_the_window_one_frame_per_uplink() {
        let now = Instant::now();
        let mut outbox = Outbox::new(settings());
        outbox
            .push(command("7", Deliver::AfterUplink), now)
            .unwrap();
        outbox
            .push(command("7", Deliver::AfterUplink), now)
            .unwrap();
        outbox.push(command("8", Deliver::Now), now).unwrap();
        assert_eq!(outbox.pop_ready(now).unwrap().command.address, "8");
        assert!(outbox.pop_ready(now).is_none(), "7 was not heard yet");
        let heard = now + Duration::from_secs(5);
        outbox.heard("7", heard);
        assert_eq!(
            outbox.next_wakeup(heard),
            Some(heard + Duration::from_secs(1))
        );
        assert!(outbox
            .pop_ready(heard + Duration::from_millis(999))
            .is_none());
        let opens = heard + Duration::from_secs(1);
        assert_eq!(outbox.pop_ready(opens).unwrap().command.address, "7");
        assert!(outbox.pop_ready(opens).is_none(), "one frame per uplink");
        // A window missed: the next uplink opens another.
        outbox.heard("7", opens);
        assert!(outbox.pop_ready(opens + Duration::from_secs(2)).is_none());
        outbox.take_expired(opens + Duration::from_secs(2));
        outbox.heard("7", opens + Duration::from_secs(3));
        assert!(outbox.pop_ready(opens + Duration::from_secs(4)).is_some());
    }

    #[test]
    fn held_commands_wait_and_requeued_ones_come_first() {
        let now = Instant::now();
        let mut outbox = Outbox::new(settings());
        outbox.push(command("1", Deliver::Now), now).unwrap();
        let later = now + Duration::from_secs(10);
        outbox.hold("1", Some(later), "duty cycle");
        assert!(outbox.pop_ready(now).is_none());
        assert_eq!(outbox.next_wakeup(now), Some(later));
        let queued = outbox.pop_ready(later).unwrap();
        assert_eq!(queued.held.as_deref(), Some("duty cycle"));
        outbox.push(command("1", Deliver::Now), later).unwrap();
        outbox.requeue_front(queued.clone());
        assert_eq!(outbox.pop_ready(later).unwrap(), queued);
    }
}
