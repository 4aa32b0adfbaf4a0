//! Forward rules: which messages of the local broker go upstream, under which remote topic and at which
//! QoS. Rules are tried in order and the first whose filter matches decides (a message is never
//! forwarded twice); the remote topic is the rule's prefix followed by the local topic, and the retained
//! flag is kept. The gateway's own availability topic is never forwarded: upstream, the uplink owns it
//! (its MQTT will and the `online` sent on every CONNACK), and a spooled local `offline` replayed after an
//! outage would otherwise overwrite the fresh `online`. A rule with `encrypt` seals each payload into the
//! end-to-end envelope for its remote topic (`crate::crypto::envelope`) here, before the spool, so the
//! spool holds ciphertext too. Pure: no IO.

use crate::model::Message;
use crate::topic::TopicError;

use super::spool::Outbound;

/// One `[[upstream.forward]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    /// Local topic filter, MQTT wildcards allowed (`sensorgate/#`, `sensorgate/+/temperature`).
    pub filter: String,
    /// Prepended to the local topic to make the remote one (`sites/garden/`).
    pub prefix: String,
    /// QoS of the upstream publish: 0, 1 or 2.
    pub qos: u8,
}

/// A rule the forwarder cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream.forward[{index}].filter {filter:?}: {what}")]
    Filter {
        index: usize,
        filter: String,
        what: TopicError,
    },
    #[error("upstream.forward[{index}].prefix {prefix:?}: must not contain + # or NUL")]
    Prefix { index: usize, prefix: String },
    #[error("upstream.forward[{index}].qos {qos}: must be 0, 1 or 2")]
    Qos { index: usize, qos: u8 },
}

/// The compiled rules.
#[derive(Debug, Clone)]
pub struct Forwarder {
    rules: Vec<ForwardRule>,
    own_availability: String,
    /// Per rule, its end-to-end encryption.
    sealers: Vec<Option<crate::crypto::Sealer>>,
}

/// Checks a topic filter as MQTT defines it ([`crate::topic::check_filter`], any depth).
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    crate::topic::check_filter(filter, usize::MAX)
}

/// MQTT topic matching, as everywhere in the gateway ([`crate::topic::matches`]).
pub use crate::topic::matches as topic_matches;

impl Forwarder {
    /// Validates the rules. `base_topic` names the gateway's availability topic, which is not forwarded.
    pub fn new(rules: Vec<ForwardRule>, base_topic: &str) -> Result<Forwarder, ForwardError> {
        for (index, rule) in rules.iter().enumerate() {
            validate_filter(&rule.filter).map_err(|what| ForwardError::Filter {
                index,
                filter: rule.filter.clone(),
                what,
            })?;
            if rule.prefix.contains(['+', '#', '\0']) {
                return Err(ForwardError::Prefix {
                    index,
                    prefix: rule.prefix.clone(),
                });
            }
            if rule.qos > 2 {
                return Err(ForwardError::Qos {
                    index,
                    qos: rule.qos,
                });
            }
        }
        Ok(Forwarder {
            sealers: vec![None; rules.len()],
            rules,
            own_availability: crate::topic::gateway::gateway_availability_topic(base_topic),
        })
    }

    /// Seals the payloads of rule `index` with `sealer`; an index without a rule is ignored.
    pub fn encrypt_rule(&mut self, index: usize, sealer: crate::crypto::Sealer) {
        if let Some(slot) = self.sealers.get_mut(index) {
            *slot = Some(sealer);
        }
    }

    /// The upstream message for a local one, or `None` when no rule selects it.
    pub fn route(&self, message: &Message) -> Option<Outbound> {
        if message.topic == self.own_availability {
            return None;
        }
        let index = self
            .rules
            .iter()
            .position(|rule| topic_matches(&rule.filter, &message.topic))?;
        let rule = &self.rules[index];
        let topic = format!("{}{}", rule.prefix, message.topic);
        let payload = match self.sealers.get(index).and_then(Option::as_ref) {
            // Sealing fails only beyond 256 GiB, far above any MQTT payload.
            Some(sealer) => sealer.seal(&topic, &message.payload).ok()?,
            None => message.payload.clone(),
        };
        Some(Outbound {
            topic,
            payload,
            qos: rule.qos,
            retain: message.retain,
        })
    }

    /// The prefix of the first rule (empty without rules): where the uplink's availability goes.
    pub fn first_prefix(&self) -> &str {
        self.rules.first().map(|r| r.prefix.as_str()).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, retain: bool) -> Message {
        Message {
            topic: topic.into(),
            payload: b"21.5".to_vec(),
            qos: 0,
            retain,
        }
    }

    fn rule(filter: &str, prefix: &str, qos: u8) -> ForwardRule {
        ForwardRule {
            filter: filter.into(),
            prefix: prefix.into(),
            qos,
        }
    }

    #[test]
    fn wildcards_match_like_mqtt() {
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(topic_matches("+/+", "a/"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }

    #[test]
    fn the_first_matching_rule_decides_and_retain_is_kept() {
        let forwarder = Forwarder::new(
            vec![rule("sg/kitchen/#", "k/", 2), rule("sg/#", "site/", 1)],
            "sg",
        )
        .unwrap();
        let out = forwarder.route(&message("sg/kitchen/temp", true)).unwrap();
        assert_eq!(
            (out.topic.as_str(), out.qos, out.retain),
            ("k/sg/kitchen/temp", 2, true)
        );
        let out = forwarder.route(&message("sg/hall", false)).unwrap();
        assert_eq!(
            (out.topic.as_str(), out.qos, out.retain),
            ("site/sg/hall", 1, false)
        );
        assert!(forwarder.route(&message("other/x", false)).is_none());
        assert!(forwarder
            .route(&message("sg/gateway/availability", true))
            .is_none());
        assert_eq!(forwarder.first_prefix(), "k/");
    }

    #[test]
    fn an_encrypted_rule_seals_for_its_remote_topic() {
        use crate::crypto::{envelope, EnvelopeKey, Sealer};
        let key = EnvelopeKey::from_bytes([7; 32]);
        let mut forwarder = Forwarder::new(
            vec![rule("sg/kitchen/#", "site/", 1), rule("sg/#", "site/", 1)],
            "sg",
        )
        .unwrap();
        forwarder.encrypt_rule(0, Sealer::new(key.clone(), 9));
        forwarder.encrypt_rule(5, Sealer::new(key.clone(), 9));
        let out = forwarder.route(&message("sg/kitchen/temp", true)).unwrap();
        assert_eq!(out.payload.len(), 4 + envelope::OVERHEAD);
        let (key_id, payload) =
            envelope::open(&key, Some(9), "site/sg/kitchen/temp", &out.payload).unwrap();
        assert_eq!((key_id, payload.as_slice()), (9, b"21.5".as_slice()));
        assert!(envelope::open(&key, Some(9), "site/sg/hall/temp", &out.payload).is_err());
        let plain = forwarder.route(&message("sg/hall", false)).unwrap();
        assert_eq!(plain.payload, b"21.5");
    }

    #[test]
    fn bad_rules_are_named() {
        let error = Forwarder::new(vec![rule("a/#/b", "", 1)], "sg").unwrap_err();
        assert!(error.to_string().contains("upstream.forward[0].filter"));
        assert!(Forwarder::new(vec![rule("a/b+", "", 1)], "sg").is_err());
        assert!(Forwarder::new(vec![rule("a", "x/#/", 1)], "sg").is_err());
        assert!(Forwarder::new(vec![rule("a", "", 3)], "sg").is_err());
    }
}
