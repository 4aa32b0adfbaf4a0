//! The seam a source transmits through: the source task's end of its outgoing commands. The commands
//! side (`crate::commands`) queues, paces and retries; the source only reports its link and the frames it
//! hears ([`CommandPort::set_link`], [`CommandPort::heard`]) and takes one [`TxRequest`] at a time, which
//! it answers with a [`TxResult`]. The seam is defined here, below both sides, so that a source never
//! imports the commands' internals and the commands import only this from the sources' side of it
//! ([`CommandQueue`] is what they implement).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::radio::hal::{IqPolarity, Wakeup};
use crate::model::Packet;

/// What a source reports back for one transmission: the time on air (radios), or why it failed.
pub type TxResult = Result<Option<Duration>, String>;
/// What became of a transmission its device acknowledges later (LoRaWAN's confirmed downlinks): `Ok`
/// when the device acknowledged it, `Err` with why it is given up. A source without acknowledgements
/// drops its sender.
pub type AckResult = Result<(), String>;

/// One transmission handed to the source task.
#[derive(Debug)]
pub struct TxRequest {
    /// The device it is for, as its source knows it (a source that sends only into the receive window
    /// of the device it just heard, as LoRaWAN's does, checks it; serial and radio sources ignore it).
    pub address: String,
    pub bytes: Vec<u8>,
    /// The port its payload goes on, where the command's encoder chose one (a codec's
    /// `encodeDownlink` fPort); sources without ports ignore it.
    pub fport: Option<u8>,
    /// The IQ polarity to send with (radios; LoRaWAN downlinks are inverted).
    pub polarity: IqPolarity,
    /// When to start sending (a LoRaWAN downlink in its receive window, handed over a little early so
    /// that the radio thread itself waits for the instant); `None`: at once.
    pub start_at: Option<std::time::Instant>,
    pub done: oneshot::Sender<TxResult>,
    /// Answered after `done`, when the device acknowledges the frame or it is given up.
    pub acknowledged: oneshot::Sender<AckResult>,
}

/// The commands' side of one source's seam: what a [`CommandPort`] calls.
pub trait CommandQueue: Send + Sync {
    /// The source's link is up (port open, radio receiving) or down; a request waiting when it goes
    /// down is answered as failed, so the command goes back into its queue.
    fn set_link(&self, up: bool);
    /// A frame arrived (its end is now).
    fn heard(&self, packet: &Packet);
    /// A frame of the device at `address` arrived (its end is now), for a source that finds the address
    /// itself (LoRaWAN); returns whether commands wait for that device.
    fn heard_device(&self, address: &str) -> bool;
    /// The next transmission to make, when there is one.
    fn take_request(&self) -> Option<TxRequest>;
    /// Waits until a request may be waiting (a wakeup may be spurious: check with `take_request`).
    fn request_ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// The interrupt line the radio thread parks on now (`None` between sessions), poked when a
    /// request arrives.
    fn set_doorbell(&self, line: Option<Wakeup>);
    /// The source's name.
    fn source(&self) -> &str;
}

/// The source task's handle on its outgoing commands.
#[derive(Clone)]
pub struct CommandPort(Arc<dyn CommandQueue>);

impl CommandPort {
    /// The port of the commands queued by `queue`.
    pub fn new(queue: Arc<dyn CommandQueue>) -> Self {
        CommandPort(queue)
    }

    /// The source's link is up or down (see [`CommandQueue::set_link`]).
    pub fn set_link(&self, up: bool) {
        self.0.set_link(up);
    }

    /// A frame arrived (its end is now): its device's receive window opens `rx_delay` from now.
    pub fn heard(&self, packet: &Packet) {
        self.0.heard(packet);
    }

    /// A frame of the device at `address` arrived (its end is now): its receive window opens
    /// `rx_delay` from now. Returns whether commands wait for it.
    pub fn heard_device(&self, address: &str) -> bool {
        self.0.heard_device(address)
    }

    /// The next transmission to make, when there is one.
    pub fn take_request(&self) -> Option<TxRequest> {
        self.0.take_request()
    }

    /// Waits for the next transmission (serial sources, in their `select!`).
    pub async fn next_request(&self) -> TxRequest {
        loop {
            if let Some(request) = self.take_request() {
                return request;
            }
            self.0.request_ready().await;
        }
    }

    /// The interrupt line the radio thread parks on now (`None` between sessions).
    pub fn set_doorbell(&self, line: Option<Wakeup>) {
        self.0.set_doorbell(line);
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        self.0.source()
    }
}
