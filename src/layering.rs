//! The layering rule of the crate, and the test that holds the source to it by reading every `crate::`
//! and `super::` path of `src/` (outside comments, string literals and the test module at the end of a
//! file: a test may build what it tests from anywhere).
//!
//! Every top-level module sits on one layer of [`LAYERS`], lowest first. A module may name only itself
//! and modules on layers below its own, so the modules have no circle and a new module cannot reach up.
//! What the layers mean:
//! - the ground: data types, topic grammar, retry, rate-limit and disk-full helpers, the systemd seam;
//! - pure codecs, the state files, and the broker behind the project's API (no feature logic);
//! - the counters, then payload security;
//! - the sources (and the seam they transmit through, `source::transmit`), the uplink, the encoders;
//!   then the features built on them: commands (which import that seam, never the other way round), Home
//!   Assistant; then the pipeline that joins them;
//! - `config` above every feature: it composes their settings types and runs their validators; no
//!   feature imports `config` (the wiring in `app` hands each feature its own settings);
//! - `app`, the wiring, at the top; `main` (the command line) is outside the library.
//!
//! A new module takes the lowest layer above everything it names; a new source sits with `source`
//! and names nothing of `commands`, `config` or `app`.

/// The layers, lowest first.
const LAYERS: &[&[&str]] = &[
    &[
        "model",
        "backoff",
        "ratelimit",
        "reserve",
        "topic",
        "allocator",
        "systemd",
        "full_disk",
        "forget",
        "units",
        "lock",
    ],
    &["logging", "publish", "frame", "statefile", "record"],
    &["decode", "devices", "broker", "replay", "heard"],
    &["stats"],
    &["crypto", "live"],
    &["encode", "source", "uplink", "codec"],
    &["commands", "ble"],
    // The LoRaWAN network server sends commands into its devices' receive windows within the
    // commands' duty-cycle budgets (`commands::dutycycle`).
    &["lorawan"],
    &["homeassistant"],
    &["pipeline", "http"],
    &["config"],
    &["app"],
];

/// Imports that break the rule today, each with what moving it takes; the test lets exactly these
/// pass, so no new one can come in unseen. `(module, names, why it is still here)`.
const NOT_YET: &[(&str, &str, &str)] = &[];

/// The layer of a top-level module, when the table has it.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// `text` with comments and the insides of string and character literals blanked (newlines kept, so
/// line numbers hold), cut at the first `#[cfg(test)]` that opens a module.
fn code_only(text: &str) -> String {
    let text = match find_test_module(text) {
        Some(at) => &text[..at],
        None => text,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                out.push(blank(chars[i]));
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && raw_string_start(&chars, i)
        {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            i += 2 + hashes;
            let closing: String = std::iter::once('"')
                .chain("#".repeat(hashes).chars())
                .collect();
            let closing: Vec<char> = closing.chars().collect();
            while i < chars.len() && !chars[i..].starts_with(&closing) {
                out.push(blank(chars[i]));
                i += 1;
            }
            i += closing.len();
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    out.push(blank(c));
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Whether `r` at `i` opens a raw string (`r"`, `r#"`), not ends an identifier.
fn raw_string_start(chars: &[char], i: usize) -> bool {
    let after_ident = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    !after_ident && chars.get(i + 1 + hashes) == Some(&'"')
}

/// Where the file's test module starts: `#[cfg(test)]` followed by `mod`.
fn find_test_module(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find("#[cfg(test)]") {
        let at = from + found;
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod ") || rest.starts_with("pub mod ") {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The module path of a file under `src/`: `crypto/mod.rs` is `[crypto]`, `source/radio/pi.rs` is
/// `[source, radio, pi]`.
fn module_path(file: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
    if parts.last() == Some(&"mod") {
        parts.pop();
    }
    parts
}

/// The top-level modules a line names: `crate::x`, `crate::{x::.., y}`, and `super::` chains that climb
/// to the crate's root.
fn named_modules(line: &str, path: &[&str]) -> Vec<String> {
    let mut named = Vec::new();
    let bytes = line.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < line.len() {
        let starts_word = i == 0 || !is_ident(bytes[i - 1]);
        if starts_word && line[i..].starts_with("crate::") {
            i += "crate::".len();
            named.extend(first_segments(&line[i..]));
        } else if starts_word && line[i..].starts_with("super::") {
            let mut depth = 0;
            while line[i..].starts_with("super::") {
                depth += 1;
                i += "super::".len();
            }
            if depth >= path.len() {
                named.extend(first_segments(&line[i..]));
            }
        } else {
            i += 1;
        }
    }
    named
}

/// The first segment of a path (`x` of `x::y`), or of each path in a `{..}` group.
fn first_segments(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)];
    };
    let mut segments = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                segments.push(ident(&group[at..]));
                item_start = false;
            }
            _ => {}
        }
    }
    segments
}

/// Every breach of the rule in `files` (`(path under src/, text)`), as `src/FILE:LINE: message`.
fn violations(files: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (file, text) in files {
        if file == "lib.rs" || file == "main.rs" || file == "layering.rs" {
            continue;
        }
        let path = module_path(file);
        let home = path[0];
        let Some(own_layer) = layer_of(home) else {
            found.push(format!(
                "src/{file}:1: the module `{home}` is on no layer: add it to LAYERS in src/layering.rs, on the lowest layer above every module it names"
            ));
            continue;
        };
        for (number, line) in code_only(text).lines().enumerate() {
            for named in named_modules(line, &path) {
                if named == home || named == "self" || named.is_empty() {
                    continue;
                }
                let Some(their_layer) = layer_of(&named) else {
                    continue;
                };
                if their_layer < own_layer
                    || NOT_YET
                        .iter()
                        .any(|(from, to, _)| *from == home && *to == named)
                {
                    continue;
                }
                let advice = match named.as_str() {
                    "config" => "no feature imports config: give the feature its own settings type, which config composes and app hands over",
                    "app" => "nothing imports the wiring: move what is shared down to the module that owns it",
                    "commands" if home == "source" => "sources never import commands' internals: the seam they transmit through is source::transmit",
                    _ => "a module names only modules on lower layers: move the shared item down, or pass it in",
                };
                found.push(format!(
                    "src/{file}:{}: `{home}` (layer {own_layer}) names `{named}` (layer {their_layer}): {advice}",
                    number + 1
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every `.rs` file under `src/`, as `(path under src/, text)`.
    fn sources() -> Vec<(String, String)> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
            let mut entries: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for path in entries {
                if path.is_dir() {
                    walk(&path, root, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let name = path
                        .strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    out.push((name, std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        files
    }

    fn file(path: &str, text: &str) -> Vec<(String, String)> {
        vec![(path.to_string(), text.to_string())]
    }

    #[test]
    fn the_crate_keeps_its_layers() {
        let files = sources();
        assert!(
            files.len() > 100,
            "src/ was not read: {} files",
            files.len()
        );
        let found = violations(&files);
        assert!(
            found.is_empty(),
            "the layering rule is broken:\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn every_module_of_the_table_exists() {
        let files = sources();
        for module in LAYERS.iter().flat_map(|layer| layer.iter()) {
            assert!(
                files
                    .iter()
                    .any(|(path, _)| module_path(path)[0] == *module),
                "LAYERS names `{module}`, which src/ does not have"
            );
        }
    }

    #[test]
    fn a_feature_naming_config_is_named_with_its_file_and_line() {
        let text = "//! A feature.\n\nuse crate::model::Packet;\nuse crate::config::Config;\n";
        assert_eq!(
            violations(&file("crypto/mod.rs", text)),
            vec!["src/crypto/mod.rs:4: `crypto` (layer 4) names `config` (layer 10): no feature imports config: give the feature its own settings type, which config composes and app hands over".to_string()]
        );
    }

    #[test]
    fn groups_super_chains_and_peers_are_read() {
        let grouped = "use crate::{model::Packet, commands::{Downlink, Reply}};\n";
        let found = violations(&file("source/serial.rs", grouped));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("src/source/serial.rs:1: `source` (layer 5) names `commands`"));
        assert!(found[0].contains("source::transmit"));
        let climbing = "fn f() { super::super::pipeline::run(); }\n";
        assert_eq!(violations(&file("source/radio/pi.rs", climbing)).len(), 0);
        assert_eq!(violations(&file("source/radio.rs", climbing)).len(), 1);
        let peer = "use crate::uplink::Protocol;\n";
        assert_eq!(violations(&file("source/mod.rs", peer)).len(), 1);
        assert_eq!(violations(&file("config/mod.rs", peer)).len(), 0);
    }

    #[test]
    fn comments_strings_and_test_modules_are_not_read() {
        let text = "// crate::app::x\n/* crate::app */ const A: &str = \"crate::app::y\";\nconst B: &str = r#\"crate::app\"#;\nconst C: char = '\"'; // crate::app\n#[cfg(test)]\nmod tests {\n    use crate::app::run;\n}\n";
        assert_eq!(violations(&file("model.rs", text)), Vec::<String>::new());
        assert_eq!(
            violations(&file("model.rs", "use crate::app::run;\n")).len(),
            1
        );
    }

    #[test]
    fn a_module_on_no_layer_is_named() {
        let found = violations(&file("zigbee/mod.rs", "use crate::model::Packet;\n"));
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("`zigbee` is on no layer"), "{found:?}");
    }
}
