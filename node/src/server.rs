//! Starting and stopping a node: open storage, start Raft, serve every gRPC
//! service on the given listener, bootstrap or join, and shut down cleanly.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use raftkv_proto::pb::admin_server::AdminServer;
use raftkv_proto::pb::kv_server::KvServer;
use raftkv_proto::pb::raft_server::RaftServer;
use raftkv_proto::FILE_DESCRIPTOR_SET;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use openraft::type_config::async_runtime::WatchReceiver as _;

use crate::config::advertise_address;
use crate::config::NodeConfig;
use crate::grpc::admin::AdminService;
use crate::grpc::health::track_leadership;
use crate::grpc::kv::KvService;
use crate::grpc::raft::RaftService;
use crate::network::Network;
use crate::network::PeerChannels;
use crate::node::RaftNode;
use crate::store;
use crate::types::Raft;

/// Largest snapshot a node accepts from a peer.
const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag is invalid (timings, addresses).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] store::OpenError),
    /// openraft refused to start.
    #[error("cannot start raft: {0}")]
    Raft(String),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs a node on `listener` until `shutdown` resolves or the admin API asks
/// it to stop; then stops serving and shuts Raft down.
pub async fn run(
    listener: TcpListener,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    crate::failpoint::arm_from_env();
    let bound = listener
        .local_addr()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let address = advertise_address(&config, bound).map_err(RunError::Config)?;
    crate::network::endpoint(&address).map_err(RunError::Config)?;
    let raft_config = Arc::new(
        config
            .raft_config()
            .map_err(|e| RunError::Config(e.to_string()))?,
    );

    let data_dir = config.data_dir.clone();
    let cache_bytes = config.cache_mb << 20;
    let (log_store, state_machine) =
        tokio::task::spawn_blocking(move || store::open(&data_dir, cache_bytes))
            .await
            .map_err(|e| RunError::Raft(e.to_string()))??;
    let kv = state_machine.reader();

    let local_ip = (!bound.ip().is_unspecified()).then(|| bound.ip());
    let peers = PeerChannels::new(local_ip);
    let network = Network::new(peers.clone(), config.max_message_bytes());
    let raft = Raft::new(config.id, raft_config, network, log_store, state_machine)
        .await
        .map_err(|e| RunError::Raft(e.to_string()))?;

    let (stop, mut stopped) = watch::channel(false);
    let node = Arc::new(RaftNode {
        id: config.id,
        address: address.clone(),
        raft: raft.clone(),
        kv,
        peers,
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        stop,
    });
    tracing::info!(id = config.id, %address, data_dir = %config.data_dir.display(), "node started");

    if config.bootstrap {
        bootstrap(&node).await;
    }
    if !config.join.is_empty() {
        tokio::spawn(join(node.clone(), config.join.clone()));
    }

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(track_leadership(raft.clone(), health_reporter));
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| RunError::Config(e.to_string()))?;

    let max_message = config.max_message_bytes();
    // Raft stops for good on a storage failure (disk full, I/O error): then
    // the process must stop too, with the reason, so a supervisor restarts it
    // once the cause is fixed; serving without Raft would only mislead.
    let mut raft_metrics = raft.metrics();
    let raft_failed = async move {
        loop {
            if raft_metrics.borrow_watched().running_state.is_err() {
                return;
            }
            if raft_metrics.changed().await.is_err() {
                return;
            }
        }
    };
    let stop_requested = async move {
        tokio::select! {
            () = shutdown => {}
            _ = stopped.wait_for(|stop| *stop) => {}
            () = raft_failed => {}
        }
        tracing::info!("stopping");
    };
    // The server's own `tcp_nodelay` applies only to listeners it binds: set it
    // on every accepted connection, or small answers wait for delayed ACKs (~40 ms).
    let incoming = TcpListenerStream::new(listener).map_ok(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(cause = %e, "cannot disable Nagle's algorithm on a connection");
        }
        stream
    });
    let served = tonic::transport::Server::builder()
        .add_service(
            KvServer::new(KvService::new(node.clone()))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(AdminServer::new(AdminService::new(node.clone())))
        .add_service(
            RaftServer::new(RaftService::new(raft.clone(), MAX_SNAPSHOT_BYTES))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, stop_requested)
        .await;
    let failure = raft.metrics().borrow_watched().running_state.clone();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(cause = %e, "raft did not shut down cleanly");
    }
    if let Err(fatal) = failure {
        tracing::error!(cause = %fatal, "raft stopped on an unrecoverable error");
        return Err(RunError::Raft(format!("raft stopped: {fatal}")));
    }
    tracing::info!("node stopped");
    served.map_err(RunError::from)
}

/// `--bootstrap`: initialise a one-node cluster, unless this node already is
/// initialised (then it is a no-op, logged).
async fn bootstrap(node: &RaftNode) {
    match node.initialize(BTreeMap::new()).await {
        Ok(()) => tracing::info!(id = node.id, "bootstrapped a new cluster"),
        Err(e) => {
            tracing::info!(cause = %e, "--bootstrap ignored: this node is already initialised")
        }
    }
}

/// `--join`: asks the cluster at `addresses` to add this node as a voter,
/// retrying (any node forwards to the leader) until it is a voter.
async fn join(node: Arc<RaftNode>, addresses: Vec<String>) {
    let mut delay = Duration::from_millis(200);
    loop {
        let is_voter = node
            .membership()
            .membership()
            .voter_ids()
            .any(|id| id == node.id);
        if is_voter {
            tracing::info!("this node is a voter of the cluster");
            return;
        }
        for address in &addresses {
            let Ok(channel) = node.peers.get(address) else {
                tracing::error!(%address, "--join address is not host:port");
                continue;
            };
            let mut request = tonic::Request::new(pb::AddNodeRequest {
                node_id: node.id,
                address: node.address.clone(),
                previous_index: 0,
            });
            request.set_timeout(Duration::from_secs(130));
            match AdminClient::new(channel).add_voter(request).await {
                Ok(_) => {
                    tracing::info!(via = %address, "joined the cluster as a voter");
                    return;
                }
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    tracing::error!(via = %address, cause = %status.message(), "the cluster refused to add this node");
                    return;
                }
                Err(status) => {
                    tracing::warn!(via = %address, cause = %status.message(), "join attempt failed; retrying")
                }
            }
        }
        if *node.stop.borrow() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
