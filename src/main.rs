//! The `sensorgate` command line: parses arguments, sets up logging and the runtime, and hands over to the
//! library. Nothing here knows how the daemon works.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sensorgate::app::{self, RunError};
use sensorgate::ble::BleFormat;
use sensorgate::config::{Config, ConfigError};
use sensorgate::logging::LogBackend;

/// The default configuration file of an installed gateway.
const DEFAULT_CONFIG: &str = "/etc/sensorgate/sensorgate.toml";

#[derive(Parser)]
#[command(
    name = "sensorgate",
    version,
    about = "Sensor frames in, MQTT out: serial and LoRa gateway with an embedded broker"
)]
struct Cli {
    /// Configuration file (for `run`, the default command).
    #[arg(short, long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Check a configuration file and the key files it names: exit 0 if valid, else print
    /// PATH:LINE:COL: message and exit 2.
    CheckConfig {
        /// The file to check (default: --config, then /etc/sensorgate/sensorgate.toml).
        path: Option<PathBuf>,
    },
    /// After a loss of the replay marks (or of the downlink frame counters) that the daemon reported:
    /// move the damaged copies in the state directory aside, so that the next start begins them anew.
    /// Run it with the gateway stopped, then start it.
    ResetState,
    /// Read a password on standard input and print its hash for [[broker.user]] password_hash.
    HashPassword,
    /// Decode one packet as a source would (or one BLE advertisement's service data, from its UUID on)
    /// and print the readings as JSON.
    Decode {
        /// Payload format: json, lpp or mysensors; or bthome, pvvx or atc1441 (BLE service data).
        #[arg(long)]
        payload: String,
        /// BLE only: the advertiser's address (e.g. 54:48:E6:8F:80:A5), needed to open encrypted adverts.
        #[arg(long, value_name = "MAC")]
        mac: Option<String>,
        /// BLE only: the device's bindkey, a file of 32 hex digits.
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Header before the payload: none, node16 or radiohead.
        #[arg(long, default_value = "none")]
        header: String,
        /// CRC trailer: none or crc16-ccitt-false.
        #[arg(long, default_value = "none")]
        crc: String,
        /// The packet as hexadecimal (spaces allowed), or text for json and mysensors with --text.
        packet: String,
        /// Take the packet as text rather than hexadecimal.
        #[arg(long)]
        text: bool,
    },
    /// Build an encrypted sensor frame (AES-128-CCM) as a node sends it, and print it as hexadecimal.
    Encrypt {
        /// The frame key: a file of 32 hex digits.
        #[arg(long, value_name = "PATH")]
        key_file: PathBuf,
        /// Header before the encrypted part: node16 or radiohead (it carries the address of the nonce).
        #[arg(long, default_value = "node16")]
        header: String,
        /// The node's address (node16: 0-65535, radiohead: 0-255).
        #[arg(long, default_value_t = 0)]
        address: u32,
        /// The header's sequence number.
        #[arg(long, default_value_t = 0)]
        seq: u8,
        /// The frame counter (must grow with every frame the node sends).
        #[arg(long)]
        counter: u32,
        /// CRC trailer after the encrypted part: none or crc16-ccitt-false.
        #[arg(long, default_value = "none")]
        crc: String,
        /// Also frame it: cobs or slip (default: the bare frame).
        #[arg(long)]
        framing: Option<String>,
        /// The plaintext payload as hexadecimal (spaces allowed).
        payload: String,
    },
    /// LoRaWAN devices: their stored session, or one frame checked and decoded with their keys.
    Lorawan {
        #[command(subcommand)]
        command: LorawanCommand,
    },
    /// Read an end-to-end encrypted uplink payload on standard input and print the payload it carries.
    /// Payload codecs in JavaScript: decode, encode, or run a codec's examples.
    Codec {
        #[command(subcommand)]
        action: CodecAction,
    },
    Decrypt {
        /// The forward rule's key: a file of 64 hex digits.
        #[arg(long, value_name = "PATH")]
        key_file: PathBuf,
        /// The topic the envelope was received on (its associated data).
        #[arg(long)]
        topic: String,
        /// Standard input is hexadecimal text (e.g. `mosquitto_sub -F %x`) rather than raw bytes.
        #[arg(long)]
        hex: bool,
    },
}

#[derive(Subcommand)]
enum LorawanCommand {
    /// Print a device's activation and stored session (DevAddr, counters, join inputs), never a key.
    Keys {
        /// The device's DevEUI (OTAA) or DevAddr (ABP), hexadecimal.
        #[arg(long)]
        dev_eui: String,
    },
    /// Check one PHYPayload with the device's keys and stored session (MIC, counter, decryption) and
    /// print the decoded reading as JSON; exit 1 when the server would refuse it.
    Decode {
        /// The device's DevEUI (OTAA) or DevAddr (ABP), hexadecimal.
        #[arg(long)]
        dev_eui: String,
        /// The PHYPayload as hexadecimal (spaces allowed).
        phy: String,
    },
}

#[derive(Subcommand)]
enum CodecAction {
    /// Print decodeUplink's result {data, warnings, errors} as JSON; exit 1 when it has errors.
    Decode {
        file: PathBuf,
        /// The FPort the payload arrived on.
        #[arg(long, default_value_t = 1)]
        fport: u8,
        /// The payload as hexadecimal.
        hex: String,
    },
    /// Print encodeDownlink's result {bytes, fPort, warnings, errors} as JSON; exit 1 when it has errors.
    Encode {
        file: PathBuf,
        /// The command's data, a JSON object.
        json: String,
    },
    /// Run the codec's examples (test_decode_NAME.json / test_encode_NAME.json beside it); exit 1 when one fails.
    Test { file: PathBuf },
}

fn main() -> ExitCode {
    sensorgate::allocator::use_one_malloc_arena();
    let cli = Cli::parse();
    let config = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config),
        Command::CheckConfig { path } => check_config(&path.unwrap_or(config)),
        Command::ResetState => reset_state(config),
        Command::HashPassword => hash_password(),
        Command::Decode {
            payload,
            mac,
            key_file,
            header,
            crc,
            packet,
            text,
        } => {
            match serde_json::from_value::<BleFormat>(serde_json::Value::String(payload.clone())) {
                Ok(format) => decode_ble(format, &header, &crc, &packet, text, mac, key_file),
                Err(_) if mac.is_some() || key_file.is_some() => {
                    eprintln!("sensorgate: --mac and --key-file are for --payload bthome, pvvx or atc1441");
                    ExitCode::from(2)
                }
                Err(_) => decode(&payload, &header, &crc, &packet, text),
            }
        }
        Command::Encrypt {
            key_file,
            header,
            address,
            seq,
            counter,
            crc,
            framing,
            payload,
        } => print_hex_or_fail(sensorgate::crypto::cli::encrypt_one(
            &key_file,
            &header,
            address,
            seq,
            counter,
            &crc,
            framing.as_deref(),
            &payload,
        )),
        Command::Codec { action } => codec(action),
        Command::Decrypt {
            key_file,
            topic,
            hex,
        } => decrypt(&key_file, &topic, hex),
        Command::Lorawan { command } => lorawan(config, command),
    }
}

/// `check-config`: the file and the key files it names, read as `run` reads them at start.
fn check_config(path: &std::path::Path) -> ExitCode {
    let checked = Config::load(path).and_then(|config| {
        sensorgate::app::keys::load_keys(&config)?;
        sensorgate::app::keys::load_lorawan_devices(&config).map(|_| ())
    });
    match checked {
        Ok(()) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            report_config_error(&error, path, "sensorgate check-config PATH");
            ExitCode::from(2)
        }
    }
}

/// `encrypt`'s outcome: the frame's hex on standard output, or the error and exit status 2.
fn print_hex_or_fail(encrypted: anyhow::Result<String>) -> ExitCode {
    match encrypted {
        Ok(hex) => {
            println!("{hex}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sensorgate: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// `codec decode|encode|test`: the JSON outcome on standard output; exit status 1 when it failed.
fn codec(action: CodecAction) -> ExitCode {
    use sensorgate::codec::cli;
    let outcome = match action {
        CodecAction::Decode { file, fport, hex } => cli::decode(&file, fport, &hex),
        CodecAction::Encode { file, json } => cli::encode(&file, &json),
        CodecAction::Test { file } => cli::test(&file),
    };
    println!("{}", outcome.output);
    if outcome.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn lorawan(config_path: PathBuf, command: LorawanCommand) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            report_config_error(&error, &config_path, "sensorgate lorawan");
            return ExitCode::from(2);
        }
    };
    let result = match &command {
        LorawanCommand::Keys { dev_eui } => {
            sensorgate::app::lorawan_cli::keys(&config, dev_eui).map(|report| (report, true))
        }
        LorawanCommand::Decode { dev_eui, phy } => {
            sensorgate::app::lorawan_cli::decode(&config, dev_eui, phy)
        }
    };
    match result {
        Ok((report, accepted)) => {
            println!("{report}");
            if accepted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            eprintln!("sensorgate: {error}");
            ExitCode::from(2)
        }
    }
}

fn decrypt(key_file: &std::path::Path, topic: &str, hex: bool) -> ExitCode {
    use std::io::Write;
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("sensorgate: cannot read the envelope from standard input: {error}");
        return ExitCode::from(1);
    }
    match sensorgate::crypto::cli::decrypt_one(key_file, topic, &input, hex) {
        Ok(payload) => {
            let mut out = std::io::stdout().lock();
            if out.write_all(&payload).and_then(|()| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sensorgate: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(config_path: PathBuf) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            report_config_error(&error, &config_path, "sensorgate run -c PATH");
            return ExitCode::from(2);
        }
    };
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let log_backend = match sensorgate::logging::init(
        config.log.level.to_level_filter(),
        env("RUST_LOG"),
        env("JOURNAL_STREAM"),
    ) {
        Ok(backend) => Some(backend),
        Err(error) => {
            eprintln!("sensorgate: logging not set up: {error}");
            None
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.gateway.worker_threads)
        .thread_name("sensorgate")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sensorgate: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(app::run(config, Some(config_path.clone()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(error)) => {
            report_config_error(&error, &config_path, "sensorgate run -c PATH");
            ExitCode::from(2)
        }
        Err(RunError::Fatal(error)) => {
            // One line saying what to fix: the journal gets it with error priority (stderr goes there
            // too under systemd, so it is not repeated); a terminal gets it plain, without a log prefix.
            if log_backend == Some(LogBackend::Journal) {
                log::error!("{error:#}");
            } else {
                eprintln!("sensorgate: {error:#}");
            }
            ExitCode::from(1)
        }
    }
}

fn reset_state(config_path: PathBuf) -> ExitCode {
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            report_config_error(&error, &config_path, "sensorgate reset-state -c PATH");
            return ExitCode::from(2);
        }
    };
    match app::reset_lost_state(&config) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sensorgate: {error}");
            ExitCode::from(1)
        }
    }
}

fn hash_password() -> ExitCode {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("sensorgate: cannot read the password from standard input: {error}");
        return ExitCode::from(1);
    }
    let password = input.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("sensorgate: empty password; type it on standard input, e.g. `echo -n secret | sensorgate hash-password`");
        return ExitCode::from(2);
    }
    match sensorgate::broker::password::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sensorgate: {error}");
            ExitCode::from(1)
        }
    }
}

fn decode(payload: &str, header: &str, crc: &str, packet: &str, text: bool) -> ExitCode {
    if packet.trim().is_empty() {
        eprintln!(
            "sensorgate: no packet given; pass its bytes as hexadecimal (e.g. '03 67 01 10'), \
             or its text with --text"
        );
        return ExitCode::from(2);
    }
    match app::decode_one(payload, header, crc, packet, text) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            let looks_like_text = !text
                && packet
                    .chars()
                    .any(|c| !c.is_ascii_hexdigit() && !c.is_whitespace());
            if looks_like_text {
                eprintln!(
                    "sensorgate: {error}; write the bytes as hexadecimal (e.g. '03 67 01 10'), \
                     or add --text to decode it as text"
                );
            } else {
                eprintln!("sensorgate: {error}");
            }
            ExitCode::from(2)
        }
    }
}

/// `decode --payload bthome|pvvx|atc1441`: one advertisement's service data, from its UUID on.
fn decode_ble(
    format: BleFormat,
    header: &str,
    crc: &str,
    service_data: &str,
    text: bool,
    mac: Option<String>,
    key_file: Option<PathBuf>,
) -> ExitCode {
    if header != "none" || crc != "none" || text {
        eprintln!(
            "sensorgate: --payload {} takes the service data as hexadecimal, without --header, --crc or --text",
            format.name()
        );
        return ExitCode::from(2);
    }
    if service_data.trim().is_empty() {
        eprintln!(
            "sensorgate: no service data given; pass it as hexadecimal from its UUID on (e.g. 'd2fc4002ca09')"
        );
        return ExitCode::from(2);
    }
    match sensorgate::ble::cli::decode_one(
        format,
        service_data,
        mac.as_deref(),
        key_file.as_deref(),
    ) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sensorgate: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints a configuration error as its one `PATH:LINE:COL: message` line; when the configuration file
/// `config` does not exist, adds how to name another one (`usage`).
fn report_config_error(error: &ConfigError, config: &std::path::Path, usage: &str) {
    if error.line == 0 && error.path == config && !error.path.exists() {
        eprintln!("{error}; name the configuration file with `{usage}`");
    } else {
        eprintln!("{error}");
    }
}
