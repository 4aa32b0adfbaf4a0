//! Decoding throughput: for every framing x payload combination, a stream of encoded frames goes through
//! `Deframer` and `PacketDecoder` as a serial source would feed it (256-byte reads), and the time per
//! frame is printed as a markdown table. Each reading has three fields; cobs and slip frames carry a
//! node16 header and a CRC-16 trailer, lines frames neither. MySensors sends one value per line, so its
//! three fields take three frames. Run with `cargo bench --bench decode`.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use sensorgate::decode::{encode_header, HeaderFormat, LppWriter, PacketDecoder, PayloadFormat};
use sensorgate::frame::crc::{append_crc, CrcMode};
use sensorgate::frame::{encode_frame, Deframer, Framing};
use sensorgate::model::Packet;

/// Frames per pass over the stream.
const FRAMES: usize = 1024;
/// Bytes per simulated read from the port.
const READ_SIZE: usize = 256;
const WARM_UP: Duration = Duration::from_millis(100);
const MEASURE: Duration = Duration::from_millis(500);

/// The payloads of one reading. The LPP values are chosen so every byte is printable ASCII, which is
/// what lets LPP travel on a lines port at all (binary LPP normally needs cobs or slip).
fn payloads(format: PayloadFormat) -> Vec<Vec<u8>> {
    match format {
        PayloadFormat::Json => {
            vec![br#"{"id":"17","temperature":21.5,"humidity":48,"battery":3.31}"#.to_vec()]
        }
        PayloadFormat::Lpp => vec![LppWriter::new()
            .temperature(1, 12.3)
            .relative_humidity(2, 50.0)
            .voltage(3, 3.3)
            .into_bytes()],
        PayloadFormat::MySensors => vec![
            b"17;0;1;0;0;21.5".to_vec(),
            b"17;1;1;0;1;48".to_vec(),
            b"17;255;3;0;0;87".to_vec(),
        ],
    }
}

/// The byte stream of `FRAMES` frames, and the decoder settings that read it.
fn stream(framing: Framing, payload: PayloadFormat) -> (Vec<u8>, PacketDecoder) {
    let (crc, header) = match framing {
        Framing::Lines => (CrcMode::None, HeaderFormat::None),
        Framing::Cobs | Framing::Slip => (CrcMode::Crc16CcittFalse, HeaderFormat::Node16),
    };
    let messages = payloads(payload);
    let mut bytes = Vec::new();
    for i in 0..FRAMES {
        let mut body = encode_header(header, 17, i as u8);
        body.extend_from_slice(&messages[i % messages.len()]);
        bytes.extend(encode_frame(framing, &append_crc(crc, &body)));
    }
    (
        bytes,
        PacketDecoder {
            crc,
            header,
            payload,
        },
    )
}

/// One pass: every frame cut, wrapped in a packet and decoded. Returns how many frames decoded.
fn pass(framing: Framing, bytes: &[u8], decoder: &PacketDecoder) -> usize {
    let mut deframer = Deframer::new(framing, 512);
    let mut frames = 0;
    for read in bytes.chunks(READ_SIZE) {
        deframer.push(black_box(read));
        while let Some(frame) = deframer.next_frame() {
            let Ok(frame) = frame else { continue };
            let packet = Packet {
                source: "uart0".to_string(),
                bytes: frame,
                received_at: SystemTime::UNIX_EPOCH,
                radio: None,
            };
            if let Ok(readings) = decoder.decode(&packet) {
                black_box(readings);
                frames += 1;
            }
        }
    }
    frames
}

fn main() {
    println!("| combination | ns/frame | frames/s |");
    println!("|---|---:|---:|");
    for framing in [Framing::Lines, Framing::Cobs, Framing::Slip] {
        for payload in [
            PayloadFormat::Json,
            PayloadFormat::Lpp,
            PayloadFormat::MySensors,
        ] {
            let (bytes, decoder) = stream(framing, payload);
            let decoded = pass(framing, &bytes, &decoder);
            assert_eq!(
                decoded, FRAMES,
                "{framing:?} x {payload:?}: every frame must decode"
            );

            let start = Instant::now();
            while start.elapsed() < WARM_UP {
                black_box(pass(framing, &bytes, &decoder));
            }
            let mut passes = 0u64;
            let start = Instant::now();
            while start.elapsed() < MEASURE {
                black_box(pass(framing, &bytes, &decoder));
                passes += 1;
            }
            let elapsed = start.elapsed();
            let ns_per_frame = elapsed.as_nanos() as f64 / (passes as f64 * FRAMES as f64);
            let name = format!("{framing:?} x {payload:?}").to_lowercase();
            println!("| {name} | {ns_per_frame:.0} | {:.0} |", 1e9 / ns_per_frame);
        }
    }
}
