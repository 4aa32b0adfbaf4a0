//! The topics only the gateway writes: its own topic filters (`{base}/#`) and, when Home Assistant
//! discovery is on, the discovery topics of its own devices, `{prefix}/{component}/{node_id}/...` where
//! `node_id` is the gateway's node id (`sensorgate_{gateway id}`) or starts with it and `_` (every device
//! node id does). Other integrations' discovery topics under the same prefix stay writable: only node ids
//! the gateway makes are its own, the way `{base}/#` is.
//!
//! A client's write filter grants such a topic only when it lies entirely inside the owned part: for the
//! base topic a filter within `{base}/#` (`sensorgate/cmd/#`), for discovery a filter that names the prefix
//! and an owned node id literally (`homeassistant/+/sensorgate_gw_uart0_17/#`); `#` or
//! `homeassistant/#` do not. Matching is [`crate::topic`]'s.

use crate::topic::{filter_within, matches as topic_matches};

/// The discovery topics the gateway owns: under `prefix`, those of `node_id` and of every node id
/// starting with `node_id` and `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryNodes {
    /// The discovery prefix (`[homeassistant] prefix`).
    pub prefix: String,
    /// The gateway's node id.
    pub node_id: String,
}

impl DiscoveryNodes {
    fn owns_node(&self, node: &str) -> bool {
        node.strip_prefix(self.node_id.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
    }

    /// `{component}/{node}...` after the prefix, or `None` when `text` is not under the prefix.
    fn node_level<'t>(&self, text: &'t str) -> Option<(&'t str, &'t str)> {
        let rest = text.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let mut levels = rest.splitn(3, '/');
        Some((levels.next()?, levels.next()?))
    }

    /// Whether `topic` is an owned discovery topic.
    fn owns(&self, topic: &str) -> bool {
        self.node_level(topic)
            .is_some_and(|(_, node)| self.owns_node(node))
    }

    /// Whether every topic the write filter `rule` matches is an owned discovery topic.
    fn contains(&self, rule: &str) -> bool {
        self.node_level(rule)
            .is_some_and(|(component, node)| component != "#" && self.owns_node(node))
    }
}

/// Everything the gateway owns; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayTopics {
    filters: Vec<String>,
    discovery: Option<DiscoveryNodes>,
}

impl GatewayTopics {
    /// The gateway's topic filters (e.g. `sensorgate/#`) and, with discovery on, its discovery nodes.
    pub fn new(filters: Vec<String>, discovery: Option<DiscoveryNodes>) -> Self {
        GatewayTopics { filters, discovery }
    }

    /// Whether `topic` is the gateway's.
    pub fn owns(&self, topic: &str) -> bool {
        self.filters.iter().any(|owned| topic_matches(owned, topic))
            || self
                .discovery
                .as_ref()
                .is_some_and(|nodes| nodes.owns(topic))
    }

    /// Whether the write filter `rule` lies entirely inside what the gateway owns (so that it may grant
    /// an owned topic: the operator named that part explicitly).
    pub fn contains(&self, rule: &str) -> bool {
        self.filters.iter().any(|owned| filter_within(rule, owned))
            || self
                .discovery
                .as_ref()
                .is_some_and(|nodes| nodes.contains(rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned() -> GatewayTopics {
        GatewayTopics::new(
            vec!["sg/#".into()],
            Some(DiscoveryNodes {
                prefix: "homeassistant".into(),
                node_id: "sensorgate_gw".into(),
            }),
        )
    }

    #[test]
    fn the_gateways_discovery_nodes_are_owned_and_no_others() {
        let owned = owned();
        for topic in [
            "sg/kitchen",
            "homeassistant/sensor/sensorgate_gw/frames/config",
            "homeassistant/sensor/sensorgate_gw_uart0_17/temperature/config",
            "homeassistant/switch/sensorgate_gw_uart0_17/digital_out_1/config",
            "homeassistant/device/sensorgate_gw_lora_1/config",
        ] {
            assert!(owned.owns(topic), "{topic}");
        }
        for topic in [
            "homeassistant/status",
            "homeassistant/sensor/zigbee_1/temperature/config",
            "homeassistant/sensor/sensorgate_gwx/frames/config",
            "homeassistant/sensor/sensorgate_other/frames/config",
            "homeassistant",
            "homeassistantx/sensor/sensorgate_gw/frames/config",
            "other/sensor/sensorgate_gw/frames/config",
        ] {
            assert!(!owned.owns(topic), "{topic}");
        }
        assert!(
            !GatewayTopics::new(vec!["sg/#".into()], None)
                .owns("homeassistant/sensor/sensorgate_gw/frames/config"),
            "discovery off: nothing under the prefix is the gateway's"
        );
    }

    #[test]
    fn only_a_rule_naming_an_owned_node_lies_inside() {
        let owned = owned();
        for rule in [
            "sg/cmd/#",
            "homeassistant/+/sensorgate_gw_uart0_17/#",
            "homeassistant/sensor/sensorgate_gw/frames/config",
        ] {
            assert!(owned.contains(rule), "{rule}");
        }
        for rule in [
            "#",
            "homeassistant/#",
            "homeassistant/+/#",
            "homeassistant/+/+/+/config",
            "homeassistant/sensor/+/temperature/config",
            "+/sensor/sensorgate_gw/#",
            "homeassistant/sensor/zigbee_1/#",
        ] {
            assert!(!owned.contains(rule), "{rule}");
        }
    }
}
