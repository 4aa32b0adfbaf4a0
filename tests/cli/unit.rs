//! The shipped systemd unit (`systemd/sensorgate.service`, installed by the Debian package): it lets the
//! service reach an RTL-SDR stick for a supervised rtl_433 (the USB device nodes, the group Debian's
//! librtlsdr0 udev rule gives them to, libusb's hot-plug netlink socket, memory for rtl_433's buffers)
//! and a Bluetooth adapter's raw HCI socket, without a drop-in; and systemd's own `systemd-analyze`
//! accepts it and still rates its sandbox as tight.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../../systemd/sensorgate.service");
/// Debian's librtlsdr0 (installed with rtl-433) gives the sticks' USB nodes to a group with this file.
const LIBRTLSDR_RULES: &str = "/lib/udev/rules.d/60-librtlsdr0.rules";

/// Every value of `key` in the unit's `[Service]` section, split on white space, in order.
fn values(key: &str) -> Vec<String> {
    let service = UNIT
        .split("[Service]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [Service] section");
    service
        .lines()
        .filter_map(|line| line.trim().split_once('='))
        .filter(|(name, _)| name.trim() == key)
        .flat_map(|(_, value)| value.split_whitespace().map(str::to_string))
        .collect()
}

fn has(key: &str, wanted: &str) -> bool {
    values(key).iter().any(|value| value == wanted)
}

/// `192M` as bytes.
fn bytes(size: &str) -> u64 {
    let (digits, unit) = size.split_at(size.len() - 1);
    let scale = match unit {
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("unexpected unit {other} in {size}"),
    };
    digits.parse::<u64>().expect("a size") * scale
}

#[test]
fn the_unit_grants_an_rtl_sdr_stick_to_rtl_433() {
    // /dev/bus/usb/BBB/DDD: major "usb_device" in /proc/devices.
    assert!(
        UNIT.lines().any(|l| l == "DeviceAllow=char-usb_device rw"),
        "no DeviceAllow for USB device nodes"
    );
    assert!(has("DevicePolicy", "closed"));
    // PrivateDevices=yes would hide /dev/bus/usb whatever DeviceAllow says.
    assert!(
        values("PrivateDevices").iter().all(|v| v == "no"),
        "PrivateDevices hides the stick"
    );
    assert!(
        has("SupplementaryGroups", "plugdev"),
        "{:?}",
        values("SupplementaryGroups")
    );
    if let Ok(rules) = std::fs::read_to_string(LIBRTLSDR_RULES) {
        // The group the unit names is the one Debian's rule hands the sticks to.
        assert!(rules.contains("GROUP=\"plugdev\""), "{LIBRTLSDR_RULES}");
    }
    assert!(has("RestrictAddressFamilies", "AF_NETLINK"));
    let memory_max = values("MemoryMax");
    assert!(
        memory_max.len() == 1 && bytes(&memory_max[0]) >= 192 << 20,
        "MemoryMax={memory_max:?} leaves no room for rtl_433"
    );
}

#[test]
fn the_unit_grants_a_bluetooth_adapter_and_no_other_capability() {
    assert!(has("RestrictAddressFamilies", "AF_BLUETOOTH"));
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let mut granted = values(key);
        granted.sort();
        assert_eq!(granted, ["CAP_NET_ADMIN", "CAP_NET_RAW"], "{key}");
    }
    assert!(has("NoNewPrivileges", "yes"));
}

/// `systemd-analyze` on a copy of the unit whose ExecStart names the built daemon (verify needs the
/// binary to exist). scripts/test installs Debian's systemd, which brings systemd-analyze.
fn analyze(dir: &Path, args: &[&str]) -> (bool, String) {
    let copy = dir.join("sensorgate.service");
    let unit = UNIT.replace("/usr/bin/sensorgate", env!("CARGO_BIN_EXE_sensorgate"));
    std::fs::write(&copy, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(&copy)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze (Debian: systemd; scripts/test installs it): {e}")
        });
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    // Lines about the host (no systemd as PID 1 in a container) are not about the unit.
    let text: String = text
        .lines()
        .filter(|l| !l.contains("System has not been booted with systemd"))
        .filter(|l| !l.contains("Failed to connect to bus"))
        .map(|l| format!("{l}\n"))
        .collect();
    (output.status.success(), text)
}

#[test]
fn systemd_verifies_the_unit_and_rates_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, report) = analyze(dir.path(), &["verify"]);
    assert!(ok && report.trim().is_empty(), "verify:\n{report}");
    let (ok, report) = analyze(dir.path(), &["security", "--offline=true"]);
    assert!(ok, "security:\n{report}");
    let exposure: f64 = report
        .split("Overall exposure level for sensorgate.service:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    // 0 is a perfect sandbox, 10 none; systemd calls up to 3.9 "OK". The two capabilities and the
    // address families cost 0.6 of it.
    assert!(exposure <= 2.5, "exposure {exposure}:\n{report}");
}
