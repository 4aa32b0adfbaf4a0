//! A byte-level WebSocket client for the broker's WebSocket listeners: the HTTP upgrade written by hand
//! and frames built one by one (masked, as a client's must be), so that a test can send what a
//! well-behaved library never would: unfinished fragmented messages, oversized frame headers, text
//! messages. Every read is bounded in time.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// WebSocket opcodes (RFC 6455, 5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const PING: u8 = 0x9;

/// The mask every frame of this client uses (any key will do; a server must unmask).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// An upgraded connection.
pub struct RawWebSocket {
    pub stream: TcpStream,
}

/// The upgrade request for `path`, asking for the `mqtt` subprotocol.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
}

/// One masked frame: FIN bit, opcode, the length in the shortest form, the mask, the masked payload.
pub fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    frame_header_length(&mut out, payload.len() as u64);
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// The header of a masked frame announcing `len` payload bytes (the payload itself not included).
pub fn frame_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut out = vec![u8::from(fin) << 7 | opcode];
    frame_header_length(&mut out, len);
    out.extend_from_slice(&MASK);
    out
}

fn frame_header_length(out: &mut Vec<u8>, len: u64) {
    const MASKED: u8 = 0x80;
    if len < 126 {
        out.push(MASKED | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(MASKED | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(MASKED | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
}

impl RawWebSocket {
    /// Connects to 127.0.0.1:`port` and asks for an upgrade on `path`; `Err` carries the status line of
    /// a refusal.
    pub async fn upgrade(port: u16, path: &str) -> Result<RawWebSocket, String> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("TCP connect to the WebSocket listener");
        stream
            .write_all(upgrade_request(path).as_bytes())
            .await
            .expect("write the upgrade request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), async {
            while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
                match stream.read(&mut byte).await {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
        })
        .await
        .expect("the upgrade is answered within 5 s");
        let head = String::from_utf8_lossy(&head).into_owned();
        let status = head.lines().next().unwrap_or_default().to_string();
        if status.starts_with("HTTP/1.1 101") {
            Ok(RawWebSocket { stream })
        } else {
            Err(status)
        }
    }

    /// Writes bytes; `false` once the server has closed the connection (the write fails).
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads what the server sends within `within`: the bytes, and whether the server closed the
    /// connection (end of stream or reset) in that time.
    pub async fn read_within(&mut self, within: Duration) -> (Vec<u8>, bool) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(within, async {
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await
        .is_ok();
        (got, closed)
    }

    /// Reads exactly `n` bytes within `within`; `None` if the server closed first or time ran out.
    pub async fn read_exact_within(&mut self, n: usize, within: Duration) -> Option<Vec<u8>> {
        let mut got = vec![0u8; n];
        match tokio::time::timeout(within, self.stream.read_exact(&mut got)).await {
            Ok(Ok(_)) => Some(got),
            _ => None,
        }
    }
}
