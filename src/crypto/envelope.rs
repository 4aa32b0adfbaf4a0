//! The end-to-end encrypted uplink payload, to the byte (`docs/formats.md`, "End-to-end encrypted
//! uplink payloads"):
//!
//! ```text
//! 0x01 (version) | key_id: u8 | nonce: 12 random bytes | ciphertext | tag: 16 bytes
//! ```
//!
//! ChaCha20-Poly1305 (RFC 8439) with the remote topic's UTF-8 bytes as associated data, so a payload
//! moved to another topic fails; 30 bytes of overhead. The version and key id bytes are not
//! authenticated (the format's associated data is the topic alone): they only tell the receiver which
//! key to try, and a changed key id fails unless it names the same key. This module owns the format and the [`Sealer`]
//! a forward rule uses; it never does IO. Nonces come from the thread's CSPRNG (`rand::rng()`, ChaCha12
//! seeded and reseeded from the operating system): 96 random bits, so a key may seal 2^32 payloads
//! before the chance of a repeated nonce reaches 2^-32.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use rand::RngCore;

use super::keys::EnvelopeKey;

/// The first byte of every envelope.
pub const VERSION: u8 = 0x01;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Version, key id, nonce and tag.
pub const OVERHEAD: usize = 2 + NONCE_LEN + TAG_LEN;

/// Why an envelope did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{have} bytes, an envelope has at least {OVERHEAD}")]
    TooShort { have: usize },
    #[error("version {0}, this gateway writes and reads version 1")]
    Version(u8),
    #[error("key id {found}, the key given is key id {expected}")]
    KeyId { found: u8, expected: u8 },
    #[error("authentication failed (wrong key, another topic, or the envelope was changed)")]
    Tag,
    #[error("payload too long to seal")]
    TooLong,
}

/// Seals `payload` for `topic` with the given nonce (tests and firmware checks; use [`seal`] otherwise).
pub fn seal_with_nonce(
    key: &EnvelopeKey,
    key_id: u8,
    nonce: [u8; NONCE_LEN],
    topic: &str,
    payload: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    let sealed = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: payload,
                aad: topic.as_bytes(),
            },
        )
        .map_err(|_| EnvelopeError::TooLong)?;
    let mut envelope = Vec::with_capacity(2 + NONCE_LEN + sealed.len());
    envelope.push(VERSION);
    envelope.push(key_id);
    envelope.extend_from_slice(&nonce);
    envelope.extend_from_slice(&sealed);
    Ok(envelope)
}

/// Seals `payload` for `topic` with a fresh random nonce.
pub fn seal(
    key: &EnvelopeKey,
    key_id: u8,
    topic: &str,
    payload: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    seal_with_nonce(key, key_id, nonce, topic, payload)
}

/// Opens an envelope received on `topic`: returns its key id and payload. With `expected_key_id`, an
/// envelope of another key id is refused before any decryption.
pub fn open(
    key: &EnvelopeKey,
    expected_key_id: Option<u8>,
    topic: &str,
    envelope: &[u8],
) -> Result<(u8, Vec<u8>), EnvelopeError> {
    if envelope.len() < OVERHEAD {
        return Err(EnvelopeError::TooShort {
            have: envelope.len(),
        });
    }
    if envelope[0] != VERSION {
        return Err(EnvelopeError::Version(envelope[0]));
    }
    let key_id = envelope[1];
    if let Some(expected) = expected_key_id {
        if expected != key_id {
            return Err(EnvelopeError::KeyId {
                found: key_id,
                expected,
            });
        }
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&envelope[2..2 + NONCE_LEN]);
    let cipher = ChaCha20Poly1305::new(&key.0.into());
    let payload = cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &envelope[2 + NONCE_LEN..],
                aad: topic.as_bytes(),
            },
        )
        .map_err(|_| EnvelopeError::Tag)?;
    Ok((key_id, payload))
}

/// A forward rule's encryption: its key and key id. `Debug` shows the key id only.
#[derive(Clone)]
pub struct Sealer {
    key: EnvelopeKey,
    key_id: u8,
}

impl Sealer {
    pub fn new(key: EnvelopeKey, key_id: u8) -> Self {
        Sealer { key, key_id }
    }

    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// The envelope of `payload` for the remote `topic`.
    pub fn seal(&self, topic: &str, payload: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        seal(&self.key, self.key_id, topic, payload)
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TOPIC: &str = "sites/garden/sensorgate/kitchen";
    const PAYLOAD: &[u8] = br#"{"temperature":21.5}"#;
    const ENVELOPE: &str = "0107000102030405060708090a0bf2d97c654467c032d6f74a81fd3f3451f85e879af40c7acc5591f2483f4d294a3d49829d";

    fn key() -> EnvelopeKey {
        EnvelopeKey::from_bytes(core::array::from_fn(|i| i as u8))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `docs/formats.md`: the test vector, sealed and opened.
    #[test]
    fn design_vector_both_ways() {
        let nonce = core::array::from_fn(|i| i as u8);
        let envelope = seal_with_nonce(&key(), 7, nonce, TOPIC, PAYLOAD).unwrap();
        assert_eq!(hex(&envelope), ENVELOPE);
        assert_eq!(envelope.len(), PAYLOAD.len() + OVERHEAD);
        let (key_id, payload) = open(&key(), Some(7), TOPIC, &unhex(ENVELOPE)).unwrap();
        assert_eq!((key_id, payload.as_slice()), (7, PAYLOAD));
    }

    #[test]
    fn moved_changed_or_foreign_envelopes_are_refused() {
        let envelope = unhex(ENVELOPE);
        assert_eq!(
            open(&key(), None, "sites/garden/sensorgate/hall", &envelope),
            Err(EnvelopeError::Tag)
        );
        for at in 2..envelope.len() {
            let mut bad = envelope.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                open(&key(), None, TOPIC, &bad),
                Err(EnvelopeError::Tag),
                "byte {at}"
            );
        }
        let mut bad = envelope.clone();
        bad[1] = 8;
        assert_eq!(
            open(&key(), Some(7), TOPIC, &bad),
            Err(EnvelopeError::KeyId {
                found: 8,
                expected: 7
            })
        );
        // The key id only selects a key: it is not authenticated (the format's associated data is the
        // topic alone), so a changed id with the same key still opens, and reports the id it carries.
        assert_eq!(open(&key(), None, TOPIC, &bad).unwrap().0, 8);
        bad[0] = 2;
        assert_eq!(
            open(&key(), None, TOPIC, &bad),
            Err(EnvelopeError::Version(2))
        );
        assert_eq!(
            open(&key(), None, TOPIC, &envelope[..29]),
            Err(EnvelopeError::TooShort { have: 29 })
        );
        let other = EnvelopeKey::from_bytes([9; 32]);
        assert_eq!(
            open(&other, None, TOPIC, &envelope),
            Err(EnvelopeError::Tag)
        );
    }

    #[test]
    fn random_nonces_differ_and_the_sealer_hides_its_key() {
        let sealer = Sealer::new(key(), 3);
        let a = sealer.seal(TOPIC, PAYLOAD).unwrap();
        let b = sealer.seal(TOPIC, PAYLOAD).unwrap();
        assert_ne!(a[2..14], b[2..14]);
        assert_eq!(open(&key(), Some(3), TOPIC, &a).unwrap().1, PAYLOAD);
        assert_eq!(format!("{sealer:?}"), "Sealer { key_id: 3, .. }");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn seal_then_open_round_trips(
            key in any::<[u8; 32]>(),
            key_id in any::<u8>(),
            topic in "[a-z/]{1,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let key = EnvelopeKey::from_bytes(key);
            let envelope = seal(&key, key_id, &topic, &payload).unwrap();
            prop_assert_eq!(envelope.len(), payload.len() + OVERHEAD);
            let (id, opened) = open(&key, Some(key_id), &topic, &envelope).unwrap();
            prop_assert_eq!(id, key_id);
            prop_assert_eq!(opened, payload);
            let moved = format!("{topic}x");
            prop_assert!(open(&key, None, &moved, &envelope).is_err());
        }
    }
}
