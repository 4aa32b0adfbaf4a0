//! The LoRa radios against their chip simulators: register-level golden traces, the radio source task,
//! the radios end to end through the daemon's pipeline, and transmitting commands. One module per
//! concern.

mod commands;
mod e2e;
mod golden;
mod source;
