//! Key files: a frame key (AES-128, 32 hex digits) or an envelope key (ChaCha20-Poly1305, 64 hex digits),
//! read from a file of its own, never from the TOML. Whitespace (spaces, tabs, newlines) is ignored, so a
//! key may be written in groups or over several lines; anything else is refused with the file's
//! `PATH:LINE:COLUMN` and what to write instead. A key file must be a regular file of at most
//! [`MAX_KEY_FILE_BYTES`]: a device, a FIFO or a directory is refused without blocking and a larger file
//! without reading past the bound. This module owns the reading, the parsing, the check of the file's
//! permissions (readable by group or others is reported, for a warning at start) and the key types,
//! whose `Debug` shows no byte of the key; no message it builds contains a character of the file.

use std::fmt;
use std::path::{Path, PathBuf};

/// An AES-128 key of encrypted sensor frames.
#[derive(Clone, PartialEq, Eq)]
pub struct FrameKey(pub(crate) [u8; 16]);

/// A ChaCha20-Poly1305 key of end-to-end encrypted uplink payloads.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvelopeKey(pub(crate) [u8; 32]);

impl FrameKey {
    /// Hex digits in the file.
    pub const HEX_DIGITS: usize = 32;

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        FrameKey(bytes)
    }

    /// Parses key text (see the module); `path` is only used in the error.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        parse_hex::<16>(text, path, "a frame key (AES-128)").map(FrameKey)
    }

    /// The key check value: the first 4 bytes of AES-128 of a zero block under the key, big-endian. It
    /// tells two keys apart (stored beside state tied to a key) and reveals nothing usable of the key.
    pub fn check_value(&self) -> u32 {
        use aes::cipher::{BlockEncrypt, KeyInit};
        let cipher = aes::Aes128::new(&self.0.into());
        let mut block = [0u8; 16].into();
        cipher.encrypt_block(&mut block);
        u32::from_be_bytes([block[0], block[1], block[2], block[3]])
    }
}

impl EnvelopeKey {
    /// Hex digits in the file.
    pub const HEX_DIGITS: usize = 64;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EnvelopeKey(bytes)
    }

    /// Parses key text (see the module); `path` is only used in the error.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        parse_hex::<32>(text, path, "an envelope key (ChaCha20-Poly1305)").map(EnvelopeKey)
    }
}

impl fmt::Debug for FrameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKey(..)")
    }
}

impl fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvelopeKey(..)")
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path}: {source} (check the path and that sensorgate may read it)", path = path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `line` and `column` are 1-based (characters); both 0 when the problem is the file as a whole.
    #[error("{}", located(path, *line, *column, message))]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

fn located(path: &Path, line: usize, column: usize, message: &str) -> String {
    if line == 0 {
        format!("{}: {message}", path.display())
    } else {
        format!("{}:{line}:{column}: {message}", path.display())
    }
}

/// A key read from its file, with what the permission check found.
#[derive(Debug, Clone)]
pub struct KeyFile<K> {
    pub key: K,
    /// `Some(mode)` when group or others may read the file (mode & 0o077 != 0): warn at start.
    pub loose_mode: Option<u32>,
}

impl<K> KeyFile<K> {
    /// The warning to log at start, if the file is readable by more than its owner. Names the file only.
    pub fn warning(&self, path: &Path) -> Option<String> {
        self.loose_mode.map(|mode| {
            format!(
                "key file {} is readable by group or others (mode {:04o}); make it private: chmod 600 {}",
                path.display(),
                mode & 0o7777,
                path.display()
            )
        })
    }
}

/// Reads and parses a frame key file (blocking IO: call it off the async runtime's workers).
pub fn load_frame_key(path: &Path) -> Result<KeyFile<FrameKey>, KeyError> {
    load(path, FrameKey::parse)
}

/// Reads and parses an envelope key file (blocking IO: call it off the async runtime's workers).
pub fn load_envelope_key(path: &Path) -> Result<KeyFile<EnvelopeKey>, KeyError> {
    load(path, EnvelopeKey::parse)
}

fn load<K>(
    path: &Path,
    parse: fn(&str, &Path) -> Result<K, KeyError>,
) -> Result<KeyFile<K>, KeyError> {
    let bytes = read_bounded(path)?;
    let text = String::from_utf8(bytes).map_err(|_| KeyError::Malformed {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: "is not text; write the key as hexadecimal digits".into(),
    })?;
    let key = parse(&text, path)?;
    let loose_mode = loose_mode(path);
    Ok(KeyFile { key, loose_mode })
}

/// The most bytes a key file may hold: 64 hex digits with generous whitespace fit many times over.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The bytes of a key file: a regular file of at most [`MAX_KEY_FILE_BYTES`]. Opened without blocking
/// (a FIFO with no writer would hang the open), checked on the open descriptor (no race with a rename),
/// and read no further than the bound, so `/dev/zero`, a FIFO, a directory or a huge file are refused
/// at once.
fn read_bounded(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let read_error = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let refuse = |message: String| KeyError::Malformed {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_error)?;
    let kind = file.metadata().map_err(read_error)?.file_type();
    let not_regular = if kind.is_dir() {
        Some("a directory")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if !kind.is_file() {
        Some("not a regular file")
    } else {
        None
    };
    if let Some(what) = not_regular {
        return Err(refuse(format!(
            "is {what}; a key file is a regular file holding the key's hex digits"
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(refuse(format!(
            "is larger than {MAX_KEY_FILE_BYTES} bytes; a key file holds only the key's hex digits"
        )));
    }
    Ok(bytes)
}

#[cfg(unix)]
fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_mode(_path: &Path) -> Option<u32> {
    None
}

/// `N` bytes from hex digits, whitespace ignored. Errors say where and what, never which character.
fn parse_hex<const N: usize>(text: &str, path: &Path, what: &str) -> Result<[u8; N], KeyError> {
    let malformed = |line: usize, column: usize, message: String| KeyError::Malformed {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let mut nibbles = Vec::with_capacity(N * 2);
    for (line_index, line) in text.split('\n').enumerate() {
        for (column_index, c) in line.chars().enumerate() {
            if c.is_whitespace() {
                continue;
            }
            match c.to_digit(16) {
                Some(digit) if nibbles.len() < N * 2 => nibbles.push(digit as u8),
                Some(_) => {
                    return Err(malformed(
                        line_index + 1,
                        column_index + 1,
                        format!(
                            "more than {} hex digits; {what} is {} hex digits ({N} bytes)",
                            N * 2,
                            N * 2
                        ),
                    ))
                }
                None => {
                    return Err(malformed(
                        line_index + 1,
                        column_index + 1,
                        format!(
                            "not a hex digit; {what} is {} hex digits (0-9, a-f), whitespace ignored, e.g. made with `od -An -tx1 -N{N} /dev/urandom`",
                            N * 2
                        ),
                    ))
                }
            }
        }
    }
    if nibbles.len() != N * 2 {
        return Err(malformed(
            0,
            0,
            format!(
                "has {} hex digits; {what} is {} hex digits ({N} bytes)",
                nibbles.len(),
                N * 2
            ),
        ));
    }
    let mut key = [0u8; N];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = (nibbles[2 * i] << 4) | nibbles[2 * i + 1];
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/etc/sensorgate/node.key")
    }

    #[test]
    fn hex_with_whitespace_anywhere() {
        let key = FrameKey::parse("00010203 04050607\n08090a0b\t0C0D0E0F\n\n", path()).unwrap();
        assert_eq!(key.0, core::array::from_fn(|i| i as u8));
        let key = EnvelopeKey::parse(&"ab".repeat(32), path()).unwrap();
        assert_eq!(key.0, [0xab; 32]);
    }

    #[test]
    fn a_bad_character_is_located_and_not_echoed() {
        let error = FrameKey::parse("000102030405\n0607Z8090a0b0c0d0e0f", path()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("/etc/sensorgate/node.key:2:5: not a hex digit"),
            "{text}"
        );
        assert!(!text.contains('Z'), "{text}");
    }

    #[test]
    fn wrong_lengths_say_how_many_digits() {
        let error = FrameKey::parse("0001", path()).unwrap_err().to_string();
        assert!(error.contains("has 4 hex digits"), "{error}");
        assert!(error.contains("32 hex digits"), "{error}");
        let error = FrameKey::parse(&"0".repeat(33), path())
            .unwrap_err()
            .to_string();
        assert!(error.contains(":1:33: more than 32"), "{error}");
        let error = EnvelopeKey::parse(&"0".repeat(32), path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("64 hex digits"), "{error}");
    }

    #[test]
    fn the_check_value_is_aes_of_a_zero_block() {
        // FIPS-197 appendix C.1's key; AES of a zero block under it starts c6 a1 3b 37.
        let key = FrameKey::from_bytes(core::array::from_fn(|i| i as u8));
        assert_eq!(key.check_value(), 0xc6a1_3b37);
        assert_ne!(
            FrameKey::from_bytes([1; 16]).check_value(),
            key.check_value()
        );
    }

    #[test]
    fn debug_shows_no_key_byte() {
        let key = FrameKey::from_bytes([0x5a; 16]);
        assert_eq!(format!("{key:?}"), "FrameKey(..)");
        let key = EnvelopeKey::from_bytes([0x5a; 32]);
        assert_eq!(format!("{key:?}"), "EnvelopeKey(..)");
    }

    #[test]
    fn files_and_their_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k");
        std::fs::write(&file, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = load_frame_key(&file).unwrap();
        assert!(loaded.loose_mode.is_none());
        assert!(loaded.warning(&file).is_none());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load_frame_key(&file).unwrap();
        let warning = loaded.warning(&file).unwrap();
        assert!(
            warning.contains("mode 0644") && warning.contains("chmod 600"),
            "{warning}"
        );
        let missing = load_frame_key(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, KeyError::Read { .. }));
        for (special, what) in [("/dev/zero", "character device"), ("/", "directory")] {
            let error = load_frame_key(Path::new(special)).unwrap_err().to_string();
            assert!(error.contains(what), "{error}");
        }
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let error = load_frame_key(&fifo).unwrap_err().to_string();
        assert!(error.contains("FIFO"), "{error}");
        std::fs::write(&file, " ".repeat(MAX_KEY_FILE_BYTES as usize + 1)).unwrap();
        let error = load_frame_key(&file).unwrap_err().to_string();
        assert!(error.contains("larger than 4096 bytes"), "{error}");
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(load_frame_key(&file)
            .unwrap_err()
            .to_string()
            .contains("not text"));
    }
}
