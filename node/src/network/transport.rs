//! Outgoing Raft traffic: openraft's network traits over the `raftkv.Raft`
//! gRPC service, on the node's one channel cache (shared with forwarding).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::stream;
use futures::Stream;
use futures::StreamExt;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Timeout;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::OptionalSend;
use openraft::RPCTypes;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use raftkv_client::Channels;
use raftkv_proto::pb;
use raftkv_proto::pb::raft_client::RaftClient;
use tokio::sync::Notify;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::addresses::PeerAddresses;
use super::snapshot_stream::snapshot_messages;
use super::snapshot_stream::stream_file;
use super::snapshot_stream::stream_state;
use crate::codec::decode;
use crate::codec::encode;
use crate::network::versions;
use crate::network::versions::PeerVersions;
use crate::store::Snapshot;
use crate::store::SnapshotData;
use crate::types::Node;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::types::Vote;

/// Shortest deadline given to an AppendEntries or TransferLeader call.
/// openraft proposes the heartbeat interval (50 ms by default), which a
/// follower syncing a large batch to a slow disk can exceed; timing out then
/// only resends the same entries, so a longer wait is cheaper.
const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Most AppendEntries requests unanswered on one stream. Two lets the next
/// batch (or a commit-only message) travel while the follower syncs the one
/// before; more only splits the load into smaller batches, which costs more
/// CPU per write on a loaded node (1 client +23%, 64 clients +8% over the
/// unary call; depth 1 and 4 were no better, unbounded 9-19% worse at 64
/// clients).
const PIPELINE_DEPTH: usize = 2;

/// Creates a [`PeerConnection`] for each replication target.
#[derive(Clone)]
pub struct Network {
    channels: Channels,
    /// Each peer's address now (see `addresses`).
    addresses: Arc<PeerAddresses>,
    /// Largest gRPC message a peer may send us (AppendEntries batches, answers).
    max_message_bytes: usize,
    /// The release each peer named in its answers.
    versions: Arc<PeerVersions>,
}

impl Network {
    /// A network sharing `channels` with the rest of the node, finding its
    /// peers at `addresses` once they are known there.
    pub fn new(
        channels: Channels,
        addresses: Arc<PeerAddresses>,
        max_message_bytes: usize,
        versions: Arc<PeerVersions>,
    ) -> Network {
        Network {
            channels,
            addresses,
            max_message_bytes,
            versions,
        }
    }

    /// A client of the Raft service at `address`; `Err` when the address is
    /// unusable.
    fn client_at(&self, address: &str) -> Result<RaftClient<Channel>, String> {
        self.channels
            .get(address)
            .map_err(|e| e.to_string())
            .map(|channel| {
                RaftClient::new(channel)
                    .max_decoding_message_size(self.max_message_bytes)
                    .max_encoding_message_size(self.max_message_bytes)
            })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        // openraft's address is the newest it has; the book catches up.
        let generation = self.addresses.generation();
        PeerConnection {
            target,
            current: Mutex::new(Dialled {
                client: self.client_at(&node.addr),
                address: node.addr.clone(),
                generation,
            }),
            network: self.clone(),
        }
    }
}

/// The Raft RPCs to one peer.
pub struct PeerConnection {
    target: NodeId,
    current: Mutex<Dialled>,
    network: Network,
}

/// The address a connection calls, and the client for it.
struct Dialled {
    address: String,
    /// `Err` when the address is unusable.
    client: Result<RaftClient<Channel>, String>,
    /// The address book's generation last read.
    generation: u64,
}

/// A failed call: unreachable peers make openraft back off, other failures are retried.
fn rpc_error(status: &tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled => {
            RPCError::Unreachable(Unreachable::new(status))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

fn decode_error(e: &std::io::Error) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(e))
}

impl PeerConnection {
    /// The client for the peer's address now: a new one when the address
    /// book says the peer has moved since the last call.
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        let book = &self.network.addresses;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let generation = book.generation();
        if current.generation != generation {
            current.generation = generation;
            if let Some(address) = book.get(self.target) {
                if address != current.address {
                    tracing::info!(target = self.target, from = %current.address, to = %address, "peer address changed");
                    current.client = self.network.client_at(&address);
                    current.address = address;
                }
            }
        }
        current
            .client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    fn address(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .address
            .clone()
    }

    /// One unary `action` call of `term` with `request` encoded, the answer
    /// decoded, within `ttl`.
    async fn call<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        (request, term): (&Req, u64),
        ttl: Duration,
        send: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<pb::RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::RaftPayload>, tonic::Status>>,
    {
        let data = encode(request).map_err(|e| decode_error(&e))?;
        let mut grpc_request = tonic::Request::new(pb::RaftPayload { data: data.into() });
        grpc_request.set_timeout(ttl);
        versions::stamp(grpc_request.metadata_mut());
        let versions = &self.network.versions;
        let client = self
            .client()
            .inspect_err(|_| versions.forget(self.target))?;
        let answer = match tokio::time::timeout(ttl, send(client, grpc_request)).await {
            Ok(answer) => answer.map_err(|status| {
                versions.forget(self.target);
                rpc_error(&status)
            })?,
            Err(_) => {
                versions.forget(self.target);
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }));
            }
        };
        versions.note(self.target, answer.metadata(), term);
        decode(&answer.into_inner().data).map_err(|e| decode_error(&e))
    }
}

/// When each AppendEntries of a stream still waiting for its answer was sent,
/// oldest first, so the stream can tell a stalled peer from an idle one.
#[derive(Default)]
struct InFlight {
    sent: Mutex<VecDeque<Instant>>,
    /// Signalled when a request is sent, to wake a reader waiting on an idle stream.
    sent_one: Notify,
    /// Signalled when an answer arrives, to let the next request go.
    answered: Notify,
}

impl InFlight {
    fn push(&self) {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(Instant::now());
        self.sent_one.notify_one();
    }

    fn pop(&self) {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        self.answered.notify_one();
    }

    /// Waits until fewer than `depth` requests are unanswered.
    async fn wait_below(&self, depth: usize) {
        loop {
            let answered = self.answered.notified();
            if self.sent.lock().unwrap_or_else(|e| e.into_inner()).len() < depth {
                return;
            }
            answered.await;
        }
    }

    fn oldest(&self) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .copied()
    }
}

impl PeerConnection {
    /// Pipelined replication over one `StreamAppend` call: every request the
    /// leader produces is sent at once, without waiting for the answers to
    /// the ones before, and HTTP/2 keeps them (and the answers) in order.
    /// The stream fails with a timeout when the oldest unanswered request
    /// has waited `ttl`; an idle stream (nothing unanswered) never times out.
    async fn open_append_stream<S>(
        &self,
        input: S,
        ttl: Duration,
    ) -> Result<
        BoxStream<'static, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
        RPCError<TypeConfig>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let target = self.target;
        let timeout = move || {
            RPCError::Timeout(Timeout {
                action: RPCTypes::AppendEntries,
                id: 0,
                target,
                timeout: ttl,
            })
        };
        // openraft applies its backoff after a failure when it produces the
        // next request, so take the first one before connecting: opening the
        // call first would retry an unreachable peer in a tight loop (measured:
        // ~2,000 failed attempts a second against a killed follower).
        let mut input = input;
        let Some(first) = input.next().await else {
            return Ok(Box::pin(stream::empty()));
        };
        let term = first.vote.leader_id.term;
        let input = stream::once(std::future::ready(first)).chain(input);
        let in_flight = Arc::new(InFlight::default());
        let requests = stream::unfold(
            (input, in_flight.clone()),
            move |(mut input, sending)| async move {
                sending.wait_below(PIPELINE_DEPTH).await;
                let request = input.next().await?;
                // Encoding our own types cannot fail in practice; if it ever does
                // the stream ends early, and openraft resends what was not answered.
                match encode(&request) {
                    Ok(data) => {
                        sending.push();
                        Some((pb::RaftPayload { data: data.into() }, (input, sending)))
                    }
                    Err(e) => {
                        tracing::error!(target, error = %e, "cannot encode an AppendEntries request");
                        None
                    }
                }
            },
        );
        // The request half ends when the answers are done with (stream ended,
        // failed or dropped by openraft): otherwise it would stay open, and
        // the follower's server, which waits for every call to end before it
        // stops, could not stop.
        let (answers_gone, requests_end) = tokio::sync::oneshot::channel::<()>();
        let requests = requests.take_until(requests_end);
        let mut client = self.client()?;
        let mut requests = tonic::Request::new(requests);
        versions::stamp(requests.metadata_mut());
        let versions = self.network.versions.clone();
        let answers = match tokio::time::timeout(ttl, client.stream_append(requests)).await {
            Ok(answers) => {
                let answers = answers.map_err(|status| {
                    versions.forget(target);
                    rpc_error(&status)
                })?;
                versions.note(target, answers.metadata(), term);
                answers.into_inner()
            }
            Err(_) => {
                versions.forget(target);
                return Err(timeout());
            }
        };
        let results = stream::unfold(Some((answers, answers_gone)), move |state| {
            let in_flight = in_flight.clone();
            let versions = versions.clone();
            async move {
                let (mut answers, answers_gone) = state?;
                loop {
                    let deadline = in_flight.oldest().map(|sent| sent + ttl);
                    let answer = tokio::select! {
                        answer = answers.message() => answer,
                        _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                            versions.forget(target);
                            return Some((Err(timeout()), None));
                        }
                        _ = in_flight.sent_one.notified(), if deadline.is_none() => continue,
                    };
                    return match answer {
                        Ok(Some(payload)) => {
                            in_flight.pop();
                            match decode(&payload.data) {
                                Ok(result) => Some((Ok(result), Some((answers, answers_gone)))),
                                Err(e) => Some((Err(decode_error(&e)), None)),
                            }
                        }
                        // A stream also ends when openraft is done with it:
                        // the next one names the peer's release again.
                        Ok(None) => None,
                        Err(status) => {
                            versions.forget(target);
                            Some((Err(rpc_error(&status)), None))
                        }
                    };
                }
            }
        });
        Ok(Box::pin(results))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = SnapshotData;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let ttl = option.soft_ttl().max(MIN_APPEND_TIMEOUT);
        Box::pin(async move { self.open_append_stream(input, ttl).await })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::AppendEntries,
            (&rpc, rpc.vote.leader_id.term),
            option.hard_ttl().max(MIN_APPEND_TIMEOUT),
            |mut c, r| async move { c.append_entries(r).await },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::Vote,
            (&rpc, rpc.vote.leader_id.term),
            option.hard_ttl(),
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::Vote,
            (&rpc, rpc.vote.leader_id.term),
            option.hard_ttl(),
            |mut c, r| async move { c.pre_vote(r).await },
        )
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::TransferLeader,
            (&req, req.from_leader().leader_id.term),
            option.hard_ttl().max(MIN_APPEND_TIMEOUT),
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let to_network = |e: &dyn std::error::Error| NetworkError::from_string(e.to_string());
        let term = vote.leader_id.term;
        let vote = encode(&vote).map_err(|e| to_network(&e))?;
        let meta = encode(&snapshot.meta).map_err(|e| to_network(&e))?;
        let revision = snapshot.meta.last_log_id.map_or(0, |l| l.index);
        let chunks = match snapshot.snapshot {
            SnapshotData::State(state) => stream_state(state),
            SnapshotData::Received(received) => stream_file(received),
        };
        let messages = snapshot_messages(pb::SnapshotHeader { vote, meta }, chunks);
        let mut client = self.client().map_err(|e| to_network(&e))?;
        tracing::info!(target = self.target, address = %self.address(), revision, "sending snapshot");
        let ttl = option.hard_ttl();
        let mut messages = tonic::Request::new(messages);
        versions::stamp(messages.metadata_mut());
        let send = tokio::time::timeout(ttl, client.install_snapshot(messages));
        let answer = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            answer = send => answer,
        };
        if !matches!(answer, Ok(Ok(_))) {
            self.network.versions.forget(self.target);
        }
        match answer {
            Err(_) => Err(StreamingError::Timeout(Timeout {
                action: RPCTypes::InstallSnapshot,
                id: 0,
                target: self.target,
                timeout: ttl,
            })),
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                Err(StreamingError::Unreachable(Unreachable::new(&status)))
            }
            Ok(Err(status)) => Err(StreamingError::Network(NetworkError::new(&status))),
            Ok(Ok(answer)) => {
                self.network
                    .versions
                    .note(self.target, answer.metadata(), term);
                decode(&answer.into_inner().data).map_err(|e| to_network(&e).into())
            }
        }
    }
}
