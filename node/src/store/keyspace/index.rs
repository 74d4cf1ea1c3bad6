//! The key index: for every key, the revisions that wrote it, in memory.
//!
//! It is derived from `revs` alone: built by one walk of the rows when the
//! store opens and kept in step by the same calls that write and remove
//! rows. So it costs no disk write per version, it can never disagree with
//! the rows after a crash, and a lookup is a map search instead of a sled
//! range. Its size follows the rows kept: the live keys plus the history
//! that compaction has not removed yet.
//!
//! Readers hold the read lock only for the search itself, never across a
//! row read, so the apply (the only writer) is never held up by a long scan.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;
use std::sync::RwLockWriteGuard;

use super::encoding::Numbers;

/// What the index holds of one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub revision: u64,
    pub sub: u32,
    pub deleted: bool,
    pub create_revision: u64,
    pub version: u64,
    pub lease: u64,
}

impl Entry {
    pub fn numbers(&self) -> Numbers {
        Numbers {
            create_revision: self.create_revision,
            mod_revision: self.revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// Each key's versions, oldest first; a key with none is not in the map.
#[derive(Default)]
pub(super) struct KeyIndex {
    keys: RwLock<BTreeMap<Vec<u8>, Vec<Entry>>>,
}

/// The newest of `versions` at or before `revision`.
fn at(versions: &[Entry], revision: u64) -> Option<Entry> {
    let after = versions.partition_point(|e| e.revision <= revision);
    after.checked_sub(1).map(|i| versions[i])
}

impl KeyIndex {
    // A panic while a lock is held cannot leave the map half changed (every
    // change is one map or vector operation), so a poisoned lock is used as is.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<Entry>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Vec<Entry>>> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a version of `key`; one at the same revision is replaced (a
    /// later write of the same entry, or a replay).
    pub fn insert(&self, key: &[u8], entry: Entry) {
        let mut keys = self.write();
        let versions = match keys.get_mut(key) {
            Some(versions) => versions,
            None => keys.entry(key.to_vec()).or_default(),
        };
        match versions.last() {
            Some(last) if last.revision < entry.revision => versions.push(entry),
            None => versions.push(entry),
            _ => match versions.binary_search_by_key(&entry.revision, |e| e.revision) {
                Ok(i) => versions[i] = entry,
                Err(i) => versions.insert(i, entry),
            },
        }
    }

    /// The newest version of `key` at or before `revision`, deletes included.
    pub fn find(&self, key: &[u8], revision: u64) -> Option<Entry> {
        at(self.read().get(key)?, revision)
    }

    /// The versions at `revision` of the keys between `from` and `to`
    /// (absent keys and deletes left out): up to `max` of them, looking at
    /// no more than `max_looked` keys under one lock; and the last key
    /// looked at, to continue after (`None`: no key is left).
    pub fn live_keys(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        revision: u64,
        max: usize,
        max_looked: usize,
    ) -> (Vec<Entry>, Option<Vec<u8>>) {
        let keys = self.read();
        let mut found = Vec::new();
        let mut last: Option<&Vec<u8>> = None;
        // An empty range (`to` before `from`) would make `range` panic.
        let empty = match (from, to) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
            (Bound::Included(a), Bound::Included(b)) => a > b,
            (Bound::Excluded(a), Bound::Included(b)) => a >= b,
            _ => false,
        };
        if empty {
            return (found, None);
        }
        let range = keys.range::<[u8], _>((from, to));
        for (looked, (key, versions)) in range.enumerate() {
            if found.len() == max || looked == max_looked {
                return (found, last.cloned());
            }
            if let Some(entry) = at(versions, revision).filter(|e| !e.deleted) {
                found.push(entry);
            }
            last = Some(key);
        }
        (found, None)
    }

    /// `key`'s versions before `revision`, oldest first.
    pub fn older(&self, key: &[u8], revision: u64) -> Vec<Entry> {
        self.read().get(key).map_or_else(Vec::new, |versions| {
            let end = versions.partition_point(|e| e.revision < revision);
            versions[..end].to_vec()
        })
    }

    /// Forgets `key`'s version at `revision`, if it has one.
    pub fn remove(&self, key: &[u8], revision: u64) {
        let mut keys = self.write();
        let Some(versions) = keys.get_mut(key) else {
            return;
        };
        if let Ok(i) = versions.binary_search_by_key(&revision, |e| e.revision) {
            versions.remove(i);
        }
        if versions.is_empty() {
            keys.remove(key);
        }
    }

    /// Forgets every version after `revision`.
    pub fn truncate_after(&self, revision: u64) {
        self.write().retain(|_, versions| {
            versions.retain(|e| e.revision <= revision);
            !versions.is_empty()
        });
    }

    pub fn clear(&self) {
        self.write().clear();
    }

    /// How many versions it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.read().values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: u64, sub: u32, deleted: bool) -> Entry {
        Entry {
            revision,
            sub,
            deleted,
            create_revision: 1,
            version: revision,
            lease: 0,
        }
    }

    /// Tells keys apart by their lease.
    fn leased(lease: u64, deleted: bool) -> Entry {
        Entry {
            lease,
            ..entry(2, 0, deleted)
        }
    }

    #[test]
    fn versions_stay_in_revision_order_whatever_the_order_of_writes() {
        let index = KeyIndex::default();
        for revision in [5, 2, 9, 5, 1] {
            index.insert(b"k", entry(revision, 0, false));
        }
        index.insert(b"k", entry(5, 3, false));
        let revisions: Vec<_> = index
            .older(b"k", u64::MAX)
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(revisions, vec![1, 2, 5, 9]);
        assert_eq!(
            index.find(b"k", 6).map(|e| (e.revision, e.sub)),
            Some((5, 3))
        );
        assert_eq!(index.find(b"k", 0), None);
        index.remove(b"k", 5);
        assert_eq!(index.find(b"k", 6).map(|e| e.revision), Some(2));
        index.truncate_after(1);
        assert_eq!(index.len(), 1);
        index.remove(b"k", 1);
        assert_eq!(index.len(), 0);
        assert!(index.read().is_empty(), "a key with no version is gone");
    }

    #[test]
    fn live_keys_skip_deletes_and_stop_where_asked() {
        let index = KeyIndex::default();
        for (key, lease, deleted) in [
            (&b"a1"[..], 1, false),
            (b"a2", 2, true),
            (b"a3", 3, false),
            (b"b", 4, false),
        ] {
            index.insert(key, leased(lease, deleted));
        }
        let names = |found: Vec<Entry>| found.iter().map(|e| e.lease).collect::<Vec<_>>();
        let a = (Bound::Included(&b"a"[..]), Bound::Excluded(&b"b"[..]));
        let (found, last) = index.live_keys(a.0, a.1, 2, 10, 10);
        assert_eq!((names(found), last), (vec![1, 3], None));
        // Nothing at an earlier revision.
        let (found, _) = index.live_keys(a.0, a.1, 1, 10, 10);
        assert!(found.is_empty());
        // Two keys looked at: one found, continue after "a2".
        let (found, last) = index.live_keys(a.0, a.1, 2, 10, 2);
        assert_eq!((names(found), last), (vec![1], Some(b"a2".to_vec())));
        let (found, last) = index.live_keys(Bound::Excluded(b"a2"), a.1, 2, 1, 10);
        assert_eq!((names(found), last), (vec![3], None));
        let (found, last) = index.live_keys(Bound::Unbounded, Bound::Unbounded, 2, 1, 10);
        assert_eq!((names(found), last), (vec![1], Some(b"a1".to_vec())));
        let (found, _) = index.live_keys(Bound::Unbounded, Bound::Unbounded, 2, 10, 10);
        assert_eq!(names(found), vec![1, 3, 4]);
        // Empty and reversed ranges hold nothing.
        let (found, last) =
            index.live_keys(Bound::Included(b"b"), Bound::Excluded(b"a"), 2, 10, 10);
        assert_eq!((names(found), last), (vec![], None));
        let (found, _) = index.live_keys(Bound::Included(b"a3"), Bound::Included(b"a3"), 2, 10, 10);
        assert_eq!(names(found), vec![3]);
    }
}
