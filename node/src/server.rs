//! Starting and stopping a node: open storage, start Raft, serve every gRPC
//! service on the given listener, bootstrap or join, and shut down cleanly.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use raftkv_client::ChannelOptions;
use raftkv_client::Channels;
use raftkv_proto::pb::admin_server::AdminServer;
use raftkv_proto::pb::kv_server::KvServer;
use raftkv_proto::pb::raft_server::RaftServer;
use raftkv_proto::FILE_DESCRIPTOR_SET;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use openraft::type_config::async_runtime::WatchReceiver as _;

use crate::config::advertise_address;
use crate::config::NodeConfig;
use crate::connection;
use crate::connection::Acceptor;
use crate::connection::ConnectionLimits;
use crate::connection::TrackCalls;
use crate::failover;
use crate::failover::LeaderLink;
use crate::grpc::admin::AdminService;
use crate::grpc::health::track_leadership;
use crate::grpc::kv::KvService;
use crate::grpc::raft::RaftService;
use crate::grpc::routing::routed;
use crate::grpc::watch::Watches;
use crate::join::join;
use crate::join::JoinError;
use crate::network::Network;
use crate::node::KvLimits;
use crate::node::Raft;
use crate::node::RaftNode;
use crate::security::Authorize;
use crate::security::Role;
use crate::security::Tls;
use crate::security::TlsError;
use crate::store;

/// Largest snapshot a node accepts from a peer.
const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 pings to callers, and how long an answer may take: a caller that
/// vanished without closing its connection is dropped within both.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag is invalid (timings, addresses).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The TLS files could not be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The data directory could not be opened.
    #[error(transparent)]
    Storage(#[from] store::OpenError),
    /// openraft refused to start.
    #[error("cannot start raft: {0}")]
    Raft(String),
    /// Raft stopped on an unrecoverable error (a storage failure).
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// The listening sockets could not be kept across a restart of the node.
    #[error("listening socket: {0}")]
    Listen(std::io::Error),
    /// `--join` gave up: the cluster refused this node or did not make it a
    /// voter in time.
    #[error("cannot join the cluster: {0}")]
    Join(#[from] JoinError),
    /// `--force-new-cluster` failed.
    #[error("cannot force a new cluster: {0}")]
    Recovery(#[from] crate::recovery::RecoveryError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs a node on `listener` (and its metrics endpoint on `metrics`, if
/// given) until `shutdown` resolves or the admin API asks it to stop; then
/// stops serving and shuts Raft down.
pub async fn run(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    crate::failpoint::arm_from_env();
    let bound = listener
        .local_addr()
        .map_err(|e| RunError::Config(e.to_string()))?;
    let address = advertise_address(&config, bound).map_err(RunError::Config)?;
    raftkv_client::check_address(&address).map_err(|e| RunError::Config(e.to_string()))?;
    for peer in &config.join {
        raftkv_client::check_address(peer)
            .map_err(|e| RunError::Config(format!("--join {peer}: {e}")))?;
    }
    let raft_config = Arc::new(
        config
            .raft_config()
            .map_err(|e| RunError::Config(e.to_string()))?,
    );

    // Broken TLS files stop the node before its storage is opened.
    let (tls, peer_tls) = match config.tls_files() {
        Some(files) => {
            let (tls, client, loaded) = Tls::load(files)?;
            tracing::info!(
                common_name = ?loaded.common_name,
                authorities = loaded.authorities,
                "mutual TLS on: every caller needs a certificate from the CA"
            );
            (Some(Arc::new(tls)), Some(client))
        }
        None => {
            if !bound.ip().is_loopback() {
                tracing::warn!(
                    listen = %bound,
                    "serving without TLS on a non-loopback address: anyone who reaches it can \
                     read and write every key and change the cluster (set --tls-cert, --tls-key, --tls-ca)"
                );
            }
            (None, None)
        }
    };

    let data_dir = config.data_dir.clone();
    let cache_bytes = config.cache_mb << 20;
    let (log_store, state_machine) =
        tokio::task::spawn_blocking(move || store::open(&data_dir, cache_bytes))
            .await
            .map_err(|e| RunError::Raft(e.to_string()))??;
    let kv = state_machine.reader();
    let lease_changes = state_machine.lease_changes();
    let watch_hub = crate::watch::WatchHub::new(kv.clone());
    let revisions = kv.revisions().clone();
    let database = state_machine.database();
    let disk = state_machine.disk();
    // Kept to mark the state machine clean once Raft has stopped.
    let state_machine_on_stop = state_machine.clone();

    let local_ip = (!bound.ip().is_unspecified()).then(|| bound.ip());
    let peers = Channels::new(ChannelOptions {
        connect_timeout: Duration::from_secs(1),
        local_ip,
        keep_alive: Some((Duration::from_secs(10), Duration::from_secs(5))),
        tls: peer_tls,
    });
    let reloading = tokio::spawn(reload_on_hangup(tls.clone(), peers.clone()));
    let network = Network::new(peers.clone(), config.max_message_bytes());
    if config.force_new_cluster {
        crate::recovery::force_new_cluster(
            config.id,
            &address,
            raft_config.clone(),
            network.clone(),
            &log_store,
            &state_machine,
        )
        .await?;
    }
    let raft = Raft::new(config.id, raft_config, network, log_store, state_machine)
        .await
        .map_err(|e| RunError::Raft(e.to_string()))?;

    let countdowns = Arc::new(crate::lease::Countdowns::new(lease_changes.clone()));
    let limits = KvLimits {
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        max_leases: usize::try_from(config.max_leases).unwrap_or(usize::MAX),
        quota_bytes: config.quota(),
    };
    crate::metrics::global()
        .quota_bytes
        .set(i64::try_from(limits.quota_bytes).unwrap_or(i64::MAX));
    tracing::info!(quota_bytes = limits.quota_bytes, "size quota");
    let node = Arc::new(RaftNode::new(
        config.id,
        address.clone(),
        raft.clone(),
        kv,
        peers,
        limits,
        countdowns.clone(),
        config.data_dir.clone(),
    ));
    let mut stopped = node.stop_requests();
    tracing::info!(id = config.id, %address, data_dir = %config.data_dir.display(), "node started");

    if config.bootstrap {
        bootstrap(&node).await;
    }
    // A join that gives up stops the node (below) with the reason.
    let (join_failed_tx, mut join_failed) = tokio::sync::oneshot::channel::<JoinError>();
    let joining = (!config.join.is_empty()).then(|| {
        let node = node.clone();
        let (addresses, timeout) = (config.join.clone(), config.join_timeout);
        tokio::spawn(async move {
            if let Err(e) = join(&node, &addresses, timeout).await {
                tracing::error!(cause = %e, "giving up joining the cluster; stopping");
                let _ = join_failed_tx.send(e);
            }
        })
    });

    tokio::spawn(crate::metrics::count_leader_changes(raft.clone()));
    let metrics_endpoint = metrics.map(|listener| {
        tokio::spawn(crate::metrics::serve(
            listener,
            crate::metrics::Endpoint {
                raft: raft.clone(),
                db: database,
                revisions,
            },
        ))
    });
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
    // this run ends with the reason. A full disk is waited out by the caller
    // (see `disk_full`); any other failure stops the process, so a
    // supervisor restarts it once the cause is fixed.
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
    let mut join_error = None;
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let stop_requested = async {
        tokio::select! {
            () = shutdown => {}
            _ = stopped.wait_for(|stop| *stop) => {}
            () = raft_failed => {}
            // Only a failure stops the node; a finished join drops the sender.
            Ok(e) = &mut join_failed => join_error = Some(e),
        }
        tracing::info!("stopping");
        crate::systemd::stopping();
        // Ends the long-lived peer streams, which graceful shutdown waits for.
        stopping_tx.send_replace(true);
    };
    // Every accepted connection reports when it closes, so followers notice
    // at once when their leader's connection dies (see `failover`).
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(crate::lease::run(
        node.clone(),
        countdowns,
        lease_changes,
        stopping_rx.clone(),
    ));
    let compacting = tokio::spawn(crate::history::decide(
        node.clone(),
        crate::history::HistoryPolicy {
            revisions: config.history_revisions,
            age: config.history_age,
        },
        stopping_rx.clone(),
    ));
    let removing = tokio::spawn(crate::history::remove(
        state_machine_on_stop.clone(),
        stopping_rx.clone(),
    ));
    let watching_usage = tokio::spawn(crate::quota::watch_usage(node.clone(), stopping_rx.clone()));
    let watching_disk = tokio::spawn(crate::hung_disk::watch(
        raft.clone(),
        disk,
        config.id,
        stopping_rx.clone(),
    ));
    let purging = tokio::spawn(crate::log_purge::run(
        raft.clone(),
        crate::log_purge::PurgePolicy {
            keep: config.snapshot_keep,
            catch_up: config.catch_up_entries,
        },
        stopping_rx.clone(),
    ));
    let leader_link = Arc::new(LeaderLink::default());
    tokio::spawn(failover::watch(
        raft.clone(),
        config.id,
        leader_link.clone(),
        closed_rx,
    ));
    let policy = config.role_policy();
    let incoming = connection::incoming(
        listener,
        Acceptor {
            tls,
            policy: policy.clone(),
            limits: ConnectionLimits {
                max_connections: config.max_connections as usize,
                handshake_timeout: HANDSHAKE_TIMEOUT,
                idle_timeout: config.idle_timeout,
            },
            closed: closed_tx,
        },
    );
    let admin = InterceptedService::new(
        routed(
            AdminServer::new(AdminService::new(node.clone())),
            node.clone(),
            crate::grpc::admin::placement,
        ),
        Authorize::new("raftkv.Admin", Role::Admin, policy.clone()),
    );
    let raft_service = InterceptedService::new(
        RaftServer::new(RaftService::new(
            raft.clone(),
            MAX_SNAPSHOT_BYTES,
            config.data_dir.clone(),
            leader_link,
            stopping_rx.clone(),
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message),
        Authorize::new("raftkv.Raft", Role::Node, policy),
    );
    let serving = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_streams)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(TrackCalls)
        .add_service(routed(
            KvServer::new(KvService::new(
                node.clone(),
                Watches {
                    hub: watch_hub,
                    stopping: stopping_rx.clone(),
                },
            ))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message),
            node.clone(),
            crate::grpc::kv::placement,
        ))
        .add_service(admin)
        .add_service(raft_service)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, stop_requested);
    // The listener is bound and Raft runs: connections are served from here on.
    crate::systemd::ready(&address);
    let served = serving.await;
    if let Some(joining) = joining {
        joining.abort();
    }
    reloading.abort();
    if let Some(endpoint) = metrics_endpoint {
        endpoint.abort();
    }
    // Both end on `stopping`; a removal step in progress finishes first.
    let _ = compacting.await;
    let _ = removing.await;
    let _ = purging.await;
    let _ = watching_usage.await;
    let _ = watching_disk.await;
    let failure = raft.metrics().borrow_watched().running_state.clone();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(cause = %e, "raft did not shut down cleanly");
    }
    if failure.is_ok() {
        // Lets the next start trust the state machine instead of rebuilding it.
        let closed =
            tokio::task::spawn_blocking(move || state_machine_on_stop.close_cleanly()).await;
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(cause = %e, "could not mark the state machine clean; the next start rebuilds it")
            }
            Err(e) => {
                tracing::warn!(cause = %e, "could not mark the state machine clean; the next start rebuilds it")
            }
        }
    }
    if let Err(fatal) = failure {
        tracing::error!(cause = %fatal, "raft stopped on an unrecoverable error");
        return Err(RunError::Stopped(fatal.to_string()));
    }
    if let Some(e) = join_error {
        return Err(RunError::Join(e));
    }
    tracing::info!("node stopped");
    served.map_err(RunError::from)
}

/// `--bootstrap`: initialise a one-node cluster, unless this node already is
/// initialised (then it is a no-op, logged).
async fn bootstrap(node: &RaftNode) {
    match node.initialize(BTreeMap::new()).await {
        Ok(()) => tracing::info!(id = node.id(), "bootstrapped a new cluster"),
        Err(e) => {
            tracing::info!(cause = %e, "--bootstrap ignored: this node is already initialised")
        }
    }
}

/// On every SIGHUP, loads the TLS files again: new connections, accepted
/// and dialled, use them; a failed load is logged and changes nothing.
async fn reload_on_hangup(tls: Option<Arc<Tls>>, peers: Channels) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!(cause = %e, "cannot listen for SIGHUP: certificates reload only on a restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let Some(tls) = &tls else {
            tracing::info!("SIGHUP: TLS is off, nothing to reload");
            continue;
        };
        match tls.reload() {
            Ok((client, loaded)) => {
                peers.set_tls(Some(client));
                tracing::info!(
                    common_name = ?loaded.common_name,
                    authorities = loaded.authorities,
                    "SIGHUP: reloaded the TLS certificate, key and CA; new connections use them"
                );
            }
            Err(e) => tracing::error!(
                cause = %e,
                "SIGHUP: cannot reload the TLS files; keeping the ones loaded before"
            ),
        }
    }
}
