//! Discovery inside the pipeline: starts the [`Discovery`] state machine from its state file, watches
//! Home Assistant's birth topic on the embedded broker, turns the registry's events into discovery
//! messages, and writes the state file when it changed (at most once a second, and at the end). When
//! discovery is off but a state file says entities were announced, it clears them and removes the file.
//! The pipeline publishes what it returns; this module never publishes itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{
    clear_stored, load, remove_state, save, state_file, Discovery, DiscoverySettings,
    REPUBLISH_SPREAD,
};
use crate::broker::Broker;
use crate::devices::Registry;
use crate::model::Message;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::stats::DiscoveryCounters;
use crate::topic::gateway::HOME_ASSISTANT_BIRTH;

/// The running discovery stage.
pub struct Stage {
    discovery: Discovery,
    path: PathBuf,
    births: mpsc::Receiver<Message>,
    birth_topic: String,
    capped_logged: bool,
    /// The line about coalesced births, at most one a minute.
    coalesced_log: RateLimiter,
}

/// Starts discovery (or clears what an earlier run announced when it is off): the stage and the
/// messages to publish first.
pub async fn start(
    settings: Option<DiscoverySettings>,
    state_dir: &Path,
    broker: &Broker,
    registry: &Registry,
) -> (Option<Stage>, Vec<Message>) {
    let path = state_file(state_dir);
    let stored = load(&path).await;
    let Some(settings) = settings else {
        let Some(stored) = stored else {
            return (None, Vec::new());
        };
        remove_state(&path).await;
        log::info!("Home Assistant discovery is off: removing what was announced");
        return (None, clear_stored(&stored, 1));
    };
    let birth_topic = settings.birth_topic();
    let births = broker.watch(vec![birth_topic.clone()]).await;
    log::info!(
        "Home Assistant discovery under {}/, birth messages on {birth_topic}",
        settings.prefix
    );
    let mut discovery = Discovery::new(settings, stored);
    let messages = discovery.start(registry);
    let stage = Stage {
        discovery,
        path,
        births,
        birth_topic,
        capped_logged: false,
        coalesced_log: RateLimiter::new(Duration::from_secs(60)),
    };
    (Some(stage), messages)
}

/// Applies a reload: new settings, discovery switched on or off.
pub async fn reconfigure(
    stage: &mut Option<Stage>,
    settings: Option<DiscoverySettings>,
    state_dir: &Path,
    broker: &Broker,
    registry: &Registry,
) -> Vec<Message> {
    match (stage.as_mut(), settings) {
        (Some(running), Some(settings)) => {
            if settings.birth_topic() != running.birth_topic {
                running.birth_topic = settings.birth_topic();
                running.births = broker.watch(vec![running.birth_topic.clone()]).await;
            }
            let messages = running.discovery.reconfigure(settings, registry);
            running.persist().await;
            messages
        }
        (Some(running), None) => {
            let qos = running.discovery.settings().qos;
            let stored = running.discovery.snapshot();
            remove_state(&running.path).await;
            *stage = None;
            log::info!("Home Assistant discovery switched off: removing what was announced");
            clear_stored(&stored, qos)
        }
        (None, Some(settings)) => {
            let (started, messages) = start(Some(settings), state_dir, broker, registry).await;
            *stage = started;
            messages
        }
        (None, None) => Vec::new(),
    }
}

impl Stage {
    /// After a reading of (source, address) went through the registry; also handles the devices the
    /// registry forgot meanwhile.
    pub fn after_reading(
        &mut self,
        registry: &mut Registry,
        source: &str,
        address: &str,
    ) -> Vec<Message> {
        self.after_codec_reading(registry, source, address, &[])
    }

    /// [`Stage::after_reading`] for a reading a codec decoded, with the fields its `normalizeUplink`
    /// named (field, path in TTN's normalized schema).
    pub fn after_codec_reading(
        &mut self,
        registry: &mut Registry,
        source: &str,
        address: &str,
        normalized: &[(String, String)],
    ) -> Vec<Message> {
        let mut messages = self.forgotten(registry);
        messages.extend(
            self.discovery
                .after_codec_reading(registry, source, address, normalized),
        );
        if self.discovery.entities_dropped() > 0 && !self.capped_logged {
            self.capped_logged = true;
            log::warn!(
                "Home Assistant discovery tracks at most {} fields over all devices: new fields are not announced",
                self.discovery.settings().max_entities
            );
        }
        messages
    }

    /// The devices the registry forgot (evicted by its device cap): their entities are removed.
    pub fn forgotten(&mut self, registry: &mut Registry) -> Vec<Message> {
        registry
            .take_forgotten()
            .into_iter()
            .flat_map(|(source, address)| self.discovery.forget(&source, &address))
            .collect()
    }

    /// A message on the birth topic: `online` starts a re-publication of every config, or is coalesced
    /// into the one that follows the current window.
    pub fn on_birth(&mut self, message: &Message, now: Instant) {
        if message.payload != HOME_ASSISTANT_BIRTH.as_bytes() {
            return;
        }
        if self.discovery.on_birth(now) {
            log::info!(
                "Home Assistant is online ({}): publishing discovery again",
                self.birth_topic
            );
        } else if let Some(suppressed) = self.coalesced_log.admit("births") {
            log::info!(
                "Home Assistant is online again ({}) within {REPUBLISH_SPREAD:?} of the last re-publication: one more follows when that time is over{}",
                self.birth_topic,
                suppressed_suffix(suppressed)
            );
        }
    }

    /// Discovery's counters (for `{base}/gateway/stats`).
    pub fn counters(&self) -> DiscoveryCounters {
        self.discovery.counters()
    }

    /// When the next slice of a re-publication is due.
    pub fn next_republish(&self) -> Option<Instant> {
        self.discovery.next_republish()
    }

    pub fn republish_due(&mut self, now: Instant) -> Vec<Message> {
        self.discovery.republish_due(now)
    }

    /// Writes the state file if it changed.
    pub async fn persist(&mut self) {
        if let Some(bytes) = self.discovery.take_snapshot() {
            if let Err(error) = save(self.path.clone(), bytes).await {
                log::warn!(
                    "Home Assistant discovery state not saved to {}: {error}; devices removed while stopped may stay in Home Assistant",
                    self.path.display()
                );
            }
        }
    }
}

/// The next message on the birth topic; never returns while discovery is off.
pub async fn next_birth(stage: &mut Option<Stage>) -> Message {
    match stage {
        Some(stage) => match stage.births.recv().await {
            Some(message) => message,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}
