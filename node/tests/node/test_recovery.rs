//! `--force-new-cluster`: a survivor of a permanent quorum loss comes back
//! as the only voter with every acknowledged write, and the cluster grows
//! again from it.

use raftkv_testkit::TestCluster;

use crate::support::committed_voters;
use crate::support::get;
use crate::support::put;
use crate::support::wait_for_voters;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_of_a_lost_quorum_keeps_every_acknowledged_write() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let keys = 40;
    for i in 0..keys {
        put(
            &cluster.node(leader).client(),
            &format!("key-{i}"),
            &format!("value-{i}"),
        )
        .await;
    }
    // Power lost everywhere; two nodes are destroyed for good.
    for node in &mut cluster.nodes {
        node.kill();
    }
    // The leader survives: every acknowledged write is in its log (a
    // follower may lack the newest ones, which a majority without it took).
    let survivor = leader;
    let lost: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != survivor).collect();
    for id in &lost {
        let dir = cluster.node(*id).data_dir.clone();
        std::fs::remove_dir_all(&dir).expect("destroy a node's data");
    }
    cluster
        .node(survivor)
        .restart_with(&["--force-new-cluster"]);
    assert_eq!(cluster.wait_for_leader().await, survivor);
    let log = cluster.node(survivor).log();
    assert!(log.contains("FORCED A NEW CLUSTER"), "{log}");
    let admin = cluster.node(survivor).client();
    assert_eq!(committed_voters(&admin).await, Some(vec![survivor]));
    let kv = cluster.node(survivor).client();
    for i in 0..keys {
        let value = get(&kv, &format!("key-{i}"), false).await;
        assert_eq!(
            value.as_deref(),
            Some(format!("value-{i}").as_bytes()),
            "key-{i} was acknowledged and is lost"
        );
    }
    put(&kv, "after", "recovery").await;

    // A fresh node is added back; the replicas agree.
    cluster.nodes.retain(|n| n.id == survivor);
    cluster.add_voter(4).await;
    let mut voters = vec![survivor, 4];
    voters.sort_unstable();
    wait_for_voters(&cluster, &voters).await;
    cluster.assert_replicas_identical().await;

    // A later restart without the flag keeps it all.
    assert!(cluster.node(survivor).stop());
    cluster.node(survivor).restart();
    // A restarted leader campaigns again; until it wins, node 4 may still
    // name it leader of the old term.
    cluster.wait_for_agreed_leader().await;
    let kv = cluster.node(survivor).client();
    assert_eq!(
        get(&kv, "after", false).await.as_deref(),
        Some(&b"recovery"[..])
    );
}
