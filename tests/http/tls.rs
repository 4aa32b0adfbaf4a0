//! `[http] tls`: the page over HTTPS with the configured certificate, read by curl trusting the test CA;
//! a plain-HTTP request to it gets no page.

use std::process::Command;

use sensorgate_testkit::certs::Certs;

use crate::daemon::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_over_tls_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path());
    let http = format!(
        "anonymous = \"read\"\ntls = {{ cert_file = \"{}\", key_file = \"{}\" }}",
        certs.server_cert.display(),
        certs.server_key.display()
    );
    let running = start(dir.path(), config(dir.path()).http(&http));
    assert!(running.daemon.log().contains("status page on https://"));
    let curl = |scheme: &str, ca: &std::path::Path| {
        Command::new("curl")
            .args(["-s", "--max-time", "10", "--cacert"])
            .arg(ca)
            .arg(format!("{scheme}://{}/healthz", running.page))
            .output()
            .expect("curl")
    };
    let trusted = curl("https", &certs.ca);
    assert!(trusted.status.success(), "{trusted:?}");
    assert_eq!(String::from_utf8_lossy(&trusted.stdout), "ok\n");
    let untrusted = curl("https", &certs.wrong_ca);
    assert!(
        !untrusted.status.success(),
        "a certificate from another CA was accepted"
    );
    let plain = curl("http", &certs.ca);
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("ok"),
        "{plain:?}"
    );
    running.daemon.stop();
}
