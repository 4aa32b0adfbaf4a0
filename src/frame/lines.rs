//! Text lines: frames end at `\n`; a trailing `\r` is dropped (so `\r\n` works), blank lines are
//! skipped, and a line must be valid UTF-8. This module knows what makes a finished line acceptable and
//! how to write one; it never buffers the stream itself (the [`Deframer`](super::Deframer) does) and never
//! parses what the line says.

use super::FrameError;

/// The byte that ends every line.
pub const DELIMITER: u8 = b'\n';

/// `payload` followed by `\n`. The payload is expected to be one line of text: a `\n` inside it would
/// split it in two at the receiver.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 1);
    out.extend_from_slice(payload);
    out.push(DELIMITER);
    out
}

/// How many bytes a line may hold while it is still being received: `max` plus a `\r` that is dropped
/// when the line ends.
pub(crate) fn buffer_limit(max: usize) -> usize {
    max.saturating_add(1)
}

/// Judges a complete line (its `\n` already removed): drops a trailing `\r`, skips it (`None`) when it
/// is blank (empty or only ASCII whitespace), refuses it when longer than `max` or not UTF-8.
pub(crate) fn finish(mut line: Vec<u8>, max: usize) -> Option<Result<Vec<u8>, FrameError>> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > max {
        return Some(Err(FrameError::TooLong { max }));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if std::str::from_utf8(&line).is_err() {
        return Some(Err(FrameError::NotUtf8));
    }
    Some(Ok(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_blank_and_utf8() {
        assert_eq!(finish(b"abc\r".to_vec(), 10), Some(Ok(b"abc".to_vec())));
        assert_eq!(finish(b"abc".to_vec(), 10), Some(Ok(b"abc".to_vec())));
        assert_eq!(finish(b"\r".to_vec(), 10), None);
        assert_eq!(finish(b"  \t".to_vec(), 10), None);
        assert_eq!(
            finish("température".as_bytes().to_vec(), 20).map(|r| r.is_ok()),
            Some(true)
        );
        assert_eq!(
            finish(vec![0x61, 0xFF, 0x62], 10),
            Some(Err(FrameError::NotUtf8))
        );
    }

    #[test]
    fn length_is_counted_without_the_cr() {
        assert_eq!(finish(b"abc\r".to_vec(), 3), Some(Ok(b"abc".to_vec())));
        assert_eq!(
            finish(b"abcd".to_vec(), 3),
            Some(Err(FrameError::TooLong { max: 3 }))
        );
        assert_eq!(encode(b"{}"), b"{}\n");
    }
}
