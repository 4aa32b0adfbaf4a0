//! The regional parameters the network server needs, as one table per region (LoRaWAN Regional
//! Parameters RP002-1.0.x): data rates (spreading factor and bandwidth), the largest application payload
//! per data rate, the RX1 data rate offset rule and downlink frequency, the RX2 defaults, the join and
//! receive delays, and the CFList a JoinAccept carries. EU868 and US915 are complete for Class A; AU915,
//! AS923 (group 1), IN865 and KR920 are rows of the same table. Pure data and arithmetic: no IO.

use serde::Deserialize;

/// A region of the regional parameters (`[lorawan] region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Region {
    #[serde(rename = "EU868")]
    Eu868,
    #[serde(rename = "US915")]
    Us915,
    #[serde(rename = "AU915")]
    Au915,
    #[serde(rename = "AS923")]
    As923,
    #[serde(rename = "IN865")]
    In865,
    #[serde(rename = "KR920")]
    Kr920,
}

/// One LoRa data rate: spreading factor and bandwidth (FSK and LR-FHSS rates are not served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate {
    pub spreading_factor: u8,
    pub bandwidth_khz: u16,
}

impl DataRate {
    const fn lora(spreading_factor: u8, bandwidth_khz: u16) -> Option<DataRate> {
        Some(DataRate {
            spreading_factor,
            bandwidth_khz,
        })
    }

    /// The Semtech forwarder's `datr` text: `SF7BW125`.
    pub fn datr(&self) -> String {
        format!("SF{}BW{}", self.spreading_factor, self.bandwidth_khz)
    }
}

/// One region's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionParams {
    pub name: &'static str,
    /// DR0..DR15; `None` where the region has no LoRa rate.
    pub data_rates: [Option<DataRate>; 16],
    /// Largest FRMPayload (N) per data rate, without a repeater (dwell time off where it applies).
    pub max_payload: [u8; 16],
    /// How RX1's data rate follows the uplink's: EU-style (`DR - offset`, floored at the minimum) or
    /// the US915/AU915 table (uplink DR0..DR4 / DR0..DR6 to the 500 kHz downlink rates).
    pub rx1: Rx1Rule,
    /// RX2 defaults: frequency (Hz) and data rate.
    pub rx2_frequency: u32,
    pub rx2_data_rate: u8,
    /// RECEIVE_DELAY1 and JOIN_ACCEPT_DELAY1, seconds (RX2 is one second later).
    pub receive_delay1: u64,
    pub join_accept_delay1: u64,
    /// Lowest downlink data rate RX1 may use.
    pub min_downlink_dr: u8,
    /// The CFList of a JoinAccept: extra channel frequencies (EU-style, type 0), or none (channel-mask
    /// regions, whose devices know their channels; sub-band selection is a later LinkADRReq).
    pub cf_list: &'static [u32],
    /// The region's duty cycle limit on the default sub-band, per mille (0: dwell time rules instead).
    pub duty_cycle_per_mille: u16,
    /// ADR: the highest data rate it moves a device to, and the highest TXPower index (0 is the
    /// device's maximum power; each index 2 dB less).
    pub adr_max_dr: u8,
    pub max_tx_power_index: u8,
    /// The channels every device has from the start (EU-style regions; the CFList's follow them).
    pub default_channels: u8,
}

/// How RX1's frequency and data rate follow the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rx1Rule {
    /// RX1 on the uplink's frequency, DR = uplink DR - RX1DROffset (not below the minimum).
    SameChannel,
    /// 64 + 8 uplink channels to 8 downlink channels (923.3 MHz + 600 kHz x (channel mod 8)); the DR
    /// from the table `[uplink DR][offset]`, rates DR8..DR13 at 500 kHz.
    EightDownlinkChannels {
        first_uplink_hz: u32,
        base_hz: u32,
        step_hz: u32,
        /// RX1 data rate of uplink DR0 (offset 0); each uplink DR one higher, at most DR13.
        dr0_downlink: u8,
    },
}

const EU_RATES: [Option<DataRate>; 16] = [
    DataRate::lora(12, 125),
    DataRate::lora(11, 125),
    DataRate::lora(10, 125),
    DataRate::lora(9, 125),
    DataRate::lora(8, 125),
    DataRate::lora(7, 125),
    DataRate::lora(7, 250),
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
    None,
];
const EU_MAX_PAYLOAD: [u8; 16] = [51, 51, 51, 115, 222, 222, 222, 222, 0, 0, 0, 0, 0, 0, 0, 0];

const US_RATES: [Option<DataRate>; 16] = [
    DataRate::lora(10, 125),
    DataRate::lora(9, 125),
    DataRate::lora(8, 125),
    DataRate::lora(7, 125),
    DataRate::lora(8, 500),
    None,
    None,
    None,
    DataRate::lora(12, 500),
    DataRate::lora(11, 500),
    DataRate::lora(10, 500),
    DataRate::lora(9, 500),
    DataRate::lora(8, 500),
    DataRate::lora(7, 500),
    None,
    None,
];
const US_MAX_PAYLOAD: [u8; 16] = [
    11, 53, 125, 242, 242, 0, 0, 0, 33, 109, 222, 222, 222, 222, 0, 0,
];

const AU_RATES: [Option<DataRate>; 16] = [
    DataRate::lora(12, 125),
    DataRate::lora(11, 125),
    DataRate::lora(10, 125),
    DataRate::lora(9, 125),
    DataRate::lora(8, 125),
    DataRate::lora(7, 125),
    DataRate::lora(8, 500),
    None,
    DataRate::lora(12, 500),
    DataRate::lora(11, 500),
    DataRate::lora(10, 500),
    DataRate::lora(9, 500),
    DataRate::lora(8, 500),
    DataRate::lora(7, 500),
    None,
    None,
];
const AU_MAX_PAYLOAD: [u8; 16] = [
    51, 51, 51, 115, 222, 222, 222, 0, 33, 109, 222, 222, 222, 222, 0, 0,
];

impl Region {
    /// The region's parameters.
    pub fn params(self) -> &'static RegionParams {
        match self {
            Region::Eu868 => &EU868,
            Region::Us915 => &US915,
            Region::Au915 => &AU915,
            Region::As923 => &AS923,
            Region::In865 => &IN865,
            Region::Kr920 => &KR920,
        }
    }
}

pub static EU868: RegionParams = RegionParams {
    name: "EU868",
    data_rates: EU_RATES,
    max_payload: EU_MAX_PAYLOAD,
    rx1: Rx1Rule::SameChannel,
    rx2_frequency: 869_525_000,
    rx2_data_rate: 0,
    receive_delay1: 1,
    join_accept_delay1: 5,
    min_downlink_dr: 0,
    cf_list: &[
        867_100_000,
        867_300_000,
        867_500_000,
        867_700_000,
        867_900_000,
    ],
    duty_cycle_per_mille: 10,
    adr_max_dr: 5,
    max_tx_power_index: 7,
    default_channels: 3,
};

pub static US915: RegionParams = RegionParams {
    name: "US915",
    data_rates: US_RATES,
    max_payload: US_MAX_PAYLOAD,
    rx1: Rx1Rule::EightDownlinkChannels {
        first_uplink_hz: 902_300_000,
        base_hz: 923_300_000,
        step_hz: 600_000,
        dr0_downlink: 10,
    },
    rx2_frequency: 923_300_000,
    rx2_data_rate: 8,
    receive_delay1: 1,
    join_accept_delay1: 5,
    min_downlink_dr: 8,
    cf_list: &[],
    duty_cycle_per_mille: 0,
    adr_max_dr: 3,
    max_tx_power_index: 14,
    default_channels: 0,
};

pub static AU915: RegionParams = RegionParams {
    name: "AU915",
    data_rates: AU_RATES,
    max_payload: AU_MAX_PAYLOAD,
    rx1: Rx1Rule::EightDownlinkChannels {
        first_uplink_hz: 915_200_000,
        base_hz: 923_300_000,
        step_hz: 600_000,
        dr0_downlink: 8,
    },
    rx2_frequency: 923_300_000,
    rx2_data_rate: 8,
    receive_delay1: 1,
    join_accept_delay1: 5,
    min_downlink_dr: 8,
    cf_list: &[],
    duty_cycle_per_mille: 0,
    adr_max_dr: 5,
    max_tx_power_index: 10,
    default_channels: 0,
};

pub static AS923: RegionParams = RegionParams {
    name: "AS923",
    data_rates: EU_RATES,
    max_payload: EU_MAX_PAYLOAD,
    rx1: Rx1Rule::SameChannel,
    rx2_frequency: 923_200_000,
    rx2_data_rate: 2,
    receive_delay1: 1,
    join_accept_delay1: 5,
    min_downlink_dr: 0,
    cf_list: &[],
    duty_cycle_per_mille: 10,
    adr_max_dr: 5,
    max_tx_power_index: 7,
    default_channels: 2,
};

pub static IN865: RegionParams = RegionParams {
    name: "IN865",
    data_rates: EU_RATES,
    max_payload: EU_MAX_PAYLOAD,
    rx1: Rx1Rule::SameChannel,
    rx2_frequency: 866_550_000,
    rx2_data_rate: 2,
    receive_delay1: 1,
    join_accept_delay1: 5,
    min_downlink_dr: 0,
    cf_list: &[],
    duty_cycle_per_mille: 0,
    adr_max_dr: 5,
    max_tx_power_index: 10,
    default_channels: 3,
};

pub static KR920: RegionParams = RegionParams {
    name: "KR920",
    data_rates: EU_RATES,
    max_payload: EU_MAX_PAYLOAD,
    rx1: Rx1Rule::SameChannel,
    rx2_frequency: 921_900_000,
    rx2_data_rate: 0,
    receive_delay1: 1,
    join_accept_delay1: 5,
    min_downlink_dr: 0,
    cf_list: &[],
    duty_cycle_per_mille: 0,
    adr_max_dr: 5,
    max_tx_power_index: 7,
    default_channels: 3,
};

/// One LinkADRReq's channel mask: 16 channels (bit 0 the first) and ChMaskCntl, which says which 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMaskBlock {
    pub mask: u16,
    pub control: u8,
}

/// Where and how a downlink goes out: frequency (Hz) and data rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub frequency: u32,
    pub data_rate: u8,
}

impl RegionParams {
    /// The data rate index of `sf`/`bandwidth_khz` among the uplink rates (DR0..DR7), if the region has it.
    pub fn uplink_data_rate(&self, spreading_factor: u8, bandwidth_khz: u16) -> Option<u8> {
        let wanted = DataRate {
            spreading_factor,
            bandwidth_khz,
        };
        (0..8u8).find(|dr| self.data_rates[usize::from(*dr)] == Some(wanted))
    }

    /// RX1 for an uplink on `frequency` at `uplink_dr`, with the session's RX1DROffset.
    pub fn rx1(&self, frequency: u32, uplink_dr: u8, offset: u8) -> Window {
        match self.rx1 {
            Rx1Rule::SameChannel => Window {
                frequency,
                data_rate: uplink_dr.saturating_sub(offset).max(self.min_downlink_dr),
            },
            Rx1Rule::EightDownlinkChannels {
                first_uplink_hz,
                base_hz,
                step_hz,
                dr0_downlink,
            } => {
                // Uplink channels 0..63 every 200 kHz from the first; downlink channel = uplink channel
                // mod 8.
                let channel = frequency.saturating_sub(first_uplink_hz) / 200_000;
                let downlink = dr0_downlink.saturating_add(uplink_dr).min(13);
                Window {
                    frequency: base_hz + step_hz * (channel % 8),
                    data_rate: downlink.saturating_sub(offset).max(self.min_downlink_dr),
                }
            }
        }
    }

    /// The channel masks of a LinkADRReq that keep a device on the channels it has: EU-style regions
    /// the default channels and the CFList's (one block, ChMaskCntl 0); the 64 + 8 channel regions
    /// the sub-band of the uplink's `frequency` (two blocks: its 500 kHz channel with the 125 kHz ones
    /// off, ChMaskCntl 7, then its eight 125 kHz channels).
    pub fn adr_channel_masks(&self, frequency: u32, bandwidth_khz: u16) -> Vec<ChannelMaskBlock> {
        match self.rx1 {
            Rx1Rule::SameChannel => {
                let channels =
                    (u32::from(self.default_channels) + self.cf_list.len() as u32).min(16);
                let mask = ((1u32 << channels) - 1) as u16;
                vec![ChannelMaskBlock { mask, control: 0 }]
            }
            Rx1Rule::EightDownlinkChannels {
                first_uplink_hz, ..
            } => {
                let offset = frequency.saturating_sub(first_uplink_hz);
                // 125 kHz channels every 200 kHz from the first; 500 kHz channels every 1.6 MHz
                // from 700 kHz above it.
                let sub_band = if bandwidth_khz == 500 {
                    offset.saturating_sub(700_000) / 1_600_000
                } else {
                    offset / 200_000 / 8
                }
                .min(7) as u8;
                vec![
                    ChannelMaskBlock {
                        mask: 1 << sub_band,
                        control: 7,
                    },
                    ChannelMaskBlock {
                        mask: 0x00FF << (8 * u16::from(sub_band % 2)),
                        control: sub_band / 2,
                    },
                ]
            }
        }
    }

    /// RX2 with the region's defaults.
    pub fn rx2(&self) -> Window {
        Window {
            frequency: self.rx2_frequency,
            data_rate: self.rx2_data_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu868_rx_windows_follow_the_uplink() {
        let eu = Region::Eu868.params();
        assert_eq!(eu.uplink_data_rate(7, 125), Some(5));
        assert_eq!(eu.uplink_data_rate(12, 125), Some(0));
        assert_eq!(
            eu.rx1(868_100_000, 5, 0),
            Window {
                frequency: 868_100_000,
                data_rate: 5
            }
        );
        assert_eq!(eu.rx1(868_100_000, 1, 3).data_rate, 0);
        assert_eq!(
            eu.rx2(),
            Window {
                frequency: 869_525_000,
                data_rate: 0
            }
        );
        assert_eq!(eu.max_payload[0], 51);
        assert_eq!(eu.max_payload[5], 222);
        assert_eq!(
            eu.data_rates[0].map(|dr| dr.datr()),
            Some("SF12BW125".to_string())
        );
    }

    #[test]
    fn eu868_cf_list_is_its_five_extra_channels() {
        let list = Region::Eu868.params().cf_list;
        assert_eq!(
            list,
            [
                867_100_000,
                867_300_000,
                867_500_000,
                867_700_000,
                867_900_000
            ]
        );
    }

    #[test]
    fn us915_rx1_maps_64_channels_to_8_downlink_channels() {
        let us = Region::Us915.params();
        assert_eq!(us.uplink_data_rate(10, 125), Some(0));
        // Channel 9 (904.1 MHz) -> downlink channel 1 (923.9 MHz); DR0 -> DR10.
        assert_eq!(
            us.rx1(904_100_000, 0, 0),
            Window {
                frequency: 923_900_000,
                data_rate: 10
            }
        );
        assert_eq!(us.rx1(902_300_000, 3, 0).data_rate, 13);
        assert_eq!(us.rx1(902_300_000, 4, 0).data_rate, 13);
        assert_eq!(us.rx1(902_300_000, 0, 2).data_rate, 8);
        // AU915: uplink DR2 on channel 0 -> DR10 on 923.3 MHz.
        assert_eq!(
            Region::Au915.params().rx1(915_200_000, 2, 0),
            Window {
                frequency: 923_300_000,
                data_rate: 10
            }
        );
        assert_eq!(
            us.rx2(),
            Window {
                frequency: 923_300_000,
                data_rate: 8
            }
        );
        assert_eq!(us.max_payload[0], 11);
        assert_eq!(
            us.data_rates[8].map(|dr| dr.datr()),
            Some("SF12BW500".to_string())
        );
        assert!(us.cf_list.is_empty());
    }

    #[test]
    fn adr_channel_masks_keep_the_channels_a_device_has() {
        // EU868: channels 0-2 and the CFList's five.
        assert_eq!(
            Region::Eu868.params().adr_channel_masks(868_100_000, 125),
            [ChannelMaskBlock {
                mask: 0x00FF,
                control: 0
            }]
        );
        // AS923 group 1 without a CFList: its two default channels.
        assert_eq!(
            Region::As923.params().adr_channel_masks(923_200_000, 125)[0].mask,
            0x0003
        );
        // US915 sub-band 2 (channels 8-15, 903.9-905.3 MHz): 500 kHz channel 65, then channels 8-15.
        let us = Region::Us915.params();
        let second_sub_band = [
            ChannelMaskBlock {
                mask: 0x0002,
                control: 7,
            },
            ChannelMaskBlock {
                mask: 0xFF00,
                control: 0,
            },
        ];
        assert_eq!(us.adr_channel_masks(904_100_000, 125), second_sub_band);
        // Its 500 kHz channel 65 (904.6 MHz) is the same sub-band.
        assert_eq!(us.adr_channel_masks(904_600_000, 500), second_sub_band);
        // Sub-band 3 (channels 16-23): the third block's low byte.
        assert_eq!(
            us.adr_channel_masks(905_500_000, 125)[1],
            ChannelMaskBlock {
                mask: 0x00FF,
                control: 1
            }
        );
    }

    #[test]
    fn every_region_has_a_table_row() {
        for region in [
            Region::Eu868,
            Region::Us915,
            Region::Au915,
            Region::As923,
            Region::In865,
            Region::Kr920,
        ] {
            let params = region.params();
            let rx2 = params.data_rates[usize::from(params.rx2_data_rate)];
            assert!(rx2.is_some(), "{}: RX2 data rate exists", params.name);
        }
    }
}
