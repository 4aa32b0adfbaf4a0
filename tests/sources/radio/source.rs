//! The radio run loop against the chip simulators, on a real tokio runtime: packets arrive as
//! `SourceEvent::Packet` with RSSI/SNR per the datasheet formulas, CRC and header errors as frame errors,
//! a chip that stops answering, loses its configuration or sticks its interrupt line is reported `Lost`
//! and comes back `Up`, absent hardware is reported with the wiring to check, and shutdown is prompt.
//! Every wait is bounded by `tokio::time::timeout`; nothing sleeps and hopes.

use std::time::Duration;

use sensorgate::frame::FrameError;
use sensorgate::model::RadioMeta;
use sensorgate::source::radio::hal::Opener;
use sensorgate::source::radio::sim_sx1262::Sx1262Sim;
use sensorgate::source::radio::sim_sx1276::{Injection, Sx1276Sim};
use sensorgate::source::radio::source::{sx1262_sim_opener, sx1276_sim_opener};
use sensorgate::source::radio::{run, run_with, Chip, RadioBackend, RadioPins, RadioSettings};
use sensorgate::source::{SourceContext, SourceEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(5);

/// A running radio source and the receiving end of its events; stops the source when dropped.
struct Running {
    events: mpsc::Receiver<SourceEvent>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    fn start_with(settings: RadioSettings, opener: Opener) -> Running {
        Self::spawn(|ctx| run_with(ctx, settings, opener, "simulated chip".to_string()))
    }

    fn spawn<F, Fut>(start: F) -> Running
    where
        F: FnOnce(SourceContext) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (out, events) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let ctx = SourceContext {
            name: "lora".to_string(),
            out,
            shutdown: shutdown.clone(),
        };
        Running {
            events,
            shutdown,
            task: Some(tokio::spawn(start(ctx))),
        }
    }

    async fn next(&mut self) -> SourceEvent {
        timeout(WAIT, self.events.recv())
            .await
            .expect("no event within 5 s")
            .expect("the source closed its channel")
    }

    async fn expect_up(&mut self) {
        let event = self.next().await;
        assert_eq!(
            event,
            SourceEvent::Up {
                source: "lora".to_string()
            }
        );
    }

    async fn expect_lost(&mut self) -> String {
        match self.next().await {
            SourceEvent::Lost { source, reason } => {
                assert_eq!(source, "lora");
                reason
            }
            other => panic!("expected Lost, got {other:?}"),
        }
    }

    async fn expect_packet(&mut self) -> (Vec<u8>, RadioMeta) {
        match self.next().await {
            SourceEvent::Packet(packet) => {
                assert_eq!(packet.source, "lora");
                (packet.bytes, packet.radio.expect("radio metadata"))
            }
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    async fn expect_frame_error(&mut self) -> FrameError {
        match self.next().await {
            SourceEvent::FrameError { source, error } => {
                assert_eq!(source, "lora");
                error
            }
            other => panic!("expected a frame error, got {other:?}"),
        }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            timeout(WAIT, task)
                .await
                .expect("the source did not stop within 5 s")
                .expect("the source task panicked");
        }
    }
}

fn fast(chip: Chip, frequency_hz: u32) -> RadioSettings {
    RadioSettings {
        chip,
        frequency_hz,
        health_interval: Duration::from_millis(100),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..RadioSettings::default()
    }
}

const PACKET: [u8; 8] = [0xFF, 0x11, 0x05, 0x00, 0x03, 0x67, 0x01, 0x10];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sx1276_packets_carry_rssi_and_snr_and_errors_are_not_packets() {
    let settings = fast(Chip::Sx1276, 868_100_000);
    let chip = Sx1276Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1276_sim_opener(&chip, &settings));
    source.expect_up().await;

    assert!(chip.inject(&PACKET, -93.0, 10.0, true));
    let (bytes, meta) = source.expect_packet().await;
    assert_eq!(bytes, PACKET);
    assert_eq!(
        meta,
        RadioMeta {
            rssi_dbm: -93.0,
            snr_db: 10.0,
            frequency_hz: 868_100_000,
            spreading_factor: 7
        }
    );

    // Below the noise floor: the SNR is added to the RSSI.
    assert!(chip.inject(&PACKET, -120.25, -7.25, true));
    let (_, meta) = source.expect_packet().await;
    assert_eq!(meta.snr_db, -7.25);
    assert!((meta.rssi_dbm - -120.25).abs() <= 0.6, "{}", meta.rssi_dbm);

    assert!(chip.inject(&PACKET, -80.0, 5.0, false));
    assert_eq!(source.expect_frame_error().await, FrameError::RadioCrc);

    assert!(chip.inject_with(Injection {
        bytes: PACKET.to_vec(),
        rssi_dbm: -80.0,
        snr_db: 5.0,
        crc_ok: true,
        crc_present: false,
    }));
    assert!(matches!(
        source.expect_frame_error().await,
        FrameError::RadioHeader(_)
    ));

    // Still receiving after the errors.
    assert!(chip.inject(&[1, 2, 3], -70.0, 9.0, true));
    assert_eq!(source.expect_packet().await.0, vec![1, 2, 3]);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sx1276_low_frequency_uses_the_lf_rssi_offset() {
    let settings = fast(Chip::Sx1276, 433_175_000);
    let chip = Sx1276Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1276_sim_opener(&chip, &settings));
    source.expect_up().await;
    assert!(chip.inject(&PACKET, -102.5, -2.5, true));
    let (_, meta) = source.expect_packet().await;
    assert_eq!((meta.rssi_dbm, meta.snr_db), (-102.5, -2.5));
    assert_eq!(meta.frequency_hz, 433_175_000);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sx1262_packets_crc_and_header_errors() {
    let settings = RadioSettings {
        spreading_factor: 12,
        ..fast(Chip::Sx1262, 915_000_000)
    };
    let chip = Sx1262Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1262_sim_opener(&chip, &settings));
    source.expect_up().await;

    assert!(chip.inject(&PACKET, -90.5, -5.25, true));
    let (bytes, meta) = source.expect_packet().await;
    assert_eq!(bytes, PACKET);
    assert_eq!(
        meta,
        RadioMeta {
            rssi_dbm: -90.5,
            snr_db: -5.25,
            frequency_hz: 915_000_000,
            spreading_factor: 12
        }
    );
    assert!(chip.inject(&PACKET, -90.0, 3.0, false));
    assert_eq!(source.expect_frame_error().await, FrameError::RadioCrc);
    assert!(chip.inject_header_error());
    assert!(matches!(
        source.expect_frame_error().await,
        FrameError::RadioHeader(_)
    ));
    assert!(chip.inject(&[9; 200], -60.0, 11.0, true));
    assert_eq!(source.expect_packet().await.0, vec![9; 200]);
    assert_eq!(
        chip.irq_status() & 0x0262,
        0,
        "IRQ flags cleared after each interrupt"
    );
    assert!(chip.violations().is_empty(), "{:?}", chip.violations());
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sx1276_that_stops_answering_is_lost_then_up_again_and_packets_flow() {
    let settings = fast(Chip::Sx1276, 868_100_000);
    let chip = Sx1276Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1276_sim_opener(&chip, &settings));
    source.expect_up().await;

    chip.stop_answering(0x00);
    let reason = source.expect_lost().await;
    assert!(reason.contains("stopped working"), "{reason}");
    // Retries fail quietly while the chip is away: no second Lost, no Up.
    assert!(timeout(Duration::from_millis(300), source.events.recv())
        .await
        .is_err());

    chip.recover();
    source.expect_up().await;
    assert!(chip.inject(&PACKET, -93.0, 10.0, true));
    assert_eq!(source.expect_packet().await.0, PACKET);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sx1262_that_stops_answering_is_lost_then_up_again() {
    let settings = fast(Chip::Sx1262, 868_100_000);
    let chip = Sx1262Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1262_sim_opener(&chip, &settings));
    source.expect_up().await;
    chip.stop_answering(0xFF);
    let reason = source.expect_lost().await;
    assert!(reason.contains("sx1262"), "{reason}");
    chip.recover();
    source.expect_up().await;
    assert!(chip.inject(&PACKET, -100.0, 2.0, true));
    assert_eq!(source.expect_packet().await.0, PACKET);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chip_that_lost_its_configuration_is_reinitialised() {
    let settings = fast(Chip::Sx1276, 868_100_000);
    let chip = Sx1276Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1276_sim_opener(&chip, &settings));
    source.expect_up().await;
    chip.power_cycle();
    let reason = source.expect_lost().await;
    assert!(
        reason.contains("RegOpMode reads back 0x09, expected 0x85"),
        "{reason}"
    );
    source.expect_up().await;
    assert_eq!(chip.register(0x01), 0x85);
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_interrupt_line_is_reported_and_recovered() {
    let settings = RadioSettings {
        health_interval: Duration::from_secs(60),
        ..fast(Chip::Sx1262, 868_100_000)
    };
    let chip = Sx1262Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1262_sim_opener(&chip, &settings));
    source.expect_up().await;
    chip.stick_irq(true);
    let reason = source.expect_lost().await;
    assert!(reason.contains("interrupt line stuck"), "{reason}");
    // Re-initialisation refuses a line that is high with nothing pending: no Up while it sticks.
    assert!(timeout(Duration::from_millis(300), source.events.recv())
        .await
        .is_err());
    chip.stick_irq(false);
    source.expect_up().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_chip_is_reported_with_the_wiring_then_found() {
    let settings = fast(Chip::Sx1276, 868_100_000);
    let chip = Sx1276Sim::new();
    chip.stop_answering(0x00);
    let opener = sx1276_sim_opener(&chip, &settings);
    let mut source = Running::spawn(|ctx| {
        run_with(
            ctx,
            settings,
            opener,
            "sx1276 on /dev/spidev0.0 (RESET on GPIO17)".to_string(),
        )
    });
    let reason = source.expect_lost().await;
    assert!(
        reason.contains("version register 0x42 reads 0x00"),
        "{reason}"
    );
    assert!(
        reason.contains("/dev/spidev0.0") && reason.contains("GPIO17"),
        "{reason}"
    );
    chip.recover();
    source.expect_up().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pi_backend_without_hardware_reports_the_spi_device_and_keeps_retrying() {
    let settings = fast(Chip::Sx1276, 868_100_000);
    let backend = RadioBackend::Pi(RadioPins {
        spi_path: "/dev/spidev0.0".into(),
        reset_pin: 17,
        irq_pin: 4,
        busy_pin: None,
        cs_pin: Some(25),
    });
    let mut source = Running::spawn(|ctx| run(ctx, settings, backend));
    let reason = source.expect_lost().await;
    if cfg!(feature = "pi") {
        assert!(reason.contains("/dev/spidev0.0"), "{reason}");
        assert!(
            reason.contains("NSS on GPIO25") && reason.contains("DIO0 on GPIO4"),
            "{reason}"
        );
    }
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_backend_delivers_radiohead_lpp_packets_from_several_nodes() {
    for chip in [Chip::Sx1276, Chip::Sx1262] {
        let settings = fast(chip, 868_100_000);
        let backend = RadioBackend::Simulator {
            air: None,
            devices: 3,
            interval: Duration::from_millis(150),
        };
        let mut source = Running::spawn(|ctx| run(ctx, settings, backend));
        source.expect_up().await;
        let mut nodes = std::collections::BTreeSet::new();
        let mut packets = 0;
        for _ in 0..200 {
            match source.next().await {
                SourceEvent::Packet(packet) => {
                    assert_eq!(packet.bytes[0], 0xFF, "RadioHead TO = broadcast");
                    assert_eq!(packet.bytes[3], 0x00, "RadioHead FLAGS");
                    assert_eq!(packet.bytes[4..6], [1, 103], "LPP temperature on channel 1");
                    let meta = packet.radio.expect("radio metadata");
                    assert!((-130.0..-50.0).contains(&meta.rssi_dbm), "{meta:?}");
                    nodes.insert(packet.bytes[1]);
                    packets += 1;
                }
                SourceEvent::FrameError { error, .. } => assert_eq!(error, FrameError::RadioCrc),
                other => panic!("unexpected {other:?} from {chip:?}"),
            }
            if packets >= 9 && nodes.len() == 3 {
                break;
            }
        }
        assert_eq!(
            nodes.into_iter().collect::<Vec<_>>(),
            vec![1, 2, 3],
            "{chip:?}"
        );
        source.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_settings_leave_the_source_idle_until_shutdown() {
    let settings = RadioSettings {
        spreading_factor: 13,
        ..fast(Chip::Sx1276, 868_100_000)
    };
    let backend = RadioBackend::Simulator {
        air: None,
        devices: 1,
        interval: Duration::from_millis(10),
    };
    let mut source = Running::spawn(|ctx| run(ctx, settings, backend));
    assert!(timeout(Duration::from_millis(200), source.events.recv())
        .await
        .is_err());
    source.stop().await;
}

/// Puts a packet on the air of whichever simulated chip a test drives.
type Inject = Box<dyn Fn() -> bool>;
/// Cuts (true) or mends (false) that chip's interrupt line.
type CutIrq = Box<dyn Fn(bool)>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_interrupt_line_is_found_by_the_health_check() {
    for chip_kind in [Chip::Sx1276, Chip::Sx1262] {
        let settings = fast(chip_kind, 868_100_000);
        let (mut source, inject, cut): (Running, Inject, CutIrq) = match chip_kind {
            Chip::Sx1276 => {
                let chip = Sx1276Sim::new();
                let source =
                    Running::start_with(settings.clone(), sx1276_sim_opener(&chip, &settings));
                let c = chip.clone();
                (
                    source,
                    Box::new(move || c.inject(&PACKET, -80.0, 5.0, true)),
                    Box::new(move |on| chip.cut_irq(on)),
                )
            }
            Chip::Sx1262 => {
                let chip = Sx1262Sim::new();
                let source =
                    Running::start_with(settings.clone(), sx1262_sim_opener(&chip, &settings));
                let c = chip.clone();
                (
                    source,
                    Box::new(move || c.inject(&PACKET, -80.0, 5.0, true)),
                    Box::new(move |on| chip.cut_irq(on)),
                )
            }
        };
        source.expect_up().await;
        cut(true);
        assert!(inject());
        let reason = source.expect_lost().await;
        assert!(reason.contains("reads low"), "{chip_kind:?}: {reason}");
        cut(false);
        source.expect_up().await;
        assert!(inject());
        assert_eq!(source.expect_packet().await.0, PACKET);
        source.stop().await;
    }
}

/// The loop is interrupt-driven (the simulated line wakes the radio thread), not polled: 200 packets one
/// after another take far less than 200 poll periods. Prints the mean inject-to-event latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_are_delivered_as_soon_as_the_line_rises() {
    let settings = fast(Chip::Sx1276, 868_100_000);
    let chip = Sx1276Sim::new();
    let mut source = Running::start_with(settings.clone(), sx1276_sim_opener(&chip, &settings));
    source.expect_up().await;
    let started = std::time::Instant::now();
    let mut received = 0;
    for i in 0..200u8 {
        assert!(chip.inject(&[0xFF, 1, i, 0], -80.0, 5.0, true));
        let (bytes, _) = source.expect_packet().await;
        assert_eq!(bytes[2], i);
        received += 1;
    }
    let elapsed = started.elapsed();
    println!(
        "{received} packets, mean inject-to-event {:?}",
        elapsed / received
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "{elapsed:?} for 200 packets: polling, not interrupts?"
    );
    source.stop().await;
}
