//! The task that keeps the retained snapshot on disk current: every `snapshot_interval` it writes the
//! store if it changed, and on a clean stop it finishes the write under way before the last one is made.
//!
//! The write itself runs on a blocking thread and cannot be cancelled. Aborting the task mid-write (as an
//! earlier version did) left that thread writing while the final snapshot began: the two shared the
//! temporary file, so one rename found it gone and an older store could land after the newer one. The
//! stop is therefore a signal the task answers between writes, and [`Snapshotter::stop`] awaits it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::retained::{self, RetainedStore};
use super::BrokerError;

/// The periodic snapshot writer of one broker.
pub struct Snapshotter {
    retained: Arc<RetainedStore>,
    dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Snapshotter {
    /// Starts writing `retained` to `dir` every `interval` while it has changed.
    pub fn start(retained: Arc<RetainedStore>, dir: PathBuf, interval: Duration) -> Snapshotter {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn({
            let retained = retained.clone();
            let dir = dir.clone();
            async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = ticker.tick() => {}
                    }
                    if retained.take_dirty() {
                        if let Err(error) = save(&retained, dir.clone()).await {
                            log::error!("retained state not saved: {error}");
                        }
                    }
                }
            }
        });
        Snapshotter {
            retained,
            dir,
            stop,
            task,
        }
    }

    /// Lets a write under way finish, then writes the store a last time.
    pub async fn stop(self) -> Result<(), BrokerError> {
        // The task may have ended already (a panic is logged by tokio); the last write happens anyway.
        let _ = self.stop.send(());
        let _ = self.task.await;
        save(&self.retained, self.dir).await
    }

    /// Stops the task without a last write (the broker was dropped without `shutdown`). A write under way
    /// still completes on its blocking thread.
    pub fn abort(&self) {
        self.task.abort();
    }
}

async fn save(retained: &RetainedStore, dir: PathBuf) -> Result<(), BrokerError> {
    let messages = retained.all().await;
    tokio::task::spawn_blocking(move || retained::write_snapshot(&dir, &messages))
        .await
        .map_err(|e| BrokerError::Publish {
            topic: "(snapshot)".into(),
            reason: e.to_string(),
        })??;
    Ok(())
}
