//! openraft's side of the log store: [`RaftLogReader`] and
//! [`RaftLogStorage`] over the segments (reads, append, truncation, purge,
//! the vote and `committed`). What each of them leaves on disk when it
//! returns is what the durability rules in `log_store` say.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;

use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;

use super::bound_key;
use super::index_key;
use super::segment_of;
use super::LogStore;
use super::COMMITTED;
use super::LAST_PURGED;
use super::VOTE;
use crate::codec::decode;
use crate::codec::encode;
use crate::store::disk::io_error;
use crate::store::size::pair_bytes;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

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
                entries.push(decode(&value.map_err(io_error)?)?);
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
            if let Some((_, bytes)) = tree.last().map_err(io_error)? {
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
            .map_err(io_error)?
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
        // Sorted writes (`apply_sorted`), in log order, never `apply_batch`:
        // a sled batch takes sled's global write lock (and from then on every
        // sled operation of the process goes through a real RwLock) and
        // forces out its write buffer, waking every idle sled I/O thread,
        // once per append. Atomicity is not needed: sled recovers a prefix of
        // its operations (a sorted write is one per leaf, in key order), so a
        // crash before the sync leaves a prefix of this append, which Raft
        // treats like any unflushed tail (the callback never fired).
        // In sled now, so readable as soon as this returns (openraft relies on
        // that); durable once the sync thread has run the callback.
        let started = std::time::Instant::now();
        let written: Vec<Entry> = entries.into_iter().collect();
        // One sorted write per segment: sled copies a leaf once for all the
        // entries that land in it, not once per entry.
        let mut at = 0;
        while at < written.len() {
            let segment = segment_of(written[at].index());
            let run = written[at..]
                .iter()
                .take_while(|e| segment_of(e.index()) == segment)
                .count();
            let mut ops = Vec::with_capacity(run);
            for entry in &written[at..at + run] {
                ops.push((
                    index_key(entry.index()),
                    Some(sled::IVec::from(encode(entry)?)),
                ));
            }
            self.segment_tree(segment)?
                .apply_sorted(&ops)
                .map_err(io_error)?;
            let mut entry_bytes = self.entry_bytes();
            for (entry, (key, value)) in written[at..at + run].iter().zip(&ops) {
                let bytes = value.as_ref().map_or(0, |v| pair_bytes(key, v));
                let dropped = entry_bytes.set(entry.index(), bytes);
                self.inner.size.change_log(bytes, dropped);
            }
            drop(entry_bytes);
            at += run;
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
                .map_err(io_error)?;
            for key in keys.iter().rev() {
                tree.remove(key).map_err(io_error)?;
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
