//! AES-128-CCM with a 4-byte MIC as the BLE sensor formats use it: BTHome v2 with a 13-byte nonce and no
//! associated data, the pvvx and atc1441 encrypted formats with an 11-byte nonce and the associated data
//! `0x11`. Opening only (the gateway never sends adverts); the key type is the project's AES-128 frame key.

use aes::Aes128;
use ccm::aead::generic_array::{ArrayLength, GenericArray};
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::U4;
use ccm::{Ccm, NonceSize};

use crate::crypto::keys::FrameKey;

pub(crate) use ccm::consts::{U11, U13};

/// Bytes of the MIC (the CCM tag).
pub(crate) const MIC_LEN: usize = 4;

/// Decrypts `ciphertext` and checks `mic`; `None` when the MIC does not match (nothing of an
/// unauthenticated advert is returned).
pub(crate) fn open<N: NonceSize + ArrayLength<u8>>(
    key: &FrameKey,
    nonce: &GenericArray<u8, N>,
    aad: &[u8],
    ciphertext: &[u8],
    mic: &[u8],
) -> Option<Vec<u8>> {
    let tag = <[u8; MIC_LEN]>::try_from(mic).ok()?;
    let mut plaintext = ciphertext.to_vec();
    Ccm::<Aes128, U4, N>::new(&key.0.into())
        .decrypt_in_place_detached(nonce, aad, &mut plaintext, &tag.into())
        .ok()?;
    Some(plaintext)
}
