//! `raftkv.Admin`: cluster management and inspection. Changes run on the
//! leader (a follower forwards them); inspection answers from this node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use raftkv_proto::pb;
use raftkv_proto::pb::admin_server::Admin;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::backup::backup_stream;
use super::backup::BackupStream;
use super::describe::configuration;
use super::describe::millis;
use super::describe::status;
use super::routing::Placement;
use crate::error::NodeError;
use crate::node::Consistency;
use crate::node::RaftNode;
use crate::types::NodeId;

/// Transfer timeout when the request sets none.
const DEFAULT_TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where each `raftkv.Admin` method runs: membership changes, transfers,
/// barriers, compaction, alarm changes and backups on the leader (a demotion
/// or removal that makes the leader hand over is finished by the new one);
/// what describes or steers this one node, here.
pub fn placement(method: &str) -> Placement {
    match method {
        "AddLearner" | "AddVoter" | "TransferLeader" | "Barrier" | "VerifyLeader" | "Compact"
        | "Backup" => Placement::Leader,
        "DemoteVoter" | "RemoveNode" => Placement::LeaderThenSuccessor,
        "Alarm" => Placement::LeaderUnless(|message| {
            pb::AlarmRequest::decode(message)
                .is_ok_and(|request| request.action == pb::alarm_request::Action::List as i32)
        }),
        // Initialize, GetConfiguration, Status, TriggerSnapshot, StateDigest,
        // Shutdown: about this node.
        _ => Placement::Here,
    }
}

/// The admin API of one node.
pub struct AdminService {
    node: Arc<RaftNode>,
}

impl AdminService {
    /// The service over `node`.
    pub fn new(node: Arc<RaftNode>) -> AdminService {
        AdminService { node }
    }

    /// The configuration and its index as a response to a membership change.
    fn membership_response(&self, index: u64) -> Response<pb::MembershipResponse> {
        let metrics = self.node.metrics();
        Response::new(pb::MembershipResponse {
            index,
            configuration: Some(configuration(&metrics)),
        })
    }
}

/// The wire's `previous_index` as the node's precondition: 0 means the
/// request expects no particular configuration.
fn expected_index(previous_index: u64) -> Option<u64> {
    (previous_index != 0).then_some(previous_index)
}

/// The wire's transfer target: 0 means any voter (the most up-to-date one).
fn transfer_target(node_id: NodeId) -> Option<NodeId> {
    (node_id != 0).then_some(node_id)
}

#[tonic::async_trait]
impl Admin for AdminService {
    #[tracing::instrument(level = "info", skip_all)]
    async fn initialize(
        &self,
        request: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::ClusterConfiguration>, Status> {
        let mut members = BTreeMap::new();
        for member in request.into_inner().members {
            if members.insert(member.id, member.address).is_some() {
                return Err(
                    NodeError::BadRequest(format!("node {} is listed twice", member.id)).into(),
                );
            }
        }
        self.node.initialize(members).await?;
        Ok(Response::new(configuration(&self.node.metrics())))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn add_learner(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = request.into_inner();
        let index = self
            .node
            .add_learner(r.node_id, &r.address, expected_index(r.previous_index))
            .await?;
        Ok(self.membership_response(index))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn add_voter(
        &self,
        request: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = request.into_inner();
        let index = self
            .node
            .add_voter(r.node_id, &r.address, expected_index(r.previous_index))
            .await?;
        Ok(self.membership_response(index))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn demote_voter(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = *request.get_ref();
        let result = self
            .node
            .demote_voter(r.node_id, expected_index(r.previous_index))
            .await?;
        Ok(self.membership_response(result))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn remove_node(
        &self,
        request: Request<pb::NodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let r = *request.get_ref();
        let result = self
            .node
            .remove_node(r.node_id, expected_index(r.previous_index))
            .await?;
        Ok(self.membership_response(result))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let r = request.into_inner();
        let timeout = match r.timeout_ms {
            0 => DEFAULT_TRANSFER_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let (leader_id, elapsed) = self
            .node
            .transfer_leader(transfer_target(r.node_id), timeout)
            .await?;
        let metrics = self.node.metrics();
        let leader_address = metrics
            .membership_config
            .membership()
            .get_node(&leader_id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Ok(Response::new(pb::TransferLeaderResponse {
            leader_id,
            leader_address,
            term: metrics.current_term,
            elapsed_ms: millis(elapsed),
        }))
    }

    async fn get_configuration(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::ClusterConfiguration>, Status> {
        Ok(Response::new(configuration(&self.node.metrics())))
    }

    async fn status(&self, _: Request<pb::Empty>) -> Result<Response<pb::NodeStatus>, Status> {
        Ok(Response::new(status(&self.node, &self.node.metrics())))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn trigger_snapshot(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let index = self.node.trigger_snapshot().await?;
        Ok(Response::new(pb::SnapshotResponse { index }))
    }

    async fn barrier(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::BarrierResponse>, Status> {
        let index = self.node.barrier().await?;
        Ok(Response::new(pb::BarrierResponse { index }))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let revision = request.into_inner().revision;
        let (revision, index) = self.node.compact(revision).await?;
        Ok(Response::new(pb::CompactResponse { revision, index }))
    }

    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::Action;
        let action = Action::try_from(request.get_ref().action)
            .map_err(|_| NodeError::BadRequest("unknown alarm action".into()))?;
        if action != Action::List {
            let member = match (action, request.get_ref().member_id) {
                (Action::Raise, 0) => Some(self.node.id()),
                (_, 0) => None,
                (_, id) => Some(id),
            };
            let unknown = |id: &u64| {
                !self
                    .node
                    .membership()
                    .membership()
                    .nodes()
                    .any(|(n, _)| n == id)
            };
            if let Some(id) = member.filter(|id| action == Action::Raise && unknown(id)) {
                return Err(NodeError::UnknownMember(format!(
                    "node {id} is not a member of the cluster"
                ))
                .into());
            }
            self.node
                .propose_alarm(member, action == Action::Raise)
                .await?;
        }
        Ok(Response::new(pb::AlarmResponse {
            nospace_members: self.node.kv().alarms().into_iter().collect(),
            store_bytes: self.node.kv().store_bytes(),
            quota_bytes: self.node.limits().quota_bytes,
        }))
    }

    async fn verify_leader(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::VerifyLeaderResponse>, Status> {
        self.node.read_fence(Consistency::Linearizable).await?;
        let metrics = self.node.metrics();
        Ok(Response::new(pb::VerifyLeaderResponse {
            leader_id: self.node.id(),
            term: metrics.current_term,
        }))
    }

    async fn state_digest(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::StateDigestResponse>, Status> {
        // The walk over every key runs off the async workers.
        let node = self.node.clone();
        let digest = tokio::task::spawn_blocking(move || node.state_digest())
            .await
            .map_err(NodeError::task)?
            .map_err(NodeError::Storage)?;
        match digest {
            Some(digest) => Ok(Response::new(pb::StateDigestResponse {
                applied_index: digest.applied_index,
                key_count: digest.key_count,
                digest: digest.digest,
            })),
            None => Err(NodeError::Busy(
                "the state changed during every attempt to digest it; retry when writes pause"
                    .into(),
            )
            .into()),
        }
    }

    type BackupStream = BackupStream;

    #[tracing::instrument(level = "info", skip_all)]
    async fn backup(&self, _: Request<pb::Empty>) -> Result<Response<Self::BackupStream>, Status> {
        let backup = self.node.backup().await?;
        Ok(Response::new(backup_stream(self.node.id(), backup)?))
    }

    #[tracing::instrument(level = "info", skip_all)]
    async fn shutdown(&self, _: Request<pb::Empty>) -> Result<Response<pb::Empty>, Status> {
        tracing::info!("shutdown requested through the admin API");
        self.node.request_stop();
        Ok(Response::new(pb::Empty {}))
    }
}
