//! Golden traces: for a given configuration each driver sends exactly the documented bytes, compared
//! against the chip simulator's log of SPI transactions (868.1, 915 and 433.175 MHz; SF7, and SF12 with
//! LowDataRateOptimize). The expected bytes are written out by hand from the register and command facts
//! (SX1276 datasheet, SX1261/2 datasheet, LoRaMac-node), not computed by the code under test.

use sensorgate::source::radio::hal::{Radio, ThreadDelay};
use sensorgate::source::radio::sim_sx1262::Sx1262Sim;
use sensorgate::source::radio::sim_sx1276::{Sx1276Sim, Trace};
use sensorgate::source::radio::sx1262::Sx1262;
use sensorgate::source::radio::sx1276::Sx1276;
use sensorgate::source::radio::{Chip, RadioSettings};

fn settings(chip: Chip, frequency_hz: u32, spreading_factor: u8) -> RadioSettings {
    RadioSettings {
        chip,
        frequency_hz,
        spreading_factor,
        ..RadioSettings::default()
    }
}

fn hex(line: &str) -> Vec<u8> {
    line.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Initialises an SX1276 simulator and returns its whole log.
fn sx1276_trace(settings: &RadioSettings) -> Vec<Trace> {
    let chip = Sx1276Sim::with_trace();
    let mut radio = Sx1276::new(
        chip.spi(),
        chip.reset_pin(),
        chip.dio0(),
        ThreadDelay,
        settings.clone(),
    );
    radio.init().unwrap();
    radio.check_health().unwrap();
    chip.trace()
}

/// The register writes (MOSI of transactions with the W bit) after the reset and the version read.
fn sx1276_writes(trace: &[Trace]) -> Vec<Vec<u8>> {
    assert_eq!(trace[0], Trace::Reset, "a reset comes first");
    assert_eq!(
        trace[1],
        Trace::Spi {
            mosi: vec![0x42, 0x00],
            miso: vec![0x00, 0x12]
        },
        "then the version register is read"
    );
    trace
        .iter()
        .filter_map(|t| match t {
            Trace::Spi { mosi, .. } if mosi[0] & 0x80 != 0 => Some(mosi.clone()),
            _ => None,
        })
        .collect()
}

fn sx1276_expected(op_mode_lf: u8, frf: &str, modem2: &str, modem3: &str) -> Vec<Vec<u8>> {
    [
        format!("81 {:02X}", 0x80 | op_mode_lf),
        format!("81 {:02X}", 0x81 | op_mode_lf),
        format!("86 {frf}"),
        "9D 72".to_string(),
        format!("9E {modem2}"),
        format!("A6 {modem3}"),
        "A0 00 08".to_string(),
        "B9 12".to_string(),
        "B1 43".to_string(),
        "B7 0A".to_string(),
        "8C 23".to_string(),
        "A3 FF".to_string(),
        "B0 00".to_string(),
        "AF 40".to_string(),
        "8F 00".to_string(),
        "8D 00".to_string(),
        "91 1F".to_string(),
        "C0 00".to_string(),
        "92 FF".to_string(),
        format!("81 {:02X}", 0x85 | op_mode_lf),
    ]
    .iter()
    .map(|l| hex(l))
    .collect()
}

#[test]
fn sx1276_868_1_mhz_sf7() {
    let trace = sx1276_trace(&settings(Chip::Sx1276, 868_100_000, 7));
    assert_eq!(
        sx1276_writes(&trace),
        sx1276_expected(0x00, "D9 06 66", "74", "04")
    );
}

#[test]
fn sx1276_915_mhz_sf12_with_low_data_rate_optimize() {
    let trace = sx1276_trace(&settings(Chip::Sx1276, 915_000_000, 12));
    assert_eq!(
        sx1276_writes(&trace),
        sx1276_expected(0x00, "E4 C0 00", "C4", "0C")
    );
}

#[test]
fn sx1276_433_175_mhz_sf7_uses_the_low_frequency_bank() {
    let trace = sx1276_trace(&settings(Chip::Sx1276, 433_175_000, 7));
    assert_eq!(
        sx1276_writes(&trace),
        sx1276_expected(0x08, "6C 4B 33", "74", "04")
    );
}

#[test]
fn sx1276_health_check_only_reads() {
    let chip = Sx1276Sim::with_trace();
    let mut radio = Sx1276::new(
        chip.spi(),
        chip.reset_pin(),
        chip.dio0(),
        ThreadDelay,
        RadioSettings::default(),
    );
    radio.init().unwrap();
    chip.clear_trace();
    radio.check_health().unwrap();
    let trace = chip.trace();
    assert!(!trace.is_empty());
    for t in trace {
        match t {
            Trace::Spi { mosi, .. } => {
                assert_eq!(mosi[0] & 0x80, 0, "health check wrote {mosi:02X?}")
            }
            Trace::Reset => panic!("health check reset the chip"),
        }
    }
}

/// Initialises an SX1262 simulator and returns every transaction's MOSI after the reset.
fn sx1262_commands(settings: &RadioSettings) -> Vec<Vec<u8>> {
    let chip = Sx1262Sim::with_trace();
    let mut radio = Sx1262::new(
        chip.spi(),
        chip.reset_pin(),
        chip.dio1(),
        chip.busy(),
        ThreadDelay,
        settings.clone(),
    );
    radio.init().unwrap();
    radio.check_health().unwrap();
    assert!(chip.violations().is_empty(), "{:?}", chip.violations());
    let trace = chip.trace();
    assert_eq!(trace[0], Trace::Reset);
    trace
        .into_iter()
        .filter_map(|t| match t {
            Trace::Spi { mosi, .. } => Some(mosi),
            Trace::Reset => None,
        })
        .collect()
}

fn sx1262_expected(lines: &[&str]) -> Vec<Vec<u8>> {
    lines.iter().map(|l| hex(l)).collect()
}

const SX1262_HEALTH: [&str; 4] = ["C0 00", "11 00 00", "12 00 00 00", "1D 07 40 00 00 00"];

#[test]
fn sx1262_868_1_mhz_sf7() {
    let commands = sx1262_commands(&settings(Chip::Sx1262, 868_100_000, 7));
    let mut expected = sx1262_expected(&[
        "80 00",
        "C0 00",
        "96 01",
        "8A 01",
        "98 D7 DB",
        "86 36 41 99 9A",
        "8F 00 00",
        "8B 07 04 01 00",
        "8C 00 08 00 FF 01 00",
        "1D 07 36 00 00",
        "0D 07 36 0D",
        "0D 07 40 14 24",
        "08 02 62 02 62 00 00 00 00",
        "82 FF FF FF",
    ]);
    expected.extend(sx1262_expected(&SX1262_HEALTH));
    assert_eq!(commands, expected);
}

#[test]
fn sx1262_915_mhz_sf12_with_tcxo_rf_switch_and_low_data_rate_optimize() {
    let settings = RadioSettings {
        tcxo_voltage: Some(1.8),
        dio2_rf_switch: true,
        sync_word: 0x34,
        ..settings(Chip::Sx1262, 915_000_000, 12)
    };
    let commands = sx1262_commands(&settings);
    let mut expected = sx1262_expected(&[
        "80 00",
        "C0 00",
        "97 02 00 01 40",
        "89 7F",
        "96 01",
        "9D 01",
        "8A 01",
        "98 E1 E9",
        "86 39 30 00 00",
        "8F 00 00",
        "8B 0C 04 01 01",
        "8C 00 08 00 FF 01 00",
        "1D 07 36 00 00",
        "0D 07 36 0D",
        "0D 07 40 34 44",
        "08 02 62 02 62 00 00 00 00",
        "82 FF FF FF",
    ]);
    expected.extend(sx1262_expected(&SX1262_HEALTH));
    assert_eq!(commands, expected);
}

#[test]
fn sx1262_433_175_mhz_sf7() {
    let commands = sx1262_commands(&settings(Chip::Sx1262, 433_175_000, 7));
    assert_eq!(commands[4], hex("98 6B 6F"));
    assert_eq!(commands[5], hex("86 1B 12 CC CD"));
    assert_eq!(commands[7], hex("8B 07 04 01 00"));
}
