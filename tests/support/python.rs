//! Test harness: the Python interpreter an independent implementation runs on. Debian's packages
//! (`python3-cryptography`, `python3-paho-mqtt`, installed by `scripts/test`) belong to
//! `/usr/bin/python3`, while a pyenv or venv `python3` first on the PATH may lack them: Debian's is
//! taken when it imports what the test needs, else `python3` on the PATH if that one does.

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
