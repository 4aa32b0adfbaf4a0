//! Where things are in the configuration text: the key paths that name a setting (`source[1].baud`,
//! shown to users as `[[source]] "uart0": baud`), the byte span of a path's key or value, the path at a
//! byte span, and byte offsets as 1-based line:column. It reads the text through `toml_edit`, which keeps
//! spans; it never interprets values or decides what is valid.

use std::fmt;
use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a key path: a table key, or an index into an array or array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root to a key, e.g. `source`, `[1]`, `baud`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The document root.
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> KeyPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }

    /// The last key of the path, if it ends in one.
    pub fn last_key(&self) -> Option<&str> {
        self.0.iter().rev().find_map(|seg| match seg {
            Seg::Key(key) => Some(key.as_str()),
            Seg::Index(_) => None,
        })
    }
}

impl fmt::Display for KeyPath {
    /// The dotted form: `upstream.forward[0].filter`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(key) if i == 0 => write!(f, "{key}")?,
                Seg::Key(key) => write!(f, ".{key}")?,
                Seg::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Which part of a `key = value` pair a message points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Key,
    Value,
}

/// A node of the document while walking a path.
#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Value(&'d Value),
    Table(&'d Table),
}

impl<'d> Node<'d> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(Item::Value(value)) | Node::Value(value) => value.span(),
            Node::Item(Item::Table(table)) | Node::Table(table) => table.span(),
            Node::Item(Item::ArrayOfTables(array)) => array.span(),
            Node::Item(Item::None) => None,
        }
    }

    /// The children of this node with their path step and key span.
    fn children(self) -> Vec<(Seg, Option<Range<usize>>, Node<'d>)> {
        match self {
            Node::Item(Item::Table(table)) | Node::Table(table) => table
                .iter()
                .filter(|(_, item)| !item.is_none())
                .map(|(key, item)| {
                    let key_span = table.key(key).and_then(|k| k.span());
                    (Seg::Key(key.to_string()), key_span, Node::Item(item))
                })
                .collect(),
            Node::Item(Item::ArrayOfTables(array)) => array
                .iter()
                .enumerate()
                .map(|(i, table)| (Seg::Index(i), None, Node::Table(table)))
                .collect(),
            Node::Item(Item::Value(value)) | Node::Value(value) => match value {
                Value::InlineTable(table) => table
                    .iter()
                    .map(|(key, value)| {
                        let key_span = table.key(key).and_then(|k| k.span());
                        (Seg::Key(key.to_string()), key_span, Node::Value(value))
                    })
                    .collect(),
                Value::Array(array) => array
                    .iter()
                    .enumerate()
                    .map(|(i, value)| (Seg::Index(i), None, Node::Value(value)))
                    .collect(),
                _ => Vec::new(),
            },
            Node::Item(Item::None) => Vec::new(),
        }
    }

    fn child(self, seg: &Seg) -> Option<(Option<Range<usize>>, Node<'d>)> {
        self.children()
            .into_iter()
            .find(|(s, _, _)| s == seg)
            .map(|(_, key_span, node)| (key_span, node))
    }

    /// Whether this node is a table or array of tables, whose entries may lie outside its own span
    /// (`[broker]` and `[[broker.listener]]` are separate stretches of text).
    fn is_scattered(self) -> bool {
        matches!(
            self,
            Node::Item(Item::Table(_)) | Node::Table(_) | Node::Item(Item::ArrayOfTables(_))
        )
    }
}

/// The configuration text with its spans, for turning key paths into positions and back.
pub struct Locator<'t> {
    text: &'t str,
    doc: ImDocument<&'t str>,
}

impl<'t> Locator<'t> {
    /// Parses the text; the error is the TOML syntax error with its byte span.
    pub fn new(text: &'t str) -> Result<Locator<'t>, toml_edit::TomlError> {
        Ok(Locator {
            text,
            doc: ImDocument::parse(text)?,
        })
    }

    fn root(&self) -> Node<'_> {
        Node::Table(self.doc.as_table())
    }

    fn node(&self, path: &KeyPath) -> Option<Node<'_>> {
        let mut node = self.root();
        for seg in &path.0 {
            node = node.child(seg)?.1;
        }
        Some(node)
    }

    /// The byte span of a path's key or value. A path that is not in the text (a default) falls back to
    /// its deepest ancestor that is, so the message still points at the table it belongs to.
    pub fn span(&self, path: &KeyPath, part: Part) -> Option<Range<usize>> {
        let mut node = self.root();
        let mut best: Option<Range<usize>> = None;
        for (i, seg) in path.0.iter().enumerate() {
            let Some((key_span, child)) = node.child(seg) else {
                break;
            };
            let is_last = i + 1 == path.0.len();
            let chosen = if is_last && part == Part::Key {
                key_span.or_else(|| child.span())
            } else {
                child.span().or(key_span)
            };
            if chosen.is_some() {
                best = chosen;
            }
            node = child;
        }
        best
    }

    /// The 1-based line and column of a path's key or value (1:1 when nothing of it is in the text).
    pub fn position(&self, path: &KeyPath, part: Part) -> (usize, usize) {
        match self.span(path, part) {
            Some(span) => line_col(self.text, span.start),
            None => (1, 1),
        }
    }

    /// The deepest key path whose key or value contains the byte offset `at`.
    pub fn path_at(&self, at: usize) -> KeyPath {
        let mut found = KeyPath::root();
        deepest(self.root(), &mut Vec::new(), at, &mut found);
        found
    }

    /// A string value at a path, e.g. the `name` of a `[[source]]`.
    pub fn string(&self, path: &KeyPath) -> Option<&str> {
        match self.node(path)? {
            Node::Item(Item::Value(value)) | Node::Value(value) => value.as_str(),
            _ => None,
        }
    }

    /// The keys written in the table (or inline table) at `path`, with the span of each key.
    pub fn keys(&self, path: &KeyPath) -> Vec<(String, Option<Range<usize>>)> {
        let Some(node) = self.node(path) else {
            return Vec::new();
        };
        node.children()
            .into_iter()
            .filter_map(|(seg, span, _)| match seg {
                Seg::Key(key) => Some((key, span)),
                Seg::Index(_) => None,
            })
            .collect()
    }

    /// How users read a path: `[[source]] "uart0": baud` for a named element of an array of tables,
    /// else the dotted form `upstream.forward[0].filter`.
    pub fn describe(&self, path: &KeyPath) -> String {
        for (i, seg) in path.0.iter().enumerate() {
            let Seg::Index(_) = seg else { continue };
            let element = KeyPath(path.0[..=i].to_vec());
            let is_table_array = matches!(
                self.node(&KeyPath(path.0[..i].to_vec())),
                Some(Node::Item(Item::ArrayOfTables(_)))
            );
            if !is_table_array {
                continue;
            }
            if let Some(name) = self.string(&element.key("name")) {
                let head = format!(
                    "[[{}]] \"{}\"",
                    KeyPath(path.0[..i].to_vec()),
                    name.escape_debug()
                );
                let rest = KeyPath(path.0[i + 1..].to_vec());
                return if rest.0.is_empty() {
                    head
                } else {
                    format!("{head}: {rest}")
                };
            }
        }
        path.to_string()
    }

    /// `describe`, followed by ": " and the message.
    pub fn message(&self, path: &KeyPath, message: &str) -> String {
        if path.0.is_empty() {
            message.to_string()
        } else {
            format!("{}: {message}", self.describe(path))
        }
    }
}

fn deepest(node: Node<'_>, path: &mut Vec<Seg>, at: usize, found: &mut KeyPath) {
    for (seg, key_span, child) in node.children() {
        let extent = match (key_span, child.span()) {
            (Some(k), Some(v)) => Some(k.start.min(v.start)..k.end.max(v.end)),
            (k, v) => k.or(v),
        };
        let inside = extent.is_some_and(|e| e.start <= at && at < e.end.max(e.start + 1));
        if !inside && !child.is_scattered() {
            continue;
        }
        path.push(seg);
        if inside && path.len() > found.0.len() {
            *found = KeyPath(path.clone());
        }
        deepest(child, path, at, found);
        path.pop();
    }
}

/// The 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[gateway]
base_topic = \"home\"

[[broker.listener]]
bind = \"127.0.0.1:1883\"
tls = { cert_file = \"c.pem\", key_file = \"k.pem\" }

[broker]
max_inflight = 10

[[source]]
name = \"uart0\"
baud = 9600

[[upstream.forward]]
filter = \"a/#\"
";

    fn at(text: &str, needle: &str) -> usize {
        text.find(needle).unwrap()
    }

    #[test]
    fn line_col_counts_from_one_in_characters() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é = 1\nx", 7), (2, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn spans_of_keys_and_values() {
        let locator = Locator::new(TEXT).unwrap();
        let baud = KeyPath::root().key("source").index(0).key("baud");
        assert_eq!(locator.position(&baud, Part::Key), (13, 1));
        assert_eq!(locator.position(&baud, Part::Value), (13, 8));
        let key_file = KeyPath::root()
            .key("broker")
            .key("listener")
            .index(0)
            .key("tls")
            .key("key_file");
        assert_eq!(locator.position(&key_file, Part::Value), (6, 41));
    }

    #[test]
    fn missing_paths_fall_back_to_their_table() {
        let locator = Locator::new(TEXT).unwrap();
        let absent = KeyPath::root().key("source").index(0).key("payload");
        assert_eq!(locator.position(&absent, Part::Key), (11, 1));
        assert_eq!(
            locator.position(&KeyPath::root().key("log"), Part::Key),
            (1, 1)
        );
    }

    #[test]
    fn path_at_finds_the_deepest_key() {
        let locator = Locator::new(TEXT).unwrap();
        let path = locator.path_at(at(TEXT, "9600"));
        assert_eq!(path.to_string(), "source[0].baud");
        let path = locator.path_at(at(TEXT, "\"k.pem\""));
        assert_eq!(path.to_string(), "broker.listener[0].tls.key_file");
        let path = locator.path_at(at(TEXT, "max_inflight"));
        assert_eq!(path.to_string(), "broker.max_inflight");
        let path = locator.path_at(at(TEXT, "[[upstream.forward]]"));
        assert_eq!(path.to_string(), "upstream.forward[0]");
    }

    #[test]
    fn describe_names_array_elements_by_their_name() {
        let locator = Locator::new(TEXT).unwrap();
        let baud = KeyPath::root().key("source").index(0).key("baud");
        assert_eq!(locator.describe(&baud), "[[source]] \"uart0\": baud");
        let filter = KeyPath::root()
            .key("upstream")
            .key("forward")
            .index(0)
            .key("filter");
        assert_eq!(locator.describe(&filter), "upstream.forward[0].filter");
        assert_eq!(
            locator.describe(&KeyPath::root().key("source").index(0)),
            "[[source]] \"uart0\""
        );
    }

    #[test]
    fn keys_lists_what_a_table_holds() {
        let locator = Locator::new(TEXT).unwrap();
        let keys: Vec<String> = locator
            .keys(&KeyPath::root().key("source").index(0))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["name", "baud"]);
    }
}
