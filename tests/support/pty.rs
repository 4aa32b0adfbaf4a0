//! Test harness: a pseudo-terminal standing in for a USB serial dongle. The daemon opens a stable path (a
//! symlink, like `/dev/serial/by-id/...`); the test writes frames into the master side. "Unplugging" closes
//! the master (the daemon's reads fail); "plugging in" makes a new pty and points the link at it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio_serial::{SerialPort, SerialStream};

pub struct FakeDongle {
    pub link: PathBuf,
    master: Option<SerialStream>,
}

impl FakeDongle {
    /// A new pty reachable at `link`.
    pub fn plug(link: &Path) -> FakeDongle {
        let mut dongle = FakeDongle {
            link: link.to_path_buf(),
            master: None,
        };
        dongle.replug();
        dongle
    }

    /// Closes the master side: the daemon sees the device vanish.
    pub fn unplug(&mut self) {
        self.master = None;
        let _ = std::fs::remove_file(&self.link);
    }

    /// A fresh pty behind the same link.
    pub fn replug(&mut self) {
        let guard = super::daemon::SPAWN_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (master, slave) = SerialStream::pair().expect("pty pair");
        // serialport opens the master without O_CLOEXEC: a daemon spawned later would inherit it and keep
        // the "dongle" plugged in after the test closes its side.
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this struct owns; F_SETFD only changes its close-on-exec flag.
        let flagged = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(flagged, 0, "FD_CLOEXEC on the pty master");
        drop(guard);
        let slave_path = slave.name().expect("pty slave has a path");
        drop(slave); // the daemon opens it exclusively
        let _ = std::fs::remove_file(&self.link);
        std::os::unix::fs::symlink(&slave_path, &self.link).expect("symlink to pty");
        self.master = Some(master);
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        let master = self.master.as_mut().expect("dongle plugged in");
        master.write_all(bytes).await.expect("write to pty");
        master.flush().await.expect("flush pty");
    }

    /// Reads what the daemon wrote to the port until `done` says the bytes so far are enough, or
    /// `within` has passed; returns the bytes read.
    pub async fn read_until(
        &mut self,
        within: std::time::Duration,
        done: impl Fn(&[u8]) -> bool,
    ) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let master = self.master.as_mut().expect("dongle plugged in");
        let deadline = tokio::time::Instant::now() + within;
        let mut got = Vec::new();
        let mut buffer = [0u8; 1024];
        while !done(&got) {
            match tokio::time::timeout_at(deadline, master.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
            }
        }
        got
    }
}
