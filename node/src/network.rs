//! Outgoing Raft traffic: openraft's network traits over the `raftkv.Raft`
//! gRPC service, with one cached channel per peer.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use futures::stream;
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
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use openraft::RPCTypes;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use prost::bytes::Bytes;
use raftkv_proto::pb;
use raftkv_proto::pb::raft_client::RaftClient;
use tonic::transport::Channel;
use tonic::transport::Endpoint;

use crate::codec::decode;
use crate::codec::encode;
use crate::types::Node;
use crate::types::NodeId;
use crate::types::Snapshot;
use crate::types::TypeConfig;
use crate::types::Vote;

/// Shortest deadline given to an AppendEntries or TransferLeader call.
/// openraft proposes the heartbeat interval (50 ms by default), which a
/// follower syncing a large batch to a slow disk can exceed; timing out then
/// only resends the same entries, so a longer wait is cheaper.
const MIN_APPEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Size of one snapshot chunk on the wire.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Checks that `address` is a `host:port` a channel can be built for.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address {address:?} is not host:port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() || address.contains('/') {
        return Err(format!("address {address:?} is not host:port"));
    }
    Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("address {address:?} is not usable: {e}"))
}

/// One lazily connected gRPC channel per peer address, reused by Raft
/// replication and by request forwarding. A tonic `Channel` reconnects on its
/// own after a failure, so an entry never needs replacing.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Source address of outgoing connections (the node's own listen
    /// address when it names one), so peers and firewalls see who is talking.
    local_ip: Option<IpAddr>,
}

impl PeerChannels {
    /// Channels whose connections leave from `local_ip` (`None`: the system's choice).
    pub fn new(local_ip: Option<IpAddr>) -> PeerChannels {
        PeerChannels {
            channels: Arc::default(),
            local_ip,
        }
    }

    /// The channel to `address`, created on first use (no I/O happens here).
    pub fn get(&self, address: &str) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = endpoint(address)?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .local_address(self.local_ip)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Creates a [`PeerConnection`] for each replication target.
#[derive(Clone)]
pub struct Network {
    channels: PeerChannels,
    /// Largest gRPC message a peer may send us (AppendEntries batches, answers).
    max_message_bytes: usize,
}

impl Network {
    /// A network sharing `channels` with the rest of the node.
    pub fn new(channels: PeerChannels, max_message_bytes: usize) -> Network {
        Network {
            channels,
            max_message_bytes,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerConnection {
        let client = self.channels.get(&node.addr).map(|channel| {
            RaftClient::new(channel)
                .max_decoding_message_size(self.max_message_bytes)
                .max_encoding_message_size(self.max_message_bytes)
        });
        PeerConnection {
            target,
            address: node.addr.clone(),
            client,
        }
    }
}

/// The Raft RPCs to one peer.
pub struct PeerConnection {
    target: NodeId,
    address: String,
    /// `Err` when the peer's address in the membership is unusable.
    client: Result<RaftClient<Channel>, String>,
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
    fn client(&self) -> Result<RaftClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    /// One unary `action` call with `request` encoded, the answer decoded, within `ttl`.
    async fn call<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        request: &Req,
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
        let answer = match tokio::time::timeout(ttl, send(self.client()?, grpc_request)).await {
            Ok(answer) => answer.map_err(|status| rpc_error(&status))?,
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action,
                    id: 0,
                    target: self.target,
                    timeout: ttl,
                }))
            }
        };
        decode(&answer.into_inner().data).map_err(|e| decode_error(&e))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            RPCTypes::AppendEntries,
            &rpc,
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
            &rpc,
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
            &rpc,
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
            &req,
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
        let header = pb::SnapshotHeader {
            vote: encode(&vote).map_err(|e| to_network(&e))?,
            meta: encode(&snapshot.meta).map_err(|e| to_network(&e))?,
            size: snapshot.snapshot.len() as u64,
        };
        let data = Bytes::from(snapshot.snapshot);
        let chunks = (0..data.len())
            .step_by(SNAPSHOT_CHUNK_BYTES)
            .map(move |start| {
                let end = (start + SNAPSHOT_CHUNK_BYTES).min(data.len());
                pb::SnapshotChunk {
                    payload: Some(pb::snapshot_chunk::Payload::Chunk(data.slice(start..end))),
                }
            });
        let messages = stream::iter(
            std::iter::once(pb::SnapshotChunk {
                payload: Some(pb::snapshot_chunk::Payload::Header(header)),
            })
            .chain(chunks),
        );
        let mut client = self.client().map_err(|e| to_network(&e))?;
        tracing::info!(target = self.target, address = %self.address, "sending snapshot");
        let ttl = option.hard_ttl();
        let send = tokio::time::timeout(ttl, client.install_snapshot(messages));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = send => match answer {
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
                Ok(Ok(answer)) => decode(&answer.into_inner().data).map_err(|e| to_network(&e).into()),
            },
        }
    }
}
