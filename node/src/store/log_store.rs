//! The Raft log and vote on sled.
//!
//! Layout: the log is cut into segments of 16,384 entries, one sled tree
//! each (`log-<segment>`), mapping the big-endian log index to the encoded
//! entry (so key order is log order); tree `raft_meta` holds `vote`,
//! `committed` and `last_purged`. Purging drops whole segment trees: sled 0.34
//! keeps memory for every key removed one by one from the front of a tree (a
//! queue-like workload it handles badly: RSS doubled under load), while a
//! dropped tree is freed at once. Entries of a partly purged segment stay on
//! disk until the whole segment goes, hidden by `last_purged`. The newest
//! entries are also kept in memory ([`RecentEntries`]): they are read back
//! at once, for replication and to be applied.
//!
//! Durability rules (what is on disk when a method returns):
//! - `save_vote`: the vote is synced before it returns, in a file of its
//!   own (see `vote`), so it never waits behind the log's flush.
//! - `append`: entries are in sled (readable) when it returns and synced
//!   before `callback` fires. A dedicated sync thread groups appends: one
//!   `Disk::sync` covers every append queued behind the one in flight.
//! - `truncate_after`, `purge`, `save_committed`: not synced. sled persists
//!   operations in the order they were made, so the sync that makes a later
//!   append durable also persists an earlier truncation; a lost purge only
//!   leaves entries that `last_purged` (written first) already hides; a lost
//!   `committed` is re-learned from the leader.

mod raft;

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::storage::IOFlushed;

use super::disk::Disk;
use super::recent::RecentEntries;
use super::size::pair_bytes;
use super::size::StoreSize;
use super::vote::VoteFile;
use crate::codec::decode;
use crate::codec::encode;
use crate::store::disk::io_error;
use crate::types::LogId;
use crate::types::TypeConfig;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// log2 of the number of entries per segment tree.
const SEGMENT_BITS: u32 = 14;
const SEGMENT_PREFIX: &str = "log-";

fn segment_of(index: u64) -> u64 {
    index >> SEGMENT_BITS
}

fn segment_name(segment: u64) -> String {
    format!("{SEGMENT_PREFIX}{segment:016x}")
}

/// Raft log storage; clones share the same trees (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// Open segment trees by segment number: index (big-endian u64) → encoded [`Entry`].
    segments: Mutex<BTreeMap<u64, sled::Tree>>,
    /// vote, committed and last purged log id.
    meta: sled::Tree,
    /// `last_purged` as stored in `meta`, kept in memory: every read of
    /// entries (the replication hot path) needs it.
    last_purged: Mutex<Option<LogId>>,
    disk: Arc<Disk>,
    /// The vote, in a file of its own.
    vote: VoteFile,
    /// A copy of the log's newest entries, which are read back at once.
    recent: Mutex<RecentEntries>,
    /// Appends waiting for a sync, served in order by the sync thread.
    pending_syncs: mpsc::Sender<IOFlushed<TypeConfig>>,
    /// Counted bytes of each entry not purged, in log order (see `size`),
    /// and of them all.
    entry_bytes: Mutex<EntryBytes>,
    size: Arc<StoreSize>,
}

/// The counted bytes of the unpurged entries, by index: a few bytes per
/// entry in memory, so a purge subtracts without reading entries back.
#[derive(Default)]
struct EntryBytes {
    /// The index of `bytes[0]`.
    first: u64,
    bytes: std::collections::VecDeque<u32>,
}

impl EntryBytes {
    /// Records `bytes` for entry `index`, dropping what was recorded at or
    /// after it (an overwrite); returns the bytes dropped.
    fn set(&mut self, index: u64, bytes: u64) -> u64 {
        let dropped = self.truncate_from(index);
        if self.bytes.is_empty() {
            self.first = index;
        }
        if self.first + self.bytes.len() as u64 == index {
            self.bytes
                .push_back(u32::try_from(bytes).unwrap_or(u32::MAX));
        }
        dropped
    }

    /// Forgets entries from `index` on; returns their bytes.
    fn truncate_from(&mut self, index: u64) -> u64 {
        let mut dropped = 0;
        while !self.bytes.is_empty() && self.first + self.bytes.len() as u64 > index {
            dropped += u64::from(self.bytes.pop_back().unwrap_or(0));
        }
        dropped
    }

    /// Forgets entries up to `index`; returns their bytes.
    fn purge_upto(&mut self, index: u64) -> u64 {
        let mut dropped = 0;
        while !self.bytes.is_empty() && self.first <= index {
            dropped += u64::from(self.bytes.pop_front().unwrap_or(0));
            self.first += 1;
        }
        dropped
    }
}

impl LogStore {
    /// Opens the log trees of `db` and starts the sync thread; the log's
    /// bytes are counted in `size` (one read of the log here).
    pub fn open(db: &sled::Db, disk: Arc<Disk>, size: Arc<StoreSize>) -> io::Result<LogStore> {
        let mut segments = BTreeMap::new();
        for name in db.tree_names() {
            let Some(number) = std::str::from_utf8(&name)
                .ok()
                .and_then(|n| n.strip_prefix(SEGMENT_PREFIX))
            else {
                continue;
            };
            let number = u64::from_str_radix(number, 16).map_err(io_error)?;
            segments.insert(number, db.open_tree(&name).map_err(io_error)?);
        }
        let meta = db.open_tree("raft_meta").map_err(io_error)?;
        let last_purged = match meta.get(LAST_PURGED).map_err(io_error)? {
            Some(bytes) => Some(decode(&bytes)?),
            None => None,
        };
        let (pending_syncs, queue) = mpsc::channel();
        let sync_disk = disk.clone();
        std::thread::Builder::new()
            .name("raftkv-log-sync".into())
            .spawn(move || run_sync_thread(&sync_disk, &queue))?;
        let first_kept = last_purged.map_or(0, |l: LogId| l.index() + 1);
        let mut entry_bytes = EntryBytes::default();
        for tree in segments.values() {
            for item in tree.range(index_key(first_kept)..) {
                let (key, value) = item.map_err(io_error)?;
                let index = u64::from_be_bytes(key.as_ref().try_into().map_err(io_error)?);
                let bytes = pair_bytes(&key, &value);
                size.change_log(bytes, entry_bytes.set(index, bytes));
            }
        }
        let segments = Mutex::new(segments);
        Ok(LogStore {
            inner: Arc::new(Inner {
                db: db.clone(),
                segments,
                meta,
                last_purged: Mutex::new(last_purged),
                vote: VoteFile::new(disk.dir()),
                disk,
                recent: Mutex::default(),
                pending_syncs,
                entry_bytes: Mutex::new(entry_bytes),
                size,
            }),
        })
    }

    /// Blocks until everything written so far is on stable storage (see
    /// [`Disk::sync`]).
    pub fn sync(&self) -> io::Result<()> {
        self.inner.disk.sync()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.inner.meta.get(key).map_err(io_error)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        self.inner
            .meta
            .insert(key, encode(value)?)
            .map_err(io_error)?;
        Ok(())
    }

    fn segments(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, sled::Tree>> {
        self.inner
            .segments
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn last_purged(&self) -> Option<LogId> {
        *self
            .inner
            .last_purged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.inner.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tree of `segment`, created on first use.
    fn segment_tree(&self, segment: u64) -> io::Result<sled::Tree> {
        let mut segments = self.segments();
        if let Some(tree) = segments.get(&segment) {
            return Ok(tree.clone());
        }
        let tree = self
            .inner
            .db
            .open_tree(segment_name(segment))
            .map_err(io_error)?;
        segments.insert(segment, tree.clone());
        Ok(tree)
    }

    fn entry_bytes(&self) -> std::sync::MutexGuard<'_, EntryBytes> {
        self.inner
            .entry_bytes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Drops the whole tree of `segment`.
    fn drop_segment(&self, segment: u64) -> io::Result<()> {
        self.segments().remove(&segment);
        self.inner
            .db
            .drop_tree(segment_name(segment))
            .map_err(io_error)?;
        Ok(())
    }
}

/// Serves queued append callbacks: waits for one, takes every other one already
/// queued, syncs once and completes them all in order. Exits when the store is dropped.
fn run_sync_thread(disk: &Disk, queue: &mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter());
        let result = disk.sync();
        if let Err(e) = &result {
            tracing::error!(cause = %e, "syncing the raft log failed");
        }
        for callback in group {
            callback.io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
            );
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn bound_key(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests;
