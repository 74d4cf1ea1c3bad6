//! The revisioned key space: every version of every key, on two sled trees.
//!
//! A revision is the log index of the entry that wrote it; the writes of one
//! entry are told apart by a sub-revision, their order within it.
//!
//! ```text
//! tree `revs`       revision u64 BE ++ sub u32 BE  →  row (see `Row`)
//! tree `key_index`  escaped key ++ !revision u64 BE →  sub u32 BE ++ kind u8
//!                     ++ create_revision, version, lease (u64 BE each)
//! ```
//!
//! The index repeats a version's numbers so the apply decides a put or a
//! delete (and a lease's budget) from the index alone, without reading the
//! value.
//!
//! `revs` holds each version once, in the order it was written: that is the
//! history watchers read. `key_index` finds, for a key and a revision `R`,
//! the newest version at or before `R` as the first entry of a forward range:
//! a key's versions sort newest first (the revision is stored inverted), so
//! no lookup iterates backwards. Keys are escaped so that index keys sort by
//! user key first (see `escape`); a prefix of a user key escapes to a
//! prefix of its index keys.
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
//! Durability: plain sled inserts, not synced; the state machine's rules say
//! when they are trusted (see `state_machine`).

mod encoding;

use std::io;
use std::ops::Bound;
use std::sync::Arc;

use encoding::escape;
use encoding::index_key;
use encoding::index_value;
use encoding::parse_index_value;
pub use encoding::row_key;
use encoding::split_index_key;
use encoding::split_row_key;
pub use encoding::KeyValue;
pub use encoding::Numbers;
pub use encoding::ReadError;
pub use encoding::Row;
pub use encoding::Version;

use super::size::pair_bytes;
use super::size::StoreSize;
use crate::store::disk::io_error;

/// The two trees of the key space.
#[derive(Clone)]
pub struct KeySpace {
    revs: sled::Tree,
    index: sled::Tree,
    /// Counted bytes of both trees (see `size`).
    size: Arc<StoreSize>,
}

/// One version found through the index.
struct Found {
    revision: u64,
    sub: u32,
    deleted: bool,
    numbers: Numbers,
}

fn sled_err(e: sled::Error) -> io::Error {
    io_error(e)
}

impl KeySpace {
    /// Opens (or creates) the trees in `db`; their bytes are counted in
    /// `size` from here on.
    pub fn open(db: &sled::Db, size: Arc<StoreSize>) -> io::Result<KeySpace> {
        Ok(KeySpace {
            revs: db.open_tree("revs").map_err(sled_err)?,
            index: db.open_tree("key_index").map_err(sled_err)?,
            size,
        })
    }

    /// Inserts into `tree`, counting the bytes.
    fn insert(&self, tree: &sled::Tree, key: &[u8], value: &[u8]) -> io::Result<()> {
        let old = tree.insert(key, value).map_err(sled_err)?;
        let removed = old.map_or(0, |old| pair_bytes(key, &old));
        self.size.change_key_space(pair_bytes(key, value), removed);
        Ok(())
    }

    /// Removes from `tree`, counting the bytes.
    fn remove(&self, tree: &sled::Tree, key: &[u8]) -> io::Result<()> {
        if let Some(old) = tree.remove(key).map_err(sled_err)? {
            self.size.change_key_space(0, pair_bytes(key, &old));
        }
        Ok(())
    }

    /// Counts the bytes of both trees again (a walk of both: after a crash).
    pub fn recount(&self) -> io::Result<u64> {
        let mut bytes = 0;
        for tree in [&self.revs, &self.index] {
            for item in tree.iter() {
                let (key, value) = item.map_err(sled_err)?;
                bytes += pair_bytes(&key, &value);
            }
        }
        self.size.set_key_space(bytes);
        Ok(bytes)
    }

    /// The newest version of `key` at or before `revision`, tombstones included.
    fn find(&self, key: &[u8], revision: u64) -> io::Result<Option<Found>> {
        // Versions at or before `revision`, newest first.
        let range = index_key(key, revision)..=index_key(key, 0);
        let Some(item) = self.index.range(range).next() else {
            return Ok(None);
        };
        let (indexed, value) = item.map_err(sled_err)?;
        let (_, found_at) = split_index_key(&indexed)?;
        let (sub, deleted, numbers) = parse_index_value(&value, found_at)?;
        Ok(Some(Found {
            revision: found_at,
            sub,
            deleted,
            numbers,
        }))
    }

    /// The numbers of `key`'s version as of `revision`, unless it is absent
    /// then; reads the index only.
    pub fn numbers(&self, key: &[u8], revision: u64) -> io::Result<Option<Numbers>> {
        Ok(self
            .find(key, revision)?
            .filter(|found| !found.deleted)
            .map(|found| found.numbers))
    }

    fn row(&self, revision: u64, sub: u32) -> io::Result<Option<Row>> {
        match self.revs.get(row_key(revision, sub)).map_err(sled_err)? {
            Some(bytes) => Ok(Some(Row::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// `key` as of `revision`: its newest version at or before it, unless
    /// that is a delete. A version the index names but `revs` lacks was
    /// removed by a compaction meanwhile: `Ok(None)` with `lost` set.
    pub fn get(&self, key: &[u8], revision: u64) -> io::Result<Lookup> {
        let Some(found) = self.find(key, revision)? else {
            return Ok(Lookup::Absent);
        };
        if found.deleted {
            return Ok(Lookup::Absent);
        }
        Ok(match self.row(found.revision, found.sub)? {
            Some(row) => row
                .into_key_value(found.revision)
                .map_or(Lookup::Absent, Lookup::Found),
            None => Lookup::Lost,
        })
    }

    /// Up to `limit` keys starting with `prefix` and greater than
    /// `start_after` as of `revision`, in key order, and whether more follow.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: &[u8],
        limit: usize,
        revision: u64,
    ) -> io::Result<(Vec<KeyValue>, bool, bool)> {
        let mut escaped_prefix = Vec::with_capacity(prefix.len() + 2);
        escape(prefix, &mut escaped_prefix);
        let mut from = Bound::Included(escaped_prefix.clone());
        if !start_after.is_empty() {
            let past = index_key(start_after, 0);
            if past > escaped_prefix {
                from = Bound::Excluded(past);
            }
        }
        let mut pairs = Vec::new();
        let mut lost = false;
        loop {
            let Some(item) = self.index.range((from.clone(), Bound::Unbounded)).next() else {
                return Ok((pairs, false, lost));
            };
            let (indexed, _) = item.map_err(sled_err)?;
            if !indexed.starts_with(&escaped_prefix) {
                return Ok((pairs, false, lost));
            }
            let (key, _) = split_index_key(&indexed)?;
            // Past every version of this key, whatever happens below.
            from = Bound::Excluded(index_key(&key, 0));
            match self.get(&key, revision)? {
                Lookup::Absent => {}
                Lookup::Lost => lost = true,
                Lookup::Found(kv) => {
                    if pairs.len() == limit {
                        return Ok((pairs, true, lost));
                    }
                    pairs.push(kv);
                }
            }
        }
    }

    /// Writes one version of `row.key` at `revision`/`sub`. Writing the
    /// same row twice (a replay) leaves one.
    pub fn write(&self, revision: u64, sub: u32, row: &Row) -> io::Result<()> {
        self.insert(&self.revs, &row_key(revision, sub), &row.encode())?;
        self.insert(
            &self.index,
            &index_key(&row.key, revision),
            &index_value(sub, row),
        )
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
            let is = |found: &Option<Found>| {
                found
                    .as_ref()
                    .is_some_and(|f| f.revision == revision && f.sub == sub)
            };
            if revision <= compacted
                && (row.value.is_none() || !is(&self.find(&row.key, compacted)?))
            {
                continue;
            }
            let live = row.value.is_some() && is(&self.find(&row.key, through)?);
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
        let mut removed = 0;
        let range = row_key(done + 1, 0)..=row_key(compact, u32::MAX);
        let mut last_revision = done;
        for (looked, item) in self.revs.range(range).enumerate() {
            let (key, value) = item.map_err(sled_err)?;
            let (revision, sub) = split_row_key(&key)?;
            // Whole revisions only, so what is returned is exact.
            if looked >= max_rows && revision != last_revision {
                return Ok((last_revision, removed));
            }
            last_revision = revision;
            let row = Row::decode(&value)?;
            let newest = self.find(&row.key, compact)?;
            let is_newest = newest
                .as_ref()
                .is_some_and(|n| n.revision == revision && n.sub == sub);
            if !is_newest {
                // A later version at or before `compact` replaces it; the
                // index entry may already name that later sub (same revision).
                if newest.as_ref().is_none_or(|n| n.revision != revision) {
                    self.remove(&self.index, &index_key(&row.key, revision))?;
                }
                self.remove(&self.revs, &key)?;
                removed += 1;
                continue;
            }
            // The newest version at `compact`: every older one goes (those
            // before `done` survived earlier compactions as the newest then).
            let older = (
                Bound::Excluded(index_key(&row.key, revision)),
                Bound::Included(index_key(&row.key, 0)),
            );
            for old in self.index.range::<Vec<u8>, _>(older) {
                let (indexed, old_value) = old.map_err(sled_err)?;
                let (_, old_revision) = split_index_key(&indexed)?;
                let (old_sub, _, _) = parse_index_value(&old_value, old_revision)?;
                self.remove(&self.revs, &row_key(old_revision, old_sub))?;
                self.remove(&self.index, &indexed)?;
                removed += 1;
            }
            if row.value.is_none() {
                self.remove(&self.revs, &key)?;
                self.remove(&self.index, &index_key(&row.key, revision))?;
                removed += 1;
            }
        }
        Ok((compact, removed))
    }

    /// Removes every row and index entry of a revision after `revision`
    /// (walks the whole index: for recovery, not for the running store).
    /// Returns how many rows went.
    pub fn truncate_after(&self, revision: u64) -> io::Result<usize> {
        for item in self.index.iter() {
            let (indexed, _) = item.map_err(sled_err)?;
            if split_index_key(&indexed)?.1 > revision {
                self.remove(&self.index, &indexed)?;
            }
        }
        let mut removed = 0;
        for item in self.revs.range(row_key(revision + 1, 0)..) {
            let (key, _) = item.map_err(sled_err)?;
            self.remove(&self.revs, &key)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes every row and index entry.
    pub fn clear(&self) -> io::Result<()> {
        self.revs.clear().map_err(sled_err)?;
        self.index.clear().map_err(sled_err)?;
        self.size.set_key_space(0);
        Ok(())
    }

    /// How many rows the history holds (walks the tree).
    pub fn row_count(&self) -> usize {
        self.revs.len()
    }
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
