//! The Raspberry Pi backend (cargo feature `pi`, on by default): opens `/dev/spidevB.S` and the GPIO
//! lines for RESET, the interrupt (DIO0/DIO1) and BUSY, optionally drives chip select from a plain GPIO,
//! and builds the SX1276 or SX1262 driver over them. It only opens and adapts; everything it returns
//! blocks, and runs on the radio source's own thread, never on the async runtime.
//!
//! Library: `rpi-pal` 0.22, not `rppal`. rppal's repository was archived in 2025; rpi-pal is its
//! maintained continuation with the same API (`Spi`, `Gpio`, `InputPin::set_async_interrupt`,
//! embedded-hal 1.0 impls behind its `embedded-hal` feature), it builds on x86_64 (off a
//! Pi, `Gpio::new` and `Spi::new` return errors, which is what the tests rely on), and it reads the Pi 5's
//! RP1 GPIO block as well as the BCM ones. One caveat found in its source: `SimpleHalSpiDevice` maps
//! `Operation::TransferInPlace` to a read-only segment (it clocks out zeros), so the drivers only use
//! `Write` and `Read` operations.
//!
//! The interrupt line is watched by rpi-pal's async interrupt: its thread blocks in `epoll` on the GPIO
//! line's edge events (no timeout, no polling) and counts each rising edge under a mutex; the radio
//! thread parks on that mutex's condition variable, which the line's [`Wakeup`] also signals at shutdown.
//! So an idle radio costs no wakeups but its health check's.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use embedded_hal::spi::{Operation, SpiBus, SpiDevice};
use rpi_pal::gpio::{Gpio, InputPin, OutputPin, Trigger};
use rpi_pal::spi::{Bus, Mode, SimpleHalSpiDevice, SlaveSelect, Spi};

use super::hal::{BusyLine, IrqLine, Opener, Radio, ThreadDelay, Wakeup};
use super::sx1262::Sx1262;
use super::sx1276::Sx1276;
use super::{Chip, RadioError, RadioPins, RadioSettings};

/// SPI clock: both chips take 8 MHz comfortably (SX1276 up to 10, SX1262 up to 16) over HAT traces.
const SPI_CLOCK_HZ: u32 = 8_000_000;
/// How often BUSY is sampled while waiting for it.
const BUSY_POLL: Duration = Duration::from_micros(20);

/// `/dev/spidev0.1` -> bus 0, slave select 1.
pub fn parse_spi_path(path: &Path) -> Result<(Bus, SlaveSelect), RadioError> {
    let refuse = || RadioError::InvalidSetting {
        key: "spi",
        message: format!(
            "{} is not a spidev path like /dev/spidev0.0 (buses 0-6, chip selects 0-3)",
            path.display()
        ),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(refuse)?;
    let numbers = name.strip_prefix("spidev").ok_or_else(refuse)?;
    let (bus, select) = numbers.split_once('.').ok_or_else(refuse)?;
    let bus = match bus.parse::<u8>().map_err(|_| refuse())? {
        0 => Bus::Spi0,
        1 => Bus::Spi1,
        2 => Bus::Spi2,
        3 => Bus::Spi3,
        4 => Bus::Spi4,
        5 => Bus::Spi5,
        6 => Bus::Spi6,
        _ => return Err(refuse()),
    };
    let select = match select.parse::<u8>().map_err(|_| refuse())? {
        0 => SlaveSelect::Ss0,
        1 => SlaveSelect::Ss1,
        2 => SlaveSelect::Ss2,
        3 => SlaveSelect::Ss3,
        _ => return Err(refuse()),
    };
    Ok((bus, select))
}

/// An opener for the chip in `settings` wired as `pins`: every call opens the SPI device and GPIO lines
/// afresh (so a HAT re-seated after a fault is found again).
pub fn opener(settings: RadioSettings, pins: RadioPins) -> Opener {
    Box::new(move || open(&settings, &pins))
}

fn open(settings: &RadioSettings, pins: &RadioPins) -> Result<Box<dyn Radio>, RadioError> {
    let (bus, select) = parse_spi_path(&pins.spi_path)?;
    let spi = Spi::new(bus, select, SPI_CLOCK_HZ, Mode::Mode0).map_err(|e| RadioError::Open {
        what: format!("SPI device {}", pins.spi_path.display()),
        reason: e.to_string(),
    })?;
    let gpio = Gpio::new().map_err(|e| RadioError::Open {
        what: "the GPIO controller".to_string(),
        reason: e.to_string(),
    })?;
    let line = |pin: u8, role: &str| {
        gpio.get(pin).map_err(|e| RadioError::Open {
            what: format!("GPIO{pin} ({role})"),
            reason: e.to_string(),
        })
    };
    let reset = line(pins.reset_pin, "RESET")?.into_output_high();
    let irq = PiIrq::new(line(pins.irq_pin, "interrupt")?.into_input_pulldown()).map_err(|e| {
        RadioError::Open {
            what: format!("GPIO{} edge interrupt", pins.irq_pin),
            reason: e.to_string(),
        }
    })?;
    let busy = match pins.busy_pin {
        Some(pin) => Some(PiBusy {
            pin: line(pin, "BUSY")?.into_input(),
        }),
        None => None,
    };
    let cs = match pins.cs_pin {
        Some(pin) => Some(line(pin, "chip select")?.into_output_high()),
        None => None,
    };
    match cs {
        Some(cs) => build(settings, GpioCsDevice { bus: spi, cs }, reset, irq, busy),
        None => build(settings, SimpleHalSpiDevice::new(spi), reset, irq, busy),
    }
}

fn build<SPI>(
    settings: &RadioSettings,
    spi: SPI,
    reset: OutputPin,
    irq: PiIrq,
    busy: Option<PiBusy>,
) -> Result<Box<dyn Radio>, RadioError>
where
    SPI: SpiDevice + Send + 'static,
{
    match (settings.chip, busy) {
        (Chip::Sx1276, _) => Ok(Box::new(Sx1276::new(
            spi,
            reset,
            irq,
            ThreadDelay,
            settings.clone(),
        ))),
        (Chip::Sx1262, Some(busy)) => Ok(Box::new(Sx1262::new(
            spi,
            reset,
            irq,
            busy,
            ThreadDelay,
            settings.clone(),
        ))),
        (Chip::Sx1262, None) => Err(RadioError::InvalidSetting {
            key: "busy_pin",
            message: "the sx1262 needs its BUSY line wired".to_string(),
        }),
    }
}

/// A SPI device whose chip select is a plain GPIO (the Dragino HAT's NSS on GPIO25): low for the whole
/// transaction, high after it, whatever the spidev's own CE line does.
pub struct GpioCsDevice {
    bus: Spi,
    cs: OutputPin,
}

impl embedded_hal::spi::ErrorType for GpioCsDevice {
    type Error = rpi_pal::spi::Error;
}

impl SpiDevice for GpioCsDevice {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Self::Error> {
        self.cs.set_low();
        let mut result = Ok(());
        for op in operations.iter_mut() {
            result = match op {
                Operation::Read(buf) => SpiBus::read(&mut self.bus, buf),
                Operation::Write(data) => SpiBus::write(&mut self.bus, data),
                Operation::Transfer(read, write) => SpiBus::transfer(&mut self.bus, read, write),
                Operation::TransferInPlace(buf) => SpiBus::transfer_in_place(&mut self.bus, buf),
                Operation::DelayNs(ns) => {
                    std::thread::sleep(Duration::from_nanos(u64::from(*ns)));
                    Ok(())
                }
            };
            if result.is_err() {
                break;
            }
        }
        self.cs.set_high();
        result
    }
}

/// The rising edges seen on the interrupt line, counted by rpi-pal's interrupt thread.
#[derive(Default)]
struct Edges {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Edges {
    fn lock(&self) -> MutexGuard<'_, u64> {
        self.count
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the radio thread, under the lock it checks its conditions under (no wakeup is lost).
    fn notify(&self) {
        let _count = self.lock();
        self.changed.notify_all();
    }
}

/// DIO0/DIO1 on a GPIO with a rising-edge interrupt: the wait parks on a condition variable that the
/// edge (through rpi-pal's interrupt thread, blocked in the kernel) or the [`Wakeup`] signals.
pub struct PiIrq {
    pin: InputPin,
    edges: Arc<Edges>,
    wakeup: Wakeup,
}

impl PiIrq {
    fn new(mut pin: InputPin) -> Result<PiIrq, rpi_pal::gpio::Error> {
        let edges = Arc::new(Edges::default());
        let counter = edges.clone();
        pin.set_async_interrupt(Trigger::RisingEdge, None, move |_event| {
            *counter.lock() += 1;
            counter.changed.notify_all();
        })?;
        let notify = edges.clone();
        Ok(PiIrq {
            pin,
            edges,
            wakeup: Wakeup::new(move || notify.notify()),
        })
    }
}

impl IrqLine for PiIrq {
    fn is_high(&mut self) -> Result<bool, RadioError> {
        Ok(self.pin.is_high())
    }

    fn wait_high(&mut self, timeout: Duration) -> Result<bool, RadioError> {
        let deadline = Instant::now() + timeout;
        // The level is read under the edge lock: an edge after the read is counted only once the wait
        // below has released the lock, so it is not lost.
        let mut count = self.edges.lock();
        let seen = *count;
        if self.pin.is_high() {
            return Ok(true);
        }
        loop {
            let now = Instant::now();
            if *count != seen || self.wakeup.ends_wait() || now >= deadline {
                break;
            }
            count = match self.edges.changed.wait_timeout(count, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(count);
        Ok(self.pin.is_high())
    }

    fn wakeup(&self) -> Wakeup {
        self.wakeup.clone()
    }
}

/// The SX1262 BUSY line, sampled every 20 us (it is low within microseconds after most commands).
pub struct PiBusy {
    pin: InputPin,
}

impl BusyLine for PiBusy {
    fn wait_low(&mut self, timeout: Duration) -> Result<bool, RadioError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pin.is_low() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(BUSY_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spidev_paths_parse_and_bad_ones_name_the_key() {
        assert!(matches!(
            parse_spi_path(Path::new("/dev/spidev0.1")),
            Ok((Bus::Spi0, SlaveSelect::Ss1))
        ));
        let err = parse_spi_path(Path::new("/dev/ttyAMA0")).unwrap_err();
        assert!(err.to_string().starts_with("spi: /dev/ttyAMA0"), "{err}");
        assert!(parse_spi_path(Path::new("/dev/spidev9.0")).is_err());
    }

    #[test]
    fn a_missing_spi_device_is_an_open_error_naming_it() {
        let settings = RadioSettings::default();
        let pins = RadioPins {
            spi_path: "/dev/spidev6.3".into(),
            reset_pin: 17,
            irq_pin: 4,
            busy_pin: None,
            cs_pin: Some(25),
        };
        match open(&settings, &pins) {
            Err(RadioError::Open { what, .. }) => assert_eq!(what, "SPI device /dev/spidev6.3"),
            Err(other) => panic!("expected an open error, got {other}"),
            Ok(_) => panic!("a Pi SPI device opened on a test machine"),
        }
    }
}
