//! A leader whose disk hangs (a sync that never returns) hands leadership
//! over instead of holding it.
//!
//! What such a leader does without this, found by measuring: its followers
//! commit its entries for it (a leader's own log need not hold an entry for
//! the quorum to count it), so clients see nothing wrong, but every entry
//! it cannot sync stays in its memory, which grows without bound. Once a
//! sync has run [`HAND_OVER_AFTER`], the leader asks the most up-to-date
//! voter to take over (openraft's transfer: that voter campaigns at once).
//! It may go on believing it leads until its disk answers (stepping down
//! needs a vote written to the hung disk), but it can no longer commit, and
//! linearizable reads need a quorum that now follows the new leader.

use std::sync::Arc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use tokio::sync::watch;

use crate::node::Raft;
use crate::store::Disk;
use crate::types::NodeId;

/// How long a sync may run on the leader before it hands leadership over.
pub const HAND_OVER_AFTER: Duration = Duration::from_secs(5);
/// How often the leader looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Until `stopping`: hands leadership over while a sync hangs (see the
/// module documentation), at most once per [`HAND_OVER_AFTER`].
pub async fn watch(raft: Raft, disk: Arc<Disk>, id: NodeId, mut stopping: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        let Some(running) = disk.sync_running_for() else {
            continue;
        };
        if running < HAND_OVER_AFTER {
            continue;
        }
        let target = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow_watched();
            if metrics.state != ServerState::Leader {
                continue;
            }
            let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
            metrics.replication.as_ref().and_then(|replication| {
                replication
                    .iter()
                    .filter(|(node, _)| **node != id && voters.contains(node))
                    .max_by_key(|(_, matched)| matched.as_ref().map(|l| l.index))
                    .map(|(node, _)| *node)
            })
        };
        let Some(target) = target else { continue };
        tracing::warn!(
            sync_running_s = running.as_secs(),
            to = target,
            "a disk sync has hung: handing leadership over"
        );
        if raft.trigger().transfer_leader(target).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(HAND_OVER_AFTER) => {}
        }
    }
}
