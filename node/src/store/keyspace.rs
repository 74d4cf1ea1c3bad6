//! The revisioned key space: every version of every key, in one sled tree
//! and an index in memory.
//!
//! A revision is the log index of the entry that wrote it; the writes of one
//! entry are told apart by a sub-revision, their order within it.
//!
//! ```text
//! tree `revs`   revision u64 BE ++ sub u32 BE  →  row (see `Row`)
//! key index     key → its versions: revision, sub, put or delete,
//!                 create_revision, version, lease (see `index`)
//! ```
//!
//! `revs` holds each version once, in the order it was written: that is the
//! history watchers read, and all that is on disk. The index finds, for a
//! key and a revision `R`, the newest version at or before `R`. It repeats
//! a version's numbers so the apply decides a put or a delete (and a
//! lease's budget) from the index alone, without reading the value. It is
//! rebuilt from `revs` when the store opens, as etcd rebuilds its key index
//! from its backend, so a write costs one row in the tree and no index can be
//! left out of step by a crash.
//!
//! Visibility: the apply writes an entry's rows before it publishes the
//! entry's revision (see `state_machine`), and readers never look past the
//! revision they read at, so a reader sees every write of an entry or none,
//! and neither waits for the other.
//!
//! Compaction at `C` removes every version that is not the newest at or
//! before `C` for its key, and the newest too if it is a delete. A read at a
//! revision below `C` is refused from the moment `C` is decided, before any
//! row goes (and checked again after the read, for reads that raced it).
//!
//! Durability: plain sled writes (an apply batch's rows together, see
//! [`RowBuffer`]), not synced; the state machine's rules say
//! when they are trusted (see `state_machine`).

mod encoding;
mod index;

use std::io;
use std::ops::Bound;
use std::sync::Arc;

use encoding::row_entry;
pub use encoding::row_key;
use encoding::split_row_key;
pub use encoding::KeyValue;
pub use encoding::Numbers;
pub use encoding::ReadError;
pub use encoding::Row;
pub use encoding::Version;
use index::Entry;
use index::KeyIndex;

use super::size::pair_bytes;
use super::size::StoreSize;
use crate::store::disk::io_error;

/// The rows and their index.
#[derive(Clone)]
pub struct KeySpace {
    revs: sled::Tree,
    index: Arc<KeyIndex>,
    /// Counted bytes of `revs` (see `size`).
    size: Arc<StoreSize>,
}

/// Keys a range looks at under one hold of the index's lock.
const SCAN_STEP: usize = 1024;

fn sled_err(e: sled::Error) -> io::Error {
    io_error(e)
}

impl KeySpace {
    /// Opens (or creates) the rows in `db`, builds their index and counts
    /// their bytes into `size` (one walk of every row); every change keeps
    /// both up to date from here on.
    pub fn open(db: &sled::Db, size: Arc<StoreSize>) -> io::Result<KeySpace> {
        let space = KeySpace {
            revs: db.open_tree("revs").map_err(sled_err)?,
            index: Arc::default(),
            size,
        };
        let started = std::time::Instant::now();
        let (mut rows, mut bytes) = (0u64, 0u64);
        for item in space.revs.iter() {
            let (row_key, value) = item.map_err(sled_err)?;
            bytes += pair_bytes(&row_key, &value);
            let (revision, sub) = split_row_key(&row_key)?;
            let (key, entry) = row_entry(&value, revision, sub)?;
            space.index.insert(key, entry);
            rows += 1;
        }
        space.size.set_key_space(bytes);
        if rows > 0 {
            tracing::info!(rows, bytes, elapsed = ?started.elapsed(), "key index built");
        }
        Ok(space)
    }

    /// Puts the rows of `rows` into sled, in one sorted write (sled copies
    /// a leaf once for all the rows that land in it), counting the bytes.
    pub fn flush_rows(&self, rows: &mut RowBuffer) -> io::Result<()> {
        if rows.rows.is_empty() {
            return Ok(());
        }
        let olds = self.revs.apply_sorted(&rows.rows).map_err(sled_err)?;
        let (mut added, mut removed) = (0, 0);
        for ((key, value), old) in rows.rows.iter().zip(olds) {
            added += value.as_ref().map_or(0, |v| pair_bytes(key, v));
            removed += old.map_or(0, |old| pair_bytes(key, &old));
        }
        self.size.change_key_space(added, removed);
        rows.rows.clear();
        rows.bytes = 0;
        Ok(())
    }

    /// Removes rows, counting the bytes: one sorted write, so sled copies
    /// each leaf once for all the rows it loses, not once per row. Returns
    /// how many distinct rows were named.
    fn remove_rows(&self, mut keys: Vec<[u8; 12]>) -> io::Result<u64> {
        keys.sort_unstable();
        keys.dedup();
        let ops: Vec<([u8; 12], Option<sled::IVec>)> =
            keys.into_iter().map(|k| (k, None)).collect();
        let olds = self.revs.apply_sorted(&ops).map_err(sled_err)?;
        let removed: u64 = ops
            .iter()
            .zip(olds)
            .filter_map(|((key, _), old)| old.map(|old| pair_bytes(key, &old)))
            .sum();
        self.size.change_key_space(0, removed);
        Ok(ops.len() as u64)
    }

    /// Counts the bytes of the rows again (a walk of them), to check the
    /// count kept.
    #[cfg(test)]
    pub fn recount(&self) -> io::Result<u64> {
        let mut bytes = 0;
        for item in self.revs.iter() {
            let (key, value) = item.map_err(sled_err)?;
            bytes += pair_bytes(&key, &value);
        }
        self.size.set_key_space(bytes);
        Ok(bytes)
    }

    /// The numbers of `key`'s version as of `revision`, unless it is absent
    /// then; reads the index only.
    pub fn numbers(&self, key: &[u8], revision: u64) -> Option<Numbers> {
        self.index
            .find(key, revision)
            .filter(|found| !found.deleted)
            .map(|found| found.numbers())
    }

    fn row(&self, revision: u64, sub: u32) -> io::Result<Option<Row>> {
        match self.revs.get(row_key(revision, sub)).map_err(sled_err)? {
            Some(bytes) => Ok(Some(Row::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// [`Self::row`], looking in `rows` (not yet in sled) first.
    fn row_buffered(&self, revision: u64, sub: u32, rows: &RowBuffer) -> io::Result<Option<Row>> {
        let key = row_key(revision, sub);
        match rows.rows.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => rows.rows[at].1.as_deref().map(Row::decode).transpose(),
            Err(_) => self.row(revision, sub),
        }
    }

    /// `key` as of `revision`: its newest version at or before it, unless
    /// that is a delete. A version the index names but `revs` lacks was
    /// removed by a compaction meanwhile: `Ok(None)` with `lost` set.
    pub fn get(&self, key: &[u8], revision: u64) -> io::Result<Lookup> {
        self.get_buffered(key, revision, &RowBuffer::default())
    }

    /// [`Self::get`], looking in `rows` (not yet in sled) first.
    pub fn get_buffered(&self, key: &[u8], revision: u64, rows: &RowBuffer) -> io::Result<Lookup> {
        let Some(found) = self.index.find(key, revision) else {
            return Ok(Lookup::Absent);
        };
        if found.deleted {
            return Ok(Lookup::Absent);
        }
        Ok(match self.row_buffered(found.revision, found.sub, rows)? {
            Some(row) => row
                .into_key_value(found.revision)
                .map_or(Lookup::Absent, Lookup::Found),
            None => Lookup::Lost,
        })
    }

    /// Up to `limit` keys starting with `prefix` and greater than
    /// `start_after` as of `revision`, in key order, whether more follow,
    /// and whether a version was lost to a compaction that raced the scan.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: &[u8],
        limit: usize,
        revision: u64,
    ) -> io::Result<(Vec<KeyValue>, bool, bool)> {
        // Keys after `start_after`, when that is not before the prefix.
        let from = if !start_after.is_empty() && start_after >= prefix {
            Bound::Excluded(start_after)
        } else {
            Bound::Included(prefix)
        };
        let end = prefix_end(prefix);
        let to = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let range = self.range(
            (from, to),
            revision,
            limit.saturating_add(1),
            false,
            usize::MAX,
        )?;
        let mut pairs = range.pairs;
        let more = pairs.len() > limit;
        pairs.truncate(limit);
        Ok((pairs, more, range.lost))
    }

    /// The live keys in `keys` as of `revision`, in key order: the first
    /// `limit` with their values, and how many there are in all when
    /// `count` is set (else how many were returned). Values stop once
    /// they would pass `max_bytes` (as a message), which the answer says
    /// (`too_large`): a reader need not hold more than it can send.
    pub fn range(
        &self,
        keys: (Bound<&[u8]>, Bound<&[u8]>),
        revision: u64,
        limit: usize,
        count: bool,
        max_bytes: usize,
    ) -> io::Result<Ranged> {
        let rows = RowBuffer::default();
        self.range_buffered(keys, revision, limit, count, max_bytes, &rows)
    }

    /// [`Self::range`], looking in `rows` (not yet in sled) first.
    pub fn range_buffered(
        &self,
        keys: (Bound<&[u8]>, Bound<&[u8]>),
        revision: u64,
        limit: usize,
        count: bool,
        max_bytes: usize,
        rows: &RowBuffer,
    ) -> io::Result<Ranged> {
        let (mut from, to) = (keys.0.map(<[u8]>::to_vec), keys.1);
        let mut ranged = Ranged::default();
        // What `ranged.pairs` would take in a message.
        let mut bytes = 0usize;
        loop {
            let wanted = if count {
                SCAN_STEP
            } else {
                (limit - ranged.pairs.len()).min(SCAN_STEP)
            };
            if wanted == 0 {
                break;
            }
            let (found, last) = self.index.live_keys(
                from.as_ref().map(Vec::as_slice),
                to,
                revision,
                wanted,
                SCAN_STEP,
            );
            for entry in found {
                ranged.count += 1;
                if ranged.pairs.len() == limit || ranged.too_large {
                    continue;
                }
                match self.row_buffered(entry.revision, entry.sub, rows)? {
                    Some(row) if bytes.saturating_add(row.bytes()) > max_bytes => {
                        ranged.too_large = true;
                    }
                    Some(row) => {
                        bytes += row.bytes();
                        ranged.pairs.extend(row.into_key_value(entry.revision));
                    }
                    None => ranged.lost = true,
                }
            }
            match last {
                Some(last) => from = Bound::Excluded(last),
                None => break,
            }
        }
        Ok(ranged)
    }

    /// Writes one version of `row.key` at `revision`/`sub` straight to the
    /// tree. Writing the same row twice (a replay) leaves one.
    #[cfg(test)]
    pub fn write(&self, revision: u64, sub: u32, row: &Row) -> io::Result<()> {
        let mut rows = RowBuffer::default();
        self.write_buffered(revision, sub, row, &mut rows)?;
        self.flush_rows(&mut rows)
    }

    /// [`Self::write`], with the row kept in `rows` until
    /// [`Self::flush_rows`]; the index names it at once. Rows must reach
    /// sled before their revision is published: until then no reader other
    /// than the writer's own (see [`Self::get_buffered`]) looks at them.
    pub fn write_buffered(
        &self,
        revision: u64,
        sub: u32,
        row: &Row,
        rows: &mut RowBuffer,
    ) -> io::Result<()> {
        let key = row_key(revision, sub);
        // Kept in ascending order, which a sorted write and a lookup need;
        // an apply writes in that order anyway.
        if rows.rows.last().is_some_and(|(last, _)| *last >= key) || rows.is_full() {
            self.flush_rows(rows)?;
        }
        let value = sled::IVec::from(row.encode());
        rows.bytes += value.len();
        rows.rows.push((key, Some(value)));
        let entry = Entry {
            revision,
            sub,
            deleted: row.value.is_none(),
            create_revision: row.create_revision,
            version: row.version,
            lease: row.lease,
        };
        self.index.insert(&row.key, entry);
        Ok(())
    }

    /// Rows from revision `from` through `through`, in order, whole
    /// revisions only, until about `max_bytes` of them are taken (at least
    /// one revision's); and whether every row through `through` was taken.
    pub fn history(
        &self,
        from: u64,
        through: u64,
        max_bytes: usize,
    ) -> io::Result<(Vec<(u64, Row)>, bool)> {
        let mut rows: Vec<(u64, Row)> = Vec::new();
        let mut bytes = 0;
        if from > through {
            return Ok((rows, true));
        }
        let range = row_key(from, 0)..=row_key(through, u32::MAX);
        for item in self.revs.range(range) {
            let (key, value) = item.map_err(sled_err)?;
            let (revision, _) = split_row_key(&key)?;
            if bytes >= max_bytes && rows.last().is_some_and(|(last, _)| *last != revision) {
                return Ok((rows, false));
            }
            let row = Row::decode(&value)?;
            bytes += row.bytes();
            rows.push((revision, row));
        }
        Ok((rows, true))
    }

    /// The versions a follower needs to serve every read and watch at
    /// `compacted` or later, up to `through`: in row order, after `after`,
    /// up to `max_rows` of them (whole revisions are not needed: each row
    /// carries its own revision and sub), and whether more follow. A row at
    /// or before `compacted` is sent only if it is the version a read at
    /// `compacted` sees (older ones, and deletes, may still be in the tree
    /// while compaction removes them). Each row says whether it is the live
    /// version of its key at `through`.
    ///
    /// The caller keeps `compacted` and `through` pinned, so compaction
    /// removes nothing sent here while it runs.
    pub fn versions(
        &self,
        compacted: u64,
        through: u64,
        after: Option<(u64, u32)>,
        max_rows: usize,
    ) -> io::Result<(Vec<Version>, bool)> {
        let from = match after {
            None => Bound::Included(row_key(0, 0)),
            Some((revision, sub)) => Bound::Excluded(row_key(revision, sub)),
        };
        let to = Bound::Included(row_key(through, u32::MAX));
        let mut versions = Vec::new();
        for item in self.revs.range((from, to)) {
            if versions.len() == max_rows {
                return Ok((versions, true));
            }
            let (key, value) = item.map_err(sled_err)?;
            let (revision, sub) = split_row_key(&key)?;
            let row = Row::decode(&value)?;
            let is = |found: &Option<Entry>| {
                found
                    .as_ref()
                    .is_some_and(|f| f.revision == revision && f.sub == sub)
            };
            if revision <= compacted
                && (row.value.is_none() || !is(&self.index.find(&row.key, compacted)))
            {
                continue;
            }
            let live = row.value.is_some() && is(&self.index.find(&row.key, through));
            versions.push(Version {
                revision,
                sub,
                row,
                live,
            });
        }
        Ok((versions, false))
    }

    /// One bounded step of compacting at `compact` the rows written after
    /// `done` (everything at or before `done` is compacted already): looks at
    /// up to `max_rows` rows; returns the revision compacted through (to pass
    /// as `done` next) and how many rows were removed.
    pub fn compact_step(&self, done: u64, compact: u64, max_rows: usize) -> io::Result<(u64, u64)> {
        if done >= compact {
            return Ok((done, 0));
        }
        // Rows go in one sorted write at the end of the step. Their index
        // entries go first, as they are found, so no reader is sent to a
        // row from then on; a row left until the end of the step (or by a
        // crash) is one the index no longer names, and the index is rebuilt
        // from the rows at open, where the next compaction finds it again.
        let mut gone: Vec<[u8; 12]> = Vec::new();
        let range = row_key(done + 1, 0)..=row_key(compact, u32::MAX);
        let mut last_revision = done;
        let mut through = compact;
        for (looked, item) in self.revs.range(range).enumerate() {
            let (key, value) = item.map_err(sled_err)?;
            let (revision, sub) = split_row_key(&key)?;
            // Whole revisions only, so what is returned is exact.
            if looked >= max_rows && revision != last_revision {
                through = last_revision;
                break;
            }
            last_revision = revision;
            let row = Row::decode(&value)?;
            let newest = self.index.find(&row.key, compact);
            let is_newest = newest
                .as_ref()
                .is_some_and(|n| n.revision == revision && n.sub == sub);
            if !is_newest {
                // A later version at or before `compact` replaces it; the
                // index entry may already name that later sub (same revision).
                if newest.as_ref().is_none_or(|n| n.revision != revision) {
                    self.index.remove(&row.key, revision);
                }
                gone.push(row_key(revision, sub));
                continue;
            }
            // The newest version at `compact`: every older one goes (those
            // before `done` survived earlier compactions as the newest then).
            for old in self.index.older(&row.key, revision) {
                self.index.remove(&row.key, old.revision);
                gone.push(row_key(old.revision, old.sub));
            }
            if row.value.is_none() {
                self.index.remove(&row.key, revision);
                gone.push(row_key(revision, sub));
            }
        }
        let removed = self.remove_rows(gone)?;
        Ok((through, removed))
    }

    /// Removes every row and index entry of a revision after `revision`
    /// (walks the whole index: for recovery, not for the running store).
    /// Returns how many rows went.
    pub fn truncate_after(&self, revision: u64) -> io::Result<usize> {
        self.index.truncate_after(revision);
        let mut gone = Vec::new();
        for item in self.revs.range(row_key(revision + 1, 0)..) {
            let (key, _) = item.map_err(sled_err)?;
            gone.push(key.as_ref().try_into().map_err(io_error)?);
        }
        Ok(self.remove_rows(gone)? as usize)
    }

    /// Removes every row and index entry.
    pub fn clear(&self) -> io::Result<()> {
        self.revs.clear().map_err(sled_err)?;
        self.index.clear();
        self.size.set_key_space(0);
        Ok(())
    }

    /// How many rows the history holds (walks the tree).
    pub fn row_count(&self) -> usize {
        self.revs.len()
    }
}

/// Rows written but not yet in sled (see [`KeySpace::write_buffered`]), in
/// ascending order.
#[derive(Debug, Default)]
pub struct RowBuffer {
    rows: Vec<([u8; 12], Option<sled::IVec>)>,
    bytes: usize,
}

impl RowBuffer {
    /// Rows and bytes held before the next write flushes them: bounds the
    /// memory of a long replay or a snapshot install.
    const MAX_ROWS: usize = 1024;
    const MAX_BYTES: usize = 4 << 20;

    fn is_full(&self) -> bool {
        self.rows.len() >= Self::MAX_ROWS || self.bytes >= Self::MAX_BYTES
    }
}

/// What [`KeySpace::range`] found.
#[derive(Debug, Default)]
pub struct Ranged {
    pub pairs: Vec<KeyValue>,
    /// Live keys in the range (see `range`).
    pub count: u64,
    /// A version was removed by a compaction that raced the read.
    pub lost: bool,
    /// Values were left out to stay within the byte budget.
    pub too_large: bool,
}

/// The first key after every key that starts with `prefix` (`None`: no
/// such key, every key from the prefix on starts with it).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The outcome of a point lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(KeyValue),
    Absent,
    /// The version was removed by a compaction that raced the read.
    Lost,
}

impl Lookup {
    pub fn found(self) -> Option<KeyValue> {
        match self {
            Lookup::Found(kv) => Some(kv),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
