//! Where the cloud broker is: `upstream.url`, parsed once, when the configuration is read (the uplink
//! and the configuration's checks take the parsed [`Endpoint`]).

use std::fmt;

use serde::Deserialize;

/// The upstream broker's address: `mqtts://host:port` (port default 8883) or, when allowed,
/// `mqtt://host:port` (default 1883). IPv6 hosts are written in brackets: `mqtts://[::1]:8883`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `true` for `mqtts://`.
    pub tls: bool,
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let example = "write e.g. \"mqtts://mqtt.example.com:8883\"";
        let (tls, rest) = if let Some(rest) = text.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(format!("\"{text}\" is not an MQTT URL; {example}"));
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("\"{text}\": unclosed '[' around the IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!(
                "\"{text}\": no usable host (only scheme://host:port, without path or user); {example}"
            ));
        }
        let port = match port {
            None => default_port,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("\"{text}\": \"{port}\" is not a port (1-65535)")),
            },
        };
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Endpoint {
    /// `host:port`, as errors name the peer.
    pub fn peer(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_parse_with_default_ports() {
        let url: Endpoint = "mqtts://mqtt.example.com".parse().unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port),
            (true, "mqtt.example.com", 8883)
        );
        let url: Endpoint = "mqtt://10.0.0.1:1884".parse().unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port),
            (false, "10.0.0.1", 1884)
        );
        let url: Endpoint = "mqtts://[::1]:9000".parse().unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9000));
        assert_eq!(url.to_string(), "mqtts://[::1]:9000");
    }

    #[test]
    fn bad_upstream_urls_say_what_to_write() {
        for bad in [
            "https://x",
            "mqtts://",
            "mqtts://host:0",
            "mqtts://host:99999",
            "mqtts://host/path",
            "mqtts://[::1",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        let message = "tcp://x:1".parse::<Endpoint>().unwrap_err();
        assert!(
            message.contains("mqtts://mqtt.example.com:8883"),
            "{message}"
        );
    }

    #[test]
    fn the_peer_brackets_ipv6_hosts() {
        let url: Endpoint = "mqtt://[::1]:1884".parse().unwrap();
        assert_eq!((url.tls, url.peer()), (false, "[::1]:1884".to_string()));
        let url: Endpoint = "mqtts://broker".parse().unwrap();
        assert_eq!(url.peer(), "broker:8883");
        assert!("mqtts://user@broker".parse::<Endpoint>().is_err());
    }
}
