//! Who sent a transmission: rtl_433's `model`, `id` and `channel` as one address
//! (`"Acurite-Tower/1234/A"`), and which `[[device]]` of the source it is. A `[[device]]` names one
//! sensor by its whole address, or by model and channel only with `*` for the id
//! (`"Acurite-Tower/*/A"`): many sensors draw a new id at every battery swap, and such a device keeps
//! its name across the swap. Pure.
//!
//! The address: the model, then `/id`, then `/channel`; a missing id is empty (`"Model//2"`) and a
//! missing channel is left out (`"Model/17"`, `"Model"`). An unconfigured sender's device is named
//! from it by the registry (`{source}-{address}`, sanitised into one topic level).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::line::Event;

/// The id placeholder of an address that matches any id.
pub const ANY_ID: &str = "*";

/// `devices`: which senders the source publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicesMode {
    /// Only `[[device]]` entries; the others go to the heard list.
    #[default]
    Configured,
    /// Every sender (bounded by the registry's device cap).
    All,
}

/// A sender, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A `[[device]]`: its configured address (what the registry knows it by).
    Configured(String),
    /// Anyone else: its own address.
    Unconfigured(String),
}

/// The `[[device]]` addresses of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities {
    exact: HashSet<String>,
    /// (model, channel) -> the configured `model/*/channel` address.
    any_id: HashMap<(String, Option<String>), String>,
}

impl Identities {
    /// The source's `[[device]] address`es.
    pub fn new<'a>(addresses: impl IntoIterator<Item = &'a str>) -> Self {
        let mut identities = Identities::default();
        for address in addresses {
            let mut parts = address.splitn(3, '/');
            let model = parts.next().unwrap_or_default();
            let id = parts.next();
            let channel = parts.next();
            if id == Some(ANY_ID) {
                identities
                    .any_id
                    .entry((model.to_string(), channel.map(str::to_string)))
                    .or_insert_with(|| address.to_string());
            } else {
                identities.exact.insert(address.to_string());
            }
        }
        identities
    }

    /// Who sent `event`: a whole address configured wins over a model-and-channel one.
    pub fn resolve(&self, event: &Event) -> Sender {
        let own = address_of(event);
        if self.exact.contains(&own) {
            return Sender::Configured(own);
        }
        let key = (event.model.clone(), event.channel.clone());
        match self.any_id.get(&key) {
            Some(configured) => Sender::Configured(configured.clone()),
            None => Sender::Unconfigured(own),
        }
    }
}

/// The address of the sender of `event`; see the module documentation.
pub fn address_of(event: &Event) -> String {
    let mut address = event.model.clone();
    match (&event.id, &event.channel) {
        (None, None) => {}
        (id, None) => {
            address.push('/');
            address.push_str(id.as_deref().unwrap_or_default());
        }
        (id, Some(channel)) => {
            address.push('/');
            address.push_str(id.as_deref().unwrap_or_default());
            address.push('/');
            address.push_str(channel);
        }
    }
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(model: &str, id: Option<&str>, channel: Option<&str>) -> Event {
        Event {
            model: model.to_string(),
            id: id.map(str::to_string),
            channel: channel.map(str::to_string),
            fields: Vec::new(),
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            address_of(&event("Acurite-Tower", Some("1234"), Some("A"))),
            "Acurite-Tower/1234/A"
        );
        assert_eq!(address_of(&event("Oregon", Some("17"), None)), "Oregon/17");
        assert_eq!(address_of(&event("Doorbell", None, None)), "Doorbell");
        assert_eq!(address_of(&event("Remote", None, Some("2"))), "Remote//2");
    }

    #[test]
    fn whole_addresses_then_model_and_channel_across_a_battery_swap() {
        let identities = Identities::new(["Nexus-TH/91/1", "Acurite-Tower/*/A", "Oregon/*"]);
        assert_eq!(
            identities.resolve(&event("Nexus-TH", Some("91"), Some("1"))),
            Sender::Configured("Nexus-TH/91/1".into())
        );
        assert_eq!(
            identities.resolve(&event("Nexus-TH", Some("92"), Some("1"))),
            Sender::Unconfigured("Nexus-TH/92/1".into())
        );
        for id in ["1234", "877"] {
            assert_eq!(
                identities.resolve(&event("Acurite-Tower", Some(id), Some("A"))),
                Sender::Configured("Acurite-Tower/*/A".into())
            );
        }
        assert_eq!(
            identities.resolve(&event("Acurite-Tower", Some("1234"), Some("B"))),
            Sender::Unconfigured("Acurite-Tower/1234/B".into())
        );
        assert_eq!(
            identities.resolve(&event("Oregon", Some("5"), None)),
            Sender::Configured("Oregon/*".into())
        );
    }
}
