//! Physical limits, computed rather than measured: what a serial port and one LoRa channel can carry at
//! all, as reference rows beside the measured figures (a gateway faster than its links gains nothing
//! more). Serial: start bit, data bits, parity and stop bits per byte. LoRa: the time on air of the
//! SX127x/SX126x datasheets, `Tsym = 2^SF / BW`, with the low-data-rate optimisation on when a symbol
//! lasts longer than 16 ms, and pure ALOHA's best channel use of 1/(2e) for unsynchronised nodes.

/// Frames per second a UART carries at `baud` with 8N1 framing (10 bits per byte on the wire).
pub fn serial_frames_per_second(baud: u32, frame_bytes: u32) -> f64 {
    let bits_per_byte = 1 + 8 + 1;
    baud as f64 / bits_per_byte as f64 / frame_bytes as f64
}

/// A LoRa transmission's settings.
#[derive(Clone, Copy, Debug)]
pub struct LoRa {
    pub spreading_factor: u32,
    pub bandwidth_hz: f64,
    /// 1..=4 for coding rates 4/5..4/8.
    pub coding_rate: u32,
    pub preamble_symbols: u32,
    pub explicit_header: bool,
    pub crc: bool,
}

impl LoRa {
    /// 125 kHz, CR 4/5, preamble 8, explicit header, CRC on: the LoRaWAN uplink settings.
    pub fn uplink(spreading_factor: u32) -> LoRa {
        LoRa {
            spreading_factor,
            bandwidth_hz: 125_000.0,
            coding_rate: 1,
            preamble_symbols: 8,
            explicit_header: true,
            crc: true,
        }
    }

    pub fn symbol_seconds(&self) -> f64 {
        f64::from(1u32 << self.spreading_factor) / self.bandwidth_hz
    }

    /// Whether the low-data-rate optimisation is on (symbols over 16 ms, as the datasheets require).
    pub fn low_data_rate_optimize(&self) -> bool {
        self.symbol_seconds() > 0.016
    }

    /// Seconds on air for a `payload_bytes` payload.
    pub fn time_on_air(&self, payload_bytes: u32) -> f64 {
        let sf = self.spreading_factor as i64;
        let de = i64::from(self.low_data_rate_optimize());
        let ih = i64::from(!self.explicit_header);
        let crc = i64::from(self.crc);
        let numerator = 8 * payload_bytes as i64 - 4 * sf + 28 + 16 * crc - 20 * ih;
        let denominator = 4 * (sf - 2 * de);
        let blocks = (numerator + denominator - 1).div_euclid(denominator).max(0);
        let payload_symbols = 8 + blocks * (self.coding_rate as i64 + 4);
        (self.preamble_symbols as f64 + 4.25 + payload_symbols as f64) * self.symbol_seconds()
    }

    /// Back-to-back frames per second on one channel.
    pub fn frames_per_second(&self, payload_bytes: u32) -> f64 {
        1.0 / self.time_on_air(payload_bytes)
    }
}

/// Pure ALOHA's best channel use, 1/(2e) ≈ 18.4 %: unsynchronised nodes collide beyond it.
pub fn pure_aloha_share() -> f64 {
    1.0 / (2.0 * std::f64::consts::E)
}

/// The markdown section.
pub fn markdown() -> String {
    let mut out = String::from(
        "## Physical limits (computed reference rows)\n\n\
         What the links themselves carry, from `examples/bench/physical.rs` (unit-tested against the\n\
         datasheet figures). The gateway's own rates above are far beyond them.\n\n\
         | link | time per frame | frames/s |\n|---|---:|---:|\n",
    );
    let serial = serial_frames_per_second(115_200, 24);
    out.push_str(&format!(
        "| serial port at 115200 baud, 8N1, 24-byte frames | {:.2} ms | {serial:.0} |\n",
        1e3 / serial
    ));
    for sf in 7..=12 {
        let lora = LoRa::uplink(sf);
        out.push_str(&format!(
            "| one LoRa channel, SF{sf}/125 kHz, CR 4/5, 20-byte payload{} | {:.1} ms | {:.2} |\n",
            if lora.low_data_rate_optimize() {
                ", LDRO"
            } else {
                ""
            },
            lora.time_on_air(20) * 1e3,
            lora.frames_per_second(20)
        ));
    }
    out.push_str(&format!(
        "| same at SF7, unsynchronised nodes (pure ALOHA, {:.1} % at best) | | {:.1} |\n",
        pure_aloha_share() * 100.0,
        LoRa::uplink(7).frames_per_second(20) * pure_aloha_share()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_115200_baud_port_carries_480_frames_of_24_bytes() {
        assert!((serial_frames_per_second(115_200, 24) - 480.0).abs() < 1e-9);
        assert!((serial_frames_per_second(9_600, 24) - 40.0).abs() < 1e-9);
    }

    #[test]
    fn lora_time_on_air_matches_the_datasheet_table() {
        // 125 kHz, CR 4/5, preamble 8, explicit header, CRC on, 20-byte payload.
        for (sf, toa_ms) in [
            (7, 56.6),
            (8, 102.9),
            (9, 185.3),
            (10, 370.7),
            (11, 741.4),
            (12, 1318.9),
        ] {
            let got = LoRa::uplink(sf).time_on_air(20) * 1e3;
            assert!(
                (got - toa_ms).abs() < 0.05,
                "SF{sf}: {got:.2} ms, table {toa_ms}"
            );
        }
        assert!((LoRa::uplink(7).frames_per_second(20) - 17.7).abs() < 0.05);
    }

    #[test]
    fn ldro_starts_where_symbols_pass_16_ms() {
        assert!(!LoRa::uplink(10).low_data_rate_optimize());
        assert!(LoRa::uplink(11).low_data_rate_optimize());
        let mut wide = LoRa::uplink(11);
        wide.bandwidth_hz = 250_000.0;
        assert!(!wide.low_data_rate_optimize(), "8.2 ms symbols at 250 kHz");
    }

    #[test]
    fn small_payloads_keep_the_minimum_of_eight_symbols() {
        let lora = LoRa {
            explicit_header: false,
            crc: false,
            ..LoRa::uplink(12)
        };
        // 8*1 - 48 + 28 < 0: no extra blocks, 8 + 4.25 + 8 symbols of 32.768 ms.
        assert!((lora.time_on_air(1) - 20.25 * 0.032768).abs() < 1e-9);
    }

    #[test]
    fn aloha_uses_18_4_percent_at_best() {
        assert!((pure_aloha_share() - 0.184).abs() < 0.001);
        assert!((LoRa::uplink(7).frames_per_second(20) * pure_aloha_share() - 3.25).abs() < 0.05);
    }
}
