//! The configuration of payload security: `encryption` and `key_file` per `[[source]]`, `key_file` per
//! `[[device]]`, `encrypt = { key_file, key_id }` per `[[upstream.forward]]`. Each mistake is refused
//! as `PATH:LINE:COL: message` at the key at fault, saying what to write instead.

use std::path::Path;

use sensorgate::config::{Config, ConfigError};

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("t.toml"))
}

/// Parses `text`, expects an error on the line of the `nth` (0-based) `needle`, with every fragment.
fn refused(text: &str, needle: &str, fragments: &[&str]) {
    let error = parse(text).expect_err("refused");
    let line = text[..text.find(needle).expect("needle")]
        .matches('\n')
        .count()
        + 1;
    assert_eq!(error.line, line, "{error}");
    for fragment in fragments {
        assert!(error.message.contains(fragment), "{fragment:?} in {error}");
    }
}

const SERIAL: &str = "[[source]]\nname = \"uart0\"\nkind = \"serial\"\npath = \"/dev/ttyUSB0\"\nframing = \"cobs\"\nheader = \"node16\"\npayload = \"lpp\"\n";

#[test]
fn an_encrypted_serial_source_with_device_keys_and_an_encrypted_forward_rule_parse() {
    let text = format!(
        "{SERIAL}encryption = \"aes-128-ccm\"\nkey_file = \"/etc/k\"\n\
         [[device]]\nname = \"porch\"\nsource = \"uart0\"\naddress = \"9\"\nkey_file = \"/etc/porch.key\"\n\
         [upstream]\nurl = \"mqtts://x\"\n[[upstream.forward]]\nfilter = \"sensorgate/#\"\n\
         encrypt = {{ key_file = \"/etc/u.key\", key_id = 255 }}\n"
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let encryption = config.sources[0].encryption.as_ref().unwrap();
    assert_eq!(encryption.key_file.as_deref(), Some(Path::new("/etc/k")));
    assert_eq!(
        config.device[0].key_file.as_deref(),
        Some(Path::new("/etc/porch.key"))
    );
    let encrypt = config.upstream.unwrap().forward[0].encrypt.clone().unwrap();
    assert_eq!(encrypt.key_id, 255);
    // Without key_file on the source: only devices with their own keys.
    let text = format!("{SERIAL}encryption = \"aes-128-ccm\"\n");
    assert!(parse(&text).unwrap().sources[0]
        .encryption
        .as_ref()
        .unwrap()
        .key_file
        .is_none());
}

#[test]
fn source_mistakes_point_at_the_key() {
    refused(
        &format!("{SERIAL}key_file = \"/etc/k\"\n"),
        "key_file",
        &["needs encryption = \"aes-128-ccm\""],
    );
    refused(
        &format!("{SERIAL}encryption = \"aes-256-gcm\"\n"),
        "encryption",
        &["aes-128-ccm"],
    );
    refused(
        "[[source]]\nname = \"u\"\nkind = \"serial\"\npath = \"/dev/x\"\nencryption = \"aes-128-ccm\"\nkey_file = \"/k\"\n",
        "encryption",
        &["\"lines\" carries text only", "cobs"],
    );
    refused(
        "[[source]]\nname = \"sim\"\nkind = \"simulator\"\nencryption = \"aes-128-ccm\"\n",
        "[[source]]",
        &["needs key_file"],
    );
    refused(
        "[[source]]\nname = \"r\"\nkind = \"sx1276\"\nbackend = \"simulator\"\nfrequency = 868_100_000\nencryption = \"aes-128-ccm\"\nkey_file = \"/k\"\n",
        "encryption",
        &["backend = \"pi\""],
    );
    refused(
        &format!("{SERIAL}encryption = \"aes-128-ccm\"\nkey_file = \"\"\n"),
        "key_file",
        &["is empty"],
    );
}

#[test]
fn device_keys_need_an_encrypted_source_and_a_numeric_address_and_encryption_a_header() {
    let device = |source_extra: &str, address: &str| {
        format!(
            "{SERIAL}{source_extra}[[device]]\nname = \"porch\"\nsource = \"uart0\"\naddress = \"{address}\"\nkey_file = \"/etc/p.key\"\n"
        )
    };
    refused(
        &device("", "9"),
        "key_file = \"/etc/p",
        &["is not encrypted"],
    );
    refused(
        &device("encryption = \"aes-128-ccm\"\n", "porch"),
        "address = \"porch\"",
        &["not a node16 address (0-65535)"],
    );
    refused(
        &device("encryption = \"aes-128-ccm\"\n", "70000"),
        "address = \"70000\"",
        &["0-65535"],
    );
    let headerless = device("encryption = \"aes-128-ccm\"\n", "9")
        .replace("header = \"node16\"", "header = \"none\"");
    refused(
        &headerless,
        "encryption",
        &["header = \"node16\" or \"radiohead\"", "address 0"],
    );
    let simulator = "[[source]]\nname = \"sim\"\nkind = \"simulator\"\nencryption = \"aes-128-ccm\"\nkey_file = \"/k\"\n\
        [[device]]\nname = \"d\"\nsource = \"sim\"\naddress = \"1\"\nkey_file = \"/etc/p.key\"\n";
    refused(simulator, "key_file = \"/etc/p", &["is a simulator"]);
}

#[test]
fn forward_encryption_needs_a_key_id_of_one_byte() {
    let rule = |encrypt: &str| {
        format!("[upstream]\nurl = \"mqtts://x\"\n[[upstream.forward]]\nfilter = \"#\"\nencrypt = {encrypt}\n")
    };
    refused(
        &rule("{ key_file = \"/k\", key_id = 300 }"),
        "encrypt",
        &["300 is not a key id; write 0-255"],
    );
    refused(
        &rule("{ key_file = \"\", key_id = 1 }"),
        "encrypt",
        &["is empty"],
    );
    refused(&rule("{ key_id = 1 }"), "encrypt", &["key_file"]);
    refused(
        &rule("{ key_file = \"/k\", key_id = 1, cipher = \"x\" }"),
        "encrypt",
        &["cipher"],
    );
}
