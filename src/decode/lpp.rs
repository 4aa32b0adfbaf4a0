//! Cayenne LPP payloads: repeated `[channel][type][big-endian data]` records, each turned into fields
//! named `<type>_<channel>`. This module owns the type table and a small writer for simulators and tests;
//! it never sees framing, CRC or headers, and LPP carries no address (the header provides it).
//!
//! The table (original LPP types, then the extended set of the ElectronicCats library). Names follow the
//! common LoRa network servers' decoders (TTN: `temperature_3`, `relative_humidity_5`); the extended
//! names are chosen in the same style. Multi-value types get one field per component
//! (`accelerometer_6_x`, `gps_1_latitude`, `colour_2_r`).
//!
//! | type | name                  | bytes | value                                        |
//! |------|-----------------------|-------|----------------------------------------------|
//! | 0    | `digital_in`          | 1     | Int                                          |
//! | 1    | `digital_out`         | 1     | Int                                          |
//! | 2    | `analog_in`           | 2     | Float, signed, 0.01                          |
//! | 3    | `analog_out`          | 2     | Float, signed, 0.01                          |
//! | 100  | `generic_sensor`      | 4     | Int, unsigned                                |
//! | 101  | `luminosity`          | 2     | Int, unsigned, lux                           |
//! | 102  | `presence`            | 1     | Int                                          |
//! | 103  | `temperature`         | 2     | Float, signed, 0.1 °C                        |
//! | 104  | `relative_humidity`   | 1     | Float, unsigned, 0.5 %                       |
//! | 113  | `accelerometer`       | 6     | `_x _y _z`: Float, signed, 0.001 G           |
//! | 115  | `barometric_pressure` | 2     | Float, unsigned, 0.1 hPa                     |
//! | 116  | `voltage`             | 2     | Float, unsigned, 0.01 V                      |
//! | 117  | `current`             | 2     | Float, unsigned, 0.001 A                     |
//! | 118  | `frequency`           | 4     | Int, unsigned, Hz                            |
//! | 120  | `percentage`          | 1     | Int, unsigned, %                             |
//! | 121  | `altitude`            | 2     | Int, signed, m                               |
//! | 125  | `concentration`       | 2     | Int, unsigned, ppm                           |
//! | 128  | `power`               | 2     | Int, unsigned, W                             |
//! | 130  | `distance`            | 4     | Float, unsigned, 0.001 m                     |
//! | 131  | `energy`              | 4     | Float, unsigned, 0.001 kWh                   |
//! | 132  | `direction`           | 2     | Int, unsigned, degrees                       |
//! | 133  | `unix_time`           | 4     | Int, unsigned, seconds                       |
//! | 134  | `gyrometer`           | 6     | `_x _y _z`: Float, signed, 0.01 °/s          |
//! | 135  | `colour`              | 3     | `_r _g _b`: Int                              |
//! | 136  | `gps`                 | 9     | `_latitude _longitude` Float, signed 24-bit, 0.0001 °; `_altitude` Float, signed 24-bit, 0.01 m |
//! | 142  | `switch`              | 1     | Int                                          |
//!
//! Scaled values are floats (divided, so 272 at 0.1 is exactly 27.2); unscaled ones, including the
//! on/off types (digital, presence, switch), are integers. An unknown type, or a record cut short, refuses
//! the whole payload with the offset at fault. A repeated channel and type gives repeated fields, in order.

use super::{DecodeError, PayloadFields};
use crate::model::Value;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout {
    /// One unsigned integer.
    Unsigned,
    /// One signed integer.
    Signed,
    /// One unsigned integer divided by the factor.
    UnsignedScaled(f64),
    /// One signed integer divided by the factor.
    SignedScaled(f64),
    /// Three signed 16-bit axes divided by the factor.
    Axes(f64),
    /// Latitude, longitude (signed 24-bit, 0.0001 °) and altitude (signed 24-bit, 0.01 m).
    Gps,
    /// Three unsigned bytes: red, green, blue.
    Rgb,
}

#[derive(Debug)]
pub(crate) struct LppType {
    pub(crate) id: u8,
    pub(crate) name: &'static str,
    pub(crate) size: usize,
    pub(crate) layout: Layout,
}

const fn lpp(id: u8, name: &'static str, size: usize, layout: Layout) -> LppType {
    LppType {
        id,
        name,
        size,
        layout,
    }
}

use Layout::*;

/// Every type this decoder knows; the table in the module docs, as data (the command encoder,
/// `crate::encode::lpp`, writes from the same table).
pub(crate) const TYPES: &[LppType] = &[
    lpp(0, "digital_in", 1, Unsigned),
    lpp(1, "digital_out", 1, Unsigned),
    lpp(2, "analog_in", 2, SignedScaled(100.0)),
    lpp(3, "analog_out", 2, SignedScaled(100.0)),
    lpp(100, "generic_sensor", 4, Unsigned),
    lpp(101, "luminosity", 2, Unsigned),
    lpp(102, "presence", 1, Unsigned),
    lpp(103, "temperature", 2, SignedScaled(10.0)),
    lpp(104, "relative_humidity", 1, UnsignedScaled(2.0)),
    lpp(113, "accelerometer", 6, Axes(1000.0)),
    lpp(115, "barometric_pressure", 2, UnsignedScaled(10.0)),
    lpp(116, "voltage", 2, UnsignedScaled(100.0)),
    lpp(117, "current", 2, UnsignedScaled(1000.0)),
    lpp(118, "frequency", 4, Unsigned),
    lpp(120, "percentage", 1, Unsigned),
    lpp(121, "altitude", 2, Signed),
    lpp(125, "concentration", 2, Unsigned),
    lpp(128, "power", 2, Unsigned),
    lpp(130, "distance", 4, UnsignedScaled(1000.0)),
    lpp(131, "energy", 4, UnsignedScaled(1000.0)),
    lpp(132, "direction", 2, Unsigned),
    lpp(133, "unix_time", 4, Unsigned),
    lpp(134, "gyrometer", 6, Axes(100.0)),
    lpp(135, "colour", 3, Rgb),
    lpp(136, "gps", 9, Gps),
    lpp(142, "switch", 1, Unsigned),
];

fn lookup(id: u8) -> Option<&'static LppType> {
    TYPES.iter().find(|t| t.id == id)
}

/// Big-endian unsigned integer of up to 8 bytes.
fn unsigned(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Big-endian two's-complement integer of 1 to 8 bytes.
fn signed(bytes: &[u8]) -> i64 {
    let bits = 64u32.saturating_sub(8 * bytes.len().min(8) as u32);
    if bits >= 64 {
        return 0;
    }
    ((unsigned(bytes) << bits) as i64) >> bits
}

/// Decodes every record of an LPP payload into fields. LPP carries no address or sequence number.
pub fn decode(bytes: &[u8]) -> Result<PayloadFields, DecodeError> {
    let mut fields = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let (channel, type_id) = match bytes[offset..] {
            [channel, type_id, ..] => (channel, type_id),
            _ => {
                return Err(DecodeError::LppTruncated {
                    type_name: "record header",
                    offset,
                    need: 2,
                    have: bytes.len() - offset,
                })
            }
        };
        let lpp_type = lookup(type_id).ok_or(DecodeError::LppUnknownType {
            type_id,
            offset: offset + 1,
        })?;
        let start = offset + 2;
        let data = bytes
            .get(start..start + lpp_type.size)
            .ok_or(DecodeError::LppTruncated {
                type_name: lpp_type.name,
                offset: start,
                need: lpp_type.size,
                have: bytes.len() - start,
            })?;
        push_fields(&mut fields, lpp_type, channel, data);
        offset = start + lpp_type.size;
    }
    Ok(PayloadFields {
        address: None,
        seq: None,
        fields,
    })
}

fn push_fields(fields: &mut Vec<(String, Value)>, lpp_type: &LppType, channel: u8, data: &[u8]) {
    let name = format!("{}_{channel}", lpp_type.name);
    let mut component =
        |suffix: &str, value: Value| fields.push((format!("{name}_{suffix}"), value));
    match lpp_type.layout {
        Unsigned => {
            // At most 4 bytes: always fits.
            let value = i64::try_from(unsigned(data)).unwrap_or(i64::MAX);
            fields.push((name, Value::Int(value)));
        }
        Signed => fields.push((name, Value::Int(signed(data)))),
        UnsignedScaled(factor) => fields.push((name, Value::Float(unsigned(data) as f64 / factor))),
        SignedScaled(factor) => fields.push((name, Value::Float(signed(data) as f64 / factor))),
        Axes(factor) => {
            for (axis, bytes) in ["x", "y", "z"].into_iter().zip(data.chunks_exact(2)) {
                component(axis, Value::Float(signed(bytes) as f64 / factor));
            }
        }
        Gps => {
            let parts = ["latitude", "longitude", "altitude"];
            let factors = [10_000.0, 10_000.0, 100.0];
            for ((part, factor), bytes) in parts.into_iter().zip(factors).zip(data.chunks_exact(3))
            {
                component(part, Value::Float(signed(bytes) as f64 / factor));
            }
        }
        Rgb => {
            for (part, &byte) in ["r", "g", "b"].into_iter().zip(data) {
                component(part, Value::Int(i64::from(byte)));
            }
        }
    }
}

/// Builds LPP payloads, for the simulator and tests. Values out of a type's range saturate.
///
/// ```
/// use sensorgate::decode::lpp::LppWriter;
/// let bytes = LppWriter::new().temperature(3, 27.2).relative_humidity(5, 40.0).into_bytes();
/// assert_eq!(bytes, [0x03, 0x67, 0x01, 0x10, 0x05, 0x68, 0x50]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LppWriter {
    bytes: Vec<u8>,
}

impl LppWriter {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(mut self, channel: u8, type_id: u8, data: &[u8]) -> Self {
        self.bytes.push(channel);
        self.bytes.push(type_id);
        self.bytes.extend_from_slice(data);
        self
    }

    /// Type 103, 0.1 °C signed.
    #[must_use]
    pub fn temperature(self, channel: u8, celsius: f64) -> Self {
        let raw = (celsius * 10.0).round() as i16;
        self.record(channel, 103, &raw.to_be_bytes())
    }

    /// Type 104, 0.5 % unsigned.
    #[must_use]
    pub fn relative_humidity(self, channel: u8, percent: f64) -> Self {
        let raw = (percent * 2.0).round() as u8;
        self.record(channel, 104, &[raw])
    }

    /// Type 116, 0.01 V unsigned.
    #[must_use]
    pub fn voltage(self, channel: u8, volts: f64) -> Self {
        let raw = (volts * 100.0).round() as u16;
        self.record(channel, 116, &raw.to_be_bytes())
    }

    /// Type 2, 0.01 signed.
    #[must_use]
    pub fn analog_input(self, channel: u8, value: f64) -> Self {
        let raw = (value * 100.0).round() as i16;
        self.record(channel, 2, &raw.to_be_bytes())
    }

    /// Type 0, one byte.
    #[must_use]
    pub fn digital_input(self, channel: u8, value: u8) -> Self {
        self.record(channel, 0, &[value])
    }

    /// Type 115, 0.1 hPa unsigned.
    #[must_use]
    pub fn barometer(self, channel: u8, hpa: f64) -> Self {
        let raw = (hpa * 10.0).round() as u16;
        self.record(channel, 115, &raw.to_be_bytes())
    }

    /// The payload bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(bytes: &[u8]) -> Vec<(String, Value)> {
        decode(bytes).unwrap().fields
    }

    fn float(name: &str, value: f64) -> (String, Value) {
        (name.to_string(), Value::Float(value))
    }

    fn int(name: &str, value: i64) -> (String, Value) {
        (name.to_string(), Value::Int(value))
    }

    #[test]
    fn reference_vector_two_temperatures() {
        assert_eq!(
            fields(&[0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xFF]),
            vec![float("temperature_3", 27.2), float("temperature_5", 25.5)]
        );
    }

    #[test]
    fn reference_vector_negative_temperature_and_accelerometer() {
        let bytes = [
            0x01, 0x67, 0xFF, 0xD7, 0x06, 0x71, 0x04, 0xD2, 0xFB, 0x2E, 0x00, 0x00,
        ];
        assert_eq!(
            fields(&bytes),
            vec![
                float("temperature_1", -4.1),
                float("accelerometer_6_x", 1.234),
                float("accelerometer_6_y", -1.234),
                float("accelerometer_6_z", 0.0),
            ]
        );
    }

    #[test]
    fn reference_vector_gps() {
        let bytes = [
            0x01, 0x88, 0x06, 0x76, 0x5F, 0xF2, 0x96, 0x0A, 0x00, 0x03, 0xE8,
        ];
        assert_eq!(
            fields(&bytes),
            vec![
                float("gps_1_latitude", 42.3519),
                float("gps_1_longitude", -87.9094),
                float("gps_1_altitude", 10.0),
            ]
        );
    }

    #[test]
    fn every_type_of_the_table_decodes() {
        let bytes = [
            1, 0, 1, // digital_in
            2, 1, 0, // digital_out
            3, 2, 0xFF, 0x38, // analog_in -2.00
            4, 3, 0x01, 0x2C, // analog_out 3.00
            5, 100, 0x00, 0x01, 0x00, 0x00, // generic_sensor 65536
            6, 101, 0x01, 0xF4, // luminosity 500
            7, 102, 1, // presence
            8, 104, 0x51, // relative_humidity 40.5
            9, 115, 0x27, 0x97, // barometric_pressure 1013.5
            10, 116, 0x01, 0x4A, // voltage 3.30
            11, 117, 0x04, 0xD2, // current 1.234
            12, 118, 0x00, 0x00, 0x03, 0x68, // frequency 872
            13, 120, 55, // percentage
            14, 121, 0xFF, 0x9C, // altitude -100
            15, 125, 0x01, 0x90, // concentration 400
            16, 128, 0x00, 0x64, // power 100
            17, 130, 0x00, 0x00, 0x30, 0x39, // distance 12.345
            18, 131, 0x00, 0x01, 0xE2, 0x40, // energy 123.456
            19, 132, 0x01, 0x68, // direction 360
            20, 133, 0x65, 0x00, 0x00, 0x00, // unix_time
            21, 134, 0x00, 0x64, 0xFF, 0x9C, 0x00, 0x00, // gyrometer 1, -1, 0
            22, 135, 0xFF, 0x80, 0x00, // colour
            23, 142, 1, // switch
        ];
        assert_eq!(
            fields(&bytes),
            vec![
                int("digital_in_1", 1),
                int("digital_out_2", 0),
                float("analog_in_3", -2.0),
                float("analog_out_4", 3.0),
                int("generic_sensor_5", 65536),
                int("luminosity_6", 500),
                int("presence_7", 1),
                float("relative_humidity_8", 40.5),
                float("barometric_pressure_9", 1013.5),
                float("voltage_10", 3.3),
                float("current_11", 1.234),
                int("frequency_12", 872),
                int("percentage_13", 55),
                int("altitude_14", -100),
                int("concentration_15", 400),
                int("power_16", 100),
                float("distance_17", 12.345),
                float("energy_18", 123.456),
                int("direction_19", 360),
                int("unix_time_20", 0x6500_0000),
                float("gyrometer_21_x", 1.0),
                float("gyrometer_21_y", -1.0),
                float("gyrometer_21_z", 0.0),
                int("colour_22_r", 255),
                int("colour_22_g", 128),
                int("colour_22_b", 0),
                int("switch_23", 1),
            ]
        );
    }

    #[test]
    fn unknown_type_names_type_and_offset() {
        assert_eq!(
            decode(&[0x03, 0x67, 0x01, 0x10, 0x04, 0x63, 0x00]),
            Err(DecodeError::LppUnknownType {
                type_id: 0x63,
                offset: 5
            })
        );
    }

    #[test]
    fn short_values_are_refused() {
        assert_eq!(
            decode(&[0x03, 0x67, 0x01]),
            Err(DecodeError::LppTruncated {
                type_name: "temperature",
                offset: 2,
                need: 2,
                have: 1
            })
        );
        assert_eq!(
            decode(&[0x01, 0x88, 0x06, 0x76, 0x5F]),
            Err(DecodeError::LppTruncated {
                type_name: "gps",
                offset: 2,
                need: 9,
                have: 3
            })
        );
        assert_eq!(
            decode(&[0x03, 0x67, 0x01, 0x10, 0x07]),
            Err(DecodeError::LppTruncated {
                type_name: "record header",
                offset: 4,
                need: 2,
                have: 1
            })
        );
    }

    #[test]
    fn writer_round_trips() {
        let bytes = LppWriter::new()
            .temperature(1, -4.1)
            .relative_humidity(2, 55.5)
            .voltage(3, 3.31)
            .analog_input(4, -1.25)
            .digital_input(5, 1)
            .barometer(6, 1013.2)
            .into_bytes();
        assert_eq!(
            fields(&bytes),
            vec![
                float("temperature_1", -4.1),
                float("relative_humidity_2", 55.5),
                float("voltage_3", 3.31),
                float("analog_in_4", -1.25),
                int("digital_in_5", 1),
                float("barometric_pressure_6", 1013.2),
            ]
        );
        // Out of range saturates rather than wrapping.
        let bytes = LppWriter::new().temperature(1, 1e9).into_bytes();
        assert_eq!(fields(&bytes), vec![float("temperature_1", 3276.7)]);
        assert!(LppWriter::new().into_bytes().is_empty());
    }

    #[test]
    fn sign_extension() {
        assert_eq!(signed(&[0xFF]), -1);
        assert_eq!(signed(&[0x80, 0x00]), -32768);
        assert_eq!(signed(&[0xF2, 0x96, 0x0A]), -879094);
        assert_eq!(signed(&[0x7F, 0xFF, 0xFF]), 8388607);
    }
}
