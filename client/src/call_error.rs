//! [`CallError`]: a failed call, as its caller must treat it (the
//! [`Failure`]) and what happened (the [`ClientError`], with the node's
//! status and metadata when a node answered).

use std::time::Duration;

use tonic::Code;
use tonic::Status;

use crate::ClientError;
use crate::Failure;

/// Why a call failed, and what that means for its caller.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CallError {
    /// What the caller may do now: send it again (to the leader named),
    /// find out whether it took effect, or give up.
    pub failure: Failure,
    /// What happened: the status a node answered, no leader found, the
    /// deadline passed, bad settings.
    #[source]
    pub error: ClientError,
}

impl CallError {
    /// A node answered `status` to a call that `may_repeat` or not.
    pub(crate) fn answered(status: Status, may_repeat: bool) -> CallError {
        CallError {
            failure: Failure::of(&status, may_repeat),
            error: ClientError::Rpc(status),
        }
    }

    /// No answer within `timeout`: a write may have been applied.
    pub(crate) fn timed_out(timeout: Duration, may_repeat: bool) -> CallError {
        CallError {
            failure: unanswered("timeout", may_repeat),
            error: ClientError::Timeout(timeout),
        }
    }

    /// The call to `from` was given up, unanswered, because `to` leads now:
    /// a write may still be applied (a paused leader wakes up and sends it
    /// out before it learns it was deposed, or its entry is already in the
    /// new leader's log).
    pub(crate) fn leader_moved(from: String, to: String, may_repeat: bool) -> CallError {
        CallError {
            failure: unanswered("leader_moved", may_repeat),
            error: ClientError::LeaderMoved { from, to },
        }
    }

    /// No leader to send the call to.
    pub(crate) fn no_leader(error: ClientError) -> CallError {
        CallError {
            failure: Failure::Retry {
                leader: None,
                kind: "no_leader",
            },
            error,
        }
    }

    /// The call could not be sent at all (a bad address, TLS settings).
    pub(crate) fn unsendable(error: ClientError) -> CallError {
        let kind = match error {
            ClientError::Tls(_) => "tls",
            _ => "bad_endpoint",
        };
        CallError {
            failure: Failure::Failed(kind),
            error,
        }
    }

    /// The status a node answered, if one did.
    pub fn status(&self) -> Option<&Status> {
        match &self.error {
            ClientError::Rpc(status) => Some(status),
            _ => None,
        }
    }

    /// The code of the status a node answered, if one did.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// Whether the call may have taken effect although it failed.
    pub fn is_unknown(&self) -> bool {
        matches!(self.failure, Failure::Unknown(_))
    }
}

/// A call given up before any answer (`kind` says why): sent again if it
/// `may_repeat`, else its outcome is unknown.
fn unanswered(kind: &'static str, may_repeat: bool) -> Failure {
    if may_repeat {
        Failure::Retry { leader: None, kind }
    } else {
        Failure::Unknown(kind)
    }
}
