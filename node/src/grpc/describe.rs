//! How a node describes itself and its cluster on the wire: its status,
//! the configuration, its members and their roles.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::Instant as _;
use openraft::RaftMetrics;
use openraft::ServerState;
use raftkv_proto::pb;

use crate::node::RaftNode;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

pub(super) fn suffrage(is_voter: bool) -> i32 {
    if is_voter {
        pb::Suffrage::Voter
    } else {
        pb::Suffrage::Learner
    }
    .into()
}

pub(super) fn members(membership: &StoredMembership) -> Vec<pb::Member> {
    let config = membership.membership();
    let voters: BTreeSet<_> = config.voter_ids().collect();
    config
        .nodes()
        .map(|(id, node)| pb::Member {
            id: *id,
            address: node.addr.clone(),
            suffrage: suffrage(voters.contains(id)),
        })
        .collect()
}

/// The effective configuration in `metrics`.
pub(super) fn configuration(metrics: &RaftMetrics<TypeConfig>) -> pb::ClusterConfiguration {
    let membership = &metrics.membership_config;
    let committed = metrics.committed_membership_config.log_id() == membership.log_id();
    configuration_of(membership, committed)
}

/// `membership` on the wire.
pub(super) fn configuration_of(
    membership: &StoredMembership,
    committed: bool,
) -> pb::ClusterConfiguration {
    pb::ClusterConfiguration {
        members: members(membership),
        index: membership.log_id().as_ref().map_or(0, |l| l.index),
        joint: membership.membership().get_joint_config().len() > 1,
        committed,
    }
}

pub(super) fn role(state: ServerState) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Shutdown => pb::Role::Shutdown,
    }
}

pub(super) fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Everything `metrics` says about this node and, on the leader, its peers.
pub(super) fn status(node: &RaftNode, metrics: &RaftMetrics<TypeConfig>) -> pb::NodeStatus {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<_> = membership.voter_ids().collect();
    let versions = node.member_versions();
    let peers = membership
        .nodes()
        .filter(|(id, _)| **id != node.id())
        .map(|(id, peer)| pb::PeerStatus {
            id: *id,
            address: peer.addr.clone(),
            suffrage: suffrage(voters.contains(id)),
            matched_index: metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index),
            last_contact_ms: metrics
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(id).cloned().flatten())
                .map(|at| millis(at.elapsed())),
            version: versions
                .get(id)
                .copied()
                .flatten()
                .map(|v| v.to_string())
                .unwrap_or_default(),
        })
        .collect();
    let leader_id = metrics.current_leader.unwrap_or(0);
    let vote = metrics.vote.leader_id();
    pb::NodeStatus {
        id: node.id(),
        address: node.address().to_string(),
        role: role(metrics.state).into(),
        term: metrics.current_term,
        leader_id,
        leader_address: membership
            .get_node(&leader_id)
            .map(|n| n.addr.clone())
            .unwrap_or_default(),
        last_log_index: metrics.last_log_index,
        committed_index: metrics.local_committed.as_ref().map(|l| l.index),
        applied_index: metrics.last_applied.as_ref().map(|l| l.index),
        snapshot_index: metrics.snapshot.as_ref().map(|l| l.index),
        purged_index: metrics.purged.as_ref().map(|l| l.index),
        configuration: Some(configuration(metrics)),
        peers,
        last_quorum_ack_ms: metrics
            .last_quorum_acked
            .as_ref()
            .map(|at| millis(at.elapsed())),
        key_count: node.key_count() as u64,
        vote_term: vote.term,
        voted_for: vote.node_id,
        compact_revision: node.compacted(),
        cluster_id: node.kv().cluster_id(),
        leader_changes: node.leader_changes().recent(),
        writes_committed: node.writes.committed.load(Ordering::Relaxed),
        writes_failed: node.writes.failed.load(Ordering::Relaxed),
        write_micros: node.writes.micros.load(Ordering::Relaxed),
        version: env!("CARGO_PKG_VERSION").to_string(),
        cluster_version: node.cluster_version().to_string(),
    }
}
