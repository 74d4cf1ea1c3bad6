//! How the node asks the C allocator to behave.

/// Makes glibc return freed blocks of 128 KiB and more to the system at once.
///
/// glibc raises its mmap threshold every time a large block is freed, so
/// after the first few multi-megabyte frees (old snapshot values, large
/// AppendEntries batches) it serves such blocks from its heap and keeps them
/// there once freed: under a 256-client write load a node held 100-120 MB of
/// free heap (RSS 140-250 MB, 70 MB after `malloc_trim`). A fixed threshold
/// (glibc's starting value) stops the drift. Other C libraries (musl on
/// device builds) already map large blocks on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn return_large_blocks_to_the_system() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only sets an allocator parameter; it is called once at
    // start-up, and a refusal (return value 0) leaves the default in place.
    let accepted = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
    if accepted == 0 {
        tracing::warn!(
            "the C library refused a fixed mmap threshold; memory may stay high after load"
        );
    }
}

/// Nothing to do outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_large_blocks_to_the_system() {}
