//! Test helpers: the one subscriber of the tests, a real MQTT client (rumqttc) on 127.0.0.1 that collects
//! what it receives, with bounded waits; for the embedded broker and for Debian's mosquitto alike.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// One received publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub qos: u8,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A subscribed client whose event loop runs on a task, forwarding publishes to a channel.
pub struct Subscriber {
    pub client: AsyncClient,
    pub rx: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Connects with `client_id`, subscribes to `filter` at `level`, and waits (bounded) for the SUBACK.
pub async fn subscribe(addr: SocketAddr, client_id: &str, filter: &str, level: u8) -> Subscriber {
    Subscriber::connect(addr, client_id, filter, level, false).await
}

async fn pump(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Received>,
    subacked: mpsc::UnboundedSender<()>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(Received {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                    qos: p.qos as u8,
                });
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subacked.send(());
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

impl Subscriber {
    /// Connects to the broker at `addr` as `client_id` (with `persistent`, clean session off, so the
    /// session and its subscription survive a broker restart; the client reconnects every 100 ms while the
    /// broker is down), subscribes to `filter` at `level` and waits (bounded) for the SUBACK.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        filter: &str,
        level: u8,
        persistent: bool,
    ) -> Subscriber {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options
            .set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, eventloop) = AsyncClient::new(options, 10_000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subacked_tx, mut subacked_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(pump(eventloop, tx, subacked_tx));
        client
            .subscribe(filter, qos(level))
            .await
            .expect("subscribe request queued");
        tokio::time::timeout(Duration::from_secs(10), subacked_rx.recv())
            .await
            .expect("SUBACK within 10 s")
            .expect("event loop alive");
        Subscriber { client, rx, task }
    }

    /// The next message, or `None` if none arrives within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Received> {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits (bounded) for a message on `topic` with `payload`, skipping others; panics otherwise.
    pub async fn expect(&mut self, topic: &str, payload: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(p) if p.topic == topic && p.payload == payload.as_bytes() => return,
                Some(_) => continue,
                None => panic!("no {payload:?} on {topic} within {within:?}"),
            }
        }
    }

    /// Waits (bounded) for a `sensorgate/gateway/stats` message whose counters at `pointer` (a JSON
    /// pointer: `/sources/rf`, `/lorawan/lns`) satisfy `done`, and returns them; panics with the last
    /// ones seen (and `what` the test waited for) when none does within `within`.
    pub async fn stats_until(
        &mut self,
        what: &str,
        pointer: &str,
        within: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut seen = Vec::new();
        let mut last = serde_json::Value::Null;
        let found = self
            .wait_for(within, &mut seen, |m| {
                if m.topic != "sensorgate/gateway/stats" {
                    return false;
                }
                let Ok(stats) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
                    return false;
                };
                last = stats.pointer(pointer).cloned().unwrap_or_default();
                done(&last)
            })
            .await;
        assert!(
            found.is_some(),
            "{what}: stats at {pointer} never matched within {within:?}; last: {last}"
        );
        last
    }

    /// Waits (bounded) for the next publish matching `predicate`; other publishes are kept in `seen`.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        seen: &mut Vec<Received>,
        mut predicate: impl FnMut(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) => {
                    if predicate(&message) {
                        return Some(message);
                    }
                    seen.push(message);
                }
                _ => return None,
            }
        }
    }

    /// Collects publishes until `done` says the collection is complete or `within` runs out; returns the
    /// last payload per topic.
    pub async fn collect_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&BTreeMap<String, Received>) -> bool,
    ) -> BTreeMap<String, Received> {
        let deadline = tokio::time::Instant::now() + within;
        let mut latest = BTreeMap::new();
        while !done(&latest) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(message)) => {
                    latest.insert(message.topic.clone(), message);
                }
                _ => break,
            }
        }
        latest
    }
}
