//! The JoinAccept of LoRaWAN 1.0.x, built and encrypted:
//!
//! ```text
//! plaintext = JoinNonce(3) | NetID(3) | DevAddr(4) | DLSettings(1) | RxDelay(1) | [CFList(16)]
//! MIC       = aes128_cmac(AppKey, MHDR | plaintext)[0..4]
//! PHY       = MHDR(0x20) | aes128_decrypt(AppKey, plaintext | MIC)   (ECB, the device encrypts)
//! ```
//!
//! Built here rather than with the lorawan crate's `JoinAcceptCreator`: in lorawan 0.9 its CFList is
//! written but left out of the MIC and the encryption (the creator's CFList flag is never set), which
//! every EU868 device would refuse. The crate parses and checks what this builds (see the tests).

use aes::cipher::{BlockDecrypt, KeyInit};
use cmac::{Cmac, Mac};

/// The fields of a JoinAccept (multi-byte fields as numbers; written little-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAccept {
    pub join_nonce: u32,
    pub net_id: u32,
    pub dev_addr: u32,
    /// RX1DROffset (bits 6..4) and RX2 data rate (bits 3..0).
    pub dl_settings: u8,
    /// RX1 delay in seconds (1..=15).
    pub rx_delay: u8,
    /// Type-0 CFList: up to 5 frequencies in Hz.
    pub cf_list: Vec<u32>,
}

impl JoinAccept {
    /// The encrypted PHYPayload (17 bytes, or 33 with a CFList).
    pub fn encrypt(&self, app_key: &[u8; 16]) -> Vec<u8> {
        let mut phy = vec![0x20];
        phy.extend_from_slice(&self.join_nonce.to_le_bytes()[..3]);
        phy.extend_from_slice(&self.net_id.to_le_bytes()[..3]);
        phy.extend_from_slice(&self.dev_addr.to_le_bytes());
        phy.push(self.dl_settings);
        phy.push(self.rx_delay);
        if !self.cf_list.is_empty() {
            let mut list = [0u8; 16];
            for (i, hz) in self.cf_list.iter().take(5).enumerate() {
                list[i * 3..i * 3 + 3].copy_from_slice(&(hz / 100).to_le_bytes()[..3]);
            }
            // list[15] = CFListType 0: frequencies.
            phy.extend_from_slice(&list);
        }
        let mut mac = <Cmac<aes::Aes128> as KeyInit>::new(&(*app_key).into());
        mac.update(&phy);
        let mic = mac.finalize().into_bytes();
        phy.extend_from_slice(&mic[..4]);
        let cipher = aes::Aes128::new(&(*app_key).into());
        for block in phy[1..].chunks_exact_mut(16) {
            cipher.decrypt_block(block.into());
        }
        phy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lorawan::keys::AppKey;
    use lorawan::parser::{CfList, EncryptedJoinAcceptPayload};

    fn accept(cf_list: Vec<u32>) -> JoinAccept {
        JoinAccept {
            join_nonce: 0x00ab_cdef,
            net_id: 0x13,
            dev_addr: 0x2601_1bda,
            dl_settings: 0x00,
            rx_delay: 1,
            cf_list,
        }
    }

    #[test]
    fn the_lorawan_crate_decrypts_and_checks_what_is_built_with_and_without_a_cf_list() {
        let key = [7u8; 16];
        for cf_list in [
            vec![],
            vec![
                867_100_000,
                867_300_000,
                867_500_000,
                867_700_000,
                867_900_000,
            ],
        ] {
            let phy = accept(cf_list.clone()).encrypt(&key);
            assert_eq!(phy.len(), if cf_list.is_empty() { 17 } else { 33 });
            let app_key = AppKey::from(key);
            let decrypted = EncryptedJoinAcceptPayload::new(phy)
                .unwrap()
                .decrypt(&app_key);
            assert!(decrypted.validate_mic(&app_key), "MIC of {cf_list:?}");
            assert_eq!(decrypted.dev_addr().as_ref(), &0x2601_1bdau32.to_le_bytes());
            assert_eq!(decrypted.app_nonce().as_ref(), &[0xef, 0xcd, 0xab]);
            assert_eq!(decrypted.rx_delay(), 1);
            match decrypted.c_f_list() {
                Some(CfList::DynamicChannel(frequencies)) => {
                    let hz: Vec<u32> = frequencies.iter().map(|f| f.value()).collect();
                    assert_eq!(hz, cf_list);
                }
                None => assert!(cf_list.is_empty()),
                Some(other) => panic!("{other:?}"),
            }
        }
    }
}
