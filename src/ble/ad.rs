//! Advertising data: the AD structures of an advertisement (`length | type | data`, the length counting
//! the type byte), and the service data they carry by 16-bit UUID (AD type 0x16), which is where BTHome,
//! pvvx and atc1441 put their readings. A zero length ends the data (the padding of a legacy advert); a
//! structure that claims more bytes than are left ends it too, keeping what came before.

/// AD type "Service Data - 16-bit UUID".
pub const SERVICE_DATA_16: u8 = 0x16;

/// One AD structure: its type and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdStructure<'a> {
    pub ad_type: u8,
    pub data: &'a [u8],
}

/// The AD structures of `data`, in order.
pub fn structures(data: &[u8]) -> impl Iterator<Item = AdStructure<'_>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&len, after) = rest.split_first()?;
        let len = usize::from(len);
        if len == 0 || after.len() < len {
            rest = &[];
            return None;
        }
        let (structure, next) = after.split_at(len);
        rest = next;
        Some(AdStructure {
            ad_type: structure[0],
            data: &structure[1..],
        })
    })
}

/// The 16-bit-UUID service data of `data`: each as `(uuid, bytes from the UUID on)` (`d2 fc 40 ...`, as
/// `sensorgate decode` takes it), in order.
pub fn service_data(data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    structures(data).filter_map(|structure| match structure.data {
        [lo, hi, ..] if structure.ad_type == SERVICE_DATA_16 => {
            Some((u16::from_le_bytes([*lo, *hi]), structure.data))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_then_service_data() {
        // Flags (02 01 06), then BTHome service data, then padding.
        let data = [
            0x02, 0x01, 0x06, 0x07, 0x16, 0xD2, 0xFC, 0x40, 0x02, 0xCA, 0x09, 0x00, 0x00,
        ];
        let all: Vec<_> = structures(&data).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0],
            AdStructure {
                ad_type: 0x01,
                data: &[0x06]
            }
        );
        let found: Vec<_> = service_data(&data).collect();
        assert_eq!(found, vec![(0xFCD2, &data[5..11])]);
    }

    #[test]
    fn a_structure_longer_than_the_data_ends_the_walk() {
        let data = [0x02, 0x01, 0x06, 0x09, 0x16, 0xD2, 0xFC];
        assert_eq!(structures(&data).count(), 1);
        assert_eq!(service_data(&data).count(), 0);
        // Service data too short to hold a UUID is not service data.
        assert_eq!(service_data(&[0x02, 0x16, 0xD2]).count(), 0);
        assert_eq!(structures(&[]).count(), 0);
    }
}
