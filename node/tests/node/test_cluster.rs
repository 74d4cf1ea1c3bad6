//! Three-node clusters: replication, forwarding, leader transfer, leader
//! failure, full restart and catching up by snapshot.

use std::collections::BTreeMap;

use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;

use crate::support::get;
use crate::support::put;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_followers_forward() {
    let mut cluster = TestCluster::start(2).await;
    // The third node joins by itself with --join.
    let address_of_1 = cluster.nodes[0].address.clone();
    cluster.start_node(cluster.node_spec(3).flags(&["--join", &address_of_1]));
    let admin = cluster.nodes[0].admin();
    let voters = wait_for("node 3 joins as a voter", || {
        let mut admin = admin.clone();
        async move {
            let config = admin
                .get_configuration(pb::Empty {})
                .await
                .ok()?
                .into_inner();
            let voters: Vec<u64> = config
                .members
                .iter()
                .filter(|m| m.suffrage == pb::Suffrage::Voter as i32)
                .map(|m| m.id)
                .collect();
            (voters.len() == 3 && config.committed).then_some(voters)
        }
    })
    .await;
    assert_eq!(voters, vec![1, 2, 3]);

    let leader = cluster.wait_for_leader().await;
    let mut on_leader = cluster.node(leader).kv();
    let index = put(&mut on_leader, "color", "blue").await;
    assert!(index > 0);
    cluster.wait_applied(index).await;
    for node in &cluster.nodes {
        let mut kv = node.kv();
        assert_eq!(
            get(&mut kv, "color", true).await.as_deref(),
            Some(&b"blue"[..]),
            "stale read on {}",
            node.id
        );
        assert_eq!(
            get(&mut kv, "color", false).await.as_deref(),
            Some(&b"blue"[..]),
            "read on {}",
            node.id
        );
    }

    // Writes sent to a follower are forwarded to the leader.
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("follower");
    let mut on_follower = follower.kv();
    put(&mut on_follower, "shape", "round").await;
    let deleted = on_follower
        .delete(pb::DeleteRequest {
            key: "color".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.existed);
    let swapped = on_follower
        .compare_and_swap(pb::CompareAndSwapRequest {
            lease: 0,
            key: "shape".into(),
            expected_value: Some("round".into()),
            new_value: "square".into(),
        })
        .await
        .expect("cas")
        .into_inner();
    assert!(swapped.succeeded);
    let refused = on_follower
        .compare_and_swap(pb::CompareAndSwapRequest {
            lease: 0,
            key: "shape".into(),
            expected_value: None,
            new_value: "triangle".into(),
        })
        .await
        .expect("cas")
        .into_inner();
    assert!(!refused.succeeded);
    assert_eq!(refused.current_value.as_deref(), Some(&b"square"[..]));
    assert_eq!(get(&mut on_leader, "color", false).await, None);
    assert_eq!(
        get(&mut on_leader, "shape", false).await.as_deref(),
        Some(&b"square"[..])
    );

    let scan = on_follower
        .scan(pb::ScanRequest {
            prefix: "sh".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("scan")
        .into_inner();
    assert_eq!(scan.pairs.len(), 1);
    assert_eq!(scan.pairs[0].key, b"shape");
    assert!(!scan.more);

    // Every replica holds the same state.
    cluster.wait_applied(refused.index).await;
    let mut digests = BTreeMap::new();
    for node in &cluster.nodes {
        let digest = node
            .admin()
            .state_digest(pb::Empty {})
            .await
            .expect("digest")
            .into_inner();
        digests.insert(node.id, (digest.digest, digest.key_count));
    }
    let distinct: std::collections::BTreeSet<_> = digests.values().collect();
    assert_eq!(distinct.len(), 1, "replicas differ: {digests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_chosen_node() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let target = if leader == 3 { 2 } else { 3 };
    // Sent to any node: followers forward it to the leader.
    let mut admin = cluster.node(target).admin();
    let moved = admin
        .transfer_leader(pb::TransferLeaderRequest {
            node_id: target,
            timeout_ms: 10_000,
        })
        .await
        .expect("transfer")
        .into_inner();
    assert_eq!(moved.leader_id, target);
    assert_eq!(moved.leader_address, cluster.node(target).address);
    assert_eq!(cluster.wait_for_leader().await, target);

    let mut kv = cluster.node(leader).kv();
    let index = put(&mut kv, "after-transfer", "yes").await;
    cluster.wait_applied(index).await;
    let mut on_target = cluster.node(target).kv();
    assert_eq!(
        get(&mut on_target, "after-transfer", true).await.as_deref(),
        Some(&b"yes"[..])
    );

    // Without a target: the most up-to-date other voter takes over.
    let moved = admin
        .transfer_leader(pb::TransferLeaderRequest {
            node_id: 0,
            timeout_ms: 10_000,
        })
        .await
        .expect("transfer to any")
        .into_inner();
    assert_ne!(moved.leader_id, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_single_serving_leader().await;
    let mut acknowledged = Vec::new();
    let mut kv = cluster.node(leader).kv();
    for i in 0..50 {
        let key = format!("before-{i}");
        put(&mut kv, &key, &i.to_string()).await;
        acknowledged.push((key, i.to_string()));
    }
    cluster.node(leader).kill();
    let new_leader = cluster.wait_for_single_serving_leader().await;
    assert_ne!(new_leader, leader);
    // The survivors saw the dead leader's connection close and did not wait
    // out its lease (the fast failover path).
    for node in cluster.nodes.iter().filter(|n| n.id != leader) {
        assert!(
            node.log().contains("the leader's connection closed"),
            "node {} did not notice its leader's connection closing:\n{}",
            node.id,
            node.log_tail()
        );
    }

    let mut kv = cluster.node(new_leader).kv();
    for i in 0..20 {
        let key = format!("after-{i}");
        put(&mut kv, &key, &i.to_string()).await;
        acknowledged.push((key, i.to_string()));
    }
    for (key, value) in &acknowledged {
        assert_eq!(
            get(&mut kv, key, false).await.as_deref(),
            Some(value.as_bytes()),
            "{key} lost"
        );
    }

    // The old leader comes back as a follower and catches up.
    cluster.node(leader).restart();
    let index = kv
        .put(pb::PutRequest {
            lease: 0,
            key: "last".into(),
            value: "1".into(),
        })
        .await
        .expect("put")
        .into_inner()
        .index;
    cluster.wait_applied(index).await;
    let mut old = cluster.node(leader).kv();
    for (key, value) in &acknowledged {
        assert_eq!(
            get(&mut old, key, true).await.as_deref(),
            Some(value.as_bytes()),
            "{key} missing on old leader"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_recovers_everything_and_bootstrap_is_harmless() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut kv = cluster.node(leader).kv();
    for i in 0..30 {
        put(&mut kv, &format!("k{i}"), &format!("v{i}")).await;
    }
    let before = cluster
        .node(leader)
        .admin()
        .get_configuration(pb::Empty {})
        .await
        .expect("config")
        .into_inner();
    drop(kv);
    // Node 1 stops cleanly, the others are killed.
    assert!(
        cluster.node(1).stop(),
        "node 1 did not exit cleanly:\n{}",
        cluster.node(1).log_tail()
    );
    cluster.node(2).kill();
    cluster.node(3).kill();

    cluster.node(1).restart_with(&["--bootstrap"]);
    cluster.node(2).restart();
    cluster.node(3).restart_with(&["--bootstrap"]);
    // Node 1's clean stop closed its connections, so nodes 2 and 3 may have
    // elected one of them in a newer term before they were killed: node 1 can
    // resume its old term for a moment after the restart. Read once all agree.
    let leader = cluster.wait_for_agreed_leader().await;
    let mut kv = cluster.node(leader).kv();
    for i in 0..30 {
        assert_eq!(
            get(&mut kv, &format!("k{i}"), false).await,
            Some(format!("v{i}").into_bytes())
        );
    }
    let after = cluster
        .node(leader)
        .admin()
        .get_configuration(pb::Empty {})
        .await
        .expect("config")
        .into_inner();
    assert_eq!(
        before.members, after.members,
        "--bootstrap on restart changed the configuration"
    );
    let index = put(&mut kv, "after-restart", "ok").await;
    cluster.wait_applied(index).await;
    for id in [1, 3] {
        assert!(
            cluster.node(id).log_tail().contains("--bootstrap ignored"),
            "node {id} log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_from_a_snapshot() {
    let flags = ["--snapshot-after", "50", "--snapshot-keep", "0"];
    let mut cluster = TestCluster::builder().flags(&flags).start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut kv = cluster.node(leader).kv();
    let mut index = 0;
    for i in 0..300 {
        index = put(&mut kv, &format!("key-{i:03}"), &format!("value-{i}")).await;
    }
    // The leader's log no longer starts at 1: a newcomer needs the snapshot.
    let leader_node = &*cluster.node(leader);
    wait_for("the leader compacts its log", || async move {
        let status = leader_node.status().await?;
        (status.purged_index.unwrap_or(0) > 0).then_some(())
    })
    .await;

    cluster.add_voter(4).await;
    cluster.wait_applied(index).await;
    let status = cluster.node(4).status().await.expect("status of node 4");
    assert!(
        status.snapshot_index.unwrap_or(0) > 0,
        "node 4 did not install a snapshot: {status:?}"
    );
    let mut on_new = cluster.node(4).kv();
    for i in [0, 150, 299] {
        assert_eq!(
            get(&mut on_new, &format!("key-{i:03}"), true).await,
            Some(format!("value-{i}").into_bytes())
        );
    }
    let scan = on_new
        .scan(pb::ScanRequest {
            prefix: "key-".into(),
            limit: 1000,
            stale: true,
            ..Default::default()
        })
        .await
        .expect("scan")
        .into_inner();
    assert_eq!(scan.pairs.len(), 300);

    // A snapshot on demand covers at least what was applied.
    let snapshot = cluster
        .node(4)
        .admin()
        .trigger_snapshot(pb::Empty {})
        .await
        .expect("snapshot")
        .into_inner();
    assert!(snapshot.index.unwrap_or(0) >= index);
}
