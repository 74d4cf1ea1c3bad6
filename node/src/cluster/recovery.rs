//! `--force-new-cluster` (etcd's name): the way back from a permanent loss of
//! quorum. A survivor keeps everything it knows is committed and becomes the
//! only voter of a cluster of its own; the others are added back afresh.
//!
//! What is kept: every entry in this node's log, not only those it knows are
//! committed. Its record of the commit point trails the real one (a leader
//! acknowledges a write before it writes down that it committed it), so
//! cutting the log there would lose acknowledged writes; and with the other
//! voters gone nothing can contradict the log's tail. Entries past the known
//! commit point may be writes whose clients never got an answer: they come
//! back (logged). What is lost: writes that reached only the lost nodes.
//!
//! How: the commit point is moved to the last entry and a temporary Raft
//! runs, so that the whole log gets applied (after a crash the state machine
//! is rebuilt from the snapshot and the log replayed). Then the state
//! machine, as applied, becomes a snapshot whose membership is this node
//! alone, installed in place (stored and synced first), and the log is cut at
//! it. Run twice, it does the same again: a crash half-way is safe to repeat.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::RaftStateMachine;
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::Membership;

use crate::network::Network;
use crate::node::Raft;
use crate::store::LogStore;
use crate::store::StateMachineStore;
use crate::types::Node;
use crate::types::NodeId;
use crate::types::StoredMembership;

/// Longest the temporary Raft may take to apply what is committed.
const APPLY_PATIENCE: Duration = Duration::from_secs(120);

/// Why a new cluster could not be forced.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Reading or writing the data directory failed.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The temporary Raft failed.
    #[error("raft: {0}")]
    Raft(String),
    /// This node holds nothing committed: there is nothing to recover from.
    #[error("this node has applied no entry: there is nothing to keep (start it with --bootstrap instead)")]
    Empty,
}

/// Turns the node's data into a one-voter cluster of node `id` at `address`.
pub async fn force_new_cluster(
    id: NodeId,
    address: &str,
    raft_config: Arc<openraft::Config>,
    network: Network,
    log_store: &LogStore,
    state_machine: &StateMachineStore,
) -> Result<(), RecoveryError> {
    let mut log = log_store.clone();
    let mut machine = state_machine.clone();
    let committed = log.read_committed().await?;
    let last = log.get_log_state().await?.last_log_id;
    if last > committed {
        log.save_committed(last).await?;
        log_store.sync()?;
    }

    // Apply everything known to be committed, then stop.
    let raft = Raft::new(id, raft_config, network, log.clone(), machine.clone())
        .await
        .map_err(|e| RecoveryError::Raft(e.to_string()))?;
    let mut metrics = raft.metrics();
    let applied_all = async {
        loop {
            let applied = metrics.borrow_watched().last_applied;
            if applied >= last {
                return;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    };
    let in_time = tokio::time::timeout(APPLY_PATIENCE, applied_all)
        .await
        .is_ok();
    raft.shutdown()
        .await
        .map_err(|e| RecoveryError::Raft(e.to_string()))?;
    if !in_time {
        return Err(RecoveryError::Raft(format!(
            "the committed entries were not applied within {APPLY_PATIENCE:?}"
        )));
    }

    let (applied, before) = machine.applied_state().await?;
    let Some(applied) = applied else {
        return Err(RecoveryError::Empty);
    };
    let alone = Membership::new(
        vec![BTreeSet::from([id])],
        BTreeMap::from([(id, Node::new(address))]),
    )
    .map_err(|e| RecoveryError::Raft(e.to_string()))?;
    // The state as applied, under the new membership: stored and synced
    // before the log is touched, so a crash from here on loses nothing.
    let mut snapshot = machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await?;
    snapshot.meta.last_membership = StoredMembership::new(Some(applied), alone);
    machine
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await?;
    log.truncate_after(Some(applied)).await?;
    log.purge(applied).await?;
    log_store.sync()?;

    let known = committed.map_or(0, |c| c.index);
    let unconfirmed = applied.index.saturating_sub(known);
    let members: Vec<NodeId> = before.membership().nodes().map(|(id, _)| *id).collect();
    tracing::warn!(
        kept_up_to = %applied,
        known_committed = known,
        former_members = ?members,
        "FORCED A NEW CLUSTER: this node is now its only voter, with its whole log applied, up to \
         index {}; the last {unconfirmed} entries were not known to be committed and are kept \
         (writes whose clients may have seen no answer). Writes that reached only the lost \
         nodes are gone. Add the other nodes back afresh (empty data directories).",
        applied.index,
    );
    Ok(())
}
