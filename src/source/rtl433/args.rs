//! rtl_433's command line: the options sensorgate always sets (JSON on stdout, microsecond UTC time,
//! protocol and level metadata, a statistics line every stats interval, SI units), those that come from
//! the source's own keys (`device`, `frequency`, `hop_interval`, `protocols`, `sample_rate`, `gain`),
//! then the user's `args`, which may not repeat or contradict either. Pure.

use std::time::Duration;

/// Options sensorgate sets itself, and those its keys set: `args` may contain none of them.
const RESERVED: [(&str, &str); 10] = [
    (
        "-F",
        "sensorgate reads rtl_433's JSON output (-F json) itself",
    ),
    (
        "-M",
        "sensorgate sets the metadata it reads (-M time, protocol, level, stats)",
    ),
    ("-C", "sensorgate asks for SI units (-C si)"),
    ("-d", "write the stick in the source's `device` key"),
    (
        "-f",
        "write the frequencies in the source's `frequency` key",
    ),
    (
        "-H",
        "write the hop interval in the source's `hop_interval` key",
    ),
    (
        "-R",
        "write the protocol numbers in the source's `protocols` key",
    ),
    (
        "-s",
        "write the sample rate in the source's `sample_rate` key",
    ),
    ("-g", "write the gain in the source's `gain` key"),
    ("-T", "sensorgate supervises how long rtl_433 runs"),
];

/// The receiver options of a source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Receiver {
    /// `-d`: an index (`"0"`) or `":serial"`.
    pub device: Option<String>,
    /// `-f`, Hz, each.
    pub frequencies: Vec<u32>,
    /// `-H`, with two frequencies or more.
    pub hop_interval: Option<Duration>,
    /// `-R`, each.
    pub protocols: Vec<u16>,
    /// `-s`, Hz.
    pub sample_rate: Option<u32>,
    /// `-g`: dB, or `"0"` for automatic gain.
    pub gain: Option<String>,
}

/// The whole argument list.
pub fn command_line(
    receiver: &Receiver,
    stats_interval: Duration,
    extra: &[String],
) -> Vec<String> {
    let seconds = stats_interval.as_secs().max(1);
    let mut args: Vec<String> = [
        "-F",
        "json",
        "-M",
        "time:unix:usec:utc",
        "-M",
        "protocol",
        "-M",
        "level",
        "-M",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("stats:1:{seconds}"));
    args.extend(["-C".to_string(), "si".to_string()]);
    if let Some(device) = &receiver.device {
        args.extend(["-d".to_string(), device.clone()]);
    }
    for frequency in &receiver.frequencies {
        args.extend(["-f".to_string(), frequency.to_string()]);
    }
    if let Some(hop) = receiver.hop_interval {
        args.extend(["-H".to_string(), hop.as_secs().max(1).to_string()]);
    }
    for protocol in &receiver.protocols {
        args.extend(["-R".to_string(), protocol.to_string()]);
    }
    if let Some(rate) = receiver.sample_rate {
        args.extend(["-s".to_string(), rate.to_string()]);
    }
    if let Some(gain) = &receiver.gain {
        args.extend(["-g".to_string(), gain.clone()]);
    }
    args.extend(extra.iter().cloned());
    args
}

/// Refuses extra arguments that repeat or contradict what sensorgate or the source's keys set.
pub fn check_extra(args: &[String]) -> Result<(), String> {
    for arg in args {
        for (option, instead) in RESERVED {
            if arg.starts_with(option) {
                return Err(format!("\"{arg}\" is not allowed in args: {instead}"));
            }
        }
    }
    Ok(())
}

/// Whether the arguments make rtl_433 replay a file (`-r`) or a test code (`-y`) and exit.
pub fn is_one_shot(args: &[String]) -> bool {
    args.iter()
        .any(|arg| arg.starts_with("-r") || arg.starts_with("-y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_sensorgate_sets_then_the_keys_then_args() {
        let receiver = Receiver {
            device: Some(":00000001".into()),
            frequencies: vec![433_920_000, 868_300_000],
            hop_interval: Some(Duration::from_secs(600)),
            protocols: vec![19, 40],
            sample_rate: Some(1_024_000),
            gain: Some("0".into()),
        };
        let line = command_line(
            &receiver,
            Duration::from_secs(60),
            &["-Y".into(), "autolevel".into()],
        );
        assert_eq!(
            line.join(" "),
            "-F json -M time:unix:usec:utc -M protocol -M level -M stats:1:60 -C si -d :00000001 \
             -f 433920000 -f 868300000 -H 600 -R 19 -R 40 -s 1024000 -g 0 -Y autolevel"
        );
    }

    #[test]
    fn extra_arguments_may_not_override_what_sensorgate_sets() {
        assert!(check_extra(&[
            "-Y".into(),
            "autolevel".into(),
            "-y".into(),
            "{36}5b".into()
        ])
        .is_ok());
        let refused = check_extra(&["-F".into(), "mqtt".into()]).unwrap_err();
        assert!(refused.contains("\"-F\""), "{refused}");
        assert!(check_extra(&["-Fjson".into()]).is_err());
        assert!(check_extra(&["-R".into(), "19".into()])
            .unwrap_err()
            .contains("protocols"));
        assert!(is_one_shot(&["-r".into(), "g001.cu8".into()]));
        assert!(is_one_shot(&["-y".into(), "{36}5b".into()]));
        assert!(!is_one_shot(&["-Y".into(), "autolevel".into()]));
    }
}
