//! The gateway's side of the Semtech UDP packet forwarder protocol v2, as a pure codec: what the
//! built-in single-channel forwarder (`forwarder.rs`) and the simulated one (`simulated_forwarder.rs`)
//! send (PUSH_DATA with one `rxpk` or a `stat`,
//! PULL_DATA, TX_ACK with its error) and parses (PUSH_ACK, PULL_ACK, PULL_RESP with its `txpk`). The
//! network server's side is `semtech.rs`, whose constants it shares. A bad datagram is an error to
//! count, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::Engine;
use serde::Deserialize;

use super::semtech::{parse_datr, SemtechError};
use super::semtech::{
    MAX_PHY_LEN, PULL_ACK, PULL_DATA, PULL_RESP, PUSH_ACK, PUSH_DATA, TX_ACK, VERSION,
};

/// One packet the radio heard, as an `rxpk` entry says it.
#[derive(Debug, Clone, PartialEq)]
pub struct HeardPacket<'a> {
    /// The gateway's microsecond counter at the end of the packet (RxDone).
    pub tmst: u32,
    /// Hz.
    pub frequency_hz: u32,
    pub spreading_factor: u8,
    pub bandwidth_khz: u16,
    /// 5..=8 for 4/5..4/8.
    pub coding_rate: u8,
    pub rssi_dbm: f32,
    pub snr_db: f32,
    pub phy: &'a [u8],
}

/// Where a gateway on this host sends to reach a server bound on `bound`: that address, or the loopback
/// of its family when the server listens on every interface.
pub fn destination(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// The header every datagram from a gateway to its server starts with: version, token, identifier,
/// gateway EUI.
fn header(token: u16, identifier: u8, gateway: u64) -> Vec<u8> {
    let t = token.to_be_bytes();
    let mut datagram = vec![VERSION, t[0], t[1], identifier];
    datagram.extend_from_slice(&gateway.to_be_bytes());
    datagram
}

/// PUSH_DATA carrying one received packet (`stat` 1: CRC good, the only packets a radio source hands on).
pub fn push_rxpk(token: u16, gateway: u64, packet: &HeardPacket<'_>) -> Vec<u8> {
    let rxpk = serde_json::json!({
        "tmst": packet.tmst,
        "chan": 0,
        "rfch": 0,
        "freq": f64::from(packet.frequency_hz) / 1_000_000.0,
        "stat": 1,
        "modu": "LORA",
        "datr": format!("SF{}BW{}", packet.spreading_factor, packet.bandwidth_khz),
        "codr": format!("4/{}", packet.coding_rate),
        "rssi": packet.rssi_dbm.round() as i32,
        "lsnr": (f64::from(packet.snr_db) * 10.0).round() / 10.0,
        "size": packet.phy.len(),
        "data": base64::engine::general_purpose::STANDARD.encode(packet.phy),
    });
    let mut datagram = header(token, PUSH_DATA, gateway);
    datagram.extend_from_slice(serde_json::json!({ "rxpk": [rxpk] }).to_string().as_bytes());
    datagram
}

/// The counts a `stat` object reports.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GatewayStat {
    /// Packets received (`rxnb`), with a good CRC (`rxok`), forwarded (`rxfw`).
    pub received: u32,
    pub received_ok: u32,
    pub forwarded: u32,
    /// Percentage of PUSH_DATA acknowledged (`ackr`).
    pub acknowledged_percent: f32,
    /// Downlinks received from the server (`dwnb`) and transmitted (`txnb`).
    pub downlinks: u32,
    pub transmitted: u32,
}

/// PUSH_DATA carrying a `stat` object; `time` as the forwarder writes it (`2026-12-06 22:18:30 GMT`).
pub fn push_stat(token: u16, gateway: u64, time: &str, stat: &GatewayStat) -> Vec<u8> {
    let body = serde_json::json!({ "stat": {
        "time": time,
        "rxnb": stat.received,
        "rxok": stat.received_ok,
        "rxfw": stat.forwarded,
        "ackr": stat.acknowledged_percent,
        "dwnb": stat.downlinks,
        "txnb": stat.transmitted,
    }});
    let mut datagram = header(token, PUSH_DATA, gateway);
    datagram.extend_from_slice(body.to_string().as_bytes());
    datagram
}

/// PULL_DATA: the keepalive that also opens the server's downlink path to the gateway.
pub fn pull_data(token: u16, gateway: u64) -> Vec<u8> {
    header(token, PULL_DATA, gateway)
}

/// Why a downlink was not (or will not be) transmitted, as TX_ACK names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxRefusal {
    /// Its `tmst` has passed, or comes too soon to reach the radio in time.
    TooLate,
    /// Its `tmst` is further ahead than the forwarder schedules.
    TooEarly,
    /// It overlaps a downlink already scheduled, or the schedule is full.
    CollisionPacket,
    /// Its frequency or data rate is not the radio's one channel.
    TxFreq,
}

impl TxRefusal {
    /// The name in TX_ACK's `error`.
    pub fn name(self) -> &'static str {
        match self {
            TxRefusal::TooLate => "TOO_LATE",
            TxRefusal::TooEarly => "TOO_EARLY",
            TxRefusal::CollisionPacket => "COLLISION_PACKET",
            TxRefusal::TxFreq => "TX_FREQ",
        }
    }
}

/// TX_ACK for the PULL_RESP of `token`: `NONE` (accepted) or the refusal.
pub fn tx_ack(token: u16, gateway: u64, refusal: Option<TxRefusal>) -> Vec<u8> {
    let error = refusal.map_or("NONE", TxRefusal::name);
    let mut datagram = header(token, TX_ACK, gateway);
    datagram.extend_from_slice(
        serde_json::json!({ "txpk_ack": { "error": error } })
            .to_string()
            .as_bytes(),
    );
    datagram
}

/// A downlink as a PULL_RESP asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct DownlinkRequest {
    /// Send at once, whatever `tmst` says.
    pub immediate: bool,
    /// The gateway's counter at which to start transmitting.
    pub tmst: u32,
    /// Hz.
    pub frequency_hz: u32,
    pub spreading_factor: u8,
    pub bandwidth_khz: u16,
    /// dBm.
    pub power_dbm: Option<u8>,
    /// Inverted IQ (every LoRaWAN downlink).
    pub inverted_iq: bool,
    pub phy: Vec<u8>,
}

/// A datagram from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum FromServer {
    PushAck { token: u16 },
    PullAck { token: u16 },
    PullResp { token: u16, txpk: DownlinkRequest },
}

#[derive(Deserialize)]
struct PullRespBody {
    txpk: TxpkBody,
}

#[derive(Deserialize)]
struct TxpkBody {
    #[serde(default)]
    imme: bool,
    #[serde(default)]
    tmst: Option<u32>,
    freq: f64,
    #[serde(default)]
    powe: Option<u8>,
    modu: String,
    datr: String,
    #[serde(default)]
    ipol: bool,
    size: usize,
    data: String,
}

/// Parses one datagram from the server.
pub fn parse(datagram: &[u8]) -> Result<FromServer, SemtechError> {
    if datagram.len() < 4 {
        return Err(SemtechError::TooShort(datagram.len()));
    }
    if datagram[0] != VERSION {
        return Err(SemtechError::Version(datagram[0]));
    }
    let token = u16::from_be_bytes([datagram[1], datagram[2]]);
    match datagram[3] {
        PUSH_ACK => Ok(FromServer::PushAck { token }),
        PULL_ACK => Ok(FromServer::PullAck { token }),
        PULL_RESP => {
            let json = |e: String| SemtechError::Json(e);
            let body: PullRespBody =
                serde_json::from_slice(&datagram[4..]).map_err(|e| json(e.to_string()))?;
            let txpk = body.txpk;
            if txpk.modu != "LORA" {
                return Err(json(format!("modulation {:?}, not LORA", txpk.modu)));
            }
            let (spreading_factor, bandwidth_khz) =
                parse_datr(&txpk.datr).ok_or_else(|| json(format!("data rate {:?}", txpk.datr)))?;
            if txpk.data.len() > 4 * MAX_PHY_LEN.div_ceil(3) {
                return Err(json(format!("data of {} characters", txpk.data.len())));
            }
            let phy = base64::engine::general_purpose::STANDARD
                .decode(txpk.data.as_bytes())
                .map_err(|e| json(format!("data: {e}")))?;
            if phy.is_empty() || phy.len() != txpk.size {
                return Err(json(format!(
                    "size {} for {} bytes of data",
                    txpk.size,
                    phy.len()
                )));
            }
            if !(txpk.freq.is_finite() && txpk.freq > 0.0 && txpk.freq < 10_000.0) {
                return Err(json(format!("frequency {} MHz", txpk.freq)));
            }
            if !txpk.imme && txpk.tmst.is_none() {
                return Err(json("neither imme nor tmst".to_string()));
            }
            Ok(FromServer::PullResp {
                token,
                txpk: DownlinkRequest {
                    immediate: txpk.imme,
                    tmst: txpk.tmst.unwrap_or(0),
                    frequency_hz: (txpk.freq * 1_000_000.0).round() as u32,
                    spreading_factor,
                    bandwidth_khz,
                    power_dbm: txpk.powe,
                    inverted_iq: txpk.ipol,
                    phy,
                },
            })
        }
        other => Err(SemtechError::Identifier(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::region::DataRate;
    use crate::lorawan::semtech::{self, FromGateway, Txpk};

    const GATEWAY: u64 = 0x5347_0000_0000_0001;

    #[test]
    fn a_server_bound_on_every_interface_is_reached_on_the_loopback() {
        let any: SocketAddr = "0.0.0.0:1700".parse().unwrap();
        assert_eq!(destination(any), "127.0.0.1:1700".parse().unwrap());
        let any6: SocketAddr = "[::]:1700".parse().unwrap();
        assert_eq!(destination(any6), "[::1]:1700".parse().unwrap());
        let own: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(destination(own), own);
    }

    #[test]
    fn what_the_forwarder_sends_is_what_the_server_parses() {
        let phy = [0x40, 0xda, 0x1b, 0x01, 0x26, 0x00, 0x01, 0x00, 0x02];
        let packet = HeardPacket {
            tmst: 4_000_000_123,
            frequency_hz: 868_100_000,
            spreading_factor: 7,
            bandwidth_khz: 125,
            coding_rate: 5,
            rssi_dbm: -71.4,
            snr_db: 9.25,
            phy: &phy,
        };
        match semtech::parse(&push_rxpk(7, GATEWAY, &packet)) {
            Ok(FromGateway::PushData {
                token,
                gateway,
                rxpk,
                skipped,
                ..
            }) => {
                assert_eq!((token, gateway, skipped), (7, GATEWAY, 0));
                let (bytes, meta) = &rxpk[0];
                assert_eq!(bytes, &phy);
                assert_eq!(meta.tmst, 4_000_000_123);
                assert_eq!(meta.frequency, 868_100_000);
                assert_eq!((meta.spreading_factor, meta.bandwidth_khz), (7, 125));
                assert_eq!(meta.rssi, -71.0);
                assert!((meta.snr - 9.3).abs() < 1e-4, "{}", meta.snr);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            semtech::parse(&pull_data(8, GATEWAY)),
            Ok(FromGateway::PullData {
                token: 8,
                gateway: GATEWAY
            })
        );
        for (refusal, error) in [
            (None, None),
            (Some(TxRefusal::TooLate), Some("TOO_LATE".to_string())),
            (Some(TxRefusal::TxFreq), Some("TX_FREQ".to_string())),
        ] {
            assert_eq!(
                semtech::parse(&tx_ack(9, GATEWAY, refusal)),
                Ok(FromGateway::TxAck {
                    token: 9,
                    gateway: GATEWAY,
                    error
                })
            );
        }
        let stat = push_stat(
            10,
            GATEWAY,
            "2026-12-06 22:18:30 GMT",
            &GatewayStat::default(),
        );
        assert!(matches!(
            semtech::parse(&stat),
            Ok(FromGateway::PushData { stat: Some(_), .. })
        ));
    }

    #[test]
    fn the_servers_pull_resp_is_a_downlink_request() {
        let phy = [0x20, 1, 2, 3, 4, 5];
        let txpk = Txpk::lorawan(
            &phy,
            5_000_000,
            868_100_000,
            DataRate {
                spreading_factor: 7,
                bandwidth_khz: 125,
            },
            14,
        );
        match parse(&semtech::pull_resp(3, &txpk)) {
            Ok(FromServer::PullResp { token, txpk }) => {
                assert_eq!(token, 3);
                assert_eq!(
                    txpk,
                    DownlinkRequest {
                        immediate: false,
                        tmst: 5_000_000,
                        frequency_hz: 868_100_000,
                        spreading_factor: 7,
                        bandwidth_khz: 125,
                        power_dbm: Some(14),
                        inverted_iq: true,
                        phy: phy.to_vec(),
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&semtech::push_ack(4)),
            Ok(FromServer::PushAck { token: 4 })
        );
        assert_eq!(
            parse(&semtech::pull_ack(5)),
            Ok(FromServer::PullAck { token: 5 })
        );
    }

    #[test]
    fn malformed_server_datagrams_are_errors_not_panics() {
        for bad in [
            &b""[..],
            &[2, 0][..],
            &[1, 0, 0, 1][..],
            &[2, 0, 0, 9][..],
            &[2, 0, 0, 3][..],
            b"\x02\x00\x00\x03{\"txpk\":{\"freq\":868.1,\"modu\":\"FSK\",\"datr\":\"SF7BW125\",\"size\":1,\"data\":\"AA==\",\"imme\":true}}",
            b"\x02\x00\x00\x03{\"txpk\":{\"freq\":868.1,\"modu\":\"LORA\",\"datr\":\"SF7BW125\",\"size\":2,\"data\":\"AA==\",\"imme\":true}}",
            b"\x02\x00\x00\x03{\"txpk\":{\"freq\":868.1,\"modu\":\"LORA\",\"datr\":\"SF7BW125\",\"size\":1,\"data\":\"AA==\"}}",
            b"\x02\x00\x00\x03{\"txpk\":{\"freq\":-1,\"modu\":\"LORA\",\"datr\":\"SF7BW125\",\"size\":1,\"data\":\"AA==\",\"imme\":true}}",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
