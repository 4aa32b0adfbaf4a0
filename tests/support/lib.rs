//! The test harness that every test crate of sensorgate and its benchmark share, one copy of each
//! helper: the real daemon started on ports the kernel chose on 127.0.0.1 ([`daemon`]) with a
//! configuration built rather than written out ([`config`]), pseudo-terminals as serial
//! dongles ([`pty`]), Debian's mosquitto as a peer or cloud broker ([`mosquitto`]), a cloud that closes
//! the connection on a publish it refuses ([`fake_cloud`]), MQTT subscribers
//! ([`mqtt`]), a byte-level client ([`raw`]) and WebSocket client ([`websocket`]), the embedded broker's test settings ([`broker`]), a
//! throw-away PKI ([`certs`]), a small tmpfs to fill for full-disk cases ([`tmpfs`]), the Python
//! that independent implementations run on ([`python`]), and a process of its own for a test that
//! measures its own memory ([`alone`]); what the quick run leaves out ([`quick`]). It starts only processes and listeners on
//! 127.0.0.1 and stops what it started by PID.

pub mod alone;
pub mod broker;
pub mod certs;
pub mod config;
pub mod daemon;
pub mod fake_cloud;
pub mod mosquitto;
pub mod mqtt;
pub mod pty;
pub mod python;
pub mod quick;
pub mod raw;
pub mod tmpfs;
pub mod websocket;
