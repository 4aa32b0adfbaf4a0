//! A codec's own examples, run before the codec is trusted: ChirpStack's `test_decode_{name}.json` and
//! `test_encode_{name}.json` beside `{name}.js` (arrays of `{name, input, expected}`; written as
//! JavaScript literals, so comments and hex numbers are allowed, and read by QuickJS itself), and The
//! Things Network's codec file `{name}.yaml` or `{name}-codec.yaml` (`uplinkDecoder.examples`, `downlinkEncoder.examples` of
//! `{description, input, output}`, read by [`super::yaml`]). Decode
//! examples compare `data`, `errors` and `warnings`; encode examples compare `bytes` and, when given,
//! `fPort`. Comparison is deep equality with key order free and numbers compared numerically
//! (`1` equals `1.0`); an omitted `errors` or `warnings` means none.
//!
//! A failing example is reported as `PATH:LINE:COL` of its opening brace, with what was expected and
//! what the codec gave.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use super::literal::read_literal;
use super::{Codec, UplinkInput};

/// Which function an example file exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExampleKind {
    Decode,
    Encode,
    /// A TTN codec file (`NAME.yaml`): `uplinkDecoder.examples` and `downlinkEncoder.examples`.
    TtnYaml,
}

/// One example that did not match (or could not run).
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleFailure {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub name: String,
    pub expected: Json,
    /// What the codec gave, or why it gave nothing.
    pub actual: Result<Json, String>,
}

impl fmt::Display for ExampleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: example {:?} failed: expected {}, ",
            self.path.display(),
            self.line,
            self.column,
            self.name,
            self.expected
        )?;
        match &self.actual {
            Ok(actual) => write!(f, "got {actual}"),
            Err(error) => write!(f, "got an error: {error}"),
        }
    }
}

/// What running a codec's examples found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExampleReport {
    /// Examples run.
    pub run: usize,
    pub failures: Vec<ExampleFailure>,
}

/// The example files beside `codec` (`dir/name.js`): `dir/test_decode_name.json`,
/// `dir/test_encode_name.json`, `dir/name.yaml` and `dir/name-codec.yaml` (the name TTN's device
/// repository gives a codec file), those that exist.
pub fn example_files(codec: &Path) -> Vec<(ExampleKind, PathBuf)> {
    let (Some(dir), Some(stem)) = (codec.parent(), codec.file_stem()) else {
        return Vec::new();
    };
    let stem = stem.to_string_lossy();
    [
        (ExampleKind::Decode, format!("test_decode_{stem}.json")),
        (ExampleKind::Encode, format!("test_encode_{stem}.json")),
        (ExampleKind::TtnYaml, format!("{stem}.yaml")),
        (ExampleKind::TtnYaml, format!("{stem}-codec.yaml")),
    ]
    .into_iter()
    .map(|(kind, file)| (kind, dir.join(file)))
    .filter(|(_, path)| path.is_file())
    .collect()
}

/// Runs every example beside `codec_path` through `codec`. An example file that cannot be read is an
/// error naming it.
pub fn run_examples(codec_path: &Path, codec: &mut Codec) -> Result<ExampleReport, String> {
    let mut report = ExampleReport::default();
    for (kind, path) in example_files(codec_path) {
        let text = std::fs::read_to_string(&path)
            .map_err(|error| format!("{}: cannot read: {error}", path.display()))?;
        for (kind, example, (line, column)) in examples_in(kind, &path, &text)? {
            report.run += 1;
            let (expected, actual) = match kind {
                ExampleKind::Encode => run_encode(codec, &example),
                _ => run_decode(codec, &example),
            };
            let matched = matches!(&actual, Ok(actual) if deep_equal(&expected, actual));
            if !matched {
                report.failures.push(ExampleFailure {
                    path: path.clone(),
                    line,
                    column,
                    name: example["name"]
                        .as_str()
                        .map_or_else(|| format!("#{}", report.run), str::to_string),
                    expected,
                    actual,
                });
            }
        }
    }
    Ok(report)
}

/// One example: the function it exercises, `{name, input, expected}`, and its (line, column).
type Example = (ExampleKind, Json, (usize, usize));

/// The examples of one file as `{name, input, expected}` with the kind they exercise and where each
/// starts. TTN's `{description, input, output}` are taken as that shape.
fn examples_in(kind: ExampleKind, path: &Path, text: &str) -> Result<Vec<Example>, String> {
    if kind == ExampleKind::TtnYaml {
        let document = super::yaml::read(text)
            .map_err(|error| format!("{}: not a codec file: {error}", path.display()))?;
        let mut found = Vec::new();
        for (section, kind) in [
            ("uplinkDecoder", ExampleKind::Decode),
            ("downlinkEncoder", ExampleKind::Encode),
        ] {
            let examples = document.value[section]["examples"].as_array();
            for (index, example) in examples.into_iter().flatten().enumerate() {
                let at = document
                    .items
                    .get(&format!("/{section}/examples/{index}"))
                    .copied()
                    .unwrap_or((1, 1));
                let shaped = serde_json::json!({
                    "name": example["description"],
                    "input": example["input"],
                    "expected": example["output"],
                });
                found.push((kind, shaped, at));
            }
        }
        return Ok(found);
    }
    let examples = read_literal(text)
        .map_err(|error| format!("{}: not an array of examples: {error}", path.display()))?;
    let Json::Array(examples) = examples else {
        return Err(format!("{}: not an array of examples", path.display()));
    };
    let positions = element_positions(text);
    Ok(examples
        .into_iter()
        .enumerate()
        .map(|(index, example)| {
            (
                kind,
                example,
                positions.get(index).copied().unwrap_or((1, 1)),
            )
        })
        .collect())
}

/// The expected part and what the codec gave, both in the shape compared.
fn run_decode(codec: &mut Codec, example: &Json) -> (Json, Result<Json, String>) {
    let input = &example["input"];
    let expected = &example["expected"];
    let expected_errors = or_empty(&expected["errors"]);
    let mut want = Map::new();
    want.insert("errors".into(), expected_errors.clone());
    want.insert("warnings".into(), or_empty(&expected["warnings"]));
    if expected_errors.as_array().is_none_or(Vec::is_empty) {
        want.insert("data".into(), expected["data"].clone());
    }
    let uplink = UplinkInput {
        bytes: serde_json::from_value(input["bytes"].clone()).unwrap_or_default(),
        fport: input["fPort"]
            .as_u64()
            .and_then(|port| u8::try_from(port).ok())
            .unwrap_or(1),
        recv_time_ms: None,
        variables: input["variables"].as_object().cloned().unwrap_or_default(),
    };
    let actual = codec
        .decode_uplink_raw(&uplink)
        .map(|result| {
            let mut got = Map::new();
            for key in want.keys() {
                got.insert(key.clone(), result[key.as_str()].clone());
            }
            Json::Object(got)
        })
        .map_err(|error| error.to_string());
    (Json::Object(want), actual)
}

fn run_encode(codec: &mut Codec, example: &Json) -> (Json, Result<Json, String>) {
    let input = &example["input"];
    let expected = &example["expected"];
    let mut want = Map::new();
    for key in ["bytes", "fPort"] {
        if !expected[key].is_null() {
            want.insert(key.into(), expected[key].clone());
        }
    }
    want.insert("errors".into(), or_empty(&expected["errors"]));
    let fport = input["fPort"]
        .as_u64()
        .and_then(|port| u8::try_from(port).ok());
    let variables = input["variables"].as_object().cloned().unwrap_or_default();
    let actual = codec
        .encode_downlink_raw(&input["data"], fport, &variables)
        .map(|result| {
            let mut got = Map::new();
            for key in want.keys() {
                got.insert(key.clone(), result[key.as_str()].clone());
            }
            Json::Object(got)
        })
        .map_err(|error| error.to_string());
    (Json::Object(want), actual)
}

fn or_empty(list: &Json) -> Json {
    if list.is_null() {
        Json::Array(Vec::new())
    } else {
        list.clone()
    }
}

/// Deep equality with key order free and numbers compared as numbers.
pub fn deep_equal(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| deep_equal(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, x)| y.get(key).is_some_and(|y| deep_equal(x, y)))
        }
        _ => a == b,
    }
}

/// The 1-based line and column of each element of the top-level array in `text`, skipping strings and
/// comments.
fn element_positions(text: &str) -> Vec<(usize, usize)> {
    let mut positions = Vec::new();
    let (mut line, mut column) = (1, 0);
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let mut in_string: Option<char> = None;
    let mut expecting_element = false;
    while let Some(c) = chars.next() {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
        if let Some(quote) = in_string {
            if c == '\\' {
                chars.next();
                column += 1;
            } else if c == quote {
                in_string = None;
            }
            continue;
        }
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        line += 1;
                        column = 0;
                        break;
                    }
                }
                continue;
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut previous = ' ';
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        line += 1;
                        column = 0;
                    } else {
                        column += 1;
                    }
                    if previous == '*' && skipped == '/' {
                        break;
                    }
                    previous = skipped;
                }
                continue;
            }
            _ => {}
        }
        if depth == 1 && expecting_element && !c.is_whitespace() && c != ']' {
            positions.push((line, column));
            expecting_element = false;
        }
        match c {
            '"' | '\'' => in_string = Some(c),
            '[' | '{' => {
                depth += 1;
                if depth == 1 {
                    expecting_element = true;
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 1 => expecting_element = true,
            _ => {}
        }
    }
    positions
}

#[cfg(all(test, feature = "codecs"))]
mod tests {
    use super::*;
    use crate::codec::CodecLimits;
    use serde_json::json;

    #[test]
    fn deep_equal_ignores_key_order_and_number_spelling() {
        assert!(deep_equal(
            &json!({"a": 1, "b": [1.0, {"c": 2}]}),
            &json!({"b": [1, {"c": 2.0}], "a": 1.0})
        ));
        assert!(!deep_equal(&json!({"a": 1}), &json!({"a": 1, "b": null})));
        assert!(!deep_equal(&json!([1, 2]), &json!([2, 1])));
        assert!(!deep_equal(&json!({"a": "1"}), &json!({"a": 1})));
    }

    #[test]
    fn element_positions_skip_strings_and_comments() {
        let text = "[\n  // a comment, {\n  {\"name\": \"x{\", \"v\": 0x10},\n  /* { */ {\n \"name\": \"y\"}\n]";
        assert_eq!(element_positions(text), vec![(3, 3), (4, 11)]);
        assert_eq!(
            read_literal(text).unwrap(),
            json!([{"name": "x{", "v": 16}, {"name": "y"}])
        );
    }

    #[test]
    fn a_failing_example_is_reported_at_its_line_with_expected_and_actual() {
        let dir = tempfile::tempdir().unwrap();
        let codec_path = dir.path().join("thing.js");
        let script = "function decodeUplink(i) { return { data: { t: i.bytes[0] } }; }";
        std::fs::write(&codec_path, script).unwrap();
        std::fs::write(
            dir.path().join("test_decode_thing.json"),
            "[\n  {\"name\": \"ok\", \"input\": {\"fPort\": 1, \"bytes\": [5]}, \"expected\": {\"data\": {\"t\": 5.0}}},\n  {\"name\": \"wrong\", \"input\": {\"fPort\": 1, \"bytes\": [6]}, \"expected\": {\"data\": {\"t\": 7}}}\n]\n",
        )
        .unwrap();
        let mut codec = Codec::load("thing.js", script, CodecLimits::default()).unwrap();
        let report = run_examples(&codec_path, &mut codec).unwrap();
        assert_eq!(report.run, 2);
        assert_eq!(report.failures.len(), 1);
        let message = report.failures[0].to_string();
        let expected_start = format!(
            "{}:3:3: example \"wrong\" failed: expected ",
            dir.path().join("test_decode_thing.json").display()
        );
        assert!(message.starts_with(&expected_start), "{message}");
        assert!(
            message.contains("\"t\":7") && message.contains("\"t\":6"),
            "{message}"
        );
    }
}
