//! An accepted uplink's FRMPayload as fields: decoded with the device's decoder of its FPort (`payload`
//! or `fports`) through the project's decoders (`crate::decode`). Pure.

use super::settings::LorawanDevice;
use crate::decode::{DecodeError, HeaderFormat, PacketDecoder};
use crate::frame::crc::CrcMode;
use crate::model::{Packet, Value};

/// What became of an FRMPayload.
#[derive(Debug, Clone, PartialEq)]
pub enum Fields {
    /// Decoded (empty for FPort 0 or no FRMPayload).
    Decoded(Vec<(String, Value)>),
    /// No decoder for this FPort.
    NoDecoder(u8),
    /// The decoder refused the bytes.
    Refused(u8, DecodeError),
    /// The device's codec decodes this FPort (a call on its own thread: the caller submits it).
    ByCodec(u8),
}

/// Decodes `payload` of `fport` with `device`'s decoder.
pub fn decode_fields(device: &LorawanDevice, fport: Option<u8>, payload: &[u8]) -> Fields {
    let Some(fport) = fport.filter(|p| *p != 0) else {
        return Fields::Decoded(Vec::new());
    };
    let Some(format) = device.decoder(fport) else {
        return Fields::NoDecoder(fport);
    };
    if format == crate::decode::PayloadFormat::Codec {
        return Fields::ByCodec(fport);
    }
    let decoder = PacketDecoder {
        crc: CrcMode::None,
        header: HeaderFormat::None,
        payload: format,
    };
    let packet = Packet {
        source: String::new(),
        bytes: payload.to_vec(),
        received_at: std::time::UNIX_EPOCH,
        radio: None,
    };
    match decoder.decode(&packet) {
        Ok(readings) => Fields::Decoded(readings.into_iter().flat_map(|r| r.fields).collect()),
        Err(error) => Fields::Refused(fport, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::PayloadFormat;
    use crate::lorawan::settings::DeviceActivation;
    use std::collections::BTreeMap;

    #[test]
    fn each_fport_has_its_decoder() {
        let device = LorawanDevice {
            activation: DeviceActivation::Abp {
                dev_addr: 1,
                nwk_s_key_file: "a".into(),
                app_s_key_file: "b".into(),
            },
            payload: None,
            fports: BTreeMap::from([(2, PayloadFormat::Lpp)]),
            version: Default::default(),
            codec: None,
            downlink_fport: 1,
            downlink_confirmed: false,
            adr: false,
        };
        assert_eq!(
            decode_fields(&device, Some(2), &[1, 0x67, 0, 0xd7]),
            Fields::Decoded(vec![("temperature_1".into(), Value::Float(21.5))])
        );
        assert_eq!(decode_fields(&device, Some(3), &[1]), Fields::NoDecoder(3));
        assert!(matches!(
            decode_fields(&device, Some(2), &[1]),
            Fields::Refused(2, _)
        ));
        assert_eq!(
            decode_fields(&device, Some(0), &[9]),
            Fields::Decoded(vec![])
        );
        assert_eq!(decode_fields(&device, None, &[]), Fields::Decoded(vec![]));
    }
}
