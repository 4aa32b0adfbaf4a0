//! The configuration as users meet it: the shipped reference and demo files parse, defaults are what the
//! reference says, and every common mistake is reported as `PATH:LINE:COL: message` pointing at the key or
//! value at fault, naming the key and saying what to write instead.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sensorgate::config::{
    defaults, BrokerConfig, Config, ConfigError, DevicesConfig, PublishConfig, RadioBackend,
    RadioChip, SourceKind, SyncPolicy,
};
use sensorgate::decode::{HeaderFormat, PayloadFormat};
use sensorgate::frame::crc::CrcMode;
use sensorgate::frame::Framing;

const REFERENCE: &str = include_str!("../../config/sensorgate.toml");
const DEMO: &str = include_str!("../../config/demo.toml");
const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$3sQb/oS76o0ntavCgRHTkA$+1c2Qovu3erxCEPu6yQ6S2w/+XtsmKapSGA31X+Gxc0";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.toml"))
}

fn parse_error(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, parsed {config:#?}"),
        Err(error) => error,
    }
}

/// 1-based line and column of the `nth` (0-based) occurrence of `needle`.
fn position(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in text"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Asserts the error's position and that its message contains every fragment.
fn assert_error(text: &str, needle: &str, nth: usize, fragments: &[&str]) -> ConfigError {
    let error = parse_error(text);
    assert_eq!(
        (error.line, error.column),
        position(text, needle, nth),
        "position of {error}"
    );
    for fragment in fragments {
        assert!(
            error.message.contains(fragment),
            "{fragment:?} missing in: {error}"
        );
    }
    assert!(error
        .to_string()
        .starts_with(&format!("t.toml:{}:{}: ", error.line, error.column)));
    error
}

const SERIAL: &str = "[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\n";

#[test]
fn unknown_key_points_at_the_key_and_suggests_the_closest() {
    let text = format!("{SERIAL}buad = 9600\n");
    let error = assert_error(
        &text,
        "buad",
        0,
        &[
            "[[source]] \"uart0\"",
            "unknown key `buad`",
            "did you mean `baud`?",
        ],
    );
    // The valid keys listed are the serial kind's, not every kind's.
    assert!(error.message.contains("max_frame_len"), "{error}");
    assert!(!error.message.contains("dio0_pin"), "{error}");

    let text = "[publish]\nqos = 1\nfield_topic = false\n";
    assert_error(
        text,
        "field_topic",
        0,
        &["publish", "did you mean `field_topics`?"],
    );

    let text = "[gatway]\nid = \"x\"\n";
    assert_error(
        text,
        "gatway",
        0,
        &["unknown key `gatway`", "did you mean `gateway`?"],
    );
}

const RTL433: &str = "[[source]]\nname = \"rf\"\nkind = \"rtl_433\"\n";

#[test]
fn rtl433_args_may_not_override_what_sensorgate_sets() {
    let text = format!("{RTL433}args = [\"-F\", \"mqtt://x\"]\n");
    assert_error(
        &text,
        "[\"-F\"",
        0,
        &["\"-F\" is not allowed in args", "-F json"],
    );
    let text = format!("{RTL433}args = [\"-R\", \"19\"]\n");
    assert_error(&text, "[\"-R\"", 0, &["protocols"]);
}

#[test]
fn rtl433_keys_are_checked_where_they_are_written() {
    let text = format!("{RTL433}devices = \"mine\"\n");
    assert_error(&text, "\"mine\"", 0, &["\"configured\"", "\"all\""]);
    let text = format!("{RTL433}frequency = 433_920_000\nhop_interval = \"10m\"\n");
    assert_error(&text, "\"10m\"", 0, &["two or more"]);
    let text = format!("{RTL433}frequency = 433.92\n");
    assert_error(&text, "433.92", 0, &["number of Hz"]);
    let text = format!("{RTL433}device = \"stick\"\n");
    assert_error(&text, "\"stick\"", 0, &[":00000001"]);
    let text = format!("{RTL433}payload = \"lpp\"\n");
    assert_error(&text, "payload", 0, &["not a key of a rtl_433 source"]);
    // A radio still takes exactly one frequency.
    let radio = "[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nbackend = \"simulator\"\nfrequency = [868_100_000, 868_300_000]\n";
    assert_error(radio, "[868", 0, &["one frequency"]);
}

#[test]
fn rtl433_devices_get_the_configured_addresses() {
    let text = format!(
        "{RTL433}devices = \"all\"\nfrequency = [433_920_000, 868_300_000]\nhop_interval = \"10m\"\n\
         [[device]]\nname = \"garden\"\nsource = \"rf\"\naddress = \"Acurite-Tower/*/A\"\n"
    );
    let config = Config::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    let SourceKind::Rtl433(settings) = &config.sources[0].kind else {
        panic!("not rtl_433")
    };
    assert_eq!(settings.configured, ["Acurite-Tower/*/A"]);
    assert_eq!(settings.receiver.frequencies, [433_920_000, 868_300_000]);
    assert_eq!(
        settings.devices,
        sensorgate::source::rtl433::DevicesMode::All
    );
    assert_eq!(settings.command, "rtl_433");
    assert!(settings.usb_reset);
}

const BLE: &str = "[[source]]\nname = \"air\"\nkind = \"ble\"\n";

#[test]
fn ble_keys_are_checked_where_they_are_written() {
    let text = format!("{BLE}adapter = \"bluetooth0\"\n");
    assert_error(&text, "\"bluetooth0\"", 0, &["\"hci0\""]);
    let text = format!("{BLE}adapter = \"hci0\"\nhci_replay = \"c.hci\"\n");
    assert_error(&text, "hci_replay", 0, &["not both"]);
    let text = format!("{BLE}replay_loop = true\n");
    assert_error(&text, "replay_loop", 0, &["hci_replay"]);
    let text = format!("{BLE}scan_watchdog = \"0s\"\n");
    assert_error(&text, "\"0s\"", 0, &["\"1s\" and \"24h\""]);
    let text = format!("{BLE}devices = 3\n");
    assert_error(&text, "3", 0, &["\"configured\"", "\"all\""]);
    let text = format!("{BLE}payload = \"lpp\"\n");
    assert_error(&text, "payload", 0, &["not a key of a ble source"]);
    let text = format!("{BLE}[[device]]\nname = \"t\"\nsource = \"air\"\naddress = \"17\"\n");
    assert_error(
        &text,
        "\"17\"",
        0,
        &["not a Bluetooth MAC", "A4:C1:38:8D:18:B2"],
    );
}

#[test]
fn ble_devices_get_their_macs_and_keys_need_no_encryption_key() {
    let text = format!(
        "{BLE}hci_replay = \"c.hci\"\nreplay_interval = \"0s\"\ndevices = \"all\"\ncounter_reset_after = 5\n\
         [[device]]\nname = \"fridge\"\nsource = \"air\"\naddress = \"a4-c1-38-8d-18-b2\"\nkey_file = \"f.key\"\n"
    );
    let config = Config::parse(&text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    let SourceKind::Ble(settings) = &config.sources[0].kind else {
        panic!("not ble")
    };
    let mac = sensorgate::ble::Mac::parse("A4:C1:38:8D:18:B2").unwrap();
    assert_eq!(settings.configured, [mac]);
    assert_eq!(
        config.device[0].address, "A4:C1:38:8D:18:B2",
        "as readings name it"
    );
    assert_eq!(settings.counter_reset_after, 5);
    assert_eq!(
        settings.backend,
        sensorgate::ble::scan::Backend::Replay {
            file: "c.hci".into(),
            interval: std::time::Duration::ZERO,
            looping: false
        }
    );
    assert_eq!(
        settings.devices,
        sensorgate::source::rtl433::DevicesMode::All
    );
}

#[test]
fn a_key_of_another_kind_is_refused_at_the_key() {
    let text = format!("{SERIAL}dio0_pin = 4\n");
    assert_error(
        &text,
        "dio0_pin",
        0,
        &["`dio0_pin` is not a key of a serial source", "baud"],
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    let text = "[publish]\nqos = \"high\"\n";
    assert_error(
        text,
        "\"high\"",
        0,
        &[
            "publish.qos",
            "expected an integer from 0 to 255",
            "\"high\"",
        ],
    );
    let text = "[publish]\nretain = \"yes\"\n";
    assert_error(text, "\"yes\"", 0, &["publish.retain", "true or false"]);
    let text = "[[broker.listener]]\nbind = \"localhost\"\n";
    assert_error(text, "\"localhost\"", 0, &["broker.listener[0].bind"]);
}

#[test]
fn a_bind_twice_is_refused_but_port_0_is_the_kernels_choice_each_time() {
    let twice = "[[broker.listener]]\nbind = \"127.0.0.1:1883\"\n\n[[broker.listener]]\nbind = \"127.0.0.1:1883\"\n";
    assert_error(
        twice,
        "\"127.0.0.1:1883\"",
        1,
        &[
            "broker.listener[1].bind",
            "already the bind of the listener on line 2",
        ],
    );
    let kernel = "[[broker.listener]]\nbind = \"127.0.0.1:0\"\n\n[[broker.listener]]\nbind = \"127.0.0.1:0\"\ntransport = \"websocket\"\n";
    let config = parse(kernel).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.broker.listeners.len(), 2);
}

#[test]
fn a_baud_rate_that_is_not_a_number() {
    let text = format!("{SERIAL}baud = \"fast\"\n");
    assert_error(
        &text,
        "\"fast\"",
        0,
        &[
            "[[source]] \"uart0\": baud",
            "positive integer",
            "baud = 115200",
        ],
    );
    let text = format!("{SERIAL}baud = \"9600\"\n");
    assert_error(&text, "\"9600\"", 0, &["without quotes: baud = 9600"]);
    let text = format!("{SERIAL}baud = 0\n");
    assert_error(&text, "0\n", 0, &["baud", "positive integer"]);
}

#[test]
fn duplicate_source_name_points_at_the_second() {
    let text = format!("{SERIAL}{SERIAL}");
    assert_error(
        &text,
        "\"uart0\"",
        1,
        &[
            "[[source]] \"uart0\": name",
            "already the name of the [[source]] on line 2",
            "unique",
        ],
    );
}

#[test]
fn invalid_topic_levels() {
    let text = "[gateway]\nbase_topic = \"home//sensors\"\n";
    assert_error(
        text,
        "\"home//sensors\"",
        0,
        &["gateway.base_topic", "empty level"],
    );
    let text = "[gateway]\nbase_topic = \"home/#\"\n";
    assert_error(text, "\"home/#\"", 0, &["gateway.base_topic", "'#'"]);
    let text = "[gateway]\nbase_topic = \"/home\"\n";
    assert_error(text, "\"/home\"", 0, &["empty level"]);
    let text = format!(
        "{SERIAL}[[device]]\nname = \"kitchen/fridge\"\nsource = \"uart0\"\naddress = \"1\"\n"
    );
    assert_error(
        &text,
        "\"kitchen/fridge\"",
        0,
        &["[[device]] \"kitchen/fridge\": name", "'/'"],
    );
    let text = format!("{SERIAL}[[device]]\nname = \"a+b\"\nsource = \"uart0\"\naddress = \"1\"\n");
    assert_error(&text, "\"a+b\"", 0, &["'+'"]);
}

#[test]
fn unknown_payload_lists_the_valid_ones() {
    let text = format!("{SERIAL}payload = \"xml\"\n");
    assert_error(
        &text,
        "\"xml\"",
        0,
        &[
            "[[source]] \"uart0\": payload",
            "unknown value \"xml\"",
            "\"json\", \"lpp\", \"mysensors\"",
        ],
    );
    let text = "[[source]]\nname = \"x\"\nkind = \"serail\"\npath = \"/dev/ttyS0\"\n";
    assert_error(
        text,
        "\"serail\"",
        0,
        &["did you mean \"serial\"?", "\"sx1262\""],
    );
}

#[test]
fn device_naming_an_unknown_source() {
    let text =
        format!("{SERIAL}[[device]]\nname = \"kitchen\"\nsource = \"uart9\"\naddress = \"17\"\n");
    assert_error(
        &text,
        "\"uart9\"",
        0,
        &[
            "[[device]] \"kitchen\": source",
            "no [[source]] is named \"uart9\"",
            "the sources are \"uart0\"",
        ],
    );
}

const RADIO: &str = "[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nreset_pin = 17\ndio0_pin = 4\nfrequency = 868_100_000\n";

#[test]
fn spreading_factor_13() {
    let text = format!("{RADIO}spreading_factor = 13\n");
    assert_error(
        &text,
        "13",
        0,
        &["[[source]] \"lora\": spreading_factor", "7..=12", "sx1276"],
    );
    // The SX1262 goes down to SF5; the SX1276 does not.
    let sx1262 = "[[source]]\nname = \"l\"\nkind = \"sx1262\"\nreset_pin = 18\ndio1_pin = 16\nbusy_pin = 20\nfrequency = 868_100_000\nspreading_factor = 5\n";
    assert!(parse(sx1262).is_ok());
    let text = format!("{RADIO}spreading_factor = 5\n");
    assert_error(&text, "5\n", 0, &["7..=12"]);
}

#[test]
fn bandwidth_100000_lists_the_allowed_ones() {
    let text = format!("{RADIO}bandwidth = 100000\n");
    assert_error(
        &text,
        "100000",
        0,
        &[
            "bandwidth",
            "100000 Hz is not a LoRa bandwidth",
            "7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000",
        ],
    );
}

#[test]
fn duplicate_pins() {
    let text = "[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nreset_pin = 17\ndio0_pin = 17\nfrequency = 868_100_000\n";
    assert_error(
        text,
        "17",
        1,
        &["dio0_pin", "GPIO17 is already used by reset_pin"],
    );
    let text = format!("{RADIO}cs_pin = 28\n");
    assert_error(&text, "28", 0, &["cs_pin", "0..=27"]);
}

#[test]
fn plaintext_upstream_needs_allow_plaintext() {
    let text = "[upstream]\nurl = \"mqtt://broker.lan:1883\"\n";
    assert_error(
        text,
        "\"mqtt://",
        0,
        &["upstream.url", "mqtts://", "allow_plaintext = true"],
    );
    let allowed =
        parse("[upstream]\nurl = \"mqtt://broker.lan\"\nallow_plaintext = true\n").unwrap();
    let upstream = allowed.upstream.unwrap();
    assert_eq!((upstream.url.tls, upstream.url.port), (false, 1883));
    let text = "[upstream]\nurl = \"https://broker.lan\"\n";
    assert_error(
        text,
        "\"https",
        0,
        &["upstream.url", "mqtts://mqtt.example.com:8883"],
    );
}

#[test]
fn the_upstream_protocol_is_mqtt311_unless_mqtt5_is_written() {
    let base = "[upstream]\nurl = \"mqtts://broker.lan\"\n";
    let default = parse(base).unwrap().upstream.unwrap();
    assert_eq!(default.protocol, sensorgate::uplink::Protocol::Mqtt311);
    let five = parse(&format!("{base}protocol = \"mqtt5\"\n")).unwrap();
    assert_eq!(
        five.upstream.unwrap().protocol,
        sensorgate::uplink::Protocol::Mqtt5
    );
    assert_error(
        &format!("{base}protocol = \"mqtt4\"\n"),
        "\"mqtt4\"",
        0,
        &[
            "upstream.protocol",
            "did you mean \"mqtt5\"?",
            "\"mqtt311\", \"mqtt5\"",
        ],
    );
}

#[test]
fn bad_duration_says_what_to_write() {
    let text = "[devices]\noffline_after = \"15 minutes\"\n";
    assert_error(
        text,
        "\"15 minutes\"",
        0,
        &["devices.offline_after", "write \"15m\""],
    );
    let text = "[devices]\ndedup_window = 10\n";
    assert_error(text, "10", 0, &["devices.dedup_window", "\"10s\""]);
    let text = format!("{SERIAL}[[device]]\nname = \"k\"\nsource = \"uart0\"\naddress = \"1\"\noffline_after = \"5 min\"\n");
    assert_error(
        &text,
        "\"5 min\"",
        0,
        &["[[device]] \"k\": offline_after", "write \"5m\""],
    );
    let text = "[upstream]\nurl = \"mqtts://x\"\n[upstream.spool]\nsync = \"sometimes\"\n";
    assert_error(
        text,
        "\"sometimes\"",
        0,
        &["upstream.spool.sync", "\"always\""],
    );
}

#[test]
fn durations_and_sizes_beyond_their_range_are_refused_with_the_range() {
    // The value that passed check-config and then panicked the uplink ("overflow when adding duration
    // to instant").
    let text = "[upstream]\nurl = \"mqtts://x\"\n[upstream.spool]\nsync = \"213503982334601d\"\n";
    assert_error(
        text,
        "\"213503982334601d\"",
        0,
        &[
            "upstream.spool.sync",
            "above the maximum \"30d\"",
            "from \"1ms\" to \"30d\", e.g. \"1s\"",
            "or \"always\"",
        ],
    );
    let text = "[upstream]\nurl = \"mqtts://x\"\n[upstream.spool]\nmax_age = \"366d\"\n";
    assert_error(text, "\"366d\"", 0, &["max_age", "\"365d\""]);
    let text = "[broker]\nsession_expiry = \"8d\"\n";
    assert_error(text, "\"8d\"", 0, &["broker.session_expiry", "\"7d\""]);
    let text = "[broker]\nhandshake_timeout = \"1h\"\n";
    assert_error(text, "\"1h\"", 0, &["handshake_timeout", "\"1m\""]);
    let text = "[devices]\noffline_after = \"0s\"\n";
    assert_error(text, "\"0s\"", 0, &["offline_after", "longer than zero"]);
    let text = "[[source]]\nname = \"s\"\nkind = \"simulator\"\ninterval = \"31d\"\n";
    assert_error(
        text,
        "\"31d\"",
        0,
        &["[[source]] \"s\": interval", "\"30d\""],
    );
    let text = "[upstream]\nurl = \"mqtts://x\"\n[upstream.spool]\nmax_bytes = \"2TiB\"\n";
    // "2TiB" is not a unit the size grammar knows; a byte count beyond the range is refused as such.
    assert!(parse(text).is_err());
    let text = "[upstream]\nurl = \"mqtts://x\"\n[upstream.spool]\nmax_bytes = \"2048GiB\"\n";
    assert_error(text, "\"2048GiB\"", 0, &["max_bytes", "\"1024GiB\""]);
}

#[test]
fn new_broker_bounds_parse_and_are_range_checked() {
    let text =
        "[broker]\nmax_topic_levels = 16\nmax_retained_messages = 5000\nmax_offline_sessions = 0\n\
                session_expiry = \"1h\"\nanonymous_session_expiry = \"0s\"\n";
    let broker = parse(text).unwrap().broker;
    assert_eq!(
        (
            broker.max_topic_levels,
            broker.max_retained_messages,
            broker.max_offline_sessions
        ),
        (16, 5000, 0)
    );
    assert_eq!(broker.session_expiry, Duration::from_secs(3600));
    assert_eq!(broker.anonymous_session_expiry, Duration::ZERO);
    for (text, needle) in [
        ("[broker]\nmax_topic_levels = 1025\n", "1025"),
        ("[broker]\nmax_retained_messages = 0\n", "0"),
        ("[broker]\nmax_offline_sessions = 100001\n", "100001"),
    ] {
        assert_error(text, needle, 0, &["broker.max_", "outside"]);
    }
}

#[test]
fn gateway_topics_cannot_start_with_a_dollar() {
    let text = "[gateway]\nbase_topic = \"$SYS\"\n";
    assert_error(
        text,
        "\"$SYS\"",
        0,
        &["base_topic", "starts with '$'", "e.g. \"sensorgate\""],
    );
    let text = format!("{SERIAL}[[device]]\nname = \"$x\"\nsource = \"uart0\"\naddress = \"1\"\n");
    assert_error(
        &text,
        "\"$x\"",
        0,
        &["name", "starts with '$'", "e.g. \"kitchen\""],
    );
    let text = format!(
        "{SERIAL}[[device]]\nname = \"k\"\nsource = \"uart0\"\naddress = \"1\"\nwill = {{ topic = \"$a/b\" }}\n"
    );
    assert_error(&text, "\"$a/b\"", 0, &["will.topic", "starts with '$'"]);
    // '$' inside a level is an ordinary character.
    assert!(parse("[gateway]\nbase_topic = \"a/$b\"\n").is_ok());
}

#[test]
fn a_password_file_needs_a_user_name() {
    let text = "[upstream]\nurl = \"mqtts://x\"\npassword_file = \"/etc/p\"\n";
    assert_error(text, "\"/etc/p\"", 0, &["password_file", "add username"]);
}

#[test]
fn password_hash_must_be_argon2id() {
    let text = "[[broker.user]]\nname = \"ha\"\npassword_hash = \"secret\"\n";
    assert_error(
        text,
        "\"secret\"",
        0,
        &[
            "[[broker.user]] \"ha\": password_hash",
            "argon2id",
            "sensorgate hash-password",
        ],
    );
    let text =
        format!("[[broker.user]]\nname = \"ha\"\npassword_hash = \"{HASH}\"\nread = [\"a/#/b\"]\n");
    assert_error(
        &text,
        "\"a/#/b\"",
        0,
        &["[[broker.user]] \"ha\": read[0]", "'#'"],
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let text = "[publish]\nqos = 1\n\n[[source]]\nname = \"uart0\"\nkind = \"serial\"\n";
    assert_error(
        text,
        "[[source]]",
        0,
        &["[[source]] \"uart0\"", "missing key `path`"],
    );
    let text = "[[source]]\nkind = \"serial\"\npath = \"/dev/ttyS0\"\n";
    assert_error(text, "[[source]]", 0, &["missing key `name`"]);
    let text = "[[source]]\nname = \"l\"\nkind = \"sx1262\"\nreset_pin = 1\ndio1_pin = 2\nfrequency = 868_100_000\n";
    assert_error(text, "[[source]]", 0, &["missing key `busy_pin`"]);
}

#[test]
fn binary_content_needs_cobs_or_slip() {
    let text = format!("{SERIAL}payload = \"lpp\"\n");
    assert_error(&text, "[[source]]", 0, &["framing", "\"cobs\" or \"slip\""]);
    let text = format!("{SERIAL}payload = \"lpp\"\nframing = \"lines\"\n");
    assert_error(&text, "\"lines\"", 0, &["framing", "lpp"]);
    assert!(parse(&format!("{SERIAL}payload = \"lpp\"\nframing = \"slip\"\n")).is_ok());
}

#[test]
fn syntax_errors_are_located() {
    let text = "[gateway]\nid = \"unterminated\n";
    let error = parse_error(text);
    assert_eq!(error.line, 2, "{error}");
    assert!(error.message.starts_with("TOML syntax"), "{error}");
    let text = "[publish]\nqos = 1\nqos = 2\n";
    let error = parse_error(text);
    assert_eq!(error.line, 3, "{error}");
}

#[test]
fn an_unreadable_file_names_the_path() {
    let missing = PathBuf::from("/nonexistent/sensorgate.toml");
    let error = Config::load(&missing).unwrap_err();
    assert_eq!((error.line, error.column), (0, 0));
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/sensorgate.toml: cannot read"),
        "{error}"
    );
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, "[publish]\nqos = 7\n").unwrap();
    let error = Config::load(&path).unwrap_err();
    assert_eq!(error.path, path);
    assert_eq!((error.line, error.column), (2, 7));
    assert!(
        error.message.contains("publish.qos: 7 is not an MQTT QoS"),
        "{error}"
    );
    std::fs::write(&path, DEMO).unwrap();
    // The demo's codec path is relative to the file: its codecs go beside it.
    let codecs = dir.path().join("codecs");
    std::fs::create_dir(&codecs).unwrap();
    for name in ["demo-node.js", "demo-node.yaml"] {
        std::fs::copy(format!("config/codecs/{name}"), codecs.join(name)).unwrap();
    }
    let mut loaded = Config::load(&path).unwrap();
    // Loading read the codec and made its path absolute; parsing alone (default_demo) does neither.
    for source in &mut loaded.sources {
        if let Some(codec) = &mut source.codec {
            assert!(codec.script.contains("function decodeUplink"));
            codec.script.clear();
            codec.path = codec.path.strip_prefix(dir.path()).unwrap().to_path_buf();
        }
    }
    assert_eq!(loaded, Config::default_demo());
}

#[test]
fn an_empty_file_is_all_defaults() {
    let config = parse("").unwrap();
    assert!(!config.gateway.id.is_empty());
    assert_eq!(config.gateway.base_topic, "sensorgate");
    assert_eq!(
        config.gateway.state_dir,
        PathBuf::from("/var/lib/sensorgate")
    );
    assert_eq!(config.log.level.to_level_filter(), log::LevelFilter::Info);
    assert_eq!(config.broker, BrokerConfig::default());
    assert_eq!(config.broker.listeners.len(), 1);
    assert_eq!(
        config.broker.listeners[0].bind.to_string(),
        "127.0.0.1:1883"
    );
    assert!(config.broker.anonymous_allowed());
    assert_eq!(config.broker.max_packet_size, 256 * 1024);
    assert_eq!(config.broker.max_queued_messages, 10_000);
    assert_eq!(config.broker.handshake_timeout, Duration::from_secs(5));
    assert!(config.broker.persist_retained);
    let broker = &config.broker;
    assert_eq!(
        (
            broker.max_topic_levels,
            broker.max_retained_messages,
            broker.max_offline_sessions
        ),
        (128, 100_000, 256)
    );
    assert_eq!(
        (broker.session_expiry, broker.anonymous_session_expiry),
        (Duration::from_secs(2 * 3600), Duration::from_secs(5 * 60))
    );
    assert_eq!(config.publish, PublishConfig::default());
    assert_eq!((config.publish.qos, config.publish.retain), (1, true));
    assert_eq!(config.publish.stats_interval, Duration::from_secs(60));
    assert_eq!(config.devices, DevicesConfig::default());
    assert_eq!(config.devices.offline_after, Duration::from_secs(900));
    assert_eq!(config.devices.dedup_window, Duration::from_secs(10));
    assert!(config.sources.is_empty() && config.device.is_empty() && config.upstream.is_none());
}

#[test]
fn a_user_turns_anonymous_access_off_unless_allowed() {
    let text = format!("[[broker.user]]\nname = \"ha\"\npassword_hash = \"{HASH}\"\n");
    assert!(!parse(&text).unwrap().broker.anonymous_allowed());
    let text = format!("[broker]\nallow_anonymous = true\n{text}");
    assert!(parse(&text).unwrap().broker.anonymous_allowed());
}

#[test]
fn source_defaults_per_kind() {
    let config = parse(SERIAL).unwrap();
    let source = &config.sources[0];
    assert_eq!(
        (source.header, source.payload),
        (HeaderFormat::None, PayloadFormat::Json)
    );
    let SourceKind::Serial(serial) = &source.kind else {
        panic!("{source:?}")
    };
    assert_eq!(
        (serial.baud, serial.data_bits, serial.stop_bits),
        (115_200, 8, 1)
    );
    assert_eq!(
        (serial.framing, serial.crc, serial.max_frame_len),
        (Framing::Lines, CrcMode::None, 512)
    );

    let config = parse("[[source]]\nname = \"s\"\nkind = \"simulator\"\n").unwrap();
    let source = &config.sources[0];
    assert_eq!(
        (source.header, source.payload),
        (HeaderFormat::Node16, PayloadFormat::Lpp)
    );
    let SourceKind::Simulator(sim) = &source.kind else {
        panic!("{source:?}")
    };
    assert_eq!(
        (sim.devices, sim.interval, sim.framing),
        (3, Duration::from_secs(2), Framing::Cobs)
    );

    let config =
        parse("[[source]]\nname = \"s\"\nkind = \"simulator\"\npayload = \"mysensors\"\n").unwrap();
    let source = &config.sources[0];
    assert_eq!(source.header, HeaderFormat::None);
    let SourceKind::Simulator(sim) = &source.kind else {
        panic!("{source:?}")
    };
    assert_eq!(sim.framing, Framing::Lines);

    let config = parse(RADIO).unwrap();
    let source = &config.sources[0];
    assert_eq!(
        (source.header, source.payload),
        (HeaderFormat::RadioHead, PayloadFormat::Lpp)
    );
    let SourceKind::Radio(radio) = &source.kind else {
        panic!("{source:?}")
    };
    assert_eq!(radio.chip, RadioChip::Sx1276);
    assert_eq!(
        (radio.spreading_factor, radio.bandwidth, radio.coding_rate),
        (7, 125_000, 5)
    );
    assert_eq!((radio.sync_word, radio.preamble), (0x12, 8));
    let RadioBackend::Pi(pins) = &radio.backend else {
        panic!("{radio:?}")
    };
    assert_eq!(pins.spi_path, PathBuf::from("/dev/spidev0.0"));
    assert_eq!((pins.reset_pin, pins.irq_pin, pins.cs_pin), (17, 4, None));
}

#[test]
fn upstream_defaults_fill_client_id_and_forward_rule() {
    let config = parse(
        "[gateway]\nid = \"gw1\"\nbase_topic = \"home\"\n[upstream]\nurl = \"mqtts://cloud\"\n",
    )
    .unwrap();
    let upstream = config.upstream.unwrap();
    assert_eq!(upstream.client_id, "sensorgate-gw1");
    assert_eq!(upstream.forward.len(), 1);
    assert_eq!(
        (
            upstream.forward[0].filter.as_str(),
            upstream.forward[0].prefix.as_str()
        ),
        ("home/#", "")
    );
    assert_eq!(upstream.forward[0].qos, 1);
    assert_eq!(
        (upstream.url.host.as_str(), upstream.url.port),
        ("cloud", 8883)
    );
    assert_eq!(upstream.keep_alive, Duration::from_secs(30));
    assert_eq!(upstream.max_inflight, 100);
    assert_eq!(upstream.spool, sensorgate::uplink::SpoolSettings::default());
    assert_eq!(
        upstream.spool.sync,
        SyncPolicy::Every(Duration::from_secs(1))
    );
    assert_eq!(upstream.spool.max_bytes, 64 << 20);
}

#[test]
fn state_directory_overrides_state_dir() {
    let config = parse("[gateway]\nstate_dir = \"/srv/gw\"\n").unwrap();
    assert_eq!(
        config.gateway.state_dir_with(None),
        PathBuf::from("/srv/gw")
    );
    assert_eq!(
        config
            .gateway
            .state_dir_with(Some(OsStr::new("/var/lib/sensorgate"))),
        PathBuf::from("/var/lib/sensorgate")
    );
}

#[test]
fn deliver_needs_a_source_with_commands() {
    let text = format!(
        "{SERIAL}\n[[device]]\nname = \"relay\"\nsource = \"uart0\"\naddress = \"17\"\ndeliver = \"after_uplink\"\n"
    );
    assert_error(
        &text,
        "deliver",
        0,
        &[
            "\"uart0\" (line 2) sends no commands",
            "write commands = true",
        ],
    );
    assert!(parse(&text.replace("path = ", "commands = true\npath = ")).is_ok());
}

#[test]
fn raw_commands_needs_a_source_with_commands() {
    let text = format!(
        "{SERIAL}\n[[device]]\nname = \"lamp\"\nsource = \"uart0\"\naddress = \"17\"\nraw_commands = true\n"
    );
    assert_error(
        &text,
        "raw_commands",
        0,
        &[
            "\"uart0\" (line 2) sends no commands",
            "write commands = true",
        ],
    );
    let with_commands = parse(&text.replace("path = ", "commands = true\npath = ")).unwrap();
    assert!(with_commands.device[0].raw_commands);
}

#[test]
fn client_bounds_of_commands_are_checked() {
    let commands = format!("{SERIAL}commands = true\n");
    let defaults = parse(&commands).unwrap().sources[0]
        .commands
        .clone()
        .unwrap();
    assert_eq!(
        (
            defaults.client_queue,
            defaults.client_queue_bytes,
            defaults.command_queue_bytes,
            defaults.client_airtime
        ),
        (64, 256 << 10, 1 << 20, 0.5)
    );
    assert_error(
        &format!("{commands}client_queue = 0\n"),
        "0\n",
        0,
        &["client_queue", "write an integer from 1 to 1024"],
    );
    assert_error(
        &format!("{commands}command_queue_bytes = \"1GiB\"\n"),
        "\"1GiB\"",
        0,
        &["above the maximum \"64MiB\""],
    );
    assert_error(
        &format!("{commands}client_queue_bytes = \"2MiB\"\n"),
        "\"2MiB\"",
        0,
        &["above the maximum \"1MiB\"", "command_queue_bytes"],
    );
    // A smaller source bound lowers the default per client with it.
    let small = parse(&format!("{commands}command_queue_bytes = \"64KiB\"\n")).unwrap();
    assert_eq!(
        small.sources[0]
            .commands
            .as_ref()
            .unwrap()
            .client_queue_bytes,
        64 << 10
    );
    assert_error(
        &format!("{SERIAL}client_queue = 4\n"),
        "client_queue",
        0,
        &["applies to a source with commands = true"],
    );
}

#[test]
fn client_airtime_is_a_share_of_a_radios_budget() {
    let radio = "[[source]]\nname = \"lora\"\nkind = \"sx1276\"\nbackend = \"simulator\"\nfrequency = 868_100_000\ncommands = true\n";
    let config = parse(&format!("{radio}client_airtime = \"25%\"\n")).unwrap();
    assert_eq!(
        config.sources[0].commands.as_ref().unwrap().client_airtime,
        0.25
    );
    assert_error(
        &format!("{radio}client_airtime = \"0%\"\n"),
        "\"0%\"",
        0,
        &["not a share of the duty cycle", "\"50%\""],
    );
    assert_error(
        &format!("{SERIAL}commands = true\nclient_airtime = \"25%\"\n"),
        "client_airtime",
        0,
        &["not a key of a serial source"],
    );
}

#[test]
fn the_demo_runs_without_hardware_or_root() {
    let config = Config::default_demo();
    assert_eq!(parse(DEMO).unwrap(), config);
    assert!(config.gateway.state_dir.is_relative());
    assert!(config.upstream.is_none());
    assert_eq!(config.broker.listeners.len(), 1);
    assert_eq!(
        config.broker.listeners[0].bind.to_string(),
        "127.0.0.1:1883"
    );
    assert!(config.broker.anonymous_allowed());
    assert!(config
        .sources
        .iter()
        .any(|s| matches!(s.kind, SourceKind::Simulator(_))));
    assert!(config.sources.iter().any(|s| matches!(
        &s.kind,
        SourceKind::Radio(radio) if matches!(radio.backend, RadioBackend::Simulator { .. })
    )));
    // The Bluetooth LE thermometer is a replay of a file that ships beside the demo, with its device.
    let replayed = config.sources.iter().find_map(|s| match &s.kind {
        SourceKind::Ble(ble) => match &ble.backend {
            sensorgate::ble::scan::Backend::Replay { file, looping, .. } => Some((file, *looping)),
            _ => None,
        },
        _ => None,
    });
    let (file, looping) = replayed.expect("a replayed ble source in the demo");
    assert!(looping);
    let capture =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let (steps, refused) = sensorgate::ble::scan::replay_file::parse(&capture);
    assert!(steps.len() >= 8 && refused.is_empty(), "{refused:?}");
    assert!(config.device.iter().any(|d| d.source == "ble"));
    for source in &config.sources {
        assert!(!matches!(source.kind, SourceKind::Serial(_)), "{source:?}");
        if let SourceKind::Radio(radio) = &source.kind {
            assert!(
                matches!(radio.backend, RadioBackend::Simulator { .. }),
                "{source:?}"
            );
        }
    }
}

#[test]
fn the_reference_is_valid() {
    let config = Config::parse(REFERENCE, Path::new("config/sensorgate.toml"))
        .unwrap_or_else(|error| panic!("{error}"));
    // uart0, demo, lora, lora-sim, lora-sx1262, rf433 (rtl_433), lns (semtech-udp), lorawan-radio and
    // lorawan-sim (its single-channel forwarders), uart1 (a codec), ble.
    let kinds: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(config.sources.len(), 11, "{kinds:?}");
    assert_eq!(config.broker.users.len(), 1);
    assert!(config.upstream.is_some());
    assert!(config.lorawan.is_some());
    // LoRaWAN devices are known by their DevEUI (OTAA) or DevAddr (ABP).
    let address = |name: &str| {
        config
            .device
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.address.clone())
    };
    assert_eq!(address("door").as_deref(), Some("70b3d57ed0000001"));
    assert_eq!(address("meter").as_deref(), Some("26011bda"));
}

const LORAWAN: &str = r#"
[lorawan]
region = "EU868"

[[source]]
name = "lns"
kind = "semtech-udp"
gateways = ["any"]

[[source]]
name = "uart0"
kind = "serial"
path = "/dev/ttyUSB0"
"#;

/// Each LoRaWAN mistake points at its key (or the device's table for a missing one) and says what to
/// write instead.
#[test]
fn lorawan_mistakes_point_at_the_key() {
    let cases: [(&str, &str, &str); 7] = [
        (
            "[[device]]\nname = \"d\"\nsource = \"lns\"\ndev_eui = \"70b3\"\njoin_eui = \"0000000000000000\"\napp_key_file = \"k\"\npayload = \"lpp\"\n",
            "\"70b3\"",
            "write its 16 hex digits",
        ),
        (
            "[[device]]\nname = \"d\"\nsource = \"lns\"\ndev_eui = \"70b3d57ed0000001\"\njoin_eui = \"0000000000000000\"\napp_key_file = \"k\"\ndev_addr = \"26011bda\"\npayload = \"lpp\"\n",
            "\"26011bda\"",
            "not both",
        ),
        (
            "[[device]]\nname = \"d\"\nsource = \"lns\"\ndev_eui = \"70b3d57ed0000001\"\njoin_eui = \"0000000000000000\"\npayload = \"lpp\"\n",
            "[[device]]",
            "missing key `app_key_file`",
        ),
        (
            "[[device]]\nname = \"d\"\nsource = \"lns\"\ndev_addr = \"26011bda\"\nnwk_s_key_file = \"a\"\napp_s_key_file = \"b\"\n",
            "[[device]]",
            "missing key `payload`",
        ),
        (
            "[[device]]\nname = \"d\"\nsource = \"uart0\"\naddress = \"1\"\ndev_eui = \"70b3d57ed0000001\"\n",
            "dev_eui",
            "neither a semtech-udp source nor a radio with payload = \"lorawan\"",
        ),
        (
            "[[device]]\nname = \"d\"\nsource = \"lns\"\ndev_addr = \"26011bda\"\nnwk_s_key_file = \"a\"\napp_s_key_file = \"b\"\nfports = { 0 = \"lpp\" }\n",
            "{ 0 = \"lpp\" }",
            "not an application FPort",
        ),
        (
            "[[device]]\nname = \"d\"\nsource = \"lns\"\naddress = \"5\"\ndev_addr = \"26011bda\"\nnwk_s_key_file = \"a\"\napp_s_key_file = \"b\"\npayload = \"lpp\"\n",
            "address",
            "remove address",
        ),
    ];
    for (device, at, says) in cases {
        let text = format!("{LORAWAN}\n{device}");
        let error = parse_error(&text);
        assert_eq!(
            (error.line, error.column),
            position(&text, at, 0),
            "{device}: {error}"
        );
        assert!(error.message.contains(says), "{device}: {error}");
    }
    let no_table = LORAWAN.replace("[lorawan]\nregion = \"EU868\"\n", "");
    let text = format!("{no_table}\n[[device]]\nname = \"d\"\nsource = \"lns\"\ndev_addr = \"26011bda\"\nnwk_s_key_file = \"a\"\napp_s_key_file = \"b\"\npayload = \"lpp\"\n");
    let error = parse_error(&text);
    assert!(error.message.contains("needs a [lorawan] table"), "{error}");
    let text = LORAWAN.replace(
        "gateways = [\"any\"]",
        "gateways = [\"any\", \"0102030405060708\"]",
    );
    let error = parse_error(&text);
    assert_eq!(
        (error.line, error.column),
        position(&text, "[\"any\"", 0),
        "{error}"
    );
    let text = LORAWAN.replace(
        "region = \"EU868\"",
        "region = \"EU868\"\nrx1_delay = \"20s\"",
    );
    let error = parse_error(&text);
    assert_eq!(
        (error.line, error.column),
        position(&text, "\"20s\"", 0),
        "{error}"
    );
}

#[test]
fn the_reference_shows_the_defaults() {
    let config = Config::parse(REFERENCE, Path::new("config/sensorgate.toml")).unwrap();
    let defaults_broker = BrokerConfig::default();
    let broker = &config.broker;
    assert_eq!(
        (
            broker.max_connections,
            broker.max_packet_size,
            broker.max_inflight
        ),
        (
            defaults_broker.max_connections,
            defaults_broker.max_packet_size,
            defaults_broker.max_inflight
        )
    );
    assert_eq!(
        (
            broker.max_queued_messages,
            broker.handshake_timeout,
            broker.persist_retained
        ),
        (
            defaults_broker.max_queued_messages,
            defaults_broker.handshake_timeout,
            defaults_broker.persist_retained
        )
    );
    assert_eq!(
        (
            broker.max_topic_levels,
            broker.max_retained_messages,
            broker.max_offline_sessions,
            broker.session_expiry,
            broker.anonymous_session_expiry
        ),
        (
            defaults_broker.max_topic_levels,
            defaults_broker.max_retained_messages,
            defaults_broker.max_offline_sessions,
            defaults_broker.session_expiry,
            defaults_broker.anonymous_session_expiry
        )
    );
    assert_eq!(config.publish, PublishConfig::default());
    assert_eq!(config.devices, DevicesConfig::default());
    assert_eq!(config.gateway.base_topic, defaults::BASE_TOPIC);
    let upstream = config.upstream.unwrap();
    assert_eq!(upstream.spool, sensorgate::uplink::SpoolSettings::default());
    assert_eq!(upstream.keep_alive, defaults::KEEP_ALIVE);
    assert_eq!(upstream.max_inflight, defaults::UPSTREAM_MAX_INFLIGHT);
    // The serial source and the simulator are written with their kind's defaults.
    let serial_path = "/dev/serial/by-id/usb-FTDI_FT232R_A50285BI-if00-port0";
    let serial =
        format!("[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"{serial_path}\"\n");
    assert_eq!(config.sources[0], parse(&serial).unwrap().sources[0]);
    assert_eq!(
        config.sources[1],
        parse("[[source]]\nname = \"demo\"\nkind = \"simulator\"\n")
            .unwrap()
            .sources[0]
    );
}

/// The keys serde accepts in a table, read from the "valid keys here: ..." of an unknown-key error, so the
/// list comes from the structs themselves rather than from this test.
fn valid_keys(table_text: &str) -> Vec<String> {
    let error = parse_error(table_text);
    let listing = error
        .message
        .split("valid keys here: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no key listing in: {error}"));
    listing.split(", ").map(str::to_string).collect()
}

/// Every key the reference writes in the tables found at `path` (dotted; arrays of tables merged).
fn reference_keys(path: &[&str]) -> Vec<String> {
    let doc: toml::Table = REFERENCE.parse().unwrap();
    let mut tables: Vec<&toml::Table> = vec![&doc];
    for step in path {
        tables = tables
            .iter()
            .filter_map(|t| t.get(*step))
            .flat_map(|value| match value {
                toml::Value::Table(table) => vec![table],
                toml::Value::Array(array) => array.iter().filter_map(|v| v.as_table()).collect(),
                _ => Vec::new(),
            })
            .collect();
    }
    tables.iter().flat_map(|t| t.keys().cloned()).collect()
}

#[test]
fn the_reference_mentions_every_key() {
    let user = format!("name = \"x\"\npassword_hash = \"{HASH}\"\n");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec![], "zz_unknown = 1\n".to_string()),
        (vec!["gateway"], "[gateway]\nzz_unknown = 1\n".to_string()),
        (vec!["log"], "[log]\nzz_unknown = 1\n".to_string()),
        (vec!["broker"], "[broker]\nzz_unknown = 1\n".to_string()),
        (vec!["broker", "listener"], "[[broker.listener]]\nbind = \"127.0.0.1:1\"\nzz_unknown = 1\n".to_string()),
        (
            vec!["broker", "listener", "tls"],
            "[[broker.listener]]\nbind = \"127.0.0.1:1\"\ntls = { cert_file = \"c\", key_file = \"k\", zz_unknown = 1 }\n".to_string(),
        ),
        (vec!["broker", "user"], format!("[[broker.user]]\n{user}zz_unknown = 1\n")),
        (vec!["publish"], "[publish]\nzz_unknown = 1\n".to_string()),
        (vec!["devices"], "[devices]\nzz_unknown = 1\n".to_string()),
        (vec!["lorawan"], "[lorawan]\nregion = \"EU868\"\nzz_unknown = 1\n".to_string()),
        (vec!["device"], "[[device]]\nname = \"d\"\nsource = \"s\"\naddress = \"1\"\nzz_unknown = 1\n".to_string()),
        (
            vec!["device", "will"],
            "[[device]]\nname = \"d\"\nsource = \"s\"\naddress = \"1\"\nwill = { topic = \"t\", zz_unknown = 1 }\n".to_string(),
        ),
        (vec!["upstream"], "[upstream]\nurl = \"mqtts://x\"\nzz_unknown = 1\n".to_string()),
        (vec!["upstream", "forward"], "[[upstream.forward]]\nfilter = \"#\"\nzz_unknown = 1\n".to_string()),
        (vec!["upstream", "spool"], "[upstream.spool]\nzz_unknown = 1\n".to_string()),
    ];
    for (path, text) in cases {
        let written = reference_keys(&path);
        for key in valid_keys(&text) {
            assert!(
                written.contains(&key),
                "config/sensorgate.toml lacks {}.{key}",
                path.join(".")
            );
        }
    }
    let written = reference_keys(&["source"]);
    for kind in ["serial", "simulator", "sx1276", "sx1262", "semtech-udp"] {
        let text = format!("[[source]]\nname = \"x\"\nkind = \"{kind}\"\nzz_unknown = 1\n");
        for key in valid_keys(&text) {
            assert!(
                written.contains(&key),
                "config/sensorgate.toml lacks {kind} source key {key}"
            );
        }
    }
}

#[test]
fn codec_keys_point_at_the_key_and_say_what_to_write() {
    let codec = format!("{SERIAL}framing = \"cobs\"\npayload = \"codec\"\n");
    assert_error(&codec, "\"codec\"", 0, &["codec = \"codecs/NAME.js\""]);
    assert_error(
        &format!("{SERIAL}fport = 2\n"),
        "fport",
        0,
        &["`fport` applies to a source with payload = \"codec\""],
    );
    assert_error(
        &format!("{codec}codec = \"x.js\"\ncodec_timeout = \"10s\"\n"),
        "\"10s\"",
        0,
        &["codec_timeout", "at most \"5s\""],
    );
    assert_error(
        &format!("{SERIAL}framing = \"lines\"\npayload = \"codec\"\ncodec = \"x.js\"\n"),
        "\"lines\"",
        0,
        &[
            "payload = \"codec\" decodes binary vendor payloads",
            "framing = \"cobs\"",
        ],
    );
}

/// The `Default: VALUE` of every key of the reference whose comment states one as a TOML value (a
/// string, number, boolean or array, followed by `.`, `,`, `(` or the end of the comment; not a template
/// such as `"sensorgate-{gateway.id}"`), with the
/// table it is in: `(table, key, value)`. Keys of array tables (`[[source]]`, ...) are left out: their
/// defaults depend on the entry's kind.
fn commented_defaults(reference: &str) -> Vec<(String, String, String)> {
    let value_at_start = |text: &str| -> Option<String> {
        let text = text.trim_start();
        let end = if let Some(quoted) = text.strip_prefix('"') {
            quoted.find('"')? + 2
        } else if text.starts_with('[') {
            text.find(']')? + 1
        } else {
            text.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(text.len())
        };
        let (value, rest) = text.split_at(end);
        let ends_there = rest.is_empty() || rest.starts_with(['.', ',', ' ', ';']);
        let plain_word = rest.trim_start().is_empty()
            || rest.starts_with(['.', ','])
            || rest.trim_start().starts_with('(');
        let parses = format!("v = {value}").parse::<toml::Table>().is_ok();
        let template = value.contains('{');
        (ends_there && plain_word && parses && !template).then(|| value.to_string())
    };
    let mut found = Vec::new();
    let mut table = String::new();
    let mut array_table = false;
    let mut comment = String::new();
    for line in reference.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix('#') {
            comment.push(' ');
            comment.push_str(text.trim());
            continue;
        }
        if let Some(name) = line.strip_prefix("[[") {
            table = name.trim_end_matches("]]").to_string();
            array_table = true;
        } else if let Some(name) = line.strip_prefix('[') {
            table = name.trim_end_matches(']').to_string();
            array_table = false;
        } else if let Some((key, _)) = line.split_once(" = ") {
            let default = comment
                .rsplit_once("Default: ")
                .and_then(|(_, text)| value_at_start(text));
            if let (false, Some(default)) = (array_table, default) {
                found.push((table.clone(), key.trim().to_string(), default));
            }
        }
        comment.clear();
    }
    found
}

/// What the reference's comments give as defaults is what a configuration without the key gets: for each
/// key, a configuration with just that key at its commented default parses to the configuration without
/// it (`[upstream]` tables next to a minimal upstream). And the broker a test starts with
/// `BrokerSettings::default()` keeps retained messages as long as an empty configuration does.
#[test]
fn the_commented_defaults_of_the_reference_are_the_defaults() {
    let defaults = commented_defaults(REFERENCE);
    let keys: Vec<String> = defaults
        .iter()
        .map(|(t, k, _)| format!("{t}.{k}"))
        .collect();
    for expected in [
        "broker.retained_sync",
        "broker.max_packet_size",
        "publish.qos",
    ] {
        assert!(
            keys.contains(&expected.to_string()),
            "{expected} not read: {keys:?}"
        );
    }
    assert!(
        defaults.len() >= 30,
        "only {} defaults read: {keys:?}",
        defaults.len()
    );
    let mut wrong = Vec::new();
    for (table, key, value) in &defaults {
        let mut base = toml::Table::new();
        if table.starts_with("upstream") {
            let upstream: toml::Table = "url = \"mqtts://mqtt.example.com\"".parse().unwrap();
            base.insert("upstream".into(), toml::Value::Table(upstream));
        }
        if table == "lorawan" {
            let lorawan: toml::Table = "region = \"EU868\"".parse().unwrap();
            base.insert("lorawan".into(), toml::Value::Table(lorawan));
        }
        if table == "http" {
            // A page somebody can open: a user with the right to read it.
            let broker: toml::Table =
                format!("[[user]]\nname = \"u\"\npassword_hash = \"{HASH}\"\nhttp = \"read\"\n")
                    .parse()
                    .unwrap();
            base.insert("broker".into(), toml::Value::Table(broker));
            base.insert("http".into(), toml::Value::Table(toml::Table::new()));
        }
        let mut with_key = base.clone();
        let mut at = &mut with_key;
        for name in table.split('.') {
            at = at
                .entry(name.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap();
        }
        let parsed: toml::Table = format!("v = {value}").parse().unwrap();
        at.insert(key.clone(), parsed["v"].clone());
        let without = parse(&toml::to_string(&base).unwrap());
        let with = parse(&toml::to_string(&with_key).unwrap());
        match (without, with) {
            (Ok(without), Ok(with)) if without == with => {}
            (without, with) => wrong.push(format!(
                "[{table}] {key}: the comment says the default is {value}, but {}",
                match (without, with) {
                    (Ok(_), Ok(_)) => "writing it changes the configuration".to_string(),
                    (Err(e), _) | (_, Err(e)) => format!("it does not parse: {e}"),
                }
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    eprintln!("{} commented defaults checked: {keys:?}", defaults.len());

    let empty = parse("").unwrap();
    let broker = sensorgate::broker::BrokerSettings::default();
    assert_eq!(broker.snapshot_interval, empty.broker.retained_sync);
    assert_eq!(
        (
            broker.max_connections,
            u64::from(broker.max_packet_size),
            broker.max_inflight
        ),
        (
            empty.broker.max_connections,
            empty.broker.max_packet_size,
            empty.broker.max_inflight
        )
    );
    assert_eq!(broker.listeners[0].bind, empty.broker.listeners[0].bind);
    assert_eq!(
        broker.gateway_topics,
        vec![format!("{}/#", empty.gateway.base_topic)]
    );
}
