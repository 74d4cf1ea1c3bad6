//! What an inbound Raft message must satisfy before openraft sees it.
//!
//! openraft trusts its peers: a message no honest leader sends (entries with
//! gaps, a commit point ahead of its own log, a snapshot that contradicts
//! what this node has committed, a vote nobody granted, a term that
//! overflows at the next election) trips an assertion inside it, or corrupts
//! its state, and either way the node stops. Each check here refuses such a
//! message with `INVALID_ARGUMENT` instead. Checks against this node's own
//! log read openraft's published metrics, so they are as fresh as those; an
//! honest leader's messages always pass them.
//!
//! Separating clusters is the CA's job (a peer needs a certificate from it);
//! these checks only keep a peer from crashing the node.

use std::collections::BTreeMap;

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::EntryPayload;
use openraft::Membership;
use tonic::Status;

use crate::node::Raft;
use crate::types::AppendEntriesRequest;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::SnapshotMeta;
use crate::types::Vote;

/// Terms and indexes this large are forged: no cluster gets there, and
/// openraft adds to them without checking for overflow.
const ABSURD: u64 = 1 << 62;

/// What a check needs to know of this node.
#[derive(Debug, Clone)]
pub struct Local {
    pub id: NodeId,
    /// The last log id this node knows is committed.
    pub committed: Option<LogId>,
    /// The last log id in this node's log.
    pub last: Option<LogId>,
}

impl Local {
    /// This node's state as openraft last published it.
    pub fn of(raft: &Raft) -> Local {
        let data = raft.data_metrics();
        let data = data.borrow_watched();
        Local {
            id: raft.metrics().borrow_watched().id,
            committed: data.local_committed,
            last: data.last_log,
        }
    }
}

fn refuse(what: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("refused raft message: {what}"))
}

fn check_log_id(log_id: &LogId, what: &str) -> Result<(), Status> {
    if log_id.leader_id.term >= ABSURD || log_id.index >= ABSURD {
        return Err(refuse(format!("{what} {log_id} is out of range")));
    }
    Ok(())
}

/// A vote from a peer: not this node's own id, and a sane term.
fn check_vote(vote: &Vote, local: &Local) -> Result<(), Status> {
    if vote.leader_id.term >= ABSURD {
        return Err(refuse(format!(
            "term {} is out of range",
            vote.leader_id.term
        )));
    }
    if vote.leader_id.node_id == local.id {
        return Err(refuse("the vote names this node itself"));
    }
    Ok(())
}

/// A log id at or below this node's commit point must be the committed one's
/// predecessor on the same history: one "newer" than the commit point there
/// contradicts what a quorum agreed.
fn check_against_commit(log_id: &LogId, local: &Local, what: &str) -> Result<(), Status> {
    if let Some(committed) = &local.committed {
        if log_id.index <= committed.index && log_id > committed {
            return Err(refuse(format!(
                "{what} {log_id} contradicts the committed {committed}"
            )));
        }
    }
    Ok(())
}

/// A membership openraft would accept: one or two non-empty voter sets,
/// every voter with a node.
pub fn check_membership(membership: &Membership<NodeId, crate::types::Node>) -> Result<(), Status> {
    let joint = membership.get_joint_config();
    if joint.is_empty() || joint.len() > 2 || joint.iter().any(|voters| voters.is_empty()) {
        return Err(refuse("a membership needs one or two non-empty voter sets"));
    }
    let nodes: BTreeMap<NodeId, crate::types::Node> = membership
        .nodes()
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    Membership::new(joint.clone(), nodes).map_err(|e| refuse(format!("membership: {e}")))?;
    Ok(())
}

/// AppendEntries: a granted vote; entries contiguous after `prev_log_id`, in
/// leader order, none from beyond the vote; a commit point consistent with
/// them and with this node's log.
pub fn check_append(request: &AppendEntriesRequest, local: &Local) -> Result<(), Status> {
    let vote = &request.vote;
    check_vote(vote, local)?;
    if !vote.committed {
        return Err(refuse("AppendEntries with a vote no quorum granted"));
    }
    let mut previous = request.prev_log_id;
    if let Some(prev) = &previous {
        check_log_id(prev, "prev_log_id")?;
        check_against_commit(prev, local, "prev_log_id")?;
    }
    for entry in &request.entries {
        let log_id = &entry.log_id;
        check_log_id(log_id, "entry")?;
        let expected = previous.map_or(0, |p| p.index + 1);
        if log_id.index != expected {
            return Err(refuse(format!(
                "entry {log_id} where index {expected} comes next"
            )));
        }
        if previous.is_some_and(|p| p.leader_id > log_id.leader_id) {
            return Err(refuse(format!(
                "entry {log_id} goes back to an older leader"
            )));
        }
        if log_id.leader_id > vote.leader_id {
            return Err(refuse(format!(
                "entry {log_id} is from a leader after the sender's vote"
            )));
        }
        check_against_commit(log_id, local, "entry")?;
        if let EntryPayload::Membership(membership) = &entry.payload {
            check_membership(membership)?;
        }
        previous = Some(*log_id);
    }
    if let Some(commit) = &request.leader_commit {
        check_log_id(commit, "leader_commit")?;
        if commit.leader_id > vote.leader_id {
            return Err(refuse(format!(
                "leader_commit {commit} is from a leader after the sender's vote"
            )));
        }
        // Ordered by index and by log id alike, or the histories differ.
        if let Some(last) = &previous {
            if (commit.index <= last.index) != (commit <= last) {
                return Err(refuse(format!(
                    "leader_commit {commit} contradicts the last entry {last}"
                )));
            }
        }
        if let Some(last) = &local.last {
            if commit.index > last.index && commit < last {
                return Err(refuse(format!(
                    "leader_commit {commit} is older than this node's last entry {last}"
                )));
            }
        }
    }
    Ok(())
}

/// Vote and pre-vote requests: a candidate's vote is never granted yet.
pub fn check_vote_request(
    vote: &Vote,
    last_log_id: Option<&LogId>,
    local: &Local,
) -> Result<(), Status> {
    check_vote(vote, local)?;
    if vote.committed {
        return Err(refuse("a vote request with a vote already granted"));
    }
    if let Some(last) = last_log_id {
        check_log_id(last, "last_log_id")?;
    }
    Ok(())
}

/// TransferLeader: from a leader's granted vote, to a sane log id.
pub fn check_transfer(
    vote: &Vote,
    last_log_id: Option<&LogId>,
    local: &Local,
) -> Result<(), Status> {
    check_vote(vote, local)?;
    if let Some(last) = last_log_id {
        check_log_id(last, "last_log_id")?;
    }
    Ok(())
}

/// A full snapshot: from a granted vote no older than what it covers, with a
/// membership stored no later than its last entry, and consistent with what
/// this node has committed.
pub fn check_snapshot(vote: &Vote, meta: &SnapshotMeta, local: &Local) -> Result<(), Status> {
    check_vote(vote, local)?;
    if !vote.committed {
        return Err(refuse("a snapshot with a vote no quorum granted"));
    }
    let Some(last) = &meta.last_log_id else {
        return Err(refuse("a snapshot that covers no log entry"));
    };
    check_log_id(last, "snapshot last_log_id")?;
    if last.leader_id > vote.leader_id {
        return Err(refuse(format!(
            "snapshot up to {last} is from a leader after the sender's vote"
        )));
    }
    check_against_commit(last, local, "snapshot last_log_id")?;
    if let Some(local_last) = &local.last {
        if last.index > local_last.index && last < local_last {
            return Err(refuse(format!(
                "snapshot up to {last} is older than this node's last entry {local_last}"
            )));
        }
    }
    let Some(membership_at) = meta.last_membership.log_id() else {
        return Err(refuse("a snapshot without a membership"));
    };
    if membership_at > last || membership_at.index > last.index {
        return Err(refuse(format!(
            "snapshot membership at {membership_at} is after its last entry {last}"
        )));
    }
    check_membership(meta.last_membership.membership())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Entry;
    use openraft::vote::RaftLeaderId;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId {
            leader_id: openraft::vote::leader_id_adv::LeaderId::new(term, 1),
            index,
        }
    }

    fn granted(term: u64, leader: NodeId) -> Vote {
        let mut vote = Vote::new(term, leader);
        vote.committed = true;
        vote
    }

    fn local() -> Local {
        Local {
            id: 2,
            committed: Some(log_id(1, 5)),
            last: Some(log_id(1, 7)),
        }
    }

    fn append(prev: Option<LogId>, ids: &[LogId], commit: Option<LogId>) -> AppendEntriesRequest {
        AppendEntriesRequest {
            vote: granted(2, 1),
            prev_log_id: prev,
            entries: ids
                .iter()
                .map(|id| Entry {
                    log_id: *id,
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: commit,
        }
    }

    #[test]
    fn honest_appends_pass() {
        let prev = Some(log_id(1, 7));
        let request = append(prev, &[log_id(2, 8), log_id(2, 9)], Some(log_id(1, 7)));
        check_append(&request, &local()).unwrap();
        check_append(&append(None, &[], None), &local()).unwrap();
    }

    #[test]
    fn forged_appends_are_refused() {
        let prev = Some(log_id(1, 7));
        let bad = [
            // A gap, and an index that goes back.
            append(prev, &[log_id(2, 9)], None),
            append(prev, &[log_id(2, 8), log_id(2, 8)], None),
            // An older leader after a newer one, and one beyond the vote.
            append(prev, &[log_id(2, 8), log_id(1, 9)], None),
            append(prev, &[log_id(3, 8)], None),
            // Absurd indexes and terms.
            append(Some(log_id(1, u64::MAX - 1)), &[log_id(2, u64::MAX)], None),
            append(None, &[], Some(log_id(1, u64::MAX))),
            // A commit point ahead of the entries by index but older by id.
            append(Some(log_id(2, 10)), &[], Some(log_id(1, 100))),
            // Contradicts the committed log id at this node.
            append(Some(log_id(2, 4)), &[], None),
        ];
        for request in &bad {
            assert!(
                check_append(request, &local()).is_err(),
                "{request:?} passed"
            );
        }
        let mut ungranted = append(prev, &[], None);
        ungranted.vote.committed = false;
        assert!(check_append(&ungranted, &local()).is_err());
        let mut from_self = append(prev, &[], None);
        from_self.vote = granted(2, 2);
        assert!(check_append(&from_self, &local()).is_err());
    }

    #[test]
    fn forged_votes_are_refused() {
        let local = local();
        check_vote_request(&Vote::new(3, 1), Some(&log_id(1, 7)), &local).unwrap();
        assert!(check_vote_request(&granted(3, 1), None, &local).is_err());
        assert!(check_vote_request(&Vote::new(u64::MAX, 1), None, &local).is_err());
        assert!(check_vote_request(&Vote::new(3, 2), None, &local).is_err());
    }
}
