//! The cluster's id: a random number named once, through the log, by the
//! first leader that finds the cluster without one (a new cluster, or one
//! whose store predates ids), the same on every member for the cluster's
//! life. It is kept in the state machine (`Command::ClusterId`, the first
//! applied wins) and carried by the snapshots followers receive, so a
//! member that joins later has it too. A cluster restored from a backup is
//! a new cluster and gets a new id. etcd's API answers it as `cluster_id`.

use std::hash::BuildHasher;
use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use tokio::sync::watch;

use crate::node::RaftNode;
use crate::types::Command;

/// How long a leader waits before naming the cluster again after a failed
/// proposal (the next leader change tries at once).
const RETRY: Duration = Duration::from_secs(5);

/// A new, non-zero id, different on every call and every node.
fn new_id(node: u64) -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(node);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish().max(1)
}

/// While this node leads a cluster without an id, proposes one; ends once
/// the cluster has one, or when the node stops.
pub async fn name_the_cluster(node: Arc<RaftNode>, mut stopping: watch::Receiver<bool>) {
    let mut server = node.raft().server_metrics();
    loop {
        if node.kv().cluster_id() != 0 {
            return;
        }
        let leads = server.borrow_watched().state == ServerState::Leader;
        if leads {
            let id = new_id(node.id());
            match node.write(Command::ClusterId { id }).await {
                // Applied: the first name applied is the cluster's.
                Ok(_) => continue,
                Err(e) => tracing::debug!(cause = %e, "naming the cluster failed; retrying"),
            }
        }
        tokio::select! {
            changed = server.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(RETRY), if leads => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}
