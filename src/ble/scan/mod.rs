//! The Bluetooth LE source (`kind = "ble"`): a passive scan of the advertisements around the gateway,
//! through the adapter's raw HCI socket ([`hci_socket`], the default: no D-Bus, needs CAP_NET_RAW and
//! CAP_NET_ADMIN) or from a file of captured HCI events ([`replay_file`], `hci_replay = "FILE"`), both
//! behind [`adapter::Adapter`]. The decoders are the pure modules beside this one (`crate::ble`); this
//! module owns what is between: which senders are published ([`listener`]: `devices = "configured"` or
//! `"all"`, each `[[device]] address` a MAC with its bindkey), the counters of encrypted devices
//! ([`freshness`]: checked and kept in the replay-marks store, wrap-around, resets), and the scan's
//! supervision ([`supervisor`]: the scan watchdog, a lost adapter reopened with backoff).
//!
//! A reading goes to the pipeline as [`SourceEvent::Reading`](crate::source::SourceEvent), like
//! rtl_433's, with the trigger-based flag of BTHome (such a device is not taken offline by silence).

pub mod adapter;
pub mod freshness;
pub mod hci_socket;
pub mod listener;
pub mod replay_file;
pub mod supervisor;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::Mac;
use crate::crypto::keys::FrameKey;
use crate::replay::ReplayGuard;
use crate::source::rtl433::DevicesMode;
use crate::source::transmit::CommandPort;
use crate::source::SourceContext;

/// Where advertisements come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The adapter's raw HCI socket: `adapter = "hci0"`.
    Hci { adapter: String },
    /// `hci_replay = "FILE"`: one HCI event per line, paced (see [`replay_file`]).
    Replay {
        file: PathBuf,
        /// Time between two events.
        interval: Duration,
        /// Start again from the top at the end of the file (else the replay goes silent).
        looping: bool,
    },
}

/// Everything the Bluetooth LE source needs but its devices' keys.
#[derive(Debug, Clone, PartialEq)]
pub struct BleSettings {
    pub backend: Backend,
    /// Which senders are published.
    pub devices: DevicesMode,
    /// No advertisement for this long restarts the scan.
    pub scan_watchdog: Duration,
    /// Accept a device's counter reset after this many consecutive authentic adverts whose counters are
    /// below its mark and growing; 0: only by the `reset_counter` command.
    pub counter_reset_after: u32,
    /// The `[[device]] address`es of this source (filled in from `[[device]]` by the configuration).
    pub configured: Vec<Mac>,
    /// First and longest delay between two opens of a lost adapter.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl Default for BleSettings {
    /// `hci0`, only configured devices, the watchdog at 5 minutes, counter resets by command only,
    /// reopens from 1 s up to 60 s.
    fn default() -> Self {
        BleSettings {
            backend: Backend::Hci {
                adapter: "hci0".to_string(),
            },
            devices: DevicesMode::Configured,
            scan_watchdog: Duration::from_secs(300),
            counter_reset_after: 0,
            configured: Vec::new(),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// A setting the source cannot run with: the key and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub key: &'static str,
    pub message: String,
}

impl BleSettings {
    /// The source's own checks, which the configuration calls (so `check-config` refuses the same).
    pub fn check(&self) -> Result<(), Refusal> {
        let refuse = |key, message: &str| {
            Err(Refusal {
                key,
                message: message.to_string(),
            })
        };
        match &self.backend {
            Backend::Hci { adapter } if hci_socket::adapter_index(adapter).is_none() => {
                return refuse(
                    "adapter",
                    "is not an adapter name; write \"hci0\" (`hciconfig` or `btmgmt info` lists them)",
                )
            }
            Backend::Replay { file, .. } if file.as_os_str().is_empty() => {
                return refuse(
                    "hci_replay",
                    "is empty; write the path of a file of HCI events, one per line in hex",
                )
            }
            Backend::Replay { interval, .. } if *interval > Duration::from_secs(3600) => {
                return refuse(
                    "replay_interval",
                    "is longer than \"1h\"; write the time between two events, e.g. \"1s\"",
                )
            }
            _ => {}
        }
        if self.scan_watchdog < Duration::from_secs(1)
            || self.scan_watchdog > Duration::from_secs(86_400)
        {
            return refuse(
                "scan_watchdog",
                "must be between \"1s\" and \"24h\" (\"5m\" is usual: sensors advertise every few seconds)",
            );
        }
        Ok(())
    }
}

/// What the source is started with: its settings, and the bindkeys of its `[[device]]`s (read from
/// their key files by the wiring).
#[derive(Debug, Clone)]
pub struct BleStart {
    pub settings: BleSettings,
    pub keys: HashMap<Mac, FrameKey>,
    /// The replay-marks store the counters of encrypted devices are kept in.
    pub marks: ReplayGuard,
}

/// Runs the source until `ctx.shutdown` is cancelled or the pipeline goes away. `commands`: the
/// `reset_counter` commands of its devices ([`listener::Listener::command`]).
pub async fn run(ctx: SourceContext, start: BleStart, commands: Option<CommandPort>) {
    let listener = listener::Listener::new(&ctx.name, &start);
    let parts = supervisor::Parts {
        settings: &start.settings,
        listener,
        commands,
    };
    match start.settings.backend.clone() {
        Backend::Hci { adapter } => {
            supervisor::run(ctx, parts, hci_socket::HciOpener::new(&adapter)).await
        }
        Backend::Replay {
            file,
            interval,
            looping,
        } => {
            let opener = replay_file::ReplayOpener::new(file, interval, looping);
            supervisor::run(ctx, parts, opener).await
        }
    }
}
