//! The embedded broker with real clients on 127.0.0.1: logins and rights, backlogs, limits, MQTT 3.1.1
//! and 5 against Debian's mosquitto clients, retained delivery at scale, TLS and WebSocket listeners,
//! its core promises in-process, a connect flood, hostile clients and hostile logins. One test binary;
//! one module per concern (the connect flood, which reads its own process's memory, runs alone in a
//! process of its own: `sensorgate_testkit::alone`).

mod access;
mod backlog;
mod core_promises;
mod delivery;
mod flood;
mod hostile_clients;
mod hostile_logins;
mod idle_connections;
mod limits;
mod mqtt;
mod mqtt5;
mod reads;
mod retained;
mod routing;
mod tls;
mod websocket;
