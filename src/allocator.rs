//! The C allocator's arenas. glibc gives every thread that meets a locked arena a new one (up to eight
//! per core), and each arena keeps its own freed pages: with the async runtime's workers taking turns on
//! the same data, the daemon ended up holding several half-empty arenas. With one arena the resident
//! memory after 45 s at 1,000 readings/s from 1,000 devices was 14.8 MiB instead of 16.3 MiB (the heap
//! itself holds about 4 MiB: valgrind's massif); the end-to-end throughput did not drop measurably
//! (`bench/run.sh --only e2e`). Other C libraries (musl) are left alone.

/// Limits glibc to one malloc arena; call it first in `main`, before any thread starts. A
/// `MALLOC_ARENA_MAX` in the environment is the operator's choice and wins. Returns whether the C
/// library took the setting (always `false` where there is no glibc).
pub fn use_one_malloc_arena() -> bool {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's tuning; M_ARENA_MAX takes any positive count.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_arena_limit() {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            assert!(super::use_one_malloc_arena());
        }
    }
}
