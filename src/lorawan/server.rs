//! The network and join server of LoRaWAN 1.0.x Class A devices, as a pure state machine: an uplink in
//! (the PHYPayload with its best reception and every gateway that heard it, and the time), a decision
//! out (a reading to publish, a JoinAccept or an ACK to send, or a refusal to count). No IO, no clock
//! of its own: the source task owns the socket and the timers, `persist` owns the disk.
//!
//! - OTAA: the JoinRequest's MIC is checked with the device's AppKey, a DevNonce the device used before
//!   (the last [`DEV_NONCE_HISTORY`] are kept) is refused, the JoinAccept is built and encrypted
//!   (`join_accept.rs`: JoinNonce a counter, DevAddr from the NetID's NwkID, the region's CFList), and
//!   NwkSKey/AppSKey are derived (`keys.rs`).
//! - ABP: the session is configured (DevAddr and both keys); its counters start at zero or at the
//!   stored marks.
//! - Data: the MIC is checked with the 32-bit counter rebuilt from the frame's 16 bits (rollover past
//!   65,535 included); a counter at or below the last accepted one is a replay, a jump beyond
//!   [`MAX_FCNT_GAP`] is refused; FRMPayload is decrypted (AppSKey, or NwkSKey for FPort 0); MAC
//!   commands (FOpts or FPort 0) are parsed: LinkCheckReq and DeviceTimeReq are answered, the rest
//!   ignored, unknown ones counted. A confirmed uplink gets an ACK in RX1, each downlink carrying its
//!   RX2 twin for when the gateway cannot send in RX1. An uplink with ADRACKReq gets a downlink (an
//!   empty one when nothing else is due), so the device keeps its data rate.
//! - ADR, for devices with `adr = true` whose uplinks set the ADR bit (`adr.rs`): a LinkADRReq rides in
//!   FOpts of the window's downlink (an empty unconfirmed one when nothing else is sent), and the
//!   device's LinkADRAns is read back.
//! - Joins are rate-limited per DevEUI and in total (`join_limit.rs`).
//! - LoRaWAN 1.1 frames (RejoinRequest, or a major version other than R1) are refused with a reason.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lorawan::creator::DataPayloadCreator;
use lorawan::default_crypto::DefaultFactory;
use lorawan::keys::{AppSKey, NewSKey, AES128};
use lorawan::maccommandcreator::{DeviceTimeAnsCreator, LinkADRReqCreator, LinkCheckAnsCreator};
use lorawan::maccommands::{parse_uplink_mac_commands, SerializableMacCommand, UplinkMacCommand};
use lorawan::parser::{
    parse, DataHeader, DataPayload, EncryptedDataPayload, FCtrl, JoinRequestPayload, PhyPayload,
};

use super::adr::{AdrState, Answered};
use super::dedup::Heard;
use super::dev_nonce::{DevNonces, LorawanVersion};
use super::join_accept::JoinAccept;
use super::join_limit::JoinLimit;
use super::keys::derive_session_keys;
use super::region::{DataRate, RegionParams};
use super::session::{JoinInputs, Session, SessionRecord};
use super::RxMeta;

/// The largest forward jump of the uplink counter accepted (LoRaWAN 1.0's MAX_FCNT_GAP).
pub const MAX_FCNT_GAP: u32 = 16_384;

/// How a device joins.
#[derive(Clone, PartialEq, Eq)]
pub enum Activation {
    /// Over the air: `dev_eui`, `join_eui` (as numbers of their big-endian text) and the AppKey.
    Otaa {
        dev_eui: u64,
        join_eui: u64,
        app_key: [u8; 16],
    },
    /// By personalisation: the DevAddr and both session keys.
    Abp {
        dev_addr: u32,
        nwk_s_key: [u8; 16],
        app_s_key: [u8; 16],
    },
}

impl std::fmt::Debug for Activation {
    /// Names and addresses only: keys are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Activation::Otaa {
                dev_eui, join_eui, ..
            } => write!(
                f,
                "Otaa {{ dev_eui: {dev_eui:016x}, join_eui: {join_eui:016x} }}"
            ),
            Activation::Abp { dev_addr, .. } => write!(f, "Abp {{ dev_addr: {dev_addr:08x} }}"),
        }
    }
}

/// One configured LoRaWAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedDevice {
    /// The `[[device]]` name.
    pub name: String,
    pub activation: Activation,
    /// Which DevNonce rule its joins follow.
    pub version: LorawanVersion,
    /// Network-side ADR (`adr = true`): LinkADRReqs when its uplinks set the ADR bit.
    pub adr: bool,
}

/// The server's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerSettings {
    pub region: &'static RegionParams,
    /// 24 bits.
    pub net_id: u32,
    /// RX1 delay of data downlinks, seconds (1..=15).
    pub rx1_delay: u64,
    /// JOIN_ACCEPT_DELAY1, seconds.
    pub join_accept_delay1: u64,
    /// RX2 frequency (Hz) and data rate: the region's unless configured (told to devices in the
    /// JoinAccept's DLSettings; ABP devices must be configured alike).
    pub rx2_frequency: u32,
    pub rx2_data_rate: u8,
}

impl ServerSettings {
    /// The longest command payload a receive window can carry: RX2's (a command must fit RX2, where a
    /// downlink goes when RX1 is not possible; RX1 may carry less, see [`NetworkServer::with_command`]).
    pub fn largest_command(&self) -> usize {
        usize::from(self.region.max_payload[usize::from(self.rx2_data_rate & 0x0F)])
    }
}

/// A frame to transmit through a gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Downlink {
    pub phy: Vec<u8>,
    /// The gateway that heard the uplink best.
    pub gateway: u64,
    /// The gateway's concentrator counter at which to send (µs).
    pub tmst: u32,
    pub frequency: u32,
    pub data_rate: DataRate,
    /// The same frame in RX2 (one second later, the region's RX2 frequency and data rate), for when
    /// the gateway cannot send in RX1; `None` for the RX2 downlink itself.
    pub rx2: Option<Rx2>,
}

/// Where and when RX2 is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rx2 {
    pub tmst: u32,
    pub frequency: u32,
    pub data_rate: DataRate,
}

impl Downlink {
    /// This downlink moved to its RX2 window, if it has one.
    pub fn in_rx2(&self) -> Option<Downlink> {
        let rx2 = self.rx2?;
        Some(Downlink {
            phy: self.phy.clone(),
            gateway: self.gateway,
            tmst: rx2.tmst,
            frequency: rx2.frequency,
            data_rate: rx2.data_rate,
            rx2: None,
        })
    }
}

/// A data uplink accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// Index of the device in the server's list.
    pub device: usize,
    pub fcnt: u32,
    pub fport: Option<u8>,
    /// The decrypted application payload (empty with FPort 0 or no FRMPayload).
    pub payload: Vec<u8>,
    pub confirmed: bool,
    /// The frame's ACK bit: it acknowledges the last confirmed downlink.
    pub acks: bool,
    pub downlink: Option<Downlink>,
    /// MAC commands of the frame the server does not know (counted).
    pub unknown_mac_commands: u32,
    /// The MAC answers `downlink` carries, and its FCntDown: what a command merged into this uplink's
    /// receive window keeps ([`NetworkServer::with_command`]).
    pub answers: Vec<MacAnswer>,
    pub downlink_fcnt: Option<u32>,
    /// What ADR did with this uplink (counted by the caller).
    pub adr: AdrEvents,
}

/// What ADR did with one uplink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdrEvents {
    /// A LinkADRReq is in this window's downlink.
    pub requested: bool,
    /// The uplink carried the device's LinkADRAns to the pending request: accepted or refused.
    pub accepted: bool,
    pub refused: bool,
}

/// The flags of a data uplink's header the server acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct UplinkFlags {
    confirmed: bool,
    /// FCtrl ADR: the device lets the network set its data rate and power.
    adr: bool,
    /// FCtrl ADRACKReq: the device asks for any downlink before it falls back.
    adr_ack_req: bool,
}

/// A command's FRMPayload for a device's receive window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandFrame<'a> {
    /// 1..=223.
    pub fport: u8,
    pub payload: &'a [u8],
    /// Sent as a confirmed data down frame (the device's next uplink acknowledges it).
    pub confirmed: bool,
}

/// Why a command cannot go into this receive window (it stays queued).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandRefusal {
    #[error("FPort {0} is not an application port (1..=223)")]
    FPort(u8),
    #[error("{len} bytes are more than the {max} the device's downlink data rate DR{data_rate} carries with the MAC answers of this window")]
    TooLong {
        len: usize,
        max: usize,
        data_rate: u8,
    },
    #[error("the device has no session (it has not joined)")]
    NoSession,
    #[error("the frame counter is exhausted; the device must join again")]
    CounterExhausted,
    #[error("the downlink could not be built")]
    Build,
}

/// Why an uplink was refused. Every refusal is counted by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a LoRaWAN frame")]
    Malformed,
    #[error("not an uplink")]
    NotUplink,
    #[error("a LoRaWAN 1.1 frame ({0}); sensorgate serves LoRaWAN 1.0.x devices (1.0.2 to 1.0.4)")]
    Lorawan11(&'static str),
    #[error("DevAddr {0:08x} is not configured")]
    UnknownDevAddr(u32),
    #[error("join request from DevEUI {0:016x}, which is not configured")]
    UnknownDevEui(u64),
    #[error(
        "join request of DevEUI {dev_eui:016x} names JoinEUI {got:016x}, configured {want:016x}"
    )]
    WrongJoinEui { dev_eui: u64, got: u64, want: u64 },
    #[error("wrong MIC")]
    BadMic,
    #[error("frame counter {0} at or below the last accepted (a replay)")]
    Replay(u32),
    #[error("frame counter jumped by more than {MAX_FCNT_GAP}")]
    CounterGap,
    #[error("DevNonce {0} was used before (a replayed join request; a LoRaWAN 1.0.4 device's DevNonce must be above its last)")]
    DevNonceReused(u16),
    #[error("join request of DevEUI {0:016x} over the join rate limit")]
    JoinRateLimited(u64),
    #[error("the frame counter is exhausted; the device must join again")]
    CounterExhausted,
    #[error("the stored LoRaWAN sessions were lost, so this ABP device's last counter is unknown: its frames are refused until an operator runs `sensorgate reset-state -c CONFIG` and restarts the gateway")]
    AbpCountersLost,
}

impl Refusal {
    /// A short name of the reason, for rate-limited log lines (one key per reason).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed frame",
            Refusal::NotUplink => "not uplink",
            Refusal::Lorawan11(_) => "lorawan 1.1",
            Refusal::UnknownDevAddr(_) => "unknown devaddr",
            Refusal::UnknownDevEui(_) => "unknown deveui",
            Refusal::WrongJoinEui { .. } => "wrong joineui",
            Refusal::BadMic => "bad mic",
            Refusal::Replay(_) => "replay",
            Refusal::CounterGap => "counter gap",
            Refusal::DevNonceReused(_) => "devnonce reused",
            Refusal::JoinRateLimited(_) => "join rate",
            Refusal::CounterExhausted => "counter exhausted",
            Refusal::AbpCountersLost => "abp counters lost",
        }
    }
}

/// What one uplink became.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A join request accepted: the JoinAccept to send.
    Joined {
        device: usize,
        downlink: Downlink,
    },
    Data(Box<Accepted>),
    Refused(Refusal),
}

/// The server's state: devices, their sessions, the DevNonces seen.
#[derive(Debug)]
pub struct NetworkServer {
    settings: ServerSettings,
    devices: Vec<ServedDevice>,
    sessions: Vec<Option<Session>>,
    nonces: Vec<DevNonces>,
    /// Each device's ADR state (not stored: it starts again after a restart or a join).
    adr: Vec<AdrState>,
    by_addr: HashMap<u32, Vec<usize>>,
    by_eui: HashMap<u64, usize>,
    next_join_nonce: u32,
    join_limit: JoinLimit,
    /// The stored sessions were lost: ABP devices' frames are refused (see [`Self::fail_closed`]).
    abp_counters_lost: bool,
}

impl NetworkServer {
    /// A server for `devices`, resuming the stored `records` (matched by device name; a record whose
    /// device changed activation is ignored).
    pub fn new(
        settings: ServerSettings,
        devices: Vec<ServedDevice>,
        records: &[SessionRecord],
    ) -> NetworkServer {
        let mut server = NetworkServer {
            settings,
            sessions: vec![None; devices.len()],
            nonces: Vec::with_capacity(devices.len()),
            adr: vec![AdrState::default(); devices.len()],
            by_addr: HashMap::new(),
            by_eui: HashMap::new(),
            next_join_nonce: 0,
            join_limit: JoinLimit::default(),
            abp_counters_lost: false,
            devices,
        };
        for (index, device) in server.devices.iter().enumerate() {
            let record = records.iter().find(|r| r.device == device.name);
            let session = match (&device.activation, record) {
                (
                    Activation::Abp {
                        dev_addr,
                        nwk_s_key,
                        app_s_key,
                    },
                    record,
                ) => Some(match record {
                    Some(record) if record.dev_addr == *dev_addr && record.join.is_none() => {
                        record.resume(*nwk_s_key, *app_s_key)
                    }
                    _ => Session::new(*dev_addr, *nwk_s_key, *app_s_key),
                }),
                (Activation::Otaa { app_key, .. }, Some(record)) => record.join.map(|inputs| {
                    let (nwk, app) = derive_session_keys(app_key, &inputs);
                    record.resume(nwk, app)
                }),
                (Activation::Otaa { .. }, None) => None,
            };
            if let Activation::Otaa { dev_eui, .. } = device.activation {
                server.by_eui.insert(dev_eui, index);
            }
            let joined = record.filter(|r| r.join.is_some());
            server.nonces.push(DevNonces::restore(
                device.version,
                joined.map_or(&[], |r| r.dev_nonces.as_slice()),
                joined.and_then(|r| r.join).map(|inputs| inputs.dev_nonce),
            ));
            if let Some(inputs) = record.and_then(|r| r.join) {
                server.next_join_nonce = server.next_join_nonce.max(inputs.join_nonce + 1);
            }
            if let Some(session) = session {
                server
                    .by_addr
                    .entry(session.dev_addr)
                    .or_default()
                    .push(index);
                server.sessions[index] = Some(session);
            }
        }
        server
    }

    /// The stored sessions were lost (no good copy): an ABP device's counter could restart at 0 and
    /// every frame it ever sent would be accepted again, so its frames are refused, as the replay marks
    /// refuse encrypted frames when they are lost, until an operator resets the state. OTAA devices
    /// join again (a join gives new keys, so no old frame is accepted).
    pub fn fail_closed(&mut self) {
        self.abp_counters_lost = true;
    }

    pub fn device(&self, index: usize) -> Option<&ServedDevice> {
        self.devices.get(index)
    }

    pub fn session(&self, index: usize) -> Option<&Session> {
        self.sessions.get(index).and_then(Option::as_ref)
    }

    /// The records of the sessions that passed their stored marks (and moves the marks ahead): what
    /// `persist` writes. Empty when nothing needs a write.
    pub fn records_due(&mut self) -> Option<Vec<SessionRecord>> {
        let due = self.sessions.iter().flatten().any(Session::needs_write);
        if !due {
            return None;
        }
        Some(self.all_records())
    }

    /// Every session's record (moving marks ahead where passed), for a write while running.
    pub fn all_records(&mut self) -> Vec<SessionRecord> {
        self.records_with(Session::to_record)
    }

    /// Every session's record with its counters exactly, for the write of a clean stop.
    pub fn exact_records(&mut self) -> Vec<SessionRecord> {
        self.records_with(Session::to_exact_record)
    }

    fn records_with(
        &mut self,
        record: fn(&mut Session, &str) -> SessionRecord,
    ) -> Vec<SessionRecord> {
        let names: Vec<String> = self.devices.iter().map(|d| d.name.clone()).collect();
        self.sessions
            .iter_mut()
            .zip(names)
            .zip(&self.nonces)
            .filter_map(|((session, name), nonces)| {
                session.as_mut().map(|s| SessionRecord {
                    dev_nonces: nonces.stored(),
                    ..record(s, &name)
                })
            })
            .collect()
    }

    /// One deduplicated uplink at `now` (monotonic, for the join rate limit) and `wall` (for
    /// DeviceTimeAns).
    pub fn handle(&mut self, heard: &Heard, now: Instant, wall: SystemTime) -> Outcome {
        let Some(&mhdr) = heard.phy.first() else {
            return Outcome::Refused(Refusal::Malformed);
        };
        let mtype = mhdr >> 5;
        if mhdr & 0x03 != 0 {
            return Outcome::Refused(Refusal::Lorawan11("major version other than LoRaWAN R1"));
        }
        if mtype == 0b110 {
            return Outcome::Refused(Refusal::Lorawan11("RejoinRequest"));
        }
        match parse(heard.phy.clone()) {
            Ok(PhyPayload::JoinRequest(request)) => self.handle_join(&request, heard, now),
            Ok(PhyPayload::Data(DataPayload::Encrypted(frame))) => {
                self.handle_data(frame, heard, wall)
            }
            Ok(_) => Outcome::Refused(Refusal::NotUplink),
            Err(_) => Outcome::Refused(Refusal::Malformed),
        }
    }

    /// A JoinRequest: the device known by its DevEUI and JoinEUI, the MIC, a fresh DevNonce and the
    /// join rate limit checked before the JoinAccept.
    fn handle_join(
        &mut self,
        request: &JoinRequestPayload<Vec<u8>, DefaultFactory>,
        heard: &Heard,
        now: Instant,
    ) -> Outcome {
        let dev_eui = eui_of_wire(request.dev_eui().as_ref());
        let join_eui = eui_of_wire(request.app_eui().as_ref());
        let nonce_bytes = request.dev_nonce();
        let dev_nonce = u16::from_le_bytes([nonce_bytes.as_ref()[0], nonce_bytes.as_ref()[1]]);
        let Some(&index) = self.by_eui.get(&dev_eui) else {
            return Outcome::Refused(Refusal::UnknownDevEui(dev_eui));
        };
        let Activation::Otaa {
            join_eui: want,
            app_key,
            ..
        } = self.devices[index].activation
        else {
            return Outcome::Refused(Refusal::UnknownDevEui(dev_eui));
        };
        if !request.validate_mic(&AES128(app_key)) {
            return Outcome::Refused(Refusal::BadMic);
        }
        if join_eui != want {
            return Outcome::Refused(Refusal::WrongJoinEui {
                dev_eui,
                got: join_eui,
                want,
            });
        }
        if !self.nonces[index].admits(dev_nonce) {
            return Outcome::Refused(Refusal::DevNonceReused(dev_nonce));
        }
        if !self.join_limit.admit(dev_eui, now) {
            return Outcome::Refused(Refusal::JoinRateLimited(dev_eui));
        }
        self.join(index, app_key, dev_nonce, &heard.best)
    }

    /// A data uplink: the session among those sharing its DevAddr whose key checks the MIC, the
    /// counter rebuilt and checked, the payload decrypted and accepted.
    fn handle_data(
        &mut self,
        frame: EncryptedDataPayload<Vec<u8>, DefaultFactory>,
        heard: &Heard,
        wall: SystemTime,
    ) -> Outcome {
        if !frame.is_uplink() {
            return Outcome::Refused(Refusal::NotUplink);
        }
        let fhdr = frame.fhdr();
        let addr = fhdr.dev_addr();
        let wire = addr.as_ref();
        let dev_addr = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]);
        let fcnt16 = fhdr.fcnt();
        let fopts = fhdr.data().to_vec();
        let fctrl = fhdr.fctrl();
        let flags = UplinkFlags {
            confirmed: frame.is_confirmed(),
            adr: fctrl.adr(),
            adr_ack_req: fctrl.adr_ack_req(),
        };
        let acks = fctrl.ack();
        let candidates = self.by_addr.get(&dev_addr).cloned().unwrap_or_default();
        if candidates.is_empty() {
            return Outcome::Refused(Refusal::UnknownDevAddr(dev_addr));
        }
        let mut refusal = Refusal::BadMic;
        for index in candidates {
            let Some(session) = self.sessions[index].as_ref() else {
                continue;
            };
            let key = AES128(session.nwk_s_key);
            let (full, same_epoch) = rebuild_fcnt(session.fcnt_up, fcnt16);
            let Some(full) = full else {
                refusal = Refusal::CounterExhausted;
                continue;
            };
            if !frame.validate_mic(&key, full) {
                if let (Some(last), Some(same)) = (session.fcnt_up, same_epoch) {
                    if same <= last && frame.validate_mic(&key, same) {
                        refusal = Refusal::Replay(same);
                    }
                }
                continue;
            }
            if self.abp_counters_lost
                && matches!(self.devices[index].activation, Activation::Abp { .. })
            {
                return Outcome::Refused(Refusal::AbpCountersLost);
            }
            if let Some(last) = session.fcnt_up {
                if full - last > MAX_FCNT_GAP {
                    return Outcome::Refused(Refusal::CounterGap);
                }
            }
            let fport = frame.f_port();
            let app_key = AES128(session.app_s_key);
            let decrypted = match frame.decrypt(Some(&key), Some(&app_key), full) {
                Ok(decrypted) => decrypted,
                Err(_) => return Outcome::Refused(Refusal::Malformed),
            };
            let frm = frm_bytes(decrypted.to_inner(), fport.is_some());
            let (mac, payload) = match fport {
                Some(0) => (frm, Vec::new()),
                _ => (fopts, frm),
            };
            let mut outcome = self.accept(index, full, fport, payload, flags, &mac, heard, wall);
            if let Outcome::Data(accepted) = &mut outcome {
                accepted.acks = acks;
            }
            return outcome;
        }
        Outcome::Refused(refusal)
    }

    fn join(&mut self, index: usize, app_key: [u8; 16], dev_nonce: u16, best: &RxMeta) -> Outcome {
        self.nonces[index].record(dev_nonce);
        let inputs = JoinInputs {
            join_nonce: self.next_join_nonce & 0x00FF_FFFF,
            net_id: self.settings.net_id & 0x00FF_FFFF,
            dev_nonce,
        };
        self.next_join_nonce = self.next_join_nonce.wrapping_add(1);
        let dev_addr = self.allocate_dev_addr(index);
        let region = self.settings.region;
        let rx1_offset = 0u8;
        let dl_settings = (rx1_offset << 4) | (self.settings.rx2_data_rate & 0x0F);
        let phy = JoinAccept {
            join_nonce: inputs.join_nonce,
            net_id: inputs.net_id,
            dev_addr,
            dl_settings,
            rx_delay: self.settings.rx1_delay as u8,
            cf_list: region.cf_list.to_vec(),
        }
        .encrypt(&app_key);
        let (nwk, app) = derive_session_keys(&app_key, &inputs);
        let mut session = Session::new(dev_addr, nwk, app);
        session.join = Some(inputs);
        self.replace_session(index, session);
        self.adr[index] = AdrState::default();
        let downlink = self.rx1(best, self.settings.join_accept_delay1, phy);
        Outcome::Joined {
            device: index,
            downlink,
        }
    }

    fn replace_session(&mut self, index: usize, session: Session) {
        if let Some(old) = self.sessions[index].take() {
            if let Some(list) = self.by_addr.get_mut(&old.dev_addr) {
                list.retain(|i| *i != index);
            }
        }
        self.by_addr
            .entry(session.dev_addr)
            .or_default()
            .push(index);
        self.sessions[index] = Some(session);
    }

    /// DevAddr = NwkID (the NetID's 7 low bits) | a 25-bit address of the device's index, moved on
    /// past addresses in use by other devices.
    fn allocate_dev_addr(&self, index: usize) -> u32 {
        let nwk_id = (self.settings.net_id & 0x7F) << 25;
        let mut nwk_addr = (index as u32).wrapping_add(1) & 0x01FF_FFFF;
        loop {
            let addr = nwk_id | nwk_addr;
            let taken = self
                .by_addr
                .get(&addr)
                .is_some_and(|list| list.iter().any(|i| *i != index));
            if !taken {
                return addr;
            }
            nwk_addr = (nwk_addr + 0x1000) & 0x01FF_FFFF;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        index: usize,
        fcnt: u32,
        fport: Option<u8>,
        payload: Vec<u8>,
        flags: UplinkFlags,
        mac: &[u8],
        heard: &Heard,
        now: SystemTime,
    ) -> Outcome {
        let confirmed = flags.confirmed;
        let MacUplink {
            mut answers,
            unknown,
            link_adr_accepted,
        } = mac_answers(mac, heard, now);
        let adr = self.adr_step(index, flags, link_adr_accepted, &heard.best, &mut answers);
        let Some(session) = self.sessions[index].as_mut() else {
            return Outcome::Refused(Refusal::Malformed);
        };
        session.fcnt_up = Some(fcnt);
        let mut downlink_fcnt = None;
        let downlink = if confirmed || flags.adr_ack_req || !answers.is_empty() {
            let fcnt_down = session.fcnt_down;
            downlink_fcnt = Some(fcnt_down);
            session.fcnt_down = session.fcnt_down.saturating_add(1);
            let phy = build_downlink(session, fcnt_down, confirmed, &answers, None);
            phy.map(|phy| self.rx1(&heard.best, self.settings.rx1_delay, phy))
        } else {
            None
        };
        Outcome::Data(Box::new(Accepted {
            device: index,
            fcnt,
            fport,
            payload,
            confirmed,
            acks: false,
            downlink,
            unknown_mac_commands: unknown,
            answers,
            downlink_fcnt,
            adr,
        }))
    }

    /// ADR for one uplink of device `index`: its LinkADRAns read, and for a device with `adr = true`
    /// whose uplink sets the ADR bit, its SNR kept and a LinkADRReq added to `answers` when one is due
    /// and fits FOpts beside them.
    fn adr_step(
        &mut self,
        index: usize,
        flags: UplinkFlags,
        link_adr_accepted: Option<bool>,
        best: &RxMeta,
        answers: &mut Vec<MacAnswer>,
    ) -> AdrEvents {
        let region = self.settings.region;
        let state = &mut self.adr[index];
        let mut events = AdrEvents::default();
        state.uplink();
        match link_adr_accepted.map(|accepted| state.answered(accepted)) {
            Some(Answered::Accepted) => events.accepted = true,
            Some(Answered::Refused) => events.refused = true,
            Some(Answered::Unasked) | None => {}
        }
        if !(self.devices[index].adr && flags.adr) {
            return events;
        }
        state.record(best.snr);
        let Some(data_rate) = region.uplink_data_rate(best.spreading_factor, best.bandwidth_khz)
        else {
            return events;
        };
        let blocks = region.adr_channel_masks(best.frequency, best.bandwidth_khz);
        let used: usize = answers.iter().map(MacAnswer::fopts_len).sum();
        if used + blocks.len() * LINK_ADR_REQ_LEN > MAX_FOPTS {
            return events;
        }
        if let Some(wanted) = state.request(region, data_rate) {
            answers.extend(blocks.into_iter().map(|block| MacAnswer::LinkAdr {
                data_rate: wanted.data_rate,
                tx_power: wanted.tx_power,
                channel_mask: block.mask,
                control: block.control,
            }));
            events.requested = true;
        }
        events
    }

    /// The downlink of `accepted`'s receive window with `command` in it: the ACK and MAC answers the
    /// server prepared ride along with the same FCntDown (that frame was not sent), or a new FCntDown
    /// is taken when there was none. Refused when the payload does not fit the smaller of RX1's and
    /// RX2's data rates (with the answers in FOpts), so the RX2 fallback carries it too.
    pub fn with_command(
        &mut self,
        accepted: &Accepted,
        heard: &Heard,
        command: CommandFrame<'_>,
    ) -> Result<Downlink, CommandRefusal> {
        if !(1..=223).contains(&command.fport) {
            return Err(CommandRefusal::FPort(command.fport));
        }
        let (rx1_dr, rx2_dr) = self.window_data_rates(&heard.best);
        let region = self.settings.region;
        let fopts: usize = accepted.answers.iter().map(MacAnswer::fopts_len).sum();
        let (data_rate, limit) = [rx1_dr, rx2_dr]
            .into_iter()
            .map(|dr| (dr, usize::from(region.max_payload[usize::from(dr & 0x0F)])))
            .min_by_key(|(_, limit)| *limit)
            .unwrap_or((rx2_dr, 0));
        let max = limit.saturating_sub(fopts);
        if command.payload.len() > max {
            return Err(CommandRefusal::TooLong {
                len: command.payload.len(),
                max,
                data_rate,
            });
        }
        let session = self.sessions[accepted.device]
            .as_mut()
            .ok_or(CommandRefusal::NoSession)?;
        let fcnt_down = match accepted.downlink_fcnt {
            Some(fcnt) => fcnt,
            None => {
                let fcnt = session.fcnt_down;
                if fcnt == u32::MAX {
                    return Err(CommandRefusal::CounterExhausted);
                }
                session.fcnt_down += 1;
                fcnt
            }
        };
        let phy = build_downlink(
            session,
            fcnt_down,
            accepted.confirmed,
            &accepted.answers,
            Some(command),
        )
        .ok_or(CommandRefusal::Build)?;
        Ok(self.rx1(&heard.best, self.settings.rx1_delay, phy))
    }

    /// The data rates of RX1 (following the uplink heard as `best`) and RX2.
    fn window_data_rates(&self, best: &RxMeta) -> (u8, u8) {
        let region = self.settings.region;
        let uplink_dr = region
            .uplink_data_rate(best.spreading_factor, best.bandwidth_khz)
            .unwrap_or(0);
        let rx1 = region.rx1(best.frequency, uplink_dr, 0).data_rate;
        (rx1, self.settings.rx2_data_rate)
    }

    /// A downlink in RX1 of the uplink heard as `best`, `delay_s` seconds after it.
    fn rx1(&self, best: &RxMeta, delay_s: u64, phy: Vec<u8>) -> Downlink {
        let region = self.settings.region;
        let uplink_dr = region
            .uplink_data_rate(best.spreading_factor, best.bandwidth_khz)
            .unwrap_or(0);
        let window = region.rx1(best.frequency, uplink_dr, 0);
        let slowest = DataRate {
            spreading_factor: 12,
            bandwidth_khz: 125,
        };
        let rx2_rate =
            region.data_rates[usize::from(self.settings.rx2_data_rate & 0x0F)].unwrap_or(slowest);
        let data_rate = region.data_rates[usize::from(window.data_rate & 0x0F)].unwrap_or(rx2_rate);
        let rx1_tmst = best.tmst.wrapping_add((delay_s * 1_000_000) as u32);
        Downlink {
            phy,
            gateway: best.gateway,
            tmst: rx1_tmst,
            frequency: window.frequency,
            data_rate,
            rx2: Some(Rx2 {
                tmst: rx1_tmst.wrapping_add(1_000_000),
                frequency: self.settings.rx2_frequency,
                data_rate: rx2_rate,
            }),
        }
    }
}

/// The 32-bit counter of a frame carrying `fcnt16` after `last`: the next value above `last` with
/// those low 16 bits (`None` when the counter would pass 2^32 - 1), and the value in `last`'s epoch
/// (to tell a replay from a wrong MIC).
pub fn rebuild_fcnt(last: Option<u32>, fcnt16: u16) -> (Option<u32>, Option<u32>) {
    let Some(last) = last else {
        return (Some(u32::from(fcnt16)), None);
    };
    let same_epoch = (last & 0xFFFF_0000) | u32::from(fcnt16);
    if same_epoch > last {
        (Some(same_epoch), Some(same_epoch))
    } else {
        (same_epoch.checked_add(0x1_0000), Some(same_epoch))
    }
}

/// The FRMPayload of a decrypted frame's bytes (after FHDR and FPort, before the MIC).
fn frm_bytes(bytes: Vec<u8>, has_fport: bool) -> Vec<u8> {
    if bytes.len() < 12 || !has_fport {
        return Vec::new();
    }
    let fhdr_len = 7 + usize::from(bytes[5] & 0x0F);
    let start = 1 + fhdr_len + 1;
    let end = bytes.len() - 4;
    if start >= end {
        return Vec::new();
    }
    bytes[start..end].to_vec()
}

/// The bytes FOpts holds, and those of one LinkADRReq (CID and payload).
const MAX_FOPTS: usize = 15;
const LINK_ADR_REQ_LEN: usize = 5;

/// What an uplink's MAC commands call for.
struct MacUplink {
    answers: Vec<MacAnswer>,
    /// Commands the server does not know (0 or 1: parsing stops at the first).
    unknown: u32,
    /// The device's LinkADRAns, if it sent any: whether every one had every ACK bit set.
    link_adr_accepted: Option<bool>,
}

/// The MAC command answers an uplink's commands call for, how many commands were unknown, and the
/// device's LinkADRAns.
fn mac_answers(mac: &[u8], heard: &Heard, now: SystemTime) -> MacUplink {
    let mut answers = Vec::new();
    let mut consumed = 0usize;
    let mut link_adr_accepted: Option<bool> = None;
    for command in parse_uplink_mac_commands(mac) {
        consumed += 1 + command.len();
        match command {
            UplinkMacCommand::LinkADRAns(answer) => {
                let all =
                    answer.channel_mask_ack() && answer.data_rate_ack() && answer.powert_ack();
                link_adr_accepted = Some(link_adr_accepted.unwrap_or(true) && all);
            }
            UplinkMacCommand::LinkCheckReq(_) => answers.push(MacAnswer::LinkCheck {
                margin: link_margin(heard.best.spreading_factor, heard.best.snr),
                gateways: heard.gateways.len().min(255) as u8,
            }),
            UplinkMacCommand::DeviceTimeReq(_) => {
                answers.push(MacAnswer::DeviceTime(gps_time(now)))
            }
            _ => {}
        }
    }
    let unknown = u32::from(consumed < mac.len());
    MacUplink {
        answers,
        unknown,
        link_adr_accepted,
    }
}

/// A MAC command the server answers with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MacAnswer {
    LinkCheck {
        margin: u8,
        gateways: u8,
    },
    /// GPS time (seconds and fractions since 1980-01-06).
    DeviceTime(Duration),
    /// One LinkADRReq block (ADR): the data rate and TXPower index to use, the channel mask and its
    /// ChMaskCntl; NbTrans 1.
    LinkAdr {
        data_rate: u8,
        tx_power: u8,
        channel_mask: u16,
        control: u8,
    },
}

impl MacAnswer {
    /// Its bytes in FOpts (CID and payload).
    pub fn fopts_len(&self) -> usize {
        match self {
            MacAnswer::LinkCheck { .. } => 3,
            MacAnswer::DeviceTime(_) => 6,
            MacAnswer::LinkAdr { .. } => LINK_ADR_REQ_LEN,
        }
    }
}

/// LinkCheckAns margin: dB above the demodulation floor of the spreading factor.
fn link_margin(spreading_factor: u8, snr: f32) -> u8 {
    let floor = -7.5 - 2.5 * f32::from(spreading_factor.clamp(7, 12) - 7);
    (snr - floor).clamp(0.0, 254.0) as u8
}

/// GPS time of `now`: Unix time minus the GPS epoch (315,964,800 s) plus the 18 leap seconds since.
fn gps_time(now: SystemTime) -> Duration {
    let unix = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    (unix + Duration::from_secs(18)).saturating_sub(Duration::from_secs(315_964_800))
}

/// The downlink data frame: FOpts with the answers, ACK when the uplink was confirmed, and a command's
/// FRMPayload (encrypted with the AppSKey) on its FPort, confirmed when the command asks for it.
fn build_downlink(
    session: &Session,
    fcnt: u32,
    ack: bool,
    answers: &[MacAnswer],
    command: Option<CommandFrame<'_>>,
) -> Option<Vec<u8>> {
    let mut link_check = LinkCheckAnsCreator::new();
    let mut device_time = DeviceTimeAnsCreator::new();
    let mut link_adr = Vec::new();
    let mut commands: Vec<&dyn SerializableMacCommand> = Vec::new();
    for answer in answers {
        match *answer {
            MacAnswer::LinkAdr {
                data_rate,
                tx_power,
                channel_mask,
                control,
            } => {
                let mut request = LinkADRReqCreator::new();
                request
                    .set_data_rate(data_rate)
                    .ok()?
                    .set_tx_power(tx_power)
                    .ok()?
                    .set_channel_mask(channel_mask.to_le_bytes())
                    .set_redundancy((control & 0x07) << 4 | 1);
                link_adr.push(request);
            }
            MacAnswer::LinkCheck { margin, gateways } => {
                link_check.set_margin(margin).set_gateway_count(gateways);
            }
            MacAnswer::DeviceTime(gps) => {
                device_time
                    .set_seconds(gps.as_secs() as u32)
                    .set_nano_seconds(gps.subsec_nanos())
                    .ok()?;
            }
        }
    }
    if answers
        .iter()
        .any(|a| matches!(a, MacAnswer::LinkCheck { .. }))
    {
        commands.push(&link_check);
    }
    if answers
        .iter()
        .any(|a| matches!(a, MacAnswer::DeviceTime(_)))
    {
        commands.push(&device_time);
    }
    commands.extend(link_adr.iter().map(|r| r as &dyn SerializableMacCommand));
    let mut creator = DataPayloadCreator::new();
    let fctrl = FCtrl::new(if ack { 0x20 } else { 0x00 }, false);
    creator
        .set_confirmed(command.is_some_and(|c| c.confirmed))
        .set_uplink(false)
        .set_dev_addr(&session.dev_addr.to_le_bytes())
        .set_fctrl(&fctrl)
        .set_fcnt(fcnt);
    if let Some(command) = command {
        creator.set_f_port(command.fport);
    }
    let built = creator
        .build(
            command.map_or(&[][..], |c| c.payload),
            &commands,
            &NewSKey::from(session.nwk_s_key),
            &AppSKey::from(session.app_s_key),
        )
        .ok()?;
    Some(built.to_vec())
}

/// An EUI as the number of its big-endian text, from the frame's little-endian bytes.
fn eui_of_wire(wire: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    for (i, b) in wire.iter().take(8).enumerate() {
        bytes[7 - i] = *b;
    }
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
