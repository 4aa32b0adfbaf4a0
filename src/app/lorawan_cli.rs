//! The `sensorgate lorawan keys|decode` commands' lookups in the configuration: the `[[device]]` whose
//! DevEUI (OTAA) or DevAddr (ABP) the user named, the `[lorawan]` settings and the source's devices with
//! their key files read. The reports themselves are `crate::lorawan::cli`'s. Blocking IO.

use crate::config::{Config, DeviceConfig};
use crate::lorawan::cli::{self, CliDevice};
use crate::lorawan::settings::LorawanDevice;

/// The device whose DevEUI (OTAA) or DevAddr (ABP) is `id` (hex, any case), with its LoRaWAN keys.
fn find<'c>(config: &'c Config, id: &str) -> Result<(&'c DeviceConfig, LorawanDevice), String> {
    let id = id.to_ascii_lowercase();
    for device in &config.device {
        if let Ok(lorawan) = device.lorawan_keys().check() {
            if lorawan.address() == id {
                return Ok((device, lorawan));
            }
        }
    }
    Err(format!(
        "no LoRaWAN [[device]] has dev_eui or dev_addr \"{id}\" in the configuration"
    ))
}

/// `sensorgate lorawan keys --dev-eui ID`: the report of [`cli::keys`].
pub fn keys(config: &Config, id: &str) -> Result<String, String> {
    let (device, lorawan) = find(config, id)?;
    let state_dir = config.state_dir();
    cli::keys(&CliDevice {
        name: &device.name,
        source: &device.source,
        lorawan,
        state_dir: &state_dir,
    })
}

/// `sensorgate lorawan decode --dev-eui ID HEX`: the report of [`cli::decode`] and whether the server
/// would accept the frame.
pub fn decode(config: &Config, id: &str, phy_hex: &str) -> Result<(String, bool), String> {
    let (device, lorawan) = find(config, id)?;
    let settings = config
        .lorawan
        .as_ref()
        .ok_or("the configuration has no [lorawan] table")?
        .server_settings()
        .map_err(|e| format!("[lorawan] {}: {}", e.key, e.message))?;
    let (mut by_source, _) =
        super::keys::load_lorawan_devices(config).map_err(|e| e.to_string())?;
    let devices = by_source.remove(&device.source).unwrap_or_default();
    let state_dir = config.state_dir();
    let device = CliDevice {
        name: &device.name,
        source: &device.source,
        lorawan,
        state_dir: &state_dir,
    };
    cli::decode(&device, settings, devices, phy_hex)
}
