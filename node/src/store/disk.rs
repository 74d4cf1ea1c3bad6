//! Making sled's writes durable.
//!
//! sled 0.34's `flush` only writes its log buffers to the file (the vendored
//! sled dropped the `sync_file_range` after a flush's own buffer, which
//! waited for the drive to take the data but not for its cache);
//! `flush_and_sync` adds the `fdatasync` that makes them durable, and that
//! sled waits for before it reuses the room of data rewritten elsewhere
//! (see `vendor/sled/PATCHED.md`, change 12). Values too large to live inline (over ~128 KiB) go to separate
//! files under `blobs/` that sled never syncs. [`Disk::sync`] covers both:
//! `flush_and_sync`, then an `fdatasync` of every blob file written since
//! the previous sync, and of the blob directory.

use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Mutex;

/// The database plus what is needed to sync it.
#[derive(Debug)]
pub struct Disk {
    db: sled::Db,
    /// The data directory.
    dir: PathBuf,
    /// `<dir>/blobs`, where sled puts large values.
    blob_dir: PathBuf,
    /// What the syncs know of the blob files; serialises syncs.
    blobs: Mutex<BlobsSynced>,
    /// When the sync in flight began (the oldest, if several): a sync that
    /// never ends is a hung disk (see `hung_disk`).
    syncing_since: Mutex<Option<std::time::Instant>>,
}

/// What the syncs know of sled's blob files.
#[derive(Debug, Default)]
struct BlobsSynced {
    /// Highest blob file name (a log sequence number) already synced.
    newest_synced: u64,
    /// `sled::blobs_written` at the last complete listing of the blob
    /// directory (`None`: never listed): the listing, a directory read per
    /// sync, is skipped while no blob has been written since.
    listed_at: Option<u64>,
}

impl Disk {
    /// Wraps an open database living in `dir`, and syncs `dir` itself so a
    /// freshly created database file survives a crash.
    pub fn new(db: sled::Db, dir: &Path) -> io::Result<Disk> {
        File::open(dir)?.sync_all()?;
        Ok(Disk {
            db,
            dir: dir.to_path_buf(),
            blob_dir: dir.join("blobs"),
            blobs: Mutex::default(),
            syncing_since: Mutex::new(None),
        })
    }

    /// Blocks until everything written to any tree so far is on stable storage.
    ///
    /// Expensive (one or more `fdatasync`s): callers batch, one sync per group
    /// of writes, never one per entry.
    pub fn sync(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        self.syncing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(started);
        let result = self.sync_all_written();
        *self.syncing_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        crate::metrics::observe_since(&crate::metrics::global().fsync, started);
        // A full disk is waited out, not fatal; the room may be back before
        // the node has stopped and looks (see `server::disk_full`).
        result.inspect_err(crate::disk::filesystem::note_write_error)
    }

    fn sync_all_written(&self) -> io::Result<()> {
        let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        self.db.flush_and_sync().map_err(io_error)?;
        // Read after the flush: a blob that anything just flushed points at
        // was written, and counted, before the flush began. Unchanged since
        // the last complete listing: no blob file is new, skip the listing.
        let blobs_written = sled::blobs_written();
        if blobs.listed_at == Some(blobs_written) {
            return Ok(());
        }
        let synced_blob = blobs.newest_synced;
        let mut newest = synced_blob;
        let mut any_new = false;
        match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    let Some(lsn) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if lsn > synced_blob {
                        // A blob removed by sled's garbage collection meanwhile needs no sync.
                        match File::open(entry.path()) {
                            Ok(f) => f.sync_data()?,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                            Err(e) => return Err(e),
                        }
                        newest = newest.max(lsn);
                        any_new = true;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if any_new {
            File::open(&self.blob_dir)?.sync_all()?;
            blobs.newest_synced = newest;
        }
        blobs.listed_at = Some(blobs_written);
        Ok(())
    }

    /// How long the sync in flight has run, if one is.
    pub fn sync_running_for(&self) -> Option<std::time::Duration> {
        self.syncing_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|since| since.elapsed())
    }

    /// The database handle.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }
}

/// `error` (sled's, mostly) as the `io::Error` the store returns, noted if
/// it says the filesystem is full. Every error the store passes on goes
/// through here or [`Disk::sync`]: sled keeps its first I/O error and
/// returns it from every later write, so the failure Raft stops on may come
/// from any of them, and only here is its kind still known (openraft keeps
/// a storage error's text, not its source).
pub(crate) fn io_error<E>(error: E) -> io::Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let error = io::Error::other(error);
    crate::disk::filesystem::note_write_error(&error);
    error
}
