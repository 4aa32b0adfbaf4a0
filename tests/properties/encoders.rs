//! The command encoders are the inverses of the decoders: for every payload format, any command the
//! encoder accepts decodes (through the real framing, CRC and header decoders) to the same address and
//! fields. Bounded property tests (proptest, 256 cases each).

use proptest::prelude::*;

use sensorgate::decode::{HeaderFormat, PacketDecoder, PayloadFormat};
use sensorgate::encode::link::{self, LinkSpec, Seal};
use sensorgate::encode::{encode_payload, CommandPayload};
use sensorgate::frame::crc::CrcMode;
use sensorgate::frame::{Deframer, Framing};
use sensorgate::model::{Packet, Value};

fn packet(bytes: Vec<u8>) -> Packet {
    Packet {
        source: "node".into(),
        bytes,
        received_at: std::time::SystemTime::UNIX_EPOCH,
        radio: None,
    }
}

/// Encodes `fields` for `address`, wraps each payload for `spec`, deframes and decodes it again.
fn round_trip(
    spec: &LinkSpec,
    format: PayloadFormat,
    address: &str,
    fields: &[(String, Value)],
) -> Vec<(String, Vec<(String, Value)>)> {
    let payloads =
        encode_payload(format, address, &CommandPayload::Fields(fields.to_vec())).expect("encodes");
    let to = link::destination(spec.header, address).expect("address fits");
    let decoder = PacketDecoder {
        crc: spec.crc,
        header: spec.header,
        payload: format,
    };
    let mut out = Vec::new();
    for (seq, payload) in payloads.iter().enumerate() {
        let wire = link::wrap(spec, to, seq as u8, &payload.bytes, None).expect("wraps");
        let frames = match spec.framing {
            Some(framing) => {
                let mut deframer = Deframer::new(framing, 65_536);
                deframer.push(&wire);
                let mut frames = Vec::new();
                while let Some(frame) = deframer.next_frame() {
                    frames.push(frame.expect("a whole frame"));
                }
                frames
            }
            None => vec![wire],
        };
        assert_eq!(frames.len(), 1);
        for reading in decoder.decode(&packet(frames[0].clone())).expect("decodes") {
            out.push((reading.address, reading.fields));
        }
    }
    out
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,11}".prop_filter("not id or seq", |n| n != "id" && n != "seq")
}

fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        // Up to 8 significant digits: the JSON decoder's float parsing (serde_json without
        // float_roundtrip) is exact to about 15.
        (-1e6f64..1e6).prop_map(|f| Value::Float((f * 100.0).round() / 100.0)),
        "[ -~]{0,16}".prop_map(Value::Text),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_lines_and_cobs_crc_node16(
        address in 0u16..=65535,
        fields in proptest::collection::vec((name(), json_value()), 1..6),
        cobs in any::<bool>(),
    ) {
        // Distinct names: the decoder keeps repeats, the state keeps the last one; keep it simple.
        let mut fields = fields;
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields.dedup_by(|a, b| a.0 == b.0);
        let (spec, address) = if cobs {
            (LinkSpec { header: HeaderFormat::Node16, crc: CrcMode::Crc16CcittFalse, framing: Some(Framing::Cobs), gateway_address: 0 }, address.to_string())
        } else {
            (LinkSpec { header: HeaderFormat::None, crc: CrcMode::None, framing: Some(Framing::Lines), gateway_address: 0 }, format!("n{address}"))
        };
        let back = round_trip(&spec, PayloadFormat::Json, &address, &fields);
        prop_assert_eq!(back, vec![(address, fields)]);
    }

    #[test]
    fn cayenne_lpp_any_type_over_radiohead(
        to in 0u16..255,
        gateway in 0u8..255,
        records in proptest::collection::vec((0u8..=255, 0usize..8, any::<i32>()), 1..5),
    ) {
        // (type name, bytes, factor, signed) of single-value types across the table.
        const TYPES: [(&str, u32, f64, bool); 8] = [
            ("digital_out", 1, 1.0, false),
            ("analog_out", 2, 100.0, true),
            ("temperature", 2, 10.0, true),
            ("relative_humidity", 1, 2.0, false),
            ("barometric_pressure", 2, 10.0, false),
            ("voltage", 2, 100.0, false),
            ("altitude", 2, 1.0, true),
            ("energy", 4, 1000.0, false),
        ];
        let mut fields = Vec::new();
        for (channel, kind, raw) in records {
            let (type_name, size, factor, signed) = TYPES[kind];
            let bits = 8 * size;
            let raw = i64::from(raw);
            let raw = if signed {
                let half = 1i64 << (bits - 1);
                raw.rem_euclid(2 * half) - half
            } else {
                raw.rem_euclid(1i64 << bits)
            };
            let value = if factor == 1.0 { Value::Int(raw) } else { Value::Float(raw as f64 / factor) };
            let field = format!("{type_name}_{channel}");
            if fields.iter().any(|(n, _)| n == &field) {
                continue;
            }
            fields.push((field, value));
        }
        let spec = LinkSpec { header: HeaderFormat::RadioHead, crc: CrcMode::None, framing: None, gateway_address: gateway };
        let back = round_trip(&spec, PayloadFormat::Lpp, &to.to_string(), &fields);
        // The decoder reads FROM as the address: the gateway's.
        prop_assert_eq!(back, vec![(gateway.to_string(), fields)]);
    }

    #[test]
    fn mysensors_c_set_one_line_per_field(
        node in 0u8..255,
        sets in proptest::collection::vec((0usize..57, 0u8..=254, prop_oneof![
            any::<i64>().prop_map(Value::Int),
            (-1e6f64..1e6).prop_map(|f| Value::Float((f * 1000.0).round() / 1000.0)),
            "[a-z][a-z ]{0,10}[a-z]".prop_map(Value::Text),
        ]), 1..4),
    ) {
        const NAMES: [&str; 57] = [
            "temp", "hum", "status", "percentage", "pressure", "forecast", "rain", "rainrate", "wind",
            "gust", "direction", "uv", "weight", "distance", "impedance", "armed", "tripped", "watt",
            "kwh", "scene_on", "scene_off", "hvac_flow_state", "hvac_speed", "light_level", "var1",
            "var2", "var3", "var4", "var5", "up", "down", "stop", "ir_send", "ir_receive", "flow",
            "volume", "lock_status", "level", "voltage", "current", "rgb", "rgbw", "id", "unit_prefix",
            "hvac_setpoint_cool", "hvac_setpoint_heat", "hvac_flow_mode", "text", "custom", "position",
            "ir_record", "ph", "orp", "ec", "var", "va", "power_factor",
        ];
        let fields: Vec<(String, Value)> = sets
            .into_iter()
            .map(|(kind, child, value)| {
                // A float that reads back as an integer is an integer to the decoder.
                let value = match value {
                    Value::Float(f) if f.fract() == 0.0 => Value::Int(f as i64),
                    other => other,
                };
                (format!("{}_{child}", NAMES[kind]), value)
            })
            .collect();
        let spec = LinkSpec { header: HeaderFormat::None, crc: CrcMode::None, framing: Some(Framing::Lines), gateway_address: 0 };
        let back = round_trip(&spec, PayloadFormat::MySensors, &node.to_string(), &fields);
        let expected: Vec<_> = fields.into_iter().map(|f| (node.to_string(), vec![f])).collect();
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn sealed_commands_open_with_the_node_key(
        to in 0u16..=65535,
        counter in any::<u32>(),
        payload in proptest::collection::vec(any::<u8>(), 1..40),
    ) {
        let key = sensorgate::crypto::FrameKey::from_bytes([7; 16]);
        let spec = LinkSpec { header: HeaderFormat::Node16, crc: CrcMode::Crc16CcittFalse, framing: Some(Framing::Slip), gateway_address: 0 };
        let wire = link::wrap(&spec, to, 3, &payload, Some(Seal { key: &key, counter })).unwrap();
        let mut deframer = Deframer::new(Framing::Slip, 4096);
        deframer.push(&wire);
        let frame = deframer.next_frame().unwrap().unwrap();
        let body = sensorgate::frame::crc::check_and_strip(CrcMode::Crc16CcittFalse, &frame).unwrap();
        let (header, sealed) = body.split_at(3);
        let opened = sensorgate::crypto::frame::open(
            &key,
            sensorgate::crypto::frame::Direction::Downlink,
            u32::from(to),
            header,
            sealed,
        ).unwrap();
        prop_assert_eq!(opened.counter, counter);
        prop_assert_eq!(opened.plaintext, payload);
    }
}

#[test]
fn raw_bytes_go_out_as_given() {
    let payloads = encode_payload(
        PayloadFormat::Lpp,
        "3",
        &CommandPayload::Raw(vec![0x0a, 0x0b]),
    )
    .unwrap();
    assert_eq!(payloads[0].bytes, [0x0a, 0x0b]);
    let spec = LinkSpec {
        header: HeaderFormat::Node16,
        crc: CrcMode::None,
        framing: None,
        gateway_address: 0,
    };
    assert_eq!(
        link::wrap(&spec, 3, 9, &payloads[0].bytes, None).unwrap(),
        [0, 3, 9, 0x0a, 0x0b]
    );
}
