//! An admin's request to forget a device, carried from the status page (`POST /api/forget`) to the
//! pipeline, which owns the device registry, and the pipeline's answer. The queue between them is
//! [`QUEUE`] requests deep: a request that finds it full is refused at once ([`ForgetError::Busy`]),
//! and the page waits for an answer at most the time it is given. What forgetting does is the pipeline's
//! (`Registry::forget`, discovery's removals); this module only carries the request and the answer.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

/// Requests waiting for the pipeline, at most.
pub const QUEUE: usize = 4;

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgetOutcome {
    /// The device is gone from the registry; this many retained topics were cleared (its availability,
    /// state and fields, and its Home Assistant discovery configs).
    Forgotten { cleared_topics: usize },
    /// No tracked device has that name.
    Unknown,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgetError {
    #[error("{QUEUE} requests to forget a device are waiting already; try again")]
    Busy,
    #[error("the pipeline is not running")]
    Gone,
    #[error("the pipeline did not answer within {0:?}")]
    TimedOut(Duration),
}

/// One request, as the pipeline receives it.
#[derive(Debug)]
pub struct ForgetRequest {
    /// The device's name (its topic level).
    pub device: String,
    reply: oneshot::Sender<ForgetOutcome>,
}

impl ForgetRequest {
    /// Answers the page (which may have stopped waiting: then nobody hears it).
    pub fn answer(self, outcome: ForgetOutcome) {
        let _ = self.reply.send(outcome);
    }
}

/// The page's end of the queue.
#[derive(Debug, Clone)]
pub struct ForgetSender(mpsc::Sender<ForgetRequest>);

/// The queue: the page's end and the pipeline's.
pub fn channel() -> (ForgetSender, mpsc::Receiver<ForgetRequest>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (ForgetSender(tx), rx)
}

impl ForgetSender {
    /// Asks the pipeline to forget `device` and waits for its answer at most `within`.
    pub async fn ask(&self, device: &str, within: Duration) -> Result<ForgetOutcome, ForgetError> {
        let (reply, answer) = oneshot::channel();
        let request = ForgetRequest {
            device: device.to_string(),
            reply,
        };
        self.0.try_send(request).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ForgetError::Busy,
            mpsc::error::TrySendError::Closed(_) => ForgetError::Gone,
        })?;
        match tokio::time::timeout(within, answer).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(ForgetError::Gone),
            Err(_) => Err(ForgetError::TimedOut(within)),
        }
    }
}

/// The next request, for a `select!` branch: never ready when there is no queue (no status page) or
/// once the page's end is gone.
pub async fn next(requests: &mut Option<mpsc::Receiver<ForgetRequest>>) -> ForgetRequest {
    if let Some(receiver) = requests {
        if let Some(request) = receiver.recv().await {
            return request;
        }
        *requests = None;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_is_answered_refused_when_full_and_bounded_in_time() {
        let (sender, receiver) = channel();
        let mut requests = Some(receiver);
        let asking = tokio::spawn({
            let sender = sender.clone();
            async move { sender.ask("kitchen", Duration::from_secs(5)).await }
        });
        let request = next(&mut requests).await;
        assert_eq!(request.device, "kitchen");
        request.answer(ForgetOutcome::Forgotten { cleared_topics: 3 });
        assert_eq!(
            asking.await.unwrap(),
            Ok(ForgetOutcome::Forgotten { cleared_topics: 3 })
        );

        // Nobody answers: the page gives up at its deadline (paused time), the queue fills up.
        let mut waiting = Vec::new();
        for _ in 0..QUEUE {
            let sender = sender.clone();
            waiting.push(tokio::spawn(async move {
                sender.ask("garage", Duration::from_secs(5)).await
            }));
        }
        tokio::task::yield_now().await;
        assert_eq!(
            sender.ask("garage", Duration::from_secs(5)).await,
            Err(ForgetError::Busy)
        );
        for waiter in waiting {
            assert_eq!(
                waiter.await.unwrap(),
                Err(ForgetError::TimedOut(Duration::from_secs(5)))
            );
        }
        drop(requests);
        assert_eq!(
            sender.ask("garage", Duration::from_secs(5)).await,
            Err(ForgetError::Gone)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_queue_next_never_returns() {
        let mut none = None;
        let waited = tokio::time::timeout(Duration::from_secs(3600), next(&mut none)).await;
        assert!(waited.is_err());
    }
}
