//! The page in a real browser: a headless Chromium loads it from the running daemon and runs its script;
//! the tests read the DOM it rendered (not the HTML sent) and keep a screenshot, and click the admin
//! buttons through the DevTools protocol (tests/http/cdp.py).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use sensorgate_testkit::daemon::Daemon;
use sensorgate_testkit::mqtt;

use crate::client::get;
use crate::daemon::{
    admin_and_reader, config, config_with_serial, demo_config, frame_from, kitchen_frame, start,
    start_anonymous_read, wait_for,
};

/// Runs headless Chromium on `url` with `args` (a fresh profile in `dir`), returning its standard
/// output; bounded by a 60 s kill.
fn chromium(dir: &Path, url: &str, args: &[&str]) -> String {
    let profile = dir.join("chromium-profile");
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=4000",
            "--window-size=1280,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (scripts/test installs Debian's chromium)");
    let pid = child.id();
    let guard = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        // Only the process this test started, by its PID.
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let output = child.wait_with_output().expect("chromium output");
    drop(guard);
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_devices_values_and_a_bad_crc_frame_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start_anonymous_read(dir.path());
    let page = running.page;
    running.dongle.write(&kitchen_frame(1, true)).await;
    running.dongle.write(&kitchen_frame(2, false)).await;
    // The devices are in the snapshot and the bad frame in the inspector before the browser looks.
    wait_for(
        Duration::from_secs(15),
        "kitchen and sim-3 in the API",
        || {
            let devices = get(page, "/api/devices", None).body;
            (devices.contains("\"kitchen\"") && devices.contains("\"sim-3\"")).then_some(())
        },
    );
    wait_for(Duration::from_secs(10), "the bad frame in the API", || {
        get(page, "/api/frames?source=uart0", None)
            .body
            .contains("CRC mismatch")
            .then_some(())
    });
    let url = format!("http://{page}/");
    let dom = tokio::task::block_in_place(|| chromium(dir.path(), &url, &["--dump-dom"]));
    assert!(
        dom.contains("data-loaded=\"yes\""),
        "the script did not finish:\n{dom}"
    );
    for device in ["kitchen", "sim-1", "sim-2", "sim-3"] {
        assert!(
            dom.contains(&format!("data-device=\"{device}\"")),
            "{device} not rendered:\n{dom}"
        );
    }
    assert!(
        dom.contains("temperature_1 = 21.5"),
        "kitchen's value:\n{dom}"
    );
    let error_cell = dom
        .split("class=\"frame-error\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no refused frame rendered:\n{dom}"));
    let error_row = error_cell.split("</tr>").next().unwrap();
    assert!(error_row.contains("uart0"), "{error_row}");
    assert!(error_row.contains("CRC mismatch: computed"), "{error_row}");
    // The raw bytes of the refused frame, in hex (header 0007, seq 02, LPP 0167 00d7, bad CRC).
    assert!(error_row.contains("0007020167"), "{error_row}");

    let screenshot = artifacts().join("status-page.png");
    let shot_arg = format!("--screenshot={}", screenshot.display());
    let _ = std::fs::remove_file(&screenshot);
    tokio::task::block_in_place(|| chromium(dir.path(), &url, &[&shot_arg]));
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    running.daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_is_asked_for_a_login_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let hash = sensorgate::broker::hash_password("wonderland").unwrap();
    let config = config(dir.path())
        .http("")
        .user("alice", &hash, r#"http = "read""#);
    let running = start(dir.path(), config);
    let page = running.page;
    wait_for(Duration::from_secs(15), "sim-3 in the API", || {
        let devices = get(page, "/api/devices", Some(("alice", "wonderland"))).body;
        devices.contains("\"sim-3\"").then_some(())
    });
    let refused = chromium(dir.path(), &format!("http://{page}/"), &["--dump-dom"]);
    assert!(!refused.contains("data-device"), "{refused}");
    assert!(!refused.contains("Frame inspector"), "{refused}");
    let with_login = chromium(
        dir.path(),
        &format!("http://alice:wonderland@{page}/"),
        &["--dump-dom"],
    );
    assert!(with_login.contains("data-loaded=\"yes\""), "{with_login}");
    assert!(with_login.contains("data-device=\"sim-3\""), "{with_login}");
    running.daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_the_demo_devices_with_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &demo_config(""));
    daemon.wait_for_log("status page on http://", 1, Duration::from_secs(10));
    let log = daemon.log();
    let page: std::net::SocketAddr = log
        .split("status page on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in\n{log}"));
    // The demo's serial-style simulator, its encrypted nodes and its radio's configured node.
    let expected = [
        "sim-1",
        "sim-2",
        "sim-3",
        "vault-1",
        "vault-2",
        "greenhouse",
    ];
    wait_for(
        Duration::from_secs(20),
        "the demo's devices in the API",
        || {
            let devices = get(page, "/api/devices", None).body;
            expected
                .iter()
                .all(|name| devices.contains(&format!("\"name\":\"{name}\"")))
                .then_some(())
        },
    );
    let url = format!("http://{page}/");
    let dom = tokio::task::block_in_place(|| chromium(dir.path(), &url, &["--dump-dom"]));
    assert!(dom.contains("data-loaded=\"yes\""), "{dom}");
    for name in expected {
        let row = dom
            .split(&format!("data-device=\"{name}\""))
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap_or_else(|| panic!("{name} not rendered:\n{dom}"));
        assert!(row.contains("online"), "{name}: {row}");
        assert!(row.contains(" = "), "{name} shows no field values: {row}");
    }
    let screenshot = artifacts().join("demo-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let shot_arg = format!("--screenshot={}", screenshot.display());
    tokio::task::block_in_place(|| chromium(dir.path(), &url, &[&shot_arg]));
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let (status, _) = daemon.stop();
    assert!(status.success(), "{status}");
}

/// Runs `steps` (JavaScript function bodies, see tests/http/cdp.py) in the page at `url` in a headless
/// Chromium driven over the DevTools protocol; their return values.
fn drive(dir: &Path, url: &str, steps: &[&str]) -> Vec<serde_json::Value> {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let output = sensorgate_testkit::python::run_script(
        "json",
        "python3",
        "tests/http/cdp.py",
        &[Path::new(url), profile.path()],
        &serde_json::to_string(steps).unwrap(),
    );
    serde_json::from_str(&output).unwrap_or_else(|_| panic!("cdp.py printed {output:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_buttons_are_shown_to_admins_only_and_forget_reload_and_command_work() {
    let dir = tempfile::tempdir().unwrap();
    let hash = sensorgate::broker::hash_password("wonderland").unwrap();
    // The serial port takes commands, so that the page's command goes the whole commands path.
    let config = config_with_serial(dir.path(), "commands = true")
        .broker("allow_anonymous = true")
        .http("");
    let mut running = start(dir.path(), admin_and_reader(config, &hash));
    let page = running.page;
    running.dongle.write(&frame_from(9, 1, true)).await;
    running.dongle.write(&kitchen_frame(1, true)).await;
    wait_for(
        Duration::from_secs(15),
        "uart0-9 and kitchen in the API",
        || {
            let devices = get(page, "/api/devices", Some(("alice", "wonderland"))).body;
            (devices.contains("\"uart0-9\"") && devices.contains("\"kitchen\"")).then_some(())
        },
    );

    // A reader sees no admin section and no forget buttons.
    let seen = tokio::task::block_in_place(|| {
        drive(
            dir.path(),
            &format!("http://alice:wonderland@{page}/"),
            &[
                "await until(() => document.querySelector('tr[data-device=\"uart0-9\"]'));
               return { hidden: document.getElementById('admin').hidden,
                        forget: document.querySelectorAll('button.forget').length };",
            ],
        )
    });
    assert_eq!(seen[0], serde_json::json!({"hidden": true, "forget": 0}));

    // An admin sees them; forget takes two clicks; reload and a command answer in the admin line.
    let mut results =
        mqtt::subscribe(running.daemon.addr, "watch-set", "sensorgate/+/set/#", 0).await;
    let seen = tokio::task::block_in_place(|| {
        drive(
            dir.path(),
            &format!("http://root:wonderland@{page}/"),
            &[
                "await until(() => !document.getElementById('admin').hidden);
                 const row = () => document.querySelector('tr[data-device=\"uart0-9\"]');
                 (await until(() => row() && row().querySelector('button.forget'))).click();
                 (await until(() => row() && row().querySelector('button.confirming'))).click();
                 return await until(() => { const t = document.getElementById('admin-result').textContent;
                                           return t.includes('forgotten') && t; });",
                "await until(() => !document.querySelector('tr[data-device=\"uart0-9\"]'));
                 document.getElementById('admin-reload').click();
                 return await until(() => { const t = document.getElementById('admin-result').textContent;
                                           return t.startsWith('reload: ') && t; });",
                "await until(() => [...document.getElementById('command-device').options].some(o => o.value === 'kitchen'));
                 document.getElementById('command-device').value = 'kitchen';
                 document.getElementById('command-text').value = '{\"digital_output_1\": 1}';
                 document.getElementById('command-send').click();
                 return await until(() => { const t = document.getElementById('admin-result').textContent;
                                           return t.startsWith('command to kitchen: ') && t; });",
            ],
        )
    });
    let text = |i: usize| seen[i].as_str().unwrap_or_default().to_string();
    assert!(text(0).starts_with("forget uart0-9: 200 "), "{seen:?}");
    assert!(text(1).starts_with("reload: 202 "), "{seen:?}");
    assert!(text(2).contains("sensorgate/kitchen/set"), "{seen:?}");
    let devices = get(page, "/api/devices", Some(("alice", "wonderland"))).body;
    assert!(!devices.contains("\"uart0-9\""), "{devices}");
    running
        .daemon
        .wait_for_log("configuration reloaded", 1, Duration::from_secs(10));
    // The command went the commands path: its result is published.
    let mut set_seen = Vec::new();
    let result = results
        .wait_for(Duration::from_secs(10), &mut set_seen, |m| {
            m.topic == "sensorgate/kitchen/set/result"
        })
        .await;
    assert!(result.is_some(), "{set_seen:?}");
    running.daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_without_the_page_header_or_from_another_site_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hash = sensorgate::broker::hash_password("wonderland").unwrap();
    let config = config(dir.path())
        .http("")
        .user("root", &hash, r#"http = "admin""#);
    let running = start(dir.path(), config);
    let page = running.page;
    let token = base64::engine::general_purpose::STANDARD.encode("root:wonderland");
    let post = |extra: &str| {
        let body = r#"{"device": "nobody"}"#;
        let request = format!(
            "POST /api/forget HTTP/1.1\r\nHost: {page}\r\nAuthorization: Basic {token}\r\n{extra}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        crate::client::exchange(page, request.as_bytes())
    };
    // What another site's form makes the browser send: the remembered login, no header.
    let forged = post("Origin: http://evil.example\r\n");
    assert_eq!(forged.status, 403, "{}", forged.body);
    let forged = post("X-Sensorgate-Request: page\r\nOrigin: http://evil.example\r\n");
    assert_eq!(forged.status, 403, "{}", forged.body);
    // The page itself (same origin, with the header), and a script without an Origin, get through.
    let same = post(&format!(
        "X-Sensorgate-Request: page\r\nOrigin: http://{page}\r\n"
    ));
    assert_eq!(same.status, 404, "{}", same.body);
    assert_eq!(post("X-Sensorgate-Request: curl\r\n").status, 404);
    // A CORS preflight gets no permission.
    let preflight = crate::client::exchange(
        page,
        format!(
            "OPTIONS /api/forget HTTP/1.1\r\nHost: {page}\r\nOrigin: http://evil.example\r\n\
             Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(preflight.header("access-control-allow-origin").is_none());
    assert_ne!(preflight.status / 100, 2);
    running.daemon.stop();
}
