//! Test harness: a real Debian `mosquitto` as the cloud broker, on free 127.0.0.1 ports, with a
//! generated configuration and TLS certificates made with rcgen. It waits until the broker accepts
//! connections, and kills it by PID when dropped. Reuse it with
//! `#[path = "support/mosquitto.rs"] mod mosquitto;`.
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub use crate::certs::Certs;
pub use crate::daemon::free_port;

/// A TLS listener's files.
#[derive(Debug, Clone)]
pub struct TlsListener {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub require_client_ca: Option<PathBuf>,
}

/// What the broker is started with. A plain listener is always there (for the test's own clients);
/// `tls` adds a second one.
#[derive(Debug, Clone, Default)]
pub struct BrokerConfig {
    pub tls: Option<TlsListener>,
    /// `(user, password)` pairs; anonymous logins are then refused on the TLS listener.
    pub users: Vec<(String, String)>,
    /// Keep sessions and queued messages across a stop/start (written on SIGTERM).
    pub persistence: bool,
}

/// A running (or stopped) mosquitto. Killed by PID on drop.
pub struct Mosquitto {
    /// Plain MQTT port.
    pub port: u16,
    /// TLS port, when configured.
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Starts a broker on fresh ports and waits until it accepts connections.
    pub fn start(config: BrokerConfig) -> Mosquitto {
        let port = free_port();
        let tls_port = config.tls.as_ref().map(|_| free_port());
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = String::new();
        text.push_str("per_listener_settings true\n");
        text.push_str(&format!(
            "user root\nlog_dest file {}\n",
            dir.path().join("log").display()
        ));
        text.push_str("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
        text.push_str("max_queued_messages 0\nmax_inflight_messages 100\n");
        if config.persistence {
            text.push_str(&format!(
                "persistence true\npersistence_location {}/\nautosave_interval 0\n",
                dir.path().display()
            ));
        }
        text.push_str(&format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\n"
        ));
        if let (Some(tls), Some(tls_port)) = (&config.tls, tls_port) {
            text.push_str(&format!(
                "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                tls.cert.display(),
                tls.key.display()
            ));
            if let Some(ca) = &tls.require_client_ca {
                text.push_str(&format!(
                    "cafile {}\nrequire_certificate true\n",
                    ca.display()
                ));
            }
            if config.users.is_empty() {
                text.push_str("allow_anonymous true\n");
            } else {
                let passwd = dir.path().join("passwd");
                for (i, (user, password)) in config.users.iter().enumerate() {
                    let mut command = Command::new("mosquitto_passwd");
                    command.arg("-b");
                    if i == 0 {
                        command.arg("-c");
                    }
                    let status = command
                        .arg(&passwd)
                        .arg(user)
                        .arg(password)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("run mosquitto_passwd");
                    assert!(status.success(), "mosquitto_passwd failed");
                }
                text.push_str(&format!(
                    "allow_anonymous false\npassword_file {}\n",
                    passwd.display()
                ));
            }
        }
        let config_path = dir.path().join("mosquitto.conf");
        fs::write(&config_path, text).expect("write mosquitto.conf");
        let mut broker = Mosquitto {
            port,
            tls_port,
            dir,
            config_path,
            child: None,
        };
        broker.resume();
        broker
    }

    /// `mqtt://127.0.0.1:port` of the plain listener.
    pub fn plain_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:port` of the TLS listener.
    pub fn tls_url(&self) -> String {
        format!(
            "mqtts://127.0.0.1:{}",
            self.tls_port.expect("no TLS listener")
        )
    }

    /// Process id of the running broker (for CPU and memory figures).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Starts the broker again on the same ports with the same configuration (and, with persistence,
    /// the same sessions), waiting until it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/mosquitto (Debian package mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.tls_port).collect();
        for port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                    panic!("mosquitto exited ({status}):\n{}", self.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "mosquitto not listening:\n{}",
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stops the broker with SIGTERM (it saves its persistence file), SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test client subscribed on the plain listener, collecting what it receives. It reconnects on its
/// own (every 100 ms) while the broker is down; with `persistent` its session (and subscription)
/// survives that.
pub struct Subscriber {
    pub client: rumqttc::AsyncClient,
    received: tokio::sync::mpsc::UnboundedReceiver<rumqttc::Publish>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Connects as `client_id`, subscribes to `filter` at QoS 1 and waits for the SUBACK (10 s bound).
    pub async fn connect(port: u16, client_id: &str, filter: &str, persistent: bool) -> Subscriber {
        let mut options = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
        options
            .set_clean_session(!persistent)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
        let (tx, received) = tokio::sync::mpsc::unbounded_channel();
        let (subacked_tx, subacked) = tokio::sync::oneshot::channel();
        let mut subacked_tx = Some(subacked_tx);
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                        if tx.send(publish).is_err() {
                            return;
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                        if let Some(done) = subacked_tx.take() {
                            let _ = done.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        tokio::time::timeout(Duration::from_secs(10), subacked)
            .await
            .expect("SUBACK within 10 s")
            .expect("subscriber task alive");
        Subscriber {
            client,
            received,
            task,
        }
    }

    /// The next message, or `None` if none arrives within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<rumqttc::Publish> {
        tokio::time::timeout(within, self.received.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits (bounded) for a message on `topic` with `payload`, skipping others.
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
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
