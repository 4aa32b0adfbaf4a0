//! The command line (`sensorgate --help`), run the way a user runs it: the real `sensorgate` binary with arguments,
//! standard input and configuration files written to a temporary directory, judged by its exit status and by
//! what it prints. Every run is bounded in time and its process killed if it overstays; the daemon itself is
//! started here only to fail (a broken file, a port that is taken), never left running.

use std::io::{Read, Seek, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sensorgate_testkit::config::ConfigBuilder;
use serde_json::json;

/// How long one invocation may take before the test calls it hung.
const RUN_BOUND: Duration = Duration::from_secs(30);

/// What one invocation of the binary did.
pub(crate) struct Outcome {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Outcome {
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub(crate) fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// Everything it printed, for assertion messages.
    pub(crate) fn dump(&self) -> String {
        format!(
            "status {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Kills the child (by its own handle, so only the process this test started) unless it has exited.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `sensorgate ARGS` in the crate's directory (so `config/demo.toml` means what it says in a checkout),
/// feeding `stdin` when given, with the systemd and logging variables cleared and then `env` set; waits at
/// most [`RUN_BOUND`] for it to exit.
pub(super) fn sensorgate(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Outcome {
    let mut stdout = tempfile::tempfile().unwrap();
    let mut stderr = tempfile::tempfile().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_sensorgate"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("STATE_DIRECTORY")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap());
    let mut child = KillOnDrop(command.spawn().unwrap());
    if let Some(input) = stdin {
        let mut pipe = child.0.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
        // Dropping the pipe closes it: the end of input.
    }
    let deadline = Instant::now() + RUN_BOUND;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "sensorgate {args:?} still running after {RUN_BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |file: &mut std::fs::File| {
        let mut text = String::new();
        file.rewind().unwrap();
        file.read_to_string(&mut text).unwrap();
        text
    };
    Outcome {
        status,
        stdout: read(&mut stdout),
        stderr: read(&mut stderr),
    }
}

pub(crate) fn run(args: &[&str]) -> Outcome {
    sensorgate(args, None, &[])
}

pub(crate) fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn version_prints_name_and_package_version() {
    let outcome = run(&["--version"]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert_eq!(
        outcome.stdout,
        format!("sensorgate {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_shipped_configuration_files_check_clean() {
    let outcome = run(&["check-config", "config/demo.toml"]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert_eq!(outcome.stdout, "config/demo.toml: ok\n");
    assert_eq!(outcome.stderr, "");
    // The reference names the machine's key files, which check-config reads as `run` does: here, where
    // they do not exist, the first one named is all it may complain about.
    let outcome = run(&["check-config", "config/sensorgate.toml"]);
    if !std::path::Path::new("/etc/sensorgate/lora.key").exists() {
        assert_eq!(outcome.code(), Some(2), "{}", outcome.dump());
        assert!(
            outcome
                .stderr
                .starts_with("/etc/sensorgate/lora.key: cannot read the key file: No such file"),
            "{}",
            outcome.dump()
        );
        assert!(
            outcome.stderr.contains("source[2].key_file"),
            "{}",
            outcome.dump()
        );
    }
    // The file may also come from --config, as it does for `run`.
    let outcome = run(&["check-config", "-c", "config/demo.toml"]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert_eq!(outcome.stdout, "config/demo.toml: ok\n");
}

#[test]
fn check_config_without_a_path_checks_the_installed_default() {
    // Whether this machine has the file or not, the answer is about the default path.
    let outcome = run(&["check-config"]);
    let said = format!("{}{}", outcome.stdout, outcome.stderr);
    assert!(
        said.starts_with("/etc/sensorgate/sensorgate.toml"),
        "{}",
        outcome.dump()
    );
}

/// A broken configuration and where, and in what words, the gateway must point at it.
struct Broken {
    what: &'static str,
    toml: &'static str,
    /// 1-based line of the mistake, and the text on that line the column must point at.
    line: usize,
    at: &'static str,
    /// The key the message names.
    key: &'static str,
    /// Fragments that tell the user what to write instead.
    fix: &'static [&'static str],
}

const BROKEN: &[Broken] = &[
    Broken {
        what: "a WebSocket path without its leading '/'",
        toml: "[[broker.listener]]\nbind = \"127.0.0.1:9001\"\ntransport = \"websocket\"\npath = \"mqtt\"\n",
        line: 4,
        at: "\"mqtt\"",
        key: "path",
        fix: &["starting with '/'", "\"/mqtt\""],
    },
    Broken {
        what: "an empty WebSocket path",
        toml: "[[broker.listener]]\nbind = \"127.0.0.1:9001\"\ntransport = \"websocket\"\npath = \"\"\n",
        line: 4,
        at: "\"\"",
        key: "path",
        fix: &["is empty", "starting with '/'", "\"/mqtt\""],
    },
    Broken {
        what: "unknown key, with a suggestion",
        toml: "[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\nbuad = 9600\n",
        line: 5,
        at: "buad",
        key: "buad",
        fix: &["did you mean `baud`"],
    },
    Broken {
        what: "baud that is not a number",
        toml: "[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\nbaud = \"fast\"\n",
        line: 5,
        at: "\"fast\"",
        key: "baud",
        fix: &["baud = 115200"],
    },
    Broken {
        what: "duplicate source name",
        toml: "[[source]]\nname = \"a\"\nkind = \"simulator\"\n\n[[source]]\nname = \"a\"\nkind = \"simulator\"\n",
        line: 6,
        at: "\"a\"",
        key: "name",
        fix: &["line 2", "unique"],
    },
    Broken {
        what: "wildcard in base_topic",
        toml: "[gateway]\nbase_topic = \"sensor+gate\"\n",
        line: 2,
        at: "\"sensor+gate\"",
        key: "base_topic",
        fix: &["'+'", "wildcards belong in filters"],
    },
    Broken {
        what: "unknown payload format",
        toml: "[[source]]\nname = \"s\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\npayload = \"xml\"\n",
        line: 5,
        at: "\"xml\"",
        key: "payload",
        fix: &["write one of \"json\", \"lpp\", \"mysensors\""],
    },
    Broken {
        what: "spreading factor above 12",
        toml: "[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nbackend = \"simulator\"\n\
               frequency = 868100000\nspreading_factor = 13\n",
        line: 6,
        at: "13",
        key: "spreading_factor",
        fix: &["7..=12"],
    },
    Broken {
        what: "bandwidth that LoRa does not have",
        toml: "[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nbackend = \"simulator\"\n\
               frequency = 868100000\nbandwidth = 100000\n",
        line: 6,
        at: "100000",
        key: "bandwidth",
        // The radio driver's own table and words: check-config asks the driver.
        fix: &["one of", "125000", "500000"],
    },
    Broken {
        what: "a spool sync period that overflowed the uplink's clock",
        toml: "[upstream]\nurl = \"mqtts://mqtt.example.com\"\n\n[upstream.spool]\nsync = \"213503982334601d\"\n",
        line: 5,
        at: "\"213503982334601d\"",
        key: "sync",
        fix: &["above the maximum \"30d\"", "e.g. \"1s\""],
    },
    Broken {
        what: "base_topic under $SYS",
        toml: "[gateway]\nbase_topic = \"$SYS\"\n",
        line: 2,
        at: "\"$SYS\"",
        key: "base_topic",
        fix: &["starts with '$'", "write e.g. \"sensorgate\""],
    },
];

#[test]
fn broken_files_get_one_located_line_naming_the_key_and_the_fix_from_check_config_and_run() {
    let dir = tempfile::tempdir().unwrap();
    for (index, case) in BROKEN.iter().enumerate() {
        let path = write_file(dir.path(), &format!("broken-{index}.toml"), case.toml);
        let source_line = case.toml.lines().nth(case.line - 1).unwrap();
        let column = source_line.find(case.at).unwrap() + 1;
        let location = format!("{path}:{}:{column}: ", case.line);

        let checked = run(&["check-config", &path]);
        let what = case.what;
        assert_eq!(checked.code(), Some(2), "{what}: {}", checked.dump());
        assert_eq!(checked.stdout, "", "{what}");
        let lines = checked.stderr_lines();
        assert_eq!(lines.len(), 1, "{what}: one line: {}", checked.dump());
        let message = lines[0];
        assert!(
            message.starts_with(&location),
            "{what}: wanted {location}..., got {message}"
        );
        assert!(
            message.contains(case.key),
            "{what}: names {}: {message}",
            case.key
        );
        for fragment in case.fix {
            assert!(
                message.contains(fragment),
                "{what}: says {fragment:?}: {message}"
            );
        }

        // `run` reads the file the same way and refuses it in the same words, with or without the
        // subcommand spelled out.
        for args in [["run", "-c", &path].as_slice(), ["-c", &path].as_slice()] {
            let refused = run(args);
            assert_eq!(
                refused.code(),
                Some(2),
                "{what}: {args:?}: {}",
                refused.dump()
            );
            assert_eq!(refused.stderr, checked.stderr, "{what}: {args:?}");
            assert_eq!(refused.stdout, "", "{what}: {args:?}");
        }
    }
}

#[test]
fn a_missing_file_is_refused_with_how_to_name_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml").display().to_string();

    let checked = run(&["check-config", &path]);
    assert_eq!(checked.code(), Some(2), "{}", checked.dump());
    assert_eq!(checked.stderr_lines().len(), 1, "{}", checked.dump());
    assert!(
        checked.stderr.starts_with(&format!("{path}: cannot read")),
        "{}",
        checked.dump()
    );
    assert!(
        checked.stderr.contains("sensorgate check-config PATH"),
        "{}",
        checked.dump()
    );

    let refused = run(&["run", "-c", &path]);
    assert_eq!(refused.code(), Some(2), "{}", refused.dump());
    assert_eq!(refused.stderr_lines().len(), 1, "{}", refused.dump());
    assert!(
        refused.stderr.starts_with(&format!("{path}: cannot read"))
            && refused.stderr.contains("sensorgate run -c PATH"),
        "{}",
        refused.dump()
    );
}

/// A file that would start a broker on `port`, a simulator and a state directory in `dir`.
fn runnable_config(dir: &Path, port: u16) -> String {
    ConfigBuilder::new("test-gw")
        .source("sim", "simulator", "")
        .toml_at(&dir.join("state"), port)
}

#[test]
fn run_refuses_a_broken_file_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let state_dir = dir.path().join("state");
    // The mistake is in the last section: everything before it is fine and would start.
    let broken = format!(
        "{}\n[[source]]\nname = \"sim\"\nkind = \"simulator\"\n",
        runnable_config(dir.path(), port)
    );
    let path = write_file(dir.path(), "broken.toml", &broken);
    let refused = sensorgate(&["run", "-c", &path], None, &[("RUST_LOG", "debug")]);
    assert_eq!(refused.code(), Some(2), "{}", refused.dump());
    // Not one log record even at debug level: no stage was started, nothing was created.
    assert_eq!(refused.stderr_lines().len(), 1, "{}", refused.dump());
    // The second `name = "sim"` is the file's next-to-last line.
    let line = broken.lines().count() - 1;
    assert!(
        refused.stderr.starts_with(&format!("{path}:{line}:8: ")),
        "{}",
        refused.dump()
    );
    assert!(refused.stderr.contains("unique"), "{}", refused.dump());
    assert!(!state_dir.exists(), "state directory created");

    // The control: without the mistake the same run gets as far as the broker (which cannot bind, as
    // the test holds its port), creating the state directory and logging on the way.
    let path = write_file(dir.path(), "fixed.toml", &runnable_config(dir.path(), port));
    let started = sensorgate(&["run", "-c", &path], None, &[("RUST_LOG", "debug")]);
    assert_eq!(started.code(), Some(1), "{}", started.dump());
    assert!(started.stderr_lines().len() > 1, "{}", started.dump());
    assert!(state_dir.is_dir(), "{}", started.dump());
}

#[test]
fn a_listener_that_cannot_bind_exits_1_with_one_line_saying_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = write_file(
        dir.path(),
        "sensorgate.toml",
        &runnable_config(dir.path(), addr.port()),
    );
    let outcome = run(&["run", "-c", &path]);
    assert_eq!(outcome.code(), Some(1), "{}", outcome.dump());
    assert_eq!(outcome.stdout, "");
    let about_it: Vec<&str> = outcome
        .stderr_lines()
        .into_iter()
        .filter(|line| line.contains(&addr.to_string()))
        .collect();
    assert_eq!(about_it.len(), 1, "one line: {}", outcome.dump());
    let line = about_it[0];
    assert!(line.starts_with("sensorgate: "), "{line}");
    assert!(line.contains("cannot listen"), "{line}");
    assert!(line.contains("change [[broker.listener]] bind"), "{line}");
    drop(taken);
}

#[test]
fn hash_password_prints_an_argon2id_string_the_broker_accepts() {
    let password = "correct horse battery staple";
    let first = sensorgate(
        &["hash-password"],
        Some(format!("{password}\n").as_bytes()),
        &[],
    );
    assert_eq!(first.code(), Some(0), "{}", first.dump());
    assert_eq!(first.stdout.lines().count(), 1, "{}", first.dump());
    let hash = first.stdout.trim_end();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(sensorgate::broker::verify_password(password, hash));
    assert!(!sensorgate::broker::verify_password(
        "correct horse battery stapler",
        hash
    ));
    // The newline that ends the typed line is not part of the password.
    assert!(!sensorgate::broker::verify_password(
        &format!("{password}\n"),
        hash
    ));

    // Without a newline (echo -n) it is the same password, under a fresh salt.
    let second = sensorgate(&["hash-password"], Some(password.as_bytes()), &[]);
    assert_eq!(second.code(), Some(0), "{}", second.dump());
    let second_hash = second.stdout.trim_end();
    assert_ne!(second_hash, hash, "salted");
    assert!(sensorgate::broker::verify_password(password, second_hash));
}

#[test]
fn hash_password_refuses_an_empty_password() {
    for input in [&b""[..], b"\n"] {
        let outcome = sensorgate(&["hash-password"], Some(input), &[]);
        assert_eq!(outcome.code(), Some(2), "{input:?}: {}", outcome.dump());
        assert_eq!(outcome.stdout, "", "{input:?}");
        assert_eq!(outcome.stderr_lines().len(), 1, "{}", outcome.dump());
        assert!(
            outcome.stderr.contains("standard input"),
            "{}",
            outcome.dump()
        );
    }
}

/// `sensorgate decode ARGS`, which must succeed and print a JSON array of readings.
fn decoded(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["decode"];
    all.extend_from_slice(args);
    let outcome = run(&all);
    assert_eq!(outcome.code(), Some(0), "{args:?}: {}", outcome.dump());
    serde_json::from_str(&outcome.stdout).unwrap()
}

#[test]
fn decode_prints_the_readings_as_json() {
    let lpp = decoded(&["--payload", "lpp", "03 67 01 10 05 67 00 FF"]);
    assert_eq!(
        lpp,
        json!([{
            "address": "",
            "seq": null,
            "fields": { "temperature_3": 27.2, "temperature_5": 25.5 }
        }])
    );

    let mysensors = decoded(&["--payload", "mysensors", "--text", "12;6;1;0;0;21.5"]);
    assert_eq!(
        mysensors,
        json!([{ "address": "12", "seq": null, "fields": { "temp_6": 21.5 } }])
    );

    // RadioHead: TO = broadcast, FROM = 0x2A (the address), ID = 7 (the sequence number), FLAGS = 0.
    let radiohead = decoded(&[
        "--header",
        "radiohead",
        "--payload",
        "lpp",
        "FF 2A 07 00 03 67 01 10",
    ]);
    assert_eq!(
        radiohead,
        json!([{ "address": "42", "seq": 7, "fields": { "temperature_3": 27.2 } }])
    );
}

#[test]
fn decode_refuses_what_is_not_a_packet_with_exit_2() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--payload", "lpp", "03 67 zz"], &["hexadecimal", "zz"]),
        (&["--payload", "lpp", "03 6"], &["odd number of hex digits"]),
        (&["--payload", "lpp", ""], &["no packet given"]),
        (
            &["--payload", "mysensors", "12;6;1;0;0;21.5"],
            &["hexadecimal", "--text"],
        ),
        (&["--payload", "xml", "00"], &["\"xml\"", "lpp"]),
        (
            &["--header", "rh", "--payload", "lpp", "00"],
            &["\"rh\"", "radiohead"],
        ),
        (&["--payload", "lpp", "03 67 01"], &["temperature"]),
    ];
    for (args, said) in cases {
        let mut all = vec!["decode"];
        all.extend_from_slice(args);
        let outcome = run(&all);
        assert_eq!(outcome.code(), Some(2), "{args:?}: {}", outcome.dump());
        assert_eq!(outcome.stdout, "", "{args:?}");
        let lines = outcome.stderr_lines();
        assert_eq!(lines.len(), 1, "{args:?}: {}", outcome.dump());
        for fragment in *said {
            assert!(
                lines[0].contains(fragment),
                "{args:?}: says {fragment:?}: {}",
                lines[0]
            );
        }
    }
}
