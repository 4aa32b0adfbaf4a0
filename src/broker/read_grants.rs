//! Read rights decided once per subscription instead of once per delivered message.
//!
//! The engine has no delivery ACL, so the policy checks every delivery against the receiver's read rules
//! ([`super::acl::AccessPolicy::may_read`]). For most clients that answer never changes: when every filter
//! a client subscribed lies inside one of its read rules (`sensorgate/#` for a reader of `sensorgate/#`,
//! anything for a reader of `#`), every message routed to it is readable. [`ReadGrants`] remembers, per
//! client id and login, whether that holds: a clean start begins with nothing subscribed (covered), each
//! granted SUBSCRIBE keeps it only if the filter lies inside a read rule, and a resumed session (whose
//! earlier subscriptions this table did not see) is never covered. Only a client with a filter that merely
//! overlaps its rights (`#` for a reader of `sensorgate/#`), or one that was not seen to start clean, has
//! its deliveries checked one by one. It is never wider than the per-message check: an entry is dropped
//! when the session ends, and an answer is given only for the login it was made for.

use rmqtt::types::{ClientId, DashMap, UserName};

/// What is known of one client id's subscriptions.
#[derive(Debug, Clone, PartialEq)]
struct Grant {
    /// The login the subscriptions were made under (None: anonymous).
    user: Option<UserName>,
    /// Every filter of the session lies inside one of its read rules.
    covered: bool,
}

/// Per client id: are all of its subscriptions readable in whole?
#[derive(Default)]
pub struct ReadGrants {
    grants: DashMap<ClientId, Grant>,
}

impl ReadGrants {
    /// A connection of `client_id` under `user` began; `clean_start` when it starts without any earlier
    /// subscription.
    pub fn connected(&self, client_id: &ClientId, user: Option<&UserName>, clean_start: bool) {
        self.grants.insert(
            client_id.clone(),
            Grant {
                user: user.cloned(),
                covered: clean_start,
            },
        );
    }

    /// A SUBSCRIBE was granted; `whole` when its filter lies inside a read rule of the client.
    pub fn subscribed(&self, client_id: &ClientId, user: Option<&UserName>, whole: bool) {
        match self.grants.get_mut(client_id) {
            Some(mut grant) if grant.user.as_ref() == user => grant.covered &= whole,
            Some(mut grant) => {
                *grant = Grant {
                    user: user.cloned(),
                    covered: false,
                }
            }
            None => {
                self.grants.insert(
                    client_id.clone(),
                    Grant {
                        user: user.cloned(),
                        covered: false,
                    },
                );
            }
        }
    }

    /// May a delivery to `client_id` under `user` skip the per-message read check?
    pub fn covers(&self, client_id: &str, user: Option<&UserName>) -> bool {
        self.grants
            .get(client_id)
            .is_some_and(|grant| grant.covered && grant.user.as_ref() == user)
    }

    /// The session of `client_id` ended: nothing is known of its next one.
    pub fn forget(&self, client_id: &str) {
        self.grants.remove(client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::from(s)
    }

    fn user(s: &str) -> UserName {
        UserName::from(s)
    }

    #[test]
    fn a_clean_start_with_filters_inside_the_rules_is_covered() {
        let grants = ReadGrants::default();
        let ha = user("ha");
        grants.connected(&id("c"), Some(&ha), true);
        assert!(grants.covers("c", Some(&ha)), "nothing subscribed yet");
        grants.subscribed(&id("c"), Some(&ha), true);
        grants.subscribed(&id("c"), Some(&ha), true);
        assert!(grants.covers("c", Some(&ha)));
        assert!(
            !grants.covers("c", None),
            "only for the login it was made for"
        );
        assert!(!grants.covers("other", Some(&ha)));
    }

    #[test]
    fn one_overlapping_filter_means_checks_for_the_rest_of_the_session() {
        let grants = ReadGrants::default();
        grants.connected(&id("c"), None, true);
        grants.subscribed(&id("c"), None, false);
        grants.subscribed(&id("c"), None, true);
        assert!(!grants.covers("c", None));
        grants.forget("c");
        assert!(!grants.covers("c", None));
        grants.connected(&id("c"), None, true);
        assert!(grants.covers("c", None), "a new clean session starts over");
    }

    #[test]
    fn resumed_sessions_unseen_clients_and_changed_logins_are_checked() {
        let grants = ReadGrants::default();
        grants.connected(&id("resumed"), None, false);
        grants.subscribed(&id("resumed"), None, true);
        assert!(!grants.covers("resumed", None));

        grants.subscribed(&id("unseen"), None, true);
        assert!(!grants.covers("unseen", None));

        let (a, b) = (user("a"), user("b"));
        grants.connected(&id("same"), Some(&a), true);
        grants.subscribed(&id("same"), Some(&b), true);
        assert!(!grants.covers("same", Some(&b)));
        assert!(!grants.covers("same", Some(&a)));
    }
}
