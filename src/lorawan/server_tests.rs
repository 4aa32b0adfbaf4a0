//! The server against the lorawan crate's published vectors and frames built by the crate as an end
//! device would build them.

use super::*;
use crate::lorawan::region::Region;
use lorawan::parser::EncryptedJoinAcceptPayload;

const NOW: u64 = 1_700_000_000;

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

fn meta(gateway: u64) -> RxMeta {
    RxMeta {
        gateway,
        tmst: 4_000_000_000,
        frequency: 868_300_000,
        spreading_factor: 7,
        bandwidth_khz: 125,
        rssi: -60.0,
        snr: 7.5,
    }
}

fn heard(phy: &[u8]) -> Heard {
    Heard {
        phy: phy.to_vec(),
        best: meta(0xaa),
        gateways: vec![0xaa, 0xbb],
    }
}

/// A join of `dev_eui` again, after the join rate limit's interval.
fn later() -> Instant {
    Instant::now() + crate::lorawan::join_limit::PER_DEVICE
}

fn later_step() -> Duration {
    crate::lorawan::join_limit::PER_DEVICE
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// The crate's join request vector: AppKey [1; 16], AppEUI 0102030401020304, DevEUI 0203040502030405.
const JOIN_REQUEST: [u8; 23] = [
    0x00, 0x04, 0x03, 0x02, 0x01, 0x04, 0x03, 0x02, 0x01, 0x05, 0x04, 0x03, 0x02, 0x05, 0x04, 0x03,
    0x02, 0x2d, 0x10, 0x6a, 0x99, 0x0e, 0x12,
];
/// The crate's data uplink vector: DevAddr 01020304, FCnt 1, FPort 1, NwkSKey [2; 16], AppSKey [1; 16].
const DATA_UP: [u8; 18] = [
    0x40, 0x04, 0x03, 0x02, 0x01, 0x80, 0x01, 0x00, 0x01, 0xa6, 0x94, 0x64, 0x26, 0x15, 0xd6, 0xc3,
    0xb5, 0x82,
];

fn otaa() -> ServedDevice {
    ServedDevice {
        name: "door".into(),
        activation: Activation::Otaa {
            dev_eui: 0x0203_0405_0203_0405,
            join_eui: 0x0102_0304_0102_0304,
            app_key: [1; 16],
        },
        version: LorawanVersion::default(),
        adr: false,
    }
}

fn abp() -> ServedDevice {
    ServedDevice {
        name: "meter".into(),
        activation: Activation::Abp {
            dev_addr: 0x0102_0304,
            nwk_s_key: [2; 16],
            app_s_key: [1; 16],
        },
        version: LorawanVersion::default(),
        adr: false,
    }
}

fn uplink(dev_addr: u32, fcnt: u32, confirmed: bool, fopts: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut creator = DataPayloadCreator::new();
    creator
        .set_confirmed(confirmed)
        .set_uplink(true)
        .set_dev_addr(&dev_addr.to_le_bytes())
        .set_fctrl(&FCtrl::new(0x80, true))
        .set_fcnt(fcnt)
        .set_f_port(10);
    let commands: Vec<lorawan::maccommands::UplinkMacCommand> =
        parse_uplink_mac_commands(fopts).collect();
    let commands: Vec<&dyn SerializableMacCommand> = commands
        .iter()
        .map(|c| c as &dyn SerializableMacCommand)
        .collect();
    creator
        .build(
            payload,
            &commands,
            &NewSKey::from([2; 16]),
            &AppSKey::from([1; 16]),
        )
        .unwrap()
        .to_vec()
}

#[test]
fn a_join_request_vector_is_accepted_and_the_join_accept_decrypts_to_the_session_keys() {
    let mut server = NetworkServer::new(settings(), vec![otaa()], &[]);
    let Outcome::Joined { device, downlink } =
        server.handle(&heard(&JOIN_REQUEST), Instant::now(), now())
    else {
        panic!("not joined");
    };
    assert_eq!(device, 0);
    assert_eq!(downlink.gateway, 0xaa);
    assert_eq!(downlink.tmst, 4_000_000_000u32.wrapping_add(5_000_000));
    assert_eq!(downlink.frequency, 868_300_000);
    assert_eq!(downlink.phy.len(), 33, "EU868 JoinAccept carries a CFList");
    // As the device does it: decrypt with the AppKey, check the MIC, derive the keys.
    let key = lorawan::keys::AppKey::from([1; 16]);
    let accept = EncryptedJoinAcceptPayload::new(downlink.phy.clone())
        .unwrap()
        .decrypt(&key);
    assert!(accept.validate_mic(&key));
    let session = server.session(0).unwrap();
    assert_eq!(accept.dev_addr().as_ref(), &session.dev_addr.to_le_bytes());
    assert_eq!(session.dev_addr >> 25, 0x13, "NwkID of the NetID");
    let nonce = [0x2d, 0x10];
    let dev_nonce = lorawan::parser::DevNonce::new(&nonce[..]).unwrap();
    assert_eq!(
        accept.derive_newskey(&dev_nonce, &key).inner().0,
        session.nwk_s_key
    );
    assert_eq!(
        accept.derive_appskey(&dev_nonce, &key).inner().0,
        session.app_s_key
    );
}

#[test]
fn a_reused_dev_nonce_a_wrong_mic_and_strangers_are_refused() {
    let mut server = NetworkServer::new(settings(), vec![otaa()], &[]);
    assert!(matches!(
        server.handle(&heard(&JOIN_REQUEST), Instant::now(), now()),
        Outcome::Joined { .. }
    ));
    assert_eq!(
        server.handle(&heard(&JOIN_REQUEST), later(), now()),
        Outcome::Refused(Refusal::DevNonceReused(0x102d))
    );
    // A new DevNonce within the rate limit's interval is refused too, and taken after it.
    let mut again = JOIN_REQUEST;
    again[17] = 0x2e;
    let mic = {
        let mut mac = <cmac::Cmac<aes::Aes128> as aes::cipher::KeyInit>::new(&[1u8; 16].into());
        cmac::Mac::update(&mut mac, &again[..19]);
        cmac::Mac::finalize(mac).into_bytes()
    };
    again[19..].copy_from_slice(&mic[..4]);
    let start = Instant::now();
    assert_eq!(
        server.handle(&heard(&again), start, now()),
        Outcome::Refused(Refusal::JoinRateLimited(0x0203_0405_0203_0405))
    );
    assert!(matches!(
        server.handle(&heard(&again), later() + Duration::from_millis(10), now()),
        Outcome::Joined { .. }
    ));
    let mut bad = JOIN_REQUEST;
    bad[22] ^= 1;
    assert_eq!(
        server.handle(&heard(&bad), Instant::now(), now()),
        Outcome::Refused(Refusal::BadMic)
    );
    let mut stranger = JOIN_REQUEST;
    stranger[9] = 0x99;
    assert!(matches!(
        server.handle(&heard(&stranger), Instant::now(), now()),
        Outcome::Refused(Refusal::UnknownDevEui(_))
    ));
    assert_eq!(
        server.handle(&heard(&[0xc0, 1, 2]), Instant::now(), now()),
        Outcome::Refused(Refusal::Lorawan11("RejoinRequest"))
    );
    assert_eq!(
        server.handle(&heard(&[]), Instant::now(), now()),
        Outcome::Refused(Refusal::Malformed)
    );
}

#[test]
fn the_data_vector_decrypts_and_a_replay_or_a_wrong_mic_is_refused() {
    let mut server = NetworkServer::new(settings(), vec![abp()], &[]);
    let Outcome::Data(accepted) = server.handle(&heard(&DATA_UP), Instant::now(), now()) else {
        panic!("refused");
    };
    assert_eq!((accepted.fcnt, accepted.fport), (1, Some(1)));
    assert_eq!(accepted.payload, b"hello");
    assert!(accepted.downlink.is_none());
    assert_eq!(
        server.handle(&heard(&DATA_UP), Instant::now(), now()),
        Outcome::Refused(Refusal::Replay(1))
    );
    let mut bad = DATA_UP;
    bad[17] ^= 0x01;
    assert_eq!(
        server.handle(&heard(&bad), Instant::now(), now()),
        Outcome::Refused(Refusal::BadMic)
    );
    let stranger = uplink(0x0bad_0bad, 2, false, &[], b"x");
    assert_eq!(
        server.handle(&heard(&stranger), Instant::now(), now()),
        Outcome::Refused(Refusal::UnknownDevAddr(0x0bad_0bad))
    );
}

#[test]
fn the_counter_rolls_over_past_65535_and_a_big_jump_is_refused() {
    let mut server = NetworkServer::new(settings(), vec![abp()], &[]);
    for fcnt in [65_534u32, 65_535, 65_536, 65_537] {
        match server.handle(
            &heard(&uplink(0x0102_0304, fcnt, false, &[], b"x")),
            Instant::now(),
            now(),
        ) {
            Outcome::Data(accepted) => assert_eq!(accepted.fcnt, fcnt),
            other => panic!("{fcnt}: {other:?}"),
        }
    }
    assert_eq!(
        server.handle(
            &heard(&uplink(
                0x0102_0304,
                65_537 + MAX_FCNT_GAP + 1,
                false,
                &[],
                b"x"
            )),
            Instant::now(),
            now()
        ),
        Outcome::Refused(Refusal::CounterGap)
    );
    assert_eq!(
        rebuild_fcnt(Some(0xFFFF_FFFF), 0),
        (None, Some(0xFFFF_0000))
    );
}

#[test]
fn a_confirmed_uplink_with_link_check_gets_an_ack_in_rx1() {
    let mut server = NetworkServer::new(settings(), vec![abp()], &[]);
    let frame = uplink(0x0102_0304, 7, true, &[0x02, 0x0d], b"x");
    let Outcome::Data(accepted) = server.handle(&heard(&frame), Instant::now(), now()) else {
        panic!("refused");
    };
    assert!(accepted.confirmed);
    let downlink = accepted.downlink.expect("an ACK");
    assert_eq!(downlink.tmst, 4_000_000_000u32.wrapping_add(1_000_000));
    assert_eq!(
        (downlink.frequency, downlink.data_rate.spreading_factor),
        (868_300_000, 7)
    );
    let Ok(PhyPayload::Data(DataPayload::Encrypted(down))) = parse(downlink.phy.clone()) else {
        panic!("not a data frame");
    };
    assert!(!down.is_uplink() && !down.is_confirmed());
    assert!(down.fhdr().fctrl().ack());
    assert_eq!(down.fhdr().fcnt(), 0);
    assert!(down.validate_mic(&AES128([2; 16]), 0));
    // FOpts: LinkCheckAns (0x02, margin 15 = 7.5 - (-7.5), 2 gateways) and DeviceTimeAns (0x0d, 5 bytes).
    let fopts = down.fhdr().data().to_vec();
    assert_eq!(&fopts[..3], &[0x02, 15, 2]);
    assert_eq!(fopts[3], 0x0d);
    let gps = u32::from_le_bytes([fopts[4], fopts[5], fopts[6], fopts[7]]);
    assert_eq!(u64::from(gps), NOW + 18 - 315_964_800);
    // An unconfirmed uplink without MAC commands gets no downlink.
    let plain = uplink(0x0102_0304, 8, false, &[], b"x");
    let Outcome::Data(plain) = server.handle(&heard(&plain), Instant::now(), now()) else {
        panic!("refused");
    };
    assert_eq!(plain.unknown_mac_commands, 0);
    assert!(plain.downlink.is_none());
}

/// The frame of `downlink`, decrypted with the ABP device's keys: FCntDown, ACK bit, confirmed, FOpts,
/// FPort and FRMPayload.
fn open_downlink(downlink: &Downlink) -> (u32, bool, bool, Vec<u8>, Option<u8>, Vec<u8>) {
    let Ok(PhyPayload::Data(DataPayload::Encrypted(down))) = parse(downlink.phy.clone()) else {
        panic!("not a data frame");
    };
    assert!(!down.is_uplink());
    let fcnt = u32::from(down.fhdr().fcnt());
    assert!(down.validate_mic(&AES128([2; 16]), fcnt), "MIC");
    let (ack, confirmed) = (down.fhdr().fctrl().ack(), down.is_confirmed());
    let fopts = down.fhdr().data().to_vec();
    let fport = down.f_port();
    let plain = down
        .decrypt(Some(&AES128([2; 16])), Some(&AES128([1; 16])), fcnt)
        .unwrap();
    let frm = match plain.frm_payload() {
        lorawan::parser::FRMPayload::Data(data) => data.to_vec(),
        _ => Vec::new(),
    };
    (fcnt, ack, confirmed, fopts, fport, frm)
}

#[test]
fn a_command_rides_in_the_window_with_the_ack_and_the_mac_answers() {
    let mut server = NetworkServer::new(settings(), vec![abp()], &[]);
    let frame = uplink(0x0102_0304, 7, true, &[0x02], b"x");
    let up = heard(&frame);
    let Outcome::Data(accepted) = server.handle(&up, Instant::now(), now()) else {
        panic!("refused");
    };
    let command = CommandFrame {
        fport: 5,
        payload: &[1, 2, 3],
        confirmed: true,
    };
    let downlink = server.with_command(&accepted, &up, command).unwrap();
    // The ACK's FCntDown (its frame was never sent), RX1 as the ACK's.
    let plain_ack = accepted.downlink.clone().unwrap();
    assert_eq!(
        (downlink.tmst, downlink.frequency),
        (plain_ack.tmst, plain_ack.frequency)
    );
    let (fcnt, ack, confirmed, fopts, fport, frm) = open_downlink(&downlink);
    assert_eq!(fcnt, accepted.downlink_fcnt.unwrap());
    assert!(ack && confirmed);
    assert_eq!(&fopts[..1], &[0x02]);
    assert_eq!((fport, frm), (Some(5), vec![1, 2, 3]));

    // An unconfirmed uplink without answers: a fresh FCntDown, no ACK bit, unconfirmed.
    let frame = uplink(0x0102_0304, 8, false, &[], b"x");
    let up = heard(&frame);
    let Outcome::Data(accepted) = server.handle(&up, Instant::now(), now()) else {
        panic!("refused");
    };
    let command = CommandFrame {
        fport: 1,
        payload: b"on",
        confirmed: false,
    };
    let downlink = server.with_command(&accepted, &up, command).unwrap();
    let (next, ack, confirmed, fopts, fport, frm) = open_downlink(&downlink);
    assert_eq!(next, fcnt + 1);
    assert!(!ack && !confirmed && fopts.is_empty());
    assert_eq!((fport, frm), (Some(1), b"on".to_vec()));
}

#[test]
fn a_command_longer_than_the_slower_window_carries_or_on_a_mac_port_is_refused() {
    let mut server = NetworkServer::new(settings(), vec![abp()], &[]);
    let frame = uplink(0x0102_0304, 7, false, &[], b"x");
    let up = heard(&frame);
    let Outcome::Data(accepted) = server.handle(&up, Instant::now(), now()) else {
        panic!("refused");
    };
    // RX2 in EU868 is DR0 (51 bytes), slower than RX1's DR5.
    let long = [0u8; 52];
    let refused = server.with_command(
        &accepted,
        &up,
        CommandFrame {
            fport: 1,
            payload: &long,
            confirmed: false,
        },
    );
    assert_eq!(
        refused,
        Err(CommandRefusal::TooLong {
            len: 52,
            max: 51,
            data_rate: 0
        })
    );
    assert_eq!(settings().largest_command(), 51);
    for fport in [0, 224] {
        let refused = server.with_command(
            &accepted,
            &up,
            CommandFrame {
                fport,
                payload: b"x",
                confirmed: false,
            },
        );
        assert_eq!(refused, Err(CommandRefusal::FPort(fport)));
    }
    assert!(server
        .with_command(
            &accepted,
            &up,
            CommandFrame {
                fport: 1,
                payload: &long[..51],
                confirmed: false,
            },
        )
        .is_ok());
}

#[test]
fn unknown_mac_commands_are_counted() {
    let MacUplink {
        answers, unknown, ..
    } = mac_answers(&[0x02, 0x7f, 0x01], &heard(&[]), now());
    assert_eq!(answers.len(), 1);
    assert_eq!(unknown, 1);
}

#[test]
fn a_restart_resumes_above_the_stored_mark_with_fresh_downlink_counters() {
    let mut server = NetworkServer::new(settings(), vec![otaa(), abp()], &[]);
    assert!(matches!(
        server.handle(&heard(&JOIN_REQUEST), Instant::now(), now()),
        Outcome::Joined { .. }
    ));
    let dev_addr = server.session(0).unwrap().dev_addr;
    assert!(matches!(
        server.handle(&heard(&DATA_UP), Instant::now(), now()),
        Outcome::Data(_)
    ));
    let records = server.records_due().expect("a write is due");
    assert!(
        server.records_due().is_none(),
        "no write until a mark is passed"
    );
    let mut restarted = NetworkServer::new(settings(), vec![otaa(), abp()], &records);
    let session = restarted.session(0).unwrap();
    assert_eq!(session.dev_addr, dev_addr);
    assert_eq!(session.nwk_s_key, server.session(0).unwrap().nwk_s_key);
    // The ABP device's counter 1 was accepted before the restart; up to the mark (1 + 64) is refused now.
    let frame = uplink(0x0102_0304, 65, false, &[], b"x");
    assert!(matches!(
        restarted.handle(&heard(&frame), Instant::now(), now()),
        Outcome::Refused(Refusal::Replay(65))
    ));
    let frame = uplink(0x0102_0304, 66, false, &[], b"x");
    assert!(matches!(
        restarted.handle(&heard(&frame), Instant::now(), now()),
        Outcome::Data(_)
    ));
    // Every DevNonce used is remembered across the restart (a second join first).
    let mut second = JOIN_REQUEST;
    second[17] = 0x2e;
    let mic = {
        let mut mac = <cmac::Cmac<aes::Aes128> as aes::cipher::KeyInit>::new(&[1u8; 16].into());
        cmac::Mac::update(&mut mac, &second[..19]);
        cmac::Mac::finalize(mac).into_bytes()
    };
    second[19..].copy_from_slice(&mic[..4]);
    assert!(matches!(
        restarted.handle(&heard(&second), later(), now()),
        Outcome::Joined { .. }
    ));
    let records = restarted.all_records();
    let mut restarted = NetworkServer::new(settings(), vec![otaa(), abp()], &records);
    assert_eq!(
        restarted.handle(&heard(&second), later() + later_step(), now()),
        Outcome::Refused(Refusal::DevNonceReused(0x102e))
    );
    // The first join's DevNonce too.
    assert_eq!(
        restarted.handle(&heard(&JOIN_REQUEST), later(), now()),
        Outcome::Refused(Refusal::DevNonceReused(0x102d))
    );
}

/// [`JOIN_REQUEST`] with another DevNonce and its MIC computed again with the AppKey.
fn join_request_with_nonce(nonce: u16) -> [u8; 23] {
    let mut request = JOIN_REQUEST;
    request[17..19].copy_from_slice(&nonce.to_le_bytes());
    let mic = {
        let mut mac = <cmac::Cmac<aes::Aes128> as aes::cipher::KeyInit>::new(&[1u8; 16].into());
        cmac::Mac::update(&mut mac, &request[..19]);
        cmac::Mac::finalize(mac).into_bytes()
    };
    request[19..].copy_from_slice(&mic[..4]);
    request
}

#[test]
fn a_1_0_4_device_joins_only_with_a_dev_nonce_above_its_last_across_a_restart() {
    let device = ServedDevice {
        version: LorawanVersion::V1_0_4,
        ..otaa()
    };
    let mut server = NetworkServer::new(settings(), vec![device.clone()], &[]);
    let mut at = Instant::now();
    let mut join = |server: &mut NetworkServer, nonce: u16| {
        at += later_step();
        server.handle(&heard(&join_request_with_nonce(nonce)), at, now())
    };
    assert!(matches!(join(&mut server, 5), Outcome::Joined { .. }));
    // Unused but lower: a 1.0.3 device could send it, a 1.0.4 device never does.
    assert_eq!(
        join(&mut server, 4),
        Outcome::Refused(Refusal::DevNonceReused(4))
    );
    assert!(matches!(join(&mut server, 6), Outcome::Joined { .. }));
    let records = server.all_records();
    assert_eq!(records[0].dev_nonces, vec![6], "one number stored");
    let mut restarted = NetworkServer::new(settings(), vec![device], &records);
    for old in [0, 5, 6] {
        assert_eq!(
            join(&mut restarted, old),
            Outcome::Refused(Refusal::DevNonceReused(old))
        );
    }
    assert!(matches!(join(&mut restarted, 7), Outcome::Joined { .. }));
    // The same requests from a 1.0.3 device: an unused lower DevNonce joins.
    let mut random = NetworkServer::new(settings(), vec![otaa()], &records);
    assert!(matches!(join(&mut random, 2), Outcome::Joined { .. }));
}

fn uplink_with_fctrl(dev_addr: u32, fcnt: u32, fctrl: u8, fopts: &[u8]) -> Vec<u8> {
    let mut creator = DataPayloadCreator::new();
    creator
        .set_confirmed(false)
        .set_uplink(true)
        .set_dev_addr(&dev_addr.to_le_bytes())
        .set_fctrl(&FCtrl::new(fctrl, true))
        .set_fcnt(fcnt)
        .set_f_port(10);
    let commands: Vec<lorawan::maccommands::UplinkMacCommand> =
        parse_uplink_mac_commands(fopts).collect();
    let commands: Vec<&dyn SerializableMacCommand> = commands
        .iter()
        .map(|c| c as &dyn SerializableMacCommand)
        .collect();
    creator
        .build(
            &[1],
            &commands,
            &NewSKey::from([2; 16]),
            &AppSKey::from([1; 16]),
        )
        .unwrap()
        .to_vec()
}

/// An uplink heard at SF10 on 868.1 MHz (EU868 DR2) with `snr`.
fn heard_at(phy: &[u8], spreading_factor: u8, frequency: u32, snr: f32) -> Heard {
    Heard {
        phy: phy.to_vec(),
        best: RxMeta {
            spreading_factor,
            frequency,
            snr,
            ..meta(0xaa)
        },
        gateways: vec![0xaa],
    }
}

/// The FOpts of a data downlink (clear text in LoRaWAN 1.0).
fn fopts_of(downlink: &Downlink) -> Vec<u8> {
    let Ok(PhyPayload::Data(DataPayload::Encrypted(frame))) = parse(downlink.phy.clone()) else {
        panic!("not a data downlink");
    };
    frame.fhdr().data().to_vec()
}

fn data(outcome: Outcome) -> Box<Accepted> {
    match outcome {
        Outcome::Data(accepted) => accepted,
        other => panic!("not accepted: {other:?}"),
    }
}

const ADR_BIT: u8 = 0x80;

#[test]
fn adr_asks_a_device_with_margin_for_dr5_and_less_power_once_its_history_is_full() {
    let device = ServedDevice { adr: true, ..abp() };
    let mut server = NetworkServer::new(settings(), vec![device], &[]);
    for fcnt in 1..20 {
        let phy = uplink_with_fctrl(0x0102_0304, fcnt, ADR_BIT, &[]);
        let accepted =
            data(server.handle(&heard_at(&phy, 10, 868_100_000, 7.0), Instant::now(), now()));
        assert_eq!(
            accepted.downlink, None,
            "uplink {fcnt}: history not full yet"
        );
    }
    let phy = uplink_with_fctrl(0x0102_0304, 20, ADR_BIT, &[]);
    let accepted =
        data(server.handle(&heard_at(&phy, 10, 868_100_000, 7.0), Instant::now(), now()));
    assert!(accepted.adr.requested);
    let downlink = accepted
        .downlink
        .clone()
        .expect("a downlink with the LinkADRReq");
    // SF10 at 7 dB: 7 + 15 - 10 = 12 dB, four steps: DR5, TXPower 1. CID 03, DataRate_TXPower 0x51,
    // ChMask 0x00FF (channels 0-2 and the CFList's), Redundancy: ChMaskCntl 0, NbTrans 1.
    assert_eq!(fopts_of(&downlink), [0x03, 0x51, 0xFF, 0x00, 0x01]);
    // An empty unconfirmed downlink: no FPort, no ACK.
    let Ok(PhyPayload::Data(DataPayload::Encrypted(frame))) = parse(downlink.phy.clone()) else {
        panic!("not a data downlink");
    };
    assert_eq!(frame.f_port(), None);
    assert!(!frame.is_confirmed());
    // Unanswered for a few uplinks: not asked again at once.
    let phy = uplink_with_fctrl(0x0102_0304, 21, ADR_BIT, &[]);
    let accepted =
        data(server.handle(&heard_at(&phy, 10, 868_100_000, 7.0), Instant::now(), now()));
    assert_eq!(accepted.downlink, None);
    // Accepted (LinkADRAns with its three ACK bits): counted, and at DR5 with 4 dB (4 + 7.5 - 10 = 1.5
    // dB, no step) no request follows.
    let phy = uplink_with_fctrl(0x0102_0304, 22, ADR_BIT, &[0x03, 0x07]);
    let accepted = data(server.handle(&heard_at(&phy, 7, 868_100_000, 4.0), Instant::now(), now()));
    assert!(accepted.adr.accepted && !accepted.adr.requested);
    for fcnt in 23..60 {
        let phy = uplink_with_fctrl(0x0102_0304, fcnt, ADR_BIT, &[]);
        let accepted =
            data(server.handle(&heard_at(&phy, 7, 868_100_000, 4.0), Instant::now(), now()));
        assert_eq!(accepted.downlink, None, "uplink {fcnt}");
    }
}

#[test]
fn adr_rides_with_an_ack_and_a_refusal_is_counted() {
    let device = ServedDevice { adr: true, ..abp() };
    let mut server = NetworkServer::new(settings(), vec![device], &[]);
    for fcnt in 1..20 {
        let phy = uplink_with_fctrl(0x0102_0304, fcnt, ADR_BIT, &[]);
        data(server.handle(
            &heard_at(&phy, 12, 868_100_000, 10.0),
            Instant::now(),
            now(),
        ));
    }
    // The 20th is confirmed with a LinkCheckReq: ACK, LinkCheckAns and LinkADRReq in one frame.
    let phy = uplink(0x0102_0304, 20, true, &[0x02], &[1]);
    let accepted = data(server.handle(
        &heard_at(&phy, 12, 868_100_000, 10.0),
        Instant::now(),
        now(),
    ));
    let downlink = accepted.downlink.clone().expect("the ACK");
    let fopts = fopts_of(&downlink);
    assert_eq!(fopts[0], 0x02, "{fopts:02x?}");
    assert_eq!(&fopts[3..], [0x03, 0x51, 0xFF, 0x00, 0x01], "{fopts:02x?}");
    let Ok(PhyPayload::Data(DataPayload::Encrypted(frame))) = parse(downlink.phy) else {
        panic!("not a data downlink");
    };
    assert!(frame.fhdr().fctrl().ack());
    // Refused (data rate not acknowledged): counted, not asked the same again for a while.
    let phy = uplink_with_fctrl(0x0102_0304, 21, ADR_BIT, &[0x03, 0x05]);
    let accepted = data(server.handle(
        &heard_at(&phy, 12, 868_100_000, 10.0),
        Instant::now(),
        now(),
    ));
    assert!(accepted.adr.refused && !accepted.adr.requested);
    for fcnt in 22..40 {
        let phy = uplink_with_fctrl(0x0102_0304, fcnt, ADR_BIT, &[]);
        let accepted = data(server.handle(
            &heard_at(&phy, 12, 868_100_000, 10.0),
            Instant::now(),
            now(),
        ));
        assert!(!accepted.adr.requested, "uplink {fcnt}");
    }
}

#[test]
fn adr_in_us915_keeps_the_device_on_its_sub_band() {
    let us = ServerSettings {
        region: Region::Us915.params(),
        rx2_frequency: 923_300_000,
        rx2_data_rate: 8,
        ..settings()
    };
    let device = ServedDevice { adr: true, ..abp() };
    let mut server = NetworkServer::new(us, vec![device], &[]);
    let mut last = None;
    for fcnt in 1..=20 {
        let phy = uplink_with_fctrl(0x0102_0304, fcnt, ADR_BIT, &[]);
        // Channel 9 (904.1 MHz), DR0 (SF10) at 10 dB: 15 dB, five steps: DR3 and TXPower 2.
        last = Some(data(server.handle(
            &heard_at(&phy, 10, 904_100_000, 10.0),
            Instant::now(),
            now(),
        )));
    }
    let downlink = last.and_then(|a| a.downlink).expect("a LinkADRReq");
    // Two blocks: 500 kHz channel 65 with the 125 kHz channels off (ChMaskCntl 7), then channels 8-15.
    assert_eq!(
        fopts_of(&downlink),
        [0x03, 0x32, 0x02, 0x00, 0x71, 0x03, 0x32, 0x00, 0xFF, 0x01]
    );
}

#[test]
fn without_adr_configured_no_request_and_adr_ack_req_gets_an_empty_downlink() {
    let mut server = NetworkServer::new(settings(), vec![abp()], &[]);
    for fcnt in 1..=40 {
        let phy = uplink_with_fctrl(0x0102_0304, fcnt, ADR_BIT, &[]);
        let accepted = data(server.handle(
            &heard_at(&phy, 12, 868_100_000, 10.0),
            Instant::now(),
            now(),
        ));
        assert_eq!(accepted.downlink, None, "uplink {fcnt}");
    }
    // ADRACKReq (FCtrl 0x40): a downlink, with nothing in it, so the device keeps its data rate.
    let phy = uplink_with_fctrl(0x0102_0304, 41, ADR_BIT | 0x40, &[]);
    let accepted = data(server.handle(
        &heard_at(&phy, 12, 868_100_000, 10.0),
        Instant::now(),
        now(),
    ));
    let downlink = accepted.downlink.expect("an answer to ADRACKReq");
    assert!(fopts_of(&downlink).is_empty());
}
