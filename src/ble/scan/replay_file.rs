//! The replay backend (`hci_replay = "FILE"`): HCI LE Advertising Report events from a file, one per
//! line in hexadecimal (as `crate::ble::hci::parse_line` reads them: legacy 0x02 and extended 0x0D,
//! with or without the H4 `04` in front; `#` comments and blank lines are skipped), for tests, the demo
//! and captures users share.
//!
//! Pacing: the first event is heard as soon as the file is opened, each next one `replay_interval`
//! after the one before (`"0s"` replays the file as fast as the pipeline takes it); every advertisement
//! is stamped with the time it is replayed, not the time it was captured. At the end of the file the
//! replay starts again from the top with `replay_loop = true`, and otherwise goes silent, as a radio
//! with nobody around would (the scan watchdog then restarts the "scan", which does not rewind).
//!
//! Losing the adapter, for tests and drills: a line `lost` ends the adapter there (the source is lost,
//! its devices' wills are published, and it is reopened with backoff, continuing after that line); the
//! file is read again at every open, so a file that is removed is a missing adapter until it is back.
//! A line that is not an event is logged at open (with its line number) and skipped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::adapter::{Adapter, AdapterLost, Heard, Opener};
use crate::ble::hci::{self, Advertisement};

/// The largest replay file read (a day of a busy flat's adverts is far less).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// The directive that ends the adapter.
const LOST: &str = "lost";

/// One line that does something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An event's advertisements (none for an event that is no report).
    Event(Vec<Advertisement>),
    /// `lost`.
    Lost { line: usize },
}

/// The steps of a replay file, and the lines refused (`(line number, why)`). Pure.
pub fn parse(text: &str) -> (Vec<Step>, Vec<(usize, String)>) {
    let mut steps = Vec::new();
    let mut refused = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed.eq_ignore_ascii_case(LOST) {
            steps.push(Step::Lost { line: index + 1 });
            continue;
        }
        match hci::parse_line(trimmed) {
            Ok(adverts) => steps.push(Step::Event(adverts)),
            Err(error) => refused.push((index + 1, error.to_string())),
        }
    }
    (steps, refused)
}

/// Opens the replay file; keeps the position across opens.
#[derive(Debug)]
pub struct ReplayOpener {
    file: PathBuf,
    interval: Duration,
    looping: bool,
    next_step: Arc<AtomicUsize>,
}

impl ReplayOpener {
    pub fn new(file: PathBuf, interval: Duration, looping: bool) -> Self {
        ReplayOpener {
            file,
            interval,
            looping,
            next_step: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Opener for ReplayOpener {
    type Adapter = ReplayAdapter;

    fn name(&self) -> String {
        self.file.display().to_string()
    }

    async fn open(&mut self) -> Result<ReplayAdapter, AdapterLost> {
        let file = &self.file;
        let lost = |error: std::io::Error| AdapterLost(format!("{}: {error}", file.display()));
        let size = tokio::fs::metadata(file).await.map_err(lost)?.len();
        if size > MAX_FILE_BYTES {
            return Err(AdapterLost(format!(
                "{}: {size} bytes, more than the {MAX_FILE_BYTES} a replay file may have",
                file.display()
            )));
        }
        let text = tokio::fs::read_to_string(file).await.map_err(lost)?;
        let (steps, refused) = parse(&text);
        for (line, why) in refused.iter().take(10) {
            log::warn!(
                "{}:{line}: not an HCI event, skipped: {why}",
                file.display()
            );
        }
        Ok(ReplayAdapter {
            steps: Arc::new(steps),
            next_step: self.next_step.clone(),
            interval: self.interval,
            looping: self.looping,
            first: true,
        })
    }
}

/// The replay running.
#[derive(Debug)]
pub struct ReplayAdapter {
    steps: Arc<Vec<Step>>,
    next_step: Arc<AtomicUsize>,
    interval: Duration,
    looping: bool,
    first: bool,
}

impl Adapter for ReplayAdapter {
    async fn next(&mut self) -> Result<Vec<Heard>, AdapterLost> {
        let has_events = self.steps.iter().any(|s| matches!(s, Step::Event(_)));
        let mut index = self.next_step.load(Ordering::Relaxed);
        if index >= self.steps.len() {
            if !self.looping || !has_events {
                std::future::pending::<()>().await;
            }
            index = 0;
        }
        self.next_step.store(index + 1, Ordering::Relaxed);
        match &self.steps[index] {
            Step::Lost { line } => Err(AdapterLost(format!(
                "the replay file says `lost` at line {line}"
            ))),
            Step::Event(adverts) => {
                let first = std::mem::take(&mut self.first);
                if !first && self.interval.is_zero() {
                    // As fast as the pipeline takes them, but never without letting other tasks run.
                    tokio::task::yield_now().await;
                } else if !first {
                    tokio::time::sleep(self.interval).await;
                }
                let at = SystemTime::now();
                Ok(adverts
                    .iter()
                    .map(|advert| Heard {
                        advert: advert.clone(),
                        at,
                    })
                    .collect())
            }
        }
    }

    async fn restart_scan(&mut self) -> Result<(), AdapterLost> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: &str = "043e1d02010000f4830238c1a41110161a18a4c1380283f400a22f5f0bf819df";

    #[test]
    fn lines_become_steps_and_bad_lines_are_named() {
        let text = format!("# a capture\n\n{LEGACY}\nlost\nzz\n3E 02 0E 00\n");
        let (steps, refused) = parse(&text);
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert!(matches!(&steps[0], Step::Event(adverts) if adverts.len() == 1));
        assert_eq!(steps[1], Step::Lost { line: 4 });
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_paced_and_lost_continues_after_the_line_at_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.hci");
        std::fs::write(&path, format!("{LEGACY}\n{LEGACY}\nlost\n{LEGACY}\n")).unwrap();
        let mut opener = ReplayOpener::new(path.clone(), Duration::from_secs(10), false);
        let mut adapter = opener.open().await.unwrap();
        let start = tokio::time::Instant::now();
        assert_eq!(adapter.next().await.unwrap().len(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO, "the first event at once");
        assert_eq!(adapter.next().await.unwrap().len(), 1);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert!(adapter.next().await.is_err(), "`lost` loses the adapter");
        let mut adapter = opener.open().await.unwrap();
        assert_eq!(adapter.next().await.unwrap().len(), 1);
        let silent = tokio::time::timeout(Duration::from_secs(3600), adapter.next()).await;
        assert!(silent.is_err(), "no loop: silence at the end");
        std::fs::remove_file(&path).unwrap();
        assert!(
            opener.open().await.is_err(),
            "a removed file is a missing adapter"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_looping_replay_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capture.hci");
        std::fs::write(&path, format!("{LEGACY}\n")).unwrap();
        let mut adapter = ReplayOpener::new(path, Duration::from_secs(1), true)
            .open()
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(adapter.next().await.unwrap().len(), 1);
        }
    }
}
