//! COBS (Consistent Overhead Byte Stuffing): frames end at a 0x00 byte, and the frame body is stuffed
//! so it never contains one. This module encodes a payload and undoes the stuffing incrementally as
//! bytes arrive; it never buffers the stream itself (the [`Deframer`](super::Deframer) does) and never
//! looks at what the payload means.

use super::FrameError;

/// The byte that ends every COBS frame.
pub const DELIMITER: u8 = 0x00;

/// Longest run a single code byte can describe (code 0xFF: 254 data bytes, no implied zero).
const MAX_RUN: usize = 254;

/// COBS-encodes `payload` (without the trailing 0x00 delimiter).
/// `11 22 00 33` becomes `03 11 22 02 33`; an empty payload becomes `01`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / MAX_RUN + 2);
    let mut code_at = out.len();
    out.push(0);
    let mut run = 0usize;
    for &byte in payload {
        if byte == 0 {
            out[code_at] = (run + 1) as u8;
            code_at = out.len();
            out.push(0);
            run = 0;
        } else {
            out.push(byte);
            run += 1;
            if run == MAX_RUN {
                out[code_at] = 0xFF;
                code_at = out.len();
                out.push(0);
                run = 0;
            }
        }
    }
    out[code_at] = (run + 1) as u8;
    out
}

/// Decodes one COBS frame body (the bytes before its 0x00), in one go; for tests and tools.
pub fn decode(encoded: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut decoder = CobsDecoder::default();
    let mut out = Vec::with_capacity(encoded.len());
    decoder.feed(encoded, &mut out, usize::MAX)?;
    decoder.finish()?;
    Ok(out)
}

/// The state of undoing COBS across reads: where the current block ends and whether it ends in a zero.
#[derive(Debug, Default, Clone)]
pub(crate) struct CobsDecoder {
    /// Data bytes left in the current block; 0 means the next byte is a code byte.
    remaining: u8,
    /// Whether the current block is followed by an implied zero (its code was below 0xFF). It is
    /// written only when another block follows, since the last block's zero is the delimiter.
    zero_pending: bool,
}

impl CobsDecoder {
    /// Decodes `segment` (bytes of one frame, no delimiter among them) onto `frame`, refusing to let
    /// `frame` grow past `max` bytes.
    pub(crate) fn feed(
        &mut self,
        segment: &[u8],
        frame: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), FrameError> {
        let mut rest = segment;
        while let Some((&first, tail)) = rest.split_first() {
            if self.remaining == 0 {
                if first == DELIMITER {
                    return Err(FrameError::MalformedCobs("zero byte inside a frame"));
                }
                if self.zero_pending {
                    push_bounded(frame, &[0], max)?;
                }
                self.remaining = first - 1;
                self.zero_pending = first != 0xFF;
                rest = tail;
            } else {
                let take = usize::from(self.remaining).min(rest.len());
                let (data, tail) = rest.split_at(take);
                if data.contains(&DELIMITER) {
                    return Err(FrameError::MalformedCobs("zero byte inside a frame"));
                }
                push_bounded(frame, data, max)?;
                self.remaining -= take as u8;
                rest = tail;
            }
        }
        Ok(())
    }

    /// Ends the frame at its delimiter: the last block must be complete. Resets for the next frame.
    pub(crate) fn finish(&mut self) -> Result<(), FrameError> {
        let complete = self.remaining == 0;
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(FrameError::MalformedCobs(
                "block runs past the end of the frame",
            ))
        }
    }

    /// Forgets a frame in progress.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

fn push_bounded(frame: &mut Vec<u8>, bytes: &[u8], max: usize) -> Result<(), FrameError> {
    if frame.len().saturating_add(bytes.len()) > max {
        return Err(FrameError::TooLong { max });
    }
    frame.extend_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTORS: &[(&[u8], &[u8])] = &[
        (&[0x00], &[0x01, 0x01]),
        (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
        (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
        (&[0x11, 0x22, 0x33, 0x44], &[0x05, 0x11, 0x22, 0x33, 0x44]),
        (&[], &[0x01]),
    ];

    #[test]
    fn reference_vectors_encode_and_decode() {
        for &(plain, encoded) in VECTORS {
            assert_eq!(encode(plain), encoded, "encode {plain:02X?}");
            assert_eq!(decode(encoded).unwrap(), plain, "decode {encoded:02X?}");
        }
    }

    #[test]
    fn long_runs_use_code_ff() {
        let plain: Vec<u8> = (1..=254).collect();
        let encoded = encode(&plain);
        assert_eq!(encoded[0], 0xFF);
        assert_eq!(encoded.len(), 256);
        assert_eq!(*encoded.last().unwrap(), 0x01);
        assert_eq!(decode(&encoded).unwrap(), plain);

        let plain: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        assert_eq!(decode(&encode(&plain)).unwrap(), plain);
    }

    #[test]
    fn decoding_in_pieces_equals_decoding_at_once() {
        let plain: Vec<u8> = (0..600u32).map(|i| (i % 5) as u8).collect();
        let encoded = encode(&plain);
        for piece in [1, 2, 3, 254, 255] {
            let mut decoder = CobsDecoder::default();
            let mut out = Vec::new();
            for chunk in encoded.chunks(piece) {
                decoder.feed(chunk, &mut out, usize::MAX).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(out, plain, "pieces of {piece}");
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        // The code byte promises 4 data bytes, the frame has 2.
        assert!(matches!(
            decode(&[0x05, 0x11, 0x22]),
            Err(FrameError::MalformedCobs(_))
        ));
        assert!(matches!(
            decode(&[0x02, 0x00]),
            Err(FrameError::MalformedCobs(_))
        ));
    }

    #[test]
    fn output_is_bounded() {
        let mut decoder = CobsDecoder::default();
        let mut out = Vec::new();
        assert_eq!(
            decoder.feed(&encode(&[7; 10]), &mut out, 9),
            Err(FrameError::TooLong { max: 9 })
        );
        assert!(out.len() <= 9);
    }
}
