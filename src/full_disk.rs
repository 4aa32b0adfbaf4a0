//! A full file system as the daemon's writers (the uplink's spool, the retained log) meet it: which IO
//! errors mean "no space" (`ENOSPC`, and `EDQUOT` for a quota), which file system that is (its mount
//! point, type and free space, read from `/proc/self/mountinfo` and `statvfs`), and the episode: one
//! WARN naming the file system when a writer first finds it full, one INFO when its writes succeed
//! again, nothing in between, so a disk that stays full for a week costs two log lines per writer. A full
//! disk is never a reason to stop: each writer keeps what it could not write in memory (within its own
//! bound) and retries. [`describe`] reads files: call it from a blocking thread.

use std::io;
use std::path::{Path, PathBuf};

/// Whether `error` means the file system (or the user's quota on it) has no space left.
pub fn is_full(error: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(error),
        Some(rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT)
    )
}

/// The mount a path lives on, as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The device or source (`/dev/mmcblk0p2`, `tmpfs`).
    pub source: String,
}

/// The mount `path` is on, from the text of a `mountinfo` file: the longest mount point that contains
/// it (the last one listed wins among equals, as the kernel stacks mounts). `path` should be absolute
/// and canonical.
pub fn mount_of(path: &Path, mountinfo: &str) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4).map(unescape) else {
            continue;
        };
        let mut right = right.split(' ');
        let (Some(fs_type), Some(source)) = (right.next(), right.next()) else {
            continue;
        };
        let mount_point = PathBuf::from(mount_point);
        let longer = best
            .as_ref()
            .is_none_or(|b| mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if path.starts_with(&mount_point) && longer {
            best = Some(Mount {
                mount_point,
                fs_type: fs_type.to_string(),
                source: unescape(source),
            });
        }
    }
    best
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line naming the file system `path` is on and its space, for the WARN: `"/var/lib/sensorgate
/// (ext4 /dev/mmcblk0p2 mounted on /): 0 of 29.1 GiB free"`. What cannot be read is left out.
pub fn describe(path: &Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mount = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|text| mount_of(&canonical, &text));
    let mut text = path.display().to_string();
    if let Some(mount) = mount {
        text.push_str(&format!(
            " ({} {} mounted on {})",
            mount.fs_type,
            mount.source,
            mount.mount_point.display()
        ));
    }
    if let Ok(vfs) = rustix::fs::statvfs(&canonical) {
        let block = vfs.f_frsize.max(1);
        text.push_str(&format!(
            ": {} of {} free",
            human(vfs.f_bavail.saturating_mul(block)),
            human(vfs.f_blocks.saturating_mul(block))
        ));
    }
    text
}

fn human(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

/// One writer's full-disk episode: a WARN when it starts, an INFO when it ends.
#[derive(Debug, Clone)]
pub struct FullEpisode {
    /// Starts the log lines ("uplink", "retained log").
    owner: &'static str,
    full: bool,
}

impl FullEpisode {
    pub fn new(owner: &'static str) -> FullEpisode {
        FullEpisode { owner, full: false }
    }

    /// Whether the last write found the file system full.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// A write found the file system full. The first time of an episode logs one WARN with `filesystem`
    /// ([`describe`]) and `meanwhile` (what the writer does until there is space) and returns true.
    pub fn hit(&mut self, filesystem: &str, meanwhile: &str) -> bool {
        if self.full {
            return false;
        }
        self.full = true;
        log::warn!(
            "{}: the file system is full: {filesystem}; {meanwhile}",
            self.owner
        );
        true
    }

    /// A write succeeded: ends an episode, if one was on (one INFO).
    pub fn cleared(&mut self) {
        if self.full {
            self.full = false;
            log::info!("{}: there is space again; writes resumed", self.owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
23 22 0:21 / /var/lib/sensor\\040gate rw shared:2 - tmpfs tmpfs rw,size=256k
24 22 0:22 / /var rw shared:3 - ext4 /dev/sda1 rw
";

    #[test]
    fn the_longest_containing_mount_point_wins_and_escapes_are_read() {
        let mount = mount_of(Path::new("/var/lib/sensor gate/spool"), MOUNTINFO).unwrap();
        assert_eq!(mount.mount_point, Path::new("/var/lib/sensor gate"));
        assert_eq!(mount.fs_type, "tmpfs");
        let mount = mount_of(Path::new("/var/lib/other"), MOUNTINFO).unwrap();
        assert_eq!(
            (mount.fs_type.as_str(), mount.source.as_str()),
            ("ext4", "/dev/sda1")
        );
        let mount = mount_of(Path::new("/home"), MOUNTINFO).unwrap();
        assert_eq!(mount.mount_point, Path::new("/"));
        assert_eq!(mount_of(Path::new("/x"), "garbage"), None);
    }

    #[test]
    fn only_no_space_and_quota_errors_mean_full() {
        assert!(is_full(&io::Error::from_raw_os_error(
            rustix::io::Errno::NOSPC.raw_os_error()
        )));
        assert!(is_full(&io::Error::from_raw_os_error(
            rustix::io::Errno::DQUOT.raw_os_error()
        )));
        assert!(!is_full(&io::Error::from_raw_os_error(
            rustix::io::Errno::IO.raw_os_error()
        )));
        assert!(!is_full(&io::Error::other("x")));
    }

    #[test]
    fn an_episode_warns_once_and_ends_on_success() {
        let mut episode = FullEpisode::new("test");
        assert!(episode.hit("fs", "waiting"));
        assert!(!episode.hit("fs", "waiting"), "one WARN per episode");
        assert!(episode.is_full());
        episode.cleared();
        assert!(!episode.is_full());
        assert!(episode.hit("fs", "waiting"), "a new episode warns again");
    }

    #[test]
    fn the_description_names_the_mount_and_its_space() {
        let text = describe(Path::new("/"));
        assert!(text.contains("mounted on /"), "{text}");
        assert!(text.contains("free"), "{text}");
    }
}
