//! Unit tests of the lease table: its stored encoding, and revokes that
//! return exactly their keys and replay alike; a temporary sled each.

use super::*;

#[test]
fn the_table_round_trips_and_refuses_what_a_node_never_writes() {
    let leases = vec![(3, 10), (9, MAX_TTL_SECONDS)];
    let mut data = Vec::new();
    encode_table(&leases, &mut data).unwrap();
    data.extend_from_slice(b"rest");
    assert_eq!(decode_table(&data).unwrap(), (leases.clone(), &b"rest"[..]));
    for len in 0..4 + 32 {
        assert!(decode_table(&data[..len]).is_err(), "cut at {len}");
    }
    for bad in [
        vec![(0, 10)],
        vec![(3, 10), (3, 10)],
        vec![(4, 10), (3, 10)],
        vec![(3, 0)],
        vec![(3, MAX_TTL_SECONDS + 1)],
    ] {
        let mut data = Vec::new();
        encode_table(&bad, &mut data).unwrap();
        assert!(decode_table(&data).is_err(), "{bad:?} accepted");
    }
    // A count larger than the data can hold is refused before allocating.
    assert!(decode_table(&[0xff, 0xff, 0xff, 0xff]).is_err());
}

#[test]
fn a_revoke_returns_exactly_its_keys_and_replays_alike() {
    let dir = tempfile::TempDir::new().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let trees = LeaseTrees::open(&db).unwrap();
    trees.grant(7, 5, 7).unwrap();
    trees.grant(8, 5, 8).unwrap();
    for key in [&b"a"[..], b"b", b"c"] {
        trees.attach(7, key).unwrap();
    }
    trees.attach(8, b"z").unwrap();
    trees.attach(7, b"a").unwrap();
    trees.detach(7, b"b").unwrap();
    trees.detach(7, b"b").unwrap();
    let info = trees.info(7).unwrap().unwrap();
    assert_eq!((info.ttl, info.keys, info.key_bytes), (5, 2, 2 * 17));
    assert_eq!(trees.count(), 2);
    assert_eq!(trees.keys(7, 1).unwrap(), (vec![b"a".to_vec()], true));
    let carried = Some(vec![b"a".to_vec(), b"c".to_vec()]);
    assert_eq!(trees.revoke(7, 20).unwrap(), carried);
    // The same revoke again (a replay) finds the same keys; entries
    // before it still see the lease, entries after it do not.
    assert_eq!(trees.revoke(7, 20).unwrap(), carried);
    assert!(trees.live_at(7, 19).unwrap().is_some());
    assert!(trees.live_at(7, 21).unwrap().is_none());
    assert_eq!(trees.revoke(7, 21).unwrap(), None);
    trees.forget_keys(7).unwrap();
    assert_eq!(trees.info(7).unwrap(), None);
    assert_eq!(trees.all().unwrap(), vec![(8, 5)]);
    assert_eq!(trees.count(), 1);
    assert_eq!(trees.keys(8, 10).unwrap(), (vec![b"z".to_vec()], false));
    assert_eq!(trees.keys(7, 10).unwrap(), (vec![], false));
    // Once compaction passes the revoke, the row goes.
    assert_eq!(trees.remove_revoked(19).unwrap(), 0);
    assert_eq!(trees.remove_revoked(20).unwrap(), 1);
    assert_eq!(trees.revoke(7, 20).unwrap(), None);
    // Back to revision 10: lease 12 was granted after it, lease 9's
    // revoke at 11 had not happened; the index starts from no keys.
    trees.grant(9, 5, 9).unwrap();
    trees.grant(12, 5, 12).unwrap();
    trees.revoke(9, 11).unwrap();
    trees.revoke(12, 13).unwrap();
    trees.reset_to(10).unwrap();
    assert_eq!(trees.all().unwrap(), vec![(8, 5), (9, 5)]);
    assert_eq!(trees.count(), 2);
    assert_eq!(trees.info(8).unwrap().unwrap().keys, 0);
    assert_eq!(trees.keys(8, 10).unwrap(), (vec![], false));
    // A row written by an earlier version (24 bytes) is a live lease.
    let mut old = [0u8; 24];
    old[..8].copy_from_slice(&30u64.to_be_bytes());
    trees.leases.insert(9u64.to_be_bytes(), &old).unwrap();
    assert_eq!(trees.ttl(9).unwrap(), Some(30));
}

#[test]
fn recovery_drops_leases_by_the_revision_that_granted_them_not_by_their_id() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let trees = LeaseTrees::open(&db).unwrap();
    // A client's id far above the revisions, granted at revision 3; a
    // server-chosen one granted at 9; one loaded from a snapshot.
    trees.grant(1 << 40, 5, 3).unwrap();
    trees.grant(9, 5, 9).unwrap();
    trees.grant(2, 5, 0).unwrap();
    trees.reset_to(5).unwrap();
    let ids: Vec<u64> = trees.all().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [2, 1 << 40]);
    assert_eq!(trees.count(), 2);
}

#[test]
fn lease_rows_of_earlier_versions_read_with_their_id_as_their_grant() {
    let db = sled::Config::new().temporary(true).open().unwrap();
    let leases = db.open_tree("leases").unwrap();
    // 32 bytes: TTL 5, no keys, live; no grant revision.
    let mut row = [0u8; 32];
    row[..8].copy_from_slice(&5u64.to_be_bytes());
    leases.insert(7u64.to_be_bytes(), &row).unwrap();
    leases.insert(12u64.to_be_bytes(), &row).unwrap();
    let trees = LeaseTrees::open(&db).unwrap();
    trees.reset_to(10).unwrap();
    let ids: Vec<u64> = trees.all().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        [7],
        "the lease granted at 12 (its id) is after revision 10"
    );
}
