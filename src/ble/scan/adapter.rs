//! The seam between the Bluetooth LE source and what scans: an [`Opener`] opens an [`Adapter`] (and
//! starts a passive scan on it), which yields the advertisements of each HCI event it reads, stamped
//! with the time they were heard, until the adapter is lost. The raw HCI socket and the replay file
//! implement it; tests implement it with a script.

use std::future::Future;
use std::time::SystemTime;

use crate::ble::hci::Advertisement;

/// One advertisement and when it was heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub advert: Advertisement,
    pub at: SystemTime,
}

/// The adapter is gone or unusable (removed, powered off, blocked by rfkill, a replay file missing or
/// ended with `lost`): the source is lost and reopens it with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AdapterLost(pub String);

/// An adapter with a passive scan running.
pub trait Adapter: Send {
    /// The advertisements of the next event read (possibly none: an event that is no report), or the
    /// adapter's loss.
    fn next(&mut self) -> impl Future<Output = Result<Vec<Heard>, AdapterLost>> + Send;

    /// Stops and starts the scan again (the watchdog's remedy for a scan that went quiet).
    fn restart_scan(&mut self) -> impl Future<Output = Result<(), AdapterLost>> + Send;
}

/// Opens the adapter and starts the scan.
pub trait Opener: Send {
    type Adapter: Adapter;

    /// A human name for logs (`hci0`, the replay file's path).
    fn name(&self) -> String;

    fn open(&mut self) -> impl Future<Output = Result<Self::Adapter, AdapterLost>> + Send;
}
