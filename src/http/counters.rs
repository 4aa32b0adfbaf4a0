//! What the web server refused or dropped to stay within its bounds, counted: in `{base}/gateway/stats`
//! as `http` and in `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value as Json;

/// The counters' values at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HttpCounts {
    /// Requests answered (any status).
    pub requests: u64,
    /// Connections closed at once because `MAX_CONNECTIONS` were open.
    pub connections_refused: u64,
    /// Requests refused for their shape: head or body too large, too slow, malformed.
    pub requests_refused: u64,
    /// Requests whose credentials were missing, wrong, or without the right needed.
    pub logins_refused: u64,
}

/// Shared, cheap to bump from every connection.
#[derive(Debug, Clone, Default)]
pub struct HttpCounters(Arc<[AtomicU64; 4]>);

impl HttpCounters {
    pub fn request(&self) {
        self.0[0].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_refused(&self) {
        self.0[1].fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_refused(&self) {
        self.0[2].fetch_add(1, Ordering::Relaxed);
    }

    pub fn login_refused(&self) {
        self.0[3].fetch_add(1, Ordering::Relaxed);
    }

    /// The values now.
    pub fn counts(&self) -> HttpCounts {
        let value = |i: usize| self.0[i].load(Ordering::Relaxed);
        HttpCounts {
            requests: value(0),
            connections_refused: value(1),
            requests_refused: value(2),
            logins_refused: value(3),
        }
    }

    /// The values as `{base}/gateway/stats` carries them.
    pub fn json(&self) -> Json {
        serde_json::to_value(self.counts()).unwrap_or(Json::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_bumped() {
        let counters = HttpCounters::default();
        let shared = counters.clone();
        shared.request();
        shared.request();
        shared.connection_refused();
        shared.login_refused();
        assert_eq!(
            counters.json(),
            serde_json::json!({"requests": 2, "connections_refused": 1, "requests_refused": 0,
                               "logins_refused": 1})
        );
    }
}
