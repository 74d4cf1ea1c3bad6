//! How openraft's errors become a [`NodeError`]: in one place, so every
//! operation answers the same failure with the same code and the same
//! leader hint, and the list of membership races is written once (the retry
//! loop in `membership` and the mapping here both use it).

use openraft::errors::ChangeMembershipError;
use openraft::errors::ClientWriteError;
use openraft::errors::ForwardToLeader;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::metrics::WaitError;

use super::RaftNode;
use crate::error::NodeError;
use crate::types::TypeConfig;

/// What `client_write` and `change_membership_if` fail with.
pub(super) type WriteError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;

/// What `ensure_linearizable` fails with.
pub(super) type ReadError = RaftError<TypeConfig, LinearizableReadError<TypeConfig>>;

impl RaftNode {
    /// `NotLeader`, with the leader this node knows of (never itself: a
    /// client told to go to the node it asked would loop).
    pub(crate) fn not_leader(&self) -> NodeError {
        NodeError::NotLeader {
            leader: self.leader().filter(|(id, _)| *id != self.id),
        }
    }

    /// `NotLeader` from openraft's redirect, which may name the leader more
    /// recently than this node's metrics do.
    fn forward_error(&self, forward: &ForwardToLeader<TypeConfig>) -> NodeError {
        let leader = match (&forward.leader_id, &forward.leader_node) {
            (Some(id), Some(node)) => Some((*id, node.addr.clone())),
            _ => self.leader(),
        };
        NodeError::NotLeader {
            leader: leader.filter(|(id, _)| *id != self.id),
        }
    }

    /// A failed write or membership change.
    pub(super) fn write_error(&self, e: WriteError) -> NodeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self.forward_error(&f),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => NodeError::OutcomeUnknown(format!(
                "leadership changed while the write was in flight; it may or may not have been applied ({f})"
            )),
            e @ RaftError::APIError(
                ClientWriteError::ChangeMembershipError(_) | ClientWriteError::PreconditionFailed(_),
            ) => {
                if is_membership_race(&e) {
                    NodeError::MembershipRace(format!(
                        "the membership change raced with another ({e}); read the configuration again and retry"
                    ))
                } else {
                    NodeError::MembershipRefused(format!("membership change refused: {e}"))
                }
            }
            RaftError::Fatal(e) => e.into(),
        }
    }

    /// A failed read fence.
    pub(super) fn read_error(&self, e: ReadError) -> NodeError {
        match e {
            RaftError::APIError(LinearizableReadError::ForwardToLeader(f)) => {
                self.forward_error(&f)
            }
            RaftError::APIError(LinearizableReadError::QuorumNotEnough(e)) => {
                NodeError::NoQuorum(e)
            }
            RaftError::Fatal(e) => e.into(),
        }
    }
}

/// A wait on metrics that ended without its condition: `what` says what was
/// waited for.
pub(super) fn wait_error(what: &str, e: WaitError) -> NodeError {
    match e {
        WaitError::Timeout(after, _) => {
            NodeError::Timeout(format!("{what}: not done after {after:?}"))
        }
        WaitError::ShuttingDown => NodeError::Stopping(None),
    }
}

/// Whether `e` is a membership change refused only because another
/// change was in flight or had just landed: the same change may succeed
/// once that one is committed.
pub(super) fn is_membership_race(e: &WriteError) -> bool {
    matches!(
        e,
        RaftError::APIError(
            ClientWriteError::PreconditionFailed(_)
                | ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(_)
                        | ChangeMembershipError::UncommittedLeaderLog(_)
                )
        )
    )
}
