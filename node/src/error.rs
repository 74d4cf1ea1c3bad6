//! The errors a node answers requests with, and their one mapping to gRPC statuses.

use raftkv_proto::COMPACT_REVISION_METADATA;
use raftkv_proto::CURRENT_REVISION_METADATA;
use raftkv_proto::LEADER_ADDR_METADATA;
use raftkv_proto::LEADER_ID_METADATA;
use raftkv_proto::QUOTA_BYTES_METADATA;
use raftkv_proto::REASON_COMPACTED;
use raftkv_proto::REASON_FUTURE_REVISION;
use raftkv_proto::REASON_METADATA;
use raftkv_proto::REASON_NOT_LEADER;
use raftkv_proto::REASON_NO_SPACE;
use raftkv_proto::STORE_BYTES_METADATA;
use tonic::Code;
use tonic::Status;

use crate::types::NodeId;

/// Why a client or admin request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NodeError {
    /// The request itself is wrong (empty key, oversized value, bad address, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is valid but the cluster's state does not allow it
    /// (removing the last voter, transferring to a learner, …).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A node id that is not in the cluster.
    #[error("{0}")]
    NotFound(String),
    /// A bound the operator set is reached (`--max-leases`, …).
    #[error("{0}")]
    ResourceExhausted(String),
    /// This node is not the leader; `leader` is the leader's id and address when known.
    #[error("{}", not_leader_message(.leader))]
    NotLeader { leader: Option<(NodeId, String)> },
    /// The cluster cannot answer now (no quorum, shutting down); retrying later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The request conflicted with a concurrent change (another membership
    /// change kept the configuration moving); nothing was changed and the
    /// same request may be sent again.
    #[error("{0}")]
    Aborted(String),
    /// The operation did not finish in time; it may still take effect.
    #[error("{0}")]
    Timeout(String),
    /// A write was proposed but its entry was dropped on a leader change: it
    /// may or may not have been committed.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// Local storage failed.
    #[error("storage error: {0}")]
    Storage(String),
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
    /// A read at a revision this node has not applied yet.
    #[error("revision {asked} is in the future: the newest revision here is {current}")]
    FutureRevision { asked: u64, current: u64 },
}

impl From<crate::store::ReadError> for NodeError {
    fn from(e: crate::store::ReadError) -> Self {
        use crate::store::ReadError;
        match e {
            ReadError::Compacted { asked, compacted } => NodeError::Compacted { asked, compacted },
            ReadError::Future { asked, current } => NodeError::FutureRevision { asked, current },
            ReadError::Installing => NodeError::Unavailable(
                "this node is replacing its state with a snapshot from the leader; retry, or read \
                 from another node"
                    .into(),
            ),
            ReadError::Io(e) => e.into(),
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

impl From<std::io::Error> for NodeError {
    fn from(e: std::io::Error) -> Self {
        NodeError::Storage(e.to_string())
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let code = match &e {
            NodeError::InvalidArgument(_) => Code::InvalidArgument,
            NodeError::FailedPrecondition(_) => Code::FailedPrecondition,
            NodeError::NotFound(_) => Code::NotFound,
            NodeError::ResourceExhausted(_) | NodeError::NoSpace { .. } => Code::ResourceExhausted,
            NodeError::NotLeader { .. } | NodeError::Unavailable(_) => Code::Unavailable,
            NodeError::Aborted(_) => Code::Aborted,
            NodeError::Timeout(_) => Code::DeadlineExceeded,
            NodeError::OutcomeUnknown(_) => Code::Unknown,
            NodeError::Storage(_) => Code::Internal,
            NodeError::Compacted { .. } | NodeError::FutureRevision { .. } => Code::OutOfRange,
        };
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
