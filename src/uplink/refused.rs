//! The messages the cloud broker refused, set aside so that the rest flows: `{state_dir}/spool/refused`
//! holds them in the spool's segment format (magic `SGSPOOL1`, then records; see [`super::segment`]), for
//! the operator to read (`refused.old` holds the ones before). A cloud that refuses a publish says so
//! with an MQTT 5 PUBACK reason code, or, over MQTT 3.1.1 (AWS IoT Core and Azure IoT Hub for a topic
//! outside the device's policy, EMQX with `acl_deny_action = disconnect`), by closing the connection
//! with that publish in flight; the uplink decides (see "Refused messages" in [`super`]), this file only
//! keeps them.
//!
//! # Bounds
//! The file holds at most [`MAX_REFUSED_MESSAGES`] records and [`MAX_REFUSED_BYTES`]; the record that
//! would pass either starts a new file, and the full one becomes `refused.old` (the one before that is
//! deleted, its records counted as dropped). So at most twice the bounds are on disk. A message bigger
//! than [`MAX_REFUSED_BYTES`] is not kept (logged, counted as dropped). Each record is written whole and
//! fsync'ed before the spool forgets the message; a write that fails (a full disk) is cut back. Plain
//! blocking file IO, called from the spool's blocking jobs.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::segment::{
    encode_record, io_err, read_valid_records, Outbound, Record, SpoolError, SEGMENT_MAGIC,
};

/// File name of the refused messages, inside the spool directory.
pub const REFUSED_FILE: &str = "refused";
/// The file before, once [`REFUSED_FILE`] reached a bound.
pub const REFUSED_OLD_FILE: &str = "refused.old";
/// Most records in one file.
pub const MAX_REFUSED_MESSAGES: u64 = 100;
/// Most bytes in one file.
pub const MAX_REFUSED_BYTES: u64 = 1 << 20;

/// The refused messages of one spool directory.
#[derive(Debug)]
pub struct Refused {
    dir: PathBuf,
    /// Records in [`REFUSED_FILE`] and its length (its valid part).
    count: u64,
    bytes: u64,
    /// Records in [`REFUSED_OLD_FILE`].
    old_count: u64,
    /// Refused messages not kept (too big, or pushed out with an old file) since open.
    dropped: u64,
}

impl Refused {
    /// Counts what `dir` holds already. Damaged files count as what is valid in them; nothing here
    /// stops the uplink from starting.
    pub fn open(dir: &Path) -> Refused {
        let (count, bytes) = valid(&dir.join(REFUSED_FILE));
        let (old_count, _) = valid(&dir.join(REFUSED_OLD_FILE));
        Refused {
            dir: dir.to_path_buf(),
            count,
            bytes,
            old_count,
            dropped: 0,
        }
    }

    /// Messages kept in both files.
    pub fn kept(&self) -> u64 {
        self.count + self.old_count
    }

    /// Refused messages not kept since open.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Keeps `record` (written and fsync'ed), within the bounds of the module documentation.
    pub fn keep(&mut self, record: &Record) -> Result<(), SpoolError> {
        let mut buf = Vec::new();
        let message = Outbound {
            topic: record.topic.clone(),
            payload: record.payload.clone(),
            qos: record.qos,
            retain: record.retain,
        };
        encode_record(&mut buf, record.seq, record.appended_ms, &message);
        if buf.len() as u64 + SEGMENT_MAGIC.len() as u64 > MAX_REFUSED_BYTES {
            self.dropped += 1;
            log::error!(
                "uplink: the refused message on {} ({} bytes) is too big to keep in {}",
                record.topic,
                record.payload.len(),
                self.dir.join(REFUSED_FILE).display()
            );
            return Ok(());
        }
        let path = self.dir.join(REFUSED_FILE);
        if self.count >= MAX_REFUSED_MESSAGES || self.bytes + buf.len() as u64 > MAX_REFUSED_BYTES {
            let old = self.dir.join(REFUSED_OLD_FILE);
            match fs::rename(&path, &old) {
                Ok(()) => {
                    self.dropped += self.old_count;
                    self.old_count = self.count;
                }
                // Removed by the operator meanwhile: the file before stays as it is.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SpoolError::Io { path, source }),
            }
            self.count = 0;
            self.bytes = 0;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // Whatever follows the valid records (a torn write) would hide this one: cut it.
        let len = file.metadata().map_err(io_err(&path))?.len();
        if len != self.bytes {
            file.set_len(self.bytes).map_err(io_err(&path))?;
        }
        let created = self.bytes == 0;
        if created {
            buf.splice(0..0, SEGMENT_MAGIC.iter().copied());
        }
        if let Err(source) = file.write_all(&buf).and_then(|()| file.sync_data()) {
            let _ = file.set_len(self.bytes);
            return Err(SpoolError::Io { path, source });
        }
        if created {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
        }
        self.bytes += buf.len() as u64;
        self.count += 1;
        Ok(())
    }
}

/// The records kept in `dir`, older file first (for the operator and the tests).
pub fn read(dir: &Path) -> Vec<Record> {
    [REFUSED_OLD_FILE, REFUSED_FILE]
        .iter()
        .flat_map(|name| records(&dir.join(name)).0)
        .collect()
}

fn records(path: &Path) -> (Vec<Record>, u64) {
    let Ok(file) = File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    read_valid_records(&file, len).unwrap_or_default()
}

/// Records and valid bytes of a file.
fn valid(path: &Path) -> (u64, u64) {
    let (records, end) = records(path);
    (records.len() as u64, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, payload: usize) -> Record {
        Record {
            seq,
            appended_ms: 1_700_000_000_000,
            topic: format!("site/secret/{seq}"),
            payload: vec![b'p'; payload],
            qos: 1,
            retain: false,
        }
    }

    #[test]
    fn kept_records_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut refused = Refused::open(dir.path());
        refused.keep(&record(3, 10)).unwrap();
        refused.keep(&record(9, 10)).unwrap();
        let reopened = Refused::open(dir.path());
        assert_eq!(reopened.kept(), 2);
        let seqs: Vec<u64> = read(dir.path()).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![3, 9]);
        assert_eq!(read(dir.path())[1].topic, "site/secret/9");
    }

    #[test]
    fn the_files_are_bounded_by_count_and_bytes_and_drops_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut refused = Refused::open(dir.path());
        for seq in 1..=3 * MAX_REFUSED_MESSAGES {
            refused.keep(&record(seq, 10)).unwrap();
        }
        assert_eq!(refused.kept(), 2 * MAX_REFUSED_MESSAGES);
        assert_eq!(refused.dropped(), MAX_REFUSED_MESSAGES);
        let kept = read(dir.path());
        assert_eq!(kept.first().map(|r| r.seq), Some(MAX_REFUSED_MESSAGES + 1));
        assert_eq!(kept.last().map(|r| r.seq), Some(3 * MAX_REFUSED_MESSAGES));

        let big = tempfile::tempdir().unwrap();
        let mut refused = Refused::open(big.path());
        for seq in 1..=5 {
            refused.keep(&record(seq, 400 << 10)).unwrap();
        }
        let bytes = |name: &str| fs::metadata(big.path().join(name)).unwrap().len();
        assert!(bytes(REFUSED_FILE) <= MAX_REFUSED_BYTES);
        assert!(bytes(REFUSED_OLD_FILE) <= MAX_REFUSED_BYTES);
        refused
            .keep(&record(6, MAX_REFUSED_BYTES as usize))
            .unwrap();
        // Two records a file: the 5th pushed out the first two; the last is too big to keep.
        assert_eq!(refused.dropped(), 3);
    }

    #[test]
    fn a_torn_tail_is_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut refused = Refused::open(dir.path());
        refused.keep(&record(1, 10)).unwrap();
        let path = dir.path().join(REFUSED_FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        let mut refused = Refused::open(dir.path());
        refused.keep(&record(2, 10)).unwrap();
        let seqs: Vec<u64> = read(dir.path()).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }
}
