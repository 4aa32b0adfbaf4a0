//! The web side of the gateway (`[http]`, off unless configured): the status page `/`, its JSON under
//! `/api/`, `/metrics` (Prometheus text format 0.0.4) and `/healthz`, served by a small HTTP/1.1 server
//! on tokio (plain or TLS). It only reads: the pipeline's live view ([`crate::live`]), the watchdog's
//! [`Health`](crate::systemd::Health), the broker's counters, the uplink's and the commands' statistics. Admins (and only they:
//! the page shows its buttons to them alone) can ask for a reload through the SIGHUP path, send a command
//! through the commands path, and have the pipeline forget a device ([`crate::forget`]); every admin
//! request must carry the header [`csrf::ADMIN_HEADER`] and come from the page's own origin ([`csrf`]).
//!
//! Bounds, so that no client can grow the daemon: at most [`MAX_CONNECTIONS`] connections (more are
//! closed at once and counted), request heads of 8 KiB, bodies of 64 KiB, a whole request within 10 s
//! ([`request`]), an answer written within [`WRITE_TIMEOUT`]; the page is compiled in (no file system
//! access, so no path can reach a file). Every refusal is counted ([`HttpCounters`], in
//! `{base}/gateway/stats` as `http` and in `/metrics`) and logged at most once a minute per kind.
//!
//! Access ([`access`]): the broker's `[[broker.user]]` logins over HTTP Basic, with their `http` right;
//! `[http] anonymous = "read"` (loopback binds only) lets requests without credentials read. `/healthz`
//! is open to every client (it names stages, nothing else).
//!
//! The `http` cargo feature (on by default) compiles the server in; without it only the settings and
//! the counters' type remain, and `[http]` is refused by the configuration check.

#[cfg(feature = "http")]
mod access;
#[cfg(feature = "http")]
mod api;
mod counters;
#[cfg(feature = "http")]
mod csrf;
#[cfg(feature = "http")]
mod metrics;
#[cfg(feature = "http")]
mod request;
#[cfg(feature = "http")]
mod response;
#[cfg_attr(not(feature = "http"), path = "server_absent.rs")]
mod server;
mod settings;
#[cfg(feature = "http")]
mod tls;

#[cfg(feature = "http")]
pub use access::{Access, Refusal};
pub use counters::{HttpCounters, HttpCounts};
pub use server::HttpServer;
#[cfg(feature = "http")]
pub use server::{CommandsProbe, JsonProbe, Views, MAX_CONNECTIONS, WRITE_TIMEOUT};
pub use settings::{Anonymous, HttpConfig, HttpConfigProblem, HttpRight, HttpTls, DEFAULT_BIND};
