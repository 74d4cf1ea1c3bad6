//! The errors a node answers requests with, and their one mapping to gRPC statuses.

use raftkv_proto::CLUSTER_VERSION_METADATA;
use raftkv_proto::COMPACT_REVISION_METADATA;
use raftkv_proto::CURRENT_REVISION_METADATA;
use raftkv_proto::LEADER_ADDR_METADATA;
use raftkv_proto::LEADER_ID_METADATA;
use raftkv_proto::NEEDS_VERSION_METADATA;
use raftkv_proto::QUOTA_BYTES_METADATA;
use raftkv_proto::REASON_CLUSTER_VERSION;
use raftkv_proto::REASON_COMPACTED;
use raftkv_proto::REASON_FUTURE_REVISION;
use raftkv_proto::REASON_METADATA;
use raftkv_proto::REASON_NOT_LEADER;
use raftkv_proto::REASON_NO_SPACE;
use raftkv_proto::STORE_BYTES_METADATA;
use tonic::Code;
use tonic::Status;

use crate::types::NodeId;
use crate::types::TypeConfig;

/// Why a client or admin request failed, named for what went wrong. How
/// each answers a caller (code and metadata) is decided once, in
/// `From<NodeError> for Status` below; handlers only use `?`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request itself is wrong: an empty or oversized key or value, a
    /// bad address, an unknown action.
    #[error("{0}")]
    BadRequest(String),
    /// A membership change, leadership transfer or initialisation that the
    /// cluster's present configuration does not allow (removing the last
    /// voter, an address already taken, a learner as transfer target, a
    /// configuration that moved on from the one the request expected).
    #[error("{0}")]
    MembershipRefused(String),
    /// A node id that is not a member of the cluster.
    #[error("{0}")]
    UnknownMember(String),
    /// A backup asked before any entry was applied.
    #[error("nothing to back up yet: no entry has been applied")]
    NothingApplied,
    /// A lease that does not exist (it expired, was revoked or never was):
    /// nothing was changed.
    #[error("lease {id} not found: it expired, was revoked or never existed; nothing was written")]
    LeaseNotFound { id: u64 },
    /// A grant asked for a lease id that a lease holds (or a revoked one
    /// whose row is kept until compaction passes it): nothing was written.
    #[error(
        "lease {id} exists (or was revoked too recently to reuse its id); nothing was written"
    )]
    LeaseExists { id: u64 },
    /// A write would attach more keys to a lease than one may carry:
    /// nothing was written.
    #[error(
        "lease {id} carries as many keys as a lease may ({} bytes of keys, counting 16 per key); \
         attach them to another lease; nothing was written",
        crate::store::MAX_LEASE_KEY_BYTES
    )]
    LeaseFull { id: u64 },
    /// `--max-leases` leases exist already.
    #[error("{count} leases exist; the limit is {limit} (--max-leases): revoke some first")]
    TooManyLeases { count: usize, limit: usize },
    /// A new leader has not started its lease countdowns yet.
    #[error("this leader is still starting its lease countdowns; retry shortly")]
    LeasesStarting,
    /// This node is not the leader; `leader` is the leader's id and address when known.
    #[error("{}", not_leader_message(.leader))]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The leader cannot reach a quorum to confirm it still leads.
    #[error("the leader cannot reach a quorum to confirm the read: {0}")]
    NoQuorum(#[source] openraft::errors::QuorumNotEnough<TypeConfig>),
    /// The leader could not be reached or refused a call this node made.
    #[error("{0}")]
    LeaderUnreachable(String),
    /// Raft has stopped or is stopping on this node (with openraft's reason
    /// when it gave one).
    #[error("the node is stopping{}", .0.as_ref().map(|why| format!(": {why}")).unwrap_or_default())]
    Stopping(#[source] Option<openraft::errors::Fatal<TypeConfig>>),
    /// This node is replacing its state with a snapshot from the leader.
    #[error("this node is replacing its state with a snapshot from the leader; retry, or read from another node")]
    Installing,
    /// The state kept changing under a request that needs it still (a
    /// digest, a backup's snapshot short of the read fence): retry.
    #[error("{0}")]
    Busy(String),
    /// A membership change raced another (one in flight or just landed):
    /// nothing was changed and the same request may be sent again.
    #[error("{0}")]
    MembershipRace(String),
    /// The operation did not finish in time; it may still take effect.
    #[error("{0}")]
    Timeout(String),
    /// A write was proposed but its entry was dropped on a leader change: it
    /// may or may not have been committed.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Local storage failed.
    #[error("storage error: {0}")]
    Storage(#[from] std::io::Error),
    /// A bug: a task that should not fail did, or the state machine
    /// answered a command with a result of another kind.
    #[error("internal error: {0}")]
    Internal(String),
    /// A read, watch or compaction at a revision whose history is compacted.
    #[error("revision {asked} is compacted: the oldest revision kept is {compacted}; read at {compacted} or later")]
    Compacted { asked: u64, compacted: u64 },
    /// A write that adds data, refused by the size quota: it would take the
    /// store past `quota`, or a member's NOSPACE alarm is raised.
    #[error("{}", no_space_message(*.used, *.quota, .alarmed))]
    NoSpace {
        used: u64,
        quota: u64,
        /// Members whose alarm is raised.
        alarmed: Vec<NodeId>,
    },
    /// A write whose kind some member's release cannot apply: nothing was
    /// written. It works once the cluster version reaches `needs`.
    #[error(
        "this call needs cluster version {needs}, and the cluster is at {cluster}: \
         some member runs an older release; upgrade every member, then retry"
    )]
    ClusterVersionTooOld {
        needs: crate::version::Version,
        cluster: crate::version::Version,
    },
    /// A read at a revision this node has not applied yet.
    #[error("revision {asked} is in the future: the newest revision here is {current}")]
    FutureRevision { asked: u64, current: u64 },
}

impl From<openraft::errors::Fatal<TypeConfig>> for NodeError {
    fn from(e: openraft::errors::Fatal<TypeConfig>) -> Self {
        NodeError::Stopping(Some(e))
    }
}

impl NodeError {
    /// A blocking task that did not finish (it panicked or was cancelled).
    pub fn task(e: tokio::task::JoinError) -> NodeError {
        NodeError::Internal(format!("a background task failed: {e}"))
    }

    /// A command whose result is not of the kind it produces.
    pub fn unexpected(result: &crate::types::CommandResult) -> NodeError {
        NodeError::Internal(format!("unexpected state machine result {result:?}"))
    }

    /// The gRPC code this error answers with.
    fn code(&self) -> Code {
        match self {
            NodeError::BadRequest(_) => Code::InvalidArgument,
            NodeError::MembershipRefused(_)
            | NodeError::NothingApplied
            | NodeError::LeaseFull { .. }
            | NodeError::ClusterVersionTooOld { .. } => Code::FailedPrecondition,
            NodeError::UnknownMember(_) | NodeError::LeaseNotFound { .. } => Code::NotFound,
            NodeError::LeaseExists { .. } => Code::AlreadyExists,
            NodeError::TooManyLeases { .. } | NodeError::NoSpace { .. } => Code::ResourceExhausted,
            NodeError::NotLeader { .. }
            | NodeError::NoQuorum(_)
            | NodeError::LeaderUnreachable(_)
            | NodeError::Stopping(_)
            | NodeError::Installing
            | NodeError::Busy(_)
            | NodeError::LeasesStarting => Code::Unavailable,
            NodeError::MembershipRace(_) => Code::Aborted,
            NodeError::Timeout(_) => Code::DeadlineExceeded,
            NodeError::OutcomeUnknown(_) => Code::Unknown,
            NodeError::Storage(_) | NodeError::Internal(_) => Code::Internal,
            NodeError::Compacted { .. } | NodeError::FutureRevision { .. } => Code::OutOfRange,
        }
    }
}

impl From<crate::store::ReadError> for NodeError {
    fn from(e: crate::store::ReadError) -> Self {
        use crate::store::ReadError;
        match e {
            ReadError::Compacted { asked, compacted } => NodeError::Compacted { asked, compacted },
            ReadError::Future { asked, current } => NodeError::FutureRevision { asked, current },
            ReadError::Installing => NodeError::Installing,
            ReadError::Io(e) => NodeError::Storage(e),
        }
    }
}

fn no_space_message(used: u64, quota: u64, alarmed: &[NodeId]) -> String {
    let why = if alarmed.is_empty() {
        format!("this write would take the store past its quota ({used} of {quota} bytes used)")
    } else {
        format!("the NOSPACE alarm is raised for member(s) {alarmed:?}")
    };
    format!(
        "database space exceeded: {why}; make room (delete keys, compact, revoke leases), \
         then see `raft-admin alarm list`"
    )
}

fn not_leader_message(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, address)) => format!("not the leader; the leader is node {id} at {address}"),
        None => "no leader is known right now (election in progress?); retry shortly".to_string(),
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = e.code();
        let mut status = Status::new(code, e.to_string());
        if let NodeError::NotLeader { .. } = &e {
            status.metadata_mut().insert(
                REASON_METADATA,
                tonic::metadata::MetadataValue::from_static(REASON_NOT_LEADER),
            );
        }
        if let NodeError::NoSpace { used, quota, .. } = &e {
            let metadata = status.metadata_mut();
            metadata.insert(
                REASON_METADATA,
                tonic::metadata::MetadataValue::from_static(REASON_NO_SPACE),
            );
            for (key, value) in [(STORE_BYTES_METADATA, used), (QUOTA_BYTES_METADATA, quota)] {
                if let Ok(value) = value.to_string().parse() {
                    metadata.insert(key, value);
                }
            }
        }
        if let NodeError::ClusterVersionTooOld { needs, cluster } = &e {
            let metadata = status.metadata_mut();
            metadata.insert(
                REASON_METADATA,
                tonic::metadata::MetadataValue::from_static(REASON_CLUSTER_VERSION),
            );
            for (key, version) in [
                (CLUSTER_VERSION_METADATA, cluster),
                (NEEDS_VERSION_METADATA, needs),
            ] {
                if let Ok(value) = version.to_string().parse() {
                    metadata.insert(key, value);
                }
            }
        }
        let revision = match &e {
            NodeError::Compacted { compacted, .. } => {
                Some((REASON_COMPACTED, COMPACT_REVISION_METADATA, *compacted))
            }
            NodeError::FutureRevision { current, .. } => {
                Some((REASON_FUTURE_REVISION, CURRENT_REVISION_METADATA, *current))
            }
            _ => None,
        };
        if let Some((reason, key, revision)) = revision {
            let metadata = status.metadata_mut();
            metadata.insert(
                REASON_METADATA,
                tonic::metadata::MetadataValue::from_static(reason),
            );
            if let Ok(value) = revision.to_string().parse() {
                metadata.insert(key, value);
            }
        }
        if let NodeError::NotLeader {
            leader: Some((id, address)),
        } = &e
        {
            let metadata = status.metadata_mut();
            if let Ok(value) = id.to_string().parse() {
                metadata.insert(LEADER_ID_METADATA, value);
            }
            if let Ok(value) = address.parse() {
                metadata.insert(LEADER_ADDR_METADATA, value);
            }
        }
        status
    }
}
