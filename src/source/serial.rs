//! The serial source: owns one serial port (a USB dongle, a UART, a microcontroller), frames the bytes it
//! reads into packets, and survives the port vanishing. When the port is missing at start or disappears
//! (USB unplugged), it says so once (`SourceEvent::Lost`, one warning), then retries with jittered
//! exponential backoff until the port is back, and says that too. It never decodes payloads.
//!
//! Opening a port sets it exclusive (TIOCEXCL) and raw, as `tokio-serial` does: a second program cannot
//! read the same dongle by accident.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncReadExt;
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use crate::backoff::Backoff;
use crate::frame::{Deframer, Framing};
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
                let Some(reason) = read_until_lost(&ctx, port, &settings).await else {
                    return;
                };
                log::warn!(source = ctx.name.as_str(); "serial port {} lost: {reason}; retrying", settings.path.display());
                outage_reported = true;
                if !ctx
                    .emit(SourceEvent::Lost {
                        source: ctx.name.clone(),
                        reason,
                    })
                    .await
                {
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
                    if !ctx
                        .emit(SourceEvent::Lost {
                            source: ctx.name.clone(),
                            reason,
                        })
                        .await
                    {
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

/// Reads and frames until the port fails (returns the reason) or the source must stop (returns `None`).
async fn read_until_lost(
    ctx: &SourceContext,
    mut port: SerialStream,
    settings: &SerialSettings,
) -> Option<String> {
    let mut deframer = Deframer::new(settings.framing, settings.max_frame_len);
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::select! {
            _ = ctx.shutdown.cancelled() => return None,
            read = port.read(&mut buffer) => read,
        };
        let count = match read {
            Ok(0) => return Some("the port closed (device unplugged?)".to_string()),
            Ok(count) => count,
            Err(e) => return Some(e.to_string()),
        };
        deframer.push(&buffer[..count]);
        let received_at = SystemTime::now();
        if !ctx.emit_frames(&mut deframer, received_at).await {
            return None;
        }
    }
}
