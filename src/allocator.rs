//! The C allocator's tuning: its arenas, and giving freed memory back to the system.
//!
//! glibc gives every thread that meets a locked arena a new one (up to eight per core), and each arena
//! keeps its own freed pages: with the async runtime's workers taking turns on the same data, the daemon
//! ended up holding several half-empty arenas. With one arena the resident memory after 45 s at 1,000
//! readings/s from 1,000 devices was 14.8 MiB instead of 16.3 MiB (the heap itself holds about 4 MiB:
//! valgrind's massif); the end-to-end throughput did not drop measurably (`bench/run.sh --only e2e`).
//!
//! glibc also keeps what is freed in the middle of its heap: only free room at the heap's top is given
//! back, and only above a threshold that grows with the largest block freed. A burst (thousands of new
//! devices announced at once, a write of the whole retained state) leaves its room resident for the
//! daemon's life. [`give_back_free_pages`] returns every whole free page; the retained log's writer
//! calls it after each write (`crate::broker::snapshotter`). Other C libraries (musl) are left alone.

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

/// Gives the system back every whole page the C allocator holds free, wherever it is in the heap
/// (glibc's `malloc_trim(0)`, which walks every arena's free lists under their locks: call it on a
/// blocking thread, after a burst, not per message). Returns whether any memory was given back
/// (always `false` where there is no glibc).
pub fn give_back_free_pages() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases pages of free chunks; live allocations are not touched.
        unsafe { libc::malloc_trim(0) == 1 }
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

    /// Anonymous resident memory of this process, KiB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("RssAnon:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// 32 MiB of small blocks, one in 32 kept: what is freed lies between live blocks, where glibc's
    /// own trimming at the heap's top never reaches it.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn free_pages_between_live_blocks_are_given_back() {
        const BLOCK: usize = 2048;
        const BLOCKS: usize = 32 * 1024 * 1024 / BLOCK;
        let mut blocks: Vec<Box<[u8]>> = (0..BLOCKS)
            .map(|i| vec![(i % 251) as u8 + 1; BLOCK].into_boxed_slice())
            .collect();
        let kept: Vec<Box<[u8]>> = blocks.drain(..).step_by(32).collect();
        drop(blocks);
        let before = rss_anon_kib();
        assert!(super::give_back_free_pages(), "nothing was given back");
        let after = rss_anon_kib();
        assert!(
            before >= after + 16 * 1024,
            "resident anonymous memory {before} KiB before, {after} KiB after: under 16 MiB given back"
        );
        // The kept blocks are intact.
        for (n, block) in kept.iter().enumerate() {
            assert!(block.iter().all(|&b| b == ((n * 32) % 251) as u8 + 1));
        }
    }
}
