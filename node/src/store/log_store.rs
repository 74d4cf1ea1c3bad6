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

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;

use super::recent::RecentEntries;
use super::size::pair_bytes;
use super::size::StoreSize;
use super::vote::VoteFile;
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
            let number = u64::from_str_radix(number, 16).map_err(io::Error::other)?;
            segments.insert(number, db.open_tree(&name).map_err(io::Error::other)?);
        }
        let meta = db.open_tree("raft_meta").map_err(io::Error::other)?;
        let last_purged = match meta.get(LAST_PURGED).map_err(io::Error::other)? {
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
                let (key, value) = item.map_err(io::Error::other)?;
                let index = u64::from_be_bytes(key.as_ref().try_into().map_err(io::Error::other)?);
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
            .map_err(io::Error::other)?;
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
            .map_err(io::Error::other)?;
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

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        // Entries at or below `last_purged` may linger in a partly purged segment.
        let first_kept = self.last_purged().map_or(0, |id| id.index() + 1);
        let start = match range.start_bound() {
            Bound::Included(i) => (*i).max(first_kept),
            Bound::Excluded(i) => i.saturating_add(1).max(first_kept),
            Bound::Unbounded => first_kept,
        };
        let end = range.end_bound().cloned();
        let keys = (Bound::Included(index_key(start)), bound_key(end.as_ref()));
        let last_segment = match end {
            Bound::Included(i) => segment_of(i),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(i) => segment_of(i - 1),
            Bound::Unbounded => u64::MAX,
        };
        let empty = match end {
            Bound::Included(i) => start > i,
            Bound::Excluded(i) => start >= i,
            Bound::Unbounded => false,
        };
        if empty {
            return Ok(Vec::new());
        }
        let end_exclusive = match end {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        if let Some(entries) = end_exclusive.and_then(|end| self.recent().get(start, end)) {
            return Ok(entries);
        }
        let trees: Vec<sled::Tree> = self
            .segments()
            .range(segment_of(start)..=last_segment)
            .map(|(_, t)| t.clone())
            .collect();
        let mut entries = Vec::new();
        for tree in trees {
            for value in tree.range(keys).values() {
                entries.push(decode(&value.map_err(io::Error::other)?)?);
            }
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.inner.vote.read()? {
            Some(vote) => Ok(Some(vote)),
            // Earlier versions kept it in sled.
            None => self.read_meta(VOTE),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id = self.last_purged();
        let trees: Vec<sled::Tree> = self.segments().values().rev().cloned().collect();
        let mut last_log_id = last_purged_log_id;
        for tree in trees {
            if let Some((_, bytes)) = tree.last().map_err(io::Error::other)? {
                let id = decode::<Entry>(&bytes)?.log_id();
                if Some(id) > last_purged_log_id {
                    last_log_id = Some(id);
                }
                break;
            }
        }
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // Its own small file and sync, not behind the log's flush (see `vote`).
        let file = self.inner.vote.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || file.write(&vote))
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
        // Plain inserts, in log order, never `apply_batch`: a sled batch takes
        // sled's global write lock (and from then on every sled operation of
        // the process goes through a real RwLock) and forces out its write
        // buffer, waking every idle sled I/O thread, once per append.
        // Atomicity is not needed: sled recovers a prefix of its operations,
        // so a crash before the sync leaves a prefix of this append, which
        // Raft treats like any unflushed tail (the callback never fired).
        // In sled now, so readable as soon as this returns (openraft relies on
        // that); durable once the sync thread has run the callback.
        let started = std::time::Instant::now();
        let mut tree: Option<(u64, sled::Tree)> = None;
        let mut written = Vec::new();
        for entry in entries {
            let segment = segment_of(entry.index());
            let tree = match &tree {
                Some((s, t)) if *s == segment => t,
                _ => &tree.insert((segment, self.segment_tree(segment)?)).1,
            };
            let key = index_key(entry.index());
            let value = encode(&entry)?;
            tree.insert(key, value.as_slice())
                .map_err(io::Error::other)?;
            let bytes = pair_bytes(&key, &value);
            let dropped = self.entry_bytes().set(entry.index(), bytes);
            self.inner.size.change_log(bytes, dropped);
            written.push(entry);
        }
        crate::metrics::observe_since(&crate::metrics::global().log_append, started);
        let mut recent = self.recent();
        for entry in written {
            recent.push(entry);
        }
        drop(recent);
        self.inner
            .pending_syncs
            .send(callback)
            .map_err(|_| io::Error::other("the raft log sync thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        tracing::debug!(from, "truncating the raft log");
        self.recent().truncate_from(from);
        let dropped = self.entry_bytes().truncate_from(from);
        self.inner.size.change_log(0, dropped);
        let later: Vec<u64> = self
            .segments()
            .range(segment_of(from) + 1..)
            .map(|(s, _)| *s)
            .collect();
        for segment in later {
            self.drop_segment(segment)?;
        }
        // Removed last entry first, with plain removes (see `append` for why
        // not a batch): whatever part of this a crash keeps, the log is still
        // a prefix, never a log with a hole in it.
        let tree = self.segments().get(&segment_of(from)).cloned();
        if let Some(tree) = tree {
            let keys: Vec<sled::IVec> = tree
                .range(index_key(from)..)
                .keys()
                .collect::<Result<_, _>>()
                .map_err(io::Error::other)?;
            for key in keys.iter().rev() {
                tree.remove(key).map_err(io::Error::other)?;
            }
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        tracing::debug!(upto = log_id.index(), "purging the raft log");
        crate::crash_point!("log-purge-before");
        // `last_purged` first: entries it covers are ignored from then on,
        // whether or not their segment is gone yet.
        self.write_meta(LAST_PURGED, &log_id)?;
        *self
            .inner
            .last_purged
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(log_id);
        self.recent().purge_upto(log_id.index());
        let dropped = self.entry_bytes().purge_upto(log_id.index());
        self.inner.size.change_log(0, dropped);
        let whole: Vec<u64> = self
            .segments()
            .range(..segment_of(log_id.index().saturating_add(1)))
            .map(|(s, _)| *s)
            .collect();
        for segment in whole {
            self.drop_segment(segment)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::blank_ent;
    use openraft::testing::log_id;

    use super::*;

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index()).collect()
    }

    #[tokio::test]
    async fn segments_are_read_across_boundaries_dropped_on_purge_and_cut_on_truncate() {
        let dir = tempfile::TempDir::new().unwrap();
        let (mut log, _sm) = crate::store::open(dir.path(), 1 << 20).unwrap();
        let boundary = 1u64 << SEGMENT_BITS;
        let first = boundary - 5;
        let entries: Vec<Entry> = (first..boundary + 5)
            .map(|i| blank_ent::<TypeConfig>(1, 1, i))
            .collect();
        log.append(entries, IOFlushed::noop()).await.unwrap();
        assert_eq!(log.segments().len(), 2);
        let all = log.try_get_log_entries(first..boundary + 5).await.unwrap();
        assert_eq!(indexes(&all), (first..boundary + 5).collect::<Vec<_>>());
        let across = log
            .try_get_log_entries(boundary - 2..=boundary + 1)
            .await
            .unwrap();
        assert_eq!(
            indexes(&across),
            vec![boundary - 2, boundary - 1, boundary, boundary + 1]
        );
        assert!(log
            .try_get_log_entries(boundary + 3..boundary + 1)
            .await
            .unwrap()
            .is_empty());

        // Purging into the second segment drops the first tree and hides the rest.
        log.purge(log_id::<TypeConfig>(1, 1, boundary + 1))
            .await
            .unwrap();
        assert_eq!(log.segments().keys().copied().collect::<Vec<_>>(), vec![1]);
        let left = log.try_get_log_entries(0..).await.unwrap();
        assert_eq!(
            indexes(&left),
            vec![boundary + 2, boundary + 3, boundary + 4]
        );
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(boundary + 4));
        assert_eq!(
            state.last_purged_log_id.map(|l| l.index()),
            Some(boundary + 1)
        );

        // Truncating keeps the prefix; reopening finds the same state.
        log.truncate_after(Some(log_id::<TypeConfig>(1, 1, boundary + 2)))
            .await
            .unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(boundary + 2));
        drop(log);
        drop(_sm);
        // The sync thread lets go of the database once it sees the store dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let (mut log, _sm) = loop {
            match crate::store::open(dir.path(), 1 << 20) {
                Ok(opened) => break opened,
                Err(e) if std::time::Instant::now() < deadline => {
                    let cause = std::error::Error::source(&e).map(ToString::to_string);
                    assert!(cause.is_some_and(|c| c.contains("lock")), "{e:?}");
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index()), Some(boundary + 2));
        assert_eq!(
            indexes(&log.try_get_log_entries(0..).await.unwrap()),
            vec![boundary + 2]
        );
    }
}
