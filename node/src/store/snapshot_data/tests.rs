//! Unit tests of the snapshot data format: each format round-trips or loads
//! as documented, and malformed data is refused.

use super::*;

fn kv(key: &[u8], value: &[u8], create: u64, modified: u64, version: u64, lease: u64) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease,
    }
}

fn encode(leases: &[(u64, u64)], keys: &[KeyValue]) -> Vec<u8> {
    let mut encoder = Encoder::new(leases).unwrap();
    for key in keys {
        encoder.push(key).unwrap();
    }
    encoder.take()
}

fn version(revision: u64, sub: u32, key: &[u8], value: Option<&[u8]>, live: bool) -> Version {
    let put = value.is_some();
    Version {
        revision,
        sub,
        row: Row {
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
            create_revision: if put { 1 } else { 0 },
            version: u64::from(put),
            lease: 0,
        },
        live,
    }
}

fn encode_history(leases: &[(u64, u64)], compacted: u64, versions: &[Version]) -> Vec<u8> {
    encode_history_at(Release::FIRST, leases, compacted, versions)
}

fn encode_history_at(
    cluster_version: Release,
    leases: &[(u64, u64)],
    compacted: u64,
    versions: &[Version],
) -> Vec<u8> {
    let mut encoder =
        Encoder::with_history(leases, &[3, 7], (0xc1, cluster_version), compacted).unwrap();
    for version in versions {
        encoder.push_version(version).unwrap();
    }
    encoder.take()
}

#[test]
fn the_cluster_version_travels_from_0_2_on_and_older_formats_stay_what_0_1_reads() {
    let versions = vec![version(3, 0, b"a", Some(b"1"), true)];
    // At the first release's cluster version: v6, which 0.1 nodes read.
    let v6 = encode_history_at(Release::FIRST, &[], 2, &versions);
    assert_eq!(&v6[..SNAPSHOT_V6.len()], SNAPSHOT_V6);
    assert_eq!(decode(&v6).unwrap().cluster_version, None);
    // From 0.2 on: v7, the same with the version after the cluster id.
    let v7 = encode_history_at(Release::new(0, 2), &[], 2, &versions);
    assert_eq!(&v7[..SNAPSHOT_V7.len()], SNAPSHOT_V7);
    assert_eq!(v7.len(), v6.len() + 8);
    let decoded = decode(&v7).unwrap();
    assert_eq!(decoded.cluster_version, Some(Release::new(0, 2)));
    assert_eq!(decoded.cluster_id, 0xc1);
    assert_eq!(decoded.versions, versions);
    assert_eq!(check(&v7, 3).unwrap(), 1);
    // A format newer than this release reads is refused, not read as
    // records without a marker.
    let mut v8 = v7.clone();
    v8[4] = NEWEST_FORMAT + 1;
    let refused = decode(&v8).unwrap_err();
    assert!(refused.to_string().contains("upgrade"), "{refused}");
}

#[test]
fn history_round_trips_with_its_compaction_point() {
    let mut leased = version(6, 0, b"b", Some(b"2"), true);
    leased.row.lease = 5;
    let versions = vec![
        version(3, 0, b"a", Some(b"1"), false),
        version(4, 0, b"a", None, false),
        version(4, 1, b"c", Some(b"x"), true),
        leased,
    ];
    let data = encode_history(&[(5, 30)], 3, &versions);
    let decoded = decode(&data).unwrap();
    assert_eq!(decoded.compacted, Some(3));
    assert_eq!(decoded.alarms, vec![3, 7]);
    assert_eq!(decoded.cluster_id, 0xc1);
    assert_eq!(decoded.leases, vec![(5, 30)]);
    assert_eq!(decoded.versions, versions);
    // What earlier leaders sent: v5, the same without the cluster id.
    let cluster_id_at = SNAPSHOT_V6.len() + 8 + (4 + 16) + (4 + 2 * 8);
    let mut v5 = SNAPSHOT_V5.to_vec();
    v5.extend_from_slice(&data[SNAPSHOT_V6.len()..cluster_id_at]);
    v5.extend_from_slice(&data[cluster_id_at + 8..]);
    let earlier = decode(&v5).unwrap();
    assert_eq!(earlier.cluster_id, 0, "not carried");
    assert_eq!(earlier.versions, versions);
    assert_eq!(earlier.alarms, vec![3, 7]);
    assert_eq!(decoded.keys.len(), 2);
    assert_eq!(check(&data, 6).unwrap(), 2, "live keys");
    assert!(check(&data, 5).is_err(), "written after the snapshot");
    assert!(
        check(&encode_history(&[], 7, &[]), 6).is_err(),
        "compacted after the snapshot"
    );
    // The format checks structure: a cut inside a record is refused; a
    // cut between records is the stream trailer's to catch.
    let boundaries: Vec<usize> = (0..=versions.len())
        .map(|n| encode_history(&[(5, 30)], 3, &versions[..n]).len())
        .collect();
    for cut in 1..data.len() {
        match boundaries.iter().position(|&b| b == cut) {
            Some(n) => assert_eq!(decode(&data[..cut]).unwrap().versions.len(), n),
            None => assert!(decode(&data[..cut]).is_err(), "cut at {cut}"),
        }
    }
}

#[test]
fn history_refuses_impossible_rows() {
    let mut bad_lease = version(2, 0, b"a", Some(b"1"), true);
    bad_lease.row.lease = 9;
    let mut bad_delete = version(2, 0, b"a", None, false);
    bad_delete.row.version = 1;
    let mut bad_create = version(2, 0, b"a", Some(b"1"), true);
    bad_create.row.create_revision = 3;
    let cases: Vec<(&str, u64, Vec<Version>)> = vec![
        ("a live key on a lease not held", 0, vec![bad_lease]),
        ("a delete with numbers", 0, vec![bad_delete]),
        ("created after it was written", 0, vec![bad_create]),
        (
            "a delete at or before the compaction point",
            2,
            vec![version(2, 0, b"a", None, false)],
        ),
        (
            "rows out of order",
            0,
            vec![
                version(3, 0, b"a", Some(b"1"), true),
                version(2, 0, b"b", Some(b"1"), true),
            ],
        ),
        (
            "a row twice",
            0,
            vec![
                version(3, 0, b"a", Some(b"1"), true),
                version(3, 0, b"b", Some(b"1"), true),
            ],
        ),
    ];
    for (what, compacted, versions) in cases {
        assert!(
            decode(&encode_history(&[], compacted, &versions)).is_err(),
            "{what}"
        );
    }
    let mut data = encode_history(&[], 0, &[version(3, 0, b"a", Some(b"1"), true)]);
    // marker, compaction point, empty lease table, two alarms, cluster id,
    // then the record's revision and sub.
    data[SNAPSHOT_V6.len() + 8 + 4 + 4 + 16 + 8 + 12] = 7;
    assert!(decode(&data).is_err(), "an unknown kind");
}

#[test]
fn round_trips_and_rejects_garbage() {
    let keys = vec![
        kv(b"", b"empty key", 2, 5, 3, 0),
        kv(b"a", b"1", 6, 6, 1, 6),
    ];
    let data = encode(&[(6, 30)], &keys);
    let decoded = decode(&data).unwrap();
    assert_eq!(decoded.leases, vec![(6, 30)]);
    assert_eq!(decoded.keys, keys);
    assert_eq!(check(&data, 6).unwrap(), 2);
    assert!(check(&data, 5).is_err(), "written after the snapshot");
    assert!(decode(&data[..data.len() - 1]).is_err());
    assert!(decode(&[0, 0, 0, 9, 1]).is_err());
    // A key attached to a lease the table does not hold.
    assert!(decode(&encode(&[(8, 30)], &[kv(b"a", b"1", 1, 1, 1, 7)])).is_err());
    // Impossible revisions.
    for bad in [
        kv(b"a", b"", 0, 1, 1, 0),
        kv(b"a", b"", 3, 2, 1, 0),
        kv(b"a", b"", 1, 1, 0, 0),
    ] {
        assert!(
            decode(&encode(&[], std::slice::from_ref(&bad))).is_err(),
            "{bad:?}"
        );
    }
    // Keys out of order or repeated.
    for keys in [[&b"b"[..], b"a"], [b"a", b"a"]] {
        let keys: Vec<_> = keys.iter().map(|k| kv(k, b"v", 1, 1, 1, 0)).collect();
        assert!(decode(&encode(&[], &keys)).is_err(), "{keys:?}");
    }
}

#[test]
fn earlier_formats_load_with_revision_one_for_every_key() {
    let before = |lease| kv(b"k", b"v", BEFORE_REVISIONS, BEFORE_REVISIONS, 1, lease);
    // The third format: lease table, values behind a header.
    let value = record::encode(9, 4, b"v");
    let len = (value.len() as u32).to_be_bytes();
    let mut v3 = SNAPSHOT_V3.to_vec();
    leases::encode_table(&[(4, 30)], &mut v3).unwrap();
    v3.extend_from_slice(&[0, 0, 0, 1, b'k']);
    v3.extend_from_slice(&len);
    v3.extend_from_slice(&value);
    assert_eq!(decode(&v3).unwrap().keys, vec![before(4)]);
    // The second: no table, so no lease either.
    let plain = record::encode(9, 0, b"v");
    let len = (plain.len() as u32).to_be_bytes();
    let v2 = [SNAPSHOT_V2, &[0, 0, 0, 1, b'k'], &len, &plain].concat();
    assert_eq!(decode(&v2).unwrap().keys, vec![before(0)]);
    // The first: bare values, no marker.
    let v1 = [&[0, 0, 0, 1, b'k', 0, 0, 0, 1][..], b"v"].concat();
    assert_eq!(decode(&v1).unwrap().keys, vec![before(0)]);
}
