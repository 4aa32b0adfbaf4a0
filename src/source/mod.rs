//! Sources: the tasks that own a device (a serial port, a radio, the simulator) and turn what it receives
//! into [`SourceEvent`]s on one channel. A source never decodes payloads and never publishes: it frames
//! bytes into packets, reports its link going down and coming back, and retries on its own.

pub mod radio;
pub mod serial;
pub mod simulator;
pub mod transmit;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::time::SystemTime;

use crate::frame::{Deframer, FrameError};
use crate::model::Packet;

/// What a source reports to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// The link is up (port opened, radio initialised). Sent at start and after every recovery.
    Up { source: String },
    /// One frame, ready for decoding.
    Packet(Packet),
    /// A frame that could not be framed (too long, bad escape, bad UTF-8, radio CRC error...). Counted.
    FrameError { source: String, error: FrameError },
    /// The link is lost (port vanished, radio stopped answering); the source is retrying. The wills of the
    /// source's devices are published.
    Lost { source: String, reason: String },
}

/// What every source task is handed: its name, where to send events, and when to stop.
#[derive(Debug, Clone)]
pub struct SourceContext {
    pub name: String,
    pub out: mpsc::Sender<SourceEvent>,
    pub shutdown: CancellationToken,
}

impl SourceContext {
    /// Sends an event; returns false when the pipeline is gone (the daemon is stopping).
    pub async fn emit(&self, event: SourceEvent) -> bool {
        self.out.send(event).await.is_ok()
    }

    /// Emits every complete frame the deframer holds (a packet, or a frame error), stamped `received_at`.
    /// Returns false when the pipeline is gone.
    pub async fn emit_frames(&self, deframer: &mut Deframer, received_at: SystemTime) -> bool {
        while let Some(frame) = deframer.next_frame() {
            let event = match frame {
                Ok(bytes) => SourceEvent::Packet(Packet {
                    source: self.name.clone(),
                    bytes,
                    received_at,
                    radio: None,
                }),
                Err(error) => SourceEvent::FrameError {
                    source: self.name.clone(),
                    error,
                },
            };
            if !self.emit(event).await {
                return false;
            }
        }
        true
    }
}
