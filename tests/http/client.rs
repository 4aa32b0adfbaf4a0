//! A minimal HTTP/1.1 client over a TCP socket, so that the tests see exactly the bytes the daemon sends
//! (and can send what no polite client would).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine;

/// One answer: status, headers (names in lower case) and body (as text, and as the bytes sent).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub raw_body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `request` bytes as they are and reads the answer until the server closes (within 20 s).
pub fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(request).expect("send the request");
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse(&bytes)
}

/// Parses one answer's bytes.
pub fn parse(bytes: &[u8]) -> Answer {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    let raw_body = bytes[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&raw_body).to_string(),
        raw_body,
    }
}

/// `GET path`, with HTTP Basic credentials when given.
pub fn get(addr: SocketAddr, path: &str, login: Option<(&str, &str)>) -> Answer {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some((user, password)) = login {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    exchange(addr, request.as_bytes())
}

/// `GET /` as a browser asks for it (gzip accepted): the answer, with the page's text unzipped (by
/// Debian's gzip) into `body`.
pub fn get_page(addr: SocketAddr, login: Option<(&str, &str)>) -> Answer {
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: gzip, deflate\r\nConnection: close\r\n"
    );
    if let Some((user, password)) = login {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    let mut answer = exchange(addr, request.as_bytes());
    if answer.header("content-encoding") == Some("gzip") {
        let mut gunzip = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        gunzip
            .stdin
            .take()
            .unwrap()
            .write_all(&answer.raw_body)
            .unwrap();
        let output = gunzip.wait_with_output().unwrap();
        assert!(output.status.success(), "the page is not gzip");
        answer.body = String::from_utf8(output.stdout).expect("the page is UTF-8");
    }
    answer
}
