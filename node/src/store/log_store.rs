//! The Raft log and vote on sled.
//!
//! Layout: tree `log` maps the big-endian log index to the encoded entry (so
//! sled's key order is log order); tree `raft_meta` holds `vote`, `committed`
//! and `last_purged`.
//!
//! Durability rules (what is on disk when a method returns):
//! - `save_vote`: the vote is synced before it returns.
//! - `append`: entries are in sled (readable) when it returns and synced
//!   before `callback` fires. A dedicated sync thread groups appends: one
//!   `Disk::sync` covers every append queued behind the one in flight.
//! - `truncate_after`, `purge`, `save_committed`: not synced. sled persists
//!   operations in the order they were made, so the sync that makes a later
//!   append durable also persists an earlier truncation; a lost purge only
//!   leaves entries that `last_purged` (written first) already hides; a lost
//!   `committed` is re-learned from the leader.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::mpsc;
use std::sync::Arc;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;

use super::Disk;
use crate::codec::decode;
use crate::codec::encode;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// Raft log storage; clones share the same trees (the clone is the log reader).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// index (big-endian u64) → encoded [`Entry`].
    log: sled::Tree,
    /// vote, committed and last purged log id.
    meta: sled::Tree,
    disk: Arc<Disk>,
    /// Appends waiting for a sync, served in order by the sync thread.
    pending_syncs: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens the log trees of `db` and starts the sync thread.
    pub fn open(db: &sled::Db, disk: Arc<Disk>) -> io::Result<LogStore> {
        let log = db.open_tree("log").map_err(io::Error::other)?;
        let meta = db.open_tree("raft_meta").map_err(io::Error::other)?;
        let (pending_syncs, queue) = mpsc::channel();
        let sync_disk = disk.clone();
        std::thread::Builder::new()
            .name("raftkv-log-sync".into())
            .spawn(move || run_sync_thread(&sync_disk, &queue))?;
        Ok(LogStore {
            inner: Arc::new(Inner {
                log,
                meta,
                disk,
                pending_syncs,
            }),
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        match self.inner.meta.get(key).map_err(io::Error::other)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        self.inner
            .meta
            .insert(key, encode(value)?)
            .map_err(io::Error::other)?;
        Ok(())
    }

    /// Removes every entry whose index lies in `range`, in one sled batch.
    fn remove_range(&self, range: impl RangeBounds<[u8; 8]>) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.inner.log.range(range).keys() {
            batch.remove(key.map_err(io::Error::other)?);
        }
        self.inner.log.apply_batch(batch).map_err(io::Error::other)
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

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let keys = (bound_key(range.start_bound()), bound_key(range.end_bound()));
        self.inner
            .log
            .range(keys)
            .values()
            .map(|value| decode(&value.map_err(io::Error::other)?))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read_meta(LAST_PURGED)?;
        let last_log_id = match self.inner.log.last().map_err(io::Error::other)? {
            Some((_, bytes)) => Some(decode::<Entry>(&bytes)?.log_id()),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write_meta(VOTE, vote)?;
        let disk = self.inner.disk.clone();
        tokio::task::spawn_blocking(move || disk.sync())
            .await
            .map_err(io::Error::other)?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&index_key(entry.index()), encode(&entry)?);
        }
        // In sled now, so readable as soon as this returns (openraft relies on
        // that); durable once the sync thread has run the callback.
        self.inner
            .log
            .apply_batch(batch)
            .map_err(io::Error::other)?;
        self.inner
            .pending_syncs
            .send(callback)
            .map_err(|_| io::Error::other("the raft log sync thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        tracing::debug!(from, "truncating the raft log");
        self.remove_range(index_key(from)..)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        tracing::debug!(upto = log_id.index(), "purging the raft log");
        // `last_purged` first: entries it covers are ignored even if their removal is lost.
        self.write_meta(LAST_PURGED, &log_id)?;
        self.remove_range(..=index_key(log_id.index()))
    }
}
