//! Reserving a file's disk blocks ahead of the appends that will fill it, without changing its length
//! (`fallocate` with `FALLOC_FL_KEEP_SIZE`). An append-only file that grows as it is written makes every
//! fsync'ed append that enters a new block journal the file system's block bitmap and group descriptor
//! too, and write them back later; on a 4 KiB-block ext4 that is about two bytes per byte appended beside
//! the data (the bench's "spool group commits by size"). With the blocks reserved, an fsync'ed append
//! writes its data and one inode update. The file's length stays where its records end, so readers and
//! torn-tail repair see only what was written. Used by the uplink's spool and the retained log.

use std::fs::File;
use std::path::Path;

/// What a reservation came to. Appends work without one, so no outcome is an error to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Reserved,
    /// The file system cannot (tmpfs on old kernels, vfat, some network file systems): do not ask again.
    Unsupported,
    /// It could this time but did not (a full disk): the appends will tell.
    Failed(rustix::io::Errno),
}

/// Allocates the blocks of `file` from byte `from` to byte `to` (nothing when `to <= from`).
pub fn reserve(file: &File, from: u64, to: u64) -> Reservation {
    if to <= from {
        return Reservation::Reserved;
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, from, to - from) {
        Ok(()) => Reservation::Reserved,
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            Reservation::Unsupported
        }
        Err(e) => Reservation::Failed(e),
    }
}

/// Reserves for one owner of append-only files (the spool, the retained log): asks the file system,
/// logs what did not work under the owner's name, and stops asking once the file system said it cannot.
#[derive(Debug, Clone)]
pub struct Reserver {
    owner: &'static str,
    supported: bool,
}

impl Reserver {
    /// `owner` starts its log lines ("uplink", "retained log").
    pub fn new(owner: &'static str) -> Reserver {
        Reserver {
            owner,
            supported: true,
        }
    }

    /// [`reserve`] of `file` (at `path`, for the log) from `from` to `to`; nothing once unsupported.
    /// Best effort: the appends that follow work without it.
    pub fn ahead(&mut self, file: &File, path: &Path, from: u64, to: u64) {
        if !self.supported {
            return;
        }
        match reserve(file, from, to) {
            Reservation::Reserved => {}
            Reservation::Unsupported => {
                log::debug!(
                    "{}: the file system cannot reserve blocks; files grow as written",
                    self.owner
                );
                self.supported = false;
            }
            Reservation::Failed(e) => log::debug!(
                "{}: reserving {} up to {to} bytes: {e}",
                self.owner,
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn blocks_are_allocated_and_the_length_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let file = File::create(&path).unwrap();
        assert_eq!(reserve(&file, 0, 256 * 1024), Reservation::Reserved);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 0);
        assert!(
            meta.blocks() * 512 >= 256 * 1024,
            "{} bytes",
            meta.blocks() * 512
        );
        assert_eq!(reserve(&file, 10, 10), Reservation::Reserved);
    }
}
