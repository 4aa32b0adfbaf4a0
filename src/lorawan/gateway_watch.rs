//! Which packet-forwarder gateways are online, and which devices only an offline gateway heard. A
//! gateway is online from its first PULL_DATA until [`MISSED_KEEPALIVES`] of its keepalive intervals
//! (the source's `keepalive`, the forwarder's `keepalive_interval`) pass without one; then it goes
//! offline, and so does every device whose last uplink came only through gateways now offline (a
//! device also heard by a gateway still online stays). Pure state: time is passed in, the source task
//! publishes the transitions.
//!
//! Bounds: at most [`super::counters::MAX_GATEWAYS`] gateways (only allowed ones reach it) and one
//! entry per configured device (only accepted uplinks reach it), each with at most
//! [`MAX_GATEWAYS_PER_DEVICE`] gateways.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::counters::MAX_GATEWAYS;

/// Keepalive intervals without a PULL_DATA after which a gateway is offline.
pub const MISSED_KEEPALIVES: u32 = 3;
/// Gateways remembered per device's last uplink (a few are enough to know it is still heard).
pub const MAX_GATEWAYS_PER_DEVICE: usize = 8;

/// A gateway that went online or offline, with the devices that went offline with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayChange {
    pub gateway: u64,
    pub online: bool,
    /// The devices (as their registry addresses) only this and other offline gateways heard.
    pub devices_offline: Vec<String>,
}

/// The watcher's state.
#[derive(Debug)]
pub struct GatewayWatch {
    /// A gateway is offline once this long has passed since its last PULL_DATA.
    silence: Duration,
    /// Each known gateway: its last PULL_DATA, and whether it is online.
    gateways: HashMap<u64, (Instant, bool)>,
    /// Each device heard: the gateways that heard its last uplink.
    heard_by: HashMap<String, Vec<u64>>,
}

impl GatewayWatch {
    /// A watcher for gateways pulling every `keepalive`.
    pub fn new(keepalive: Duration) -> GatewayWatch {
        GatewayWatch {
            silence: keepalive.saturating_mul(MISSED_KEEPALIVES),
            gateways: HashMap::new(),
            heard_by: HashMap::new(),
        }
    }

    /// A PULL_DATA of `gateway` at `now`: the change when it was unknown or offline.
    pub fn pulled(&mut self, gateway: u64, now: Instant) -> Option<GatewayChange> {
        if !self.gateways.contains_key(&gateway) && self.gateways.len() >= MAX_GATEWAYS {
            return None;
        }
        let was_online = self.gateways.insert(gateway, (now, true)).map(|(_, on)| on);
        (was_online != Some(true)).then(|| GatewayChange {
            gateway,
            online: true,
            devices_offline: Vec::new(),
        })
    }

    /// An accepted uplink of `device` heard by `gateways` (the best first).
    pub fn heard(&mut self, device: &str, gateways: impl IntoIterator<Item = u64>) {
        let entry = match self.heard_by.get_mut(device) {
            Some(entry) => entry,
            None => self.heard_by.entry(device.to_string()).or_default(),
        };
        entry.clear();
        entry.extend(gateways.into_iter().take(MAX_GATEWAYS_PER_DEVICE));
    }

    /// When the next gateway goes offline, if none pulls before.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.gateways
            .values()
            .filter(|(_, online)| *online)
            .map(|(last, _)| *last + self.silence)
            .min()
    }

    /// The gateways silent for too long at `now`, each with the devices that go offline with it.
    pub fn expire(&mut self, now: Instant) -> Vec<GatewayChange> {
        let mut gone: Vec<u64> = self
            .gateways
            .iter()
            .filter(|(_, (last, online))| *online && now >= *last + self.silence)
            .map(|(gateway, _)| *gateway)
            .collect();
        gone.sort_unstable();
        let mut changes = Vec::new();
        for gateway in gone {
            if let Some(state) = self.gateways.get_mut(&gateway) {
                state.1 = false;
            }
            let mut devices_offline: Vec<String> = self
                .heard_by
                .iter()
                .filter(|(_, by)| by.contains(&gateway) && !by.iter().any(|g| self.is_online(*g)))
                .map(|(device, _)| device.clone())
                .collect();
            devices_offline.sort_unstable();
            for device in &devices_offline {
                self.heard_by.remove(device);
            }
            changes.push(GatewayChange {
                gateway,
                online: false,
                devices_offline,
            });
        }
        changes
    }

    /// Whether `gateway` is online now.
    pub fn is_online(&self, gateway: u64) -> bool {
        self.gateways
            .get(&gateway)
            .is_some_and(|(_, online)| *online)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEPALIVE: Duration = Duration::from_secs(10);

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_gateway_goes_offline_with_the_devices_only_it_heard() {
        let start = now();
        let mut watch = GatewayWatch::new(KEEPALIVE);
        assert_eq!(watch.next_deadline(), None);
        assert!(watch.pulled(0xa, start).unwrap().online);
        assert!(watch.pulled(0xb, start).unwrap().online);
        assert_eq!(watch.pulled(0xa, start), None, "already online");
        watch.heard("only-a", [0xa]);
        watch.heard("both", [0xa, 0xb]);
        watch.heard("only-b", [0xb]);
        // B keeps pulling; A stops.
        for _ in 0..MISSED_KEEPALIVES - 1 {
            tokio::time::advance(KEEPALIVE).await;
            watch.pulled(0xb, now());
            assert!(watch.expire(now()).is_empty());
        }
        assert_eq!(watch.next_deadline(), Some(start + KEEPALIVE * 3));
        tokio::time::advance(KEEPALIVE).await;
        watch.pulled(0xb, now());
        assert_eq!(
            watch.expire(now()),
            vec![GatewayChange {
                gateway: 0xa,
                online: false,
                devices_offline: vec!["only-a".to_string()],
            }]
        );
        assert!(!watch.is_online(0xa) && watch.is_online(0xb));
        assert!(watch.expire(now()).is_empty(), "once");
        // A comes back.
        assert!(watch.pulled(0xa, now()).unwrap().online);
    }

    #[tokio::test(start_paused = true)]
    async fn a_device_whose_last_uplink_only_the_silent_gateway_heard_goes_with_it() {
        let mut watch = GatewayWatch::new(KEEPALIVE);
        watch.pulled(0xa, now());
        watch.pulled(0xb, now());
        watch.heard("moved", [0xb]);
        watch.heard("moved", [0xa]);
        for _ in 0..MISSED_KEEPALIVES {
            tokio::time::advance(KEEPALIVE).await;
            watch.pulled(0xb, now());
        }
        let changes = watch.expire(now());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].devices_offline, vec!["moved".to_string()]);
    }

    #[test]
    fn a_device_keeps_a_bounded_list_of_gateways() {
        let mut watch = GatewayWatch::new(KEEPALIVE);
        watch.heard("busy", 0..20u64);
        assert_eq!(watch.heard_by["busy"].len(), MAX_GATEWAYS_PER_DEVICE);
    }
}
