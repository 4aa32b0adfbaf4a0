//! Network-side ADR (adaptive data rate) of one device, in the manner of ChirpStack's default algorithm:
//! the SNR of the device's last [`ADR_HISTORY`] uplinks (its best gateway's) is kept, and once the
//! history is full the margin = the best SNR - the SNR its data rate needs ([`required_snr`]) -
//! [`INSTALLATION_MARGIN_DB`] is spent in 3 dB steps: first a faster data rate, up to the region's
//! highest ADR data rate, then a lower TX power; a negative margin raises the power back (the data rate
//! is never lowered by the network: a device that stops hearing downlinks falls back on its own, through
//! ADRACKReq). A request is only made when the wanted settings differ from the device's; while one is
//! unanswered no other goes out for [`RETRY_AFTER_UPLINKS`] uplinks, and settings the device refused are
//! not asked again for [`REFUSED_HOLD_UPLINKS`] uplinks.
//!
//! The state is small (about 100 bytes a device) and not stored: after a restart or a join the history
//! fills again, and the server takes the device's power for its maximum (TXPower 0) until it accepts a
//! request. Pure: no IO, no clock (time is counted in uplinks).

use super::region::RegionParams;

/// Uplinks whose SNR is kept; ADR decides only with this many.
pub const ADR_HISTORY: usize = 20;
/// dB of margin kept above the SNR a data rate needs (ChirpStack's and TTN's default).
pub const INSTALLATION_MARGIN_DB: f32 = 10.0;
/// Uplinks after an unanswered request before another may go out.
pub const RETRY_AFTER_UPLINKS: u32 = 5;
/// Uplinks during which settings the device refused are not asked again.
pub const REFUSED_HOLD_UPLINKS: u32 = 100;

/// The SNR (dB) the demodulator needs at a spreading factor: SF7 -7.5 dB ... SF12 -20 dB.
pub fn required_snr(spreading_factor: u8) -> f32 {
    -20.0 + 2.5 * f32::from(12 - spreading_factor.clamp(7, 12))
}

/// A device's data rate and TXPower index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    pub data_rate: u8,
    pub tx_power: u8,
}

/// What the margin of `max_snr` above what `current`'s data rate needs asks for in `region`.
pub fn wanted_settings(region: &RegionParams, current: LinkSettings, max_snr: f32) -> LinkSettings {
    let Some(rate) = region.data_rates[usize::from(current.data_rate & 0x0F)] else {
        return current;
    };
    let margin = max_snr - required_snr(rate.spreading_factor) - INSTALLATION_MARGIN_DB;
    let mut steps = (margin / 3.0).floor() as i32;
    let mut wanted = current;
    while steps > 0 && wanted.data_rate < region.adr_max_dr {
        wanted.data_rate += 1;
        steps -= 1;
    }
    while steps > 0 && wanted.tx_power < region.max_tx_power_index {
        wanted.tx_power += 1;
        steps -= 1;
    }
    while steps < 0 && wanted.tx_power > 0 {
        wanted.tx_power -= 1;
        steps += 1;
    }
    wanted
}

/// How a device answered a request (its LinkADRAns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Every ACK bit set: the device now uses what was asked.
    Accepted,
    /// An ACK bit clear: nothing changed.
    Refused,
    /// No request was waiting (a late or stray answer).
    Unasked,
}

/// One device's ADR state.
#[derive(Debug, Clone, PartialEq)]
pub struct AdrState {
    snrs: [f32; ADR_HISTORY],
    /// SNRs in `snrs` (at most [`ADR_HISTORY`]), the oldest overwritten at `next`.
    kept: usize,
    next: usize,
    /// The device's TXPower index as far as the server knows (0 until it accepts a request).
    tx_power: u8,
    /// The request waiting for an answer, and the uplinks since it went out.
    pending: Option<(LinkSettings, u32)>,
    /// Settings the device refused, and the uplinks left before they may be asked again.
    refused: Option<(LinkSettings, u32)>,
}

impl Default for AdrState {
    fn default() -> Self {
        AdrState {
            snrs: [0.0; ADR_HISTORY],
            kept: 0,
            next: 0,
            tx_power: 0,
            pending: None,
            refused: None,
        }
    }
}

impl AdrState {
    /// One uplink more: the waits of a pending request and of refused settings move on.
    pub fn uplink(&mut self) {
        if let Some((_, since)) = &mut self.pending {
            *since += 1;
            if *since > RETRY_AFTER_UPLINKS {
                self.pending = None;
            }
        }
        if let Some((_, left)) = &mut self.refused {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.refused = None;
            }
        }
    }

    /// The SNR of an uplink with the ADR bit set.
    pub fn record(&mut self, snr: f32) {
        self.snrs[self.next] = snr;
        self.next = (self.next + 1) % ADR_HISTORY;
        self.kept = (self.kept + 1).min(ADR_HISTORY);
    }

    /// The device's LinkADRAns (`accepted`: every ACK bit of every answer set).
    pub fn answered(&mut self, accepted: bool) -> Answered {
        let Some((asked, _)) = self.pending.take() else {
            return Answered::Unasked;
        };
        if accepted {
            self.tx_power = asked.tx_power;
            // The SNRs were heard at the old settings.
            self.kept = 0;
            self.next = 0;
            Answered::Accepted
        } else {
            self.refused = Some((asked, REFUSED_HOLD_UPLINKS));
            Answered::Refused
        }
    }

    /// The settings to ask of a device heard at `data_rate`, if a request is due: a full history, no
    /// request waiting, settings that differ from the device's and that it did not refuse lately.
    /// What it returns counts as sent (waiting for the answer).
    pub fn request(&mut self, region: &RegionParams, data_rate: u8) -> Option<LinkSettings> {
        if self.kept < ADR_HISTORY || self.pending.is_some() {
            return None;
        }
        let max_snr = self.snrs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let current = LinkSettings {
            data_rate,
            tx_power: self.tx_power,
        };
        let wanted = wanted_settings(region, current, max_snr);
        if wanted == current || self.refused.is_some_and(|(refused, _)| refused == wanted) {
            return None;
        }
        self.pending = Some((wanted, 0));
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::region::Region;

    fn at(data_rate: u8, tx_power: u8) -> LinkSettings {
        LinkSettings {
            data_rate,
            tx_power,
        }
    }

    #[test]
    fn required_snr_follows_the_spreading_factor() {
        assert_eq!(required_snr(7), -7.5);
        assert_eq!(required_snr(10), -15.0);
        assert_eq!(required_snr(12), -20.0);
    }

    #[test]
    fn eu868_margin_raises_the_data_rate_to_dr5_then_lowers_the_power() {
        let eu = Region::Eu868.params();
        // SF10 (DR2) at 7 dB: 7 + 15 - 10 = 12 dB, 4 steps: DR5 and one power step.
        assert_eq!(wanted_settings(eu, at(2, 0), 7.0), at(5, 1));
        // 2.9 dB of margin is no step.
        assert_eq!(wanted_settings(eu, at(2, 0), -2.1), at(2, 0));
        // SF12 (DR0) at 10 dB: 20 dB, 6 steps: DR5 and one power step.
        assert_eq!(wanted_settings(eu, at(0, 0), 10.0), at(5, 1));
        // At DR5 with a huge margin: the power down to EU868's last index, 7.
        assert_eq!(wanted_settings(eu, at(5, 0), 40.0), at(5, 7));
        // A negative margin raises the power back and never lowers the data rate.
        assert_eq!(wanted_settings(eu, at(5, 5), -9.0), at(5, 1));
        assert_eq!(wanted_settings(eu, at(5, 1), -20.0), at(5, 0));
        // DR6 (SF7 250 kHz, above the ADR maximum) is left as the device chose it.
        assert_eq!(wanted_settings(eu, at(6, 0), -7.5 + 10.0 + 3.0), at(6, 1));
    }

    #[test]
    fn us915_margin_stops_at_dr3_and_its_fourteen_power_steps() {
        let us = Region::Us915.params();
        // DR0 is SF10: 10 + 15 - 10 = 15 dB, 5 steps: DR3 and two power steps.
        assert_eq!(wanted_settings(us, at(0, 0), 10.0), at(3, 2));
        assert_eq!(wanted_settings(us, at(3, 0), 60.0), at(3, 14));
    }

    fn full(state: &mut AdrState, snr: f32) {
        for _ in 0..ADR_HISTORY {
            state.uplink();
            state.record(snr);
        }
    }

    #[test]
    fn a_request_needs_a_full_history_and_waits_for_its_answer() {
        let eu = Region::Eu868.params();
        let mut state = AdrState::default();
        for _ in 0..ADR_HISTORY - 1 {
            state.uplink();
            state.record(7.0);
            assert_eq!(state.request(eu, 2), None);
        }
        state.uplink();
        state.record(7.0);
        assert_eq!(state.request(eu, 2), Some(at(5, 1)));
        // Unanswered: nothing more for a few uplinks, then asked again.
        for _ in 0..RETRY_AFTER_UPLINKS {
            state.uplink();
            state.record(7.0);
            assert_eq!(state.request(eu, 2), None);
        }
        state.uplink();
        assert_eq!(state.request(eu, 2), Some(at(5, 1)));
        // Accepted: the power is known, the history starts again, and at DR5 with the same SNR
        // there is nothing to ask until it is full.
        assert_eq!(state.answered(true), Answered::Accepted);
        assert_eq!(state.answered(true), Answered::Unasked);
        state.uplink();
        state.record(-3.5);
        assert_eq!(state.request(eu, 5), None);
        full(&mut state, -3.5);
        // -3.5 + 7.5 - 10 = -6 dB: two steps of power back, from 1 to 0.
        assert_eq!(state.request(eu, 5), Some(at(5, 0)));
    }

    #[test]
    fn refused_settings_are_not_asked_again_for_a_while() {
        let eu = Region::Eu868.params();
        let mut state = AdrState::default();
        full(&mut state, 7.0);
        assert_eq!(state.request(eu, 2), Some(at(5, 1)));
        assert_eq!(state.answered(false), Answered::Refused);
        for _ in 0..REFUSED_HOLD_UPLINKS - 1 {
            state.uplink();
            state.record(7.0);
            assert_eq!(state.request(eu, 2), None);
        }
        state.uplink();
        assert_eq!(state.request(eu, 2), Some(at(5, 1)));
    }

    #[test]
    fn settings_already_right_are_not_asked() {
        let eu = Region::Eu868.params();
        let mut state = AdrState::default();
        // SF7 at -2 dB: -2 + 7.5 - 10 = -4.5 dB, and the power is already the maximum.
        full(&mut state, -2.0);
        assert_eq!(state.request(eu, 5), None);
    }
}
