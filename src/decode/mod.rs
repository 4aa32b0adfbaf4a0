//! Decoding: one [`Packet`] in, the [`Reading`]s it carries out, in three steps: check and strip the CRC
//! trailer, split off the link header, decode the payload (JSON, Cayenne LPP or MySensors). It owns the
//! mapping from bytes to device address, sequence number and named fields; it never does IO, never
//! keeps state between packets, and never names devices or publishes (the registry and publisher do).
//!
//! When both the header and the payload carry an address (or a sequence number), the header's wins: it
//! is what the link layer routed by. A reading's address is empty when neither carries one. A payload
//! that decodes to no fields still gives a reading, which tells the registry the device is alive.

pub mod header;
pub mod json;
pub mod lpp;
pub mod mysensors;

pub use header::encode_header;
pub use lpp::LppWriter;

use crate::frame::crc::{self, CrcMode};
use crate::frame::FrameError;
use crate::model::{Packet, Reading, Value};

/// The link header in front of the payload; set per source (`header = "none" | "node16" | "radiohead"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum HeaderFormat {
    /// No header: the payload starts at the first byte.
    #[serde(rename = "none")]
    None,
    /// 2-byte big-endian node address, then a 1-byte sequence number.
    #[serde(rename = "node16")]
    Node16,
    /// RadioHead (RH_RF95): TO, FROM, ID, FLAGS; FROM is the address, ID the sequence number.
    #[serde(rename = "radiohead")]
    RadioHead,
}

impl HeaderFormat {
    /// The configuration name (`"node16"`).
    pub fn name(self) -> &'static str {
        match self {
            HeaderFormat::None => "none",
            HeaderFormat::Node16 => "node16",
            HeaderFormat::RadioHead => "radiohead",
        }
    }
}

/// How the payload is encoded; set per source (`payload = "json" | "lpp" | "mysensors" | "codec"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum PayloadFormat {
    /// One UTF-8 JSON object (see [`json`]).
    #[serde(rename = "json")]
    Json,
    /// Cayenne LPP records (see [`lpp`]).
    #[serde(rename = "lpp")]
    Lpp,
    /// A MySensors serial API 2.x line (see [`mysensors`]).
    #[serde(rename = "mysensors")]
    MySensors,
    /// The source's JavaScript codec (`codec = "path.js"`, see `crate::codec`): decoded off this
    /// module, by the pipeline's codec workers.
    #[serde(rename = "codec")]
    Codec,
}

/// Why a packet gave no reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The CRC trailer is missing or wrong.
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{format} header needs {need} bytes, packet has {have}")]
    HeaderTooShort {
        format: &'static str,
        need: usize,
        have: usize,
    },
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    /// Not JSON at all, or JSON the parser refused (the parser's message).
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("JSON payload is {0}, not an object")]
    JsonNotObject(&'static str),
    #[error("JSON \"id\" {0}")]
    JsonBadId(&'static str),
    #[error("JSON \"seq\" is not an integer 0..=4294967295")]
    JsonBadSeq,
    #[error("JSON object has an empty key")]
    JsonEmptyKey,
    #[error("LPP type {type_id} at offset {offset} is unknown")]
    LppUnknownType { type_id: u8, offset: usize },
    #[error("LPP {type_name} at offset {offset} needs {need} bytes, {have} left")]
    LppTruncated {
        type_name: &'static str,
        offset: usize,
        need: usize,
        have: usize,
    },
    /// Fewer than the six `;`-separated fields (the count found).
    #[error("MySensors line has {0} fields, needs 6")]
    MySensorsFieldCount(usize),
    #[error("MySensors {field} {text:?} is not a number in range")]
    MySensorsBadNumber { field: &'static str, text: String },
    #[error("MySensors value type {0} is unknown")]
    MySensorsUnknownValueType(u8),
    /// `payload = "codec"`: the payload is the source's JavaScript codec's to decode
    /// ([`PacketDecoder::split`] gives it), not this module's.
    #[error("payload is decoded by the source's codec")]
    CodecPayload,
}

/// What a payload decoder found: the fields, plus the address and sequence number the payload itself
/// carries (the header's take precedence).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PayloadFields {
    pub address: Option<String>,
    pub seq: Option<u32>,
    pub fields: Vec<(String, Value)>,
}

/// The decoding settings of one source: CRC trailer, then header, then payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketDecoder {
    pub crc: CrcMode,
    pub header: HeaderFormat,
    pub payload: PayloadFormat,
}

impl PacketDecoder {
    /// crc -> header: what the link header says and the payload behind it, for a payload this module
    /// does not decode itself (a JavaScript codec's). `Ok(None)` for a packet that carries no reading.
    pub fn split<'p>(
        &self,
        packet: &'p Packet,
    ) -> Result<Option<(header::HeaderFields, &'p [u8])>, DecodeError> {
        let body = crc::check_and_strip(self.crc, &packet.bytes)?;
        let (link, payload) = header::split_header(self.header, body)?;
        Ok(link.carries_reading.then_some((link, payload)))
    }

    /// crc -> header -> payload. `Ok(vec![])` for messages that carry no reading (MySensors
    /// presentation, requests, internal messages other than the battery level; RadioHead ACKs). Every
    /// reading copies source, arrival time and radio metadata from the packet.
    pub fn decode(&self, packet: &Packet) -> Result<Vec<Reading>, DecodeError> {
        let body = crc::check_and_strip(self.crc, &packet.bytes)?;
        let (link, payload) = header::split_header(self.header, body)?;
        if !link.carries_reading {
            return Ok(Vec::new());
        }
        let found = match self.payload {
            PayloadFormat::Json => json::decode(payload)?,
            PayloadFormat::Lpp => lpp::decode(payload)?,
            PayloadFormat::MySensors => match mysensors::decode(payload)? {
                Some(found) => found,
                None => return Ok(Vec::new()),
            },
            PayloadFormat::Codec => return Err(DecodeError::CodecPayload),
        };
        Ok(vec![Reading {
            source: packet.source.clone(),
            address: link.address.or(found.address).unwrap_or_default(),
            seq: link.seq.or(found.seq),
            fields: found.fields,
            received_at: packet.received_at,
            radio: packet.radio,
            lorawan: None,
        }])
    }
}

/// One reading as `sensorgate decode` prints it: `{"address", "seq", "fields": {name: value}}`.
pub fn reading_json(
    address: &str,
    seq: Option<u32>,
    fields: &[(String, Value)],
) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(name, value)| (name.clone(), value.to_json()))
        .collect();
    serde_json::json!({ "address": address, "seq": seq, "fields": fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, Deframer, Framing};
    use crate::model::RadioMeta;
    use std::time::{Duration, SystemTime};

    const FRAMINGS: [Framing; 3] = [Framing::Lines, Framing::Cobs, Framing::Slip];
    const CRCS: [CrcMode; 2] = [CrcMode::None, CrcMode::Crc16CcittFalse];
    const HEADERS: [HeaderFormat; 3] = [
        HeaderFormat::None,
        HeaderFormat::Node16,
        HeaderFormat::RadioHead,
    ];
    const PAYLOADS: [PayloadFormat; 3] = [
        PayloadFormat::Json,
        PayloadFormat::Lpp,
        PayloadFormat::MySensors,
    ];

    fn packet(bytes: Vec<u8>) -> Packet {
        Packet {
            source: "uart0".into(),
            bytes,
            received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            radio: Some(RadioMeta {
                rssi_dbm: -71.0,
                snr_db: 9.5,
                frequency_hz: 868_100_000,
                spreading_factor: 7,
            }),
        }
    }

    fn decoder(crc: CrcMode, header: HeaderFormat, payload: PayloadFormat) -> PacketDecoder {
        PacketDecoder {
            crc,
            header,
            payload,
        }
    }

    #[test]
    fn config_names_parse() {
        let header = |s: &str| serde_json::from_str::<HeaderFormat>(&format!("\"{s}\""));
        let payload = |s: &str| serde_json::from_str::<PayloadFormat>(&format!("\"{s}\""));
        assert_eq!(header("none").unwrap(), HeaderFormat::None);
        assert_eq!(header("node16").unwrap(), HeaderFormat::Node16);
        assert_eq!(header("radiohead").unwrap(), HeaderFormat::RadioHead);
        assert!(header("radio-head").is_err());
        assert_eq!(payload("json").unwrap(), PayloadFormat::Json);
        assert_eq!(payload("lpp").unwrap(), PayloadFormat::Lpp);
        assert_eq!(payload("mysensors").unwrap(), PayloadFormat::MySensors);
        assert!(payload("my-sensors").is_err());
        for format in HEADERS {
            assert_eq!(header(format.name()).unwrap(), format);
        }
    }

    #[test]
    fn radio_lpp_packet_with_crc_and_radiohead_header() {
        let mut body = encode_header(HeaderFormat::RadioHead, 17, 42);
        body.extend(LppWriter::new().temperature(3, 27.2).into_bytes());
        let pkt = packet(crc::append_crc(CrcMode::Crc16CcittFalse, &body));
        let readings = decoder(
            CrcMode::Crc16CcittFalse,
            HeaderFormat::RadioHead,
            PayloadFormat::Lpp,
        )
        .decode(&pkt)
        .unwrap();
        assert_eq!(
            readings,
            vec![Reading {
                source: "uart0".into(),
                address: "17".into(),
                seq: Some(42),
                fields: vec![("temperature_3".into(), Value::Float(27.2))],
                received_at: pkt.received_at,
                radio: pkt.radio,
                lorawan: None,
            }]
        );
    }

    #[test]
    fn wrong_crc_is_a_frame_error() {
        let mut bytes = crc::append_crc(CrcMode::Crc16CcittFalse, br#"{"t":1}"#);
        bytes[1] ^= 0x40;
        let result = decoder(
            CrcMode::Crc16CcittFalse,
            HeaderFormat::None,
            PayloadFormat::Json,
        )
        .decode(&packet(bytes));
        assert!(matches!(
            result,
            Err(DecodeError::Frame(FrameError::CrcMismatch { .. }))
        ));
    }

    #[test]
    fn truncated_header_is_refused() {
        let result = decoder(CrcMode::None, HeaderFormat::RadioHead, PayloadFormat::Lpp)
            .decode(&packet(vec![0xFF, 0x01]));
        assert!(matches!(result, Err(DecodeError::HeaderTooShort { .. })));
    }

    #[test]
    fn header_address_wins_over_json_id() {
        let mut bytes = encode_header(HeaderFormat::Node16, 300, 5);
        bytes.extend_from_slice(br#"{"id":"other","seq":9,"t":2}"#);
        let readings = decoder(CrcMode::None, HeaderFormat::Node16, PayloadFormat::Json)
            .decode(&packet(bytes))
            .unwrap();
        assert_eq!(readings[0].address, "300");
        assert_eq!(readings[0].seq, Some(5));
        assert_eq!(readings[0].fields, vec![("t".into(), Value::Int(2))]);

        let readings = decoder(CrcMode::None, HeaderFormat::None, PayloadFormat::Json)
            .decode(&packet(br#"{"id":"other","seq":9}"#.to_vec()))
            .unwrap();
        assert_eq!(readings[0].address, "other");
        assert_eq!(readings[0].seq, Some(9));
    }

    #[test]
    fn lpp_without_header_has_an_empty_address() {
        let readings = decoder(CrcMode::None, HeaderFormat::None, PayloadFormat::Lpp)
            .decode(&packet(vec![0x03, 0x67, 0x01, 0x10]))
            .unwrap();
        assert_eq!(readings[0].address, "");
        assert_eq!(readings[0].seq, None);
    }

    #[test]
    fn mysensors_line_through_the_whole_pipeline() {
        let mut deframer = Deframer::new(Framing::Lines, 256);
        deframer.push(b"0;255;3;0;14;Gateway startup complete.\r\n12;6;1;0;0;21.5\r\n");
        let decode = decoder(CrcMode::None, HeaderFormat::None, PayloadFormat::MySensors);
        let first = deframer.next_frame().unwrap().unwrap();
        assert_eq!(decode.decode(&packet(first)).unwrap(), vec![]);
        let second = deframer.next_frame().unwrap().unwrap();
        let readings = decode.decode(&packet(second)).unwrap();
        assert_eq!(readings[0].address, "12");
        assert_eq!(
            readings[0].fields,
            vec![("temp_6".into(), Value::Float(21.5))]
        );
        assert!(deframer.next_frame().is_none());
    }

    #[test]
    fn radiohead_ack_carries_no_reading() {
        let bytes = vec![0x01, 0x02, 0x03, header::RADIOHEAD_FLAG_ACK, b'!'];
        let readings = decoder(CrcMode::None, HeaderFormat::RadioHead, PayloadFormat::Lpp)
            .decode(&packet(bytes))
            .unwrap();
        assert!(readings.is_empty());
    }

    /// Valid payloads of each format, the seeds the robustness test mutates.
    fn sample_payload(format: PayloadFormat) -> Vec<u8> {
        match format {
            PayloadFormat::Json => {
                br#"{"id":"n1","seq":3,"t":21.5,"h":{"v":[1,2]},"ok":true}"#.to_vec()
            }
            PayloadFormat::Lpp => LppWriter::new()
                .temperature(1, 21.5)
                .relative_humidity(2, 40.0)
                .voltage(3, 3.3)
                .into_bytes(),
            PayloadFormat::MySensors => b"12;6;1;0;0;21.5".to_vec(),
            PayloadFormat::Codec => Vec::new(),
        }
    }

    /// Thousands of pseudo-random and mutated byte strings through every framing x CRC x header x payload
    /// combination: whatever comes out is a frame or an error, never a panic, and frames stay bounded.
    #[test]
    fn random_input_never_panics() {
        let mut state = 0x853C_49E6_748F_EA9Bu64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let max = 128;
        let mut decoded = 0usize;
        let mut refused = 0usize;
        for framing in FRAMINGS {
            for crc_mode in CRCS {
                for header_format in HEADERS {
                    for payload_format in PAYLOADS {
                        let decode = decoder(crc_mode, header_format, payload_format);
                        let mut deframer = Deframer::new(framing, max);
                        let mut body = encode_header(header_format, 7, 1);
                        body.extend(sample_payload(payload_format));
                        let valid = encode_frame(framing, &crc::append_crc(crc_mode, &body));
                        for round in 0..300 {
                            let mut bytes = if round % 2 == 0 {
                                (0..next() % 80).map(|_| next() as u8).collect()
                            } else {
                                valid.clone()
                            };
                            // Flip, drop or insert a few bytes.
                            for _ in 0..next() % 4 {
                                if bytes.is_empty() {
                                    break;
                                }
                                let at = (next() as usize) % bytes.len();
                                match next() % 3 {
                                    0 => bytes[at] ^= 1 << (next() % 8),
                                    1 => drop(bytes.remove(at)),
                                    _ => bytes.insert(at, next() as u8),
                                }
                            }
                            deframer.push(&bytes);
                            for _ in 0..10_000 {
                                let Some(frame) = deframer.next_frame() else {
                                    break;
                                };
                                let Ok(frame) = frame else {
                                    refused += 1;
                                    continue;
                                };
                                assert!(frame.len() <= max);
                                // Also straight into the decoder, as a radio source would.
                                let _ = decode.decode(&packet(bytes.clone()));
                                match decode.decode(&packet(frame)) {
                                    Ok(_) => decoded += 1,
                                    Err(_) => refused += 1,
                                }
                            }
                        }
                    }
                }
            }
        }
        // The mix exercised both outcomes.
        assert!(decoded > 100, "decoded {decoded}");
        assert!(refused > 100, "refused {refused}");
    }
}
