//! One source's outgoing commands: a queue per device (at most `depth` commands, each kept at most `ttl`),
//! delivery now or right after the device's next uplink (`after_uplink`: `rx_delay` after the end of its
//! frame, inside a short window, one frame per uplink), and the seam to the source task that owns the
//! port or radio. [`Outbox`] is the pure state machine (time passed in); [`Downlink`] shares it between
//! the router (which queues), the dispatcher (which sends) and the source ([`CommandPort`]: reports the
//! link going up and down and the devices it hears, and takes one transmission at a time). It never
//! encodes, never publishes and never touches a device.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::decode::{header, HeaderFormat, PacketDecoder, PayloadFormat};
use crate::frame::crc;
use crate::model::Packet;
use crate::source::radio::Wakeup;

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

/// Who asked, and where the answer goes besides `{base}/{device}/set/result`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub client_id: String,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
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
    /// The fields it sets, as the result shows them.
    pub fields: serde_json::Value,
    pub deliver: Deliver,
    pub reply: Reply,
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
}

/// Depth, time-to-live and `rx_delay` of a source's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    pub depth: usize,
    pub ttl: Duration,
    pub rx_delay: Duration,
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
}

impl Outbox {
    pub fn new(settings: OutboxSettings) -> Self {
        Outbox {
            settings,
            devices: HashMap::new(),
            next_order: 0,
        }
    }

    pub fn settings(&self) -> OutboxSettings {
        self.settings
    }

    /// Queues `command` until `now + ttl`.
    pub fn push(&mut self, command: Command, now: Instant) -> Result<(), QueueRefusal> {
        if !self.devices.contains_key(&command.address) && self.devices.len() >= MAX_DEVICES {
            return Err(QueueRefusal::TooManyDevices);
        }
        let device = self.devices.entry(command.address.clone()).or_default();
        if device.queue.len() >= self.settings.depth {
            return Err(QueueRefusal::Full(device.queue.len()));
        }
        device.queue.push_back(Queued {
            command,
            queued_at: now,
            expires: now + self.settings.ttl,
            not_before: None,
            held: None,
            order: self.next_order,
        });
        self.next_order += 1;
        Ok(())
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

/// What a source reports back for one transmission: the time on air (radios), or why it failed.
pub type TxResult = Result<Option<Duration>, String>;

/// One transmission handed to the source task.
#[derive(Debug)]
pub struct TxRequest {
    pub bytes: Vec<u8>,
    pub done: oneshot::Sender<TxResult>,
}

/// How the source finds the address of a frame it heard.
#[derive(Debug, Clone, Copy)]
struct AddressReader {
    decoder: PacketDecoder,
    encrypted: bool,
}

impl AddressReader {
    /// The header's address, or the payload's when there is no header and the payload is readable.
    fn address(&self, packet: &Packet) -> Option<String> {
        let body = crc::check_and_strip(self.decoder.crc, &packet.bytes).ok()?;
        let (fields, payload) = header::split_header(self.decoder.header, body).ok()?;
        if let Some(address) = fields.address {
            return Some(address);
        }
        if self.encrypted || self.decoder.header != HeaderFormat::None {
            return None;
        }
        match self.decoder.payload {
            PayloadFormat::Json => crate::decode::json::decode(payload).ok()?.address,
            PayloadFormat::MySensors => crate::decode::mysensors::decode(payload).ok()??.address,
            PayloadFormat::Lpp | PayloadFormat::Codec => None,
        }
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
    source: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The router's and dispatcher's handle on one source's outbox.
#[derive(Clone)]
pub struct Downlink(Arc<Shared>);

/// The source task's handle on its outbox.
#[derive(Clone)]
pub struct CommandPort(Arc<Shared>);

impl Downlink {
    /// An outbox for `source`, whose frames `decoder` reads (to find who was heard).
    pub fn new(
        source: &str,
        settings: OutboxSettings,
        decoder: PacketDecoder,
        encrypted: bool,
    ) -> Self {
        Downlink(Arc::new(Shared {
            outbox: Mutex::new(Outbox::new(settings)),
            changed: Notify::new(),
            link_up: AtomicBool::new(false),
            request: Mutex::new(None),
            request_ready: Notify::new(),
            doorbell: Mutex::new(None),
            reader: AddressReader { decoder, encrypted },
            source: source.to_string(),
        }))
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// The source task's end.
    pub fn port(&self) -> CommandPort {
        CommandPort(self.0.clone())
    }

    /// The queues, locked (briefly: never across an await).
    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.0.outbox)
    }

    /// Queues a command and wakes the dispatcher.
    pub fn push(&self, command: Command) -> Result<(), QueueRefusal> {
        let pushed = self.outbox().push(command, Instant::now());
        self.0.changed.notify_one();
        pushed
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

impl CommandPort {
    /// The source's link is up (port open, radio receiving) or down; a request waiting when it goes down
    /// is answered as failed, so the command goes back into its queue.
    pub fn set_link(&self, up: bool) {
        self.0.link_up.store(up, Ordering::SeqCst);
        if !up {
            if let Some(request) = lock(&self.0.request).take() {
                let _ = request.done.send(Err("the link went down".to_string()));
            }
        }
        self.0.changed.notify_one();
    }

    /// A frame arrived (its end is now): its device's receive window opens `rx_delay` from now.
    pub fn heard(&self, packet: &Packet) {
        if let Some(address) = self.0.reader.address(packet) {
            lock(&self.0.outbox).heard(&address, Instant::now());
            self.0.changed.notify_one();
        }
    }

    /// The next transmission to make, when there is one.
    pub fn take_request(&self) -> Option<TxRequest> {
        lock(&self.0.request).take()
    }

    /// Waits for the next transmission (serial sources, in their `select!`).
    pub async fn next_request(&self) -> TxRequest {
        loop {
            if let Some(request) = self.take_request() {
                return request;
            }
            self.0.request_ready.notified().await;
        }
    }

    /// The interrupt line the radio thread parks on now (`None` between sessions), poked when a request
    /// arrives.
    pub fn set_doorbell(&self, line: Option<Wakeup>) {
        *lock(&self.0.doorbell) = line;
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.0.source
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
            fields: serde_json::json!({}),
            deliver,
            reply: Reply::default(),
        }
    }

    fn settings() -> OutboxSettings {
        OutboxSettings {
            depth: 2,
            ttl: Duration::from_secs(60),
            rx_delay: Duration::from_secs(1),
        }
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
