//! The revisioned store seen from clients: reads at one revision (no
//! transaction seen half done, paged scans of one state), per-key
//! revisions, and reads before the compaction point refused.

use raftkv_client::CallError;
use raftkv_client::Client;
use raftkv_proto::pb;
use raftkv_proto::pb::txn_op::Op;
use raftkv_proto::COMPACT_REVISION_METADATA;
use raftkv_proto::CURRENT_REVISION_METADATA;
use raftkv_proto::REASON_METADATA;
use raftkv_testkit::TestCluster;
use tonic::Code;

use crate::support::put;

/// Keys one transaction moves together.
const MOVED_KEYS: usize = 10;
/// Transactions each writer commits.
const TRANSACTIONS_PER_WRITER: usize = 60;

fn put_op(key: String, value: &str) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(Op::Put(pb::PutRequest {
            lease: 0,
            key: key.into_bytes(),
            value: value.into(),
        })),
    }
}

async fn scan(
    kv: &Client,
    prefix: &str,
    start_after: &str,
    limit: u32,
    stale: bool,
    revision: u64,
) -> Result<pb::ScanResponse, CallError> {
    kv.scan(pb::ScanRequest {
        prefix: prefix.into(),
        limit,
        start_after: start_after.into(),
        stale,
        revision,
    })
    .await
}

async fn get_at(kv: &Client, key: &str, revision: u64) -> Result<pb::GetResponse, CallError> {
    kv.get_with(pb::GetRequest {
        key: key.into(),
        stale: false,
        revision,
    })
    .await
}

fn metadata(error: &CallError, key: &str) -> String {
    let status = error
        .status()
        .unwrap_or_else(|| panic!("no node answered: {error:?}"));
    status
        .metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{key} missing from {status:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_moving_ten_keys_are_never_seen_half_done_on_any_node() {
    let cluster = TestCluster::start(3).await;
    cluster.wait_for_agreed_leader().await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..2 {
        let kv = cluster.nodes[writer].client();
        writers.push(tokio::spawn(async move {
            for n in 0..TRANSACTIONS_PER_WRITER {
                let value = format!("w{writer}-{n}");
                let ops = (0..MOVED_KEYS)
                    .map(|k| put_op(format!("m/{k}"), &value))
                    .collect();
                kv.txn(pb::TxnRequest {
                    compares: vec![],
                    success: ops,
                    failure: vec![],
                })
                .await
                .unwrap_or_else(|e| panic!("txn {value}: {e}"));
            }
        }));
    }
    let mut readers = Vec::new();
    for node in 0..3 {
        // Linearizable scans (forwarded to the leader) and stale ones (this
        // node's own state), alternately.
        let kv = cluster.nodes[node].client();
        let done = done.clone();
        readers.push(tokio::spawn(async move {
            let (mut scans, mut seen_moved, mut mixed) = (0, 0, Vec::new());
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let stale = scans % 2 == 1;
                let page = scan(&kv, "m/", "", 100, stale, 0)
                    .await
                    .unwrap_or_else(|e| panic!("scan: {e}"));
                scans += 1;
                let values: Vec<_> = page.pairs.iter().map(|p| p.value.clone()).collect();
                if values.is_empty() {
                    continue;
                }
                seen_moved += 1;
                let all_mod: Vec<_> = page.pairs.iter().map(|p| p.mod_revision).collect();
                if values.len() != MOVED_KEYS
                    || values.iter().any(|v| *v != values[0])
                    || all_mod.iter().any(|m| *m != all_mod[0])
                {
                    mixed.push((page.applied_index, values));
                }
            }
            (scans, seen_moved, mixed)
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    for (node, reader) in readers.into_iter().enumerate() {
        let (scans, seen_moved, mixed) = reader.await.unwrap();
        assert!(
            mixed.is_empty(),
            "node {}: {} of {scans} scans saw two transactions at once, e.g. {:?}",
            node + 1,
            mixed.len(),
            mixed.first()
        );
        total += seen_moved;
    }
    assert!(
        total > 0,
        "no scan ran while the transactions moved the keys"
    );
    // Every write of one transaction shares its revision.
    let kv = cluster.nodes[0].client();
    let page = scan(&kv, "m/", "", 100, false, 0).await.unwrap();
    assert_eq!(page.pairs.len(), MOVED_KEYS);
    assert!(page
        .pairs
        .iter()
        .all(|p| p.version == 2 * TRANSACTIONS_PER_WRITER as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_scan_at_one_revision_reads_one_state_while_writes_go_on() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_agreed_leader().await;
    let kv = cluster.nodes[leader as usize - 1].client();
    let mut created = Vec::new();
    for i in 0..50 {
        created.push(put(&kv, &format!("p/{i:02}"), "old").await);
    }
    let first = scan(&kv, "p/", "", 10, false, 0).await.unwrap();
    let revision = first.applied_index;
    assert!(first.more && revision >= created[49]);
    // Everything changes after the first page.
    for i in 0..50 {
        if i % 5 == 0 {
            kv.delete(format!("p/{i:02}")).await.unwrap();
        } else {
            put(&kv, &format!("p/{i:02}"), "new").await;
        }
    }
    // The rest of the pages, at the first page's revision, on a follower too
    // (once it has applied that far: a stale read at a revision it has not
    // reached is refused).
    cluster.wait_applied(revision).await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap().id;
    for (node, stale) in [(leader, false), (follower, true)] {
        let kv = cluster.nodes[node as usize - 1].client();
        let mut pairs = Vec::new();
        let mut after = String::new();
        loop {
            let page = scan(&kv, "p/", &after, 10, stale, revision)
                .await
                .unwrap_or_else(|e| panic!("node {node}: {e}"));
            assert_eq!(page.applied_index, revision);
            after = String::from_utf8(page.pairs.last().unwrap().key.clone()).unwrap();
            pairs.extend(page.pairs);
            if !page.more {
                break;
            }
        }
        assert_eq!(pairs.len(), 50, "node {node}");
        for (i, pair) in pairs.iter().enumerate() {
            assert_eq!(pair.value, b"old", "node {node}, key {i}");
            assert_eq!(
                (pair.create_revision, pair.mod_revision, pair.version),
                (created[i], created[i], 1)
            );
        }
    }
    // The newest state: deleted keys are gone, the others at version 2.
    let now = scan(&kv, "p/", "", 100, false, 0).await.unwrap();
    assert_eq!(now.pairs.len(), 40);
    assert!(now
        .pairs
        .iter()
        .all(|p| p.value == b"new" && p.version == 2));
    let one = get_at(&kv, "p/01", revision).await.unwrap();
    assert_eq!((one.value.as_slice(), one.version), (&b"old"[..], 1));
    let one = get_at(&kv, "p/01", 0).await.unwrap();
    assert_eq!((one.value.as_slice(), one.version), (&b"new"[..], 2));
    assert_eq!(one.create_revision, created[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_outside_the_history_are_refused_with_where_it_is() {
    let cluster = TestCluster::start(1).await;
    cluster.wait_for_leader().await;
    let kv = cluster.nodes[0].client();
    let before = put(&kv, "c/k", "1").await;
    let after = put(&kv, "c/k", "2").await;
    let admin = cluster.nodes[0].client();
    let compacted = admin.compact(after).await.unwrap();
    assert_eq!(compacted.revision, after);
    for status in [
        get_at(&kv, "c/k", before).await.unwrap_err(),
        scan(&kv, "c/", "", 10, false, before).await.unwrap_err(),
        admin.compact(before).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Some(Code::OutOfRange), "{status:?}");
        assert_eq!(metadata(&status, REASON_METADATA), "compacted");
        assert_eq!(
            metadata(&status, COMPACT_REVISION_METADATA),
            after.to_string()
        );
    }
    // At the compaction point itself: served.
    let kept = get_at(&kv, "c/k", after).await.unwrap();
    assert_eq!(kept.value, b"2");
    let future = compacted.index + 100;
    for status in [
        get_at(&kv, "c/k", future).await.unwrap_err(),
        admin.compact(future).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Some(Code::OutOfRange), "{status:?}");
        assert_eq!(metadata(&status, REASON_METADATA), "future-revision");
        let current: u64 = metadata(&status, CURRENT_REVISION_METADATA)
            .parse()
            .unwrap();
        assert!(current >= compacted.index && current < future);
    }
    // A transaction writing one key twice is refused whole.
    let status = kv
        .txn(pb::TxnRequest {
            compares: vec![],
            success: vec![put_op("c/k".into(), "3"), put_op("c/k".into(), "4")],
            failure: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Some(Code::InvalidArgument), "{status:?}");
    assert_eq!(get_at(&kv, "c/k", 0).await.unwrap().value, b"2");
}
