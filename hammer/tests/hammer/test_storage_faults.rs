//! Crashes in the middle of snapshot creation and snapshot installation
//! (crash points armed through `FAILPOINTS`): the node restarts from its data
//! directory and converges; nothing acknowledged is lost, the history stays
//! linearizable and every replica ends identical.

use std::time::Duration;

use raftkv_proto::pb;

use crate::support::Cluster;
use crate::support::TestNode;
use crate::test_faults::finish;
use crate::test_faults::start_load;

const SNAPSHOT_FLAGS: [&str; 4] = ["--snapshot-after", "100", "--snapshot-keep", "0"];

/// A 3-voter cluster snapshotting every 100 entries; node `crashing` (if any)
/// starts with `points` armed.
async fn cluster_with(crashing: Option<(u64, &str)>) -> Cluster {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let mut cluster = Cluster {
        dir,
        nodes: Vec::new(),
    };
    let mut first = SNAPSHOT_FLAGS.to_vec();
    first.push("--bootstrap");
    cluster.nodes.push(TestNode::start(&cluster.dir, 1, &first));
    cluster.wait_for_leader().await;
    for id in 2..=3 {
        let node = match crashing {
            Some((crash_id, points)) if crash_id == id => {
                TestNode::start_with_crash_points(&cluster.dir, id, &SNAPSHOT_FLAGS, points)
            }
            _ => TestNode::start(&cluster.dir, id, &SNAPSHOT_FLAGS),
        };
        let request = pb::AddNodeRequest {
            node_id: id,
            address: node.address.clone(),
            previous_index: 0,
        };
        cluster.nodes.push(node);
        cluster.nodes[0]
            .admin()
            .await
            .expect("admin")
            .add_voter(request)
            .await
            .expect("add voter");
    }
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_building_a_snapshot() {
    // Node 2 dies between writing its first snapshot and syncing it.
    let mut cluster = cluster_with(Some((2, "snapshot-store-before-sync=return"))).await;
    let load = start_load(&cluster, 6, &[]);
    assert!(
        cluster.node(2).wait_exit(Duration::from_secs(30)).await,
        "node 2 never reached its crash point"
    );
    cluster.node(2).restart();
    let status = cluster
        .node(2)
        .status()
        .await
        .expect("node 2 answers after the restart");
    assert_eq!(status.id, 2);
    finish(load, &cluster).await;
    // Building a snapshot works again after the crash.
    let mut admin = cluster.node(2).admin().await.expect("admin");
    let snapshot = admin
        .trigger_snapshot(pb::Empty {})
        .await
        .expect("snapshot after the restart")
        .into_inner();
    let applied = cluster.node_status_applied(2).await;
    assert!(
        snapshot.index.unwrap_or(0) >= applied,
        "{snapshot:?} vs applied {applied}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_while_installing_a_snapshot() {
    let mut cluster = cluster_with(None).await;
    let load = start_load(&cluster, 6, &[]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.node_status_applied(leader).await;
    cluster.wait_applied_beyond(leader, applied + 500).await;
    // Node 4 joins after compaction, receives a snapshot, and dies after
    // storing it but before loading it into its state machine.
    let node = TestNode::start_with_crash_points(
        &cluster.dir,
        4,
        &SNAPSHOT_FLAGS,
        "snapshot-install-before-load=return",
    );
    let address = node.address.clone();
    cluster.nodes.push(node);
    let mut admin = cluster.node(leader).admin().await.expect("admin");
    admin
        .add_learner(pb::AddNodeRequest {
            node_id: 4,
            address: address.clone(),
            previous_index: 0,
        })
        .await
        .expect("add learner");
    assert!(
        cluster.node(4).wait_exit(Duration::from_secs(30)).await,
        "node 4 never reached its crash point"
    );
    cluster.node(4).restart();
    admin
        .add_voter(pb::AddNodeRequest {
            node_id: 4,
            address,
            previous_index: 0,
        })
        .await
        .expect("promote node 4 after its restart");
    let status = cluster.node(4).status().await.expect("status");
    assert!(status.snapshot_index.unwrap_or(0) > 0, "{status:?}");
    finish(load, &cluster).await;
}
