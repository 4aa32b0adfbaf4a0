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
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("write to {script}: {e}"));
    }
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap_or_else(|e| panic!("{script} wrote non-UTF-8: {e}"))
}
