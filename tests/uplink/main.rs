//! The uplink to a cloud broker (Debian's mosquitto on 127.0.0.1): delivery and outages in-process,
//! TLS, through the real daemon, what reaches the disk (flash writes), a full state file system, a cloud that refuses a topic by closing the connection, and end-to-end encrypted
//! payloads. One test binary; one module per concern.

mod delivery;
mod encrypted;
mod end_to_end;
mod flash;
mod full_disk;
mod refused;
mod running;
mod tls;
