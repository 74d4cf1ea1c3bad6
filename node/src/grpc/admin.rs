//! `raftkv.Admin`: cluster management and inspection. Changes run on the
//! leader (a follower forwards them); inspection answers from this node.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::Instant as _;
use openraft::RaftMetrics;
use openraft::ServerState;
use prost::Message;
use raftkv_proto::pb;
use raftkv_proto::pb::admin_server::Admin;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::routing::Placement;
use crate::error::NodeError;
use crate::node::BackupSnapshot;
use crate::node::Consistency;
use crate::node::RaftNode;
use crate::types::NodeId;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// Data bytes per message of a backup stream.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

/// The messages of `Backup`.
pub type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

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

fn suffrage(is_voter: bool) -> i32 {
    if is_voter {
        pb::Suffrage::Voter
    } else {
        pb::Suffrage::Learner
    }
    .into()
}

fn members(membership: &StoredMembership) -> Vec<pb::Member> {
    let config = membership.membership();
    let voters: BTreeSet<_> = config.voter_ids().collect();
    config
        .nodes()
        .map(|(id, node)| pb::Member {
            id: *id,
            address: node.addr.clone(),
            suffrage: suffrage(voters.contains(id)),
        })
        .collect()
}

/// The effective configuration in `metrics`.
fn configuration(metrics: &RaftMetrics<TypeConfig>) -> pb::ClusterConfiguration {
    let membership = &metrics.membership_config;
    let committed = metrics.committed_membership_config.log_id() == membership.log_id();
    configuration_of(membership, committed)
}

/// `membership` on the wire.
fn configuration_of(membership: &StoredMembership, committed: bool) -> pb::ClusterConfiguration {
    pb::ClusterConfiguration {
        members: members(membership),
        index: membership.log_id().as_ref().map_or(0, |l| l.index),
        joint: membership.membership().get_joint_config().len() > 1,
        committed,
    }
}

fn role(state: ServerState) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Follower => pb::Role::Follower,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Shutdown => pb::Role::Shutdown,
    }
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Everything `metrics` says about this node and, on the leader, its peers.
fn status(node: &RaftNode, metrics: &RaftMetrics<TypeConfig>) -> pb::NodeStatus {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<_> = membership.voter_ids().collect();
    let peers = membership
        .nodes()
        .filter(|(id, _)| **id != node.id())
        .map(|(id, peer)| pb::PeerStatus {
            id: *id,
            address: peer.addr.clone(),
            suffrage: suffrage(voters.contains(id)),
            matched_index: metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index),
            last_contact_ms: metrics
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(id).cloned().flatten())
                .map(|at| millis(at.elapsed())),
        })
        .collect();
    let leader_id = metrics.current_leader.unwrap_or(0);
    let vote = metrics.vote.leader_id();
    pb::NodeStatus {
        id: node.id(),
        address: node.address().to_string(),
        role: role(metrics.state).into(),
        term: metrics.current_term,
        leader_id,
        leader_address: membership
            .get_node(&leader_id)
            .map(|n| n.addr.clone())
            .unwrap_or_default(),
        last_log_index: metrics.last_log_index,
        committed_index: metrics.local_committed.as_ref().map(|l| l.index),
        applied_index: metrics.last_applied.as_ref().map(|l| l.index),
        snapshot_index: metrics.snapshot.as_ref().map(|l| l.index),
        purged_index: metrics.purged.as_ref().map(|l| l.index),
        configuration: Some(configuration(metrics)),
        peers,
        last_quorum_ack_ms: metrics
            .last_quorum_acked
            .as_ref()
            .map(|at| millis(at.elapsed())),
        key_count: node.key_count() as u64,
        vote_term: vote.term,
        voted_for: vote.node_id,
        compact_revision: node.compacted(),
    }
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

/// `backup` as the messages of a backup stream: header, data, checksum.
fn backup_stream(source: NodeId, backup: BackupSnapshot) -> Result<BackupStream, Status> {
    use pb::backup_chunk::Part;
    let last = backup.meta.last_log_id.ok_or(NodeError::NothingApplied)?;
    // Everything a snapshot holds is committed.
    let configuration = configuration_of(&backup.meta.last_membership, true);
    let created_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis);
    let header = pb::BackupHeader {
        index: last.index,
        term: last.leader_id.term,
        leader_id: last.leader_id.node_id,
        configuration: Some(configuration),
        key_count: backup.key_count as u64,
        data_bytes: backup.data.len(),
        created_unix_ms,
        source_node_id: source,
    };
    tracing::info!(
        index = last.index,
        keys = backup.key_count,
        bytes = backup.data.len(),
        "streaming a backup"
    );
    // The data is read from its file as the stream is read, at most two
    // pieces ahead of the network; the file goes when the reader ends.
    let (pieces_tx, mut pieces_rx) = tokio::sync::mpsc::channel::<Result<Part, Status>>(2);
    let sum = backup.sha256;
    let data = backup.data;
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let send = |part| pieces_tx.blocking_send(part).is_ok();
        let mut reader = match data.reader() {
            Ok(reader) => reader,
            Err(e) => {
                send(Err(Status::unavailable(format!(
                    "cannot read the backup: {e}"
                ))));
                return;
            }
        };
        loop {
            let mut piece = Vec::with_capacity(BACKUP_CHUNK_BYTES);
            match (&mut reader)
                .take(BACKUP_CHUNK_BYTES as u64)
                .read_to_end(&mut piece)
            {
                Ok(0) => break,
                Ok(_) => {
                    if !send(Ok(Part::Data(piece))) {
                        return;
                    }
                }
                Err(e) => {
                    send(Err(Status::unavailable(format!(
                        "cannot read the backup: {e}"
                    ))));
                    return;
                }
            }
        }
        send(Ok(Part::DataSha256(sum.to_vec())));
        drop(data);
    });
    use futures::StreamExt as _;
    let pieces = futures::stream::poll_fn(move |cx| pieces_rx.poll_recv(cx));
    let parts = futures::stream::iter(std::iter::once(Ok::<_, Status>(Part::Header(header))))
        .chain(pieces)
        .map(|part| part.map(|part| pb::BackupChunk { part: Some(part) }));
    Ok(Box::pin(parts))
}
