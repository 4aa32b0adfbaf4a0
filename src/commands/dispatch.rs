//! The dispatcher of one source: takes the next command that is due from its [`Downlink`], checks the
//! radio's duty-cycle [`Budget`], hands the frame to the source task ([`TxRequest`]) and waits for it to
//! be sent, and reports every command's end as an [`Outcome`] (`sent`, with the time on air, or
//! `expired`, with the reason). A command the link could not take (the port is gone, the radio failed)
//! goes back to the head of its queue until the link is back or its time is up. It runs on tokio time,
//! so tests drive it with paused time; it never encodes and never publishes.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dutycycle::{Budget, Wait};
use super::outbox::{Downlink, Queued};
use super::CommandStats;
use crate::source::radio::{time_on_air, IqPolarity, RadioSettings};
use crate::source::transmit::{AckResult, TxRequest};

/// How long the source gets to send one frame before the command goes back into its queue.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed send before the next try.
pub const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How a command ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        queued: Queued,
        /// Time on air, for radios.
        airtime: Option<Duration>,
    },
    Expired {
        queued: Queued,
        reason: String,
    },
    /// A sent command its device acknowledged (LoRaWAN's confirmed downlinks).
    Acknowledged {
        queued: Queued,
    },
    /// A sent command its device never acknowledged, given up.
    Unacknowledged {
        queued: Queued,
        reason: String,
    },
}

/// What the dispatcher of one source needs.
pub struct Dispatcher {
    pub downlink: Downlink,
    /// The radio's settings (for the time on air), `None` for serial sources.
    pub radio: Option<RadioSettings>,
    /// The duty-cycle budget, `None` when there is none.
    pub budget: Option<Budget>,
    pub outcomes: mpsc::Sender<Outcome>,
    pub stats: CommandStats,
}

impl Dispatcher {
    /// Runs until `shutdown`; commands still queued then are reported expired.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let now = Instant::now();
            let expired = self.downlink.outbox().take_expired(now);
            for queued in expired {
                let reason = match &queued.held {
                    Some(why) => format!("not sent within its ttl: {why}"),
                    None if queued.command.deliver == super::Deliver::AfterUplink => {
                        "not sent within its ttl: the device sent no frame (after_uplink)"
                            .to_string()
                    }
                    None => "not sent within its ttl: the link was down".to_string(),
                };
                self.report(Outcome::Expired { queued, reason }).await;
            }
            if self.downlink.link_up() && self.send_one(now, &shutdown).await {
                continue;
            }
            if shutdown.is_cancelled() {
                break;
            }
            let wake = self.downlink.outbox().next_wakeup(Instant::now());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.downlink.changed() => {}
                _ = sleep_until(wake) => {}
            }
        }
        let left: Vec<Queued> = {
            let mut outbox = self.downlink.outbox();
            let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
            outbox.take_expired(far)
        };
        for queued in left {
            let reason = "the gateway stopped".to_string();
            self.report(Outcome::Expired { queued, reason }).await;
        }
    }

    /// Sends the next due command, if any; true when one was taken from the queue.
    async fn send_one(&mut self, now: Instant, shutdown: &CancellationToken) -> bool {
        let Some((address, len, requester)) = self.downlink.outbox().peek_ready(now).map(|q| {
            (
                q.command.address.clone(),
                q.command.bytes.len(),
                q.command.reply.requester(),
            )
        }) else {
            return false;
        };
        let airtime = self.radio.as_ref().map(|radio| time_on_air(radio, len));
        if let (Some(budget), Some(airtime)) = (self.budget.as_mut(), airtime) {
            let held = match budget.admit(now, airtime) {
                Err(wait) => Some((
                    wait,
                    format!("the duty-cycle budget ({})", budget.description),
                )),
                Ok(()) => budget
                    .admit_client(now, airtime, &requester)
                    .err()
                    .map(|wait| (wait, budget.client_description())),
            };
            if let Some((wait, budget_text)) = held {
                let why = format!(
                    "{budget_text} has no room for {} ms on air",
                    airtime.as_millis()
                );
                let until = match wait {
                    Wait::Until(at) => Some(at),
                    // Longer than the whole budget: it can only expire; hold it until then.
                    Wait::Never => Some(now + super::dutycycle::WINDOW * 1000),
                };
                self.downlink.outbox().hold(&address, until, &why);
                return false;
            }
        }
        let Some(queued) = self.downlink.outbox().pop_ready(now) else {
            return false;
        };
        let (done_tx, done_rx) = oneshot::channel();
        let (acknowledged, ack_rx) = oneshot::channel();
        self.downlink.request(TxRequest {
            address: queued.command.address.clone(),
            bytes: queued.command.bytes.clone(),
            fport: queued.command.fport,
            polarity: IqPolarity::Standard,
            start_at: None,
            done: done_tx,
            acknowledged,
        });
        let answer = tokio::select! {
            _ = shutdown.cancelled() => None,
            answer = tokio::time::timeout(SEND_TIMEOUT, done_rx) => Some(answer),
        };
        match answer {
            Some(Ok(Ok(Ok(sent_airtime)))) => {
                let airtime = sent_airtime.or(airtime);
                if let (Some(budget), Some(airtime)) = (self.budget.as_mut(), airtime) {
                    budget.record(Instant::now(), airtime, &queued.command.reply.requester());
                }
                self.stats.sent(self.downlink.source(), airtime);
                self.await_acknowledgement(queued.clone(), ack_rx);
                self.report(Outcome::Sent { queued, airtime }).await;
            }
            failed => {
                // The link failed it, timed out, dropped the request, or we are stopping.
                self.downlink.withdraw();
                if let Some(Ok(Ok(Err(reason)))) = &failed {
                    log::warn!(
                        source = self.downlink.source();
                        "command for {} not sent: {reason}; it stays queued until the link is back or its ttl ends",
                        queued.command.device
                    );
                }
                self.downlink.outbox().requeue_front(queued);
                if !shutdown.is_cancelled() {
                    // Give the link a moment rather than spinning on a source that does not answer.
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
        true
    }

    /// Reports what the device made of a sent command, if its source tells (it keeps the sender of a
    /// confirmed downlink until the device acknowledges it or it is given up; others drop it at once,
    /// which ends this wait).
    fn await_acknowledgement(&self, queued: Queued, acknowledged: oneshot::Receiver<AckResult>) {
        let outcomes = self.outcomes.clone();
        tokio::spawn(async move {
            let outcome = match acknowledged.await {
                Ok(Ok(())) => Outcome::Acknowledged { queued },
                Ok(Err(reason)) => Outcome::Unacknowledged { queued, reason },
                Err(_) => return,
            };
            let _ = outcomes.send(outcome).await;
        });
    }

    async fn report(&self, outcome: Outcome) {
        if let Outcome::Expired { .. } = &outcome {
            self.stats.expired(self.downlink.source());
        }
        // The router only ends after every dispatcher; a closed channel means it stopped early.
        let _ = self.outcomes.send(outcome).await;
    }
}

/// Sleeps until `at`, or for ever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
