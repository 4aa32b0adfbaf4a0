//! The embedded broker with real clients on 127.0.0.1: logins and rights, backlogs, limits, MQTT 3.1.1
//! and 5 against Debian's mosquitto clients, retained delivery at scale, TLS and WebSocket listeners.
//! One test binary (the connect flood stays alone in broker_flood.rs, which reads its own process's
//! memory); one module per concern.

mod access;
mod backlog;
mod delivery;
mod limits;
mod mqtt;
mod mqtt5;
mod retained;
mod tls;
mod websocket;
