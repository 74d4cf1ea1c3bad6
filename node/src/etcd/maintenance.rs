//! etcd's `Maintenance` service, mapped onto what a node already does:
//!
//! - `Status`: this node's view (leader, log and applied index, term);
//!   `dbSize` and `dbSizeInUse` are both the bytes the store counts against
//!   its quota (sled's files are not one database file), and `errors`
//!   names the raised NOSPACE alarms as etcd does.
//! - `Alarm`: the NOSPACE alarms (etcd's quota alarm); CORRUPT is never
//!   raised here.
//! - `HashKV` and `Hash`: the node's state digest, folded to 32 bits, at
//!   the applied revision only (members with the same state answer the same
//!   hash).
//! - `MoveLeader`: a leadership transfer.
//! - `Defragment`: nothing to do (sled has no free-page file to compact);
//!   answered with success.
//! - `Snapshot`: a raftkv backup file (what `raft-admin backup` writes and
//!   `raftkv-node restore --from` reads), not etcd's bbolt file, taken on
//!   the leader with every write committed before the call. Its last 32
//!   bytes are a SHA-256 of the rest, as in etcd's.
//!
//! Reads are open to every caller; changes (`MoveLeader`, raising or
//! clearing an alarm, `Defragment`) and `Snapshot` (all the data) need the
//! admin role under TLS. `Downgrade` is not served.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt as _;
use prost::Message;
use raftkv_files::backup::BackupWriter;
use raftkv_files::backup::DataHash;
use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::alarm_request::AlarmAction;
use raftkv_proto::etcd::etcdserverpb::maintenance_server::Maintenance;
use raftkv_proto::pb::backup_chunk;
use tokio::sync::mpsc;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::errors::status;
use super::header;
use super::require_admin;
use super::signed;
use crate::error::NodeError;
use crate::grpc::backup::backup_stream;
use crate::grpc::backup::BackupStream;
use crate::grpc::routing::Placement;
use crate::node::RaftNode;
use crate::security::RolePolicy;

/// How long a `MoveLeader` waits for the new leader.
const MOVE_LEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// etcd's version this API answers as. Clients gate features on it
/// (Kubernetes asks for 3.5.13 or later before it sends watch progress
/// requests).
pub const ETCD_VERSION: &str = "3.5.13";

/// Where each `etcdserverpb.Maintenance` method runs: a transfer and an
/// alarm change on the leader, the rest on the node asked.
pub fn placement(method: &str) -> Placement {
    match method {
        "MoveLeader" | "Snapshot" => Placement::Leader,
        "Alarm" => Placement::LeaderUnless(|message| {
            pb::AlarmRequest::decode(message)
                .is_ok_and(|request| request.action == AlarmAction::Get as i32)
        }),
        _ => Placement::Here,
    }
}

/// etcd's maintenance API of one node.
pub struct EtcdMaintenance {
    node: Arc<RaftNode>,
    policy: RolePolicy,
}

impl EtcdMaintenance {
    pub fn new(node: Arc<RaftNode>, policy: RolePolicy) -> EtcdMaintenance {
        EtcdMaintenance { node, policy }
    }

    fn admin<T>(&self, request: &Request<T>, method: &str) -> Result<(), Status> {
        require_admin(request, "Maintenance", method, &self.policy)
    }

    fn alarms(&self) -> Vec<pb::AlarmMember> {
        self.node
            .kv()
            .alarms()
            .into_iter()
            .map(|member_id| pb::AlarmMember {
                member_id,
                alarm: pb::AlarmType::Nospace.into(),
            })
            .collect()
    }

    fn current(&self) -> u64 {
        self.node.revisions().current()
    }

    /// The node's state digest folded to 32 bits, and the revision it
    /// covers.
    async fn digest(&self) -> Result<(u32, u64), Status> {
        let node = self.node.clone();
        let digest = tokio::task::spawn_blocking(move || node.state_digest())
            .await
            .map_err(|e| Status::from(NodeError::task(e)))?
            .map_err(|e| status(NodeError::Storage(e)))?
            .ok_or_else(|| {
                Status::from(NodeError::Busy(
                    "the state changed during every attempt to hash it; retry when writes pause"
                        .into(),
                ))
            })?;
        // Both halves, so no bit of the 64-bit digest is lost for nothing.
        let hash = (digest.digest ^ (digest.digest >> 32)) as u32;
        Ok((hash, digest.applied_index.unwrap_or(0)))
    }
}

/// The answers of one `Snapshot` call.
pub type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

/// A backup file's magic, format version and header length.
const FILE_PREFIX_BYTES: u64 = 8 + 4 + 4;

/// etcdctl's `snapshot save` refuses a file whose length, less the 32
/// bytes of its checksum, is not a multiple of 512 (etcd's are whole bbolt
/// pages). The zeros that make a backup file with `header` such a length.
fn etcd_padding(header: &raftkv_proto::pb::BackupHeader) -> Vec<u8> {
    let mut padded = header.clone();
    padded.padding.clear();
    // The field's tag and length prefix grow with it: settle by trying.
    for extra in 0..1100 {
        padded.padding = vec![0; extra];
        let length = FILE_PREFIX_BYTES + padded.encoded_len() as u64 + header.data_bytes;
        if length.is_multiple_of(512) {
            return std::mem::take(&mut padded.padding);
        }
    }
    Vec::new()
}

/// A backup stream's parts as the bytes of a backup file, in etcd's
/// snapshot messages; each says how many bytes follow it.
async fn snapshot_messages(
    mut parts: BackupStream,
    header: Option<pb::ResponseHeader>,
    tx: mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
) {
    use backup_chunk::Part;
    let mut file: Option<BackupWriter<Vec<u8>>> = None;
    let mut data_hash = DataHash::default();
    let (mut total, mut sent) = (0u64, 0u64);
    let message = |bytes: Vec<u8>, total: u64, sent: &mut u64| {
        *sent += bytes.len() as u64;
        pb::SnapshotResponse {
            header,
            remaining_bytes: total.saturating_sub(*sent),
            blob: bytes,
        }
    };
    while let Some(part) = parts.next().await {
        let answer = match part.map(|chunk| chunk.part) {
            Err(e) => Err(e),
            Ok(Some(Part::Header(mut backup))) => {
                backup.padding = etcd_padding(&backup);
                let header_bytes = backup.encoded_len() as u64;
                total = FILE_PREFIX_BYTES + header_bytes + backup.data_bytes + 32;
                match BackupWriter::new(Vec::new(), &backup) {
                    Ok(writer) => {
                        let writer = file.insert(writer);
                        Ok(message(std::mem::take(writer.get_mut()), total, &mut sent))
                    }
                    Err(e) => Err(Status::internal(format!(
                        "cannot encode the backup header: {e}"
                    ))),
                }
            }
            Ok(Some(Part::Data(data))) => match file.as_mut() {
                Some(writer) => {
                    data_hash.update(&data);
                    match writer.write_data(&data) {
                        Ok(()) => Ok(message(std::mem::take(writer.get_mut()), total, &mut sent)),
                        Err(e) => Err(Status::internal(format!("the backup's data: {e}"))),
                    }
                }
                None => Err(Status::internal("the backup's data came before its header")),
            },
            Ok(Some(Part::DataSha256(sum))) => {
                let data_sum = std::mem::take(&mut data_hash).finish();
                match file.take() {
                    Some(_) if sum != data_sum => Err(Status::data_loss(
                        "the backup's data does not match its checksum",
                    )),
                    Some(writer) => match writer.finish() {
                        Ok((_, last)) => Ok(message(last, total, &mut sent)),
                        Err(e) => Err(Status::internal(format!("the backup's end: {e}"))),
                    },
                    None => Err(Status::internal(
                        "the backup's checksum came before its header",
                    )),
                }
            }
            Ok(None) => continue,
        };
        let failed = answer.is_err();
        if tx.send(answer).await.is_err() || failed {
            return;
        }
    }
}

#[tonic::async_trait]
impl Maintenance for EtcdMaintenance {
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        self.admin(&request, "Snapshot")?;
        let backup = self.node.backup().await.map_err(status)?;
        let header = header(&self.node, self.node.revisions().current());
        let parts = backup_stream(self.node.id(), backup)?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(snapshot_messages(parts, header, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let action = AlarmAction::try_from(request.get_ref().action)
            .map_err(|_| Status::from(NodeError::BadRequest("unknown alarm action".into())))?;
        let alarm = pb::AlarmType::try_from(request.get_ref().alarm).unwrap_or(pb::AlarmType::None);
        if action != AlarmAction::Get {
            self.admin(&request, "Alarm")?;
            // Only NOSPACE exists here; CORRUPT (or an unknown kind) is refused.
            if !matches!(alarm, pb::AlarmType::Nospace | pb::AlarmType::None) {
                return Err(NodeError::BadRequest(
                    "only the NOSPACE alarm exists on raftkv".into(),
                )
                .into());
            }
            let member = match request.get_ref().member_id {
                0 => None,
                id => Some(id),
            };
            let raise = action == AlarmAction::Activate;
            let member = match (raise, member) {
                (true, None) => Some(self.node.id()),
                (_, member) => member,
            };
            self.node
                .propose_alarm(member, raise)
                .await
                .map_err(status)?;
        }
        Ok(Response::new(pb::AlarmResponse {
            header: header(&self.node, self.current()),
            alarms: self.alarms(),
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let metrics = self.node.metrics();
        let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
        let bytes = signed(self.node.kv().store_bytes());
        let errors = self
            .alarms()
            .iter()
            .map(|alarm| format!("memberID:{} alarm:NOSPACE ", alarm.member_id))
            .collect();
        Ok(Response::new(pb::StatusResponse {
            header: header(&self.node, self.current()),
            version: ETCD_VERSION.into(),
            db_size: bytes,
            leader: metrics.current_leader.unwrap_or(0),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            errors,
            db_size_in_use: bytes,
            is_learner: !voters.contains(&self.node.id()),
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.admin(&request, "Defragment")?;
        Ok(Response::new(pb::DefragmentResponse {
            header: header(&self.node, self.current()),
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        if request.get_ref().revision != 0 {
            return Err(NodeError::BadRequest(
                "HashKV answers at the applied revision only: ask with revision 0".into(),
            )
            .into());
        }
        let (hash, revision) = self.digest().await?;
        Ok(Response::new(pb::HashKvResponse {
            header: header(&self.node, revision),
            hash,
            compact_revision: signed(self.node.compacted()),
        }))
    }

    /// etcd's older whole-database hash: here the same digest as `HashKV`.
    async fn hash(
        &self,
        _: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, revision) = self.digest().await?;
        Ok(Response::new(pb::HashResponse {
            header: header(&self.node, revision),
            hash,
        }))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.admin(&request, "MoveLeader")?;
        let target = request.get_ref().target_id;
        if target == 0 {
            return Err(super::errors::EtcdError::BadLeaderTransferee.into());
        }
        self.node
            .transfer_leader(Some(target), MOVE_LEADER_TIMEOUT)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: header(&self.node, self.current()),
        }))
    }
}
