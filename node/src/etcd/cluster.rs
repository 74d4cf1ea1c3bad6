//! etcd's `Cluster` service. A member's etcd id is its raftkv node id; its
//! name is that id in decimal; its peer and client URLs are both its one
//! address (raftkv serves clients and peers on one port), with `https://`
//! when the node serves TLS and `http://` otherwise, because clients dial
//! them. `MemberList` is open to every caller; changes need the admin role
//! under TLS.
//!
//! `MemberAdd` picks the id, as etcd does, before the member starts: one
//! above every member's id. The operator then starts the node with that id
//! (`etcdctl` prints it in hexadecimal; `--id` takes decimal) and the URL's
//! host and port as its address, without `--bootstrap` or `--join`: the
//! leader reaches it. A learner is added as asked. A voter is added as a
//! learner and promoted once it has started and caught up (within
//! `add_voter`'s catch-up time), where etcd would count it in the quorum at
//! once; if that time passes, it stays a learner until `MemberPromote`.
//!
//! `MemberUpdate` changes a member's one address (its peer URL, which must
//! be a single URL as at `MemberAdd`). Start the node at its new address
//! first: the leader moves its connections to the new address on their
//! next call.

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
use super::require_admin;
use crate::error::NodeError;
use crate::grpc::routing::Placement;
use crate::node::RaftNode;
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
        require_admin(request, "Cluster", method, &self.policy)
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

/// The one address of a new member from etcd's peer URLs: a single
/// `http://` or `https://` URL of a host and port, nothing after them.
fn member_address(urls: &[String]) -> Result<String, Status> {
    let [url] = urls else {
        return Err(if urls.is_empty() {
            EtcdError::MemberBadUrls.into()
        } else {
            NodeError::BadRequest(
                "a raftkv member has one address for peers and clients: give one peer URL".into(),
            )
            .into()
        });
    };
    let address = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or(EtcdError::MemberBadUrls)?;
    if address.contains('/') || raftkv_client::check_address(address).is_err() {
        return Err(EtcdError::MemberBadUrls.into());
    }
    Ok(address.to_string())
}

/// Whether a member other than `except` has `address`.
fn address_taken(membership: &StoredMembership, address: &str, except: Option<u64>) -> bool {
    membership
        .membership()
        .nodes()
        .any(|(id, node)| Some(*id) != except && node.addr == address)
}

#[tonic::async_trait]
impl Cluster for EtcdCluster {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.admin(&request, "MemberAdd")?;
        let r = request.into_inner();
        let address = member_address(&r.peer_ur_ls)?;
        if address_taken(&self.node.membership(), &address, None) {
            return Err(EtcdError::PeerUrlExist.into());
        }
        let (id, index) = self.node.add_member(&address).await.map_err(status)?;
        if !r.is_learner {
            // A voter that has not started yet would count against the
            // quorum (etcd takes that risk); this one votes once it has
            // started and caught up.
            let node = self.node.clone();
            tokio::spawn(async move {
                match node.add_voter(id, &address, None).await {
                    Ok(index) => {
                        tracing::info!(id, index, "a member added through etcd's API now votes")
                    }
                    Err(e) => {
                        tracing::warn!(id, cause = %e, "a member added through etcd's API stays a learner; promote it once it runs")
                    }
                }
            });
        }
        let (header, members) = self.members_at(index);
        let member = members.iter().find(|m| m.id == id).cloned();
        Ok(Response::new(pb::MemberAddResponse {
            header,
            member,
            members,
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.admin(&request, "MemberUpdate")?;
        let r = request.into_inner();
        let address = member_address(&r.peer_ur_ls)?;
        let membership = self.node.membership();
        if membership.membership().get_node(&r.id).is_none() {
            return Err(EtcdError::MemberNotFound.into());
        }
        if address_taken(&membership, &address, Some(r.id)) {
            return Err(EtcdError::PeerUrlExist.into());
        }
        let index = self
            .node
            .update_address(r.id, &address)
            .await
            .map_err(status)?;
        let (header, members) = self.members_at(index);
        Ok(Response::new(pb::MemberUpdateResponse { header, members }))
    }

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
