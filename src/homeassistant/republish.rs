//! The re-publication that follows Home Assistant's birth message: every device's configs again, spread
//! over [`REPUBLISH_SPREAD`] in slices every [`REPUBLISH_TICK`], with a head slice first (the gateway's
//! configs and the removals Home Assistant has not seen yet, which [`super::Discovery`] adds).
//!
//! Births coalesce, so that publishing `online` again and again cannot make the gateway publish its whole
//! discovery again and again: a birth while a re-publication runs, or within [`REPUBLISH_SPREAD`] of the
//! last one's start, starts nothing at once and is counted; one more re-publication starts when that
//! window ends. So the last birth is always followed by a complete re-publication that started after it,
//! and a flood of births costs at most one complete re-publication per window. Pure: the time is passed
//! in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long a re-publication after Home Assistant's birth message takes at most, and the shortest time
/// between the starts of two.
pub const REPUBLISH_SPREAD: Duration = Duration::from_secs(3);
/// How often a slice of a re-publication goes out.
pub const REPUBLISH_TICK: Duration = Duration::from_millis(100);

/// One slice of a re-publication.
#[derive(Debug, PartialEq, Eq)]
pub struct Slice<K> {
    /// The first slice: the gateway's configs and the unseen removals go with it.
    pub head: bool,
    pub keys: Vec<K>,
}

/// The schedule of re-publications; see the module documentation.
#[derive(Debug)]
pub struct Republication<K> {
    queue: VecDeque<K>,
    batch: usize,
    /// When the next slice of the running re-publication is due (`None`: none runs).
    next_slice: Option<Instant>,
    head_due: bool,
    /// When the last re-publication started.
    started: Option<Instant>,
    /// A birth arrived that the running (or last) re-publication does not answer.
    queued_birth: bool,
    coalesced: u64,
}

impl<K> Default for Republication<K> {
    fn default() -> Self {
        Republication {
            queue: VecDeque::new(),
            batch: 1,
            next_slice: None,
            head_due: false,
            started: None,
            queued_birth: false,
            coalesced: 0,
        }
    }
}

impl<K> Republication<K> {
    /// A birth at `now`: `true` when a re-publication is to start now ([`Republication::start`]);
    /// `false` when it was coalesced into the one that follows the current window.
    pub fn birth(&mut self, now: Instant) -> bool {
        let in_window = self
            .started
            .is_some_and(|started| now < started + REPUBLISH_SPREAD);
        if self.next_slice.is_some() || in_window {
            self.queued_birth = true;
            self.coalesced += 1;
            return false;
        }
        true
    }

    /// Starts a re-publication of `keys` at `now`; its head slice is due at once.
    pub fn start(&mut self, keys: impl IntoIterator<Item = K>, now: Instant) {
        self.queue = keys.into_iter().collect();
        let ticks = (REPUBLISH_SPREAD.as_millis() / REPUBLISH_TICK.as_millis()).max(1) as usize;
        self.batch = self.queue.len().div_ceil(ticks).max(1);
        self.next_slice = Some(now);
        self.head_due = true;
        self.started = Some(now);
        self.queued_birth = false;
    }

    /// When something is due next: a slice of the running re-publication, or the start of the one a
    /// coalesced birth asked for.
    pub fn due(&self) -> Option<Instant> {
        match (self.next_slice, self.started) {
            (Some(at), _) => Some(at),
            (None, Some(started)) if self.queued_birth => Some(started + REPUBLISH_SPREAD),
            _ => None,
        }
    }

    /// Whether the re-publication a coalesced birth asked for is to start at `now`.
    pub fn start_due(&self, now: Instant) -> bool {
        self.next_slice.is_none() && self.queued_birth && self.due().is_some_and(|at| at <= now)
    }

    /// The slice due at `now`, if any.
    pub fn slice(&mut self, now: Instant) -> Option<Slice<K>> {
        if self.next_slice.is_none_or(|at| at > now) {
            return None;
        }
        let take = self.batch.min(self.queue.len());
        let keys: Vec<K> = self.queue.drain(..take).collect();
        let head = std::mem::take(&mut self.head_due);
        self.next_slice = (!self.queue.is_empty()).then(|| now + REPUBLISH_TICK);
        Some(Slice { head, keys })
    }

    /// Births coalesced so far (for `{base}/gateway/stats`).
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs everything due up to `until`, returning the slices with their times.
    fn run(
        plan: &mut Republication<u32>,
        keys: &[u32],
        until: Instant,
    ) -> Vec<(Instant, Slice<u32>)> {
        let mut slices = Vec::new();
        while let Some(at) = plan.due().filter(|at| *at <= until) {
            if plan.start_due(at) {
                plan.start(keys.iter().copied(), at);
            }
            if let Some(slice) = plan.slice(at) {
                slices.push((at, slice));
            }
        }
        slices
    }

    #[test]
    fn one_birth_is_one_spread_republication() {
        let keys: Vec<u32> = (0..100).collect();
        let t0 = Instant::now();
        let mut plan = Republication::default();
        assert!(plan.birth(t0));
        plan.start(keys.iter().copied(), t0);
        let slices = run(&mut plan, &keys, t0 + Duration::from_secs(60));
        assert_eq!(slices.iter().filter(|(_, s)| s.head).count(), 1);
        assert!(slices[0].1.head);
        let sent: Vec<u32> = slices.iter().flat_map(|(_, s)| s.keys.clone()).collect();
        assert_eq!(sent, keys);
        assert!(slices.iter().all(|(at, _)| *at - t0 < REPUBLISH_SPREAD));
        assert!(slices.len() > 10, "spread over {} slices", slices.len());
        assert_eq!(plan.due(), None);
        assert_eq!(plan.coalesced(), 0);
    }

    #[test]
    fn births_within_the_window_coalesce_into_one_that_follows() {
        let keys: Vec<u32> = (0..30).collect();
        let t0 = Instant::now();
        let mut plan = Republication::default();
        assert!(plan.birth(t0));
        plan.start(keys.iter().copied(), t0);
        // A flood: a birth every 10 ms for 10 s, the schedule run between them.
        let mut slices = Vec::new();
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        while now < end {
            slices.extend(run(&mut plan, &keys, now));
            if plan.birth(now) {
                plan.start(keys.iter().copied(), now);
            }
            now += Duration::from_millis(10);
        }
        let last_birth = now - Duration::from_millis(10);
        slices.extend(run(&mut plan, &keys, end + Duration::from_secs(60)));
        let starts: Vec<Instant> = slices
            .iter()
            .filter(|(_, s)| s.head)
            .map(|(at, _)| *at)
            .collect();
        assert!(
            starts.len() <= 5,
            "at most one re-publication per {REPUBLISH_SPREAD:?}: {}",
            starts.len()
        );
        assert!(starts
            .windows(2)
            .all(|pair| pair[1] - pair[0] >= REPUBLISH_SPREAD));
        let last_start = slices.iter().rposition(|(_, s)| s.head).unwrap();
        assert!(slices[last_start].0 >= last_birth);
        let after_last: Vec<u32> = slices[last_start..]
            .iter()
            .flat_map(|(_, s)| s.keys.clone())
            .collect();
        assert_eq!(
            after_last, keys,
            "the last birth is followed by a complete re-publication"
        );
        assert!(plan.coalesced() > 900, "{}", plan.coalesced());
        assert_eq!(plan.due(), None);
    }

    #[test]
    fn a_birth_after_the_window_starts_at_once() {
        let t0 = Instant::now();
        let mut plan = Republication::default();
        assert!(plan.birth(t0));
        plan.start([1u32], t0);
        assert!(plan.slice(t0).is_some_and(|s| s.head));
        assert!(!plan.birth(t0 + Duration::from_secs(1)), "coalesced");
        assert_eq!(plan.due(), Some(t0 + REPUBLISH_SPREAD));
        assert!(!plan.start_due(t0 + Duration::from_secs(2)));
        assert!(plan.start_due(t0 + REPUBLISH_SPREAD));
        plan.start([1u32], t0 + REPUBLISH_SPREAD);
        assert!(plan.slice(t0 + REPUBLISH_SPREAD).is_some());
        assert!(
            plan.birth(t0 + Duration::from_secs(7)),
            "a birth after the window is answered at once"
        );
    }
}
