//! One advertisement in, the source's events out: which service data is a sensor's (BTHome by its UUID
//! 0xFCD2, pvvx and atc1441 by 0x181A and their lengths), whether the sender is published (a configured
//! `[[device]]`, or anyone with `devices = "all"`; other sensors go to the heard list), its bindkey, and
//! the refusals: an advert that does not authenticate (`auth_failed`), plaintext from a device that has a
//! bindkey (`plaintext_refused`: whoever can advertise could otherwise speak for it), and an old counter
//! (`replayed`, see [`super::freshness`]). A reading's address is the advertiser's MAC, whatever a plain
//! payload says of itself; its `seq` is the packet id, so the registry drops the repeats a sensor sends of
//! each advert. Advertisements of anything else (phones, watches, beacons) are dropped uncounted.

use std::collections::{HashMap, HashSet};

use super::adapter::Heard;
use super::freshness::{Freshness, Verdict};
use super::BleStart;
use crate::ble::{ad, bthome, decode_service_data, pvvx, BleError, BleFormat, Mac};
use crate::crypto::keys::FrameKey;
use crate::source::rtl433::DevicesMode;
use crate::source::{Refusal, SourceEvent};

/// The formats a service data UUID may carry, in the order they are tried.
fn formats_of(uuid: u16) -> &'static [BleFormat] {
    match uuid {
        bthome::UUID => &[BleFormat::Bthome],
        pvvx::UUID => &[BleFormat::Pvvx, BleFormat::Atc1441],
        _ => &[],
    }
}

/// The width of a format's encryption counter, bits.
fn counter_bits(format: BleFormat) -> u32 {
    match format {
        BleFormat::Bthome => 32,
        BleFormat::Pvvx | BleFormat::Atc1441 => 8,
    }
}

/// The source's view of its senders.
#[derive(Debug)]
pub struct Listener {
    source: String,
    mode: DevicesMode,
    configured: HashSet<Mac>,
    keys: HashMap<Mac, FrameKey>,
    freshness: Freshness,
}

impl Listener {
    pub fn new(source: &str, start: &BleStart) -> Self {
        Listener {
            source: source.to_string(),
            mode: start.settings.devices,
            configured: start.settings.configured.iter().copied().collect(),
            keys: start.keys.clone(),
            freshness: Freshness::new(
                source,
                start.marks.clone(),
                start.settings.counter_reset_after,
            ),
        }
    }

    /// A command the command router queued for one of the source's devices, as the JSON it encodes
    /// (`{"id": MAC, fields...}`): `{"reset_counter": true}` is the only one a sensor that only
    /// advertises can take, and only a device with a bindkey has a counter (so what is remembered is
    /// bounded by the configuration); anything else fails with the reason.
    pub fn command(&mut self, bytes: &[u8]) -> Result<Option<std::time::Duration>, String> {
        let refused =
            || "a Bluetooth LE sensor takes no commands but {\"reset_counter\": true}".to_string();
        let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(bytes) else {
            return Err(refused());
        };
        let mac = object
            .remove("id")
            .and_then(|id| id.as_str().and_then(Mac::parse))
            .ok_or_else(refused)?;
        if !self.keys.contains_key(&mac) {
            return Err(format!(
                "{mac} has no bindkey ([[device]] key_file): its adverts carry no counter to reset"
            ));
        }
        match object.remove("reset_counter") {
            Some(serde_json::Value::Bool(true)) if object.is_empty() => {
                log::info!(source = self.source.as_str(); "{mac}: its counter is reset by command; its next authentic advert starts it anew");
                self.freshness.reset(mac);
                Ok(None)
            }
            _ => Err(refused()),
        }
    }

    /// The events of one advertisement.
    pub fn hear(&mut self, heard: &Heard) -> Vec<SourceEvent> {
        let mac = heard.advert.address;
        let mut events = Vec::new();
        for (uuid, service_data) in ad::service_data(&heard.advert.data) {
            let formats = formats_of(uuid);
            if formats.is_empty() {
                continue;
            }
            if self.mode == DevicesMode::Configured && !self.configured.contains(&mac) {
                events.push(SourceEvent::Heard {
                    source: self.source.clone(),
                    address: mac.to_string(),
                    rssi: rssi(heard.advert.rssi),
                    at: heard.at,
                });
                continue;
            }
            events.push(self.decode(mac, formats, service_data, heard));
        }
        events
    }

    fn decode(
        &mut self,
        mac: Mac,
        formats: &[BleFormat],
        service_data: &[u8],
        heard: &Heard,
    ) -> SourceEvent {
        let key = self.keys.get(&mac);
        let mut outcome = Err(BleError::TooShort {
            format: "service data",
            have: service_data.len(),
        });
        let mut format = formats[0];
        for candidate in formats {
            format = *candidate;
            outcome = decode_service_data(format, service_data, Some(mac), key);
            if !matches!(outcome, Err(BleError::UnknownLayout { .. })) {
                break;
            }
        }
        let refused = |refusal, detail: String| SourceEvent::Refused {
            source: self.source.clone(),
            refusal,
            detail,
        };
        let mut reading = match outcome {
            Ok(reading) => reading,
            Err(error @ BleError::Mic { .. }) => {
                return refused(Refusal::AuthFailed, format!("{mac}: {error}"))
            }
            Err(error) => {
                return SourceEvent::DecodeError {
                    source: self.source.clone(),
                    error: format!("{mac}: {error}"),
                }
            }
        };
        match (key, reading.counter) {
            (Some(_), None) => {
                return refused(
                    Refusal::Plaintext,
                    format!(
                        "{mac}: a plaintext {} advert from a device with a bindkey",
                        format.name()
                    ),
                )
            }
            (_, Some(counter)) => match self.freshness.check(mac, counter, counter_bits(format)) {
                Verdict::Fresh => {}
                Verdict::Restarted => {
                    log::info!(source = self.source.as_str(); "{mac}: counter starts anew at {counter}")
                }
                Verdict::Repeat => {
                    return SourceEvent::Duplicate {
                        source: self.source.clone(),
                    }
                }
                Verdict::Refused(replay) => {
                    return refused(Refusal::Replayed, format!("{mac}: {replay}"))
                }
            },
            (None, None) => {}
        }
        let trigger = reading.trigger_based;
        reading.fields.address = Some(mac.to_string());
        SourceEvent::Reading {
            reading: reading.into_reading(&self.source, heard.at),
            trigger,
        }
    }
}

/// dBm, or none when the controller had none (127).
fn rssi(rssi: i8) -> Option<f64> {
    (rssi != 127).then_some(f64::from(rssi))
}

#[cfg(test)]
mod tests {
    use super::super::BleSettings;
    use super::*;
    use crate::ble::hci::{AddressType, Advertisement};
    use crate::replay::ReplayGuard;
    use std::time::SystemTime;

    const IO_MAC: Mac = Mac([0x54, 0x48, 0xE6, 0x8F, 0x80, 0xA5]);

    fn hex(text: &str) -> Vec<u8> {
        crate::crypto::parse_hex(text).unwrap()
    }

    /// An advert with one service-data AD structure.
    fn heard(mac: Mac, service_data: &str) -> Heard {
        let service_data = hex(service_data);
        let mut data = vec![2, 1, 6, service_data.len() as u8 + 1, 0x16];
        data.extend_from_slice(&service_data);
        Heard {
            advert: Advertisement {
                address: mac,
                address_type: AddressType::Public,
                rssi: -60,
                data,
            },
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn listener(mode: DevicesMode, keyed: bool) -> Listener {
        let mut keys = HashMap::new();
        if keyed {
            let key = hex("231d39c1d7cc1ab1aee224cd096db932");
            keys.insert(IO_MAC, FrameKey::from_bytes(key.try_into().unwrap()));
        }
        let start = BleStart {
            settings: BleSettings {
                devices: mode,
                configured: vec![IO_MAC],
                ..BleSettings::default()
            },
            keys,
            marks: ReplayGuard::in_memory(),
        };
        Listener::new("ble", &start)
    }

    /// bthome.io's examples: plain (temperature 25.06 °C, humidity 50.55 %) and encrypted.
    const PLAIN: &str = "d2fc4002c40903bf13";
    const ENCRYPTED: &str = "d2fc41a47266c95f730011223378237214";

    #[test]
    fn a_configured_device_gives_readings_and_strangers_go_to_the_heard_list() {
        let mut listener = listener(DevicesMode::Configured, false);
        let events = listener.hear(&heard(IO_MAC, PLAIN));
        let [SourceEvent::Reading { reading, trigger }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(reading.address, "54:48:E6:8F:80:A5");
        assert!(!trigger);
        assert!(reading.fields.iter().any(|(name, _)| name == "temperature"));
        let stranger = Mac([1, 2, 3, 4, 5, 6]);
        let events = listener.hear(&heard(stranger, PLAIN));
        assert!(
            matches!(events.as_slice(), [SourceEvent::Heard { address, rssi: Some(r), .. }] if address == "01:02:03:04:05:06" && *r == -60.0),
            "{events:?}"
        );
        // Not a sensor's service data: nothing at all.
        assert!(listener.hear(&heard(stranger, "0d18aabb")).is_empty());
        let mut all = super::tests::listener(DevicesMode::All, false);
        assert!(matches!(
            all.hear(&heard(stranger, PLAIN)).as_slice(),
            [SourceEvent::Reading { .. }]
        ));
    }

    #[test]
    fn a_keyed_device_refuses_plaintext_replays_and_wrong_macs() {
        let mut listener = listener(DevicesMode::Configured, true);
        let events = listener.hear(&heard(IO_MAC, ENCRYPTED));
        assert!(
            matches!(events.as_slice(), [SourceEvent::Reading { .. }]),
            "{events:?}"
        );
        let events = listener.hear(&heard(IO_MAC, ENCRYPTED));
        assert!(
            matches!(events.as_slice(), [SourceEvent::Duplicate { .. }]),
            "{events:?}"
        );
        let events = listener.hear(&heard(IO_MAC, PLAIN));
        assert!(
            matches!(
                events.as_slice(),
                [SourceEvent::Refused {
                    refusal: Refusal::Plaintext,
                    ..
                }]
            ),
            "{events:?}"
        );
        let mut other = super::tests::listener(DevicesMode::All, true);
        let events = other.hear(&heard(Mac([1, 2, 3, 4, 5, 6]), ENCRYPTED));
        assert!(
            matches!(events.as_slice(), [SourceEvent::DecodeError { .. }]),
            "no key: {events:?}"
        );
        let mut tampered = hex(ENCRYPTED);
        tampered[4] ^= 1;
        let tampered: String = tampered.iter().map(|b| format!("{b:02x}")).collect();
        let events = listener.hear(&heard(IO_MAC, &tampered));
        assert!(
            matches!(
                events.as_slice(),
                [SourceEvent::Refused {
                    refusal: Refusal::AuthFailed,
                    ..
                }]
            ),
            "{events:?}"
        );
    }

    #[test]
    fn reset_counter_is_the_one_command_and_it_lets_the_next_counter_in() {
        let mut listener = listener(DevicesMode::Configured, true);
        let events = listener.hear(&heard(IO_MAC, ENCRYPTED));
        assert!(matches!(events.as_slice(), [SourceEvent::Reading { .. }]));
        for refused in [
            &br#"{"id":"54:48:E6:8F:80:A5","reset_counter":false}"#[..],
            br#"{"id":"54:48:E6:8F:80:A5","reset_counter":true,"led":1}"#,
            br#"{"id":"nobody","reset_counter":true}"#,
            br#"{"reset_counter":true}"#,
            br#"{"id":"01:02:03:04:05:06","reset_counter":true}"#,
            b"\x00\x01",
        ] {
            assert!(listener.command(refused).is_err(), "{refused:?}");
        }
        let command = br#"{"id":"54:48:E6:8F:80:A5","reset_counter":true}"#;
        assert_eq!(listener.command(command), Ok(None));
        // The same advert again, now the first of a new count.
        let events = listener.hear(&heard(IO_MAC, ENCRYPTED));
        assert!(
            matches!(events.as_slice(), [SourceEvent::Reading { .. }]),
            "{events:?}"
        );
    }

    #[test]
    fn a_trigger_based_device_says_so_to_the_registry() {
        let mut listener = listener(DevicesMode::Configured, false);
        // BTHome, trigger-based (device information 0x44): a button press.
        let events = listener.hear(&heard(IO_MAC, "d2fc443a01"));
        let [SourceEvent::Reading { reading, trigger }] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert!(*trigger, "{reading:?}");
    }
}
