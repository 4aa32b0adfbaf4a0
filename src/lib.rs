//! sensorgate: sensor frames in, MQTT out. (The architecture tour is written once the modules exist.)

pub mod app;
pub mod backoff;
pub mod broker;
pub mod config;
pub mod decode;
pub mod devices;
pub mod frame;
pub mod logging;
pub mod model;
pub mod pipeline;
pub mod publish;
pub mod source;
pub mod stats;
pub mod systemd;
pub mod uplink;
