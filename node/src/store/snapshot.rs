//! What a snapshot's data is for raftkv: no copy. The key space keeps every
//! version back to the compaction point, so the state at a revision can be
//! read at any time while that revision is pinned. A snapshot this node
//! builds, or hands to openraft to send, is therefore the pinned state
//! itself ([`StateAt`]), encoded in the snapshot data format only as it is
//! streamed to a follower or into a backup, a chunk at a time. Data that
//! arrives from elsewhere (a leader, a backup) is written to a file in the
//! data directory as it arrives ([`Incoming`]) and read back the same way
//! when it is installed ([`Received`]): memory holds a chunk, not the data.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

use super::keyspace::ReadError;
use super::leases::LeaseTable;
use super::reader::KvReader;
use super::revisions::Pin;
use super::snapshot_data::Encoder;
use crate::types::TypeConfig;

/// A snapshot of raftkv's type configuration.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// A snapshot's data.
pub enum SnapshotData {
    /// This node's state at a pinned revision.
    State(StateAt),
    /// Data in the snapshot data format, from a leader or a backup.
    Received(Received),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotData::State(state) => write!(f, "State(revision {})", state.revision()),
            SnapshotData::Received(data) => write!(f, "Received({})", data.path.display()),
        }
    }
}

/// The state at one revision with its history back to the compaction point
/// of that time: its rows stay while this is held, and the lease table
/// (which keeps no history) is the one taken with it.
pub struct StateAt {
    reader: KvReader,
    pin: Pin,
    /// The compaction point when it was taken, pinned: the history sent
    /// with the state starts there.
    history: Pin,
    /// Snapshot installs begun before it was taken: one that replaces the
    /// state since makes every read of it fail.
    epoch: u64,
    leases: LeaseTable,
    /// Members whose NOSPACE alarm was raised.
    alarms: BTreeSet<u64>,
    /// The cluster's id (0: not named yet) and version.
    cluster: (u64, crate::version::Version),
}

impl StateAt {
    pub(super) fn new(
        reader: KvReader,
        pin: Pin,
        history: Pin,
        epoch: u64,
        leases: LeaseTable,
        alarms: BTreeSet<u64>,
        cluster: (u64, crate::version::Version),
    ) -> StateAt {
        StateAt {
            reader,
            pin,
            history,
            epoch,
            leases,
            alarms,
            cluster,
        }
    }

    /// Whether it is the state of the store `reader` reads.
    pub(super) fn is_of(&self, reader: &KvReader) -> bool {
        std::sync::Arc::ptr_eq(self.reader.revisions(), reader.revisions())
    }

    /// The revision (log index) it is the state at.
    pub fn revision(&self) -> u64 {
        self.pin.revision()
    }

    /// The compaction point its history starts at.
    pub fn compacted(&self) -> u64 {
        self.history.revision()
    }

    /// Encodes it with its history in the format a follower receives
    /// (`SNAPSHOT_V6`), handing `out` pieces of about `chunk_bytes` (at
    /// least one record each) in order. One pass over the rows. Blocks:
    /// call it off the async threads.
    pub fn encode_with_history(
        &self,
        chunk_bytes: usize,
        mut out: impl FnMut(Vec<u8>) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        let alarms: Vec<u64> = self.alarms.iter().copied().collect();
        let mut encoder =
            Encoder::with_history(&self.leases, &alarms, self.cluster, self.compacted())?;
        self.reader.walk_versions_pinned(
            self.compacted(),
            self.revision(),
            self.epoch,
            |version| {
                encoder.push_version(version)?;
                if encoder.buffered() >= chunk_bytes {
                    out(encoder.take())?;
                }
                Ok(())
            },
        )?;
        let rest = encoder.take();
        if !rest.is_empty() {
            out(rest)?;
        }
        Ok(())
    }

    /// Encodes the state alone (`SNAPSHOT_V4`, a backup's format), handing
    /// `out` pieces of about
    /// `chunk_bytes` (at least one record each) in order. Blocks: call it
    /// off the async threads.
    pub fn encode(
        &self,
        chunk_bytes: usize,
        mut out: impl FnMut(Vec<u8>) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        let mut encoder = Encoder::new(&self.leases)?;
        self.reader.walk_pinned(self.revision(), self.epoch, |kv| {
            encoder.push(kv)?;
            if encoder.buffered() >= chunk_bytes {
                out(encoder.take())?;
            }
            Ok(())
        })?;
        let rest = encoder.take();
        if !rest.is_empty() {
            out(rest)?;
        }
        Ok(())
    }

    /// Encodes it into one buffer (for a backup). Blocks.
    pub fn to_vec(&self) -> Result<Vec<u8>, ReadError> {
        let mut data = Vec::new();
        self.encode(1 << 20, |chunk| {
            data.extend_from_slice(&chunk);
            Ok(())
        })?;
        Ok(data)
    }
}

/// Names staged snapshot files start with; `open` removes leftovers.
pub const INCOMING_PREFIX: &str = "snapshot-incoming-";

/// Snapshot data being received: appended to a new file in the data
/// directory, synced by [`Incoming::finish`]. Removed if dropped unfinished.
pub struct Incoming {
    file: Option<io::BufWriter<File>>,
    path: PathBuf,
    len: u64,
}

impl Incoming {
    /// A new, empty file in `dir`.
    pub fn create(dir: &Path) -> io::Result<Incoming> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{INCOMING_PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = File::options().write(true).create_new(true).open(&path)?;
        Ok(Incoming {
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            path,
            len: 0,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot file already finished"))?;
        file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and syncs the file (and its directory entry): the data is on
    /// stable storage before anything relies on it.
    pub fn finish(mut self) -> io::Result<Received> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("snapshot file already finished"))?;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(Received {
            path: std::mem::take(&mut self.path),
            len: self.len,
            keep: false,
        })
    }

    /// Writes `data` to a new file in `dir`, synced (for data already in
    /// memory: a backup being restored, or a test).
    pub fn from_bytes(dir: &Path, data: &[u8]) -> io::Result<Received> {
        let mut incoming = Incoming::create(dir)?;
        incoming.write(data)?;
        incoming.finish()
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Received snapshot data in a synced file; the file is removed when this
/// is dropped, unless [`Received::keep`] was called.
pub struct Received {
    path: PathBuf,
    len: u64,
    keep: bool,
}

impl Received {
    /// Opens a file left by an install cut short (see the state machine).
    pub(super) fn left_at(path: PathBuf) -> io::Result<Received> {
        let len = std::fs::metadata(&path)?.len();
        Ok(Received {
            path,
            len,
            keep: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of data.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it holds no data (the empty state).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader over the data, buffered.
    pub fn reader(&self) -> io::Result<io::BufReader<File>> {
        Ok(io::BufReader::with_capacity(
            1 << 20,
            File::open(&self.path)?,
        ))
    }

    /// Keeps the file when this is dropped (a crash-recovery marker names it).
    pub(super) fn keep(&mut self) {
        self.keep = true;
    }

    /// Removes the file now.
    pub(super) fn remove(mut self) -> io::Result<()> {
        self.keep = true;
        std::fs::remove_file(&self.path)
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if !self.keep && !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
