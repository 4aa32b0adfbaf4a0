//! The record framing of the append-only logs on disk (the uplink spool, its refused-message file and the
//! retained log): `u32 LE body length | u32 LE CRC-32 of the body | body`. It owns writing a record
//! around a body and checking one read back (length within bounds, checksum), and where a run of valid
//! records ends, which is where a torn or corrupt tail is cut. What a body holds is its log's business:
//! this module never looks inside one, and never does IO.

use std::ops::RangeInclusive;

/// Bytes before each body: its length and its CRC-32.
pub const HEADER: usize = 8;

/// Appends one record to `buf`: `write_body` appends the body, and the length and checksum in front of
/// it are filled in afterwards.
pub fn append(buf: &mut Vec<u8>, write_body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; HEADER]);
    write_body(buf);
    let body = &buf[start + HEADER..];
    let len = body.len() as u32;
    let crc = crc32fast::hash(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// A record's header as read back, its body length already within the bounds the log allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    body_len: usize,
    crc: u32,
}

impl Header {
    /// Reads the header at the start of `bytes`; `None` when there are fewer than [`HEADER`] bytes or
    /// the stated length is outside `body_lens` (a torn or corrupt record).
    pub fn parse(bytes: &[u8], body_lens: &RangeInclusive<usize>) -> Option<Header> {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(bytes.get(4..HEADER)?.try_into().ok()?);
        body_lens
            .contains(&len)
            .then_some(Header { body_len: len, crc })
    }

    /// Bytes of the body that follows.
    pub fn body_len(&self) -> usize {
        self.body_len
    }

    /// Bytes of the whole record, header included.
    pub fn record_len(&self) -> usize {
        HEADER + self.body_len
    }

    /// Whether `body` is the body this header was written for.
    pub fn matches(&self, body: &[u8]) -> bool {
        body.len() == self.body_len && crc32fast::hash(body) == self.crc
    }
}

/// The body of the record at `at` in `bytes` and the offset after it, or `None` when the record there is
/// torn (the bytes end inside it) or corrupt (a length outside `body_lens`, a wrong checksum).
pub fn body_at<'a>(
    bytes: &'a [u8],
    at: usize,
    body_lens: &RangeInclusive<usize>,
) -> Option<(&'a [u8], usize)> {
    let header = Header::parse(bytes.get(at..)?, body_lens)?;
    let body = bytes.get(at + HEADER..at + header.record_len())?;
    header
        .matches(body)
        .then_some((body, at + header.record_len()))
}

/// Walks the records of `bytes` from `at` on while they are valid: each body checked by [`body_at`] and
/// then handed to `accept`, which takes it or refuses it (`false`: its fields are inconsistent). Returns
/// where the valid records end; anything after that offset is a torn or corrupt tail.
pub fn valid_prefix(
    bytes: &[u8],
    mut at: usize,
    body_lens: &RangeInclusive<usize>,
    mut accept: impl FnMut(&[u8]) -> bool,
) -> usize {
    while let Some((body, next)) = body_at(bytes, at, body_lens) {
        if !accept(body) {
            break;
        }
        at = next;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: RangeInclusive<usize> = 0..=1024;

    fn two_records() -> Vec<u8> {
        let mut buf = Vec::new();
        append(&mut buf, |b| b.extend_from_slice(b"first"));
        append(&mut buf, |b| b.extend_from_slice(b"second!"));
        buf
    }

    #[test]
    fn a_record_is_its_length_its_checksum_and_its_body() {
        let mut buf = vec![0xAA];
        append(&mut buf, |b| b.extend_from_slice(b"body"));
        assert_eq!(&buf[1..5], &4u32.to_le_bytes());
        assert_eq!(&buf[5..9], &crc32fast::hash(b"body").to_le_bytes());
        assert_eq!(&buf[9..], b"body");
    }

    #[test]
    fn records_read_back_in_order_up_to_the_end() {
        let buf = two_records();
        let (first, next) = body_at(&buf, 0, &ANY).unwrap();
        assert_eq!(first, b"first");
        let (second, end) = body_at(&buf, next, &ANY).unwrap();
        assert_eq!(second, b"second!");
        assert_eq!(end, buf.len());
        assert_eq!(body_at(&buf, end, &ANY), None);
    }

    #[test]
    fn a_torn_tail_ends_the_valid_prefix_at_the_last_whole_record() {
        let buf = two_records();
        let first_end = HEADER + 5;
        for cut in first_end..buf.len() {
            let mut bodies = Vec::new();
            let end = valid_prefix(&buf[..cut], 0, &ANY, |b| {
                bodies.push(b.to_vec());
                true
            });
            assert_eq!(bodies, vec![b"first".to_vec()], "cut at {cut}");
            assert_eq!(end, first_end, "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_a_length_out_of_bounds_or_a_refused_body_ends_the_prefix() {
        let mut flipped = two_records();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(valid_prefix(&flipped, 0, &ANY, |_| true), HEADER + 5);

        let buf = two_records();
        assert_eq!(valid_prefix(&buf, 0, &(0..=6), |_| true), HEADER + 5);
        assert_eq!(valid_prefix(&buf, 0, &(6..=9), |_| true), 0);
        assert_eq!(valid_prefix(&buf, 0, &ANY, |b| b != b"second!"), HEADER + 5);
    }

    #[test]
    fn a_header_read_back_states_the_body_it_checks() {
        let buf = two_records();
        let header = Header::parse(&buf, &ANY).unwrap();
        assert_eq!(header.body_len(), 5);
        assert_eq!(header.record_len(), HEADER + 5);
        assert!(header.matches(b"first"));
        assert!(!header.matches(b"firsT"));
        assert_eq!(Header::parse(&buf[..HEADER - 1], &ANY), None);
    }
}
