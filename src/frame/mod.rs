//! Framing: turns the byte stream of a serial port into frames ([`Deframer`]) and payloads back into
//! stream bytes ([`encode_frame`]). It owns the three delimiting schemes (text lines, COBS, SLIP), the
//! bound on a frame's size and resynchronisation after garbage, plus the CRC trailer ([`crc`]). It never
//! does IO (callers push the bytes they read), never keeps more than one partial frame, and never looks
//! at what a frame says: that is `decode`'s job.

pub mod cobs;
pub mod crc;
pub mod lines;
pub mod slip;

pub use crc::CrcMode;

/// Why a frame was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame longer than {max} bytes")]
    TooLong { max: usize },
    /// The radio reported a payload CRC error (the chip checked it, the bytes are garbage).
    #[error("radio payload CRC error")]
    RadioCrc,
    /// The radio reported a header error, or a packet without a CRC when one is required.
    #[error("radio header error: {0}")]
    RadioHeader(String),
    /// A text line that is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// A COBS frame whose code bytes do not fit its length.
    #[error("malformed COBS: {0}")]
    MalformedCobs(&'static str),
    /// A SLIP ESC followed by a byte other than ESC_END or ESC_ESC (END: the frame ended inside it).
    #[error("bad SLIP escape DB {0:02X}")]
    BadSlipEscape(u8),
    /// A frame shorter than the CRC trailer it should carry.
    #[error("frame of {len} bytes is too short for a CRC-16 trailer")]
    CrcTooShort { len: usize },
    /// The CRC trailer does not match the payload.
    #[error("CRC mismatch: computed {computed:04X}, received {received:04X}")]
    CrcMismatch { computed: u16, received: u16 },
}

/// How a byte stream is cut into frames; set per source (`framing = "lines" | "cobs" | "slip"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Framing {
    /// UTF-8 text, one frame per `\n` (`\r\n` accepted).
    Lines,
    /// COBS-stuffed frames, each ended by 0x00.
    Cobs,
    /// SLIP (RFC 1055) frames between END (0xC0) bytes.
    Slip,
}

/// The per-framing part of the cutting: how a frame's bytes are unstuffed and how it is judged at its end.
#[derive(Debug, Clone)]
enum Unstuffer {
    Lines,
    Cobs(cobs::CobsDecoder),
    Slip(slip::SlipDecoder),
}

impl Unstuffer {
    fn new(framing: Framing) -> Self {
        match framing {
            Framing::Lines => Unstuffer::Lines,
            Framing::Cobs => Unstuffer::Cobs(cobs::CobsDecoder::default()),
            Framing::Slip => Unstuffer::Slip(slip::SlipDecoder::default()),
        }
    }

    fn delimiter(&self) -> u8 {
        match self {
            Unstuffer::Lines => lines::DELIMITER,
            Unstuffer::Cobs(_) => cobs::DELIMITER,
            Unstuffer::Slip(_) => slip::END,
        }
    }

    /// Adds `segment` (no delimiter in it) to the frame in progress.
    fn feed(&mut self, segment: &[u8], frame: &mut Vec<u8>, max: usize) -> Result<(), FrameError> {
        match self {
            Unstuffer::Lines => {
                if frame.len().saturating_add(segment.len()) > lines::buffer_limit(max) {
                    return Err(FrameError::TooLong { max });
                }
                frame.extend_from_slice(segment);
                Ok(())
            }
            Unstuffer::Cobs(decoder) => decoder.feed(segment, frame, max),
            Unstuffer::Slip(decoder) => decoder.feed(segment, frame, max),
        }
    }

    /// Judges a frame at its delimiter: `None` skips it (empty or blank), otherwise the frame or why not.
    fn finish(&mut self, frame: Vec<u8>, max: usize) -> Option<Result<Vec<u8>, FrameError>> {
        let ended = match self {
            Unstuffer::Lines => return lines::finish(frame, max),
            Unstuffer::Cobs(decoder) => decoder.finish(),
            Unstuffer::Slip(decoder) => decoder.finish(),
        };
        match ended {
            Err(error) => Some(Err(error)),
            Ok(()) if frame.is_empty() => None,
            Ok(()) => Some(Ok(frame)),
        }
    }

    fn reset(&mut self) {
        match self {
            Unstuffer::Lines => {}
            Unstuffer::Cobs(decoder) => decoder.reset(),
            Unstuffer::Slip(decoder) => decoder.reset(),
        }
    }
}

/// Cuts a byte stream into frames: [`push`](Self::push) what was read, then call
/// [`next_frame`](Self::next_frame) until it returns `None`.
///
/// Whatever arrives, the deframer holds at most `max_frame_len` (+1 for a line's `\r`) bytes of the
/// frame in progress besides the pushed bytes it has not scanned yet. A frame that grows past the limit
/// is reported as [`FrameError::TooLong`] at once, and the rest of it is skipped up to the next delimiter.
/// A malformed frame (bad UTF-8, bad COBS, bad SLIP escape) is reported and skipped the same way; the
/// frame after it decodes normally. Empty frames (and blank lines) are skipped silently.
#[derive(Debug, Clone)]
pub struct Deframer {
    unstuffer: Unstuffer,
    max_frame_len: usize,
    /// Pushed bytes; those before `scanned` are consumed.
    input: Vec<u8>,
    scanned: usize,
    /// The unstuffed bytes of the frame in progress.
    frame: Vec<u8>,
    /// Set after an error in mid-frame: skip to the next delimiter.
    skipping: bool,
}

impl Deframer {
    /// A deframer for `framing` that refuses frames longer than `max_frame_len` bytes (after unstuffing,
    /// before the CRC is checked; for lines, without `\r\n`).
    pub fn new(framing: Framing, max_frame_len: usize) -> Self {
        Deframer {
            unstuffer: Unstuffer::new(framing),
            max_frame_len,
            input: Vec::new(),
            scanned: 0,
            frame: Vec::new(),
            skipping: false,
        }
    }

    /// Appends received bytes. Call [`next_frame`](Self::next_frame) until `None` afterwards, so the
    /// bytes are consumed and not merely kept.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.scanned > 0 {
            self.input.drain(..self.scanned);
            self.scanned = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next complete frame, or why it was refused; `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        let max = self.max_frame_len;
        let delimiter = self.unstuffer.delimiter();
        loop {
            let rest = &self.input[self.scanned..];
            if rest.is_empty() {
                self.input.clear();
                self.scanned = 0;
                return None;
            }
            let (segment, at_delimiter) = match rest.iter().position(|&b| b == delimiter) {
                Some(end) => (&rest[..end], true),
                None => (rest, false),
            };
            self.scanned += segment.len() + usize::from(at_delimiter);

            if self.skipping {
                if at_delimiter {
                    self.skipping = false;
                }
                continue;
            }
            if let Err(error) = self.unstuffer.feed(segment, &mut self.frame, max) {
                self.frame.clear();
                self.unstuffer.reset();
                self.skipping = !at_delimiter;
                return Some(Err(error));
            }
            if at_delimiter {
                // A copy of exactly the frame's size; the working buffer keeps its capacity.
                let frame = self.frame.clone();
                self.frame.clear();
                if let Some(result) = self.unstuffer.finish(frame, max) {
                    return Some(result);
                }
            }
        }
    }
}

/// `payload` as it goes on the wire with `framing`: a line and `\n`, COBS and 0x00, or END, SLIP, END.
/// A CRC trailer, if any, must already be part of `payload` ([`crc::append_crc`]).
pub fn encode_frame(framing: Framing, payload: &[u8]) -> Vec<u8> {
    match framing {
        Framing::Lines => lines::encode(payload),
        Framing::Cobs => {
            let mut out = cobs::encode(payload);
            out.push(cobs::DELIMITER);
            out
        }
        Framing::Slip => slip::encode(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(deframer: &mut Deframer) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut out = Vec::new();
        while let Some(frame) = deframer.next_frame() {
            out.push(frame);
            assert!(out.len() < 100_000, "next_frame never returned None");
        }
        out
    }

    fn frames_of(framing: Framing, max: usize, stream: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut deframer = Deframer::new(framing, max);
        deframer.push(stream);
        drain(&mut deframer)
    }

    #[test]
    fn framing_names_parse() {
        let parse = |s: &str| serde_json::from_str::<Framing>(&format!("\"{s}\""));
        assert_eq!(parse("lines").unwrap(), Framing::Lines);
        assert_eq!(parse("cobs").unwrap(), Framing::Cobs);
        assert_eq!(parse("slip").unwrap(), Framing::Slip);
        assert!(parse("Lines").is_err());
    }

    #[test]
    fn lines_split_strip_cr_and_skip_blanks() {
        let frames = frames_of(Framing::Lines, 64, b"one\r\n\n  \r\ntwo\nthree");
        assert_eq!(frames, vec![Ok(b"one".to_vec()), Ok(b"two".to_vec())]);
    }

    #[test]
    fn binary_noise_on_a_lines_port_spares_the_next_line() {
        let mut stream = vec![0xFF, 0xFE, 0x00, 0x80, b'x', 0xC3];
        stream.extend_from_slice(b"\n{\"t\":1}\n");
        let frames = frames_of(Framing::Lines, 64, &stream);
        assert_eq!(
            frames,
            vec![Err(FrameError::NotUtf8), Ok(b"{\"t\":1}".to_vec())]
        );
    }

    #[test]
    fn oversized_line_is_reported_once_and_skipped_without_buffering() {
        let mut deframer = Deframer::new(Framing::Lines, 16);
        let mut errors = 0;
        // 10 000 bytes with no newline, pushed in pieces.
        for _ in 0..100 {
            deframer.push(&[b'a'; 100]);
            for frame in drain(&mut deframer) {
                assert_eq!(frame, Err(FrameError::TooLong { max: 16 }));
                errors += 1;
            }
            assert!(deframer.frame.len() <= 17 && deframer.input.is_empty());
        }
        deframer.push(b"tail of the long one\nok\n");
        assert_eq!(drain(&mut deframer), vec![Ok(b"ok".to_vec())]);
        assert_eq!(errors, 1);
    }

    #[test]
    fn long_line_ending_in_one_read_is_refused() {
        let mut stream = vec![b'b'; 40];
        stream.extend_from_slice(b"\nshort\n");
        let frames = frames_of(Framing::Lines, 16, &stream);
        assert_eq!(
            frames,
            vec![Err(FrameError::TooLong { max: 16 }), Ok(b"short".to_vec())]
        );
        // Exactly max bytes, with and without \r, is fine.
        let frames = frames_of(Framing::Lines, 4, b"abcd\r\nabcd\nabcde\n");
        assert_eq!(
            frames,
            vec![
                Ok(b"abcd".to_vec()),
                Ok(b"abcd".to_vec()),
                Err(FrameError::TooLong { max: 4 })
            ]
        );
    }

    #[test]
    fn cobs_reference_vectors_through_the_deframer() {
        let stream = [
            0x01, 0x01, 0x00, // 00
            0x01, 0x01, 0x01, 0x00, // 00 00
            0x03, 0x11, 0x22, 0x02, 0x33, 0x00, // 11 22 00 33
            0x05, 0x11, 0x22, 0x33, 0x44, 0x00, // 11 22 33 44
        ];
        let frames = frames_of(Framing::Cobs, 64, &stream);
        assert_eq!(
            frames,
            vec![
                Ok(vec![0x00]),
                Ok(vec![0x00, 0x00]),
                Ok(vec![0x11, 0x22, 0x00, 0x33]),
                Ok(vec![0x11, 0x22, 0x33, 0x44]),
            ]
        );
    }

    #[test]
    fn malformed_cobs_resyncs_at_next_zero() {
        // Empty frames (00 00) are skipped; 05 11 promises 4 bytes and gets 1.
        let stream = [0x00, 0x00, 0x05, 0x11, 0x00, 0x02, 0x41, 0x00];
        let frames = frames_of(Framing::Cobs, 64, &stream);
        assert!(matches!(frames[0], Err(FrameError::MalformedCobs(_))));
        assert_eq!(frames[1..], [Ok(vec![0x41])]);
    }

    #[test]
    fn oversized_cobs_frame_is_skipped() {
        let mut stream = encode_frame(Framing::Cobs, &[0x55; 300]);
        stream.extend(encode_frame(Framing::Cobs, b"ok"));
        let frames = frames_of(Framing::Cobs, 100, &stream);
        assert_eq!(
            frames,
            vec![Err(FrameError::TooLong { max: 100 }), Ok(b"ok".to_vec())]
        );
    }

    #[test]
    fn slip_reference_vector_and_empty_frames() {
        let mut stream = vec![0xC0, 0xC0, 0xC0];
        stream.extend_from_slice(&[0xC0, 0x01, 0xDB, 0xDC, 0xDB, 0xDD, 0x02, 0xC0]);
        let frames = frames_of(Framing::Slip, 64, &stream);
        assert_eq!(frames, vec![Ok(vec![0x01, 0xC0, 0xDB, 0x02])]);
        assert_eq!(
            encode_frame(Framing::Slip, &[0x01, 0xC0, 0xDB, 0x02]),
            [0xC0, 0x01, 0xDB, 0xDC, 0xDB, 0xDD, 0x02, 0xC0]
        );
    }

    #[test]
    fn bad_slip_escape_resyncs_at_next_end() {
        let stream = [
            0xC0, 0x01, 0xDB, 0x41, 0x42, 0xC0, 0x07, 0xC0, 0x09, 0xDB, 0xC0, 0x0A, 0xC0,
        ];
        let frames = frames_of(Framing::Slip, 64, &stream);
        assert_eq!(
            frames,
            vec![
                Err(FrameError::BadSlipEscape(0x41)),
                Ok(vec![0x07]),
                Err(FrameError::BadSlipEscape(0xC0)),
                Ok(vec![0x0A]),
            ]
        );
    }

    #[test]
    fn oversized_slip_frame_is_skipped_while_streaming() {
        let mut deframer = Deframer::new(Framing::Slip, 8);
        deframer.push(&[0x11; 5]);
        assert_eq!(drain(&mut deframer), vec![]);
        deframer.push(&[0x11; 50]);
        assert_eq!(
            drain(&mut deframer),
            vec![Err(FrameError::TooLong { max: 8 })]
        );
        deframer.push(&[0x11, 0xC0, 0x22, 0xC0]);
        assert_eq!(drain(&mut deframer), vec![Ok(vec![0x22])]);
    }

    #[test]
    fn byte_at_a_time_equals_all_at_once() {
        for framing in [Framing::Lines, Framing::Cobs, Framing::Slip] {
            let payloads: [&[u8]; 3] = [b"first", b"se\xC3\xA9cond", b"3"];
            let stream: Vec<u8> = payloads
                .iter()
                .flat_map(|p| encode_frame(framing, p))
                .collect();
            let mut deframer = Deframer::new(framing, 64);
            let mut frames = Vec::new();
            for byte in &stream {
                deframer.push(std::slice::from_ref(byte));
                frames.extend(drain(&mut deframer));
            }
            assert_eq!(frames, frames_of(framing, 64, &stream), "{framing:?}");
            let expected: Vec<_> = payloads.iter().map(|p| Ok(p.to_vec())).collect();
            assert_eq!(frames, expected, "{framing:?}");
        }
    }

    #[test]
    fn random_bytes_never_panic_and_stay_bounded() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for framing in [Framing::Lines, Framing::Cobs, Framing::Slip] {
            let mut deframer = Deframer::new(framing, 32);
            for _ in 0..3000 {
                let len = (next() % 64) as usize;
                let chunk: Vec<u8> = (0..len)
                    .map(|_| {
                        // Bias towards the special bytes so every path is taken.
                        let r = next();
                        match r % 8 {
                            0 => 0x00,
                            1 => 0xC0,
                            2 => 0xDB,
                            3 => b'\n',
                            _ => (r >> 8) as u8,
                        }
                    })
                    .collect();
                deframer.push(&chunk);
                for frame in drain(&mut deframer).into_iter().flatten() {
                    assert!(!frame.is_empty() && frame.len() <= 32);
                }
                assert!(deframer.frame.len() <= 33);
            }
        }
    }
}
