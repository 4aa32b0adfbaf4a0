//! Per-topic rights of the embedded broker's clients, mosquitto-like: each user (and the anonymous client)
//! has `read` and `write` topic filters, in which `%u` stands for the user name and `%c` for the client id.
//! This module answers "may this client write/read/subscribe to this?" from the configuration alone; it
//! never sees the engine, a socket or a password.
//!
//! Rules:
//! - write: the topic matches one of the client's `write` filters. Topics the gateway owns
//!   ([`GatewayTopics`]: `sensorgate/#`, and its own Home Assistant discovery topics) additionally need a
//!   write filter that lies entirely inside them: `write = ["sensorgate/cmd/#"]` grants
//!   `sensorgate/cmd/x`, `write = ["#"]` does not.
//! - read: a message is delivered only if its topic matches one of the client's `read` filters.
//! - subscribe: granted when the filter can match at least one topic the client may read (so `#` is
//!   granted to a reader of `sensorgate/#`, who then receives only `sensorgate/...`); refused otherwise.
//! - `%u`/`%c` never widen a rule: a rule naming `%u` does not apply to anonymous clients, and a rule does
//!   not apply when the substituted name contains `+`, `#` or `/`.
//! - As in MQTT, filters starting with a wildcard do not match topics starting with `$`; matching itself is
//!   [`crate::topic`]'s.

use std::borrow::Cow;
use std::collections::HashMap;

use super::owned::GatewayTopics;
pub use crate::topic::{filter_within, filters_overlap, matches as topic_matches};

/// Who is asking: the login name (None when anonymous) and the MQTT client id.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub user: Option<&'a str>,
    pub client_id: &'a str,
}

/// The read and write filters of one user (or of anonymous clients), as configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rights {
    pub read: Vec<String>,
    pub write: Vec<String>,
}

/// Everyone's rights, built once from the broker settings.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    users: HashMap<String, Rights>,
    anonymous: Rights,
    gateway_topics: GatewayTopics,
}

impl AccessPolicy {
    pub fn new(
        users: impl IntoIterator<Item = (String, Rights)>,
        anonymous: Rights,
        gateway_topics: GatewayTopics,
    ) -> Self {
        AccessPolicy {
            users: users.into_iter().collect(),
            anonymous,
            gateway_topics,
        }
    }

    fn rights(&self, client: Client<'_>) -> Option<&Rights> {
        match client.user {
            None => Some(&self.anonymous),
            Some(name) => self.users.get(name),
        }
    }

    /// May `client` publish to `topic` (also: may its will be published there)?
    pub fn may_write(&self, client: Client<'_>, topic: &str) -> bool {
        let Some(rights) = self.rights(client) else {
            return false;
        };
        let gateway_owned = self.gateway_topics.owns(topic);
        expanded(&rights.write, client).any(|rule| {
            topic_matches(&rule, topic) && (!gateway_owned || self.gateway_topics.contains(&rule))
        })
    }

    /// May a message on `topic` be delivered to `client`?
    pub fn may_read(&self, client: Client<'_>, topic: &str) -> bool {
        self.rights(client).is_some_and(|rights| {
            expanded(&rights.read, client).any(|rule| topic_matches(&rule, topic))
        })
    }

    /// May `client` read every topic `filter` matches (so that a subscription to it never needs a
    /// per-message check)?
    pub fn may_read_all_of(&self, client: Client<'_>, filter: &str) -> bool {
        self.rights(client).is_some_and(|rights| {
            expanded(&rights.read, client).any(|rule| filter_within(filter, &rule))
        })
    }

    /// May `client` subscribe to `filter` (it can match at least one topic the client may read)?
    pub fn may_subscribe(&self, client: Client<'_>, filter: &str) -> bool {
        self.rights(client).is_some_and(|rights| {
            expanded(&rights.read, client).any(|rule| filters_overlap(&rule, filter))
        })
    }
}

/// The client's rules with `%u` and `%c` substituted; rules that cannot apply to this client are left out.
/// A rule without placeholders is borrowed, not copied (this runs for every delivery that is checked).
fn expanded<'a>(
    rules: &'a [String],
    client: Client<'a>,
) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    rules
        .iter()
        .filter_map(move |rule| substitute(rule, client))
}

fn substitute<'a>(rule: &'a str, client: Client<'_>) -> Option<Cow<'a, str>> {
    if !rule.contains('%') {
        return Some(Cow::Borrowed(rule));
    }
    let safe = |name: &str| !name.is_empty() && !name.contains(['+', '#', '/']);
    let mut out = rule.to_string();
    if out.contains("%u") {
        let user = client.user.filter(|u| safe(u))?;
        out = out.replace("%u", user);
    }
    if out.contains("%c") {
        if !safe(client.client_id) {
            return None;
        }
        out = out.replace("%c", client.client_id);
    }
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::owned::DiscoveryNodes;

    fn policy() -> AccessPolicy {
        AccessPolicy::new(
            [
                (
                    "ha".to_string(),
                    Rights {
                        read: vec!["sensorgate/#".into()],
                        write: vec!["#".into()],
                    },
                ),
                (
                    "node".to_string(),
                    Rights {
                        read: vec!["users/%u/#".into(), "clients/%c".into()],
                        write: vec!["sensorgate/cmd/+".into(), "users/%u/out".into()],
                    },
                ),
            ],
            Rights {
                read: vec!["#".into()],
                write: vec!["#".into()],
            },
            GatewayTopics::new(
                vec!["sensorgate/#".into()],
                Some(DiscoveryNodes {
                    prefix: "homeassistant".into(),
                    node_id: "sensorgate_gw".into(),
                }),
            ),
        )
    }

    fn user<'a>(name: &'a str, client_id: &'a str) -> Client<'a> {
        Client {
            user: Some(name),
            client_id,
        }
    }

    const ANON: Client<'static> = Client {
        user: None,
        client_id: "anon",
    };

    #[test]
    fn gateway_topics_need_an_explicit_rule() {
        let p = policy();
        assert!(
            !p.may_write(ANON, "sensorgate/kitchen"),
            "anonymous '#' does not name the gateway's topics"
        );
        assert!(p.may_write(ANON, "home/light"));
        assert!(!p.may_write(user("ha", "c"), "sensorgate/kitchen/temperature"));
        assert!(p.may_write(user("ha", "c"), "zigbee/set"));
        assert!(p.may_write(user("node", "c"), "sensorgate/cmd/reboot"));
        assert!(!p.may_write(user("node", "c"), "sensorgate/kitchen"));
        let config = "homeassistant/sensor/sensorgate_gw_uart0_17/temperature/config";
        assert!(
            !p.may_write(ANON, config),
            "anonymous '#' does not name the gateway's discovery topics"
        );
        assert!(!p.may_write(user("ha", "c"), config));
        assert!(p.may_write(ANON, "homeassistant/status"));
        assert!(p.may_write(ANON, "homeassistant/sensor/zigbee_1/temperature/config"));
    }

    #[test]
    fn placeholders_expand_and_never_widen() {
        let p = policy();
        assert!(p.may_read(user("node", "n1"), "users/node/a/b"));
        assert!(!p.may_read(user("node", "n1"), "users/other/a"));
        assert!(p.may_read(user("node", "n1"), "clients/n1"));
        assert!(!p.may_read(user("node", "n+"), "clients/n+"));
        assert!(!p.may_read(user("node", "a/b"), "clients/a/b"));
        assert!(p.may_write(user("node", "n1"), "users/node/out"));
        let anonymous_with_user_rule = AccessPolicy::new(
            [],
            Rights {
                read: vec!["users/%u/#".into()],
                write: vec![],
            },
            GatewayTopics::default(),
        );
        assert!(!anonymous_with_user_rule.may_read(ANON, "users//x"));
        assert!(!anonymous_with_user_rule.may_subscribe(ANON, "#"));
    }

    #[test]
    fn a_filter_is_read_whole_only_inside_a_read_rule() {
        let p = policy();
        assert!(p.may_read_all_of(user("ha", "c"), "sensorgate/#"));
        assert!(p.may_read_all_of(user("ha", "c"), "sensorgate/+/temperature"));
        assert!(
            !p.may_read_all_of(user("ha", "c"), "#"),
            "granted, but only partly readable"
        );
        assert!(p.may_read_all_of(user("node", "n1"), "users/node/#"));
        assert!(!p.may_read_all_of(user("node", "n1"), "users/+/#"));
        assert!(p.may_read_all_of(user("node", "n1"), "clients/n1"));
        assert!(p.may_read_all_of(ANON, "#"));
        assert!(
            !p.may_read_all_of(ANON, "$SYS/#"),
            "a rule starting with a wildcard does not cover $-topics"
        );
        assert!(!p.may_read_all_of(user("unknown", "c"), "sensorgate/#"));
    }

    #[test]
    fn subscribe_is_granted_when_something_readable_can_match() {
        let p = policy();
        assert!(p.may_subscribe(user("ha", "c"), "#"));
        assert!(p.may_subscribe(user("ha", "c"), "sensorgate/+/temperature"));
        assert!(!p.may_subscribe(user("ha", "c"), "secret/#"));
        assert!(!p.may_read(user("ha", "c"), "secret/x"));
        assert!(
            !p.may_subscribe(user("unknown", "c"), "#"),
            "an unknown user has no rights"
        );
    }
}
