//! Releases and the cluster version on a cluster of this release alone (the
//! upgrade from the previous release is hammer's `test_upgrade`), and the
//! call that needs the versioned log: `DeletePrefix`.

use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use tonic::Code;

use crate::support::put;
use crate::support::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_runs_at_its_release_and_the_leader_knows_each_members() {
    let mut cluster = TestCluster::start(3).await;
    let ours = env!("CARGO_PKG_VERSION");
    let major_minor = ours.rsplit_once('.').expect("major.minor.patch").0;
    for node in &cluster.nodes {
        let status = wait_for(
            &format!("node {} at the cluster version", node.id),
            || async {
                let status = node.status().await?;
                (status.cluster_version == major_minor).then_some(status)
            },
        )
        .await;
        assert_eq!(status.version, ours);
    }
    let leader = cluster.wait_for_leader().await;
    let node = cluster.node(leader);
    let peers = wait_for("the leader heard every peer's release", || async {
        let status = node.status().await?;
        let peers = status.peers;
        peers
            .iter()
            .all(|peer| peer.version == major_minor)
            .then_some(peers)
    })
    .await;
    assert_eq!(peers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_prefix_removes_the_keys_under_it_at_one_revision() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let node = cluster.node(leader);
    let ours = env!("CARGO_PKG_VERSION");
    let major_minor = ours.rsplit_once('.').expect("major.minor.patch").0;
    wait_for("the cluster version", || async {
        let status = node.status().await?;
        (status.cluster_version == major_minor).then_some(())
    })
    .await;
    let client = node.client();
    let start = put(&client, "dir/a", "1").await;
    put(&client, "dir/b/c", "2").await;
    put(&client, "dir", "kept: the prefix itself is not under dir/").await;
    put(&client, "dis", "kept").await;
    let mut events = watch(&client, "di", start).await.expect("watch");

    // Through a follower, which forwards it to the leader.
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");
    let answer = follower
        .client()
        .delete_prefix("dir/")
        .await
        .expect("delete prefix");
    assert_eq!(answer.deleted, 2);
    for (key, found) in [
        ("dir/a", false),
        ("dir/b/c", false),
        ("dir", true),
        ("dis", true),
    ] {
        let value = client.get(key).await.expect("get");
        assert_eq!(value.is_some(), found, "{key}");
    }
    // Nothing under it: deletes nothing, still at a revision of its own.
    let again = client.delete_prefix("dir/").await.expect("delete prefix");
    assert_eq!(again.deleted, 0);
    assert!(again.index > answer.index);

    // Watchers see both deletes at the one index.
    let mut deletes = Vec::new();
    while deletes.len() < 2 {
        let message = events
            .message()
            .await
            .expect("watch stream")
            .expect("watch open");
        deletes.extend(
            message
                .events
                .into_iter()
                .filter(|e| e.kind == pb::EventKind::Delete as i32)
                .map(|e| (e.key, e.index)),
        );
    }
    assert_eq!(
        deletes,
        [
            (b"dir/a".to_vec(), answer.index),
            (b"dir/b/c".to_vec(), answer.index)
        ]
    );

    // An empty prefix would empty the store: refused, nothing deleted.
    let refused = client.delete_prefix("").await.unwrap_err();
    match refused.error {
        raftkv_client::ClientError::Rpc(status) => {
            assert_eq!(status.code(), Code::InvalidArgument)
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(client.get("dis").await.expect("get").is_some());
}
