//! What a daemon built without an optional cargo feature says about the configuration that needs it:
//! `check-config` and `run` refuse it at its line and say how to get the feature. Run in such a build
//! with `cargo test --no-default-features --test cli features::` (CI does); in the default build the same
//! file passes `check-config`.

use std::process::Command;

use sensorgate_testkit::daemon::{refused_by_check_config_and_run, sensorgate_binary};

#[test]
fn http_needs_a_build_with_the_status_page() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("web.toml");
    std::fs::write(
        &path,
        "[gateway]\nstate_dir = \"/tmp\"\n\n[http]\nanonymous = \"read\"\n",
    )
    .unwrap();
    if cfg!(feature = "http") {
        let output = Command::new(sensorgate_binary())
            .args(["check-config", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{said}");
        return;
    }
    for (command, said) in refused_by_check_config_and_run(&path) {
        let expected = format!("{}:4:2: ", path.display());
        assert!(said.contains(&expected), "{command}: {said}");
        assert!(said.contains("--features http"), "{command}: {said}");
    }
}
