//! Resetting the stick over USB, as unplugging and replugging it would: the `USBDEVFS_RESET` ioctl on
//! its `/dev/bus/usb/BBB/DDD` node, found through sysfs (`/sys/bus/usb/devices/*` with an RTL2832U's
//! vendor and product ids) by the stick's serial (`device = ":00000001"`) or index (`device = "1"`, in
//! sysfs order; the first stick without `device`). The node must be writable by the daemon's user (the
//! udev rule in the README grants it). Behind [`UsbReset`] so that the supervisor is tested with a fake.
//! Blocking calls: the supervisor runs [`UsbReset::reset`] on a blocking thread.

use std::path::{Path, PathBuf};

/// What the supervisor calls after killing a stalled rtl_433.
pub trait UsbReset: Send + Sync + 'static {
    /// Resets the stick `device` (the source's `device` key); returns what was reset, for the log.
    fn reset(&self, device: Option<&str>) -> Result<String, String>;
}

/// RTL2832U sticks: Realtek's vendor id and the product ids rtl-sdr knows them by most.
const RTL_SDR_IDS: [(&str, &str); 2] = [("0bda", "2838"), ("0bda", "2832")];
/// `_IO('U', 20)` from `linux/usbdevice_fs.h`.
const USBDEVFS_RESET: libc::c_ulong = 0x5514;

/// The real reset: sysfs to find the node, the ioctl to reset it.
#[derive(Debug, Clone)]
pub struct SysfsUsbReset {
    /// `/sys/bus/usb/devices`.
    pub sysfs: PathBuf,
    /// `/dev/bus/usb`.
    pub dev: PathBuf,
}

impl Default for SysfsUsbReset {
    fn default() -> Self {
        SysfsUsbReset {
            sysfs: PathBuf::from("/sys/bus/usb/devices"),
            dev: PathBuf::from("/dev/bus/usb"),
        }
    }
}

impl UsbReset for SysfsUsbReset {
    fn reset(&self, device: Option<&str>) -> Result<String, String> {
        let node = find_node(&self.sysfs, &self.dev, device)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&node)
            .map_err(|e| {
                format!(
                    "cannot open {} ({e}); see the udev rule in the README",
                    node.display()
                )
            })?;
        // SAFETY: a valid open descriptor and an ioctl that takes no argument.
        let result = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                USBDEVFS_RESET as _,
                0,
            )
        };
        if result < 0 {
            return Err(format!(
                "USBDEVFS_RESET on {} failed: {}",
                node.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(node.display().to_string())
    }
}

/// The `/dev/bus/usb` node of the stick `device` names.
pub fn find_node(sysfs: &Path, dev: &Path, device: Option<&str>) -> Result<PathBuf, String> {
    let read = |dir: &Path, name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let entries =
        std::fs::read_dir(sysfs).map_err(|e| format!("cannot read {}: {e}", sysfs.display()))?;
    let mut sticks: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| {
            let ids = (read(dir, "idVendor"), read(dir, "idProduct"));
            RTL_SDR_IDS.iter().any(|(v, p)| ids.0 == *v && ids.1 == *p)
        })
        .collect();
    sticks.sort();
    let chosen = match device.unwrap_or("0") {
        serial if serial.starts_with(':') => sticks
            .iter()
            .find(|dir| read(dir, "serial") == serial[1..])
            .ok_or_else(|| {
                format!(
                    "no RTL-SDR stick with serial {} in {}",
                    &serial[1..],
                    sysfs.display()
                )
            })?,
        index => {
            let index: usize = index
                .parse()
                .map_err(|_| format!("device \"{index}\" is neither an index nor :serial"))?;
            sticks.get(index).ok_or_else(|| {
                format!(
                    "no RTL-SDR stick number {index} in {} ({} found)",
                    sysfs.display(),
                    sticks.len()
                )
            })?
        }
    };
    let bus: u32 = read(chosen, "busnum")
        .parse()
        .map_err(|_| "no busnum in sysfs".to_string())?;
    let number: u32 = read(chosen, "devnum")
        .parse()
        .map_err(|_| "no devnum in sysfs".to_string())?;
    Ok(dev.join(format!("{bus:03}")).join(format!("{number:03}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stick(root: &Path, name: &str, product: &str, serial: &str, bus: u32, number: u32) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [
            ("idVendor", "0bda".to_string()),
            ("idProduct", product.to_string()),
            ("serial", serial.to_string()),
            ("busnum", bus.to_string()),
            ("devnum", number.to_string()),
        ] {
            std::fs::write(dir.join(file), format!("{text}\n")).unwrap();
        }
    }

    #[test]
    fn finds_the_node_by_serial_or_index() {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path();
        stick(root, "1-1.2", "2838", "00000001", 1, 5);
        stick(root, "1-1.3", "2832", "00000433", 1, 7);
        stick(root, "1-1.4", "0001", "x", 1, 9); // another Realtek device
        let dev = Path::new("/dev/bus/usb");
        assert_eq!(find_node(root, dev, None).unwrap(), dev.join("001/005"));
        assert_eq!(
            find_node(root, dev, Some("1")).unwrap(),
            dev.join("001/007")
        );
        assert_eq!(
            find_node(root, dev, Some(":00000433")).unwrap(),
            dev.join("001/007")
        );
        assert!(find_node(root, dev, Some("2"))
            .unwrap_err()
            .contains("2 found"));
        assert!(find_node(root, dev, Some(":9")).is_err());
    }
}
