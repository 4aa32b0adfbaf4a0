//! Commands on the radio side: golden traces of a transmission on both chips (the register and command
//! bytes written by hand from the datasheets, the FIFO bytes the simulated chip put on the air, and the
//! chip back in continuous receive afterwards), and the dispatcher's timing on paused tokio time:
//! `after_uplink` delivery exactly `rx_delay` after the device's frame, expiry of a command whose link
//! stays down, and a duty-cycle budget that holds commands until they expire.

use std::time::Duration;

use sensorgate::commands::dispatch::{Dispatcher, Outcome};
use sensorgate::commands::dutycycle::Budget;
use sensorgate::commands::outbox::Command;
use sensorgate::commands::{CommandStats, Deliver, Downlink, OutboxSettings, QueueBounds, Reply};
use sensorgate::decode::{HeaderFormat, PacketDecoder, PayloadFormat};
use sensorgate::frame::crc::CrcMode;
use sensorgate::model::Packet;
use sensorgate::source::radio::hal::{Radio, ThreadDelay};
use sensorgate::source::radio::sim_sx1262::Sx1262Sim;
use sensorgate::source::radio::sim_sx1276::{Sx1276Sim, Trace};
use sensorgate::source::radio::sx1262::Sx1262;
use sensorgate::source::radio::sx1276::Sx1276;
use sensorgate::source::radio::{time_on_air, Chip, IqPolarity, RadioSettings};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn hex(line: &str) -> Vec<u8> {
    line.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

fn mosi(trace: &[Trace]) -> Vec<Vec<u8>> {
    trace
        .iter()
        .filter_map(|t| match t {
            Trace::Spi { mosi, .. } => Some(mosi.clone()),
            Trace::Reset => None,
        })
        .collect()
}

/// The command of the golden traces: RadioHead TO 7, FROM 0, ID 1, FLAGS 0, LPP digital_out_1 = 1.
const FRAME: [u8; 7] = [0x07, 0x00, 0x01, 0x00, 0x01, 0x01, 0x01];

#[test]
fn sx1276_transmit_golden_trace_and_back_to_receive() {
    let chip = Sx1276Sim::with_trace();
    let settings = RadioSettings::default();
    let mut radio = Sx1276::new(
        chip.spi(),
        chip.reset_pin(),
        chip.dio0(),
        ThreadDelay,
        settings.clone(),
    );
    radio.init().unwrap();
    chip.clear_trace();
    let airtime = radio.transmit(&FRAME, IqPolarity::Standard).unwrap();
    assert_eq!(airtime, time_on_air(&settings, FRAME.len()));
    let expected: Vec<Vec<u8>> = [
        "81 81",                   // RegOpMode: LoRa standby
        "89 8C",                   // RegPaConfig: PA_BOOST, 14 dBm
        "8E 00",                   // RegFifoTxBaseAddr 0
        "8D 00",                   // RegFifoAddrPtr 0
        "80 07 00 01 00 01 01 01", // the FIFO
        "A2 07",                   // RegPayloadLength 7
        "91 F7",                   // RegIrqFlagsMask: TxDone only
        "C0 40",                   // RegDioMapping1: DIO0 = TxDone
        "92 FF",                   // clear flags
        "81 83",                   // TX
        "12 00",                   // read RegIrqFlags after DIO0
        "92 FF",                   // clear flags
        "91 1F",                   // receive interrupts again
        "C0 00",                   // DIO0 = RxDone
        "8D 00",                   // FIFO pointer at the receive base
        "81 85",                   // RX continuous
    ]
    .iter()
    .map(|l| hex(l))
    .collect();
    assert_eq!(mosi(&chip.trace()), expected);
    let sent = chip.transmitted();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bytes, FRAME);
    assert_eq!(
        sent[0].frequency_hz, 868_099_975,
        "RegFrf's resolution (61 Hz)"
    );
    // Back in continuous receive: the next packet is heard, the health check passes.
    assert!(chip.inject(&[0xFF, 0x07, 0x02, 0x00], -80.0, 7.0, true));
    radio.check_health().unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        radio.wait_event(Duration::from_secs(1)),
        Ok(Some(sensorgate::source::radio::RxEvent::Packet(_)))
    ));
}

#[test]
fn sx1262_transmit_golden_trace_and_back_to_receive() {
    let chip = Sx1262Sim::with_trace();
    let settings = RadioSettings {
        chip: Chip::Sx1262,
        ..RadioSettings::default()
    };
    let mut radio = Sx1262::new(
        chip.spi(),
        chip.reset_pin(),
        chip.dio1(),
        chip.busy(),
        ThreadDelay,
        settings.clone(),
    );
    radio.init().unwrap();
    chip.clear_trace();
    radio.transmit(&FRAME, IqPolarity::Standard).unwrap();
    let expected: Vec<Vec<u8>> = [
        "80 00",                      // SetStandby(STDBY_RC)
        "95 04 07 00 01",             // SetPaConfig: SX1262 high-power PA
        "8E 0E 04",                   // SetTxParams: 14 dBm, 200 us ramp
        "0E 00 07 00 01 00 01 01 01", // WriteBuffer at 0
        "8C 00 08 00 07 01 00", // SetPacketParams: preamble 8, explicit, 7 bytes, CRC on, IQ standard
        "08 02 01 02 01 00 00 00 00", // SetDioIrqParams: TxDone | Timeout on DIO1
        "1D 08 89 00 00",       // ReadRegister 0x0889 (errata 15.1)
        "0D 08 89 04",          // ... bit 2 set below 500 kHz
        "83 00 00 00",          // SetTx, no chip timeout
        "12 00 00 00",          // GetIrqStatus
        "02 FF FF",             // ClearIrqStatus
        "8C 00 08 00 FF 01 00", // SetPacketParams: maximum length for receiving
        "08 02 62 02 62 00 00 00 00", // SetDioIrqParams: the receive interrupts
        "82 FF FF FF",          // SetRx continuous
    ]
    .iter()
    .map(|l| hex(l))
    .collect();
    assert_eq!(mosi(&chip.trace()), expected);
    assert!(chip.violations().is_empty(), "{:?}", chip.violations());
    let sent = chip.transmitted();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bytes, FRAME);
    assert_eq!(sent[0].frequency_hz, 868_100_000);
    assert!(chip.inject(&[0xFF, 0x07, 0x02, 0x00], -80.0, 7.0, true));
    radio.check_health().unwrap_or_else(|e| panic!("{e}"));
}

/// A LoRaWAN downlink as the gateway sends it: inverted IQ written before TX (`RegInvertIQ` 0x66,
/// `RegInvertIQ2` 0x19), the standard polarity back after TxDone (0x27, 0x1D), then receive; the simulated
/// end device (listening inverted) hears it, and the chip hears a standard uplink afterwards.
#[test]
fn sx1276_inverted_iq_transmit_golden_trace_and_back_to_standard_receive() {
    let chip = Sx1276Sim::with_trace();
    let settings = RadioSettings {
        sync_word: 0x34,
        ..RadioSettings::default()
    };
    let mut radio = Sx1276::new(
        chip.spi(),
        chip.reset_pin(),
        chip.dio0(),
        ThreadDelay,
        settings.clone(),
    );
    radio.init().unwrap();
    chip.clear_trace();
    radio.transmit(&FRAME, IqPolarity::Inverted).unwrap();
    let expected: Vec<Vec<u8>> = [
        "81 81",                   // RegOpMode: LoRa standby
        "89 8C",                   // RegPaConfig: PA_BOOST, 14 dBm
        "8E 00",                   // RegFifoTxBaseAddr 0
        "8D 00",                   // RegFifoAddrPtr 0
        "80 07 00 01 00 01 01 01", // the FIFO
        "A2 07",                   // RegPayloadLength 7
        "91 F7",                   // RegIrqFlagsMask: TxDone only
        "C0 40",                   // RegDioMapping1: DIO0 = TxDone
        "92 FF",                   // clear flags
        "B3 66",                   // RegInvertIQ: InvertIQ (bit 6) set, bit 0 (TX standard) clear
        "BB 19",                   // RegInvertIQ2: inverted
        "81 83",                   // TX
        "12 00",                   // read RegIrqFlags after DIO0
        "92 FF",                   // clear flags
        "B3 27",                   // RegInvertIQ: standard again
        "BB 1D",                   // RegInvertIQ2: standard again
        "91 1F",                   // receive interrupts again
        "C0 00",                   // DIO0 = RxDone
        "8D 00",                   // FIFO pointer at the receive base
        "81 85",                   // RX continuous
    ]
    .iter()
    .map(|l| hex(l))
    .collect();
    assert_eq!(mosi(&chip.trace()), expected);
    let sent = chip.transmitted();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bytes, FRAME);
    assert_eq!(sent[0].iq, Some(IqPolarity::Inverted));
    assert!(sent[0].heard_with(IqPolarity::Inverted));
    assert!(!sent[0].heard_with(IqPolarity::Standard));
    assert!(chip.inject(&[0x40, 0x01, 0x02, 0x03], -80.0, 7.0, true));
    radio.check_health().unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        radio.wait_event(Duration::from_secs(1)),
        Ok(Some(sensorgate::source::radio::RxEvent::Packet(_)))
    ));
    // A standard transmission stays standard: the RadioHead nodes hear it, an end device does not.
    radio.transmit(&FRAME, IqPolarity::Standard).unwrap();
    let sent = chip.take_transmitted();
    assert_eq!(sent[1].iq, Some(IqPolarity::Standard));
    assert!(!sent[1].heard_with(IqPolarity::Inverted));
}

/// The SX1262's LoRaWAN downlink: SetPacketParams with InvertIQ = 1 and register 0x0736 bit 2 cleared
/// (errata 15.4) before TX; after TxDone the standard polarity (InvertIQ = 0, bit 2 set) and receive.
#[test]
fn sx1262_inverted_iq_transmit_golden_trace_and_back_to_standard_receive() {
    let chip = Sx1262Sim::with_trace();
    let settings = RadioSettings {
        chip: Chip::Sx1262,
        sync_word: 0x34,
        ..RadioSettings::default()
    };
    let mut radio = Sx1262::new(
        chip.spi(),
        chip.reset_pin(),
        chip.dio1(),
        chip.busy(),
        ThreadDelay,
        settings.clone(),
    );
    radio.init().unwrap();
    chip.clear_trace();
    radio.transmit(&FRAME, IqPolarity::Inverted).unwrap();
    let expected: Vec<Vec<u8>> = [
        "80 00",                      // SetStandby(STDBY_RC)
        "95 04 07 00 01",             // SetPaConfig: SX1262 high-power PA
        "8E 0E 04",                   // SetTxParams: 14 dBm, 200 us ramp
        "0E 00 07 00 01 00 01 01 01", // WriteBuffer at 0
        "8C 00 08 00 07 01 01",       // SetPacketParams: ..., CRC on, IQ inverted
        "1D 07 36 00 00",             // ReadRegister 0x0736 (errata 15.4)
        "0D 07 36 09",                // ... bit 2 cleared for inverted IQ
        "08 02 01 02 01 00 00 00 00", // SetDioIrqParams: TxDone | Timeout on DIO1
        "1D 08 89 00 00",             // ReadRegister 0x0889 (errata 15.1)
        "0D 08 89 04",                // ... bit 2 set below 500 kHz
        "83 00 00 00",                // SetTx, no chip timeout
        "12 00 00 00",                // GetIrqStatus
        "02 FF FF",                   // ClearIrqStatus
        "8C 00 08 00 FF 01 00",       // SetPacketParams: maximum length, IQ standard
        "1D 07 36 00 00",             // ReadRegister 0x0736
        "0D 07 36 0D",                // ... bit 2 set again for standard IQ
        "08 02 62 02 62 00 00 00 00", // SetDioIrqParams: the receive interrupts
        "82 FF FF FF",                // SetRx continuous
    ]
    .iter()
    .map(|l| hex(l))
    .collect();
    assert_eq!(mosi(&chip.trace()), expected);
    assert!(chip.violations().is_empty(), "{:?}", chip.violations());
    let sent = chip.transmitted();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bytes, FRAME);
    assert_eq!(sent[0].iq, Some(IqPolarity::Inverted));
    assert!(chip.inject(&[0x40, 0x01, 0x02, 0x03], -80.0, 7.0, true));
    radio.check_health().unwrap_or_else(|e| panic!("{e}"));
}

fn command(address: &str, deliver: Deliver) -> Command {
    Command {
        device: format!("node-{address}"),
        address: address.to_string(),
        fport: None,
        bytes: vec![address.parse::<u8>().unwrap(), 0, 1, 0, 1, 1, 1],
        fields: serde_json::json!({"digital_out_1": 1}),
        deliver,
        reply: std::sync::Arc::new(Reply::default()),
        cost: 100,
    }
}

struct Harness {
    downlink: Downlink,
    outcomes: mpsc::Receiver<Outcome>,
    sent: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>,
    stop: CancellationToken,
}

/// A dispatcher for a RadioHead + LPP radio source, and a fake radio thread that records when each frame
/// was handed to it and answers with its time on air.
fn harness(settings: OutboxSettings, radio: RadioSettings, budget: Option<Budget>) -> Harness {
    let decoder = PacketDecoder {
        crc: CrcMode::None,
        header: HeaderFormat::RadioHead,
        payload: PayloadFormat::Lpp,
    };
    let stats = CommandStats::default();
    stats.track("lora");
    let downlink = Downlink::new("lora", settings, decoder, false, stats.clone());
    let (outcome_tx, outcomes) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher {
        downlink: downlink.clone(),
        radio: Some(radio.clone()),
        budget,
        outcomes: outcome_tx,
        stats,
    };
    tokio::spawn(dispatcher.run(stop.clone()));
    let port = downlink.port();
    let (sent_tx, sent) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let request = port.next_request().await;
            let _ = sent_tx.send((Instant::now(), request.bytes.clone()));
            let _ = request
                .done
                .send(Ok(Some(time_on_air(&radio, request.bytes.len()))));
        }
    });
    Harness {
        downlink,
        outcomes,
        sent,
        stop,
    }
}

fn uplink_from(address: u8) -> Packet {
    Packet {
        source: "lora".into(),
        bytes: vec![0xFF, address, 9, 0, 1, 103, 0, 200],
        received_at: std::time::SystemTime::now(),
        radio: None,
    }
}

#[tokio::test(start_paused = true)]
async fn after_uplink_goes_out_rx_delay_after_the_frame() {
    let mut h = harness(
        OutboxSettings {
            depth: 4,
            ttl: Duration::from_secs(600),
            rx_delay: Duration::from_secs(1),
            bounds: QueueBounds::default(),
        },
        RadioSettings::default(),
        None,
    );
    let port = h.downlink.port();
    port.set_link(true);
    h.downlink.push(command("7", Deliver::AfterUplink)).unwrap();
    h.downlink.push(command("7", Deliver::AfterUplink)).unwrap();
    // Nothing goes out before the node is heard, however long it takes.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(h.sent.try_recv().is_err());
    // Another node's frame opens no window for node 7.
    port.heard(&uplink_from(8));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.sent.try_recv().is_err());

    let heard = Instant::now();
    port.heard(&uplink_from(7));
    let (at, bytes) = h.sent.recv().await.unwrap();
    assert_eq!(
        at - heard,
        Duration::from_secs(1),
        "exactly rx_delay after the frame"
    );
    assert_eq!(bytes[0], 7);
    assert!(matches!(
        h.outcomes.recv().await,
        Some(Outcome::Sent {
            airtime: Some(_),
            ..
        })
    ));
    // One frame per uplink: the second waits for the next one.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(h.sent.try_recv().is_err());
    let heard = Instant::now();
    port.heard(&uplink_from(7));
    let (at, _) = h.sent.recv().await.unwrap();
    assert_eq!(at - heard, Duration::from_secs(1));
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_command_whose_link_stays_down_expires_and_one_sent_once_it_is_back() {
    let mut h = harness(
        OutboxSettings {
            depth: 4,
            ttl: Duration::from_secs(30),
            rx_delay: Duration::from_secs(1),
            bounds: QueueBounds::default(),
        },
        RadioSettings::default(),
        None,
    );
    let queued_at = Instant::now();
    h.downlink.push(command("3", Deliver::Now)).unwrap();
    match h.outcomes.recv().await.unwrap() {
        Outcome::Expired { reason, queued } => {
            assert_eq!(Instant::now() - queued_at, Duration::from_secs(30));
            assert!(reason.contains("link was down"), "{reason}");
            assert_eq!(queued.command.address, "3");
        }
        other => panic!("expected expiry, got {other:?}"),
    }
    assert!(h.sent.try_recv().is_err());
    // The link comes back: a new command goes out at once.
    h.downlink.push(command("3", Deliver::Now)).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let link_up = Instant::now();
    h.downlink.port().set_link(true);
    let (at, _) = h.sent.recv().await.unwrap();
    assert_eq!(at, link_up);
    h.stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn the_duty_cycle_budget_holds_commands_until_they_expire() {
    // SF12: about 1 s on air for a 7-byte frame; 0.05 % of an hour is 1.8 s: one fits, the next waits
    // until the first leaves the hour, which is after its ttl.
    let radio = RadioSettings {
        spreading_factor: 12,
        ..RadioSettings::default()
    };
    let airtime = time_on_air(&radio, 7);
    assert!(airtime > Duration::from_millis(900) && airtime * 2 > Duration::from_millis(1800));
    let budget = Budget::new(0.0005, "0.05 % per hour (duty_cycle)".to_string());
    let mut h = harness(
        OutboxSettings {
            depth: 8,
            ttl: Duration::from_secs(600),
            rx_delay: Duration::from_secs(1),
            bounds: QueueBounds::default(),
        },
        radio,
        Some(budget),
    );
    h.downlink.port().set_link(true);
    let started = Instant::now();
    for address in ["1", "2"] {
        h.downlink.push(command(address, Deliver::Now)).unwrap();
    }
    assert!(matches!(
        h.outcomes.recv().await,
        Some(Outcome::Sent { .. })
    ));
    match h.outcomes.recv().await.unwrap() {
        Outcome::Expired { reason, queued } => {
            assert_eq!(queued.command.address, "2");
            assert!(reason.contains("duty-cycle budget"), "{reason}");
            assert!(reason.contains("0.05 %"), "{reason}");
            assert_eq!(Instant::now() - started, Duration::from_secs(600));
        }
        other => panic!("expected the second to expire, got {other:?}"),
    }
    assert_eq!(h.sent.try_recv().map(|s| s.1[0]).ok(), Some(1));
    assert!(h.sent.try_recv().is_err(), "the second was never sent");
    h.stop.cancel();
}
