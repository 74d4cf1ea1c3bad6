//! The size of the filesystem a directory is on, and its free space: for
//! the default quota (`quota`) and for telling a full disk (`disk_full`),
//! with whether a write has failed for want of room.

use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;

/// Bytes of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Its whole size.
    pub total: u64,
    /// What an unprivileged process may still write.
    pub available: u64,
}

/// The filesystem holding `dir` (or its nearest existing parent); `None`
/// if it cannot be asked.
#[allow(unsafe_code)]
pub fn space(dir: &Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let existing = dir.ancestors().find(|d| d.exists())?;
    let path = std::ffi::CString::new(existing.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value of it.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some(Space {
        total: (stat.f_blocks as u64).saturating_mul(block),
        available: (stat.f_bavail as u64).saturating_mul(block),
    })
}

/// Set when a write failed for want of room (ENOSPC, EDQUOT), wherever
/// the store saw it; taken by the full-disk loop (`server::disk_full`).
/// The free space alone cannot tell: by the time a failed node has stopped,
/// room may be back, and the failure would pass for some other I/O error.
static OUT_OF_ROOM: AtomicBool = AtomicBool::new(false);

/// Notes `error` if it says the filesystem is full (itself, or the sled or
/// I/O error it wraps).
pub fn note_write_error(error: &io::Error) {
    if is_out_of_room(error) {
        OUT_OF_ROOM.store(true, Ordering::SeqCst);
    }
}

/// Whether a write failed for want of room since the last call; clears it.
pub fn take_out_of_room() -> bool {
    OUT_OF_ROOM.swap(false, Ordering::SeqCst)
}

fn is_out_of_room(error: &io::Error) -> bool {
    if matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        return true;
    }
    // The store wraps sled's errors (`io::Error::other`), and sled its own.
    match error.get_ref() {
        Some(inner) => match inner.downcast_ref::<sled::Error>() {
            Some(sled::Error::Io(io)) => is_out_of_room(io),
            _ => inner
                .downcast_ref::<io::Error>()
                .is_some_and(is_out_of_room),
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_filesystem_is_told_apart_from_other_failures() {
        let full = || io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_out_of_room(&full()));
        assert!(is_out_of_room(&io::Error::from_raw_os_error(libc::EDQUOT)));
        // As the store passes sled's flush failure on.
        assert!(is_out_of_room(&io::Error::other(sled::Error::Io(full()))));
        assert!(!is_out_of_room(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!is_out_of_room(&io::Error::other(
            sled::Error::Unsupported("x".into())
        )));
    }
}
