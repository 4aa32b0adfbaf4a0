//! The Semtech UDP packet forwarder protocol, version 2 (Lora-net/packet_forwarder PROTOCOL.TXT), as a
//! pure codec: datagrams from a gateway (PUSH_DATA, PULL_DATA, TX_ACK) parsed, datagrams to it (PUSH_ACK,
//! PULL_ACK, PULL_RESP) built. Every length, count and field is checked; a bad datagram is an error to
//! count, never a panic.
//!
//! ```text
//! PUSH_DATA  0x02 | token(2) | 0x00 | gateway EUI(8) | JSON {"rxpk":[...], "stat":{...}}
//! PUSH_ACK   0x02 | token(2) | 0x01
//! PULL_DATA  0x02 | token(2) | 0x02 | gateway EUI(8)
//! PULL_RESP  0x02 | token(2) | 0x03 | JSON {"txpk":{...}}
//! PULL_ACK   0x02 | token(2) | 0x04
//! TX_ACK     0x02 | token(2) | 0x05 | gateway EUI(8) | [JSON {"txpk_ack":{"error":"NONE"|...}}]
//! ```

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::region::DataRate;
use super::RxMeta;

/// The protocol version spoken.
pub const VERSION: u8 = 2;
/// The most `rxpk` entries one PUSH_DATA may carry (a concentrator has 8 + 2 demodulators; a gateway
/// buffering during a backhaul outage sends more, in several datagrams).
pub const MAX_RXPK: usize = 64;
/// The largest LoRa PHYPayload.
pub const MAX_PHY_LEN: usize = 255;

pub(crate) const PUSH_DATA: u8 = 0x00;
pub(crate) const PUSH_ACK: u8 = 0x01;
pub(crate) const PULL_DATA: u8 = 0x02;
pub(crate) const PULL_RESP: u8 = 0x03;
pub(crate) const PULL_ACK: u8 = 0x04;
pub(crate) const TX_ACK: u8 = 0x05;

/// A datagram from a gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum FromGateway {
    PushData {
        token: u16,
        gateway: u64,
        /// The packets received with a good CRC (others are counted in `bad_crc`).
        rxpk: Vec<(Vec<u8>, RxMeta)>,
        /// Packets with a bad or missing CRC, or not LoRa, or with an unreadable entry.
        skipped: usize,
        /// The gateway's `stat` object, as sent.
        stat: Option<serde_json::Value>,
    },
    PullData {
        token: u16,
        gateway: u64,
    },
    TxAck {
        token: u16,
        gateway: u64,
        /// `None` or `Some("NONE")`: sent; otherwise the forwarder's error (TOO_LATE, TOO_EARLY,
        /// COLLISION_PACKET, COLLISION_BEACON, TX_FREQ, TX_POWER, GPS_UNLOCKED).
        error: Option<String>,
    },
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SemtechError {
    #[error("datagram of {0} bytes is too short")]
    TooShort(usize),
    #[error("protocol version {0}, not 2")]
    Version(u8),
    #[error("identifier 0x{0:02x} is not one a gateway sends")]
    Identifier(u8),
    #[error("JSON: {0}")]
    Json(String),
    #[error("{0} rxpk entries, more than {MAX_RXPK}")]
    TooManyPackets(usize),
}

#[derive(Deserialize)]
struct PushBody {
    #[serde(default)]
    rxpk: Vec<serde_json::Value>,
    stat: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Rxpk {
    tmst: u32,
    /// MHz.
    freq: f64,
    stat: i8,
    modu: String,
    datr: serde_json::Value,
    rssi: f32,
    #[serde(default)]
    lsnr: f32,
    size: usize,
    data: String,
}

#[derive(Deserialize)]
struct TxAckBody {
    txpk_ack: Option<TxAckInner>,
}

#[derive(Deserialize)]
struct TxAckInner {
    error: Option<String>,
}

/// Parses one datagram from a gateway.
pub fn parse(datagram: &[u8]) -> Result<FromGateway, SemtechError> {
    if datagram.len() < 4 {
        return Err(SemtechError::TooShort(datagram.len()));
    }
    if datagram[0] != VERSION {
        return Err(SemtechError::Version(datagram[0]));
    }
    let token = u16::from_be_bytes([datagram[1], datagram[2]]);
    let identifier = datagram[3];
    if !matches!(identifier, PUSH_DATA | PULL_DATA | TX_ACK) {
        return Err(SemtechError::Identifier(identifier));
    }
    if datagram.len() < 12 {
        return Err(SemtechError::TooShort(datagram.len()));
    }
    let mut eui = [0u8; 8];
    eui.copy_from_slice(&datagram[4..12]);
    let gateway = u64::from_be_bytes(eui);
    let body = &datagram[12..];
    match identifier {
        PUSH_DATA => {
            let push: PushBody =
                serde_json::from_slice(body).map_err(|e| SemtechError::Json(e.to_string()))?;
            if push.rxpk.len() > MAX_RXPK {
                return Err(SemtechError::TooManyPackets(push.rxpk.len()));
            }
            let mut rxpk = Vec::with_capacity(push.rxpk.len());
            let mut skipped = 0;
            for entry in push.rxpk {
                match received_packet(entry, gateway) {
                    Some(packet) => rxpk.push(packet),
                    None => skipped += 1,
                }
            }
            Ok(FromGateway::PushData {
                token,
                gateway,
                rxpk,
                skipped,
                stat: push.stat,
            })
        }
        PULL_DATA => Ok(FromGateway::PullData { token, gateway }),
        _ => {
            let error = if body.is_empty() {
                None
            } else {
                let ack: TxAckBody =
                    serde_json::from_slice(body).map_err(|e| SemtechError::Json(e.to_string()))?;
                ack.txpk_ack.and_then(|inner| inner.error)
            };
            Ok(FromGateway::TxAck {
                token,
                gateway,
                error: error.filter(|e| e != "NONE"),
            })
        }
    }
}

/// One `rxpk` entry as a PHYPayload and its reception, if it is a LoRa packet with a good CRC whose
/// fields all read.
fn received_packet(entry: serde_json::Value, gateway: u64) -> Option<(Vec<u8>, RxMeta)> {
    let rxpk: Rxpk = serde_json::from_value(entry).ok()?;
    if rxpk.stat != 1 || rxpk.modu != "LORA" || rxpk.size > MAX_PHY_LEN {
        return None;
    }
    let (spreading_factor, bandwidth_khz) = parse_datr(rxpk.datr.as_str()?)?;
    if rxpk.data.len() > 4 * MAX_PHY_LEN.div_ceil(3) {
        return None;
    }
    let phy = base64::engine::general_purpose::STANDARD
        .decode(rxpk.data.as_bytes())
        .ok()?;
    if phy.len() != rxpk.size || !(rxpk.freq.is_finite() && rxpk.freq > 0.0 && rxpk.freq < 10_000.0)
    {
        return None;
    }
    let meta = RxMeta {
        gateway,
        tmst: rxpk.tmst,
        frequency: (rxpk.freq * 1_000_000.0).round() as u32,
        spreading_factor,
        bandwidth_khz,
        rssi: rxpk.rssi,
        snr: rxpk.lsnr,
    };
    Some((phy, meta))
}

/// `SF7BW125` -> (7, 125).
pub fn parse_datr(datr: &str) -> Option<(u8, u16)> {
    let rest = datr.strip_prefix("SF")?;
    let (sf, bw) = rest.split_once("BW")?;
    let sf: u8 = sf.parse().ok()?;
    let bw: u16 = bw.parse().ok()?;
    (5..=12).contains(&sf).then_some((sf, bw))
}

/// PUSH_ACK for `token`.
pub fn push_ack(token: u16) -> [u8; 4] {
    let t = token.to_be_bytes();
    [VERSION, t[0], t[1], PUSH_ACK]
}

/// PULL_ACK for `token`.
pub fn pull_ack(token: u16) -> [u8; 4] {
    let t = token.to_be_bytes();
    [VERSION, t[0], t[1], PULL_ACK]
}

/// A downlink to transmit at the concentrator's counter `tmst`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Txpk {
    pub imme: bool,
    pub tmst: u32,
    /// MHz.
    pub freq: f64,
    pub rfch: u8,
    /// dBm.
    pub powe: u8,
    pub modu: &'static str,
    pub datr: String,
    pub codr: &'static str,
    /// Inverted polarity: every LoRaWAN downlink.
    pub ipol: bool,
    pub size: usize,
    pub data: String,
}

impl Txpk {
    /// A LoRaWAN downlink: `phy` at `tmst` on `frequency` Hz with `data_rate`, 4/5, inverted IQ.
    pub fn lorawan(
        phy: &[u8],
        tmst: u32,
        frequency: u32,
        data_rate: DataRate,
        power_dbm: u8,
    ) -> Txpk {
        Txpk {
            imme: false,
            tmst,
            freq: f64::from(frequency) / 1_000_000.0,
            rfch: 0,
            powe: power_dbm,
            modu: "LORA",
            datr: data_rate.datr(),
            codr: "4/5",
            ipol: true,
            size: phy.len(),
            data: base64::engine::general_purpose::STANDARD.encode(phy),
        }
    }
}

/// PULL_RESP carrying `txpk` (its token is ours; the gateway's TX_ACK repeats it).
pub fn pull_resp(token: u16, txpk: &Txpk) -> Vec<u8> {
    let t = token.to_be_bytes();
    let mut datagram = vec![VERSION, t[0], t[1], PULL_RESP];
    let body = serde_json::json!({ "txpk": txpk });
    datagram.extend_from_slice(body.to_string().as_bytes());
    datagram
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(body: &str) -> Vec<u8> {
        let mut datagram = vec![
            2, 0x12, 0x34, 0x00, 0xb8, 0x27, 0xeb, 0xff, 0xfe, 0x6f, 0x4e, 0x3c,
        ];
        datagram.extend_from_slice(body.as_bytes());
        datagram
    }

    #[test]
    fn push_data_gives_good_crc_lora_packets_with_their_reception() {
        let datagram = push(
            r#"{"rxpk":[{"tmst":3512348611,"chan":2,"rfch":0,"freq":868.5,"stat":1,"modu":"LORA","datr":"SF7BW125","codr":"4/5","rssi":-35,"lsnr":5.1,"size":3,"data":"AQID"},
                        {"tmst":1,"freq":868.1,"stat":-1,"modu":"LORA","datr":"SF7BW125","rssi":-35,"lsnr":5,"size":3,"data":"AQID"}],
               "stat":{"time":"2014-01-12 08:59:28 GMT","rxnb":2,"rxok":1}}"#,
        );
        let parsed = parse(&datagram).unwrap();
        let FromGateway::PushData {
            token,
            gateway,
            rxpk,
            skipped,
            stat,
        } = parsed
        else {
            panic!("not a PUSH_DATA: {parsed:?}");
        };
        assert_eq!(token, 0x1234);
        assert_eq!(gateway, 0xb827_ebff_fe6f_4e3c);
        assert_eq!(skipped, 1);
        assert_eq!(rxpk.len(), 1);
        assert_eq!(rxpk[0].0, vec![1, 2, 3]);
        assert_eq!(rxpk[0].1.frequency, 868_500_000);
        assert_eq!(rxpk[0].1.tmst, 3_512_348_611);
        assert_eq!(
            (rxpk[0].1.spreading_factor, rxpk[0].1.bandwidth_khz),
            (7, 125)
        );
        assert_eq!(stat.unwrap()["rxok"], 1);
        assert_eq!(push_ack(0x1234), [2, 0x12, 0x34, 1]);
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        assert_eq!(parse(&[2, 0, 0]), Err(SemtechError::TooShort(3)));
        assert_eq!(parse(&[1, 0, 0, 0]), Err(SemtechError::Version(1)));
        assert_eq!(parse(&[2, 0, 0, 9]), Err(SemtechError::Identifier(9)));
        assert_eq!(parse(&[2, 0, 0, 0, 1]), Err(SemtechError::TooShort(5)));
        assert!(matches!(
            parse(&push("{not json")),
            Err(SemtechError::Json(_))
        ));
        // Entries that do not read are skipped and counted, not fatal: bad base64, size mismatch, FSK.
        let odd = push(
            r#"{"rxpk":[{"tmst":1,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","rssi":-1,"size":3,"data":"!!!"},
                        {"tmst":1,"freq":868.1,"stat":1,"modu":"LORA","datr":"SF7BW125","rssi":-1,"size":9,"data":"AQID"},
                        {"tmst":1,"freq":868.1,"stat":1,"modu":"FSK","datr":50000,"rssi":-1,"size":3,"data":"AQID"},
                        "text"]}"#,
        );
        match parse(&odd).unwrap() {
            FromGateway::PushData { rxpk, skipped, .. } => {
                assert!(rxpk.is_empty());
                assert_eq!(skipped, 4);
            }
            other => panic!("{other:?}"),
        }
        let many = format!(r#"{{"rxpk":[{}]}}"#, vec!["{}"; MAX_RXPK + 1].join(","));
        assert_eq!(
            parse(&push(&many)),
            Err(SemtechError::TooManyPackets(MAX_RXPK + 1))
        );
    }

    #[test]
    fn pull_data_and_tx_ack_with_its_errors() {
        let mut pull = vec![2, 0xab, 0xcd, 0x02];
        pull.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(
            parse(&pull),
            Ok(FromGateway::PullData {
                token: 0xabcd,
                gateway: 1
            })
        );
        assert_eq!(pull_ack(0xabcd), [2, 0xab, 0xcd, 4]);
        let mut ack = vec![2, 0, 7, 0x05];
        ack.extend_from_slice(&1u64.to_be_bytes());
        let mut late = ack.clone();
        late.extend_from_slice(br#"{"txpk_ack":{"error":"TOO_LATE"}}"#);
        assert_eq!(
            parse(&late),
            Ok(FromGateway::TxAck {
                token: 7,
                gateway: 1,
                error: Some("TOO_LATE".to_string())
            })
        );
        let mut fine = ack.clone();
        fine.extend_from_slice(br#"{"txpk_ack":{"error":"NONE"}}"#);
        assert!(matches!(
            parse(&fine),
            Ok(FromGateway::TxAck { error: None, .. })
        ));
        assert!(matches!(
            parse(&ack),
            Ok(FromGateway::TxAck { error: None, .. })
        ));
    }

    #[test]
    fn pull_resp_carries_an_inverted_iq_txpk() {
        let txpk = Txpk::lorawan(
            &[1, 2, 3],
            1_000_000,
            868_100_000,
            DataRate {
                spreading_factor: 7,
                bandwidth_khz: 125,
            },
            14,
        );
        let datagram = pull_resp(5, &txpk);
        assert_eq!(&datagram[..4], &[2, 0, 5, 3]);
        let json: serde_json::Value = serde_json::from_slice(&datagram[4..]).unwrap();
        assert_eq!(json["txpk"]["ipol"], true);
        assert_eq!(json["txpk"]["tmst"], 1_000_000);
        assert_eq!(json["txpk"]["datr"], "SF7BW125");
        assert_eq!(json["txpk"]["freq"], 868.1);
        assert_eq!(json["txpk"]["data"], "AQID");
        assert_eq!(json["txpk"]["size"], 3);
    }
}
