//! The scan's supervision: open the adapter (the scan starts with it), hand each advertisement to the
//! [`Listener`], and never stop silently. No advertisement at all for `scan_watchdog` (any advertiser
//! counts, not only sensors: a flat is never that quiet while the radio hears) restarts the scan,
//! counted as the source's `restarts` with the state `restarting` then `running`. An adapter that is lost
//! (removed, powered off, a write refused, a replay file gone) marks the source lost, which publishes its
//! devices' wills once, and it is reopened with backoff from `retry_initial` up to `retry_max`; the
//! backoff starts over once an advertisement arrives. Warnings are rate-limited per kind. The source's
//! commands (`reset_counter`) are taken between two advertisements, whatever the adapter's state: its
//! command link is always up.

use std::time::Duration;

use tokio::time::Instant;

use super::adapter::{Adapter, AdapterLost, Opener};
use super::listener::Listener;
use super::BleSettings;
use crate::backoff::Backoff;
use crate::ratelimit::{suppressed_suffix, RateLimiter};
use crate::source::transmit::{CommandPort, TxRequest};
use crate::source::{ReceiverState, SourceContext, SourceEvent};

/// How a scan ended.
enum Ending {
    /// The daemon is stopping (or the pipeline is gone).
    Stop,
    Lost(AdapterLost),
}

/// What the supervision works with besides the adapter.
pub struct Parts<'a> {
    pub settings: &'a BleSettings,
    pub listener: Listener,
    /// The source's commands, when the command router runs.
    pub commands: Option<CommandPort>,
}

/// The next command, or never without a port.
async fn next_command(commands: &Option<CommandPort>) -> TxRequest {
    match commands {
        Some(port) => port.next_request().await,
        None => std::future::pending().await,
    }
}

/// Answers one command.
fn answer(listener: &mut Listener, request: TxRequest) {
    let result = listener.command(&request.bytes);
    // The dispatcher gone (stopping) needs no answer.
    let _ = request.done.send(result);
}

/// Runs the source until `ctx.shutdown` is cancelled or the pipeline goes away.
pub async fn run<O: Opener>(ctx: SourceContext, parts: Parts<'_>, mut opener: O) {
    let Parts {
        settings,
        mut listener,
        commands,
    } = parts;
    if let Some(port) = &commands {
        port.set_link(true);
    }
    let source = ctx.name.clone();
    let warnings = RateLimiter::new(Duration::from_secs(60));
    let mut backoff = Backoff::new(settings.retry_initial, settings.retry_max);
    let mut lost_reported = false;
    loop {
        let opened = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            opened = opener.open() => opened,
        };
        let lost = match opened {
            Ok(mut adapter) => {
                log::info!(source = source.as_str(); "scanning passively on {}", opener.name());
                lost_reported = false;
                let up = SourceEvent::Up {
                    source: source.clone(),
                };
                if !ctx.emit(up).await || !state(&ctx, ReceiverState::Running).await {
                    return;
                }
                let scanning = Scanning {
                    ctx: &ctx,
                    settings,
                    listener: &mut listener,
                    commands: &commands,
                    warnings: &warnings,
                };
                match scanning.scan(&mut adapter, &mut backoff).await {
                    Ending::Stop => return,
                    Ending::Lost(lost) => lost,
                }
            }
            Err(lost) => lost,
        };
        if let Some(suppressed) = warnings.admit("lost") {
            log::warn!(
                source = source.as_str();
                "the Bluetooth adapter is lost: {lost}; its devices are offline, reopening it with backoff up to {}s{}",
                settings.retry_max.as_secs(),
                suppressed_suffix(suppressed)
            );
        }
        if !lost_reported {
            lost_reported = true;
            let event = SourceEvent::Lost {
                source: source.clone(),
                reason: lost.0,
            };
            if !ctx.emit(event).await {
                return;
            }
        }
        if !state(&ctx, ReceiverState::Lost).await {
            return;
        }
        let retry = tokio::time::sleep(backoff.next_delay());
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = &mut retry => break,
                request = next_command(&commands) => answer(&mut listener, request),
            }
        }
    }
}

async fn state(ctx: &SourceContext, state: ReceiverState) -> bool {
    ctx.emit(SourceEvent::State {
        source: ctx.name.clone(),
        state,
    })
    .await
}

/// One open adapter's scan and what it needs.
struct Scanning<'a> {
    ctx: &'a SourceContext,
    settings: &'a BleSettings,
    listener: &'a mut Listener,
    commands: &'a Option<CommandPort>,
    warnings: &'a RateLimiter,
}

impl Scanning<'_> {
    /// Reads the adapter until it is lost or the daemon stops; restarts the scan on silence.
    async fn scan<A: Adapter>(self, adapter: &mut A, backoff: &mut Backoff) -> Ending {
        let Scanning {
            ctx,
            settings,
            listener,
            commands,
            warnings,
        } = self;
        let source = ctx.name.as_str();
        let mut deadline = Instant::now() + settings.scan_watchdog;
        loop {
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled() => return Ending::Stop,
                request = next_command(commands) => {
                    answer(listener, request);
                    continue;
                }
                next = tokio::time::timeout_at(deadline, adapter.next()) => next,
            };
            match next {
                Err(_silence) => {
                    if let Some(suppressed) = warnings.admit("watchdog") {
                        log::warn!(
                            source = source;
                            "no advertisement for {}s: restarting the scan{}",
                            settings.scan_watchdog.as_secs(),
                            suppressed_suffix(suppressed)
                        );
                    }
                    if !state(ctx, ReceiverState::Restarting).await {
                        return Ending::Stop;
                    }
                    if let Err(lost) = adapter.restart_scan().await {
                        return Ending::Lost(lost);
                    }
                    if !state(ctx, ReceiverState::Running).await {
                        return Ending::Stop;
                    }
                    deadline = Instant::now() + settings.scan_watchdog;
                }
                Ok(Err(lost)) => return Ending::Lost(lost),
                Ok(Ok(heard)) => {
                    if heard.is_empty() {
                        continue;
                    }
                    deadline = Instant::now() + settings.scan_watchdog;
                    backoff.reset();
                    for one in &heard {
                        for event in listener.hear(one) {
                            if !ctx.emit(event).await {
                                return Ending::Stop;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::adapter::Heard;
    use super::super::BleStart;
    use super::*;
    use crate::ble::hci::{AddressType, Advertisement};
    use crate::ble::Mac;
    use crate::replay::ReplayGuard;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    /// What a scripted adapter does next.
    #[derive(Debug, Clone)]
    enum Act {
        /// An advert after this long.
        Advert(Duration),
        /// Lost after this long.
        Lose(Duration),
    }

    /// Opens: `None` fails, `Some(acts)` gives an adapter playing them (then silence). Restarts are
    /// counted.
    struct Script {
        opens: VecDeque<Option<Vec<Act>>>,
        restarts: Arc<Mutex<u32>>,
    }

    struct Played {
        acts: VecDeque<Act>,
        restarts: Arc<Mutex<u32>>,
    }

    impl Opener for Script {
        type Adapter = Played;
        fn name(&self) -> String {
            "script".into()
        }
        async fn open(&mut self) -> Result<Played, AdapterLost> {
            match self.opens.pop_front().flatten() {
                Some(acts) => Ok(Played {
                    acts: acts.into(),
                    restarts: self.restarts.clone(),
                }),
                None => Err(AdapterLost("no adapter".into())),
            }
        }
    }

    impl Adapter for Played {
        async fn next(&mut self) -> Result<Vec<Heard>, AdapterLost> {
            match self.acts.pop_front() {
                Some(Act::Advert(after)) => {
                    tokio::time::sleep(after).await;
                    Ok(vec![Heard {
                        advert: Advertisement {
                            address: Mac([1, 2, 3, 4, 5, 6]),
                            address_type: AddressType::Public,
                            rssi: -70,
                            // BTHome, plain: temperature 25.00 °C.
                            data: vec![6, 0x16, 0xD2, 0xFC, 0x40, 0x02, 0xC4],
                        },
                        at: SystemTime::now(),
                    }])
                }
                Some(Act::Lose(after)) => {
                    tokio::time::sleep(after).await;
                    Err(AdapterLost("gone".into()))
                }
                None => std::future::pending().await,
            }
        }
        async fn restart_scan(&mut self) -> Result<(), AdapterLost> {
            *self.restarts.lock().unwrap() += 1;
            Ok(())
        }
    }

    fn settings() -> BleSettings {
        BleSettings {
            scan_watchdog: Duration::from_secs(300),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            ..BleSettings::default()
        }
    }

    /// Runs the script for `run_for` of paused time; the events with the paused clock's time of each.
    async fn play(
        opens: Vec<Option<Vec<Act>>>,
        run_for: Duration,
    ) -> (Vec<(Duration, SourceEvent)>, u32) {
        let (tx, mut rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            name: "ble".into(),
            out: tx,
            shutdown: shutdown.clone(),
        };
        let settings = settings();
        let start = BleStart {
            settings: settings.clone(),
            keys: Default::default(),
            marks: ReplayGuard::in_memory(),
        };
        let restarts = Arc::new(Mutex::new(0));
        let script = Script {
            opens: opens.into(),
            restarts: restarts.clone(),
        };
        let listener = Listener::new("ble", &start);
        let began = Instant::now();
        let task = tokio::spawn(async move {
            let parts = Parts {
                settings: &settings,
                listener,
                commands: None,
            };
            run(ctx, parts, script).await
        });
        let mut events = Vec::new();
        let stop = tokio::time::sleep(run_for);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Some(event) = rx.recv() => events.push((began.elapsed(), event)),
            }
        }
        shutdown.cancel();
        task.await.unwrap();
        let restarts = *restarts.lock().unwrap();
        (events, restarts)
    }

    fn states(events: &[(Duration, SourceEvent)]) -> Vec<(u64, &'static str)> {
        events
            .iter()
            .filter_map(|(at, event)| match event {
                SourceEvent::State { state, .. } => Some((at.as_secs(), state.as_str())),
                SourceEvent::Up { .. } => Some((at.as_secs(), "up")),
                SourceEvent::Lost { .. } => Some((at.as_secs(), "lost-event")),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn silence_restarts_the_scan_every_watchdog_period_and_an_advert_postpones_it() {
        let acts = vec![Act::Advert(Duration::from_secs(100))];
        let (events, restarts) = play(vec![Some(acts)], Duration::from_secs(900)).await;
        // The advert at 100 s moves the first restart to 400 s, then every 300 s: 400, 700; the run
        // ends at 900.
        assert_eq!(restarts, 2, "{events:?}");
        assert_eq!(
            states(&events),
            vec![
                (0, "up"),
                (0, "running"),
                (400, "restarting"),
                (400, "running"),
                (700, "restarting"),
                (700, "running"),
            ]
        );
        let readings = events
            .iter()
            .filter(|(_, e)| matches!(e, SourceEvent::Heard { .. }))
            .count();
        assert_eq!(readings, 1, "the stranger is listed in the heard list");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_adapter_is_reported_once_and_reopened_with_backoff() {
        let opens = vec![
            Some(vec![
                Act::Advert(Duration::from_secs(5)),
                Act::Lose(Duration::from_secs(5)),
            ]),
            None,
            None,
            Some(vec![]),
        ];
        let (events, restarts) = play(opens, Duration::from_secs(60)).await;
        assert_eq!(restarts, 0);
        let states = states(&events);
        let lost_events = states.iter().filter(|(_, s)| *s == "lost-event").count();
        assert_eq!(lost_events, 1, "wills once: {states:?}");
        assert_eq!(states[2], (10, "lost-event"));
        // Reopened after jittered delays of 0.5-1 s, 1-2 s and 2-4 s: up again between 13.5 and 17 s.
        let (reopened, _) = *states.iter().rfind(|(_, s)| *s == "up").unwrap();
        assert!((13..=17).contains(&reopened), "{states:?}");
        assert_eq!(states.last().unwrap().1, "running");
    }
}
