//! sensorgate: sensor frames in, MQTT out.
//!
//! A gateway daemon for a Raspberry Pi: battery-powered sensor nodes send short frames over serial links
//! and LoRa radios; sensorgate decodes them, keeps each device's last state and availability retained on
//! an MQTT broker that runs inside the daemon, and forwards what the rules select to a cloud broker without
//! losing it when the uplink or the power fails.
//!
//! More: `docs/DEVELOPING.md` (build, test), `docs/ARCHITECTURE.md` (paths, hooks), `docs/formats.md` (bytes).
//!
//! # The path of a reading
//!
//! ```text
//!  serial ports --+  framing          decoding           device registry        embedded broker (rmqtt)
//!  SX1276/SX1262 -+-> lines/COBS/ --> JSON/LPP/       --> names, dedup,      --> retained state,
//!  simulator -----+   SLIP (+CRC)     MySensors,           liveness, wills        availability, stats
//!                                     node16/RadioHead                              |           |
//!                                                              uplink: forward rules, disk spool,
//!                                                              MQTT over TLS to the cloud broker
//! ```
//!
//! # Layout, module by module
//!
//! - [`model`]: the types that cross stages: [`model::Packet`] (bytes plus receive metadata),
//!   [`model::Reading`] (one device's fields), [`model::Message`] (what is published). Data only.
//! - [`source`]: tasks that own a device and emit [`source::SourceEvent`]s: [`source::serial`] (tokio-serial,
//!   reopened with backoff when a dongle vanishes), [`source::simulator`] (virtual nodes through the real
//!   framing and decoders), [`source::radio`] (register-level SX1276/SX1262 drivers behind embedded-hal
//!   traits, their chip simulators, the Raspberry Pi backend), [`source::rtl433`] (rtl_433 run and
//!   supervised for 433/868 MHz sensors: stalls, USB reset, repeats, identities; it hands over readings),
//!   [`source::transmit`] (the seam a source takes commands' frames through: `CommandPort`,
//!   `TxRequest`). [`heard`] lists the senders such sources hear but do not publish
//!   (`{base}/gateway/heard`).
//! - [`frame`]: bytes -> frames (`lines`, COBS, SLIP, CRC-16/CCITT-FALSE). Pure functions.
//! - [`decode`]: frames -> readings (headers `node16`/`radiohead`; payloads JSON, Cayenne LPP, MySensors).
//!   Pure functions, tested with byte fixtures.
//! - [`ble`]: Bluetooth LE advertisements, the pure layer: HCI LE Advertising Report events (legacy and
//!   extended) -> advertisements -> 16-bit-UUID service data -> readings (BTHome v2 plain and encrypted,
//!   pvvx, atc1441), with Home Assistant's BTHome field names. Tested with the published vectors.
//!   [`ble::scan`] is the `kind = "ble"` source built on it: a passive scan through the raw HCI socket
//!   or a replayed capture, devices by MAC with their bindkeys, counters in the replay marks, the scan
//!   watchdog.
//! - [`devices`]: the registry: device names, duplicate drops, liveness, per-device wills. A pure state
//!   machine with time passed in. [`publish`] turns its readings into topics and payloads; [`stats`] holds
//!   the counters of `{base}/gateway/stats`.
//! - [`pipeline`]: the stage that connects the three above to the broker: decode, register, publish, fire
//!   liveness deadlines, publish stats.
//! - [`broker`]: the embedded MQTT broker (rmqtt) behind our own API: listeners and TLS, logins and per-topic
//!   rights, the retained store persisted to the state directory, in-process publishing, and the tap that
//!   feeds the uplink. No other module names an rmqtt type.
//! - [`commands`]: MQTT in, frames out: the router takes client publishes on `{base}/{device}/set` from
//!   the broker's command tap, refuses what may not or cannot be sent, queues per configured or heard
//!   device (bounded per client and per source), and one dispatcher per source sends through the task
//!   that owns the port or radio (now, or after the device's uplink, within the radio's duty cycle and
//!   each client's share of it); results on `{base}/{device}/set/result`. The gateway's frame counters
//!   for sealed commands are reserved on disk ahead of use ([`commands::counters`]), so no counter
//!   repeats under a key.
//!   [`encode`] is the inverse of `decode` and `frame`: payloads, headers, sealing, CRC, framing. Pure.
//! - [`homeassistant`]: MQTT discovery: one Home Assistant device per sensorgate device, typed entities,
//!   availability with the device's will and the gateway's, published, updated and removed with the registry.
//! - [`uplink`]: forward rules, the crash-safe disk spool, and the MQTT-over-TLS client to the cloud.
//! - [`crypto`]: payload security: AES-128-CCM sensor frames opened before decoding, the
//!   ChaCha20-Poly1305 envelope of end-to-end encrypted uplink payloads, key files. [`replay`] keeps the
//!   per-device frame counter marks and what survives a power cut; [`statefile`] keeps such small state
//!   as two checksummed copies, so that one damaged write cannot lose it; [`record`] frames the records
//!   of the append-only logs (spool, retained log) and finds where a torn tail starts.
//! - [`lorawan`]: a local LoRaWAN 1.0.x Class A network and join server behind packet-forwarder
//!   gateways (`kind = "semtech-udp"`): the forwarder protocol, regions, OTAA/ABP sessions stored with
//!   counter marks, dedup across gateways; its source emits decoded readings straight to the registry
//!   and sends its devices' commands in their receive windows, within each gateway's duty cycle.
//!   A radio source with `payload = "lorawan"` runs as one more of those gateways: a single-channel
//!   packet forwarder speaking the same protocol over the loopback ([`lorawan::forwarder`]).
//! - [`topic`]: MQTT topic names and filters (grammar, depth, matching), every topic the gateway builds
//!   and the availability payloads ([`topic::gateway`]), the command topics ([`topic::commands`]); the
//!   one owner of those rules.
//! - [`config`]: the TOML tree, its defaults, and errors as `PATH:LINE:COL: message`; [`duration`]: the
//!   grammar of its durations (`"90s"`, `"1h30m"`), which the features' own settings types read too.
//! - [`app`]: the wiring: builds each stage from the configuration (`app/settings.rs`, and
//!   [`app::keys`] for the key files it names), owns the start, stop and reload order.
//! - [`http`]: the status page, its JSON API, the frame inspector, `/metrics` and `/healthz` (`[http]`;
//!   the cargo feature `http`, on by default), reading [`live`], the pipeline's read-only view
//!   (counters, devices, the last frames per source); an admin's request to forget a device reaches
//!   the pipeline through [`forget`].
//! - [`systemd`] (readiness, watchdog, status), [`logging`] (journald or stderr), [`ratelimit`] (log lines
//!   at most once per key and interval, with a suppressed count), [`backoff`] (retry delays),
//!   [`allocator`] (one glibc malloc arena, freed pages given back after bursts), [`full_disk`] (what a full
//!   state file system means to the writers: one WARN naming it, keep in memory, retry), [`units`]
//!   (durations and sizes as the configuration writes them, and the serde helpers a feature's settings
//!   type reads them with), [`lock`] (a mutex taken even when a panicking holder poisoned it).
//!
//! # Layers
//!
//! The modules stand on layers, and a module names (`crate::...`, `super::...` climbing to the root)
//! only modules on layers below its own, so there is no circle between modules. Lowest first:
//!
//! ```text
//!  0  model backoff ratelimit reserve topic allocator systemd full_disk   data, grammar, helpers
//!     forget units lock
//!  1  logging publish frame statefile
//!  2  decode devices broker replay                                        codecs, registry, engine
//!  3  stats                                                               the counters
//!  4  crypto
//!  5  encode source uplink                                                sources (source::transmit is
//!  6  commands ble                                                       the seam commands implement;
//!                                                                         sources built on the sources)
//!  7  lorawan       a source with its own network server; names commands::dutycycle (its budgets)
//!  8  homeassistant
//!  9  pipeline
//! 10  config        composes the features' settings types, runs their validators
//! 11  app           the wiring: hands each feature its own settings (app/settings.rs, app/keys.rs)
//! ```
//!
//! So: no feature imports `config` or `app` (a feature takes its own settings type, which `config`
//! composes); sources never import `commands`' queues (a source transmits through `source::transmit`,
//! which `commands` implements; `lorawan` names only the pure duty-cycle budgets of `commands::dutycycle`); topics and availability payloads come from [`topic`] only. A new module goes
//! on the lowest layer above everything it names; a new source sits with `source`. The table and the test
//! that reads every path against it are in `src/layering.rs` (`cargo test --lib layering`): it names the
//! file and line of an import that reaches up.
//!
//! Sources get a cancellation token; downstream stages end when their input channel closes, so a stop
//! drains instead of dropping. Blocking work (serial opens, SPI transfers, fsync) runs off the async
//! runtime's worker (one by default, or `[gateway] worker_threads`; `src/main.rs`), and the pipeline has
//! a thread of its own (`app::supervise`): anything async that blocked the one worker would stop every
//! connection and source with it.

pub mod allocator;
pub mod app;
pub mod backoff;
pub mod ble;
pub mod broker;
pub mod codec;
pub mod commands;
pub mod config;
pub mod crypto;
pub mod decode;
pub mod devices;
pub mod encode;
pub mod forget;
pub mod frame;
pub mod full_disk;
pub mod heard;
pub mod homeassistant;
pub mod http;
#[cfg(test)]
mod layering;
pub mod live;
pub mod lock;
pub mod logging;
pub mod lorawan;
pub mod model;
pub mod pipeline;
pub mod publish;
pub mod ratelimit;
pub mod record;
pub mod replay;
pub mod reserve;
pub mod source;
pub mod statefile;
pub mod stats;
pub mod systemd;
pub mod topic;
pub mod units;
pub mod uplink;
