//! The pipeline stage: takes every [`SourceEvent`], decodes packets with their source's decoder, passes
//! readings through the device registry, and publishes what the registry asks for on the embedded broker;
//! it also fires the registry's liveness deadlines and publishes `{base}/gateway/stats`. It owns the
//! counters and never touches a device or a socket. It ends when every source has dropped its sender
//! (the sources stop first on shutdown, so whatever they sent is still decoded and published), then
//! publishes every device's will and hands the registry back. With Home Assistant discovery on, each
//! reading, reload and birth message also goes through [`crate::homeassistant::stage`], whose discovery
//! configs are published with the rest. With `[http]` on, it also feeds [`crate::live`]: every frame
//! with what became of it (the frame inspector), and once a second, when anything changed, a snapshot of
//! its counters and the registry for the status page; the page's own counters join `{base}/gateway/stats`
//! as `http`; and it forgets the device an admin names on the page ([`crate::forget`]): out of the
//! registry, its retained topics and discovery configs cleared, counted as `devices.forgotten`.
//!
//! Logs stay bounded whatever a node sends: frame and decode warnings at most one per source a minute, a
//! device over `max_fields` one WARN per device, a publish the broker refuses at most one ERROR a minute
//! (each with the count suppressed since); every one of them is counted in `{base}/gateway/stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::codec::sources::{CodecMap, CodecOutcome, CodecSources};
use crate::codec::CodecError;
use crate::crypto::FrameGuard;
use crate::decode::{PacketDecoder, PayloadFields, PayloadFormat};
use crate::devices::{ReadingOutcome, Registry, RegistrySettings};
use crate::forget::{ForgetOutcome, ForgetRequest};
use crate::frame::FrameError;
use crate::heard::HeardList;
use crate::live::{FrameOutcome, LiveView, Snapshot};
use crate::model::{Message, Reading};
use crate::publish;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::{ReceiverState, Refusal, SourceEvent};
use crate::stats::{stats_json, Stats};

/// `{base}/gateway/heard` is published at most this often, whatever the sources hear.
const HEARD_EVERY: Duration = Duration::from_secs(1);

/// When `{base}/gateway/heard` is next due: only after the list changed, and at most every
/// [`HEARD_EVERY`].
#[derive(Debug, Default)]
struct HeardSchedule {
    due: Option<tokio::time::Instant>,
    published_at: Option<tokio::time::Instant>,
}

impl HeardSchedule {
    /// After an event: when nothing is due yet and the list changed, due now, or [`HEARD_EVERY`] after
    /// the last publish.
    fn after_event(&mut self, heard: &mut HeardList) {
        if self.due.is_none() && heard.take_changed() {
            self.due = Some(
                self.published_at
                    .map_or_else(tokio::time::Instant::now, |at| at + HEARD_EVERY),
            );
        }
    }

    /// The list was just published.
    fn published(&mut self) {
        self.due = None;
        self.published_at = Some(tokio::time::Instant::now());
    }
}

/// A cheap probe the stats line calls for the uplink's part (spool depth, link state).
pub type UplinkStatsProbe = Box<dyn Fn() -> serde_json::Value + Send + Sync>;
/// The same for the commands' counters per source (`crate::commands::CommandStats`).
pub type CommandStatsProbe = Box<
    dyn Fn() -> std::collections::BTreeMap<String, crate::stats::CommandCounters> + Send + Sync,
>;

/// The stage's parts, built by `app`.
pub struct Pipeline {
    pub decoders: HashMap<String, PacketDecoder>,
    /// The codecs of the sources with `payload = "codec"` and of their devices with their own.
    pub codecs: CodecMap,
    pub registry: Registry,
    pub base_topic: String,
    pub stats_interval: Duration,
    pub uplink_stats: Option<UplinkStatsProbe>,
    /// Commands to devices, when a source has `commands = true`.
    pub command_stats: Option<CommandStatsProbe>,
    /// The LoRaWAN sources' counters (`crate::lorawan::counters`), as `lorawan` keyed by source.
    pub lorawan_stats: Option<UplinkStatsProbe>,
    pub heartbeat: Option<crate::systemd::Heartbeat>,
    /// Devices online, kept current for the systemd status line.
    pub devices_online: Arc<AtomicUsize>,
    /// Home Assistant discovery, when on (started by `app`, [`crate::homeassistant::stage::start`]).
    pub discovery: Option<crate::homeassistant::stage::Stage>,
    /// Where discovery keeps its state file, for a reload that switches it on.
    pub state_dir: std::path::PathBuf,
    /// The live view the status page reads (counters, devices, the frame inspector), when `[http]` is on.
    pub live: Option<LiveView>,
    /// The status page's own counters, added to `{base}/gateway/stats` as `http`, when `[http]` is on.
    pub http_stats: Option<UplinkStatsProbe>,
    /// An admin's requests to forget a device (`POST /api/forget`), when `[http]` is on.
    pub forget: Option<mpsc::Receiver<ForgetRequest>>,
}

/// A new configuration for the running stage (a reload): decoders per source and the registry's settings.
#[derive(Debug)]
pub struct PipelineUpdate {
    pub decoders: HashMap<String, PacketDecoder>,
    pub codecs: CodecMap,
    pub registry: RegistrySettings,
    /// The frame keys of the new configuration (`None`: keep the running ones).
    pub frame_keys: Option<crate::crypto::FrameKeys>,
    /// Home Assistant discovery of the new configuration (`None`: off).
    pub homeassistant: Option<crate::homeassistant::DiscoverySettings>,
}

impl Pipeline {
    /// Runs until `events` closes, applying configuration updates as they come. Returns the registry.
    /// No source is encrypted (see [`Pipeline::run_with_frames`]).
    pub async fn run(
        self,
        broker: &Broker,
        events: mpsc::Receiver<SourceEvent>,
        updates: mpsc::Receiver<PipelineUpdate>,
    ) -> Registry {
        self.run_with_frames(broker, events, updates, FrameGuard::none())
            .await
    }

    /// [`Pipeline::run`], with encrypted sources: `frames` opens their frames and checks their counters
    /// before the decoder sees them (`crate::crypto::guard`).
    pub async fn run_with_frames(
        mut self,
        broker: &Broker,
        mut events: mpsc::Receiver<SourceEvent>,
        mut updates: mpsc::Receiver<PipelineUpdate>,
        mut frames: FrameGuard,
    ) -> Registry {
        let started = clock_now();
        let mut stats = Stats::new();
        count_sources(&mut stats, &self.decoders);
        let warnings = RateLimiter::new(Duration::from_secs(60));
        let mut refusals = Refusals::default();
        let mut heard = HeardList::new();
        let mut heard_schedule = HeardSchedule::default();
        let mut stats_ticker = tokio::time::interval(self.stats_interval);
        stats_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat_ticker = tokio::time::interval(Duration::from_secs(1));
        let mut codecs = CodecSources::start(&self.codecs);
        loop {
            let deadline = self
                .registry
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            let republish_at = self
                .discovery
                .as_ref()
                .and_then(|stage| stage.next_republish())
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => {
                        if let Some(live) = &self.live {
                            live.touch();
                        }
                        let messages = self.handle(event, &frames, &codecs, &mut stats, &warnings, &mut heard);
                        refusals.publish(broker, &messages).await;
                        heard_schedule.after_event(&mut heard);
                    }
                    None => break,
                },
                outcome = codecs.next() => {
                    let messages = self.on_codec_outcome(outcome, &mut stats, &warnings);
                    refusals.publish(broker, &messages).await;
                }
                Some(update) = updates.recv() => {
                    count_sources(&mut stats, &update.decoders);
                    self.apply_update(update, broker, &mut codecs, &mut frames, &mut refusals).await;
                }
                request = crate::forget::next(&mut self.forget) => {
                    self.answer_forget(request, broker, &mut stats, &mut refusals, started).await;
                }
                birth = crate::homeassistant::stage::next_birth(&mut self.discovery) => {
                    if let Some(stage) = &mut self.discovery {
                        stage.on_birth(&birth, clock_now());
                    }
                }
                _ = sleep_until_or_forever(republish_at) => {
                    self.republish_discovery(broker, &mut refusals).await;
                }
                _ = sleep_until_or_forever(heard_schedule.due) => {
                    heard.take_changed();
                    heard_schedule.published();
                    refusals.publish(broker, &[self.heard_message(&heard)]).await;
                }
                _ = sleep_until_or_forever(deadline) => {
                    let messages = self.expire();
                    refusals.publish(broker, &messages).await;
                }
                _ = stats_ticker.tick() => {
                    stats.refused_publishes = refusals.count;
                    let message = self.stats_message(&stats, broker, started);
                    refusals.publish(broker, &[message]).await;
                }
                _ = heartbeat_ticker.tick() => self.on_heartbeat(&stats, started).await,
            }
        }
        self.finish(broker, stats, refusals, started).await
    }

    /// An admin's request to forget a device: its retained topics cleared, the live view refreshed,
    /// the outcome answered.
    async fn answer_forget(
        &mut self,
        request: ForgetRequest,
        broker: &Broker,
        stats: &mut Stats,
        refusals: &mut Refusals,
        started: Instant,
    ) {
        let outcome = match self.forget_device(&request.device, stats) {
            Some(cleared) => {
                refusals.publish(broker, &cleared).await;
                self.refresh_live_view(stats, started);
                ForgetOutcome::Forgotten {
                    cleared_topics: cleared.len(),
                }
            }
            None => ForgetOutcome::Unknown,
        };
        request.answer(outcome);
    }

    /// Home Assistant discovery's configs due again (after its republish delay), published.
    async fn republish_discovery(&mut self, broker: &Broker, refusals: &mut Refusals) {
        if let Some(stage) = &mut self.discovery {
            let messages = stage.republish_due(clock_now());
            refusals.publish(broker, &messages).await;
        }
    }

    /// A reload: the new decoders, codecs and frame keys, the registry's new settings (the wills of
    /// devices it forgot published), and discovery switched or reconfigured.
    async fn apply_update(
        &mut self,
        update: PipelineUpdate,
        broker: &Broker,
        codecs: &mut CodecSources,
        frames: &mut FrameGuard,
        refusals: &mut Refusals,
    ) {
        self.decoders = update.decoders;
        codecs.reconfigure(&update.codecs);
        self.codecs = update.codecs;
        if let Some(keys) = update.frame_keys {
            frames.set_keys(keys);
        }
        let wills = self.registry.reconfigure(update.registry);
        refusals.publish(broker, &wills).await;
        let mut discovery = crate::homeassistant::stage::reconfigure(
            &mut self.discovery,
            update.homeassistant,
            &self.state_dir,
            broker,
            &self.registry,
        )
        .await;
        if let Some(stage) = &mut self.discovery {
            discovery.extend(stage.forgotten(&mut self.registry));
        }
        refusals.publish(broker, &discovery).await;
    }

    /// A liveness deadline passed: what the registry publishes for the devices now silent too long.
    fn expire(&mut self) -> Vec<Message> {
        if let Some(live) = &self.live {
            live.touch();
        }
        self.registry.expire(clock_now())
    }

    /// `{base}/gateway/heard`: what the sources heard, retained.
    fn heard_message(&self, heard: &HeardList) -> Message {
        Message {
            topic: publish::gateway_heard_topic(&self.base_topic),
            payload: heard.to_json().to_string().into_bytes(),
            qos: 0,
            retain: true,
        }
    }

    /// Once a second: the devices online for systemd's status, the watchdog's beat, the live view, and
    /// discovery's state file.
    async fn on_heartbeat(&mut self, stats: &Stats, started: Instant) {
        self.devices_online
            .store(self.registry.devices_online(), Ordering::Relaxed);
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.beat();
        }
        self.refresh_live_view(stats, started);
        if let Some(stage) = &mut self.discovery {
            stage.persist().await;
        }
    }

    /// The end, once every source is gone: the watchdog retired, every device's will and a last stats
    /// line published, discovery's state saved; the registry handed back.
    async fn finish(
        mut self,
        broker: &Broker,
        mut stats: Stats,
        mut refusals: Refusals,
        started: Instant,
    ) -> Registry {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.retire(); // a clean end, not a wedged stage
        }
        let wills = self.registry.shutdown();
        self.devices_online.store(0, Ordering::Relaxed);
        refusals.publish(broker, &wills).await;
        stats.refused_publishes = refusals.count;
        let message = self.stats_message(&stats, broker, started);
        refusals.publish(broker, &[message]).await;
        if let Some(stage) = &mut self.discovery {
            stage.persist().await;
        }
        self.registry
    }

    /// Forgets the device `name` at an admin's request: the registry drops it, discovery removes its
    /// entities; returns the messages that clear its retained topics (`None`: no such device).
    fn forget_device(&mut self, name: &str, stats: &mut Stats) -> Option<Vec<Message>> {
        let mut cleared = self.registry.forget(name)?;
        if let Some(stage) = &mut self.discovery {
            cleared.extend(stage.forgotten(&mut self.registry));
        }
        stats.devices_forgotten += 1;
        if let Some(live) = &self.live {
            live.touch();
        }
        log::info!(
            "device {name:?} forgotten at an admin's request: {} retained topics cleared",
            cleared.len()
        );
        Some(cleared)
    }

    /// Gives the live view a new snapshot when anything changed since the last one.
    fn refresh_live_view(&self, stats: &Stats, started: Instant) {
        let Some(live) = &self.live else { return };
        if !live.take_changed() {
            return;
        }
        live.store(Snapshot {
            stats: stats.clone(),
            devices: self.registry.snapshot(),
            devices_online: self.registry.devices_online(),
            devices_known: self.registry.devices_known(),
            started,
            taken: clock_now(),
            taken_wall: std::time::SystemTime::now(),
        });
    }

    /// Adds a frame and what became of it to the live view's inspector.
    fn inspect(&self, packet: &crate::model::Packet, outcome: impl FnOnce() -> FrameOutcome) {
        if let Some(live) = &self.live {
            live.record(&packet.source, &packet.bytes, packet.received_at, outcome());
        }
    }

    fn stats_message(&self, stats: &Stats, broker: &Broker, started: Instant) -> Message {
        let uplink = self.uplink_stats.as_ref().map(|probe| probe());
        let mut json = stats_json(
            stats,
            self.registry.devices_online(),
            self.registry.devices_known(),
            &broker.counters(),
            uplink,
            clock_now().saturating_duration_since(started),
        );
        if let Some(probe) = &self.command_stats {
            crate::stats::add_command_counters(&mut json, &probe());
        }
        if let Some(stage) = &self.discovery {
            crate::stats::add_discovery_counters(&mut json, &stage.counters());
        }
        if let (Some(probe), serde_json::Value::Object(fields)) = (&self.lorawan_stats, &mut json) {
            fields.insert("lorawan".to_string(), probe());
        }
        if let (Some(probe), serde_json::Value::Object(fields)) = (&self.http_stats, &mut json) {
            fields.insert("http".to_string(), probe());
        }
        Message {
            topic: publish::gateway_stats_topic(&self.base_topic),
            payload: json.to_string().into_bytes(),
            qos: 0,
            retain: false,
        }
    }

    /// One event in, the messages to publish out.
    fn handle(
        &mut self,
        event: SourceEvent,
        frames: &FrameGuard,
        codecs: &CodecSources,
        stats: &mut Stats,
        warnings: &RateLimiter,
        heard: &mut HeardList,
    ) -> Vec<Message> {
        match event {
            SourceEvent::Reading { reading, trigger } => {
                let source = reading.source.clone();
                stats.source(&source).frames += 1;
                let messages = self.register(std::slice::from_ref(&reading), stats);
                if trigger {
                    self.registry
                        .keep_online_while_silent(&reading.source, &reading.address);
                }
                messages
            }
            SourceEvent::Heard {
                source,
                address,
                rssi,
                at,
            } => {
                if self.decoders.contains_key(&source) {
                    heard.heard(&source, &address, rssi, at);
                }
                Vec::new()
            }
            SourceEvent::Duplicate { source } => {
                stats.source(&source).duplicates += 1;
                Vec::new()
            }
            SourceEvent::DecodeError { source, error } => {
                stats.source(&source).decode_errors += 1;
                log_refused(warnings, &source, &format!("not a reading: {error}"));
                Vec::new()
            }
            SourceEvent::Refused {
                source,
                refusal,
                detail,
            } => {
                count_refusal(stats, warnings, &source, refusal, &detail);
                Vec::new()
            }
            SourceEvent::State { source, state } => {
                count_state(stats, &source, state);
                Vec::new()
            }
            SourceEvent::GatewayAvailability {
                source,
                gateway,
                online,
                devices_offline,
            } => self.on_gateway_availability(&source, gateway, online, &devices_offline),
            SourceEvent::Up { source } => {
                stats.source(&source).up = true;
                Vec::new()
            }
            SourceEvent::Lost { source, .. } => {
                let counters = stats.source(&source);
                counters.up = false;
                counters.link_losses += 1;
                self.registry.on_source_lost(&source)
            }
            SourceEvent::FrameError { source, error } => {
                self.on_frame_error(&source, &error, stats, warnings);
                Vec::new()
            }
            SourceEvent::Packet(packet) => {
                stats.source(&packet.source).frames += 1;
                self.on_packet(packet, frames, codecs, stats, warnings)
            }
        }
    }

    /// A LoRaWAN gateway came or went: its retained availability, and the devices only it heard
    /// marked offline.
    fn on_gateway_availability(
        &mut self,
        source: &str,
        gateway: u64,
        online: bool,
        devices_offline: &[String],
    ) -> Vec<Message> {
        let payload = if online {
            publish::ONLINE
        } else {
            publish::OFFLINE
        };
        let mut messages = vec![Message {
            topic: crate::topic::gateway::lorawan_gateway_availability_topic(
                &self.base_topic,
                gateway,
            ),
            payload: payload.as_bytes().to_vec(),
            qos: 1,
            retain: true,
        }];
        messages.extend(self.registry.on_devices_unheard(source, devices_offline));
        messages
    }

    /// A frame the source's framing refused: counted, shown in the frame inspector, logged.
    fn on_frame_error(
        &self,
        source: &str,
        error: &FrameError,
        stats: &mut Stats,
        warnings: &RateLimiter,
    ) {
        stats.source(source).frame_errors += 1;
        if let Some(live) = &self.live {
            let outcome = FrameOutcome::Refused(format!("framing: {error}"));
            live.record(source, &[], std::time::SystemTime::now(), outcome);
        }
        log_refused(warnings, source, &format!("frame refused: {error}"));
    }

    /// A packet from a source: opened when the source is encrypted, then decoded (by a codec off this
    /// task, whose outcome comes back through `codecs`), and its readings through the registry.
    fn on_packet(
        &mut self,
        packet: crate::model::Packet,
        frames: &FrameGuard,
        codecs: &CodecSources,
        stats: &mut Stats,
        warnings: &RateLimiter,
    ) -> Vec<Message> {
        let source = packet.source.clone();
        let Some(decoder) = self.decoders.get(&source) else {
            return Vec::new();
        };
        // Encrypted sources: authenticate, decrypt and check the counter first.
        let (decoder, opened) = match frames.open(decoder, &packet) {
            Ok(opened) => opened,
            Err(refusal) => {
                self.inspect(&packet, || FrameOutcome::Refused(refusal.to_string()));
                refusal.count(stats.source(&source));
                log_refused(warnings, &source, &format!("frame refused: {refusal}"));
                return Vec::new();
            }
        };
        let decoded = match decoder.payload {
            // A codec decodes off this task; its outcome comes back through `codecs`.
            PayloadFormat::Codec => match decoder.split(&opened) {
                Ok(Some((link, payload))) => {
                    return match codecs.submit(&opened, &link, payload) {
                        Ok(()) => Vec::new(),
                        Err(outcome) => self.on_codec_outcome(*outcome, stats, warnings),
                    };
                }
                Ok(None) => Ok(Vec::new()),
                Err(error) => Err(error),
            },
            _ => decoder.decode(&opened),
        };
        match decoded {
            Ok(readings) => {
                let mut messages = Vec::new();
                let mut inspected = Vec::new();
                for reading in &readings {
                    if let Some(entry) = self.admit(reading, stats, &mut messages) {
                        inspected.push(entry);
                    }
                }
                self.inspect(&packet, || FrameOutcome::Decoded(inspected));
                messages
            }
            Err(error) => {
                self.inspect(&packet, || FrameOutcome::Refused(error.to_string()));
                stats.source(&source).decode_errors += 1;
                log::debug!(source = source.as_str(); "undecodable frame {:02X?}: {error}", opened.bytes);
                if let Some(suppressed) = warnings.admit_at(&source, clock_now()) {
                    log::warn!(source = source.as_str(); "undecodable frame: {error}{}", suppressed_suffix(suppressed));
                }
                Vec::new()
            }
        }
    }

    /// One reading through the registry: its messages appended to `messages`, and counted; what the
    /// frame inspector shows of it, when the status page runs.
    fn admit(
        &mut self,
        reading: &Reading,
        stats: &mut Stats,
        messages: &mut Vec<Message>,
    ) -> Option<serde_json::Value> {
        self.admit_decoded(reading, &[], stats, messages)
    }

    /// [`Pipeline::admit`] with what a codec's `normalizeUplink` said of the reading's fields (field,
    /// path in TTN's normalized schema), for their Home Assistant types.
    fn admit_decoded(
        &mut self,
        reading: &Reading,
        normalized: &[(String, String)],
        stats: &mut Stats,
        messages: &mut Vec<Message>,
    ) -> Option<serde_json::Value> {
        let source = &reading.source;
        let outcome = self.registry.on_reading(reading, clock_now());
        let inspected = self
            .live
            .is_some()
            .then(|| self.inspected_reading(reading, &outcome));
        match outcome {
            ReadingOutcome::Publish {
                messages: mut out,
                fields_dropped,
                newly_capped,
            } => {
                stats.source(source).readings += 1;
                stats.fields_dropped += fields_dropped as u64;
                if let Some(device) = newly_capped {
                    let max = self.registry.max_fields();
                    log::warn!(
                        source = source.as_str(), device = device.as_str();
                        "device {device} sent more field names than [devices] max_fields = {max}: \
                         it keeps its first {max}, new names are dropped and counted in \
                         devices.fields_dropped (logged once per device)"
                    );
                }
                messages.append(&mut out);
                if let Some(stage) = &mut self.discovery {
                    let discovery = stage.after_codec_reading(
                        &mut self.registry,
                        &reading.source,
                        &reading.address,
                        normalized,
                    );
                    messages.extend(discovery);
                }
            }
            ReadingOutcome::Duplicate => stats.source(source).duplicates += 1,
            ReadingOutcome::OverDeviceCap => stats.dropped_over_device_cap += 1,
        }
        inspected
    }

    /// A codec's answer for one payload: its fields become a reading; a failure still gives the device
    /// a reading without fields (it stays online), is counted, logged at most once a minute per device,
    /// and published on `{base}/{device}/error` (not retained) with the raw payload and its FPort.
    fn on_codec_outcome(
        &mut self,
        outcome: CodecOutcome,
        stats: &mut Stats,
        warnings: &RateLimiter,
    ) -> Vec<Message> {
        let (found, failure) = match outcome.result {
            Ok(found) => (found, None),
            Err(error) => (PayloadFields::default(), Some(error)),
        };
        let reading = Reading {
            address: if outcome.address.is_empty() {
                found.address.unwrap_or_default()
            } else {
                outcome.address
            },
            seq: outcome.seq.or(found.seq),
            fields: found.fields,
            source: outcome.source,
            received_at: outcome.received_at,
            radio: outcome.radio,
            lorawan: None,
        };
        let mut messages = Vec::new();
        self.admit_decoded(&reading, &outcome.normalized, stats, &mut messages);
        let Some(error) = failure else {
            return messages;
        };
        let counters = stats.source(&reading.source);
        counters.decode_errors += 1;
        counters.codec_errors += 1;
        if error == CodecError::Busy {
            counters.codec_dropped += 1;
        }
        let device = self
            .registry
            .device(&reading.source, &reading.address)
            .map(|(name, _, _)| name.to_string());
        let key = format!("codec:{}:{}", reading.source, reading.address);
        if let Some(suppressed) = warnings.admit_at(&key, clock_now()) {
            log::warn!(
                source = reading.source.as_str(), device = device.as_deref().unwrap_or("");
                "codec failed on a payload of {}: {error}{}",
                device.as_deref().unwrap_or("a device over the device cap"),
                suppressed_suffix(suppressed)
            );
        }
        if let Some(device) = device {
            messages.push(Message {
                topic: crate::topic::gateway::error_topic(&self.base_topic, &device),
                payload: serde_json::json!({
                    "error": error.to_string(),
                    "raw": crate::crypto::to_hex(&outcome.raw),
                    "fport": outcome.fport,
                })
                .to_string()
                .into_bytes(),
                qos: 0,
                retain: false,
            });
        }
        messages
    }
}

impl Pipeline {
    /// Readings through the registry (and discovery): the messages to publish, counted.
    fn register(&mut self, readings: &[Reading], stats: &mut Stats) -> Vec<Message> {
        let mut messages = Vec::new();
        for reading in readings {
            self.admit(reading, stats, &mut messages);
        }
        messages
    }
}

impl Pipeline {
    /// One reading as the frame inspector shows it: address, device name, fields and what the registry
    /// did with it.
    fn inspected_reading(
        &self,
        reading: &crate::model::Reading,
        outcome: &ReadingOutcome,
    ) -> serde_json::Value {
        let device = self
            .registry
            .device(&reading.source, &reading.address)
            .map(|(name, _, _)| name.to_string());
        let fields: serde_json::Map<String, serde_json::Value> = reading
            .fields
            .iter()
            .map(|(name, value)| (name.clone(), value.to_json()))
            .collect();
        let result = match outcome {
            ReadingOutcome::Publish { .. } => "published",
            ReadingOutcome::Duplicate => "duplicate",
            ReadingOutcome::OverDeviceCap => "dropped: device cap",
        };
        serde_json::json!({
            "address": reading.address,
            "device": device,
            "fields": fields,
            "result": result,
        })
    }
}

/// Gives every source of `decoders` its counters, so a source that has sent nothing yet shows zeros.
fn count_sources(stats: &mut Stats, decoders: &HashMap<String, PacketDecoder>) {
    for source in decoders.keys() {
        stats.source(source);
    }
}

/// A source's receiver state, and the stalls, restarts and end it counts.
fn count_state(stats: &mut Stats, source: &str, state: ReceiverState) {
    let counters = stats.source(source);
    counters.state = Some(state.as_str());
    match state {
        ReceiverState::Stalled => counters.stalls += 1,
        ReceiverState::Restarting => counters.restarts += 1,
        ReceiverState::Finished => counters.up = false,
        ReceiverState::Starting | ReceiverState::Running | ReceiverState::Lost => {}
    }
}

/// What a source sent that was refused: logged at debug every time, and as a warning at most once a
/// minute per source with the number suppressed since.
/// A frame an encrypted source refused: counted by why, logged (debug always, warn rate-limited).
fn count_refusal(
    stats: &mut Stats,
    warnings: &RateLimiter,
    source: &str,
    refusal: Refusal,
    detail: &str,
) {
    let counters = stats.source(source);
    match refusal {
        Refusal::AuthFailed => counters.auth_failed += 1,
        Refusal::Replayed => counters.replayed += 1,
        Refusal::Plaintext => counters.plaintext_refused += 1,
    }
    log::debug!(source = source; "refused: {detail}");
    if let Some(suppressed) = warnings.admit_at(source, clock_now()) {
        log::warn!(source = source; "refused: {detail}{}", suppressed_suffix(suppressed));
    }
}

fn log_refused(warnings: &RateLimiter, source: &str, what: &str) {
    log::debug!(source = source; "{what}");
    if let Some(suppressed) = warnings.admit_at(source, clock_now()) {
        log::warn!(source = source; "{what}{}", suppressed_suffix(suppressed));
    }
}

/// Now on tokio's clock (as a std `Instant`, which the registry keeps), so that liveness deadlines and
/// stats intervals follow a paused test clock like every timer of the pipeline does.
fn clock_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The pipeline's publishes the broker refused: counted, and logged at most once a minute.
struct Refusals {
    count: u64,
    limiter: RateLimiter,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            count: 0,
            limiter: RateLimiter::new(Duration::from_secs(60)),
        }
    }
}

impl Refusals {
    /// Publishes in order; a refused publish is counted (logged at most once a minute with the number
    /// suppressed since) and the rest still go out.
    async fn publish(&mut self, broker: &Broker, messages: &[Message]) {
        for message in messages {
            if let Err(error) = broker.publish(message).await {
                self.count += 1;
                if let Some(suppressed) = self.limiter.admit_at("publish", clock_now()) {
                    log::error!("not published: {error}{}", suppressed_suffix(suppressed));
                }
            }
        }
    }
}

/// Publishes in order; a refused publish is logged and the rest still go out. For the few messages the
/// daemon publishes outside the pipeline (the gateway's availability at start and stop).
pub async fn publish_all(broker: &Broker, messages: &[Message]) {
    for message in messages {
        if let Err(error) = broker.publish(message).await {
            log::error!("not published: {error}");
        }
    }
}
