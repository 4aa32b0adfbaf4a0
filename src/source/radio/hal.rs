//! The seams between the radio drivers and a board: the embedded-hal 1.0 traits the drivers use for SPI
//! and the reset pin, plus two small waits of our own ("until the interrupt line is high", "until BUSY is
//! low") that a backend implements with an edge interrupt, a poll or a condition variable, the [`Wakeup`]
//! another thread uses to end the interrupt wait (shutdown), the [`Radio`] trait the run loop drives and
//! the [`Opener`] that builds one (the Pi backend's and the chip simulators'). It also holds what a driver reports per interrupt ([`RxEvent`]). Nothing here touches hardware or the
//! async runtime: every wait blocks the driver's own thread, never a tokio worker.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::RadioError;

/// The chip's interrupt output (SX1276 DIO0, SX1262 DIO1), active high.
pub trait IrqLine {
    /// Whether the line is high now.
    fn is_high(&mut self) -> Result<bool, RadioError>;

    /// Blocks the calling thread until the line is high, `timeout` has passed or the line's [`Wakeup`]
    /// was woken; returns whether it is high. Returns at once when the line is already high (the line is
    /// level, not edge: it stays high until the driver clears the chip's interrupt flags), and at once
    /// every time after the wakeup.
    fn wait_high(&mut self, timeout: Duration) -> Result<bool, RadioError>;

    /// The handle that ends this line's waits from another thread, so that the radio thread can park on
    /// the line for as long as it likes and still stop promptly.
    fn wakeup(&self) -> Wakeup;
}

/// Ends the waits of one interrupt line, for good: [`wake`](Self::wake) sets a flag the line's
/// [`IrqLine::wait_high`] checks and calls the line's own notification (a condition variable's
/// `notify_all`, taken under the lock the waiter checks the flag under, so no wakeup is lost). Cheap to
/// clone; waking twice is harmless.
///
/// [`poke`](Self::poke) ends one wait only (the radio thread has a transmission to make): the next wait
/// that checks [`ends_wait`](Self::ends_wait) returns and consumes it.
#[derive(Clone)]
pub struct Wakeup {
    woken: Arc<AtomicBool>,
    poked: Arc<AtomicBool>,
    notify: Arc<dyn Fn() + Send + Sync>,
}

impl Wakeup {
    /// A wakeup that sets its flag and then runs `notify` (which must wake a thread blocked in the
    /// line's wait).
    pub fn new(notify: impl Fn() + Send + Sync + 'static) -> Self {
        Wakeup {
            woken: Arc::new(AtomicBool::new(false)),
            poked: Arc::new(AtomicBool::new(false)),
            notify: Arc::new(notify),
        }
    }

    /// Makes the line's current and every later wait return at once.
    pub fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        (self.notify)();
    }

    /// Whether [`wake`](Self::wake) was called.
    pub fn is_woken(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    /// Ends the line's current (or next) wait once, without stopping it for good: the radio thread has
    /// work other than an interrupt (a command to transmit).
    pub fn poke(&self) {
        self.poked.store(true, Ordering::SeqCst);
        (self.notify)();
    }

    /// Whether a wait must end now: [`wake`](Self::wake) was called, or a [`poke`](Self::poke) is pending
    /// (which this call consumes). Lines check it under their wait's lock, so no wakeup is lost.
    pub fn ends_wait(&self) -> bool {
        self.is_woken() || self.poked.swap(false, Ordering::SeqCst)
    }
}

impl fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeup")
            .field("woken", &self.is_woken())
            .finish_non_exhaustive()
    }
}

/// The SX126x BUSY output: high while the chip cannot take a command.
pub trait BusyLine {
    /// Blocks the calling thread until BUSY is low or `timeout` has passed; returns whether it went low.
    fn wait_low(&mut self, timeout: Duration) -> Result<bool, RadioError>;
}

/// A blocking delay for reset timing, backed by `std::thread::sleep` (used on the driver's own thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadDelay;

impl embedded_hal::delay::DelayNs for ThreadDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// A packet the chip received with a good CRC.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The payload as the chip's FIFO or buffer holds it (RadioHead header included).
    pub bytes: Vec<u8>,
    /// Packet RSSI, dBm.
    pub rssi_dbm: f32,
    /// Packet SNR, dB.
    pub snr_db: f32,
}

/// The polarity of the LoRa chirps' I and Q signals. End devices send uplinks with the standard
/// polarity and listen for downlinks with the inverted one, so that devices do not hear each other and
/// a gateway does not hear its own downlinks: a gateway transmits LoRaWAN downlinks inverted and
/// receives standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IqPolarity {
    /// What every receive setup and every non-LoRaWAN transmission uses.
    #[default]
    Standard,
    /// LoRaWAN downlinks.
    Inverted,
}

/// What one serviced interrupt produced.
#[derive(Debug, Clone, PartialEq)]
pub enum RxEvent {
    /// A packet with a good payload CRC.
    Packet(Received),
    /// The chip flagged a payload CRC error; the bytes were dropped.
    CrcError,
    /// The chip flagged a header error, or the packet carried no CRC; the bytes were dropped.
    HeaderError(String),
}

/// A configured radio as the run loop sees it: the drivers implement it over any backend.
pub trait Radio: Send {
    /// Resets the chip, checks it answers (version register or status), writes the whole configuration
    /// and starts continuous receive. Called at start and after every loss.
    fn init(&mut self) -> Result<(), RadioError>;

    /// Waits up to `timeout` for the interrupt line; services it when it rises. `Ok(None)` when nothing
    /// happened (or the interrupt was not a receive, or the line's [`Wakeup`] was woken). An error means
    /// the chip must be re-initialised.
    fn wait_event(&mut self, timeout: Duration) -> Result<Option<RxEvent>, RadioError>;

    /// The [`Wakeup`] of the interrupt line [`wait_event`](Self::wait_event) parks on.
    fn wakeup(&self) -> Wakeup;

    /// Reads back the chip's key configuration and state; an error means the chip must be re-initialised.
    fn check_health(&mut self) -> Result<(), RadioError>;

    /// Sends one packet (1-255 bytes) and returns to continuous receive: standby, the payload into the
    /// FIFO or buffer, TX, TxDone on the interrupt line (bounded by twice the time on air plus a margin),
    /// flags cleared, the receive interrupt routing restored, RX continuous. Returns the time on air. A
    /// packet that arrives while the chip transmits is not heard (the chip is half-duplex); none before or
    /// after is lost. `polarity` is the IQ polarity of this transmission only: receiving is always
    /// standard again afterwards. An error means the chip must be re-initialised.
    fn transmit(&mut self, payload: &[u8], polarity: IqPolarity) -> Result<Duration, RadioError>;
}

/// Opens the backend and builds a driver; called again before every re-initialisation (the Pi backend
/// and the chip simulators make one each).
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn Radio>, RadioError> + Send>;

/// How long a driver waits for TxDone: twice the time on air, plus 100 ms.
pub(crate) fn tx_done_timeout(time_on_air: Duration) -> Duration {
    time_on_air * 2 + Duration::from_millis(100)
}

/// Turns any `Debug` error of an embedded-hal implementation into our SPI error.
pub(crate) fn spi_err<E: core::fmt::Debug>(error: E) -> RadioError {
    RadioError::Spi(format!("{error:?}"))
}

/// Turns any `Debug` error of an embedded-hal pin into our pin error.
pub(crate) fn pin_err<E: core::fmt::Debug>(error: E) -> RadioError {
    RadioError::Pin(format!("{error:?}"))
}
