//! The size of the filesystem a directory is on, and its free space: for
//! the default quota (`quota`) and for telling a full disk (`disk_full`).

use std::path::Path;

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
