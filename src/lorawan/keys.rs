//! LoRaWAN 1.0.x session keys from a join: NwkSKey = aes128_encrypt(AppKey, 0x01 | JoinNonce | NetID |
//! DevNonce | pad16), AppSKey the same with 0x02. Used at a join and again at start for a stored OTAA
//! session (only the derivation's inputs are stored, never the keys).

use aes::cipher::{BlockEncrypt, KeyInit};

use super::session::JoinInputs;

/// (NwkSKey, AppSKey) of a join.
pub fn derive_session_keys(app_key: &[u8; 16], inputs: &JoinInputs) -> ([u8; 16], [u8; 16]) {
    let cipher = aes::Aes128::new(&(*app_key).into());
    let derive = |first: u8| {
        let mut block = [0u8; 16];
        block[0] = first;
        block[1..4].copy_from_slice(&inputs.join_nonce.to_le_bytes()[..3]);
        block[4..7].copy_from_slice(&inputs.net_id.to_le_bytes()[..3]);
        block[7..9].copy_from_slice(&inputs.dev_nonce.to_le_bytes());
        let mut block = block.into();
        cipher.encrypt_block(&mut block);
        let out: [u8; 16] = block.into();
        out
    };
    (derive(0x01), derive(0x02))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lorawan crate's published example: AppKey 00112233..ff, the encrypted JoinAccept
    /// 20493eeb51fba2116f810edb3742975142, DevNonce cc dd; the crate's own derivation of the same join
    /// gives the same keys.
    #[test]
    fn keys_match_the_lorawan_crate_derivation() {
        let app_key = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ];
        let data = vec![
            0x20, 0x49, 0x3e, 0xeb, 0x51, 0xfb, 0xa2, 0x11, 0x6f, 0x81, 0x0e, 0xdb, 0x37, 0x42,
            0x97, 0x51, 0x42,
        ];
        let key = lorawan::keys::AppKey::from(app_key);
        let accept = lorawan::parser::DecryptedJoinAcceptPayload::new(data, &key).unwrap();
        let nonce = [0xcc, 0xdd];
        let dev_nonce = lorawan::parser::DevNonce::new(&nonce[..]).unwrap();
        let nwk = accept.derive_newskey(&dev_nonce, &key);
        let app = accept.derive_appskey(&dev_nonce, &key);
        let (app_nonce, net_id) = (accept.app_nonce(), accept.net_id());
        let (app_nonce, net_id) = (app_nonce.as_ref(), net_id.as_ref());
        let inputs = JoinInputs {
            join_nonce: u32::from_le_bytes([app_nonce[0], app_nonce[1], app_nonce[2], 0]),
            net_id: u32::from_le_bytes([net_id[0], net_id[1], net_id[2], 0]),
            dev_nonce: u16::from_le_bytes(nonce),
        };
        let (ours_nwk, ours_app) = derive_session_keys(&app_key, &inputs);
        assert_eq!(&ours_nwk, nwk.inner().0.as_slice());
        assert_eq!(&ours_app, app.inner().0.as_slice());
        assert_ne!(ours_nwk, ours_app);
    }
}
