//! The raw HCI socket backend (`adapter = "hci0"`, the default): an `AF_BLUETOOTH`/`BTPROTO_HCI` raw
//! socket bound to the adapter, no D-Bus and no BlueZ daemon needed (bluetoothd may run beside it). It
//! needs CAP_NET_RAW (the raw socket) and CAP_NET_ADMIN (bringing the adapter up, changing its scan).
//!
//! At open: the adapter is brought up (`HCIDEVUP`, already up is fine), the socket's filter lets through
//! HCI events only, and of them Command Complete, Command Status and LE Meta (the advertising reports);
//! then the commands, each one HCI command packet (`01 | opcode LE | length | parameters`): LE Set Scan
//! Enable off (a scan left running by another program refuses new parameters), LE Set Scan Parameters
//! (passive: the controller never sends a scan request, so no sensor spends battery answering; interval
//! 60 ms, window 30 ms, as BlueZ's own passive scan, leaving the shared antenna half the time to Wi-Fi
//! on a Pi), LE Set Scan Enable on with the controller's duplicate filter off (a sensor's next reading
//! may be an identical advert the registry must see to keep the device online). A controller that
//! refuses a command says so in its Command Complete: logged, and the watchdog restarts the scan.
//!
//! Reading is off the runtime's threads' way: the socket is non-blocking and waited on with `AsyncFd`.
//! A read or write that fails with the adapter gone (ENODEV, ENETDOWN, EPIPE...) is the adapter lost.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::SystemTime;

use tokio::io::unix::AsyncFd;

use super::adapter::{Adapter, AdapterLost, Heard, Opener};
use crate::ble::hci;

/// HCI packet types (H4).
const HCI_COMMAND_PKT: u8 = 0x01;
const HCI_EVENT_PKT: u8 = 0x04;
/// HCI events let through the filter.
const EVT_CMD_COMPLETE: u8 = 0x0E;
const EVT_CMD_STATUS: u8 = 0x0F;
const EVT_LE_META_EVENT: u8 = 0x3E;
/// LE commands (OGF 0x08).
pub const LE_SET_SCAN_PARAMETERS: u16 = 0x200B;
pub const LE_SET_SCAN_ENABLE: u16 = 0x200C;
/// Scan interval and window, units of 0.625 ms: 60 ms and 30 ms.
const SCAN_INTERVAL: u16 = 0x0060;
const SCAN_WINDOW: u16 = 0x0030;

/// Linux's Bluetooth socket constants (`<bluetooth/hci.h>`), which the libc crate does not carry.
const BTPROTO_HCI: libc::c_int = 1;
const HCI_CHANNEL_RAW: u16 = 0;
const SOL_HCI: libc::c_int = 0;
const HCI_FILTER: libc::c_int = 2;
/// `_IOW('H', 201, int)`.
const HCIDEVUP: libc::c_ulong = 0x4004_48C9;

/// The index of `hciN`.
pub fn adapter_index(name: &str) -> Option<u16> {
    let digits = name.strip_prefix("hci")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One HCI command packet.
pub fn command(opcode: u16, parameters: &[u8]) -> Vec<u8> {
    let mut packet = vec![HCI_COMMAND_PKT];
    packet.extend_from_slice(&opcode.to_le_bytes());
    packet.push(u8::try_from(parameters.len()).unwrap_or(u8::MAX));
    packet.extend_from_slice(parameters);
    packet
}

/// LE Set Scan Parameters: passive, 60 ms every 60 ms... see the module.
pub fn set_scan_parameters() -> Vec<u8> {
    let mut parameters = vec![0x00]; // passive: no scan requests
    parameters.extend_from_slice(&SCAN_INTERVAL.to_le_bytes());
    parameters.extend_from_slice(&SCAN_WINDOW.to_le_bytes());
    parameters.push(0x00); // own address: public
    parameters.push(0x00); // every advertiser
    command(LE_SET_SCAN_PARAMETERS, &parameters)
}

/// LE Set Scan Enable, the controller's duplicate filter off.
pub fn set_scan_enable(enable: bool) -> Vec<u8> {
    command(LE_SET_SCAN_ENABLE, &[u8::from(enable), 0x00])
}

/// The commands that (re)start a passive scan, in order.
pub fn start_scan_commands() -> [Vec<u8>; 3] {
    [
        set_scan_enable(false),
        set_scan_parameters(),
        set_scan_enable(true),
    ]
}

/// `struct hci_filter` of `<bluetooth/hci.h>`: packet types and events let through.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HciFilter {
    pub type_mask: u32,
    pub event_mask: [u32; 2],
    pub opcode: u16,
}

impl HciFilter {
    /// Events only: Command Complete, Command Status and LE Meta.
    pub fn le_events() -> HciFilter {
        let mut filter = HciFilter {
            type_mask: 1 << HCI_EVENT_PKT,
            event_mask: [0; 2],
            opcode: 0,
        };
        for event in [EVT_CMD_COMPLETE, EVT_CMD_STATUS, EVT_LE_META_EVENT] {
            filter.event_mask[usize::from(event >> 5)] |= 1 << (event & 31);
        }
        filter
    }
}

/// A Command Complete or Command Status that reports a refusal: `(opcode, status)`.
pub fn command_refused(event: &[u8]) -> Option<(u16, u8)> {
    match event {
        [HCI_EVENT_PKT, EVT_CMD_COMPLETE, _len, _ncmd, lo, hi, status, ..] if *status != 0 => {
            Some((u16::from_le_bytes([*lo, *hi]), *status))
        }
        [HCI_EVENT_PKT, EVT_CMD_STATUS, _len, status, _ncmd, lo, hi, ..] if *status != 0 => {
            Some((u16::from_le_bytes([*lo, *hi]), *status))
        }
        _ => None,
    }
}

/// Opens `hciN`.
#[derive(Debug)]
pub struct HciOpener {
    name: String,
    index: Option<u16>,
}

impl HciOpener {
    pub fn new(adapter: &str) -> Self {
        HciOpener {
            name: adapter.to_string(),
            index: adapter_index(adapter),
        }
    }
}

fn last_error(what: &str) -> AdapterLost {
    AdapterLost(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Opens, binds and filters the raw socket, and brings the adapter up. Plain syscalls that do not wait.
fn open_socket(index: u16) -> Result<OwnedFd, AdapterLost> {
    // SAFETY: socket(2) with constant arguments; the result is checked before it is owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_BLUETOOTH,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            BTPROTO_HCI,
        )
    };
    if fd < 0 {
        return Err(last_error(
            "a raw HCI socket (CAP_NET_RAW and AF_BLUETOOTH needed)",
        ));
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the ioctl takes the adapter index by value.
    let up = unsafe { libc::ioctl(socket.as_raw_fd(), HCIDEVUP, libc::c_int::from(index)) };
    if up < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EALREADY) {
        log::debug!("HCIDEVUP hci{index}: {}", std::io::Error::last_os_error());
    }
    #[repr(C)]
    struct SockaddrHci {
        family: libc::sa_family_t,
        dev: u16,
        channel: u16,
    }
    let address = SockaddrHci {
        family: libc::AF_BLUETOOTH as libc::sa_family_t,
        dev: index,
        channel: HCI_CHANNEL_RAW,
    };
    // SAFETY: address is a valid sockaddr_hci and its size is passed.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::addr_of!(address).cast(),
            std::mem::size_of::<SockaddrHci>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(last_error(&format!("hci{index}")));
    }
    let filter = HciFilter::le_events();
    // SAFETY: filter is a valid hci_filter and its size is passed.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            SOL_HCI,
            HCI_FILTER,
            std::ptr::addr_of!(filter).cast(),
            std::mem::size_of::<HciFilter>() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(last_error("the HCI event filter"));
    }
    Ok(socket)
}

/// Writes one command packet (HCI sockets take a packet whole or refuse it).
fn write_packet(socket: &OwnedFd, packet: &[u8]) -> Result<(), AdapterLost> {
    // SAFETY: packet is a valid buffer of its length.
    let written = unsafe { libc::write(socket.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
    if written < 0 {
        return Err(last_error("an HCI command"));
    }
    Ok(())
}

impl Opener for HciOpener {
    type Adapter = HciAdapter;

    fn name(&self) -> String {
        self.name.clone()
    }

    async fn open(&mut self) -> Result<HciAdapter, AdapterLost> {
        let index = self
            .index
            .ok_or_else(|| AdapterLost(format!("{} is not an adapter name", self.name)))?;
        let socket = open_socket(index)?;
        for packet in start_scan_commands() {
            write_packet(&socket, &packet)?;
        }
        // SAFETY: the OwnedFd is a valid open descriptor, owned by the AsyncFd for its whole life.
        let socket = unsafe { AsyncFd::register(socket) }
            .map_err(|e| AdapterLost(format!("hci{index}: {e}")))?;
        Ok(HciAdapter {
            socket,
            buffer: vec![0; 1024],
        })
    }
}

/// The socket with its scan running.
#[derive(Debug)]
pub struct HciAdapter {
    socket: AsyncFd<OwnedFd>,
    buffer: Vec<u8>,
}

impl Adapter for HciAdapter {
    async fn next(&mut self) -> Result<Vec<Heard>, AdapterLost> {
        loop {
            let mut ready = self
                .socket
                .readable()
                .await
                .map_err(|e| AdapterLost(e.to_string()))?;
            let buffer = &mut self.buffer;
            let read = ready.try_io(|socket| {
                // SAFETY: buffer is valid for its length.
                let n = unsafe {
                    libc::read(socket.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len())
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            let length = match read {
                Err(_would_block) => continue,
                Ok(Err(error)) => return Err(AdapterLost(format!("reading: {error}"))),
                Ok(Ok(0)) => return Err(AdapterLost("the socket was closed".to_string())),
                Ok(Ok(length)) => length,
            };
            let event = &self.buffer[..length];
            if let Some((opcode, status)) = command_refused(event) {
                log::warn!(
                    "the controller refused HCI command 0x{opcode:04X} with status 0x{status:02X}"
                );
                return Ok(Vec::new());
            }
            let at = SystemTime::now();
            // A report that does not parse is one broken event among many: skipped.
            let adverts = hci::parse_event(event).unwrap_or_default();
            return Ok(adverts
                .into_iter()
                .map(|advert| Heard { advert, at })
                .collect());
        }
    }

    async fn restart_scan(&mut self) -> Result<(), AdapterLost> {
        for packet in start_scan_commands() {
            write_packet(self.socket.get_ref(), &packet)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_commands_are_passive_and_keep_duplicates() {
        let [off, parameters, on] = start_scan_commands();
        assert_eq!(off, [0x01, 0x0C, 0x20, 0x02, 0x00, 0x00]);
        assert_eq!(
            parameters,
            [0x01, 0x0B, 0x20, 0x07, 0x00, 0x60, 0x00, 0x30, 0x00, 0x00, 0x00],
            "type 0 (passive), interval 0x0060, window 0x0030, public own address, no filter list"
        );
        assert_eq!(
            on,
            [0x01, 0x0C, 0x20, 0x02, 0x01, 0x00],
            "enable, duplicate filter off"
        );
    }

    #[test]
    fn the_filter_lets_events_through_and_only_three_of_them() {
        let filter = HciFilter::le_events();
        assert_eq!(filter.type_mask, 0x10, "HCI_EVENT_PKT");
        assert_eq!(filter.event_mask, [0x0000_C000, 0x4000_0000]);
        assert_eq!(
            std::mem::size_of::<HciFilter>(),
            16,
            "as <bluetooth/hci.h> lays it out"
        );
    }

    #[test]
    fn adapter_names_and_refusals() {
        assert_eq!(adapter_index("hci0"), Some(0));
        assert_eq!(adapter_index("hci12"), Some(12));
        for bad in ["hci", "hci-1", "usb0", "hci0 ", ""] {
            assert_eq!(adapter_index(bad), None, "{bad}");
        }
        // Command Complete of LE Set Scan Parameters, status 0x0C (Command Disallowed).
        assert_eq!(
            command_refused(&[0x04, 0x0E, 0x04, 0x01, 0x0B, 0x20, 0x0C]),
            Some((0x200B, 0x0C))
        );
        assert_eq!(
            command_refused(&[0x04, 0x0E, 0x04, 0x01, 0x0B, 0x20, 0x00]),
            None
        );
        assert_eq!(
            command_refused(&[0x04, 0x0F, 0x04, 0x01, 0x01, 0x0C, 0x20]),
            Some((0x200C, 0x01))
        );
    }
}
