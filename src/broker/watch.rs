//! Watches: the daemon's own subscription to a few exact topics that clients publish on (Home Assistant's
//! birth message `homeassistant/status`). After the policy let a client publish through, the per-message
//! dispatcher ([`super::message_hooks`]) offers it to [`Watches`], which copies it to each watch of its
//! topic over a small bounded channel; a full channel drops the copy and counts it (the watcher only needs
//! to see that something arrived). It never changes or holds a message. A watch whose receiver is gone
//! (the discovery stage watches again after a reload) is removed when the next one is added, so the list
//! holds at most the live watches plus one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rmqtt::types::Publish;
use tokio::sync::mpsc;

use crate::model::Message;

/// How many watched messages wait for the watcher at most.
pub const WATCH_CAPACITY: usize = 16;

/// One watch: its topics and its watcher's channel.
struct Watch {
    topics: Vec<String>,
    sender: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

/// Every watch of the broker.
#[derive(Default)]
pub(super) struct Watches(RwLock<Vec<Watch>>);

impl Watches {
    /// Copies client publishes on `topics` to `sender` from now on; drops watches nobody receives any
    /// more.
    pub(super) fn add(
        &self,
        topics: Vec<String>,
        sender: mpsc::Sender<Message>,
        dropped: Arc<AtomicU64>,
    ) {
        let mut watches = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        watches.retain(|watch| !watch.sender.is_closed());
        watches.push(Watch {
            topics,
            sender,
            dropped,
        });
    }

    /// A client publish the policy let through: copied to every watch of its topic.
    pub(super) fn offer(&self, publish: &Publish) {
        let watches = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for watch in watches.iter() {
            if watch.topics.iter().any(|topic| **topic == *publish.topic) {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    watch.sender.try_send(super::gate::to_message(publish))
                {
                    watch.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish_on(topic: &str) -> Publish {
        crate::broker::to_publish(&Message {
            topic: topic.to_string(),
            payload: b"online".to_vec(),
            qos: 0,
            retain: false,
        })
    }

    #[test]
    fn a_watched_topic_is_copied_and_a_full_channel_counts_the_drop() {
        let watches = Watches::default();
        let (sender, mut receiver) = mpsc::channel(1);
        let dropped = Arc::new(AtomicU64::new(0));
        watches.add(vec!["homeassistant/status".into()], sender, dropped.clone());
        watches.offer(&publish_on("homeassistant/other"));
        watches.offer(&publish_on("homeassistant/status"));
        watches.offer(&publish_on("homeassistant/status"));
        assert_eq!(
            receiver.try_recv().map(|m| m.topic).ok().as_deref(),
            Some("homeassistant/status")
        );
        assert!(receiver.try_recv().is_err());
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_watch_whose_receiver_is_gone_is_removed_when_another_is_added() {
        let watches = Watches::default();
        for _ in 0..5 {
            let (sender, receiver) = mpsc::channel(1);
            watches.add(vec!["t".into()], sender, Arc::new(AtomicU64::new(0)));
            drop(receiver);
        }
        let (sender, _receiver) = mpsc::channel(1);
        watches.add(vec!["t".into()], sender, Arc::new(AtomicU64::new(0)));
        assert_eq!(watches.0.read().map(|w| w.len()).unwrap_or(0), 1);
    }
}
