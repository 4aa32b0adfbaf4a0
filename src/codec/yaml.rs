//! A reader for the YAML that The Things Network's codec files use (`uplinkDecoder.examples`,
//! `downlinkEncoder.examples`): block mappings and sequences by indentation, `- key: value` items, plain,
//! quoted and block (`|`, `>`) scalars, numbers (hex too), booleans and null, and flow collections
//! (`[0x01, 0x02]`, `{a: 1}`) read as JavaScript literals by QuickJS. Anchors, tags, multi-document files
//! and multi-line flow collections are not read (an error names the line). Chosen over a YAML crate to keep
//! the daemon's binary small for the part of YAML those files use; it remembers the line and column of
//! every sequence item, which is where a failing example is reported.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::literal::read_literal;

/// A document read, with the 1-based (line, column) of each sequence item by JSON pointer
/// (`/uplinkDecoder/examples/0`).
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub value: Json,
    pub items: HashMap<String, (usize, usize)>,
}

struct Line {
    number: usize,
    indent: usize,
    text: String,
}

/// Reads `text`; `Err` names the line it could not read.
pub fn read(text: &str) -> Result<Document, String> {
    let mut lines: Vec<Line> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let content = strip_comment(raw);
        let trimmed = content.trim_end();
        if trimmed.trim().is_empty() || trimmed.trim() == "---" {
            continue;
        }
        let indent = trimmed.len() - trimmed.trim_start().len();
        lines.push(Line {
            number: index + 1,
            indent,
            text: trimmed.trim_start().to_string(),
        });
    }
    let mut reader = Reader {
        lines,
        at: 0,
        items: HashMap::new(),
    };
    let value = match reader.lines.first() {
        Some(first) => {
            let indent = first.indent;
            reader.block(indent, "")?
        }
        None => Json::Null,
    };
    if let Some(line) = reader.lines.get(reader.at) {
        return Err(format!("line {}: unexpected indentation", line.number));
    }
    Ok(Document {
        value,
        items: reader.items,
    })
}

struct Reader {
    lines: Vec<Line>,
    at: usize,
    items: HashMap<String, (usize, usize)>,
}

impl Reader {
    fn block(&mut self, indent: usize, pointer: &str) -> Result<Json, String> {
        let Some(first) = self.lines.get(self.at) else {
            return Ok(Json::Null);
        };
        if first.text == "-" || first.text.starts_with("- ") {
            self.sequence(indent, pointer)
        } else {
            self.mapping(indent, pointer)
        }
    }

    fn sequence(&mut self, indent: usize, pointer: &str) -> Result<Json, String> {
        let mut items = Vec::new();
        while let Some(line) = self.lines.get(self.at) {
            if line.indent != indent || !(line.text == "-" || line.text.starts_with("- ")) {
                break;
            }
            let item_pointer = format!("{pointer}/{}", items.len());
            self.items
                .insert(item_pointer.clone(), (line.number, line.indent + 1));
            let rest = line.text[1..].trim_start().to_string();
            if rest.is_empty() {
                self.at += 1;
                items.push(self.nested(indent, &item_pointer)?);
            } else if key_value(&rest).is_some() {
                // `- key: value`: a mapping whose first key sits two columns in.
                let inner = indent + (line.text.len() - rest.len());
                let line = &mut self.lines[self.at];
                line.indent = inner;
                line.text = rest;
                items.push(self.mapping(inner, &item_pointer)?);
            } else {
                let number = line.number;
                self.at += 1;
                items.push(self.scalar(&rest, number, indent)?);
            }
        }
        Ok(Json::Array(items))
    }

    fn mapping(&mut self, indent: usize, pointer: &str) -> Result<Json, String> {
        let mut map = Map::new();
        while let Some(line) = self.lines.get(self.at) {
            if line.indent != indent {
                if line.indent > indent {
                    return Err(format!("line {}: unexpected indentation", line.number));
                }
                break;
            }
            let number = line.number;
            let Some((key, value)) = key_value(&line.text) else {
                return Err(format!("line {number}: expected `key: value`"));
            };
            let (key, value) = (unquote(key), value.to_string());
            self.at += 1;
            let child = format!("{pointer}/{key}");
            let parsed = if value.is_empty() {
                self.nested(indent, &child)?
            } else {
                self.scalar(&value, number, indent)?
            };
            map.insert(key, parsed);
        }
        Ok(Json::Object(map))
    }

    /// The block under a key or `-` with nothing after it: deeper lines, or a sequence at the same
    /// indentation (YAML allows `key:` then `- item` in the same column).
    fn nested(&mut self, indent: usize, pointer: &str) -> Result<Json, String> {
        match self.lines.get(self.at) {
            Some(next) if next.indent > indent => {
                let inner = next.indent;
                self.block(inner, pointer)
            }
            Some(next) if next.indent == indent && next.text.starts_with("- ") => {
                self.sequence(indent, pointer)
            }
            _ => Ok(Json::Null),
        }
    }

    fn scalar(&mut self, text: &str, number: usize, indent: usize) -> Result<Json, String> {
        if text == "|" || text == ">" || text.starts_with("|-") || text.starts_with(">-") {
            let mut parts = Vec::new();
            while let Some(line) = self.lines.get(self.at) {
                if line.indent <= indent {
                    break;
                }
                parts.push(line.text.clone());
                self.at += 1;
            }
            let joiner = if text.starts_with('|') { "\n" } else { " " };
            return Ok(Json::String(parts.join(joiner)));
        }
        if text.starts_with('[') || text.starts_with('{') {
            return read_literal(text).map_err(|error| format!("line {number}: {error}"));
        }
        Ok(plain(text))
    }
}

/// `key: value` or `key:` (the key may be quoted); `None` for anything else.
fn key_value(text: &str) -> Option<(&str, &str)> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') if i == 0 => quote = Some(c),
            (None, ':') => {
                let rest = &text[i + 1..];
                if rest.is_empty() || rest.starts_with(' ') {
                    return Some((text[..i].trim(), rest.trim()));
                }
            }
            (None, '[' | '{') if i == 0 => return None,
            _ => {}
        }
    }
    None
}

/// A comment starts at `#` after a space (or at the line's start), outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '#') if previous == ' ' || previous == '\t' => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

fn unquote(text: &str) -> String {
    let bytes = text.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        let inner = &text[1..text.len() - 1];
        if bytes[0] == b'"' {
            if let Ok(Json::String(parsed)) = serde_json::from_str(text) {
                return parsed;
            }
        }
        return inner.replace("''", "'");
    }
    text.to_string()
}

/// A plain or quoted scalar: null, booleans, numbers (decimal, hex, octal `0o`), else a string.
fn plain(text: &str) -> Json {
    if text.starts_with('"') || text.starts_with('\'') {
        return Json::String(unquote(text));
    }
    match text {
        "~" | "null" | "Null" | "NULL" => return Json::Null,
        "true" | "True" | "TRUE" => return Json::Bool(true),
        "false" | "False" | "FALSE" => return Json::Bool(false),
        _ => {}
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let radix = [("0x", 16), ("0o", 8)]
        .into_iter()
        .find_map(|(prefix, radix)| digits.strip_prefix(prefix).map(|d| (d, radix)));
    if let Some((digits, radix)) = radix {
        if let Ok(value) = i64::from_str_radix(digits, radix) {
            return Json::from(if negative { -value } else { value });
        }
    }
    if let Ok(value) = text.parse::<i64>() {
        return Json::from(value);
    }
    if text.chars().any(|c| c.is_ascii_digit()) {
        if let Ok(value) = text.parse::<f64>() {
            if let Some(number) = serde_json::Number::from_f64(value) {
                return Json::Number(number);
            }
        }
    }
    Json::String(text.to_string())
}

#[cfg(all(test, feature = "codecs"))]
mod tests {
    use super::*;
    use serde_json::json;

    const TTN: &str = "\
# A TTN codec file
uplinkDecoder:
  fileName: thing.js
  examples:
    - description: 'Normal: 21.5 degC' # a comment
      input:
        fPort: 1
        bytes: [0x00, 0xD7, 48]
      output:
        data:
          temperature: 21.5
          label: \"a # not a comment\"
          ok: true
          none: ~
        errors: []
    - description: >
        folded
        text
      input:
        fPort: 0x02
        bytes:
          - 1
          - -2
      output:
        errors:
        - unknown port
downlinkEncoder:
  fileName: thing.js
  examples:
    - description: set
      input:
        data: {interval: 600}
      output:
        bytes: [2, 88]
        fPort: 2
";

    #[test]
    fn reads_the_ttn_codec_subset_with_item_positions() {
        let doc = read(TTN).unwrap();
        assert_eq!(
            doc.value["uplinkDecoder"]["examples"][0],
            json!({
                "description": "Normal: 21.5 degC",
                "input": {"fPort": 1, "bytes": [0, 215, 48]},
                "output": {"data": {"temperature": 21.5, "label": "a # not a comment", "ok": true, "none": null}, "errors": []}
            })
        );
        assert_eq!(
            doc.value["uplinkDecoder"]["examples"][1],
            json!({
                "description": "folded text",
                "input": {"fPort": 2, "bytes": [1, -2]},
                "output": {"errors": ["unknown port"]}
            })
        );
        assert_eq!(
            doc.value["downlinkEncoder"]["examples"][0]["input"]["data"],
            json!({"interval": 600})
        );
        assert_eq!(doc.items["/uplinkDecoder/examples/0"], (5, 5));
        assert_eq!(doc.items["/uplinkDecoder/examples/1"], (16, 5));
        assert_eq!(doc.items["/downlinkEncoder/examples/0"], (30, 5));
    }

    #[test]
    fn what_it_does_not_read_is_an_error_naming_the_line() {
        let error = read("a:\n  b: 1\n    c: 2\n").unwrap_err();
        assert!(error.starts_with("line 3:"), "{error}");
        let error = read("a: 1\nnot a mapping\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
    }
}
