//! The wiring: builds every part from the configuration, starts them in order, and owns the shutdown and
//! reload sequences. This is the only module that names the concrete types of every stage; each stage gets
//! its own settings, handles and a cancellation token, never the whole configuration.
//!
//! Start: state directory, broker (restoring retained state; devices restored `online` are set `offline`),
//! gateway `online`, uplink, pipeline, sources, then READY. Stop (SIGTERM/SIGINT): sources first; the
//! pipeline drains what they sent and publishes every device's will; the gateway goes `offline`; the
//! broker writes its retained snapshot and stops; the uplink gets the last messages through its input,
//! fsyncs and ends. Reload (SIGHUP): the new file is validated first; sources whose settings changed
//! restart, the others keep running; the broker's clients and the spool are never dropped.

pub mod keys;
pub mod lorawan_cli;
pub mod ports;
mod settings;
mod supervise;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::{Config, ConfigError, SourceConfig, SourceKind};
use crate::crypto::cli::parse_name;
use crate::decode::{HeaderFormat, PacketDecoder, PayloadFormat};
use crate::devices::Registry;
use crate::frame::crc::CrcMode;
use crate::model::Message;
use crate::pipeline::{publish_all, Pipeline, PipelineUpdate};
use crate::publish;
use crate::source::{self, SourceContext, SourceEvent};
use crate::systemd::{Health, Notifier};
use crate::uplink::{Uplink, UplinkStatsHandle};
use supervise::Failures;

/// Why `run` ended with an error: the exit status differs (2 for configuration, 1 for the rest).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0:#}")]
    Fatal(#[from] anyhow::Error),
}

/// Queue between the sources and the pipeline: deep enough to absorb a burst from every port while the
/// pipeline publishes, small enough to bound memory (a full queue slows the sources down, it loses nothing).
const EVENT_QUEUE: usize = 4096;
/// How long the broker gets to flush the last wills to connected clients before the process exits.
const FLUSH_GRACE: Duration = Duration::from_millis(200);

/// Runs the gateway until SIGTERM or SIGINT. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), RunError> {
    let notifier = Notifier::from_env();
    let shutdown = CancellationToken::new();
    let (reload_tx, mut reload_rx) = mpsc::channel(1);
    spawn_signal_handler(shutdown.clone(), reload_tx.clone())?;

    let health = Health::new();
    let (failures, mut failure_reports) = supervise::failures();
    let reload = config_path.as_ref().map(|_| reload_tx);
    let mut gateway = Gateway::start(config, health.clone(), failures, reload).await?;
    notifier.ready();
    notifier.status(&gateway.status_line());
    let watchdog = crate::systemd::watchdog_interval_from_env().map(|interval| {
        let status = gateway.status_probe();
        tokio::spawn(crate::systemd::run_watchdog(
            notifier.clone(),
            interval,
            health.clone(),
            status,
            shutdown.clone(),
        ))
    });

    let mut failed = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(failure) = failure_reports.recv() => {
                log::error!("{failure}; stopping so that the service manager restarts the daemon");
                failed = Some(failure);
                break;
            }
            Some(()) = reload_rx.recv() => {
                let Some(path) = &config_path else { continue };
                notifier.reloading();
                match load_off_the_runtime(path.clone()).await {
                    Ok(new_config) => {
                        gateway.reload(new_config).await;
                        log::info!("configuration reloaded from {}", path.display());
                    }
                    Err(error) => log::error!("configuration not reloaded, the running one is kept: {error}"),
                }
                notifier.ready();
            }
        }
    }
    notifier.stopping();
    gateway.stop().await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    match failed {
        Some(failure) => Err(RunError::Fatal(anyhow::anyhow!("{failure}"))),
        None => Ok(()),
    }
}

/// Reads and checks the configuration file on a blocking thread (it reads key files too).
async fn load_off_the_runtime(path: PathBuf) -> Result<Config, String> {
    match tokio::task::spawn_blocking(move || Config::load(&path)).await {
        Ok(loaded) => loaded.map_err(|error| error.to_string()),
        Err(join) => Err(format!("reading the configuration failed: {join}")),
    }
}

fn spawn_signal_handler(
    shutdown: CancellationToken,
    reload: mpsc::Sender<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => { log::info!("SIGTERM: stopping"); shutdown.cancel(); return; }
                _ = interrupt.recv() => { log::info!("SIGINT: stopping"); shutdown.cancel(); return; }
                _ = hangup.recv() => { let _ = reload.try_send(()); }
            }
        }
    });
    Ok(())
}

/// One running source task.
struct RunningSource {
    config: SourceConfig,
    stop: CancellationToken,
    task: JoinHandle<Option<()>>,
}

/// Everything that runs, in the order it must stop.
struct Gateway {
    config: Config,
    health: Health,
    broker: Arc<Broker>,
    events: mpsc::Sender<SourceEvent>,
    sources: HashMap<String, RunningSource>,
    pipeline: JoinHandle<Option<Registry>>,
    pipeline_updates: mpsc::Sender<PipelineUpdate>,
    devices_online: Arc<AtomicUsize>,
    uplink_stats: Option<UplinkStatsHandle>,
    uplink: Option<JoinHandle<Option<()>>>,
    uplink_stop: CancellationToken,
    failures: Failures,
    /// Writes the replay marks of encrypted frames; stopped after the pipeline (`crate::replay`).
    replay: JoinHandle<()>,
    replay_stop: CancellationToken,
    /// The command router and dispatchers (`crate::commands`), when a source has `commands = true`;
    /// stopped right after the sources.
    commands: Option<(JoinHandle<()>, CancellationToken)>,
    /// The port of each source with `commands = true`, handed to its task at every (re)start.
    command_ports: HashMap<String, crate::source::transmit::CommandPort>,
    /// What each semtech-udp source starts with (its devices' keys, its counters).
    lorawan: HashMap<String, crate::lorawan::udp::LorawanStart>,
    /// The bindkeys of each Bluetooth LE source's devices, and the marks their counters are kept in.
    ble_keys: keys::BleKeys,
    marks: crate::replay::ReplayGuard,
    /// The status page (`[http]`); stopped first.
    http: Option<crate::http::HttpServer>,
}

/// Reads the LoRaWAN devices' key files (blocking thread) and builds each semtech-udp source's start,
/// with the counters the stats line reads.
async fn load_lorawan(
    config: &Config,
    state_dir: &Path,
) -> Result<HashMap<String, crate::lorawan::udp::LorawanStart>, RunError> {
    let Some(lorawan) = config.lorawan.clone() else {
        return Ok(HashMap::new());
    };
    let copy = config.clone();
    let (devices, warnings) =
        tokio::task::spawn_blocking(move || keys::load_lorawan_devices(&copy))
            .await
            .map_err(|e| anyhow::anyhow!("reading the LoRaWAN key files: {e}"))??;
    for warning in &warnings {
        log::warn!("{warning}");
    }
    let server = lorawan
        .server_settings()
        .map_err(|e| anyhow::anyhow!("[lorawan] {}: {}", e.key, e.message))?;
    let mut starts = HashMap::new();
    for source in &config.sources {
        let SourceKind::SemtechUdp(udp) = &source.kind else {
            continue;
        };
        let start = crate::lorawan::udp::LorawanStart {
            server,
            udp: settings::with_own_radios(config, &source.name, udp),
            dedup_window: lorawan.dedup_window(),
            devices: devices.get(&source.name).cloned().unwrap_or_default(),
            state_dir: state_dir.to_path_buf(),
            counters: Arc::default(),
            bound: Arc::new(tokio::sync::watch::channel(None).0),
        };
        starts.insert(source.name.clone(), start);
    }
    Ok(starts)
}

/// The stats line's `lorawan` object: each semtech-udp source's counters.
fn lorawan_probe(
    starts: &HashMap<String, crate::lorawan::udp::LorawanStart>,
) -> Option<crate::pipeline::UplinkStatsProbe> {
    if starts.is_empty() {
        return None;
    }
    let counters: Vec<(String, Arc<crate::lorawan::counters::LorawanCounters>)> = starts
        .iter()
        .map(|(name, start)| (name.clone(), start.counters.clone()))
        .collect();
    Some(Box::new(move || {
        let map: serde_json::Map<String, serde_json::Value> = counters
            .iter()
            .map(|(name, counters)| (name.clone(), counters.to_json()))
            .collect();
        serde_json::Value::Object(map)
    }))
}

/// Reads every key file the configuration names, on a blocking thread, and logs a warning for each one
/// readable by group or others. A malformed file is a configuration error, located in the key file.
async fn load_keys(config: &Config) -> Result<keys::LoadedKeys, RunError> {
    let config = config.clone();
    let loaded = tokio::task::spawn_blocking(move || keys::load_keys(&config))
        .await
        .map_err(|e| anyhow::anyhow!("reading the key files: {e}"))??;
    for warning in &loaded.warnings {
        log::warn!("{warning}");
    }
    Ok(loaded)
}

/// Creates the state directory (retained snapshot, spool, replay marks, discovery state).
fn create_state_dir(config: &Config) -> Result<PathBuf, RunError> {
    let state_dir = config.state_dir();
    std::fs::create_dir_all(&state_dir).with_context(|| {
        format!(
            "cannot create the state directory {} (set [gateway] state_dir)",
            state_dir.display()
        )
    })?;
    Ok(state_dir)
}

/// The replay marks of encrypted frames (`crate::replay`) and the task that writes them.
struct ReplayMarks {
    guard: crate::replay::ReplayGuard,
    task: JoinHandle<()>,
    stop: CancellationToken,
}

/// Opens the replay marks in the state directory and starts their persister.
async fn open_replay(state_dir: &Path) -> Result<ReplayMarks, RunError> {
    let (guard, persister) = crate::replay::open(state_dir)
        .await
        .context("replay marks of encrypted frames")?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(persister.run(stop.clone()));
    Ok(ReplayMarks { guard, task, stop })
}

/// Starts the embedded broker (restoring its retained state) with the uplink's tap, when there is an
/// `[upstream]`: the broker serves from here on. Returns the broker and the tap's receiving end.
async fn start_broker(
    config: &Config,
    state_dir: &Path,
) -> Result<(Arc<Broker>, Option<mpsc::Receiver<Message>>), RunError> {
    // The tap carries only what a forward rule selects, bounded (TAP_CAPACITY).
    let (tap, uplink_input) = match &config.upstream {
        Some(upstream) => {
            let filters = upstream.forward.iter().map(|r| r.filter.clone()).collect();
            let (tx, rx) = crate::broker::tap(filters, crate::broker::TAP_CAPACITY);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let broker = Arc::new(
        Broker::start(&settings::broker(config, state_dir), tap)
            .await
            .context("embedded broker")?,
    );
    for addr in broker.local_addrs() {
        log::info!("MQTT broker listening on {addr}");
    }
    // What the runtime really has (`[gateway] worker_threads`), from the runtime itself.
    log::info!(
        "{WORKER_THREADS_MARKER}{}",
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    Ok((broker, uplink_input))
}

/// What the INFO line saying how many worker threads the async runtime runs starts with.
pub const WORKER_THREADS_MARKER: &str = "async runtime worker threads: ";

/// The device registry, holding the states the broker restored; publishes the devices restored
/// `online` as `offline`, then the gateway `online`.
async fn restore_and_announce(config: &Config, broker: &Broker) -> Registry {
    let mut registry = Registry::new(settings::registry(config));
    let restored = broker.retained_messages().await;
    registry.adopt_restored_states(&restored);
    let mut announcements = registry.offline_after_restart(&restored);
    announcements.push(availability(
        &config.gateway.base_topic,
        publish::ONLINE,
        config.publish.qos,
    ));
    publish_all(broker, &announcements).await;
    registry
}

/// Starts Home Assistant discovery (or clears what an earlier run announced) and publishes its first
/// messages; the stage, when discovery is on, goes to the pipeline.
async fn start_homeassistant(
    config: &Config,
    state_dir: &Path,
    broker: &Broker,
    registry: &Registry,
) -> Option<crate::homeassistant::stage::Stage> {
    let (discovery, discovery_messages) = crate::homeassistant::stage::start(
        settings::homeassistant(config),
        state_dir,
        broker,
        registry,
    )
    .await;
    publish_all(broker, &discovery_messages).await;
    discovery
}

/// The uplink's task (when there is an `[upstream]`), its stop token and its statistics.
struct StartedUplink {
    task: Option<JoinHandle<Option<()>>>,
    stop: CancellationToken,
    stats: Option<UplinkStatsHandle>,
}

/// Opens the spool and starts the uplink on the tap's receiving end, when there is an `[upstream]`.
async fn start_uplink(
    config: &Config,
    state_dir: &Path,
    uplink_input: Option<mpsc::Receiver<Message>>,
    sealers: Vec<(usize, crate::crypto::Sealer)>,
    failures: &Failures,
) -> Result<StartedUplink, RunError> {
    let uplink_stop = CancellationToken::new();
    let mut uplink_stats = None;
    let uplink = match (config.upstream.as_ref(), uplink_input) {
        (Some(upstream), Some(input)) => {
            let uplink = Uplink::open_async(settings::uplink(config, upstream, state_dir))
                .await
                .context("upstream")?
                .with_payload_encryption(sealers);
            log::info!("forwarding upstream to {}", upstream.url);
            let stats = uplink.stats();
            uplink_stats = Some(stats);
            let stop = uplink_stop.clone();
            let report = failures.clone();
            Some(failures.spawn("uplink", async move {
                if let Err(error) = uplink.run(input, stop).await {
                    report.report(format!(
                        "uplink stopped: {error}; messages stay in the spool until the next start"
                    ));
                }
            }))
        }
        _ => None,
    };
    Ok(StartedUplink {
        task: uplink,
        stop: uplink_stop,
        stats: uplink_stats,
    })
}

/// The command router's task and stop token (when it got the broker's command tap), the port of each
/// source with `commands = true`, and the router's statistics.
struct StartedCommands {
    running: Option<(JoinHandle<()>, CancellationToken)>,
    ports: HashMap<String, crate::source::transmit::CommandPort>,
    stats: Option<crate::commands::CommandStats>,
}

/// The gateway's frame counters for sealing commands and their writer (`crate::commands::counters`),
/// when a source with `commands = true` is encrypted: loaded, and this start's reservations stored.
async fn open_downlink_counters(
    config: &Config,
    state_dir: &Path,
) -> Result<Option<crate::commands::counters::Opened>, RunError> {
    let sealing = config
        .sources
        .iter()
        .any(|s| s.commands.is_some() && s.encryption.is_some());
    if !sealing {
        return Ok(None);
    }
    let opened = crate::commands::counters::open(state_dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(opened))
}

/// Starts the command router when a source has `commands = true`: it takes the command tap's client
/// publishes; with `counters`, it seals with them and their writer runs beside it.
fn start_commands(
    config: &Config,
    broker: &Arc<Broker>,
    frames: &crate::crypto::FrameKeys,
    counters: Option<crate::commands::counters::Opened>,
) -> StartedCommands {
    let command_settings = settings::commands(config);
    let mut command_stats = None;
    let mut command_ports = HashMap::new();
    let mut commands = None;
    if command_settings.any_enabled() {
        let filters = crate::topic::commands::filters(&command_settings.base_topic);
        let mut router = crate::commands::Commands::new(command_settings, frames.clone());
        let mut counter_writer = None;
        if let Some((handle, writer)) = counters {
            router = router.with_counters(handle);
            counter_writer = Some(writer);
        }
        for source in &config.sources {
            if let Some(port) = router.port(&source.name) {
                command_ports.insert(source.name.clone(), port);
            }
        }
        command_stats = Some(router.stats());
        match broker.command_tap(filters, crate::commands::INPUT_CAPACITY) {
            Some(input) => {
                let stop = CancellationToken::new();
                if let Some(writer) = counter_writer {
                    tokio::spawn(writer.run(stop.clone()));
                }
                let task = router.spawn(broker.clone(), input, stop.clone());
                commands = Some((task, stop));
            }
            None => {
                log::error!("commands: the broker's command tap is taken; no commands are sent")
            }
        }
    }
    StartedCommands {
        running: commands,
        ports: command_ports,
        stats: command_stats,
    }
}

/// The pipeline stage: a decoder per source, the registry, the statistics probes, its heartbeat and
/// the discovery stage.
fn build_pipeline(
    config: &Config,
    state_dir: &Path,
    registry: Registry,
    discovery: Option<crate::homeassistant::stage::Stage>,
    uplink_stats: Option<UplinkStatsHandle>,
    command_stats: Option<crate::commands::CommandStats>,
    health: &Health,
) -> Pipeline {
    Pipeline {
        decoders: config
            .sources
            .iter()
            .map(|s| (s.name.clone(), settings::decoder(s)))
            .collect(),
        codecs: settings::codecs(config),
        registry,
        base_topic: config.gateway.base_topic.clone(),
        stats_interval: config.publish.stats_interval,
        uplink_stats: uplink_stats
            .map(|stats| Box::new(move || stats.snapshot()) as crate::pipeline::UplinkStatsProbe),
        command_stats: command_stats
            .map(|stats| Box::new(move || stats.snapshot()) as crate::pipeline::CommandStatsProbe),
        lorawan_stats: None,
        heartbeat: Some(health.register("pipeline", Duration::from_secs(30))),
        devices_online: Arc::new(AtomicUsize::new(0)),
        discovery,
        state_dir: state_dir.to_path_buf(),
        live: None,
        http_stats: None,
        forget: None,
    }
}

/// What the pipeline and the status page share when `[http]` is on.
struct WebParts {
    live: crate::live::LiveView,
    counters: crate::http::HttpCounters,
    /// The page's end of the forget queue; the pipeline's end is handed over by [`WebParts::attach`].
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    forget: crate::forget::ForgetSender,
    forget_requests: Option<mpsc::Receiver<crate::forget::ForgetRequest>>,
}

impl WebParts {
    fn new() -> Self {
        let (forget, forget_requests) = crate::forget::channel();
        WebParts {
            live: crate::live::LiveView::new(),
            counters: crate::http::HttpCounters::default(),
            forget,
            forget_requests: Some(forget_requests),
        }
    }

    /// Lets the pipeline feed the live view, report the page's counters in `{base}/gateway/stats` and
    /// take an admin's requests to forget a device.
    fn attach(&mut self, pipeline: &mut Pipeline) {
        pipeline.live = Some(self.live.clone());
        pipeline.forget = self.forget_requests.take();
        let counters = self.counters.clone();
        pipeline.http_stats =
            Some(Box::new(move || counters.json()) as crate::pipeline::UplinkStatsProbe);
    }
}

/// Starts the status page on what the pipeline shares, the watchdog's health and the broker's logins;
/// logs its address (or why it could not start).
#[cfg(feature = "http")]
async fn start_http(
    config: &Config,
    web: Option<WebParts>,
    health: &Health,
    broker: &Arc<Broker>,
    uplink_stats: Option<UplinkStatsHandle>,
    command_stats: Option<crate::commands::CommandStats>,
    reload: Option<mpsc::Sender<()>>,
) -> Option<crate::http::HttpServer> {
    let http = config.http.as_ref()?;
    let web = web?;
    let rights = config
        .broker
        .users
        .iter()
        .filter_map(|user| Some((user.name.clone(), user.http?)));
    let access = crate::http::Access::new(http.anonymous, rights, broker.logins());
    let views = crate::http::Views {
        live: web.live,
        health: health.clone(),
        broker: Arc::downgrade(broker),
        uplink: uplink_stats
            .map(|stats| Box::new(move || stats.snapshot()) as crate::http::JsonProbe),
        commands: command_stats
            .map(|stats| Box::new(move || stats.snapshot()) as crate::http::CommandsProbe),
        sources: config
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.kind.name().to_string()))
            .collect(),
        version: env!("CARGO_PKG_VERSION"),
        started: std::time::Instant::now(),
        counters: web.counters,
        reload,
        forget: Some(web.forget),
        base_topic: config.gateway.base_topic.clone(),
    };
    // The page is an aid, not the gateway's work: when its port is taken or its TLS files cannot be
    // read, the gateway runs without it and says so.
    match crate::http::HttpServer::start(http, access, views).await {
        Ok(server) => {
            let scheme = if http.tls.is_some() { "https" } else { "http" };
            log::info!("status page on {scheme}://{}/", server.local_addr);
            Some(server)
        }
        Err(error) => {
            log::error!("status page not started: {error:#}; the gateway runs without it");
            None
        }
    }
}

/// A build without the `http` feature has no page: the configuration check refused `[http]`.
#[cfg(not(feature = "http"))]
async fn start_http(
    _config: &Config,
    _web: Option<WebParts>,
    _health: &Health,
    _broker: &Arc<Broker>,
    _uplink_stats: Option<UplinkStatsHandle>,
    _command_stats: Option<crate::commands::CommandStats>,
    _reload: Option<mpsc::Sender<()>>,
) -> Option<crate::http::HttpServer> {
    None
}

/// The running pipeline: the sources' queue into it, its task and its reload channel.
struct StartedPipeline {
    events: mpsc::Sender<SourceEvent>,
    task: JoinHandle<Option<Registry>>,
    updates: mpsc::Sender<PipelineUpdate>,
}

/// Starts the pipeline on the sources' queue (`EVENT_QUEUE` deep) and a reload channel.
fn spawn_pipeline(
    pipeline: Pipeline,
    broker: &Arc<Broker>,
    frames: crate::crypto::FrameGuard,
    failures: &Failures,
) -> StartedPipeline {
    let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (pipeline_updates, updates_rx) = mpsc::channel(4);
    let pipeline_broker = broker.clone();
    let task = failures.spawn_on_own_thread("pipeline", async move {
        pipeline
            .run_with_frames(&pipeline_broker, events_rx, updates_rx, frames)
            .await
    });
    StartedPipeline {
        events,
        task,
        updates: pipeline_updates,
    }
}

/// What the ports file lists: the broker's listeners, and the status page's when it is on.
fn bound_listeners(
    config: &Config,
    state_dir: &Path,
    broker: &Broker,
    http: Option<&crate::http::HttpServer>,
) -> Vec<ports::BoundListener> {
    let mut bound =
        ports::broker_listeners(&settings::broker(config, state_dir), broker.local_addrs());
    if let (Some(server), Some(http)) = (http, &config.http) {
        bound.push(ports::http_listener(http.tls.is_some(), server.local_addr));
    }
    bound
}

impl Gateway {
    /// Starts every part in order: state directory, keys and replay marks, tap and broker, restored
    /// state and announcements, Home Assistant, uplink, commands, pipeline, then the sources.
    async fn start(
        config: Config,
        health: Health,
        failures: Failures,
        reload: Option<mpsc::Sender<()>>,
    ) -> Result<Gateway, RunError> {
        let state_dir = create_state_dir(&config)?;
        ports::forget(&state_dir).await;
        let keys = load_keys(&config).await?;
        let lorawan = load_lorawan(&config, &state_dir).await?;
        let replay = open_replay(&state_dir).await?;
        let (broker, uplink_input) = start_broker(&config, &state_dir).await?;
        let registry = restore_and_announce(&config, &broker).await;
        let discovery = start_homeassistant(&config, &state_dir, &broker, &registry).await;
        let uplink =
            start_uplink(&config, &state_dir, uplink_input, keys.sealers, &failures).await?;
        let counters = open_downlink_counters(&config, &state_dir).await?;
        let commands = start_commands(&config, &broker, &keys.frames, counters);
        // Without the `http` feature no page reads the live view: the build leaves it out.
        let mut web = config
            .http
            .as_ref()
            .filter(|_| cfg!(feature = "http"))
            .map(|_| WebParts::new());
        let pipeline = build_pipeline(
            &config,
            &state_dir,
            registry,
            discovery,
            uplink.stats.clone(),
            commands.stats.clone(),
            &health,
        );
        let mut pipeline = Pipeline {
            lorawan_stats: lorawan_probe(&lorawan),
            ..pipeline
        };
        if let Some(web) = &mut web {
            web.attach(&mut pipeline);
        }
        let devices_online = pipeline.devices_online.clone();
        let marks = replay.guard.clone();
        let frames = crate::crypto::FrameGuard::new(keys.frames, replay.guard);
        let pipeline = spawn_pipeline(pipeline, &broker, frames, &failures);
        let uplink_stats = uplink.stats.clone();
        let http = start_http(
            &config,
            web,
            &health,
            &broker,
            uplink_stats,
            commands.stats,
            reload,
        )
        .await;
        let bound = bound_listeners(&config, &state_dir, &broker, http.as_ref());
        let mut gateway = Gateway {
            config,
            health,
            broker,
            events: pipeline.events,
            sources: HashMap::new(),
            pipeline: pipeline.task,
            pipeline_updates: pipeline.updates,
            devices_online,
            uplink_stats: uplink.stats,
            uplink: uplink.task,
            uplink_stop: uplink.stop,
            failures,
            replay: replay.task,
            replay_stop: replay.stop,
            commands: commands.running,
            command_ports: commands.ports,
            lorawan,
            ble_keys: keys.ble,
            marks,
            http,
        };
        gateway.start_sources();
        ports::write(&state_dir, &bound).await;
        Ok(gateway)
    }

    /// Starts a task for every configured source.
    fn start_sources(&mut self) {
        for source in self.config.sources.clone() {
            self.start_source(source);
        }
    }

    fn start_source(&mut self, config: SourceConfig) {
        let stop = CancellationToken::new();
        let ctx = SourceContext {
            name: config.name.clone(),
            out: self.events.clone(),
            shutdown: stop.clone(),
        };
        let task = self.failures.spawn(
            &format!("source {}", config.name),
            run_source(
                ctx,
                config.clone(),
                self.command_ports.get(&config.name).cloned(),
                self.lorawan
                    .get(settings::lorawan_server_name(&config))
                    .cloned(),
                self.ble_start(&config),
            ),
        );
        self.sources
            .insert(config.name.clone(), RunningSource { config, stop, task });
    }

    /// What a Bluetooth LE source starts with: its settings, its devices' bindkeys, the marks.
    fn ble_start(&self, config: &SourceConfig) -> Option<crate::ble::scan::BleStart> {
        let SourceKind::Ble(settings) = &config.kind else {
            return None;
        };
        Some(crate::ble::scan::BleStart {
            settings: (**settings).clone(),
            keys: self.ble_keys.get(&config.name).cloned().unwrap_or_default(),
            marks: self.marks.clone(),
        })
    }

    fn status_line(&self) -> String {
        (self.status_probe())()
    }

    /// The one-line summary systemd shows (`systemctl status`): devices online, sources, uplink state.
    fn status_probe(&self) -> impl Fn() -> String + Send + 'static {
        let sources = self.sources.len();
        let devices_online = self.devices_online.clone();
        let uplink = self.uplink_stats.clone();
        move || {
            let uplink = match &uplink {
                Some(stats) => {
                    let snapshot = stats.snapshot();
                    let state = snapshot["state"].as_str().unwrap_or("unknown").to_string();
                    format!("uplink {state}, {} spooled", snapshot["spool_messages"])
                }
                None => "no uplink".to_string(),
            };
            format!(
                "{} devices online, {sources} sources, {uplink}",
                devices_online.load(Ordering::Relaxed)
            )
        }
    }

    /// Applies a new, already validated configuration: sources that changed (or vanished) stop, new or
    /// changed ones start; the rest keep running.
    async fn reload(&mut self, new: Config) {
        let keys = match load_keys(&new).await {
            Ok(keys) => keys,
            Err(error) => {
                log::error!("configuration not reloaded, the running one is kept: {error}");
                return;
            }
        };
        let mut lorawan = match load_lorawan(&new, &new.state_dir()).await {
            Ok(lorawan) => lorawan,
            Err(error) => {
                log::error!("configuration not reloaded, the running one is kept: {error}");
                return;
            }
        };
        let changed = self.sources_to_restart(&new, &mut lorawan, &keys.ble);
        self.lorawan = lorawan;
        self.ble_keys = keys.ble.clone();
        let update = PipelineUpdate {
            decoders: new
                .sources
                .iter()
                .map(|s| (s.name.clone(), settings::decoder(s)))
                .collect(),
            codecs: settings::codecs(&new),
            registry: settings::registry(&new),
            frame_keys: Some(keys.frames),
            homeassistant: settings::homeassistant(&new),
        };
        if self.pipeline_updates.send(update).await.is_err() {
            log::error!("pipeline gone; configuration not applied");
            return;
        }
        self.stop_sources(&changed, &new).await;
        for source in &new.sources {
            if !self.sources.contains_key(&source.name) {
                self.start_source(source.clone());
            }
        }
        if new.broker != self.config.broker || new.upstream != self.config.upstream {
            log::warn!("changes to [broker] and [upstream] take effect at the next restart");
        }
        self.config = new;
    }

    /// The running sources a reload restarts: those whose configuration changed or vanished, the
    /// semtech-udp sources whose devices, keys or `[lorawan]` changed (their counters carried over into
    /// `lorawan`), and the Bluetooth LE sources whose devices' bindkeys changed.
    fn sources_to_restart(
        &self,
        new: &Config,
        lorawan: &mut HashMap<String, crate::lorawan::udp::LorawanStart>,
        ble_keys: &keys::BleKeys,
    ) -> Vec<String> {
        let mut changed: Vec<String> = self
            .sources
            .iter()
            .filter(|(name, running)| {
                new.sources.iter().find(|s| &s.name == *name) != Some(&running.config)
            })
            .map(|(name, _)| name.clone())
            .collect();
        // A semtech-udp source restarts when its devices, their keys or [lorawan] changed (its sessions
        // are written at the stop and read at the start); its counters carry on.
        for (name, start) in lorawan.iter_mut() {
            if let Some(old) = self.lorawan.get(name) {
                if !old.same_setup(start) && !changed.contains(name) {
                    changed.push(name.clone());
                }
                start.counters = old.counters.clone();
                // The radios forwarding to it keep watching the same address.
                start.bound = old.bound.clone();
            }
        }
        // A Bluetooth LE source restarts when its devices' bindkeys changed.
        let names: Vec<String> = self
            .ble_keys
            .keys()
            .chain(ble_keys.keys())
            .cloned()
            .collect();
        for name in names {
            let same = self.ble_keys.get(&name) == ble_keys.get(&name);
            if !same && !changed.contains(&name) {
                changed.push(name);
            }
        }
        changed
    }

    /// Stops the `changed` sources; those gone from `new` have their devices' wills published.
    async fn stop_sources(&mut self, changed: &[String], new: &Config) {
        for name in changed {
            if let Some(running) = self.sources.remove(name) {
                running.stop.cancel();
                let _ = running.task.await;
                let removed = !new.sources.iter().any(|s| &s.name == name);
                if removed {
                    // Its devices will not be heard again: publish their wills now.
                    let reason = "removed from the configuration".to_string();
                    let _ = self
                        .events
                        .send(SourceEvent::Lost {
                            source: name.clone(),
                            reason,
                        })
                        .await;
                }
                log::info!(source = name.as_str(); "source {} for the new configuration", if removed { "removed" } else { "restarted" });
            }
        }
    }

    async fn stop(self) {
        if let Some(http) = self.http {
            http.stop().await;
        }
        for running in self.sources.values() {
            running.stop.cancel();
        }
        for (_, running) in self.sources {
            let _ = running.task.await;
        }
        // What is still queued is reported expired ("the gateway stopped") while the broker still runs.
        if let Some((task, stop)) = self.commands {
            stop.cancel();
            let _ = task.await;
        }
        drop(self.events);
        // The pipeline ends once every source's sender is gone, after publishing the devices' wills.
        let _ = self.pipeline.await;
        // Every frame is checked: the exact replay marks are written, marked clean.
        self.replay_stop.cancel();
        let _ = self.replay.await;
        let offline = availability(
            &self.config.gateway.base_topic,
            publish::OFFLINE,
            self.config.publish.qos,
        );
        publish_all(&self.broker, &[offline]).await;
        tokio::time::sleep(FLUSH_GRACE).await;
        match Arc::try_unwrap(self.broker) {
            Ok(broker) => {
                if let Err(error) = broker.shutdown().await {
                    log::error!("retained state not saved at stop: {error}");
                }
            }
            Err(_) => log::error!("broker still in use at stop; retained state not saved"),
        }
        self.uplink_stop.cancel();
        if let Some(uplink) = self.uplink {
            // Its own grace for outstanding acknowledgements, plus the final commit of the spool.
            let grace = crate::uplink::STOP_GRACE + Duration::from_millis(500);
            if tokio::time::timeout(grace, uplink).await.is_err() {
                log::warn!(
                    "uplink did not finish within {} ms; unsent messages stay in the spool",
                    grace.as_millis()
                );
            }
        }
        drop(self.health);
    }
}

fn availability(base: &str, payload: &str, qos: u8) -> Message {
    Message {
        topic: publish::gateway_availability_topic(base),
        payload: payload.as_bytes().to_vec(),
        qos,
        retain: true,
    }
}

async fn run_source(
    ctx: SourceContext,
    config: SourceConfig,
    commands: Option<crate::source::transmit::CommandPort>,
    lorawan: Option<crate::lorawan::udp::LorawanStart>,
    ble: Option<crate::ble::scan::BleStart>,
) {
    match &config.kind {
        SourceKind::SemtechUdp(_) => match lorawan {
            Some(start) => crate::lorawan::udp::run(ctx, start, commands).await,
            None => {
                log::error!(source = config.name.as_str(); "a semtech-udp source needs [lorawan]")
            }
        },
        SourceKind::Serial(serial) => {
            source::serial::run_with_commands(ctx, settings::serial(serial), commands).await
        }
        SourceKind::Simulator(simulator) => {
            source::simulator::run(ctx, settings::simulator(&config, simulator)).await
        }
        SourceKind::Radio(radio) => match (&radio.lorawan, lorawan) {
            (Some(_), Some(server)) => {
                if let Some(forwarder) = settings::forwarder(radio, &server.udp) {
                    let address = server.bound.subscribe();
                    crate::lorawan::forwarder::run(ctx, forwarder, address).await
                }
            }
            (Some(_), None) => {
                log::error!(source = config.name.as_str(); "a LoRaWAN radio needs its semtech-udp source and [lorawan]");
            }
            (None, _) => {
                let (radio_settings, backend) = settings::radio(radio);
                source::radio::run_with_commands(ctx, radio_settings, backend, commands).await
            }
        },
        SourceKind::Rtl433(rtl433) => source::rtl433::run(ctx, (**rtl433).clone()).await,
        SourceKind::Ble(_) => {
            if let Some(start) = ble {
                crate::ble::scan::run(ctx, start, commands).await
            }
        }
    }
}

/// `sensorgate reset-state`: for every durable state that fails closed when lost (the replay marks, the
/// downlink frame counters, each semtech-udp source's LoRaWAN sessions), moves the damaged copies in the configuration's state directory aside when
/// no good copy is left, so that the next start begins that state anew; a state with a good copy is left
/// alone. One line per state saying what was done. Run it with the gateway stopped. Blocking IO.
pub fn reset_lost_state(config: &Config) -> Result<Vec<String>, String> {
    let state_dir = config.state_dir();
    type ResetLost = fn(&Path) -> std::io::Result<String>;
    let resets: [(&str, ResetLost); 2] = [
        (crate::replay::STATE_NAME, crate::replay::reset_lost),
        (
            crate::commands::counters::STATE_NAME,
            crate::commands::counters::reset_lost,
        ),
    ];
    let lorawan = config
        .sources
        .iter()
        .filter(|source| matches!(source.kind, SourceKind::SemtechUdp(_)))
        .map(|source| {
            crate::lorawan::persist::reset_lost(&state_dir, &source.name).map_err(|error| {
                format!(
                    "{} in {}: {error}",
                    crate::lorawan::persist::state_name(&source.name),
                    state_dir.display()
                )
            })
        });
    resets
        .iter()
        .map(|(name, reset)| {
            reset(&state_dir).map_err(|error| format!("{name} in {}: {error}", state_dir.display()))
        })
        .chain(lorawan)
        .collect()
}

/// Decodes one packet given on the command line, as a source configured with these formats would.
pub fn decode_one(
    payload: &str,
    header: &str,
    crc: &str,
    packet: &str,
    text: bool,
) -> anyhow::Result<String> {
    let payload: PayloadFormat = parse_name(
        payload,
        "payload",
        "json, lpp or mysensors (or bthome, pvvx or atc1441 for BLE service data)",
    )?;
    let header: HeaderFormat = parse_name(header, "header", "none, node16 or radiohead")?;
    let crc: CrcMode = parse_name(crc, "crc", "none or crc16-ccitt-false")?;
    let bytes = if text {
        packet.as_bytes().to_vec()
    } else {
        parse_hex(packet)?
    };
    let decoder = PacketDecoder {
        crc,
        header,
        payload,
    };
    let packet = crate::model::Packet {
        source: "cli".into(),
        bytes,
        received_at: std::time::SystemTime::now(),
        radio: None,
    };
    let readings = decoder.decode(&packet)?;
    let json: Vec<serde_json::Value> = readings
        .iter()
        .map(|reading| crate::decode::reading_json(&reading.address, reading.seq, &reading.fields))
        .collect();
    Ok(serde_json::to_string_pretty(&json)?)
}

fn parse_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !digits.len().is_multiple_of(2) {
        anyhow::bail!("odd number of hex digits in {text:?}");
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| anyhow::anyhow!("not hexadecimal: {:?}", &digits[i..i + 2]))
        })
        .collect()
}
