//! A fresh ext4 file system for the benchmarks that count what reaches the disk: an image file on a loop
//! device, made with 4 KiB blocks and no background initialisation, mounted on a temporary directory,
//! with the file system's own count of what it wrote (`lifetime_write_kbytes`: data, metadata and
//! journal). Needs root (losetup, mount); unmounted and detached when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A fresh ext4 file system on a loop device, mounted on a temporary directory; unmounted and detached
/// when dropped.
pub struct Ext4 {
    _image_dir: tempfile::TempDir,
    mount: tempfile::TempDir,
    device: String,
    counter: PathBuf,
}

fn command(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

impl Ext4 {
    /// 256 MiB with 4 KiB blocks (mkfs would pick 1 KiB for so small a file system, which costs a
    /// quarter per journalled block of what an SD card's file system does), inode tables and journal
    /// initialised at mkfs time (no background lazy init that would be counted as the daemon's writes).
    pub fn make() -> Result<Ext4, String> {
        if rustix::process::geteuid().as_raw() != 0 {
            return Err("not root".into());
        }
        let image_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let image = image_dir.path().join("flash.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(256 << 20))
            .map_err(|e| format!("image: {e}"))?;
        let image_text = image.display().to_string();
        let device = command("losetup", &["--find", "--show", &image_text])?;
        let made = command(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-b",
                "4096",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                &device,
            ],
        );
        let mount = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_text = mount.path().display().to_string();
        let mounted = made.and_then(|_| command("mount", &[&device, &mount_text]));
        if let Err(e) = mounted {
            let _ = command("losetup", &["-d", &device]);
            return Err(e);
        }
        let name = device.trim_start_matches("/dev/").to_string();
        Ok(Ext4 {
            _image_dir: image_dir,
            mount,
            counter: PathBuf::from(format!("/sys/fs/ext4/{name}/lifetime_write_kbytes")),
            device,
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Bytes the file system wrote since it was made, after writing back everything dirty on it.
    pub fn written(&self) -> Option<u64> {
        syncfs(self.mount.path());
        let text = std::fs::read_to_string(&self.counter).ok()?;
        Some(text.trim().parse::<u64>().ok()? * 1024)
    }

    /// Bytes the file system writes per commit: `commit(n)` for n = 1 to `commits`, started `interval`
    /// apart (a file system writes its metadata back on timers, so the rate matters), counted from
    /// before the first to after the last.
    pub fn bytes_per_commit(
        &self,
        commits: u64,
        interval: Duration,
        mut commit: impl FnMut(u64) -> Result<(), String>,
    ) -> Result<f64, String> {
        let before = self.written().ok_or("no lifetime_write_kbytes")?;
        let started = Instant::now();
        for n in 1..=commits {
            commit(n)?;
            if let Some(wait) = (interval * n as u32).checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let after = self.written().ok_or("no lifetime_write_kbytes")?;
        Ok(after.saturating_sub(before) as f64 / commits.max(1) as f64)
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let mount = self.mount.path().display().to_string();
        let _ = command("umount", &[&mount]);
        let _ = command("losetup", &["-d", &self.device]);
    }
}

fn syncfs(dir: &Path) {
    let _ = command("sync", &["-f", &dir.display().to_string()]);
}
