//! The gRPC services one node serves on its single port: `raftkv.KV`
//! ([`kv`]), `raftkv.Admin` ([`admin`]), `raftkv.Raft` ([`raft`]), the
//! standard health service ([`health`]) and server reflection.

pub mod admin;
pub mod health;
pub mod kv;
pub mod raft;
pub mod raft_guard;
pub mod txn;
pub mod watch;

use std::time::Duration;

use raftkv_proto::FORWARDED_METADATA;
use tonic::transport::Channel;
use tonic::Request;
use tonic::Status;

use crate::error::NodeError;
use crate::node::RaftNode;

/// Deadline of a forwarded request when the client set none.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a request that must run on the leader goes: `None` to serve it here
/// (this node leads), or the channel to the leader to forward it to. A request
/// that was already forwarded once is never forwarded again: it gets
/// `UNAVAILABLE` with the leader hint instead, so a stale view cannot loop.
pub(crate) fn route<T>(node: &RaftNode, request: &Request<T>) -> Result<Option<Channel>, Status> {
    if node.names_itself_leader() {
        return Ok(None);
    }
    let leader = node.leader().filter(|(id, _)| *id != node.id());
    match leader {
        Some((id, address)) if !request.metadata().contains_key(FORWARDED_METADATA) => {
            tracing::debug!(leader = id, %address, "forwarding to the leader");
            node.channel_to(&address)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()))
        }
        leader => Err(NodeError::NotLeader { leader }.into()),
    }
}

/// `request` re-addressed to the leader: marked as forwarded, with the
/// client's deadline (or [`FORWARD_TIMEOUT`]).
pub(crate) fn forwarded<T>(request: Request<T>) -> Request<T> {
    let (metadata, _, message) = request.into_parts();
    let mut forwarded = Request::new(message);
    match metadata.get("grpc-timeout") {
        Some(timeout) => {
            forwarded
                .metadata_mut()
                .insert("grpc-timeout", timeout.clone());
        }
        None => forwarded.set_timeout(FORWARD_TIMEOUT),
    }
    forwarded.metadata_mut().insert(
        FORWARDED_METADATA,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    forwarded
}
