//! Test harness: the Python interpreter an independent implementation runs on. Debian's packages
//! (`python3-cryptography`, `python3-paho-mqtt`, installed by `scripts/test`) belong to
//! `/usr/bin/python3`, while a pyenv or venv `python3` first on the PATH may lack them: Debian's is
//! taken when it imports what the test needs, else `python3` on the PATH if that one does.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The first of `/usr/bin/python3` and `python3` (on the PATH) that can `import {module}`; panics naming
/// the Debian package that provides it when neither can.
pub fn python_with(module: &str, debian_package: &str) -> &'static str {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .unwrap_or_else(|| {
            panic!("no python3 imports {module} (scripts/test installs Debian's {debian_package})")
        })
}

/// Runs the Python that can `import {module}` on `script` (a path relative to the repository) with
/// `args`, writes `input` to its standard input and returns its standard output; panics with the
/// script's standard error when it fails.
pub fn run_script(
    module: &str,
    debian_package: &str,
    script: &str,
    args: &[&Path],
    input: &str,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(script);
    let mut child = Command::new(python_with(module, debian_package))
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    // The input is written from a thread of its own while the output is read: a script that answers
    // as it reads fills its output pipe (64 KiB) before it has read a large input, and a write of the
    // whole input first would then wait for it for ever.
    let stdin = child.stdin.take();
    let (written, output) = std::thread::scope(|scope| {
        let writer = scope.spawn(move || match stdin {
            Some(mut stdin) => stdin.write_all(input.as_bytes()),
            None => Ok(()),
        });
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait for {script}: {e}"));
        let written = writer
            .join()
            .unwrap_or_else(|_| panic!("the writer of {script}'s input panicked"));
        (written, output)
    });
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    written.unwrap_or_else(|e| panic!("write to {script}: {e}"));
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("{script} wrote non-UTF-8: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    /// Requests whose answers (33 bytes of hex and a newline each, 136 KB) overflow the script's output
    /// pipe long before it has read the input (75 KB).
    const REQUESTS: usize = 4_000;

    #[test]
    fn a_script_that_answers_as_it_reads_gets_a_large_input_whole() {
        let request = "bthome 231d39c1d7cc1ab1aee224cd096db932 54:48:E6:8F:80:A5 1 02ca0903bf13\n"
            .repeat(REQUESTS);
        let (answered, answers) = mpsc::channel();
        // On a thread, so that a deadlock is reported within the bound instead of hanging the test.
        std::thread::spawn(move || {
            let output = super::run_script(
                "cryptography",
                "python3-cryptography",
                "tests/sources/ble/adverts.py",
                &[],
                &request,
            );
            let _ = answered.send(output);
        });
        let output = answers.recv_timeout(Duration::from_secs(60)).expect(
            "the script's answers within 60 s (writing the whole input first waits for ever)",
        );
        assert_eq!(output.lines().count(), REQUESTS);
    }
}
