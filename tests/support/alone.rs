//! A test alone in a process of its own: for the few tests that measure their own process (its
//! resident memory) and would read their neighbours' too in a test binary that runs many tests at once.
//! The test calls [`in_own_process`] first; in the test binary's run it starts the same binary again
//! for that one test and waits for its verdict, and in that second process it lets the test run.

use std::io::{Read, Seek, SeekFrom};
use std::process::Command;
use std::time::{Duration, Instant};

/// The variable that tells the second process which test it is for.
const ALONE: &str = "SENSORGATE_TEST_ALONE";

/// How long the second process may take.
const WITHIN: Duration = Duration::from_secs(300);

/// `true` when the caller is the test's own process and should run the test's body; otherwise runs
/// `test` (its path in the binary, e.g. `flood::a_flood_of_connects`) in a fresh copy of this test
/// binary, panics with its output if it failed, and returns `false` (the caller then returns).
pub fn in_own_process(test: &str) -> bool {
    if std::env::var(ALONE).as_deref() == Ok(test) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // Its output goes to files, not pipes: a pipe nobody reads while we wait could fill and stall it.
    let mut stdout = tempfile::tempfile().expect("a file for the test's output");
    let mut child = Command::new(exe)
        .args([
            test,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(ALONE, test)
        .stdout(stdout.try_clone().expect("the output file"))
        .stderr(stdout.try_clone().expect("the output file"))
        .spawn()
        .expect("start the test binary again");
    let deadline = Instant::now() + WITHIN;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    let _ = stdout.seek(SeekFrom::Start(0));
    let _ = stdout.read_to_string(&mut output);
    print!("{output}");
    assert!(
        matches!(status, Some(s) if s.success()) && output.contains("1 passed"),
        "{test} in its own process ended with {status:?} (killed after {WITHIN:?} if None):\n{output}"
    );
    false
}
