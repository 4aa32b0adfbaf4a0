//! The key files the configuration names, read into keys at start and reload (blocking IO: callers run
//! it on a blocking thread), with errors as `KEYFILE:LINE:COL: message` naming the configuration key that
//! points at the file, and a warning for each key file readable by group or others. The formats of the
//! files are `crate::crypto`'s; which files there are is the configuration's, so they meet here. The
//! LoRaWAN devices' key files (`app_key_file`, `nwk_s_key_file`, `app_s_key_file`) are read here too,
//! into the `crate::lorawan` server's devices.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, SourceKind};
use crate::crypto::{guard, keys, FrameKey, FrameKeys, Sealer, SourceKeys};
use crate::lorawan::server::{Activation, ServedDevice};
use crate::lorawan::settings::{DeviceActivation, LorawanDevice};

/// Bindkeys per Bluetooth LE source, per device MAC.
pub type BleKeys = HashMap<String, HashMap<crate::ble::Mac, FrameKey>>;

/// What loading the key files found: the keys, and one warning per file readable by group or others.
#[derive(Debug, Default)]
pub struct LoadedKeys {
    pub frames: FrameKeys,
    /// `(index of the [[upstream.forward]] rule, its sealer)`.
    pub sealers: Vec<(usize, Sealer)>,
    /// The bindkeys of Bluetooth LE devices, per source and MAC.
    pub ble: BleKeys,
    pub warnings: Vec<String>,
}

fn frame_key(
    path: &Path,
    named_by: &str,
    warnings: &mut Vec<String>,
) -> Result<FrameKey, ConfigError> {
    let file = keys::load_frame_key(path).map_err(|e| ConfigError::from_key_error(e, named_by))?;
    warnings.extend(file.warning(path));
    Ok(file.key)
}

/// Reads every key file the configuration names: each encrypted source's `key_file`, each `[[device]]
/// key_file`, each `[[upstream.forward]] encrypt.key_file`. Blocking IO.
pub fn load_keys(config: &Config) -> Result<LoadedKeys, ConfigError> {
    let mut loaded = LoadedKeys::default();
    for (i, source) in config.sources.iter().enumerate() {
        let Some(encryption) = &source.encryption else {
            continue;
        };
        let mut keys = SourceKeys::default();
        if let Some(path) = &encryption.key_file {
            let named_by = format!("source[{i}].key_file of [[source]] \"{}\"", source.name);
            keys.default = Some(frame_key(path, &named_by, &mut loaded.warnings)?);
        }
        loaded.frames.sources.insert(source.name.clone(), keys);
    }
    for (i, device) in config.device.iter().enumerate() {
        let Some(path) = &device.key_file else {
            continue;
        };
        let named_by = format!("device[{i}].key_file of [[device]] \"{}\"", device.name);
        let source = config.sources.iter().find(|s| s.name == device.source);
        if let Some(source) = source.filter(|s| matches!(s.kind, SourceKind::Ble(_))) {
            // Validation guarantees a MAC.
            let Some(mac) = crate::ble::Mac::parse(&device.address) else {
                continue;
            };
            let key = frame_key(path, &named_by, &mut loaded.warnings)?;
            loaded
                .ble
                .entry(source.name.clone())
                .or_default()
                .insert(mac, key);
            continue;
        }
        // The configuration's validation guarantees an encrypted source with a header and a numeric
        // address; a device that still does not fit is skipped rather than given a wrong key.
        let Some(source) = source else { continue };
        let Some(address) = guard::device_address(source.header, &device.address) else {
            continue;
        };
        let key = frame_key(path, &named_by, &mut loaded.warnings)?;
        if let Some(keys) = loaded.frames.sources.get_mut(&source.name) {
            keys.devices.insert(address, key);
        }
    }
    if let Some(upstream) = &config.upstream {
        for (i, rule) in upstream.forward.iter().enumerate() {
            let Some(encrypt) = &rule.encrypt else {
                continue;
            };
            let named_by = format!("upstream.forward[{i}].encrypt.key_file");
            let file = keys::load_envelope_key(&encrypt.key_file)
                .map_err(|e| ConfigError::from_key_error(e, &named_by))?;
            loaded.warnings.extend(file.warning(&encrypt.key_file));
            let key_id = u8::try_from(encrypt.key_id).unwrap_or(u8::MAX);
            loaded.sealers.push((i, Sealer::new(file.key, key_id)));
        }
    }
    Ok(loaded)
}

/// A device's keys read from its files (blocking IO): the served device, and a warning per key file
/// readable by group or others. Errors name the file and the configuration key.
fn load_served_device(
    name: &str,
    device: &LorawanDevice,
    named_by: &dyn Fn(&str) -> String,
) -> Result<(ServedDevice, Vec<String>), ConfigError> {
    let mut warnings = Vec::new();
    let mut read = |path: &PathBuf, key: &str| -> Result<[u8; 16], ConfigError> {
        let file = keys::load_frame_key(path)
            .map_err(|e| ConfigError::from_key_error(e, &named_by(key)))?;
        warnings.extend(file.warning(path));
        Ok(file.key.0)
    };
    let activation = match &device.activation {
        DeviceActivation::Otaa {
            dev_eui,
            join_eui,
            app_key_file,
        } => Activation::Otaa {
            dev_eui: *dev_eui,
            join_eui: *join_eui,
            app_key: read(app_key_file, "app_key_file")?,
        },
        DeviceActivation::Abp {
            dev_addr,
            nwk_s_key_file,
            app_s_key_file,
        } => Activation::Abp {
            dev_addr: *dev_addr,
            nwk_s_key: read(nwk_s_key_file, "nwk_s_key_file")?,
            app_s_key: read(app_s_key_file, "app_s_key_file")?,
        },
    };
    Ok((
        ServedDevice {
            name: name.to_string(),
            activation,
            version: device.version,
            adr: device.adr,
        },
        warnings,
    ))
}

/// Every LoRaWAN device of the configuration with its keys read, by semtech-udp source, and the
/// permission warnings of their key files. Blocking IO: `run` and `check-config` both call it, so both
/// refuse the same key files.
pub type LorawanDevicesBySource = BTreeMap<String, Vec<(ServedDevice, LorawanDevice)>>;

/// See [`LorawanDevicesBySource`].
pub fn load_lorawan_devices(
    config: &Config,
) -> Result<(LorawanDevicesBySource, Vec<String>), ConfigError> {
    let mut by_source = LorawanDevicesBySource::new();
    let mut warnings = Vec::new();
    for source in &config.sources {
        if matches!(source.kind, SourceKind::SemtechUdp(_)) {
            by_source.insert(source.name.clone(), Vec::new());
        }
    }
    for (i, device) in config.device.iter().enumerate() {
        let Some(list) = by_source.get_mut(&device.source) else {
            continue;
        };
        // The configuration's validation guarantees the keys check; a device that still does not is
        // skipped rather than served wrongly.
        let Ok(lorawan) = device.lorawan_keys().check() else {
            continue;
        };
        let named_by = |key: &str| format!("device[{i}].{key} of [[device]] \"{}\"", device.name);
        let (served, found) = load_served_device(&device.name, &lorawan, &named_by)?;
        warnings.extend(found);
        let lorawan = LorawanDevice {
            codec: device.codec_settings.clone(),
            ..lorawan
        };
        list.push((served, lorawan));
    }
    Ok((by_source, warnings))
}
