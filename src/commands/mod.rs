//! Commands to devices: MQTT in, frames out. A client publishes on `{base}/{device}/set` (a JSON object of
//! fields, or `{"raw": "hex"}`) or `{base}/{device}/set/{field}` (a plain value); the broker's command
//! tap hands the router every such publish with its client and its MQTT 5 response topic and correlation
//! data, including those the client had no right to write. The [`Router`] finds the device's source and
//! address, refuses what may not or cannot be sent (no write right, `commands` off on the source, an
//! unknown device, a payload the source's format cannot carry, a full queue), encodes the rest exactly
//! the way the source decodes (`crate::encode`: payload, header with the gateway's sequence number,
//! AES-128-CCM sealing with the gateway's own counter, CRC, framing) and queues each frame in the source's
//! [`Downlink`]. One [`Dispatcher`] per source sends what is due (now, or `rx_delay` after the device's
//! next uplink) through the task that owns the port or radio, within the radio's duty-cycle budget.
//! Every command's progress (`queued`, `sent`, `expired`, `refused`) is published, not retained, on
//! `{base}/{device}/set/result` and, when the request named one, on its response topic with its
//! correlation data. Counters per source go into `{base}/gateway/stats`.
//!
//! Layout: [`topics`] (topics and payloads), [`outbox`] (queues, delivery windows, the seam to the source
//! task), [`dutycycle`] (the frequency plan and the budget), [`dispatch`] (the per-source sender). What
//! Home Assistant announces as `switch`/`number` entities is [`commandable_fields`].

pub mod codec;
pub mod dispatch;
pub mod dutycycle;
pub mod outbox;
pub mod topics;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use dispatch::{Dispatcher, Outcome};
pub use dutycycle::DutyCycleSetting;
pub use outbox::{CommandPort, Deliver, Downlink, OutboxSettings, Reply, TxRequest, TxResult};

use crate::broker::{Broker, ClientPublish};
use crate::crypto::FrameKeys;
use crate::decode::{PacketDecoder, PayloadFormat};
use crate::encode::link::{self, LinkSpec, Seal};
use crate::encode::{self, CommandPayload, Control};
use crate::model::Message;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::radio::{time_on_air, RadioSettings};
use crate::stats::CommandCounters;
use outbox::Command;

/// Client publishes the router holds at most before the broker drops them (counted).
pub const INPUT_CAPACITY: usize = 1024;
/// Outcomes the dispatchers may have waiting for the router.
const OUTCOME_CAPACITY: usize = 1024;
/// The most devices the router keeps a sequence number and frame counter for; beyond it they start over
/// (harmless: counters start from the clock, see [`Router::next_counter`]).
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
    /// A radio's settings (time on air, the sub-band); `None` for serial sources.
    pub radio: Option<RadioSettings>,
}

/// A `[[device]]`, as commands need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    pub name: String,
    pub source: String,
    pub address: String,
    /// `deliver` of the `[[device]]`, overriding its source's.
    pub deliver: Option<Deliver>,
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
    /// The command settings of a configuration: every source (with or without `commands`) and every
    /// `[[device]]`; results at `[publish] qos`.
    pub fn from_config(config: &crate::config::Config) -> CommandSettings {
        use crate::config::SourceKind;
        use crate::frame::crc::CrcMode;
        let sources = config
            .sources
            .iter()
            .map(|source| {
                let (crc, framing, radio) = match &source.kind {
                    SourceKind::Serial(serial) => (serial.crc, Some(serial.framing), None),
                    SourceKind::Simulator(simulator) => {
                        (simulator.crc, Some(simulator.framing), None)
                    }
                    SourceKind::Radio(radio) => {
                        (CrcMode::None, None, Some(radio.stage_settings().0))
                    }
                };
                let commands = source.commands.clone().unwrap_or_default();
                SourceCommands {
                    name: source.name.clone(),
                    enabled: source.commands.is_some(),
                    payload: source.payload,
                    link: LinkSpec {
                        header: source.header,
                        crc,
                        framing,
                        gateway_address: commands.address,
                    },
                    decoder: PacketDecoder {
                        crc,
                        header: source.header,
                        payload: source.payload,
                    },
                    encrypted: source.encryption.is_some(),
                    deliver: commands.deliver,
                    outbox: OutboxSettings {
                        depth: commands.queue,
                        ttl: commands.ttl,
                        rx_delay: commands.rx_delay,
                    },
                    duty_cycle: commands.duty_cycle,
                    radio,
                }
            })
            .collect();
        let devices = config
            .device
            .iter()
            .map(|device| DeviceEntry {
                name: device.name.clone(),
                source: device.source.clone(),
                address: device.address.clone(),
                deliver: device.deliver,
            })
            .collect();
        CommandSettings {
            base_topic: config.gateway.base_topic.clone(),
            qos: config.publish.qos,
            sources,
            devices,
            codecs: config
                .codecs()
                .into_iter()
                .filter(|((source, _), _)| {
                    config
                        .sources
                        .iter()
                        .any(|s| &s.name == source && s.commands.is_some())
                })
                .collect(),
        }
    }

    /// Whether any source sends commands.
    pub fn any_enabled(&self) -> bool {
        self.sources.iter().any(|s| s.enabled)
    }
}

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
                command_topic: topics::field_command_topic(base, device, field),
            });
        }
    }
    out
}

/// One source as the router knows it.
struct Source {
    settings: SourceCommands,
    downlink: Option<Downlink>,
    /// The budget's allowed time on air per hour, for refusing a frame longer than all of it.
    budget_allows: Option<(Duration, String)>,
}

/// Who a device is.
#[derive(Debug, Clone)]
struct Resolved {
    source: String,
    address: String,
    deliver: Option<Deliver>,
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
    /// The gateway's sequence number and frame counter per (source, address).
    seq: HashMap<(String, String), u8>,
    counters: HashMap<(String, String), u32>,
    stats: CommandStats,
    refusal_log: RateLimiter,
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
                );
                let budget = source.radio.as_ref().and_then(|radio| {
                    dutycycle::limit_for(source.duty_cycle, radio.frequency_hz)
                        .map(|(share, text)| dutycycle::Budget::new(share, text))
                });
                budget_allows = budget
                    .as_ref()
                    .map(|b| (b.allowed(), b.description.clone()));
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
        let mut devices = HashMap::new();
        for device in &settings.devices {
            let resolved = Resolved {
                source: device.source.clone(),
                address: device.address.clone(),
                deliver: device.deliver,
            };
            devices
                .entry(crate::topic::gateway::sanitize_level(&device.name))
                .or_insert(resolved);
        }
        Commands {
            router: Router {
                base_topic: settings.base_topic,
                qos: settings.qos,
                sources,
                source_names,
                devices,
                keys,
                seq: HashMap::new(),
                counters: HashMap::new(),
                stats: stats.clone(),
                refusal_log: RateLimiter::new(Duration::from_secs(10)),
                codecs: codec::CodecEncoders::start(&settings.codecs),
            },
            dispatchers,
            outcomes,
            ports,
            stats,
        }
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

/// The first frame counter the gateway uses for a device: 16 per second since 1_700_000_000 (2023-11-14),
/// so counters keep growing across restarts without being stored (as the simulator's nodes do).
fn clock_counter(now: SystemTime) -> u32 {
    let seconds = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .saturating_sub(1_700_000_000);
    u32::try_from(seconds.saturating_mul(16)).unwrap_or(u32::MAX)
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

    /// The gateway's next frame counter for a device: above the last one, and never below the clock's.
    fn next_counter(&mut self, source: &str, address: &str) -> u32 {
        let key = (source.to_string(), address.to_string());
        if self.counters.len() >= MAX_TRACKED && !self.counters.contains_key(&key) {
            self.counters.clear();
        }
        let clock = clock_counter(SystemTime::now());
        let counter = self.counters.entry(key).or_insert(0);
        *counter = counter.saturating_add(1).max(clock);
        *counter
    }

    /// One client publish on a command topic.
    async fn handle(&mut self, broker: &Broker, publish: ClientPublish) {
        let Some(target) = topics::parse_topic(&self.base_topic, &publish.topic) else {
            return;
        };
        let device = target.device.to_string();
        let reply = Reply {
            client_id: publish.client_id.clone(),
            response_topic: publish.response_topic.clone(),
            correlation_data: publish.correlation_data.clone(),
        };
        let resolved = self.resolve(&device);
        let source_name = resolved.as_ref().map(|r| r.source.clone());
        let client = match &publish.user {
            Some(user) => format!("client {:?} (user {user:?})", publish.client_id),
            None => format!("client {:?} (anonymous)", publish.client_id),
        };
        let fields_shown = topics::parse_payload(target.field, &publish.payload)
            .map(|p| topics::fields_json(&p))
            .unwrap_or(serde_json::Value::Null);
        let field = target.field.map(str::to_string);
        let (publish, field) = match self.through_codec(&resolved, field, publish).await {
            Ok(encoded) => encoded,
            Err(reason) => {
                if let Some(source) = &source_name {
                    self.stats.refused(source);
                }
                self.result(
                    broker,
                    &device,
                    "refused",
                    Some(reason),
                    fields_shown,
                    &reply,
                )
                .await;
                return;
            }
        };
        match self.accept(&device, field.as_deref(), &publish, resolved) {
            Ok((frames, source)) => {
                self.stats.received(&source);
                for (command, downlink) in frames {
                    let fields = command.fields.clone();
                    let reply = command.reply.clone();
                    match downlink.push(command) {
                        Ok(()) => {
                            self.result(broker, &device, "queued", None, fields, &reply)
                                .await
                        }
                        Err(refusal) => {
                            self.stats.refused(&source);
                            let reason = refusal.to_string();
                            self.result(broker, &device, "refused", Some(reason), fields, &reply)
                                .await;
                        }
                    }
                }
            }
            Err(refusal) => {
                if let Some(source) = &source_name {
                    self.stats.refused(source);
                }
                if refusal.log {
                    if let Some(suppressed) = self.refusal_log.admit(&publish.client_id) {
                        log::warn!(
                            "command for {device:?} from {client} refused: {}{}",
                            refusal.reason,
                            suppressed_suffix(suppressed)
                        );
                    }
                }
                self.result(
                    broker,
                    &device,
                    "refused",
                    Some(refusal.reason),
                    fields_shown,
                    &reply,
                )
                .await;
            }
        }
    }

    /// A command to a device of a codec source (with the write right): its fields through the codec's
    /// `encodeDownlink`, the publish then carrying the bytes as `{"raw": ...}` (and no field of the
    /// topic). Other commands pass unchanged; `Err` is the codec's refusal.
    async fn through_codec(
        &self,
        resolved: &Option<Resolved>,
        field: Option<String>,
        mut publish: ClientPublish,
    ) -> Result<(ClientPublish, Option<String>), String> {
        let Some(resolved) = resolved else {
            return Ok((publish, field));
        };
        if !publish.allowed || !self.codecs.covers(&resolved.source) {
            return Ok((publish, field));
        }
        publish.payload = self
            .codecs
            .encode(
                &resolved.source,
                &resolved.address,
                field.as_deref(),
                &publish.payload,
            )
            .await?;
        Ok((publish, None))
    }

    /// Checks and encodes a command: its frames with their outbox, and the source's name.
    #[allow(clippy::type_complexity)]
    fn accept(
        &mut self,
        device: &str,
        field: Option<&str>,
        publish: &ClientPublish,
        resolved: Option<Resolved>,
    ) -> Result<(Vec<(Command, Downlink)>, String), Refused> {
        if !publish.allowed {
            return Err(Refused::logged(format!(
                "not authorized: this client may not write {:?} (a [[broker.user]] write filter, or anonymous_write, must allow it)",
                publish.topic
            )));
        }
        let resolved = resolved.ok_or_else(|| {
            Refused::quiet(format!(
                "unknown device {device:?}: not a [[device]] name, nor {{source}}-{{address}} of a source"
            ))
        })?;
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
        let payload = topics::parse_payload(field, &publish.payload)
            .map_err(|e| Refused::quiet(e.to_string()))?;
        let settings = source.settings.clone();
        let budget_allows = source.budget_allows.clone();
        let encoded = encode::encode_payload(settings.payload, &resolved.address, &payload)
            .map_err(|e| Refused::quiet(e.to_string()))?;
        let to = link::destination(settings.link.header, &resolved.address)
            .map_err(|e| Refused::quiet(e.to_string()))?;
        let key = if settings.encrypted {
            let keys = self.keys.sources.get(&settings.name);
            let key = keys.and_then(|k| {
                k.devices
                    .get(&u32::from(to))
                    .or(k.default.as_ref())
                    .cloned()
            });
            Some(key.ok_or_else(|| {
                Refused::logged(format!(
                    "no key for {device:?}: its encrypted source has neither a key_file nor a [[device]] key_file for it"
                ))
            })?)
        } else {
            None
        };
        let deliver = resolved.deliver.unwrap_or(settings.deliver);
        let mut frames = Vec::with_capacity(encoded.len());
        for payload in encoded {
            let seq = self.next_seq(&settings.name, &resolved.address);
            let seal = match &key {
                Some(key) => Some(Seal {
                    key,
                    counter: self.next_counter(&settings.name, &resolved.address),
                }),
                None => None,
            };
            let bytes = link::wrap(&settings.link, to, seq, &payload.bytes, seal)
                .map_err(|e| Refused::quiet(e.to_string()))?;
            if let (Some(radio), Some((allowed, description))) = (&settings.radio, &budget_allows) {
                let airtime = time_on_air(radio, bytes.len());
                if airtime > *allowed {
                    return Err(Refused::quiet(format!(
                        "{} ms on air is more than the whole duty-cycle budget ({description})",
                        airtime.as_millis()
                    )));
                }
            }
            let fields = if payload.fields.is_empty() {
                topics::fields_json(&CommandPayload::Raw(payload.bytes.clone()))
            } else {
                topics::fields_json(&CommandPayload::Fields(payload.fields.clone()))
            };
            frames.push((
                Command {
                    device: device.to_string(),
                    address: resolved.address.clone(),
                    bytes,
                    fields,
                    deliver,
                    reply: Reply {
                        client_id: publish.client_id.clone(),
                        response_topic: publish.response_topic.clone(),
                        correlation_data: publish.correlation_data.clone(),
                    },
                },
                downlink.clone(),
            ));
        }
        Ok((frames, settings.name))
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
            Outcome::Expired { queued, reason } => {
                let command = queued.command;
                log::info!(
                    "command for {:?} from client {:?} expired: {reason}",
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
        let payload = serde_json::json!({ "status": status, "reason": reason, "fields": fields })
            .to_string()
            .into_bytes();
        let message = Message {
            topic: topics::result_topic(&self.base_topic, device),
            payload,
            qos: self.qos,
            retain: false,
        };
        if let Err(error) = broker.publish(&message).await {
            log::warn!("command result not published: {error}");
        }
        if let Some(topic) = &reply.response_topic {
            let response = Message {
                topic: topic.clone(),
                ..message
            };
            if let Err(error) = broker
                .publish_with_correlation(&response, reply.correlation_data.as_deref())
                .await
            {
                log::warn!("command response not published: {error}");
            }
        }
    }
}

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
