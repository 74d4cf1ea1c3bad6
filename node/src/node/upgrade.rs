//! Rolling upgrades: the cluster version, and what it lets the leader write.
//!
//! The cluster version is the lowest release among all members, voters and
//! learners. The leader works it out from the releases its peers name in
//! their answers (`network::versions`) and, once every member has named one
//! above it, raises it through the log (`Command::ClusterVersion`), so every
//! node switches at the same entry. It never goes down.
//!
//! Until it is raised, the leader writes entries in the first release's
//! encoding (`entry`) and snapshots in the format 0.1 reads, and refuses
//! commands that need more ([`crate::error::NodeError::ClusterVersionTooOld`]).
//! Hence the rules the README gives operators: upgrade one node at a time,
//! in any order; new calls work once the last member runs the new release;
//! a node can be downgraded only while the cluster version is still at or
//! below the release it goes back to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use tokio::sync::watch;

use super::RaftNode;
use crate::types::Command;
use crate::types::NodeId;
use crate::version::Version;

/// How often the leader looks at its members' releases.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a raise may hold membership changes off.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(5);

impl RaftNode {
    /// The cluster version as of the last entry this node applied.
    pub fn cluster_version(&self) -> Version {
        self.kv.cluster_version()
    }

    /// Every member (voters and learners) with the release it runs as this
    /// node knows it: its own, and those its peers named in their answers
    /// since their last failed call (`None`: not heard from since).
    pub fn member_versions(&self) -> BTreeMap<NodeId, Option<Version>> {
        self.member_versions_in(None)
    }

    /// [`RaftNode::member_versions`], counting only answers to calls of
    /// `term`.
    fn member_versions_in(&self, term: Option<u64>) -> BTreeMap<NodeId, Option<Version>> {
        let membership = self.membership();
        membership
            .membership()
            .nodes()
            .map(|(id, _)| {
                let version = if *id == self.id {
                    Some(Version::ours())
                } else {
                    self.peer_versions.heard_in(*id, term)
                };
                (*id, version)
            })
            .collect()
    }
}

/// The version the cluster can move to: the lowest release among the
/// members, once every one of them has named its release.
fn lowest(versions: &BTreeMap<NodeId, Option<Version>>) -> Option<Version> {
    versions
        .values()
        .copied()
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .min()
}

/// On the leader: raises the cluster version once every member runs a newer
/// release. Ends when the node stops.
pub async fn raise_cluster_version(node: Arc<RaftNode>, mut stopping: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting_on: Option<Vec<NodeId>> = None;
    // A new leader looks at once: a cluster it starts alone is at its
    // release before the first client's write.
    let mut server = node.raft().server_metrics();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            changed = server.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        if !node.names_itself_leader() {
            continue;
        }
        // Only answers to this term's calls count: one heard before may be
        // from a release the peer has since left.
        let term = node.current_term();
        // No member joins between counting the members and proposing: a
        // membership change waits, or this waits for the next tick.
        let Ok(_members) = node.membership_changes.try_lock() else {
            continue;
        };
        let cluster = node.cluster_version();
        let versions = node.member_versions_in(Some(term));
        let Some(next) = lowest(&versions) else {
            continue;
        };
        if next <= cluster {
            // Say once which members hold the cluster back.
            let older: Vec<NodeId> = versions
                .into_iter()
                .filter(|(_, version)| version.is_some_and(|v| v < Version::ours()))
                .map(|(id, _)| id)
                .collect();
            if !older.is_empty() && waiting_on.as_ref() != Some(&older) {
                tracing::info!(
                    members = ?older,
                    cluster_version = %cluster,
                    "members run an older release: new calls wait until they are upgraded"
                );
            }
            waiting_on = Some(older);
            continue;
        }
        waiting_on = None;
        // Bounded, since membership changes wait meanwhile: without a
        // quorum the proposal could wait until leadership moves.
        let proposal = node.write(Command::ClusterVersion { version: next });
        match tokio::time::timeout(PROPOSAL_TIMEOUT, proposal).await {
            Ok(Ok(_)) => tracing::info!(from = %cluster, to = %next, "cluster version raised"),
            Ok(Err(e)) => tracing::debug!(cause = %e, to = %next, "cluster version not raised yet"),
            Err(_) => tracing::debug!(to = %next, "cluster version not raised in time; retrying"),
        }
    }
}
