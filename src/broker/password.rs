//! Password hashes for `[[broker.user]]`: argon2id PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`)
//! made with a random salt, and their verification. This module hashes and compares; it never sees
//! connections, never logs a password and never decides who may log in.
//!
//! Cost: the argon2 crate's defaults, which are OWASP's argon2id recommendation (19 MiB of memory, 2 passes,
//! 1 lane). On a Raspberry Pi 3/4 one verification takes roughly 0.1–0.4 s and 19 MiB; the login path runs
//! it on `spawn_blocking` behind a small semaphore so a burst of logins cannot exhaust memory. A hash
//! carries its own parameters, so hashes made with other costs still verify.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("empty password: give the password on stdin")]
    Empty,
    #[error("argon2: {0}")]
    Argon2(String),
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Hashes `password` with argon2id and a random 16-byte salt, returning the PHC string to put in
/// `password_hash`. CPU- and memory-heavy (see the module docs): call it from a blocking context.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    let mut salt_bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut salt_bytes);
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Argon2(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Argon2(e.to_string()))
}

/// True when `password` matches the PHC string `phc`. The final comparison is constant-time (done by the
/// argon2 crate); a malformed `phc` never matches. Blocking: call it from `spawn_blocking`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// True when `phc` parses as an argon2 PHC string (for configuration checks).
pub fn is_valid_hash(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| hash.algorithm.as_str().starts_with("argon2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_wrong_password_does_not() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(is_valid_hash(&phc));
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct hors", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn salts_differ_between_hashes() {
        assert_ne!(hash_password("a").unwrap(), hash_password("a").unwrap());
    }

    #[test]
    fn empty_password_and_malformed_hash_are_refused() {
        assert!(matches!(hash_password(""), Err(PasswordError::Empty)));
        assert!(!verify_password("x", "not a hash"));
        assert!(!verify_password(
            "x",
            "$argon2id$v=19$m=19456,t=2,p=1$broken"
        ));
        assert!(!is_valid_hash("plaintext"));
    }
}
