//! Home Assistant MQTT discovery: which devices are announced, with which entities, and when their
//! retained config messages are published, updated and removed. [`Discovery`] is a pure state machine
//! like the registry: the pipeline tells it what happened (a reading, a forgotten device, a reload, Home
//! Assistant's birth message) with the time passed in, and publishes the messages it returns; it never
//! does IO, except [`load`] and [`save`] of its state file, which the pipeline calls off the runtime.
//!
//! - One Home Assistant device per sensorgate device, one entity per field (the type table is in
//!   [`types`], the JSON in [`payload`]), plus the diagnostic `rssi`, `snr` and `last_seen`. A gateway
//!   device carries the counters of `{base}/gateway/stats`.
//! - On a source with `commands = true`, a field the device accepts commands for (LPP digital and analog
//!   outputs, MySensors actuators, a field whose `[[device]] fields` override says `component =
//!   "switch"`; see `crate::commands::commandable_fields`) is announced as a `switch` or `number` with
//!   its command topic `{base}/{device}/set/{field}` instead of a sensor, once the device has reported
//!   it (a named switch with the device's first reading, reported or not); an override with another
//!   `component` keeps it a sensor. When `commands` goes off the control's
//!   config is cleared and the sensor announced again.
//! - Which devices: `devices = "all"` every device heard, `"configured"` only `[[device]]` entries,
//!   `"auto"` (default) every device of serial and simulator sources and only `[[device]]` entries on
//!   radio sources; a `[[device]]` with `homeassistant = false` never.
//! - Published (retained) when a device is first announced and when its set of fields grows; all again,
//!   spread over [`REPUBLISH_SPREAD`], when Home Assistant's birth message (`{prefix}/status` = `online`)
//!   arrives (births coalesce: at most one re-publication per [`REPUBLISH_SPREAD`], see [`republish`]);
//!   in place when a device is renamed or its overrides change (same `unique_id`s, new topics,
//!   an entity whose platform changed has its old config cleared); removed (an empty retained config on
//!   every topic it was announced on) when the registry forgets the device, when it is no longer to be
//!   announced, or when discovery is switched off. What was announced is kept in `homeassistant.json` in
//!   the state directory, so a device removed from the configuration while the gateway was stopped is
//!   removed from Home Assistant at the next start. The file is written only when it changed.
//! - A removal is kept (in the state file too) until Home Assistant has seen it: it is published again
//!   with the first slice after the next birth message, then forgotten. At a start the removals go out
//!   before a running Home Assistant has reconnected to the restarted embedded broker, and an empty
//!   retained config that nobody receives only deletes the retained one: the birth that follows the
//!   reconnection is what makes Home Assistant drop the entity. A config published again on the topic
//!   cancels its removal.
//! - Bounded: at most `max_entities` fields are tracked over all devices (beyond it new fields are not
//!   announced and are counted), at most `max_entities` removals are kept for Home Assistant's next birth
//!   (beyond it a removal is published once and not kept, counted), and the registry bounds the devices.

pub mod payload;
pub mod republish;
pub mod stage;
pub mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::decode::PayloadFormat;
use crate::model::Message;
use crate::publish;
use crate::stats::DiscoveryCounters;
use payload::{Common, DeviceBlock};
use republish::Republication;
pub use republish::REPUBLISH_SPREAD;
pub use types::{Component, FieldOverride, ValueKind};
/// Fields tracked over all devices by default.
pub const DEFAULT_MAX_ENTITIES: usize = 20_000;
/// The state file's name in the state directory.
pub const STATE_FILE: &str = "homeassistant.json";

/// `[homeassistant] devices`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Announce {
    /// Every device of serial and simulator sources, only `[[device]]` entries on radio sources.
    #[default]
    Auto,
    /// Only `[[device]]` entries.
    Configured,
    /// Every device heard.
    All,
}

/// What kind of link a source is, for `devices = "auto"` and the device model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Serial,
    Simulator,
    /// A LoRa radio, by chip name (`SX1276`).
    Radio(String),
    /// 433/868 MHz sensors received by rtl_433: like a radio, neighbours' sensors are heard too.
    Rtl433,
}

/// What discovery needs to know about one `[[source]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    pub link: Link,
    pub payload: PayloadFormat,
    /// `commands = true`: its devices' outputs are announced as controls.
    pub commands: bool,
}

/// What one `[[device]]` says for Home Assistant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRules {
    /// `homeassistant = false` turns the device off.
    pub announce: bool,
    pub fields: BTreeMap<String, FieldOverride>,
}

/// Everything discovery needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    pub prefix: String,
    pub announce: Announce,
    pub base_topic: String,
    pub gateway_id: String,
    /// QoS of the config messages (the gateway's `[publish] qos`).
    pub qos: u8,
    pub sources: HashMap<String, SourceInfo>,
    /// Every `[[device]]`, by (source, address).
    pub devices: HashMap<(String, String), DeviceRules>,
    /// Whether there is an `[upstream]` (the gateway's uplink entities).
    pub uplink: bool,
    pub sw_version: String,
    pub max_entities: usize,
}

impl DiscoverySettings {
    /// The birth topic Home Assistant publishes `online` on when it (re)starts.
    pub fn birth_topic(&self) -> String {
        format!("{}/status", self.prefix)
    }
}

/// A device's name and availability (its will's topic and payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: String,
    pub availability_topic: String,
    pub offline_payload: String,
}

/// What discovery asks the registry.
pub trait DeviceLookup {
    /// A tracked device: its identity and merged JSON state.
    fn tracked(&self, source: &str, address: &str) -> Option<(Identity, &Map<String, Json>)>;
    /// The identity the configuration gives (source, address), tracked or not.
    fn configured(&self, source: &str, address: &str) -> Option<Identity>;
}

/// One announced device, as kept in memory and in the state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Announced {
    source: String,
    address: String,
    #[serde(flatten)]
    identity: Identity,
    /// Every field seen (and the gateway keys `rssi`, `snr`, `last_seen`), with its first value's kind,
    /// and the switches the configuration names (seen or not; text until seen).
    fields: BTreeMap<String, ValueKind>,
    /// The fields a codec's `normalizeUplink` named when they were first seen, with their path in
    /// TTN's normalized schema (`air.temperature`); they type fields whose names say nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    normalized: BTreeMap<String, String>,
    /// Every config topic published and not cleared, sorted (a vector: a device has a few, and a set's
    /// node would hold room for eleven).
    topics: Vec<String>,
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    version: u32,
    gateway_topics: BTreeSet<String>,
    devices: Vec<Announced>,
    /// Config topics cleared and not yet seen cleared by Home Assistant (no birth since).
    #[serde(default)]
    unseen_removals: BTreeSet<String>,
}

type Key = (String, String);

/// The discovery state machine. See the module documentation.
#[derive(Debug)]
pub struct Discovery {
    settings: DiscoverySettings,
    common: Common,
    devices: BTreeMap<Key, Announced>,
    gateway_topics: BTreeSet<String>,
    /// Fields tracked over all devices.
    entities: usize,
    entities_dropped: u64,
    /// The re-publications after birth messages.
    republication: Republication<Key>,
    /// Config topics cleared since Home Assistant's last birth; published again after the next one.
    unseen_removals: BTreeSet<String>,
    removals_over_cap: u64,
    dirty: bool,
}

fn common_of(settings: &DiscoverySettings) -> Common {
    Common {
        prefix: settings.prefix.clone(),
        gateway_node_id: payload::gateway_node_id(&settings.gateway_id),
        gateway_availability_topic: publish::gateway_availability_topic(&settings.base_topic),
        sw_version: settings.sw_version.clone(),
    }
}

fn clear(topic: &str, qos: u8) -> Message {
    Message {
        topic: topic.to_string(),
        payload: Vec::new(),
        qos,
        retain: true,
    }
}

/// The messages that remove everything a state file says was announced (discovery switched off).
pub fn clear_stored(stored: &Stored, qos: u8) -> Vec<Message> {
    stored
        .devices
        .iter()
        .flat_map(|device| device.topics.iter())
        .chain(stored.gateway_topics.iter())
        .chain(stored.unseen_removals.iter())
        .map(|topic| clear(topic, qos))
        .collect()
}

impl Discovery {
    /// A state machine continuing from what `stored` says was announced (nothing when `None`).
    pub fn new(settings: DiscoverySettings, stored: Option<Stored>) -> Self {
        let stored = stored.unwrap_or_default();
        let common = common_of(&settings);
        let devices: BTreeMap<Key, Announced> = stored
            .devices
            .into_iter()
            .map(|device| ((device.source.clone(), device.address.clone()), device))
            .collect();
        let entities = devices.values().map(|d| d.fields.len()).sum();
        Discovery {
            settings,
            common,
            devices,
            gateway_topics: stored.gateway_topics,
            entities,
            entities_dropped: 0,
            republication: Republication::default(),
            unseen_removals: stored.unseen_removals,
            removals_over_cap: 0,
            dirty: false,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &DiscoverySettings {
        &self.settings
    }

    /// At start: the gateway's configs, and every stored device brought up to date with the
    /// configuration (re-published under its current name, or removed when no longer announced).
    pub fn start(&mut self, lookup: &dyn DeviceLookup) -> Vec<Message> {
        let mut messages = self.gateway_messages(true);
        messages.extend(self.reconcile(lookup));
        messages
    }

    /// Applies new settings (a reload): gateway configs again, and every announced device reconciled.
    pub fn reconfigure(
        &mut self,
        settings: DiscoverySettings,
        lookup: &dyn DeviceLookup,
    ) -> Vec<Message> {
        let same_gateway = settings.prefix == self.settings.prefix
            && settings.base_topic == self.settings.base_topic
            && settings.gateway_id == self.settings.gateway_id
            && settings.uplink == self.settings.uplink;
        self.settings = settings;
        self.common = common_of(&self.settings);
        let mut messages = self.gateway_messages(!same_gateway);
        messages.extend(self.reconcile(lookup));
        messages
    }

    /// Every stored device: removed when no longer announced, else re-published with its current
    /// identity (the tracked one, else the configured one, else the stored one).
    fn reconcile(&mut self, lookup: &dyn DeviceLookup) -> Vec<Message> {
        let keys: Vec<Key> = self.devices.keys().cloned().collect();
        let mut messages = Vec::new();
        for key in keys {
            if !self.eligible(&key.0, &key.1) {
                messages.extend(self.remove(&key));
                continue;
            }
            let identity = lookup
                .tracked(&key.0, &key.1)
                .map(|(identity, _)| identity)
                .or_else(|| lookup.configured(&key.0, &key.1));
            if let (Some(identity), Some(device)) = (identity, self.devices.get_mut(&key)) {
                if device.identity != identity {
                    device.identity = identity;
                    self.dirty = true;
                }
            }
            messages.extend(self.sync(&key, true));
        }
        messages
    }

    /// After the registry took a reading of (source, address): the configs of a device announced for
    /// the first time, of its new fields, or all of them again when it was renamed.
    pub fn after_reading(
        &mut self,
        lookup: &dyn DeviceLookup,
        source: &str,
        address: &str,
    ) -> Vec<Message> {
        self.after_codec_reading(lookup, source, address, &[])
    }

    /// [`Discovery::after_reading`] for a reading a codec decoded: `normalized` holds (field, path in
    /// TTN's normalized schema) for the fields its `normalizeUplink` named, which type the new ones.
    pub fn after_codec_reading(
        &mut self,
        lookup: &dyn DeviceLookup,
        source: &str,
        address: &str,
        normalized: &[(String, String)],
    ) -> Vec<Message> {
        let Some((identity, state)) = lookup.tracked(source, address) else {
            return Vec::new();
        };
        if !self.eligible(source, address) {
            return Vec::new();
        }
        let key = (source.to_string(), address.to_string());
        let device = self
            .devices
            .entry(key.clone())
            .or_insert_with(|| Announced {
                source: source.to_string(),
                address: address.to_string(),
                identity: identity.clone(),
                fields: BTreeMap::new(),
                normalized: BTreeMap::new(),
                topics: Vec::new(),
            });
        let renamed = device.identity != identity;
        if renamed {
            device.identity = identity;
        }
        let mut grew = false;
        // A switch the configuration names is announced with the device's first reading, reported or
        // not: a relay may report its state only once it was switched.
        let named = named_switches(&self.settings, source, address);
        let unreported = named
            .iter()
            .filter(|field| !state.contains_key(*field))
            .map(|field| (field, &Json::Null));
        for (field, value) in state.iter().chain(unreported) {
            if device.fields.contains_key(field) || !announceable_key(field) {
                continue;
            }
            if self.entities >= self.settings.max_entities {
                self.entities_dropped += 1;
                continue;
            }
            device.fields.insert(field.clone(), ValueKind::of(value));
            if let Some((_, path)) = normalized.iter().find(|(named, _)| named == field) {
                device.normalized.insert(field.clone(), path.clone());
            }
            self.entities += 1;
            grew = true;
        }
        if renamed || grew {
            self.dirty = true;
            return self.sync(&key, renamed);
        }
        Vec::new()
    }

    /// The registry forgot (source, address): its entities are removed.
    pub fn forget(&mut self, source: &str, address: &str) -> Vec<Message> {
        self.remove(&(source.to_string(), address.to_string()))
    }

    /// Home Assistant (re)started: every config is published again, spread over [`REPUBLISH_SPREAD`],
    /// the gateway's and the unseen removals first. Returns `false` when the birth was coalesced into
    /// the re-publication that follows the current window.
    pub fn on_birth(&mut self, now: Instant) -> bool {
        let start = self.republication.birth(now);
        if start {
            self.republication.start(self.devices.keys().cloned(), now);
        }
        start
    }

    /// When the next slice of a re-publication (or a coalesced birth's re-publication) is due.
    pub fn next_republish(&self) -> Option<Instant> {
        self.republication.due()
    }

    /// The slice of the re-publication due at `now`.
    pub fn republish_due(&mut self, now: Instant) -> Vec<Message> {
        if self.republication.start_due(now) {
            self.republication.start(self.devices.keys().cloned(), now);
        }
        let Some(slice) = self.republication.slice(now) else {
            return Vec::new();
        };
        let mut messages = Vec::new();
        if slice.head {
            messages.extend(self.gateway_messages(true));
            // Home Assistant is subscribed now: these reach it, and need not be kept any longer.
            let seen = std::mem::take(&mut self.unseen_removals);
            self.dirty |= !seen.is_empty();
            messages.extend(seen.iter().map(|topic| clear(topic, self.settings.qos)));
        }
        for key in slice.keys {
            if self.devices.contains_key(&key) {
                messages.extend(self.sync(&key, true));
            }
        }
        messages
    }

    /// Fields not announced because `max_entities` were tracked.
    pub fn entities_dropped(&self) -> u64 {
        self.entities_dropped
    }

    /// The counters for `{base}/gateway/stats`.
    pub fn counters(&self) -> DiscoveryCounters {
        DiscoveryCounters {
            fields_over_cap: self.entities_dropped,
            births_coalesced: self.republication.coalesced(),
            removals_over_cap: self.removals_over_cap,
        }
    }

    /// The empty retained config that removes `topic`, kept until Home Assistant's next birth.
    fn removal(&mut self, topic: &str) -> Message {
        if !self.unseen_removals.contains(topic) {
            if self.unseen_removals.len() < self.settings.max_entities {
                self.unseen_removals.insert(topic.to_string());
                self.dirty = true;
            } else {
                self.removals_over_cap += 1;
            }
        }
        clear(topic, self.settings.qos)
    }

    /// The state file's contents when they changed since the last call.
    pub fn take_snapshot(&mut self) -> Option<Vec<u8>> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        serde_json::to_vec(&self.snapshot()).ok()
    }

    /// What was announced, as the state file keeps it.
    pub fn snapshot(&self) -> Stored {
        Stored {
            version: 1,
            gateway_topics: self.gateway_topics.clone(),
            devices: self.devices.values().cloned().collect(),
            unseen_removals: self.unseen_removals.clone(),
        }
    }

    /// Whether (source, address) is to be announced under the settings in force.
    pub fn eligible(&self, source: &str, address: &str) -> bool {
        let Some(info) = self.settings.sources.get(source) else {
            return false;
        };
        let rules = self
            .settings
            .devices
            .get(&(source.to_string(), address.to_string()));
        if rules.is_some_and(|rules| !rules.announce) {
            return false;
        }
        match self.settings.announce {
            Announce::All => true,
            Announce::Configured => rules.is_some(),
            Announce::Auto => {
                rules.is_some() || !matches!(info.link, Link::Radio(_) | Link::Rtl433)
            }
        }
    }

    /// The gateway device's configs (`all`: every one, else only those not published yet).
    fn gateway_messages(&mut self, all: bool) -> Vec<Message> {
        let stats = publish::gateway_stats_topic(&self.settings.base_topic);
        let configs = payload::gateway_configs(
            &self.common,
            &self.settings.gateway_id,
            &stats,
            self.settings.uplink,
        );
        let wanted: BTreeSet<String> = configs.iter().map(|(topic, _)| topic.clone()).collect();
        let unwanted: Vec<String> = self.gateway_topics.difference(&wanted).cloned().collect();
        let mut messages: Vec<Message> = unwanted.iter().map(|t| self.removal(t)).collect();
        for (topic, config) in configs {
            if all || !self.gateway_topics.contains(&topic) {
                messages.push(self.config_message(topic, &config));
            }
        }
        if self.gateway_topics != wanted {
            self.gateway_topics = wanted;
            self.dirty = true;
        }
        messages
    }

    /// A config to publish on `topic`; it cancels a removal of the topic Home Assistant has not seen.
    fn config_message(&mut self, topic: String, config: &Json) -> Message {
        if self.unseen_removals.remove(&topic) {
            self.dirty = true;
        }
        Message {
            topic,
            payload: config.to_string().into_bytes(),
            qos: self.settings.qos,
            retain: true,
        }
    }

    /// The configs the device should have now, by topic.
    fn desired(&self, device: &Announced) -> BTreeMap<String, Json> {
        let Some(info) = self.settings.sources.get(&device.source) else {
            return BTreeMap::new();
        };
        let rules = self
            .settings
            .devices
            .get(&(device.source.clone(), device.address.clone()));
        let block = DeviceBlock {
            node_id: payload::device_node_id(
                &self.common.gateway_node_id,
                &device.source,
                &device.address,
            ),
            name: device.identity.name.clone(),
            model: model(info),
            state_topic: publish::device_topic(&self.settings.base_topic, &device.identity.name),
            availability_topic: device.identity.availability_topic.clone(),
            online_payload: publish::ONLINE.to_string(),
            offline_payload: device.identity.offline_payload.clone(),
        };
        let controls = self.controls(info, rules, device);
        let mut configs = BTreeMap::new();
        for (field, kind) in &device.fields {
            let over = rules.and_then(|rules| rules.fields.get(field));
            if info.link == Link::Rtl433
                && over.is_none()
                && crate::source::rtl433::line::METADATA_FIELDS.contains(&field.as_str())
            {
                continue; // How it was received (noise, frequency, protocol...): in the state JSON only.
            }
            if let Some(control) = controls.iter().find(|c| &c.field == field) {
                let read_only = over
                    .and_then(|o| o.component.as_deref())
                    .is_some_and(|component| component != "switch");
                if !read_only {
                    configs.extend(self.control_config(&block, info, field, *kind, over, control));
                    continue;
                }
            }
            configs.extend(self.reading_config(&block, info, device, field, *kind, over));
        }
        configs
    }

    /// The config of a field announced as a control (`switch`, `number`), by its topic; its override
    /// is ignored when Home Assistant would refuse it.
    fn control_config(
        &self,
        block: &DeviceBlock,
        info: &SourceInfo,
        field: &str,
        kind: ValueKind,
        over: Option<&FieldOverride>,
        control: &crate::commands::Commandable,
    ) -> Option<(String, Json)> {
        let entity = types::control_entity(info.payload, field, kind, over, control.control)
            .or_else(|_| types::control_entity(info.payload, field, kind, None, control.control))
            .ok()?;
        Some(payload::control_config(
            &self.common,
            block,
            field,
            &entity,
            control.control,
            &control.command_topic,
        ))
    }

    /// The config of a field announced as a reading (a sensor, a binary sensor, a tracker), by its
    /// topic; `None` when the field is not announced.
    fn reading_config(
        &self,
        block: &DeviceBlock,
        info: &SourceInfo,
        device: &Announced,
        field: &str,
        kind: ValueKind,
        over: Option<&FieldOverride>,
    ) -> Option<(String, Json)> {
        let normalized = device.normalized.get(field).filter(|_| over.is_none());
        let entity = if publish::is_state_key(field) {
            types::gateway_key_type(field)
        } else if let Some(path) = normalized {
            types::infer_normalized(field, path, kind)
        } else {
            // The configuration was checked with the same rules; an override refused here is ignored.
            types::resolve(info.payload, field, kind, over)
                .unwrap_or_else(|_| types::infer(info.payload, field, kind))
        }?;
        if matches!(entity.component, Component::Switch | Component::Number) {
            return None; // A control without a command topic (its source has no commands).
        }
        if let types::Render::Location { longitude, .. } = &entity.render {
            if !device.fields.contains_key(longitude) {
                return None; // A tracker needs both coordinates.
            }
        }
        Some(payload::entity_config(&self.common, block, field, &entity))
    }

    /// The fields of `device` announced as controls: those it reported that accept commands, when its
    /// source has `commands = true`.
    fn controls(
        &self,
        info: &SourceInfo,
        rules: Option<&DeviceRules>,
        device: &Announced,
    ) -> Vec<crate::commands::Commandable> {
        if !info.commands {
            return Vec::new();
        }
        let fields: Vec<String> = device
            .fields
            .keys()
            .filter(|field| !publish::is_state_key(field))
            .cloned()
            .collect();
        let named: Vec<String> = rules
            .map(|rules| {
                rules
                    .fields
                    .iter()
                    .filter(|(field, over)| {
                        over.component.as_deref() == Some("switch")
                            && device.fields.contains_key(*field)
                    })
                    .map(|(field, _)| field.clone())
                    .collect()
            })
            .unwrap_or_default();
        crate::commands::commandable_fields(
            &self.settings.base_topic,
            &device.identity.name,
            info.payload,
            info.commands,
            &fields,
            &named,
        )
    }

    /// Brings the device's published configs in line with [`Discovery::desired`]: clears the topics no
    /// longer wanted, publishes the new ones, and with `all` every one.
    fn sync(&mut self, key: &Key, all: bool) -> Vec<Message> {
        let Some(device) = self.devices.get(key) else {
            return Vec::new();
        };
        let desired = self.desired(device);
        let unwanted: Vec<String> = device
            .topics
            .iter()
            .filter(|topic| !desired.contains_key(*topic))
            .cloned()
            .collect();
        let due: Vec<(&String, &Json)> = desired
            .iter()
            .filter(|(topic, _)| all || !device.topics.contains(*topic))
            .collect();
        let mut messages: Vec<Message> = unwanted.iter().map(|t| self.removal(t)).collect();
        for (topic, config) in due {
            messages.push(self.config_message(topic.clone(), config));
        }
        let topics: Vec<String> = desired.into_keys().collect();
        if let Some(device) = self.devices.get_mut(key) {
            if device.topics != topics {
                device.topics = topics;
                self.dirty = true;
            }
        }
        messages
    }

    /// Forgets the device and clears every config it was announced with.
    fn remove(&mut self, key: &Key) -> Vec<Message> {
        let Some(device) = self.devices.remove(key) else {
            return Vec::new();
        };
        self.entities = self.entities.saturating_sub(device.fields.len());
        self.dirty = true;
        device
            .topics
            .iter()
            .map(|topic| self.removal(topic))
            .collect()
    }
}

impl DeviceLookup for crate::devices::Registry {
    fn tracked(&self, source: &str, address: &str) -> Option<(Identity, &Map<String, Json>)> {
        let (name, will, state) = self.device(source, address)?;
        Some((identity_of(name, will), state))
    }

    fn configured(&self, source: &str, address: &str) -> Option<Identity> {
        let (name, will) = self.configured_device(source, address)?;
        Some(identity_of(&name, &will))
    }
}

fn identity_of(name: &str, will: &Message) -> Identity {
    Identity {
        name: name.to_string(),
        availability_topic: will.topic.clone(),
        offline_payload: String::from_utf8_lossy(&will.payload).into_owned(),
    }
}

/// The fields of (source, address) its `[[device]] fields` announce as switches (`component = "switch"`),
/// when its source has `commands = true`.
fn named_switches(settings: &DiscoverySettings, source: &str, address: &str) -> Vec<String> {
    if !settings
        .sources
        .get(source)
        .is_some_and(|info| info.commands)
    {
        return Vec::new();
    }
    settings
        .devices
        .get(&(source.to_string(), address.to_string()))
        .map(|rules| {
            rules
                .fields
                .iter()
                .filter(|(_, over)| over.component.as_deref() == Some("switch"))
                .map(|(field, _)| field.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a key of a device's state gets an entity: every field, and of the gateway's keys `rssi`,
/// `snr` and `last_seen`.
fn announceable_key(key: &str) -> bool {
    !publish::is_state_key(key) || types::gateway_key_type(key).is_some()
}

/// The device model Home Assistant shows: payload format and link.
fn model(info: &SourceInfo) -> String {
    let payload = match info.payload {
        PayloadFormat::Json => "JSON",
        PayloadFormat::Lpp => "Cayenne LPP",
        PayloadFormat::MySensors => "MySensors",
        PayloadFormat::Codec => "JavaScript codec",
    };
    match &info.link {
        Link::Serial => format!("{payload} over serial"),
        Link::Simulator => format!("{payload} (simulated)"),
        Link::Radio(chip) => format!("{payload} over {chip} LoRa"),
        Link::Rtl433 => "rtl_433 (433/868 MHz)".to_string(),
    }
}

/// The state file in `state_dir`.
pub fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// Reads the state file; `None` when there is none. A damaged file is set aside (`.bad`) and logged:
/// what it listed stays in Home Assistant until those devices are heard or removed there.
pub async fn load(path: &Path) -> Option<Stored> {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            log::warn!(
                "Home Assistant discovery state {} not read: {error}",
                path.display()
            );
            return None;
        }
    };
    match serde_json::from_slice::<Stored>(&bytes) {
        Ok(stored) => Some(stored),
        Err(error) => {
            let aside = path.with_extension("json.bad");
            let _ = tokio::fs::rename(path, &aside).await;
            log::warn!(
                "Home Assistant discovery state {} is damaged ({error}); set aside as {}",
                path.display(),
                aside.display()
            );
            None
        }
    }
}

/// Writes the state file (a temporary file, fsync, rename) on a blocking thread.
pub async fn save(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    })
    .await
    .unwrap_or_else(|error| Err(std::io::Error::other(error)))
}

/// Removes the state file (discovery switched off, everything cleared).
pub async fn remove_state(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => log::warn!("{} not removed: {error}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Default)]
    struct Fake {
        tracked: HashMap<Key, (Identity, Map<String, Json>)>,
        configured: HashMap<Key, Identity>,
    }

    impl DeviceLookup for Fake {
        fn tracked(&self, source: &str, address: &str) -> Option<(Identity, &Map<String, Json>)> {
            self.tracked
                .get(&(source.to_string(), address.to_string()))
                .map(|(identity, state)| (identity.clone(), state))
        }
        fn configured(&self, source: &str, address: &str) -> Option<Identity> {
            self.configured
                .get(&(source.to_string(), address.to_string()))
                .cloned()
        }
    }

    fn identity(name: &str) -> Identity {
        Identity {
            name: name.into(),
            availability_topic: format!("sg/{name}/availability"),
            offline_payload: "offline".into(),
        }
    }

    fn settings() -> DiscoverySettings {
        let mut sources = HashMap::new();
        sources.insert(
            "uart0".to_string(),
            SourceInfo {
                link: Link::Serial,
                payload: PayloadFormat::Lpp,
                commands: false,
            },
        );
        sources.insert(
            "lora".to_string(),
            SourceInfo {
                link: Link::Radio("SX1276".into()),
                payload: PayloadFormat::Lpp,
                commands: false,
            },
        );
        let mut devices = HashMap::new();
        devices.insert(
            ("lora".to_string(), "1".to_string()),
            DeviceRules {
                announce: true,
                fields: BTreeMap::new(),
            },
        );
        DiscoverySettings {
            prefix: "homeassistant".into(),
            announce: Announce::Auto,
            base_topic: "sg".into(),
            gateway_id: "gw".into(),
            qos: 1,
            sources,
            devices,
            uplink: false,
            sw_version: "0".into(),
            max_entities: 1000,
        }
    }

    fn hear(fake: &mut Fake, source: &str, address: &str, name: &str, fields: &[&str]) {
        let entry = fake
            .tracked
            .entry((source.into(), address.into()))
            .or_insert_with(|| (identity(name), Map::new()));
        entry.0 = identity(name);
        for field in fields {
            entry.1.insert(field.to_string(), Json::from(1.5));
        }
        entry
            .1
            .insert("last_seen".into(), Json::from("2024-01-01T00:00:00Z"));
    }

    fn configs(messages: &[Message]) -> Vec<&str> {
        messages
            .iter()
            .filter(|m| !m.payload.is_empty())
            .map(|m| m.topic.as_str())
            .collect()
    }

    fn cleared(messages: &[Message]) -> Vec<&str> {
        messages
            .iter()
            .filter(|m| m.payload.is_empty())
            .map(|m| m.topic.as_str())
            .collect()
    }

    #[test]
    fn first_reading_new_fields_and_rename() {
        let mut fake = Fake::default();
        let mut discovery = Discovery::new(settings(), None);
        assert_eq!(
            configs(&discovery.start(&fake)).len(),
            3,
            "the gateway's entities"
        );
        hear(&mut fake, "uart0", "17", "uart0-17", &["temperature_1"]);
        let first = discovery.after_reading(&fake, "uart0", "17");
        assert_eq!(
            configs(&first),
            [
                "homeassistant/sensor/sensorgate_gw_uart0_17/last_seen/config",
                "homeassistant/sensor/sensorgate_gw_uart0_17/temperature_1/config"
            ]
        );
        assert!(first.iter().all(|m| m.retain));
        assert!(
            discovery.after_reading(&fake, "uart0", "17").is_empty(),
            "nothing new"
        );
        hear(
            &mut fake,
            "uart0",
            "17",
            "uart0-17",
            &["relative_humidity_2"],
        );
        let grown = discovery.after_reading(&fake, "uart0", "17");
        assert_eq!(
            configs(&grown),
            ["homeassistant/sensor/sensorgate_gw_uart0_17/relative_humidity_2/config"]
        );
        hear(&mut fake, "uart0", "17", "kitchen", &[]);
        let renamed = discovery.after_reading(&fake, "uart0", "17");
        assert_eq!(configs(&renamed).len(), 3, "every entity, same topics");
        assert!(
            cleared(&renamed).is_empty(),
            "no ghost: same unique ids and topics"
        );
        let config: Json = serde_json::from_slice(&renamed[0].payload).unwrap();
        assert_eq!(config["state_topic"], "sg/kitchen");
        assert_eq!(config["device"]["name"], "kitchen");
    }

    #[test]
    fn radio_devices_need_a_device_entry_under_auto() {
        let mut fake = Fake::default();
        let mut discovery = Discovery::new(settings(), None);
        hear(&mut fake, "lora", "7", "lora-7", &["temperature_1"]);
        assert!(discovery.after_reading(&fake, "lora", "7").is_empty());
        hear(&mut fake, "lora", "1", "greenhouse", &["temperature_1"]);
        assert_eq!(
            configs(&discovery.after_reading(&fake, "lora", "1")).len(),
            2
        );
        let mut all = settings();
        all.announce = Announce::All;
        let mut discovery = Discovery::new(all, None);
        assert_eq!(
            configs(&discovery.after_reading(&fake, "lora", "7")).len(),
            2
        );
    }

    #[test]
    fn removal_override_and_restart() {
        let mut fake = Fake::default();
        let mut discovery = Discovery::new(settings(), None);
        hear(&mut fake, "lora", "1", "greenhouse", &["temperature_1"]);
        discovery.after_reading(&fake, "lora", "1");
        let stored: Stored = serde_json::from_slice(&discovery.take_snapshot().unwrap()).unwrap();
        assert!(
            discovery.take_snapshot().is_none(),
            "written only when it changed"
        );
        // Restart with the [[device]] entry gone: removed without hearing the device.
        let mut gone = settings();
        gone.devices.clear();
        let mut restarted = Discovery::new(gone, Some(stored.clone()));
        let removed = restarted.start(&Fake::default());
        assert_eq!(cleared(&removed).len(), 2);
        assert!(restarted.take_snapshot().is_some());
        // Override off on reload.
        let mut off = settings();
        off.devices
            .get_mut(&("lora".to_string(), "1".to_string()))
            .unwrap()
            .announce = false;
        let cleared_now = discovery.reconfigure(off, &fake);
        assert_eq!(cleared(&cleared_now).len(), 2);
        assert!(discovery.after_reading(&fake, "lora", "1").is_empty());
        // Renamed in the configuration while stopped: re-published under the new name at start.
        let mut renamed = Fake::default();
        renamed
            .configured
            .insert(("lora".into(), "1".into()), identity("glasshouse"));
        let mut restarted = Discovery::new(settings(), Some(stored));
        let messages = restarted.start(&renamed);
        let device_configs: Vec<&Message> = messages
            .iter()
            .filter(|m| m.topic.contains("sensorgate_gw_lora_1"))
            .collect();
        assert_eq!(device_configs.len(), 2);
        let config: Json = serde_json::from_slice(&device_configs[0].payload).unwrap();
        assert_eq!(config["state_topic"], "sg/glasshouse");
        // Forgotten by the registry.
        assert_eq!(cleared(&restarted.forget("lora", "1")).len(), 2);
        assert_eq!(clear_stored(&Stored::default(), 1).len(), 0);
    }

    #[test]
    fn birth_republishes_everything_spread_out() {
        let mut fake = Fake::default();
        let mut discovery = Discovery::new(settings(), None);
        discovery.start(&fake);
        for i in 0..100 {
            hear(
                &mut fake,
                "uart0",
                &i.to_string(),
                &format!("d{i}"),
                &["temperature_1"],
            );
            discovery.after_reading(&fake, "uart0", &i.to_string());
        }
        let t0 = Instant::now();
        discovery.on_birth(t0);
        let mut total = 0;
        let mut now = t0;
        let mut slices = 0;
        while let Some(at) = discovery.next_republish() {
            assert!(at - t0 <= REPUBLISH_SPREAD, "within the spread");
            now = now.max(at);
            total += discovery.republish_due(now).len();
            slices += 1;
        }
        assert_eq!(total, 3 + 200);
        assert!(slices > 10, "spread over {slices} slices");
        // Births during a re-publication: one more complete re-publication after the window.
        let t1 = now + REPUBLISH_SPREAD;
        assert!(discovery.on_birth(t1));
        let first_slice = discovery.republish_due(t1).len();
        for i in 1..=99 {
            assert!(!discovery.on_birth(t1 + Duration::from_millis(i)));
        }
        let mut total = 0;
        let mut now = t1;
        while let Some(at) = discovery.next_republish() {
            now = now.max(at);
            total += discovery.republish_due(now).len();
        }
        assert!(
            now >= t1 + REPUBLISH_SPREAD,
            "the second one follows the window"
        );
        assert_eq!(
            total,
            (3 + 200) * 2 - first_slice,
            "the rest of the first, all of the second"
        );
        assert_eq!(discovery.counters().births_coalesced, 99);
    }

    /// Runs every slice of the re-publication that a birth at `t0` starts; the messages.
    fn birth_messages(discovery: &mut Discovery, t0: Instant) -> Vec<Message> {
        assert!(discovery.on_birth(t0));
        let mut messages = Vec::new();
        while let Some(at) = discovery.next_republish() {
            messages.extend(discovery.republish_due(at.max(t0)));
        }
        messages
    }

    #[test]
    fn removals_are_kept_until_home_assistant_was_born_again() {
        let mut fake = Fake::default();
        let mut discovery = Discovery::new(settings(), None);
        hear(&mut fake, "lora", "1", "greenhouse", &["temperature_1"]);
        discovery.after_reading(&fake, "lora", "1");
        let stored: Stored = serde_json::from_slice(&discovery.take_snapshot().unwrap()).unwrap();
        // Restarted without the [[device]] while Home Assistant is away: removed, and kept.
        let mut gone = settings();
        gone.devices.clear();
        let mut restarted = Discovery::new(gone.clone(), Some(stored));
        let removed: BTreeSet<String> = cleared(&restarted.start(&Fake::default()))
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(removed.len(), 2);
        let kept: Stored = serde_json::from_slice(&restarted.take_snapshot().unwrap()).unwrap();
        assert_eq!(kept.unseen_removals, removed, "kept in the state file");
        // Restarted once more before Home Assistant came back: still kept.
        let mut again = Discovery::new(gone, Some(kept));
        again.start(&Fake::default());
        // Home Assistant's birth: the removals go out again with the first slice, then are forgotten.
        let t0 = Instant::now();
        let after_birth = birth_messages(&mut again, t0);
        let cleared_again: BTreeSet<String> = cleared(&after_birth)
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(cleared_again, removed);
        let seen: Stored = serde_json::from_slice(&again.take_snapshot().unwrap()).unwrap();
        assert!(seen.unseen_removals.is_empty());
        let later = birth_messages(&mut again, t0 + REPUBLISH_SPREAD);
        assert!(cleared(&later).is_empty(), "seen once: not sent again");
    }

    #[test]
    fn a_config_published_again_cancels_its_removal_and_removals_are_bounded() {
        let mut fake = Fake::default();
        let mut small = settings();
        small.max_entities = 3;
        let mut discovery = Discovery::new(small.clone(), None);
        hear(&mut fake, "lora", "1", "greenhouse", &["temperature_1"]);
        discovery.after_reading(&fake, "lora", "1");
        let mut off = small.clone();
        off.devices.clear();
        assert_eq!(cleared(&discovery.reconfigure(off, &fake)).len(), 2);
        assert_eq!(discovery.snapshot().unseen_removals.len(), 2);
        discovery.reconfigure(small, &fake);
        discovery.after_reading(&fake, "lora", "1");
        assert!(
            discovery.snapshot().unseen_removals.is_empty(),
            "announced again: nothing to remove"
        );
        // At most max_entities (3) removals are kept: the fourth is published but not kept.
        assert_eq!(cleared(&discovery.forget("lora", "1")).len(), 2);
        for address in ["2", "3"] {
            hear(&mut fake, "uart0", address, "shed", &[]);
            discovery.after_reading(&fake, "uart0", address);
            assert_eq!(cleared(&discovery.forget("uart0", address)).len(), 1);
        }
        assert_eq!(discovery.snapshot().unseen_removals.len(), 3);
        assert_eq!(discovery.counters().removals_over_cap, 1);
    }

    #[test]
    fn entities_are_bounded() {
        let mut fake = Fake::default();
        let mut small = settings();
        small.max_entities = 3;
        let mut discovery = Discovery::new(small, None);
        hear(
            &mut fake,
            "uart0",
            "1",
            "a",
            &["temperature_1", "temperature_2", "temperature_3"],
        );
        discovery.after_reading(&fake, "uart0", "1");
        assert_eq!(discovery.entities_dropped(), 1);
    }

    /// The rules of a device that announces and overrides one field.
    fn one_field_rules(field: &str, over: FieldOverride) -> DeviceRules {
        DeviceRules {
            announce: true,
            fields: [(field.to_string(), over)].into(),
        }
    }

    /// The discovery config published on `topic` among `messages`.
    fn config_on(messages: &[Message], topic: &str) -> Json {
        let message = messages
            .iter()
            .find(|m| m.topic == topic)
            .unwrap_or_else(|| panic!("no config on {topic}"));
        serde_json::from_slice(&message.payload).unwrap()
    }

    #[test]
    fn outputs_are_controls_on_a_source_with_commands() {
        let mut fake = Fake::default();
        let mut with_commands = settings();
        with_commands.sources.get_mut("uart0").unwrap().commands = true;
        let mut discovery = Discovery::new(with_commands.clone(), None);
        hear(
            &mut fake,
            "uart0",
            "17",
            "relay",
            &["digital_out_1", "analog_out_2", "temperature_3"],
        );
        let announced = discovery.after_reading(&fake, "uart0", "17");
        let node = "sensorgate_gw_uart0_17";
        let switch = format!("homeassistant/switch/{node}/digital_out_1/config");
        let number = format!("homeassistant/number/{node}/analog_out_2/config");
        let topics = configs(&announced);
        assert!(topics.contains(&switch.as_str()), "{topics:?}");
        assert!(topics.contains(&number.as_str()), "{topics:?}");
        assert!(
            topics.contains(&format!("homeassistant/sensor/{node}/temperature_3/config").as_str())
        );
        let config = config_on(&announced, &switch);
        assert_eq!(config["command_topic"], "sg/relay/set/digital_out_1");
        // Override to a sensor: the switch is cleared, a binary_sensor takes its place.
        let mut read_only = with_commands.clone();
        read_only.devices.insert(
            ("uart0".into(), "17".into()),
            one_field_rules(
                "digital_out_1",
                FieldOverride {
                    component: Some("binary_sensor".into()),
                    ..FieldOverride::default()
                },
            ),
        );
        let changed = discovery.reconfigure(read_only, &fake);
        assert!(cleared(&changed).contains(&switch.as_str()));
        assert!(configs(&changed).contains(
            &format!("homeassistant/binary_sensor/{node}/digital_out_1/config").as_str()
        ));
        // Commands off: no control at all.
        let changed = discovery.reconfigure(settings(), &fake);
        assert!(cleared(&changed).contains(&number.as_str()));
        assert!(configs(&changed)
            .iter()
            .all(|t| !t.contains("/switch/") && !t.contains("/number/")));
        // A JSON field named as a switch in the configuration.
        let mut json = with_commands;
        json.sources.get_mut("uart0").unwrap().payload = PayloadFormat::Json;
        json.devices.insert(
            ("uart0".into(), "17".into()),
            one_field_rules(
                "digital_out_1",
                FieldOverride {
                    component: Some("switch".into()),
                    name: Some("Pump".into()),
                    ..FieldOverride::default()
                },
            ),
        );
        let changed = discovery.reconfigure(json, &fake);
        let config = config_on(&changed, &switch);
        assert_eq!(
            (&config["name"], &config["command_topic"]),
            (
                &Json::from("Pump"),
                &Json::from("sg/relay/set/digital_out_1")
            )
        );
        assert!(
            configs(&changed).iter().all(|t| !t.contains("/number/")),
            "JSON has no output types"
        );
    }

    #[test]
    fn a_named_switch_not_reported_yet_is_announced_with_the_first_reading() {
        let mut fake = Fake::default();
        let mut pump = settings();
        let source = pump.sources.get_mut("uart0").unwrap();
        source.commands = true;
        source.payload = PayloadFormat::Json;
        pump.devices.insert(
            ("uart0".into(), "18".into()),
            one_field_rules(
                "pump",
                FieldOverride {
                    component: Some("switch".into()),
                    ..FieldOverride::default()
                },
            ),
        );
        let mut discovery = Discovery::new(pump, None);
        hear(&mut fake, "uart0", "18", "pond", &["temperature"]);
        let first = discovery.after_reading(&fake, "uart0", "18");
        assert!(
            configs(&first).contains(&"homeassistant/switch/sensorgate_gw_uart0_18/pump/config"),
            "{:?}",
            configs(&first)
        );
    }
}
