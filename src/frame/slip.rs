//! SLIP (RFC 1055): frames end at END (0xC0); END and ESC (0xDB) inside a frame are sent as ESC ESC_END
//! (DB DC) and ESC ESC_ESC (DB DD). This module encodes a payload and undoes the escaping incrementally
//! as bytes arrive; it never buffers the stream itself (the [`Deframer`](super::Deframer) does) and never
//! looks at what the payload means.

use super::FrameError;

/// Ends (and, when sending, also starts) every frame.
pub const END: u8 = 0xC0;
/// Starts a two-byte escape.
pub const ESC: u8 = 0xDB;
/// After ESC: a literal END.
pub const ESC_END: u8 = 0xDC;
/// After ESC: a literal ESC.
pub const ESC_ESC: u8 = 0xDD;

/// SLIP-encodes `payload` as a whole frame: END, the escaped bytes, END. The leading END flushes any line
/// noise the receiver has buffered, as RFC 1055 recommends. `01 C0 DB 02` becomes
/// `C0 01 DB DC DB DD 02 C0`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 8 + 2);
    out.push(END);
    for &byte in payload {
        match byte {
            END => out.extend_from_slice(&[ESC, ESC_END]),
            ESC => out.extend_from_slice(&[ESC, ESC_ESC]),
            other => out.push(other),
        }
    }
    out.push(END);
    out
}

/// The state of undoing SLIP escapes across reads: whether the last byte seen was an ESC.
#[derive(Debug, Default, Clone)]
pub(crate) struct SlipDecoder {
    escaped: bool,
}

impl SlipDecoder {
    /// Unescapes `segment` (bytes of one frame, no END among them) onto `frame`, refusing to let `frame`
    /// grow past `max` bytes. ESC followed by anything but ESC_END or ESC_ESC is an error.
    pub(crate) fn feed(
        &mut self,
        segment: &[u8],
        frame: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), FrameError> {
        for &byte in segment {
            let decoded = if self.escaped {
                self.escaped = false;
                match byte {
                    ESC_END => END,
                    ESC_ESC => ESC,
                    other => return Err(FrameError::BadSlipEscape(other)),
                }
            } else if byte == ESC {
                self.escaped = true;
                continue;
            } else {
                byte
            };
            if frame.len() >= max {
                return Err(FrameError::TooLong { max });
            }
            frame.push(decoded);
        }
        Ok(())
    }

    /// Ends the frame at its END: a frame must not end inside an escape. Resets for the next frame.
    pub(crate) fn finish(&mut self) -> Result<(), FrameError> {
        let dangling = self.escaped;
        self.reset();
        if dangling {
            Err(FrameError::BadSlipEscape(END))
        } else {
            Ok(())
        }
    }

    /// Forgets a frame in progress.
    pub(crate) fn reset(&mut self) {
        self.escaped = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut decoder = SlipDecoder::default();
        let mut out = Vec::new();
        decoder.feed(body, &mut out, usize::MAX)?;
        decoder.finish()?;
        Ok(out)
    }

    #[test]
    fn reference_vector() {
        let encoded = encode(&[0x01, 0xC0, 0xDB, 0x02]);
        assert_eq!(encoded, [0xC0, 0x01, 0xDB, 0xDC, 0xDB, 0xDD, 0x02, 0xC0]);
        assert_eq!(decode(&encoded[1..7]).unwrap(), [0x01, 0xC0, 0xDB, 0x02]);
    }

    #[test]
    fn escape_split_across_reads() {
        let mut decoder = SlipDecoder::default();
        let mut out = Vec::new();
        decoder.feed(&[0x01, ESC], &mut out, 16).unwrap();
        decoder.feed(&[ESC_END, 0x02], &mut out, 16).unwrap();
        decoder.finish().unwrap();
        assert_eq!(out, [0x01, END, 0x02]);
    }

    #[test]
    fn bad_escapes_are_refused() {
        assert_eq!(
            decode(&[0x01, ESC, 0x41]),
            Err(FrameError::BadSlipEscape(0x41))
        );
        // ESC right before END.
        assert_eq!(decode(&[0x01, ESC]), Err(FrameError::BadSlipEscape(END)));
    }

    #[test]
    fn output_is_bounded() {
        let mut decoder = SlipDecoder::default();
        let mut out = Vec::new();
        assert_eq!(
            decoder.feed(&[1, 2, 3, 4], &mut out, 3),
            Err(FrameError::TooLong { max: 3 })
        );
        assert_eq!(out.len(), 3);
    }
}
