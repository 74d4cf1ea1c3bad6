//! etcd's `Cluster` service. A member's etcd id is its raftkv node id; its
//! name is that id in decimal; its peer and client URLs are both its one
//! address (raftkv serves clients and peers on one port), with `https://`
//! when the node serves TLS and `http://` otherwise, because clients dial
//! them. `MemberList` is open to every caller. `MemberPromote` (a learner
//! that has caught up becomes a voter) and `MemberRemove` need the admin
//! role under TLS; `MemberAdd` and `MemberUpdate` are not served yet.

use std::collections::BTreeSet;
use std::sync::Arc;

use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::cluster_server::Cluster;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::errors::status;
use super::errors::EtcdError;
use super::header;
use crate::grpc::routing::Placement;
use crate::node::RaftNode;
use crate::security::require;
use crate::security::Caller;
use crate::security::Role;
use crate::security::RolePolicy;
use crate::types::StoredMembership;

/// Where each `etcdserverpb.Cluster` method runs: a list on the node
/// asked; a removal on the leader, finished by the next one if it removes
/// the leader; the rest on the leader.
pub fn placement(method: &str) -> Placement {
    match method {
        "MemberList" => Placement::Here,
        "MemberRemove" => Placement::LeaderThenSuccessor,
        _ => Placement::Leader,
    }
}

/// etcd's cluster API of one node.
pub struct EtcdCluster {
    node: Arc<RaftNode>,
    /// `https` or `http`: how clients reach the members.
    scheme: &'static str,
    policy: RolePolicy,
}

impl EtcdCluster {
    pub fn new(node: Arc<RaftNode>, tls: bool, policy: RolePolicy) -> EtcdCluster {
        let scheme = if tls { "https" } else { "http" };
        EtcdCluster {
            node,
            scheme,
            policy,
        }
    }

    fn admin<T>(&self, request: &Request<T>, method: &str) -> Result<(), Status> {
        let what = format!("etcdserverpb.Cluster/{method}");
        require(
            request.extensions().get::<Caller>(),
            Role::Admin,
            &what,
            &self.policy,
        )
    }

    /// The members now, with a header at the change's index.
    fn members_at(&self, index: u64) -> (Option<pb::ResponseHeader>, Vec<pb::Member>) {
        (
            header(&self.node, index.max(self.node.revisions().current())),
            members(&self.node.membership(), self.scheme),
        )
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
    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.admin(&request, "MemberPromote")?;
        let id = request.get_ref().id;
        let membership = self.node.membership();
        let config = membership.membership();
        let Some(address) = config.get_node(&id).map(|n| n.addr.clone()) else {
            return Err(EtcdError::MemberNotFound.into());
        };
        if config.voter_ids().any(|voter| voter == id) {
            return Err(EtcdError::MemberNotLearner.into());
        }
        let index = self
            .node
            .add_voter(id, &address, None)
            .await
            .map_err(status)?;
        let (header, members) = self.members_at(index);
        Ok(Response::new(pb::MemberPromoteResponse { header, members }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.admin(&request, "MemberRemove")?;
        let id = request.get_ref().id;
        if self.node.membership().membership().get_node(&id).is_none() {
            return Err(EtcdError::MemberNotFound.into());
        }
        let index = self.node.remove_node(id, None).await.map_err(status)?;
        let (header, members) = self.members_at(index);
        Ok(Response::new(pb::MemberRemoveResponse { header, members }))
    }

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
