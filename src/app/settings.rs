//! Translation from the configuration to each stage's own settings. Every stage is built from a small
//! settings struct of its own, never from [`Config`]; this file is where the two meet, so a renamed key
//! changes one line here and nothing in the stages. Pure functions: no IO, no environment.

use std::path::Path;

use crate::broker::{BrokerSettings, ListenerSettings, UserSettings, WebSocketListener};
use crate::commands::{CommandSettings, DeviceEntry, OutboxSettings, QueueBounds, SourceCommands};
use crate::config::Transport;
use crate::config::{
    Config, Parity, RadioConfig, SerialConfig, SimulatorConfig, SourceConfig, SourceKind,
    UpstreamConfig,
};
use crate::decode::PacketDecoder;
use crate::devices::{DeviceSettings, RegistrySettings};
use crate::encode::link::LinkSpec;
use crate::frame::crc::CrcMode;
use crate::source::radio::{RadioBackend, RadioSettings};
use crate::source::serial::SerialSettings;
use crate::source::simulator::{SimulatorEncryption, SimulatorSettings};
use crate::uplink::{ForwardRule, UplinkSettings};

pub fn broker(config: &Config, state_dir: &Path) -> BrokerSettings {
    let broker = &config.broker;
    BrokerSettings {
        listeners: broker
            .listeners
            .iter()
            .filter(|listener| listener.transport == Transport::Tcp)
            .map(|listener| ListenerSettings {
                bind: listener.bind,
                tls: listener.tls.clone(),
            })
            .collect(),
        websockets: broker
            .listeners
            .iter()
            .filter(|listener| listener.transport == Transport::Websocket)
            .map(|listener| WebSocketListener {
                bind: listener.bind,
                tls: listener.tls.clone(),
                path: listener
                    .path
                    .clone()
                    .unwrap_or_else(|| crate::broker::defaults::WEBSOCKET_PATH.to_string()),
            })
            .collect(),
        anonymous_read: broker.anonymous_read.clone(),
        anonymous_write: broker.anonymous_write.clone(),
        users: broker
            .users
            .iter()
            .map(|user| UserSettings {
                name: user.name.clone(),
                password_hash: user.password_hash.clone(),
                read: user.read.clone(),
                write: user.write.clone(),
            })
            .collect(),
        allow_anonymous: broker.anonymous_allowed(),
        gateway_topics: vec![crate::topic::gateway::everything_below(
            &config.gateway.base_topic,
        )],
        gateway_discovery: config.homeassistant.discovery.then(|| {
            crate::broker::owned::DiscoveryNodes {
                prefix: config.homeassistant.prefix.clone(),
                node_id: crate::homeassistant::payload::gateway_node_id(&config.gateway.id),
            }
        }),
        max_connections: broker.max_connections,
        max_packet_size: u32::try_from(broker.max_packet_size).unwrap_or(u32::MAX),
        max_inflight: broker.max_inflight,
        max_queued_messages: broker.max_queued_messages,
        handshake_timeout: broker.handshake_timeout,
        max_topic_levels: broker.max_topic_levels,
        max_retained_messages: broker.max_retained_messages,
        max_offline_sessions: broker.max_offline_sessions,
        session_expiry: broker.session_expiry,
        anonymous_session_expiry: broker.anonymous_session_expiry,
        state_dir: broker.persist_retained.then(|| state_dir.to_path_buf()),
        snapshot_interval: broker.retained_sync,
    }
}

/// Home Assistant discovery's settings; `None` when `[homeassistant] discovery` is off.
pub fn homeassistant(config: &Config) -> Option<crate::homeassistant::DiscoverySettings> {
    use crate::config::{HomeAssistantDevices, RadioChip};
    use crate::homeassistant::{Announce, DeviceRules, Link, SourceInfo};
    let ha = &config.homeassistant;
    if !ha.discovery {
        return None;
    }
    let sources = config
        .sources
        .iter()
        .map(|source| {
            let link = match &source.kind {
                SourceKind::Serial(_) => Link::Serial,
                SourceKind::Simulator(_) => Link::Simulator,
                SourceKind::Rtl433(_) => Link::Rtl433,
                SourceKind::Ble(_) => Link::Radio("Bluetooth LE".to_string()),
                SourceKind::SemtechUdp(_) => Link::Radio("LoRaWAN".to_string()),
                SourceKind::Radio(radio) => Link::Radio(
                    match radio.chip {
                        RadioChip::Sx1276 => "SX1276",
                        RadioChip::Sx1262 => "SX1262",
                    }
                    .to_string(),
                ),
            };
            let info = SourceInfo {
                link,
                payload: source.payload,
                // A Bluetooth LE sensor's fields are never controls (its commands are the source's).
                commands: source.commands.is_some() && !matches!(source.kind, SourceKind::Ble(_)),
            };
            (source.name.clone(), info)
        })
        .collect();
    let devices = config
        .device
        .iter()
        .map(|device| {
            let rules = DeviceRules {
                announce: device.homeassistant,
                fields: device.fields.clone(),
            };
            ((device.source.clone(), device.address.clone()), rules)
        })
        .collect();
    Some(crate::homeassistant::DiscoverySettings {
        prefix: ha.prefix.clone(),
        announce: match ha.devices {
            HomeAssistantDevices::Auto => Announce::Auto,
            HomeAssistantDevices::Configured => Announce::Configured,
            HomeAssistantDevices::All => Announce::All,
        },
        base_topic: config.gateway.base_topic.clone(),
        gateway_id: config.gateway.id.clone(),
        qos: config.publish.qos,
        sources,
        devices,
        uplink: config.upstream.is_some(),
        sw_version: env!("CARGO_PKG_VERSION").to_string(),
        max_entities: crate::homeassistant::DEFAULT_MAX_ENTITIES,
    })
}

/// The command settings of a configuration: every source (with or without `commands`) and every
/// `[[device]]`; results at `[publish] qos`.
pub fn commands(config: &Config) -> CommandSettings {
    let sources = config
        .sources
        .iter()
        .map(|source| {
            let (crc, framing, radio) = match &source.kind {
                SourceKind::Serial(serial) => (serial.crc, Some(serial.framing), None),
                SourceKind::Simulator(simulator) => (simulator.crc, Some(simulator.framing), None),
                SourceKind::Radio(radio) => (CrcMode::None, None, Some(radio.stage_settings().0)),
                SourceKind::Rtl433(_) | SourceKind::SemtechUdp(_) | SourceKind::Ble(_) => {
                    (CrcMode::None, None, None)
                }
            };
            let commands = source.commands.clone().unwrap_or_default();
            SourceCommands {
                name: source.name.clone(),
                enabled: source.commands.is_some(),
                payload: source.payload,
                link: LinkSpec {
                    header: source.header,
                    crc,
                    framing,
                    gateway_address: commands.address,
                },
                decoder: PacketDecoder {
                    crc,
                    header: source.header,
                    payload: source.payload,
                },
                encrypted: source.encryption.is_some(),
                deliver: commands.deliver,
                outbox: OutboxSettings {
                    depth: commands.queue,
                    ttl: commands.ttl,
                    rx_delay: commands.rx_delay,
                    bounds: QueueBounds {
                        client_commands: commands.client_queue,
                        client_bytes: commands.client_queue_bytes,
                        source_bytes: commands.command_queue_bytes,
                    },
                },
                duty_cycle: commands.duty_cycle,
                client_airtime: commands.client_airtime,
                radio,
                max_frame: lorawan_max_frame(config, source),
            }
        })
        .collect();
    let devices = config
        .device
        .iter()
        .map(|device| DeviceEntry {
            name: device.name.clone(),
            source: device.source.clone(),
            address: device.address.clone(),
            deliver: device.deliver,
            raw_commands: device.raw_commands,
            payload: lorawan_command_payload(config, device),
        })
        .collect();
    CommandSettings {
        base_topic: config.gateway.base_topic.clone(),
        qos: config.publish.qos,
        sources,
        devices,
        codecs: config
            .codecs()
            .into_iter()
            .chain(lorawan_codecs(config))
            .filter(|((source, _), _)| {
                config
                    .sources
                    .iter()
                    .any(|s| &s.name == source && s.commands.is_some())
            })
            .collect(),
    }
}

/// The longest command a semtech-udp source can send: what its region's RX2 data rate carries.
fn lorawan_max_frame(config: &Config, source: &SourceConfig) -> Option<(usize, String)> {
    if !matches!(source.kind, SourceKind::SemtechUdp(_)) {
        return None;
    }
    let server = config.lorawan.as_ref()?.server_settings().ok()?;
    Some((
        server.largest_command(),
        format!(
            "a LoRaWAN downlink carries in {} at RX2's DR{}",
            server.region.name, server.rx2_data_rate
        ),
    ))
}

/// The payload format of a LoRaWAN device's commands: its decoder of its `downlink_fport` (a device
/// decoding that FPort with its codec gets its commands through the codec's `encodeDownlink`); `None`
/// for other devices, which take their source's.
fn lorawan_command_payload(
    config: &Config,
    device: &crate::config::DeviceConfig,
) -> Option<crate::decode::PayloadFormat> {
    let on_lorawan = config
        .sources
        .iter()
        .any(|s| s.name == device.source && matches!(s.kind, SourceKind::SemtechUdp(_)));
    if !on_lorawan {
        return None;
    }
    let checked = device.lorawan_keys().check().ok()?;
    checked.decoder(checked.downlink_fport)
}

/// The codecs of the LoRaWAN devices (their source runs them for uplinks; commands need their
/// `encodeDownlink`), by source name and address.
fn lorawan_codecs(
    config: &Config,
) -> impl Iterator<
    Item = (
        (String, Option<String>),
        crate::codec::settings::CodecSettings,
    ),
> + '_ {
    config.device.iter().filter_map(|device| {
        lorawan_command_payload(config, device)?;
        Some((
            (device.source.clone(), Some(device.address.clone())),
            device.codec_settings.clone()?,
        ))
    })
}

pub fn registry(config: &Config) -> RegistrySettings {
    RegistrySettings {
        base_topic: config.gateway.base_topic.clone(),
        qos: config.publish.qos,
        retain: config.publish.retain,
        field_topics: config.publish.field_topics,
        offline_after: config.devices.offline_after,
        dedup_window: config.devices.dedup_window,
        max_fields: config.devices.max_fields,
        devices: config
            .device
            .iter()
            .map(|device| DeviceSettings {
                name: device.name.clone(),
                source: device.source.clone(),
                address: device.address.clone(),
                offline_after: device.offline_after,
                will: device.will.clone(),
            })
            .collect(),
    }
}

/// The codecs of the sources with `payload = "codec"` (by source name), and of the devices with a codec
/// or variables of their own (by source name and address).
pub fn codecs(config: &Config) -> crate::codec::sources::CodecMap {
    config.codecs()
}

/// The decoder of a source's packets: serial and simulated frames carry the configured CRC; radios check
/// their CRC in the chip, so their packets have none.
pub fn decoder(source: &SourceConfig) -> PacketDecoder {
    let crc = match &source.kind {
        SourceKind::Serial(serial) => serial.crc,
        SourceKind::Simulator(simulator) => simulator.crc,
        SourceKind::Radio(_)
        | SourceKind::Rtl433(_)
        | SourceKind::SemtechUdp(_)
        | SourceKind::Ble(_) => CrcMode::None,
    };
    PacketDecoder {
        crc,
        header: source.header,
        payload: source.payload,
    }
}

pub fn serial(serial: &SerialConfig) -> SerialSettings {
    let mut settings = SerialSettings::new(serial.path.clone(), serial.baud);
    settings.data_bits = match serial.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    settings.parity = match serial.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Odd => tokio_serial::Parity::Odd,
        Parity::Even => tokio_serial::Parity::Even,
    };
    settings.stop_bits = if serial.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    settings.framing = serial.framing;
    settings.max_frame_len = serial.max_frame_len;
    settings
}

pub fn simulator(source: &SourceConfig, simulator: &SimulatorConfig) -> SimulatorSettings {
    SimulatorSettings {
        devices: simulator.devices,
        interval: simulator.interval,
        payload: source.payload,
        header: source.header,
        crc: simulator.crc,
        framing: simulator.framing,
        silence_probability: 0.002,
        seed: crate::source::simulator::seed_from_name(&source.name),
        encryption: source
            .encryption
            .as_ref()
            .map(|encryption| SimulatorEncryption {
                key_file: encryption.key_file.clone(),
            }),
    }
}

/// The radio's settings: the configuration's own mapping ([`RadioConfig::stage_settings`]), the same one
/// `check-config` validates with the radio driver's checks.
pub fn radio(radio: &RadioConfig) -> (RadioSettings, RadioBackend) {
    radio.stage_settings()
}

/// A radio with `payload = "lorawan"`: what its packet forwarder runs with, pulling as often as its
/// semtech-udp source (`udp`) expects.
pub fn forwarder(
    radio: &RadioConfig,
    udp: &crate::lorawan::settings::SemtechUdpConfig,
) -> Option<crate::lorawan::forwarder::ForwarderSettings> {
    let forwarding = radio.lorawan.as_ref()?;
    let (radio_settings, backend) = radio.stage_settings();
    Some(crate::lorawan::forwarder::ForwarderSettings {
        radio: radio_settings,
        backend,
        gateway_eui: forwarding.gateway_eui,
        keepalive: udp.keepalive,
    })
}

/// The semtech-udp source whose start a source takes: its own name, or a LoRaWAN radio's `forward_to`.
pub fn lorawan_server_name(source: &SourceConfig) -> &str {
    match &source.kind {
        SourceKind::Radio(RadioConfig {
            lorawan:
                Some(crate::lorawan::radio_settings::RadioForwarding {
                    forward_to: Some(server),
                    ..
                }),
            ..
        }) => server,
        _ => &source.name,
    }
}

/// The semtech-udp source `name`'s settings with the EUI of every radio of the daemon forwarding to it
/// added to its `gateways` (an allow-list of EUIs; `["any"]` already takes them).
pub fn with_own_radios(
    config: &Config,
    name: &str,
    udp: &crate::lorawan::settings::SemtechUdpConfig,
) -> crate::lorawan::settings::SemtechUdpConfig {
    let mut udp = udp.clone();
    if let crate::lorawan::settings::Gateways::Only(list) = &mut udp.gateways {
        for source in &config.sources {
            let SourceKind::Radio(RadioConfig {
                lorawan: Some(forwarding),
                ..
            }) = &source.kind
            else {
                continue;
            };
            let forwards_here = forwarding.forward_to.as_deref() == Some(name);
            if forwards_here && !list.contains(&forwarding.gateway_eui) {
                list.push(forwarding.gateway_eui);
            }
        }
    }
    udp
}

pub fn uplink(config: &Config, upstream: &UpstreamConfig, state_dir: &Path) -> UplinkSettings {
    UplinkSettings {
        url: upstream.url.clone(),
        allow_plaintext: upstream.allow_plaintext,
        client_id: upstream.client_id.clone(),
        ca_file: upstream.ca_file.clone(),
        cert_file: upstream.cert_file.clone(),
        key_file: upstream.key_file.clone(),
        username: upstream.username.clone(),
        password_file: upstream.password_file.clone(),
        keep_alive: upstream.keep_alive,
        max_inflight: upstream.max_inflight,
        protocol: upstream.protocol,
        base_topic: config.gateway.base_topic.clone(),
        forwards: upstream
            .forward
            .iter()
            .map(|rule| ForwardRule {
                filter: rule.filter.clone(),
                prefix: rule.prefix.clone(),
                qos: rule.qos,
            })
            .collect(),
        spool: upstream.spool.clone(),
        state_dir: state_dir.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lorawan_radio_is_routed_to_its_server_and_allowed_by_it() {
        let text = r#"
[lorawan]
region = "EU868"

[[source]]
name = "lns"
kind = "semtech-udp"
gateways = ["aa555a0000000001"]

[[source]]
name = "open"
kind = "semtech-udp"
bind = "0.0.0.0:1701"
gateways = ["any"]

[[source]]
name = "lora"
kind = "sx1262"
backend = "simulator"
frequency = 868_100_000
payload = "lorawan"
forward_to = "lns"
gateway_eui = "0102030405060708"

[[device]]
name = "meter"
source = "lora"
dev_addr = "26011bda"
nwk_s_key_file = "a"
app_s_key_file = "b"
payload = "lpp"
"#;
        let config = Config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        // The device is served by the network server the radio forwards to.
        assert_eq!(config.device[0].source, "lns");
        let radio = &config.sources[2];
        assert_eq!(lorawan_server_name(radio), "lns");
        let SourceKind::Radio(radio_config) = &radio.kind else {
            panic!("{radio:?}")
        };
        assert_eq!(radio_config.sync_word, 0x34);
        let SourceKind::SemtechUdp(udp) = &config.sources[0].kind else {
            panic!()
        };
        let allowed = with_own_radios(&config, "lns", udp);
        assert!(allowed.gateways.allows(0x0102_0304_0506_0708));
        assert!(allowed.gateways.allows(0xaa55_5a00_0000_0001));
        assert!(!udp.gateways.allows(0x0102_0304_0506_0708));
        let SourceKind::SemtechUdp(open) = &config.sources[1].kind else {
            panic!()
        };
        assert_eq!(with_own_radios(&config, "open", open), *open);
        let forwarder = forwarder(radio_config, &allowed).unwrap();
        assert_eq!(forwarder.gateway_eui, 0x0102_0304_0506_0708);
        assert_eq!(forwarder.keepalive, udp.keepalive);
    }

    #[test]
    #[cfg_attr(
        not(feature = "http"),
        ignore = "the demo turns the status page on, which this build refuses"
    )]
    fn the_demo_configuration_maps_to_every_stage() {
        let config = Config::default_demo();
        let broker = broker(&config, Path::new("/tmp/state"));
        assert_eq!(broker.listeners[0].bind.to_string(), "127.0.0.1:1883");
        assert_eq!(broker.gateway_topics, vec!["sensorgate/#".to_string()]);
        assert!(broker.max_queued_messages >= 10_000);
        let registry = registry(&config);
        assert_eq!(registry.base_topic, "sensorgate");
        for source in &config.sources {
            let decoder = decoder(source);
            assert_eq!(decoder.payload, source.payload);
        }
    }
}
