//! Which memory allocator the node uses, and how it asks it to behave.
//!
//! glibc builds on x86_64 and aarch64 allocate through jemalloc. Under
//! write load glibc's allocator was a fifth of a node's CPU (`_int_malloc`,
//! `_int_free`, `unlink_chunk`, `malloc_consolidate`: 16-20 % of the
//! leader's samples at 64 writing clients), spread over every layer that
//! allocates per call (HTTP/2 and gRPC, openraft, sled's node copies).
//! jemalloc, with the settings below, took about a quarter off the CPU
//! each write costs (see the commit that made it the allocator). Other
//! builds (the musl device builds) keep their C library's allocator, tuned
//! below where it is glibc's.

/// The allocator of glibc builds on x86_64 and aarch64.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts (its `malloc_conf`; the
/// `_RJEM_MALLOC_CONF` environment variable can override them). Two
/// arenas instead of four per core, as glibc is held to below: every
/// thread's free memory otherwise stays in an arena of its own. Unused
/// pages go back to the system a second after they are freed, not ten, and
/// at once rather than in a second pass (`muzzy`). Thread caches hold
/// blocks up to 4 KiB. Measured on a 3-node cluster: 14.5-14.9 MB per node
/// idle against glibc's 12.8-13.8 MB, 58.8-59.8 MB right after 10 s of 64
/// writing clients against 51.0-56.0 MB, 53.7-55.0 MB 5 s later.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
#[allow(unsafe_code, non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8; 63] =
    b"narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0,tcache_max:4096\0";

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
