//! The uplink: takes every message the local broker saw, keeps those the forward rules select, and sends
//! them to the cloud broker in order, forgetting each only once the broker acknowledged it (PUBACK at QoS
//! 1, PUBCOMP at QoS 2, written at QoS 0). It owns the spool, the in-flight window and the connection
//! task; it never decodes, never talks to the local broker, and never blocks the runtime (spool IO and
//! fsync run on blocking threads, one job at a time).
//!
//! # The promise, and what it costs the SD card
//! Every message a forward rule selects is acknowledged by the cloud broker or fsync'ed to the spool
//! within `[upstream.spool] sync` (default 1 s) of its arrival. A message waits in memory for at most its
//! *hold* (`sync` less a margin for the fsync: `sync - min(sync / 4, 250 ms)`, 750 ms by default); the
//! cloud acknowledges in milliseconds, so while it keeps up nothing reaches the disk at all, and the
//! spool holds no file. A message still unacknowledged when its hold ends (the link is down or slow) is
//! written to the spool together with everything else memory holds, in one sequential append and one
//! fsync (group commit); from there on it is sent from the spool as before. A clean stop writes and
//! fsyncs everything unacknowledged. `sync = "always"` writes and fsyncs each batch before any of it is
//! sent. So a `kill -9` or a power cut loses at most the messages younger than `sync` that the cloud had
//! not acknowledged (with `"always"`: none that was sent).
//! While the cloud is down, each `sync` period in which messages arrived costs one commit: on a 4 KiB-block
//! ext4 about 16 KiB whatever it holds (data block, inode, journal), then about one byte per byte of
//! record, since segments reserve their size when created (the bench's "spool group commits by size").
//!
//! # Order, replay and live data
//! Every forwarded message gets the next sequence number on arrival, whether it will ever touch the disk
//! or not (the spool's numbers have gaps where the cloud was quick). The window sends in that order: it
//! takes messages from memory only while nothing older waits unread on disk, so a message that arrives
//! during a replay waits its turn (on disk once its hold ends) and the cloud sees exactly the local
//! order. The replay is paced only by the in-flight window (`max_inflight` unacknowledged messages): no
//! rate limit, because the fastest way to get live data through is to drain the backlog at the speed the
//! broker acknowledges. Input is never held up by sending (it is read while a spool job runs), so an
//! outage or a slow broker never stalls the local side; the disk budget is what bounds it.
//!
//! # Memory
//! What memory holds is capped at [`MAX_BATCH`] messages and [`MAX_BATCH_BYTES`] of topics and
//! payloads: at the cap it is written at once (before its hold), and while a job runs and memory is
//! full the input is not read, so a burst waits in the input channel (whose owner bounds it). A disk
//! that keeps up writes a full batch in a few milliseconds (926,000 messages/s at 100 per append,
//! below). [`Uplink::open_async`] opens the spool (a scan, truncation and fsync of up to `max_bytes`) on
//! a blocking thread, for callers on the runtime.
//!
//! # A full disk
//! A full state file system (ENOSPC, or a quota) never stops the uplink. An append the disk refuses
//! leaves the spool as it was (the failed write is cut back, nothing is counted), and what it did not
//! take goes back into memory, in order; writing is tried again every [`DISK_FULL_RETRY`], and whatever
//! is already spooled is still sent. While the disk stays full, memory keeps the newest [`MAX_BATCH`]
//! messages ([`MAX_BATCH_BYTES`]): each new message pushes out the oldest one the window has not taken
//! (oldest first, as `max_bytes` drops), counted as `dropped_disk_full` in the stats and logged at most
//! once a minute. One WARN names the file system (mount point, type, free space) when it is first found
//! full, one INFO when a write succeeds again; the stats' `disk_full` says which it is now. A clean stop
//! on a full disk counts what it could not write as dropped.
//!
//! # Refused messages
//! A cloud broker may refuse a publish by closing the connection on it (AWS IoT Core and Azure IoT Hub
//! for a topic outside the device's policy, EMQX with `acl_deny_action = disconnect`); resent at every
//! reconnect, such a message would hold up everything behind it for ever. So when a connection that the
//! broker had accepted (CONNACK) ends with a message the oldest in flight, messages are sent one at a
//! time from then on (after the availability message is acknowledged), so that the next end names the
//! message in flight without doubt; when [`REFUSAL_STRIKES`] (3) such connections in a row end with the
//! same message in flight, it is taken for refused: set aside in the spool directory ([`refused`],
//! bounded, kept across restarts), counted (`refused` in the stats), logged with its topic (at most once
//! a minute per topic), and the messages behind it flow at full window again. An acknowledgement of it
//! clears the suspicion. Connects that fail before a CONNACK (an outage) count for nothing, so an outage
//! never sets a message aside; a link that drops three accepted connections in a row with the same
//! message in flight does (the price of guessing, which MQTT 3.1.1 leaves no way around). With
//! `[upstream] protocol = "mqtt5"` ([`protocol`]) nothing is guessed: a PUBACK or PUBREC with a reason
//! code of 0x80 or above names the publish, which is set aside at once, the code in the log line.
//!
//! # Duplicates
//! After a reconnect the messages of the window that reached the wire without an acknowledgement are sent
//! again (counted as `resent`): QoS 1 may deliver those twice, never more than one window. After a crash,
//! spooled messages acknowledged since the last commit are sent again too (the ack cursor is persisted at
//! most once per commit interval, and only while records on disk were acknowledged, to spare the card).
//!
//! # Availability
//! The MQTT will is `{prefix}{base}/gateway/availability` = `offline`, retained, QoS 1, where `{prefix}`
//! is the first forward rule's prefix (empty without rules), so the availability sits beside the
//! forwarded topics. On every CONNACK `online` is published there, retained; on a clean stop `offline`.
//!
//! # Measured
//! `bench/run.sh --only spool` (the whole suite is in BENCHMARKS.md), on the 2-core x86-64 build
//! machine, temporary directory on ext4, 42-byte JSON payloads on a 35-byte topic (record: 105 bytes on
//! disk):
//!
//! | | messages/s | bytes written per message |
//! |---|---:|---:|
//! | append, `sync = "1s"`, one message per append | 232,000 | 105 |
//! | append, `sync = "1s"`, 100 per append | 926,000 | 105 |
//! | append, `sync = "always"`, one per append | 280 | 4,201 (a 4 KiB page per fsync) |
//! | append, `sync = "always"`, 100 per append | 19,700 | 145 |
//! | drain of a 100,000-message backlog to a local mosquitto, QoS 1, `max_inflight` 100 | 24,000 | |
//!
//! Bytes per message are the kernel's count (`/proc/self/io`); the spool's own count agrees within 1 %.
//! `"always"` costs a page write per fsync: on an SD card prefer the default group commit. What the
//! daemon writes per day at a real site, cloud up and down, is the bench's "flash writes" section.

pub mod client;
pub mod endpoint;
pub mod forward;
pub mod protocol;
pub mod refused;
pub mod segment;
pub mod spool;
pub mod stats;
pub mod tls;
pub mod window;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::full_disk::FullEpisode;
use crate::model::Message;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::topic::gateway::{OFFLINE, ONLINE};

pub use endpoint::Endpoint;
pub use forward::{ForwardError, ForwardRule};
pub use protocol::Protocol;
pub use spool::{SpoolError, SpoolSettings, SyncPolicy};
pub use stats::UplinkStatsHandle;

use client::{LinkEvent, Reconnect};
use forward::Forwarder;
use protocol::{Client, ConnectOptions};
use spool::{Numbered, Outbound, Record, Spool, SpoolStats};
use stats::LinkState;
use window::Window;

/// The `[upstream]` settings, resolved by the configuration.
#[derive(Debug, Clone)]
pub struct UplinkSettings {
    /// `mqtts://host:port`, or `mqtt://host:port` with `allow_plaintext`.
    pub url: Endpoint,
    pub allow_plaintext: bool,
    /// MQTT client id; must not be empty (the session is persistent).
    pub client_id: String,
    /// CA certificates (PEM) the broker's certificate must chain to; the system store when `None`.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), for mutual TLS, with `key_file`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    /// A file holding the password (one line; a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// MQTT keep-alive; 0 disables, otherwise at least one second.
    pub keep_alive: Duration,
    /// Messages sent and not yet acknowledged, at most.
    pub max_inflight: u16,
    /// The gateway's base topic (`sensorgate`).
    pub base_topic: String,
    pub forwards: Vec<ForwardRule>,
    pub spool: SpoolSettings,
    /// The spool lives in `{state_dir}/spool/`.
    pub state_dir: PathBuf,
    /// MQTT 3.1.1 (the default) or 5.
    pub protocol: Protocol,
}

/// Why the uplink could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// A setting is wrong; the message names the key.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    #[error(
        "upstream password_file {path}: {source} (check the path and that sensorgate may read it)"
    )]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("uplink: a spool job failed: {0}")]
    Job(String),
}

/// Most messages in flight to the cloud broker (`[upstream] max_inflight`): the window's packet-id cycle
/// (capacity + 2) must stay below rumqttc's u16 ids. The configuration refuses more, naming the key.
pub const MAX_INFLIGHT_LIMIT: u16 = 60_000;
/// How long a clean stop waits for outstanding acknowledgements (and the `offline` message).
pub const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often the ack cursor is persisted when every append is already fsync'ed.
const ALWAYS_COMMIT_PERIOD: Duration = Duration::from_secs(1);
/// Most messages held in memory, not yet on disk (at the cap they are written at once; the input is not
/// read while a job runs and memory is full).
pub const MAX_BATCH: usize = 4096;
/// Most bytes of topics and payloads held in memory: with large payloads this binds before
/// [`MAX_BATCH`] does.
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// While the file system is full, how long after a failed write the next one is tried.
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(5);
/// How many connections in a row (each after a CONNACK) may end with the same message in flight before
/// it is taken for refused and set aside.
pub const REFUSAL_STRIKES: u32 = 3;

/// The uplink, opened and ready to run.
pub struct Uplink {
    spool: Spool,
    forwarder: Forwarder,
    connect: ConnectOptions,
    reconnect: Reconnect,
    commit_period: Duration,
    /// How long a message may stay in memory only (`None`: `sync = "always"`).
    hold: Option<Duration>,
    max_inflight: usize,
    stats: UplinkStatsHandle,
}

/// How long a message may wait in memory for its acknowledgement under `sync = every`: the rest of the
/// period is left for the write and the fsync.
pub fn hold_for(sync: Duration) -> Duration {
    sync.saturating_sub((sync / 4).min(Duration::from_millis(250)))
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("peer", &self.connect.endpoint.peer())
            .finish_non_exhaustive()
    }
}

impl Uplink {
    /// Checks the settings, loads the TLS files and the password, and opens (and repairs) the spool.
    /// Errors name the setting or file at fault and what to do.
    pub fn open(settings: UplinkSettings) -> Result<Uplink, UplinkError> {
        if settings.client_id.is_empty() {
            return Err(UplinkError::Config(
                "upstream.client_id: must not be empty (the session is persistent)".into(),
            ));
        }
        if settings.max_inflight == 0 || settings.max_inflight > MAX_INFLIGHT_LIMIT {
            return Err(UplinkError::Config(format!(
                "upstream.max_inflight: must be between 1 and {MAX_INFLIGHT_LIMIT}"
            )));
        }
        let endpoint = settings.url.clone();
        if !endpoint.tls && !settings.allow_plaintext {
            return Err(UplinkError::Config(format!(
                "upstream.url \"{endpoint}\": mqtt:// sends readings and passwords in clear; use mqtts://, or set allow_plaintext = true"
            )));
        }
        let tls = if endpoint.tls {
            Some(tls::client_config(
                settings.ca_file.as_deref(),
                settings.cert_file.as_deref(),
                settings.key_file.as_deref(),
            )?)
        } else {
            None
        };
        let credentials = credentials(&settings)?;
        let forwarder = Forwarder::new(settings.forwards.clone(), &settings.base_topic)?;
        let window = Window::new(settings.max_inflight as usize);
        let connect = ConnectOptions {
            endpoint,
            tls,
            client_id: settings.client_id.clone(),
            credentials,
            keep_alive: settings.keep_alive,
            client_inflight: window.client_inflight(),
            availability_topic: format!(
                "{}{}",
                forwarder.first_prefix(),
                crate::topic::gateway::gateway_availability_topic(&settings.base_topic)
            ),
            protocol: settings.protocol,
        };
        let spool = Spool::open(&settings.state_dir.join("spool"), settings.spool.clone())?;
        let stats = UplinkStatsHandle::default();
        stats.lock().spool = spool.stats().clone();
        let commit_period = match settings.spool.sync {
            SyncPolicy::Always => ALWAYS_COMMIT_PERIOD,
            SyncPolicy::Every(period) => period.max(Duration::from_millis(10)),
        };
        Ok(Uplink {
            spool,
            forwarder,
            connect,
            reconnect: Reconnect {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                stable_after: Duration::from_secs(30),
            },
            commit_period,
            hold: match settings.spool.sync {
                SyncPolicy::Always => None,
                SyncPolicy::Every(period) => Some(hold_for(period)),
            },
            max_inflight: settings.max_inflight as usize,
            stats,
        })
    }

    /// [`open`](Self::open) on a blocking thread (`spawn_blocking`): reading the TLS files and the
    /// password and opening the spool block, so async callers (the gateway's start, while the broker
    /// already serves) use this one.
    pub async fn open_async(settings: UplinkSettings) -> Result<Uplink, UplinkError> {
        tokio::task::spawn_blocking(move || Uplink::open(settings))
            .await
            .map_err(|e| UplinkError::Job(format!("opening the uplink: {e}")))?
    }

    /// End-to-end encryption per forward rule: `(rule index, sealer)` (`crate::crypto::envelope`).
    pub fn with_payload_encryption(
        mut self,
        sealers: Vec<(usize, crate::crypto::Sealer)>,
    ) -> Uplink {
        for (index, sealer) in sealers {
            self.forwarder.encrypt_rule(index, sealer);
        }
        self
    }

    /// Replaces the reconnect schedule (default: 1 s doubling to 60 s, reset after 30 s up).
    pub fn with_reconnect_delays(mut self, initial: Duration, max: Duration) -> Uplink {
        self.reconnect.initial = initial;
        self.reconnect.max = max;
        self
    }

    /// A cheap handle the app uses to read counters for `{base}/gateway/stats`.
    pub fn stats(&self) -> UplinkStatsHandle {
        self.stats.clone()
    }

    /// The remote topic of the gateway's availability (the MQTT will).
    pub fn availability_topic(&self) -> &str {
        &self.connect.availability_topic
    }

    /// Runs until `shutdown` or until `input` closes: forwards, holds or spools, sends in order, forgets
    /// after acknowledgement. On the way out it writes and fsyncs everything unacknowledged (what is left
    /// in `input` too), publishes `offline` if connected, waits briefly for outstanding
    /// acknowledgements, persists the ack cursor, and disconnects. A spool IO error ends it with that error (after logging it).
    pub async fn run(
        self,
        mut input: mpsc::Receiver<Message>,
        shutdown: CancellationToken,
    ) -> Result<(), UplinkError> {
        let (link_tx, link_rx) = mpsc::channel(1024);
        let link_stop = CancellationToken::new();
        // Dropping this future (a crash, or an abort in a test) takes the connection down with it.
        let _stop_link_on_drop = link_stop.clone().drop_guard();
        let driver = tokio::spawn(client::drive(
            self.connect.clone(),
            self.reconnect,
            link_tx,
            link_stop.clone(),
            self.stats.clone(),
        ));
        let mut pump = Pump::new(
            self.spool,
            self.hold,
            Window::new(self.max_inflight),
            link_rx,
            self.connect.availability_topic.clone(),
            self.stats.clone(),
        );
        let result = pump
            .run(&mut input, &shutdown, &self.forwarder, self.commit_period)
            .await;
        let result = match result {
            Ok(()) => pump.finish(&mut input, &self.forwarder).await,
            Err(error) => Err(error),
        };
        if let Some(client) = pump.link.take() {
            let _ = client.try_disconnect();
            // Give the DISCONNECT a moment to leave; the will must not fire on a clean stop.
            let _ = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(event) = pump.link_rx.recv().await {
                    if matches!(event, LinkEvent::Down(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        link_stop.cancel();
        // The task may be waiting to hand over an event: closing its channel ends that too.
        drop(pump);
        let _ = driver.await;
        self.stats.lock().state = LinkState::Stopped;
        if let Err(error) = &result {
            log::error!("uplink stopped: {error}");
        }
        result
    }
}

/// What one blocking spool job did.
struct JobOutcome {
    read: Vec<Record>,
    stats: SpoolStats,
    /// The file system was full: its description (for the one WARN), and the messages of the batch
    /// that were not written, in order, the first `held_unwritten` of them in the window.
    full: Option<String>,
    unwritten: Vec<Numbered>,
    held_unwritten: usize,
    /// Something was written (appended or committed) without the file system being full.
    wrote: bool,
}

/// What the running job may change about the order of what is unread on disk.
#[derive(Debug, Clone, Copy, Default)]
struct JobShape {
    /// It reads records for the window.
    reads: bool,
    /// It writes records the window does not hold yet (they become unread on disk).
    writes_unread: bool,
    /// Sequence number of the first message it writes (not durable before the job ends).
    flushing_from: Option<u64>,
}

/// A forwarded message held in memory only: not acknowledged yet, not on disk yet.
#[derive(Debug)]
struct Fresh {
    seq: u64,
    arrived: Instant,
    arrived_ms: u64,
    message: Outbound,
}

/// The running uplink's state, between the input, the spool jobs and the connection task.
struct Pump {
    spool: Arc<Mutex<Spool>>,
    spool_stats: SpoolStats,
    job: Option<JoinHandle<Result<JobOutcome, SpoolError>>>,
    job_shape: JobShape,
    /// Messages in memory only, in sequence order: at most [`MAX_BATCH`] messages and
    /// [`MAX_BATCH_BYTES`] of topics and payloads. The first `fresh_taken` are in the window.
    fresh: VecDeque<Fresh>,
    fresh_taken: usize,
    /// Bytes of topics and payloads in `fresh`.
    fresh_bytes: usize,
    /// How long a message may stay in memory only before it is written and fsync'ed; `None` for
    /// `sync = "always"`: written and fsync'ed before it is sent.
    hold: Option<Duration>,
    /// Write and fsync everything in `fresh` now (a clean stop).
    flush_all: bool,
    /// Sequence number the next forwarded message gets.
    next_seq: u64,
    /// Every message up to this sequence number was acknowledged.
    acked_through: u64,
    /// Acknowledged messages that never touched the disk.
    acked_in_memory: u64,
    /// The acknowledgement the spool has not been told yet.
    ack_for_spool: Option<u64>,
    commit_due: bool,
    window: Window,
    link: Option<Client>,
    link_rx: mpsc::Receiver<LinkEvent>,
    availability_topic: String,
    stats: UplinkStatsHandle,
    reconnect_requested: bool,
    /// The state file system's full-disk episode (one WARN, one INFO).
    full: FullEpisode,
    /// While the file system is full: when memory is written out next.
    retry_write_at: Option<Instant>,
    /// Rate-limits the log lines of messages dropped on a full disk and of refused ones.
    drop_log: RateLimiter,
    /// The message in flight when connections ended, and how many times in a row.
    suspect: Option<Suspect>,
    /// Messages taken for refused, for the next job to keep beside the spool.
    refused: Vec<Record>,
}

/// A message in flight at the end of `strikes` connections in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Suspect {
    seq: u64,
    strikes: u32,
}

impl Pump {
    fn new(
        spool: Spool,
        hold: Option<Duration>,
        window: Window,
        link_rx: mpsc::Receiver<LinkEvent>,
        availability_topic: String,
        stats: UplinkStatsHandle,
    ) -> Pump {
        let spool_stats = spool.stats().clone();
        Pump {
            next_seq: spool_stats.next_seq,
            acked_through: spool_stats.acked_seq,
            spool_stats,
            spool: Arc::new(Mutex::new(spool)),
            job: None,
            job_shape: JobShape::default(),
            fresh: VecDeque::new(),
            fresh_taken: 0,
            fresh_bytes: 0,
            hold,
            flush_all: false,
            acked_in_memory: 0,
            ack_for_spool: None,
            commit_due: false,
            window,
            link: None,
            link_rx,
            availability_topic,
            stats,
            reconnect_requested: false,
            full: FullEpisode::new("uplink"),
            retry_write_at: None,
            drop_log: RateLimiter::new(Duration::from_secs(60)),
            suspect: None,
            refused: Vec::new(),
        }
    }

    async fn run(
        &mut self,
        input: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
        forwarder: &Forwarder,
        commit_period: Duration,
    ) -> Result<(), UplinkError> {
        let mut ticker = tokio::time::interval_at(Instant::now() + commit_period, commit_period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.take_fresh();
            self.submit();
            self.start_job(true);
            self.publish_stats();
            // The oldest message in memory must be on disk by then (or, on a full disk, is tried again
            // then); a running job is waited for first.
            let flush_at = match (&self.job, self.fresh.front(), self.hold) {
                (None, Some(_), _) if self.retry_write_at.is_some() => self.retry_write_at,
                (None, Some(oldest), Some(hold)) => Some(oldest.arrived + hold),
                _ => None,
            };
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                outcome = join(&mut self.job), if self.job.is_some() => self.job_done(outcome)?,
                _ = ticker.tick() => {
                    // Only a spool that holds files has a cursor to persist or an age budget to apply.
                    if self.spool_stats.segments > 0 {
                        self.commit_due = true;
                    }
                }
                _ = sleep_until_some(flush_at), if flush_at.is_some() => {}
                event = self.link_rx.recv() => match event {
                    Some(event) => self.on_link_event(event),
                    None => return Err(UplinkError::Job("the connection task ended".into())),
                },
                // A full batch waits for the running job: the burst stays in the input channel. On a
                // full disk there is nothing to wait for: the oldest in memory make room.
                message = input.recv(), if !self.batch_full() || self.full.is_full() => match message {
                    Some(message) => {
                        self.take_input(&message, forwarder);
                        while !self.batch_full() {
                            match input.try_recv() {
                                Ok(message) => self.take_input(&message, forwarder),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return Ok(()),
                },
            }
        }
    }

    /// The way out: takes what is left in the input, writes and fsyncs everything not acknowledged,
    /// says `offline`, waits briefly for acknowledgements, and commits.
    async fn finish(
        &mut self,
        input: &mut mpsc::Receiver<Message>,
        forwarder: &Forwarder,
    ) -> Result<(), UplinkError> {
        self.flush_all = true;
        // What is left in the input goes to the spool in capped batches.
        loop {
            while !self.batch_full() {
                match input.try_recv() {
                    Ok(message) => self.take_input(&message, forwarder),
                    Err(_) => break,
                }
            }
            self.wait_job().await?;
            self.start_job(false);
            if !self.batch_full() {
                break;
            }
        }
        self.wait_job().await?;
        self.start_job(false);
        self.wait_job().await?;
        if let Some(client) = &self.link {
            if self.window.submit_control(1) {
                let _ = client.try_publish(self.availability_topic.as_str(), 1, true, OFFLINE);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while self.link.is_some() && self.window.outstanding() > 0 {
            self.start_job(false);
            tokio::select! {
                outcome = join(&mut self.job), if self.job.is_some() => self.job_done(outcome)?,
                event = self.link_rx.recv() => match event {
                    Some(LinkEvent::Connected { .. }) | None => break,
                    Some(event) => self.on_link_event(event),
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.wait_job().await?;
        self.commit_due = true;
        self.start_job(false);
        self.wait_job().await?;
        self.publish_stats();
        Ok(())
    }

    async fn wait_job(&mut self) -> Result<(), UplinkError> {
        if let Some(job) = self.job.take() {
            let outcome = job.await;
            self.job_done(outcome)?;
        }
        Ok(())
    }

    fn take_input(&mut self, message: &Message, forwarder: &Forwarder) {
        match forwarder.route(message) {
            Some(outbound) => {
                self.make_room();
                if self.batch_full() {
                    // Full disk, and all memory holds is in flight: the new message is the one dropped.
                    self.count_disk_full_drops(1, &outbound.topic);
                    return;
                }
                self.fresh_bytes += outbound.topic.len() + outbound.payload.len();
                self.fresh.push_back(Fresh {
                    seq: self.next_seq,
                    arrived: Instant::now(),
                    arrived_ms: spool::now_ms(),
                    message: outbound,
                });
                self.next_seq += 1;
            }
            None => self.stats.lock().not_forwarded += 1,
        }
    }

    /// On a full disk, drops the oldest messages memory holds that the window has not taken, until
    /// memory is below its cap: the newest are the ones kept.
    fn make_room(&mut self) {
        let mut dropped = 0;
        let mut topic = String::new();
        while self.full.is_full() && self.batch_full() {
            let Some(oldest) = self.fresh.remove(self.fresh_taken) else {
                break;
            };
            self.fresh_bytes -= oldest.message.topic.len() + oldest.message.payload.len();
            dropped += 1;
            topic = oldest.message.topic;
        }
        if dropped > 0 {
            self.count_disk_full_drops(dropped, &topic);
        }
    }

    /// Counts messages dropped because neither the disk nor memory had room, and logs it (at most once a
    /// minute).
    fn count_disk_full_drops(&mut self, count: u64, topic: &str) {
        self.stats.lock().dropped_disk_full += count;
        if let Some(suppressed) = self.drop_log.admit("disk full") {
            log::error!(
                "uplink: dropped {count} messages, the oldest not yet sent (last on {topic}): neither the \
                 full file system nor memory ({MAX_BATCH} messages) has room{}",
                suppressed_suffix(suppressed)
            );
        }
    }

    /// Whether memory holds as much as it may ([`MAX_BATCH`], [`MAX_BATCH_BYTES`]).
    fn batch_full(&self) -> bool {
        self.fresh.len() >= MAX_BATCH || self.fresh_bytes >= MAX_BATCH_BYTES
    }

    /// Moves messages from memory into the window, when nothing older waits on disk: the window sends
    /// in sequence order, whichever side a message comes from.
    fn take_fresh(&mut self) {
        if self.hold.is_none()
            || self.link.is_none()
            || self.spool_stats.unread > 0
            || self.job_shape.reads
            || self.job_shape.writes_unread
        {
            return;
        }
        while self.window.room() > 0 {
            let Some(fresh) = self.fresh.get(self.fresh_taken) else {
                break;
            };
            self.window.push(vec![Record {
                seq: fresh.seq,
                appended_ms: fresh.arrived_ms,
                topic: fresh.message.topic.clone(),
                payload: fresh.message.payload.clone(),
                qos: fresh.message.qos,
                retain: fresh.message.retain,
            }]);
            self.fresh_taken += 1;
        }
    }

    /// Hands the client whatever the window allows.
    fn submit(&mut self) {
        let Some(client) = &self.link else { return };
        while let Some(record) = self.window.next_to_submit() {
            if client
                .try_publish(record.topic, record.qos, record.retain, record.payload)
                .is_err()
            {
                // The connection is going down; the window hands it out again on the next one.
                break;
            }
        }
    }

    /// Whether what memory holds must go to disk now: the oldest message reached its hold, memory is
    /// full, `sync = "always"`, or a clean stop.
    fn flush_due(&self) -> bool {
        let Some(oldest) = self.fresh.front() else {
            return false;
        };
        if let Some(retry_at) = self.retry_write_at {
            // The file system was full: not before the retry (a clean stop tries once more).
            return self.flush_all || retry_at <= Instant::now();
        }
        match self.hold {
            None => true,
            Some(hold) => {
                self.flush_all || self.batch_full() || oldest.arrived + hold <= Instant::now()
            }
        }
    }

    /// Starts a spool job when none runs and there is something to do: write (and fsync) what memory
    /// holds, acknowledge, commit, or (when connected and `read` is allowed) read more for the window.
    /// With the cloud keeping up there is none: nothing is on disk and nothing needs to be.
    fn start_job(&mut self, read: bool) {
        if self.job.is_some() {
            return;
        }
        let flush = self.flush_due();
        let want = if read && self.link.is_some() && self.spool_stats.unread > 0 {
            self.window.room()
        } else {
            0
        };
        let on_disk = self.spool_stats.messages > 0 || self.spool_stats.segments > 0;
        let ack = if on_disk { self.ack_for_spool } else { None };
        let commit = self.commit_due && on_disk;
        self.commit_due = false;
        if !flush && ack.is_none() && !commit && want == 0 && self.refused.is_empty() {
            return;
        }
        let refused = std::mem::take(&mut self.refused);
        self.ack_for_spool = None;
        let (batch, held) = if flush {
            self.drain_fresh()
        } else {
            (Vec::new(), 0)
        };
        self.job_shape = JobShape {
            reads: want > 0,
            writes_unread: batch.len() > held,
            flushing_from: batch.first().map(|n| n.seq),
        };
        let job = SpoolJob {
            batch,
            held,
            refused,
            ack,
            commit,
            want,
        };
        let spool = self.spool.clone();
        self.job = Some(tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|e| e.into_inner());
            job.run(&mut spool)
        }));
    }

    /// Everything memory holds, for the spool, and how many of those (a prefix) the window holds.
    fn drain_fresh(&mut self) -> (Vec<Numbered>, usize) {
        let held = std::mem::take(&mut self.fresh_taken);
        self.fresh_bytes = 0;
        let batch = self
            .fresh
            .drain(..)
            .map(|f| Numbered {
                seq: f.seq,
                appended_ms: f.arrived_ms,
                message: f.message,
            })
            .collect();
        (batch, held)
    }

    fn job_done(
        &mut self,
        outcome: Result<Result<JobOutcome, SpoolError>, tokio::task::JoinError>,
    ) -> Result<(), UplinkError> {
        self.job = None;
        self.job_shape = JobShape::default();
        let outcome = outcome.map_err(|e| UplinkError::Job(e.to_string()))??;
        if let Some(filesystem) = &outcome.full {
            self.retry_write_at = Some(Instant::now() + DISK_FULL_RETRY);
            self.full.hit(
                filesystem,
                &format!(
                    "what is already spooled is kept; new messages wait in memory (at most {MAX_BATCH} \
                     messages or {} MiB, the oldest dropped beyond that and counted as dropped_disk_full), \
                     and writing is tried again every {} s; everything local keeps running",
                    MAX_BATCH_BYTES >> 20,
                    DISK_FULL_RETRY.as_secs()
                ),
            );
        } else if outcome.wrote {
            self.retry_write_at = None;
            self.full.cleared();
        }
        self.keep_unwritten(outcome.unwritten, outcome.held_unwritten);
        // A record the window already holds (written while held, behind unread ones) is not taken twice.
        let newest = self.window.newest_seq();
        let read: Vec<Record> = outcome
            .read
            .into_iter()
            .filter(|r| newest.is_none_or(|n| r.seq > n))
            .collect();
        self.window.push(read);
        self.spool_stats = outcome.stats;
        Ok(())
    }

    /// Puts what a full disk did not take back in front of memory (the first `held` of them are in the
    /// window), except those acknowledged meanwhile; drops the oldest beyond memory's cap. On a clean stop
    /// there is nowhere left to keep them: they are dropped and counted.
    fn keep_unwritten(&mut self, unwritten: Vec<Numbered>, held: usize) {
        let Some(first) = unwritten.first() else {
            return;
        };
        if self.flush_all {
            let topic = first.message.topic.clone();
            self.count_disk_full_drops(unwritten.len() as u64, &topic);
            return;
        }
        let mut in_window = 0;
        let now = Instant::now();
        for (index, numbered) in unwritten.into_iter().enumerate().rev() {
            if numbered.seq <= self.acked_through {
                self.acked_in_memory += 1;
                continue;
            }
            in_window += usize::from(index < held);
            self.fresh_bytes += numbered.message.topic.len() + numbered.message.payload.len();
            self.fresh.push_front(Fresh {
                seq: numbered.seq,
                arrived: now,
                arrived_ms: numbered.appended_ms,
                message: numbered.message,
            });
        }
        self.fresh_taken += in_window;
        self.make_room();
    }

    fn on_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Connected {
                client,
                receive_maximum,
            } => {
                self.window
                    .on_connected(self.spool_stats.next_seq.saturating_sub(1));
                if let Some(receive_maximum) = receive_maximum {
                    self.window.limit_cycle(receive_maximum);
                }
                if self.window.submit_control(1) {
                    let _ = client.try_publish(self.availability_topic.as_str(), 1, true, ONLINE);
                }
                self.link = Some(client);
                self.reconnect_requested = false;
            }
            LinkEvent::Sent(pkid) => match self.window.on_sent(pkid) {
                Ok(through) => self.note_ack(through),
                Err(error) => self.drop_connection(&error.to_string()),
            },
            LinkEvent::Acked(pkid) => {
                let through = self.window.on_acked(pkid);
                self.note_ack(through);
            }
            LinkEvent::Refused { pkid, reason } => {
                if let Some((record, through)) = self.window.on_refused(pkid) {
                    self.set_aside(record, &format!("the cloud broker refused it ({reason})"));
                    self.note_ack(through);
                }
            }
            LinkEvent::Down(reason) => {
                // Only a connection the broker had accepted can have ended over a publish; a connect
                // that failed (an outage) says nothing about any message.
                let was_up = self.link.take().is_some();
                self.window.on_disconnected();
                if let Some(seq) = self.window.oldest_on_wire().filter(|_| was_up) {
                    self.strike(seq, &reason);
                }
            }
        }
    }

    /// A connection the broker had accepted ended with message `seq` the oldest in flight. From the
    /// first time, messages go one at a time, so that the next disconnect names the one in flight; the
    /// [`REFUSAL_STRIKES`]th time in a row it is taken for refused: set aside (kept beside the spool
    /// by the next job), counted, logged once with its topic, and the rest flows.
    fn strike(&mut self, seq: u64, reason: &str) {
        let strikes = match self.suspect {
            Some(suspect) if suspect.seq == seq => suspect.strikes + 1,
            _ => 1,
        };
        self.suspect = Some(Suspect { seq, strikes });
        self.window.set_single_file(true);
        if strikes < REFUSAL_STRIKES {
            return;
        }
        let Some((record, through)) = self.window.set_aside_oldest() else {
            return;
        };
        self.set_aside(
            record,
            &format!(
                "the cloud broker closed the connection {strikes} times in a row, each time after \
                 accepting it, while it was in flight (last: {reason}); taken for refused (a topic \
                 outside the device's policy?)"
            ),
        );
        self.note_ack(Some(through));
    }

    /// Logs (at most once a minute per topic, with a count of those held back), counts and keeps a
    /// refused message for the next job; the caller acknowledges it.
    fn set_aside(&mut self, record: Record, why: &str) {
        if let Some(suppressed) = self.drop_log.admit(&format!("refused {}", record.topic)) {
            log::error!(
                "uplink: the message on {} ({} bytes, QoS {}) is set aside in {}: {why}; the messages \
                 behind it flow{}",
                record.topic,
                record.payload.len(),
                record.qos,
                refused::REFUSED_FILE,
                suppressed_suffix(suppressed)
            );
        }
        self.stats.lock().refused += 1;
        self.refused.push(record);
    }

    fn note_ack(&mut self, through: Option<u64>) {
        let Some(seq) = through else { return };
        if self.suspect.is_some_and(|suspect| suspect.seq <= seq) {
            // Acknowledged (or set aside): nothing is suspected any more.
            self.suspect = None;
            self.window.set_single_file(false);
        }
        self.acked_through = self.acked_through.max(seq);
        // Acknowledged before they had to be written: they never touch the disk.
        while self.fresh.front().is_some_and(|f| f.seq <= seq) {
            if let Some(fresh) = self.fresh.pop_front() {
                self.fresh_bytes -= fresh.message.topic.len() + fresh.message.payload.len();
                self.fresh_taken = self.fresh_taken.saturating_sub(1);
                self.acked_in_memory += 1;
            }
        }
        self.ack_for_spool = Some(self.ack_for_spool.map_or(seq, |s| s.max(seq)));
    }

    /// The client's events no longer fit the window (should not happen): start the connection over.
    fn drop_connection(&mut self, why: &str) {
        if self.reconnect_requested {
            return;
        }
        log::error!("uplink: {why}; reconnecting");
        if let Some(client) = &self.link {
            let _ = client.try_disconnect();
        }
        self.reconnect_requested = true;
    }

    /// Every message up to this sequence number is acknowledged or fsync'ed.
    fn durable_through(&self) -> u64 {
        let pending = [
            self.fresh.front().map(|f| f.seq),
            self.job_shape.flushing_from,
        ];
        pending
            .into_iter()
            .flatten()
            .min()
            .map_or(self.next_seq - 1, |seq| seq - 1)
    }

    fn publish_stats(&self) {
        let mut c = self.stats.lock();
        c.spool = self.spool_stats.clone();
        // In the uplink's numbering, which counts messages that never touched the disk too.
        c.spooled = self.spool_stats.appended;
        c.spool.appended = self.spool_stats.appended + self.acked_in_memory;
        c.spool.synced_seq = self.durable_through();
        c.spool.acked_seq = self.acked_through;
        c.spool.next_seq = self.next_seq;
        c.memory_messages = self.fresh.len() as u64;
        c.disk_full = self.full.is_full();
        c.memory_oldest_ms = self.fresh.front().map(|f| f.arrived_ms);
        c.window = self.window.counters();
        c.in_flight = self.window.outstanding() as u64;
        c.window_oldest_ms = self.window.oldest_ms();
    }
}

/// The spool's work of one blocking job, in order: the messages memory held written (one write, one
/// fsync), the refused messages set aside, the acknowledgement cursor moved, a commit, and a read.
struct SpoolJob {
    batch: Vec<Numbered>,
    /// How many of `batch` (a prefix) the window holds already.
    held: usize,
    refused: Vec<Record>,
    ack: Option<u64>,
    commit: bool,
    /// How many records to read (0: none).
    want: usize,
}

impl SpoolJob {
    fn run(self, spool: &mut Spool) -> Result<JobOutcome, SpoolError> {
        let now = spool::now_ms();
        let mut full = None;
        let mut unwritten = Vec::new();
        let mut held_unwritten = 0;
        let wrote = !self.batch.is_empty() || self.commit;
        if !self.batch.is_empty() {
            // Group commit: everything memory held, in one write and one fsync.
            let written = spool.append_numbered(&self.batch, self.held, now);
            if let Err(error) = written.and_then(|()| spool.sync()) {
                // A full disk leaves the spool as it was: what it did not take goes back to memory.
                full = Some(disk_full_or(error)?);
                let through = spool.last_appended();
                for (index, numbered) in self.batch.into_iter().enumerate() {
                    if numbered.seq > through && spool::fits(&numbered.message) {
                        held_unwritten += usize::from(index < self.held);
                        unwritten.push(numbered);
                    }
                }
            }
        }
        for record in &self.refused {
            // Kept before the spool forgets it; a failure loses only this copy (it is counted).
            if let Err(error) = spool.set_aside(record) {
                log::error!(
                    "uplink: the refused message on {} not kept: {error}",
                    record.topic
                );
            }
        }
        if let Some(seq) = self.ack {
            spool.ack_through(seq)?;
        }
        if self.commit {
            if let Err(error) = spool.commit(now) {
                // The cursor stays due; the next commit writes it.
                full = full.or(Some(disk_full_or(error)?));
            }
        }
        let read = if self.want > 0 {
            spool.read(self.want, now)?
        } else {
            Vec::new()
        };
        Ok(JobOutcome {
            read,
            stats: spool.stats().clone(),
            full: full.map(|_| crate::full_disk::describe(spool.dir())),
            unwritten,
            held_unwritten,
            wrote,
        })
    }
}

/// The user name and password the uplink logs in with (the password read from its file, without the
/// line end), or none.
fn credentials(settings: &UplinkSettings) -> Result<Option<(String, String)>, UplinkError> {
    let password = match &settings.password_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|source| UplinkError::PasswordFile {
                    path: path.clone(),
                    source,
                })?,
        ),
        None => None,
    };
    match (&settings.username, password) {
        (Some(user), password) => Ok(Some((user.clone(), password.unwrap_or_default()))),
        (None, Some(_)) => Err(UplinkError::Config(
            "upstream.password_file is set but upstream.username is not".into(),
        )),
        (None, None) => Ok(None),
    }
}

/// A full disk, which the uplink rides out; any other spool error is returned.
fn disk_full_or(error: SpoolError) -> Result<SpoolError, SpoolError> {
    if error.is_disk_full() {
        Ok(error)
    } else {
        Err(error)
    }
}

/// Sleeps until `at` (the branch is disabled when there is none).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Awaits the running job (the branch is disabled when there is none).
async fn join<T>(job: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match job.as_mut() {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump(dir: &std::path::Path) -> (Pump, mpsc::Sender<LinkEvent>) {
        let settings = SpoolSettings {
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(3600),
            sync: SyncPolicy::Every(Duration::from_secs(1)),
            segment_bytes: 1 << 18,
        };
        let spool = Spool::open(dir, settings).unwrap();
        let (link_tx, link_rx) = mpsc::channel(1);
        let pump = Pump::new(
            spool,
            Some(Duration::from_millis(750)),
            Window::new(10),
            link_rx,
            "sensorgate/gateway/availability".into(),
            UplinkStatsHandle::default(),
        );
        (pump, link_tx)
    }

    fn forwarder() -> Forwarder {
        let rules = vec![ForwardRule {
            filter: "sensorgate/#".into(),
            prefix: String::new(),
            qos: 1,
        }];
        Forwarder::new(rules, "sensorgate").unwrap()
    }

    /// While a spool job runs (here: one that never ends), a burst fills memory to its cap and the
    /// rest stays in the input channel. Paused time: the timeout fires only once the pump is idle.
    async fn burst_against_a_stuck_job(count: usize, payload: usize) -> (Pump, usize) {
        let dir = tempfile::tempdir().unwrap();
        let (mut pump, _link_tx) = pump(dir.path());
        pump.job = Some(tokio::spawn(std::future::pending()));
        let (tx, mut input) = mpsc::channel(count.max(1));
        for i in 0..count {
            tx.try_send(Message {
                topic: format!("sensorgate/dev{}", i % 10),
                payload: vec![b'x'; payload],
                qos: 0,
                retain: false,
            })
            .unwrap();
        }
        let shutdown = CancellationToken::new();
        let forwarder = forwarder();
        let run = pump.run(&mut input, &shutdown, &forwarder, Duration::from_secs(1));
        assert!(tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .is_err());
        let left = input.len();
        (pump, left)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_fills_one_batch_up_to_its_count_cap_and_waits_in_the_input() {
        let (pump, left) = burst_against_a_stuck_job(3 * MAX_BATCH, 10).await;
        assert_eq!(pump.fresh.len(), MAX_BATCH);
        assert_eq!(left, 2 * MAX_BATCH);
    }

    #[tokio::test(start_paused = true)]
    async fn large_payloads_are_capped_by_bytes() {
        let (pump, left) = burst_against_a_stuck_job(100, 256 * 1024).await;
        let taken = MAX_BATCH_BYTES.div_ceil(256 * 1024 + "sensorgate/devN".len());
        assert_eq!(pump.fresh.len(), taken);
        assert_eq!(left, 100 - taken);
        assert!(pump.fresh_bytes < MAX_BATCH_BYTES + 256 * 1024 + 64);
    }

    fn message(i: u64) -> Message {
        Message {
            topic: "sensorgate/meter".into(),
            payload: i.to_string().into_bytes(),
            qos: 1,
            retain: false,
        }
    }

    /// On a full disk, memory keeps the newest [`MAX_BATCH`] messages: each new one pushes out the
    /// oldest, which is counted.
    #[tokio::test(start_paused = true)]
    async fn on_a_full_disk_memory_keeps_the_newest_and_counts_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pump, _link_tx) = pump(dir.path());
        let forwarder = forwarder();
        pump.full.hit("test fs", "test");
        for i in 1..=MAX_BATCH as u64 + 10 {
            pump.take_input(&message(i), &forwarder);
        }
        assert_eq!(pump.fresh.len(), MAX_BATCH);
        assert_eq!(pump.fresh.front().map(|f| f.seq), Some(11));
        assert_eq!(pump.stats.lock().dropped_disk_full, 10);
        assert_eq!(pump.stats.snapshot()["dropped"], 10);
    }

    /// What the full disk did not take goes back in front of memory in order, without what was
    /// acknowledged meanwhile; the next write waits for the retry, not for the hold.
    #[tokio::test(start_paused = true)]
    async fn unwritten_messages_return_in_order_and_wait_for_the_retry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pump, _link_tx) = pump(dir.path());
        let forwarder = forwarder();
        for i in 1..=5 {
            pump.take_input(&message(i), &forwarder);
        }
        let (batch, held) = pump.drain_fresh();
        pump.take_input(&message(6), &forwarder);
        pump.acked_through = 1;
        pump.full.hit("test fs", "test");
        pump.retry_write_at = Some(Instant::now() + DISK_FULL_RETRY);
        pump.keep_unwritten(batch, held);
        let seqs: Vec<u64> = pump.fresh.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
        assert_eq!(pump.durable_through(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!pump.flush_due(), "the hold ended, the retry has not come");
        tokio::time::advance(DISK_FULL_RETRY).await;
        assert!(pump.flush_due());
    }

    /// A clean stop on a full disk has nowhere to keep what it could not write: dropped and counted.
    #[tokio::test(start_paused = true)]
    async fn a_clean_stop_on_a_full_disk_counts_what_it_could_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pump, _link_tx) = pump(dir.path());
        let forwarder = forwarder();
        for i in 1..=3 {
            pump.take_input(&message(i), &forwarder);
        }
        pump.flush_all = true;
        let (batch, held) = pump.drain_fresh();
        pump.keep_unwritten(batch, held);
        assert!(pump.fresh.is_empty());
        assert_eq!(pump.stats.lock().dropped_disk_full, 3);
    }

    /// Plays the connection task's events for one accepted connection: CONNACK, the availability
    /// message written and acknowledged, then whatever the window hands out written (ids from 10 on),
    /// and those in `acked` acknowledged; then the connection ends (`reason`).
    fn accepted_connection(pump: &mut Pump, client: &Client, acked: &[u64]) -> Vec<u64> {
        pump.on_link_event(LinkEvent::Connected {
            client: client.clone(),
            receive_maximum: None,
        });
        pump.on_link_event(LinkEvent::Sent(1));
        pump.on_link_event(LinkEvent::Acked(1));
        pump.take_fresh();
        let mut written = Vec::new();
        while let Some(record) = pump.window.next_to_submit() {
            let pkid = 10 + record.seq as u16;
            pump.on_link_event(LinkEvent::Sent(pkid));
            written.push(record.seq);
        }
        for seq in acked {
            pump.on_link_event(LinkEvent::Acked(10 + *seq as u16));
        }
        pump.on_link_event(LinkEvent::Down("connection reset by peer".into()));
        written
    }

    /// A message in flight when [`REFUSAL_STRIKES`] accepted connections in a row end is set aside and
    /// counted, and the one behind it is sent; from the first such end on, one message at a time.
    /// Failed connects (no CONNACK) in between count for nothing.
    #[tokio::test(start_paused = true)]
    async fn a_message_in_flight_at_three_accepted_connections_in_a_row_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pump, _link_tx) = pump(dir.path());
        let (client, _eventloop) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 64);
        let client = Client::V311(client);
        let forwarder = forwarder();
        for i in 1..=3 {
            pump.take_input(&message(i), &forwarder);
        }
        assert_eq!(accepted_connection(&mut pump, &client, &[2]), vec![1, 2, 3]);
        assert_eq!(pump.suspect, Some(Suspect { seq: 1, strikes: 1 }));
        // An outage: connects fail before any CONNACK.
        for _ in 0..5 {
            pump.on_link_event(LinkEvent::Down("connection refused".into()));
        }
        assert_eq!(pump.suspect, Some(Suspect { seq: 1, strikes: 1 }));
        assert_eq!(accepted_connection(&mut pump, &client, &[]), vec![1]);
        assert!(pump.refused.is_empty());
        assert_eq!(accepted_connection(&mut pump, &client, &[]), vec![1]);
        let refused: Vec<u64> = pump.refused.iter().map(|r| r.seq).collect();
        assert_eq!(refused, vec![1]);
        assert_eq!(pump.stats.lock().refused, 1);
        assert_eq!(
            pump.acked_through, 2,
            "2 was acknowledged on the first connection"
        );
        assert_eq!(pump.suspect, None);
        // The rest flows, as many at a time as the window allows.
        pump.take_input(&message(4), &forwarder);
        assert_eq!(accepted_connection(&mut pump, &client, &[3, 4]), vec![3, 4]);
        assert_eq!(pump.acked_through, 4);
        assert_eq!(pump.stats.lock().refused, 1);
        // The refused message is kept beside the spool by the next job.
        pump.start_job(false);
        pump.wait_job().await.unwrap();
        let kept: Vec<u64> = refused::read(dir.path()).iter().map(|r| r.seq).collect();
        assert_eq!(kept, vec![1]);
    }

    /// Without a connection, messages wait in memory for their hold, then go to disk in one write and
    /// one fsync; the durable mark follows.
    #[tokio::test(start_paused = true)]
    async fn messages_go_to_disk_in_one_group_commit_when_their_hold_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (mut pump, _link_tx) = pump(dir.path());
        let forwarder = forwarder();
        for i in 1..=5 {
            pump.take_input(&message(i), &forwarder);
        }
        pump.start_job(true);
        assert!(pump.job.is_none(), "nothing is due yet");
        assert_eq!(pump.durable_through(), 0);
        tokio::time::advance(Duration::from_millis(800)).await;
        pump.start_job(true);
        assert_eq!(pump.durable_through(), 0, "not durable before the job ends");
        pump.wait_job().await.unwrap();
        assert_eq!(pump.durable_through(), 5);
        assert_eq!(pump.spool_stats.appended, 5);
        assert_eq!(pump.spool_stats.unread, 5);
        assert_eq!(
            pump.spool_stats.fsyncs, 2,
            "the segment and the directory it was created in"
        );
        assert!(pump.fresh.is_empty());
    }
}
