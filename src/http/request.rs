//! HTTP/1.1 requests, read with hard bounds: the request line and headers together at most
//! [`MAX_HEAD_BYTES`], a body only with a `Content-Length` of at most [`MAX_BODY_BYTES`] (no chunked
//! bodies), and the whole request within [`READ_TIMEOUT`] of its first byte being awaited, so a slow or
//! silent client holds its connection slot for a bounded time (a connection that sent nothing by then,
//! an idle keep-alive one, is closed without an answer; one stuck inside a request gets 408). The target is split into a path and a
//! query; the path is only ever matched against fixed routes (nothing here touches the file system).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Request line plus headers, bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// A request body (admin POSTs only), bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time a client has to send a whole request, from the moment the server waits for it.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers kept per request.
const MAX_HEADERS: usize = 64;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names in lower case, values trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the client asked to close the connection after this request.
    pub close: bool,
}

impl Request {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the client takes a gzip-compressed body (`Accept-Encoding` names `gzip` or `*`, without
    /// `q=0`).
    pub fn accepts_gzip(&self) -> bool {
        self.header("accept-encoding").is_some_and(|codings| {
            codings.split(',').any(|coding| {
                let mut parts = coding.split(';').map(str::trim);
                let name = parts.next().unwrap_or_default();
                let refused = parts.any(|p| p.strip_prefix("q=").is_some_and(is_zero_qvalue));
                (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
            })
        })
    }

    /// The value of query parameter `name` (no percent-decoding: the API's parameters are plain words).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }
}

/// Whether a weight (RFC 9110 `qvalue`: `0`, `0.`, `0.0` to `0.000`, or up to `1.000`) is zero, read
/// as text: a float parser would add its tables to the binary for this one comparison.
fn is_zero_qvalue(q: &str) -> bool {
    q.strip_prefix('0').is_some_and(|rest| {
        rest.is_empty()
            || rest
                .strip_prefix('.')
                .is_some_and(|zeros| zeros.bytes().all(|b| b == b'0'))
    })
}

/// Why no request could be read; each maps to one status (or to closing silently).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The connection closed before a request started (a normal end of keep-alive).
    #[error("connection closed")]
    Closed,
    /// No byte of a next request within the timeout: an idle keep-alive connection, closed quietly.
    #[error("idle")]
    Idle,
    #[error("request head over {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("body over {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("request not complete within {READ_TIMEOUT:?}")]
    Timeout,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

impl RequestError {
    /// The status to answer with, or `None` to close without answering.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestError::Closed | RequestError::Idle => None,
            RequestError::HeadTooLarge => Some(431),
            RequestError::BodyTooLarge => Some(413),
            RequestError::Timeout => Some(408),
            RequestError::Malformed(_) => Some(400),
        }
    }
}

/// Reads one request from `stream`; `buffer` carries bytes read past the previous request.
pub async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> Result<Request, RequestError> {
    match tokio::time::timeout(READ_TIMEOUT, read_request_untimed(stream, buffer)).await {
        Ok(result) => result,
        Err(_) if buffer.is_empty() => Err(RequestError::Idle),
        Err(_) => Err(RequestError::Timeout),
    }
}

async fn read_request_untimed<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> Result<Request, RequestError> {
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(end) = find_head_end(buffer) {
            break end;
        }
        if buffer.len() >= MAX_HEAD_BYTES {
            return Err(RequestError::HeadTooLarge);
        }
        let room = (MAX_HEAD_BYTES + 4 - buffer.len()).min(chunk.len());
        let read = stream
            .read(&mut chunk[..room])
            .await
            .map_err(|_| RequestError::Closed)?;
        if read == 0 {
            return Err(if buffer.is_empty() {
                RequestError::Closed
            } else {
                RequestError::Malformed("connection closed inside the request head")
            });
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    if head_end > MAX_HEAD_BYTES {
        return Err(RequestError::HeadTooLarge);
    }
    let mut request = parse_head(&buffer[..head_end])?;
    buffer.drain(..head_end);
    let length = match request.header("content-length") {
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| RequestError::Malformed("Content-Length is not a number"))?,
        None => 0,
    };
    if request.header("transfer-encoding").is_some() {
        return Err(RequestError::Malformed("chunked bodies are not accepted"));
    }
    if length > MAX_BODY_BYTES {
        return Err(RequestError::BodyTooLarge);
    }
    while buffer.len() < length {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|_| RequestError::Closed)?;
        if read == 0 {
            return Err(RequestError::Malformed("connection closed inside the body"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    request.body = buffer.drain(..length).collect();
    Ok(request)
}

/// The length of the head including its blank line, once the buffer holds it.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Parses a request line and headers (the bytes up to and including the blank line).
pub fn parse_head(head: &[u8]) -> Result<Request, RequestError> {
    let text = std::str::from_utf8(head).map_err(|_| RequestError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed("request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(RequestError::Malformed("HTTP version"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestError::Malformed("method"));
    }
    if !target.starts_with('/') {
        return Err(RequestError::Malformed("target"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(RequestError::Malformed("header line"));
        };
        if headers.len() == MAX_HEADERS {
            return Err(RequestError::HeadTooLarge);
        }
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
        close: version == "HTTP/1.0",
    };
    if let Some(connection) = request.header("connection") {
        request.close = connection.eq_ignore_ascii_case("close");
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_taken_when_named_or_starred_and_not_refused() {
        let with = |codings: &str| {
            parse_head(format!("GET / HTTP/1.1\r\nAccept-Encoding: {codings}\r\n\r\n").as_bytes())
                .unwrap()
                .accepts_gzip()
        };
        assert!(with("gzip, deflate, br, zstd"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("gzip; q=0.000, br"));
        assert!(with("gzip;q=0.001"));
        assert!(with("gzip;q=1"));
        assert!(!with("deflate, br"));
        assert!(!with("identity"));
        assert!(!parse_head(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap()
            .accepts_gzip());
    }

    #[test]
    fn parses_a_request_head() {
        let request = parse_head(
            b"GET /api/frames?after=3&source=sim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/api/frames");
        assert_eq!(request.query_param("after"), Some("3"));
        assert_eq!(request.query_param("source"), Some("sim"));
        assert_eq!(request.query_param("device"), None);
        assert_eq!(request.header("host"), Some("x"));
        assert!(request.close);
        for bad in [
            &b"GET / HTTP/2\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(matches!(parse_head(bad), Err(RequestError::Malformed(_))));
        }
    }

    #[tokio::test]
    async fn heads_and_bodies_are_bounded() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 100, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        let mut buffer = Vec::new();
        let error = read_request(&mut &big[..], &mut buffer).await.unwrap_err();
        assert_eq!(error, RequestError::HeadTooLarge);
        assert!(buffer.len() <= MAX_HEAD_BYTES + 4);

        let post = format!(
            "POST /api/x HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY_BYTES + 1
        );
        let error = read_request(&mut post.as_bytes(), &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(error, RequestError::BodyTooLarge);

        let two = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /b HTTP/1.1\r\n\r\n";
        let mut stream = &two[..];
        let mut buffer = Vec::new();
        let first = read_request(&mut stream, &mut buffer).await.unwrap();
        assert_eq!(first.body, b"ok");
        let second = read_request(&mut stream, &mut buffer).await.unwrap();
        assert_eq!(second.path, "/b");
        assert_eq!(
            read_request(&mut stream, &mut buffer).await,
            Err(RequestError::Closed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let reading = tokio::spawn(async move { read_request(&mut server, &mut Vec::new()).await });
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        assert_eq!(reading.await.unwrap(), Err(RequestError::Timeout));
        drop(client);
        let (_client, mut server) = tokio::io::duplex(64);
        let idle = read_request(&mut server, &mut Vec::new()).await;
        assert_eq!(
            idle,
            Err(RequestError::Idle),
            "no byte at all: closed without an answer"
        );
    }
}
