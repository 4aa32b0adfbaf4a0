//! What each field becomes in Home Assistant: the table from payload format and field name (Cayenne LPP
//! `<type>_<channel>`, MySensors `<value type>_<child>`, well-known JSON names, the BLE decoders' Home
//! Assistant BTHome keys) to the MQTT platform (`sensor`, `binary_sensor`, `device_tracker`),
//! `device_class`, unit and `state_class`; the controls
//! (`switch`, `number`) of fields a device accepts commands for ([`control_entity`]); the per-field
//! overrides of `[[device]] fields`; and Home Assistant's own rules for which device classes, units and
//! state classes go together, transcribed from `homeassistant/components/sensor/const.py`
//! (`DEVICE_CLASS_UNITS`, `DEVICE_CLASS_STATE_CLASSES`) and `binary_sensor/__init__.py`
//! (`BinarySensorDeviceClass`), so an override the configuration accepts is one Home Assistant accepts.
//! Pure data and functions: no IO, no configuration types.
//!
//! A name the table does not know becomes a plain sensor typed by its first value: a number gets
//! `state_class: measurement` (so Home Assistant graphs it), a boolean a `binary_sensor`, text a plain
//! sensor. The units chosen by the table are valid from Home Assistant 2024.3 through today's releases.

use serde::{Deserialize, Serialize};

use crate::decode::PayloadFormat;
pub use crate::encode::Control;

/// A Home Assistant MQTT platform an entity belongs to; the second level of its discovery topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Sensor,
    BinarySensor,
    DeviceTracker,
    /// A field the device accepts commands for, on/off (`crate::commands::commandable_fields`).
    Switch,
    /// A field the device accepts commands for, a number in a range.
    Number,
}

impl Component {
    /// The platform's name in discovery topics and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Sensor => "sensor",
            Component::BinarySensor => "binary_sensor",
            Component::DeviceTracker => "device_tracker",
            Component::Switch => "switch",
            Component::Number => "number",
        }
    }
}

/// What kind of value a field held when it was first announced; decides the type of a name the table
/// does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Number,
    Bool,
    Text,
}

impl ValueKind {
    /// The kind of a JSON value (`null` and anything else count as text).
    pub fn of(value: &serde_json::Value) -> ValueKind {
        match value {
            serde_json::Value::Number(_) => ValueKind::Number,
            serde_json::Value::Bool(_) => ValueKind::Bool,
            _ => ValueKind::Text,
        }
    }
}

/// How an entity's value is read out of the device's JSON state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Render {
    /// The field's value as it is.
    Plain,
    /// `ON` when the value is true, 1, "on", "open", ...; `OFF` otherwise.
    Binary,
    /// The reverse of [`Render::Binary`] (a `contact` that is true when closed).
    BinaryInverted,
    /// Seconds since 1970 turned into an ISO 8601 timestamp.
    UnixTime,
    /// A `device_tracker`: latitude and longitude fields (and an optional altitude) as attributes.
    Location {
        latitude: String,
        longitude: String,
        altitude: Option<String>,
    },
}

/// One entity as it will be announced: everything but the device and topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityType {
    pub component: Component,
    /// The entity's name, shown after the device's name.
    pub name: String,
    pub device_class: Option<String>,
    pub unit: Option<String>,
    pub state_class: Option<String>,
    pub icon: Option<String>,
    /// `entity_category: diagnostic` (signal, last seen, battery).
    pub diagnostic: bool,
    pub render: Render,
}

/// A `[[device]] fields.<name>` override: whatever is given replaces what the table infers. The
/// configuration reads it as written (`fields = { soil = { device_class = "moisture" } }`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldOverride {
    /// `"sensor"`, `"binary_sensor"`, `"switch"` (a field the device accepts commands for, on a source
    /// with `commands = true`), or `"none"` (the field is not announced).
    pub component: Option<String>,
    pub device_class: Option<String>,
    pub unit: Option<String>,
    pub state_class: Option<String>,
    pub name: Option<String>,
    pub icon: Option<String>,
}

impl FieldOverride {
    /// Whether the override gives `key` (`component`, `device_class`, ...: an [`OverrideError`]'s key).
    pub fn gives(&self, key: &str) -> bool {
        match key {
            "component" => self.component.is_some(),
            "device_class" => self.device_class.is_some(),
            "unit" => self.unit.is_some(),
            "state_class" => self.state_class.is_some(),
            "name" => self.name.is_some(),
            "icon" => self.icon.is_some(),
            _ => false,
        }
    }
}

/// Why an override cannot be announced: the key at fault (`component`, `device_class`, ...) and what to
/// write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideError {
    pub key: &'static str,
    pub message: String,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The type name (`temperature` for LPP `temperature_3`, `temp` for MySensors `temp_6`).
    key: &'static str,
    /// The entity name (`Temperature`), followed by the channel and part (`Temperature 3`).
    label: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Sensor {
        device_class: Option<&'static str>,
        unit: Option<&'static str>,
        state_class: Option<&'static str>,
        diagnostic: bool,
    },
    Binary {
        device_class: Option<&'static str>,
        inverted: bool,
    },
    UnixTime,
    /// The latitude of a position: announced as a `device_tracker` with its longitude.
    Latitude,
    /// The longitude and altitude of a position: part of the latitude's tracker, no entity of its own.
    PartOfLocation,
}

const MEASUREMENT: Option<&str> = Some("measurement");
const TOTAL_INCREASING: Option<&str> = Some("total_increasing");

const fn measured(
    key: &'static str,
    label: &'static str,
    class: &'static str,
    unit: &'static str,
) -> Known {
    Known {
        key,
        label,
        kind: Kind::Sensor {
            device_class: Some(class),
            unit: Some(unit),
            state_class: MEASUREMENT,
            diagnostic: false,
        },
    }
}

const fn counted(
    key: &'static str,
    label: &'static str,
    class: &'static str,
    unit: &'static str,
) -> Known {
    Known {
        key,
        label,
        kind: Kind::Sensor {
            device_class: Some(class),
            unit: Some(unit),
            state_class: TOTAL_INCREASING,
            diagnostic: false,
        },
    }
}

/// A number without a device class (Home Assistant has none for it), with a unit or none.
const fn number(key: &'static str, label: &'static str, unit: Option<&'static str>) -> Known {
    Known {
        key,
        label,
        kind: Kind::Sensor {
            device_class: None,
            unit,
            state_class: MEASUREMENT,
            diagnostic: false,
        },
    }
}

const fn text(key: &'static str, label: &'static str) -> Known {
    Known {
        key,
        label,
        kind: Kind::Sensor {
            device_class: None,
            unit: None,
            state_class: None,
            diagnostic: false,
        },
    }
}

const fn battery(key: &'static str, label: &'static str) -> Known {
    Known {
        key,
        label,
        kind: Kind::Sensor {
            device_class: Some("battery"),
            unit: Some("%"),
            state_class: MEASUREMENT,
            diagnostic: true,
        },
    }
}

const fn binary(key: &'static str, label: &'static str, class: Option<&'static str>) -> Known {
    Known {
        key,
        label,
        kind: Kind::Binary {
            device_class: class,
            inverted: false,
        },
    }
}

const fn special(key: &'static str, label: &'static str, kind: Kind) -> Known {
    Known { key, label, kind }
}

/// Cayenne LPP types (the names `decode::lpp` gives them).
const LPP: &[Known] = &[
    binary("digital_in", "Digital input", None),
    binary("digital_out", "Digital output", None),
    number("analog_in", "Analog input", None),
    number("analog_out", "Analog output", None),
    number("generic_sensor", "Generic sensor", None),
    measured("luminosity", "Illuminance", "illuminance", "lx"),
    binary("presence", "Presence", Some("occupancy")),
    measured("temperature", "Temperature", "temperature", "°C"),
    measured("relative_humidity", "Humidity", "humidity", "%"),
    number("accelerometer", "Acceleration", Some("G")),
    measured("barometric_pressure", "Pressure", "pressure", "hPa"),
    measured("voltage", "Voltage", "voltage", "V"),
    measured("current", "Current", "current", "A"),
    measured("frequency", "Frequency", "frequency", "Hz"),
    number("percentage", "Percentage", Some("%")),
    measured("altitude", "Altitude", "distance", "m"),
    number("concentration", "Concentration", Some("ppm")),
    measured("power", "Power", "power", "W"),
    measured("distance", "Distance", "distance", "m"),
    counted("energy", "Energy", "energy", "kWh"),
    number("direction", "Direction", Some("°")),
    special("unix_time", "Time", Kind::UnixTime),
    number("gyrometer", "Rotation", Some("°/s")),
    text("colour", "Colour"),
    special("gps", "Location", Kind::Latitude),
    binary("switch", "Switch", None),
];

/// MySensors value types (`V_TEMP` is `temp`) and the battery level of `I_BATTERY_LEVEL`.
const MYSENSORS: &[Known] = &[
    measured("temp", "Temperature", "temperature", "°C"),
    measured("hum", "Humidity", "humidity", "%"),
    binary("status", "Status", None),
    number("percentage", "Percentage", Some("%")),
    measured("pressure", "Pressure", "pressure", "hPa"),
    text("forecast", "Forecast"),
    counted("rain", "Rain", "precipitation", "mm"),
    measured("rainrate", "Rain rate", "precipitation_intensity", "mm/h"),
    measured("wind", "Wind speed", "wind_speed", "m/s"),
    measured("gust", "Gust speed", "wind_speed", "m/s"),
    number("direction", "Direction", Some("°")),
    number("uv", "UV index", Some("UV index")),
    measured("weight", "Weight", "weight", "kg"),
    measured("distance", "Distance", "distance", "cm"),
    number("impedance", "Impedance", Some("Ω")),
    binary("armed", "Armed", None),
    binary("tripped", "Tripped", None),
    measured("watt", "Power", "power", "W"),
    counted("kwh", "Energy", "energy", "kWh"),
    number("light_level", "Light level", Some("%")),
    number("flow", "Flow", Some("m")),
    counted("volume", "Water volume", "water", "L"),
    binary("lock_status", "Locked", None),
    number("level", "Level", None),
    measured("voltage", "Voltage", "voltage", "V"),
    measured("current", "Current", "current", "A"),
    number("ph", "pH", None),
    number("orp", "ORP", Some("mV")),
    number("ec", "Conductivity", Some("µS/cm")),
    measured("va", "Apparent power", "apparent_power", "VA"),
    measured("var", "Reactive power", "reactive_power", "var"),
    Known {
        key: "power_factor",
        label: "Power factor",
        kind: Kind::Sensor {
            device_class: Some("power_factor"),
            unit: None,
            state_class: MEASUREMENT,
            diagnostic: false,
        },
    },
    text("text", "Text"),
    battery("battery_level", "Battery"),
];

/// Well-known JSON names (as Zigbee2MQTT, ESPHome and Tasmota send them), looked up in lower case.
const JSON: &[Known] = &[
    measured("temperature", "Temperature", "temperature", "°C"),
    measured("temp", "Temperature", "temperature", "°C"),
    measured("humidity", "Humidity", "humidity", "%"),
    measured("hum", "Humidity", "humidity", "%"),
    measured("pressure", "Pressure", "pressure", "hPa"),
    battery("battery", "Battery"),
    battery("battery_level", "Battery"),
    measured("voltage", "Voltage", "voltage", "V"),
    Known {
        key: "battery_voltage",
        label: "Battery voltage",
        kind: Kind::Sensor {
            device_class: Some("voltage"),
            unit: Some("V"),
            state_class: MEASUREMENT,
            diagnostic: true,
        },
    },
    measured("current", "Current", "current", "A"),
    measured("power", "Power", "power", "W"),
    counted("energy", "Energy", "energy", "kWh"),
    measured("co2", "CO₂", "carbon_dioxide", "ppm"),
    measured("pm1", "PM1", "pm1", "µg/m³"),
    measured("pm25", "PM2.5", "pm25", "µg/m³"),
    measured("pm2_5", "PM2.5", "pm25", "µg/m³"),
    measured("pm10", "PM10", "pm10", "µg/m³"),
    measured("illuminance", "Illuminance", "illuminance", "lx"),
    measured("lux", "Illuminance", "illuminance", "lx"),
    measured("moisture", "Moisture", "moisture", "%"),
    measured("soil_moisture", "Soil moisture", "moisture", "%"),
    measured("distance", "Distance", "distance", "m"),
    measured("altitude", "Altitude", "distance", "m"),
    measured("weight", "Weight", "weight", "kg"),
    measured("wind_speed", "Wind speed", "wind_speed", "m/s"),
    counted("rain", "Rain", "precipitation", "mm"),
    measured("frequency", "Frequency", "frequency", "Hz"),
    measured("noise", "Noise", "sound_pressure", "dB"),
    number("uv", "UV index", Some("UV index")),
    binary("motion", "Motion", Some("motion")),
    binary("occupancy", "Occupancy", Some("occupancy")),
    binary("presence", "Presence", Some("presence")),
    binary("door", "Door", Some("door")),
    binary("window", "Window", Some("window")),
    Known {
        key: "contact",
        label: "Contact",
        kind: Kind::Binary {
            device_class: Some("door"),
            inverted: true,
        },
    },
    binary("water_leak", "Water leak", Some("moisture")),
    binary("leak", "Leak", Some("moisture")),
    binary("smoke", "Smoke", Some("smoke")),
    binary("tamper", "Tamper", Some("tamper")),
    binary("vibration", "Vibration", Some("vibration")),
    binary("battery_low", "Battery low", Some("battery")),
    // rtl_433's names (its `-C si` units in the name; `battery_ok` is 1 when the battery is fine).
    measured("temperature_c", "Temperature", "temperature", "°C"),
    measured("pressure_hpa", "Pressure", "pressure", "hPa"),
    measured("wind_avg_m_s", "Wind speed", "wind_speed", "m/s"),
    measured("wind_max_m_s", "Wind gust", "wind_speed", "m/s"),
    number("wind_dir_deg", "Wind direction", Some("°")),
    counted("rain_mm", "Rain", "precipitation", "mm"),
    measured(
        "rain_rate_mm_h",
        "Rain rate",
        "precipitation_intensity",
        "mm/h",
    ),
    measured("power_w", "Power", "power", "W"),
    counted("energy_kwh", "Energy", "energy", "kWh"),
    measured("light_lux", "Illuminance", "illuminance", "lx"),
    number("uvi", "UV index", Some("UV index")),
    Known {
        key: "battery_ok",
        label: "Battery",
        kind: Kind::Binary {
            device_class: Some("battery"),
            inverted: true,
        },
    },
    Known {
        key: "battery_mv",
        label: "Battery voltage",
        kind: Kind::Sensor {
            device_class: Some("voltage"),
            unit: Some("mV"),
            state_class: MEASUREMENT,
            diagnostic: true,
        },
    },
    special("latitude", "Location", Kind::Latitude),
    special("lat", "Location", Kind::Latitude),
    special("longitude", "Longitude", Kind::PartOfLocation),
    special("lon", "Longitude", Kind::PartOfLocation),
];

/// Home Assistant's BTHome keys, the names the BLE decoders give (`crate::ble::objects`), with the units
/// their formats carry; looked up before [`JSON`], which has the rest (`temperature`, `battery`, ...).
/// A table of their own: as JSON names, `light`, `sound` or `volume` mean other things.
const BLE: &[Known] = &[
    measured("dew_point", "Dew point", "temperature", "°C"),
    measured("mass", "Mass", "weight", "kg"),
    measured("mass_lb", "Mass", "weight", "lb"),
    number("count", "Count", None),
    measured("carbon_dioxide", "CO₂", "carbon_dioxide", "ppm"),
    measured(
        "volatile_organic_compounds",
        "VOC",
        "volatile_organic_compounds",
        "µg/m³",
    ),
    binary("generic", "Generic", None),
    binary("power_on", "Power", Some("power")),
    binary("opening", "Opening", Some("opening")),
    binary(
        "battery_charging",
        "Battery charging",
        Some("battery_charging"),
    ),
    binary(
        "carbon_monoxide",
        "Carbon monoxide",
        Some("carbon_monoxide"),
    ),
    binary("cold", "Cold", Some("cold")),
    binary("connectivity", "Connectivity", Some("connectivity")),
    binary("garage_door", "Garage door", Some("garage_door")),
    binary("gas_detected", "Gas", Some("gas")),
    binary("heat", "Heat", Some("heat")),
    binary("light", "Light", Some("light")),
    binary("lock", "Lock", Some("lock")),
    binary("moving", "Moving", Some("moving")),
    binary("plug", "Plug", Some("plug")),
    binary("problem", "Problem", Some("problem")),
    binary("running", "Running", Some("running")),
    binary("safety", "Safety", Some("safety")),
    binary("sound", "Sound", Some("sound")),
    text("button", "Button"),
    text("dimmer", "Dimmer"),
    number("dimmer_steps", "Dimmer steps", None),
    number("rotation", "Rotation", Some("°")),
    measured("distance_mm", "Distance", "distance", "mm"),
    measured("duration", "Duration", "duration", "s"),
    measured("speed", "Speed", "speed", "m/s"),
    number("uv_index", "UV index", Some("UV index")),
    counted("volume", "Volume", "volume", "L"),
    counted("volume_ml", "Volume", "volume", "mL"),
    measured(
        "volume_flow_rate",
        "Volume flow rate",
        "volume_flow_rate",
        "m³/h",
    ),
    counted("gas", "Gas", "gas", "m³"),
    counted("water", "Water", "water", "L"),
    special("timestamp", "Timestamp", Kind::UnixTime),
    number("acceleration", "Acceleration", Some("m/s²")),
    number("gyroscope", "Gyroscope", Some("°/s")),
    text("text", "Text"),
    text("raw", "Raw"),
    measured("volume_storage", "Volume storage", "volume_storage", "L"),
    // Home Assistant 2024.3 has no conductivity device class yet.
    number("conductivity", "Conductivity", Some("µS/cm")),
    number("direction", "Direction", Some("°")),
    counted("precipitation", "Precipitation", "precipitation", "mm"),
    number("channel", "Channel", None),
    number("rotational_speed", "Rotational speed", Some("rpm")),
    number("light_level", "Light level", None),
    number("device_type_id", "Device type", None),
    text("firmware_version", "Firmware version"),
];

/// The measurements of The Things Network's normalized payload schema (what a codec's
/// `normalizeUplink` returns; its units are the schema's), by dotted path in lower case.
const TTN_NORMALIZED: &[Known] = &[
    measured("air.temperature", "Air temperature", "temperature", "°C"),
    measured("air.relativehumidity", "Humidity", "humidity", "%"),
    measured("air.pressure", "Pressure", "atmospheric_pressure", "hPa"),
    measured("air.co2", "CO₂", "carbon_dioxide", "ppm"),
    measured("air.lightintensity", "Illuminance", "illuminance", "lx"),
    measured("soil.temperature", "Soil temperature", "temperature", "°C"),
    measured("soil.moisture", "Soil moisture", "moisture", "%"),
    number("soil.ec", "Soil conductivity", Some("dS/m")),
    number("soil.ph", "Soil pH", None),
    number("soil.n", "Soil nitrogen", Some("ppm")),
    number("soil.p", "Soil phosphorus", Some("ppm")),
    number("soil.k", "Soil potassium", Some("ppm")),
    measured("soil.depth", "Soil depth", "distance", "cm"),
    measured(
        "water.temperature",
        "Water temperature",
        "temperature",
        "°C",
    ),
    measured("wind.speed", "Wind speed", "wind_speed", "m/s"),
    number("wind.direction", "Wind direction", Some("°")),
    Known {
        key: "battery",
        label: "Battery voltage",
        kind: Kind::Sensor {
            device_class: Some("voltage"),
            unit: Some("V"),
            state_class: MEASUREMENT,
            diagnostic: true,
        },
    },
];

/// What the tables infer for `field` of a codec device whose `normalizeUplink` put the field's value
/// at `normalized` (`air.temperature`): a name the JSON table knows keeps its type (the name is
/// certain, the normalized match is by value); otherwise the normalized schema's type, named by the
/// schema; otherwise as [`infer`].
pub fn infer_normalized(field: &str, normalized: &str, value: ValueKind) -> Option<EntityType> {
    let lower = normalized.to_lowercase();
    let known_name = find_known(&[JSON], &field.to_lowercase()).is_some();
    if known_name || !TTN_NORMALIZED.iter().any(|known| known.key == lower) {
        return infer(PayloadFormat::Codec, field, value);
    }
    infer_from(&[TTN_NORMALIZED], PayloadFormat::Json, &lower, value)
}

/// The gateway's own keys in a device's state that become diagnostic entities (`seq` and `source` do not).
pub fn gateway_key_type(key: &str) -> Option<EntityType> {
    let sensor =
        |name: &str, device_class: Option<&str>, unit: Option<&str>, state_class: Option<&str>| {
            EntityType {
                component: Component::Sensor,
                name: name.to_string(),
                device_class: device_class.map(str::to_string),
                unit: unit.map(str::to_string),
                state_class: state_class.map(str::to_string),
                icon: None,
                diagnostic: true,
                render: Render::Plain,
            }
        };
    match key {
        crate::publish::STATE_KEY_RSSI => Some(sensor(
            "RSSI",
            Some("signal_strength"),
            Some("dBm"),
            MEASUREMENT,
        )),
        crate::publish::STATE_KEY_SNR => Some(EntityType {
            icon: Some("mdi:signal-distance-variant".to_string()),
            ..sensor("SNR", None, Some("dB"), MEASUREMENT)
        }),
        crate::publish::STATE_KEY_LAST_SEEN => {
            Some(sensor("Last seen", Some("timestamp"), None, None))
        }
        _ => None,
    }
}

/// A field's name split as the decoders build it: the type name, the channel or child (`3`), and the
/// part of a multi-value type (`x`, `latitude`).
struct Parts<'n> {
    key: &'n str,
    channel: Option<&'n str>,
    part: Option<&'n str>,
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn split(name: &str) -> Parts<'_> {
    if let Some((rest, last)) = name.rsplit_once('_') {
        if is_number(last) && !rest.is_empty() {
            return Parts {
                key: rest,
                channel: Some(last),
                part: None,
            };
        }
        if let Some((key, channel)) = rest.rsplit_once('_') {
            if is_number(channel) && !key.is_empty() {
                return Parts {
                    key,
                    channel: Some(channel),
                    part: Some(last),
                };
            }
        }
    }
    Parts {
        key: name,
        channel: None,
        part: None,
    }
}

/// `temperature_3` -> `Temperature 3`; `a_b` -> `A b`.
pub fn humanize(name: &str) -> String {
    let spaced = name.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What the table infers for `field` of a device whose source decodes `payload`, given the kind of its
/// first value; `None` when the field has no entity of its own (a longitude, part of its latitude's
/// tracker).
pub fn infer(payload: PayloadFormat, field: &str, value: ValueKind) -> Option<EntityType> {
    let table = match payload {
        PayloadFormat::Lpp => LPP,
        PayloadFormat::MySensors => MYSENSORS,
        // A codec's data is named like a JSON payload's fields.
        PayloadFormat::Json | PayloadFormat::Codec => JSON,
    };
    infer_from(&[table], payload, field, value)
}

/// What the tables infer for `field` of a Bluetooth LE device (the names of `crate::ble`'s decoders).
pub fn infer_ble(field: &str, value: ValueKind) -> Option<EntityType> {
    // Neither table has positions, the one thing the payload format changes beyond the table.
    infer_from(&[BLE, JSON], PayloadFormat::Json, field, value)
}

/// The row of `tables` that names the lower-cased field: the whole name first, then its key without a
/// channel number or part (`temperature_2`, `gps_1_latitude`).
fn find_known<'n>(
    tables: &[&'static [Known]],
    lower: &'n str,
) -> Option<(&'static Known, Parts<'n>)> {
    let rows = || tables.iter().flat_map(|table| table.iter());
    if let Some(known) = rows().find(|known| known.key == lower) {
        let whole = Parts {
            key: lower,
            channel: None,
            part: None,
        };
        return Some((known, whole));
    }
    let parts = split(lower);
    rows()
        .find(|known| known.key == parts.key)
        .map(|known| (known, parts))
}

/// The entity name of a known field: its label, then its channel and part (a location's part is the
/// tracker's, not the name's).
fn known_name(known: &Known, parts: &Parts<'_>) -> String {
    let mut name = known.label.to_string();
    for extra in [parts.channel, parts.part].into_iter().flatten() {
        if parts.part == Some(extra) && matches!(known.kind, Kind::Latitude | Kind::PartOfLocation)
        {
            continue;
        }
        name.push(' ');
        name.push_str(&humanize(extra));
    }
    name
}

/// [`infer`] over `tables`, searched in order: whole names first, then type names (`temperature` of
/// `temperature_2`).
fn infer_from(
    tables: &[&'static [Known]],
    payload: PayloadFormat,
    field: &str,
    value: ValueKind,
) -> Option<EntityType> {
    let lower = field.to_lowercase();
    let Some((known, parts)) = find_known(tables, &lower) else {
        return Some(fallback(field, value));
    };
    let name = known_name(known, &parts);
    let base = |component, render| EntityType {
        component,
        name: name.clone(),
        device_class: None,
        unit: None,
        state_class: None,
        icon: None,
        diagnostic: false,
        render,
    };
    match known.kind {
        Kind::Sensor {
            device_class,
            unit,
            state_class,
            diagnostic,
        } => Some(EntityType {
            device_class: device_class.map(str::to_string),
            unit: unit.map(str::to_string),
            state_class: state_class.map(str::to_string),
            diagnostic,
            ..base(Component::Sensor, Render::Plain)
        }),
        Kind::Binary {
            device_class,
            inverted,
        } => Some(EntityType {
            device_class: device_class.map(str::to_string),
            ..base(
                Component::BinarySensor,
                if inverted {
                    Render::BinaryInverted
                } else {
                    Render::Binary
                },
            )
        }),
        Kind::UnixTime => Some(EntityType {
            device_class: Some("timestamp".to_string()),
            ..base(Component::Sensor, Render::UnixTime)
        }),
        Kind::Latitude => match (payload, parts.part) {
            // LPP's `gps_N_altitude` is worth a sensor of its own (the tracker carries it too).
            (PayloadFormat::Lpp, Some("altitude")) => Some(EntityType {
                name: format!("Altitude {}", parts.channel.unwrap_or_default())
                    .trim_end()
                    .to_string(),
                device_class: Some("distance".to_string()),
                unit: Some("m".to_string()),
                state_class: MEASUREMENT.map(str::to_string),
                ..base(Component::Sensor, Render::Plain)
            }),
            _ => location(payload, field, &parts)
                .map(|render| base(Component::DeviceTracker, render)),
        },
        Kind::PartOfLocation => None,
    }
}

/// The tracker of a latitude field: LPP `gps_N_latitude` with `gps_N_longitude` and `gps_N_altitude`;
/// JSON `latitude`/`lat` with `longitude`/`lon`. Other LPP `gps_N_*` parts have no entity of their own.
fn location(payload: PayloadFormat, field: &str, parts: &Parts<'_>) -> Option<Render> {
    match payload {
        PayloadFormat::Lpp => {
            parts.channel?;
            (parts.part == Some("latitude")).then(|| {
                let prefix = &field[..field.len() - "latitude".len()];
                Render::Location {
                    latitude: field.to_string(),
                    longitude: format!("{prefix}longitude"),
                    altitude: Some(format!("{prefix}altitude")),
                }
            })
        }
        _ => {
            let longitude = if field.eq_ignore_ascii_case("lat") {
                "lon"
            } else {
                "longitude"
            };
            let longitude = if field.chars().next().is_some_and(char::is_uppercase) {
                humanize(longitude)
            } else {
                longitude.to_string()
            };
            Some(Render::Location {
                latitude: field.to_string(),
                longitude,
                altitude: None,
            })
        }
    }
}

/// The type of a name the table does not know, from its first value.
fn fallback(field: &str, value: ValueKind) -> EntityType {
    let (component, state_class, render) = match value {
        ValueKind::Number => (Component::Sensor, MEASUREMENT, Render::Plain),
        ValueKind::Bool => (Component::BinarySensor, None, Render::Binary),
        ValueKind::Text => (Component::Sensor, None, Render::Plain),
    };
    EntityType {
        component,
        name: humanize(field),
        device_class: None,
        unit: None,
        state_class: state_class.map(str::to_string),
        icon: None,
        diagnostic: false,
        render,
    }
}

/// The entity of `field` after its override, or `None` when it has none (`component = "none"`, or a
/// part of a location). An override that Home Assistant would refuse is an error naming the key.
pub fn resolve(
    payload: PayloadFormat,
    field: &str,
    value: ValueKind,
    over: Option<&FieldOverride>,
) -> Result<Option<EntityType>, OverrideError> {
    let inferred = infer(payload, field, value);
    let Some(over) = over else {
        return Ok(inferred);
    };
    let inferred_component = inferred.as_ref().map(|e| e.component);
    let component = match chosen_component(over)? {
        Chosen::Nothing => return Ok(None),
        Chosen::Switch => {
            return control_entity(payload, field, value, Some(over), Control::Switch).map(Some)
        }
        Chosen::Component(component) => component,
        Chosen::Implied => implied_component(over, inferred_component),
    };
    let mut entity = match inferred {
        Some(entity) if inferred_component == Some(component) => entity,
        _ => plain_entity(component, field),
    };
    override_name_and_icon(&mut entity, over)?;
    match component {
        Component::BinarySensor => override_binary_sensor(&mut entity, over)?,
        Component::Sensor | Component::DeviceTracker | Component::Switch | Component::Number => {
            override_sensor(&mut entity, over)?;
            check_sensor(&entity)?;
        }
    }
    Ok(Some(entity))
}

/// What an override's `component` key asks for.
enum Chosen {
    /// `none`: the field is not announced.
    Nothing,
    /// `switch`: the field is a control.
    Switch,
    Component(Component),
    /// No `component` key: implied by the other keys and what was inferred.
    Implied,
}

fn chosen_component(over: &FieldOverride) -> Result<Chosen, OverrideError> {
    Ok(match over.component.as_deref() {
        Some("none") => Chosen::Nothing,
        Some("sensor") => Chosen::Component(Component::Sensor),
        Some("binary_sensor") => Chosen::Component(Component::BinarySensor),
        Some("switch") => Chosen::Switch,
        Some(other) => {
            return Err(OverrideError {
                key: "component",
                message: format!(
                    "\"{other}\" is not a component sensorgate announces; write \"sensor\", \"binary_sensor\", \"switch\" or \"none\""
                ),
            })
        }
        None => Chosen::Implied,
    })
}

/// The component an override without a `component` key implies: a unit or state class makes a sensor,
/// a device class the component it belongs to; otherwise what was inferred (a sensor for a tracker).
fn implied_component(over: &FieldOverride, inferred: Option<Component>) -> Component {
    if over.unit.is_some() || over.state_class.is_some() {
        return Component::Sensor;
    }
    match (&over.device_class, inferred) {
        (Some(class), Some(Component::BinarySensor)) if is_binary_class(class) => {
            Component::BinarySensor
        }
        (Some(class), _) if is_sensor_class(class) => Component::Sensor,
        (Some(class), _) if is_binary_class(class) => Component::BinarySensor,
        (_, Some(Component::DeviceTracker)) | (_, None) => Component::Sensor,
        (_, Some(component)) => component,
    }
}

/// An entity of `component` named after the field, with nothing inferred.
fn plain_entity(component: Component, field: &str) -> EntityType {
    EntityType {
        component,
        name: humanize(field),
        device_class: None,
        unit: None,
        state_class: None,
        icon: None,
        diagnostic: false,
        render: match component {
            Component::BinarySensor => Render::Binary,
            _ => Render::Plain,
        },
    }
}

/// The override's `name` and `icon`, checked.
fn override_name_and_icon(
    entity: &mut EntityType,
    over: &FieldOverride,
) -> Result<(), OverrideError> {
    if let Some(name) = &over.name {
        if name.trim().is_empty() {
            return Err(OverrideError {
                key: "name",
                message: "is empty; write the entity's name, e.g. \"Soil moisture\"".to_string(),
            });
        }
        entity.name = name.clone();
    }
    if let Some(icon) = &over.icon {
        if !icon.contains(':') || icon.starts_with(':') || icon.ends_with(':') {
            return Err(OverrideError {
                key: "icon",
                message: format!(
                    "\"{icon}\" is not an icon; Home Assistant wants \"prefix:name\", e.g. \"mdi:sprout\""
                ),
            });
        }
        entity.icon = Some(icon.clone());
    }
    Ok(())
}

/// A binary sensor's override: a binary device class, and no unit or state class.
fn override_binary_sensor(
    entity: &mut EntityType,
    over: &FieldOverride,
) -> Result<(), OverrideError> {
    for (key, given) in [("unit", &over.unit), ("state_class", &over.state_class)] {
        if given.is_some() {
            return Err(OverrideError {
                key,
                message: "a binary_sensor has no unit or state_class; remove it, or write component = \"sensor\""
                    .to_string(),
            });
        }
    }
    if let Some(class) = &over.device_class {
        if !is_binary_class(class) {
            return Err(OverrideError {
                key: "device_class",
                message: format!(
                    "\"{class}\" is not a binary_sensor device class; write one of {}",
                    quoted(BINARY_SENSOR_CLASSES)
                ),
            });
        }
        entity.device_class = Some(class.clone());
    }
    Ok(())
}

/// A sensor's override: its device class (another class brings its own default unit and state class),
/// unit and state class, each checked.
fn override_sensor(entity: &mut EntityType, over: &FieldOverride) -> Result<(), OverrideError> {
    if let Some(class) = &over.device_class {
        let Some(rules) = sensor_class(class) else {
            return Err(OverrideError {
                key: "device_class",
                message: format!(
                    "\"{class}\" is not a sensor device class; write one of {}",
                    quoted(&SENSOR_CLASSES.iter().map(|c| c.name).collect::<Vec<_>>())
                ),
            });
        };
        if entity.device_class.as_deref() != Some(class.as_str()) {
            // Another class: its own default unit and state class, unless given below.
            entity.device_class = Some(class.clone());
            entity.unit = rules.units.first().map(|unit| unit.to_string());
            entity.state_class = rules.default_state_class().map(str::to_string);
            entity.render = Render::Plain;
        }
    }
    if let Some(unit) = &over.unit {
        if unit.trim().is_empty() {
            return Err(OverrideError {
                key: "unit",
                message: "is empty; write the unit, e.g. \"%\", or leave the key out".to_string(),
            });
        }
        entity.unit = Some(unit.clone());
    }
    if let Some(state_class) = &over.state_class {
        if !STATE_CLASSES.contains(&state_class.as_str()) {
            return Err(OverrideError {
                key: "state_class",
                message: format!(
                    "\"{state_class}\" is not a state class; write one of {}",
                    quoted(STATE_CLASSES)
                ),
            });
        }
        entity.state_class = Some(state_class.clone());
    }
    Ok(())
}

/// The control of a field the device accepts commands for: a `switch` (its state read as `ON`/`OFF`
/// like a binary sensor's) or a `number` (its state as it is, with the unit the table gives). Of an
/// override only `name` and `icon` apply (and `unit` to a number); a switch refuses the sensor keys,
/// which belong to a field announced as a sensor (`component = "sensor"`). The entity's name is the
/// table's (`Digital output 1`).
pub fn control_entity(
    payload: PayloadFormat,
    field: &str,
    value: ValueKind,
    over: Option<&FieldOverride>,
    control: Control,
) -> Result<EntityType, OverrideError> {
    let inferred = infer(payload, field, value);
    let (component, render) = match control {
        Control::Switch => (Component::Switch, Render::Binary),
        Control::Number { .. } => (Component::Number, Render::Plain),
    };
    let mut entity = EntityType {
        component,
        name: inferred
            .as_ref()
            .map_or_else(|| humanize(field), |e| e.name.clone()),
        device_class: None,
        unit: match control {
            Control::Number { .. } => inferred.and_then(|e| e.unit),
            Control::Switch => None,
        },
        state_class: None,
        icon: None,
        diagnostic: false,
        render,
    };
    let Some(over) = over else {
        return Ok(entity);
    };
    if component == Component::Switch {
        for (key, given) in [
            ("device_class", &over.device_class),
            ("unit", &over.unit),
            ("state_class", &over.state_class),
        ] {
            if given.is_some() {
                return Err(OverrideError {
                    key,
                    message: "a switch has no device_class, unit or state_class; remove it, or write component = \"sensor\" to announce the field as a sensor"
                        .to_string(),
                });
            }
        }
    } else if let Some(unit) = &over.unit {
        entity.unit = Some(unit.clone());
    }
    if let Some(name) = &over.name {
        if name.trim().is_empty() {
            return Err(OverrideError {
                key: "name",
                message: "is empty; write the entity's name, e.g. \"Pump\"".to_string(),
            });
        }
        entity.name = name.clone();
    }
    if let Some(icon) = &over.icon {
        if !icon.contains(':') || icon.starts_with(':') || icon.ends_with(':') {
            return Err(OverrideError {
                key: "icon",
                message: format!(
                    "\"{icon}\" is not an icon; Home Assistant wants \"prefix:name\", e.g. \"mdi:water-pump\""
                ),
            });
        }
        entity.icon = Some(icon.clone());
    }
    Ok(entity)
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Home Assistant's rules for a sensor: the unit must be one its device class allows, and so must the
/// state class (`sensor/const.py`). Sensors without a device class take any unit.
pub fn check_sensor(entity: &EntityType) -> Result<(), OverrideError> {
    let Some(class) = entity.device_class.as_deref() else {
        return Ok(());
    };
    let Some(rules) = sensor_class(class) else {
        return Err(OverrideError {
            key: "device_class",
            message: format!("\"{class}\" is not a sensor device class"),
        });
    };
    match (&entity.unit, rules.units.is_empty()) {
        (Some(unit), false) if !rules.units.contains(&unit.as_str()) => {
            return Err(OverrideError {
                key: "unit",
                message: format!(
                    "\"{unit}\" is not a unit Home Assistant allows for device class \"{class}\"; write one of {}",
                    quoted(rules.units)
                ),
            })
        }
        (None, false) if !rules.unitless => {
            return Err(OverrideError {
                key: "unit",
                message: format!(
                    "device class \"{class}\" needs a unit; write one of {}",
                    quoted(rules.units)
                ),
            })
        }
        (Some(unit), true) if !rules.any_unit => {
            return Err(OverrideError {
                key: "unit",
                message: format!("device class \"{class}\" takes no unit; remove \"{unit}\""),
            })
        }
        _ => {}
    }
    if let Some(state_class) = entity.state_class.as_deref() {
        if !rules.state_classes.contains(&state_class) {
            let allowed = if rules.state_classes.is_empty() {
                "none: remove state_class".to_string()
            } else {
                quoted(rules.state_classes)
            };
            return Err(OverrideError {
                key: "state_class",
                message: format!(
                    "state class \"{state_class}\" does not go with device class \"{class}\"; Home Assistant allows {allowed}"
                ),
            });
        }
    }
    Ok(())
}

/// The state classes Home Assistant knows.
pub const STATE_CLASSES: &[&str] = &[
    "measurement",
    "measurement_angle",
    "total",
    "total_increasing",
];

/// Home Assistant's binary sensor device classes.
pub const BINARY_SENSOR_CLASSES: &[&str] = &[
    "battery",
    "battery_charging",
    "carbon_monoxide",
    "cold",
    "connectivity",
    "door",
    "garage_door",
    "gas",
    "heat",
    "light",
    "lock",
    "moisture",
    "motion",
    "moving",
    "occupancy",
    "opening",
    "plug",
    "power",
    "presence",
    "problem",
    "running",
    "safety",
    "smoke",
    "sound",
    "tamper",
    "update",
    "vibration",
    "window",
];

/// One sensor device class: its units (the first is the default for an override that names only the
/// class) and state classes.
#[derive(Debug, Clone, Copy)]
pub struct SensorClass {
    pub name: &'static str,
    /// Empty: no unit list in `DEVICE_CLASS_UNITS`.
    pub units: &'static [&'static str],
    /// The class may go without a unit (`None` is in its unit set).
    pub unitless: bool,
    /// A class without a unit list that still takes any unit (monetary: a currency).
    pub any_unit: bool,
    pub state_classes: &'static [&'static str],
}

impl SensorClass {
    /// `measurement` where allowed, else the first allowed, else none.
    pub fn default_state_class(&self) -> Option<&'static str> {
        if self.state_classes.contains(&"measurement") {
            Some("measurement")
        } else {
            self.state_classes.first().copied()
        }
    }
}

const M: &[&str] = &["measurement"];
const TOTALS: &[&str] = &["total", "total_increasing"];
const ALL_STATE: &[&str] = &["measurement", "total", "total_increasing"];
const NO_STATE: &[&str] = &[];
const PRESSURE: &[&str] = &[
    "hPa", "Pa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi",
];
const LENGTH: &[&str] = &["m", "mm", "cm", "km", "in", "ft", "yd", "mi", "nmi"];
const ENERGY: &[&str] = &[
    "kWh", "Wh", "mWh", "MWh", "GWh", "TWh", "J", "kJ", "MJ", "GJ", "cal", "kcal", "Mcal", "Gcal",
];
const SPEED: &[&str] = &[
    "m/s", "km/h", "mph", "kn", "ft/s", "in/s", "mm/s", "Beaufort",
];
const FLUX: &[&str] = &["mm/h", "mm/d", "in/h", "in/d"];
const VOLUME: &[&str] = &["L", "mL", "m³", "ft³", "CCF", "gal", "fl. oz."];
const MASS: &[&str] = &["kg", "g", "mg", "µg", "oz", "lb", "st"];
const UG: &[&str] = &["µg/m³"];
const DATA_RATE: &[&str] = &[
    "bit/s", "kbit/s", "Mbit/s", "Gbit/s", "B/s", "kB/s", "MB/s", "GB/s", "KiB/s", "MiB/s", "GiB/s",
];
const DATA_SIZE: &[&str] = &[
    "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB",
    "ZiB", "YiB", "bit", "kbit", "Mbit", "Gbit",
];

const fn class(
    name: &'static str,
    units: &'static [&'static str],
    state_classes: &'static [&'static str],
) -> SensorClass {
    SensorClass {
        name,
        units,
        unitless: false,
        any_unit: false,
        state_classes,
    }
}

const fn unitless(
    name: &'static str,
    units: &'static [&'static str],
    state_classes: &'static [&'static str],
) -> SensorClass {
    SensorClass {
        name,
        units,
        unitless: true,
        any_unit: false,
        state_classes,
    }
}

/// Home Assistant's sensor device classes with their units and state classes.
pub const SENSOR_CLASSES: &[SensorClass] = &[
    class("apparent_power", &["VA"], M),
    unitless("aqi", &[], M),
    class(
        "area",
        &[
            "m²", "cm²", "km²", "mm²", "in²", "ft²", "yd²", "mi²", "ac", "ha",
        ],
        ALL_STATE,
    ),
    class("atmospheric_pressure", PRESSURE, M),
    class("battery", &["%"], M),
    class("blood_glucose_concentration", &["mg/dL", "mmol/L"], M),
    class("carbon_dioxide", &["ppm"], M),
    class("carbon_monoxide", &["ppm"], M),
    class("conductivity", &["µS/cm", "mS/cm", "S/cm"], M),
    class("current", &["A", "mA"], M),
    class("data_rate", DATA_RATE, M),
    class("data_size", DATA_SIZE, ALL_STATE),
    unitless("date", &[], NO_STATE),
    class("distance", LENGTH, ALL_STATE),
    class("duration", &["s", "ms", "µs", "min", "h", "d"], ALL_STATE),
    class("energy", ENERGY, TOTALS),
    class("energy_storage", ENERGY, M),
    unitless("enum", &[], NO_STATE),
    class("frequency", &["Hz", "kHz", "MHz", "GHz"], M),
    class("gas", &["m³", "L", "ft³", "CCF"], TOTALS),
    class("humidity", &["%"], M),
    class("illuminance", &["lx"], M),
    class("irradiance", &["W/m²", "BTU/(h⋅ft²)"], M),
    class("moisture", &["%"], M),
    SensorClass {
        name: "monetary",
        units: &[],
        unitless: true,
        any_unit: true,
        state_classes: &["total"],
    },
    class("nitrogen_dioxide", UG, M),
    class("nitrogen_monoxide", UG, M),
    class("nitrous_oxide", UG, M),
    class("ozone", UG, M),
    unitless("ph", &[], M),
    class("pm1", UG, M),
    class("pm10", UG, M),
    class("pm25", UG, M),
    unitless("power_factor", &["%"], M),
    class("power", &["W", "mW", "kW", "MW", "GW", "TW"], M),
    class("precipitation", &["mm", "cm", "in"], ALL_STATE),
    class("precipitation_intensity", FLUX, M),
    class("pressure", PRESSURE, M),
    class("reactive_power", &["var"], M),
    class("signal_strength", &["dBm", "dB"], M),
    class("sound_pressure", &["dB", "dBA"], M),
    class("speed", SPEED, M),
    class("sulphur_dioxide", UG, M),
    class("temperature", &["°C", "°F", "K"], M),
    unitless("timestamp", &[], NO_STATE),
    class("volatile_organic_compounds", UG, M),
    class("volatile_organic_compounds_parts", &["ppb", "ppm"], M),
    class("voltage", &["V", "mV", "µV", "kV", "MV"], M),
    class("volume", VOLUME, TOTALS),
    class(
        "volume_flow_rate",
        &["L/min", "m³/h", "ft³/min", "gal/min", "mL/s"],
        M,
    ),
    class("volume_storage", VOLUME, M),
    class("water", &["L", "m³", "ft³", "CCF", "gal"], TOTALS),
    class("weight", MASS, ALL_STATE),
    class("wind_direction", &["°"], &["measurement_angle"]),
    class("wind_speed", SPEED, M),
];

/// The rules of a sensor device class, if Home Assistant has it.
pub fn sensor_class(name: &str) -> Option<&'static SensorClass> {
    SENSOR_CLASSES.iter().find(|class| class.name == name)
}

pub fn is_sensor_class(name: &str) -> bool {
    sensor_class(name).is_some()
}

pub fn is_binary_class(name: &str) -> bool {
    BINARY_SENSOR_CLASSES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtl_433_names_and_units() {
        let json = |field: &str, kind| infer(PayloadFormat::Json, field, kind).unwrap();
        let t = json("temperature_C", ValueKind::Number);
        assert_eq!(
            (
                t.name.as_str(),
                t.device_class.as_deref(),
                t.unit.as_deref()
            ),
            ("Temperature", Some("temperature"), Some("°C"))
        );
        let b = json("battery_ok", ValueKind::Number);
        assert_eq!(b.component, Component::BinarySensor);
        assert_eq!(b.device_class.as_deref(), Some("battery"));
        assert_eq!(
            b.render,
            Render::BinaryInverted,
            "battery_ok = 1 is a battery that is not low"
        );
        for (field, class, unit) in [
            ("humidity", Some("humidity"), Some("%")),
            ("battery_mV", Some("voltage"), Some("mV")),
            ("wind_avg_m_s", Some("wind_speed"), Some("m/s")),
            ("wind_dir_deg", None, Some("°")),
            ("rain_mm", Some("precipitation"), Some("mm")),
            ("pressure_hPa", Some("pressure"), Some("hPa")),
            ("moisture", Some("moisture"), Some("%")),
            ("power_W", Some("power"), Some("W")),
            ("energy_kWh", Some("energy"), Some("kWh")),
        ] {
            let e = json(field, ValueKind::Number);
            assert_eq!(
                (e.device_class.as_deref(), e.unit.as_deref()),
                (class, unit),
                "{field}"
            );
            assert!(
                check_sensor(&e).is_ok(),
                "{field}: Home Assistant accepts it"
            );
        }
    }

    fn lpp(field: &str) -> EntityType {
        infer(PayloadFormat::Lpp, field, ValueKind::Number).unwrap()
    }

    #[test]
    fn lpp_types_map_to_classes_units_and_names() {
        let t = lpp("temperature_3");
        assert_eq!(
            (
                t.component,
                t.name.as_str(),
                t.device_class.as_deref(),
                t.unit.as_deref(),
                t.state_class.as_deref()
            ),
            (
                Component::Sensor,
                "Temperature 3",
                Some("temperature"),
                Some("°C"),
                Some("measurement")
            )
        );
        assert_eq!(
            lpp("relative_humidity_5").device_class.as_deref(),
            Some("humidity")
        );
        assert_eq!(lpp("barometric_pressure_2").unit.as_deref(), Some("hPa"));
        assert_eq!(
            lpp("energy_1").state_class.as_deref(),
            Some("total_increasing")
        );
        let presence = lpp("presence_7");
        assert_eq!(
            (presence.component, presence.device_class.as_deref()),
            (Component::BinarySensor, Some("occupancy"))
        );
        assert_eq!(lpp("digital_in_1").component, Component::BinarySensor);
        assert_eq!(lpp("accelerometer_6_x").name, "Acceleration 6 X");
        assert_eq!(lpp("unix_time_2").render, Render::UnixTime);
    }

    #[test]
    fn lpp_gps_is_one_tracker_and_an_altitude() {
        let tracker = lpp("gps_1_latitude");
        assert_eq!(tracker.component, Component::DeviceTracker);
        assert_eq!(
            tracker.render,
            Render::Location {
                latitude: "gps_1_latitude".into(),
                longitude: "gps_1_longitude".into(),
                altitude: Some("gps_1_altitude".into())
            }
        );
        assert_eq!(tracker.name, "Location 1");
        assert!(infer(PayloadFormat::Lpp, "gps_1_longitude", ValueKind::Number).is_none());
        let altitude = lpp("gps_1_altitude");
        assert_eq!(
            (altitude.name.as_str(), altitude.unit.as_deref()),
            ("Altitude 1", Some("m"))
        );
    }

    #[test]
    fn mysensors_and_json_names() {
        let temp = infer(PayloadFormat::MySensors, "temp_6", ValueKind::Number).unwrap();
        assert_eq!(
            (temp.name.as_str(), temp.device_class.as_deref()),
            ("Temperature 6", Some("temperature"))
        );
        let battery = infer(PayloadFormat::MySensors, "battery_level", ValueKind::Number).unwrap();
        assert!(battery.diagnostic);
        let co2 = infer(PayloadFormat::Json, "co2", ValueKind::Number).unwrap();
        assert_eq!(
            (co2.device_class.as_deref(), co2.unit.as_deref()),
            (Some("carbon_dioxide"), Some("ppm"))
        );
        let pm = infer(PayloadFormat::Json, "PM25", ValueKind::Number).unwrap();
        assert_eq!(pm.unit.as_deref(), Some("µg/m³"));
        let second = infer(PayloadFormat::Json, "temperature_2", ValueKind::Number).unwrap();
        assert_eq!(second.name, "Temperature 2");
        let contact = infer(PayloadFormat::Json, "contact", ValueKind::Bool).unwrap();
        assert_eq!(contact.render, Render::BinaryInverted);
    }

    #[test]
    fn unknown_names_are_typed_by_their_value() {
        let n = infer(PayloadFormat::Json, "soil", ValueKind::Number).unwrap();
        assert_eq!(
            (n.component, n.state_class.as_deref(), n.unit),
            (Component::Sensor, Some("measurement"), None)
        );
        let b = infer(PayloadFormat::Json, "pump_on", ValueKind::Bool).unwrap();
        assert_eq!(b.component, Component::BinarySensor);
        let t = infer(PayloadFormat::Json, "mode", ValueKind::Text).unwrap();
        assert_eq!((t.component, t.state_class), (Component::Sensor, None));
        assert_eq!(t.name, "Mode");
    }

    #[test]
    fn a_normalized_path_types_a_name_the_table_does_not_know() {
        let temperature =
            infer_normalized("TempC_SHT", "air.temperature", ValueKind::Number).unwrap();
        assert_eq!(
            (
                temperature.device_class.as_deref(),
                temperature.unit.as_deref()
            ),
            (Some("temperature"), Some("°C"))
        );
        let volts = infer_normalized("BatV", "battery", ValueKind::Number).unwrap();
        assert_eq!(
            (volts.device_class.as_deref(), volts.unit.as_deref()),
            (Some("voltage"), Some("V"))
        );
        // A name the table knows keeps its type: `battery` is a percentage, whatever the codec's
        // normalizeUplink claims (TTN's schema has volts there).
        let percent = infer_normalized("battery", "battery", ValueKind::Number).unwrap();
        assert_eq!(percent.unit.as_deref(), Some("%"));
        // A path outside the schema says nothing.
        let plain = infer_normalized("x", "air.smell", ValueKind::Number).unwrap();
        assert_eq!((plain.device_class, plain.unit), (None, None));
    }

    #[test]
    fn every_table_entry_passes_home_assistants_rules() {
        for (payload, table) in [
            (PayloadFormat::Lpp, LPP),
            (PayloadFormat::MySensors, MYSENSORS),
            (PayloadFormat::Json, JSON),
        ] {
            for known in table {
                let field = format!("{}_1", known.key);
                for entity in infer(payload, &field, ValueKind::Number)
                    .into_iter()
                    .chain(infer(payload, known.key, ValueKind::Number))
                {
                    match entity.component {
                        Component::Sensor => {
                            check_sensor(&entity).unwrap_or_else(|e| panic!("{field}: {e:?}"))
                        }
                        Component::BinarySensor => {
                            if let Some(class) = &entity.device_class {
                                assert!(is_binary_class(class), "{field}");
                            }
                        }
                        Component::DeviceTracker | Component::Switch | Component::Number => {}
                    }
                }
            }
        }
        for known in TTN_NORMALIZED {
            let entity = infer_normalized("x_7", known.key, ValueKind::Number).unwrap();
            check_sensor(&entity).unwrap_or_else(|e| panic!("{}: {e:?}", known.key));
            assert_eq!(entity.name, known.label);
        }
        for known in BLE {
            let field = format!("{}_1", known.key);
            for entity in [
                infer_ble(&field, ValueKind::Number),
                infer_ble(known.key, ValueKind::Number),
            ]
            .into_iter()
            .flatten()
            {
                match entity.component {
                    Component::Sensor => {
                        check_sensor(&entity).unwrap_or_else(|e| panic!("{field}: {e:?}"))
                    }
                    Component::BinarySensor => {
                        if let Some(class) = &entity.device_class {
                            assert!(is_binary_class(class), "{field}");
                        }
                    }
                    Component::DeviceTracker | Component::Switch | Component::Number => {}
                }
            }
        }
        // As JSON names, the BLE table's do not apply: a JSON `light` is a number, not a binary sensor.
        let light = infer(PayloadFormat::Json, "light", ValueKind::Number).unwrap();
        assert_eq!(light.component, Component::Sensor);
        assert_eq!(
            infer_ble("light", ValueKind::Bool)
                .unwrap()
                .device_class
                .as_deref(),
            Some("light")
        );
        for key in ["rssi", "snr", "last_seen"] {
            check_sensor(&gateway_key_type(key).unwrap()).unwrap();
        }
    }

    #[test]
    fn overrides_replace_what_is_inferred() {
        let soil = FieldOverride {
            device_class: Some("moisture".into()),
            unit: Some("%".into()),
            state_class: Some("measurement".into()),
            ..FieldOverride::default()
        };
        let e = resolve(PayloadFormat::Json, "soil", ValueKind::Number, Some(&soil))
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.component, e.device_class.as_deref(), e.unit.as_deref()),
            (Component::Sensor, Some("moisture"), Some("%"))
        );
        // Only a class: its default unit and state class.
        let only = FieldOverride {
            device_class: Some("moisture".into()),
            ..FieldOverride::default()
        };
        let e = resolve(PayloadFormat::Json, "soil", ValueKind::Number, Some(&only))
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.unit.as_deref(), e.state_class.as_deref()),
            (Some("%"), Some("measurement"))
        );
        // A binary field keeps being binary with a binary class.
        let motion = FieldOverride {
            device_class: Some("motion".into()),
            ..FieldOverride::default()
        };
        let e = resolve(
            PayloadFormat::Lpp,
            "digital_in_1",
            ValueKind::Number,
            Some(&motion),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.component, e.device_class.as_deref()),
            (Component::BinarySensor, Some("motion"))
        );
        // Fahrenheit keeps the class.
        let f = FieldOverride {
            unit: Some("°F".into()),
            ..FieldOverride::default()
        };
        let e = resolve(
            PayloadFormat::Lpp,
            "temperature_1",
            ValueKind::Number,
            Some(&f),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.device_class.as_deref(), e.unit.as_deref()),
            (Some("temperature"), Some("°F"))
        );
        // `none`: not announced.
        let none = FieldOverride {
            component: Some("none".into()),
            ..FieldOverride::default()
        };
        assert_eq!(
            resolve(
                PayloadFormat::Lpp,
                "temperature_1",
                ValueKind::Number,
                Some(&none)
            ),
            Ok(None)
        );
    }

    #[test]
    fn override_refusals_name_the_key() {
        let bad = |over: FieldOverride| {
            resolve(
                PayloadFormat::Lpp,
                "temperature_1",
                ValueKind::Number,
                Some(&over),
            )
            .unwrap_err()
            .key
        };
        let refused = [
            ("device_class = \"temprature\"", "device_class"),
            ("unit = \"%\"", "unit"),
            ("state_class = \"total\"", "state_class"),
            ("state_class = \"average\"", "state_class"),
            ("component = \"light\"", "component"),
            ("icon = \"sprout\"", "icon"),
            ("component = \"binary_sensor\"\nunit = \"%\"", "unit"),
            (
                "component = \"binary_sensor\"\ndevice_class = \"temperature\"",
                "device_class",
            ),
        ];
        for (written, key) in refused {
            let over: FieldOverride = toml::from_str(written).unwrap();
            assert_eq!(bad(over), key, "{written}");
        }
    }

    #[test]
    fn controls_of_commandable_fields() {
        let relay = control_entity(
            PayloadFormat::Lpp,
            "digital_out_1",
            ValueKind::Number,
            None,
            Control::Switch,
        )
        .unwrap();
        assert_eq!(
            (relay.component, relay.name.as_str(), relay.render),
            (Component::Switch, "Digital output 1", Render::Binary)
        );
        let level = control_entity(
            PayloadFormat::MySensors,
            "percentage_2",
            ValueKind::Number,
            None,
            Control::Number {
                min: 0.0,
                max: 100.0,
                step: 1.0,
            },
        )
        .unwrap();
        assert_eq!(
            (level.component, level.unit.as_deref(), level.device_class),
            (Component::Number, Some("%"), None)
        );
        let pump = FieldOverride {
            component: Some("switch".into()),
            name: Some("Pump".into()),
            icon: Some("mdi:water-pump".into()),
            ..FieldOverride::default()
        };
        let named = resolve(PayloadFormat::Json, "pump", ValueKind::Bool, Some(&pump))
            .unwrap()
            .unwrap();
        assert_eq!(
            (named.component, named.name.as_str(), named.icon.as_deref()),
            (Component::Switch, "Pump", Some("mdi:water-pump"))
        );
        let with_unit = FieldOverride {
            unit: Some("%".into()),
            ..pump
        };
        assert_eq!(
            resolve(
                PayloadFormat::Json,
                "pump",
                ValueKind::Bool,
                Some(&with_unit)
            )
            .unwrap_err()
            .key,
            "unit"
        );
        // The JSON simulator's battery is a voltage: a diagnostic voltage sensor, not a percentage.
        let volts = infer(PayloadFormat::Json, "battery_voltage", ValueKind::Number).unwrap();
        assert_eq!(
            (
                volts.device_class.as_deref(),
                volts.unit.as_deref(),
                volts.diagnostic
            ),
            (Some("voltage"), Some("V"), true)
        );
    }

    #[test]
    fn an_override_is_read_as_written_and_says_which_keys_it_gives() {
        let over: FieldOverride =
            toml::from_str("device_class = \"moisture\"\nunit = \"%\"\n").unwrap();
        assert_eq!(over.device_class.as_deref(), Some("moisture"));
        assert!(over.gives("device_class") && over.gives("unit"));
        assert!(!over.gives("component") && !over.gives("icon") && !over.gives("colour"));
        let unknown = toml::from_str::<FieldOverride>("colour = \"red\"\n").unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
    }
}
