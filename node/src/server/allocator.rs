//! How the node asks the C allocator to behave.

/// Makes glibc return freed blocks of 128 KiB and more to the system at
/// once, and keep its free memory in two arenas rather than one per busy
/// thread.
///
/// glibc raises its mmap threshold every time a large block is freed, so
/// after the first few multi-megabyte frees (old snapshot values, large
/// AppendEntries batches) it serves such blocks from its heap and keeps them
/// there once freed: under a 256-client write load a node held 100-120 MB of
/// free heap (RSS 140-250 MB, 70 MB after `malloc_trim`). A fixed threshold
/// (glibc's starting value) stops the drift.
///
/// glibc also gives each thread that meets a locked arena a new one, up to
/// eight per core, and free memory stays in the arena it was freed to. The
/// node's threads (tokio's workers, the log's sync thread, sled's) all
/// allocate, so after a write load each arena held its own free memory: two
/// arenas took 8 MB off a node's resident memory after 64 writing clients
/// (64 → 56 MB), at the same write rate.
///
/// Other C libraries (musl on device builds) have one heap and map large
/// blocks on their own.
///
/// Call it first in `main`, before any thread starts. Returns whether the
/// C library took both settings.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_large_blocks_to_the_system() -> bool {
    const THRESHOLD: libc::c_int = 128 * 1024;
    const ARENAS: libc::c_int = 2;
    // SAFETY: mallopt only sets an allocator parameter; it is called once at
    // start-up, before any other thread runs, and a refusal (return value
    // 0) leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) != 0
            && libc::mallopt(libc::M_ARENA_MAX, ARENAS) != 0
    }
}

/// Nothing to do outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_large_blocks_to_the_system() -> bool {
    true
}
