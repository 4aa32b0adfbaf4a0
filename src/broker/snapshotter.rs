//! The task that keeps the retained state on disk current: every `snapshot_interval` (the window a power
//! cut may lose last values from; devices re-report) it appends what changed in the store to the
//! retained log ([`super::retained_log`]), and on a clean stop it finishes the write under way before the
//! last one is made. An unchanged store writes nothing. After each write the allocator's free pages are
//! given back to the system ([`crate::allocator::give_back_free_pages`]): a write reads a view of the
//! whole store, and the room of that view, and of the bursts of changes before it, would otherwise stay
//! resident.
//!
//! The write itself runs on a blocking thread and cannot be cancelled. Aborting the task mid-write (as an
//! earlier version did) left that thread writing while the final write began, and an older store could
//! land after the newer one. The stop is therefore a signal the task answers between writes, and
//! [`Snapshotter::stop`] awaits it; the log sits behind a mutex that each write holds throughout.
//!
//! A write that fails (a full disk) is tried again at every interval until one succeeds, whether or not
//! the store changed meanwhile: the retained messages stay in memory, where the broker serves them. A
//! full file system is logged once, naming it ([`crate::full_disk`]), and its end once; other errors at
//! most once a minute.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::retained::RetainedStore;
use super::retained_log::RetainedLog;
use super::BrokerError;
use crate::full_disk::FullEpisode;
use crate::ratelimit::{suppressed_suffix, RateLimiter};

/// The log, opened on the first write (so that start-up opens it once, in the restore).
type SharedLog = Arc<Mutex<Option<RetainedLog>>>;

/// The periodic writer of one broker's retained state.
pub struct Snapshotter {
    retained: Arc<RetainedStore>,
    dir: PathBuf,
    log: SharedLog,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Snapshotter {
    /// Starts writing what changed in `retained` to the log in `dir` every `interval`.
    pub fn start(retained: Arc<RetainedStore>, dir: PathBuf, interval: Duration) -> Snapshotter {
        let (stop, mut stopped) = oneshot::channel();
        let log: SharedLog = Arc::new(Mutex::new(None));
        let task = tokio::spawn({
            let retained = retained.clone();
            let dir = dir.clone();
            let log = log.clone();
            async move {
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut unsaved = false;
                let mut full = FullEpisode::new("retained log");
                let error_log = RateLimiter::new(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = ticker.tick() => {}
                    }
                    // Take the flag first: a change during the write is saved at the next tick.
                    if !retained.take_dirty() && !unsaved {
                        continue;
                    }
                    let written = write(&retained, dir.clone(), log.clone()).await;
                    unsaved = written.is_err();
                    match written {
                        Ok(()) => full.cleared(),
                        Err(Unsaved {
                            filesystem: Some(filesystem),
                            ..
                        }) => {
                            full.hit(
                                &filesystem,
                                &format!(
                                    "retained messages stay in memory, served by the broker, and \
                                     saving them is tried again every {interval:?}"
                                ),
                            );
                        }
                        Err(Unsaved { reason, .. }) => {
                            if let Some(suppressed) = error_log.admit("save") {
                                log::error!(
                                    "retained state not saved: {reason}; tried again every \
                                     {interval:?}{}",
                                    suppressed_suffix(suppressed)
                                );
                            }
                        }
                    }
                }
            }
        });
        Snapshotter {
            retained,
            dir,
            log,
            stop,
            task,
        }
    }

    /// Lets a write under way finish, then writes what changed a last time.
    pub async fn stop(self) -> Result<(), BrokerError> {
        // The task may have ended already (a panic is logged by tokio); the last write happens anyway.
        let _ = self.stop.send(());
        let _ = self.task.await;
        save(&self.retained, self.dir, self.log).await
    }

    /// Stops the task without a last write (the broker was dropped without `shutdown`). A write under way
    /// still completes on its blocking thread.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Why a write did not happen: the error, and the file system when it was full.
struct Unsaved {
    reason: String,
    filesystem: Option<String>,
}

async fn save(retained: &RetainedStore, dir: PathBuf, log: SharedLog) -> Result<(), BrokerError> {
    write(retained, dir, log)
        .await
        .map_err(|unsaved| BrokerError::Publish {
            topic: "(retained log)".into(),
            reason: unsaved.reason,
        })
}

/// Makes the log hold what the store holds (on a blocking thread).
async fn write(retained: &RetainedStore, dir: PathBuf, log: SharedLog) -> Result<(), Unsaved> {
    let messages = retained.shared();
    tokio::task::spawn_blocking(move || {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        let synced = match log.as_mut() {
            Some(log) => log.sync(&messages).map(|_| ()),
            None => RetainedLog::open(&dir).and_then(|(opened, _)| {
                let opened = log.insert(opened);
                opened.sync(&messages).map(|_| ())
            }),
        };
        // The view of the whole store, and what the write built from it, are freed: their room goes
        // back to the system instead of staying resident until the next write.
        drop((log, messages));
        crate::allocator::give_back_free_pages();
        synced.map_err(|error| Unsaved {
            filesystem: error
                .is_disk_full()
                .then(|| crate::full_disk::describe(&dir)),
            reason: error.to_string(),
        })
    })
    .await
    .map_err(|e| Unsaved {
        reason: e.to_string(),
        filesystem: None,
    })?
}
