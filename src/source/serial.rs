//! The serial source: owns one serial port (a USB dongle, a UART, a microcontroller), frames the bytes it
//! reads into packets, and survives the port vanishing. When the port is missing at start or disappears
//! (USB unplugged), it says so once (`SourceEvent::Lost`, one warning), then retries with jittered
//! exponential backoff until the port is back, and says that too. It never decodes payloads.
//!
//! Opening a port sets it exclusive (TIOCEXCL) and raw, as `tokio-serial` does: a second program cannot
//! read the same dongle by accident.
//!
//! With `commands = true` ([`run_with_commands`]) the same task writes the commands' frames to the port:
//! the port is split into its reading and writing halves and one write is in flight at a time beside the
//! read, so reading never waits for a write. While the port is gone the link is reported down and the
//! commands stay queued (`crate::commands`) until it is back or they expire.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use crate::backoff::Backoff;
use crate::frame::{Deframer, Framing};
use crate::source::transmit::{CommandPort, TxRequest};
use crate::source::{SourceContext, SourceEvent};

/// How long a port must have stayed open before the backoff starts over.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Everything the serial source needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    /// Device path; `/dev/serial/by-id/...` links are followed at every (re)open.
    pub path: PathBuf,
    pub baud: u32,
    pub data_bits: DataBits,
    pub parity: Parity,
    pub stop_bits: StopBits,
    pub framing: Framing,
    pub max_frame_len: usize,
    /// First and longest retry delay.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl SerialSettings {
    /// 8N1 at `baud`, line framing, retries from 250 ms up to 30 s.
    pub fn new(path: impl Into<PathBuf>, baud: u32) -> Self {
        SerialSettings {
            path: path.into(),
            baud,
            data_bits: DataBits::Eight,
            parity: Parity::None,
            stop_bits: StopBits::One,
            framing: Framing::Lines,
            max_frame_len: 512,
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// Runs the source until `ctx.shutdown` is cancelled or the pipeline goes away.
pub async fn run(ctx: SourceContext, settings: SerialSettings) {
    run_with_commands(ctx, settings, None).await
}

/// [`run`], also writing the frames of commands handed to `commands` (the source's `CommandPort`).
pub async fn run_with_commands(
    ctx: SourceContext,
    settings: SerialSettings,
    commands: Option<CommandPort>,
) {
    let mut backoff = Backoff::new(settings.retry_initial, settings.retry_max);
    let mut outage_reported = false;
    loop {
        let opened = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            opened = open(&settings) => opened,
        };
        match opened {
            Ok(port) => {
                log::info!(source = ctx.name.as_str(); "serial port {} open at {} baud", settings.path.display(), settings.baud);
                if !ctx
                    .emit(SourceEvent::Up {
                        source: ctx.name.clone(),
                    })
                    .await
                {
                    return;
                }
                let opened_at = Instant::now();
                if let Some(commands) = &commands {
                    commands.set_link(true);
                }
                let lost = read_until_lost(&ctx, port, &settings, commands.as_ref()).await;
                if let Some(commands) = &commands {
                    commands.set_link(false);
                }
                let Some(reason) = lost else {
                    return;
                };
                log::warn!(source = ctx.name.as_str(); "serial port {} lost: {reason}; retrying", settings.path.display());
                outage_reported = true;
                if !ctx.emit_lost(reason).await {
                    return;
                }
                if opened_at.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            Err(reason) => {
                if outage_reported {
                    log::debug!(source = ctx.name.as_str(); "serial port {} still unavailable: {reason}", settings.path.display());
                } else {
                    log::warn!(
                        source = ctx.name.as_str();
                        "serial port {} unavailable: {reason}; retrying with backoff up to {}s (check the cable, the path in [[source]] path, and that the user is in the dialout group)",
                        settings.path.display(),
                        settings.retry_max.as_secs()
                    );
                    outage_reported = true;
                    if !ctx.emit_lost(reason).await {
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

async fn open(settings: &SerialSettings) -> Result<SerialStream, String> {
    let builder = tokio_serial::new(settings.path.to_string_lossy(), settings.baud)
        .data_bits(settings.data_bits)
        .parity(settings.parity)
        .stop_bits(settings.stop_bits);
    // open(2) and the termios set-up are blocking calls: keep them off the runtime's workers.
    tokio::task::spawn_blocking(move || builder.open_native_async())
        .await
        .map_err(|e| format!("open task failed: {e}"))?
        .map_err(|e| e.to_string())
}

/// A write in flight: it owns the writing half until it is done, and gives it back with the result.
type Writing = Pin<Box<dyn Future<Output = (WriteHalf<SerialStream>, std::io::Result<()>)> + Send>>;

fn write_frame(mut writer: WriteHalf<SerialStream>, request: &TxRequest) -> Writing {
    let bytes = request.bytes.clone();
    Box::pin(async move {
        let written = async {
            writer.write_all(&bytes).await?;
            writer.flush().await
        }
        .await;
        (writer, written)
    })
}

/// Reads and frames until the port fails (returns the reason) or the source must stop (returns `None`);
/// writes the frames `commands` hands over meanwhile, one at a time.
async fn read_until_lost(
    ctx: &SourceContext,
    port: SerialStream,
    settings: &SerialSettings,
    commands: Option<&CommandPort>,
) -> Option<String> {
    /// What woke the loop.
    enum Step {
        Stop,
        Read(std::io::Result<usize>),
        Request(TxRequest),
        Written(WriteHalf<SerialStream>, std::io::Result<()>),
    }
    let mut deframer = Deframer::new(settings.framing, settings.max_frame_len);
    let mut buffer = [0u8; 4096];
    let (mut reader, writer): (ReadHalf<SerialStream>, WriteHalf<SerialStream>) =
        tokio::io::split(port);
    let mut idle_writer = Some(writer);
    let mut writing: Option<Writing> = None;
    let mut in_flight: Option<TxRequest> = None;
    loop {
        let want_request = commands.is_some() && idle_writer.is_some();
        let step = tokio::select! {
            _ = ctx.shutdown.cancelled() => Step::Stop,
            read = reader.read(&mut buffer) => Step::Read(read),
            request = async {
                match commands {
                    Some(port) => port.next_request().await,
                    None => std::future::pending().await,
                }
            }, if want_request => Step::Request(request),
            (writer, written) = async {
                match writing.as_mut() {
                    Some(future) => future.await,
                    None => std::future::pending().await,
                }
            }, if writing.is_some() => Step::Written(writer, written),
        };
        match step {
            Step::Stop => return None,
            Step::Read(read) => {
                let count = match read {
                    Ok(0) => return Some("the port closed (device unplugged?)".to_string()),
                    Ok(count) => count,
                    Err(e) => return Some(e.to_string()),
                };
                if !emit_read(ctx, commands, &mut deframer, &buffer[..count]).await {
                    return None;
                }
            }
            Step::Request(request) => {
                if let Some(writer) = idle_writer.take() {
                    writing = Some(write_frame(writer, &request));
                    in_flight = Some(request);
                }
            }
            Step::Written(writer, written) => {
                writing = None;
                idle_writer = Some(writer);
                if let Err(reason) = answer_written(in_flight.take(), written) {
                    return Some(reason);
                }
            }
        }
    }
}

/// Bytes read from the port through the deframer, and the frames they complete sent on; `false` when
/// the pipeline is gone.
async fn emit_read(
    ctx: &SourceContext,
    commands: Option<&CommandPort>,
    deframer: &mut Deframer,
    bytes: &[u8],
) -> bool {
    deframer.push(bytes);
    let received_at = SystemTime::now();
    match commands {
        None => ctx.emit_frames(deframer, received_at).await,
        Some(port) => emit_frames_heard(ctx, port, deframer, received_at).await,
    }
}

/// Answers the command whose frame was written; a failed write is the reason the port is lost.
fn answer_written(request: Option<TxRequest>, written: std::io::Result<()>) -> Result<(), String> {
    match written {
        Ok(()) => {
            if let Some(request) = request {
                let _ = request.done.send(Ok(None));
            }
            Ok(())
        }
        Err(e) => {
            let reason = format!("writing to the port failed: {e}");
            if let Some(request) = request {
                let _ = request.done.send(Err(reason.clone()));
            }
            Err(reason)
        }
    }
}

/// [`SourceContext::emit_frames`], also telling `port` which device each frame came from (for commands
/// delivered after a device's uplink).
async fn emit_frames_heard(
    ctx: &SourceContext,
    port: &CommandPort,
    deframer: &mut Deframer,
    received_at: SystemTime,
) -> bool {
    while let Some(frame) = deframer.next_frame() {
        let event = match frame {
            Ok(bytes) => {
                let packet = crate::model::Packet {
                    source: ctx.name.clone(),
                    bytes,
                    received_at,
                    radio: None,
                };
                port.heard(&packet);
                SourceEvent::Packet(packet)
            }
            Err(error) => SourceEvent::FrameError {
                source: ctx.name.clone(),
                error,
            },
        };
        if !ctx.emit(event).await {
            return false;
        }
    }
    true
}
