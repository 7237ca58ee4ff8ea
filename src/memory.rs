//! The allocator's settings for a long-running agent. glibc's defaults suit a busy server: an
//! arena per thread that allocates (up to 8 per core) and freed memory kept for reuse. The butler's
//! workers mostly wait, then now and then build something big and short-lived (the dashboard's
//! 1,000-row page, a 400 KB JSON snapshot, a rendered config): with the defaults, what those left
//! behind stayed in the worker's RSS. Measured on the dashboard worker after its benchmark
//! (`cargo bench --bench dashboard`, see the README): heap and stacks 9.5 MB with the defaults.

/// Two arenas, big blocks straight from and back to the kernel, and the heap's free top returned.
/// Call first thing in `main`, before any thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const BIG_BLOCK: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only sets glibc's tunables; it is called before any other thread
        // exists, and a refused setting (return 0) leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
            libc::mallopt(libc::M_MMAP_THRESHOLD, BIG_BLOCK);
            libc::mallopt(libc::M_TRIM_THRESHOLD, BIG_BLOCK);
        }
    }
}
