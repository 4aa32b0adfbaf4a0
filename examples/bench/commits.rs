//! What one group commit costs an SD card's file system, by the size of the commit, with the file grown
//! as it is written and with its blocks reserved first (`fallocate` with `FALLOC_FL_KEEP_SIZE`, what the
//! spool does for each segment): the evidence behind the spool's reservation. Each case appends records
//! of one size to one file with an `fdatasync` each, paced, on a fresh 4 KiB-block ext4 (see
//! [`crate::ext4`]), and reads the file system's own count of what it wrote (data, metadata, journal).
//! The difference between two sizes is what a commit costs per byte; the smallest size is the fixed cost.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{Duration, Instant};

use crate::ext4::Ext4;

/// Bytes per commit measured.
const SIZES: [usize; 4] = [64, 512, 2048, 8192];
/// What a reservation covers (the spool's default segment).
const RESERVED: u64 = 4 << 20;

/// Bytes written per commit, grown as written and reserved, for one commit size.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub bytes: usize,
    pub grown: Option<f64>,
    pub reserved: Option<f64>,
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
    reserve: bool,
    commits: u64,
    interval: Duration,
) -> Result<f64, String> {
    let fs = Ext4::make()?;
    let path = fs.path().join("segment");
    let mut file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    if reserve {
        let flags = rustix::fs::FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&file, flags, 0, RESERVED).map_err(|e| format!("fallocate: {e}"))?;
    }
    // The file exists (and is reserved) before the count starts, as a spool segment does.
    file.write_all(b"SGSPOOL1").map_err(io)?;
    file.sync_all().map_err(io)?;
    let before = fs.written().ok_or("no lifetime_write_kbytes")?;
    let record = vec![b'x'; bytes];
    let started = Instant::now();
    for n in 1..=commits {
        file.write_all(&record).map_err(io)?;
        file.sync_data().map_err(io)?;
        if let Some(wait) = (interval * n as u32).checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let after = fs.written().ok_or("no lifetime_write_kbytes")?;
    Ok(after.saturating_sub(before) as f64 / commits as f64)
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
                grown: measure(bytes, false),
                reserved: measure(bytes, true),
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
         with `FALLOC_FL_KEEP_SIZE`), as the spool does for every segment.\n\n",
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
        "| bytes per commit | grown: bytes written per commit | reserved |\n|---:|---:|---:|\n",
    );
    let cell = |v: Option<f64>| v.map(crate::thousands).unwrap_or_else(|| "n/a".into());
    for row in &report.rows {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            crate::thousands(row.bytes as f64),
            cell(row.grown),
            cell(row.reserved)
        ));
    }
    if let (Some(grown), Some(reserved)) = (
        slope(&report.rows, |r| r.grown),
        slope(&report.rows, |r| r.reserved),
    ) {
        out.push_str(&format!(
            "\nBeyond the fixed cost of a commit, each byte costs {grown:.2} bytes when the file grows \
             (a commit that enters a new block also journals the block bitmap and the group \
             descriptor) and {reserved:.2} bytes when it is reserved.\n"
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
            },
            Row {
                bytes: 8192,
                grown: Some(32_256.0),
                reserved: Some(20_064.0),
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
        assert!(text.contains("| 8,192 | 32,256 | 20,064 |"), "{text}");
        assert!(text.contains("2.00 bytes when the file grows"), "{text}");
    }
}
