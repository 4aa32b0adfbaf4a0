//! Small durable state that one damaged write cannot lose: a file kept as two checksummed copies,
//! written alternately, read back by taking the newest copy that checks. Replay marks
//! ([`crate::replay`]) and the gateway's downlink frame counters (`crate::commands::counters`) live
//! in it; it knows nothing of what it holds (bytes in, bytes out).
//!
//! # Layout
//! `{dir}/{name}.0` and `{dir}/{name}.1`, each:
//!
//! ```text
//! magic "SGSTATE1" (8 bytes) | generation u64 LE | length u32 LE | CRC-32 u32 LE | payload (length bytes)
//! ```
//!
//! The CRC-32 (IEEE) covers the generation, the length and the payload. A write goes to the copy that
//! does not hold the newest good generation, with the next generation number: created or truncated,
//! written, fsync'ed (and the directory fsync'ed when the copy is new). A write torn by a power cut or a
//! full disk damages only that copy; the other still holds the previous state.
//!
//! # What a read finds
//! - [`Loaded::Fresh`]: neither copy exists (a first start): not a loss.
//! - [`Loaded::Found`]: the newest good copy's payload (a damaged other copy is logged as a WARN).
//! - [`Loaded::Lost`]: at least one copy exists and none checks (garbage, truncated, a directory in its
//!   place, unreadable). The owner decides what a loss means (replay marks and downlink counters fail
//!   closed until [`reset`], run by the operator through `sensorgate reset-state`).
//!
//! # A write that fails
//! [`StateFile::write`] returns the error; the owner keeps its state in memory and tries again later.
//! The first failure of a run is logged once as a WARN naming the file system (its mount point, and that
//! it is full when it is), the next ones at debug, and the first success after them at INFO.
//! Every call here is blocking IO: run it on a blocking thread.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SGSTATE1";
const HEADER_LEN: usize = 8 + 8 + 4 + 4;
/// The largest payload a copy may hold (a copy claiming more is damaged).
pub const MAX_PAYLOAD: usize = 32 << 20;

/// What [`StateFile::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Fresh,
    Found(Vec<u8>),
    /// Why each existing copy was refused.
    Lost(String),
}

/// One small durable state, as two copies (see the module).
#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
    name: String,
    /// The generation of the newest good copy (0: none).
    generation: u64,
    /// The copy the next write goes to.
    next_slot: usize,
    /// A write failed and none succeeded since (its WARN is logged).
    failing: bool,
}

/// One copy as read.
enum Copy {
    Missing,
    Good { generation: u64, payload: Vec<u8> },
    Damaged(String),
}

impl StateFile {
    /// The path of copy `slot` (0 or 1).
    pub fn copy_path(dir: &Path, name: &str, slot: usize) -> PathBuf {
        dir.join(format!("{name}.{slot}"))
    }

    /// Reads both copies of `{dir}/{name}`; returns the handle for later writes and what was found.
    pub fn open(dir: &Path, name: &str) -> (StateFile, Loaded) {
        let copies = [0, 1].map(|slot| read_copy(&StateFile::copy_path(dir, name, slot)));
        let mut best: Option<(usize, u64)> = None;
        let mut damaged = Vec::new();
        for (slot, copy) in copies.iter().enumerate() {
            match copy {
                Copy::Good { generation, .. } => {
                    if best.is_none_or(|(_, g)| *generation > g) {
                        best = Some((slot, *generation));
                    }
                }
                Copy::Damaged(why) => damaged.push(format!(
                    "{}: {why}",
                    StateFile::copy_path(dir, name, slot).display()
                )),
                Copy::Missing => {}
            }
        }
        let mut file = StateFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            generation: 0,
            next_slot: 0,
            failing: false,
        };
        let [first, second] = copies;
        let loaded = match best {
            Some((slot, generation)) => {
                if !damaged.is_empty() {
                    log::warn!(
                        "{}: one copy is damaged, the other is used ({}); the next write replaces it",
                        name,
                        damaged.join("; ")
                    );
                }
                file.generation = generation;
                file.next_slot = 1 - slot;
                let copy = if slot == 0 { first } else { second };
                match copy {
                    Copy::Good { payload, .. } => Loaded::Found(payload),
                    _ => Loaded::Fresh,
                }
            }
            None if damaged.is_empty() => Loaded::Fresh,
            None => Loaded::Lost(damaged.join("; ")),
        };
        (file, loaded)
    }

    /// The paths of both copies, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} and {}",
            StateFile::copy_path(&self.dir, &self.name, 0).display(),
            StateFile::copy_path(&self.dir, &self.name, 1).display()
        )
    }

    /// Writes `payload` as the next generation into the older copy, fsync'ed. On an error the state on
    /// disk is what it was (the newest good copy is untouched); call again later.
    pub fn write(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let path = StateFile::copy_path(&self.dir, &self.name, self.next_slot);
        match write_copy(&path, generation, payload) {
            Ok(()) => {
                if self.failing {
                    log::info!("{}: written again to {}", self.name, path.display());
                    self.failing = false;
                }
                self.generation = generation;
                self.next_slot = 1 - self.next_slot;
                Ok(())
            }
            Err(error) => {
                if self.failing {
                    log::debug!("{}: still not written: {error}", self.name);
                } else {
                    self.failing = true;
                    log::warn!(
                        "{}: not written to {}: {error}; {}; kept in memory and written again later",
                        self.name,
                        path.display(),
                        describe_file_system(&self.dir, &error)
                    );
                }
                Err(error)
            }
        }
    }
}

/// Renames both copies of `name` to `*.damaged` (those that exist) and makes the renames durable, so
/// that the next open is a first start. Blocking IO.
pub fn move_copies_aside(dir: &Path, name: &str) -> std::io::Result<()> {
    for slot in 0..2 {
        let path = StateFile::copy_path(dir, name, slot);
        if std::fs::symlink_metadata(&path).is_ok() {
            std::fs::rename(&path, path.with_extension(format!("{slot}.damaged")))?;
        }
    }
    File::open(dir)?.sync_all()
}

/// Moves both copies of `{dir}/{name}` aside (`.0.damaged`, `.1.damaged`) when no good copy is left, so
/// that the next start is a first start for that state. Returns what was done; a state with a good copy
/// is left alone, since nothing is lost then.
pub fn reset(dir: &Path, name: &str) -> std::io::Result<String> {
    let (_, loaded) = StateFile::open(dir, name);
    match loaded {
        Loaded::Fresh => Ok(format!(
            "{name}: nothing to reset (no copy in {})",
            dir.display()
        )),
        Loaded::Found(_) => Ok(format!(
            "{name}: a good copy exists in {}; nothing is lost, left alone",
            dir.display()
        )),
        Loaded::Lost(_) => {
            move_copies_aside(dir, name)?;
            Ok(format!(
                "{name}: the damaged copies in {} were moved aside (*.damaged)",
                dir.display()
            ))
        }
    }
}

fn read_copy(path: &Path) -> Copy {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Copy::Missing,
        Err(error) => return Copy::Damaged(error.to_string()),
    };
    let mut bytes = Vec::new();
    if let Err(error) = file
        .take((HEADER_LEN + MAX_PAYLOAD) as u64 + 1)
        .read_to_end(&mut bytes)
    {
        return Copy::Damaged(error.to_string());
    }
    match decode(&bytes) {
        Ok((generation, payload)) => Copy::Good {
            generation,
            payload: payload.to_vec(),
        },
        Err(why) => Copy::Damaged(why.to_string()),
    }
}

/// A copy's generation and payload, if it checks.
fn decode(bytes: &[u8]) -> Result<(u64, &[u8]), &'static str> {
    if bytes.len() < HEADER_LEN {
        return Err("shorter than its header (truncated)");
    }
    if &bytes[..8] != MAGIC {
        return Err("not a sensorgate state copy (wrong magic)");
    }
    let generation = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| "header")?);
    let length = u32::from_le_bytes(bytes[16..20].try_into().map_err(|_| "header")?) as usize;
    let crc = u32::from_le_bytes(bytes[20..24].try_into().map_err(|_| "header")?);
    if length > MAX_PAYLOAD || bytes.len() != HEADER_LEN + length {
        return Err("its length does not match its header (truncated or appended to)");
    }
    if checksum(&bytes[8..20], &bytes[HEADER_LEN..]) != crc {
        return Err("its checksum does not match (damaged)");
    }
    Ok((generation, &bytes[HEADER_LEN..]))
}

fn checksum(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(payload);
    hasher.finalize()
}

/// The bytes of one copy.
fn encode(generation: u64, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l as usize <= MAX_PAYLOAD)
        .ok_or_else(|| std::io::Error::other("state larger than its bound"))?;
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes.extend_from_slice(&length.to_le_bytes());
    let crc = checksum(&bytes[8..20], payload);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes.extend_from_slice(payload);
    Ok(bytes)
}

fn write_copy(path: &Path, generation: u64, payload: &[u8]) -> std::io::Result<()> {
    let bytes = encode(generation, payload)?;
    let existed = path.exists();
    let mut out = File::create(path)?;
    out.write_all(&bytes)?;
    out.sync_all()?;
    if !existed {
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Names the file system `dir` is on (through [`crate::full_disk::describe`]), saying whether `error`
/// means it is full.
pub fn describe_file_system(dir: &Path, error: &std::io::Error) -> String {
    let described = crate::full_disk::describe(dir);
    if crate::full_disk::is_full(error) {
        format!("the file system is full: {described}")
    } else {
        format!("the file system: {described}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(dir: &Path, slot: usize) -> PathBuf {
        StateFile::copy_path(dir, "t", slot)
    }

    #[test]
    fn the_newest_good_copy_wins_and_writes_alternate() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, loaded) = StateFile::open(dir.path(), "t");
        assert_eq!(loaded, Loaded::Fresh);
        file.write(b"one").unwrap();
        file.write(b"two").unwrap();
        assert!(path(dir.path(), 0).exists() && path(dir.path(), 1).exists());
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"two".to_vec())
        );
        file.write(b"three").unwrap();
        let (mut again, loaded) = StateFile::open(dir.path(), "t");
        assert_eq!(loaded, Loaded::Found(b"three".to_vec()));
        // The next write goes to the other copy: the newest stays good.
        again.write(b"four").unwrap();
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"four".to_vec())
        );
    }

    #[test]
    fn one_damaged_copy_loses_only_the_last_write() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StateFile::open(dir.path(), "t");
        file.write(b"old").unwrap(); // slot 0
        file.write(b"new").unwrap(); // slot 1
        let newest = path(dir.path(), 1);
        let bytes = std::fs::read(&newest).unwrap();
        // Truncated, a flipped byte, garbage, a directory in its place: each falls back to "old".
        std::fs::write(&newest, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"old".to_vec())
        );
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&newest, &flipped).unwrap();
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"old".to_vec())
        );
        std::fs::remove_file(&newest).unwrap();
        std::fs::create_dir(&newest).unwrap();
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"old".to_vec())
        );
    }

    #[test]
    fn no_good_copy_is_a_loss_until_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path(), 0), b"garbage").unwrap();
        std::fs::write(path(dir.path(), 1), b"").unwrap();
        let (_, loaded) = StateFile::open(dir.path(), "t");
        assert!(
            matches!(&loaded, Loaded::Lost(why) if why.contains("truncated")),
            "{loaded:?}"
        );
        assert!(reset(dir.path(), "t").unwrap().contains("moved aside"));
        assert_eq!(StateFile::open(dir.path(), "t").1, Loaded::Fresh);
        assert!(dir.path().join("t.0.damaged").exists());
        // Nothing to reset when a good copy exists.
        let (mut file, _) = StateFile::open(dir.path(), "t");
        file.write(b"x").unwrap();
        assert!(reset(dir.path(), "t").unwrap().contains("left alone"));
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"x".to_vec())
        );
    }

    #[test]
    fn a_failed_write_keeps_the_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (mut file, _) = StateFile::open(dir.path(), "t");
        file.write(b"kept").unwrap();
        // The next copy's place is taken by a directory: the write fails, the good copy stays.
        std::fs::create_dir(path(dir.path(), 1)).unwrap();
        assert!(file.write(b"lost").is_err());
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"kept".to_vec())
        );
        std::fs::remove_dir(path(dir.path(), 1)).unwrap();
        file.write(b"later").unwrap();
        assert_eq!(
            StateFile::open(dir.path(), "t").1,
            Loaded::Found(b"later".to_vec())
        );
        let error = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let said = describe_file_system(dir.path(), &error);
        assert!(
            said.contains("is full") && said.contains("mounted on /"),
            "{said}"
        );
    }
}
