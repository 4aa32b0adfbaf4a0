//! Fuzzing the two text parsers an operator or a client reaches, with proptest (a bounded corpus run
//! under `cargo test`).
//!
//! The configuration: [`Config::parse`] gets random mutations of the shipped `config/sensorgate.toml`
//! and `config/demo.toml` (lines deleted, duplicated, swapped or inserted; values and keys replaced by
//! hostile ones, including inline tables and arrays nested 10,000 deep and huge numbers and durations;
//! random bytes spliced in) and plain noise. It must never panic or overflow the stack (parses run on a
//! 2 MiB stack), and every error must render as `PATH:LINE:COL: message` with the position inside the
//! text.
//!
//! Topics: the configuration's `check_topic_name` and `check_topic_filter` and the broker's
//! `topic::check_name` and `topic::check_filter` (with their level limit) on random strings (and
//! 10,000-level ones) agree with a reference reading of MQTT 3.1.1 section 4.7; the matchers
//! `topic_matches`, `filters_overlap` and `filter_within` (as the ACL and the uplink import them from
//! `sensorgate::topic`) agree with a small iterative reference matcher written here, on random and on
//! 10,000-level topics and filters. The overlap and containment references are exact: they build a
//! witness topic (or the canonical instances of a filter, with fresh levels) and ask the reference
//! matcher.
//!
//! Bounds: [`CASES`] cases per property (fewer for the deep ones), texts of a few KiB; the file runs in
//! seconds in a debug build. Failures are shrunk and saved by proptest next to this file.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;

use sensorgate::broker::acl::{filter_within, filters_overlap, topic_matches};
use sensorgate::config::{check_topic_filter, check_topic_name, Config, ConfigError};
use sensorgate::topic::{self, TopicError};
use sensorgate::uplink::forward::topic_matches as uplink_topic_matches;

const REFERENCE: &str = include_str!("../../config/sensorgate.toml");
const DEMO: &str = include_str!("../../config/demo.toml");
/// The file name errors carry.
const PATH: &str = "fuzz/sensorgate.toml";
const CASES: u32 = 2_000;

/// `cases` cases (a tenth of them in `scripts/test --quick`, `sensorgate_testkit::quick`).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: sensorgate_testkit::quick::cases(cases),
        max_shrink_iters: 2_048,
        ..ProptestConfig::default()
    }
}

/// Runs `f` on a thread with a 2 MiB stack (what a tokio worker has, where a reload parses), so a stack
/// overflow shows up whatever `RUST_MIN_STACK` the test runner has.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("fuzz-2mib".into())
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------

/// Asserts that `error` renders as `PATH:LINE:COL: message`, pointing inside `text`.
fn assert_located(text: &str, error: &ConfigError) {
    let shown = error.to_string();
    assert_eq!(error.path, Path::new(PATH), "{shown}");
    assert!(error.line >= 1 && error.column >= 1, "no position: {shown}");
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        error.line <= lines.len(),
        "line {} of {}: {shown}",
        error.line,
        lines.len()
    );
    let width = lines[error.line - 1].chars().count();
    assert!(
        error.column <= width + 1,
        "column {} of a {width}-character line: {shown}",
        error.column
    );
    let prefix = format!("{PATH}:{}:{}: ", error.line, error.column);
    let message = shown
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{shown:?} does not start with {prefix:?}"));
    assert_eq!(message, error.message);
    assert!(
        !message.lines().next().unwrap_or("").trim().is_empty(),
        "empty message: {shown:?}"
    );
}

/// Parses `text` on a worker-sized stack; errors must be located, accepted configurations sane.
fn check_parse(text: String) {
    on_worker_stack(move || match Config::parse(&text, Path::new(PATH)) {
        Ok(config) => {
            let base = &config.gateway.base_topic;
            assert!(
                check_topic_name(base).is_ok(),
                "accepted base_topic {base:?}"
            );
        }
        Err(error) => assert_located(&text, &error),
    })
}

/// `{ a = { a = ... 1 ... } }` and `[[[ ... 1 ... ]]]`, `depth` levels.
fn nested(depth: usize, table: bool) -> String {
    if table {
        format!("{}1{}", "{ a = ".repeat(depth), " }".repeat(depth))
    } else {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// Values a key may be given: wrong types, out of range, overflowing, hostile strings, deep nesting.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "", "\"\"", "0", "-1", "1", "65536", "4294967296", "99999999999999999999999",
            "9223372036854775807", "-9223372036854775808", "1e400", "-0.0", "nan", "inf", "-inf",
            "0x7fffffffffffffff", "0o777", "0b1", "+1", "1_000", "1__0", "true", "[]", "{}",
            "[1, \"a\"]", "{ a = 1 }", "1979-05-27T07:32:00Z", "07:32:00", "\"\"\"", "'''",
            "\"213503982334601d\"", "\"18446744073709551615s\"", "\"584942417355y\"", "\"1ns\"",
            "\"0s\"", "\"-1s\"", "\"1.5s\"", "\"999999999999999TiB\"", "\"18446744073709551616B\"",
            "\"0B\"", "\"$SYS\"", "\"$x\"", "\"#\"", "\"+\"", "\"a/#\"", "\"a//b\"", "\"/a\"",
            "\"a\\u0000b\"", "\"a\\nb\"", "\"\\u202e\"", "\"é\"", "\"127.0.0.1:99999\"",
            "\"[::1]:1883\"", "\"0.0.0.0:0\"", "\"/dev/null\"", "\"../../etc/passwd\"",
            "\"mqtt://example.com\"", "\"mqtts://:0\"", "\"lines\"", "\"cobs\"", "\"sx1262\"",
            "\"pi\"", "\"simulator\"", "\"crc16-ccitt-false\"", "\"radiohead\"", "\"mysensors\"",
            "\"4/9\"", "\"odd\"", "\"always\"", "\"never\"", "\"debug\"", "0x12", "0x34",
        ])
        .prop_map(str::to_string),
        1 => (0usize..200, any::<bool>()).prop_map(|(depth, table)| nested(depth, table)),
        1 => "[a-zA-Z0-9 ._/:-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        1 => (1usize..4_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        1 => (1usize..400).prop_map(|n| "9".repeat(n)),
    ]
}

/// Keys: the shipped ones elsewhere, misspelt, empty, quoted, dotted.
fn hostile_key() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::sample::select(vec![
            "", "\"\"", "name", "kind", "bind", "baud", "buad", "tls", "id", "base_topic",
            "max_topic_levels", "sync", "session_expiry", "password_hash", "read", "write",
            "a.b.c", "\"a.b\"", "gateway.id", "\"quoted key\"", "1", "[source]", "=", "#",
            "é", "framing", "crc", "header", "payload", "backend", "forward", "spool", "user",
        ])
        .prop_map(str::to_string),
        1 => (1usize..200).prop_map(|n| vec!["k"; n].join(".")),
    ]
}

/// Whole lines to insert: headers (known, misplaced, repeated), assignments, noise.
fn hostile_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "[gateway]",
            "[log]",
            "[broker]",
            "[[broker.listener]]",
            "[[broker.user]]",
            "[publish]",
            "[[source]]",
            "[devices]",
            "[[device]]",
            "[upstream]",
            "[upstream.spool]",
            "[upstream.tls]",
            "[[upstream.forward]]",
            "[[gateway]]",
            "[source]",
            "[a.b]",
            "[]",
            "[[]]",
            "[",
            "]]",
            "# comment",
            "",
            "name = \"dup\"",
            "kind = \"serial\"",
            "kind = \"sx1276\"",
            "kind = \"sx1262\"",
            "kind = \"simulator\"",
            "x = 1",
            "url = \"mqtts://broker.example.com:8883\"",
            "sync = \"213503982334601d\"",
            "base_topic = \"$SYS\"",
            "source = \"nope\"",
            "address = \"1\"",
            "\t",
            "\r",
            "key = \"\"\"\nmulti\nline\"\"\"",
        ])
        .prop_map(str::to_string),
        (hostile_key(), hostile_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        (1usize..200).prop_map(|n| format!("[{}]", vec!["t"; n].join("."))),
        "[ -~]{0,40}",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    Insert(prop::sample::Index, String),
    /// The right-hand side of a `key = value` line.
    ReplaceValue(prop::sample::Index, String),
    /// The left-hand side of a `key = value` line.
    ReplaceKey(prop::sample::Index, String),
    /// Another line's value.
    MoveValue(prop::sample::Index, prop::sample::Index),
    /// Bytes spliced in at a byte offset (invalid UTF-8 shown as U+FFFD: the text is a `&str`).
    Splice(prop::sample::Index, Vec<u8>),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        3 => any::<Index>().prop_map(Mutation::Delete),
        2 => any::<Index>().prop_map(Mutation::Duplicate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        2 => (any::<Index>(), hostile_line()).prop_map(|(i, l)| Mutation::Insert(i, l)),
        5 => (any::<Index>(), hostile_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        2 => (any::<Index>(), hostile_key()).prop_map(|(i, k)| Mutation::ReplaceKey(i, k)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::MoveValue(a, b)),
        1 => (any::<Index>(), vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Splice(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// The indices of lines that hold `key = value` (not comments, not headers).
fn assignments(lines: &[String]) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            !t.starts_with('#') && !t.starts_with('[') && t.contains('=')
        })
        .map(|(i, _)| i)
        .collect()
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    for mutation in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let n = lines.len();
        let kv = assignments(&lines);
        match mutation {
            Mutation::Delete(i) => {
                lines.remove(i.index(n));
            }
            Mutation::Duplicate(i) => {
                let i = i.index(n);
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            Mutation::Swap(a, b) => lines.swap(a.index(n), b.index(n)),
            Mutation::Insert(i, line) => lines.insert(i.index(n + 1), line.clone()),
            Mutation::ReplaceValue(i, value) if !kv.is_empty() => {
                let at = kv[i.index(kv.len())];
                let key = lines[at].split('=').next().unwrap_or("").to_string();
                lines[at] = format!("{key}= {value}");
            }
            Mutation::ReplaceKey(i, key) if !kv.is_empty() => {
                let at = kv[i.index(kv.len())];
                let (_, value) = lines[at].split_once('=').unwrap_or(("", ""));
                lines[at] = format!("{key} ={value}");
            }
            Mutation::MoveValue(a, b) if !kv.is_empty() => {
                let from = kv[a.index(kv.len())];
                let to = kv[b.index(kv.len())];
                let value = lines[from]
                    .split_once('=')
                    .map_or("", |(_, v)| v)
                    .to_string();
                let key = lines[to].split('=').next().unwrap_or("").to_string();
                lines[to] = format!("{key}={value}");
            }
            Mutation::Splice(i, bytes) => {
                let mut joined = lines.join("\n").into_bytes();
                let at = i.index(joined.len() + 1);
                joined.splice(at..at, bytes.iter().copied());
                lines = String::from_utf8_lossy(&joined)
                    .split('\n')
                    .map(str::to_string)
                    .collect();
            }
            Mutation::Truncate(i) => {
                let joined = lines.join("\n");
                let mut at = i.index(joined.len() + 1);
                while !joined.is_char_boundary(at) {
                    at -= 1;
                }
                lines = joined[..at].split('\n').map(str::to_string).collect();
            }
            _ => {}
        }
    }
    lines.join("\n")
}

#[test]
fn shipped_configurations_parse() {
    for text in [REFERENCE, DEMO] {
        if let Err(error) = Config::parse(text, Path::new(PATH)) {
            panic!("{error}");
        }
    }
}

proptest! {
    // The reference file is 430 lines, parsed twice (spans, then serde): 15-35 ms in a debug build,
    // where toml_edit is unoptimised. 400 cases keep this under 15 s.
    #![proptest_config(config(CASES / 5))]

    /// One to eight random mutations of the shipped reference file.
    #[test]
    fn mutated_reference_config(mutations in vec(mutation(), 1..8)) {
        check_parse(apply(REFERENCE, &mutations));
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// One to eight random mutations of the demo file.
    #[test]
    fn mutated_demo_config(mutations in vec(mutation(), 1..8)) {
        check_parse(apply(DEMO, &mutations));
    }
}

proptest! {
    #![proptest_config(config(CASES / 2))]

    /// Noise, and noise made of TOML's own punctuation.
    #[test]
    fn noise_config(
        text in prop_oneof![
            vec(any::<u8>(), 0..2_048).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            vec(prop::sample::select(vec![
                "[", "]", "[[", "]]", "{", "}", "=", ".", ",", "\"", "'", "\"\"\"", "'''", "\n",
                " ", "#", "a", "1", "source", "name", "true", "\\", "\\u", "\r\n", "\t",
            ]), 0..400).prop_map(|parts| parts.concat()),
        ],
    ) {
        check_parse(text);
    }

    /// A hostile value for every key of a fresh, tiny file in each section.
    #[test]
    fn hostile_values_in_each_section(
        section in prop::sample::select(vec![
            "[gateway]", "[log]", "[broker]", "[[broker.listener]]", "[[broker.user]]", "[publish]",
            "[[source]]\nname = \"s\"\nkind = \"serial\"\npath = \"/dev/null\"",
            "[[source]]\nname = \"s\"\nkind = \"sx1276\"\nbackend = \"simulator\"",
            "[devices]", "[upstream]\nurl = \"mqtts://h:8883\"", "[upstream.spool]",
            "[[upstream.forward]]\nfilter = \"a/#\"",
        ]),
        assignments in vec((hostile_key(), hostile_value()), 1..4),
    ) {
        let mut text = format!("{section}\n");
        for (key, value) in assignments {
            text.push_str(&format!("{key} = {value}\n"));
        }
        check_parse(text);
    }
}

/// What makes a parser recurse: values nested 9,000-12,000 deep, and keys and headers that long.
fn deep_line() -> impl Strategy<Value = (String, bool)> {
    (9_000usize..12_000, 0..5u8, any::<bool>()).prop_map(|(n, shape, closed)| {
        let text = match shape {
            0 => nested(n, true),
            1 => nested(n, false),
            2 => "{ a = ".repeat(n),
            3 => vec!["k"; n].join("."),
            _ => format!("[{}]", vec!["t"; n].join(".")),
        };
        let text = if closed || shape >= 2 {
            text
        } else {
            text[..text.len() / 2].to_string()
        };
        (text, shape >= 3)
    })
}

proptest! {
    #![proptest_config(config(64))]

    /// A deep value, key or header anywhere in the reference file: refused with a position, no
    /// stack overflow.
    #[test]
    fn deep_structures_anywhere(at in any::<prop::sample::Index>(), deep in deep_line(), more in vec(mutation(), 0..3)) {
        let (deep, is_key) = deep;
        let line = if is_key { format!("{deep} = 1") } else { format!("id = {deep}") };
        let mutations = [vec![Mutation::Insert(at, line)], more].concat();
        check_parse(apply(REFERENCE, &mutations));
    }
}

#[test]
fn deep_structures_are_refused_with_a_position() {
    let deep = 10_000;
    let cases = [
        format!("[gateway]\nid = {}\n", nested(deep, true)),
        format!("[gateway]\nid = {}\n", nested(deep, false)),
        format!("[gateway]\nid = {}\n", "[".repeat(deep)),
        format!("[gateway]\nid = {}\n", "{ a = ".repeat(deep)),
        format!("{} = 1\n", vec!["a"; deep].join(".")),
        format!("gateway.{} = 1\n", vec!["a"; deep].join(".")),
        format!("[{}]\nx = 1\n", vec!["a"; deep].join(".")),
        format!("[[{}]]\nx = 1\n", vec!["source"; deep].join(".")),
        format!("{REFERENCE}\n[[source]]\nname = {}\n", nested(deep, true)),
    ];
    for text in cases {
        let shown: String = text.chars().take(40).collect();
        let error = on_worker_stack(move || {
            let result = Config::parse(&text, Path::new(PATH));
            result.map(|_| ()).map_err(|e| (text, e))
        });
        match error {
            Ok(()) => panic!("accepted {shown}..."),
            Err((text, error)) => assert_located(&text, &error),
        }
    }
}

#[test]
fn unreadable_file_is_reported_without_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, b"[gateway]\nid = \"\xff\xfe\"\n").unwrap();
    let error = Config::load(&path).unwrap_err();
    assert_eq!((error.line, error.column), (0, 0));
    assert_eq!(
        error.to_string(),
        format!("{}: {}", path.display(), error.message)
    );
    let missing = dir.path().join("missing.toml");
    let error = Config::load(&missing).unwrap_err();
    assert!(error
        .to_string()
        .starts_with(&format!("{}: ", missing.display())));
}

// ---------------------------------------------------------------------------------------------------
// Topics
// ---------------------------------------------------------------------------------------------------

/// The reference matcher (MQTT 3.1.1 section 4.7), iterative: `+` is one level, a final `#` any number
/// of levels including none (so `a/#` matches `a`), and a filter starting with a wildcard does not
/// match a topic starting with `$`. Only meaningful for a valid filter and topic name.
fn reference_matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if t[0].starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    let (prefix, rest_any) = match f.split_last() {
        Some((&"#", prefix)) => (prefix, true),
        _ => (&f[..], false),
    };
    let length_ok = if rest_any {
        t.len() >= prefix.len()
    } else {
        t.len() == prefix.len()
    };
    length_ok && prefix.iter().zip(&t).all(|(fl, tl)| *fl == "+" || fl == tl)
}

/// A level no generated filter holds.
const FRESH: &str = "fresh~";

/// A topic both filters match, if there is one: walk both, take the literal where one is `+`, stop at
/// a `#` with the rest of the other (its wildcards made fresh levels), then ask the reference matcher
/// (which applies the `$` rule).
fn reference_overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('/').collect();
    let b: Vec<&str> = b.split('/').collect();
    let mut witness: Vec<&str> = Vec::new();
    let mut i = 0;
    loop {
        match (a.get(i), b.get(i)) {
            (Some(&"#"), _) | (_, Some(&"#")) => {
                let other = if a.get(i) == Some(&"#") { &b } else { &a };
                for level in other.iter().skip(i) {
                    match *level {
                        "#" => break,
                        "+" => witness.push(FRESH),
                        literal => witness.push(literal),
                    }
                }
                break;
            }
            (Some(&"+"), Some(&"+")) => witness.push(FRESH),
            (Some(&"+"), Some(y)) => witness.push(y),
            (Some(x), Some(&"+")) => witness.push(x),
            (Some(x), Some(y)) if x == y => witness.push(x),
            (None, None) => break,
            _ => return false,
        }
        i += 1;
    }
    if witness.is_empty() {
        witness.push(FRESH);
    }
    let witness = witness.join("/");
    reference_matches(&a.join("/"), &witness) && reference_matches(&b.join("/"), &witness)
}

/// Does `outer` match every topic `inner` matches? Exactly when it matches the canonical instances of
/// `inner`: each `+` a fresh level, the `#` zero to `outer`'s length + 1 fresh levels (a fresh level is
/// the hardest to match, and longer instances all behave alike).
fn reference_within(inner: &str, outer: &str) -> bool {
    let levels: Vec<&str> = inner.split('/').collect();
    let (prefix, rest_any) = match levels.split_last() {
        Some((&"#", prefix)) => (prefix, true),
        _ => (&levels[..], false),
    };
    let base: Vec<&str> = prefix
        .iter()
        .map(|l| if *l == "+" { FRESH } else { l })
        .collect();
    let extra_max = if rest_any {
        outer.split('/').count() + 1
    } else {
        0
    };
    (0..=extra_max).all(|extra| {
        let mut topic = base.clone();
        topic.extend(std::iter::repeat_n(FRESH, extra));
        if topic.is_empty() {
            topic.push(FRESH);
        }
        let topic = topic.join("/");
        !reference_matches(inner, &topic) || reference_matches(outer, &topic)
    })
}

/// MQTT's rule for a topic name, as `check_topic_name` states it: not empty, at most 65535 bytes, no
/// `+ # NUL`, and (the gateway's stricter rule) no empty level.
fn reference_valid_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 65_535
        && !topic.contains(['+', '#', '\0'])
        && !topic.split('/').any(str::is_empty)
}

/// MQTT's rule for a filter: not empty, at most 65535 bytes, no NUL, `+` and `#` only as whole levels,
/// `#` only last.
fn reference_valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    !filter.is_empty()
        && filter.len() <= 65_535
        && !filter.contains('\0')
        && levels.iter().enumerate().all(|(i, level)| {
            (!level.contains('#') || (*level == "#" && i + 1 == levels.len()))
                && (!level.contains('+') || *level == "+")
        })
}

/// Whether a topic name may be matched at all (a PUBLISH topic: no wildcards, no NUL, not empty).
fn is_publishable(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["a", "b", "c", "", "$SYS", "$x", "sensorgate", "é"])
            .prop_map(str::to_string),
        3 => prop::sample::select(vec!["+", "#"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["a+", "#b", "++", "##", "\0", " ", "a b", "%u", "%c"])
            .prop_map(str::to_string),
    ]
}

/// A topic or filter of 1 to 7 levels from a small alphabet, so that matches are frequent.
fn topic() -> impl Strategy<Value = String> {
    vec(level(), 1..8).prop_map(|levels| levels.join("/"))
}

/// A valid filter.
fn filter() -> impl Strategy<Value = String> {
    topic().prop_filter("valid filter", |f| reference_valid_filter(f))
}

/// A topic a client could publish to, in the alphabet of [`level`].
fn name() -> impl Strategy<Value = String> {
    vec(
        prop::sample::select(vec![
            "a",
            "b",
            "c",
            "",
            "$SYS",
            "$x",
            "sensorgate",
            "é",
            " ",
        ]),
        1..8,
    )
    .prop_map(|levels| levels.join("/"))
    .prop_filter("publishable", |t| is_publishable(t))
}

/// `filter` with each `+` replaced by a random level and the `#` by zero to three, so that a matching
/// topic is generated often.
fn instance_of(filter: &str, picks: &[(String, usize)]) -> String {
    let mut picks = picks.iter().cycle();
    let mut out: Vec<String> = Vec::new();
    for level in filter.split('/') {
        let (pick, count) = picks.next().cloned().unwrap_or(("a".into(), 1));
        match level {
            "+" => out.push(pick),
            "#" => out.extend(std::iter::repeat_n(pick, count % 4)),
            literal => out.push(literal.to_string()),
        }
    }
    if out.is_empty() {
        out.push("a".into());
    }
    out.join("/")
}

fn picks() -> impl Strategy<Value = Vec<(String, usize)>> {
    vec(
        (
            prop::sample::select(vec!["a", "b", "$SYS", "", "z"]).prop_map(str::to_string),
            0usize..4,
        ),
        1..6,
    )
}

/// `n` levels of `fill`, with a few levels replaced.
fn deep(n: usize, fill: &str, edits: &[(prop::sample::Index, String)]) -> String {
    let mut levels: Vec<String> = vec![fill.to_string(); n];
    for (at, level) in edits {
        let i = at.index(n);
        levels[i] = level.clone();
    }
    levels.join("/")
}

fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, String)>> {
    vec((any::<prop::sample::Index>(), level()), 0..4)
}

proptest! {
    #![proptest_config(config(CASES))]

    /// The two checks agree with the reference rules on random strings; shallow ones exactly, deep
    /// ones (where a level limit may refuse more) in one direction. Long ones straddle MQTT's 65535
    /// bytes.
    #[test]
    fn topic_checks_match_the_reference(text in prop_oneof![
        8 => topic(),
        8 => "[a/+#\\x00 $é]{0,16}",
        1 => (65_530usize..65_540).prop_map(|n| "a/".repeat(n / 2)),
        1 => (65_530usize..65_540).prop_map(|n| "a".repeat(n)),
    ]) {
        let shallow = text.split('/').count() <= 64;
        for (got, expected, what) in [
            (check_topic_name(&text), reference_valid_name(&text), "name"),
            (check_topic_filter(&text), reference_valid_filter(&text), "filter"),
        ] {
            if let Err(message) = &got {
                prop_assert!(!message.is_empty());
            }
            if shallow {
                prop_assert_eq!(got.is_ok(), expected, "{} {:?}: {:?}", what, text, got);
            } else {
                prop_assert!(got.is_err() || expected, "{} {:?}: {:?}", what, text, got);
            }
        }
    }

    /// The broker's checks (`sensorgate::topic`) agree exactly with the MQTT rules plus the level
    /// limit; empty levels are legal MQTT there.
    #[test]
    fn broker_topic_checks_match_the_reference(
        text in prop_oneof![
            8 => topic(),
            8 => "[a/+#\\x00 $é]{0,16}",
            1 => (65_530usize..65_540).prop_map(|n| "a/".repeat(n / 2)),
            1 => (1usize..300).prop_map(|n| vec!["a"; n].join("/")),
        ],
        max_levels in prop::sample::select(vec![1usize, 2, 5, 128, usize::MAX]),
    ) {
        let levels = text.split('/').count();
        prop_assert_eq!(topic::level_count(&text), levels);
        let within_limit = levels <= max_levels;
        let name = topic::check_name(&text, max_levels);
        let filter = topic::check_filter(&text, max_levels);
        prop_assert_eq!(name.is_ok(), is_publishable(&text) && text.len() <= 65_535 && within_limit, "name {:?}: {:?}", text, name);
        prop_assert_eq!(filter.is_ok(), reference_valid_filter(&text) && within_limit, "filter {:?}: {:?}", text, filter);
        for error in [name.err(), filter.err()].into_iter().flatten() {
            prop_assert!(!error.to_string().is_empty());
            if let TopicError::TooDeep { levels: found, max } = error {
                prop_assert_eq!((found, max), (levels, max_levels));
            }
        }
    }

    /// Both `topic_matches` agree with the reference matcher, on random and on instantiated topics.
    #[test]
    fn topic_matches_agrees_with_the_reference(
        filter in filter(),
        random in name(),
        picks in picks(),
    ) {
        let instance = instance_of(&filter, &picks);
        for topic in [random, instance] {
            if !is_publishable(&topic) {
                continue;
            }
            let expected = reference_matches(&filter, &topic);
            prop_assert_eq!(topic_matches(&filter, &topic), expected, "acl {:?} {:?}", filter, topic);
            prop_assert_eq!(uplink_topic_matches(&filter, &topic), expected, "uplink {:?} {:?}", filter, topic);
        }
    }

    /// `filters_overlap` and `filter_within` agree with the exact references, and with matching: a
    /// topic both filters match means they overlap; a topic `inner` matches and `outer` does not means
    /// `inner` is not within `outer`.
    #[test]
    fn overlap_and_within_agree_with_the_reference(
        a in filter(),
        b in filter(),
        picks in picks(),
    ) {
        prop_assert_eq!(filters_overlap(&a, &b), reference_overlap(&a, &b), "overlap {:?} {:?}", a, b);
        prop_assert_eq!(filters_overlap(&a, &b), filters_overlap(&b, &a), "overlap symmetric {:?} {:?}", a, b);
        prop_assert_eq!(filter_within(&a, &b), reference_within(&a, &b), "within {:?} {:?}", a, b);
        prop_assert!(!filter_within(&a, &b) || reference_within(&a, &b), "within {:?} {:?}", a, b);
        prop_assert!(filter_within(&a, &a), "within itself {:?}", a);
        for topic in [instance_of(&a, &picks), instance_of(&b, &picks)] {
            if !is_publishable(&topic) {
                continue;
            }
            let (in_a, in_b) = (reference_matches(&a, &topic), reference_matches(&b, &topic));
            if in_a && in_b {
                prop_assert!(filters_overlap(&a, &b), "{:?} and {:?} both match {:?}", a, b, topic);
            }
            if in_a && !in_b {
                prop_assert!(!filter_within(&a, &b), "{:?} matches {:?}, {:?} does not", a, topic, b);
            }
        }
    }

    /// Any strings at all, valid or not: the matchers never panic.
    #[test]
    fn matchers_take_any_strings(a in "[a/+#$\\x00]{0,24}", b in "[a/+#$\\x00]{0,24}") {
        let _ = (topic_matches(&a, &b), uplink_topic_matches(&a, &b));
        let _ = (filters_overlap(&a, &b), filter_within(&a, &b));
        let _ = (check_topic_name(&a), check_topic_filter(&a));
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// 9,000-12,000-level topics and filters (`x/+/+/...`, `a/a/a/.../#`) with a few levels changed:
    /// no stack overflow, and the same answers as the reference.
    #[test]
    fn ten_thousand_level_topics(
        n in 9_000usize..12_000,
        extra in 0usize..3,
        filter_fill in prop::sample::select(vec!["+", "a"]),
        filter_edits in edits(),
        topic_edits in vec((any::<prop::sample::Index>(), prop::sample::select(vec!["a", "b", "$SYS", ""]).prop_map(str::to_string)), 0..3),
        hash in any::<bool>(),
    ) {
        let mut filter = deep(n, filter_fill, &filter_edits);
        if hash {
            filter.push_str("/#");
        }
        let topic = deep(n + extra, "a", &topic_edits);
        let other = deep(n, "+", &[]);
        let result = on_worker_stack(move || {
            let valid = reference_valid_filter(&filter);
            let checks = (check_topic_filter(&filter).is_ok(), check_topic_name(&topic).is_ok());
            // Deeper than the broker's default max_topic_levels: refused (too deep, or NUL first).
            assert!(topic::check_filter(&filter, 128).is_err() && topic::check_name(&topic, 128).is_err());
            let matched = valid.then(|| {
                (
                    topic_matches(&filter, &topic) == reference_matches(&filter, &topic),
                    uplink_topic_matches(&filter, &topic) == reference_matches(&filter, &topic),
                    filters_overlap(&filter, &other) == reference_overlap(&filter, &other),
                    filter_within(&filter, &other) == reference_within(&filter, &other),
                    filter_within(&other, &filter) == reference_within(&other, &filter),
                )
            });
            (valid, checks, matched)
        });
        let (valid, (filter_ok, _), matched) = result;
        prop_assert!(!filter_ok || valid);
        if let Some(agree) = matched {
            prop_assert_eq!(agree, (true, true, true, true, true));
        }
    }
}
