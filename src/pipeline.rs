//! The pipeline stage: takes every [`SourceEvent`], decodes packets with their source's decoder, passes
//! readings through the device registry, and publishes what the registry asks for on the embedded broker;
//! it also fires the registry's liveness deadlines and publishes `{base}/gateway/stats`. It owns the
//! counters and never touches a device or a socket. It ends when every source has dropped its sender
//! (the sources stop first on shutdown, so whatever they sent is still decoded and published), then
//! publishes every device's will and hands the registry back. With Home Assistant discovery on, each
//! reading, reload and birth message also goes through [`crate::homeassistant::stage`], whose discovery
//! configs are published with the rest.
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
use crate::crypto::FrameGuard;
use crate::decode::PacketDecoder;
use crate::devices::{ReadingOutcome, Registry, RegistrySettings};
use crate::model::{Message, Packet, Reading};
use crate::publish;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::SourceEvent;
use crate::stats::{stats_json, Stats};

/// A cheap probe the stats line calls for the uplink's part (spool depth, link state).
pub type UplinkStatsProbe = Box<dyn Fn() -> serde_json::Value + Send + Sync>;
/// The same for the commands' counters per source (`crate::commands::CommandStats`).
pub type CommandStatsProbe = Box<
    dyn Fn() -> std::collections::BTreeMap<String, crate::stats::CommandCounters> + Send + Sync,
>;

/// The stage's parts, built by `app`.
pub struct Pipeline {
    pub decoders: HashMap<String, PacketDecoder>,
    pub registry: Registry,
    pub base_topic: String,
    pub stats_interval: Duration,
    pub uplink_stats: Option<UplinkStatsProbe>,
    /// Commands to devices, when a source has `commands = true`.
    pub command_stats: Option<CommandStatsProbe>,
    pub heartbeat: Option<crate::systemd::Heartbeat>,
    /// Devices online, kept current for the systemd status line.
    pub devices_online: Arc<AtomicUsize>,
    /// Home Assistant discovery, when on (started by `app`, [`crate::homeassistant::stage::start`]).
    pub discovery: Option<crate::homeassistant::stage::Stage>,
    /// Where discovery keeps its state file, for a reload that switches it on.
    pub state_dir: std::path::PathBuf,
}

/// A new configuration for the running stage (a reload): decoders per source and the registry's settings.
#[derive(Debug)]
pub struct PipelineUpdate {
    pub decoders: HashMap<String, PacketDecoder>,
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
        for source in self.decoders.keys() {
            stats.source(source);
        }
        let warnings = RateLimiter::new(Duration::from_secs(60));
        let mut refusals = Refusals::default();
        let mut stats_ticker = tokio::time::interval(self.stats_interval);
        stats_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat_ticker = tokio::time::interval(Duration::from_secs(1));
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
                        let messages = self.handle(event, &frames, &mut stats, &warnings);
                        refusals.publish(broker, &messages).await;
                    }
                    None => break,
                },
                Some(update) = updates.recv() => {
                    self.reconfigure(update, &mut frames, &mut stats, &mut refusals, broker).await;
                }
                birth = crate::homeassistant::stage::next_birth(&mut self.discovery) => {
                    if let Some(stage) = &mut self.discovery {
                        stage.on_birth(&birth, clock_now());
                    }
                }
                _ = sleep_until_or_forever(republish_at) => {
                    if let Some(stage) = &mut self.discovery {
                        let messages = stage.republish_due(clock_now());
                        refusals.publish(broker, &messages).await;
                    }
                }
                _ = sleep_until_or_forever(deadline) => {
                    let messages = self.registry.expire(clock_now());
                    refusals.publish(broker, &messages).await;
                }
                _ = stats_ticker.tick() => {
                    stats.refused_publishes = refusals.count;
                    let message = self.stats_message(&stats, broker, started);
                    refusals.publish(broker, &[message]).await;
                }
                _ = heartbeat_ticker.tick() => self.beat().await,
            }
        }
        self.shut_down(&mut stats, &mut refusals, broker, started)
            .await;
        self.registry
    }

    /// A configuration update: new decoders and frame keys, the registry and discovery reconfigured,
    /// and what that publishes (wills of devices no longer known, discovery changes).
    async fn reconfigure(
        &mut self,
        update: PipelineUpdate,
        frames: &mut FrameGuard,
        stats: &mut Stats,
        refusals: &mut Refusals,
        broker: &Broker,
    ) {
        for source in update.decoders.keys() {
            stats.source(source);
        }
        self.decoders = update.decoders;
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

    /// Once a second: the devices online for the stats, the watchdog's heartbeat, discovery persisted.
    async fn beat(&mut self) {
        self.devices_online
            .store(self.registry.devices_online(), Ordering::Relaxed);
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.beat();
        }
        if let Some(stage) = &mut self.discovery {
            stage.persist().await;
        }
    }

    /// The end of the input: the heartbeat retired, every device's will and the last stats published,
    /// discovery persisted.
    async fn shut_down(
        &mut self,
        stats: &mut Stats,
        refusals: &mut Refusals,
        broker: &Broker,
        started: Instant,
    ) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.retire(); // a clean end, not a wedged stage
        }
        let wills = self.registry.shutdown();
        self.devices_online.store(0, Ordering::Relaxed);
        refusals.publish(broker, &wills).await;
        stats.refused_publishes = refusals.count;
        let message = self.stats_message(stats, broker, started);
        refusals.publish(broker, &[message]).await;
        if let Some(stage) = &mut self.discovery {
            stage.persist().await;
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
        stats: &mut Stats,
        warnings: &RateLimiter,
    ) -> Vec<Message> {
        match event {
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
                stats.source(&source).frame_errors += 1;
                log::debug!(source = source.as_str(); "frame refused: {error}");
                if let Some(suppressed) = warnings.admit_at(&source, clock_now()) {
                    log::warn!(source = source.as_str(); "frame refused: {error}{}", suppressed_suffix(suppressed));
                }
                Vec::new()
            }
            SourceEvent::Packet(packet) => self.handle_packet(packet, frames, stats, warnings),
        }
    }

    /// A frame from a source: opened when its source is encrypted, decoded, and its readings published.
    fn handle_packet(
        &mut self,
        packet: Packet,
        frames: &FrameGuard,
        stats: &mut Stats,
        warnings: &RateLimiter,
    ) -> Vec<Message> {
        let source = packet.source.clone();
        stats.source(&source).frames += 1;
        let Some(decoder) = self.decoders.get(&source) else {
            return Vec::new();
        };
        // Encrypted sources: authenticate, decrypt and check the counter first.
        let (decoder, packet) = match frames.open(decoder, &packet) {
            Ok(opened) => opened,
            Err(refusal) => {
                refusal.count(stats.source(&source));
                log::debug!(source = source.as_str(); "frame refused: {refusal}");
                if let Some(suppressed) = warnings.admit_at(&source, clock_now()) {
                    log::warn!(source = source.as_str(); "frame refused: {refusal}{}", suppressed_suffix(suppressed));
                }
                return Vec::new();
            }
        };
        match decoder.decode(&packet) {
            Ok(readings) => self.publish_readings(&readings, &source, stats),
            Err(error) => {
                stats.source(&source).decode_errors += 1;
                log::debug!(source = source.as_str(); "undecodable frame {:02X?}: {error}", packet.bytes);
                if let Some(suppressed) = warnings.admit_at(&source, clock_now()) {
                    log::warn!(source = source.as_str(); "undecodable frame: {error}{}", suppressed_suffix(suppressed));
                }
                Vec::new()
            }
        }
    }

    /// The readings of one frame through the registry (and discovery): the messages to publish, with
    /// duplicates, readings over the device cap and fields over `max_fields` counted.
    fn publish_readings(
        &mut self,
        readings: &[Reading],
        source: &str,
        stats: &mut Stats,
    ) -> Vec<Message> {
        let mut messages = Vec::new();
        for reading in readings {
            match self.registry.on_reading(reading, clock_now()) {
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
                            source = source, device = device.as_str();
                            "device {device} sent more field names than [devices] max_fields = {max}: \
                             it keeps its first {max}, new names are dropped and counted in \
                             devices.fields_dropped (logged once per device)"
                        );
                    }
                    messages.append(&mut out);
                    if let Some(stage) = &mut self.discovery {
                        let discovery = stage.after_reading(
                            &mut self.registry,
                            &reading.source,
                            &reading.address,
                        );
                        messages.extend(discovery);
                    }
                }
                ReadingOutcome::Duplicate => stats.source(source).duplicates += 1,
                ReadingOutcome::OverDeviceCap => stats.dropped_over_device_cap += 1,
            }
        }
        messages
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
