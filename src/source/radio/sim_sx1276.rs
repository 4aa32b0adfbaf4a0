//! A simulated SX1276 behind the same traits as the hardware: it IS the `SpiDevice`, the reset
//! `OutputPin` and the DIO0 [`IrqLine`]. It models the LoRa register page with its reset values, the
//! 256-byte FIFO walked by `RegFifoAddrPtr`, burst auto-increment, the LoRa bit writable only in sleep,
//! `RegIrqFlags` write-1-to-clear, DIO0 from RxDone (through the mask and `RegDioMapping1`), packets
//! heard only in RX mode, a chip that stops answering (MISO stuck at 0x00 or 0xFF) or loses its
//! configuration (brown-out), a stuck interrupt line, and, when a test asks for it
//! ([`Sx1276Sim::with_trace`]), a log of the SPI transactions ([`TraceLog`], capped). Transmit: TX mode
//! sends `RegPayloadLength` bytes from `RegFifoTxBaseAddr` onto the simulated air at once (kept in a
//! capped log, [`Sx1276Sim::transmitted`]), raises TxDone and returns to standby, as the chip does after
//! its time on air. It never models the FSK modem, timing or the air's losses.
//!
//! Bug classes it catches: a wrong or reordered register write (golden traces), the LoRa bit written
//! outside sleep (the chip silently stays in FSK), forgetting RX continuous or the DIO0 mapping (packets
//! never arrive), read flags not cleared (DIO0 stays high), reading the FIFO from the wrong address,
//! RSSI/SNR sign and offset mistakes, CRC errors passed on as packets, and the recovery path (stop
//! answering, brown-out, stuck line) which real hardware produces rarely and never on demand. On the
//! transmit side: the payload written at the wrong FIFO address or with the wrong length, TxDone masked
//! or not routed to DIO0 (the driver waits for ever), and a chip left out of RX after a transmission
//! (the next packets are missed).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use embedded_hal::spi::Operation;

use super::hal::{IrqLine, Wakeup};
use super::sx1276::{
    is_low_frequency, HOP_CRC_ON_PAYLOAD, IRQ_PAYLOAD_CRC_ERROR, IRQ_RX_DONE, IRQ_TX_DONE,
    IRQ_VALID_HEADER, REG_DIO_MAPPING1, REG_FIFO, REG_FIFO_ADDR_PTR, REG_FIFO_RX_BASE_ADDR,
    REG_FIFO_RX_CURRENT_ADDR, REG_FIFO_TX_BASE_ADDR, REG_FRF_MSB, REG_HOP_CHANNEL, REG_IRQ_FLAGS,
    REG_IRQ_FLAGS_MASK, REG_OP_MODE, REG_PAYLOAD_LENGTH, REG_PKT_RSSI, REG_PKT_SNR,
    REG_RX_NB_BYTES, REG_VERSION,
};
use super::RadioError;

/// One entry of the simulator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trace {
    /// NRESET was pulled low.
    Reset,
    /// One chip-select window: the bytes sent and the bytes answered.
    Spi { mosi: Vec<u8>, miso: Vec<u8> },
}

/// How many entries a trace keeps when a test switches it on ([`Sx1276Sim::with_trace`]): a golden
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

/// A packet as the simulated air delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub bytes: Vec<u8>,
    pub rssi_dbm: f32,
    pub snr_db: f32,
    /// False: the chip flags PayloadCrcError.
    pub crc_ok: bool,
    /// False: the sender sent no payload CRC (the header's CRC bit is clear).
    pub crc_present: bool,
}

/// The register page's reset values (datasheet, LoRa view; 0x01 reads 0x09: FSK standby, LF bank).
fn reset_registers() -> [u8; 128] {
    let mut regs = [0u8; 128];
    for (addr, value) in [
        (0x01, 0x09),
        (0x06, 0x6C),
        (0x07, 0x80),
        (0x08, 0x00),
        (0x09, 0x4F),
        (0x0B, 0x2B),
        (0x0C, 0x20),
        (0x0E, 0x80),
        (0x1D, 0x72),
        (0x1E, 0x70),
        (0x1F, 0x64),
        (0x21, 0x08),
        (0x22, 0x01),
        (0x23, 0xFF),
        (0x31, 0xC3),
        (0x33, 0x27),
        (0x36, 0x03),
        (0x37, 0x0A),
        (0x39, 0x12),
        (0x3A, 0x52),
        (0x42, 0x12),
    ] {
        regs[addr] = value;
    }
    regs
}

#[derive(Debug)]
struct State {
    regs: [u8; 128],
    fifo: [u8; 256],
    log: TraceLog,
    /// Some(byte): the chip does not answer; MISO reads this byte and writes are lost.
    silent: Option<u8>,
    irq_stuck: bool,
    irq_cut: bool,
    in_reset: bool,
    missed: u32,
    tx: TxLog,
}

impl State {
    fn frequency_hz(&self) -> u32 {
        let frf = u32::from_be_bytes([
            0,
            self.regs[REG_FRF_MSB as usize],
            self.regs[REG_FRF_MSB as usize + 1],
            self.regs[REG_FRF_MSB as usize + 2],
        ]);
        ((u64::from(frf) * 32_000_000) >> 19) as u32
    }

    /// TX mode: `RegPayloadLength` bytes from `RegFifoTxBaseAddr` go on the air, TxDone rises, and the
    /// chip is back in standby (as after its time on air).
    fn transmit(&mut self) {
        let base = self.regs[REG_FIFO_TX_BASE_ADDR as usize];
        let len = self.regs[REG_PAYLOAD_LENGTH as usize];
        let bytes = (0..len)
            .map(|i| self.fifo[usize::from(base.wrapping_add(i))])
            .collect();
        let frequency_hz = self.frequency_hz();
        self.tx.push(Transmitted {
            bytes,
            frequency_hz,
        });
        self.regs[REG_IRQ_FLAGS as usize] |= IRQ_TX_DONE;
        let op_mode = self.regs[REG_OP_MODE as usize];
        self.regs[REG_OP_MODE as usize] = (op_mode & !0x07) | 0x01;
    }

    fn dio0(&self) -> bool {
        if self.irq_stuck {
            return true;
        }
        if self.irq_cut {
            return false;
        }
        if self.silent.is_some() || self.in_reset || self.regs[REG_OP_MODE as usize] & 0x80 == 0 {
            return false;
        }
        let routed = match self.regs[REG_DIO_MAPPING1 as usize] >> 6 {
            0 => IRQ_RX_DONE,
            1 => IRQ_TX_DONE,
            _ => 0,
        };
        let unmasked = self.regs[REG_IRQ_FLAGS as usize] & !self.regs[REG_IRQ_FLAGS_MASK as usize];
        unmasked & routed != 0
    }

    fn receiving(&self) -> bool {
        let op_mode = self.regs[REG_OP_MODE as usize];
        self.silent.is_none()
            && !self.in_reset
            && op_mode & 0x80 != 0
            && matches!(op_mode & 0x07, 5 | 6)
    }

    fn read_register(&mut self, addr: u8) -> u8 {
        if addr == REG_FIFO {
            let ptr = self.regs[REG_FIFO_ADDR_PTR as usize];
            self.regs[REG_FIFO_ADDR_PTR as usize] = ptr.wrapping_add(1);
            self.fifo[usize::from(ptr)]
        } else {
            self.regs[usize::from(addr & 0x7F)]
        }
    }

    fn write_register(&mut self, addr: u8, value: u8) {
        let index = usize::from(addr & 0x7F);
        match addr {
            REG_FIFO => {
                let ptr = self.regs[REG_FIFO_ADDR_PTR as usize];
                self.fifo[usize::from(ptr)] = value;
                self.regs[REG_FIFO_ADDR_PTR as usize] = ptr.wrapping_add(1);
            }
            REG_OP_MODE => {
                let old = self.regs[index];
                // LongRangeMode (bit 7) changes only while the chip sleeps.
                let lora = if old & 0x07 == 0 {
                    value & 0x80
                } else {
                    old & 0x80
                };
                self.regs[index] = lora | (value & 0x7F);
                if lora != 0 && value & 0x07 == 0x03 {
                    self.transmit();
                }
            }
            REG_IRQ_FLAGS => self.regs[index] &= !value,
            REG_FIFO_RX_CURRENT_ADDR
            | REG_RX_NB_BYTES
            | REG_PKT_SNR
            | REG_PKT_RSSI
            | REG_HOP_CHANNEL
            | REG_VERSION => {}
            _ => self.regs[index] = value,
        }
    }

    /// One chip-select window, byte by byte: the first byte is `W<<7 | address`, the rest auto-increment
    /// (the FIFO address walks the FIFO pointer instead).
    fn exchange(&mut self, mosi: &[u8]) -> Vec<u8> {
        if let Some(byte) = self.silent {
            return vec![byte; mosi.len()];
        }
        if self.in_reset {
            return vec![0; mosi.len()];
        }
        let mut miso = Vec::with_capacity(mosi.len());
        let Some((&first, data)) = mosi.split_first() else {
            return miso;
        };
        miso.push(0x00);
        let write = first & 0x80 != 0;
        let mut addr = first & 0x7F;
        for &byte in data {
            if write {
                self.write_register(addr, byte);
                miso.push(0x00);
            } else {
                miso.push(self.read_register(addr));
            }
            if addr != REG_FIFO {
                addr = (addr + 1) & 0x7F;
            }
        }
        miso
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The simulated chip. Clones share one chip; hand [`spi`](Self::spi), [`reset_pin`](Self::reset_pin) and
/// [`dio0`](Self::dio0) to the driver and keep a clone to inject packets and faults.
#[derive(Debug, Clone)]
pub struct Sx1276Sim {
    shared: Arc<Shared>,
}

impl Default for Sx1276Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sx1276Sim {
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
        Sx1276Sim {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    regs: reset_registers(),
                    fifo: [0; 256],
                    log,
                    silent: None,
                    irq_stuck: false,
                    irq_cut: false,
                    in_reset: false,
                    missed: 0,
                    tx: TxLog::default(),
                }),
                changed: Condvar::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the register file half-written in a way that
        // matters to a simulator; keep going with what is there.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let result = change(&mut self.state());
        self.shared.changed.notify_all();
        result
    }

    /// The SPI device of this chip.
    pub fn spi(&self) -> SimSpi {
        SimSpi { chip: self.clone() }
    }

    /// The NRESET pin of this chip.
    pub fn reset_pin(&self) -> SimResetPin {
        SimResetPin { chip: self.clone() }
    }

    /// The DIO0 line of this chip (each call a line with its own [`Wakeup`]).
    pub fn dio0(&self) -> SimDio0 {
        let shared = self.shared.clone();
        SimDio0 {
            chip: self.clone(),
            wakeup: Wakeup::new(move || notify_under_lock(&shared)),
        }
    }

    /// A packet arrives: heard only while the chip is in LoRa RX, as the chip would store it. Returns
    /// whether it was heard.
    pub fn inject(&self, packet: &[u8], rssi_dbm: f32, snr_db: f32, crc_ok: bool) -> bool {
        self.inject_with(Injection {
            bytes: packet.to_vec(),
            rssi_dbm,
            snr_db,
            crc_ok,
            crc_present: true,
        })
    }

    /// [`inject`](Self::inject) with every detail chosen.
    pub fn inject_with(&self, packet: Injection) -> bool {
        self.update(|s| {
            if !s.receiving() || packet.bytes.len() > 255 {
                s.missed += 1;
                return false;
            }
            let base = s.regs[REG_FIFO_RX_BASE_ADDR as usize];
            for (i, &byte) in packet.bytes.iter().enumerate() {
                s.fifo[usize::from(base.wrapping_add(i as u8))] = byte;
            }
            let frf = u32::from_be_bytes([
                0,
                s.regs[REG_FRF_MSB as usize],
                s.regs[REG_FRF_MSB as usize + 1],
                s.regs[REG_FRF_MSB as usize + 2],
            ]);
            let frequency_hz = ((u64::from(frf) * 32_000_000) >> 19) as u32;
            let offset = if is_low_frequency(frequency_hz) {
                -164.0
            } else {
                -157.0
            };
            let snr_raw = (packet.snr_db * 4.0).round().clamp(-128.0, 127.0) as i8;
            let snr_used = f32::from(snr_raw) / 4.0;
            let below_noise = if snr_used < 0.0 { snr_used } else { 0.0 };
            let rssi_raw = ((packet.rssi_dbm - below_noise - offset) * 15.0 / 16.0)
                .round()
                .clamp(0.0, 255.0) as u8;
            s.regs[REG_FIFO_RX_CURRENT_ADDR as usize] = base;
            s.regs[REG_RX_NB_BYTES as usize] = packet.bytes.len() as u8;
            s.regs[REG_PKT_SNR as usize] = snr_raw as u8;
            s.regs[REG_PKT_RSSI as usize] = rssi_raw;
            let hop = s.regs[REG_HOP_CHANNEL as usize] & !HOP_CRC_ON_PAYLOAD;
            s.regs[REG_HOP_CHANNEL as usize] = hop
                | if packet.crc_present {
                    HOP_CRC_ON_PAYLOAD
                } else {
                    0
                };
            let crc_error = if packet.crc_ok {
                0
            } else {
                IRQ_PAYLOAD_CRC_ERROR
            };
            s.regs[REG_IRQ_FLAGS as usize] |= IRQ_RX_DONE | IRQ_VALID_HEADER | crc_error;
            true
        })
    }

    /// The chip stops answering: every MISO byte reads `miso` (0x00: unplugged with a pull-down or no
    /// power; 0xFF: floating high) and writes are lost.
    pub fn stop_answering(&self, miso: u8) {
        self.update(|s| s.silent = Some(miso));
    }

    /// The chip answers again, as after a power cycle (reset values).
    pub fn recover(&self) {
        self.update(|s| {
            s.silent = None;
            s.regs = reset_registers();
        });
    }

    /// A brown-out: the chip keeps answering but has lost its configuration.
    pub fn power_cycle(&self) {
        self.update(|s| s.regs = reset_registers());
    }

    /// Cuts DIO0: it reads low whatever the chip does (a broken wire), or mends it.
    pub fn cut_irq(&self, cut: bool) {
        self.update(|s| s.irq_cut = cut);
    }

    /// Holds DIO0 high regardless of the flags (a shorted or floating line).
    pub fn stick_irq(&self, stuck: bool) {
        self.update(|s| s.irq_stuck = stuck);
    }

    /// A register's current value.
    pub fn register(&self, addr: u8) -> u8 {
        self.state().regs[usize::from(addr & 0x7F)]
    }

    /// The resets and SPI windows since the start or the last [`clear_trace`](Self::clear_trace), at most
    /// the last [`TRACE_CAPACITY`]; empty unless the chip was made [`with_trace`](Self::with_trace).
    pub fn trace(&self) -> Vec<Trace> {
        self.state().log.entries()
    }

    /// Entries the trace had to drop because it was full.
    pub fn trace_dropped(&self) -> u64 {
        self.state().log.dropped()
    }

    /// Empties the log.
    pub fn clear_trace(&self) {
        self.state().log.clear();
    }

    /// Injections the chip did not hear (not in RX, not answering, too long).
    pub fn missed(&self) -> u32 {
        self.state().missed
    }

    /// The packets the chip transmitted and nobody took yet, oldest first (at most [`TX_LOG_CAPACITY`]).
    pub fn transmitted(&self) -> Vec<Transmitted> {
        self.state().tx.packets()
    }

    /// Takes the transmitted packets, oldest first: what a simulated node hears.
    pub fn take_transmitted(&self) -> Vec<Transmitted> {
        self.state().tx.take()
    }

    /// Notified whenever the chip transmits.
    pub fn on_transmit(&self) -> Arc<tokio::sync::Notify> {
        self.state().tx.notifier()
    }

    /// Packets transmitted since power-on, and how many the log dropped.
    pub fn transmit_counts(&self) -> (u64, u64) {
        let state = self.state();
        (state.tx.sent(), state.tx.dropped())
    }
}

/// The simulated chip's SPI device.
#[derive(Debug, Clone)]
pub struct SimSpi {
    chip: Sx1276Sim,
}

impl embedded_hal::spi::ErrorType for SimSpi {
    type Error = Infallible;
}

impl embedded_hal::spi::SpiDevice for SimSpi {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Infallible> {
        let mosi = mosi_of(operations);
        self.chip.update(|s| {
            let miso = s.exchange(&mosi);
            scatter_miso(operations, &miso);
            if s.log.is_on() {
                s.log.push(Trace::Spi { mosi, miso });
            }
        });
        Ok(())
    }
}

/// The bytes a transaction clocks out, reads sending zeros.
pub(crate) fn mosi_of(operations: &[Operation<'_, u8>]) -> Vec<u8> {
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
pub(crate) fn scatter_miso(operations: &mut [Operation<'_, u8>], miso: &[u8]) {
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

/// The simulated NRESET pin: low holds the chip in reset, the rising edge restores the reset values.
#[derive(Debug, Clone)]
pub struct SimResetPin {
    chip: Sx1276Sim,
}

impl embedded_hal::digital::ErrorType for SimResetPin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for SimResetPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.chip.update(|s| {
            if !s.in_reset {
                s.in_reset = true;
                s.log.push(Trace::Reset);
            }
        });
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.chip.update(|s| {
            if s.in_reset {
                s.in_reset = false;
                if s.silent.is_none() {
                    s.regs = reset_registers();
                }
            }
        });
        Ok(())
    }
}

/// Wakes every thread waiting on the chip, taking the lock first: a waiter checks its [`Wakeup`] under
/// that lock, so it either sees the flag or is already waiting when the notification comes.
fn notify_under_lock(shared: &Shared) {
    let _state = shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    shared.changed.notify_all();
}

/// The simulated DIO0 line; waits on a condition variable, so it blocks only the driver's thread, and
/// wakes for a packet injected, any other change of the chip, or its [`Wakeup`].
#[derive(Debug, Clone)]
pub struct SimDio0 {
    chip: Sx1276Sim,
    wakeup: Wakeup,
}

impl IrqLine for SimDio0 {
    fn is_high(&mut self) -> Result<bool, RadioError> {
        Ok(self.chip.state().dio0())
    }

    fn wait_high(&mut self, timeout: Duration) -> Result<bool, RadioError> {
        let deadline = Instant::now() + timeout;
        let mut state = self.chip.state();
        loop {
            if state.dio0() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline || self.wakeup.ends_wait() {
                return Ok(false);
            }
            state = match self.chip.shared.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn wakeup(&self) -> Wakeup {
        self.wakeup.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::digital::OutputPin;
    use embedded_hal::spi::SpiDevice;

    #[test]
    fn the_trace_is_off_by_default_and_a_capped_ring_when_on() {
        let quiet = Sx1276Sim::new();
        let mut spi = quiet.spi();
        for _ in 0..10 {
            spi.write(&[0x42, 0x00]).unwrap();
        }
        quiet.reset_pin().set_low().unwrap();
        assert!(quiet.trace().is_empty());
        assert_eq!(quiet.trace_dropped(), 0);

        let traced = Sx1276Sim::with_trace();
        let mut spi = traced.spi();
        for i in 0..TRACE_CAPACITY + 5 {
            spi.write(&[0x80 | REG_FIFO_ADDR_PTR, i as u8]).unwrap();
        }
        let trace = traced.trace();
        assert_eq!(trace.len(), TRACE_CAPACITY);
        assert_eq!(traced.trace_dropped(), 5);
        assert_eq!(
            trace[0],
            Trace::Spi {
                mosi: vec![0x80 | REG_FIFO_ADDR_PTR, 5],
                miso: vec![0, 0]
            },
            "the oldest entries go first"
        );
        traced.clear_trace();
        assert!(traced.trace().is_empty());
        assert_eq!(traced.trace_dropped(), 0);
        spi.write(&[0x42, 0x00]).unwrap();
        assert_eq!(traced.trace().len(), 1, "still on after a clear");
    }

    #[test]
    fn a_wait_on_dio0_ends_on_an_injection_or_the_wakeup_not_a_timeout() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        spi.write(&[0x81, 0x80]).unwrap();
        spi.write(&[0x81, 0x85]).unwrap(); // LoRa RX continuous, DIO0 mapped to RxDone
        let mut dio0 = chip.dio0();
        let sender = chip.clone();
        let started = Instant::now();
        let injector = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            sender.inject(&[1, 2, 3], -80.0, 7.0, true)
        });
        assert!(dio0.wait_high(Duration::from_secs(30)).unwrap());
        assert!(injector.join().unwrap());
        assert!(started.elapsed() < Duration::from_secs(10));
        spi.write(&[0x80 | REG_IRQ_FLAGS, 0xFF]).unwrap();

        let wakeup = dio0.wakeup();
        let started = Instant::now();
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            wakeup.wake();
        });
        assert!(!dio0.wait_high(Duration::from_secs(30)).unwrap());
        waker.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            !dio0.wait_high(Duration::from_secs(30)).unwrap(),
            "woken for good: returns at once"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            !chip.dio0().wakeup().is_woken(),
            "a new line has its own wakeup"
        );
    }

    #[test]
    fn registers_auto_increment_and_the_fifo_walks_its_pointer() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        let mut frf = [0u8; 3];
        spi.transaction(&mut [Operation::Write(&[0x06]), Operation::Read(&mut frf)])
            .unwrap();
        assert_eq!(frf, [0x6C, 0x80, 0x00]);
        spi.write(&[0x80 | REG_FIFO_ADDR_PTR, 0x10]).unwrap();
        spi.write(&[0x80, 1, 2, 3]).unwrap();
        spi.write(&[0x80 | REG_FIFO_ADDR_PTR, 0x10]).unwrap();
        let mut back = [0u8; 3];
        spi.transaction(&mut [Operation::Write(&[0x00]), Operation::Read(&mut back)])
            .unwrap();
        assert_eq!(back, [1, 2, 3]);
    }

    #[test]
    fn the_lora_bit_changes_only_in_sleep() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        spi.write(&[0x81, 0x81]).unwrap(); // standby, not sleep: the LoRa bit is ignored
        assert_eq!(chip.register(REG_OP_MODE), 0x01);
        spi.write(&[0x81, 0x80]).unwrap(); // into (FSK) sleep: still ignored, the chip was in standby
        spi.write(&[0x81, 0x80]).unwrap();
        assert_eq!(chip.register(REG_OP_MODE), 0x80);
    }

    #[test]
    fn flags_clear_on_write_one_and_reset_restores_values() {
        let chip = Sx1276Sim::new();
        let mut spi = chip.spi();
        spi.write(&[0x81, 0x80]).unwrap();
        spi.write(&[0x81, 0x85]).unwrap();
        assert!(chip.inject(&[1, 2], -80.0, 7.0, false));
        assert_eq!(chip.register(REG_IRQ_FLAGS), 0x70);
        spi.write(&[0x80 | REG_IRQ_FLAGS, 0x20]).unwrap();
        assert_eq!(chip.register(REG_IRQ_FLAGS), 0x50);
        assert!(chip.dio0().is_high().unwrap());
        spi.write(&[0x80 | REG_IRQ_FLAGS, 0xFF]).unwrap();
        assert!(!chip.dio0().is_high().unwrap());
        let mut reset = chip.reset_pin();
        reset.set_low().unwrap();
        reset.set_high().unwrap();
        assert_eq!(chip.register(REG_OP_MODE), 0x09);
        assert!(
            !chip.inject(&[1], -80.0, 7.0, true),
            "not in RX after reset"
        );
        assert_eq!(chip.missed(), 1);
    }
}
