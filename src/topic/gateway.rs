//! Every topic the gateway itself builds: `{base}/{device}`, `{base}/{device}/{field}`,
//! `{base}/{device}/availability`, `{base}/gateway/availability`, `{base}/gateway/stats`, each LoRaWAN
//! packet forwarder's `{base}/gateway/lorawan/{eui}/availability`, the availability
//! payloads, and how a level made from outside data (a device name, a field name) is made safe.
//! Other modules take topic strings from here instead of formatting them again.
//!
//! Topic levels made from outside data go through [`sanitize_level`]: `+`, `#`, `/`, NUL and other control
//! characters become `_`, so does a leading `$` (the broker refuses a `$` level anywhere but first), an
//! empty level becomes `_`, and a level is cut to [`MAX_LEVEL_BYTES`]. A field named `availability` is
//! published on `{base}/{device}/availability_` so that it can never overwrite the device's availability,
//! and one named `error` on `{base}/{device}/error_`, clear of the device's codec errors.

/// The base topic when none is configured (`[gateway] base_topic`).
pub const DEFAULT_BASE_TOPIC: &str = "sensorgate";
/// The topic level reserved for the gateway itself (`{base}/gateway/...`); no device is given this name.
pub const GATEWAY_NAME: &str = "gateway";
/// The availability payload of a device or the gateway that is up.
pub const ONLINE: &str = "online";
/// The availability payload (and default will) of a device or the gateway that is gone.
pub const OFFLINE: &str = "offline";
/// Home Assistant's birth payload on `{prefix}/status`, on which discovery is published again.
pub const HOME_ASSISTANT_BIRTH: &str = "online";
/// The last level of an availability topic.
pub const AVAILABILITY_LEVEL: &str = "availability";
/// The last level of a device's error topic (a codec that failed on its payload).
pub const ERROR_LEVEL: &str = "error";
/// The longest topic level made from outside data, in bytes; longer ones are cut (on a character boundary).
pub const MAX_LEVEL_BYTES: usize = 128;

/// Makes `raw` safe as one topic level: wildcards (`+`, `#`), `/`, NUL and other control characters become
/// `_`, so does a leading `$`, an empty string becomes `_`, and anything beyond [`MAX_LEVEL_BYTES`] is cut.
pub fn sanitize_level(raw: &str) -> String {
    let mut level = String::with_capacity(raw.len().min(MAX_LEVEL_BYTES));
    for c in raw.chars() {
        let c = if matches!(c, '+' | '#' | '/') || c.is_control() || (level.is_empty() && c == '$')
        {
            '_'
        } else {
            c
        };
        if level.len() + c.len_utf8() > MAX_LEVEL_BYTES {
            break;
        }
        level.push(c);
    }
    if level.is_empty() {
        level.push('_');
    }
    level
}

/// Whether `base` can start every gateway topic: not empty, no empty level, no wildcard, NUL or control
/// character, and not a `$` system topic.
pub fn is_valid_base_topic(base: &str) -> bool {
    !base.is_empty()
        && !base.starts_with('$')
        && base.split('/').all(|level| !level.is_empty())
        && !base
            .chars()
            .any(|c| matches!(c, '+' | '#') || c.is_control())
}

/// `{base}/{device}`: the device's JSON state.
pub fn device_topic(base: &str, device: &str) -> String {
    format!("{base}/{device}")
}

/// `{base}/{device}/{field}`: one field as plain text. The field name is sanitised; a field named
/// `availability` goes to `availability_`, one named `error` to `error_`.
pub fn field_topic(base: &str, device: &str, field: &str) -> String {
    let mut level = sanitize_level(field);
    if level == AVAILABILITY_LEVEL || level == ERROR_LEVEL {
        level.push('_');
    }
    format!("{base}/{device}/{level}")
}

/// `{base}/{device}/error`: what a codec said about a payload it failed on (not retained).
pub fn error_topic(base: &str, device: &str) -> String {
    format!("{base}/{device}/{ERROR_LEVEL}")
}

/// `{base}/{device}/availability`: `online` / `offline`.
pub fn availability_topic(base: &str, device: &str) -> String {
    format!("{base}/{device}/{AVAILABILITY_LEVEL}")
}

/// `{base}/#`: every topic the gateway publishes (the topics only it may write; the default forward rule).
pub fn everything_below(base: &str) -> String {
    format!("{base}/#")
}

/// `{base}/gateway/availability`: the gateway's own `online` / `offline`.
pub fn gateway_availability_topic(base: &str) -> String {
    availability_topic(base, GATEWAY_NAME)
}

/// `{base}/gateway/lorawan/{eui}/availability`: a LoRaWAN packet forwarder's `online` / `offline` (its
/// EUI as 16 lowercase hex digits), retained.
pub fn lorawan_gateway_availability_topic(base: &str, eui: u64) -> String {
    format!("{base}/{GATEWAY_NAME}/lorawan/{eui:016x}/{AVAILABILITY_LEVEL}")
}

/// `{base}/gateway/stats`: the gateway's counters (not retained).
pub fn gateway_stats_topic(base: &str) -> String {
    format!("{base}/{GATEWAY_NAME}/stats")
}

/// `{base}/gateway/heard`: senders the sources heard but do not publish (retained JSON).
pub fn gateway_heard_topic(base: &str) -> String {
    format!("{base}/{GATEWAY_NAME}/heard")
}

/// The device name of `{base}/{device}/availability`, or `None` for any other topic (the gateway's included).
pub fn device_of_availability_topic<'t>(base: &str, topic: &'t str) -> Option<&'t str> {
    let device = topic
        .strip_prefix(base)?
        .strip_prefix('/')?
        .strip_suffix(AVAILABILITY_LEVEL)?
        .strip_suffix('/')?;
    let is_device_level = !device.is_empty() && !device.contains('/') && device != GATEWAY_NAME;
    is_device_level.then_some(device)
}

/// The device name of a `{base}/{device}` state topic, or `None` for any other topic.
pub fn device_of_state_topic<'t>(base: &str, topic: &'t str) -> Option<&'t str> {
    let device = topic.strip_prefix(base)?.strip_prefix('/')?;
    let is_device_level = !device.is_empty() && !device.contains('/') && device != GATEWAY_NAME;
    is_device_level.then_some(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitising_keeps_one_level_without_wildcards() {
        assert_eq!(sanitize_level("kitchen"), "kitchen");
        assert_eq!(sanitize_level("a/b+c#d\0e\nf"), "a_b_c_d_e_f");
        assert_eq!(sanitize_level(""), "_");
        assert_eq!(sanitize_level("/"), "_");
        assert_eq!(sanitize_level("$x"), "_x");
        assert_eq!(sanitize_level("$"), "_");
        assert_eq!(
            sanitize_level("a$b$"),
            "a$b$",
            "only a leading $ is special"
        );
        assert_eq!(sanitize_level("température"), "température");
        let long = "é".repeat(100);
        let cut = sanitize_level(&long);
        assert_eq!(cut.len(), MAX_LEVEL_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn base_topic_validation() {
        assert!(is_valid_base_topic("sensorgate"));
        assert!(is_valid_base_topic("home/sensorgate"));
        for bad in ["", "a//b", "/a", "a/", "a/+", "#", "$SYS/x", "a\0b"] {
            assert!(!is_valid_base_topic(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn topic_helpers() {
        assert_eq!(device_topic("sg", "kitchen"), "sg/kitchen");
        assert_eq!(field_topic("sg", "kitchen", "temp/1"), "sg/kitchen/temp_1");
        assert_eq!(field_topic("sg", "kitchen", "error"), "sg/kitchen/error_");
        assert_eq!(error_topic("sg", "kitchen"), "sg/kitchen/error");
        assert_eq!(
            field_topic("sg", "kitchen", "availability"),
            "sg/kitchen/availability_"
        );
        assert_eq!(
            availability_topic("sg", "kitchen"),
            "sg/kitchen/availability"
        );
        assert_eq!(
            gateway_availability_topic("a/b"),
            "a/b/gateway/availability"
        );
        assert_eq!(gateway_stats_topic("sg"), "sg/gateway/stats");
        assert_eq!(
            device_of_availability_topic("a/b", "a/b/kitchen/availability"),
            Some("kitchen")
        );
        assert_eq!(
            device_of_availability_topic("a/b", "a/b/gateway/availability"),
            None
        );
        assert_eq!(
            device_of_availability_topic("a/b", "a/b/x/y/availability"),
            None
        );
        assert_eq!(
            device_of_availability_topic("a/b", "a/bc/availability"),
            None
        );
        assert_eq!(device_of_availability_topic("a/b", "a/b/kitchen"), None);
        assert_eq!(device_of_state_topic("sg", "sg/kitchen"), Some("kitchen"));
        assert_eq!(device_of_state_topic("sg", "sg/kitchen/temp"), None);
        assert_eq!(device_of_state_topic("sg", "sg/gateway"), None);
    }
}
