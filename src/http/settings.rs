//! `[http]` as the configuration file writes it, and the web right of a `[[broker.user]]` (`http = "read"
//! | "admin"`). The configuration composes these types and asks [`HttpConfig::check`] for the rules only
//! this feature knows (anonymous reading only on a loopback address), so `check-config` and `run` refuse
//! the same files.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The address the page listens on unless `bind` says otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:8088";

/// `[http]`: the status page, its JSON API, `/metrics` and `/healthz`. Off unless the section exists.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Where to listen; port 0 takes a free port (the daemon logs the address).
    pub bind: SocketAddr,
    /// HTTPS with these PEM files instead of plain HTTP.
    pub tls: Option<HttpTls>,
    /// What a request without credentials may do.
    pub anonymous: Anonymous,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8088)),
            tls: None,
            anonymous: Anonymous::None,
        }
    }
}

/// `[http] tls = { cert_file = "...", key_file = "..." }`: the certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[http] anonymous`: requests without credentials get nothing (`"none"`, the default) or may read
/// (`"read"`: the page, the API's GETs, `/metrics`), which only a loopback `bind` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    #[default]
    None,
    Read,
}

/// `[[broker.user]] http`: what the user may do on the page. A user without it has no web access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpRight {
    /// The page, the API's GETs, `/metrics`.
    Read,
    /// Also the admin actions (commands, reload, forget a device).
    Admin,
}

/// A rule of `[http]` broken: the key at fault and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfigProblem {
    pub key: &'static str,
    pub message: String,
}

impl HttpConfig {
    /// The rules only this feature knows; `users_with_right` is how many `[[broker.user]]` have `http`.
    pub fn check(&self, users_with_right: usize) -> Result<(), HttpConfigProblem> {
        if self.anonymous == Anonymous::Read && !self.bind.ip().is_loopback() {
            return Err(HttpConfigProblem {
                key: "anonymous",
                message: format!(
                    "anonymous = \"read\" is only allowed when bind is a loopback address (bind is {}); \
                     write bind = \"{DEFAULT_BIND}\", or anonymous = \"none\" and give users \
                     http = \"read\" in [[broker.user]]",
                    self.bind
                ),
            });
        }
        if self.anonymous == Anonymous::None && users_with_right == 0 {
            return Err(HttpConfigProblem {
                key: "anonymous",
                message:
                    "nobody could open the page: anonymous = \"none\" and no [[broker.user]] has \
                          http = \"read\" or \"admin\"; add http = \"read\" to a user, or write \
                          anonymous = \"read\" with a loopback bind"
                        .to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_reading_needs_a_loopback_bind_and_someone_must_get_in() {
        let loopback = HttpConfig {
            anonymous: Anonymous::Read,
            ..HttpConfig::default()
        };
        assert_eq!(loopback.check(0), Ok(()));
        let open = HttpConfig {
            bind: "0.0.0.0:8088".parse().unwrap(),
            ..loopback.clone()
        };
        let problem = open.check(3).unwrap_err();
        assert_eq!(problem.key, "anonymous");
        assert!(problem.message.contains("loopback"), "{}", problem.message);
        let v6 = HttpConfig {
            bind: "[::1]:8088".parse().unwrap(),
            ..loopback
        };
        assert_eq!(v6.check(0), Ok(()));
        let closed = HttpConfig::default();
        assert_eq!(closed.check(0).unwrap_err().key, "anonymous");
        assert_eq!(closed.check(1), Ok(()));
        assert!(HttpRight::Admin > HttpRight::Read);
    }
}
