//! Sources: the tasks that own a device (a serial port, a radio, the simulator, an rtl_433 process, a
//! LoRaWAN packet forwarder's socket) and turn what it receives into [`SourceEvent`]s on one channel. A
//! source never publishes: it frames bytes into packets, reports its link going down and coming back, and
//! retries on its own. Only a source whose receiver decodes for it (rtl_433), or that must authenticate
//! and decrypt a frame with its device's keys first (the LoRaWAN network server, `crate::lorawan::udp`),
//! hands over finished readings ([`SourceEvent::Reading`]).

pub mod radio;
pub mod rtl433;
pub mod serial;
pub mod simulator;
pub mod transmit;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::time::SystemTime;

use crate::frame::{Deframer, FrameError};
use crate::model::{Packet, Reading};

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
    /// A reading a source decoded itself (rtl_433; the LoRaWAN network server, after authenticating and
    /// decrypting the frame with the device's keys); it goes straight to the registry. `trigger`: a
    /// button or contact, whose silence says nothing, so it is not taken offline by silence unless its
    /// `[[device]]` sets `offline_after`.
    Reading { reading: Reading, trigger: bool },
    /// A sender the source heard but does not publish (or has no `[[device]]`), for the heard list.
    Heard {
        source: String,
        address: String,
        rssi: Option<f64>,
        at: SystemTime,
    },
    /// A repeat of a sender's last reading within the source's window: dropped, counted.
    Duplicate { source: String },
    /// Output of a self-decoding source that is no reading (not JSON, no model): counted.
    DecodeError { source: String, error: String },
    /// A LoRaWAN packet forwarder came online (its first PULL_DATA, or again) or went offline (its
    /// keepalives stopped), with the devices (their addresses) whose last uplink only offline gateways
    /// heard: they go offline with it.
    GatewayAvailability {
        source: String,
        gateway: u64,
        online: bool,
        devices_offline: Vec<String>,
    },
    /// Something a self-decoding source authenticated itself and refused (a Bluetooth LE advertisement:
    /// wrong bindkey, an old counter, plaintext from a keyed device): counted by its reason, logged
    /// rate-limited with `detail`.
    Refused {
        source: String,
        refusal: Refusal,
        detail: String,
    },
    /// The state of a supervised receiver process, for the stats.
    State {
        source: String,
        state: ReceiverState,
    },
}

/// Why a self-decoding source refused what it heard ([`SourceEvent::Refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It did not authenticate (wrong key or address, changed bytes): `auth_failed`.
    AuthFailed,
    /// Authentic, but its counter is not new: `replayed`.
    Replayed,
    /// Plaintext from a device that has a key: `plaintext_refused`.
    Plaintext,
}

/// Where a supervised receiver (rtl_433) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverState {
    /// The process was started and has printed nothing yet.
    Starting,
    /// The process runs and prints: it has the receiver.
    Running,
    /// It stalled and was killed (a restart follows).
    Stalled,
    /// Waiting to start it again.
    Restarting,
    /// No receiver: the link is lost, retried with backoff.
    Lost,
    /// A one-shot replay ended; the source is done.
    Finished,
}

impl ReceiverState {
    /// The name in `{base}/gateway/stats`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverState::Starting => "starting",
            ReceiverState::Running => "running",
            ReceiverState::Stalled => "stalled",
            ReceiverState::Restarting => "restarting",
            ReceiverState::Lost => "lost",
            ReceiverState::Finished => "finished",
        }
    }
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

    /// Says the source lost its link, for `reason`. Returns false when the pipeline is gone.
    pub async fn emit_lost(&self, reason: String) -> bool {
        let source = self.name.clone();
        self.emit(SourceEvent::Lost { source, reason }).await
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
