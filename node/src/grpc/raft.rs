//! `raftkv.Raft`: inbound node-to-node RPCs, handed to openraft once decoded
//! and checked ([`raft_guard`](super::raft_guard)). Garbage and forged
//! messages on this service are answered with `INVALID_ARGUMENT`, never a
//! panic. Every call's Raft wire is checked and every answer names this
//! node's release ([`versions`]); what a newer peer sent that this node
//! cannot read is refused with `FAILED_PRECONDITION`, saying to upgrade.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use futures::Stream;
use futures::StreamExt;
use raftkv_proto::pb;
use raftkv_proto::pb::raft_server;
use tokio::sync::watch;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use std::sync::Arc;

use crate::cluster::failover::LeaderLink;
use crate::codec::decode;
use crate::codec::encode;
use crate::grpc::forwarding::ForwardTargets;
use crate::grpc::raft_guard;
use crate::grpc::raft_guard::Local;
use crate::network::connection::PeerInfo;
use crate::network::versions;
use crate::node::Raft;
use crate::security::Caller;
use crate::store::check_snapshot_from;
use crate::store::Incoming;
use crate::store::Snapshot;
use crate::store::SnapshotData;
use crate::types::AppendEntriesRequest;
use crate::types::SnapshotMeta;
use crate::types::TransferLeaderRequest;
use crate::types::Vote;
use crate::types::VoteRequest;
use crate::version::Version;

/// The Raft transport of one node.
pub struct RaftService {
    raft: Raft,
    /// Largest snapshot accepted from a peer, in bytes.
    max_snapshot_bytes: u64,
    /// Where received snapshot data is written (the data directory).
    snapshot_dir: PathBuf,
    /// Told which connection brings AppendEntries, for fast failover.
    leader_link: Arc<LeaderLink>,
    /// Turns true when the node stops. A `StreamAppend` call lasts as long
    /// as its leader keeps it open, and the server's graceful shutdown waits
    /// for every call to end: without this a stopping node (SIGTERM, a failed
    /// disk) stayed up as long as its leader was connected.
    stopping: watch::Receiver<bool>,
    /// Where the calls followers forward on their streams run.
    forward_targets: ForwardTargets,
}

impl RaftService {
    /// The service over `raft`; its streams end once `stopping` turns true.
    pub fn new(
        raft: Raft,
        max_snapshot_bytes: u64,
        snapshot_dir: PathBuf,
        leader_link: Arc<LeaderLink>,
        stopping: watch::Receiver<bool>,
        forward_targets: ForwardTargets,
    ) -> RaftService {
        RaftService {
            raft,
            max_snapshot_bytes,
            snapshot_dir,
            leader_link,
            stopping,
            forward_targets,
        }
    }
}

/// The address of the peer a request came from.
fn peer_of<T>(request: &Request<T>) -> Option<std::net::SocketAddr> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.remote)
}

impl RaftService {
    /// A vote or pre-vote request, decoded and checked.
    fn vote_request(&self, request: Request<pb::RaftPayload>) -> Result<VoteRequest, Status> {
        let vote: VoteRequest = decode_request(request)?;
        raft_guard::check_vote_request(
            &vote.vote,
            vote.last_log_id.as_ref(),
            &Local::of(&self.raft),
        )?;
        Ok(vote)
    }
}

fn decode_request<T: serde::de::DeserializeOwned>(
    request: Request<pb::RaftPayload>,
) -> Result<T, Status> {
    versions::check_wire(request.metadata())?;
    let peer = versions::version_of(request.metadata());
    decode(&request.into_inner().data).map_err(|e| undecodable(peer, &e))
}

/// A message from a peer running `peer` that did not decode: garbage, or
/// something a newer release wrote that this one cannot read.
fn undecodable(peer: Version, e: &dyn std::fmt::Display) -> Status {
    if peer > Version::ours() {
        Status::failed_precondition(format!(
            "cannot read a message from a peer running raftkv {peer} (this node runs {}): \
             upgrade this node; {e}",
            Version::ours()
        ))
    } else {
        Status::invalid_argument(format!("undecodable raft message: {e}"))
    }
}

/// `response`, naming this node's release and wire.
fn stamped<T>(response: T) -> Response<T> {
    let mut response = Response::new(response);
    versions::stamp(response.metadata_mut());
    response
}

fn encode_response<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(stamped(pb::RaftPayload { data: data.into() }))
}

fn stopped(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is stopping: {e}"))
}

/// The answers of one `Forward` call.
type ForwardAnswers = Pin<Box<dyn Stream<Item = Result<pb::ForwardedAnswer, Status>> + Send>>;

/// The answers of one `StreamAppend` call.
type AppendResults = Pin<Box<dyn Stream<Item = Result<pb::RaftPayload, Status>> + Send>>;

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    type StreamAppendStream = AppendResults;
    type ForwardStream = ForwardAnswers;

    /// A follower's forwarded calls (see `forwarding`). Once this node
    /// stops, it reads no more calls; those running are answered, then the
    /// stream ends. A message that cannot be read ends the input too.
    async fn forward(
        &self,
        request: Request<Streaming<pb::ForwardedCall>>,
    ) -> Result<Response<ForwardAnswers>, Status> {
        let sender = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller(None));
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            // An error means the node dropped the sender: it is stopping too.
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let calls = request
            .into_inner()
            .take_until(stopped)
            .scan((), |_, call| std::future::ready(call.ok()));
        let answers = self.forward_targets.clone().serve(calls, sender);
        Ok(Response::new(Box::pin(answers)))
    }

    /// openraft's pipelined receiver: each request goes to Raft as soon as it
    /// arrives, its result comes back in request order. An undecodable request
    /// ends the input; the results of the requests before it are still sent,
    /// then the call ends with `INVALID_ARGUMENT`.
    async fn stream_append(
        &self,
        request: Request<Streaming<pb::RaftPayload>>,
    ) -> Result<Response<AppendResults>, Status> {
        versions::check_wire(request.metadata())?;
        let peer_version = versions::version_of(request.metadata());
        let peer = peer_of(&request);
        let leader_link = self.leader_link.clone();
        let failure: Arc<Mutex<Option<Status>>> = Arc::default();
        let input_failure = failure.clone();
        let raft = self.raft.clone();
        let input = request.into_inner().scan((), move |_, message| {
            let decoded = message.and_then(|payload| {
                let append = decode::<AppendEntriesRequest>(&payload.data)
                    .map_err(|e| undecodable(peer_version, &e))?;
                raft_guard::check_append(&append, &Local::of(&raft))?;
                Ok(append)
            });
            match decoded {
                Ok(append) => {
                    leader_link.note_append(peer, &append.vote);
                    std::future::ready(Some(append))
                }
                Err(status) => {
                    *input_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
                    std::future::ready(None)
                }
            }
        });
        let results = self.raft.stream_append(input).map(|result| match result {
            Ok(result) => encode(&result)
                .map(|data| pb::RaftPayload { data: data.into() })
                .map_err(|e| Status::internal(e.to_string())),
            Err(fatal) => Err(stopped(fatal)),
        });
        let failure = futures::stream::once(async move {
            failure.lock().unwrap_or_else(|e| e.into_inner()).take()
        })
        .filter_map(|status| async move { status.map(Err) });
        let mut stopping = self.stopping.clone();
        let stopped = async move {
            // An error means the node dropped the sender: it is stopping too.
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        Ok(stamped(Box::pin(
            results.chain(failure).take_until(stopped),
        )))
    }

    async fn append_entries(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let peer = peer_of(&request);
        let append: AppendEntriesRequest = decode_request(request)?;
        raft_guard::check_append(&append, &Local::of(&self.raft))?;
        self.leader_link.note_append(peer, &append.vote);
        let response = self.raft.append_entries(append).await.map_err(stopped)?;
        encode_response(&response)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let vote = self.vote_request(request)?;
        let response = self.raft.vote(vote).await.map_err(stopped)?;
        encode_response(&response)
    }

    async fn pre_vote(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let vote = self.vote_request(request)?;
        let response = self.raft.pre_vote(vote).await.map_err(stopped)?;
        encode_response(&response)
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let transfer: TransferLeaderRequest = decode_request(request)?;
        raft_guard::check_transfer(
            transfer.from_leader(),
            transfer.last_log_id(),
            &Local::of(&self.raft),
        )?;
        let response = self
            .raft
            .handle_transfer_leader(transfer)
            .await
            .map_err(stopped)?;
        encode_response(&response)
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        versions::check_wire(request.metadata())?;
        let peer_version = versions::version_of(request.metadata());
        let mut chunks = request.into_inner();
        let header = match chunks.next().await {
            Some(Ok(pb::SnapshotChunk {
                payload: Some(pb::snapshot_chunk::Payload::Header(header)),
            })) => header,
            Some(Err(status)) => return Err(status),
            _ => {
                return Err(Status::invalid_argument(
                    "a snapshot stream must start with its header",
                ))
            }
        };
        let vote: Vote = decode(&header.vote).map_err(|e| undecodable(peer_version, &e))?;
        let meta: SnapshotMeta = decode(&header.meta).map_err(|e| undecodable(peer_version, &e))?;
        raft_guard::check_snapshot(&vote, &meta, &Local::of(&self.raft))?;
        // Written to a file as it arrives: memory holds a chunk at a time.
        let storage = |e: std::io::Error| {
            Status::unavailable(format!("cannot store the snapshot being received: {e}"))
        };
        let mut data = Incoming::create(&self.snapshot_dir).map_err(storage)?;
        let mut crc = crc32fast::Hasher::new();
        let trailer = loop {
            let Some(chunk) = chunks.next().await else {
                return Err(Status::invalid_argument(format!(
                    "snapshot stream ended after {} bytes without its trailer",
                    data.len()
                )));
            };
            match chunk?.payload {
                Some(pb::snapshot_chunk::Payload::Chunk(bytes)) => {
                    if data.len() + bytes.len() as u64 > self.max_snapshot_bytes {
                        return Err(Status::resource_exhausted(format!(
                            "snapshot of more than {} bytes exceeds the limit of {} bytes",
                            data.len() + bytes.len() as u64,
                            self.max_snapshot_bytes
                        )));
                    }
                    crc.update(&bytes);
                    data.write(&bytes).map_err(storage)?;
                }
                Some(pb::snapshot_chunk::Payload::Trailer(trailer)) => break trailer,
                _ => {
                    return Err(Status::invalid_argument(
                        "only data chunks and a trailer may follow the snapshot header",
                    ))
                }
            }
        };
        if chunks.next().await.is_some() {
            return Err(Status::invalid_argument(
                "nothing may follow the snapshot trailer",
            ));
        }
        let crc = crc.finalize();
        if trailer.size != data.len() || trailer.crc32 != crc {
            return Err(Status::invalid_argument(format!(
                "snapshot data does not match its trailer: received {} bytes with CRC-32 \
                 {crc:08x}, the trailer says {} bytes with CRC-32 {:08x}",
                data.len(),
                trailer.size,
                trailer.crc32
            )));
        }
        let last_index = meta.last_log_id.map_or(0, |l| l.index);
        // Synced, then checked: data the state machine cannot load would
        // stop Raft for good.
        let data = tokio::task::spawn_blocking(move || {
            let received = data.finish()?;
            check_snapshot_from(received.reader()?, last_index)?;
            Ok::<_, std::io::Error>(received)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData if peer_version > Version::ours() => {
                undecodable(peer_version, &format!("refused snapshot: {e}"))
            }
            std::io::ErrorKind::InvalidData => {
                Status::invalid_argument(format!("refused snapshot: {e}"))
            }
            _ => storage(e),
        })?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "snapshot received");
        let response = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: SnapshotData::Received(data),
                },
            )
            .await
            .map_err(stopped)?;
        encode_response(&response)
    }
}
