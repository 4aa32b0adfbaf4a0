//! Watches: the daemon's own subscription to a few exact topics that clients publish on (Home Assistant's
//! birth message `homeassistant/status`). A hook after the policy copies each client publish the policy let
//! through whose topic is watched into a small bounded channel; a full channel drops the copy and counts
//! it (the watcher only needs to see that something arrived). It never changes or holds a message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use tokio::sync::mpsc;

use crate::model::Message;

/// How many watched messages wait for the watcher at most.
pub const WATCH_CAPACITY: usize = 16;

/// The hook of one watch.
pub(super) struct WatchHook {
    topics: Vec<String>,
    sender: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl WatchHook {
    pub(super) const TYPES: [Type; 1] = [Type::MessagePublishCheckAcl];

    pub(super) fn new(
        topics: Vec<String>,
        sender: mpsc::Sender<Message>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        WatchHook {
            topics,
            sender,
            dropped,
        }
    }
}

#[async_trait]
impl Handler for WatchHook {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        if let Parameter::MessagePublishCheckAcl(_session, publish) = param {
            let allowed = match &acc {
                Some(HookResult::PublishAclResult(result)) => result.is_allow(),
                _ => true,
            };
            if allowed && self.topics.iter().any(|topic| **topic == *publish.topic) {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    self.sender.try_send(super::gate::to_message(publish))
                {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        (true, acc)
    }
}
