//! The loop that runs rtl_433: start it, turn its stdout lines into events and its stderr lines into log
//! lines, watch its liveness, and when it ends or stalls, decide what comes next (reset the stick and
//! restart, report the link lost and retry, or end after a one-shot replay). See the module
//! documentation of [`super`] for the rules.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;

use super::identity::{self, DevicesMode, Identities, Sender};
use super::line::{self, Event, Line};
use super::liveness::{classify_exit, Ending, Liveness, STALL_MESSAGE};
use super::process;
use super::repeats::Repeats;
use super::usb::UsbReset;
use super::{args, Rtl433Settings};
use crate::backoff::Backoff;
use crate::frame::{Deframer, FrameError, Framing};
use crate::model::{RadioMeta, Reading};
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::{ReceiverState, SourceContext, SourceEvent};

/// The longest stdout line read; rtl_433's longest (a weather station with every field) is under 1 KiB.
pub const MAX_LINE: usize = 16 * 1024;
/// The longest stderr line logged whole.
const MAX_STDERR_LINE: usize = 1024;
/// Stderr lines logged as they come after each start; beyond them, one per 10 s with a count.
const STDERR_LINES_PER_START: u32 = 32;
/// How long a run must have lasted for the backoff to start over.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long output is still read after the process exited (its last lines are in the pipe).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// What librtlsdr prints when the kernel's DVB driver holds the stick.
const DVB_MARKERS: [&str; 2] = ["Kernel driver is active", "usb_claim_interface error -6"];

/// Runs rtl_433 until `ctx.shutdown`, the pipeline is gone, or a one-shot replay finished.
pub async fn run(ctx: SourceContext, settings: Rtl433Settings, usb: Arc<dyn UsbReset>) {
    let mut supervisor = Supervisor::new(ctx, settings, usb);
    supervisor.supervise().await
}

struct Supervisor {
    ctx: SourceContext,
    identities: Identities,
    repeats: Repeats,
    arguments: Vec<String>,
    one_shot: bool,
    settings: Rtl433Settings,
    usb: Arc<dyn UsbReset>,
    dvb_reported: bool,
    stderr_limiter: RateLimiter,
}

impl Supervisor {
    fn new(ctx: SourceContext, settings: Rtl433Settings, usb: Arc<dyn UsbReset>) -> Self {
        Supervisor {
            identities: Identities::new(settings.configured.iter().map(String::as_str)),
            repeats: Repeats::new(settings.dedup_window),
            arguments: args::command_line(
                &settings.receiver,
                settings.stats_interval,
                &settings.args,
            ),
            one_shot: args::is_one_shot(&settings.args),
            ctx,
            settings,
            usb,
            dvb_reported: false,
            stderr_limiter: RateLimiter::new(Duration::from_secs(10)),
        }
    }

    fn name(&self) -> &str {
        self.ctx.name.as_str()
    }

    async fn state(&self, state: ReceiverState) -> bool {
        self.ctx
            .emit(SourceEvent::State {
                source: self.ctx.name.clone(),
                state,
            })
            .await
    }

    async fn supervise(&mut self) {
        let mut backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        let mut lost_reported = false;
        loop {
            let started = Instant::now();
            let Some(ending) = self.run_once().await else {
                return;
            };
            if started.elapsed() >= STABLE_AFTER {
                backoff.reset();
            }
            let source = self.name().to_string();
            match &ending {
                Ending::Finished => {
                    log::info!(source = source.as_str(); "rtl_433 finished its one-shot replay; the source ends");
                    self.state(ReceiverState::Finished).await;
                    return;
                }
                Ending::Stalled(reason) => {
                    log::warn!(source = source.as_str(); "rtl_433 stalled: {reason}; its process group was killed, restarting it");
                    if !self.state(ReceiverState::Stalled).await {
                        return;
                    }
                    if self.settings.usb_reset {
                        self.reset_stick().await;
                    }
                }
                Ending::NoStick => {
                    if !lost_reported {
                        log::warn!(
                            source = source.as_str();
                            "rtl_433 found no RTL-SDR stick (exit status 2): the source's devices are offline; retrying with backoff up to {}s (check the stick, its `device` key, and the udev rule)",
                            self.settings.retry_max.as_secs()
                        );
                        lost_reported = true;
                        let lost = SourceEvent::Lost {
                            source: source.clone(),
                            reason: "rtl_433 found no stick".to_string(),
                        };
                        if !self.ctx.emit(lost).await {
                            return;
                        }
                    }
                    if !self.state(ReceiverState::Lost).await {
                        return;
                    }
                }
                Ending::Failed(reason) => {
                    if let Some(suppressed) = self.stderr_limiter.admit("ended") {
                        log::warn!(source = source.as_str(); "rtl_433 ended: {reason}; restarting it with backoff{}", suppressed_suffix(suppressed));
                    }
                }
            }
            if !matches!(ending, Ending::NoStick) {
                lost_reported = false;
                if !self.state(ReceiverState::Restarting).await {
                    return;
                }
            }
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Resets the stick over USB on a blocking thread, and logs how it went.
    async fn reset_stick(&self) {
        let usb = self.usb.clone();
        let device = self.settings.receiver.device.clone();
        let reset = tokio::task::spawn_blocking(move || usb.reset(device.as_deref()))
            .await
            .unwrap_or_else(|e| Err(format!("the reset task failed: {e}")));
        match reset {
            Ok(node) => log::info!(source = self.name(); "stick reset over USB ({node})"),
            Err(why) => log::warn!(source = self.name(); "stick not reset over USB: {why}"),
        }
    }

    /// One process from start to end. `None`: the source must stop.
    async fn run_once(&mut self) -> Option<Ending> {
        let mut running = match process::start(&self.settings.command, &self.arguments) {
            Ok(running) => running,
            Err(error) => {
                let hint = if error.kind() == std::io::ErrorKind::NotFound {
                    " (install it: apt install rtl-433, or set the source's `command`)"
                } else {
                    ""
                };
                return Some(Ending::Failed(format!(
                    "cannot start {}: {error}{hint}",
                    self.settings.command
                )));
            }
        };
        log::info!(source = self.name(); "rtl_433 started (pid {}): {} {}", running.pid, self.settings.command, self.arguments.join(" "));
        if !self.state(ReceiverState::Starting).await {
            process::kill_group(running.pid);
            return None;
        }
        let ending = self.watch(&mut running).await;
        process::kill_group(running.pid);
        let _ = running.child.wait().await;
        ending
    }

    /// Reads both pipes and waits for the exit, within the liveness deadlines.
    async fn watch(&mut self, running: &mut process::Running) -> Option<Ending> {
        let mut liveness = Liveness::new(self.settings.stats_interval, now());
        let mut stdout = Deframer::new(Framing::Lines, MAX_LINE);
        let mut stderr = Deframer::new(Framing::Lines, MAX_STDERR_LINE);
        let mut out_buffer = vec![0u8; 8192];
        let mut err_buffer = vec![0u8; 2048];
        let (mut out_open, mut err_open) = (true, true);
        let mut exit: Option<(Option<i32>, Instant)> = None;
        let mut stderr_lines = 0u32;
        let mut receiving = false;
        loop {
            if let Some((code, _)) = exit {
                if !out_open {
                    return Some(classify_exit(
                        code,
                        self.one_shot,
                        liveness.stall_message_seen(),
                    ));
                }
            }
            let deadline = match exit {
                Some((_, at)) => at.checked_add(DRAIN_AFTER_EXIT),
                None => liveness.deadline(),
            };
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return None,
                read = running.stdout.read(&mut out_buffer), if out_open => match read {
                    Ok(0) | Err(_) => out_open = false,
                    Ok(count) => {
                        let chunk = &out_buffer[..count];
                        if !self.on_stdout(chunk, &mut stdout, &mut liveness, &mut receiving).await {
                            return None;
                        }
                    }
                },
                read = running.stderr.read(&mut err_buffer), if err_open => match read {
                    Ok(0) | Err(_) => err_open = false,
                    Ok(count) => {
                        let chunk = &err_buffer[..count];
                        self.on_stderr_chunk(chunk, &mut stderr, &mut liveness, &mut stderr_lines);
                    }
                },
                status = running.child.wait(), if exit.is_none() => {
                    let code = status.ok().and_then(|s| s.code());
                    exit = Some((code, now()));
                }
                _ = sleep_until(deadline) => {
                    match exit {
                        Some((code, _)) => {
                            return Some(classify_exit(code, self.one_shot, liveness.stall_message_seen()));
                        }
                        None => {
                            if let Some(stall) = liveness.verdict(now()) {
                                return Some(Ending::Stalled(stall.describe(liveness.silence_limit())));
                            }
                        }
                    }
                }
            }
        }
    }

    /// A chunk of rtl_433's standard output: the first one brings the link up, each whole line is
    /// handled. Returns false when the source must stop.
    async fn on_stdout(
        &mut self,
        chunk: &[u8],
        stdout: &mut Deframer,
        liveness: &mut Liveness,
        receiving: &mut bool,
    ) -> bool {
        liveness.activity(now());
        if !*receiving {
            // Output means rtl_433 has the stick: the link is up.
            *receiving = true;
            let up = SourceEvent::Up {
                source: self.ctx.name.clone(),
            };
            if !self.ctx.emit(up).await || !self.state(ReceiverState::Running).await {
                return false;
            }
        }
        stdout.push(chunk);
        while let Some(frame) = stdout.next_frame() {
            if !self.on_line(frame).await {
                return false;
            }
        }
        true
    }

    /// A chunk of rtl_433's standard error: each whole line checked for the stall message and
    /// logged; `stderr_lines` counts them since the start.
    fn on_stderr_chunk(
        &mut self,
        chunk: &[u8],
        stderr: &mut Deframer,
        liveness: &mut Liveness,
        stderr_lines: &mut u32,
    ) {
        stderr.push(chunk);
        while let Some(frame) = stderr.next_frame() {
            let text = match &frame {
                Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Err(error) => format!("(a stderr line was dropped: {error})"),
            };
            if text.contains(STALL_MESSAGE) {
                liveness.stall_message(now());
            }
            *stderr_lines = stderr_lines.saturating_add(1);
            self.on_stderr(&text, *stderr_lines);
        }
    }

    /// One stderr line: logged (the first lines of each start, then rate-limited), and the DVB driver
    /// named once with its fix.
    fn on_stderr(&mut self, text: &str, count: u32) {
        if !self.dvb_reported && DVB_MARKERS.iter().any(|m| text.contains(m)) {
            self.dvb_reported = true;
            log::error!(
                source = self.name();
                "the kernel's DVB-T driver holds the RTL-SDR stick, so rtl_433 cannot use it: blacklist it \
                 (echo 'blacklist dvb_usb_rtl28xxu' | sudo tee /etc/modprobe.d/blacklist-rtlsdr.conf; \
                 sudo modprobe -r dvb_usb_rtl28xxu) and replug the stick"
            );
        }
        if count <= STDERR_LINES_PER_START {
            log::info!(source = self.name(); "rtl_433: {text}");
        } else if let Some(suppressed) = self.stderr_limiter.admit("stderr") {
            log::info!(source = self.name(); "rtl_433: {text}{}", suppressed_suffix(suppressed));
        }
    }

    /// One stdout line. Returns false when the pipeline is gone.
    async fn on_line(&mut self, frame: Result<Vec<u8>, FrameError>) -> bool {
        let source = self.ctx.name.clone();
        let event = match frame {
            Err(error) => {
                return self
                    .ctx
                    .emit(SourceEvent::FrameError { source, error })
                    .await
            }
            Ok(bytes) => match line::parse(&bytes) {
                Err(error) => {
                    let error = error.to_string();
                    return self
                        .ctx
                        .emit(SourceEvent::DecodeError { source, error })
                        .await;
                }
                Ok(Line::Stats | Line::Other) => return true,
                Ok(Line::Event(event)) => event,
            },
        };
        let own_address = identity::address_of(&event);
        if self.repeats.is_repeat(&own_address, &event.fields, now()) {
            return self.ctx.emit(SourceEvent::Duplicate { source }).await;
        }
        let received_at = SystemTime::now();
        let address = match self.identities.resolve(&event) {
            Sender::Configured(address) => address,
            Sender::Unconfigured(address) => {
                let heard = SourceEvent::Heard {
                    source: source.clone(),
                    address: address.clone(),
                    rssi: event.rssi(),
                    at: received_at,
                };
                if !self.ctx.emit(heard).await {
                    return false;
                }
                if self.settings.devices == DevicesMode::Configured {
                    return true;
                }
                address
            }
        };
        let trigger = event.is_trigger();
        let reading = reading_of(source, address, event, received_at);
        self.ctx
            .emit(SourceEvent::Reading { reading, trigger })
            .await
    }
}

/// The reading of a transmission: its fields, with `rssi` and `snr` as the radio metadata.
fn reading_of(source: String, address: String, event: Event, received_at: SystemTime) -> Reading {
    let number = |name: &str| {
        event.fields.iter().find_map(|(n, v)| match v {
            crate::model::Value::Float(f) if n == name => Some(*f),
            crate::model::Value::Int(i) if n == name => Some(*i as f64),
            _ => None,
        })
    };
    let radio = number("rssi").map(|rssi| RadioMeta {
        rssi_dbm: rssi as f32,
        snr_db: number("snr").map_or(f32::NAN, |snr| snr as f32),
        frequency_hz: number("freq").map_or(0, |mhz| (mhz * 1e6).round() as u32),
        spreading_factor: 0,
    });
    let fields = event
        .fields
        .into_iter()
        .filter(|(name, _)| name != "rssi" && name != "snr")
        .collect();
    Reading {
        source,
        address,
        seq: None,
        fields,
        received_at,
        radio,
        lorawan: None,
    }
}

/// Now on tokio's clock, so that a paused test clock drives the deadlines.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// Records the resets asked for instead of touching USB.
    #[derive(Default)]
    struct FakeUsb {
        resets: Mutex<Vec<Option<String>>>,
    }

    impl UsbReset for FakeUsb {
        fn reset(&self, device: Option<&str>) -> Result<String, String> {
            let mut resets = self.resets.lock().map_err(|e| e.to_string())?;
            resets.push(device.map(str::to_string));
            Ok(format!("fake reset {}", resets.len()))
        }
    }

    /// A script that prints one reading and then nothing, forever, as a stalled stick makes rtl_433 do.
    fn silent_script(dir: &std::path::Path) -> String {
        let path = dir.join("rtl_433");
        let script = "#!/bin/sh\necho '{\"model\":\"Nexus-TH\",\"id\":91,\"channel\":1,\"temperature_C\":21.5}'\nexec sleep 1000\n";
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }

    /// Two silent stats intervals (2 s here): the stall is declared, the stick reset through the trait,
    /// and rtl_433 started again, twice. On the real clock: a paused one would jump past the deadlines
    /// while the killed child is being reaped, which no timer announces (the timer logic itself is
    /// tested on the paused clock in `liveness.rs`).
    #[tokio::test]
    async fn silence_kills_resets_the_stick_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (out, mut events) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            name: "rf".to_string(),
            out,
            shutdown: shutdown.clone(),
        };
        let settings = Rtl433Settings {
            command: silent_script(dir.path()),
            receiver: args::Receiver {
                device: Some(":00000433".to_string()),
                ..args::Receiver::default()
            },
            stats_interval: Duration::from_secs(1),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
            ..Rtl433Settings::default()
        };
        let usb = Arc::new(FakeUsb::default());
        let task = tokio::spawn(run(ctx, settings, usb.clone()));
        let mut states = Vec::new();
        while states
            .iter()
            .filter(|s| **s == ReceiverState::Starting)
            .count()
            < 3
        {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap_or_else(|_| panic!("no event within 10 s after {states:?}"))
                .expect("the source runs");
            if let SourceEvent::State { state, .. } = event {
                states.push(state);
            }
            assert!(states.len() < 50, "{states:?}");
        }
        shutdown.cancel();
        task.await.unwrap();
        let stalls = states
            .iter()
            .filter(|s| **s == ReceiverState::Stalled)
            .count();
        assert_eq!(stalls, 2, "{states:?}");
        assert_eq!(
            *usb.resets.lock().unwrap(),
            vec![Some(":00000433".to_string()); 2],
            "the stick named by `device` is reset after each stall"
        );
        assert!(!states.contains(&ReceiverState::Lost), "{states:?}");
    }

    /// A program that cannot be started is retried with backoff, and never reported as running.
    #[tokio::test]
    async fn a_missing_program_is_retried_with_backoff() {
        let (out, mut events) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            name: "rf".to_string(),
            out,
            shutdown: shutdown.clone(),
        };
        let settings = Rtl433Settings {
            command: "/nonexistent/rtl_433".to_string(),
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
            ..Rtl433Settings::default()
        };
        let task = tokio::spawn(run(ctx, settings, Arc::new(FakeUsb::default())));
        let mut states = Vec::new();
        while states.len() < 3 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                .await
                .unwrap_or_else(|_| panic!("no event within 10 s after {states:?}"))
                .expect("the source runs");
            match event {
                SourceEvent::State { state, .. } => states.push(state),
                other => panic!("only states are expected, got {other:?}"),
            }
        }
        shutdown.cancel();
        task.await.unwrap();
        assert_eq!(states, [ReceiverState::Restarting; 3]);
    }
}
