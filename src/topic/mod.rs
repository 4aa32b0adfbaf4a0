//! MQTT topic names and topic filters: their grammar, their depth, and how filters match topics and each
//! other. This module is the one owner of those rules; the broker's rights and protocol checks, the
//! uplink's forward rules and the configuration checks all call it. It never allocates per level and never
//! recurses, so a topic of 30,000 levels costs a linear scan, not a stack.
//!
//! The topics the gateway builds from device and field names are in [`gateway`].
//!
//! Rules (MQTT 3.1.1 §4.7, MQTT 5 §4.7):
//! - A topic name is at least one byte, at most [`MAX_TOPIC_BYTES`], and holds no `+`, `#` or NUL. Empty
//!   levels (`a//b`, `/a`) are legal MQTT; the gateway's own topics avoid them ([`has_empty_level`]).
//! - A filter is a topic whose levels may be `+` (one level) or, last, `#` (this level and all below).
//! - Filters starting with a wildcard do not match topics starting with `$` (`$SYS/...`).
//! - Depth is counted in levels (`a/b/c` has 3); the broker refuses anything deeper than its
//!   `max_topic_levels` before it reaches the engine, whose topic tree recurses per level.

pub mod commands;
pub mod gateway;

use std::fmt;

/// The longest topic name or filter MQTT can carry (a two-byte length).
pub const MAX_TOPIC_BYTES: usize = 65_535;

/// What is wrong with a topic name or filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicError {
    Empty,
    TooLong {
        bytes: usize,
    },
    TooDeep {
        levels: usize,
        max: usize,
    },
    Nul,
    /// A wildcard in a topic name.
    WildcardInName(char),
    /// `+` or `#` that is not a whole level, or `#` that is not the last level.
    MisplacedWildcard(char),
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => write!(f, "is empty"),
            TopicError::TooLong { bytes } => {
                write!(f, "is {bytes} bytes, longer than MQTT's {MAX_TOPIC_BYTES}")
            }
            TopicError::TooDeep { levels, max } => {
                write!(f, "has {levels} levels, more than the {max} allowed")
            }
            TopicError::Nul => write!(f, "contains NUL"),
            TopicError::WildcardInName(c) => write!(
                f,
                "contains '{c}', which a topic name cannot hold (wildcards belong in filters)"
            ),
            TopicError::MisplacedWildcard('#') => {
                write!(
                    f,
                    "'#' must be a whole level and the last one, e.g. \"sensorgate/#\""
                )
            }
            TopicError::MisplacedWildcard(c) => {
                write!(
                    f,
                    "'{c}' must be a whole level, e.g. \"sensorgate/+/temperature_1\""
                )
            }
        }
    }
}

impl std::error::Error for TopicError {}

/// Number of levels: one more than the number of `/`.
pub fn level_count(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// True when a level is empty (`a//b`, a leading or trailing `/`).
pub fn has_empty_level(topic: &str) -> bool {
    topic.split('/').any(str::is_empty)
}

/// Checks a topic name as MQTT defines it, with at most `max_levels` levels.
pub fn check_name(topic: &str, max_levels: usize) -> Result<(), TopicError> {
    check_common(topic, max_levels)?;
    match topic.chars().find(|c| matches!(c, '+' | '#')) {
        Some(c) => Err(TopicError::WildcardInName(c)),
        None => Ok(()),
    }
}

/// Checks a topic filter as MQTT defines it, with at most `max_levels` levels.
pub fn check_filter(filter: &str, max_levels: usize) -> Result<(), TopicError> {
    check_common(filter, max_levels)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedWildcard('#'));
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedWildcard('+'));
        }
    }
    Ok(())
}

fn check_common(text: &str, max_levels: usize) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong { bytes: text.len() });
    }
    if text.contains('\0') {
        return Err(TopicError::Nul);
    }
    let levels = level_count(text);
    if levels > max_levels {
        return Err(TopicError::TooDeep {
            levels,
            max: max_levels,
        });
    }
    Ok(())
}

fn starts_with_wildcard(filter: &str) -> bool {
    filter.starts_with('+') || filter.starts_with('#')
}

/// Does the filter `filter` match the topic name `topic`? Level by level over the bytes (this runs for
/// every write-right check of a client publish and every delivery that is read-checked).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    let (filter, topic) = (filter.as_bytes(), topic.as_bytes());
    let mut level_start = 0;
    // Where the topic's next level starts; `None` once the topic has no level left.
    let mut topic_level_start = Some(0);
    loop {
        let level_end = end_of_level(filter, level_start);
        let level = &filter[level_start..level_end];
        if level == b"#" {
            return true;
        }
        let Some(topic_start) = topic_level_start else {
            return false;
        };
        let topic_end = end_of_level(topic, topic_start);
        if level != b"+" && level != &topic[topic_start..topic_end] {
            return false;
        }
        topic_level_start = (topic_end < topic.len()).then_some(topic_end + 1);
        if level_end == filter.len() {
            return topic_level_start.is_none();
        }
        level_start = level_end + 1;
    }
}

/// The end of the level of `text` that starts at `start`: its next `/`, or the end of `text`.
fn end_of_level(text: &[u8], start: usize) -> usize {
    text[start..]
        .iter()
        .position(|&byte| byte == b'/')
        .map_or(text.len(), |at| start + at)
}

/// Is there a topic name that both filters match?
pub fn filters_overlap(a: &str, b: &str) -> bool {
    if (a.starts_with('$') && starts_with_wildcard(b))
        || (b.starts_with('$') && starts_with_wildcard(a))
    {
        return false;
    }
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Does `outer` match every topic name that `inner` matches?
pub fn filter_within(inner: &str, outer: &str) -> bool {
    if starts_with_wildcard(outer) && inner.starts_with('$') {
        return false;
    }
    let mut inner_levels = inner.split('/');
    let mut outer_levels = outer.split('/').peekable();
    let mut first = true;
    loop {
        let pair = (inner_levels.next(), outer_levels.next());
        // A topic has at least one level, so at the top `#` and `+/#` match the same topics.
        if first && pair == (Some("#"), Some("+")) && outer_levels.peek() == Some(&"#") {
            return outer_levels.nth(1).is_none();
        }
        first = false;
        match pair {
            (_, Some("#")) => return true,
            (Some("#"), _) => return false,
            (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`matches`] as the MQTT specification words it, level by level over `split('/')`.
    fn matches_by_split(filter: &str, topic: &str) -> bool {
        if topic.starts_with('$') && starts_with_wildcard(filter) {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in filter.split('/') {
            match level {
                "#" => return true,
                "+" if topic_levels.next().is_none() => return false,
                "+" => {}
                exact if topic_levels.next() != Some(exact) => return false,
                _ => {}
            }
        }
        topic_levels.next().is_none()
    }

    /// Every string of up to four characters from `a`, `/`, `+`, `#` and `$`: valid and invalid
    /// filters and names, empty levels, leading and trailing slashes.
    fn short_texts() -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|text| ['a', '/', '+', '#', '$'].map(|c| format!("{text}{c}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn matching_over_bytes_agrees_with_matching_over_split_levels() {
        let texts = short_texts();
        assert_eq!(texts.len(), 781);
        let mut matched = 0;
        for filter in &texts {
            for topic in &texts {
                let expected = matches_by_split(filter, topic);
                assert_eq!(matches(filter, topic), expected, "{filter:?} {topic:?}");
                matched += usize::from(expected);
            }
        }
        assert!(matched > 10_000, "{matched} pairs matched");
    }

    #[test]
    fn matching_follows_mqtt() {
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(matches("a/#", "a/b/c"));
        assert!(matches("#", "a"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("+/+", "/x"));
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/x", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(matches("a//b", "a//b"));
    }

    #[test]
    fn overlap_and_containment() {
        assert!(filters_overlap("#", "sensorgate/#"));
        assert!(filters_overlap("sensorgate/+/t", "+/kitchen/#"));
        assert!(!filters_overlap("secret/#", "sensorgate/#"));
        assert!(!filters_overlap("#", "$SYS/#"));
        assert!(!filters_overlap("a/b", "a/b/c"));
        assert!(filter_within("sensorgate/cmd/+", "sensorgate/#"));
        assert!(filter_within("sensorgate", "sensorgate/#"));
        assert!(!filter_within("#", "sensorgate/#"));
        assert!(!filter_within("sensorgate/+", "sensorgate/x"));
        assert!(filter_within("a/+/c", "a/+/#"));
        assert!(!filter_within("a/#", "a/+"));
        assert!(filter_within("#", "+/#"), "every topic has a first level");
        assert!(
            !filter_within("a/#", "a/+/#"),
            "a/# matches a, a/+/# does not"
        );
        assert!(!filter_within("#", "+/+/#"));
    }

    #[test]
    fn names_and_filters_are_checked() {
        assert_eq!(check_name("a/b", 128), Ok(()));
        assert_eq!(check_name("a//b", 128), Ok(()));
        assert_eq!(check_name("", 128), Err(TopicError::Empty));
        assert_eq!(check_name("a/+", 128), Err(TopicError::WildcardInName('+')));
        assert_eq!(check_name("#", 128), Err(TopicError::WildcardInName('#')));
        assert_eq!(check_name("a\0b", 128), Err(TopicError::Nul));
        assert_eq!(check_filter("a/+/#", 128), Ok(()));
        assert_eq!(
            check_filter("a/#/b", 128),
            Err(TopicError::MisplacedWildcard('#'))
        );
        assert_eq!(
            check_filter("a/b+", 128),
            Err(TopicError::MisplacedWildcard('+'))
        );
        assert_eq!(
            check_filter("a/b/c", 2),
            Err(TopicError::TooDeep { levels: 3, max: 2 })
        );
        let long = "a".repeat(MAX_TOPIC_BYTES + 1);
        assert!(matches!(
            check_name(&long, 128),
            Err(TopicError::TooLong { .. })
        ));
    }

    #[test]
    fn thirty_thousand_levels_are_a_linear_scan() {
        let deep_topic = vec!["x"; 30_000].join("/");
        let deep_filter = format!("x{}", "/+".repeat(29_999));
        assert!(matches(&deep_filter, &deep_topic));
        assert!(filters_overlap(&deep_filter, &deep_topic));
        assert!(filter_within(&deep_topic, &deep_filter));
        assert_eq!(level_count(&deep_topic), 30_000);
        assert!(matches!(
            check_filter(&deep_filter, 128),
            Err(TopicError::TooDeep { levels: 30_000, .. })
        ));
    }
}
