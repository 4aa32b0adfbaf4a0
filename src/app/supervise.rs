//! No silent task death: every long-lived task of the daemon (pipeline, uplink, sources) runs supervised.
//! A task that panics, or ends with an error while the daemon is meant to run, reports it here; the
//! main loop then logs one ERROR line naming the task and what happened, stops the daemon cleanly (wills,
//! retained state, spool) and exits with status 1, so that systemd restarts it. A daemon that runs on
//! without forwarding, as one did when its uplink task panicked, is never the outcome. A task can also
//! be given a thread of its own ([`Failures::spawn_on_own_thread`], the pipeline's), so that it and the
//! broker's sessions on the runtime's worker run side by side. This module only carries the reports;
//! the main loop decides what to do with them.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Reports kept until the main loop reads them; the first one is what matters, later ones are logged.
const QUEUED_REPORTS: usize = 8;

/// Where supervised tasks report their end.
#[derive(Debug, Clone)]
pub struct Failures(mpsc::Sender<String>);

/// The main loop's end: one line per failed task.
pub type FailureReports = mpsc::Receiver<String>;

/// A channel for failure reports.
pub fn failures() -> (Failures, FailureReports) {
    let (tx, rx) = mpsc::channel(QUEUED_REPORTS);
    (Failures(tx), rx)
}

impl Failures {
    /// Reports that a task ended when it should not have.
    pub fn report(&self, what: String) {
        if let Err(mpsc::error::TrySendError::Full(what)) = self.0.try_send(what) {
            // The main loop is already stopping for an earlier report.
            log::error!("{what}");
        }
    }

    /// Spawns `task` as `name`: a panic is caught and reported; the task's output is returned otherwise.
    pub fn spawn<F>(&self, name: &str, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(Failures::caught(self.clone(), name.to_string(), task))
    }

    /// Runs `task` as `name` on a thread of its own, in a single-threaded runtime there, so that its work
    /// never waits behind the broker's sessions on the main runtime's worker threads (nor they behind
    /// it); reported like [`spawn`](Self::spawn). The returned handle, on the calling runtime, ends with
    /// the task. Tasks it spawns run on its thread and end with it.
    pub fn spawn_on_own_thread<F>(&self, name: &str, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let failures = self.clone();
        let owned_name = name.to_string();
        let started = std::thread::Builder::new()
            .name(format!("sensorgate-{name}"))
            .spawn(move || {
                let _ = sender.send(failures.block_on_own_runtime(owned_name, task));
            });
        if let Err(error) = started {
            self.report(format!("{name}: cannot start its thread: {error}"));
        }
        tokio::spawn(async move { receiver.await.ok().flatten() })
    }

    /// Runs `task` as `name` to its end on this thread, in a single-threaded runtime of its own.
    fn block_on_own_runtime<F: Future>(&self, name: String, task: F) -> Option<F::Output> {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(Failures::caught(self.clone(), name, task)),
            Err(error) => {
                self.report(format!("{name}: cannot start its runtime: {error}"));
                None
            }
        }
    }

    /// `task`, with a panic caught and reported as `name`'s.
    async fn caught<F: Future>(failures: Failures, name: String, task: F) -> Option<F::Output> {
        match AssertUnwindSafe(task).catch_unwind().await {
            Ok(output) => Some(output),
            Err(panic) => {
                failures.report(format!("{name} panicked: {}", panic_message(&*panic)));
                None
            }
        }
    }
}

/// The text a panic was raised with.
fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_panicking_task_is_reported_with_its_name_and_message() {
        let (failures, mut reports) = failures();
        let handle = failures.spawn("uplink", async {
            if std::hint::black_box(true) {
                panic!("overflow when adding duration to instant");
            }
            7
        });
        assert_eq!(handle.await.unwrap(), None);
        assert_eq!(
            reports.recv().await.unwrap(),
            "uplink panicked: overflow when adding duration to instant"
        );
    }

    #[tokio::test]
    async fn a_task_that_ends_normally_reports_nothing() {
        let (failures, mut reports) = failures();
        assert_eq!(
            failures.spawn("pipeline", async { 7 }).await.unwrap(),
            Some(7)
        );
        drop(failures);
        assert_eq!(reports.recv().await, None);
    }

    #[tokio::test]
    async fn a_task_on_its_own_thread_runs_there_and_returns_its_output() {
        let (failures, mut reports) = failures();
        let caller = std::thread::current().id();
        let handle = failures.spawn_on_own_thread("pipeline", async move {
            // Its own runtime: a timer and a spawned task work there.
            tokio::time::sleep(Duration::from_millis(1)).await;
            let inner = tokio::spawn(async { 5 }).await.unwrap();
            let thread = std::thread::current();
            (
                thread.id() != caller,
                thread.name().map(str::to_string),
                inner,
            )
        });
        assert_eq!(
            handle.await.unwrap(),
            Some((true, Some("sensorgate-pipeline".to_string()), 5))
        );
        drop(failures);
        assert_eq!(reports.recv().await, None);
    }

    #[tokio::test]
    async fn a_panic_on_its_own_thread_is_reported_with_its_name() {
        let (failures, mut reports) = failures();
        let handle = failures.spawn_on_own_thread("pipeline", async {
            if std::hint::black_box(true) {
                panic!("index out of bounds");
            }
            7
        });
        assert_eq!(handle.await.unwrap(), None);
        assert_eq!(
            reports.recv().await.unwrap(),
            "pipeline panicked: index out of bounds"
        );
    }

    #[tokio::test]
    async fn reports_beyond_the_queue_are_logged_not_lost_in_a_block() {
        let (failures, mut reports) = failures();
        for i in 0..QUEUED_REPORTS + 3 {
            failures.report(format!("task {i} failed"));
        }
        assert_eq!(reports.recv().await.unwrap(), "task 0 failed");
    }
}
