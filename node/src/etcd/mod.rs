//! etcd's v3 API, served on the node's port beside raftkv's own, so etcd's
//! clients and tools work against raftkv unchanged. Each etcd service maps
//! onto what the node already does; where etcd's rules differ from
//! raftkv's, the module of that service says how.
//!
//! Revisions are raftkv's: the log index of the entry that wrote a version.
//! They grow with every write, as etcd's do, but also skip the indexes of
//! entries that write no key (leader changes, lease grants, membership).

pub mod auth;
pub mod cluster;
pub mod errors;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod range;
pub mod txn;
pub mod watch;

use raftkv_proto::etcd::etcdserverpb::ResponseHeader;
use raftkv_proto::etcd::mvccpb;

use crate::node::RaftNode;
use crate::security::require;
use crate::security::Caller;
use crate::security::Role;
use crate::security::RolePolicy;
use crate::types::Stored;

/// Refuses `request` unless its caller holds the admin role (under TLS;
/// without it every caller does): the changes etcd's `Cluster` and
/// `Maintenance` services make, and a snapshot of all the data. `service`
/// and `method` name the call in the refusal.
pub fn require_admin<T>(
    request: &tonic::Request<T>,
    service: &str,
    method: &str,
    policy: &RolePolicy,
) -> Result<(), tonic::Status> {
    require(
        request.extensions().get::<Caller>(),
        Role::Admin,
        &format!("etcdserverpb.{service}/{method}"),
        policy,
    )
}

/// The header of every answer: who answered, at which revision and term.
pub fn header(node: &RaftNode, revision: u64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: node.kv().cluster_id(),
        member_id: node.id(),
        revision: signed(revision),
        raft_term: node.current_term(),
    })
}

/// A revision, version or lease as etcd's signed numbers (raftkv's stay
/// far below `i64::MAX`).
pub fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A key's version as etcd's `KeyValue`.
pub fn key_value(key: Vec<u8>, stored: Stored) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key,
        create_revision: signed(stored.created),
        mod_revision: signed(stored.modified),
        version: signed(stored.version),
        value: stored.value,
        lease: signed(stored.lease),
    }
}
