//! A small file system for one test: a tmpfs of a given size mounted (as root, as CI runs) on a test's
//! directory, filled to ENOSPC on demand, and unmounted when dropped. For the full-disk cases of the
//! state directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on `at` for one test, unmounted on drop (after the daemon using it, which
/// must be declared after this guard so that it is dropped first).
pub struct SmallFileSystem {
    pub at: PathBuf,
}

impl SmallFileSystem {
    /// `None` (with the reason printed) when this process may not mount: not root.
    pub fn mount(at: &Path, size: &str) -> Option<SmallFileSystem> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a small tmpfs for the full-disk case needs root (CI runs as root)");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs on {}", at.display());
        Some(SmallFileSystem {
            at: at.to_path_buf(),
        })
    }

    /// Fills the file system with `filler` until it is full.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.at.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            if let Err(error) = file.write_all(&block) {
                assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
                break;
            }
        }
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.at).status();
    }
}
