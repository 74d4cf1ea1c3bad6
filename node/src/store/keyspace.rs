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

use std::io;
use std::ops::Bound;
use std::sync::Arc;

use super::size::pair_bytes;
use super::size::StoreSize;

/// A key's version as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created the key (its first write since it was absent).
    pub create_revision: u64,
    /// The revision of its last write.
    pub mod_revision: u64,
    /// Writes since it was created, this one included (1 on creation).
    pub version: u64,
    /// The lease it is attached to (0: none).
    pub lease: u64,
}

/// One version of one key, as `revs` stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: Vec<u8>,
    /// `None`: the key was deleted at this revision (a tombstone).
    pub value: Option<Vec<u8>>,
    pub create_revision: u64,
    pub version: u64,
    pub lease: u64,
}

/// One row with where it sits, as a snapshot transfer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub revision: u64,
    pub sub: u32,
    pub row: Row,
    /// Whether it is its key's live version at the snapshot's revision.
    pub live: bool,
}

/// Why a read at a revision cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The revision is older than the compaction point: its history is gone.
    #[error("revision {asked} is compacted; the oldest revision kept is {compacted}")]
    Compacted { asked: u64, compacted: u64 },
    /// The revision is not applied here yet.
    #[error("revision {asked} is in the future; the newest revision here is {current}")]
    Future { asked: u64, current: u64 },
    /// The node is replacing its state with a snapshot from the leader.
    #[error("this node is installing a snapshot")]
    Installing,
    /// Local storage failed.
    #[error("storage error")]
    Io(#[from] io::Error),
}

/// For callers that only pass a failure on: storage errors as they were,
/// the other refusals wrapped.
impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> io::Error {
        match e {
            ReadError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

const ROW_FORMAT: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;
/// Ends an escaped key; sorts below the escape of a 0 byte (`0x00 0xff`).
const TERMINATOR: [u8; 2] = [0x00, 0x01];

/// The key with every 0 byte written as `0x00 0xff`, so no escaped key
/// contains the terminator and escaped keys sort as the keys do.
fn escape(key: &[u8], out: &mut Vec<u8>) {
    for &byte in key {
        out.push(byte);
        if byte == 0 {
            out.push(0xff);
        }
    }
}

/// `key_index`'s key for `key` at `revision`: the revision inverted, so a
/// key's newest version sorts first. `index_key(key, u64::MAX)` is the
/// smallest index key of `key`, `index_key(key, 0)` the largest.
fn index_key(key: &[u8], revision: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 12);
    escape(key, &mut out);
    out.extend_from_slice(&TERMINATOR);
    out.extend_from_slice(&(!revision).to_be_bytes());
    out
}

/// `revs`' key of one row.
pub fn row_key(revision: u64, sub: u32) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(&revision.to_be_bytes());
    out[8..].copy_from_slice(&sub.to_be_bytes());
    out
}

fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed {what}"))
}

/// The user key and revision of an index key.
fn split_index_key(indexed: &[u8]) -> io::Result<(Vec<u8>, u64)> {
    let bad = || malformed("key index entry");
    let (escaped, revision) = indexed.split_last_chunk::<8>().ok_or_else(bad)?;
    let escaped = escaped.strip_suffix(&TERMINATOR).ok_or_else(bad)?;
    let mut key = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&byte) = bytes.next() {
        key.push(byte);
        if byte == 0 && bytes.next() != Some(&0xff) {
            return Err(bad());
        }
    }
    Ok((key, !u64::from_be_bytes(*revision)))
}

fn split_row_key(key: &[u8]) -> io::Result<(u64, u32)> {
    let key: &[u8; 12] = key.try_into().map_err(|_| malformed("row key"))?;
    let (revision, sub) = key.split_at(8);
    Ok((
        u64::from_be_bytes(revision.try_into().map_err(|_| malformed("row key"))?),
        u32::from_be_bytes(sub.try_into().map_err(|_| malformed("row key"))?),
    ))
}

impl Row {
    /// ```text
    /// format u8 (1), kind u8 (0 put, 1 delete), create_revision u64 BE,
    /// version u64 BE, lease u64 BE, key length u32 BE, key, value
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let value = self.value.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(30 + self.key.len() + value.len());
        out.push(ROW_FORMAT);
        out.push(if self.value.is_some() {
            KIND_PUT
        } else {
            KIND_DELETE
        });
        out.extend_from_slice(&self.create_revision.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.lease.to_be_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(value);
        out
    }

    /// Reads what [`Row::encode`] wrote; anything else is `InvalidData`.
    pub fn decode(bytes: &[u8]) -> io::Result<Row> {
        let bad = || malformed("stored row");
        let (&[format, kind], rest) = bytes.split_first_chunk::<2>().ok_or_else(bad)?;
        if format != ROW_FORMAT || kind > KIND_DELETE {
            return Err(bad());
        }
        let mut numbers = [0u64; 3];
        let mut rest = rest;
        for number in &mut numbers {
            let (bytes, tail) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
            *number = u64::from_be_bytes(*bytes);
            rest = tail;
        }
        let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len || (kind == KIND_DELETE && rest.len() != len) {
            return Err(bad());
        }
        let (key, value) = rest.split_at(len);
        Ok(Row {
            key: key.to_vec(),
            value: (kind == KIND_PUT).then(|| value.to_vec()),
            create_revision: numbers[0],
            version: numbers[1],
            lease: numbers[2],
        })
    }

    /// The key-value this row makes visible, written at `revision`.
    pub fn into_key_value(self, revision: u64) -> Option<KeyValue> {
        Some(KeyValue {
            value: self.value?,
            key: self.key,
            create_revision: self.create_revision,
            mod_revision: revision,
            version: self.version,
            lease: self.lease,
        })
    }

    /// Roughly what the row takes in a message.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + 48
    }
}

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

/// A live version's numbers, as the index holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbers {
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    pub lease: u64,
}

const INDEX_VALUE_BYTES: usize = 29;

fn index_value(sub: u32, row: &Row) -> [u8; INDEX_VALUE_BYTES] {
    let mut value = [0u8; INDEX_VALUE_BYTES];
    value[..4].copy_from_slice(&sub.to_be_bytes());
    value[4] = if row.value.is_some() {
        KIND_PUT
    } else {
        KIND_DELETE
    };
    value[5..13].copy_from_slice(&row.create_revision.to_be_bytes());
    value[13..21].copy_from_slice(&row.version.to_be_bytes());
    value[21..].copy_from_slice(&row.lease.to_be_bytes());
    value
}

/// The sub-revision, whether it is a delete, and the numbers.
fn parse_index_value(value: &[u8], revision: u64) -> io::Result<(u32, bool, Numbers)> {
    let bytes: &[u8; INDEX_VALUE_BYTES] =
        value.try_into().map_err(|_| malformed("key index value"))?;
    let number = |at: usize| {
        let mut n = [0; 8];
        n.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(n)
    };
    let sub = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let numbers = Numbers {
        create_revision: number(5),
        mod_revision: revision,
        version: number(13),
        lease: number(21),
    };
    Ok((sub, bytes[4] == KIND_DELETE, numbers))
}

fn sled_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
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
mod tests {
    use super::*;

    fn space() -> (sled::Db, KeySpace) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let space = KeySpace::open(&db, Arc::default()).unwrap();
        (db, space)
    }

    #[test]
    fn the_counted_bytes_follow_writes_compaction_and_truncation() {
        let (_db, space) = space();
        let counted = |space: &KeySpace| space.size.key_space();
        for revision in 1..=20 {
            put(
                &space,
                revision,
                0,
                format!("k{}", revision % 3).as_bytes(),
                b"value",
                1,
            );
        }
        delete(&space, 21, 0, b"k0");
        // A replay writes the same rows again: counted once.
        put(&space, 20, 0, b"k2", b"value", 1);
        let written = counted(&space);
        assert_eq!(space.recount().unwrap(), written);
        space.compact_step(0, 21, usize::MAX).unwrap();
        assert!(counted(&space) < written / 4, "history went");
        assert_eq!(space.recount().unwrap(), counted(&space));
        put(&space, 22, 0, b"k5", b"value", 1);
        let before = counted(&space);
        space.truncate_after(21).unwrap();
        assert!(counted(&space) < before);
        assert_eq!(space.recount().unwrap(), counted(&space));
        space.clear().unwrap();
        assert_eq!(counted(&space), 0);
    }

    fn put(space: &KeySpace, revision: u64, sub: u32, key: &[u8], value: &[u8], version: u64) {
        let row = Row {
            key: key.to_vec(),
            value: Some(value.to_vec()),
            create_revision: revision + 1 - version,
            version,
            lease: 0,
        };
        space.write(revision, sub, &row).unwrap();
    }

    fn delete(space: &KeySpace, revision: u64, sub: u32, key: &[u8]) {
        let row = Row {
            key: key.to_vec(),
            value: None,
            create_revision: 0,
            version: 0,
            lease: 0,
        };
        space.write(revision, sub, &row).unwrap();
    }

    fn value_at(space: &KeySpace, key: &[u8], revision: u64) -> Option<Vec<u8>> {
        space.get(key, revision).unwrap().found().map(|kv| kv.value)
    }

    fn keys_at(space: &KeySpace, prefix: &[u8], revision: u64) -> Vec<Vec<u8>> {
        let (pairs, more, lost) = space.scan(prefix, b"", 100, revision).unwrap();
        assert!(!more && !lost);
        pairs.into_iter().map(|kv| kv.key).collect()
    }

    #[test]
    fn truncating_leaves_exactly_the_state_at_a_revision() {
        let (_db, space) = space();
        put(&space, 1, 0, b"a", b"1", 1);
        put(&space, 2, 0, b"a", b"2", 2);
        put(&space, 2, 1, b"b", b"1", 1);
        delete(&space, 3, 0, b"a");
        put(&space, 3, 1, b"c", b"1", 1);
        assert_eq!(space.truncate_after(1).unwrap(), 4);
        assert_eq!(value_at(&space, b"a", 9), Some(b"1".to_vec()));
        assert_eq!(keys_at(&space, b"", 9), vec![b"a".to_vec()]);
        assert_eq!(space.row_count(), 1);
    }

    #[test]
    fn escaped_keys_sort_as_keys_and_round_trip() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"ab", b"\xff",
        ];
        for pair in keys.windows(2) {
            assert!(
                index_key(pair[0], 0) < index_key(pair[1], u64::MAX),
                "{pair:?}"
            );
        }
        for key in keys {
            assert_eq!(
                split_index_key(&index_key(key, 7)).unwrap(),
                (key.to_vec(), 7)
            );
        }
        assert!(split_index_key(b"a\0\x02\x01xxxxxxxx").is_err());
    }

    #[test]
    fn rows_round_trip_and_refuse_garbage() {
        let row = Row {
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
            create_revision: 3,
            version: 2,
            lease: 9,
        };
        assert_eq!(Row::decode(&row.encode()).unwrap(), row);
        let tomb = Row {
            value: None,
            ..row.clone()
        };
        assert_eq!(Row::decode(&tomb.encode()).unwrap(), tomb);
        let encoded = row.encode();
        for len in 0..encoded.len() - 1 {
            assert!(Row::decode(&encoded[..len]).is_err(), "cut at {len}");
        }
        let mut tomb_with_value = tomb.encode();
        tomb_with_value.push(1);
        assert!(Row::decode(&tomb_with_value).is_err());
    }

    #[test]
    fn reads_see_one_revision() {
        let (_db, space) = space();
        put(&space, 2, 0, b"a", b"a2", 1);
        put(&space, 2, 1, b"b", b"b2", 1);
        put(&space, 5, 0, b"a", b"a5", 2);
        delete(&space, 5, 1, b"b");
        put(&space, 7, 0, b"a\0", b"nul", 1);
        assert_eq!(value_at(&space, b"a", 1), None);
        assert_eq!(value_at(&space, b"a", 4), Some(b"a2".to_vec()));
        assert_eq!(value_at(&space, b"a", 5), Some(b"a5".to_vec()));
        assert_eq!(value_at(&space, b"b", 4), Some(b"b2".to_vec()));
        assert_eq!(value_at(&space, b"b", 5), None);
        assert_eq!(keys_at(&space, b"", 4), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            keys_at(&space, b"a", 9),
            vec![b"a".to_vec(), b"a\0".to_vec()]
        );
        assert_eq!(keys_at(&space, b"a\0", 9), vec![b"a\0".to_vec()]);
        let kv = space.get(b"a", 9).unwrap().found().unwrap();
        // The row as written (this fixture derives create from version).
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (4, 5, 2));
        // Pages: after "a", one at a time.
        let (page, more, _) = space.scan(b"", b"a", 1, 4).unwrap();
        assert_eq!((page[0].key.as_slice(), more), (&b"b"[..], false));
        let (page, more, _) = space.scan(b"", b"", 1, 9).unwrap();
        assert_eq!((page[0].key.as_slice(), more), (&b"a"[..], true));
    }

    #[test]
    fn reads_at_a_revision_stay_put_while_writes_go_on() {
        let (_db, space) = space();
        for key in 0..20u32 {
            put(&space, 1, key, &key.to_be_bytes(), b"1", 1);
        }
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for revision in 2..400u64 {
                    for key in 0..20u32 {
                        put(
                            &space,
                            revision,
                            key,
                            &key.to_be_bytes(),
                            b"later",
                            revision,
                        );
                    }
                }
            });
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..200 {
                        let (pairs, more, lost) = space.scan(b"", b"", 100, 1).unwrap();
                        assert!(!more && !lost);
                        assert_eq!(pairs.len(), 20);
                        assert!(pairs
                            .iter()
                            .all(|kv| kv.value == b"1" && kv.mod_revision == 1));
                    }
                });
            }
        });
        assert_eq!(
            value_at(&space, &7u32.to_be_bytes(), 399),
            Some(b"later".to_vec())
        );
    }

    #[test]
    fn history_comes_in_whole_revisions() {
        let (_db, space) = space();
        put(&space, 2, 0, b"a", b"1", 1);
        put(&space, 2, 1, b"b", b"1", 1);
        put(&space, 3, 0, b"a", b"2", 2);
        let revisions = |(rows, complete): (Vec<(u64, Row)>, bool)| {
            (
                rows.into_iter().map(|(r, _)| r).collect::<Vec<_>>(),
                complete,
            )
        };
        assert_eq!(
            revisions(space.history(0, 9, 1).unwrap()),
            (vec![2, 2], false)
        );
        assert_eq!(revisions(space.history(3, 9, 1).unwrap()), (vec![3], true));
        assert_eq!(
            revisions(space.history(0, 2, 1 << 20).unwrap()),
            (vec![2, 2], true)
        );
    }

    #[test]
    fn compaction_keeps_the_newest_version_at_its_revision() {
        let (_db, space) = space();
        put(&space, 2, 0, b"a", b"a2", 1);
        put(&space, 2, 1, b"b", b"b2", 1);
        put(&space, 3, 0, b"a", b"a3", 2);
        delete(&space, 4, 0, b"b");
        put(&space, 5, 0, b"c", b"c5", 1);
        put(&space, 6, 0, b"a", b"a6", 3);
        // In steps of one row.
        let mut done = 0;
        while done < 4 {
            (done, _) = space.compact_step(done, 4, 1).unwrap();
        }
        assert_eq!(value_at(&space, b"a", 4), Some(b"a3".to_vec()));
        assert_eq!(value_at(&space, b"a", 6), Some(b"a6".to_vec()));
        assert_eq!(value_at(&space, b"b", 4), None);
        assert_eq!(value_at(&space, b"c", 5), Some(b"c5".to_vec()));
        // a@3, c@5, a@6 remain.
        assert_eq!(space.row_count(), 3);
        // The next compaction starts where this one stopped and still drops a@3.
        let (done, removed) = space.compact_step(4, 6, 100).unwrap();
        assert_eq!((done, removed), (6, 1));
        assert_eq!(space.row_count(), 2);
        assert_eq!(space.index.len(), 2);
    }
}
