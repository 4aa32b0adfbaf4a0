//! The device registry: gives every device heard its topic name, drops duplicate readings, keeps each
//! device's merged state, tracks which devices are online, and says which availability messages and wills
//! to publish when a device is first heard, falls silent, loses its source, or the gateway stops. It is a
//! pure state machine: time is passed in, it never sleeps, never does IO and never logs (the caller counts
//! and logs what it returns).
//!
//! Naming: a `[[device]]` with the same source and address gives the name; any other device is called
//! `{source}-{address}` (`{source}` when the address is empty). Names are sanitised into one topic level
//! ([`crate::publish::sanitize_level`]). Names are unique: `gateway` is reserved for the gateway, configured
//! names are reserved for their devices, and a device whose name is already taken gets the first free
//! `{name}_2`, `{name}_3`, ... (so `gateway` becomes `gateway_2`).
//!
//! Availability: the `online` message goes to the same topic as the device's will, with the will's QoS and
//! retain flag, the way an MQTT client's birth and last-will messages pair up (and how Zigbee2MQTT keeps
//! `online`/`offline` on one topic). By default that is `{base}/{device}/availability`, retained; with a
//! custom `will`, its topic alternates between `online` and the will's payload.
//!
//! Memory is bounded: each device remembers its last [`SEQ_MEMORY`] sequence numbers, and at most
//! `max_devices` devices are tracked (configured devices always are). At the cap, a new device replaces the
//! unconfigured offline device silent the longest, whose retained topics (state, field topics,
//! availability) are cleared with empty retained messages ahead of the new device's; when every tracked
//! device is online or configured, the new device's readings are dropped ([`ReadingOutcome::OverDeviceCap`]).
//!
//! Fields are bounded too: a device keeps at most `max_fields` fields, the first names it sent
//! ([`publish::merge_state`]); a reading's fields beyond them are dropped, reported in
//! [`ReadingOutcome::Publish`] (with the device's name the first time, so the caller logs it once), and get
//! no field topic. Retained device topics in total are thus at most the tracked devices times
//! `max_fields + 7` (state, availability, the fields, and one per gateway key a field may be named like).
//!
//! After a restart: [`Registry::offline_after_restart`] turns the restored retained `online`s into
//! `offline`s, and [`Registry::adopt_restored_states`] lets each device's merged state continue from its
//! restored `{base}/{device}` JSON, cut to its first `max_fields` fields.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{Map, Value as Json};

use crate::model::{Message, Reading};
use crate::publish::{self, PublishSettings};

/// How many distinct devices the registry tracks by default.
pub const DEFAULT_MAX_DEVICES: usize = 10_000;
/// How many forgotten devices [`Registry::take_forgotten`] remembers between two calls.
pub const FORGOTTEN_MEMORY: usize = 1024;
/// How many recent sequence numbers (with the time they were heard) each device remembers for dedup.
pub const SEQ_MEMORY: usize = 8;

/// One `[[device]]` of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSettings {
    /// The topic name.
    pub name: String,
    /// The `[[source]]` it is heard on.
    pub source: String,
    /// The address its header or payload carries.
    pub address: String,
    /// Silence after which its will is published; `None` takes the registry default.
    pub offline_after: Option<Duration>,
    /// A will replacing the default `offline` on `{base}/{device}/availability`.
    pub will: Option<WillSettings>,
}

/// A device's custom last will: `will = { topic, payload, qos, retain }` of a `[[device]]`, which the
/// configuration reads as written (what is not given is [`will_defaults`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WillSettings {
    pub topic: String,
    #[serde(default = "will_defaults::payload")]
    pub payload: String,
    #[serde(default = "will_defaults::qos")]
    pub qos: u8,
    #[serde(default = "will_defaults::retain")]
    pub retain: bool,
}

/// What a custom will is when its `payload`, `qos` or `retain` is not given: `offline`, QoS 1, retained.
pub mod will_defaults {
    pub const PAYLOAD: &str = crate::topic::gateway::OFFLINE;
    pub const QOS: u8 = 1;
    pub const RETAIN: bool = true;

    pub(super) fn payload() -> String {
        PAYLOAD.to_string()
    }
    pub(super) fn qos() -> u8 {
        QOS
    }
    pub(super) fn retain() -> bool {
        RETAIN
    }
}

/// Everything the registry needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    pub base_topic: String,
    /// QoS of the gateway's messages, default wills included.
    pub qos: u8,
    /// Whether device state and field topics are retained (availability always is, unless a custom will
    /// says otherwise).
    pub retain: bool,
    pub field_topics: bool,
    /// Default silence after which a device's will is published.
    pub offline_after: Duration,
    /// A reading with the same device and sequence number within this window is a duplicate.
    pub dedup_window: Duration,
    /// The most fields a device keeps (`[devices] max_fields`); new names beyond them are dropped.
    pub max_fields: usize,
    pub devices: Vec<DeviceSettings>,
}

/// What became of one reading.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadingOutcome {
    /// The messages to publish: the device's state, its field topics, then `online` if it just came online.
    Publish {
        messages: Vec<Message>,
        /// The reading's fields dropped because the device already has `max_fields` fields.
        fields_dropped: usize,
        /// The device's name, the first time it drops a field (the caller logs it once per device).
        newly_capped: Option<String>,
    },
    /// Same device and sequence number as a reading within the dedup window: dropped.
    Duplicate,
    /// A new device while the registry is full of online or configured devices: dropped.
    OverDeviceCap,
}

/// Sorts the devices of a read-only view in `order`. Every view sorts through this one function with a
/// function pointer, so that the sort's code is compiled once for them all.
pub fn sort_snapshots(
    devices: &mut [DeviceSnapshot],
    order: fn(&DeviceSnapshot, &DeviceSnapshot) -> std::cmp::Ordering,
) {
    devices.sort_by(order);
}

/// One tracked device as [`Registry::snapshot`] copies it out.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSnapshot {
    pub name: String,
    pub source: String,
    pub address: String,
    /// Whether a `[[device]]` names it (else it is an unknown sender, named `{source}-{address}`).
    pub configured: bool,
    pub online: bool,
    /// When its last reading arrived (the registry's clock).
    pub last_heard: Instant,
    /// How long it may stay silent before it is taken offline.
    pub offline_after: Duration,
    /// Its merged JSON state (fields plus the gateway's keys, [`publish::STATE_KEYS`]).
    pub state: Map<String, Json>,
}

type DeviceId = u64;

/// What the configuration says about one (source, address).
#[derive(Debug)]
struct Configured {
    name: String,
    offline_after: Option<Duration>,
    will: Option<WillSettings>,
}

/// One tracked device.
#[derive(Debug)]
struct Device {
    name: String,
    source: String,
    address: String,
    configured: bool,
    offline_after: Duration,
    will: Message,
    online_message: Message,
    online: bool,
    last_heard: Instant,
    /// When `expire` takes it offline; `None` when offline or when the deadline is beyond `Instant`'s range.
    deadline: Option<Instant>,
    recent_seqs: VecDeque<(u32, Instant)>,
    state: Map<String, Json>,
    /// Whether it has dropped a field for want of room (reported once).
    capped: bool,
    /// Which of [`publish::STATE_KEYS`] (by bit) it has sent as a field, so had a field topic published.
    shadowing: u8,
}

/// The device registry. See the module documentation.
#[derive(Debug)]
pub struct Registry {
    publish: PublishSettings,
    default_offline_after: Duration,
    dedup_window: Duration,
    max_devices: usize,
    max_fields: usize,
    /// How many tracked devices have no `[[device]]` (the ones the cap counts).
    unconfigured_tracked: usize,
    /// source -> address -> configuration.
    configured: HashMap<String, HashMap<String, Configured>>,
    /// source -> address -> id of the tracked device.
    ids: HashMap<String, HashMap<String, DeviceId>>,
    /// Boxed: the table keeps room for more devices than it holds, a pointer each, not a whole entry.
    devices: HashMap<DeviceId, Box<Device>>,
    next_id: DeviceId,
    /// Names no new device may take: `gateway`, every configured name, every tracked device's name.
    names_taken: HashSet<String>,
    /// Online devices by the time `expire` takes them offline.
    deadlines: BTreeSet<(Instant, DeviceId)>,
    /// Offline unconfigured devices by when they were last heard: the order in which the cap evicts them.
    evictable: BTreeSet<(Instant, DeviceId)>,
    /// Device states restored from the broker's retained store, by name, waiting for the device to be heard.
    restored_states: HashMap<String, Map<String, Json>>,
    /// Devices forgotten (evicted by the cap) since the caller last asked, as (source, address); at most
    /// [`FORGOTTEN_MEMORY`], the oldest dropped beyond it and counted in `forgotten_unreported`.
    forgotten: VecDeque<(String, String)>,
    forgotten_unreported: u64,
}

impl Registry {
    /// A registry tracking up to [`DEFAULT_MAX_DEVICES`] devices.
    pub fn new(settings: RegistrySettings) -> Self {
        Self::with_device_cap(settings, DEFAULT_MAX_DEVICES)
    }

    /// A registry tracking up to `max_devices` devices besides the configured ones.
    pub fn with_device_cap(settings: RegistrySettings, max_devices: usize) -> Self {
        let mut names_taken = HashSet::from([publish::GATEWAY_NAME.to_string()]);
        let mut configured: HashMap<String, HashMap<String, Configured>> = HashMap::new();
        for device in settings.devices {
            let addresses = configured.entry(device.source).or_default();
            if addresses.contains_key(&device.address) {
                continue; // The first [[device]] for an address wins; config validation reports the rest.
            }
            let name = unique_name(&names_taken, &publish::sanitize_level(&device.name));
            names_taken.insert(name.clone());
            let entry = Configured {
                name,
                offline_after: device.offline_after,
                will: device.will,
            };
            addresses.insert(device.address, entry);
        }
        Registry {
            publish: PublishSettings {
                base_topic: settings.base_topic,
                qos: settings.qos,
                retain: settings.retain,
                field_topics: settings.field_topics,
            },
            default_offline_after: settings.offline_after,
            dedup_window: settings.dedup_window,
            max_devices,
            max_fields: settings.max_fields,
            unconfigured_tracked: 0,
            configured,
            ids: HashMap::new(),
            devices: HashMap::new(),
            next_id: 0,
            names_taken,
            deadlines: BTreeSet::new(),
            evictable: BTreeSet::new(),
            restored_states: HashMap::new(),
            forgotten: VecDeque::new(),
            forgotten_unreported: 0,
        }
    }

    /// Names the device, drops a duplicate (same device and seq within the dedup window), merges the
    /// reading into the device's state, marks it online (an `online` message the first time and after it
    /// went offline), and returns the messages to publish.
    pub fn on_reading(&mut self, reading: &Reading, now: Instant) -> ReadingOutcome {
        let known = self
            .ids
            .get(&reading.source)
            .and_then(|by_address| by_address.get(&reading.address));
        let (id, mut messages) = match known {
            Some(&id) => (id, Vec::new()),
            None => match self.admit(&reading.source, &reading.address, now) {
                Some(admitted) => admitted,
                None => return ReadingOutcome::OverDeviceCap,
            },
        };
        let dedup_window = self.dedup_window;
        let Some(device) = self.devices.get_mut(&id) else {
            return ReadingOutcome::OverDeviceCap; // Unreachable: every id in `ids` is in `devices`.
        };
        if let Some(seq) = reading.seq {
            if is_duplicate(&mut device.recent_seqs, seq, now, dedup_window) {
                return ReadingOutcome::Duplicate;
            }
        }
        if let Some(deadline) = device.deadline.take() {
            self.deadlines.remove(&(deadline, id));
        }
        if !device.online {
            self.evictable.remove(&(device.last_heard, id));
        }
        device.last_heard = now;
        device.deadline = now.checked_add(device.offline_after);
        if let Some(deadline) = device.deadline {
            self.deadlines.insert((deadline, id));
        }
        let fields_dropped = publish::merge_state(&mut device.state, reading, self.max_fields);
        let newly_capped = (fields_dropped > 0 && !device.capped).then(|| device.name.clone());
        device.capped |= fields_dropped > 0;
        if self.publish.field_topics {
            device.shadowing |= shadowing_bits(reading);
        }
        messages.extend(publish::reading_messages(
            &self.publish,
            &device.name,
            &device.state,
            reading,
        ));
        if !device.online {
            device.online = true;
            messages.push(device.online_message.clone());
        }
        ReadingOutcome::Publish {
            messages,
            fields_dropped,
            newly_capped,
        }
    }

    /// The wills of every online device heard on `source` (its port vanished, its radio stopped), in name
    /// order. Those devices are offline until heard again.
    pub fn on_source_lost(&mut self, source: &str) -> Vec<Message> {
        let ids: Vec<DeviceId> = self
            .ids
            .get(source)
            .map(|by_address| by_address.values().copied().collect())
            .unwrap_or_default();
        self.take_offline(ids)
    }

    /// The wills of `source`'s devices at `addresses` (the devices only a LoRaWAN gateway that went
    /// offline heard); unknown addresses are skipped.
    pub fn on_devices_unheard(&mut self, source: &str, addresses: &[String]) -> Vec<Message> {
        let ids: Vec<DeviceId> = match self.ids.get(source) {
            Some(by_address) => addresses
                .iter()
                .filter_map(|address| by_address.get(address).copied())
                .collect(),
            None => Vec::new(),
        };
        self.take_offline(ids)
    }

    /// A device whose silence says nothing (a button, a door contact): unless its `[[device]]` sets
    /// `offline_after`, silence no longer takes it offline. Its source being lost still does.
    pub fn keep_online_while_silent(&mut self, source: &str, address: &str) {
        let explicit = self
            .configured
            .get(source)
            .and_then(|by_address| by_address.get(address))
            .is_some_and(|c| c.offline_after.is_some());
        let id = self
            .ids
            .get(source)
            .and_then(|by_address| by_address.get(address));
        let (Some(&id), false) = (id, explicit) else {
            return;
        };
        if let Some(device) = self.devices.get_mut(&id) {
            if let Some(deadline) = device.deadline.take() {
                self.deadlines.remove(&(deadline, id));
            }
            device.offline_after = Duration::MAX;
        }
    }

    /// The wills of devices silent for their `offline_after` or longer, in deadline order.
    pub fn expire(&mut self, now: Instant) -> Vec<Message> {
        let mut wills = Vec::new();
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            wills.extend(self.go_offline(id));
        }
        wills
    }

    /// When [`Registry::expire`] next has something to do, so the caller sleeps until then instead of
    /// polling; `None` while no device is online.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Clean stop: the wills of every online device, in name order.
    pub fn shutdown(&mut self) -> Vec<Message> {
        let ids: Vec<DeviceId> = self.devices.keys().copied().collect();
        self.take_offline(ids)
    }

    /// After a restart the broker restored retained messages from disk: for each that says a device is
    /// `online` (a retained `online` on `{base}/{device}/availability`, not the gateway's, or on a
    /// configured device's custom will topic), the message that says it is not. Devices come back online
    /// when they are heard.
    pub fn offline_after_restart(&self, restored: &[Message]) -> Vec<Message> {
        let base = self.publish.base_topic.as_str();
        let custom_wills: HashMap<&str, &WillSettings> = self
            .configured
            .values()
            .flat_map(|by_address| by_address.values())
            .filter_map(|configured| configured.will.as_ref())
            .map(|will| (will.topic.as_str(), will))
            .collect();
        let mut offline = Vec::new();
        for message in restored
            .iter()
            .filter(|m| m.retain && m.payload == publish::ONLINE.as_bytes())
        {
            if let Some(will) = custom_wills.get(message.topic.as_str()) {
                offline.push(custom_will_message(will));
            } else if publish::device_of_availability_topic(base, &message.topic).is_some() {
                offline.push(Message {
                    topic: message.topic.clone(),
                    payload: publish::OFFLINE.as_bytes().to_vec(),
                    qos: self.publish.qos,
                    retain: true,
                });
            }
        }
        offline
    }

    /// Takes device states restored from the broker's retained store (`{base}/{device}` JSON objects) as
    /// the starting point of each device's merged state, so the first reading after a restart does not
    /// drop fields that only other kinds of reading carry. Keeps at most `max_devices` of them, each with
    /// its first `max_fields` fields (in key order) besides the gateway's keys.
    pub fn adopt_restored_states(&mut self, restored: &[Message]) {
        let base = self.publish.base_topic.as_str();
        for message in restored {
            if self.restored_states.len() >= self.max_devices {
                break;
            }
            let Some(name) = publish::device_of_state_topic(base, &message.topic) else {
                continue;
            };
            if let Ok(Json::Object(mut state)) = serde_json::from_slice::<Json>(&message.payload) {
                publish::truncate_fields(&mut state, self.max_fields);
                self.restored_states.insert(name.to_string(), state);
            }
        }
    }

    /// Applies a new configuration without forgetting what is known. Every tracked device is carried over,
    /// in the order it was last heard, under the name and will the new settings give it, with its merged
    /// state (cut to the new `max_fields`) and recent sequence numbers. An online device whose name, will and `online` message are
    /// unchanged stays online (its deadline recomputed from the new `offline_after`); one whose identity
    /// changed gets its old will published and is announced under the new one with its next reading.
    /// Returns the wills to publish.
    pub fn reconfigure(&mut self, settings: RegistrySettings) -> Vec<Message> {
        let fresh = Registry::with_device_cap(settings, self.max_devices);
        let mut old = std::mem::replace(self, fresh);
        self.restored_states = std::mem::take(&mut old.restored_states);
        self.forgotten = std::mem::take(&mut old.forgotten);
        self.forgotten_unreported = old.forgotten_unreported;
        for state in self.restored_states.values_mut() {
            publish::truncate_fields(state, self.max_fields);
        }
        let mut devices: Vec<_> = old.devices.into_values().collect();
        devices.sort_by_key(|device| device.last_heard);
        let mut wills = Vec::new();
        for device in devices {
            let Some((id, cleared)) =
                self.admit(&device.source, &device.address, device.last_heard)
            else {
                self.note_forgotten(&device.source, &device.address);
                continue;
            };
            wills.extend(cleared);
            let Some(carried) = self.devices.get_mut(&id) else {
                continue;
            };
            carried.state = device.state;
            publish::truncate_fields(&mut carried.state, self.max_fields);
            carried.capped = device.capped;
            carried.shadowing = device.shadowing;
            carried.recent_seqs = device.recent_seqs;
            let same_identity = carried.name == device.name
                && carried.will == device.will
                && carried.online_message == device.online_message;
            if device.online && same_identity {
                carried.online = true;
                carried.deadline = device.last_heard.checked_add(carried.offline_after);
                if let Some(deadline) = carried.deadline {
                    self.deadlines.insert((deadline, id));
                }
                continue;
            }
            if device.online {
                wills.push(device.will);
            }
            if !carried.configured {
                self.evictable.insert((carried.last_heard, id));
            }
        }
        wills
    }

    /// The tracked device heard at (source, address): its name, its will (the topic that carries its
    /// availability, and the payload that says it is gone) and its merged JSON state.
    pub fn device(
        &self,
        source: &str,
        address: &str,
    ) -> Option<(&str, &Message, &Map<String, Json>)> {
        let id = self.ids.get(source)?.get(address)?;
        let device = self.devices.get(id)?;
        Some((&device.name, &device.will, &device.state))
    }

    /// The name and will the configuration gives (source, address), whether it is tracked or not.
    pub fn configured_device(&self, source: &str, address: &str) -> Option<(String, Message)> {
        let configured = self.configured.get(source)?.get(address)?;
        let will = match &configured.will {
            Some(will) => custom_will_message(will),
            None => Message {
                topic: publish::availability_topic(&self.publish.base_topic, &configured.name),
                payload: publish::OFFLINE.as_bytes().to_vec(),
                qos: self.publish.qos,
                retain: true,
            },
        };
        Some((configured.name.clone(), will))
    }

    /// The devices forgotten since the last call (evicted by the device cap, or left out by a reload at
    /// the cap), as (source, address), oldest first.
    pub fn take_forgotten(&mut self) -> Vec<(String, String)> {
        self.forgotten.drain(..).collect()
    }

    /// Forgotten devices dropped from the list [`Registry::take_forgotten`] returns, because more than
    /// [`FORGOTTEN_MEMORY`] piled up between two calls.
    pub fn forgotten_unreported(&self) -> u64 {
        self.forgotten_unreported
    }

    fn note_forgotten(&mut self, source: &str, address: &str) {
        if self.forgotten.len() >= FORGOTTEN_MEMORY {
            self.forgotten.pop_front();
            self.forgotten_unreported += 1;
        }
        self.forgotten
            .push_back((source.to_string(), address.to_string()));
    }

    /// How many tracked devices are online.
    pub fn devices_online(&self) -> usize {
        self.devices.values().filter(|device| device.online).count()
    }

    /// The most fields a device keeps.
    pub fn max_fields(&self) -> usize {
        self.max_fields
    }

    /// How many devices are tracked (heard since start and not evicted by the cap).
    pub fn devices_known(&self) -> usize {
        self.devices.len()
    }

    /// Every tracked device as it is now, sorted by name, for read-only views (the status page).
    pub fn snapshot(&self) -> Vec<DeviceSnapshot> {
        let mut devices: Vec<DeviceSnapshot> = self
            .devices
            .values()
            .map(|device| DeviceSnapshot {
                name: device.name.clone(),
                source: device.source.clone(),
                address: device.address.clone(),
                configured: device.configured,
                online: device.online,
                last_heard: device.last_heard,
                offline_after: device.offline_after,
                state: device.state.clone(),
            })
            .collect();
        sort_snapshots(&mut devices, |a, b| a.name.cmp(&b.name));
        devices
    }

    /// Starts tracking the device (source, address), first evicting an offline device when at the cap.
    /// Returns its id and the messages clearing the evicted device's retained topics; `None` when the cap
    /// leaves no room.
    fn admit(
        &mut self,
        source: &str,
        address: &str,
        now: Instant,
    ) -> Option<(DeviceId, Vec<Message>)> {
        let configured = self
            .configured
            .get(source)
            .and_then(|by_address| by_address.get(address))
            .map(|c| {
                (
                    c.name.clone(),
                    c.offline_after.unwrap_or(self.default_offline_after),
                    c.will.clone(),
                )
            });
        let is_configured = configured.is_some();
        let mut cleared = Vec::new();
        if !is_configured && self.unconfigured_tracked >= self.max_devices {
            cleared = self.evict_longest_silent()?;
        }
        let (name, offline_after, will) = match configured {
            Some(configured) => configured,
            None => (
                self.name_unconfigured(source, address),
                self.default_offline_after,
                None,
            ),
        };
        let (will, online_message) = self.availability_messages(will.as_ref(), &name);
        let id = self.next_id;
        self.next_id += 1;
        let state = self.restored_states.remove(&name).unwrap_or_default();
        let device = Device {
            name,
            source: source.to_string(),
            address: address.to_string(),
            configured: is_configured,
            offline_after,
            will,
            online_message,
            online: false,
            last_heard: now,
            deadline: None,
            // Grown on a device's first sequence number: most devices' readings carry none.
            recent_seqs: VecDeque::new(),
            state,
            capped: false,
            shadowing: 0,
        };
        self.devices.insert(id, Box::new(device));
        self.ids
            .entry(source.to_string())
            .or_default()
            .insert(address.to_string(), id);
        Some((id, cleared))
    }

    /// A new unconfigured device's name: `{source}-{address}` (or the source alone) made a topic level,
    /// and unique; it counts against `max_devices`.
    fn name_unconfigured(&mut self, source: &str, address: &str) -> String {
        let wanted = if address.is_empty() {
            source.to_string()
        } else {
            format!("{source}-{address}")
        };
        let name = unique_name(&self.names_taken, &publish::sanitize_level(&wanted));
        self.names_taken.insert(name.clone());
        self.unconfigured_tracked += 1;
        name
    }

    /// A device's will (published when it goes offline) and its online message: the configured will's
    /// topic, or the device's availability topic.
    fn availability_messages(&self, will: Option<&WillSettings>, name: &str) -> (Message, Message) {
        match will {
            Some(will) => {
                let online = Message {
                    payload: publish::ONLINE.as_bytes().to_vec(),
                    ..custom_will_message(will)
                };
                (custom_will_message(will), online)
            }
            None => {
                let topic = publish::availability_topic(&self.publish.base_topic, name);
                let message = |payload: &str| Message {
                    topic: topic.clone(),
                    payload: payload.as_bytes().to_vec(),
                    qos: self.publish.qos,
                    retain: true,
                };
                (message(publish::OFFLINE), message(publish::ONLINE))
            }
        }
    }

    /// Forgets the unconfigured offline device silent the longest and returns the messages that clear its
    /// retained topics; `None` when there is no such device.
    fn evict_longest_silent(&mut self) -> Option<Vec<Message>> {
        let (_, id) = self.evictable.pop_first()?;
        Some(self.remove(id))
    }

    /// Forgets the tracked device named `name` (an admin asked): it leaves the registry as one the cap
    /// evicts does (noted for [`Registry::take_forgotten`], so that discovery removes its entities), and
    /// the returned messages clear its retained availability, state and field topics. `None` when no
    /// tracked device has that name. A configured device is tracked again when it is next heard.
    pub fn forget(&mut self, name: &str) -> Option<Vec<Message>> {
        let id = self
            .devices
            .iter()
            .find(|(_, device)| device.name == name)
            .map(|(id, _)| *id)?;
        Some(self.remove(id))
    }

    /// Removes device `id` from every index and returns the messages that clear its retained topics.
    fn remove(&mut self, id: DeviceId) -> Vec<Message> {
        let Some(device) = self.devices.remove(&id) else {
            return Vec::new();
        };
        if let Some(deadline) = device.deadline {
            self.deadlines.remove(&(deadline, id));
        }
        self.evictable.remove(&(device.last_heard, id));
        if !device.configured {
            // A configured name stays taken: the configuration still names it.
            self.names_taken.remove(&device.name);
            self.unconfigured_tracked = self.unconfigured_tracked.saturating_sub(1);
        }
        self.note_forgotten(&device.source, &device.address);
        if let Some(by_address) = self.ids.get_mut(&device.source) {
            by_address.remove(&device.address);
        }
        self.clearing_messages(&device)
    }

    /// Empty retained messages on every retained topic `device` was published on: its availability (an
    /// unconfigured device's default will is retained), and with `retain` its state and field topics.
    fn clearing_messages(&self, device: &Device) -> Vec<Message> {
        let base = self.publish.base_topic.as_str();
        let clear = |topic: String| Message {
            topic,
            payload: Vec::new(),
            qos: self.publish.qos,
            retain: true,
        };
        let mut cleared = vec![clear(device.will.topic.clone())];
        if self.publish.retain {
            cleared.push(clear(publish::device_topic(base, &device.name)));
            let fields = device
                .state
                .keys()
                .filter(|key| !publish::is_state_key(key))
                .map(String::as_str);
            let shadowed = publish::STATE_KEYS
                .iter()
                .enumerate()
                .filter(|(bit, _)| device.shadowing & (1 << bit) != 0)
                .map(|(_, key)| *key);
            if self.publish.field_topics {
                cleared.extend(
                    fields
                        .chain(shadowed)
                        .map(|field| clear(publish::field_topic(base, &device.name, field))),
                );
            }
        }
        cleared
    }

    /// Takes the given devices offline; their wills in name order.
    fn take_offline(&mut self, ids: Vec<DeviceId>) -> Vec<Message> {
        let mut named: Vec<(String, Message)> = Vec::new();
        for id in ids {
            let name = self.devices.get(&id).map(|device| device.name.clone());
            if let (Some(name), Some(will)) = (name, self.go_offline(id)) {
                named.push((name, will));
            }
        }
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(_, will)| will).collect()
    }

    /// Marks one device offline and returns its will; `None` when it was not online.
    fn go_offline(&mut self, id: DeviceId) -> Option<Message> {
        let device = self.devices.get_mut(&id)?;
        if !device.online {
            return None;
        }
        device.online = false;
        if let Some(deadline) = device.deadline.take() {
            self.deadlines.remove(&(deadline, id));
        }
        if !device.configured {
            self.evictable.insert((device.last_heard, id));
        }
        Some(device.will.clone())
    }
}

/// The bits of [`publish::STATE_KEYS`] the reading has fields named like.
fn shadowing_bits(reading: &Reading) -> u8 {
    publish::STATE_KEYS
        .iter()
        .enumerate()
        .filter(|(_, key)| reading.fields.iter().any(|(name, _)| name == *key))
        .fold(0, |bits, (bit, _)| bits | (1 << bit))
}

/// The will message a `will` setting describes.
fn custom_will_message(will: &WillSettings) -> Message {
    Message {
        topic: will.topic.clone(),
        payload: will.payload.as_bytes().to_vec(),
        qos: will.qos,
        retain: will.retain,
    }
}

/// `wanted` if free, else the first free `{wanted}_2`, `{wanted}_3`, ... (one is free within
/// `taken.len() + 1` tries; `wanted` with a long suffix is returned past that, which cannot happen).
fn unique_name(taken: &HashSet<String>, wanted: &str) -> String {
    if !taken.contains(wanted) {
        return wanted.to_string();
    }
    let tries = taken.len() as u64 + 2;
    (2..=tries)
        .map(|n| format!("{wanted}_{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| format!("{wanted}_{}", tries + 1))
}

/// Whether `seq` was heard within `window` before `now`; otherwise remembers it (forgetting the oldest
/// beyond [`SEQ_MEMORY`]). A seq heard longer ago than the window is not a duplicate and restarts its window.
fn is_duplicate(
    recent: &mut VecDeque<(u32, Instant)>,
    seq: u32,
    now: Instant,
    window: Duration,
) -> bool {
    if let Some(entry) = recent.iter_mut().find(|(known, _)| *known == seq) {
        if now.saturating_duration_since(entry.1) < window {
            return true;
        }
        entry.1 = now;
        return false;
    }
    if recent.len() >= SEQ_MEMORY {
        recent.pop_front();
    }
    recent.push_back((seq, now));
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Value;
    use std::time::{SystemTime, UNIX_EPOCH};

    const MINUTE: Duration = Duration::from_secs(60);

    fn settings(devices: Vec<DeviceSettings>) -> RegistrySettings {
        RegistrySettings {
            base_topic: "sg".into(),
            qos: 1,
            retain: true,
            field_topics: false,
            offline_after: 15 * MINUTE,
            dedup_window: Duration::from_secs(10),
            max_fields: 64,
            devices,
        }
    }

    fn kitchen() -> DeviceSettings {
        DeviceSettings {
            name: "kitchen".into(),
            source: "uart0".into(),
            address: "17".into(),
            offline_after: Some(5 * MINUTE),
            will: None,
        }
    }

    fn reading(source: &str, address: &str, seq: Option<u32>) -> Reading {
        Reading {
            source: source.into(),
            address: address.into(),
            seq,
            fields: vec![("temp".into(), Value::Float(21.5))],
            received_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            radio: None,
            lorawan: None,
        }
    }

    fn messages(outcome: ReadingOutcome) -> Vec<Message> {
        match outcome {
            ReadingOutcome::Publish { messages, .. } => messages,
            other => panic!("expected messages, got {other:?}"),
        }
    }

    fn topics(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.topic.as_str()).collect()
    }

    fn state_topic_of(registry: &mut Registry, r: &Reading, now: Instant) -> String {
        messages(registry.on_reading(r, now))[0].topic.clone()
    }

    fn availability(topic: &str, payload: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.as_bytes().to_vec(),
            qos: 1,
            retain: true,
        }
    }

    #[test]
    fn names_come_from_config_or_source_and_address() {
        let mut registry = Registry::new(settings(vec![kitchen()]));
        let now = Instant::now();
        assert_eq!(
            state_topic_of(&mut registry, &reading("uart0", "17", None), now),
            "sg/kitchen"
        );
        assert_eq!(
            state_topic_of(&mut registry, &reading("uart0", "18", None), now),
            "sg/uart0-18"
        );
        assert_eq!(
            state_topic_of(&mut registry, &reading("lora", "", None), now),
            "sg/lora"
        );
        assert_eq!(
            state_topic_of(&mut registry, &reading("lora", "a/b+#", None), now),
            "sg/lora-a_b__"
        );
        assert_eq!(registry.devices_known(), 4);
    }

    #[test]
    fn gateway_and_taken_names_get_a_suffix() {
        let mut registry = Registry::new(settings(vec![kitchen()]));
        let now = Instant::now();
        assert_eq!(
            state_topic_of(&mut registry, &reading("gateway", "", None), now),
            "sg/gateway_2"
        );
        // "uart0-1/2" and "uart0-1_2" sanitise to the same name: the second device gets its own.
        assert_eq!(
            state_topic_of(&mut registry, &reading("uart0", "1/2", None), now),
            "sg/uart0-1_2"
        );
        assert_eq!(
            state_topic_of(&mut registry, &reading("uart0", "1_2", None), now),
            "sg/uart0-1_2_2"
        );
        // A device that would be called like a configured one, heard before it, does not take its name.
        let mut registry = Registry::new(settings(vec![DeviceSettings {
            name: "lora-5".into(),
            ..kitchen()
        }]));
        assert_eq!(
            state_topic_of(&mut registry, &reading("lora", "5", None), now),
            "sg/lora-5_2"
        );
        assert_eq!(
            state_topic_of(&mut registry, &reading("uart0", "17", None), now),
            "sg/lora-5"
        );
    }

    #[test]
    fn duplicates_within_the_window_are_dropped() {
        let mut registry = Registry::new(settings(vec![]));
        let t0 = Instant::now();
        assert!(matches!(
            registry.on_reading(&reading("lora", "1", Some(7)), t0),
            ReadingOutcome::Publish { .. }
        ));
        let inside = t0 + Duration::from_secs(9);
        assert_eq!(
            registry.on_reading(&reading("lora", "1", Some(7)), inside),
            ReadingOutcome::Duplicate
        );
        // Another seq, another device with the same seq, and a reading without seq are not duplicates.
        assert!(matches!(
            registry.on_reading(&reading("lora", "1", Some(8)), inside),
            ReadingOutcome::Publish { .. }
        ));
        assert!(matches!(
            registry.on_reading(&reading("lora", "2", Some(7)), inside),
            ReadingOutcome::Publish { .. }
        ));
        assert!(matches!(
            registry.on_reading(&reading("lora", "1", None), inside),
            ReadingOutcome::Publish { .. }
        ));
        assert!(matches!(
            registry.on_reading(&reading("lora", "1", None), inside),
            ReadingOutcome::Publish { .. }
        ));
        // After the window (counted from the first copy) the same seq is kept.
        let after = t0 + Duration::from_secs(10);
        assert!(matches!(
            registry.on_reading(&reading("lora", "1", Some(7)), after),
            ReadingOutcome::Publish { .. }
        ));
    }

    #[test]
    fn dedup_memory_is_bounded_per_device() {
        let mut recent = VecDeque::new();
        let now = Instant::now();
        let window = Duration::from_secs(10);
        for seq in 0..100 {
            assert!(!is_duplicate(&mut recent, seq, now, window));
        }
        assert_eq!(recent.len(), SEQ_MEMORY);
        assert!(is_duplicate(&mut recent, 99, now, window));
        assert!(
            !is_duplicate(&mut recent, 0, now, window),
            "forgotten seqs are kept"
        );
    }

    #[test]
    fn online_on_first_frame_only() {
        let mut registry = Registry::new(settings(vec![kitchen()]));
        let now = Instant::now();
        let first = messages(registry.on_reading(&reading("uart0", "17", None), now));
        assert_eq!(topics(&first), ["sg/kitchen", "sg/kitchen/availability"]);
        assert_eq!(first[1], availability("sg/kitchen/availability", "online"));
        let second = messages(registry.on_reading(&reading("uart0", "17", None), now + MINUTE));
        assert_eq!(topics(&second), ["sg/kitchen"]);
        assert_eq!(registry.devices_online(), 1);
    }

    #[test]
    fn offline_after_silence_with_per_device_override_and_deadlines() {
        let mut registry = Registry::new(settings(vec![kitchen()]));
        assert_eq!(registry.next_deadline(), None);
        let t0 = Instant::now();
        registry.on_reading(&reading("uart0", "17", None), t0); // kitchen: 5 min
        registry.on_reading(&reading("uart0", "18", None), t0); // default: 15 min
        assert_eq!(registry.next_deadline(), Some(t0 + 5 * MINUTE));

        // Heard again at 2 min: its deadline moves.
        registry.on_reading(&reading("uart0", "17", None), t0 + 2 * MINUTE);
        assert_eq!(registry.next_deadline(), Some(t0 + 7 * MINUTE));
        assert!(registry
            .expire(t0 + 7 * MINUTE - Duration::from_millis(1))
            .is_empty());

        let wills = registry.expire(t0 + 7 * MINUTE);
        assert_eq!(wills, [availability("sg/kitchen/availability", "offline")]);
        assert_eq!(registry.devices_online(), 1);
        assert_eq!(registry.next_deadline(), Some(t0 + 15 * MINUTE));
        assert!(registry.expire(t0 + 14 * MINUTE).is_empty());

        assert_eq!(
            registry.expire(t0 + 15 * MINUTE),
            [availability("sg/uart0-18/availability", "offline")]
        );
        assert_eq!(registry.next_deadline(), None);
        assert_eq!(
            (registry.devices_online(), registry.devices_known()),
            (0, 2)
        );

        // Heard again: online again, with a fresh deadline.
        let back = messages(registry.on_reading(&reading("uart0", "17", None), t0 + 20 * MINUTE));
        assert_eq!(
            back.last(),
            Some(&availability("sg/kitchen/availability", "online"))
        );
        assert_eq!(registry.next_deadline(), Some(t0 + 25 * MINUTE));
    }

    #[test]
    fn a_trigger_device_stays_online_through_silence_unless_configured() {
        let mut registry = Registry::new(settings(vec![DeviceSettings {
            name: "door".into(),
            source: "rf".into(),
            address: "Door/7".into(),
            offline_after: Some(MINUTE),
            will: None,
        }]));
        let t0 = Instant::now();
        let button = reading("rf", "Remote/1", None);
        let door = reading("rf", "Door/7", None);
        let _ = registry.on_reading(&button, t0);
        let _ = registry.on_reading(&door, t0);
        registry.keep_online_while_silent("rf", "Remote/1");
        registry.keep_online_while_silent("rf", "Door/7");
        let wills = registry.expire(t0 + 365 * 24 * 60 * MINUTE);
        let topics: Vec<&str> = wills.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["sg/door/availability"]);
        assert_eq!(registry.devices_online(), 1);
        assert_eq!(registry.on_source_lost("rf").len(), 1);
    }

    #[test]
    fn a_huge_offline_after_never_expires_and_never_panics() {
        let mut s = settings(vec![]);
        s.offline_after = Duration::MAX;
        let mut registry = Registry::new(s);
        registry.on_reading(&reading("lora", "1", None), Instant::now());
        assert_eq!(registry.next_deadline(), None);
        assert_eq!(registry.devices_online(), 1);
        assert_eq!(registry.shutdown().len(), 1);
    }

    #[test]
    fn source_lost_publishes_the_wills_of_that_source_only() {
        let mut registry = Registry::new(settings(vec![kitchen()]));
        let now = Instant::now();
        for (source, address) in [("uart0", "17"), ("uart0", "3"), ("lora", "1")] {
            registry.on_reading(&reading(source, address, None), now);
        }
        let wills = registry.on_source_lost("uart0");
        assert_eq!(
            topics(&wills),
            ["sg/kitchen/availability", "sg/uart0-3/availability"]
        );
        assert!(wills.iter().all(|w| w.payload == b"offline" && w.retain));
        assert_eq!(registry.devices_online(), 1);
        assert!(
            registry.on_source_lost("uart0").is_empty(),
            "wills are published once"
        );
        assert!(registry.on_source_lost("nowhere").is_empty());
        assert_eq!(
            registry.next_deadline(),
            Some(now + 15 * MINUTE),
            "only lora-1 is left to expire"
        );
    }

    #[test]
    fn shutdown_publishes_the_wills_of_all_online_devices() {
        let mut registry = Registry::new(settings(vec![kitchen()]));
        let now = Instant::now();
        for (source, address) in [("uart0", "17"), ("uart0", "3"), ("lora", "1")] {
            registry.on_reading(&reading(source, address, None), now);
        }
        registry.on_source_lost("lora");
        let wills = registry.shutdown();
        assert_eq!(
            topics(&wills),
            ["sg/kitchen/availability", "sg/uart0-3/availability"]
        );
        assert_eq!(registry.devices_online(), 0);
        assert_eq!(registry.next_deadline(), None);
    }

    #[test]
    fn custom_will_replaces_topic_payload_qos_and_retain() {
        let will = WillSettings {
            topic: "alarms/kitchen".into(),
            payload: "lost".into(),
            qos: 2,
            retain: false,
        };
        let mut registry = Registry::new(settings(vec![DeviceSettings {
            will: Some(will),
            ..kitchen()
        }]));
        let now = Instant::now();
        let first = messages(registry.on_reading(&reading("uart0", "17", None), now));
        let online = Message {
            topic: "alarms/kitchen".into(),
            payload: b"online".to_vec(),
            qos: 2,
            retain: false,
        };
        assert_eq!(first.last(), Some(&online));
        let lost = Message {
            topic: "alarms/kitchen".into(),
            payload: b"lost".to_vec(),
            qos: 2,
            retain: false,
        };
        assert_eq!(registry.expire(now + 5 * MINUTE), [lost]);
    }

    #[test]
    fn restart_turns_restored_online_devices_offline() {
        let will = WillSettings {
            topic: "alarms/kitchen".into(),
            payload: "lost".into(),
            qos: 1,
            retain: true,
        };
        let registry = Registry::new(settings(vec![DeviceSettings {
            will: Some(will),
            ..kitchen()
        }]));
        let restored = [
            availability("sg/uart0-3/availability", "online"),
            availability("sg/lora-1/availability", "offline"),
            availability("sg/gateway/availability", "online"),
            availability("other/x/availability", "online"),
            availability("sg/uart0-3/temp", "online"),
            availability("alarms/kitchen", "online"),
            Message {
                retain: false,
                ..availability("sg/lora-2/availability", "online")
            },
        ];
        let offline = registry.offline_after_restart(&restored);
        assert_eq!(
            offline,
            [
                availability("sg/uart0-3/availability", "offline"),
                Message {
                    topic: "alarms/kitchen".into(),
                    payload: b"lost".to_vec(),
                    qos: 1,
                    retain: true
                },
            ]
        );
    }

    #[test]
    fn restored_state_is_merged_into_the_first_reading() {
        let mut registry = Registry::new(settings(vec![kitchen()]));
        let restored = [Message {
            topic: "sg/kitchen".into(),
            payload: br#"{"battery":80,"temp":19.0}"#.to_vec(),
            qos: 1,
            retain: true,
        }];
        registry.adopt_restored_states(&restored);
        let first = messages(registry.on_reading(&reading("uart0", "17", None), Instant::now()));
        let state: Json = serde_json::from_slice(&first[0].payload).unwrap();
        assert_eq!(
            (state["battery"].clone(), state["temp"].clone()),
            (Json::from(80), Json::from(21.5))
        );
    }

    #[test]
    fn merged_state_field_topics_and_retain_flag() {
        let mut s = settings(vec![]);
        s.field_topics = true;
        s.retain = false;
        let mut registry = Registry::new(s);
        let now = Instant::now();
        let mut first = reading("lora", "1", None);
        first.fields.push(("battery".into(), Value::Int(90)));
        registry.on_reading(&first, now);
        let mut second = reading("lora", "1", None);
        second.fields = vec![("door".into(), Value::Text("open".into()))];
        second.received_at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_060);
        let published = messages(registry.on_reading(&second, now));
        assert_eq!(topics(&published), ["sg/lora-1", "sg/lora-1/door"]);
        assert!(published.iter().all(|m| !m.retain));
        let state: Json = serde_json::from_slice(&published[0].payload).unwrap();
        assert_eq!(state["temp"], 21.5);
        assert_eq!(state["battery"], 90);
        assert_eq!(state["door"], "open");
        assert_eq!(state["last_seen"], "2023-11-14T22:14:20.000Z");
    }

    #[test]
    fn reconfigure_keeps_unchanged_devices_online_and_renames_changed_ones() {
        let now = Instant::now();
        let mut registry = Registry::new(settings(vec![]));
        let _ = messages(registry.on_reading(&reading("uart0", "17", Some(1)), now));
        let _ = messages(registry.on_reading(&reading("uart0", "18", Some(1)), now));
        assert_eq!(registry.devices_online(), 2);

        let wills = registry.reconfigure(settings(vec![kitchen()]));
        assert_eq!(
            topics(&wills),
            vec!["sg/uart0-17/availability"],
            "only the renamed device's will"
        );
        assert_eq!(registry.devices_online(), 1, "uart0-18 stays online");
        assert!(registry.next_deadline().is_some());
        // The duplicate memory survives: the same seq is still a duplicate under the new name.
        assert_eq!(
            registry.on_reading(&reading("uart0", "17", Some(1)), now),
            ReadingOutcome::Duplicate
        );
        let announced = messages(registry.on_reading(&reading("uart0", "17", Some(2)), now));
        assert!(
            topics(&announced).contains(&"sg/kitchen/availability"),
            "{announced:?}"
        );
        assert!(registry.on_source_lost("uart0").len() == 2);
    }

    #[test]
    fn device_cap_drops_new_devices_but_evicts_offline_ones() {
        let mut registry = Registry::with_device_cap(settings(vec![kitchen()]), 2);
        let t0 = Instant::now();
        registry.on_reading(&reading("lora", "1", None), t0);
        registry.on_reading(&reading("lora", "2", None), t0 + MINUTE);
        assert_eq!(
            registry.on_reading(&reading("lora", "3", None), t0),
            ReadingOutcome::OverDeviceCap
        );
        // Configured devices are always tracked.
        assert!(matches!(
            registry.on_reading(&reading("uart0", "17", None), t0),
            ReadingOutcome::Publish { .. }
        ));
        assert_eq!(registry.devices_known(), 3);

        // Once offline, the one silent the longest makes room: lora-1 for lora-3, then lora-2 for lora-1.
        registry.shutdown();
        let t1 = t0 + 2 * MINUTE;
        assert!(matches!(
            registry.on_reading(&reading("lora", "3", None), t1),
            ReadingOutcome::Publish { .. }
        ));
        assert_eq!(registry.devices_known(), 3);
        let again = messages(registry.on_reading(&reading("lora", "1", None), t1));
        assert_eq!(
            again.last(),
            Some(&availability("sg/lora-1/availability", "online"))
        );
        assert_eq!(registry.devices_known(), 3);
        // Now every unconfigured device is online: nothing to evict.
        assert_eq!(
            registry.on_reading(&reading("lora", "4", None), t1),
            ReadingOutcome::OverDeviceCap
        );
        let wills = registry.shutdown();
        assert_eq!(
            topics(&wills),
            ["sg/lora-1/availability", "sg/lora-3/availability"]
        );
    }

    #[test]
    fn forgetting_a_device_clears_its_topics_and_leaves_room_and_no_deadline() {
        let mut registry = Registry::with_device_cap(settings(vec![kitchen()]), 1);
        let t0 = Instant::now();
        registry.on_reading(&reading("uart0", "17", None), t0);
        registry.on_reading(&reading("lora", "1", None), t0);
        assert_eq!(registry.forget("nobody"), None);
        let cleared = registry.forget("lora-1").expect("lora-1 is tracked");
        assert_eq!(topics(&cleared), ["sg/lora-1/availability", "sg/lora-1"]);
        assert!(cleared.iter().all(|m| m.payload.is_empty() && m.retain));
        assert_eq!(registry.take_forgotten(), [("lora".into(), "1".into())]);
        assert_eq!(registry.devices_known(), 1);
        // Its place under the cap is free again (lora-2 is tracked while kitchen stays online), and
        // its deadline went with it: only kitchen's will comes when they expire.
        assert!(matches!(
            registry.on_reading(&reading("lora", "2", None), t0),
            ReadingOutcome::Publish { .. }
        ));
        let cleared = registry.forget("kitchen").expect("kitchen is tracked");
        assert_eq!(topics(&cleared), ["sg/kitchen/availability", "sg/kitchen"]);
        assert_eq!(
            topics(&registry.expire(t0 + 60 * MINUTE)),
            ["sg/lora-2/availability"]
        );
        // A configured device keeps its name and is tracked again when heard.
        assert_eq!(
            state_topic_of(
                &mut registry,
                &reading("uart0", "17", None),
                t0 + 61 * MINUTE
            ),
            "sg/kitchen"
        );
    }

    fn with_fields(source: &str, address: &str, names: &[&str]) -> Reading {
        Reading {
            fields: names
                .iter()
                .map(|name| (name.to_string(), Value::Int(1)))
                .collect(),
            ..reading(source, address, None)
        }
    }

    fn outcome_parts(outcome: ReadingOutcome) -> (Vec<Message>, usize, Option<String>) {
        match outcome {
            ReadingOutcome::Publish {
                messages,
                fields_dropped,
                newly_capped,
            } => (messages, fields_dropped, newly_capped),
            other => panic!("expected messages, got {other:?}"),
        }
    }

    #[test]
    fn a_device_keeps_max_fields_and_reports_the_first_drop_once() {
        let mut s = settings(vec![]);
        s.max_fields = 3;
        s.field_topics = true;
        let mut registry = Registry::new(s);
        let now = Instant::now();
        let (first, dropped, capped) = outcome_parts(
            registry.on_reading(&with_fields("lora", "1", &["a", "b", "c", "d", "e"]), now),
        );
        assert_eq!((dropped, capped.as_deref()), (2, Some("lora-1")));
        assert_eq!(
            topics(&first),
            [
                "sg/lora-1",
                "sg/lora-1/a",
                "sg/lora-1/b",
                "sg/lora-1/c",
                "sg/lora-1/availability"
            ]
        );
        // Later drops are counted but not reported again; kept names still update.
        let (later, dropped, capped) =
            outcome_parts(registry.on_reading(&with_fields("lora", "1", &["x", "y", "b"]), now));
        assert_eq!((dropped, capped), (2, None));
        assert_eq!(topics(&later), ["sg/lora-1", "sg/lora-1/b"]);
        let state: Json = serde_json::from_slice(&later[0].payload).unwrap();
        assert_eq!(publish::field_count(state.as_object().unwrap()), 3);
        // Another device has its own bound and its own report.
        let (_, dropped, capped) = outcome_parts(
            registry.on_reading(&with_fields("lora", "2", &["p", "q", "r", "s"]), now),
        );
        assert_eq!((dropped, capped.as_deref()), (1, Some("lora-2")));
    }

    #[test]
    fn a_restored_state_keeps_its_first_max_fields_fields() {
        let mut s = settings(vec![kitchen()]);
        s.max_fields = 2;
        let mut registry = Registry::new(s);
        let restored = [Message {
            topic: "sg/kitchen".into(),
            payload: br#"{"a":1,"b":2,"c":3,"d":4,"last_seen":"x","source":"uart0"}"#.to_vec(),
            qos: 1,
            retain: true,
        }];
        registry.adopt_restored_states(&restored);
        let (messages, dropped, capped) = outcome_parts(
            registry.on_reading(&with_fields("uart0", "17", &["a", "new"]), Instant::now()),
        );
        assert_eq!((dropped, capped.as_deref()), (1, Some("kitchen")));
        let state: Json = serde_json::from_slice(&messages[0].payload).unwrap();
        let fields: Vec<&String> = state
            .as_object()
            .unwrap()
            .keys()
            .filter(|key| !publish::is_state_key(key))
            .collect();
        assert_eq!(fields, ["a", "b"]);
    }

    #[test]
    fn a_reload_lowering_max_fields_cuts_the_carried_states() {
        let mut registry = Registry::new(settings(vec![]));
        let now = Instant::now();
        registry.on_reading(&with_fields("lora", "1", &["a", "b", "c"]), now);
        let mut lower = settings(vec![]);
        lower.max_fields = 1;
        registry.reconfigure(lower);
        assert_eq!(registry.max_fields(), 1);
        let (messages, dropped, _) =
            outcome_parts(registry.on_reading(&with_fields("lora", "1", &["b"]), now));
        assert_eq!(dropped, 1, "b was cut by the reload");
        let state: Json = serde_json::from_slice(&messages[0].payload).unwrap();
        assert_eq!(state["a"], 1);
        assert!(state.get("b").is_none() && state.get("c").is_none());
    }

    #[test]
    fn an_evicted_device_has_its_retained_topics_cleared() {
        let mut s = settings(vec![]);
        s.field_topics = true;
        let mut registry = Registry::with_device_cap(s, 1);
        let t0 = Instant::now();
        registry.on_reading(&with_fields("lora", "1", &["temp", "source"]), t0);
        registry.shutdown();
        let (messages, _, _) =
            outcome_parts(registry.on_reading(&with_fields("lora", "2", &["hum"]), t0 + MINUTE));
        let cleared: Vec<&str> = messages
            .iter()
            .filter(|m| m.payload.is_empty())
            .map(|m| m.topic.as_str())
            .collect();
        assert_eq!(
            cleared,
            [
                "sg/lora-1/availability",
                "sg/lora-1",
                "sg/lora-1/temp",
                "sg/lora-1/source"
            ]
        );
        assert!(messages
            .iter()
            .filter(|m| m.payload.is_empty())
            .all(|m| m.retain));
        assert_eq!(
            topics(&messages[cleared.len()..]),
            ["sg/lora-2", "sg/lora-2/hum", "sg/lora-2/availability"],
            "the new device's messages come after"
        );
        // Without retain only the (retained) availability is cleared.
        let mut s = settings(vec![]);
        s.retain = false;
        let mut registry = Registry::with_device_cap(s, 1);
        registry.on_reading(&reading("lora", "1", None), t0);
        registry.shutdown();
        let (messages, _, _) = outcome_parts(registry.on_reading(&reading("lora", "2", None), t0));
        assert_eq!(messages[0].topic, "sg/lora-1/availability");
        assert!(messages[0].payload.is_empty());
        assert_eq!(messages.iter().filter(|m| m.payload.is_empty()).count(), 1);
    }

    #[test]
    fn a_will_written_with_its_topic_only_takes_the_defaults() {
        let will: WillSettings = toml::from_str("topic = \"alarms/kitchen\"").unwrap();
        assert_eq!(
            will,
            WillSettings {
                topic: "alarms/kitchen".into(),
                payload: crate::topic::gateway::OFFLINE.into(),
                qos: 1,
                retain: true,
            }
        );
        let unknown = toml::from_str::<WillSettings>("topic = \"t\"\nzz = 1").unwrap_err();
        assert!(unknown.message().contains("zz"), "{}", unknown.message());
    }
}
