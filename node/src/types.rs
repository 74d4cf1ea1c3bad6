//! The Raft type configuration and the commands the state machine applies.
//!
//! This module sits at the bottom of the crate: storage, network and node all
//! name these types, so it depends on nothing else in the crate. The `Raft`
//! handle, which needs the storage types, lives above both in [`crate::node`].

use serde::Deserialize;
use serde::Serialize;

use crate::version::Version;

/// Node ids are plain integers chosen by the operator (`--id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// raftkv's Raft types: commands are [`Command`]s with their encoding
    /// ([`crate::entry::LogCommand`]), results [`CommandResult`];
    /// nodes are known by their gRPC address ([`openraft::BasicNode`]).
    pub TypeConfig:
        D = crate::entry::LogCommand,
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
    /// If every comparison holds, run `success`, else `failure` (added after
    /// the others: older log entries decode unchanged).
    Txn {
        compares: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    /// Grant a lease of `ttl_seconds`; its id is this entry's log index.
    LeaseGrant { ttl_seconds: u64 },
    /// Delete lease `id` and every key attached to it; `expired` when the
    /// leader's countdown ran out rather than a client asking.
    LeaseRevoke { id: u64, expired: bool },
    /// [`Command::Put`], attaching `key` to `lease` (which must exist).
    PutLeased {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
    /// [`Command::CompareAndSwap`], attaching `key` to `lease` when it swaps.
    CompareAndSwapLeased {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new_value: Vec<u8>,
        lease: u64,
    },
    /// Drop the history before `revision` on every node: reads and watches
    /// before it are refused from this entry on (added last: older entries
    /// decode unchanged).
    Compact { revision: u64 },
    /// Raise (`raise`) or clear the NOSPACE alarm of `member`; clearing with
    /// no member clears every member's (added last: older entries decode
    /// unchanged).
    Alarm { member: Option<u64>, raise: bool },
    /// etcd's transaction, put or delete-range (added last: older entries
    /// decode unchanged).
    Etcd(crate::etcd::txn::EtcdTxn),
    /// Grant lease `id`, chosen by the client (etcd's `LeaseGrant` with an
    /// ID), of `ttl_seconds`, if no lease row holds `id` (added last: older
    /// entries decode unchanged).
    LeaseGrantId { id: u64, ttl_seconds: u64 },
    /// Name the cluster `id`, unless it has a name already: the first such
    /// entry wins on every replica (added last: older entries decode
    /// unchanged). Proposed by a leader that finds the cluster unnamed.
    ClusterId { id: u64 },
    // The thirteen kinds above are the first release's (0.1), which wrote entries as
    // bincode of this enum: their order and fields are that format and never
    // change (see `entry`). The kinds below exist only in the versioned
    // encoding, and a leader proposes them only once every member reads it.
    /// Delete every live key that starts with `prefix`.
    DeletePrefix { prefix: Vec<u8> },
    /// Raise the cluster version to `version`: every member runs it or a
    /// newer release. Never lowers it.
    ClusterVersion { version: Version },
}

/// How many of [`Command`]'s kinds the first release's encoding has.
pub const FIRST_RELEASE_KINDS: u32 = 13;

impl Command {
    /// The lowest cluster version whose members all apply this command
    /// alike: before it, the leader refuses to propose it.
    pub fn requires(&self) -> Version {
        match self {
            Command::DeletePrefix { .. } => Version::VERSIONED_ENTRIES,
            // A node older than the version it raises to must not apply it.
            Command::ClusterVersion { version } => Version::VERSIONED_ENTRIES.max(*version),
            _ => Version::FIRST,
        }
    }
}

/// One comparison of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Vec<u8>,
    pub check: Check,
}

/// What a comparison checks about its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    /// The key holds exactly this value.
    Value(Vec<u8>),
    /// The key is present (`true`) or absent (`false`).
    Exists(bool),
    /// The key was last written at this log index (0: it is absent).
    ModifiedIndex(u64),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    /// A put attaching `key` to `lease` (added last: older entries decode unchanged).
    PutLeased {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: u64,
    },
}

/// What one transaction operation produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    Put,
    Deleted {
        existed: bool,
    },
    /// The key's value, if present.
    Got {
        found: Option<Stored>,
    },
}

/// A key's value as the state machine holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub value: Vec<u8>,
    /// The revision (log index) of the write that set it.
    pub modified: u64,
    /// The lease it is attached to (0: none).
    pub lease: u64,
    /// The revision that created it (its first write since it was absent).
    pub created: u64,
    /// Writes since it was created (1 on creation).
    pub version: u64,
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
    /// A transaction: whether its comparisons held, and one result per
    /// operation of the branch that ran.
    Txn {
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    /// A lease was granted (its id is the entry's index).
    LeaseGranted,
    /// A lease revoke: whether the lease existed, and how many keys went with it.
    LeaseRevoked { found: bool, keys_deleted: u64 },
    /// A write named lease `id`, which does not exist: nothing was written.
    LeaseNotFound { id: u64 },
    /// A write would attach more keys to lease `id` than one may carry:
    /// nothing was written.
    LeaseFull { id: u64 },
    /// A compaction: the compaction point after it (unchanged when the
    /// revision asked was not after it).
    Compacted { revision: u64 },
    /// etcd's transaction: its outcome (an `EtcdOpResult::Txn`), or why it
    /// wrote nothing.
    Etcd(Result<crate::etcd::txn::EtcdOpResult, crate::etcd::txn::EtcdRefusal>),
    /// A lease was granted as `id` (a server-chosen id whose revision a
    /// client's lease held, or a client's).
    LeaseGrantedAs { id: u64 },
    /// A grant asked for lease `id`, which a lease row holds: nothing was
    /// written.
    LeaseExists { id: u64 },
    /// A prefix delete: how many live keys it deleted.
    DeletedPrefix { deleted: u64 },
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
            Command::Txn {
                compares,
                success,
                failure,
            } => write!(
                f,
                "txn({} compares, {}+{} ops)",
                compares.len(),
                success.len(),
                failure.len()
            ),
            Command::LeaseGrant { ttl_seconds } => write!(f, "lease-grant({ttl_seconds}s)"),
            Command::LeaseGrantId { id, ttl_seconds } => {
                write!(f, "lease-grant({id}, {ttl_seconds}s)")
            }
            Command::LeaseRevoke { id, expired } => {
                write!(f, "lease-revoke({id}, expired: {expired})")
            }
            Command::PutLeased { key, value, lease } => write!(
                f,
                "put({}B key, {}B value, lease {lease})",
                key.len(),
                value.len()
            ),
            Command::CompareAndSwapLeased { key, lease, .. } => {
                write!(f, "cas({}B key, lease {lease})", key.len())
            }
            Command::Compact { revision } => write!(f, "compact({revision})"),
            Command::ClusterId { id } => write!(f, "cluster-id({id:x})"),
            Command::DeletePrefix { prefix } => {
                write!(f, "delete-prefix({}B prefix)", prefix.len())
            }
            Command::ClusterVersion { version } => write!(f, "cluster-version({version})"),
            Command::Alarm { member, raise } => {
                write!(f, "alarm(member {member:?}, raise: {raise})")
            }
            Command::Etcd(txn) => write!(
                f,
                "etcd-txn({} compares, {}+{} ops)",
                txn.compares.len(),
                txn.success.len(),
                txn.failure.len()
            ),
        }
    }
}
