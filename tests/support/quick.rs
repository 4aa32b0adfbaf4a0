//! The quick run (`scripts/test --quick`, which sets `SENSORGATE_TEST_QUICK=1`): tests marked
//! `#[ignore = "slow: ..."]` or `"volume: ..."` are left out by cargo itself, and the property tests,
//! which cannot be left out without losing their coverage, run a tenth of their cases ([`cases`]).
//! A plain `cargo test` runs the full counts.

/// The variable `scripts/test --quick` sets.
pub const QUICK: &str = "SENSORGATE_TEST_QUICK";

/// Whether this is the quick run.
pub fn is_quick() -> bool {
    std::env::var(QUICK).as_deref() == Ok("1")
}

/// How many cases a property test runs: `full`, or a tenth of it (at least 32) in the quick run.
pub fn cases(full: u32) -> u32 {
    scaled(full, is_quick())
}

fn scaled(full: u32, quick: bool) -> u32 {
    if quick {
        (full / 10).max(32).min(full)
    } else {
        full
    }
}

#[cfg(test)]
mod tests {
    use super::scaled;

    #[test]
    fn a_tenth_but_never_fewer_than_32_nor_more_than_asked() {
        assert_eq!(scaled(2_000, true), 200);
        assert_eq!(scaled(100, true), 32);
        assert_eq!(scaled(10, true), 10);
        assert_eq!(scaled(2_000, false), 2_000);
    }
}
