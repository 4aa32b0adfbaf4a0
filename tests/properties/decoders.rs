//! Fuzzing what a node can send, with proptest (a bounded corpus run under `cargo test`): every
//! framing (lines, COBS, SLIP), the CRC-16 trailer, both link headers (node16, RadioHead), every payload
//! decoder (JSON, Cayenne LPP, MySensors) and the combined [`PacketDecoder`] get arbitrary bytes and
//! structured near-valid input. Whatever arrives they must not panic, must stop (a loop is capped), must
//! return output bounded by the input (frame sizes, field counts, name lengths), must only produce field
//! names and addresses usable as MQTT topic levels, and must round-trip where an encoder exists (COBS and
//! SLIP encode then deframe = identity; CRC append then check = ok; one changed byte is detected).
//! Structured generators add valid-looking LPP with random types and lengths, JSON objects checked
//! against a reference flattening, JSON nested 10,000 levels deep (run on a 2 MiB stack, what a tokio
//! worker has), huge numbers, and MySensors lines with random fields checked against a reference reading
//! of the spec.
//!
//! Bounds: inputs are at most [`MAX_INPUT`] bytes and each property runs [`CASES`] cases (fewer for the
//! expensive ones), so the file runs in a few seconds in a debug build. Failures are shrunk and saved by
//! proptest next to this file (`decoders.proptest-regressions`) so a rerun tries them first.

use std::time::{Duration, SystemTime};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::TestRunner;

use sensorgate::decode::header::{split_header, NODE16_LEN, RADIOHEAD_FLAG_ACK, RADIOHEAD_LEN};
use sensorgate::decode::{
    encode_header, json, lpp, mysensors, DecodeError, HeaderFormat, PacketDecoder, PayloadFields,
    PayloadFormat,
};
use sensorgate::frame::crc::{append_crc, check_and_strip, crc16_ccitt_false, CrcMode};
use sensorgate::frame::{cobs, encode_frame, slip, Deframer, FrameError, Framing};
use sensorgate::model::{Packet, RadioMeta, Reading, Value};

/// The largest arbitrary input, in bytes (a LoRa packet is at most 255; serial frames default lower).
const MAX_INPUT: usize = 512;
/// Cases per cheap property.
const CASES: u32 = 2_500;

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

/// `cases` cases (a tenth of them in `scripts/test --quick`, `sensorgate_testkit::quick`).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: sensorgate_testkit::quick::cases(cases),
        max_shrink_iters: 4_096,
        ..ProptestConfig::default()
    }
}

/// The bytes every framing and decoder treats specially.
const SPECIAL: [u8; 30] = [
    0x00,
    0x01,
    0xFF,
    0xFE,
    slip::END,
    slip::ESC,
    slip::ESC_END,
    slip::ESC_ESC,
    b'\n',
    b'\r',
    b' ',
    b';',
    b'{',
    b'}',
    b'[',
    b']',
    b'"',
    b':',
    b',',
    b'\\',
    b'0',
    b'9',
    b'-',
    b'e',
    b'.',
    b'a',
    0x80,
    0xC3,
    0xE2,
    0xF0,
];

/// Arbitrary byte strings of `min..=max` bytes, biased (by a per-input amount, from none to nearly
/// all) towards [`SPECIAL`] bytes. Generated in one go from the runner's RNG and shrunk by cutting
/// chunks out: proptest's own `vec(any::<u8>())` builds a value tree per byte, which in a debug build
/// made the byte-heavy properties twenty times slower.
#[derive(Debug, Clone, Copy)]
struct Bytes {
    min: usize,
    max: usize,
}

fn bytes(max: usize) -> Bytes {
    Bytes { min: 0, max }
}

fn bytes_between(min: usize, max: usize) -> Bytes {
    Bytes { min, max }
}

impl Strategy for Bytes {
    type Tree = BytesTree;
    type Value = Vec<u8>;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let rng = runner.rng();
        let span = (self.max - self.min) as u64 + 1;
        // Short inputs as often as long ones: a random bit length first, then a length below it.
        let bits = rng.next_u64() % u64::from(65 - span.leading_zeros());
        let len = self.min + (rng.next_u64() % span.min(1u64 << bits).max(1)) as usize;
        let special_per_256 = [0u64, 32, 96, 192, 250][(rng.next_u64() % 5) as usize];
        let current = (0..len)
            .map(|_| {
                let r = rng.next_u64();
                if r % 256 < special_per_256 {
                    SPECIAL[((r >> 8) % SPECIAL.len() as u64) as usize]
                } else {
                    (r >> 32) as u8
                }
            })
            .collect::<Vec<u8>>();
        Ok(BytesTree {
            chunk: current.len() / 2,
            current,
            min: self.min,
            previous: None,
            at: 0,
        })
    }
}

/// Shrinks by removing `chunk` bytes at `at`, halving `chunk` when no removal keeps the failure.
#[derive(Debug, Clone)]
struct BytesTree {
    current: Vec<u8>,
    min: usize,
    previous: Option<Vec<u8>>,
    chunk: usize,
    at: usize,
}

impl ValueTree for BytesTree {
    type Value = Vec<u8>;

    fn current(&self) -> Vec<u8> {
        self.current.clone()
    }

    fn simplify(&mut self) -> bool {
        while self.chunk > 0 {
            if self.at + self.chunk > self.current.len()
                || self.current.len() - self.chunk < self.min
            {
                self.chunk /= 2;
                self.at = 0;
                continue;
            }
            let mut shorter = self.current.clone();
            shorter.drain(self.at..self.at + self.chunk);
            self.previous = Some(std::mem::replace(&mut self.current, shorter));
            return true;
        }
        false
    }

    fn complicate(&mut self) -> bool {
        match self.previous.take() {
            Some(previous) => {
                self.current = previous;
                self.at += self.chunk;
                true
            }
            None => false,
        }
    }
}

/// Text of `min..=max` characters from `alphabet` (cheap, like [`Bytes`]).
fn text_of(alphabet: &'static [char], min: usize, max: usize) -> impl Strategy<Value = String> {
    bytes_between(min, max).prop_map(move |b| {
        b.iter()
            .map(|&x| alphabet[usize::from(x) % alphabet.len()])
            .collect()
    })
}

fn framing() -> impl Strategy<Value = Framing> {
    prop::sample::select(FRAMINGS.to_vec())
}

fn header_format() -> impl Strategy<Value = HeaderFormat> {
    prop::sample::select(HEADERS.to_vec())
}

fn packet_decoder() -> impl Strategy<Value = PacketDecoder> {
    (
        prop::sample::select(CRCS.to_vec()),
        header_format(),
        prop::sample::select(PAYLOADS.to_vec()),
    )
        .prop_map(|(crc, header, payload)| PacketDecoder {
            crc,
            header,
            payload,
        })
}

/// Runs `f` on a thread with a 2 MiB stack (a tokio worker's, and Rust's default for spawned threads),
/// so a stack overflow shows up the same whatever `RUST_MIN_STACK` the test runner has.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("fuzz-2mib".into())
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

/// Every frame the deframer gives for `stream` pushed in pieces of the given sizes (cycled), with a cap
/// on the number of results so a deframer that never says `None` fails instead of hanging.
fn deframe(
    framing: Framing,
    max: usize,
    stream: &[u8],
    chunks: &[usize],
) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut deframer = Deframer::new(framing, max);
    let mut out = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().copied().cycle();
    loop {
        let take = sizes
            .next()
            .unwrap_or(usize::MAX)
            .clamp(1, rest.len().max(1));
        let (piece, tail) = rest.split_at(take.min(rest.len()));
        deframer.push(piece);
        while let Some(frame) = deframer.next_frame() {
            out.push(frame);
            assert!(
                out.len() <= stream.len() + 1,
                "more results than bytes: next_frame never returns None"
            );
        }
        rest = tail;
        if rest.is_empty() {
            return out;
        }
    }
}

/// Whether `text` can be one MQTT topic level: not empty, no `+ # /`, NUL or other control characters.
fn topic_level_safe(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| matches!(c, '+' | '#' | '/') || c.is_control())
}

/// What every decoder promises about what it found, whatever the input.
fn assert_payload_sane(found: &PayloadFields, input_len: usize) {
    if let Some(address) = &found.address {
        assert!(topic_level_safe(address), "address {address:?}");
        assert!(address.len() <= input_len, "address longer than the input");
    }
    assert!(
        found.fields.len() <= input_len,
        "{} fields from {input_len} bytes",
        found.fields.len()
    );
    for (name, value) in &found.fields {
        assert!(topic_level_safe(name), "field name {name:?}");
        assert!(
            name.len() <= 8 * input_len + 32,
            "field name of {} bytes from {input_len} bytes",
            name.len()
        );
        if let Value::Float(f) = value {
            assert!(f.is_finite(), "{name} = {f}");
        }
        if let Value::Text(text) = value {
            assert!(text.len() <= input_len);
        }
    }
}

fn packet(bytes: Vec<u8>) -> Packet {
    Packet {
        source: "fuzz0".into(),
        bytes,
        received_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        radio: Some(RadioMeta {
            rssi_dbm: -90.0,
            snr_db: 3.5,
            frequency_hz: 868_100_000,
            spreading_factor: 9,
        }),
    }
}

fn assert_readings_sane(readings: &[Reading], packet: &Packet) {
    assert!(
        readings.len() <= 1,
        "{} readings from one packet",
        readings.len()
    );
    for reading in readings {
        assert_eq!(reading.source, packet.source);
        assert_eq!(reading.received_at, packet.received_at);
        assert_eq!(reading.radio, packet.radio);
        if !reading.address.is_empty() {
            assert!(topic_level_safe(&reading.address), "{:?}", reading.address);
        }
        assert_payload_sane(
            &PayloadFields {
                address: None,
                seq: reading.seq,
                fields: reading.fields.clone(),
            },
            packet.bytes.len(),
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Framing and CRC
// ---------------------------------------------------------------------------------------------------

/// `payload` made into one the lines framing carries unchanged: UTF-8, no `\n`, not ending in `\r`,
/// not blank. Other framings carry any bytes.
fn carried(framing: Framing, payload: Vec<u8>) -> Vec<u8> {
    if framing != Framing::Lines {
        return payload;
    }
    let text = String::from_utf8_lossy(&payload).replace('\n', " ");
    let text = text.trim_end_matches('\r');
    if text.trim().is_empty() {
        format!("{text}x").into_bytes()
    } else {
        text.as_bytes().to_vec()
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Arbitrary bytes in arbitrary pieces: no panic, `None` eventually, every frame within the bound
    /// (and, for lines, UTF-8 without its `\n`), and the same frames whatever the piece sizes.
    #[test]
    fn deframer_survives_arbitrary_streams(
        framing in framing(),
        max in 0usize..64,
        stream in bytes(MAX_INPUT),
        chunks in vec(1usize..80, 1..8),
    ) {
        let pieces = deframe(framing, max, &stream, &chunks);
        let whole = deframe(framing, max, &stream, &[usize::MAX]);
        prop_assert_eq!(&pieces, &whole);
        for frame in whole.into_iter().flatten() {
            prop_assert!(!frame.is_empty() && frame.len() <= max, "frame of {} bytes, max {}", frame.len(), max);
            if framing == Framing::Lines {
                prop_assert!(std::str::from_utf8(&frame).is_ok());
                // One trailing `\r` is dropped (`\r\n`); `a\r\r\n` keeps the other, by design.
                prop_assert!(!frame.contains(&b'\n'));
            }
        }
    }

    /// Encoded payloads, concatenated and cut anywhere, come back out exactly (empty COBS/SLIP frames and
    /// blank lines are skipped by design, so they are not generated).
    #[test]
    fn encode_then_deframe_is_identity(
        framing in framing(),
        payloads in vec(bytes_between(1, 200), 1..8),
        chunks in vec(1usize..300, 1..8),
    ) {
        let payloads: Vec<Vec<u8>> = payloads.into_iter().map(|p| carried(framing, p)).collect();
        let max = payloads.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let stream: Vec<u8> = payloads.iter().flat_map(|p| encode_frame(framing, p)).collect();
        let frames = deframe(framing, max, &stream, &chunks);
        let expected: Vec<Result<Vec<u8>, FrameError>> = payloads.into_iter().map(Ok).collect();
        prop_assert_eq!(frames, expected);
    }

    /// After any garbage, one delimiter resynchronises: the next encoded frame decodes intact and last.
    #[test]
    fn garbage_then_a_frame_resynchronises(
        framing in framing(),
        garbage in bytes(MAX_INPUT),
        payload in bytes_between(1, 60),
        chunks in vec(1usize..100, 1..6),
    ) {
        let payload = carried(framing, payload);
        let mut stream = garbage;
        stream.push(match framing {
            Framing::Lines => b'\n',
            Framing::Cobs => cobs::DELIMITER,
            Framing::Slip => slip::END,
        });
        stream.extend(encode_frame(framing, &payload));
        let frames = deframe(framing, 256, &stream, &chunks);
        prop_assert_eq!(frames.last(), Some(&Ok(payload)));
    }

    /// COBS: the encoding has no zero byte and bounded overhead, and decodes back to the payload.
    #[test]
    fn cobs_round_trip(payload in bytes(1_200)) {
        let encoded = cobs::encode(&payload);
        prop_assert!(!encoded.contains(&0));
        prop_assert!(encoded.len() <= payload.len() + payload.len() / 254 + 1);
        prop_assert_eq!(cobs::decode(&encoded), Ok(payload));
    }

    /// COBS decoding of arbitrary bytes: no panic, never longer than its input, and what it accepts
    /// re-encodes to something that decodes the same.
    #[test]
    fn cobs_decode_arbitrary(encoded in bytes(MAX_INPUT)) {
        if let Ok(decoded) = cobs::decode(&encoded) {
            prop_assert!(decoded.len() <= encoded.len());
            prop_assert_eq!(cobs::decode(&cobs::encode(&decoded)), Ok(decoded));
        }
    }

    /// SLIP: END only at both ends, the rest escaped, at most twice the payload.
    #[test]
    fn slip_encoding_shape(payload in bytes(600)) {
        let encoded = slip::encode(&payload);
        prop_assert_eq!(encoded.first(), Some(&slip::END));
        prop_assert_eq!(encoded.last(), Some(&slip::END));
        prop_assert!(!encoded[1..encoded.len() - 1].contains(&slip::END));
        prop_assert!(encoded.len() <= 2 * payload.len() + 2);
    }

    /// CRC: append then check gives the payload back; changing any one byte (trailer included) is
    /// detected, as a 16-bit CRC detects every burst of up to 16 bits.
    #[test]
    fn crc_round_trip_and_single_byte_errors(
        payload in bytes(MAX_INPUT),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let framed = append_crc(CrcMode::Crc16CcittFalse, &payload);
        prop_assert_eq!(framed.len(), payload.len() + 2);
        prop_assert_eq!(check_and_strip(CrcMode::Crc16CcittFalse, &framed), Ok(&payload[..]));
        prop_assert_eq!(check_and_strip(CrcMode::None, &framed), Ok(&framed[..]));
        let mut broken = framed.clone();
        broken[at.index(framed.len())] ^= flip;
        let refused = matches!(
            check_and_strip(CrcMode::Crc16CcittFalse, &broken),
            Err(FrameError::CrcMismatch { .. })
        );
        prop_assert!(refused, "one changed byte passed the CRC");
    }

    /// CRC check of arbitrary bytes: no panic; what passes is the frame minus two bytes.
    #[test]
    fn crc_check_arbitrary(frame in bytes(MAX_INPUT)) {
        match check_and_strip(CrcMode::Crc16CcittFalse, &frame) {
            Ok(payload) => {
                prop_assert_eq!(payload.len() + 2, frame.len());
                prop_assert_eq!(crc16_ccitt_false(payload).to_be_bytes(), [frame[frame.len() - 2], frame[frame.len() - 1]]);
            }
            Err(FrameError::CrcTooShort { len }) => prop_assert!(len < 2 && len == frame.len()),
            Err(FrameError::CrcMismatch { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES))]

    /// Splitting a header off arbitrary bytes: refused exactly when too short, else the payload is the
    /// rest of the bytes.
    #[test]
    fn header_split_arbitrary(format in header_format(), packet in bytes(16)) {
        let need = match format {
            HeaderFormat::None => 0,
            HeaderFormat::Node16 => NODE16_LEN,
            HeaderFormat::RadioHead => RADIOHEAD_LEN,
        };
        match split_header(format, &packet) {
            Ok((fields, payload)) => {
                prop_assert!(packet.len() >= need);
                prop_assert_eq!(payload, &packet[need..]);
                if let Some(address) = &fields.address {
                    prop_assert!(address.parse::<u16>().is_ok(), "address {:?}", address);
                }
                prop_assert!(fields.seq.is_none_or(|s| s <= 255));
            }
            Err(DecodeError::HeaderTooShort { need: n, have, .. }) => {
                prop_assert!(packet.len() < need);
                prop_assert_eq!((n, have), (need, packet.len()));
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    /// encode_header then split_header: the address (RadioHead: its low byte) and sequence come back.
    #[test]
    fn header_round_trip(format in header_format(), address in any::<u16>(), seq in any::<u8>(), rest in bytes(8)) {
        let mut packet = encode_header(format, address, seq);
        packet.extend_from_slice(&rest);
        let (fields, payload) = split_header(format, &packet).unwrap();
        prop_assert_eq!(payload, &rest[..]);
        prop_assert!(fields.carries_reading);
        let expected = match format {
            HeaderFormat::None => (None, None),
            HeaderFormat::Node16 => (Some(address.to_string()), Some(u32::from(seq))),
            HeaderFormat::RadioHead => (Some((address & 0xFF).to_string()), Some(u32::from(seq))),
        };
        prop_assert_eq!((fields.address, fields.seq), expected);
    }
}

// ---------------------------------------------------------------------------------------------------
// Payload decoders on arbitrary bytes, and the combined decoder
// ---------------------------------------------------------------------------------------------------

/// Bytes that look a little like JSON: braces, quotes, keys and numbers mixed with noise.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"",
            "\"id\"",
            "\"seq\"",
            "\"a\"",
            "\"\"",
            "\"a/b\"",
            "\"+\"",
            "\"#\"",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "\"$x\"",
            "null",
            "true",
            "false",
            "-",
            "0",
            "1",
            "-1",
            "1e999",
            "18446744073709551616",
            "4294967296",
            "1.5",
            "\\",
            " ",
            "\n",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        bytes_between(1, 3),
    ];
    vec(token, 0..64).prop_map(|tokens| {
        let mut out = b"{".to_vec();
        for t in tokens {
            out.extend(t);
        }
        out.truncate(MAX_INPUT);
        out
    })
}

/// Bytes that look a little like a MySensors line.
fn mysensors_ish() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            3 => prop::sample::select(vec![
                "0", "1", "3", "12", "255", "256", "-1", "+1", "00", ";", ";", ";", " ", "\r", "\n",
                "1.5", "e", "inf", "NaN", "é",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            1 => bytes_between(1, 2),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn json_arbitrary_bytes(input in prop_oneof![bytes(MAX_INPUT), jsonish()]) {
        if let Ok(found) = json::decode(&input) {
            assert_payload_sane(&found, input.len());
        }
    }

    #[test]
    fn lpp_arbitrary_bytes(input in bytes(MAX_INPUT)) {
        match lpp::decode(&input) {
            Ok(found) => {
                prop_assert!(found.address.is_none() && found.seq.is_none());
                assert_payload_sane(&found, input.len());
            }
            Err(DecodeError::LppUnknownType { offset, .. }) => prop_assert!(offset < input.len()),
            Err(DecodeError::LppTruncated { offset, have, .. }) => {
                prop_assert!(offset <= input.len() && have == input.len() - offset);
            }
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn mysensors_arbitrary_bytes(input in prop_oneof![bytes(MAX_INPUT), mysensors_ish()]) {
        if let Ok(Some(found)) = mysensors::decode(&input) {
            prop_assert_eq!(found.fields.len(), 1);
            prop_assert!(found.address.as_deref().is_some_and(|a| a.parse::<u8>().is_ok()));
            assert_payload_sane(&found, input.len());
        }
    }

    /// Every CRC x header x payload combination on arbitrary packets.
    #[test]
    fn packet_decoder_arbitrary(
        decoder in packet_decoder(),
        input in prop_oneof![bytes(MAX_INPUT), jsonish(), mysensors_ish()],
        header in bytes(4),
        with_crc in any::<bool>(),
    ) {
        // Half the time a valid header and CRC in front of the noise, so the payload decoders see it.
        let bytes = if with_crc {
            let mut framed = header;
            framed.extend(input);
            append_crc(decoder.crc, &framed)
        } else {
            input
        };
        let packet = packet(bytes);
        if let Ok(readings) = decoder.decode(&packet) {
            assert_readings_sane(&readings, &packet);
        }
    }

    /// A whole source: arbitrary serial bytes deframed, then decoded, for every setting.
    #[test]
    fn stream_to_readings(
        framing in framing(),
        decoder in packet_decoder(),
        stream in bytes(MAX_INPUT),
    ) {
        for frame in deframe(framing, 255, &stream, &[usize::MAX]).into_iter().flatten() {
            let packet = packet(frame);
            if let Ok(readings) = decoder.decode(&packet) {
                assert_readings_sane(&readings, &packet);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Structured: Cayenne LPP
// ---------------------------------------------------------------------------------------------------

/// The LPP table as the module documents it: type, name, data bytes, component suffixes.
const LPP_TABLE: &[(u8, &str, usize, &[&str])] = &[
    (0, "digital_in", 1, &[]),
    (1, "digital_out", 1, &[]),
    (2, "analog_in", 2, &[]),
    (3, "analog_out", 2, &[]),
    (100, "generic_sensor", 4, &[]),
    (101, "luminosity", 2, &[]),
    (102, "presence", 1, &[]),
    (103, "temperature", 2, &[]),
    (104, "relative_humidity", 1, &[]),
    (113, "accelerometer", 6, &["x", "y", "z"]),
    (115, "barometric_pressure", 2, &[]),
    (116, "voltage", 2, &[]),
    (117, "current", 2, &[]),
    (118, "frequency", 4, &[]),
    (120, "percentage", 1, &[]),
    (121, "altitude", 2, &[]),
    (125, "concentration", 2, &[]),
    (128, "power", 2, &[]),
    (130, "distance", 4, &[]),
    (131, "energy", 4, &[]),
    (132, "direction", 2, &[]),
    (133, "unix_time", 4, &[]),
    (134, "gyrometer", 6, &["x", "y", "z"]),
    (135, "colour", 3, &["r", "g", "b"]),
    (136, "gps", 9, &["latitude", "longitude", "altitude"]),
    (142, "switch", 1, &[]),
];

fn lpp_entry(type_id: u8) -> Option<&'static (u8, &'static str, usize, &'static [&'static str])> {
    LPP_TABLE.iter().find(|entry| entry.0 == type_id)
}

/// The reference reading of concatenated LPP records: the field names, or the offset of the error
/// (the type byte for an unknown type, the data for a record cut short, the record for a lone byte).
fn lpp_reference(bytes: &[u8]) -> Result<Vec<String>, usize> {
    let mut names = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes.len() - at < 2 {
            return Err(at);
        }
        let (channel, type_id) = (bytes[at], bytes[at + 1]);
        let Some(&(_, name, size, parts)) = lpp_entry(type_id) else {
            return Err(at + 1);
        };
        if bytes.len() - at - 2 < size {
            return Err(at + 2);
        }
        if parts.is_empty() {
            names.push(format!("{name}_{channel}"));
        } else {
            names.extend(parts.iter().map(|part| format!("{name}_{channel}_{part}")));
        }
        at += 2 + size;
    }
    Ok(names)
}

fn lpp_known_type() -> impl Strategy<Value = (u8, usize)> {
    prop::sample::select(LPP_TABLE.iter().map(|e| (e.0, e.2)).collect::<Vec<_>>())
}

/// One record of a known type with the right length.
fn lpp_valid_record() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), lpp_known_type()).prop_flat_map(|(channel, (type_id, size))| {
        vec(any::<u8>(), size).prop_map(move |data| [vec![channel, type_id], data].concat())
    })
}

/// One record: a known type with the right length, a known type with a wrong length, or any type.
fn lpp_record() -> impl Strategy<Value = Vec<u8>> {
    let known = lpp_known_type();
    prop_oneof![
        6 => lpp_valid_record(),
        1 => (any::<u8>(), known, 0usize..12).prop_flat_map(|(channel, (type_id, _), len)| {
            vec(any::<u8>(), len).prop_map(move |data| [vec![channel, type_id], data].concat())
        }),
        1 => (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..12))
            .prop_map(|(channel, type_id, data)| [vec![channel, type_id], data].concat()),
    ]
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Valid-looking LPP: the decoder agrees with the documented table on every field name, or on the
    /// offset of the first bad record.
    #[test]
    fn lpp_records_match_the_table(records in vec(lpp_record(), 0..24)) {
        let bytes = records.concat();
        let expected = lpp_reference(&bytes);
        match (lpp::decode(&bytes), expected) {
            (Ok(found), Ok(names)) => {
                let got: Vec<&str> = found.fields.iter().map(|(n, _)| n.as_str()).collect();
                prop_assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
                assert_payload_sane(&found, bytes.len());
            }
            (Err(DecodeError::LppUnknownType { offset, type_id }), Err(at)) => {
                prop_assert_eq!(offset, at);
                prop_assert_eq!(type_id, bytes[at]);
            }
            (Err(DecodeError::LppTruncated { offset, .. }), Err(at)) => prop_assert_eq!(offset, at),
            (got, expected) => prop_assert!(false, "decoder {got:?}, table {expected:?}"),
        }
    }

    /// The writer's records decode to the value written, to the type's resolution.
    #[test]
    fn lpp_writer_round_trip(channel in any::<u8>(), celsius in -3000.0f64..3000.0, volts in 0.0f64..600.0, percent in 0.0f64..127.0) {
        let bytes = lpp::LppWriter::new()
            .temperature(channel, celsius)
            .voltage(channel, volts)
            .relative_humidity(channel, percent)
            .into_bytes();
        let found = lpp::decode(&bytes).unwrap();
        let value = |i: usize| match found.fields[i].1 {
            Value::Float(f) => f,
            ref other => panic!("{other:?}"),
        };
        prop_assert!((value(0) - celsius).abs() <= 0.05 + 1e-9);
        prop_assert!((value(1) - volts).abs() <= 0.005 + 1e-9);
        prop_assert!((value(2) - percent).abs() <= 0.25 + 1e-9);
    }
}

// ---------------------------------------------------------------------------------------------------
// Structured: JSON
// ---------------------------------------------------------------------------------------------------

/// A JSON value as generated: objects keep their key order and duplicates (a map would not).
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(&b.to_string()),
            J::Int(i) => out.push_str(&i.to_string()),
            J::UInt(u) => out.push_str(&u.to_string()),
            J::Float(f) => out.push_str(&serde_json::to_string(f).unwrap()),
            J::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            J::Obj(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

/// Keys from a topic-safe alphabet, plus the reserved ones and the empty key. (Names with `+ # / $` or
/// control characters are left to `json_hostile_keys`: how they are sanitised is policy, not format.)
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => text_of(&['a', 'b', 'k', 'z', '0', '9', '_', 'é'], 1, 6),
        1 => prop::sample::select(vec!["id", "seq", ""]).prop_map(str::to_string),
    ]
}

fn json_leaf() -> impl Strategy<Value = J> {
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::Int),
        (i64::MAX as u64..=u64::MAX).prop_map(J::UInt),
        (0u64..=u64::from(u32::MAX) + 2).prop_map(J::UInt),
        prop::num::f64::NORMAL.prop_map(J::Float),
        (-1e6f64..1e6).prop_map(J::Float),
        text_of(
            &['a', ' ', '\0', '\n', '\u{1f}', 'é', '€', '😀', '"', '\\', '/'],
            0,
            8
        )
        .prop_map(J::Str),
    ]
}

fn json_value() -> impl Strategy<Value = J> {
    json_leaf().prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(J::Arr),
            vec((json_key(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

/// The expected outcome of the reference reading: fields, address and seq, or the refusal's kind.
type JsonExpected = Result<(Option<String>, Option<u32>, Vec<(String, Value)>), &'static str>;

fn json_reference(top: &[(String, J)]) -> JsonExpected {
    let mut address = None;
    let mut seq = None;
    let mut fields = Vec::new();
    for (key, value) in top {
        match key.as_str() {
            "id" => {
                address = Some(match value {
                    J::Str(s) if s.is_empty() => return Err("bad id"),
                    J::Str(s) if !topic_level_safe(s) => return Err("bad id"),
                    J::Str(s) => s.clone(),
                    J::Int(i) => i.to_string(),
                    J::UInt(u) => u.to_string(),
                    _ => return Err("bad id"),
                })
            }
            "seq" => {
                seq = Some(match value {
                    J::Int(i) => u32::try_from(*i).map_err(|_| "bad seq")?,
                    J::UInt(u) => u32::try_from(*u).map_err(|_| "bad seq")?,
                    _ => return Err("bad seq"),
                })
            }
            "" => return Err("empty key"),
            _ => flatten_reference(key.clone(), value, &mut fields)?,
        }
    }
    Ok((address, seq, fields))
}

/// `{"a":{"b":1}}` gives `a_b`, `{"v":[1,2]}` gives `v_0`, `v_1`; iterative, with an explicit stack.
fn flatten_reference(
    name: String,
    value: &J,
    fields: &mut Vec<(String, Value)>,
) -> Result<(), &'static str> {
    let mut stack = vec![(name, value)];
    while let Some((name, value)) = stack.pop() {
        let children: Vec<(String, &J)> = match value {
            J::Null => continue,
            J::Bool(b) => {
                fields.push((name, Value::Bool(*b)));
                continue;
            }
            J::Int(i) => {
                fields.push((name, Value::Int(*i)));
                continue;
            }
            J::UInt(u) => {
                fields.push((
                    name,
                    i64::try_from(*u).map_or(Value::Float(*u as f64), Value::Int),
                ));
                continue;
            }
            J::Float(f) => {
                fields.push((name, Value::Float(*f)));
                continue;
            }
            J::Str(s) => {
                fields.push((name, Value::Text(s.clone())));
                continue;
            }
            J::Arr(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{name}_{i}"), item))
                .collect(),
            J::Obj(entries) => {
                let mut children = Vec::new();
                for (key, item) in entries {
                    if key.is_empty() {
                        return Err("empty key");
                    }
                    children.push((format!("{name}_{key}"), item));
                }
                children
            }
        };
        // Depth first, in order: push the children reversed.
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}

/// The refusal's kind, as the reference names it.
fn json_error_kind(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::JsonBadId(_) => "bad id",
        DecodeError::JsonBadSeq => "bad seq",
        DecodeError::JsonEmptyKey => "empty key",
        _ => "other",
    }
}

fn same_value(got: &Value, expected: &Value) -> bool {
    match (got, expected) {
        // serde_json parses floats to within an ulp, not always exactly (no `float_roundtrip`).
        (Value::Float(a), Value::Float(b)) => a == b || (a - b).abs() <= 1e-12 * b.abs().max(1.0),
        (a, b) => a == b,
    }
}

proptest! {
    #![proptest_config(config(CASES / 2))]

    /// Generated objects decode to exactly the reference flattening (or are refused for the same
    /// reason), with `id` and `seq` picked out.
    #[test]
    fn json_objects_match_the_reference(top in vec((json_key(), json_value()), 0..8)) {
        let text = J::Obj(top.clone()).text();
        let expected = json_reference(&top);
        match (json::decode(text.as_bytes()), expected) {
            (Ok(found), Ok((address, seq, fields))) => {
                prop_assert_eq!(&found.address, &address, "{}", text);
                prop_assert_eq!(found.seq, seq, "{}", text);
                prop_assert_eq!(found.fields.len(), fields.len(), "{}", text);
                for ((gn, gv), (en, ev)) in found.fields.iter().zip(&fields) {
                    // Names up to 100 bytes exactly; longer ones may be cut to a maximum length.
                    if en.len() <= 100 {
                        prop_assert_eq!(gn, en, "{}", text);
                    } else {
                        prop_assert!(gn.len() >= 64 && en.starts_with(gn.as_str()), "{} for {} in {}", gn, en, text);
                    }
                    prop_assert!(same_value(gv, ev), "{}: {:?} != {:?} in {}", gn, gv, ev, text);
                }
                assert_payload_sane(&found, text.len());
            }
            (Err(error), Err(kind)) => prop_assert_eq!(json_error_kind(&error), kind, "{}: {}", text, error),
            (got, expected) => prop_assert!(false, "{text}: decoder {got:?}, reference {expected:?}"),
        }
    }

    /// Keys full of what a topic cannot hold: no panic, and nothing unsafe reaches a field name.
    #[test]
    fn json_hostile_keys(
        keys in vec(text_of(&['a', '+', '#', '/', '$', '\0', '\n', '\u{1f}', '\u{7f}', '\u{85}', '\u{2028}', 'é'], 0, 5), 1..10),
        nested in any::<bool>(),
    ) {
        let entries: Vec<(String, J)> = keys.into_iter().map(|k| (k, J::Int(1))).collect();
        let value = if nested { J::Obj(vec![("outer".into(), J::Obj(entries))]) } else { J::Obj(entries) };
        let text = value.text();
        if let Ok(found) = json::decode(text.as_bytes()) {
            assert_payload_sane(&found, text.len());
        }
    }

    /// Huge, tiny and malformed numbers as field, id and seq values: no panic; what is accepted is a
    /// finite number.
    #[test]
    fn json_huge_numbers(
        key in prop::sample::select(vec!["n", "id", "seq"]),
        minus in any::<bool>(),
        digits in text_of(&DIGITS, 1, 2_000),
        fraction in proptest::option::of(text_of(&DIGITS, 0, 600)),
        exponent in proptest::option::of((any::<bool>(), 0u32..100_000)),
    ) {
        let mut number = String::new();
        if minus {
            number.push('-');
        }
        number.push_str(&digits);
        if let Some(fraction) = fraction {
            number.push('.');
            number.push_str(&fraction);
        }
        if let Some((negative, e)) = exponent {
            number.push_str(if negative { "e-" } else { "e+" });
            number.push_str(&e.to_string());
        }
        let text = format!("{{\"{key}\":{number}}}");
        if let Ok(found) = json::decode(text.as_bytes()) {
            assert_payload_sane(&found, text.len());
            if key == "n" {
                prop_assert_eq!(found.fields.len(), 1);
            }
        }
    }
}

const DIGITS: [char; 10] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

/// How deep to nest: past serde_json's recursion limit (128) by far.
const DEEP: usize = 10_000;

#[test]
fn json_nested_ten_thousand_levels_is_refused_without_overflowing_the_stack() {
    let openers: [(&str, &str); 4] = [
        ("{\"a\":", "}"),
        ("[", "]"),
        ("{\"a\":[", "]}"),
        ("[{\"\":", "}]"),
    ];
    for (open, close) in openers {
        let deep = format!("{{\"x\":{}1{}}}", open.repeat(DEEP), close.repeat(DEEP));
        let unclosed = format!("{{\"x\":{}", open.repeat(DEEP));
        for text in [deep, unclosed] {
            let result = on_worker_stack(move || json::decode(text.as_bytes()));
            assert!(result.is_err(), "{open}: {result:?}");
        }
    }
    // Nesting a real node might send is fine: 100 levels give one field.
    let text = format!("{}1{}", "{\"a\":".repeat(100), "}".repeat(100));
    let found = on_worker_stack(move || json::decode(text.as_bytes())).unwrap();
    assert_eq!(found.fields.len(), 1);
    // The name is `a_a_..._a` (100 levels), possibly cut to a maximum length.
    let name = &found.fields[0].0;
    assert!(
        vec!["a"; 100].join("_").starts_with(name.as_str()) && name.len() >= 64,
        "{name}"
    );
}

/// Around serde_json's limit, where the recursion is deepest and still allowed: every depth from 100 to
/// 140, objects and arrays, on a worker's stack.
#[test]
fn json_at_the_recursion_limit_fits_a_worker_stack() {
    on_worker_stack(|| {
        for depth in 100..=140 {
            for (open, close) in [("{\"a\":", "}"), ("[", "]")] {
                let text = format!("{{\"x\":{}1{}}}", open.repeat(depth), close.repeat(depth));
                if let Ok(found) = json::decode(text.as_bytes()) {
                    assert_payload_sane(&found, text.len());
                }
            }
        }
    });
}

#[test]
fn packet_decoder_on_deep_json_does_not_overflow_the_stack() {
    let decoder = PacketDecoder {
        crc: CrcMode::Crc16CcittFalse,
        header: HeaderFormat::Node16,
        payload: PayloadFormat::Json,
    };
    let mut bytes = encode_header(HeaderFormat::Node16, 7, 1);
    bytes.extend("{\"a\":".repeat(DEEP).into_bytes());
    let packet = packet(append_crc(CrcMode::Crc16CcittFalse, &bytes));
    let result = on_worker_stack(move || decoder.decode(&packet));
    assert!(matches!(result, Err(DecodeError::Json(_))), "{result:?}");
}

proptest! {
    #![proptest_config(config(64))]

    /// Random mixtures of object and array openers up to 20,000 deep, closed or not: no overflow, and
    /// accepted only when shallow.
    #[test]
    fn json_random_deep_nesting(openers in vec(any::<bool>(), 0..20_000), close in any::<bool>()) {
        let mut text = String::from("{\"x\":");
        for &object in &openers {
            text.push_str(if object { "{\"k\":" } else { "[" });
        }
        text.push('1');
        if close {
            text.extend(openers.iter().rev().map(|&object| if object { '}' } else { ']' }));
            text.push('}');
        }
        let depth = openers.len();
        let result = on_worker_stack(move || json::decode(text.as_bytes()));
        if depth > 200 || !close {
            prop_assert!(result.is_err());
        } else if depth < 100 {
            prop_assert!(result.is_ok(), "{result:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Structured: MySensors
// ---------------------------------------------------------------------------------------------------

/// A header field: mostly valid numbers, sometimes out of range or not a number.
fn ms_field() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0u16..=300).prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec![
            "", "-1", "+1", " 1", "1 ", "01", "007", "0x1", "1.0", "٣", "99999999999999999999", "a",
        ])
        .prop_map(str::to_string),
    ]
}

/// The reference number rule: ASCII digits only, at most `max`.
fn ms_number(text: &str, max: u8) -> Option<u8> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u8>().ok().filter(|&n| n <= max)
}

proptest! {
    #![proptest_config(config(CASES))]

    /// `node;child;command;ack;type;payload` with random fields: refused, ignored or read exactly as
    /// the MySensors serial API says.
    #[test]
    fn mysensors_lines_match_the_spec(
        node in ms_field(),
        child in ms_field(),
        command in prop_oneof![3 => (0u16..=6).prop_map(|n| n.to_string()), 1 => ms_field()],
        ack in prop_oneof![3 => (0u16..=2).prop_map(|n| n.to_string()), 1 => ms_field()],
        value_type in prop_oneof![3 => (0u16..=60).prop_map(|n| n.to_string()), 1 => ms_field()],
        payload in "[a-zA-Z0-9.;+eE-]{0,24}",
        line_end in prop::sample::select(vec!["", "\r", "\r\n", "\n"]),
    ) {
        let line = format!("{node};{child};{command};{ack};{value_type};{payload}{line_end}");
        let result = mysensors::decode(line.as_bytes());
        // The line is trimmed first, so leading blanks of the node id do not count.
        let numbers = (
            ms_number(node.trim_start(), 255),
            ms_number(&child, 255),
            ms_number(&command, 4),
            ms_number(&ack, 1),
            ms_number(&value_type, 255),
        );
        let (Some(node), Some(child), Some(command), Some(_), Some(value_type)) = numbers else {
            prop_assert!(
                matches!(result, Err(DecodeError::MySensorsBadNumber { .. })),
                "{line:?}: {result:?}"
            );
            return Ok(());
        };
        match (command, value_type, result) {
            (1, 0..=56, Ok(Some(found))) | (3, 0, Ok(Some(found))) => {
                prop_assert_eq!(found.address, Some(node.to_string()));
                let (name, value) = &found.fields[0];
                if command == 3 {
                    prop_assert_eq!(name, "battery_level");
                } else {
                    prop_assert!(name.ends_with(&format!("_{child}")), "{}", name);
                }
                match value {
                    Value::Int(i) => prop_assert_eq!(payload.parse::<i64>(), Ok(*i)),
                    Value::Float(f) => prop_assert!(f.is_finite() && payload.parse::<f64>() == Ok(*f)),
                    Value::Text(text) => prop_assert_eq!(text, &payload),
                    Value::Bool(_) => prop_assert!(false, "MySensors gives no booleans"),
                }
            }
            (1, 57.., Err(DecodeError::MySensorsUnknownValueType(t))) => prop_assert_eq!(t, value_type),
            (1, _, result) | (3, 0, result) => prop_assert!(false, "{line:?}: {result:?}"),
            (_, _, result) => prop_assert!(matches!(result, Ok(None)), "{line:?}: {result:?}"),
        }
    }

    /// Fewer than six fields are refused with the count found.
    #[test]
    fn mysensors_short_lines(fields in vec("[0-9]{1,3}", 0..6)) {
        let line = fields.join(";");
        let result = mysensors::decode(line.as_bytes());
        // "" is one (empty) field, as `str::split` counts.
        let refused = matches!(result, Err(DecodeError::MySensorsFieldCount(n)) if n == fields.len().max(1));
        prop_assert!(refused, "{line:?}: {result:?}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Structured: whole valid packets through the combined decoder
// ---------------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES))]

    /// header + LPP + CRC from a node: one reading with the header's address; one changed byte anywhere
    /// is refused by the CRC before anything is decoded.
    #[test]
    fn valid_lpp_packets_decode_and_corruption_is_caught(
        header in prop::sample::select(vec![HeaderFormat::Node16, HeaderFormat::RadioHead]),
        address in any::<u16>(),
        seq in any::<u8>(),
        records in vec(lpp_valid_record(), 0..6),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let payload = records.concat();
        let decoder = PacketDecoder { crc: CrcMode::Crc16CcittFalse, header, payload: PayloadFormat::Lpp };
        let mut body = encode_header(header, address, seq);
        body.extend_from_slice(&payload);
        let good = packet(append_crc(CrcMode::Crc16CcittFalse, &body));
        let readings = decoder.decode(&good).unwrap();
        prop_assert_eq!(readings.len(), 1);
        let expected_address = match header {
            HeaderFormat::RadioHead => (address & 0xFF).to_string(),
            _ => address.to_string(),
        };
        prop_assert_eq!(&readings[0].address, &expected_address);
        prop_assert_eq!(readings[0].seq, Some(u32::from(seq)));
        assert_readings_sane(&readings, &good);

        let mut bad = good.clone();
        let i = at.index(bad.bytes.len());
        bad.bytes[i] ^= flip;
        let refused = matches!(decoder.decode(&bad), Err(DecodeError::Frame(FrameError::CrcMismatch { .. })));
        prop_assert!(refused, "byte {} changed, CRC passed", i);
    }

    /// RadioHead ACKs carry no reading whatever follows them.
    #[test]
    fn radiohead_acks_carry_nothing(flags in any::<u8>(), payload in bytes(64), format in prop::sample::select(PAYLOADS.to_vec())) {
        let decoder = PacketDecoder { crc: CrcMode::None, header: HeaderFormat::RadioHead, payload: format };
        let mut bytes = vec![0xFF, 0x01, 0x02, flags | RADIOHEAD_FLAG_ACK];
        bytes.extend(payload);
        prop_assert_eq!(decoder.decode(&packet(bytes)), Ok(Vec::new()));
    }
}
