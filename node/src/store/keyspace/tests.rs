//! Unit tests of the key space: the row encoding, reads at a
//! revision, history, compaction, truncation and the counted bytes; a
//! temporary sled each.

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

/// Compaction over many sled leaves (a leaf holds at most 17 rows), twice
/// and in small steps, with deletes and two writes in some revisions,
/// against a model: what remains is exactly the newest live version of each
/// key at the compaction point plus every later version, and the bytes stay
/// counted.
#[test]
fn compaction_across_many_leaves_keeps_exactly_what_reads_need() {
    use std::collections::BTreeMap;
    let (_db, space) = space();
    // Per key, every version written: (revision, sub, value or delete).
    type Versions = Vec<(u64, u32, Option<Vec<u8>>)>;
    let mut model: BTreeMap<Vec<u8>, Versions> = BTreeMap::new();
    let mut next = 7u64;
    for revision in 1..=3000u64 {
        let writes = if revision.is_multiple_of(5) { 2 } else { 1 };
        for sub in 0..writes {
            next = next
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let key = format!("k{:02}", (next >> 33) % 40).into_bytes();
            let versions = model.entry(key.clone()).or_default();
            if versions.last().is_some_and(|(r, _, _)| *r == revision) {
                continue; // one write per key and revision
            }
            if next.is_multiple_of(7) {
                delete(&space, revision, sub, &key);
                versions.push((revision, sub, None));
            } else {
                let value = format!("v{revision}.{sub}").into_bytes();
                let version =
                    versions.iter().rev().take_while(|v| v.2.is_some()).count() as u64 + 1;
                put(&space, revision, sub, &key, &value, version);
                versions.push((revision, sub, Some(value)));
            }
        }
    }
    // Two compactions: the second drops versions the first kept.
    let (mut done, mut steps) = (0, 0);
    for compact in [1000, 2000] {
        while done < compact {
            (done, _) = space.compact_step(done, compact, 64).unwrap();
            steps += 1;
        }
    }
    assert!(steps > 20, "compacted in {steps} steps");
    let compact = 2000;
    let mut expected_rows = 0;
    for (key, versions) in &model {
        let at_compact = versions.iter().rev().find(|v| v.0 <= compact);
        if at_compact.is_some_and(|v| v.2.is_some()) {
            expected_rows += 1;
        }
        expected_rows += versions.iter().filter(|v| v.0 > compact).count();
        assert_eq!(
            value_at(&space, key, compact),
            at_compact.and_then(|v| v.2.clone()),
            "{key:?} at the compaction point"
        );
        for revision in [compact + 1, 2500, 3000] {
            let newest = versions.iter().rev().find(|v| v.0 <= revision);
            assert_eq!(
                value_at(&space, key, revision),
                newest.and_then(|v| v.2.clone()),
                "{key:?} at {revision}"
            );
        }
    }
    assert_eq!(space.row_count(), expected_rows);
    assert_eq!(space.recount().unwrap(), space.size.key_space());
}

#[test]
fn buffered_rows_read_back_before_and_after_they_reach_the_tree() {
    let (_db, space) = space();
    put(&space, 1, 0, b"a", b"one", 1);
    let mut rows = RowBuffer::default();
    let row = |value: &[u8], version| Row {
        key: b"a".to_vec(),
        value: Some(value.to_vec()),
        create_revision: 1,
        version,
        lease: 0,
    };
    let write = |rows: &mut RowBuffer, revision, value: &[u8]| {
        let row = row(value, revision);
        space.write_buffered(revision, 0, &row, rows).unwrap();
    };
    write(&mut rows, 2, b"two");
    write(&mut rows, 3, b"three");
    let value = |rows: &RowBuffer, revision| {
        space
            .get_buffered(b"a", revision, rows)
            .unwrap()
            .found()
            .map(|kv| kv.value)
    };
    assert_eq!(value(&rows, 1), Some(b"one".to_vec()));
    assert_eq!(value(&rows, 3), Some(b"three".to_vec()));
    // Not in the tree yet: a reader without the buffer finds the index
    // naming a row that is not there.
    assert_eq!(space.get(b"a", 3).unwrap(), Lookup::Lost);
    let counted = space.size.key_space();
    space.flush_rows(&mut rows).unwrap();
    assert_eq!(value_at(&space, b"a", 2), Some(b"two".to_vec()));
    assert_eq!(value_at(&space, b"a", 3), Some(b"three".to_vec()));
    assert!(space.size.key_space() > counted);
    assert_eq!(space.recount().unwrap(), space.size.key_space());
    // A row written out of order (a replay of an earlier revision) sends
    // what was buffered to the tree first, and stays readable.
    write(&mut rows, 5, b"five");
    write(&mut rows, 4, b"four");
    assert_eq!(value_at(&space, b"a", 5), Some(b"five".to_vec()));
    space.flush_rows(&mut rows).unwrap();
    assert_eq!(value_at(&space, b"a", 4), Some(b"four".to_vec()));
}

/// The vendored sled's sorted writes (`apply_sorted`), as the store uses
/// them: runs of rows appended at one end and removed from the other,
/// through many leaf splits, against a plain map; then read back from disk.
#[test]
fn sorted_writes_and_removals_match_a_map_and_survive_a_reopen() {
    let dir = tempfile::TempDir::new().unwrap();
    let open = || sled::Config::new().path(dir.path()).open().unwrap();
    let mut model = std::collections::BTreeMap::new();
    {
        let db = open();
        let tree = db.open_tree("t").unwrap();
        let mut next = 0u64;
        let mut oldest = 0u64;
        for round in 0..300u64 {
            let run = 1 + round % 37;
            let ops: Vec<_> = (next..next + run)
                .map(|i| {
                    (
                        i.to_be_bytes(),
                        Some(sled::IVec::from(vec![i as u8; 100 + (i % 300) as usize])),
                    )
                })
                .collect();
            let before = tree.apply_sorted(&ops).unwrap();
            assert!(before.iter().all(Option::is_none));
            for (key, value) in &ops {
                model.insert(key.to_vec(), value.clone().unwrap().to_vec());
            }
            next += run;
            // Every third round removes a run from the front, some keys
            // of it already gone.
            if round % 3 == 2 {
                let gone: Vec<_> = (oldest..oldest + 2 * run)
                    .filter(|i| i % 5 != 0 || round % 2 == 0)
                    .map(|i| (i.to_be_bytes(), None))
                    .collect();
                let before = tree.apply_sorted(&gone).unwrap();
                for ((key, _), old) in gone.iter().zip(before) {
                    assert_eq!(old.map(|v| v.to_vec()), model.remove(key.as_slice()));
                }
                oldest += 2 * run;
            }
            // A sparse run: every seventh key of the older half, as a
            // compaction removes rows here and there.
            if round % 5 == 4 {
                let gone: Vec<_> = (oldest..(oldest + next) / 2)
                    .filter(|i| i % 7 == round % 7)
                    .map(|i| (i.to_be_bytes(), None))
                    .collect();
                let before = tree.apply_sorted(&gone).unwrap();
                for ((key, _), old) in gone.iter().zip(before) {
                    assert_eq!(old.map(|v| v.to_vec()), model.remove(key.as_slice()));
                }
            }
            // An overwrite in the middle, over keys that exist.
            if round % 7 == 6 {
                let middle = (oldest + next) / 2;
                let ops: Vec<_> = (middle..middle + 3)
                    .map(|i| (i.to_be_bytes(), Some(sled::IVec::from(&b"over"[..]))))
                    .collect();
                let before = tree.apply_sorted(&ops).unwrap();
                for ((key, value), old) in ops.iter().zip(before) {
                    let key = key.to_vec();
                    assert_eq!(old.map(|v| v.to_vec()), model.get(&key).cloned());
                    model.insert(key, value.clone().unwrap().to_vec());
                }
            }
        }
        let unsorted = [(2u64.to_be_bytes(), None), (1u64.to_be_bytes(), None)];
        assert!(tree.apply_sorted(&unsorted).is_err());
        let found: Vec<_> = tree
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert_eq!(found, model.clone().into_iter().collect::<Vec<_>>());
        db.flush().unwrap();
    }
    let db = open();
    let tree = db.open_tree("t").unwrap();
    let found: Vec<_> = tree
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
        .collect();
    assert_eq!(found, model.into_iter().collect::<Vec<_>>());
    let backwards: Vec<_> = tree.iter().rev().map(|kv| kv.unwrap().0.to_vec()).collect();
    assert_eq!(backwards.len(), found.len());
    assert!(backwards.windows(2).all(|w| w[0] > w[1]));
}

/// Sorted writes racing, as the apply and the compaction race on `revs`:
/// one thread appends runs at the right end while another removes runs
/// (dense and sparse) behind it, so leaves split, empty and merge under
/// both. Every key ends as exactly one of them left it, also after a
/// reopen.
#[test]
fn sorted_appends_and_removals_racing_lose_nothing() {
    const KEYS: u64 = 60_000;
    let dir = tempfile::TempDir::new().unwrap();
    let open = || sled::Config::new().path(dir.path()).open().unwrap();
    // Dense runs (two keys in three) and sparse ones (one in eight) by turns.
    let removed = |i: u64| {
        i < KEYS - 2_000
            && if (i / 64).is_multiple_of(2) {
                !i.is_multiple_of(3)
            } else {
                i.is_multiple_of(8)
            }
    };
    {
        let db = open();
        let tree = db.open_tree("t").unwrap();
        let written = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut next = 0;
                while next < KEYS {
                    let end = (next + 1 + next % 29).min(KEYS);
                    let ops: Vec<_> = (next..end)
                        .map(|i| {
                            (
                                i.to_be_bytes(),
                                Some(sled::IVec::from(&i.to_le_bytes()[..])),
                            )
                        })
                        .collect();
                    tree.apply_sorted(&ops).unwrap();
                    next = end;
                    written.store(next, std::sync::atomic::Ordering::Release);
                }
            });
            scope.spawn(|| {
                let mut from = 0;
                while from < KEYS - 2_000 {
                    let behind = written.load(std::sync::atomic::Ordering::Acquire);
                    let to = behind.saturating_sub(100).min(KEYS - 2_000);
                    if to <= from {
                        std::thread::yield_now();
                        continue;
                    }
                    let ops: Vec<_> = (from..to)
                        .filter(|i| removed(*i))
                        .map(|i| (i.to_be_bytes(), None))
                        .collect();
                    let before = tree.apply_sorted(&ops).unwrap();
                    assert!(
                        before.iter().all(Option::is_some),
                        "removed what was written"
                    );
                    from = to;
                }
            });
        });
        db.flush().unwrap();
    }
    let db = open();
    let tree = db.open_tree("t").unwrap();
    let found: Vec<u64> = tree
        .iter()
        .map(|kv| {
            let (key, value) = kv.unwrap();
            let key = u64::from_be_bytes(key.as_ref().try_into().unwrap());
            assert_eq!(value.as_ref(), key.to_le_bytes());
            key
        })
        .collect();
    let expected: Vec<u64> = (0..KEYS).filter(|i| !removed(*i)).collect();
    assert_eq!(found, expected);
}
