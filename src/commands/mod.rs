//! Commands to devices: MQTT in, frames out. A client publishes on `{base}/{device}/set` (a JSON object of
//! fields, or `{"raw": "hex"}`) or `{base}/{device}/set/{field}` (a plain value); the broker's command
//! tap hands the router every such publish with its client and its MQTT 5 response topic and correlation
//! data, including those the client had no right to write. The [`Router`] finds the device's source and
//! address, refuses what may not or cannot be sent (no write right, `commands` off on the source, a
//! device neither configured nor [`heard`], raw bytes where the address lives in the payload and the
//! `[[device]]` has no `raw_commands = true`, a payload the source's format or framing cannot carry, a
//! full queue or a client's or the source's bound), encodes the rest exactly
//! the way the source decodes (`crate::encode`: payload, header with the gateway's sequence number,
//! AES-128-CCM sealing with the gateway's own counter, CRC, framing) and queues each frame in the source's
//! [`Downlink`]. One [`Dispatcher`] per source sends what is due (now, or `rx_delay` after the device's
//! next uplink) through the task that owns the port or radio, within the radio's duty-cycle budget.
//! Every accepted command's progress (`queued`, `sent`, `expired`) is published, not retained, on
//! `{base}/{device}/set/result` and, when the request named one, on its response topic with its
//! correlation data. A refusal answers the writer in full on its response topic only; on
//! `{base}/{device}/set/result` it says `status` and `reason` without the command's fields, only for a
//! configured or heard device, and the reason of a client without the write right names nothing it
//! wrote. Refusal results are limited per client ([`throttle`]); the dropped ones are counted. Counters
//! per source go into `{base}/gateway/stats`.
//!
//! Layout: [`payload`] (command payloads; the topics are `crate::topic::commands`'), [`outbox`] (queues,
//! their bounds, delivery windows; the source's end is `crate::source::transmit`), [`heard`] (the addresses a source heard), [`throttle`] (refusal results per
//! client), [`dutycycle`] (the frequency plan and the budget), [`dispatch`] (the per-source sender),
//! [`counters`] (the gateway's frame counters for sealing, reserved on disk ahead of use). What
//! Home Assistant announces as `switch`/`number` entities is [`commandable_fields`].

pub mod codec;
pub mod counters;
pub mod dispatch;
pub mod dutycycle;
pub mod heard;
pub mod outbox;
pub mod payload;
pub mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use dispatch::{Dispatcher, Outcome};
pub use dutycycle::DutyCycleSetting;
pub use outbox::{Deliver, Downlink, OutboxSettings, QueueBounds, Reply};

use crate::broker::{Broker, ClientPublish};
use crate::crypto::FrameKeys;
use crate::decode::{PacketDecoder, PayloadFormat};
use crate::encode::link::{self, LinkSpec, Seal};
use crate::encode::{self, CommandPayload, Control};
use crate::model::Message;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::radio::{time_on_air, RadioSettings};
use crate::source::transmit::CommandPort;
use crate::stats::CommandCounters;
use crate::topic;
use outbox::{Command, Queued};
use throttle::ResultThrottle;

/// Client publishes the router holds at most before the broker drops them (counted).
pub const INPUT_CAPACITY: usize = 1024;
/// Outcomes the dispatchers may have waiting for the router.
const OUTCOME_CAPACITY: usize = 1024;
/// The most devices the router keeps a sequence number for; beyond it they start over (harmless: the
/// sequence number only tells a node's duplicates apart; frame counters are [`counters`]' own).
const MAX_TRACKED: usize = 10_000;

/// The command settings of one source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceCommands {
    pub name: String,
    /// `commands = true`.
    pub enabled: bool,
    pub payload: PayloadFormat,
    pub link: LinkSpec,
    /// How the source decodes (the header and payload of frames it hears, for `after_uplink`).
    pub decoder: PacketDecoder,
    /// The source's frames are sealed (`encryption = "aes-128-ccm"`).
    pub encrypted: bool,
    pub deliver: Deliver,
    pub outbox: OutboxSettings,
    pub duty_cycle: DutyCycleSetting,
    /// `client_airtime`: the share of the duty-cycle budget one client may use.
    pub client_airtime: f64,
    /// A radio's settings (time on air, the sub-band); `None` for serial sources.
    pub radio: Option<RadioSettings>,
    /// The longest frame the source can send, and what says so (a LoRaWAN region's RX2 data rate);
    /// longer commands are refused at once.
    pub max_frame: Option<(usize, String)>,
}

/// A `[[device]]`, as commands need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    pub name: String,
    pub source: String,
    pub address: String,
    /// `deliver` of the `[[device]]`, overriding its source's.
    pub deliver: Option<Deliver>,
    /// `raw_commands = true`: `{"raw": ...}` may reach it where the address lives in the payload.
    pub raw_commands: bool,
    /// The payload format of its commands, where it differs from its source's (a LoRaWAN device's
    /// decoder of its downlink FPort).
    pub payload: Option<PayloadFormat>,
}

/// Everything the router needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSettings {
    pub base_topic: String,
    /// QoS of the result messages.
    pub qos: u8,
    pub sources: Vec<SourceCommands>,
    pub devices: Vec<DeviceEntry>,
    /// The codecs of the `payload = "codec"` sources with commands (their `encodeDownlink`).
    pub codecs: crate::codec::sources::CodecMap,
}

impl CommandSettings {
    /// Whether any source sends commands.
    pub fn any_enabled(&self) -> bool {
        self.sources.iter().any(|s| s.enabled)
    }
}

/// Where counters of commands for no configured source are kept: in the totals, under no source.
const NO_SOURCE: &str = "";

/// The command counters of every source, shared by the router, the dispatchers and the stats report.
#[derive(Debug, Clone, Default)]
pub struct CommandStats(Arc<Mutex<BTreeMap<String, CommandCounters>>>);

impl CommandStats {
    fn update(&self, source: &str, change: impl FnOnce(&mut CommandCounters)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(counters) = map.get_mut(source) {
            change(counters);
        }
    }

    /// Starts counting for `source` (configured sources with commands only: the map stays small).
    pub fn track(&self, source: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(source.to_string()).or_default();
    }

    pub fn received(&self, source: &str) {
        self.update(source, |c| c.received += 1);
    }

    pub fn refused(&self, source: &str) {
        self.update(source, |c| c.refused += 1);
    }

    /// Heard addresses `source` forgot to stay within its bound.
    pub fn heard_forgotten(&self, source: &str, forgotten: u64) {
        self.update(source, |c| c.heard_forgotten += forgotten);
    }

    /// A refusal result not published (the client's allowance was used up). `None`: a command for no
    /// source, counted in the totals only.
    pub fn result_dropped(&self, source: Option<&str>) {
        self.update(source.unwrap_or(NO_SOURCE), |c| c.results_dropped += 1);
    }

    pub fn expired(&self, source: &str) {
        self.update(source, |c| c.expired += 1);
    }

    pub fn sent(&self, source: &str, airtime: Option<Duration>) {
        self.update(source, |c| {
            c.sent += 1;
            c.airtime_ms += airtime.map_or(0, |a| a.as_millis() as u64);
        });
    }

    /// Every source's counters now.
    pub fn snapshot(&self) -> BTreeMap<String, CommandCounters> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A field Home Assistant can offer as a control, and the topic that commands it.
#[derive(Debug, Clone, PartialEq)]
pub struct Commandable {
    pub field: String,
    pub control: Control,
    /// `{base}/{device}/set/{field}`: takes a plain value (`1`/`0`, `ON`/`OFF`, a number).
    pub command_topic: String,
}

/// The fields of `device` (its known field names) that accept commands, with their command topics: LPP
/// digital and analog outputs, MySensors actuators, and `named` (fields the configuration marks as
/// commandable, announced as switches unless the payload format says otherwise). Empty when the device's
/// source does not have `commands = true` (`enabled`). For `crate::homeassistant`.
pub fn commandable_fields(
    base: &str,
    device: &str,
    payload: PayloadFormat,
    enabled: bool,
    fields: &[String],
    named: &[String],
) -> Vec<Commandable> {
    if !enabled {
        return Vec::new();
    }
    let mut out: Vec<Commandable> = Vec::new();
    for field in fields.iter().chain(named) {
        if out.iter().any(|c| &c.field == field) {
            continue;
        }
        let control = encode::control_of(payload, field)
            .or_else(|| named.contains(field).then_some(Control::Switch));
        if let Some(control) = control {
            out.push(Commandable {
                field: field.clone(),
                control,
                command_topic: topic::commands::field_command_topic(base, device, field),
            });
        }
    }
    out
}

/// One source as the router knows it.
struct Source {
    settings: SourceCommands,
    downlink: Option<Downlink>,
    /// The time on air one client may use per hour and its description, for refusing a frame longer
    /// than all of it.
    budget_allows: Option<(Duration, String)>,
}

/// Who a device is.
#[derive(Debug, Clone)]
struct Resolved {
    source: String,
    address: String,
    deliver: Option<Deliver>,
    /// A `[[device]]` (always commandable), rather than a `{source}-{address}` name.
    configured: bool,
    raw_commands: bool,
    /// Its own payload format, over its source's.
    payload: Option<PayloadFormat>,
}

/// The command router: client publishes in, frames queued, results out. Built with [`Commands::new`].
pub struct Router {
    base_topic: String,
    qos: u8,
    sources: HashMap<String, Source>,
    /// Source names, longest first (for `{source}-{address}` names).
    source_names: Vec<String>,
    devices: HashMap<String, Resolved>,
    keys: FrameKeys,
    /// The gateway's sequence number per (source, address).
    seq: HashMap<(String, String), u8>,
    /// The gateway's frame counters for sealing.
    counters: counters::DownlinkCounters,
    stats: CommandStats,
    refusal_log: RateLimiter,
    results: ResultThrottle,
    /// `encodeDownlink` of the codec sources.
    codecs: codec::CodecEncoders,
}

/// The router and the dispatchers, before they run.
pub struct Commands {
    router: Router,
    dispatchers: Vec<Dispatcher>,
    outcomes: mpsc::Receiver<Outcome>,
    ports: HashMap<String, CommandPort>,
    stats: CommandStats,
}

impl Commands {
    /// Builds the router, one outbox and dispatcher per source with `commands = true`, and their ports.
    pub fn new(settings: CommandSettings, keys: FrameKeys) -> Commands {
        let stats = CommandStats::default();
        stats.track(NO_SOURCE);
        let (outcome_tx, outcomes) = mpsc::channel(OUTCOME_CAPACITY);
        let mut sources = HashMap::new();
        let mut dispatchers = Vec::new();
        let mut ports = HashMap::new();
        for source in &settings.sources {
            let mut downlink = None;
            let mut budget_allows = None;
            if source.enabled {
                stats.track(&source.name);
                let handle = Downlink::new(
                    &source.name,
                    source.outbox,
                    source.decoder,
                    source.encrypted,
                    stats.clone(),
                );
                let budget = airtime_budget(source);
                budget_allows = budget
                    .as_ref()
                    .map(|b| (b.client_allowed(), b.client_description()));
                ports.insert(source.name.clone(), handle.port());
                dispatchers.push(Dispatcher {
                    downlink: handle.clone(),
                    radio: source.radio.clone(),
                    budget,
                    outcomes: outcome_tx.clone(),
                    stats: stats.clone(),
                });
                downlink = Some(handle);
            }
            sources.insert(
                source.name.clone(),
                Source {
                    settings: source.clone(),
                    downlink,
                    budget_allows,
                },
            );
        }
        let mut source_names: Vec<String> = sources.keys().cloned().collect();
        source_names.sort_by_key(|name| std::cmp::Reverse(name.len()));
        let devices = configured_devices(&settings.devices);
        Commands {
            router: Router {
                base_topic: settings.base_topic,
                qos: settings.qos,
                sources,
                source_names,
                devices,
                keys,
                seq: HashMap::new(),
                counters: counters::DownlinkCounters::in_memory(),
                stats: stats.clone(),
                refusal_log: RateLimiter::new(Duration::from_secs(10)),
                results: ResultThrottle::default(),
                codecs: codec::CodecEncoders::start(&settings.codecs),
            },
            dispatchers,
            outcomes,
            ports,
            stats,
        }
    }

    /// Seals with `counters` (reserved on disk, [`counters::open`]) rather than counters kept in memory.
    pub fn with_counters(mut self, counters: counters::DownlinkCounters) -> Commands {
        self.router.counters = counters;
        self
    }

    /// The port the source task named `source` transmits through, if it has `commands = true`.
    pub fn port(&self, source: &str) -> Option<CommandPort> {
        self.ports.get(source).cloned()
    }

    /// The counters, for `{base}/gateway/stats`.
    pub fn stats(&self) -> CommandStats {
        self.stats.clone()
    }

    /// Runs the router and the dispatchers until `shutdown`; then what is still queued is reported
    /// expired ("the gateway stopped") and the task ends.
    pub fn spawn(
        self,
        broker: Arc<Broker>,
        input: mpsc::Receiver<ClientPublish>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let Commands {
            mut router,
            dispatchers,
            mut outcomes,
            ..
        } = self;
        for dispatcher in dispatchers {
            tokio::spawn(dispatcher.run(shutdown.clone()));
        }
        tokio::spawn(async move {
            router.remember_restored(&broker.retained_messages().await);
            let mut input = input;
            let mut stopping = false;
            loop {
                tokio::select! {
                    publish = input.recv(), if !stopping => match publish {
                        Some(publish) => router.handle(&broker, publish).await,
                        None => stopping = true,
                    },
                    outcome = outcomes.recv() => match outcome {
                        Some(outcome) => router.report(&broker, outcome).await,
                        // Every dispatcher has ended.
                        None => break,
                    },
                    _ = shutdown.cancelled(), if !stopping => stopping = true,
                }
            }
        })
    }
}

/// Where a command goes: the device, its source's settings and outbox, and the time on air one client
/// may use there.
struct Route {
    resolved: Resolved,
    settings: SourceCommands,
    downlink: Downlink,
    budget_allows: Option<(Duration, String)>,
}

/// The command a client wrote, parsed; raw bytes refused where the source's payload carries the node's
/// address and the device does not allow them.
fn command_payload(
    field: Option<&str>,
    publish: &ClientPublish,
    settings: &SourceCommands,
    resolved: &Resolved,
) -> Result<CommandPayload, Refused> {
    let payload = payload::parse_payload(field, &publish.payload)
        .map_err(|e| Refused::quiet(e.to_string()))?;
    if matches!(payload, CommandPayload::Raw(_))
        && encode::address_in_payload(settings.payload)
        && !resolved.raw_commands
    {
        return Err(Refused::logged(format!(
            "raw bytes are refused on source {:?}: its payload (JSON lines or MySensors) carries the node's address, so raw bytes could reach another node; set raw_commands = true on the device's [[device]] to allow them",
            settings.name
        )));
    }
    Ok(payload)
}

/// Refuses a frame of `frame_len` bytes whose time on air is more than one client may use on the
/// source's radio (`budget_allows`: that time and its description).
fn check_airtime(
    settings: &SourceCommands,
    budget_allows: Option<&(Duration, String)>,
    frame_len: usize,
) -> Result<(), Refused> {
    if let (Some(radio), Some((allowed, description))) = (&settings.radio, budget_allows) {
        let airtime = time_on_air(radio, frame_len);
        if airtime > *allowed {
            return Err(Refused::quiet(format!(
                "{} ms on air is more than {description}",
                airtime.as_millis()
            )));
        }
    }
    Ok(())
}

/// Refuses a frame longer than the source can ever send.
fn check_length(settings: &SourceCommands, frame_len: usize) -> Result<(), Refused> {
    match &settings.max_frame {
        Some((max, why)) if frame_len > *max => Err(Refused::quiet(format!(
            "{frame_len} bytes are more than the {max} {why}"
        ))),
        _ => Ok(()),
    }
}

/// The fields a frame sets, as its results show them (the raw bytes when it sets none).
fn result_fields(payload: &encode::EncodedPayload) -> serde_json::Value {
    if payload.fields.is_empty() {
        payload::fields_json(&CommandPayload::Raw(payload.bytes.clone()))
    } else {
        payload::fields_json(&CommandPayload::Fields(payload.fields.clone()))
    }
}

/// A radio source's duty-cycle budget, with the share one client may use; `None` for serial sources and
/// where the frequency plan sets no limit.
fn airtime_budget(source: &SourceCommands) -> Option<dutycycle::Budget> {
    source.radio.as_ref().and_then(|radio| {
        dutycycle::limit_for(source.duty_cycle, radio.frequency_hz).map(|(share, text)| {
            dutycycle::Budget::new(share, text).with_client_share(source.client_airtime)
        })
    })
}

/// The configured devices by their name as a topic level; the first of two with the same level wins.
fn configured_devices(devices: &[DeviceEntry]) -> HashMap<String, Resolved> {
    let mut by_level = HashMap::new();
    for device in devices {
        let resolved = Resolved {
            source: device.source.clone(),
            address: device.address.clone(),
            deliver: device.deliver,
            configured: true,
            raw_commands: device.raw_commands,
            payload: device.payload,
        };
        by_level
            .entry(crate::topic::gateway::sanitize_level(&device.name))
            .or_insert(resolved);
    }
    by_level
}

impl Router {
    /// The source and address of a device topic name: a `[[device]]`, or `{source}-{address}`.
    fn resolve(&self, device: &str) -> Option<Resolved> {
        if let Some(resolved) = self.devices.get(device) {
            return Some(resolved.clone());
        }
        for source in &self.source_names {
            let address = match device.strip_prefix(source.as_str()) {
                Some("") => "",
                Some(rest) => match rest.strip_prefix('-') {
                    Some(address) if !address.is_empty() => address,
                    _ => continue,
                },
                None => continue,
            };
            // A configured device keeps its own settings under either name.
            let configured = self
                .devices
                .values()
                .find(|d| &d.source == source && d.address == address);
            return Some(configured.cloned().unwrap_or(Resolved {
                source: source.clone(),
                address: address.to_string(),
                deliver: None,
                configured: false,
                raw_commands: false,
                payload: None,
            }));
        }
        None
    }

    fn next_seq(&mut self, source: &str, address: &str) -> u8 {
        let key = (source.to_string(), address.to_string());
        if self.seq.len() >= MAX_TRACKED && !self.seq.contains_key(&key) {
            self.seq.clear();
        }
        let seq = self.seq.entry(key).or_insert(0);
        *seq = seq.wrapping_add(1);
        *seq
    }

    /// The frame counter the `offset`-th frame of a command to `to` is sealed with; taken
    /// ([`counters::DownlinkCounters::commit`]) only once that frame is queued.
    fn next_counter(
        &self,
        source: &str,
        to: u16,
        key: &crate::crypto::FrameKey,
        offset: u64,
    ) -> Result<u32, Refused> {
        self.counters
            .peek(source, u32::from(to), key, offset)
            .map_err(|refusal| Refused::logged(refusal.to_string()))
    }

    /// Devices heard before a restart count as heard: the state the gateway published for each
    /// (`{base}/{device}`, retained, naming its source) survived in the broker's retained store, and its
    /// `{source}-{address}` name still resolves to that source. Called once, before the first command.
    fn remember_restored(&self, restored: &[Message]) {
        for message in restored {
            let Some(name) =
                crate::topic::gateway::device_of_state_topic(&self.base_topic, &message.topic)
            else {
                continue;
            };
            let Ok(state) = serde_json::from_slice::<serde_json::Value>(&message.payload) else {
                continue;
            };
            let source = state.get(crate::publish::STATE_KEY_SOURCE);
            let Some(resolved) = self.resolve(name) else {
                continue;
            };
            if resolved.configured || source.and_then(|s| s.as_str()) != Some(&resolved.source) {
                continue;
            }
            if let Some(downlink) = self
                .sources
                .get(&resolved.source)
                .and_then(|source| source.downlink.as_ref())
            {
                downlink.remember_heard(&resolved.address);
            }
        }
    }

    /// Whether a device is real: a `[[device]]`, or an address its source heard a frame from.
    fn is_real(&self, resolved: &Resolved) -> bool {
        resolved.configured
            || self
                .sources
                .get(&resolved.source)
                .and_then(|source| source.downlink.as_ref())
                .is_some_and(|downlink| downlink.heard_from(&resolved.address))
    }

    /// One client publish on a command topic.
    async fn handle(&mut self, broker: &Broker, publish: ClientPublish) {
        let Some(target) = topic::commands::parse_topic(&self.base_topic, &publish.topic) else {
            return;
        };
        let device = target.device.to_string();
        let topic_field = target.field.map(str::to_string);
        let reply = Arc::new(Reply {
            client_id: publish.client_id.clone(),
            user: publish.user.clone(),
            response_topic: publish.response_topic.clone(),
            correlation_data: publish.correlation_data.clone(),
        });
        let resolved = self.resolve(&device);
        let real = resolved.as_ref().is_some_and(|r| self.is_real(r));
        let source_name = resolved.as_ref().map(|r| r.source.clone());
        let (publish, field, encoded) = self
            .through_codec(&resolved, topic_field.clone(), publish)
            .await;
        let outcome = encoded
            .map_err(Refused::quiet)
            .and_then(|fport| {
                self.accept(&device, field.as_deref(), &publish, &reply, resolved)
                    .map(|(mut frames, downlink, source, sealed)| {
                        for frame in &mut frames {
                            frame.fport = fport;
                        }
                        (frames, downlink, source, sealed)
                    })
            })
            .and_then(|(frames, downlink, source, sealed)| {
                let shown: Vec<serde_json::Value> =
                    frames.iter().map(|c| c.fields.clone()).collect();
                downlink
                    .push_all(frames)
                    .map(|()| (shown, source, sealed))
                    .map_err(|refusal| Refused::logged(refusal.to_string()))
            });
        match outcome {
            Ok((shown, source, sealed)) => {
                if let Some((to, counter)) = sealed {
                    self.counters.commit(&source, u32::from(to), counter);
                }
                self.stats.received(&source);
                for fields in shown {
                    self.result(broker, &device, "queued", None, fields, &reply)
                        .await;
                }
            }
            Err(refusal) => {
                self.stats
                    .refused(source_name.as_deref().unwrap_or(NO_SOURCE));
                if refusal.log {
                    self.log_refusal(&device, &publish, &refusal.reason);
                }
                let public = match (real, publish.allowed) {
                    (false, _) => None,
                    (true, true) => Some(refusal.reason.clone()),
                    (true, false) => Some(NOT_AUTHORIZED_PUBLIC.to_string()),
                };
                if public.is_none() && reply.response_topic.is_none() {
                    return; // Nowhere to answer.
                }
                if !self.admit_refusal_result(&reply, source_name.as_deref()) {
                    return;
                }
                let fields = payload::parse_payload(topic_field.as_deref(), &publish.payload)
                    .map(|p| payload::fields_json(&p))
                    .unwrap_or(serde_json::Value::Null);
                self.refusal_result(broker, &device, refusal.reason, public, fields, &reply)
                    .await;
            }
        }
    }

    /// A refused command, logged at most once per client per rate-limit period.
    fn log_refusal(&self, device: &str, publish: &ClientPublish, reason: &str) {
        let client = match &publish.user {
            Some(user) => format!("client {:?} (user {user:?})", publish.client_id),
            None => format!("client {:?} (anonymous)", publish.client_id),
        };
        if let Some(suppressed) = self.refusal_log.admit(&publish.client_id) {
            log::warn!(
                "command for {device:?} from {client} refused: {reason}{}",
                suppressed_suffix(suppressed)
            );
        }
    }

    /// Whether the requester may have one more refusal result now ([`throttle`]); a dropped one is
    /// counted under `source` and logged at most once per rate-limit period.
    fn admit_refusal_result(&mut self, reply: &Reply, source: Option<&str>) -> bool {
        let requester = reply.requester();
        if self.results.admit(&requester, tokio::time::Instant::now()) {
            return true;
        }
        self.stats.result_dropped(source);
        let key = format!("results of {requester}");
        if let Some(suppressed) = self.refusal_log.admit(&key) {
            log::warn!(
                "results of refused commands from {requester} dropped: at most {} at once, then one per {} s{}",
                throttle::BURST,
                throttle::REFILL.as_secs(),
                suppressed_suffix(suppressed)
            );
        }
        false
    }

    /// A command to a device of a codec source (with the write right): its fields through the codec's
    /// `encodeDownlink`, the publish then carrying the bytes as `{"raw": ...}` (and no field of the
    /// topic), with the fPort the codec chose. Other commands pass unchanged; the `Err` is the codec's
    /// refusal.
    async fn through_codec(
        &self,
        resolved: &Option<Resolved>,
        field: Option<String>,
        mut publish: ClientPublish,
    ) -> (ClientPublish, Option<String>, Result<Option<u8>, String>) {
        let Some(resolved) = resolved else {
            return (publish, field, Ok(None));
        };
        if !publish.allowed || !self.codecs.covers(&resolved.source, &resolved.address) {
            return (publish, field, Ok(None));
        }
        match self
            .codecs
            .encode(
                &resolved.source,
                &resolved.address,
                field.as_deref(),
                &publish.payload,
            )
            .await
        {
            Ok((payload, fport)) => {
                publish.payload = payload;
                (publish, None, Ok(fport))
            }
            Err(reason) => (publish, field, Err(reason)),
        }
    }

    /// Checks and encodes a command: its frames, the outbox they go to, the source's name and, when
    /// sealed, the destination and the highest counter to take once the frames are queued.
    #[allow(clippy::type_complexity)]
    fn accept(
        &mut self,
        device: &str,
        field: Option<&str>,
        publish: &ClientPublish,
        reply: &Arc<Reply>,
        resolved: Option<Resolved>,
    ) -> Result<(Vec<Command>, Downlink, String, Option<(u16, u32)>), Refused> {
        let Route {
            resolved,
            settings,
            downlink,
            budget_allows,
        } = self.route(device, publish, resolved)?;
        let payload = command_payload(field, publish, &settings, &resolved)?;
        let format = resolved.payload.unwrap_or(settings.payload);
        let encoded = encode::encode_payload(format, &resolved.address, &payload)
            .map_err(|e| Refused::quiet(e.to_string()))?;
        let to = link::destination(settings.link.header, &resolved.address)
            .map_err(|e| Refused::quiet(e.to_string()))?;
        let key = self.sealing_key(&settings, to, device)?;
        let deliver = resolved.deliver.unwrap_or(settings.deliver);
        let mut frames = Vec::with_capacity(encoded.len());
        let mut sealed = None;
        for (offset, payload) in (0u64..).zip(encoded) {
            let seq = self.next_seq(&settings.name, &resolved.address);
            let seal = match &key {
                Some(key) => Some(Seal {
                    key,
                    counter: self.next_counter(&settings.name, to, key, offset)?,
                }),
                None => None,
            };
            if let Some(seal) = &seal {
                sealed = Some((to, seal.counter));
            }
            let bytes = link::wrap(&settings.link, to, seq, &payload.bytes, seal)
                .map_err(|e| Refused::quiet(e.to_string()))?;
            check_airtime(&settings, budget_allows.as_ref(), bytes.len())?;
            check_length(&settings, bytes.len())?;
            let fields = result_fields(&payload);
            let reply_share = if frames.is_empty() { reply.cost() } else { 0 };
            frames.push(Command {
                cost: Command::cost_of(device, &resolved.address, &bytes, &fields, reply_share),
                device: device.to_string(),
                address: resolved.address.clone(),
                bytes,
                fport: None,
                fields,
                deliver,
                reply: reply.clone(),
            });
        }
        Ok((frames, downlink, settings.name, sealed))
    }

    /// Where a command for `device` goes, once the client may write it, the device is known, and its
    /// source exists and sends commands.
    fn route(
        &self,
        device: &str,
        publish: &ClientPublish,
        resolved: Option<Resolved>,
    ) -> Result<Route, Refused> {
        if !publish.allowed {
            return Err(Refused::logged(format!(
                "not authorized: this client may not write {:?} (a [[broker.user]] write filter, or anonymous_write, must allow it)",
                publish.topic
            )));
        }
        let unknown = || {
            Refused::quiet(format!(
                "unknown device {device:?}: not a [[device]] name, nor {{source}}-{{address}} of a device its source has heard (a frame, or a retained state from before a restart)"
            ))
        };
        let resolved = resolved.ok_or_else(unknown)?;
        let source = self.sources.get(&resolved.source).ok_or_else(|| {
            Refused::quiet(format!(
                "the source {:?} is not configured",
                resolved.source
            ))
        })?;
        let Some(downlink) = source.downlink.clone() else {
            return Err(Refused::logged(format!(
                "commands are off on source {:?} (set commands = true on its [[source]])",
                resolved.source
            )));
        };
        if !self.is_real(&resolved) {
            return Err(unknown());
        }
        Ok(Route {
            settings: source.settings.clone(),
            budget_allows: source.budget_allows.clone(),
            resolved,
            downlink,
        })
    }

    /// The key that seals a command to `to` on an encrypted source (the device's own, else the
    /// source's); `None` on a source that is not encrypted.
    fn sealing_key(
        &self,
        settings: &SourceCommands,
        to: u16,
        device: &str,
    ) -> Result<Option<crate::crypto::FrameKey>, Refused> {
        if !settings.encrypted {
            return Ok(None);
        }
        let keys = self.keys.sources.get(&settings.name);
        let key = keys.and_then(|k| {
            k.devices
                .get(&u32::from(to))
                .or(k.default.as_ref())
                .cloned()
        });
        key.map(Some).ok_or_else(|| {
            Refused::logged(format!(
                "no key for {device:?}: its encrypted source has neither a key_file nor a [[device]] key_file for it"
            ))
        })
    }

    /// A command given up (its ttl ended, or its confirmed downlink was never acknowledged: `why` says
    /// which in the log): logged and published as `expired` with `reason`.
    async fn gave_up(&mut self, broker: &Broker, queued: Queued, why: &str, reason: String) {
        let command = queued.command;
        log::info!(
            "command for {:?} from client {:?} {why}: {reason}",
            command.device,
            command.reply.client_id
        );
        self.result(
            broker,
            &command.device,
            "expired",
            Some(reason),
            command.fields,
            &command.reply,
        )
        .await;
    }

    /// A dispatcher's outcome, published.
    async fn report(&mut self, broker: &Broker, outcome: Outcome) {
        match outcome {
            Outcome::Sent { queued, airtime } => {
                let command = queued.command;
                let reason = airtime.map(|a| format!("{} ms on air", a.as_millis()));
                self.result(
                    broker,
                    &command.device,
                    "sent",
                    reason,
                    command.fields,
                    &command.reply,
                )
                .await;
            }
            Outcome::Acknowledged { queued } => {
                let command = queued.command;
                let reason = Some("the device acknowledged it".to_string());
                self.result(
                    broker,
                    &command.device,
                    "acknowledged",
                    reason,
                    command.fields,
                    &command.reply,
                )
                .await;
            }
            Outcome::Unacknowledged { queued, reason } => {
                self.gave_up(broker, queued, "not acknowledged", reason)
                    .await
            }
            Outcome::Expired { queued, reason } => {
                self.gave_up(broker, queued, "expired", reason).await
            }
        }
    }

    /// Publishes a refusal: in full (`reason`, the command's `fields`) on the writer's response topic, and
    /// `public` (a reason without the command's fields) on `{base}/{device}/set/result` when given.
    async fn refusal_result(
        &self,
        broker: &Broker,
        device: &str,
        reason: String,
        public: Option<String>,
        fields: serde_json::Value,
        reply: &Reply,
    ) {
        if let Some(public) = public {
            let payload = serde_json::json!({ "status": "refused", "reason": public });
            self.publish_result(
                broker,
                topic::commands::result_topic(&self.base_topic, device),
                payload,
            )
            .await;
        }
        if let Some(topic) = &reply.response_topic {
            let payload =
                serde_json::json!({ "status": "refused", "reason": reason, "fields": fields });
            self.publish_response(broker, topic, payload, reply).await;
        }
    }

    async fn publish_result(&self, broker: &Broker, topic: String, payload: serde_json::Value) {
        let message = Message {
            topic,
            payload: payload.to_string().into_bytes(),
            qos: self.qos,
            retain: false,
        };
        if let Err(error) = broker.publish(&message).await {
            log::warn!("command result not published: {error}");
        }
    }

    async fn publish_response(
        &self,
        broker: &Broker,
        topic: &str,
        payload: serde_json::Value,
        reply: &Reply,
    ) {
        let response = Message {
            topic: topic.to_string(),
            payload: payload.to_string().into_bytes(),
            qos: self.qos,
            retain: false,
        };
        if let Err(error) = broker
            .publish_with_correlation(&response, reply.correlation_data.as_deref())
            .await
        {
            log::warn!("command response not published: {error}");
        }
    }

    /// Publishes a result on `{base}/{device}/set/result` and, when asked for, on the response topic.
    async fn result(
        &self,
        broker: &Broker,
        device: &str,
        status: &str,
        reason: Option<String>,
        fields: serde_json::Value,
        reply: &Reply,
    ) {
        let payload = serde_json::json!({ "status": status, "reason": reason, "fields": fields });
        let topic = topic::commands::result_topic(&self.base_topic, device);
        self.publish_result(broker, topic, payload.clone()).await;
        if let Some(topic) = &reply.response_topic {
            self.publish_response(broker, topic, payload, reply).await;
        }
    }
}

/// What `{base}/{device}/set/result` says when a client without the write right tried: nothing it wrote.
const NOT_AUTHORIZED_PUBLIC: &str =
    "not authorized: a client without the right to write this device's set topics tried";

/// A refusal, and whether it is worth a log line (about rights and configuration, not typos).
struct Refused {
    reason: String,
    log: bool,
}

impl Refused {
    fn logged(reason: String) -> Self {
        Refused { reason, log: true }
    }

    fn quiet(reason: String) -> Self {
        Refused { reason, log: false }
    }
}
