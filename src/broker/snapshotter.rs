//! The task that keeps the retained state on disk current: every `snapshot_interval` (the window a power
//! cut may lose last values from; devices re-report) it appends what changed in the store to the
//! retained log ([`super::retained_log`]), and on a clean stop it finishes the write under way before the
//! last one is made. An unchanged store writes nothing.
//!
//! The write itself runs on a blocking thread and cannot be cancelled. Aborting the task mid-write (as an
//! earlier version did) left that thread writing while the final write began, and an older store could
//! land after the newer one. The stop is therefore a signal the task answers between writes, and
//! [`Snapshotter::stop`] awaits it; the log sits behind a mutex that each write holds throughout.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::retained::RetainedStore;
use super::retained_log::RetainedLog;
use super::BrokerError;

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
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = ticker.tick() => {}
                    }
                    if retained.take_dirty() {
                        if let Err(error) = save(&retained, dir.clone(), log.clone()).await {
                            log::error!("retained state not saved: {error}");
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

async fn save(retained: &RetainedStore, dir: PathBuf, log: SharedLog) -> Result<(), BrokerError> {
    let messages = retained.all().await;
    let failed = |reason: String| BrokerError::Publish {
        topic: "(retained log)".into(),
        reason,
    };
    tokio::task::spawn_blocking(move || {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if log.is_none() {
            *log = Some(RetainedLog::open(&dir).map_err(|e| e.to_string())?.0);
        }
        match log.as_mut() {
            Some(log) => log.sync(&messages).map(|_| ()).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(failed)
}
