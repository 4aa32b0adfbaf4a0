//! The command line as a user runs it: check-config and run agreeing on every key, the shipped files,
//! the configuration and the systemd unit the Debian package installs, the errors of the security keys, and decoding BLE
//! adverts. One test binary; one module per concern.

mod agreement;
mod ble;
#[cfg(feature = "codecs")]
mod codec;
mod commands;
mod features;
mod packaged;
mod security_keys;
mod unit;
