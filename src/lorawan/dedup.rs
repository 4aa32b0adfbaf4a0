//! The same uplink heard by several gateways: the copies that arrive within a window (default 200 ms)
//! of the first are one uplink, handed on once when the window closes with the best reception (highest
//! RSSI, then SNR) and every gateway that heard it. Bounded: at most `max_pending` uplinks wait at once;
//! a new one beyond them is refused (the caller counts it). Time is passed in; no IO.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::RxMeta;

/// One uplink, its copies merged.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub phy: Vec<u8>,
    /// The best copy's reception.
    pub best: RxMeta,
    /// Every gateway that heard it (EUI), in arrival order, without repeats.
    pub gateways: Vec<u64>,
}

/// What [`Dedup::offer`] did with a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// The first copy: a window opens.
    First,
    /// Merged into an open window.
    Merged,
    /// Too many uplinks waiting; this one is dropped.
    Full,
}

/// The open windows.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    max_pending: usize,
    pending: HashMap<Vec<u8>, (Instant, Heard)>,
}

impl Dedup {
    pub fn new(window: Duration, max_pending: usize) -> Dedup {
        Dedup {
            window,
            max_pending,
            pending: HashMap::new(),
        }
    }

    /// A copy of `phy` heard by `meta.gateway` at `now`.
    pub fn offer(&mut self, phy: &[u8], meta: RxMeta, now: Instant) -> Offered {
        if let Some((_, heard)) = self.pending.get_mut(phy) {
            if !heard.gateways.contains(&meta.gateway) {
                heard.gateways.push(meta.gateway);
            }
            if (meta.rssi, meta.snr) > (heard.best.rssi, heard.best.snr) {
                heard.best = meta;
            }
            return Offered::Merged;
        }
        if self.pending.len() >= self.max_pending {
            return Offered::Full;
        }
        let heard = Heard {
            phy: phy.to_vec(),
            best: meta,
            gateways: vec![meta.gateway],
        };
        self.pending
            .insert(phy.to_vec(), (now + self.window, heard));
        Offered::First
    }

    /// When the next window closes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|(at, _)| *at).min()
    }

    /// The uplinks whose window closed by `now`, oldest first.
    pub fn due(&mut self, now: Instant) -> Vec<Heard> {
        let mut closed: Vec<(Instant, Heard)> = Vec::new();
        self.pending.retain(|_, (at, heard)| {
            if *at <= now {
                closed.push((*at, heard.clone()));
                false
            } else {
                true
            }
        });
        closed.sort_by_key(|(at, _)| *at);
        closed.into_iter().map(|(_, heard)| heard).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(gateway: u64, rssi: f32, snr: f32) -> RxMeta {
        RxMeta {
            gateway,
            tmst: 1000,
            frequency: 868_100_000,
            spreading_factor: 7,
            bandwidth_khz: 125,
            rssi,
            snr,
        }
    }

    #[test]
    fn copies_in_the_window_are_one_uplink_with_the_best_reception_and_every_gateway() {
        let start = Instant::now();
        let mut dedup = Dedup::new(Duration::from_millis(200), 8);
        assert_eq!(
            dedup.offer(b"frame", meta(1, -100.0, 2.0), start),
            Offered::First
        );
        assert_eq!(
            dedup.offer(
                b"frame",
                meta(2, -80.0, 5.0),
                start + Duration::from_millis(50)
            ),
            Offered::Merged
        );
        assert_eq!(
            dedup.offer(b"frame", meta(2, -70.0, 5.0), start),
            Offered::Merged
        );
        assert!(dedup.due(start + Duration::from_millis(199)).is_empty());
        assert_eq!(
            dedup.next_deadline(),
            Some(start + Duration::from_millis(200))
        );
        let heard = dedup.due(start + Duration::from_millis(200));
        assert_eq!(heard.len(), 1);
        assert_eq!(heard[0].gateways, vec![1, 2]);
        assert_eq!(heard[0].best.rssi, -70.0);
        assert!(dedup.next_deadline().is_none());
    }

    #[test]
    fn at_most_max_pending_uplinks_wait() {
        let now = Instant::now();
        let mut dedup = Dedup::new(Duration::from_millis(200), 2);
        assert_eq!(dedup.offer(b"a", meta(1, -1.0, 0.0), now), Offered::First);
        assert_eq!(dedup.offer(b"b", meta(1, -1.0, 0.0), now), Offered::First);
        assert_eq!(dedup.offer(b"c", meta(1, -1.0, 0.0), now), Offered::Full);
        assert_eq!(dedup.offer(b"a", meta(2, -1.0, 0.0), now), Offered::Merged);
    }
}
