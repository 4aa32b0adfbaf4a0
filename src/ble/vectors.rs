//! The published test vectors of the BLE formats, each decoded here: bthome.io's example adverts (plain
//! and encrypted, bindkey `231d39c1d7cc1ab1aee224cd096db932`, MAC `54:48:E6:8F:80:A5`), the parser and
//! encryption test payloads of the Python package bthome-ble (Bluetooth-Devices/bthome-ble, MIT:
//! `tests/test_parser_v2.py`, `tests/test_v2_encryption.py`; each row names its test), and the HCI events
//! of ble_monitor's ATC/pvvx tests (custom-components/ble_monitor, MIT:
//! `custom_components/ble_monitor/test/test_atc_parser.py`), legacy and extended, plain and encrypted.
//! Only the bytes and the values they mean are taken from them.
//!
//! Where bthome-ble's key stands for another unit or for a binary sensor too, the row has sensorgate's
//! name (`mass_lb`, `distance_mm`, `volume_ml`, `power_on`; see [`super::objects`]); where bthome-ble
//! reports the packet id as a sensor, it is the reading's `seq` here.

use super::hci::{self, AddressType};
use super::{ad, decode_service_data, BleError, BleFormat, BleReading, Mac};
use crate::crypto::keys::FrameKey;

fn hex(text: &str) -> Vec<u8> {
    crate::crypto::parse_hex(text).unwrap()
}

fn key(text: &str) -> FrameKey {
    FrameKey::from_bytes(hex(text).try_into().unwrap())
}

fn mac(text: &str) -> Option<Mac> {
    Some(Mac::parse(text).unwrap())
}

/// The fields as `name=value` text, sorted (bthome-ble lists them by kind, not in payload order).
fn sorted_fields(reading: &BleReading) -> Vec<String> {
    let mut fields: Vec<String> = reading
        .fields
        .fields
        .iter()
        .map(|(name, value)| format!("{name}={}", value.to_plain_text()))
        .collect();
    fields.sort();
    fields
}

fn expected(fields: &[(&str, &str)]) -> Vec<String> {
    let mut fields: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
    fields.sort();
    fields
}

/// Expected fields: name and value as a field topic carries it.
type Fields = &'static [(&'static str, &'static str)];

/// bthome-ble's plain payloads (service data after the UUID), with the packet id and the fields.
#[rustfmt::skip]
const BTHOME_PLAIN: &[(&str, Option<u32>, Fields)] = &[
    // test_shelly_blu_ht_display_zb
    ("40002e01641e012e34451601", Some(46), &[("battery", "100"), ("temperature", "27.8"), ("humidity", "52"), ("light", "true")]),
    // test_identical_packet_id
    ("400009", Some(9), &[]),
    // test_increasing_packet_id
    ("4000bd", Some(189), &[]),
    ("4000be", Some(190), &[]),
    // test_bthome_wrong_object_id
    ("40feca09", None, &[]),
    // test_bthome_battery_wrong_object_id_humidity
    ("40015dfe5d0903b718", None, &[("battery", "93")]),
    // test_bthome_with_mac
    ("42b2188d38c1a404138a01", None, &[("pressure", "1008.83")]),
    // test_bthome_temperature_humidity
    ("4002ca0903bf13", None, &[("temperature", "25.06"), ("humidity", "50.55")]),
    // test_bthome_packet_id_temperature_humidity_battery
    ("400009015d025d0903b718", Some(9), &[("temperature", "23.97"), ("humidity", "63.27"), ("battery", "93")]),
    // test_bthome_pressure
    ("4004138a01", None, &[("pressure", "1008.83")]),
    // test_bthome_illuminance
    ("4005138a14", None, &[("illuminance", "13460.67")]),
    // test_bthome_mass_kilograms
    ("40065e1f", None, &[("mass", "80.3")]),
    // test_bthome_mass_pounds
    ("40073e1d", None, &[("mass_lb", "74.86")]),
    // test_bthome_dew_point
    ("4008ca06", None, &[("dew_point", "17.38")]),
    // test_bthome_count
    ("400960", None, &[("count", "96")]),
    // test_bthome_energy
    ("400a138a14", None, &[("energy", "1346.067")]),
    // test_bthome_power
    ("400b021b00", None, &[("power", "69.14")]),
    // test_bthome_voltage
    ("400c020c", None, &[("voltage", "3.074")]),
    // test_bthome_binary_sensor
    ("400f01", None, &[("generic", "true")]),
    // test_bthome_binary_sensor_power
    ("401001", None, &[("power_on", "true")]),
    // test_bthome_binary_sensor_opening
    ("401100", None, &[("opening", "false")]),
    // test_bthome_binary_sensor_window
    ("402d01", None, &[("window", "true")]),
    // test_bthome_pm
    ("400d120c0e021c", None, &[("pm25", "3090"), ("pm10", "7170")]),
    // test_bthome_co2
    ("4012e204", None, &[("carbon_dioxide", "1250")]),
    // test_bthome_voc
    ("40133301", None, &[("volatile_organic_compounds", "307")]),
    // test_bthome_moisture
    ("4014020c", None, &[("moisture", "30.74")]),
    // test_bthome_event_button_long_press
    ("403a04", None, &[("button", "long_press")]),
    // test_bthome_event_triple_button_device
    ("403a003a013a03", None, &[("button_2", "press"), ("button_3", "triple_press")]),
    // test_bthome_event_button_hold_press
    ("403a80", None, &[("button", "hold_press")]),
    // test_bthome_event_dimmer_rotate_left_3_steps
    ("403c0103", None, &[("dimmer", "rotate_left"), ("dimmer_steps", "3")]),
    // test_bthome_rotation
    ("403f020c", None, &[("rotation", "307.4")]),
    // test_bthome_invalid_button_event
    ("403afe", None, &[]),
    // test_bthome_distance_millimeters
    ("40400c00", None, &[("distance_mm", "12")]),
    // test_bthome_distance_meters
    ("40414e00", None, &[("distance", "7.8")]),
    // test_bthome_duration
    ("40424e3400", None, &[("duration", "13.39")]),
    // test_bthome_current
    ("40434e34", None, &[("current", "13.39")]),
    // test_bthome_speed
    ("40444e34", None, &[("speed", "133.9")]),
    // test_bthome_speed_signed
    ("40624099dfff", None, &[("speed", "-2.123456")]),
    // test_bthome_temperature_2
    ("40451101", None, &[("temperature", "27.3")]),
    // test_bthome_uv_index
    ("404632", None, &[("uv_index", "5")]),
    // test_bthome_volume_liters
    ("40478756", None, &[("volume", "2215.1")]),
    // test_bthome_volume_milliliters
    ("4048dc87", None, &[("volume_ml", "34780")]),
    // test_bthome_volume_flow_rate
    ("4049dc87", None, &[("volume_flow_rate", "34.78")]),
    // test_bthome_voltage_2
    ("404a020c", None, &[("voltage", "307.4")]),
    // test_bthome_gas
    ("404b138a14", None, &[("gas", "1346.067")]),
    // test_bthome_gas_2
    ("404c41018a01", None, &[("gas", "25821.505")]),
    // test_bthome_energy_2
    ("404d12138a14", None, &[("energy", "344593.17")]),
    // test_bthome_volume_liters_2
    ("404e87562a01", None, &[("volume", "19551.879")]),
    // test_bthome_volume_water
    ("404f87562a01", None, &[("water", "19551.879")]),
    // test_bthome_timestamp
    ("44505d396164", None, &[("timestamp", "1684093277")]),
    // test_bthome_acceleration
    ("44518756", None, &[("acceleration", "22.151")]),
    // test_bthome_acceleration_signed
    ("40630057d0ff", None, &[("acceleration", "-3.123456")]),
    // test_bthome_gyroscope
    ("44528756", None, &[("gyroscope", "22.151")]),
    // test_bthome_text
    ("44530c48656c6c6f20576f726c6421", None, &[("text", "Hello World!")]),
    // test_bthome_raw
    ("44540c48656c6c6f20576f726c6421", None, &[("raw", "48656c6c6f20576f726c6421")]),
    // test_bthome_text_invalid
    ("44530187", None, &[]),
    // test_bthome_volume_storage
    ("405587562a01", None, &[("volume_storage", "19551.879")]),
    // test_bthome_conductivity
    ("4056e803", None, &[("conductivity", "1000")]),
    // test_shelly_blu_ht
    ("4057ea", None, &[("temperature", "-22")]),
    // test_bthome_temperature_1_byte_2
    ("4058ea", None, &[("temperature", "-7.7")]),
    // test_bthome_count_signed
    ("4059ea", None, &[("count", "-22")]),
    // test_bthome_count_signed_2_bytes
    ("405aeaea", None, &[("count", "-5398")]),
    // test_bthome_count_signed_4_bytes
    ("405bea0234ea", None, &[("count", "-365690134")]),
    // test_bthome_power_signed
    ("405c02fbffff", None, &[("power", "-12.78")]),
    // test_bthome_current_signed
    ("405d02ea", None, &[("current", "-5.63")]),
    // test_bthome_double_temperature
    ("4002ca0902cf09", None, &[("temperature_1", "25.06"), ("temperature_2", "25.11")]),
    // test_bthome_triple_temperature_double_humidity_battery
    ("4002ca0902cf0902cf0803b71803b717015d", None, &[("temperature_1", "25.06"), ("temperature_2", "25.11"), ("temperature_3", "22.55"), ("humidity_1", "63.27"), ("humidity_2", "60.71"), ("battery", "93")]),
    // test_bthome_double_voltage_different_object_id
    ("4000010b0000004a0d0901330ce90c", Some(1), &[("power", "0"), ("voltage_1", "231.7"), ("voltage_2", "3.305"), ("battery", "51")]),
    // test_bthome_shelly_button
    ("40005201643a01", Some(82), &[("battery", "100"), ("button", "press")]),
    // test_bthome_test
    ("4000a70c780b1000", Some(167), &[("voltage", "2.936"), ("power_on", "false")]),
    // test_bthome_not_sending_object_ids_in_numerical_order
    ("4003bf1302ca09", None, &[("humidity", "50.55"), ("temperature", "25.06")]),
    // test_bthome_invalid_object_payload_data_length
    ("4002ca0903bf", None, &[("temperature", "25.06")]),
    // test_bthome_direction_precipitation
    ("405e3f755f11d5", None, &[("direction", "300.15"), ("precipitation", "5454.5")]),
    // test_bthome_channel
    ("406001", None, &[("channel", "1")]),
    // test_bthome_revolutions_per_minute
    ("4061ac0d", None, &[("rotational_speed", "3500")]),
    // test_bthome_light_level
    ("406402", None, &[("light_level", "2")]),
];

#[test]
fn bthome_ble_plain_payloads() {
    for (payload, seq, fields) in BTHOME_PLAIN {
        let reading = super::bthome::decode(&hex(payload), None, None)
            .unwrap_or_else(|e| panic!("{payload}: {e}"));
        assert_eq!(reading.fields.seq, *seq, "{payload}");
        assert_eq!(sorted_fields(&reading), expected(fields), "{payload}");
        assert_eq!(reading.counter, None, "{payload}");
    }
    assert!(BTHOME_PLAIN.len() >= 70, "{}", BTHOME_PLAIN.len());
}

#[test]
fn names_and_value_kinds_in_payload_order() {
    use crate::model::Value;
    // bthome-ble test_shelly_blu_ht_display_zb: packet id, battery, light (binary), humidity, temperature.
    let reading = super::bthome::decode(&hex("40002e01641e012e34451601"), None, None).unwrap();
    assert_eq!(
        reading.fields.fields,
        vec![
            ("battery".to_string(), Value::Int(100)),
            ("light".to_string(), Value::Bool(true)),
            ("humidity".to_string(), Value::Int(52)),
            ("temperature".to_string(), Value::Float(27.8)),
        ]
    );
}

#[test]
fn trigger_based_flag_and_mac_in_the_payload() {
    // bthome-ble test_sleepy_device / test_no_sleepy_device.
    assert!(
        super::bthome::decode(&hex("4404138a01"), None, None)
            .unwrap()
            .trigger_based
    );
    assert!(
        !super::bthome::decode(&hex("4004138a01"), None, None)
            .unwrap()
            .trigger_based
    );
    // bthome-ble test_bthome_with_mac: the MAC inside the payload (LE) is the address.
    let reading = super::bthome::decode(&hex("42b2188d38c1a404138a01"), None, None).unwrap();
    assert_eq!(reading.fields.address.as_deref(), Some("A4:C1:38:8D:18:B2"));
    // The advertiser's MAC otherwise.
    let reading =
        super::bthome::decode(&hex("4004138a01"), mac("A4:C1:38:8D:18:B2"), None).unwrap();
    assert_eq!(reading.fields.address.as_deref(), Some("A4:C1:38:8D:18:B2"));
}

#[test]
fn other_versions_are_refused() {
    // bthome-ble test_has_incorrect_version (version 7) and test_incorrect_bthome_version (version 0).
    assert_eq!(
        super::bthome::decode(&hex("e102000c0404138a01"), None, None),
        Err(BleError::BthomeVersion(7))
    );
    assert_eq!(
        super::bthome::decode(&hex("00"), None, None),
        Err(BleError::BthomeVersion(0))
    );
    assert!(matches!(
        super::bthome::decode(&[], None, None),
        Err(BleError::TooShort { .. })
    ));
}

const BTHOME_IO_KEY: &str = "231d39c1d7cc1ab1aee224cd096db932";
const BTHOME_IO_MAC: &str = "54:48:E6:8F:80:A5";

#[test]
fn bthome_io_encryption_examples() {
    let key = key(BTHOME_IO_KEY);
    // bthome.io's encryption example and bthome-ble test_encryption_example_1: 02ca09 03bf13 sealed with
    // the counter bytes 00 11 22 33.
    let reading = decode_service_data(
        BleFormat::Bthome,
        &hex("d2fc41a47266c95f730011223378237214"),
        mac(BTHOME_IO_MAC),
        Some(&key),
    )
    .unwrap();
    assert_eq!(
        sorted_fields(&reading),
        expected(&[("temperature", "25.06"), ("humidity", "50.55")])
    );
    assert_eq!(reading.counter, Some(0x3322_1100));
    assert_eq!(reading.fields.address.as_deref(), Some(BTHOME_IO_MAC));
    // test_encryption_example_2: 2101 (motion).
    let reading = decode_service_data(
        BleFormat::Bthome,
        &hex("d2fc4187b90011223372b0231f"),
        mac(BTHOME_IO_MAC),
        Some(&key),
    )
    .unwrap();
    assert_eq!(sorted_fields(&reading), expected(&[("motion", "true")]));
    // The same advert without the key, without the MAC, with another MAC, with a changed byte.
    let advert = hex("d2fc41a47266c95f730011223378237214");
    let decode = |bytes: &[u8], mac: Option<Mac>, key: Option<&FrameKey>| {
        decode_service_data(BleFormat::Bthome, bytes, mac, key)
    };
    assert_eq!(
        decode(&advert, mac(BTHOME_IO_MAC), None),
        Err(BleError::NeedsKey { format: "BTHome" })
    );
    assert_eq!(
        decode(&advert, None, Some(&key)),
        Err(BleError::NeedsMac { format: "BTHome" })
    );
    assert_eq!(
        decode(&advert, mac("54:48:E6:8F:80:A6"), Some(&key)),
        Err(BleError::Mic { format: "BTHome" })
    );
    for at in 2..advert.len() {
        let mut changed = advert.clone();
        changed[at] ^= 0x10;
        assert!(
            decode(&changed, mac(BTHOME_IO_MAC), Some(&key)).is_err(),
            "byte {at}"
        );
    }
}

#[test]
fn bthome_ble_encrypted_payloads() {
    let key_io = key(BTHOME_IO_KEY);
    // (test, payload, MAC, counter, fields); every one with bthome.io's bindkey.
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, u32, Fields)] = &[
        ("test_bindkey_correct", "41a47266c95f730011223378237214", BTHOME_IO_MAC, 0x3322_1100,
         &[("temperature", "25.06"), ("humidity", "50.55")]),
        ("test_bthome_with_mac_encrypted", "43a5808fe64854f196c06ffb4900112233f08ecbde", "00:00:00:00:00:00",
         0x3322_1100, &[("temperature", "25.06"), ("humidity", "50.55")]),
        ("test_increasing_encryption_counter", "41e445f3c9962b332211006c7c4519", BTHOME_IO_MAC, 1_122_867, &[]),
        ("test_increasing_encryption_counter", "413e932cc7175f342211005538 76af", BTHOME_IO_MAC, 1_122_868, &[]),
        ("test_decreasing_encryption_counter", "41723d3035fb88322211009e7414c0", BTHOME_IO_MAC, 1_122_866, &[]),
        ("test_reset_encryption_counter", "41ba0db07aeef6ffffffff21fd4600", BTHOME_IO_MAC, u32::MAX, &[]),
        ("test_reset_encryption_counter", "41de40b50e67660000000 0d7cb95de", BTHOME_IO_MAC, 0, &[]),
    ];
    for (test, payload, address, counter, fields) in cases {
        let reading = super::bthome::decode(&hex(payload), mac(address), Some(&key_io))
            .unwrap_or_else(|e| panic!("{test}: {e}"));
        assert_eq!(reading.counter, Some(*counter), "{test}");
        assert!(!reading.fields.fields.is_empty(), "{test}");
        if !fields.is_empty() {
            assert_eq!(sorted_fields(&reading), expected(fields), "{test}");
        }
    }
    // test_encrypted_shelly_blu_button_event: a Shelly BLU Button1 (trigger-based) with its own bindkey.
    let reading = super::bthome::decode(
        &hex("450aeb84467f85ba0100003188788c"),
        mac("B4:35:22:F5:3D:A4"),
        Some(&key("90bffd73cb6b26ef58a7a8eba9232036")),
    )
    .unwrap();
    assert!(reading.trigger_based);
    assert_eq!(reading.counter, Some(0x1BA));
    assert!(reading
        .fields
        .fields
        .iter()
        .any(|(name, _)| name == "button"));
    // test_bindkey_wrong: another device's bindkey.
    assert_eq!(
        super::bthome::decode(
            &hex("41d2fcefe52eb212d600112233bc38c966"),
            mac("A4:C1:38:8D:18:B2"),
            Some(&key("814aac74c4f17b6c1581e1ab87816b99")),
        ),
        Err(BleError::Mic { format: "BTHome" })
    );
    // test_too_short_encryption_advertisement.
    assert!(
        super::bthome::decode(&hex("41ba0db07aeef600"), mac(BTHOME_IO_MAC), Some(&key_io)).is_err()
    );
}

/// Decodes the one 0x181A service data of an HCI event as `format`.
fn hci_service_data(
    event: &str,
    format: BleFormat,
    key: Option<&FrameKey>,
) -> (hci::Advertisement, BleReading) {
    let adverts = hci::parse_line(event).unwrap();
    assert_eq!(adverts.len(), 1, "{event}");
    let advert = adverts.into_iter().next().unwrap();
    let (uuid, service_data) = ad::service_data(&advert.data).next().unwrap();
    assert_eq!(uuid, 0x181A);
    let reading = decode_service_data(format, service_data, Some(advert.address), key).unwrap();
    (advert, reading)
}

#[test]
fn ble_monitor_atc_and_pvvx_hci_events() {
    // (test, event, format, MAC, RSSI, packet, fields)
    #[rustfmt::skip]
    let cases: &[(&str, &str, BleFormat, &str, i8, u32, Fields)] = &[
        ("test_atc_atc1441", "043e1d02010000f4830238c1a41110161a18a4c1380283f400a22f5f0bf819df",
         BleFormat::Atc1441, "A4:C1:38:02:83:F4", -33, 25,
         &[("temperature", "16.2"), ("humidity", "47"), ("voltage", "3.064"), ("battery", "95")]),
        ("test_atc_atc1441_ext", "043E2B0D011300004E7CBC38C1A40100FF7FB90000000000000000001110161A18A4C138BC7C4E0102284F0B6720",
         BleFormat::Atc1441, "A4:C1:38:BC:7C:4E", -71, 32,
         &[("temperature", "25.8"), ("humidity", "40"), ("voltage", "2.919"), ("battery", "79")]),
        ("test_atc_custom", "043e1f02010000f4830238c1a41312161a18f4830238c1a4a9066911b60b58f70dde",
         BleFormat::Pvvx, "A4:C1:38:02:83:F4", -34, 247,
         &[("temperature", "17.05"), ("humidity", "44.57"), ("voltage", "2.998"), ("battery", "88"),
           ("opening", "true"), ("switch", "false")]),
        ("test_atc_custom_v2_9", "043E2202010000B2188D38C1A41602010612161A18B2188D38C1A42B089011F70A43200FC2",
         BleFormat::Pvvx, "A4:C1:38:8D:18:B2", -62, 32,
         &[("temperature", "20.91"), ("humidity", "44.96"), ("voltage", "2.807"), ("battery", "67"),
           ("opening", "true"), ("switch", "true")]),
        ("test_atc_custom_ext", "043E300D011300008B376338C1A40100FF7FBA0000000000000000001602010612161A188B376338C1A4CE0913107F0B521204",
         BleFormat::Pvvx, "A4:C1:38:63:37:8B", -70, 18,
         &[("temperature", "25.1"), ("humidity", "41.15"), ("voltage", "2.943"), ("battery", "82"),
           ("opening", "false"), ("switch", "false")]),
    ];
    for (test, event, format, address, rssi, packet, fields) in cases {
        let (advert, reading) = hci_service_data(event, *format, None);
        assert_eq!(advert.address.to_string(), *address, "{test}");
        assert_eq!(advert.rssi, *rssi, "{test}");
        assert_eq!(advert.address_type, AddressType::Public, "{test}");
        assert_eq!(reading.fields.address.as_deref(), Some(*address), "{test}");
        assert_eq!(reading.fields.seq, Some(*packet), "{test}");
        assert_eq!(sorted_fields(&reading), expected(fields), "{test}");
        assert_eq!(reading.counter, None, "{test}");
    }
}

#[test]
fn ble_monitor_pvvx_encrypted_hci_event() {
    // test_atc_custom_encrypted: bindkey b9ea895fac7eea6d30532432a516f3a3.
    let event = "043e1b02010000b2188d38c1a40f0e161a1811d603fbfa7b6dfb1e26fde2";
    let key = key("b9ea895fac7eea6d30532432a516f3a3");
    let (advert, reading) = hci_service_data(event, BleFormat::Pvvx, Some(&key));
    assert_eq!(advert.rssi, -30);
    assert_eq!(reading.fields.address.as_deref(), Some("A4:C1:38:8D:18:B2"));
    assert_eq!(reading.fields.seq, Some(17));
    assert_eq!(reading.counter, Some(17));
    // ble_monitor estimates a voltage from the battery percentage; the advert carries none.
    let fields = sorted_fields(&reading);
    for field in ["temperature=23.45", "humidity=41.73", "battery=61"] {
        assert!(fields.contains(&field.to_string()), "{field} in {fields:?}");
    }
    assert!(!fields.iter().any(|f| f.starts_with("voltage=")));
    // Without the key, or with another, nothing is read.
    let service_data = hex("1a1811d603fbfa7b6dfb1e26fd");
    let address = mac("A4:C1:38:8D:18:B2");
    assert_eq!(
        decode_service_data(BleFormat::Pvvx, &service_data, address, None),
        Err(BleError::NeedsKey { format: "pvvx" })
    );
    assert_eq!(
        decode_service_data(
            BleFormat::Pvvx,
            &service_data,
            address,
            Some(&super::vectors::key(BTHOME_IO_KEY))
        ),
        Err(BleError::Mic { format: "pvvx" })
    );
}

#[test]
fn hci_lines_that_are_not_advertising_reports() {
    // Comments and blank lines; an HCI Command Complete event; an LE Connection Complete subevent.
    assert_eq!(hci::parse_line("# captured 2026-12-06").unwrap(), vec![]);
    assert_eq!(hci::parse_line("   ").unwrap(), vec![]);
    assert_eq!(hci::parse_line("040e0401030c00").unwrap(), vec![]);
    assert_eq!(hci::parse_line("3e03010000").unwrap(), vec![]);
    // Without the H4 packet type, with spaces and colons.
    let event = "3e 1d 02 01 00 00 f4:83:02:38:c1:a4 11 10161a18a4c1380283f400a22f5f0bf819 df";
    assert_eq!(hci::parse_line(event).unwrap()[0].rssi, -33);
    // A random address.
    let random = "043e1d02010001f4830238c1a41110161a18a4c1380283f400a22f5f0bf819df";
    assert_eq!(
        hci::parse_line(random).unwrap()[0].address_type,
        AddressType::Random
    );
    // Wrong length byte, a report cut short, not hex, odd digits.
    assert!(matches!(
        hci::parse_line("043e1e02010000f4830238c1a41110161a18a4c1380283f400a22f5f0bf819df"),
        Err(hci::HciError::Length { said: 30, have: 29 })
    ));
    assert!(matches!(
        hci::parse_line("043e0b0201000000f4830238c1a4"),
        Err(hci::HciError::Truncated { index: 0 })
    ));
    assert!(matches!(
        hci::parse_line("043e zz"),
        Err(hci::HciError::NotHex(6))
    ));
    assert!(matches!(
        hci::parse_line("043"),
        Err(hci::HciError::OddDigits)
    ));
}

#[test]
fn two_legacy_reports_in_one_event() {
    // Two reports back to back: ble_monitor's atc1441 report, then a report with no data.
    let first = "0000f4830238c1a41110161a18a4c1380283f400a22f5f0bf819df";
    let second = "0401665544332211".to_string() + "00" + "c4";
    let params = format!("0202{first}{second}");
    let event = format!("043e{:02x}{params}", params.len() / 2);
    let adverts = hci::parse_line(&event).unwrap();
    assert_eq!(adverts.len(), 2);
    assert_eq!(adverts[0].rssi, -33);
    assert_eq!(adverts[1].address.to_string(), "11:22:33:44:55:66");
    assert_eq!(adverts[1].address_type, AddressType::Random);
    assert_eq!(adverts[1].rssi, -60);
    assert!(adverts[1].data.is_empty());
}
