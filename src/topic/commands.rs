//! The command topics: clients publish on `{base}/{device}/set` (a JSON object of fields) and
//! `{base}/{device}/set/{field}` (a plain value); results go to `{base}/{device}/set/result`. Here they
//! are built and parsed into the device and field they name; what a payload says is `crate::commands`'.

/// The last level of the result topic; not a field anyone can set.
pub const RESULT_LEVEL: &str = "result";
/// The level after the device's that makes a topic a command topic.
pub const SET_LEVEL: &str = "set";

/// What a command topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'t> {
    pub device: &'t str,
    /// `Some` for `set/{field}`.
    pub field: Option<&'t str>,
}

/// The filters the router listens on.
pub fn filters(base: &str) -> Vec<String> {
    vec![
        format!("{base}/+/{SET_LEVEL}"),
        format!("{base}/+/{SET_LEVEL}/+"),
    ]
}

/// `{base}/{device}/set/result`.
pub fn result_topic(base: &str, device: &str) -> String {
    format!("{base}/{device}/{SET_LEVEL}/{RESULT_LEVEL}")
}

/// `{base}/{device}/set/{field}` (what Home Assistant's switch and number entities command).
pub fn field_command_topic(base: &str, device: &str, field: &str) -> String {
    format!("{base}/{device}/{SET_LEVEL}/{field}")
}

/// The device (and field) a topic under `base` names, or `None` when it is not a command topic (the
/// result topic included).
pub fn parse_topic<'t>(base: &str, topic: &'t str) -> Option<Target<'t>> {
    let rest = topic.strip_prefix(base)?.strip_prefix('/')?;
    let mut levels = rest.split('/');
    let device = levels.next().filter(|d| !d.is_empty())?;
    if levels.next()? != SET_LEVEL {
        return None;
    }
    let field = levels.next();
    if levels.next().is_some() {
        return None;
    }
    match field {
        Some(RESULT_LEVEL) | Some("") => None,
        field => Some(Target { device, field }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        let t = parse_topic("sensorgate", "sensorgate/greenhouse/set").unwrap();
        assert_eq!(t.device, "greenhouse");
        assert_eq!(t.field, None);
        let t = parse_topic("a/b", "a/b/kitchen/set/relay").unwrap();
        assert_eq!((t.device, t.field), ("kitchen", Some("relay")));
        for topic in [
            "sensorgate/greenhouse/set/result",
            "sensorgate/greenhouse",
            "sensorgate//set",
            "sensorgate/x/set/a/b",
            "other/x/set",
            "sensorgatex/x/set",
        ] {
            assert_eq!(parse_topic("sensorgate", topic), None, "{topic}");
        }
        assert_eq!(result_topic("s", "d"), "s/d/set/result");
    }
}
