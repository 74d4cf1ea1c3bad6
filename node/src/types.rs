//! The Raft type configuration and the commands the state machine applies.
//!
//! This module sits at the bottom of the crate: storage, network and node all
//! name these types, so it depends on nothing else in the crate. The `Raft`
//! handle, which needs the storage types, lives above both in [`crate::node`].

use serde::Deserialize;
use serde::Serialize;

/// Node ids are plain integers chosen by the operator (`--id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// raftkv's Raft types: commands are [`Command`], results [`CommandResult`];
    /// nodes are known by their gRPC address ([`openraft::BasicNode`]).
    pub TypeConfig:
        D = Command,
        R = CommandResult,
);

/// A node's address as recorded in the membership.
pub type Node = openraft::BasicNode;

/// Log id (leader + index) of raftkv's type configuration.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;

/// Vote of raftkv's type configuration.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;

/// openraft's AppendEntries request for raftkv.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;

/// openraft's vote and pre-vote request for raftkv.
pub type VoteRequest = openraft::raft::VoteRequest<TypeConfig>;

/// openraft's leadership hand-over message for raftkv.
pub type TransferLeaderRequest = openraft::raft::TransferLeaderRequest<TypeConfig>;

/// A log entry of raftkv's type configuration.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;

/// Membership together with the log id it was stored at.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;

/// Snapshot metadata of raftkv's type configuration.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;

/// A snapshot whose data is the encoded key-value pairs.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// A change to the key-value state, replicated through the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// Remove `key`.
    Delete { key: Vec<u8> },
    /// Set `key` to `new_value` if it currently holds `expected` (`None`: is absent).
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new_value: Vec<u8>,
    },
}

/// What applying a [`Command`] (or a blank or membership entry) produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Blank and membership entries, and puts.
    #[default]
    Done,
    /// A delete: whether the key existed.
    Deleted { existed: bool },
    /// A compare-and-swap: whether it swapped, and the value found when it did not.
    Swapped {
        succeeded: bool,
        current: Option<Vec<u8>>,
    },
}

/// Short form for logs: the kind of command and the key's size, never the data.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Put { key, value } => {
                write!(f, "put({}B key, {}B value)", key.len(), value.len())
            }
            Command::Delete { key } => write!(f, "delete({}B key)", key.len()),
            Command::CompareAndSwap { key, .. } => write!(f, "cas({}B key)", key.len()),
        }
    }
}
