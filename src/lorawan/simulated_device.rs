//! A simulated LoRaWAN 1.0.x Class A end device, as a pure state machine for the simulated packet
//! forwarder (`simulated_forwarder.rs`): it builds its JoinRequest (DevNonce by its LoRaWAN version),
//! opens the JoinAccept (MIC checked with the AppKey, session keys derived), or starts from its ABP
//! keys, or resumes the session the server kept across a restart (as a real device keeps its own in
//! non-volatile memory); then builds data uplinks carrying an LPP reading (temperature, humidity and battery voltage
//! on the random walk of `crate::source::simulator`, seeded by the device's name), with an increasing
//! FCntUp and now and then a confirmed one, and reads the data downlinks meant for it (MIC, counter,
//! ACK). Every frame is built and parsed with the `lorawan` crate, as a device's firmware would, never
//! with the server's own code, so a fault on one side is not mirrored on the other. No IO, no clock of
//! its own; it holds its keys, which it never prints.

use std::time::SystemTime;

use lorawan::creator::{DataPayloadCreator, JoinRequestCreator};
use lorawan::default_crypto::DefaultFactory;
use lorawan::keys::{AppKey, AppSKey, NewSKey, AES128};
use lorawan::parser::{
    parse, DataHeader, DataPayload, DevNonce, EncryptedJoinAcceptPayload, FCtrl, PhyPayload,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dev_nonce::LorawanVersion;
use super::server::{Activation, ServedDevice};
use super::session::Session;
use crate::decode::lpp::LppWriter;
use crate::source::simulator::{seed_from_name, Node};

/// About one uplink in this many asks for an acknowledgement.
pub const CONFIRMED_ONE_IN: u32 = 8;

/// The session of a joined (or ABP) device.
#[derive(Clone, PartialEq, Eq)]
struct DeviceSession {
    dev_addr: u32,
    nwk_s_key: [u8; 16],
    app_s_key: [u8; 16],
}

/// The header fields of one data uplink.
struct UplinkFrame {
    fcnt: u32,
    fport: u8,
    confirmed: bool,
    /// FCtrl: ADR off, no ACK, no FOpts (the simulated device asks for nothing).
    fctrl: u8,
}

/// What a downlink was to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The JoinAccept of its pending join: the device has a session at this DevAddr.
    Joined { dev_addr: u32 },
    /// A data downlink of its session (its counter, whether it acknowledges the last uplink).
    Data { fcnt: u32, ack: bool },
    /// Not for this device (another device's, a bad MIC, an old counter, no join pending).
    NotMine,
}

/// One simulated device.
pub struct SimulatedDevice {
    pub name: String,
    activation: Activation,
    version: LorawanVersion,
    /// The FPort its uplinks use (one its configuration decodes as LPP).
    fport: u8,
    session: Option<DeviceSession>,
    /// The DevNonce of the JoinRequest waiting for its JoinAccept.
    pending_join: Option<u16>,
    /// The last DevNonce used (1.0.4: the counter).
    last_dev_nonce: Option<u16>,
    /// The next uplink counter.
    fcnt_up: u32,
    /// The last downlink counter accepted.
    fcnt_down: Option<u32>,
    weather: Node,
    rng: StdRng,
}

impl std::fmt::Debug for SimulatedDevice {
    /// Name and counters only: keys are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedDevice")
            .field("name", &self.name)
            .field("activation", &self.activation)
            .field("joined", &self.session.is_some())
            .field("fcnt_up", &self.fcnt_up)
            .finish()
    }
}

impl SimulatedDevice {
    /// The device `served` sending on `fport`, resuming the network's session of it (`resume`) when
    /// there is one: a real device keeps its session in non-volatile memory, and the simulated one,
    /// living in the server's process, reads it there rather than keeping a file of its own. An ABP
    /// device has its configured session and resumes its counter above the stored one; an OTAA device
    /// without a session joins first.
    pub fn new(served: &ServedDevice, fport: u8, resume: Option<&Session>) -> SimulatedDevice {
        let mut rng = StdRng::seed_from_u64(seed_from_name(&served.name));
        let weather = Node::new(1, &mut rng);
        let session = match (&served.activation, resume) {
            (
                Activation::Abp {
                    dev_addr,
                    nwk_s_key,
                    app_s_key,
                },
                _,
            ) => Some(DeviceSession {
                dev_addr: *dev_addr,
                nwk_s_key: *nwk_s_key,
                app_s_key: *app_s_key,
            }),
            (Activation::Otaa { .. }, Some(stored)) if stored.join.is_some() => {
                Some(DeviceSession {
                    dev_addr: stored.dev_addr,
                    nwk_s_key: stored.nwk_s_key,
                    app_s_key: stored.app_s_key,
                })
            }
            (Activation::Otaa { .. }, _) => None,
        };
        let resumed = resume.filter(|_| session.is_some());
        SimulatedDevice {
            name: served.name.clone(),
            activation: served.activation.clone(),
            version: served.version,
            fport,
            session,
            pending_join: None,
            last_dev_nonce: resumed.and_then(|s| s.join).map(|join| join.dev_nonce),
            fcnt_up: resume_fcnt_up(resumed),
            fcnt_down: resumed.and_then(|s| s.fcnt_down.checked_sub(1)),
            weather,
            rng,
        }
    }

    /// Whether the device has a session (an ABP device always has).
    pub fn joined(&self) -> bool {
        self.session.is_some()
    }

    /// The DevAddr of its session.
    pub fn dev_addr(&self) -> Option<u32> {
        self.session.as_ref().map(|s| s.dev_addr)
    }

    /// A JoinRequest with a new DevNonce (`None` for an ABP device, or a 1.0.4 device whose DevNonces
    /// are spent). 1.0.4: one above the last; earlier versions: random, never the last one.
    pub fn join_request(&mut self) -> Option<Vec<u8>> {
        let Activation::Otaa {
            dev_eui,
            join_eui,
            app_key,
        } = self.activation
        else {
            return None;
        };
        let dev_nonce = match self.version {
            LorawanVersion::V1_0_4 => match self.last_dev_nonce {
                None => 0,
                Some(last) => last.checked_add(1)?,
            },
            LorawanVersion::V1_0_2 | LorawanVersion::V1_0_3 => loop {
                // The walk's generator is seeded by name; the DevNonce must differ across restarts.
                let nonce: u16 = rand::random();
                if Some(nonce) != self.last_dev_nonce {
                    break nonce;
                }
            },
        };
        self.last_dev_nonce = Some(dev_nonce);
        self.pending_join = Some(dev_nonce);
        join_request(dev_eui, join_eui, &app_key, dev_nonce)
    }

    /// The next data uplink: an LPP reading of the walk at `now`, confirmed about one time in
    /// [`CONFIRMED_ONE_IN`]. `None` before a join.
    pub fn uplink(&mut self, now: SystemTime) -> Option<Vec<u8>> {
        let session = self.session.clone()?;
        let (temperature, humidity, battery) = self.weather.step(&mut self.rng, now);
        let payload = LppWriter::new()
            .temperature(1, temperature)
            .relative_humidity(2, humidity)
            .voltage(3, battery)
            .into_bytes();
        let confirmed = self.rng.random_ratio(1, CONFIRMED_ONE_IN);
        let frame = UplinkFrame {
            fcnt: self.fcnt_up,
            fport: self.fport,
            confirmed,
            fctrl: 0x00,
        };
        let phy = data_uplink(&session, &frame, &payload)?;
        self.fcnt_up = self.fcnt_up.wrapping_add(1);
        Some(phy)
    }

    /// A downlink the forwarder received: the JoinAccept of a pending join, or a data downlink of the
    /// session.
    pub fn receive(&mut self, phy: &[u8]) -> Received {
        match phy.first().map(|mhdr| mhdr >> 5) {
            Some(0b001) => self.join_accept(phy),
            Some(0b011) | Some(0b101) => self.data_downlink(phy),
            _ => Received::NotMine,
        }
    }

    fn join_accept(&mut self, phy: &[u8]) -> Received {
        let (Some(dev_nonce), Activation::Otaa { app_key, .. }) =
            (self.pending_join, &self.activation)
        else {
            return Received::NotMine;
        };
        let key = AppKey::from(*app_key);
        let Ok(encrypted) = EncryptedJoinAcceptPayload::new(phy.to_vec()) else {
            return Received::NotMine;
        };
        let accept = encrypted.decrypt(&key);
        if !accept.validate_mic(&key) {
            return Received::NotMine;
        }
        let nonce = dev_nonce.to_le_bytes();
        let Some(nonce) = DevNonce::new(&nonce[..]) else {
            return Received::NotMine;
        };
        let nwk_s_key = accept.derive_newskey(&nonce, &key).inner().0;
        let app_s_key = accept.derive_appskey(&nonce, &key).inner().0;
        let wire = accept.dev_addr();
        let wire = wire.as_ref();
        let dev_addr = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]);
        self.session = Some(DeviceSession {
            dev_addr,
            nwk_s_key,
            app_s_key,
        });
        self.pending_join = None;
        self.fcnt_up = 0;
        self.fcnt_down = None;
        Received::Joined { dev_addr }
    }

    fn data_downlink(&mut self, phy: &[u8]) -> Received {
        let Some(session) = &self.session else {
            return Received::NotMine;
        };
        let Ok(PhyPayload::Data(DataPayload::Encrypted(frame))) = parse(phy.to_vec()) else {
            return Received::NotMine;
        };
        if frame.is_uplink() {
            return Received::NotMine;
        }
        let fhdr = frame.fhdr();
        let wire = fhdr.dev_addr();
        let wire = wire.as_ref();
        if u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]) != session.dev_addr {
            return Received::NotMine;
        }
        let fcnt16 = u32::from(fhdr.fcnt());
        let ack = fhdr.fctrl().ack();
        // The 32-bit counter from its 16 bits, above the last one accepted.
        let base = self.fcnt_down.map_or(0, |last| last & 0xffff_0000);
        let mut fcnt = base | fcnt16;
        if let Some(last) = self.fcnt_down {
            if fcnt <= last {
                fcnt = fcnt.wrapping_add(0x1_0000);
            }
        }
        if !frame.validate_mic(&AES128(session.nwk_s_key), fcnt) {
            return Received::NotMine;
        }
        self.fcnt_down = Some(fcnt);
        Received::Data { fcnt, ack }
    }
}

/// The next uplink counter of a device whose server-side session is `session`: above the last
/// accepted counter and above the stored mark (a power cut moves the mark ahead; never a replay).
pub fn resume_fcnt_up(session: Option<&Session>) -> u32 {
    session
        .and_then(|s| s.fcnt_up.max(s.fcnt_up_floor))
        .map_or(0, |last| last.wrapping_add(1))
}

/// A JoinRequest (EUIs and DevNonce little-endian on the wire, the MIC with the AppKey).
fn join_request(
    dev_eui: u64,
    join_eui: u64,
    app_key: &[u8; 16],
    dev_nonce: u16,
) -> Option<Vec<u8>> {
    let mut creator = JoinRequestCreator::with_options([0u8; 23], DefaultFactory).ok()?;
    creator
        .set_app_eui(join_eui.to_le_bytes())
        .set_dev_eui(dev_eui.to_le_bytes())
        .set_dev_nonce(dev_nonce.to_le_bytes());
    Some(creator.build(&AppKey::from(*app_key)).to_vec())
}

/// A data uplink of `session` (the FRMPayload encrypted with the AppSKey, the MIC with the NwkSKey).
fn data_uplink(session: &DeviceSession, frame: &UplinkFrame, payload: &[u8]) -> Option<Vec<u8>> {
    let mut creator = DataPayloadCreator::new();
    creator
        .set_confirmed(frame.confirmed)
        .set_uplink(true)
        .set_dev_addr(&session.dev_addr.to_le_bytes())
        .set_fctrl(&FCtrl::new(frame.fctrl, true))
        .set_fcnt(frame.fcnt)
        .set_f_port(frame.fport);
    creator
        .build(
            payload,
            &[],
            &NewSKey::from(session.nwk_s_key),
            &AppSKey::from(session.app_s_key),
        )
        .ok()
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, UNIX_EPOCH};

    use super::*;
    use crate::lorawan::dedup::Heard;
    use crate::lorawan::region::Region;
    use crate::lorawan::server::{NetworkServer, Outcome, ServerSettings};
    use crate::lorawan::RxMeta;

    fn settings() -> ServerSettings {
        ServerSettings {
            region: Region::Eu868.params(),
            net_id: 0x13,
            rx1_delay: 1,
            join_accept_delay1: 5,
            rx2_frequency: 869_525_000,
            rx2_data_rate: 0,
        }
    }

    fn heard(phy: &[u8]) -> Heard {
        Heard {
            phy: phy.to_vec(),
            best: RxMeta {
                gateway: 0x5e,
                tmst: 1_000_000,
                frequency: 867_100_000,
                spreading_factor: 7,
                bandwidth_khz: 125,
                rssi: -70.0,
                snr: 8.0,
            },
            gateways: vec![0x5e],
        }
    }

    fn otaa(version: LorawanVersion) -> ServedDevice {
        ServedDevice {
            name: "lorawan-1".into(),
            activation: Activation::Otaa {
                dev_eui: 0x70b3_d57e_d000_0d01,
                join_eui: 0,
                app_key: [0x2b; 16],
            },
            version,
            adr: false,
        }
    }

    fn abp() -> ServedDevice {
        ServedDevice {
            name: "meter".into(),
            activation: Activation::Abp {
                dev_addr: 0x2601_1bda,
                nwk_s_key: [2; 16],
                app_s_key: [1; 16],
            },
            version: LorawanVersion::default(),
            adr: false,
        }
    }

    /// After the join rate limit's interval.
    fn later() -> Instant {
        Instant::now() + crate::lorawan::join_limit::PER_DEVICE
    }

    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// The JoinRequest the device builds, accepted by the server; the JoinAccept opened by the device.
    fn joined(server: &mut NetworkServer, device: &mut SimulatedDevice) -> u32 {
        let request = device.join_request().unwrap();
        let outcome = server.handle(&heard(&request), Instant::now(), wall());
        let Outcome::Joined { downlink, .. } = outcome else {
            panic!("join refused: {outcome:?}");
        };
        let Received::Joined { dev_addr } = device.receive(&downlink.phy) else {
            panic!("JoinAccept not taken");
        };
        dev_addr
    }

    #[test]
    fn an_otaa_device_joins_and_its_uplinks_are_accepted_with_increasing_counters() {
        let served = otaa(LorawanVersion::V1_0_3);
        let mut server = NetworkServer::new(settings(), vec![served.clone()], &[]);
        let mut device = SimulatedDevice::new(&served, 1, None);
        assert!(!device.joined());
        assert!(device.uplink(wall()).is_none(), "no uplink before a join");
        let dev_addr = joined(&mut server, &mut device);
        let session = server.session(0).unwrap();
        assert_eq!(dev_addr, session.dev_addr);
        assert_eq!(device.dev_addr(), Some(dev_addr));
        // Both sides derived the same keys: the server's session opens the device's frames.
        let mut confirmed = 0;
        for expected in 0..40u32 {
            let phy = device.uplink(wall()).unwrap();
            let Outcome::Data(accepted) = server.handle(&heard(&phy), Instant::now(), wall())
            else {
                panic!("uplink {expected} refused");
            };
            assert_eq!(accepted.fcnt, expected);
            assert_eq!(accepted.fport, Some(1));
            // LPP: temperature (0x67) on channel 1, humidity (0x68) on 2, analog input on 3.
            assert_eq!(&accepted.payload[..2], &[1, 0x67]);
            assert_eq!(&accepted.payload[4..6], &[2, 0x68]);
            if accepted.confirmed {
                confirmed += 1;
                let ack = accepted.downlink.expect("an ACK for a confirmed uplink");
                let Received::Data { ack: true, .. } = device.receive(&ack.phy) else {
                    panic!("the ACK not taken");
                };
            }
        }
        assert!((1..20).contains(&confirmed), "{confirmed} of 40 confirmed");
    }

    #[test]
    fn a_join_accept_with_another_key_or_without_a_pending_join_is_not_taken() {
        let served = otaa(LorawanVersion::V1_0_3);
        let mut server = NetworkServer::new(settings(), vec![served.clone()], &[]);
        let mut device = SimulatedDevice::new(&served, 1, None);
        let request = device.join_request().unwrap();
        let Outcome::Joined { downlink, .. } =
            server.handle(&heard(&request), Instant::now(), wall())
        else {
            panic!("join refused");
        };
        let mut stranger = SimulatedDevice::new(
            &ServedDevice {
                activation: Activation::Otaa {
                    dev_eui: 1,
                    join_eui: 0,
                    app_key: [9; 16],
                },
                ..served.clone()
            },
            1,
            None,
        );
        stranger.join_request().unwrap();
        assert_eq!(stranger.receive(&downlink.phy), Received::NotMine);
        let mut idle = SimulatedDevice::new(&served, 1, None);
        assert_eq!(idle.receive(&downlink.phy), Received::NotMine);
        assert!(matches!(
            device.receive(&downlink.phy),
            Received::Joined { .. }
        ));
        // Taken once: the same JoinAccept again is no longer a pending join's.
        assert_eq!(device.receive(&downlink.phy), Received::NotMine);
    }

    #[test]
    fn a_restarted_otaa_device_resumes_its_session_without_joining() {
        for version in [LorawanVersion::V1_0_3, LorawanVersion::V1_0_4] {
            let served = otaa(version);
            let mut server = NetworkServer::new(settings(), vec![served.clone()], &[]);
            let mut device = SimulatedDevice::new(&served, 1, None);
            joined(&mut server, &mut device);
            for _ in 0..3 {
                let phy = device.uplink(wall()).unwrap();
                server.handle(&heard(&phy), Instant::now(), wall());
            }
            // A clean stop (exact counters) and a power cut (the mark ahead).
            for records in [server.exact_records(), server.all_records()] {
                let mut server = NetworkServer::new(settings(), vec![served.clone()], &records);
                let mut device = SimulatedDevice::new(&served, 1, server.session(0));
                assert!(device.joined(), "{version:?}");
                let phy = device.uplink(wall()).unwrap();
                let outcome = server.handle(&heard(&phy), Instant::now(), wall());
                let Outcome::Data(accepted) = outcome else {
                    panic!("{version:?}: {outcome:?}");
                };
                assert!(accepted.fcnt >= 3, "{}", accepted.fcnt);
                // A join after it (a rejoin) takes a DevNonce the server has not seen.
                let request = device.join_request().unwrap();
                let outcome = server.handle(&heard(&request), later(), wall());
                assert!(
                    matches!(outcome, Outcome::Joined { .. }),
                    "{version:?}: {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn a_1_0_4_dev_nonce_counts_up_from_zero() {
        let mut device = SimulatedDevice::new(&otaa(LorawanVersion::V1_0_4), 1, None);
        let nonce = |phy: Vec<u8>| u16::from_le_bytes([phy[17], phy[18]]);
        assert_eq!(nonce(device.join_request().unwrap()), 0);
        assert_eq!(nonce(device.join_request().unwrap()), 1);
        device.last_dev_nonce = Some(u16::MAX);
        assert_eq!(device.join_request(), None, "spent");
    }

    #[test]
    fn an_abp_device_resumes_above_the_counter_the_server_stored() {
        let served = abp();
        let mut server = NetworkServer::new(settings(), vec![served.clone()], &[]);
        let mut device = SimulatedDevice::new(&served, 2, server.session(0));
        assert!(device.joined());
        assert!(device.join_request().is_none());
        for _ in 0..3 {
            let phy = device.uplink(wall()).unwrap();
            assert!(matches!(
                server.handle(&heard(&phy), Instant::now(), wall()),
                Outcome::Data(_)
            ));
        }
        // A clean stop (exact counters) and a power cut (the mark ahead): the restarted device's
        // first uplink is accepted either way, never refused as a replay.
        for records in [server.exact_records(), server.all_records()] {
            let mut server = NetworkServer::new(settings(), vec![served.clone()], &records);
            let next = resume_fcnt_up(server.session(0));
            assert!(next >= 3, "{next}");
            let mut device = SimulatedDevice::new(&served, 2, server.session(0));
            let Outcome::Data(accepted) = server.handle(
                &heard(&device.uplink(wall()).unwrap()),
                Instant::now(),
                wall(),
            ) else {
                panic!("refused after a restart");
            };
            assert_eq!((accepted.fcnt, accepted.fport), (next, Some(2)));
        }
    }

    /// The lorawan crate's published vectors, built by the device's own builders: the JoinRequest of
    /// AppKey [1; 16], AppEUI 0102030401020304, DevEUI 0203040502030405, DevNonce 0x102d, and the data
    /// uplink of DevAddr 01020304, FCnt 1, FPort 1, ADR, "hello", NwkSKey [2; 16], AppSKey [1; 16].
    #[test]
    fn the_frames_match_the_lorawan_crate_vectors() {
        let request = join_request(
            0x0203_0405_0203_0405,
            0x0102_0304_0102_0304,
            &[1; 16],
            0x102d,
        );
        assert_eq!(
            request.unwrap(),
            [
                0x00, 0x04, 0x03, 0x02, 0x01, 0x04, 0x03, 0x02, 0x01, 0x05, 0x04, 0x03, 0x02, 0x05,
                0x04, 0x03, 0x02, 0x2d, 0x10, 0x6a, 0x99, 0x0e, 0x12,
            ]
        );
        let session = DeviceSession {
            dev_addr: 0x0102_0304,
            nwk_s_key: [2; 16],
            app_s_key: [1; 16],
        };
        let frame = UplinkFrame {
            fcnt: 1,
            fport: 1,
            confirmed: false,
            fctrl: 0x80,
        };
        assert_eq!(
            data_uplink(&session, &frame, b"hello").unwrap(),
            [
                0x40, 0x04, 0x03, 0x02, 0x01, 0x80, 0x01, 0x00, 0x01, 0xa6, 0x94, 0x64, 0x26, 0x15,
                0xd6, 0xc3, 0xb5, 0x82,
            ]
        );
    }
}
