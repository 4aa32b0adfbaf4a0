//! The daemon as a whole, through the real binary on 127.0.0.1 (and, on tokio's paused clock, its
//! pipeline and sd_notify conversation in-process): a pseudo-terminal as its serial dongle end to end,
//! its life under systemd (readiness, watchdog, reload), the demo's memory, the configuration files as
//! users meet them, commands to simulated nodes and the sealed commands' counters, Home Assistant
//! discovery, retained state across power cuts, JavaScript codecs and a node inventing field names.
//! One test binary; one module per concern.

mod codecs;
mod commands;
mod config_files;
mod demo_memory;
mod downlink_counters;
mod flash_retained;
mod homeassistant;
mod hostile_fields;
mod pipeline_clock;
mod ports;
mod runtime;
mod serial;
mod systemd;
mod systemd_notify;
