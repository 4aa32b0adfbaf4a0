//! Password hashes for `[[broker.user]]`: argon2id PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`)
//! made with a random salt, parsed once into a [`StoredHash`] and verified into memory the caller owns, so
//! the login path can reuse a few buffers instead of allocating ~19 MiB per login. This module hashes and
//! compares; it never sees connections, never logs a password and never decides who may log in.
//!
//! Cost: the argon2 crate's defaults, which are OWASP's argon2id recommendation (19 MiB of memory, 2 passes,
//! 1 lane). On a Raspberry Pi 3/4 one verification takes roughly 0.1–0.4 s and 19 MiB. A hash carries its
//! own parameters, so hashes made with other costs still verify, up to documented maxima that keep a
//! configuration from making every login buffer huge or every login slow: at most [`MAX_MEMORY_KIB`]
//! (`m`, 64 MiB), [`MAX_PASSES`] passes (`t`) and [`MAX_LANES`] lanes (`p`). [`is_valid_hash`] refuses
//! anything beyond them, and the daemon refuses to start with it.

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;

/// The most memory one verification may use, in KiB (64 MiB; the default hash uses 19 MiB).
pub const MAX_MEMORY_KIB: u32 = 64 * 1024;
/// The most passes (`t`) a hash may ask for (the default hash uses 2).
pub const MAX_PASSES: u32 = 32;
/// The most lanes (`p`) a hash may ask for (the default hash uses 1).
pub const MAX_LANES: u32 = 16;

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("empty password: give the password on stdin")]
    Empty,
    #[error("argon2: {0}")]
    Argon2(String),
}

/// Why a `password_hash` is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("not a PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {0}")]
    Malformed(String),
    #[error("not an argon2 hash ({0}); make one with `sensorgate hash-password`")]
    NotArgon2(String),
    #[error("the hash has no salt or no hash part")]
    Incomplete,
    #[error("the hash needs {kib} KiB of memory per login, more than the maximum of {max} KiB")]
    TooMuchMemory { kib: u64, max: u32 },
    #[error("the hash asks for {0} passes, more than the maximum of {MAX_PASSES}")]
    TooManyPasses(u32),
    #[error("the hash asks for {0} lanes, more than the maximum of {MAX_LANES}")]
    TooManyLanes(u32),
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

/// An argon2 PHC string, parsed and checked against the maxima: what a login verifies against.
#[derive(Debug, Clone)]
pub struct StoredHash {
    algorithm: Algorithm,
    version: Version,
    params: Params,
    salt: Vec<u8>,
    hash: Output,
}

impl StoredHash {
    /// Parses `phc`, refusing what is not argon2 or exceeds [`MAX_MEMORY_KIB`], [`MAX_PASSES`] or
    /// [`MAX_LANES`].
    pub fn parse(phc: &str) -> Result<StoredHash, HashError> {
        let parsed = PasswordHash::new(phc).map_err(|e| HashError::Malformed(e.to_string()))?;
        let algorithm = Algorithm::try_from(parsed.algorithm)
            .map_err(|_| HashError::NotArgon2(parsed.algorithm.to_string()))?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).map_err(|e| HashError::Malformed(e.to_string()))?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).map_err(|e| HashError::Malformed(e.to_string()))?;
        if params.t_cost() > MAX_PASSES {
            return Err(HashError::TooManyPasses(params.t_cost()));
        }
        if params.p_cost() > MAX_LANES {
            return Err(HashError::TooManyLanes(params.p_cost()));
        }
        let kib = params.block_count() as u64;
        if kib > u64::from(MAX_MEMORY_KIB) {
            return Err(HashError::TooMuchMemory {
                kib,
                max: MAX_MEMORY_KIB,
            });
        }
        let (Some(salt), Some(hash)) = (parsed.salt, parsed.hash) else {
            return Err(HashError::Incomplete);
        };
        let mut salt_buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut salt_buf)
            .map_err(|e| HashError::Malformed(e.to_string()))?
            .to_vec();
        let stored = StoredHash {
            algorithm,
            version,
            params,
            salt,
            hash,
        };
        // argon2 checks the salt's length only when hashing: check it here, so a bad one fails at start.
        if !(argon2::MIN_SALT_LEN..=argon2::MAX_SALT_LEN).contains(&stored.salt.len()) {
            return Err(HashError::Malformed(format!(
                "salt of {} bytes (argon2 takes {}..={})",
                stored.salt.len(),
                argon2::MIN_SALT_LEN,
                argon2::MAX_SALT_LEN
            )));
        }
        Ok(stored)
    }

    /// The decoded salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The hash value the password must produce.
    pub fn value(&self) -> &[u8] {
        self.hash.as_bytes()
    }

    /// The argon2 memory blocks (1 KiB each) a verification needs.
    pub fn blocks(&self) -> usize {
        self.params.block_count()
    }

    /// True when both hashes take the same work to verify (algorithm, version, costs, lengths).
    pub fn same_cost(&self, other: &StoredHash) -> bool {
        self.algorithm == other.algorithm
            && self.version == other.version
            && self.params == other.params
            && self.salt.len() == other.salt.len()
            && self.hash.len() == other.hash.len()
    }

    /// A hash with the same algorithm, costs and lengths, a random salt and a random hash value: verifying
    /// against it costs what verifying against `self` costs and never succeeds (but with probability
    /// 2^-(8 × hash length)). Used for unknown users, so answer times do not tell which names exist.
    pub fn decoy(&self) -> StoredHash {
        let mut rng = rand::rng();
        let mut salt = vec![0u8; self.salt.len()];
        rng.fill_bytes(&mut salt);
        let mut value = [0u8; Output::MAX_LENGTH];
        let value = &mut value[..self.hash.len()];
        rng.fill_bytes(value);
        StoredHash {
            algorithm: self.algorithm,
            version: self.version,
            params: self.params.clone(),
            salt,
            // The length came from a parsed Output, so it is within Output's bounds.
            hash: Output::new(value).unwrap_or(self.hash),
        }
    }

    /// True when `password` matches. `memory` must hold at least [`StoredHash::blocks`] blocks (a longer
    /// buffer is fine, its first blocks are used; argon2 overwrites every block it reads, so a reused
    /// buffer needs no clearing). The comparison is constant-time. CPU-heavy: call it from a blocking
    /// context.
    pub fn verify_with(&self, password: &[u8], memory: &mut [Block]) -> bool {
        let len = self.hash.len();
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = &mut out[..len];
        let context = Argon2::new(self.algorithm, self.version, self.params.clone());
        if context
            .hash_password_into_with_memory(password, &self.salt, out, memory)
            .is_err()
        {
            return false;
        }
        Output::new(out).is_ok_and(|computed| computed == self.hash)
    }
}

/// A buffer of argon2 memory for hashes of up to `blocks` blocks (1 KiB each).
pub fn memory_for(blocks: usize) -> Vec<Block> {
    vec![Block::default(); blocks]
}

/// True when `password` matches the PHC string `phc`. The final comparison is constant-time; a malformed
/// `phc`, or one beyond the maxima, never matches. Allocates its own memory: the login path uses
/// [`StoredHash::verify_with`] and reused buffers instead. Blocking: call it from `spawn_blocking`.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match StoredHash::parse(phc) {
        Ok(stored) => {
            let mut memory = memory_for(stored.blocks());
            stored.verify_with(password.as_bytes(), &mut memory)
        }
        Err(_) => false,
    }
}

/// Checks a configured `password_hash`: an argon2 PHC string within the maxima.
pub fn check_hash(phc: &str) -> Result<(), HashError> {
    StoredHash::parse(phc).map(|_| ())
}

/// True when `phc` parses as an argon2 PHC string within the maxima (for configuration checks).
pub fn is_valid_hash(phc: &str) -> bool {
    check_hash(phc).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_with(m: u32, t: u32, p: u32, password: &str) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        let salt = SaltString::encode_b64(b"sensorgate-tests").unwrap();
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

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
        assert!(matches!(
            check_hash("$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"),
            Err(HashError::NotArgon2(_) | HashError::Malformed(_))
        ));
    }

    #[test]
    fn one_reused_buffer_verifies_hashes_of_different_costs() {
        let small = StoredHash::parse(&hash_with(64, 1, 1, "a")).unwrap();
        let other = StoredHash::parse(&hash_with(256, 2, 2, "b")).unwrap();
        let mut memory = memory_for(small.blocks().max(other.blocks()));
        for _ in 0..2 {
            assert!(small.verify_with(b"a", &mut memory));
            assert!(!small.verify_with(b"b", &mut memory));
            assert!(other.verify_with(b"b", &mut memory));
            assert!(!other.verify_with(b"a", &mut memory));
        }
        assert!(
            !other.verify_with(b"b", &mut memory_for(other.blocks() - 1)),
            "too little memory never matches"
        );
        assert!(!small.same_cost(&other));
    }

    #[test]
    fn a_decoy_costs_the_same_and_never_matches() {
        let stored = StoredHash::parse(&hash_with(64, 1, 1, "a")).unwrap();
        let decoy = stored.decoy();
        assert!(decoy.same_cost(&stored));
        let mut memory = memory_for(stored.blocks());
        assert!(!decoy.verify_with(b"a", &mut memory));
        assert!(stored.verify_with(b"a", &mut memory));
    }

    #[test]
    fn hashes_beyond_the_maxima_are_refused() {
        // Parsed, never hashed: these strings need not verify anything.
        let phc = |m: u32, t: u32, p: u32| {
            format!("$argon2id$v=19$m={m},t={t},p={p}$c2VuZ29yZ2F0ZS10ZXN0cw$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        };
        assert_eq!(check_hash(&phc(MAX_MEMORY_KIB, 1, 1)), Ok(()));
        assert_eq!(
            check_hash(&phc(MAX_MEMORY_KIB + 8, 1, 1)),
            Err(HashError::TooMuchMemory {
                kib: u64::from(MAX_MEMORY_KIB) + 8,
                max: MAX_MEMORY_KIB
            })
        );
        assert!(matches!(
            check_hash(&phc(u32::MAX, 1, 1)),
            Err(HashError::TooMuchMemory { .. })
        ));
        assert_eq!(check_hash(&phc(128, 1, MAX_LANES)), Ok(()));
        assert_eq!(
            check_hash(&phc(256, 1, MAX_LANES + 1)),
            Err(HashError::TooManyLanes(MAX_LANES + 1))
        );
        assert_eq!(check_hash(&phc(64, MAX_PASSES, 1)), Ok(()));
        assert_eq!(
            check_hash(&phc(64, MAX_PASSES + 1, 1)),
            Err(HashError::TooManyPasses(MAX_PASSES + 1))
        );
        assert!(matches!(
            check_hash("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            Err(HashError::Malformed(_))
        ), "a 4-byte salt");
    }
}
