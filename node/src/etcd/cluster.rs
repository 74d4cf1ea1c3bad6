//! etcd's `Cluster` service. A member's etcd id is its raftkv node id; its
//! name is that id in decimal; its peer and client URLs are both its one
//! address (raftkv serves clients and peers on one port), with `https://`
//! when the node serves TLS and `http://` otherwise, because clients dial
//! them. `MemberList` is open to every caller; the membership changes are
//! not served yet.

use std::collections::BTreeSet;
use std::sync::Arc;

use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::cluster_server::Cluster;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::header;
use crate::grpc::routing::Placement;
use crate::node::RaftNode;
use crate::types::StoredMembership;

/// Where each `etcdserverpb.Cluster` method runs: a list on the node asked.
pub fn placement(method: &str) -> Placement {
    match method {
        "MemberList" => Placement::Here,
        _ => Placement::Leader,
    }
}

/// etcd's cluster API of one node.
pub struct EtcdCluster {
    node: Arc<RaftNode>,
    /// `https` or `http`: how clients reach the members.
    scheme: &'static str,
}

impl EtcdCluster {
    pub fn new(node: Arc<RaftNode>, tls: bool) -> EtcdCluster {
        let scheme = if tls { "https" } else { "http" };
        EtcdCluster { node, scheme }
    }
}

/// The members of `membership` as etcd lists them, in id order.
pub fn members(membership: &StoredMembership, scheme: &str) -> Vec<pb::Member> {
    let config = membership.membership();
    let voters: BTreeSet<_> = config.voter_ids().collect();
    config
        .nodes()
        .map(|(id, node)| {
            let url = format!("{scheme}://{}", node.addr);
            pb::Member {
                id: *id,
                name: id.to_string(),
                peer_ur_ls: vec![url.clone()],
                client_ur_ls: vec![url],
                is_learner: !voters.contains(id),
            }
        })
        .collect()
}

#[tonic::async_trait]
impl Cluster for EtcdCluster {
    async fn member_list(
        &self,
        _: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(pb::MemberListResponse {
            header: header(&self.node, self.node.revisions().current()),
            members: members(&self.node.membership(), self.scheme),
        }))
    }
}
