//! The BTHome v2 object table: every object id of bthome.io's format table (sensor data, binary sensor
//! data, events, device information), with its length, encoding, factor and the field name sensorgate
//! gives it. This module is data only; [`super::bthome`] walks a payload through it.
//!
//! Names are Home Assistant's BTHome integration's keys (its sensor and binary sensor device classes:
//! `temperature`, `humidity`, `battery`, `pressure`, `carbon_dioxide`, ...), so discovery types them. Where
//! one key stands for two units there, or a binary sensor and a sensor share a key, the less common one
//! gets a name of its own, because a field here has one name and one unit:
//!
//! | ids            | Home Assistant key | field name here   | unit            |
//! |----------------|--------------------|-------------------|-----------------|
//! | 0x06 / 0x07    | `mass`             | `mass` / `mass_lb`| kg / lb         |
//! | 0x40 / 0x41    | `distance`         | `distance_mm` / `distance` | mm / m |
//! | 0x47, 0x4E / 0x48 | `volume`        | `volume` / `volume_ml` | L / mL     |
//! | 0x10 (binary)  | `power`            | `power_on`        | -               |
//! | 0x15 (binary)  | `battery`          | `battery_low`     | -               |
//! | 0x1C (binary)  | `gas`              | `gas_detected`    | -               |
//! | 0x20 (binary)  | `moisture`         | `water_leak`      | -               |
//!
//! Units (as bthome.io gives them): temperature and dew point °C, humidity and moisture %, pressure hPa,
//! illuminance lx, energy kWh, power W, voltage V, current A, PM and VOC µg/m³, CO₂ ppm, duration s,
//! speed m/s, rotation and direction °, volume flow rate m³/h, gas m³, water and volume storage L,
//! acceleration m/s², gyroscope °/s, conductivity µS/cm, precipitation mm, rotational speed rpm.

/// How an object's bytes become a value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Encoding {
    /// Little-endian unsigned integer, times the factor.
    Unsigned(Scale),
    /// Little-endian two's complement integer, times the factor.
    Signed(Scale),
    /// One byte, 0 = false, anything else = true.
    Binary,
    /// Button event (one byte).
    Button,
    /// Dimmer event: the event byte, then the number of steps (signed byte).
    Dimmer,
    /// The packet id (one byte): the reading's sequence number, not a field.
    PacketId,
    /// A length byte, then UTF-8 text.
    Text,
    /// A length byte, then bytes, shown as hexadecimal.
    Raw,
    /// Little-endian version numbers, shown most significant first (`4.2.1.0`).
    FirmwareVersion,
}

/// The factor a raw integer is multiplied by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scale {
    /// Factor 1: the value is an integer.
    One,
    /// Divided by 10^n, so 2506 at 0.01 is exactly 25.06.
    Decimals(i32),
    /// Multiplied by a factor that is not a power of ten (0.35).
    Times(f64),
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObjectType {
    pub(crate) id: u8,
    pub(crate) name: &'static str,
    /// Bytes of data after the id; 0 for text and raw, whose first data byte is their length.
    pub(crate) len: usize,
    pub(crate) encoding: Encoding,
}

const fn object(id: u8, name: &'static str, len: usize, encoding: Encoding) -> ObjectType {
    ObjectType {
        id,
        name,
        len,
        encoding,
    }
}

use Encoding::*;
use Scale::*;

const U: Encoding = Unsigned(One);
const S: Encoding = Signed(One);
const fn u(decimals: i32) -> Encoding {
    Unsigned(Decimals(decimals))
}
const fn s(decimals: i32) -> Encoding {
    Signed(Decimals(decimals))
}

/// Every object id bthome.io defines, in id order.
pub(crate) const OBJECTS: &[ObjectType] = &[
    object(0x00, "packet_id", 1, PacketId),
    object(0x01, "battery", 1, U),
    object(0x02, "temperature", 2, s(2)),
    object(0x03, "humidity", 2, u(2)),
    object(0x04, "pressure", 3, u(2)),
    object(0x05, "illuminance", 3, u(2)),
    object(0x06, "mass", 2, u(2)),
    object(0x07, "mass_lb", 2, u(2)),
    object(0x08, "dew_point", 2, s(2)),
    object(0x09, "count", 1, U),
    object(0x0A, "energy", 3, u(3)),
    object(0x0B, "power", 3, u(2)),
    object(0x0C, "voltage", 2, u(3)),
    object(0x0D, "pm25", 2, U),
    object(0x0E, "pm10", 2, U),
    object(0x0F, "generic", 1, Binary),
    object(0x10, "power_on", 1, Binary),
    object(0x11, "opening", 1, Binary),
    object(0x12, "carbon_dioxide", 2, U),
    object(0x13, "volatile_organic_compounds", 2, U),
    object(0x14, "moisture", 2, u(2)),
    object(0x15, "battery_low", 1, Binary),
    object(0x16, "battery_charging", 1, Binary),
    object(0x17, "carbon_monoxide", 1, Binary),
    object(0x18, "cold", 1, Binary),
    object(0x19, "connectivity", 1, Binary),
    object(0x1A, "door", 1, Binary),
    object(0x1B, "garage_door", 1, Binary),
    object(0x1C, "gas_detected", 1, Binary),
    object(0x1D, "heat", 1, Binary),
    object(0x1E, "light", 1, Binary),
    object(0x1F, "lock", 1, Binary),
    object(0x20, "water_leak", 1, Binary),
    object(0x21, "motion", 1, Binary),
    object(0x22, "moving", 1, Binary),
    object(0x23, "occupancy", 1, Binary),
    object(0x24, "plug", 1, Binary),
    object(0x25, "presence", 1, Binary),
    object(0x26, "problem", 1, Binary),
    object(0x27, "running", 1, Binary),
    object(0x28, "safety", 1, Binary),
    object(0x29, "smoke", 1, Binary),
    object(0x2A, "sound", 1, Binary),
    object(0x2B, "tamper", 1, Binary),
    object(0x2C, "vibration", 1, Binary),
    object(0x2D, "window", 1, Binary),
    object(0x2E, "humidity", 1, U),
    object(0x2F, "moisture", 1, U),
    object(0x3A, "button", 1, Button),
    object(0x3C, "dimmer", 2, Dimmer),
    object(0x3D, "count", 2, U),
    object(0x3E, "count", 4, U),
    object(0x3F, "rotation", 2, s(1)),
    object(0x40, "distance_mm", 2, U),
    object(0x41, "distance", 2, u(1)),
    object(0x42, "duration", 3, u(3)),
    object(0x43, "current", 2, u(3)),
    object(0x44, "speed", 2, u(2)),
    object(0x45, "temperature", 2, s(1)),
    object(0x46, "uv_index", 1, u(1)),
    object(0x47, "volume", 2, u(1)),
    object(0x48, "volume_ml", 2, U),
    object(0x49, "volume_flow_rate", 2, u(3)),
    object(0x4A, "voltage", 2, u(1)),
    object(0x4B, "gas", 3, u(3)),
    object(0x4C, "gas", 4, u(3)),
    object(0x4D, "energy", 4, u(3)),
    object(0x4E, "volume", 4, u(3)),
    object(0x4F, "water", 4, u(3)),
    object(0x50, "timestamp", 4, U),
    object(0x51, "acceleration", 2, u(3)),
    object(0x52, "gyroscope", 2, u(3)),
    object(0x53, "text", 0, Text),
    object(0x54, "raw", 0, Raw),
    object(0x55, "volume_storage", 4, u(3)),
    object(0x56, "conductivity", 2, U),
    object(0x57, "temperature", 1, S),
    object(0x58, "temperature", 1, Signed(Times(0.35))),
    object(0x59, "count", 1, S),
    object(0x5A, "count", 2, S),
    object(0x5B, "count", 4, S),
    object(0x5C, "power", 4, s(2)),
    object(0x5D, "current", 2, s(3)),
    object(0x5E, "direction", 2, u(2)),
    object(0x5F, "precipitation", 2, u(1)),
    object(0x60, "channel", 1, U),
    object(0x61, "rotational_speed", 2, U),
    object(0x62, "speed", 4, s(6)),
    object(0x63, "acceleration", 4, s(6)),
    object(0x64, "light_level", 1, U),
    object(0xF0, "device_type_id", 2, U),
    object(0xF1, "firmware_version", 4, FirmwareVersion),
    object(0xF2, "firmware_version", 3, FirmwareVersion),
];

/// The row of `id`, if bthome.io defines it.
pub(crate) fn lookup(id: u8) -> Option<&'static ObjectType> {
    OBJECTS
        .binary_search_by_key(&id, |object| object.id)
        .ok()
        .map(|index| &OBJECTS[index])
}

/// Button events (object 0x3A), Home Assistant's event types; 0x00 is "no event".
pub(crate) fn button_event(byte: u8) -> Option<&'static str> {
    match byte {
        0x01 => Some("press"),
        0x02 => Some("double_press"),
        0x03 => Some("triple_press"),
        0x04 => Some("long_press"),
        0x05 => Some("long_double_press"),
        0x06 => Some("long_triple_press"),
        0x80 => Some("hold_press"),
        _ => None,
    }
}

/// Dimmer events (object 0x3C); 0x00 is "no event".
pub(crate) fn dimmer_event(byte: u8) -> Option<&'static str> {
    match byte {
        0x01 => Some("rotate_left"),
        0x02 => Some("rotate_right"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_id_order_without_gaps_in_its_lookups() {
        assert!(OBJECTS.windows(2).all(|pair| pair[0].id < pair[1].id));
        for object in OBJECTS {
            assert_eq!(lookup(object.id).map(|o| o.id), Some(object.id));
        }
        assert!(lookup(0x30).is_none());
        assert!(lookup(0xFF).is_none());
    }

    /// Every name a BLE decoder gives is typed by Home Assistant discovery (`infer_ble`): the
    /// platform, device class and unit each is announced with.
    #[test]
    fn discovery_types_every_name() {
        use crate::homeassistant::types::{infer_ble, Component, ValueKind};
        use Component::{BinarySensor as B, Sensor as S};
        #[rustfmt::skip]
        let expected: &[(&str, Component, Option<&str>, Option<&str>)] = &[
            ("battery", S, Some("battery"), Some("%")), ("temperature", S, Some("temperature"), Some("°C")),
            ("humidity", S, Some("humidity"), Some("%")), ("pressure", S, Some("pressure"), Some("hPa")),
            ("illuminance", S, Some("illuminance"), Some("lx")), ("mass", S, Some("weight"), Some("kg")),
            ("mass_lb", S, Some("weight"), Some("lb")), ("dew_point", S, Some("temperature"), Some("°C")),
            ("count", S, None, None), ("energy", S, Some("energy"), Some("kWh")),
            ("power", S, Some("power"), Some("W")), ("voltage", S, Some("voltage"), Some("V")),
            ("pm25", S, Some("pm25"), Some("µg/m³")), ("pm10", S, Some("pm10"), Some("µg/m³")),
            ("generic", B, None, None), ("power_on", B, Some("power"), None), ("opening", B, Some("opening"), None),
            ("carbon_dioxide", S, Some("carbon_dioxide"), Some("ppm")),
            ("volatile_organic_compounds", S, Some("volatile_organic_compounds"), Some("µg/m³")),
            ("moisture", S, Some("moisture"), Some("%")), ("battery_low", B, Some("battery"), None),
            ("battery_charging", B, Some("battery_charging"), None),
            ("carbon_monoxide", B, Some("carbon_monoxide"), None), ("cold", B, Some("cold"), None),
            ("connectivity", B, Some("connectivity"), None), ("door", B, Some("door"), None),
            ("garage_door", B, Some("garage_door"), None), ("gas_detected", B, Some("gas"), None),
            ("heat", B, Some("heat"), None), ("light", B, Some("light"), None), ("lock", B, Some("lock"), None),
            ("water_leak", B, Some("moisture"), None), ("motion", B, Some("motion"), None),
            ("moving", B, Some("moving"), None), ("occupancy", B, Some("occupancy"), None),
            ("plug", B, Some("plug"), None), ("presence", B, Some("presence"), None),
            ("problem", B, Some("problem"), None), ("running", B, Some("running"), None),
            ("safety", B, Some("safety"), None), ("smoke", B, Some("smoke"), None), ("sound", B, Some("sound"), None),
            ("tamper", B, Some("tamper"), None), ("vibration", B, Some("vibration"), None),
            ("window", B, Some("window"), None), ("button", S, None, None), ("dimmer", S, None, None),
            ("dimmer_steps", S, None, None), ("rotation", S, None, Some("°")),
            ("distance_mm", S, Some("distance"), Some("mm")), ("distance", S, Some("distance"), Some("m")),
            ("duration", S, Some("duration"), Some("s")), ("current", S, Some("current"), Some("A")),
            ("speed", S, Some("speed"), Some("m/s")), ("uv_index", S, None, Some("UV index")),
            ("volume", S, Some("volume"), Some("L")), ("volume_ml", S, Some("volume"), Some("mL")),
            ("volume_flow_rate", S, Some("volume_flow_rate"), Some("m³/h")), ("gas", S, Some("gas"), Some("m³")),
            ("water", S, Some("water"), Some("L")), ("timestamp", S, Some("timestamp"), None),
            ("acceleration", S, None, Some("m/s²")), ("gyroscope", S, None, Some("°/s")),
            ("text", S, None, None), ("raw", S, None, None),
            ("volume_storage", S, Some("volume_storage"), Some("L")),
            ("conductivity", S, None, Some("µS/cm")), ("direction", S, None, Some("°")),
            ("precipitation", S, Some("precipitation"), Some("mm")), ("channel", S, None, None),
            ("rotational_speed", S, None, Some("rpm")), ("light_level", S, None, None),
            ("device_type_id", S, None, None), ("firmware_version", S, None, None),
            // pvvx and atc1441 flags.
            ("switch", B, None, None),
        ];
        let mut names: Vec<&str> = OBJECTS
            .iter()
            .filter(|o| o.encoding != Encoding::PacketId)
            .map(|o| o.name)
            .collect();
        names.extend(["dimmer_steps", "switch"]);
        for name in names {
            let Some((_, component, class, unit)) = expected.iter().find(|e| e.0 == name) else {
                panic!("{name}: say how discovery types it");
            };
            let kind = if *component == B {
                ValueKind::Bool
            } else {
                ValueKind::Number
            };
            for field in [name.to_string(), format!("{name}_2")] {
                let entity = infer_ble(&field, kind).unwrap();
                assert_eq!(entity.component, *component, "{field}");
                assert_eq!(entity.device_class.as_deref(), *class, "{field}");
                assert_eq!(entity.unit.as_deref(), *unit, "{field}");
            }
        }
    }
}
