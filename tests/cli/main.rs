//! The command line as a user runs it: check-config and run agreeing on every key, the shipped files,
//! and the errors of the security keys. One test binary; one module per concern.

mod agreement;
#[cfg(feature = "codecs")]
mod codec;
mod commands;
mod security_keys;
