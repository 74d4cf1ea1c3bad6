//! Leases: keys attached by Put, CompareAndSwap and transactions, deleted at
//! one index when the lease is revoked or expires; keep-alives through a
//! follower and across a leader kill; a new leader never expires early;
//! leases survive restarts, crashes and snapshots.

use std::time::Duration;
use std::time::Instant;

use raftkv_client::lease::keep_alive;
use raftkv_client::CallError;
use raftkv_client::Client;
use raftkv_client::ClientOptions;
use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use raftkv_testkit::PATIENCE;
use tonic::Code;

use crate::support::get;
use crate::support::put;
use crate::support::watch;

async fn grant(kv: &Client, ttl: i64) -> u64 {
    let answer = kv.lease_grant(ttl).await.expect("grant");
    assert_eq!(answer.ttl, ttl);
    assert_ne!(answer.id, 0);
    answer.id
}

async fn put_leased(kv: &Client, key: &str, lease: u64) -> Result<u64, CallError> {
    kv.put_leased(key, format!("{key}-value"), lease)
        .await
        .map(|answer| answer.index)
}

async fn time_to_live(kv: &Client, id: u64) -> Result<pb::LeaseTimeToLiveResponse, CallError> {
    kv.lease_time_to_live(id, true).await
}

async fn lease_of(kv: &Client, key: &str) -> Option<u64> {
    let answer = kv.read(key, false).await.expect("get");
    answer.found.then_some(answer.lease)
}

fn keys(answer: &pb::LeaseTimeToLiveResponse) -> Vec<String> {
    answer
        .keys
        .iter()
        .map(|k| String::from_utf8(k.clone()).unwrap())
        .collect()
}

/// Reads `stream` until `count` events arrived; returns (index, key, is a
/// delete) of each.
async fn events(
    stream: &mut tonic::Streaming<pb::WatchResponse>,
    count: usize,
) -> Vec<(u64, String, bool)> {
    let mut events = Vec::new();
    while events.len() < count {
        let message = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("not ended");
        events.extend(message.events.iter().map(|e| {
            let key = String::from_utf8(e.key.clone()).unwrap();
            (e.index, key, e.kind == pb::EventKind::Delete as i32)
        }));
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_deletes_exactly_the_lease_keys_at_one_index() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap().id;
    // Everything through a follower, which forwards to the leader.
    let kv = cluster.node(follower).client();
    let id = grant(&kv, 60).await;
    let ttl = time_to_live(&kv, id).await.expect("ttl");
    assert_eq!(ttl.granted_ttl, 60);
    assert!((1..=60).contains(&ttl.ttl), "{ttl:?}");
    assert!(ttl.keys.is_empty());

    put_leased(&kv, "l/a", id).await.unwrap();
    put_leased(&kv, "l/b", id).await.unwrap();
    let swapped = kv
        .compare_and_swap_leased("l/c", None, "c", id)
        .await
        .unwrap();
    assert!(swapped.succeeded);
    let in_txn = pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutRequest {
            key: "l/d".into(),
            value: "d".into(),
            lease: id,
        })),
    };
    let answer = kv
        .txn(pb::TxnRequest {
            success: vec![in_txn],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(answer.succeeded);
    put(&kv, "l/e", "no lease").await;
    // A put without a lease detaches the key.
    let last_put = put(&kv, "l/b", "detached").await;
    assert_eq!(lease_of(&kv, "l/a").await, Some(id));
    assert_eq!(lease_of(&kv, "l/b").await, Some(0));
    let ttl = time_to_live(&kv, id).await.unwrap();
    assert_eq!(keys(&ttl), ["l/a", "l/c", "l/d"]);

    // A watcher on another follower sees the three deletes at one index.
    let other = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader && n.id != follower)
        .unwrap()
        .id;
    let mut watcher = watch(&cluster.node(other).client(), "l/", last_put + 1)
        .await
        .expect("watch");
    let revoked = kv.lease_revoke(id).await.unwrap();
    assert_eq!(revoked.keys_deleted, 3);
    let events = events(&mut watcher, 3).await;
    let expected: Vec<_> = ["l/a", "l/c", "l/d"]
        .iter()
        .map(|k| (revoked.index, k.to_string(), true))
        .collect();
    assert_eq!(events, expected, "one entry, exactly the lease's keys");
    for key in ["l/a", "l/c", "l/d"] {
        assert_eq!(get(&kv, key, false).await, None, "{key}");
    }
    assert!(get(&kv, "l/b", false).await.is_some());
    assert!(get(&kv, "l/e", false).await.is_some());

    // The lease is gone for every call that names it.
    let status = kv.lease_revoke(id).await.unwrap_err();
    assert_eq!(status.code(), Some(Code::NotFound), "{status:?}");
    let status = kv.lease_keep_alive(id).await.unwrap_err();
    assert_eq!(status.code(), Some(Code::NotFound), "{status:?}");
    assert_eq!(
        time_to_live(&kv, id).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    cluster.wait_applied(revoked.index).await;
    cluster.assert_replicas_identical().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_naming_a_missing_lease_and_bad_grants_change_nothing() {
    let mut cluster = TestCluster::builder()
        .flags(&["--max-leases", "2"])
        .start(1)
        .await;
    cluster.wait_for_leader().await;
    let kv = cluster.node(1).client();
    let before = put(&kv, "k", "v").await;
    let missing = 999_999;
    let put_status = put_leased(&kv, "k", missing).await.unwrap_err();
    assert_eq!(put_status.code(), Some(Code::NotFound), "{put_status:?}");
    let cas_status = kv
        .compare_and_swap_leased("k", Some("v".into()), "changed", missing)
        .await
        .unwrap_err();
    assert_eq!(cas_status.code(), Some(Code::NotFound), "{cas_status:?}");
    // One put names a missing lease: the whole transaction is refused.
    let ops = vec![
        pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::PutRequest {
                key: "other".into(),
                value: "x".into(),
                lease: 0,
            })),
        },
        pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::PutRequest {
                key: "k".into(),
                value: "x".into(),
                lease: missing,
            })),
        },
    ];
    let txn_status = kv
        .txn(pb::TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(txn_status.code(), Some(Code::NotFound), "{txn_status:?}");
    assert_eq!(get(&kv, "other", false).await, None);
    let stored = kv
        .get_with(pb::GetRequest {
            key: "k".into(),
            stale: false,
            revision: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        (stored.value.as_slice(), stored.modified_index, stored.lease),
        (&b"v"[..], before, 0)
    );

    for ttl in [0, -5, 365 * 24 * 3600 + 1] {
        let status = kv.lease_grant(ttl).await.unwrap_err();
        assert_eq!(
            status.code(),
            Some(Code::InvalidArgument),
            "ttl {ttl}: {status:?}"
        );
    }
    // Lease id 0 means "none" on a put, and names no lease anywhere else.
    let status = kv.lease_revoke(0).await.unwrap_err();
    assert_eq!(status.code(), Some(Code::InvalidArgument), "{status:?}");
    let status = kv.lease_keep_alive(0).await.unwrap_err();
    assert_eq!(status.code(), Some(Code::InvalidArgument), "{status:?}");
    assert_eq!(
        time_to_live(&kv, 0).await.unwrap_err().code(),
        Some(Code::InvalidArgument)
    );
    // --max-leases 2: a third grant waits for a revoke.
    let first = grant(&kv, 30).await;
    grant(&kv, 30).await;
    let status = kv.lease_grant(30).await.unwrap_err();
    assert_eq!(status.code(), Some(Code::ResourceExhausted), "{status:?}");
    kv.lease_revoke(first).await.unwrap();
    grant(&kv, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_left_alone_expires_and_one_kept_alive_does_not() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap().id;
    let kv = cluster.node(follower).client();
    // Renewed through a follower's view of the cluster, every 200 ms.
    let kept = grant(&kv, 2).await;
    let kept_since = Instant::now();
    put_leased(&kv, "y/kept", kept).await.unwrap();
    let client = Client::connect(ClientOptions::new(
        vec![cluster.node(follower).address.clone()],
        PATIENCE,
    ))
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let keeper = tokio::spawn(keep_alive(
        client,
        kept,
        Duration::from_millis(200),
        async {
            let _ = stopped.await;
        },
    ));

    const TTL: u64 = 3;
    // Taken before the grant is sent: the countdown starts after it.
    let granted = Instant::now();
    let left_alone = grant(&kv, TTL as i64).await;
    let mut watcher = watch(&kv, "x/", left_alone + 1).await.expect("watch");
    for key in ["x/a", "x/b"] {
        put_leased(&kv, key, left_alone).await.unwrap();
    }
    // The two puts, then both deletes at the one index of the expiry.
    let seen = events(&mut watcher, 4).await;
    assert!(seen[..2].iter().all(|(_, _, deleted)| !deleted), "{seen:?}");
    let expiry = &seen[2..];
    assert!(
        expiry
            .iter()
            .all(|(index, _, deleted)| *deleted && *index == expiry[0].0),
        "{seen:?}"
    );
    assert!(
        granted.elapsed() >= Duration::from_secs(TTL),
        "expired after {:?}, before its TTL",
        granted.elapsed()
    );
    assert_eq!(
        time_to_live(&kv, left_alone).await.unwrap_err().code(),
        Some(Code::NotFound)
    );
    // The kept lease outlives its TTL twice over.
    wait_for("the kept lease is 5 s old", || async {
        (kept_since.elapsed() >= Duration::from_secs(5)).then_some(())
    })
    .await;
    let ttl = time_to_live(&kv, kept).await.expect("the kept lease lives");
    assert_eq!(keys(&ttl), ["y/kept"]);
    stop.send(()).unwrap();
    let kept_alive = keeper.await.unwrap();
    assert!(kept_alive.lost.is_none(), "{kept_alive:?}");
    assert!(kept_alive.renewals >= 10, "{kept_alive:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_restarts_every_countdown_in_full() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let kv = cluster.node(leader).client();
    const TTL: i64 = 6;
    let unrenewed = grant(&kv, TTL).await;
    put_leased(&kv, "u", unrenewed).await.unwrap();
    let kept = grant(&kv, 6).await;
    put_leased(&kv, "k", kept).await.unwrap();
    let client = cluster.client();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let keeper = tokio::spawn(keep_alive(
        client,
        kept,
        Duration::from_millis(300),
        async {
            let _ = stopped.await;
        },
    ));

    // Kill the leader when the unrenewed lease has 2 s or less left on it.
    wait_for("the unrenewed lease has at most 2 s left", || {
        let kv = kv.clone();
        async move { (time_to_live(&kv, unrenewed).await.ok()?.ttl <= 2).then_some(()) }
    })
    .await;
    // Taken before the kill: the next leader starts counting after it.
    let killed = Instant::now();
    cluster.node(leader).kill();
    let next = cluster.leader_within(PATIENCE, Some(leader)).await;
    let kv = cluster.node(next).client();
    // The new leader counts from at least the kill on, so its countdown
    // ends no earlier than TTL after the kill: never at the old deadline.
    let ttl = wait_for("the new leader answers for the lease", || {
        let kv = kv.clone();
        async move { time_to_live(&kv, unrenewed).await.ok() }
    })
    .await;
    let since_kill = killed.elapsed().as_secs_f64();
    assert!(
        ttl.ttl as f64 >= TTL as f64 - since_kill,
        "{} s left {since_kill:.1} s after the kill: the countdown did not restart in full",
        ttl.ttl
    );
    assert_eq!(keys(&ttl), ["u"]);
    // It still expires, on the new leader's clock.
    wait_for("the unrenewed lease expires", || {
        let kv = kv.clone();
        async move { get(&kv, "u", false).await.is_none().then_some(()) }
    })
    .await;
    assert!(
        killed.elapsed() >= Duration::from_secs(TTL as u64),
        "expired {:?} after the kill",
        killed.elapsed()
    );
    // The lease renewed through the failover lives on, with its key.
    stop.send(()).unwrap();
    let kept_alive = keeper.await.unwrap();
    assert!(kept_alive.lost.is_none(), "{kept_alive:?}");
    assert_eq!(lease_of(&kv, "k").await, Some(kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_restarts_crashes_and_snapshots() {
    let flags = ["--snapshot-after", "20", "--snapshot-keep", "0"];
    let mut cluster = TestCluster::builder().flags(&flags).start(3).await;
    let leader = cluster.wait_for_leader().await;
    let kv = cluster.node(leader).client();
    let id = grant(&kv, 600).await;
    for i in 0..5 {
        put_leased(&kv, &format!("s/{i}"), id).await.unwrap();
    }
    // Enough writes for snapshots that hold the lease table.
    let mut index = 0;
    for i in 0..60 {
        index = put(&kv, &format!("filler/{i}"), "v").await;
    }
    // And a lease with keys after them, most likely only in the log: a
    // crash replays its grant and puts.
    let late = grant(&kv, 600).await;
    for i in 0..2 {
        index = put_leased(&kv, &format!("late/{i}"), late).await.unwrap();
    }
    cluster.wait_applied(index).await;

    // A graceful stop of every node, then a crash of every node: each start
    // rebuilds the same lease table and key index.
    for crash in [false, true] {
        for node in cluster.nodes.iter_mut() {
            if crash {
                node.kill();
            } else {
                assert!(node.stop(), "node {} stopped cleanly", node.id);
            }
        }
        for node in cluster.nodes.iter_mut() {
            node.restart();
        }
        let leader = cluster.wait_for_leader().await;
        let kv = cluster.node(leader).client();
        let ttl = wait_for("the restarted leader answers for the lease", || {
            let kv = kv.clone();
            async move { time_to_live(&kv, id).await.ok() }
        })
        .await;
        assert_eq!(ttl.granted_ttl, 600, "crash: {crash}");
        assert_eq!(keys(&ttl).len(), 5, "crash: {crash}");
        assert_eq!(lease_of(&kv, "s/3").await, Some(id));
        let ttl = time_to_live(&kv, late).await.expect("the late lease");
        assert_eq!(keys(&ttl), ["late/0", "late/1"], "crash: {crash}");
    }

    // A newcomer gets the table by snapshot.
    cluster.add_voter(4).await;
    let leader = cluster.wait_for_leader().await;
    let kv = cluster.node(leader).client();
    let revoked = kv.lease_revoke(id).await.unwrap();
    assert_eq!(revoked.keys_deleted, 5);
    let revoked = kv.lease_revoke(late).await.unwrap();
    assert_eq!(revoked.keys_deleted, 2);
    cluster.wait_applied(revoked.index).await;
    let status = cluster.node(4).status().await.expect("status of node 4");
    assert!(
        status.snapshot_index.unwrap_or(0) > 0,
        "node 4 did not install a snapshot: {status:?}"
    );
    let on_new = cluster.node(4).client();
    assert_eq!(get(&on_new, "s/0", true).await, None);
    assert_eq!(get(&on_new, "late/1", true).await, None);
    assert!(get(&on_new, "filler/0", true).await.is_some());
    cluster.assert_replicas_identical().await;
}
