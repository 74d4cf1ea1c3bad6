//! Three-node clusters: replication, forwarding, leader transfer, leader
//! failure, full restart and catching up by snapshot.

use std::collections::BTreeMap;
use std::time::Duration;

use raftkv_client::Client;
use raftkv_client::ClientError;
use raftkv_client::ClientOptions;
use raftkv_client::Failure;
use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use raftkv_testkit::PATIENCE;

use crate::support::get;
use crate::support::put;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_followers_forward() {
    let mut cluster = TestCluster::start(2).await;
    // The third node joins by itself with --join.
    let address_of_1 = cluster.nodes[0].address.clone();
    cluster.start_node(cluster.node_spec(3).flags(&["--join", &address_of_1]));
    let admin = cluster.nodes[0].client();
    let voters = wait_for("node 3 joins as a voter", || {
        let admin = admin.clone();
        async move {
            let config = admin.configuration().await.ok()?;
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
    let on_leader = cluster.node(leader).client();
    let index = put(&on_leader, "color", "blue").await;
    assert!(index > 0);
    cluster.wait_applied(index).await;
    for node in &cluster.nodes {
        let kv = node.client();
        assert_eq!(
            get(&kv, "color", true).await.as_deref(),
            Some(&b"blue"[..]),
            "stale read on {}",
            node.id
        );
        assert_eq!(
            get(&kv, "color", false).await.as_deref(),
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
    let on_follower = follower.client();
    put(&on_follower, "shape", "round").await;
    let deleted = on_follower.delete("color").await.expect("delete");
    assert!(deleted.existed);
    let swapped = on_follower
        .compare_and_swap("shape", Some("round".into()), "square")
        .await
        .expect("cas");
    assert!(swapped.succeeded);
    let refused = on_follower
        .compare_and_swap("shape", None, "triangle")
        .await
        .expect("cas");
    assert!(!refused.succeeded);
    assert_eq!(refused.current_value.as_deref(), Some(&b"square"[..]));
    assert_eq!(get(&on_leader, "color", false).await, None);
    assert_eq!(
        get(&on_leader, "shape", false).await.as_deref(),
        Some(&b"square"[..])
    );

    let scan = on_follower
        .scan(pb::ScanRequest {
            prefix: "sh".into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("scan");
    assert_eq!(scan.pairs.len(), 1);
    assert_eq!(scan.pairs[0].key, b"shape");
    assert!(!scan.more);

    // Every replica holds the same state.
    cluster.wait_applied(refused.index).await;
    let mut digests = BTreeMap::new();
    for node in &cluster.nodes {
        let digest = node.client().state_digest().await.expect("digest");
        digests.insert(node.id, (digest.digest, digest.key_count));
    }
    let distinct: std::collections::BTreeSet<_> = digests.values().collect();
    assert_eq!(distinct.len(), 1, "replicas differ: {digests:?}");
}

/// A commit that no later entry carries still reaches the followers: the
/// leader sends it in a request of its own, at once or after waiting a
/// moment for an entry to carry it. Heartbeats, which carry it too, are set
/// far beyond the test's patience, so only that request can deliver it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_learn_a_commit_that_no_later_write_carries() {
    let cluster = TestCluster::builder()
        .flags(&[
            "--heartbeat-ms",
            "600000",
            "--election-timeout-min-ms",
            "1200000",
            "--election-timeout-max-ms",
            "1300000",
        ])
        .start(3)
        .await;
    let leader = cluster.wait_for_leader().await;
    let leader_node = cluster.get(leader);
    // The leader raises the cluster version by itself once it knows every
    // member's release: an entry after the put would carry its commit.
    wait_for("the leader raises the cluster version", || async move {
        let status = leader_node.status().await?;
        let release: Vec<&str> = status.version.split('.').take(2).collect();
        (status.cluster_version == release.join(".")).then_some(())
    })
    .await;
    let index = put(&leader_node.client(), "last", "carried alone").await;
    cluster.wait_applied(index).await;
    for node in cluster.nodes.iter().filter(|n| n.id != leader) {
        assert_eq!(
            get(&node.client(), "last", true).await.as_deref(),
            Some(&b"carried alone"[..]),
            "stale read on {}",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_chosen_node() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let target = if leader == 3 { 2 } else { 3 };
    // Sent to any node: followers forward it to the leader.
    let admin = cluster.node(target).client();
    let moved = admin
        .transfer_leader(target, std::time::Duration::from_millis(10_000))
        .await
        .expect("transfer");
    assert_eq!(moved.leader_id, target);
    assert_eq!(moved.leader_address, cluster.node(target).address);
    assert_eq!(cluster.wait_for_leader().await, target);

    let kv = cluster.node(leader).client();
    let index = put(&kv, "after-transfer", "yes").await;
    cluster.wait_applied(index).await;
    let on_target = cluster.node(target).client();
    assert_eq!(
        get(&on_target, "after-transfer", true).await.as_deref(),
        Some(&b"yes"[..])
    );

    // Without a target: the most up-to-date other voter takes over.
    let moved = admin
        .transfer_leader(0, std::time::Duration::from_millis(10_000))
        .await
        .expect("transfer to any");
    assert_ne!(moved.leader_id, target);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_single_serving_leader().await;
    let mut acknowledged = Vec::new();
    let kv = cluster.node(leader).client();
    for i in 0..50 {
        let key = format!("before-{i}");
        put(&kv, &key, &i.to_string()).await;
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

    let kv = cluster.node(new_leader).client();
    for i in 0..20 {
        let key = format!("after-{i}");
        put(&kv, &key, &i.to_string()).await;
        acknowledged.push((key, i.to_string()));
    }
    for (key, value) in &acknowledged {
        assert_eq!(
            get(&kv, key, false).await.as_deref(),
            Some(value.as_bytes()),
            "{key} lost"
        );
    }

    // The old leader comes back as a follower and catches up.
    cluster.node(leader).restart();
    let index = kv.put("last", "1").await.expect("put").index;
    cluster.wait_applied(index).await;
    let old = cluster.node(leader).client();
    for (key, value) in &acknowledged {
        assert_eq!(
            get(&old, key, true).await.as_deref(),
            Some(value.as_bytes()),
            "{key} missing on old leader"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_recovers_everything_and_bootstrap_is_harmless() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let kv = cluster.node(leader).client();
    for i in 0..30 {
        put(&kv, &format!("k{i}"), &format!("v{i}")).await;
    }
    let before = cluster
        .node(leader)
        .client()
        .configuration()
        .await
        .expect("config");
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
    let kv = cluster.node(leader).client();
    for i in 0..30 {
        assert_eq!(
            get(&kv, &format!("k{i}"), false).await,
            Some(format!("v{i}").into_bytes())
        );
    }
    let after = cluster
        .node(leader)
        .client()
        .configuration()
        .await
        .expect("config");
    assert_eq!(
        before.members, after.members,
        "--bootstrap on restart changed the configuration"
    );
    let index = put(&kv, "after-restart", "ok").await;
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
    let kv = cluster.node(leader).client();
    let mut index = 0;
    for i in 0..300 {
        index = put(&kv, &format!("key-{i:03}"), &format!("value-{i}")).await;
    }
    // The leader's log no longer starts at 1: a newcomer needs the snapshot.
    cluster.node(leader).wait_log_purged().await;

    cluster.add_voter(4).await;
    cluster.wait_applied(index).await;
    let status = cluster.node(4).status().await.expect("status of node 4");
    assert!(
        status.snapshot_index.unwrap_or(0) > 0,
        "node 4 did not install a snapshot: {status:?}"
    );
    let on_new = cluster.node(4).client();
    for i in [0, 150, 299] {
        assert_eq!(
            get(&on_new, &format!("key-{i:03}"), true).await,
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
        .expect("scan");
    assert_eq!(scan.pairs.len(), 300);

    // A snapshot on demand covers at least what was applied.
    let snapshot = cluster.node(4).client().snapshot().await.expect("snapshot");
    assert!(snapshot.index.unwrap_or(0) >= index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_paused_leader_moves_to_the_next_leader_before_its_deadline() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_single_serving_leader().await;
    // Calls and operations that may wait an hour: only the client's leader
    // check can end one sent to a paused leader while this test runs.
    let kv = cluster.client().patient(Duration::from_secs(3600));
    kv.put("before", "1").await.expect("put before the pause");
    let paused = cluster.get(leader);
    paused.signal("STOP");

    let write = tokio::time::timeout(PATIENCE, kv.put("during", "2")).await;
    let error = write
        .expect("a write to the paused leader waited on it")
        .expect_err("a paused leader cannot acknowledge a write");
    // The paused leader may still send the write out when it wakes up.
    assert_eq!(error.failure, Failure::Unknown("leader_moved"));
    let ClientError::LeaderMoved { from, to } = &error.error else {
        panic!("given up for another reason: {error}");
    };
    assert_eq!(from, &paused.address);
    assert_ne!(to, &paused.address);

    // The client now calls the new leader, while the old one still sleeps.
    kv.put("after", "3").await.expect("put to the new leader");
    assert_eq!(get(&kv, "before", false).await.as_deref(), Some(&b"1"[..]));
    paused.signal("CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_demotes_itself_finishes_the_call_through_its_successor() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_single_serving_leader().await;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    // This client's rounds of discovery ask only the followers, so they
    // never hear the leader answer; it must still not give up the call when
    // a follower is elected, because the leader hands the change over to
    // it. Given up and sent again, the demotion would run twice, and the
    // second would be refused ("not a voter").
    // It looks every 10 ms, so the check runs while the change is made.
    let endpoints = cluster
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.address.clone())
        .collect();
    let mut options = ClientOptions::new(endpoints, PATIENCE);
    options.leader_check = Some(Duration::from_millis(10));
    let client = Client::connect(options).expect("client");
    let answer = client
        .demote_voter(leader, 0)
        .await
        .expect("the leader's demotion of itself, finished by its successor");
    let configuration = answer.configuration.expect("configuration");
    let suffrage = |id: u64| {
        configuration
            .members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.suffrage)
    };
    assert_eq!(suffrage(leader), Some(pb::Suffrage::Learner as i32));
    for id in followers {
        assert_eq!(suffrage(id), Some(pb::Suffrage::Voter as i32));
    }
    let new_leader = cluster.wait_for_single_serving_leader().await;
    assert_ne!(new_leader, leader);
}
