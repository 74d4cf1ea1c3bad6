//! Unit tests of the state machine as a whole: reads against compaction and
//! installs, snapshots taken and loaded, crash recovery and conversion on
//! open. Kept in one file over the usual length because most tests drive
//! several parts at once (apply, readers, snapshots, open) through the same
//! helpers, and each reads best beside the others it extends.

use super::*;
use crate::codec::encode;
use crate::store::apply::EntryApply;
use crate::store::keyspace::Lookup;
use crate::store::keyspace::ReadError;
use crate::store::keyspace::RowBuffer;
use crate::store::record;
use crate::store::sm_meta::write_applied;
use crate::store::sm_meta::Applied;
use crate::store::sm_meta::INSTALLING;
use crate::store::sm_meta::KV_FORMAT;
use crate::store::sm_meta::LAST_APPLIED;
use crate::store::sm_meta::REVISIONED;
use crate::store::sm_meta::SPACE_BYTES;
use crate::store::sm_meta::STORE_FORMAT;
use crate::store::snapshot::Incoming;
use crate::store::snapshot::StateAt;
use crate::store::snapshot::INCOMING_PREFIX;
use crate::store::snapshot_data;
use crate::types::Command;
use crate::types::CommandResult;
use crate::types::TypeConfig;

/// Opens the state machine alone in `dir` (retrying while a previous
/// handle's background threads still hold the database lock).
fn open_in(dir: &std::path::Path) -> StateMachineStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => {
                let disk = Arc::new(Disk::new(db.clone(), dir).unwrap());
                return StateMachineStore::open(&db, disk, Arc::default()).unwrap();
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::yield_now();
            }
            Err(e) => panic!("reopen: {e}"),
        }
    }
}

/// Applies `command` at `revision` and publishes it, as `apply` does.
fn apply_at(store: &StateMachineStore, command: Command, revision: u64) -> CommandResult {
    let reader = &store.reader;
    let mut rows = RowBuffer::default();
    let mut apply = EntryApply::new(&reader.space, &reader.leases, &mut rows, revision);
    let result = apply
        .command(command, reader.revisions.compacted())
        .unwrap();
    let compacted = apply
        .effects
        .compact
        .unwrap_or(reader.revisions.compacted());
    let keys = reader
        .revisions
        .key_count()
        .saturating_add_signed(apply.effects.keys_added);
    reader.space.flush_rows(&mut rows).unwrap();
    let log_id = openraft::testing::log_id::<TypeConfig>(1, 1, revision);
    let applied = Applied {
        log_id: Some(log_id),
        compacted,
        keys,
    };
    write_applied(&reader.meta, &applied).unwrap();
    reader.revisions.publish(revision, compacted, keys);
    result
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn keys(store: &StateMachineStore) -> Vec<Vec<u8>> {
    let page = store.reader.scan(b"", b"", 1000, None).unwrap();
    page.pairs.into_iter().map(|kv| kv.key).collect()
}

#[test]
fn reads_at_a_revision_and_refusals_outside_history() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, put("a", "1"), 1);
    apply_at(&store, put("a", "2"), 2);
    let reader = store.reader();
    let value = |at| reader.get(b"a", at).unwrap().0.map(|s| s.value);
    assert_eq!(value(Some(1)), Some(b"1".to_vec()));
    assert_eq!(value(None), Some(b"2".to_vec()));
    assert!(matches!(
        reader.get(b"a", Some(3)),
        Err(ReadError::Future {
            asked: 3,
            current: 2
        })
    ));
    apply_at(&store, Command::Compact { revision: 2 }, 3);
    assert!(matches!(
        reader.get(b"a", Some(1)),
        Err(ReadError::Compacted {
            asked: 1,
            compacted: 2
        })
    ));
    while store.compact_some(1).unwrap() {}
    assert_eq!(value(Some(2)), Some(b"2".to_vec()));
    assert!(
        reader.history(1, 1 << 20).is_err(),
        "history before the compaction"
    );
    let (rows, next) = reader.history(3, 1 << 20).unwrap();
    assert_eq!((rows.len(), next), (0, 4));
}

#[test]
fn reads_and_walks_that_overlap_a_snapshot_install_are_refused() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, put("a", "1"), 1);
    let reader = store.reader();
    let (_, taken) = store.state_now().unwrap();
    let installing = reader.revisions.installing();
    assert!(matches!(reader.get(b"a", None), Err(ReadError::Installing)));
    assert!(matches!(
        reader.scan(b"", b"", 10, None),
        Err(ReadError::Installing)
    ));
    assert!(
        store.state_now().is_err(),
        "no snapshot of a state being replaced"
    );
    assert!(matches!(taken.to_vec(), Err(ReadError::Installing)));
    let epoch = reader.revisions.epoch();
    drop(installing);
    assert!(epoch.is_err());
    // A read that began before an install and ends after it.
    let epoch = reader.revisions.epoch().unwrap();
    drop(reader.revisions.installing());
    assert!(matches!(
        reader.revisions.check_epoch(epoch),
        Err(ReadError::Installing)
    ));
    assert_eq!(reader.get(b"a", None).unwrap().0.unwrap().value, b"1");
}

#[test]
fn a_pinned_revision_keeps_its_rows_through_compaction() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, put("a", "1"), 1);
    let pin = store.reader.revisions.pin(1).unwrap();
    apply_at(&store, put("a", "2"), 2);
    apply_at(&store, Command::Compact { revision: 2 }, 3);
    while store.compact_some(10).unwrap() {}
    assert_eq!(
        store
            .reader
            .space
            .get(b"a", 1)
            .unwrap()
            .found()
            .unwrap()
            .value,
        b"1"
    );
    drop(pin);
    while store.compact_some(10).unwrap() {}
    assert_eq!(store.reader.space.get(b"a", 1).unwrap(), Lookup::Absent);
}

#[test]
fn a_state_taken_for_a_snapshot_streams_whole_after_compaction_passes_it() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, put("a", "1"), 1);
    apply_at(&store, put("b", "1"), 2);
    let (_, state) = store.state_now().unwrap();
    let expected = state.to_vec().unwrap();
    let expected_history = with_history(&state);
    // Both keys change and compaction moves past revision 2 while the
    // snapshot is still being sent.
    apply_at(&store, put("a", "2"), 3);
    apply_at(&store, Command::Delete { key: b"b".to_vec() }, 4);
    apply_at(&store, Command::Compact { revision: 4 }, 5);
    while store.compact_some(1).unwrap() {}
    assert!(
        store.reader.get(b"a", Some(2)).is_err(),
        "compacted for readers"
    );
    assert_eq!(state.to_vec().unwrap(), expected);
    assert_eq!(with_history(&state), expected_history);
    drop(state);
    while store.compact_some(1).unwrap() {}
    assert_eq!(store.reader.space.get(b"b", 2).unwrap(), Lookup::Absent);
}

#[test]
fn the_digest_is_fnv_1a_over_lengths_and_bytes_in_key_order_then_leases() {
    let dir = tempfile::TempDir::new().unwrap();
    let sm = open_in(dir.path());
    assert_eq!(sm.reader.digest().unwrap(), (0xcbf2_9ce4_8422_2325, 0, 0));
    apply_at(&sm, Command::LeaseGrant { ttl_seconds: 30 }, 4);
    apply_at(&sm, put("b", "22"), 5);
    apply_at(
        &sm,
        Command::PutLeased {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            lease: 4,
        },
        6,
    );
    // FNV-1a 64 by hand: offset basis, then xor and multiply per byte.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let be = |n: u64| n.to_be_bytes();
    let (six, four, five, none, one, thirty) = (be(6), be(4), be(5), be(0), be(1), be(30));
    for part in [
        &b"a"[..],
        b"1",
        &six,
        &four,
        &six,
        &one,
        b"b",
        b"22",
        &five,
        &none,
        &five,
        &one,
        &four,
        &thirty,
    ] {
        for byte in (part.len() as u64).to_be_bytes().iter().chain(part) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    assert_eq!(sm.reader.digest().unwrap(), (hash, 2, 6));
}

#[test]
fn snapshots_carry_revisions_and_rebuild_lease_keys() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, Command::LeaseGrant { ttl_seconds: 30 }, 1);
    apply_at(
        &store,
        Command::PutLeased {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            lease: 1,
        },
        2,
    );
    apply_at(&store, put("a", "2"), 3);
    apply_at(&store, put("b", "x"), 4);
    let digest_at_4 = store.reader.digest().unwrap();
    let (meta, state) = store.state_now().unwrap();
    assert_eq!(meta.last_log_id.map(|l| l.index), Some(4));
    // Writes after it do not change it: it is the state at revision 4.
    apply_at(&store, put("c", "later"), 5);
    let data = state.to_vec().unwrap();
    let mut chunks = Vec::new();
    state
        .encode(8, |chunk| {
            chunks.push(chunk);
            Ok(())
        })
        .unwrap();
    assert_eq!(
        chunks.len(),
        2,
        "a piece per record, each longer than 8 bytes"
    );
    assert_eq!(chunks.concat(), data);
    drop(state);
    let other_dir = tempfile::TempDir::new().unwrap();
    let other = open_in(other_dir.path());
    let changes = other.lease_changes();
    other
        .load_snapshot(&other.write_gate().unwrap(), &meta, &data[..])
        .unwrap();
    other.publish().unwrap();
    assert!(changes.has_changed().unwrap(), "the countdowns hear of it");
    assert_eq!(other.reader.digest().unwrap(), digest_at_4);
    assert_eq!(digest_at_4.1, 2, "a and b, not c");
    // History starts after the snapshot.
    assert_eq!(other.reader.revisions.compacted(), 4);
    assert_eq!(
        other.reader.lease_keys(1, 10).unwrap().0,
        Vec::<Vec<u8>>::new()
    );
    let a = other.reader.get(b"a", None).unwrap().0.unwrap();
    assert_eq!((a.created, a.modified, a.version, a.lease), (2, 3, 2, 0));
}

/// A state's encoding with history, whole.
fn with_history(state: &StateAt) -> Vec<u8> {
    let mut data = Vec::new();
    state
        .encode_with_history(8, |chunk| {
            data.extend_from_slice(&chunk);
            Ok(())
        })
        .unwrap();
    data
}

/// Every event from `from` on, as (revision, key, value).
fn events(store: &StateMachineStore, from: u64) -> Vec<(u64, Vec<u8>, Option<Vec<u8>>)> {
    let through = store.reader.revisions.current();
    let (rows, _) = store
        .reader
        .space
        .history(from, through, usize::MAX)
        .unwrap();
    rows.into_iter()
        .map(|(revision, row)| (revision, row.key, row.value))
        .collect()
}

/// The commands of `a_state_sent_with_history_…`, with their revisions.
fn script_with_history() -> Vec<(Command, u64)> {
    vec![
        (Command::LeaseGrant { ttl_seconds: 30 }, 1),
        (put("a", "1"), 2),
        (put("a", "2"), 3),
        (put("b", "1"), 4),
        (Command::Delete { key: b"b".to_vec() }, 5),
        (Command::Compact { revision: 4 }, 6),
        (
            Command::PutLeased {
                key: b"c".to_vec(),
                value: b"x".to_vec(),
                lease: 1,
            },
            7,
        ),
        (Command::Delete { key: b"a".to_vec() }, 8),
        (put("a", "3"), 9),
    ]
}

#[test]
fn a_state_sent_with_history_serves_the_same_reads_and_watches_from_the_compaction_point() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    // Rows compaction dropped may still be in the trees after revision
    // 6: they must not be sent.
    for (command, revision) in script_with_history() {
        apply_at(&store, command, revision);
    }
    let (meta, state) = store.state_now().unwrap();
    assert_eq!(state.compacted(), 4);
    let data = with_history(&state);
    // Compaction goes on while it is sent: the pins keep what it needs.
    apply_at(&store, Command::Compact { revision: 9 }, 10);
    while store.compact_some(1).unwrap() {}
    assert_eq!(with_history(&state), data);
    drop(state);

    let other_dir = tempfile::TempDir::new().unwrap();
    let other = open_in(other_dir.path());
    assert_eq!(snapshot_data::check(&data, 9).unwrap(), 2);
    other
        .load_snapshot(&other.write_gate().unwrap(), &meta, &data[..])
        .unwrap();
    other.publish().unwrap();
    assert_eq!(other.reader.revisions.compacted(), 4, "the sender's");
    assert_eq!(other.reader.key_count(), 2);
    assert_eq!(
        other.reader.lease_keys(1, 10).unwrap().0,
        vec![b"c".to_vec()]
    );
    // Every revision from the compaction point reads the same as on
    // the sender when it was taken.
    let sender_dir = tempfile::TempDir::new().unwrap();
    let sender = open_in(sender_dir.path());
    for (command, revision) in script_with_history() {
        apply_at(&sender, command, revision);
    }
    let walk = |s: &StateMachineStore, revision| {
        let mut keys = Vec::new();
        s.reader
            .walk(revision, |kv| {
                keys.push(kv.clone());
                Ok(())
            })
            .unwrap();
        keys
    };
    for revision in 4..=9 {
        assert_eq!(
            walk(&other, revision),
            walk(&sender, revision),
            "at {revision}"
        );
    }
    assert!(other.reader.get(b"a", Some(3)).is_err(), "compacted");
    assert_eq!(events(&other, 5), events(&sender, 5));
    assert_eq!(events(&other, 5).len(), 4);
    assert_eq!(
        other.reader.digest().unwrap(),
        sender.reader.digest().unwrap()
    );
}

/// Leased keys, a revoke and more, as `apply` writes them.
fn leased(key: &str, lease: u64) -> Command {
    Command::PutLeased {
        key: key.into(),
        value: b"v".to_vec(),
        lease,
    }
}

#[test]
fn after_a_crash_the_state_rolls_back_to_the_applied_revision_and_replays_alike() {
    // Reference: every entry applied once, no crash.
    let script = |revision: u64| match revision {
        1 => Command::LeaseGrant { ttl_seconds: 30 },
        2 => leased("a", 1),
        3 => leased("b", 1),
        4 => put("c", "1"),
        5 => Command::LeaseRevoke {
            id: 1,
            expired: true,
        },
        6 => put("c", "2"),
        7 => Command::LeaseGrant { ttl_seconds: 30 },
        _ => leased("d", 7),
    };
    let reference_dir = tempfile::TempDir::new().unwrap();
    let reference = open_in(reference_dir.path());
    for revision in 1..=8 {
        apply_at(&reference, script(revision), revision);
    }

    // Crashes after every cut of entries 5..=8: the rows of those entries
    // are written (the revoke's among them), `applied` still says 4.
    for applied in 4..8 {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        for revision in 1..=applied {
            apply_at(&store, script(revision), revision);
        }
        let reader = &store.reader;
        for revision in applied + 1..=8 {
            let mut rows = RowBuffer::default();
            let mut apply = EntryApply::new(&reader.space, &reader.leases, &mut rows, revision);
            apply.command(script(revision), 0).unwrap();
            reader.space.flush_rows(&mut rows).unwrap();
        }
        store.disk.sync().unwrap();
        drop(store);
        // No clean stop: rows after `applied` go, derived data is recounted.
        let store = open_in(dir.path());
        assert_eq!(store.reader.revisions.current(), applied);
        // The log replays what `applied` does not cover.
        for revision in applied + 1..=8 {
            apply_at(&store, script(revision), revision);
        }
        assert_eq!(
            store.reader.digest().unwrap(),
            reference.reader.digest().unwrap(),
            "cut after {applied}"
        );
        assert_eq!(store.reader.key_count(), 2, "c and d");
        assert_eq!(
            store.reader.lease_keys(7, 10).unwrap().0,
            vec![b"d".to_vec()]
        );
        assert_eq!(store.reader.lease_ttl(1).unwrap(), None);
        assert_eq!(store.reader.lease_count(), 1);
    }

    // A clean stop keeps the state as it is, and nothing writes after it.
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, put("a", "1"), 4);
    apply_at(&store, put("c", "3"), 8);
    store.close_cleanly().unwrap();
    assert!(store.write_gate().is_err(), "a closed store refuses writes");
    drop(store);
    let store = open_in(dir.path());
    assert_eq!(keys(&store), vec![b"a".to_vec(), b"c".to_vec()]);
    // History survives a restart.
    let (rows, _) = store.reader.history(5, 1 << 20).unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn an_install_cut_short_by_a_crash_is_loaded_again_then_forgotten() {
    let source_dir = tempfile::TempDir::new().unwrap();
    let source = open_in(source_dir.path());
    apply_at(&source, put("a", "1"), 3);
    let (meta, state) = source.state_now().unwrap();
    let data = state.to_vec().unwrap();

    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, put("old", "x"), 1);
    // Received and recorded as the install under way, then the crash:
    // the state was never replaced.
    let mut received = Incoming::from_bytes(dir.path(), &data).unwrap();
    let name = received
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    store
        .reader
        .meta
        .insert(INSTALLING, encode(&(&meta, name)).unwrap())
        .unwrap();
    store.disk.sync().unwrap();
    received.keep();
    // A reception cut short leaves a file too.
    let mut cut = Incoming::create(dir.path()).unwrap();
    cut.write(b"partial").unwrap();
    std::mem::forget(cut);
    drop((store, received));
    let store = open_in(dir.path());
    assert_eq!(keys(&store), vec![b"a".to_vec()]);
    assert_eq!(store.reader.revisions.current(), 3);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(INCOMING_PREFIX))
        .collect();
    assert!(left.is_empty(), "no snapshot file is left behind");
    assert!(store.reader.meta.get(INSTALLING).unwrap().is_none());
    // A whole install leaves nothing behind either.
    let received = Incoming::from_bytes(dir.path(), &data).unwrap();
    store.install_received(&meta, received).unwrap();
    assert_eq!(keys(&store), vec![b"a".to_vec()]);
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(INCOMING_PREFIX))
            .count(),
        0
    );
    // Malformed data is refused before anything changes.
    let bad = Incoming::from_bytes(dir.path(), b"\xff\xff\xff\xff\x04garbage").unwrap();
    assert!(store.install_received(&meta, bad).is_err());
    assert_eq!(keys(&store), vec![b"a".to_vec()]);
}

#[test]
fn the_state_of_the_version_before_revisions_is_converted_on_open() {
    let dir = tempfile::TempDir::new().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        let kv = db.open_tree("kv").unwrap();
        kv.insert(b"k", record::encode(9, 0, b"v")).unwrap();
        let meta = db.open_tree("sm_meta").unwrap();
        meta.insert(KV_FORMAT, &[1]).unwrap();
        meta.insert(CLEAN, &[]).unwrap();
        let applied = Some(openraft::testing::log_id::<TypeConfig>(1, 1, 12));
        meta.insert(LAST_APPLIED, encode(&applied).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = open_in(dir.path());
    let (found, revision) = store.reader.get(b"k", None).unwrap();
    let found = found.unwrap();
    assert_eq!((found.created, found.modified, found.version), (1, 1, 1));
    assert_eq!(revision, 12);
    assert_eq!(store.reader.revisions.compacted(), 12);
    let db = store.database();
    assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"kv"));
    // A newer format is refused.
    store.reader.meta.insert(STORE_FORMAT, &[9]).unwrap();
    store.close_cleanly().unwrap();
    drop((store, db));
    let db = loop {
        if let Ok(db) = sled::open(dir.path()) {
            break db;
        }
        std::thread::yield_now();
    };
    let disk = Arc::new(Disk::new(db.clone(), dir.path()).unwrap());
    let refused = StateMachineStore::open(&db, disk, Arc::default())
        .err()
        .unwrap();
    assert!(refused.to_string().contains("newer raftkv"), "{refused}");
}

#[test]
fn the_key_index_is_rebuilt_from_the_rows_on_open_and_an_index_tree_on_disk_is_dropped() {
    let dir = tempfile::TempDir::new().unwrap();
    let store = open_in(dir.path());
    apply_at(&store, put("a", "1"), 2);
    apply_at(&store, put("b", "1"), 3);
    apply_at(&store, put("a", "2"), 4);
    apply_at(&store, Command::Delete { key: "b".into() }, 5);
    // As the version that kept the index on disk left it after a clean stop:
    // format 3, a `key_index` tree, and a count that included that tree.
    let db = store.database();
    db.open_tree("key_index")
        .unwrap()
        .insert(b"stale", b"x")
        .unwrap();
    store.close_cleanly().unwrap();
    store.reader.meta.insert(STORE_FORMAT, &[3]).unwrap();
    store
        .reader
        .meta
        .insert(SPACE_BYTES, &u64::MAX.to_be_bytes())
        .unwrap();
    db.flush().unwrap();
    drop((store, db));

    let store = open_in(dir.path());
    assert_eq!(keys(&store), vec![b"a".to_vec()]);
    let value_at = |revision| {
        let (found, _) = store.reader.get(b"a", Some(revision)).unwrap();
        found.map(|kv| kv.value)
    };
    assert_eq!(value_at(3), Some(b"1".to_vec()));
    assert_eq!(value_at(5), Some(b"2".to_vec()));
    let (b_at_3, _) = store.reader.get(b"b", Some(3)).unwrap();
    assert!(b_at_3.is_some());
    let db = store.database();
    assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"key_index"));
    let format = store.reader.meta.get(STORE_FORMAT).unwrap().unwrap();
    assert_eq!(format.as_ref(), &[REVISIONED]);
    // The stale count was not trusted.
    let counted = store.size.key_space();
    assert_eq!(store.reader.space.recount().unwrap(), counted);
}
