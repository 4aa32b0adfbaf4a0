//! LoRaWAN: a local network and join server for LoRaWAN 1.0.x Class A devices heard by packet-forwarder
//! gateways (the Semtech UDP protocol, `kind = "semtech-udp"`), the gateway's own radios among them.
//! Uplinks become readings like every other
//! device's; joins, ACKs, MAC answers and the commands of `{base}/{device}/set` go back through the
//! gateway that heard the device best, in the receive windows after its uplinks.
//!
//! Files: `region.rs` (the regional parameters table), `session.rs` (a device's session and what of it
//! is stored), `keys.rs` (session key derivation), `dev_nonce.rs` (which join requests are replays, by LoRaWAN version), `join_accept.rs` (the JoinAccept), `join_limit.rs` (joins rate-limited), `server.rs` (the network/join server state machine), `adr.rs` (network-side ADR of the devices with `adr = true`),
//! `dedup.rs` (one uplink heard by several gateways), `gateway_watch.rs` (gateways online or offline by their keepalives), `payload.rs` (FRMPayload to fields), `codecs.rs` (the devices' JavaScript codecs, per FPort), `semtech.rs` (the forwarder protocol v2 codec), `airtime.rs` (each gateway's downlinks within the region's duty cycle),
//! `semtech_gateway.rs` (the gateway's side of it), `forwarder.rs` (the gateway's own radio as a
//! single-channel packet forwarder, `payload = "lorawan"`), `radio_settings.rs` (that radio's keys),
//! `persist.rs` (sessions on disk through `crate::statefile`), `settings.rs` (the configuration keys and
//! their checks), `udp.rs` (the source task), `cli.rs` (`sensorgate lorawan keys` and `decode`),
//! `simulated_forwarder.rs` and `simulated_device.rs` (`simulate`: devices and a forwarder to try it
//! without a gateway).
//!
//! # The crates it stands on
//! The wire formats of LoRaWAN itself come from lora-rs's `lorawan` crate (0.9, without its serde,
//! defmt and to-string features): PHYPayload parsing and building, the MIC (AES-CMAC), FRMPayload
//! encryption, data downlinks and MAC commands; the JoinAccept is built here (its `JoinAcceptCreator`
//! leaves a CFList out of the MIC, see `join_accept.rs`), with the `cmac` crate it brings. Its cost in the stripped, LTO, opt-level "z" release profile of this
//! project: a probe binary that parses a frame, checks a MIC, decrypts and builds a JoinAccept grew by
//! 14,688 bytes (302,528 -> 317,216) against the same binary doing only the AES it already had.
//! Helium's `semtech-udp` crate (0.12) was read and not taken: its packet types are fine, but it brings
//! `macaddr`, `num_enum`, `lora-modulation`, `arrayref` and a second `rand` major for about 250 lines of
//! JSON and 12-byte headers that serde_json (already here) handles, and its server runtime owns the
//! socket and the gateway table, which the source task must own to allow-list, count and bound them.
//! The network-server logic (sessions, windows, dedup, counters) is ours.

pub mod adr;
pub mod airtime;
pub mod cli;
pub mod codecs;
pub mod counters;
pub mod dedup;
pub mod dev_nonce;
pub mod forwarder;
pub mod gateway_watch;
pub mod join_accept;
pub mod join_limit;
pub mod keys;
pub mod payload;
pub mod persist;
pub mod radio_settings;
pub mod region;
pub mod semtech;
pub mod semtech_gateway;
pub mod server;
pub mod session;
pub mod settings;
pub mod simulated_device;
pub mod simulated_forwarder;
pub mod udp;

/// How one gateway heard one uplink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RxMeta {
    /// The gateway's EUI.
    pub gateway: u64,
    /// The concentrator's microsecond counter at the end of the uplink.
    pub tmst: u32,
    /// Hz.
    pub frequency: u32,
    pub spreading_factor: u8,
    pub bandwidth_khz: u16,
    /// dBm.
    pub rssi: f32,
    /// dB.
    pub snr: f32,
}
