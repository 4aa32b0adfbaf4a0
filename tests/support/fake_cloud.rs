//! Test harness: a small MQTT 3.1.1 server on 127.0.0.1 playing a cloud broker that closes the
//! connection on a publish it refuses, as AWS IoT Core and Azure IoT Hub do for a topic outside the
//! device's policy and EMQX with `acl_deny_action = disconnect`. It answers CONNECT with CONNACK (or,
//! while told to, closes before it: an outage), acknowledges every publish (PUBACK; PUBREC and PUBCOMP
//! at QoS 2) and PINGREQ, except a publish on the refused topic, on which it resets the connection at
//! once. It records what it accepted and counts what it refused. Its tasks end when it is dropped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::raw::{frame, read_packet, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL};

const CONNECT: u8 = 1;
const PINGREQ: u8 = 12;
const DISCONNECT: u8 = 14;

/// What the fake cloud saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Publishes acknowledged, `(topic, payload)`, in arrival order (re-sends included).
    pub accepted: Vec<(String, Vec<u8>)>,
    /// Publishes on the refused topic (each one closed its connection).
    pub refused: u64,
    /// CONNACKs sent.
    pub connacks: u64,
    /// Connections still to close before their CONNACK.
    pub outage_left: u64,
}

/// The running fake cloud; its tasks are aborted on drop.
pub struct FakeCloud {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl FakeCloud {
    /// Listens on a free 127.0.0.1 port, refusing publishes on `refused_topic`.
    pub async fn start(refused_topic: &str) -> FakeCloud {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let refused_topic = refused_topic.to_string();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    connections.spawn(serve(stream, refused_topic.clone(), seen.clone()));
                }
            }
        });
        FakeCloud { addr, seen, task }
    }

    /// `mqtt://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// What it saw so far.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the next `connections` before their CONNACK (a cloud that is down).
    pub fn outage(&self, connections: u64) {
        self.seen().outage_left = connections;
    }

    /// Waits (up to `within`) until `ok` holds for what it saw; panics with `what` otherwise.
    pub async fn wait(&self, within: Duration, what: &str, ok: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if ok(&self.seen()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the fake cloud never saw {what} within {within:?}: {:?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FakeCloud {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: CONNACK, then acknowledge or refuse each publish.
async fn serve(mut stream: TcpStream, refused_topic: String, seen: Arc<Mutex<Seen>>) {
    while let Some(packet) = read_packet(&mut stream).await {
        let reply = match packet.kind {
            CONNECT => {
                let mut state = seen.lock().unwrap_or_else(|e| e.into_inner());
                if state.outage_left > 0 {
                    state.outage_left -= 1;
                    return;
                }
                state.connacks += 1;
                frame(0x20, &[0, 0])
            }
            PUBLISH => {
                let qos = (packet.flags >> 1) & 3;
                let body = &packet.body;
                let topic_len = u16::from_be_bytes([body[0], body[1]]) as usize;
                let topic = String::from_utf8_lossy(&body[2..2 + topic_len]).into_owned();
                let mut at = 2 + topic_len;
                let pkid = if qos > 0 {
                    at += 2;
                    [body[at - 2], body[at - 1]]
                } else {
                    [0, 0]
                };
                let mut state = seen.lock().unwrap_or_else(|e| e.into_inner());
                if topic == refused_topic {
                    state.refused += 1;
                    // What the clouds do: the connection is reset, nothing else is said.
                    let _ = stream.set_zero_linger();
                    return;
                }
                state.accepted.push((topic, body[at..].to_vec()));
                match qos {
                    0 => continue,
                    1 => frame(PUBACK << 4, &pkid),
                    _ => frame(PUBREC << 4, &pkid),
                }
            }
            PUBREL => frame(PUBCOMP << 4, &packet.body),
            PINGREQ => frame(PINGRESP << 4, &[]),
            DISCONNECT => return,
            _ => continue,
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}
