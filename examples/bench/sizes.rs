//! The daemon's binary size per target, as built in this bench's profile: the host's, and the Pi
//! targets' where they were built (`cargo build --release --target aarch64-unknown-linux-gnu`, or
//! `armv7-unknown-linux-gnueabihf`, with the cross linkers `.ci/cross.sh` installs). The release
//! profile strips symbols, so the sizes are what a Pi stores and loads. The budget is 8 MiB for aarch64.

use std::path::{Path, PathBuf};

/// The Pi targets, 64-bit first.
pub const TARGETS: [&str; 2] = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];
/// The aarch64 binary's budget with every feature (docs/pi.md, "The 8 MiB budget").
pub const BUDGET_BYTES: u64 = 8 << 20;

/// One target's binary: where it would be and its size when it was built.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub target: String,
    pub path: PathBuf,
    pub bytes: Option<u64>,
}

/// `target/<triple>/<profile>/sensorgate` beside the host's `target/<profile>/sensorgate`.
pub fn run() -> Vec<Row> {
    let host = crate::daemon::binary();
    let profile_dir = host.parent().map(Path::to_path_buf).unwrap_or_default();
    let profile = profile_dir.file_name().map(|n| n.to_os_string());
    let target_dir = profile_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut rows = vec![Row {
        target: format!("{} (this machine)", std::env::consts::ARCH),
        bytes: std::fs::metadata(&host).ok().map(|m| m.len()),
        path: host,
    }];
    for target in TARGETS {
        let mut path = target_dir.join(target);
        if let Some(profile) = &profile {
            path.push(profile);
        }
        path.push("sensorgate");
        rows.push(Row {
            target: target.to_string(),
            bytes: std::fs::metadata(&path).ok().map(|m| m.len()),
            path,
        });
    }
    rows
}

/// The aarch64 row, when it was built.
pub fn aarch64(rows: &[Row]) -> Option<u64> {
    rows.iter().find(|r| r.target == TARGETS[0])?.bytes
}

pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "## Binary sizes\n\nThe daemon as this bench's profile built it (the release profile strips it); a \
         Pi target's row needs its build first (`cargo build --release --target <triple> --bin \
         sensorgate` with the linkers of `.ci/cross.sh`).\n\n| target | bytes | MiB |\n|---|---:|---:|\n",
    );
    for row in rows {
        match row.bytes {
            Some(bytes) => out.push_str(&format!(
                "| {} | {} | {:.2} |\n",
                row.target,
                crate::thousands(bytes as f64),
                bytes as f64 / (1024.0 * 1024.0)
            )),
            None => out.push_str(&format!(
                "| {} | not built (`{}`) | |\n",
                row.target,
                row.path.display()
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_target_shows_its_size_and_a_missing_one_says_so() {
        let rows = vec![
            Row {
                target: TARGETS[0].into(),
                path: "a".into(),
                bytes: Some(6_165_672),
            },
            Row {
                target: TARGETS[1].into(),
                path: "target/armv7/release/sensorgate".into(),
                bytes: None,
            },
        ];
        let text = markdown(&rows);
        assert!(
            text.contains("| aarch64-unknown-linux-gnu | 6,165,672 | 5.88 |"),
            "{text}"
        );
        assert!(
            text.contains("not built (`target/armv7/release/sensorgate`)"),
            "{text}"
        );
        assert_eq!(aarch64(&rows), Some(6_165_672));
    }
}
