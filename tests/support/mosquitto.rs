//! Test harness: a real Debian `mosquitto` as the cloud broker, on free 127.0.0.1 ports, with a
//! generated configuration and TLS certificates made with rcgen. It waits until the broker accepts
//! connections, and kills it by PID when dropped. Tests and the bench use it as
//! `sensorgate_testkit::mosquitto`.
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
use crate::daemon::on_free_ports;

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
    /// Topics no client may publish on (the plain listener's ACL; everything else is allowed): an
    /// MQTT 5 client is told so with PUBACK 0x87, a 3.1.1 client's publish is dropped silently.
    pub denied_topics: Vec<String>,
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
    /// The plain listener's address, for [`Subscriber::connect`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts a broker on fresh ports and waits until it accepts connections. Should another process
    /// take a port between the check and the broker's bind, it starts again on other ports (3 tries).
    pub fn start(config: BrokerConfig) -> Mosquitto {
        on_free_ports("mosquitto", "Address already in use", || {
            let mut broker = Mosquitto::configure(&config);
            broker.try_resume().map(|()| broker)
        })
    }

    /// Writes the configuration for `config` on fresh ports, without starting the broker.
    fn configure(config: &BrokerConfig) -> Mosquitto {
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
        if !config.denied_topics.is_empty() {
            let acl = dir.path().join("acl");
            let mut rules = String::from("topic readwrite #\n");
            for topic in &config.denied_topics {
                rules.push_str(&format!("topic deny {topic}\n"));
            }
            fs::write(&acl, rules).expect("write the ACL file");
            text.push_str(&format!("acl_file {}\n", acl.display()));
        }
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
        Mosquitto {
            port,
            tls_port,
            dir,
            config_path,
            child: None,
        }
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
        if let Err(why) = self.try_resume() {
            panic!("{why}");
        }
    }

    /// [`Mosquitto::resume`], saying why the broker did not come up instead of panicking.
    fn try_resume(&mut self) -> Result<(), String> {
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
                    self.child = None;
                    return Err(format!("mosquitto exited ({status}):\n{}", self.log()));
                }
                if Instant::now() >= deadline {
                    return Err(format!("mosquitto not listening:\n{}", self.log()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
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

/// The tests' one subscriber ([`crate::mqtt::Subscriber`]); connect it with [`Mosquitto::addr`].
pub use crate::mqtt::Subscriber;
