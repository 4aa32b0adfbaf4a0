//! Test harness: a small tmpfs mounted by the test (as root) over a directory, to give the daemon a
//! state file system of a known size that a test can fill to the last byte and free again. Unmounted
//! when dropped. A test that cannot mount (not root, no `mount`) learns why from [`SmallFs::mount`] and
//! says so.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Inodes of the file system (files and directories), so that a test can use them all up too.
const MAX_INODES: u64 = 64;

/// A mounted tmpfs; unmounted on drop.
pub struct SmallFs {
    path: PathBuf,
}

impl SmallFs {
    /// Mounts a tmpfs of `size_kib` KiB on `path` (created if missing), or says why it could not.
    pub fn mount(path: &Path, size_kib: u64) -> Result<SmallFs, String> {
        // SAFETY: geteuid only reads the process's credentials.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root (CI runs the tests as root)".into());
        }
        fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size_kib}k,nr_inodes={MAX_INODES},mode=0755"))
            .arg("tmpfs")
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs on {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallFs {
            path: path.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a filler file until the file system refuses (ENOSPC) and returns its path; removing it
    /// gives the space back. A daemon's ports file of an earlier run goes first: the next start
    /// removes it, and the block it held would make the disk no longer full.
    pub fn fill(&self) -> PathBuf {
        self.forget_ports();
        let path = self.path.join("filler");
        let mut file = File::create(&path).expect("create the filler file");
        let chunk = vec![0xA5u8; 4096];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        // What is left below a page: fill it byte by byte.
        while let Ok(1) = file.write(&chunk[..1]) {}
        path
    }
}

impl SmallFs {
    /// Creates empty files until the file system has no inode left (ENOSPC) and returns them;
    /// removing them gives the inodes back.
    pub fn fill_inodes(&self) -> Vec<PathBuf> {
        self.forget_ports();
        let mut made = Vec::new();
        for i in 0..MAX_INODES {
            let path = self.path.join(format!("inode-{i}"));
            match File::create(&path) {
                Ok(_) => made.push(path),
                Err(e) if e.kind() == ErrorKind::StorageFull => return made,
                Err(e) => panic!("filling the inodes of {}: {e}", self.path.display()),
            }
        }
        panic!("{} inodes did not fill {}", MAX_INODES, self.path.display());
    }
}

impl SmallFs {
    /// Removes the ports file a daemon with its state here wrote (see [`SmallFs::fill`]).
    fn forget_ports(&self) {
        let _ = std::fs::remove_file(self.path.join(sensorgate::app::ports::PORTS_FILE));
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
