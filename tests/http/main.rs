//! The status page, its API, `/metrics` and `/healthz` through the real daemon on 127.0.0.1, read by
//! real clients: `promtool` and Python's `prometheus_client` (metrics), a headless Chromium (the page,
//! its script run), and a byte-level HTTP client (logins, bounds, hostile requests). Every wait is
//! bounded; every process started here is stopped by PID.

mod client;
mod daemon;

mod access;
mod admin;
mod bounds;
mod metrics;
mod page;
mod tls;
