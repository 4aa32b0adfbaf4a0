//! Decoding throughput: for every framing × payload combination, a stream of [`FRAMES`] encoded frames
//! goes through `Deframer` and `PacketDecoder` as a serial source would feed it (256-byte reads), and
//! the time per frame is measured on one core. Each reading has three fields; cobs and slip frames carry
//! a node16 header and a CRC-16 trailer, lines frames neither. MySensors sends one value per line, so its
//! three fields take three frames. The timing loop runs on a blocking thread, never on the runtime.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use sensorgate::decode::{encode_header, HeaderFormat, LppWriter, PacketDecoder, PayloadFormat};
use sensorgate::frame::crc::{append_crc, CrcMode};
use sensorgate::frame::{encode_frame, Deframer, Framing};
use sensorgate::model::Packet;

/// Frames per pass over the stream.
pub const FRAMES: usize = 1024;
/// Bytes per simulated read from the port.
const READ_SIZE: usize = 256;
/// The timed rounds of a combination; the fastest counts (the least disturbed by other work).
const ROUNDS: u32 = 5;

const FRAMINGS: [Framing; 3] = [Framing::Lines, Framing::Cobs, Framing::Slip];
const PAYLOADS: [PayloadFormat; 3] = [
    PayloadFormat::Json,
    PayloadFormat::Lpp,
    PayloadFormat::MySensors,
];

/// One combination's figures.
#[derive(Clone, Debug)]
pub struct Row {
    /// `framing × payload`, e.g. `cobs × lpp`.
    pub name: String,
    /// Nanoseconds per frame: cutting, wrapping in a packet, decoding (fastest round).
    pub ns_per_frame: f64,
    /// Mean encoded size of a frame on the wire, bytes.
    pub bytes_per_frame: f64,
}

/// The payloads of one reading. The LPP values are chosen so that no byte is a line end (`\n` or `\r`),
/// which is what lets LPP travel on a lines port at all (binary LPP normally needs cobs or slip).
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
        // Codecs are measured on their own (their decode runs off the pipeline, on the codec's thread).
        PayloadFormat::Codec => Vec::new(),
    }
}

/// The byte stream of [`FRAMES`] frames, and the decoder settings that read it.
pub fn stream(framing: Framing, payload: PayloadFormat) -> (Vec<u8>, PacketDecoder) {
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
pub fn pass(framing: Framing, bytes: &[u8], decoder: &PacketDecoder) -> usize {
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

/// `lines × json`.
pub fn name(framing: Framing, payload: PayloadFormat) -> String {
    format!("{framing:?} × {payload:?}").to_lowercase()
}

/// Times one combination: a warm-up, then [`ROUNDS`] rounds of whole passes; the fastest round's
/// nanoseconds per frame.
fn time(framing: Framing, payload: PayloadFormat, warm_up: Duration, round: Duration) -> Row {
    let (bytes, decoder) = stream(framing, payload);
    let decoded = pass(framing, &bytes, &decoder);
    assert_eq!(
        decoded,
        FRAMES,
        "{}: every frame must decode, or the figure means nothing",
        name(framing, payload)
    );
    let start = Instant::now();
    while start.elapsed() < warm_up {
        black_box(pass(framing, &bytes, &decoder));
    }
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let mut passes = 0u64;
        let start = Instant::now();
        while start.elapsed() < round {
            black_box(pass(framing, &bytes, &decoder));
            passes += 1;
        }
        let ns = start.elapsed().as_nanos() as f64 / (passes * FRAMES as u64) as f64;
        best = best.min(ns);
    }
    Row {
        name: name(framing, payload),
        ns_per_frame: best,
        bytes_per_frame: bytes.len() as f64 / FRAMES as f64,
    }
}

/// Every combination, timed on a blocking thread (about 3 s with `quick`, 11 s without).
pub async fn run(quick: bool) -> Vec<Row> {
    let (warm_up, round) = if quick {
        (Duration::from_millis(50), Duration::from_millis(50))
    } else {
        (Duration::from_millis(200), Duration::from_millis(200))
    };
    tokio::task::spawn_blocking(move || {
        let mut rows = Vec::new();
        for framing in FRAMINGS {
            for payload in PAYLOADS {
                let row = time(framing, payload, warm_up, round);
                eprintln!("  {}: {:.0} ns/frame", row.name, row.ns_per_frame);
                rows.push(row);
            }
        }
        rows
    })
    .await
    .expect("the decoder timing thread failed")
}

/// The markdown section.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = format!(
        "## Decoders\n\n\
         A stream of {} frames per combination goes through the deframer and the packet decoder in\n\
         256-byte reads, as a serial source feeds them, on one core; the figure is the fastest of {ROUNDS}\n\
         timed rounds. Readings carry three fields; cobs and slip frames add a node16 header and a CRC-16,\n\
         lines frames neither; MySensors takes one frame per field.\n\n\
         | framing × payload | bytes/frame | ns/frame | frames/s |\n\
         |---|---:|---:|---:|\n",
        crate::thousands(FRAMES as f64),
    );
    for row in rows {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {} |\n",
            row.name,
            row.bytes_per_frame,
            crate::thousands(row.ns_per_frame),
            crate::thousands(1e9 / row.ns_per_frame.max(1e-9)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_holds_frames_that_all_decode() {
        for framing in FRAMINGS {
            for payload in PAYLOADS {
                let (bytes, decoder) = stream(framing, payload);
                assert_eq!(
                    pass(framing, &bytes, &decoder),
                    FRAMES,
                    "{}",
                    name(framing, payload)
                );
            }
        }
    }

    #[test]
    fn lpp_on_a_lines_port_has_no_line_ends() {
        let lpp = &payloads(PayloadFormat::Lpp)[0];
        assert!(!lpp.iter().any(|b| *b == b'\n' || *b == b'\r'), "{lpp:?}");
    }

    #[test]
    fn the_table_has_a_row_per_combination() {
        let rows = vec![Row {
            name: name(Framing::Cobs, PayloadFormat::Lpp),
            ns_per_frame: 1_250.0,
            bytes_per_frame: 18.0,
        }];
        let text = markdown(&rows);
        assert!(text.starts_with("## Decoders\n"));
        assert!(text.ends_with("|\n"));
        assert!(
            text.contains("| cobs × lpp | 18.0 | 1,250 | 800,000 |"),
            "{text}"
        );
    }
}
