//! What one group commit costs an SD card's file system, by the size of the commit, three ways: the file
//! grown as it is written; its blocks reserved first without changing its length (`fallocate` with
//! `FALLOC_FL_KEEP_SIZE`, what the spool does for each segment); and allocated with its full length
//! (`fallocate` mode 0, unwritten extents) and written in place, which the spool does not do (its files'
//! length is where its records end) but which a future format could. Each case appends records of one
//! size to one file with an `fdatasync` each, paced, on a fresh 4 KiB-block ext4 (see [`crate::ext4`]),
//! and reads the file system's own count of what it wrote (data, metadata, journal). The difference
//! between two sizes is what a commit costs per byte; the smallest size is the fixed cost.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::ext4::Ext4;

/// Bytes per commit measured.
const SIZES: [usize; 4] = [64, 512, 2048, 8192];
/// What a reservation covers (the spool's default segment).
const RESERVED: u64 = 4 << 20;

/// How the file's blocks are allocated.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Allocation {
    /// As it is written.
    Grown,
    /// Reserved first, its length unchanged (`FALLOC_FL_KEEP_SIZE`): the spool.
    Reserved,
    /// Allocated with its full length (unwritten extents), written in place.
    InPlace,
}

/// Bytes written per commit, each way, for one commit size.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub bytes: usize,
    pub grown: Option<f64>,
    pub reserved: Option<f64>,
    pub in_place: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<Row>,
    pub commits: u64,
    pub interval: Duration,
    /// Why nothing was measured (no root, no loop device), if so.
    pub fallback: Option<String>,
}

/// Bytes the file system wrote per commit of `bytes`, over `commits` commits `interval` apart.
fn per_commit(
    bytes: usize,
    allocation: Allocation,
    commits: u64,
    interval: Duration,
) -> Result<f64, String> {
    let fs = Ext4::make()?;
    let path = fs.path().join("segment");
    let file: File = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let flags = match allocation {
        Allocation::Grown => None,
        Allocation::Reserved => Some(rustix::fs::FallocateFlags::KEEP_SIZE),
        Allocation::InPlace => Some(rustix::fs::FallocateFlags::empty()),
    };
    if let Some(flags) = flags {
        rustix::fs::fallocate(&file, flags, 0, RESERVED).map_err(|e| format!("fallocate: {e}"))?;
    }
    // The file exists (and is allocated) before the count starts, as a spool segment does.
    let magic = b"SGSPOOL1";
    file.write_all_at(magic, 0).map_err(io)?;
    file.sync_all().map_err(io)?;
    let record = vec![b'x'; bytes];
    fs.bytes_per_commit(commits, interval, |n| {
        let offset = magic.len() as u64 + (n - 1) * bytes as u64;
        file.write_all_at(&record, offset).map_err(io)?;
        file.sync_data().map_err(io)
    })
}

pub async fn run(quick: bool) -> Report {
    let (commits, interval) = if quick {
        (10, Duration::from_millis(100))
    } else {
        (60, Duration::from_millis(500))
    };
    tokio::task::spawn_blocking(move || {
        let mut fallback = None;
        let mut measure = |bytes, reserve| match per_commit(bytes, reserve, commits, interval) {
            Ok(cost) => Some(cost),
            Err(why) => {
                fallback.get_or_insert(why);
                None
            }
        };
        let rows = SIZES
            .iter()
            .map(|&bytes| Row {
                bytes,
                grown: measure(bytes, Allocation::Grown),
                reserved: measure(bytes, Allocation::Reserved),
                in_place: measure(bytes, Allocation::InPlace),
            })
            .collect();
        Report {
            rows,
            commits,
            interval,
            fallback,
        }
    })
    .await
    .unwrap_or_else(|e| Report {
        rows: Vec::new(),
        commits,
        interval,
        fallback: Some(format!("the measuring thread failed: {e}")),
    })
}

/// Bytes per byte between the smallest and the largest size measured both ways.
fn slope(rows: &[Row], pick: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
    let (first, last) = (rows.first()?, rows.last()?);
    let span = last.bytes.checked_sub(first.bytes).filter(|s| *s > 0)? as f64;
    Some((pick(last)? - pick(first)?) / span)
}

pub fn markdown(report: &Report) -> String {
    let mut out = String::from("## Spool group commits by size\n\n");
    out.push_str(&format!(
        "One file on a fresh 4 KiB-block ext4 on a loop device, {} appends of one size with an \
         `fdatasync` each, {:.1} s apart; bytes the file system wrote per commit \
         (`lifetime_write_kbytes`: data, metadata, journal). **Grown** lets the file allocate blocks as \
         it is written; **reserved** allocates {} MiB first without changing the length (`fallocate` \
         with `FALLOC_FL_KEEP_SIZE`), as the spool does for every segment; **in place** allocates them \
         with the length set (`fallocate` mode 0: unwritten extents) and writes into the file, which \
         the spool's format does not do (a segment's length is where its records end).\n\n",
        report.commits,
        report.interval.as_secs_f64(),
        RESERVED >> 20,
    ));
    if let Some(why) = &report.fallback {
        out.push_str(&format!("Not measured here: {why}.\n"));
        if report.rows.iter().all(|r| r.grown.is_none()) {
            return out;
        }
    }
    out.push_str(
        "| bytes per commit | grown: bytes written per commit | reserved (the spool) | in place |\n\
         |---:|---:|---:|---:|\n",
    );
    let cell = |v: Option<f64>| v.map(crate::thousands).unwrap_or_else(|| "n/a".into());
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            crate::thousands(row.bytes as f64),
            cell(row.grown),
            cell(row.reserved),
            cell(row.in_place)
        ));
    }
    if let (Some(grown), Some(reserved), Some(in_place)) = (
        slope(&report.rows, |r| r.grown),
        slope(&report.rows, |r| r.reserved),
        slope(&report.rows, |r| r.in_place),
    ) {
        out.push_str(&format!(
            "\nBeyond the fixed cost of a commit, each byte costs {grown:.2} bytes when the file grows \
             (a commit that enters a new block also journals the block bitmap and the group \
             descriptor), {reserved:.2} bytes when it is reserved, and {in_place:.2} in place (each new \
             block's extent conversion is journalled, but a commit within a written block journals \
             nothing: a small fixed cost, a large cost per byte).\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_taken_between_the_smallest_and_largest_size() {
        let rows = vec![
            Row {
                bytes: 64,
                grown: Some(16_000.0),
                reserved: Some(16_000.0),
                in_place: Some(4_000.0),
            },
            Row {
                bytes: 8192,
                grown: Some(32_256.0),
                reserved: Some(20_064.0),
                in_place: Some(28_376.0),
            },
        ];
        assert_eq!(slope(&rows, |r| r.grown), Some(2.0));
        assert_eq!(slope(&rows, |r| r.reserved), Some(0.5));
        assert_eq!(slope(&rows[..1], |r| r.grown), None);
        let report = Report {
            rows,
            commits: 10,
            interval: Duration::from_millis(100),
            fallback: None,
        };
        let text = markdown(&report);
        assert!(
            text.contains("| 8,192 | 32,256 | 20,064 | 28,376 |"),
            "{text}"
        );
        assert!(text.contains("and 3.00 in place"), "{text}");
        assert!(text.contains("2.00 bytes when the file grows"), "{text}");
    }
}
