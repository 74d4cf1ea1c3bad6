//! A rolling upgrade from the previous release (0.1, built once by
//! `scripts/previous-release.sh` and cached) to this one, one node at a
//! time under hammer's load: nothing acknowledged is lost, the history stays
//! linearizable, no node is left behind, and a call only this release has
//! is refused until the last member runs it, then works.

use std::path::PathBuf;
use std::process::Command;

use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;

use crate::test_faults::finish;
use crate::test_faults::start_load;

/// Environment variable naming a previous-release node binary to use
/// instead of building one.
const PREVIOUS_NODE_ENV: &str = "RAFTKV_PREVIOUS_NODE_BIN";

/// The previous release's node: from [`PREVIOUS_NODE_ENV`], or built (once,
/// then cached) by `scripts/previous-release.sh`. `None`, with the reason
/// printed, where it cannot be built (a clone without the commit).
fn previous_release() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(PREVIOUS_NODE_ENV) {
        return Some(PathBuf::from(path));
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("hammer/ lives in the workspace")
        .to_path_buf();
    let output = Command::new(workspace.join("scripts/previous-release.sh"))
        .current_dir(&workspace)
        .output()
        .expect("run scripts/previous-release.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default().trim().to_string();
    match output.status.code() {
        Some(0) => Some(workspace.join(last)),
        Some(3) => {
            eprintln!("SKIPPED the rolling-upgrade test: {last}");
            None
        }
        _ => panic!(
            "scripts/previous-release.sh failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// What `DeletePrefix` through node `id` answers: the count deleted, or the
/// refusal's code with its reason and versions.
async fn delete_prefix(
    cluster: &mut TestCluster,
    id: u64,
    prefix: &[u8],
) -> Result<u64, (tonic::Code, Vec<String>)> {
    let request = pb::DeletePrefixRequest {
        prefix: prefix.to_vec(),
    };
    match cluster.node(id).kv().delete_prefix(request).await {
        Ok(answer) => Ok(answer.into_inner().deleted),
        Err(status) => {
            let metadata = [
                raftkv_proto::REASON_METADATA,
                raftkv_proto::CLUSTER_VERSION_METADATA,
                raftkv_proto::NEEDS_VERSION_METADATA,
            ]
            .iter()
            .map(|key| {
                status
                    .metadata()
                    .get(*key)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
            Err((status.code(), metadata))
        }
    }
}

/// Stops node `id` cleanly and starts it again on its data with this
/// build's node; waits until it has caught up with the leader.
async fn upgrade(cluster: &mut TestCluster, id: u64) {
    let node = cluster.node(id);
    assert!(
        tokio::task::block_in_place(|| node.stop()),
        "node {id} did not stop cleanly"
    );
    node.set_binary(None);
    node.restart();
    let leader = cluster.wait_for_leader().await;
    let index = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(id, index).await;
}

/// Waits until node `id` applied cluster version `version`.
async fn wait_cluster_version(cluster: &mut TestCluster, id: u64, version: &str) {
    let node = cluster.node(id);
    wait_for(
        &format!("node {id} at cluster version {version}"),
        || async {
            let status = node.status().await?;
            (status.cluster_version == version).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_under_load_loses_nothing_and_opens_new_calls_last() {
    let Some(previous) = previous_release() else {
        return;
    };
    // Snapshots often, logs purged behind them: a node that falls behind
    // catches up from a snapshot.
    let flags = ["--snapshot-after", "200", "--snapshot-keep", "0"];
    let mut cluster = TestCluster::builder()
        .binary(&previous)
        .flags(&flags)
        .start(3)
        .await;
    let load = start_load(&cluster, 50, &[]);
    let leader = cluster.wait_for_leader().await;
    let applied = cluster.applied_index(leader).await;
    cluster.wait_applied_beyond(leader, applied + 100).await;
    let status = cluster.node(1).status().await.expect("status");
    assert_eq!(status.version, "", "a 0.1 node names no version");

    // A 0.1 leader does not know the call.
    let (code, _) = delete_prefix(&mut cluster, leader, b"upgrade/")
        .await
        .unwrap_err();
    assert_eq!(code, tonic::Code::Unimplemented);

    // One node upgraded and made leader: it writes what 0.1 followers read,
    // and refuses the new call until they are upgraded.
    let first = if leader == 3 { 2 } else { 3 };
    upgrade(&mut cluster, first).await;
    cluster
        .node(first)
        .client()
        .transfer_leader(first, std::time::Duration::from_secs(10))
        .await
        .expect("transfer leadership to the upgraded node");
    assert_eq!(cluster.wait_for_agreed_leader().await, first);
    // It hears which release each peer runs, and stays at 0.1.
    let new_leader = cluster.node(first);
    wait_for("the new leader hears its peers run 0.1", || async {
        let status = new_leader.status().await?;
        let heard = status.peers.iter().all(|peer| peer.version == "0.1");
        (heard && status.peers.len() == 2).then_some(())
    })
    .await;
    wait_cluster_version(&mut cluster, first, "0.1").await;
    let (code, metadata) = delete_prefix(&mut cluster, first, b"upgrade/")
        .await
        .unwrap_err();
    assert_eq!(code, tonic::Code::FailedPrecondition);
    assert_eq!(metadata, ["cluster-version", "0.1", "0.2"]);
    let before = cluster.applied_index(first).await;
    for id in [1, 2, 3].into_iter().filter(|id| *id != first) {
        cluster.wait_applied_beyond(id, before + 100).await;
    }

    // A 0.1 node that joins once the new leader has purged its log gets a
    // snapshot in the format 0.1 reads.
    let new_leader = cluster.node(first);
    let purged = new_leader.status().await.and_then(|s| s.purged_index);
    wait_for("the new leader purges its log", || async {
        let now = new_leader.status().await?.purged_index?;
        (Some(now) > purged).then_some(())
    })
    .await;
    let spec = cluster.node_spec(4).binary(&previous);
    cluster.add_voter_from(spec).await;
    let index = cluster.applied_index(first).await;
    cluster.wait_applied_beyond(4, index).await;
    let status = cluster.node(4).status().await.expect("status");
    assert_eq!(status.version, "", "node 4 runs 0.1");
    assert!(
        status.snapshot_index.unwrap_or(0) > 0,
        "node 4 caught up without a snapshot: {status:?}"
    );

    // The others, one at a time (the old leader last).
    for id in [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != first && *id != leader)
        .chain([leader])
    {
        // Refused by whichever node leads: an upgraded one for the cluster
        // version, a 0.1 one for not knowing the call.
        let leading = cluster.wait_for_agreed_leader().await;
        let (code, _) = delete_prefix(&mut cluster, leading, b"upgrade/")
            .await
            .unwrap_err();
        assert!(
            [tonic::Code::FailedPrecondition, tonic::Code::Unimplemented].contains(&code),
            "before node {id}: {code:?}"
        );
        // And the first node upgraded still says 0.1, whoever leads.
        let status = cluster.node(first).status().await.expect("status");
        assert_eq!(status.cluster_version, "0.1", "before node {id}");
        upgrade(&mut cluster, id).await;
    }

    // Every member runs 0.2: the cluster version follows through the log,
    // on every node, and the new call works.
    for id in [1, 2, 3, 4] {
        wait_cluster_version(&mut cluster, id, "0.2").await;
        let status = cluster.node(id).status().await.expect("status");
        assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    }
    let leader = cluster.wait_for_leader().await;
    let client = cluster.node(leader).client();
    for key in ["upgrade/a", "upgrade/b", "upgradf"] {
        client.put(key, "x").await.expect("put");
    }
    assert_eq!(
        delete_prefix(&mut cluster, leader, b"upgrade/").await,
        Ok(2)
    );
    assert_eq!(
        client.get("upgradf").await.expect("get"),
        Some(b"x".to_vec())
    );

    finish(load, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_older_than_the_cluster_version_is_refused_and_not_kept() {
    let Some(previous) = previous_release() else {
        return;
    };
    let mut cluster = TestCluster::start(1).await;
    wait_cluster_version(&mut cluster, 1, "0.2").await;
    let spec = cluster.node_spec(2).binary(&previous);
    let old = cluster.start_node(spec);
    let (id, address) = (old.id, old.address.clone());
    let client = cluster.node(1).client();
    let refused = client
        .add_voter(id, address, 0)
        .await
        .expect_err("a 0.1 node added to a cluster at 0.2");
    match &refused.error {
        raftkv_client::ClientError::Rpc(status) => {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
            assert!(status.message().contains("runs raftkv 0.1"), "{status:?}");
        }
        other => panic!("expected the node's refusal, got {other}"),
    }
    // The configuration is as it was, and writes go on.
    let members: Vec<u64> = client
        .configuration()
        .await
        .expect("configuration")
        .members
        .iter()
        .map(|member| member.id)
        .collect();
    assert_eq!(members, [1]);
    client.put("after", "1").await.expect("put");
}
