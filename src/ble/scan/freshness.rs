//! The counters of encrypted Bluetooth LE devices: whether an authentic advert is new, a repeat, or a
//! replay, kept in the replay-marks store (`crate::replay`, so marks survive a restart and a power cut
//! with the same margin as encrypted frames'), under the name `{source}/{MAC}` and address 0.
//!
//! The counters are short and wrap: BTHome's is 32 bits, the pvvx and atc1441 firmwares' measurement
//! count 8 bits. The mark is kept unwrapped (a 32-bit number that only grows): a counter is placed at the
//! first value above the mark that ends in its bits, and is new when that is at most half the counter's
//! space ahead (BTHome: 2^31, pvvx: 128), a replay otherwise. The trade-off of 8 bits: an advert recorded
//! more than 128 counts ago looks new again, which is all a one-byte counter allows. A mark that would
//! pass 2^32 (a BTHome counter that wrapped) starts anew at the device's counter.
//!
//! A device whose counter went back (a battery change restarts it) is refused until its counter is reset:
//! by the `reset_counter` command, or, with `counter_reset_after = N` (N > 0), after N consecutive authentic
//! adverts with growing counters below the mark. The trade-off of N: whoever recorded N adverts of a
//! device in a row can replay them later to reset its mark and then replay the rest; a small N recovers a
//! device quickly after a battery change, a large N asks more of an attacker, 0 leaves it to the command.
//! An advert with the same counter as the last one accepted is the device repeating itself: a duplicate,
//! not a replay. Pure but for the store's handle; state is per configured keyed device (bounded by the
//! configuration).

use std::collections::HashMap;

use crate::ble::Mac;
use crate::replay::{Replay, ReplayGuard};

/// What an authentic advert's counter is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// New: accepted, the mark raised.
    Fresh,
    /// New after the counter wrapped or was reset: accepted, the mark started anew.
    Restarted,
    /// The counter of the last accepted advert again: a repeat.
    Repeat,
    /// Refused.
    Refused(Replay),
}

/// A device's run of adverts below its mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Streak {
    last: u32,
    count: u32,
}

/// The counter check of one source's encrypted devices.
#[derive(Debug)]
pub struct Freshness {
    source: String,
    marks: ReplayGuard,
    reset_after: u32,
    streaks: HashMap<Mac, Streak>,
    /// Devices whose next counter is accepted whatever it is (the `reset_counter` command).
    reset_asked: std::collections::HashSet<Mac>,
}

impl Freshness {
    pub fn new(source: &str, marks: ReplayGuard, reset_after: u32) -> Self {
        Freshness {
            source: source.to_string(),
            marks,
            reset_after,
            streaks: HashMap::new(),
            reset_asked: Default::default(),
        }
    }

    /// The store's name of a device.
    pub fn mark_name(&self, mac: Mac) -> String {
        format!("{}/{mac}", self.source)
    }

    /// Accept the device's next counter, whatever it is (the `reset_counter` command).
    pub fn reset(&mut self, mac: Mac) {
        self.reset_asked.insert(mac);
    }

    /// Checks `counter` (of `bits` bits: 8 or 32) of an authentic advert of `mac`.
    pub fn check(&mut self, mac: Mac, counter: u32, bits: u32) -> Verdict {
        let name = self.mark_name(mac);
        if self.reset_asked.remove(&mac) {
            self.streaks.remove(&mac);
            return match self.marks.restart_at(&name, 0, counter) {
                Ok(()) => Verdict::Restarted,
                Err(refused) => Verdict::Refused(refused),
            };
        }
        let Some(floor) = self.marks.floor(&name, 0) else {
            return match self.marks.check(&name, 0, counter) {
                Ok(()) => Verdict::Fresh,
                Err(refused) => Verdict::Refused(refused),
            };
        };
        match place(floor, counter, bits) {
            Placed::Same => Verdict::Repeat,
            Placed::Ahead(unwrapped) => {
                self.streaks.remove(&mac);
                match self.marks.check(&name, 0, unwrapped) {
                    Ok(()) => Verdict::Fresh,
                    Err(refused) => Verdict::Refused(refused),
                }
            }
            Placed::Wrapped => {
                self.streaks.remove(&mac);
                match self.marks.restart_at(&name, 0, counter) {
                    Ok(()) => Verdict::Restarted,
                    Err(refused) => Verdict::Refused(refused),
                }
            }
            Placed::Behind => self.behind(mac, &name, floor, counter, bits),
        }
    }

    /// An authentic advert below the mark: a replay, or one of a reset counter's run.
    fn behind(&mut self, mac: Mac, name: &str, floor: u32, counter: u32, bits: u32) -> Verdict {
        let refused = Verdict::Refused(Replay::Replayed { counter, floor });
        if self.reset_after == 0 {
            return refused;
        }
        let streak = match self.streaks.get(&mac) {
            Some(streak) if streak.last == counter => return refused,
            Some(streak) if matches!(place(streak.last, counter, bits), Placed::Ahead(_)) => {
                Streak {
                    last: counter,
                    count: streak.count.saturating_add(1),
                }
            }
            _ => Streak {
                last: counter,
                count: 1,
            },
        };
        if streak.count < self.reset_after {
            self.streaks.insert(mac, streak);
            return refused;
        }
        self.streaks.remove(&mac);
        match self.marks.restart_at(name, 0, counter) {
            Ok(()) => Verdict::Restarted,
            Err(refused) => Verdict::Refused(refused),
        }
    }
}

/// Where a counter of `bits` bits falls against an unwrapped mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// The mark's own counter.
    Same,
    /// At most half the space ahead: this unwrapped value.
    Ahead(u32),
    /// Ahead, but past 2^32 unwrapped.
    Wrapped,
    /// More than half the space ahead, so behind.
    Behind,
}

fn place(mark: u32, counter: u32, bits: u32) -> Placed {
    let space = 1u64 << bits.clamp(1, 32);
    let mark = u64::from(mark);
    let counter = u64::from(counter) % space;
    if mark % space == counter {
        return Placed::Same;
    }
    let mut unwrapped = mark - mark % space + counter;
    if unwrapped <= mark {
        unwrapped += space;
    }
    if unwrapped - mark > space / 2 {
        Placed::Behind
    } else {
        u32::try_from(unwrapped).map_or(Placed::Wrapped, Placed::Ahead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0xA4, 0xC1, 0x38, 0x8D, 0x18, 0xB2]);

    fn freshness(reset_after: u32) -> Freshness {
        Freshness::new("ble", ReplayGuard::in_memory(), reset_after)
    }

    #[test]
    fn a_32_bit_counter_grows_repeats_and_wraps() {
        let mut f = freshness(0);
        assert_eq!(f.check(MAC, 10, 32), Verdict::Fresh);
        assert_eq!(f.check(MAC, 10, 32), Verdict::Repeat);
        assert!(matches!(f.check(MAC, 9, 32), Verdict::Refused(_)));
        assert!(
            matches!(f.check(MAC, u32::MAX - 1, 32), Verdict::Refused(_)),
            "more than 2^31 ahead"
        );
        assert_eq!(
            f.check(MAC, 1 << 31, 32),
            Verdict::Fresh,
            "2^31 ahead at most"
        );
        assert_eq!(f.check(MAC, u32::MAX - 1, 32), Verdict::Fresh);
        assert_eq!(f.check(MAC, 3, 32), Verdict::Restarted, "wrapped");
        assert_eq!(f.check(MAC, 4, 32), Verdict::Fresh);
        assert!(matches!(f.check(MAC, u32::MAX, 32), Verdict::Refused(_)));
    }

    #[test]
    fn an_8_bit_count_is_unwrapped_into_a_growing_mark() {
        let mut f = freshness(0);
        assert_eq!(f.check(MAC, 250, 8), Verdict::Fresh);
        assert_eq!(f.check(MAC, 255, 8), Verdict::Fresh);
        assert_eq!(f.check(MAC, 2, 8), Verdict::Fresh, "wrapped past 255");
        assert_eq!(f.marks.floor("ble/A4:C1:38:8D:18:B2", 0), Some(258));
        assert!(
            matches!(f.check(MAC, 255, 8), Verdict::Refused(_)),
            "an old advert"
        );
        assert_eq!(f.check(MAC, 2, 8), Verdict::Repeat);
        assert_eq!(
            f.check(MAC, 130, 8),
            Verdict::Fresh,
            "128 ahead is still new"
        );
    }

    #[test]
    fn a_reset_counter_is_accepted_after_n_growing_adverts_or_a_command() {
        let mut f = freshness(3);
        assert_eq!(f.check(MAC, 5000, 32), Verdict::Fresh);
        // The battery was changed: the device counts from 1 again.
        assert!(matches!(f.check(MAC, 1, 32), Verdict::Refused(_)));
        assert!(
            matches!(f.check(MAC, 1, 32), Verdict::Refused(_)),
            "a repeat does not count"
        );
        assert!(matches!(f.check(MAC, 2, 32), Verdict::Refused(_)));
        assert_eq!(f.check(MAC, 3, 32), Verdict::Restarted);
        assert_eq!(f.check(MAC, 4, 32), Verdict::Fresh);
        // Without N, only the command.
        let mut f = freshness(0);
        f.check(MAC, 5000, 32);
        for counter in 1..20 {
            assert!(matches!(f.check(MAC, counter, 32), Verdict::Refused(_)));
        }
        f.reset(MAC);
        assert_eq!(f.check(MAC, 20, 32), Verdict::Restarted);
        assert!(matches!(f.check(MAC, 19, 32), Verdict::Refused(_)));
    }

    #[test]
    fn a_run_broken_by_an_older_counter_starts_over() {
        let mut f = freshness(3);
        f.check(MAC, 5000, 32);
        f.check(MAC, 10, 32);
        f.check(MAC, 11, 32);
        assert!(
            matches!(f.check(MAC, 7, 32), Verdict::Refused(_)),
            "replayed out of order"
        );
        assert!(matches!(f.check(MAC, 8, 32), Verdict::Refused(_)));
        assert_eq!(f.check(MAC, 9, 32), Verdict::Restarted);
    }
}
