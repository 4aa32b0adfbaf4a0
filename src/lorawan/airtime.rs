//! The duty cycle of each gateway's downlinks: every downlink a semtech-udp source sends (JoinAccept,
//! ACK, MAC answers, command) is charged to the gateway that sends it, on the sub-band of its frequency,
//! with the budgets of `crate::commands::dutycycle` (EU868: 1 % of every hour on 868.0-868.6 MHz where
//! RX1 lands, 10 % on 869.4-869.65 MHz where RX2 is; a frequency outside that plan in a region with a
//! duty cycle gets the region's own share). Regions without one (US915, AU915...) are not limited. A
//! downlink that does not fit is not sent: the caller drops an ACK or JoinAccept (counted) and leaves a
//! command in its queue. Charged when sent, never refunded (a TX_ACK error still counts: the budget
//! errs on the quiet side). Pure: the time is passed in; at most [`MAX_BUDGETS`] budgets are kept.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::region::{DataRate, RegionParams};
use crate::commands::dutycycle::{sub_band, Budget, Wait};
use crate::source::radio::{time_on_air, RadioSettings};

/// Budgets kept at most (gateways x sub-bands); past it a new gateway's downlinks are refused.
pub const MAX_BUDGETS: usize = 4 * super::counters::MAX_GATEWAYS;

/// The time on air of a LoRaWAN downlink of `len` bytes at `data_rate` (coding rate 4/5, preamble 8).
pub fn downlink_airtime(data_rate: DataRate, len: usize) -> Duration {
    let radio = RadioSettings {
        spreading_factor: data_rate.spreading_factor,
        bandwidth_hz: u32::from(data_rate.bandwidth_khz) * 1000,
        coding_rate: 5,
        preamble_len: 8,
        ..RadioSettings::default()
    };
    time_on_air(&radio, len)
}

/// The duty-cycle budgets of one source's gateways.
#[derive(Debug)]
pub struct GatewayAirtime {
    region: &'static RegionParams,
    /// By gateway and sub-band name.
    budgets: HashMap<(u64, &'static str), Budget>,
}

impl GatewayAirtime {
    pub fn new(region: &'static RegionParams) -> Self {
        GatewayAirtime {
            region,
            budgets: HashMap::new(),
        }
    }

    /// Charges `airtime` on `frequency` to `gateway` at `now` when it fits; otherwise says why.
    pub fn charge(
        &mut self,
        gateway: u64,
        frequency: u32,
        airtime: Duration,
        now: Instant,
    ) -> Result<(), String> {
        if self.region.duty_cycle_per_mille == 0 {
            return Ok(());
        }
        let (share, band) = match sub_band(frequency) {
            Some(band) => (band.share, band.name),
            None => (
                f64::from(self.region.duty_cycle_per_mille) / 1000.0,
                self.region.name,
            ),
        };
        let key = (gateway, band);
        if !self.budgets.contains_key(&key) && self.budgets.len() >= MAX_BUDGETS {
            return Err(format!(
                "more than {MAX_BUDGETS} gateway duty-cycle budgets are tracked"
            ));
        }
        let budget = self.budgets.entry(key).or_insert_with(|| {
            Budget::new(share, format!("{} % per hour on {band}", share * 100.0))
        });
        match budget.admit(now, airtime) {
            Ok(()) => {
                budget.record(now, airtime, "");
                Ok(())
            }
            Err(wait) => {
                let when = match wait {
                    Wait::Until(at) => format!(
                        "room again in {} s",
                        at.saturating_duration_since(now).as_secs()
                    ),
                    Wait::Never => "longer than the whole budget".to_string(),
                };
                Err(format!(
                    "gateway {gateway:016x} has no room for {} ms on air in its duty-cycle budget ({}; {when})",
                    airtime.as_millis(),
                    budget.description
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::region::Region;

    const SF12: DataRate = DataRate {
        spreading_factor: 12,
        bandwidth_khz: 125,
    };

    #[test]
    fn airtime_follows_the_data_rate() {
        let sf7 = DataRate {
            spreading_factor: 7,
            bandwidth_khz: 125,
        };
        // 13 bytes (an empty ACK): about 46 ms at SF7, about 1.2 s at SF12.
        let fast = downlink_airtime(sf7, 13).as_millis();
        let slow = downlink_airtime(SF12, 13).as_millis();
        assert!((40..=60).contains(&fast), "{fast}");
        assert!((1000..=1400).contains(&slow), "{slow}");
    }

    #[tokio::test(start_paused = true)]
    async fn eu868_rx1_has_one_percent_per_gateway_and_rx2_ten() {
        let mut airtime = GatewayAirtime::new(Region::Eu868.params());
        let second = Duration::from_secs(1);
        // 1 % of an hour is 36 s on 868.1 MHz for gateway A.
        for _ in 0..36 {
            airtime
                .charge(0xa, 868_100_000, second, Instant::now())
                .unwrap();
        }
        let refused = airtime
            .charge(0xa, 868_300_000, second, Instant::now())
            .unwrap_err();
        assert!(refused.contains("868.0-868.6"), "{refused}");
        // Another gateway, and RX2's 869.525 MHz (10 %), have their own budgets.
        airtime
            .charge(0xb, 868_100_000, second, Instant::now())
            .unwrap();
        for _ in 0..360 {
            airtime
                .charge(0xa, 869_525_000, second, Instant::now())
                .unwrap();
        }
        assert!(airtime
            .charge(0xa, 869_525_000, second, Instant::now())
            .is_err());
        // An hour later the first second on 868.1 MHz has left the window.
        tokio::time::advance(Duration::from_secs(3600)).await;
        airtime
            .charge(0xa, 868_100_000, second, Instant::now())
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn us915_has_no_duty_cycle() {
        let mut airtime = GatewayAirtime::new(Region::Us915.params());
        for _ in 0..10_000 {
            airtime
                .charge(0xa, 923_300_000, Duration::from_secs(1), Instant::now())
                .unwrap();
        }
    }
}
