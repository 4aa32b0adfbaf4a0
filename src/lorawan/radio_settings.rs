//! The keys of a radio source with `payload = "lorawan"` (the built-in single-channel packet forwarder,
//! `forwarder.rs`): `forward_to` (the semtech-udp source it forwards to; the configuration resolves the
//! default, the only one), `gateway_eui` (the EUI it speaks as; by default [`default_gateway_eui`]) and
//! the sync word it must listen with ([`LORAWAN_SYNC_WORD`]). Pure checks; `crate::config` composes them.

use super::settings::SettingError;
use crate::source::simulator::seed_from_name;

/// The public LoRaWAN networks' sync word (0x12 is for private networks).
pub const LORAWAN_SYNC_WORD: u8 = 0x34;
/// The first two bytes of a default gateway EUI: "SG".
const DEFAULT_EUI_PREFIX: u64 = 0x5347;

/// A radio's forwarding, as written and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadioForwarding {
    /// `forward_to`: the semtech-udp source's name; `None` until the configuration resolves the default.
    pub forward_to: Option<String>,
    /// `gateway_eui`.
    pub gateway_eui: u64,
}

/// The default EUI of the radio source `name`: `5347` ("SG") then the low 48 bits of the FNV-1a hash of
/// its name, so that it stays the same while the source keeps its name and two radios differ.
pub fn default_gateway_eui(name: &str) -> u64 {
    DEFAULT_EUI_PREFIX << 48 | (seed_from_name(name) & 0x0000_FFFF_FFFF_FFFF)
}

/// Checks the keys of the radio source `name` with `payload = "lorawan"`.
pub fn radio_forwarding(
    name: &str,
    forward_to: Option<&str>,
    gateway_eui: Option<&str>,
    sync_word: Option<u8>,
) -> Result<RadioForwarding, SettingError> {
    if let Some(word) = sync_word.filter(|&w| w != LORAWAN_SYNC_WORD) {
        return Err(SettingError::new(
            "sync_word",
            format!(
                "a LoRaWAN radio listens with the public networks' sync word 0x34 (52), not {word:#04x}; \
                 remove `sync_word` or write sync_word = 0x34"
            ),
        ));
    }
    let gateway_eui = match gateway_eui {
        None => default_gateway_eui(name),
        Some(text) => {
            let parsed = (text.len() == 16 && text.chars().all(|c| c.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(text, 16).ok())
                .flatten();
            parsed.ok_or_else(|| {
                SettingError::new(
                    "gateway_eui",
                    format!("\"{text}\" is not a gateway EUI; write 16 hex digits, e.g. gateway_eui = \"b827ebfffe6f4e3c\""),
                )
            })?
        }
    };
    Ok(RadioForwarding {
        forward_to: forward_to.map(str::to_string),
        gateway_eui,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_eui_is_stable_per_name_and_prefixed() {
        let eui = default_gateway_eui("lora");
        assert_eq!(eui >> 48, 0x5347);
        assert_eq!(eui, default_gateway_eui("lora"));
        assert_ne!(eui, default_gateway_eui("lora2"));
        // FNV-1a of "lora" (Python: h ^= b; h *= 0x100000001b3), low 48 bits: a fixed vector, so the default never changes by accident.
        assert_eq!(
            format!("{eui:016x}"),
            format!("5347{:012x}", 0xf7ad_7122_49e1_u64)
        );
    }

    #[test]
    fn keys_are_checked_naming_the_key() {
        let ok =
            radio_forwarding("lora", Some("lns"), Some("b827ebfffe6f4e3c"), Some(0x34)).unwrap();
        assert_eq!(ok.gateway_eui, 0xb827_ebff_fe6f_4e3c);
        assert_eq!(ok.forward_to.as_deref(), Some("lns"));
        let error = radio_forwarding("lora", None, None, Some(0x12)).unwrap_err();
        assert_eq!(error.key, "sync_word");
        assert!(
            error.message.contains("sync_word = 0x34"),
            "{}",
            error.message
        );
        let error = radio_forwarding("lora", None, Some("b827eb"), None).unwrap_err();
        assert_eq!(error.key, "gateway_eui");
        assert!(error.message.contains("16 hex digits"), "{}", error.message);
    }
}
