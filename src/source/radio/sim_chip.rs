//! What the two chip simulators ([`super::sim_sx1276`], [`super::sim_sx1262`]) have in common: a chip
//! behind a mutex shared by its clones, with the simulated SPI device, NRESET pin and interrupt line
//! handed to the driver; the test bench's faults (a chip that stops answering, a line cut or stuck, held
//! in reset); the capped logs of SPI transactions ([`TraceLog`]) and of packets sent ([`TxLog`]); and the
//! accessors tests and the demo use on either chip. What differs (the register page or the command set,
//! what a packet heard or sent changes) is each chip's [`ChipState`]. It never models timing or the air.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use embedded_hal::spi::Operation;

use super::hal::{IqPolarity, IrqLine, Wakeup};
use super::RadioError;

/// One entry of the simulator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trace {
    /// NRESET was pulled low.
    Reset,
    /// One chip-select window: the bytes sent and the bytes answered.
    Spi { mosi: Vec<u8>, miso: Vec<u8> },
}

/// How many entries a trace keeps when a test switches it on ([`SimChip::with_trace`]): a golden
/// initialisation is 30-60 entries, so this holds dozens of them; beyond it the oldest entries go.
pub const TRACE_CAPACITY: usize = 4096;

/// The simulators' transaction log: off (nothing kept, the demo's case: it runs for months) or a ring of
/// at most `capacity` entries that counts what it had to drop. Shared by both chip simulators.
#[derive(Debug, Default)]
pub struct TraceLog {
    entries: VecDeque<Trace>,
    /// 0: off.
    capacity: usize,
    dropped: u64,
}

impl TraceLog {
    /// A log that keeps nothing.
    pub fn off() -> Self {
        TraceLog::default()
    }

    /// A log that keeps the last `capacity` entries.
    pub fn keeping(capacity: usize) -> Self {
        TraceLog {
            entries: VecDeque::new(),
            capacity,
            dropped: 0,
        }
    }

    /// Whether entries are kept at all (when not, callers skip building them).
    pub fn is_on(&self) -> bool {
        self.capacity > 0
    }

    /// Appends an entry; when the log is full the oldest goes and is counted.
    pub fn push(&mut self, entry: Trace) {
        if !self.is_on() {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        self.entries.push_back(entry);
    }

    /// The entries kept, oldest first.
    pub fn entries(&self) -> Vec<Trace> {
        self.entries.iter().cloned().collect()
    }

    /// Entries dropped because the log was full, since the start or the last [`clear`](Self::clear).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Empties the log and its dropped count (it stays on or off).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.dropped = 0;
    }
}

/// How many transmitted packets a simulator keeps until a test or the demo's nodes take them; beyond it
/// the oldest go and are counted ([`TxLog::dropped`]).
pub const TX_LOG_CAPACITY: usize = 256;

/// One packet the simulated chip put on the air.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmitted {
    /// The bytes sent (what the driver wrote into the FIFO or buffer).
    pub bytes: Vec<u8>,
    /// The frequency the chip was tuned to, Hz.
    pub frequency_hz: u32,
    /// The IQ polarity the chip's registers gave the chirps; `None` when they disagree (on the SX1276
    /// `RegInvertIQ` without `RegInvertIQ2`, on the SX1262 SetPacketParams' InvertIQ without the errata
    /// 15.4 register, or the other way round), which no receiver demodulates.
    pub iq: Option<IqPolarity>,
    /// When the chip started sending it (the simulator's clock).
    pub at: Instant,
}

impl Transmitted {
    /// Whether a receiver listening with `polarity` hears it: a LoRaWAN end device listens for downlinks
    /// with [`IqPolarity::Inverted`], the demo's RadioHead nodes with [`IqPolarity::Standard`].
    pub fn heard_with(&self, polarity: IqPolarity) -> bool {
        self.iq == Some(polarity)
    }
}

/// The packets a simulated chip sent, capped at [`TX_LOG_CAPACITY`]; shared by both chip simulators.
#[derive(Debug, Default)]
pub struct TxLog {
    packets: VecDeque<Transmitted>,
    dropped: u64,
    sent: u64,
    /// Woken for every packet sent (the demo's nodes wait on it instead of polling).
    notify: Arc<tokio::sync::Notify>,
}

impl TxLog {
    /// Records one packet; when the log is full the oldest goes and is counted.
    pub fn push(&mut self, packet: Transmitted) {
        if self.packets.len() >= TX_LOG_CAPACITY {
            self.packets.pop_front();
            self.dropped += 1;
        }
        self.sent += 1;
        self.packets.push_back(packet);
        self.notify.notify_one();
    }

    /// What a task waits on to learn that a packet was sent.
    pub fn notifier(&self) -> Arc<tokio::sync::Notify> {
        self.notify.clone()
    }

    /// The packets kept, oldest first.
    pub fn packets(&self) -> Vec<Transmitted> {
        self.packets.iter().cloned().collect()
    }

    /// Takes the packets kept, oldest first (what a simulated node hears).
    pub fn take(&mut self) -> Vec<Transmitted> {
        self.packets.drain(..).collect()
    }

    /// Packets dropped because the log was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Packets sent since power-on.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

/// A chip's 256-byte FIFO or data buffer, addressed by a u8 that wraps as the chip's pointer does.
pub type Buffer = [u8; 256];

/// The `len` bytes of `buffer` from `base` on, wrapping at its end.
pub fn read_wrapping(buffer: &Buffer, base: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| buffer[usize::from(base.wrapping_add(i as u8))])
        .collect()
}

/// Writes `bytes` into `buffer` from `base` on, wrapping at its end.
pub fn write_wrapping(buffer: &mut Buffer, base: u8, bytes: &[u8]) {
    for (i, &byte) in bytes.iter().enumerate() {
        buffer[usize::from(base.wrapping_add(i as u8))] = byte;
    }
}

/// The test bench around a simulated chip: its faults, what it logs and what it missed. Kept across a
/// reset of the chip.
#[derive(Debug, Default)]
pub struct Bench {
    pub log: TraceLog,
    /// Some(byte): the chip does not answer; MISO reads this byte and writes are lost.
    pub silent: Option<u8>,
    pub irq_stuck: bool,
    pub irq_cut: bool,
    pub in_reset: bool,
    /// Injections the chip did not hear.
    pub missed: u32,
    pub tx: TxLog,
}

impl Bench {
    /// Whether the chip is powered, out of reset and answering.
    pub fn answering(&self) -> bool {
        self.silent.is_none() && !self.in_reset
    }

    /// The interrupt line as the driver reads it, when the chip's own logic drives it `raised`.
    pub fn irq_line(&self, raised: bool) -> bool {
        self.irq_stuck || (!self.irq_cut && self.answering() && raised)
    }
}

/// One simulated chip's own state: what differs between the SX1276 and the SX1262.
pub trait ChipState: Send + 'static {
    /// The chip just powered on, with a bench that logs nothing.
    fn powered_on() -> Self;
    fn bench(&self) -> &Bench;
    fn bench_mut(&mut self) -> &mut Bench;
    /// Back to the chip's reset state, keeping the bench.
    fn reset(&mut self);
    /// One chip-select window of a chip that answers: the bytes it answers.
    fn exchange(&mut self, mosi: &[u8]) -> Vec<u8>;
    /// Whether the chip's own logic drives its interrupt line (DIO0 or DIO1) high.
    fn irq_raised(&self) -> bool;

    /// The interrupt line as the driver reads it, faults included.
    fn irq_line(&self) -> bool {
        self.bench().irq_line(self.irq_raised())
    }

    /// One chip-select window, faults included: a silent chip answers its stuck byte, one held in
    /// reset zeros.
    fn answer(&mut self, mosi: &[u8]) -> Vec<u8> {
        let bench = self.bench();
        if let Some(byte) = bench.silent {
            return vec![byte; mosi.len()];
        }
        if bench.in_reset {
            return vec![0; mosi.len()];
        }
        self.exchange(mosi)
    }
}

#[derive(Debug)]
struct Shared<S> {
    state: Mutex<S>,
    changed: Condvar,
}

/// A simulated chip. Clones share one chip; hand [`spi`](Self::spi), [`reset_pin`](Self::reset_pin) and
/// its interrupt line to the driver, keep a clone to inject packets and faults.
#[derive(Debug)]
pub struct SimChip<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for SimChip<S> {
    fn clone(&self) -> Self {
        SimChip {
            shared: self.shared.clone(),
        }
    }
}

impl<S: ChipState> Default for SimChip<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: ChipState> SimChip<S> {
    /// A chip just powered on, keeping no trace (what the demo runs).
    pub fn new() -> Self {
        Self::with_log(TraceLog::off())
    }

    /// A chip just powered on that logs its last [`TRACE_CAPACITY`] resets and SPI windows, for tests
    /// that compare [`trace`](Self::trace) against golden bytes.
    pub fn with_trace() -> Self {
        Self::with_log(TraceLog::keeping(TRACE_CAPACITY))
    }

    fn with_log(log: TraceLog) -> Self {
        let mut state = S::powered_on();
        state.bench_mut().log = log;
        SimChip {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                changed: Condvar::new(),
            }),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, S> {
        // A panic while holding the lock cannot leave the chip half-written in a way that matters to a
        // simulator; keep going with what is there.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the chip and wakes every thread waiting on it.
    pub(super) fn update<T>(&self, change: impl FnOnce(&mut S) -> T) -> T {
        let result = change(&mut self.state());
        self.shared.changed.notify_all();
        result
    }

    /// Waits until `ready`, the timeout, or `wakeup` (when given) was woken; blocks only the caller's
    /// thread.
    pub(super) fn wait_until(
        &self,
        timeout: Duration,
        wakeup: Option<&Wakeup>,
        ready: impl Fn(&S) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if ready(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || wakeup.is_some_and(Wakeup::ends_wait) {
                return false;
            }
            state = match self.shared.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// The SPI device of this chip.
    pub fn spi(&self) -> SimSpi<S> {
        SimSpi { chip: self.clone() }
    }

    /// The NRESET pin of this chip.
    pub fn reset_pin(&self) -> SimResetPin<S> {
        SimResetPin { chip: self.clone() }
    }

    /// The interrupt line of this chip (each call a line with its own [`Wakeup`]).
    pub(super) fn irq(&self) -> SimIrq<S> {
        let shared = self.shared.clone();
        SimIrq {
            chip: self.clone(),
            wakeup: Wakeup::new(move || notify_under_lock(&shared)),
        }
    }

    /// The chip stops answering: every MISO byte reads `miso` (0x00: unplugged with a pull-down or no
    /// power; 0xFF: floating high) and writes are lost.
    pub fn stop_answering(&self, miso: u8) {
        self.update(|s| s.bench_mut().silent = Some(miso));
    }

    /// The chip answers again, as after a power cycle (reset values).
    pub fn recover(&self) {
        self.update(|s| {
            s.bench_mut().silent = None;
            s.reset();
        });
    }

    /// A brown-out: the chip keeps answering but is back in its reset state.
    pub fn power_cycle(&self) {
        self.update(S::reset);
    }

    /// Cuts the interrupt line: it reads low whatever the chip does (a broken wire), or mends it.
    pub fn cut_irq(&self, cut: bool) {
        self.update(|s| s.bench_mut().irq_cut = cut);
    }

    /// Holds the interrupt line high regardless of the chip (a shorted or floating line).
    pub fn stick_irq(&self, stuck: bool) {
        self.update(|s| s.bench_mut().irq_stuck = stuck);
    }

    /// The resets and SPI windows since the start or the last [`clear_trace`](Self::clear_trace), at most
    /// the last [`TRACE_CAPACITY`]; empty unless the chip was made [`with_trace`](Self::with_trace).
    pub fn trace(&self) -> Vec<Trace> {
        self.state().bench().log.entries()
    }

    /// Entries the trace had to drop because it was full.
    pub fn trace_dropped(&self) -> u64 {
        self.state().bench().log.dropped()
    }

    /// Empties the log.
    pub fn clear_trace(&self) {
        self.state().bench_mut().log.clear();
    }

    /// Injections the chip did not hear (not receiving, not answering, too long).
    pub fn missed(&self) -> u32 {
        self.state().bench().missed
    }

    /// The packets the chip transmitted and nobody took yet, oldest first (at most [`TX_LOG_CAPACITY`]).
    pub fn transmitted(&self) -> Vec<Transmitted> {
        self.state().bench().tx.packets()
    }

    /// Takes the transmitted packets, oldest first: what a simulated node hears.
    pub fn take_transmitted(&self) -> Vec<Transmitted> {
        self.state().bench_mut().tx.take()
    }

    /// Notified whenever the chip transmits.
    pub fn on_transmit(&self) -> Arc<tokio::sync::Notify> {
        self.state().bench().tx.notifier()
    }

    /// Packets transmitted since power-on, and how many the log dropped.
    pub fn transmit_counts(&self) -> (u64, u64) {
        let state = self.state();
        (state.bench().tx.sent(), state.bench().tx.dropped())
    }
}

/// Wakes every thread waiting on the chip, taking the lock first: a waiter checks its [`Wakeup`] under
/// that lock, so it either sees the flag or is already waiting when the notification comes.
fn notify_under_lock<S>(shared: &Shared<S>) {
    let _state = shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    shared.changed.notify_all();
}

/// The simulated chip's SPI device.
#[derive(Debug, Clone)]
pub struct SimSpi<S> {
    chip: SimChip<S>,
}

impl<S> embedded_hal::spi::ErrorType for SimSpi<S> {
    type Error = Infallible;
}

impl<S: ChipState> embedded_hal::spi::SpiDevice for SimSpi<S> {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        let mosi = mosi_of(operations);
        self.chip.update(|s| {
            let miso = s.answer(&mosi);
            scatter_miso(operations, &miso);
            let log = &mut s.bench_mut().log;
            if log.is_on() {
                log.push(Trace::Spi { mosi, miso });
            }
        });
        Ok(())
    }
}

/// The bytes a transaction clocks out, reads sending zeros.
fn mosi_of(operations: &[Operation<'_, u8>]) -> Vec<u8> {
    let mut mosi = Vec::new();
    for op in operations.iter() {
        match op {
            Operation::Read(buf) => mosi.extend(std::iter::repeat_n(0u8, buf.len())),
            Operation::Write(data) => mosi.extend_from_slice(data),
            Operation::Transfer(read, write) => {
                mosi.extend_from_slice(write);
                mosi.extend(std::iter::repeat_n(
                    0u8,
                    read.len().saturating_sub(write.len()),
                ));
            }
            Operation::TransferInPlace(buf) => mosi.extend_from_slice(buf),
            Operation::DelayNs(_) => {}
        }
    }
    mosi
}

/// Hands the answered bytes back to the transaction's read buffers, in order.
fn scatter_miso(operations: &mut [Operation<'_, u8>], miso: &[u8]) {
    let mut at = 0usize;
    let mut take = |n: usize| {
        let start = at.min(miso.len());
        at += n;
        &miso[start..at.min(miso.len())]
    };
    for op in operations.iter_mut() {
        match op {
            Operation::Read(buf) => {
                let bytes = take(buf.len());
                buf[..bytes.len()].copy_from_slice(bytes);
            }
            Operation::Write(data) => {
                take(data.len());
            }
            Operation::Transfer(read, write) => {
                let n = read.len().max(write.len());
                let bytes = take(n);
                let copy = bytes.len().min(read.len());
                read[..copy].copy_from_slice(&bytes[..copy]);
            }
            Operation::TransferInPlace(buf) => {
                let bytes = take(buf.len());
                buf[..bytes.len()].copy_from_slice(bytes);
            }
            Operation::DelayNs(_) => {}
        }
    }
}

/// The simulated NRESET pin: low holds the chip in reset, the rising edge restarts it in its reset state.
#[derive(Debug, Clone)]
pub struct SimResetPin<S> {
    chip: SimChip<S>,
}

impl<S> embedded_hal::digital::ErrorType for SimResetPin<S> {
    type Error = Infallible;
}

impl<S: ChipState> embedded_hal::digital::OutputPin for SimResetPin<S> {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.chip.update(|s| {
            let bench = s.bench_mut();
            if !bench.in_reset {
                bench.in_reset = true;
                bench.log.push(Trace::Reset);
            }
        });
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.chip.update(|s| {
            let bench = s.bench_mut();
            if bench.in_reset {
                bench.in_reset = false;
                if bench.silent.is_none() {
                    s.reset();
                }
            }
        });
        Ok(())
    }
}

/// The simulated interrupt line (DIO0, DIO1); waits on a condition variable, so it blocks only the
/// driver's thread, and wakes for a packet injected, any other change of the chip, or its [`Wakeup`].
#[derive(Debug, Clone)]
pub struct SimIrq<S> {
    chip: SimChip<S>,
    wakeup: Wakeup,
}

impl<S: ChipState> IrqLine for SimIrq<S> {
    fn is_high(&mut self) -> Result<bool, RadioError> {
        Ok(self.chip.state().irq_line())
    }

    fn wait_high(&mut self, timeout: Duration) -> Result<bool, RadioError> {
        Ok(self
            .chip
            .wait_until(timeout, Some(&self.wakeup), S::irq_line))
    }

    fn wakeup(&self) -> Wakeup {
        self.wakeup.clone()
    }
}
