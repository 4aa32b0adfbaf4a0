//! HCI LE Advertising Report events, as a controller sends them to the host and as `hci_replay` files
//! hold them (one event per line, hexadecimal, optionally led by the H4 packet type `04`):
//!
//! ```text
//! 3e | length | subevent | reports | report ...
//! legacy (0x02) report:   event type | address type | address (6, LE) | data length | data | RSSI i8
//! extended (0x0D) report: event type u16 LE | address type | address (6, LE) | primary PHY |
//!                         secondary PHY | SID | TX power | RSSI i8 | periodic interval u16 |
//!                         direct address type | direct address (6) | data length | data
//! ```
//!
//! Reports follow one another (as controllers send them and as BlueZ reads them). Other events are not
//! advertisements ([`parse_event`] gives none); an event whose length byte disagrees with its bytes, or a
//! report cut short, is refused whole. An extended report's data is taken as it came: fragments that the
//! event type's data status marks incomplete are not reassembled (home sensors fit one report). The time
//! an advertisement was heard is the source's to add.

use super::Mac;

/// HCI event code of LE Meta events.
const LE_META_EVENT: u8 = 0x3E;
/// H4 packet type of events.
const H4_EVENT: u8 = 0x04;
/// LE Meta subevent: LE Advertising Report.
pub const SUBEVENT_LEGACY: u8 = 0x02;
/// LE Meta subevent: LE Extended Advertising Report.
pub const SUBEVENT_EXTENDED: u8 = 0x0D;

/// What kind of address the advertiser used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressType {
    Public,
    Random,
    /// A resolved public identity address (controller address resolution).
    PublicIdentity,
    /// A resolved random static identity address.
    RandomIdentity,
    /// Anonymous (extended advertising without an address) or a value this parser does not know.
    Other(u8),
}

impl AddressType {
    fn from_byte(byte: u8) -> AddressType {
        match byte {
            0x00 => AddressType::Public,
            0x01 => AddressType::Random,
            0x02 => AddressType::PublicIdentity,
            0x03 => AddressType::RandomIdentity,
            other => AddressType::Other(other),
        }
    }
}

/// One advertisement heard: who sent it, how loud, and its AD bytes ([`super::ad`] reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub address: Mac,
    pub address_type: AddressType,
    /// dBm; 127 means the controller had none.
    pub rssi: i8,
    /// The advertising data (or scan response data).
    pub data: Vec<u8>,
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HciError {
    #[error("not hexadecimal at character {0}")]
    NotHex(usize),
    #[error("odd number of hex digits")]
    OddDigits,
    #[error("event length byte says {said} bytes, the event has {have}")]
    Length { said: usize, have: usize },
    #[error("advertising report {index} is cut short")]
    Truncated { index: usize },
}

/// Parses one line of a replay file: hex digits, whitespace and `:` ignored. Empty lines and lines
/// starting with `#` give no advertisement.
pub fn parse_line(line: &str) -> Result<Vec<Advertisement>, HciError> {
    let text = line.trim();
    if text.is_empty() || text.starts_with('#') {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    for (index, c) in text.chars().enumerate() {
        if c.is_whitespace() || c == ':' {
            continue;
        }
        let nibble = c.to_digit(16).ok_or(HciError::NotHex(index + 1))? as u8;
        match high.take() {
            Some(h) => bytes.push((h << 4) | nibble),
            None => high = Some(nibble),
        }
    }
    if high.is_some() {
        return Err(HciError::OddDigits);
    }
    parse_event(&bytes)
}

/// Parses one HCI event (with or without the H4 `04` in front): the advertisements of an LE
/// (Extended) Advertising Report, none for any other event.
pub fn parse_event(bytes: &[u8]) -> Result<Vec<Advertisement>, HciError> {
    let event = match bytes {
        [H4_EVENT, LE_META_EVENT, ..] => &bytes[1..],
        _ => bytes,
    };
    let [LE_META_EVENT, len, params @ ..] = event else {
        return Ok(Vec::new());
    };
    if usize::from(*len) != params.len() {
        return Err(HciError::Length {
            said: usize::from(*len),
            have: params.len(),
        });
    }
    match params {
        [SUBEVENT_LEGACY, count, reports @ ..] => parse_reports(*count, reports, legacy_report),
        [SUBEVENT_EXTENDED, count, reports @ ..] => parse_reports(*count, reports, extended_report),
        _ => Ok(Vec::new()),
    }
}

type ReportParser = fn(&[u8]) -> Option<(Advertisement, &[u8])>;

fn parse_reports(
    count: u8,
    mut rest: &[u8],
    report: ReportParser,
) -> Result<Vec<Advertisement>, HciError> {
    let mut adverts = Vec::with_capacity(usize::from(count));
    for index in 0..usize::from(count) {
        let (advert, next) = report(rest).ok_or(HciError::Truncated { index })?;
        adverts.push(advert);
        rest = next;
    }
    Ok(adverts)
}

fn address(bytes: &[u8]) -> Option<Mac> {
    let le: [u8; 6] = bytes.try_into().ok()?;
    Some(Mac::from_le(le))
}

fn legacy_report(bytes: &[u8]) -> Option<(Advertisement, &[u8])> {
    let (head, rest) = bytes.split_at_checked(9)?;
    let data_len = usize::from(head[8]);
    let (data, rest) = rest.split_at_checked(data_len)?;
    let (&rssi, rest) = rest.split_first()?;
    let advert = Advertisement {
        address: address(&head[2..8])?,
        address_type: AddressType::from_byte(head[1]),
        rssi: rssi as i8,
        data: data.to_vec(),
    };
    Some((advert, rest))
}

fn extended_report(bytes: &[u8]) -> Option<(Advertisement, &[u8])> {
    let (head, rest) = bytes.split_at_checked(24)?;
    let data_len = usize::from(head[23]);
    let (data, rest) = rest.split_at_checked(data_len)?;
    let advert = Advertisement {
        address: address(&head[3..9])?,
        address_type: AddressType::from_byte(head[2]),
        rssi: head[13] as i8,
        data: data.to_vec(),
    };
    Some((advert, rest))
}
