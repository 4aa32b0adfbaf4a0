//! The radio source's run loop: it opens the backend, initialises the chip, and services its interrupts
//! on a thread of its own (SPI and GPIO waits block), sending [`SourceEvent`]s straight into the
//! pipeline's channel. It reads the configuration back every `health_interval`; a chip that is absent,
//! stops answering, loses its configuration or sticks its interrupt line is reported `Lost` and
//! re-initialised with backoff, then reported `Up` again. It never blocks the async runtime, never stops
//! the daemon or another source, and never decodes payloads.
//!
//! The thread never polls: it parks on the interrupt line until a packet, the next health check or the
//! [`StopBell`], which rings the line's [`Wakeup`] at shutdown (and, between attempts, it parks on the
//! bell itself). An idle radio wakes once per `health_interval`, not 20 times a second.
//!
//! With `commands = true` ([`run_with_commands`]) the thread also transmits: the command dispatcher hands
//! it a frame through the source's `CommandPort` and pokes the interrupt line's [`Wakeup`]; the thread
//! sends it between two interrupts ([`Radio::transmit`]: standby, FIFO, TX, TxDone, back to continuous
//! receive) and answers with the time on air; a request with a `start_at` instant (a LoRaWAN downlink)
//! is started at that instant, the thread waiting for it itself. It tells the port which device each packet came from, so
//! commands for battery nodes go out `rx_delay` after their uplink.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::hal::{Opener, Radio, RxEvent, ThreadDelay, Wakeup};
use super::sim_sx1262::Sx1262Sim;
use super::sim_sx1276::Sx1276Sim;
use super::sx1262::Sx1262;
use super::sx1276::Sx1276;
use super::traffic::{self, SimChip, Traffic};
use super::{validate, validate_backend, Chip, RadioBackend, RadioError, RadioPins, RadioSettings};
use crate::backoff::Backoff;
use crate::frame::FrameError;
use crate::model::{Packet, RadioMeta};
use crate::source::transmit::CommandPort;
use crate::source::{SourceContext, SourceEvent};

/// How long shutdown waits for the radio thread to finish its current SPI exchange.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a radio source until `ctx.shutdown`: emits `Up`, `Packet` (with [`RadioMeta`]), `FrameError`
/// (`RadioCrc`, `RadioHeader`) and `Lost`, and retries with [`Backoff`]. Settings the driver refuses are
/// logged and the source stays idle (config.rs refuses them earlier); absent hardware is retried.
pub async fn run(ctx: SourceContext, settings: RadioSettings, backend: RadioBackend) {
    run_with_commands(ctx, settings, backend, None).await
}

/// [`run`], also transmitting the frames of commands handed to `commands` (the source's `CommandPort`).
pub async fn run_with_commands(
    ctx: SourceContext,
    settings: RadioSettings,
    backend: RadioBackend,
    commands: Option<CommandPort>,
) {
    if let Err(err) = validate(&settings).and_then(|()| validate_backend(&settings, &backend)) {
        log::error!("radio source {}: {err}; the source stays idle", ctx.name);
        ctx.shutdown.cancelled().await;
        return;
    }
    match backend {
        RadioBackend::Simulator {
            devices,
            interval,
            air,
        } => {
            let (chip, opener) = simulated(&settings);
            let traffic_stop = ctx.shutdown.child_token();
            let seed = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let (feeder, wiring) = match air {
                Some(addr) => (
                    tokio::spawn(super::air::serve(chip, addr, traffic_stop.clone())),
                    format!("simulated {} with its air on {addr}", settings.chip.name()),
                ),
                None => (
                    tokio::spawn(traffic::drive(
                        chip,
                        Traffic::new(devices, seed),
                        interval,
                        traffic_stop.clone(),
                    )),
                    format!("simulated {} with {devices} nodes", settings.chip.name()),
                ),
            };
            run_with_port(ctx, settings, opener, wiring, commands).await;
            traffic_stop.cancel();
            let _ = feeder.await;
        }
        RadioBackend::Pi(pins) => {
            let wiring = describe_wiring(&settings, &pins);
            #[cfg(feature = "pi")]
            {
                let opener = super::pi::opener(settings.clone(), pins);
                run_with_port(ctx, settings, opener, wiring, commands).await;
            }
            #[cfg(not(feature = "pi"))]
            {
                let reason = format!(
                    "this build has no `pi` feature, so it cannot drive the {wiring}; the source stays idle"
                );
                log::error!("radio source {}: {reason}", ctx.name);
                if ctx.emit_lost(reason).await {
                    ctx.shutdown.cancelled().await;
                }
            }
        }
    }
}

/// A simulated chip of the settings' kind and the opener that drives it.
pub fn simulated(settings: &RadioSettings) -> (SimChip, Opener) {
    match settings.chip {
        Chip::Sx1276 => {
            let chip = Sx1276Sim::new();
            (
                SimChip::Sx1276(chip.clone()),
                sx1276_sim_opener(&chip, settings),
            )
        }
        Chip::Sx1262 => {
            let chip = Sx1262Sim::new();
            (
                SimChip::Sx1262(chip.clone()),
                sx1262_sim_opener(&chip, settings),
            )
        }
    }
}

/// An opener driving a simulated SX1276 (tests inject into `chip`).
pub fn sx1276_sim_opener(chip: &Sx1276Sim, settings: &RadioSettings) -> Opener {
    let chip = chip.clone();
    let settings = settings.clone();
    Box::new(move || {
        Ok(Box::new(Sx1276::new(
            chip.spi(),
            chip.reset_pin(),
            chip.dio0(),
            ThreadDelay,
            settings.clone(),
        )) as Box<dyn Radio>)
    })
}

/// An opener driving a simulated SX1262 (tests inject into `chip`).
pub fn sx1262_sim_opener(chip: &Sx1262Sim, settings: &RadioSettings) -> Opener {
    let chip = chip.clone();
    let settings = settings.clone();
    Box::new(move || {
        Ok(Box::new(Sx1262::new(
            chip.spi(),
            chip.reset_pin(),
            chip.dio1(),
            chip.busy(),
            ThreadDelay,
            settings.clone(),
        )) as Box<dyn Radio>)
    })
}

/// What an operator should check when the chip does not answer.
fn describe_wiring(settings: &RadioSettings, pins: &RadioPins) -> String {
    let RadioPins {
        spi_path,
        reset_pin,
        irq_pin,
        busy_pin,
        cs_pin,
    } = pins;
    let irq = match settings.chip {
        Chip::Sx1276 => "DIO0",
        Chip::Sx1262 => "DIO1",
    };
    let cs = match cs_pin {
        Some(pin) => format!("NSS on GPIO{pin}"),
        None => "NSS on the SPI device's CE line".to_string(),
    };
    let busy = busy_pin
        .map(|p| format!(", BUSY on GPIO{p}"))
        .unwrap_or_default();
    format!(
        "{} on {} ({cs}, RESET on GPIO{reset_pin}, {irq} on GPIO{irq_pin}{busy}; SPI enabled with \
         dtparam=spi=on, 3.3 V and GND connected)",
        settings.chip.name(),
        spi_path.display()
    )
}

/// [`run`] with the backend already chosen: `open` builds the driver (again after each loss) and
/// `wiring` is what error messages tell the operator to check.
pub async fn run_with(ctx: SourceContext, settings: RadioSettings, open: Opener, wiring: String) {
    run_with_port(ctx, settings, open, wiring, None).await
}

/// [`run_with`], also transmitting what `commands` hands over.
pub async fn run_with_port(
    ctx: SourceContext,
    settings: RadioSettings,
    open: Opener,
    wiring: String,
    commands: Option<CommandPort>,
) {
    let bell = StopBell::default();
    // However this future ends (or is dropped), the thread is told to stop.
    let stop = RingOnDrop(bell.clone());
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let worker = Worker {
        ctx: ctx.clone(),
        bell,
        settings,
        open,
        wiring: Arc::from(wiring),
        commands,
    };
    let spawned = std::thread::Builder::new()
        .name(format!("radio-{}", ctx.name))
        .spawn(move || {
            // Dropped when the thread ends, however it ends: tells the async side.
            let _done = done_tx;
            worker.run();
        });
    if let Err(err) = spawned {
        log::error!("radio source {}: cannot start its thread: {err}", ctx.name);
        ctx.shutdown.cancelled().await;
        return;
    }
    let mut done_rx = done_rx;
    tokio::select! {
        _ = ctx.shutdown.cancelled() => {
            stop.0.ring();
            if tokio::time::timeout(JOIN_TIMEOUT, &mut done_rx).await.is_err() {
                log::warn!("radio source {}: its thread did not stop within {JOIN_TIMEOUT:?}", ctx.name);
            }
        }
        _ = &mut done_rx => {
            // The pipeline is gone (the daemon is stopping); the guard rings for good measure.
        }
    }
}

/// How the async side stops the radio thread wherever it is parked: between attempts on the bell's own
/// condition variable, in a session on the interrupt line (through the line's [`Wakeup`], which the
/// session hands to [`watch`](Self::watch)). Once rung it stays rung.
#[derive(Clone, Default)]
struct StopBell {
    inner: Arc<BellInner>,
}

#[derive(Default)]
struct BellInner {
    state: Mutex<BellState>,
    rung: Condvar,
}

#[derive(Default)]
struct BellState {
    stopped: bool,
    /// The interrupt line the current session parks on.
    line: Option<Wakeup>,
}

impl StopBell {
    fn lock(&self) -> MutexGuard<'_, BellState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the thread: wakes its pause and its interrupt wait.
    fn ring(&self) {
        let line = {
            let mut state = self.lock();
            state.stopped = true;
            self.inner.rung.notify_all();
            state.line.take()
        };
        if let Some(line) = line {
            line.wake();
        }
    }

    fn is_rung(&self) -> bool {
        self.lock().stopped
    }

    /// The line the session parks on from now; woken at once when the bell already rang.
    fn watch(&self, line: Wakeup) {
        let mut state = self.lock();
        if state.stopped {
            drop(state);
            line.wake();
        } else {
            state.line = Some(line);
        }
    }

    /// Parks the calling thread for `delay`; false when the bell rang first.
    fn sleep(&self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        let mut state = self.lock();
        loop {
            if state.stopped {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            state = match self.inner.rung.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// Rings the bell when dropped.
struct RingOnDrop(StopBell);

impl Drop for RingOnDrop {
    fn drop(&mut self) {
        self.0.ring();
    }
}

/// The state of the radio thread.
struct Worker {
    ctx: SourceContext,
    bell: StopBell,
    settings: RadioSettings,
    open: Opener,
    wiring: Arc<str>,
    commands: Option<CommandPort>,
}

/// Why a session ended.
enum Ended {
    /// Shutdown, or the pipeline is gone.
    Stopped,
    /// The chip failed; `was_up` tells whether `Up` had been sent.
    Failed { error: RadioError, was_up: bool },
}

impl Worker {
    fn frame_error(&self, error: FrameError) -> SourceEvent {
        SourceEvent::FrameError {
            source: self.ctx.name.clone(),
            error,
        }
    }

    fn emit(&self, event: SourceEvent) -> bool {
        self.ctx.out.blocking_send(event).is_ok()
    }

    fn run(mut self) {
        let mut backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        // Whether the link is reported lost (so a failing retry does not report it again).
        let mut reported_lost = false;
        while !self.bell.is_rung() {
            let ended = self.session(&mut backoff);
            if let Some(port) = &self.commands {
                port.set_doorbell(None);
                port.set_link(false);
            }
            match ended {
                Ended::Stopped => return,
                Ended::Failed { error, was_up } => {
                    if was_up {
                        reported_lost = false;
                    }
                    let reason = if was_up {
                        format!(
                            "{} stopped working: {error}; re-initialising",
                            self.settings.chip.name()
                        )
                    } else {
                        format!("{error}; check {}", self.wiring)
                    };
                    if reported_lost {
                        log::warn!("radio source {}: still failing: {reason}", self.ctx.name);
                    } else {
                        log::error!("radio source {}: {reason}", self.ctx.name);
                        reported_lost = true;
                        let lost = SourceEvent::Lost {
                            source: self.ctx.name.clone(),
                            reason,
                        };
                        if !self.emit(lost) {
                            return;
                        }
                    }
                    if !self.bell.sleep(backoff.next_delay()) {
                        return;
                    }
                }
            }
        }
    }

    /// One life of the chip: open, init, Up, then interrupts and health checks until something fails.
    fn session(&mut self, backoff: &mut Backoff) -> Ended {
        let mut radio = match self.start_chip() {
            Ok(radio) => radio,
            Err(ended) => return ended,
        };
        let up_failed = |error| Ended::Failed {
            error,
            was_up: true,
        };
        let mut next_health = Instant::now() + self.settings.health_interval;
        loop {
            if self.bell.is_rung() {
                return Ended::Stopped;
            }
            if let Err(error) = self.transmit_requested(radio.as_mut()) {
                return up_failed(error);
            }
            // Parked until a packet, the health check, a command, or the bell (through the line's wakeup).
            let wait = next_health.saturating_duration_since(Instant::now());
            match self.next_event(radio.as_mut(), wait) {
                Ok(Some(event)) => {
                    if !self.emit(event) {
                        return Ended::Stopped;
                    }
                }
                Ok(None) => {}
                Err(error) => return up_failed(error),
            }
            if Instant::now() >= next_health {
                if let Err(error) = radio.check_health() {
                    return up_failed(error);
                }
                // The chip stayed up for a whole interval: retries start from the beginning again.
                backoff.reset();
                next_health = Instant::now() + self.settings.health_interval;
            }
        }
    }

    /// Opens and initialises the chip, then says `Up` and opens the command port's link.
    fn start_chip(&mut self) -> Result<Box<dyn Radio>, Ended> {
        let failed = |error| Ended::Failed {
            error,
            was_up: false,
        };
        let mut radio = (self.open)().map_err(failed)?;
        radio.init().map_err(failed)?;
        self.bell.watch(radio.wakeup());
        log::info!("radio source {}: {} receiving", self.ctx.name, self.wiring);
        if !self.emit(SourceEvent::Up {
            source: self.ctx.name.clone(),
        }) {
            return Err(Ended::Stopped);
        }
        if let Some(port) = &self.commands {
            port.set_doorbell(Some(radio.wakeup()));
            port.set_link(true);
        }
        Ok(radio)
    }

    /// Sends the command waiting on the port, if any, and answers it with its time on air; a failed
    /// transmission ends the session.
    fn transmit_requested(&self, radio: &mut dyn Radio) -> Result<(), RadioError> {
        let Some(request) = self.commands.as_ref().and_then(CommandPort::take_request) else {
            return Ok(());
        };
        if let Some(at) = request.start_at {
            // A timed transmission: this thread waits for the instant itself (a stop ends the wait).
            let wait = at.saturating_duration_since(Instant::now());
            if !wait.is_zero() && !self.bell.sleep(wait) {
                let _ = request.done.send(Err("the radio is stopping".to_string()));
                return Ok(());
            }
        }
        match radio.transmit(&request.bytes, request.polarity) {
            Ok(airtime) => {
                let _ = request.done.send(Ok(Some(airtime)));
                Ok(())
            }
            Err(error) => {
                let _ = request.done.send(Err(format!("transmit failed: {error}")));
                Err(error)
            }
        }
    }

    /// Waits at most `wait` for the chip's next interrupt: a packet (told to the command port, which
    /// times its replies after it), a CRC or header error, or nothing.
    fn next_event(
        &self,
        radio: &mut dyn Radio,
        wait: Duration,
    ) -> Result<Option<SourceEvent>, RadioError> {
        Ok(match radio.wait_event(wait)? {
            Some(RxEvent::Packet(received)) => {
                let packet = Packet {
                    source: self.ctx.name.clone(),
                    bytes: received.bytes,
                    received_at: SystemTime::now(),
                    radio: Some(RadioMeta {
                        rssi_dbm: received.rssi_dbm,
                        snr_db: received.snr_db,
                        frequency_hz: self.settings.frequency_hz,
                        spreading_factor: self.settings.spreading_factor,
                    }),
                };
                if let Some(port) = &self.commands {
                    port.heard(&packet);
                }
                Some(SourceEvent::Packet(packet))
            }
            Some(RxEvent::CrcError) => Some(self.frame_error(FrameError::RadioCrc)),
            Some(RxEvent::HeaderError(why)) => Some(self.frame_error(FrameError::RadioHeader(why))),
            None => None,
        })
    }
}
