//! raftkv's wire protocol: the client (`KV`), admin (`Admin`) and node-to-node
//! (`Raft`) gRPC services, and the encoding of the Raft log's commands,
//! generated from `proto/*.proto` at build time.

/// Generated messages and service stubs, package `raftkv`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("raftkv");
}

/// The Raft log's commands as nodes store and replicate them, package
/// `raftkv.entry` (messages only, no service).
pub mod entry {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("raftkv.entry");
}

/// The encoded file-descriptor set of every raftkv service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/raftkv_descriptor.bin"));

/// etcd's v3 API (v3.5's `etcdserverpb`, `mvccpb` and `authpb`), which a
/// node serves beside its own so etcd's clients and tools work unchanged.
/// Generated from the copies in `proto/etcd` (Apache-2.0, see its `NOTICE.md`).
pub mod etcd {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }

    /// The encoded file-descriptor set of etcd's services, for reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/etcd_descriptor.bin"));
}

/// Health-service name that is SERVING only on the current leader.
pub const LEADER_HEALTH_SERVICE: &str = "raftkv.Leader";

/// Response-metadata key carrying the leader's node id on a not-leader answer.
pub const LEADER_ID_METADATA: &str = "raftkv-leader-id";

/// Response-metadata key carrying the leader's address on a not-leader answer.
pub const LEADER_ADDR_METADATA: &str = "raftkv-leader-addr";

/// Response-metadata key naming why a call failed, where the status code
/// alone does not say what the caller may do next. Clients decide on it (and
/// on the code), never on the message.
pub const REASON_METADATA: &str = "raftkv-reason";

/// [`REASON_METADATA`] value: this node does not lead and did nothing; the
/// leader's id and address follow in [`LEADER_ID_METADATA`] and
/// [`LEADER_ADDR_METADATA`] when known. Safe to send again to the leader.
pub const REASON_NOT_LEADER: &str = "not-leader";

/// On a `Watch` that ended with OUT_OF_RANGE: the oldest start revision the
/// node still serves (the compaction point + 1).
pub const OLDEST_INDEX_METADATA: &str = "raftkv-oldest-index";

/// On a `Watch` ended because it cannot go on where it is (a compaction
/// passed it, or the node stops): the revision to resume from (rescan first
/// if it is before the oldest served).
pub const RESUME_INDEX_METADATA: &str = "raftkv-resume-index";

/// On OUT_OF_RANGE for a compacted revision (a read, a watch or a compaction
/// at or before it): the compaction point, the oldest revision a read may
/// ask for.
pub const COMPACT_REVISION_METADATA: &str = "raftkv-compact-revision";

/// On OUT_OF_RANGE for a read at a revision not applied yet: the newest
/// revision the node has.
pub const CURRENT_REVISION_METADATA: &str = "raftkv-current-revision";

/// [`REASON_METADATA`] value: the revision asked for is compacted.
pub const REASON_COMPACTED: &str = "compacted";

/// [`REASON_METADATA`] value: the revision asked for is not applied yet.
pub const REASON_FUTURE_REVISION: &str = "future-revision";

/// [`REASON_METADATA`] value: the write would add data past the size quota,
/// or a member's NOSPACE alarm is raised: nothing was written. Reads,
/// deletes, lease revokes and compaction still work (they make room); the
/// sizes follow in [`STORE_BYTES_METADATA`] and [`QUOTA_BYTES_METADATA`].
pub const REASON_NO_SPACE: &str = "no-space";

/// [`REASON_METADATA`] value: this node's disk is full; it serves nothing
/// (and did nothing) until there is room again. Safe to send again to
/// another node.
pub const REASON_DISK_FULL: &str = "disk-full";

/// On a "no-space" refusal: what the leader's store holds, as it counts it.
pub const STORE_BYTES_METADATA: &str = "raftkv-store-bytes";

/// On a "no-space" refusal: the leader's quota (`--quota-bytes`).
pub const QUOTA_BYTES_METADATA: &str = "raftkv-quota-bytes";

/// Request-metadata key a node sets when it forwards a request to the leader,
/// so that the receiver answers instead of forwarding again.
pub const FORWARDED_METADATA: &str = "raftkv-forwarded";

/// Request-metadata key a node sets on a request it forwards: the role of
/// the client that sent it (`client`, `admin` or `node`), which the leader
/// checks instead of the forwarding node's own. Honoured only on a call
/// from a node's certificate; a node replaces whatever a client sent.
pub const CALLER_ROLE_METADATA: &str = "raftkv-caller-role";

/// [`REASON_METADATA`] value: the call needs a newer cluster version than
/// the cluster has (some member runs an older release): nothing was
/// written. The versions follow in [`CLUSTER_VERSION_METADATA`] and
/// [`NEEDS_VERSION_METADATA`]; the call works once every member is upgraded.
pub const REASON_CLUSTER_VERSION: &str = "cluster-version";

/// On a "cluster-version" refusal: the cluster version (`major.minor`).
pub const CLUSTER_VERSION_METADATA: &str = "raftkv-cluster-version";

/// On a "cluster-version" refusal: the cluster version the call needs.
pub const NEEDS_VERSION_METADATA: &str = "raftkv-needs-version";
