//! `KV/Txn`: comparisons on several keys, one branch applied atomically at
//! one log index; bounded size; all or nothing across a leader kill.

use std::time::Duration;

use raftkv_client::CallError;
use raftkv_client::Client;
use raftkv_proto::pb;
use raftkv_proto::pb::compare::Check;
use raftkv_proto::pb::txn_op::Op;
use raftkv_proto::pb::txn_op_result::Result as Outcome;
use raftkv_testkit::TestCluster;
use raftkv_testkit::PATIENCE;
use tonic::Code;

use crate::support::get;
use crate::support::put;

fn compare(key: &str, check: Check) -> pb::Compare {
    pb::Compare {
        key: key.into(),
        check: Some(check),
    }
}

fn put_op(key: &str, value: &str) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(Op::Put(pb::PutRequest {
            lease: 0,
            key: key.into(),
            value: value.into(),
        })),
    }
}

fn get_op(key: &str) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(Op::Get(pb::GetRequest {
            key: key.into(),
            stale: false,
            revision: 0,
        })),
    }
}

fn delete_op(key: &str) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(Op::Delete(pb::DeleteRequest { key: key.into() })),
    }
}

async fn txn(
    kv: &Client,
    compares: Vec<pb::Compare>,
    success: Vec<pb::TxnOp>,
    failure: Vec<pb::TxnOp>,
) -> Result<pb::TxnResponse, CallError> {
    kv.txn(pb::TxnRequest {
        compares,
        success,
        failure,
    })
    .await
}

async fn modified_index(kv: &Client, key: &str) -> u64 {
    kv.get_with(pb::GetRequest {
        key: key.into(),
        stale: false,
        revision: 0,
    })
    .await
    .expect("get")
    .modified_index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparisons_on_several_keys_pick_the_branch_applied_at_one_index() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.nodes.iter().find(|n| n.id != leader).unwrap().id;
    // Through a follower: it forwards to the leader.
    let kv = cluster.node(follower).client();
    let at_a = put(&kv, "a", "1").await;
    put(&kv, "b", "2").await;
    assert_eq!(modified_index(&kv, "a").await, at_a);

    let all_hold = vec![
        compare("a", Check::Value("1".into())),
        compare("b", Check::Exists(true)),
        compare("absent", Check::Exists(false)),
        compare("a", Check::ModifiedIndex(at_a)),
        compare("absent", Check::ModifiedIndex(0)),
    ];
    let answer = txn(
        &kv,
        all_hold.clone(),
        vec![
            put_op("a", "10"),
            get_op("b"),
            delete_op("b"),
            get_op("a"),
            put_op("c", "3"),
        ],
        vec![put_op("failure-ran", "x")],
    )
    .await
    .unwrap();
    assert!(answer.succeeded);
    let index = answer.index;
    let results: Vec<_> = answer
        .results
        .into_iter()
        .map(|r| r.result.unwrap())
        .collect();
    assert_eq!(results.len(), 5);
    assert!(matches!(&results[0], Outcome::Put(p) if p.index == index));
    assert!(matches!(&results[1], Outcome::Get(g) if g.found && g.value == b"2"));
    assert!(matches!(&results[2], Outcome::Delete(d) if d.existed && d.index == index));
    // Operations see the ones before them in the same transaction.
    assert!(
        matches!(&results[3], Outcome::Get(g) if g.value == b"10" && g.modified_index == index)
    );
    assert_eq!(get(&kv, "a", false).await.as_deref(), Some(&b"10"[..]));
    assert_eq!(get(&kv, "b", false).await, None);
    assert_eq!(modified_index(&kv, "c").await, index);
    assert_eq!(get(&kv, "failure-ran", false).await, None);

    // The same comparisons again: `a` changed, so the failure branch runs.
    for failing in [
        compare("a", Check::Value("1".into())),
        compare("a", Check::ModifiedIndex(at_a)),
        compare("b", Check::Exists(true)),
        compare("c", Check::ModifiedIndex(0)),
    ] {
        let answer = txn(
            &kv,
            vec![compare("c", Check::Exists(true)), failing],
            vec![put_op("success-ran", "x")],
            vec![get_op("a"), put_op("failure-ran", "y")],
        )
        .await
        .unwrap();
        assert!(!answer.succeeded);
        assert_eq!(answer.results.len(), 2);
    }
    assert_eq!(get(&kv, "success-ran", false).await, None);
    assert_eq!(
        get(&kv, "failure-ran", false).await.as_deref(),
        Some(&b"y"[..])
    );
    // No comparisons: the success branch runs.
    let answer = txn(&kv, vec![], vec![put_op("d", "4")], vec![])
        .await
        .unwrap();
    assert!(answer.succeeded);
    cluster.wait_applied(answer.index).await;
    cluster.assert_replicas_identical().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_limits_is_refused_whole() {
    let mut cluster = TestCluster::start(1).await;
    cluster.wait_for_leader().await;
    let kv = cluster.node(1).client();
    let before = put(&kv, "k", "v").await;
    let many: Vec<_> = (0..129)
        .map(|i| compare(&format!("k{i}"), Check::Exists(false)))
        .collect();
    let big = "x".repeat(2 << 20);
    // Each within the 1 MiB value limit, together over it.
    let medium = "x".repeat(700 << 10);
    let cases = [
        (
            "129 comparisons",
            txn(&kv, many, vec![put_op("k", "changed")], vec![]).await,
        ),
        (
            "129 operations",
            txn(
                &kv,
                vec![],
                (0..129).map(|i| put_op(&format!("k{i}"), "v")).collect(),
                vec![],
            )
            .await,
        ),
        (
            "a comparison without a check",
            txn(
                &kv,
                vec![pb::Compare {
                    key: "k".into(),
                    check: None,
                }],
                vec![put_op("k", "changed")],
                vec![],
            )
            .await,
        ),
        (
            "an empty operation",
            txn(&kv, vec![], vec![pb::TxnOp { op: None }], vec![]).await,
        ),
        (
            "a stale get",
            txn(
                &kv,
                vec![],
                vec![pb::TxnOp {
                    op: Some(Op::Get(pb::GetRequest {
                        key: "k".into(),
                        stale: true,
                        revision: 0,
                    })),
                }],
                vec![],
            )
            .await,
        ),
        (
            "an oversized value in the branch that would not run",
            txn(
                &kv,
                vec![],
                vec![put_op("k", "changed")],
                vec![put_op("k", &big)],
            )
            .await,
        ),
        (
            "an empty key",
            txn(&kv, vec![], vec![put_op("", "v")], vec![]).await,
        ),
        (
            "values that add up to more than one put may hold",
            txn(
                &kv,
                vec![],
                vec![put_op("k", &medium), put_op("k2", &medium)],
                vec![],
            )
            .await,
        ),
        (
            "an oversized value to compare with",
            txn(
                &kv,
                vec![compare("k", Check::Value(big.clone().into()))],
                vec![],
                vec![],
            )
            .await,
        ),
    ];
    for (what, answer) in cases {
        let status = answer.expect_err(what);
        assert_eq!(
            status.code(),
            Some(Code::InvalidArgument),
            "{what}: {status:?}"
        );
    }
    assert_eq!(get(&kv, "k", false).await.as_deref(), Some(&b"v"[..]));
    assert_eq!(
        modified_index(&kv, "k").await,
        before,
        "nothing was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_all_or_nothing_across_a_leader_kill() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let keys: Vec<String> = (0..10).map(|i| format!("t/{i}")).collect();
    // Each round sets all ten keys to its number, if they all hold the
    // previous round's.
    let endpoints: Vec<Client> = cluster.nodes.iter().map(|n| n.client()).collect();
    let writer_keys = keys.clone();
    let writer = tokio::spawn(async move {
        let mut applied = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        // The clients' own pause between retries, while a new leader is elected.
        let mut backoff =
            raftkv_client::Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let mut round = 0u64;
        let mut which = 0;
        while applied.len() < 40 && tokio::time::Instant::now() < deadline {
            let kv = endpoints[which % endpoints.len()].clone();
            let compares = writer_keys
                .iter()
                .map(|k| {
                    if round == 0 {
                        compare(k, Check::Exists(false))
                    } else {
                        compare(k, Check::Value(round.to_string().into()))
                    }
                })
                .collect();
            let next = (round + 1).to_string();
            let ops = writer_keys.iter().map(|k| put_op(k, &next)).collect();
            match txn(&kv, compares, ops, vec![]).await {
                Ok(answer) if answer.succeeded => {
                    round += 1;
                    applied.push(answer.index);
                }
                // A retried round whose first try was applied after all.
                Ok(_) => round += 1,
                Err(_) => {
                    which += 1;
                    backoff.wait(deadline).await;
                }
            }
        }
        applied
    });
    // Let some rounds through, then kill the leader mid-stream.
    let kv = cluster.node(leader).client();
    raftkv_testkit::wait_for("five rounds are applied", || {
        let kv = kv.clone();
        async move {
            let value = get(&kv, "t/0", true).await?;
            let round: u64 = String::from_utf8(value).ok()?.parse().ok()?;
            (round >= 5).then_some(())
        }
    })
    .await;
    cluster.node(leader).kill();
    let applied = writer.await.unwrap();
    assert!(applied.len() >= 10, "the writer made progress: {applied:?}");
    let next = cluster.wait_for_leader().await;
    let kv = cluster.node(next).client();
    let mut values = Vec::new();
    for key in &keys {
        values.push(get(&kv, key, false).await);
    }
    assert!(
        values.iter().all(|v| *v == values[0]),
        "a transaction applied in part: {values:?}"
    );
    // Every surviving replica holds whole transactions only.
    cluster
        .wait_applied(cluster.applied_index(next).await)
        .await;
    let survivors: Vec<u64> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.id)
        .collect();
    for id in survivors {
        let kv = cluster.node(id).client();
        let mut stale = Vec::new();
        for key in &keys {
            stale.push(get(&kv, key, true).await);
        }
        assert!(
            stale.iter().all(|v| *v == stale[0]),
            "node {id} holds part of a transaction: {stale:?}"
        );
        assert_eq!(stale[0], values[0]);
    }
}
