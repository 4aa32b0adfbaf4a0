//! HTTP/1.1 responses: a status, a content type, a body and the few headers every answer carries
//! (`Content-Length`, `Cache-Control: no-store`, `X-Content-Type-Options: nosniff`, and a
//! `Content-Security-Policy` that lets the page load nothing from elsewhere).

use tokio::io::{AsyncWrite, AsyncWriteExt};

pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";
pub const HTML: &str = "text/html; charset=utf-8";
/// Prometheus text exposition format 0.0.4.
pub const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers, e.g. `WWW-Authenticate`.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, JSON, value.to_string())
    }

    /// A plain-text body ending in a newline.
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, TEXT, format!("{text}\n"))
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// The response's bytes; `close` adds `Connection: close`.
    pub fn to_bytes(&self, close: bool, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
             X-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'; \
             style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; img-src 'self' data:\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }

    /// Writes the response.
    pub async fn write<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        close: bool,
        head_only: bool,
    ) -> std::io::Result<()> {
        stream.write_all(&self.to_bytes(close, head_only)).await?;
        stream.flush().await
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_carry_length_headers_and_body() {
        let response = Response::text(401, "login required")
            .with_header("WWW-Authenticate", "Basic realm=\"sensorgate\"".into());
        let text = String::from_utf8(response.to_bytes(true, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{text}");
        assert!(text.contains("Content-Length: 15\r\n"), "{text}");
        assert!(text.contains("WWW-Authenticate: Basic realm=\"sensorgate\"\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\nlogin required\n"));
        let head = String::from_utf8(response.to_bytes(false, true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && !head.contains("Connection"));
    }
}
