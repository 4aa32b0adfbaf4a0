//! The sources a reading comes from, each against its own peer: Bluetooth LE adverts replayed from HCI
//! events, the LoRa radios against their chip simulators, LoRaWAN end devices and packet forwarders in
//! Python, a fake and Debian's real `rtl_433`, and AES-128-CCM frames sealed by an independent Python
//! node on a serial port. One test binary; one module per source.

mod ble;
mod lorawan;
mod radio;
mod rtl433;
mod security_frames;
