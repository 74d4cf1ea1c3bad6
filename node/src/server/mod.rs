//! A node, built from named parts and stopped in a written order.
//!
//! [`run`] reads top to bottom:
//! 1. **settings**: the advertised address, openraft's config, TLS (broken
//!    TLS files stop the node before its storage is opened);
//! 2. **storage**: the log and the state machine in the data directory;
//! 3. **network**: cached peer channels (TLS reloaded on SIGHUP);
//! 4. **raft**, after `--force-new-cluster` recovery when asked; then the
//!    [`RaftNode`] over it, bootstrapped or joining;
//! 5. **background tasks** ([`tasks`]): metrics, leadership health, lease
//!    expiry, compaction, quota, hung-disk watch, log purge, failover;
//! 6. **services** ([`services`]) on the listener until a stop is asked for
//!    (the shutdown future, the admin API, a failed join, Raft failing).
//!
//! Stopping runs the other way: stop accepting calls and let those in
//! flight finish; signal `stopping`; stop the background tasks, the last
//! started first; shut Raft down; mark the state machine clean.

pub mod allocator;
pub mod disk_full;
pub mod http;
mod services;
pub mod systemd;
mod tasks;
mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use raftkv_client::ChannelOptions;
use raftkv_client::Channels;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cluster::failover::LeaderLink;
use crate::cluster::join::join;
use crate::cluster::join::JoinError;
use crate::config::advertise_address;
use crate::config::NodeConfig;
use crate::grpc::watch::Watches;
use crate::network::addresses::PeerAddresses;
use crate::network::connection;
use crate::network::connection::Acceptor;
use crate::network::connection::ConnectionLimits;
use crate::network::Network;
use crate::node::KvLimits;
use crate::node::Raft;
use crate::node::RaftNode;
use crate::security::TlsError;
use crate::store;
use services::ServiceParts;
use tasks::Stop;
use tasks::Tasks;
use tls::load_tls;
use tls::reload_on_hangup;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping node waits for its calls to end and its clients to
/// answer its goodbye before it closes their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

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
    Recovery(#[from] crate::cluster::recovery::RecoveryError),
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
    // 1. Settings.
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
    let (tls, peer_tls) = load_tls(&config, bound)?;

    // 2. Storage.
    let data_dir = config.data_dir.clone();
    let cache_bytes = config.cache_mb << 20;
    let (log_store, state_machine) =
        tokio::task::spawn_blocking(move || store::open(&data_dir, cache_bytes))
            .await
            .map_err(|e| RunError::Raft(e.to_string()))??;
    let kv = state_machine.reader();
    let lease_changes = state_machine.lease_changes();

    // 3. Network.
    let local_ip = (!bound.ip().is_unspecified()).then(|| bound.ip());
    let peers = Channels::new(ChannelOptions {
        connect_timeout: Duration::from_secs(1),
        local_ip,
        keep_alive: Some((Duration::from_secs(10), Duration::from_secs(5))),
        tls: peer_tls,
    });
    let peer_addresses = Arc::new(PeerAddresses::default());
    let peer_versions = Arc::new(crate::network::versions::PeerVersions::default());
    let network = Network::new(
        peers.clone(),
        peer_addresses.clone(),
        config.max_message_bytes(),
        peer_versions.clone(),
    );

    // 4. Raft and the node over it.
    if config.force_new_cluster {
        crate::cluster::recovery::force_new_cluster(
            config.id,
            &address,
            raft_config.clone(),
            network.clone(),
            &log_store,
            &state_machine,
        )
        .await?;
    }
    let raft = Raft::new(
        config.id,
        raft_config,
        network,
        log_store,
        state_machine.clone(),
    )
    .await
    .map_err(|e| RunError::Raft(e.to_string()))?;
    let countdowns = Arc::new(crate::lease::Countdowns::new(lease_changes.clone()));
    let limits = KvLimits {
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        max_leases: usize::try_from(config.max_leases).unwrap_or(usize::MAX),
        quota_bytes: config.quota(),
        max_message_bytes: config.max_message_bytes(),
    };
    crate::metrics::global()
        .quota_bytes
        .set(i64::try_from(limits.quota_bytes).unwrap_or(i64::MAX));
    tracing::info!(quota_bytes = limits.quota_bytes, "size quota");
    let node = Arc::new(RaftNode::new(
        config.id,
        address.clone(),
        raft.clone(),
        kv.clone(),
        peers.clone(),
        limits,
        countdowns.clone(),
        config.data_dir.clone(),
        peer_versions,
    ));
    tracing::info!(id = config.id, %address, data_dir = %config.data_dir.display(), "node started");
    if config.bootstrap {
        bootstrap(&node).await;
    }

    // 5. Background tasks. Those that end on `stopping` finish their step.
    let (stopping_tx, stopping) = watch::channel(false);
    let mut tasks = Tasks::default();
    tasks.spawn(
        "reload TLS on SIGHUP",
        Stop::Abort,
        reload_on_hangup(tls.clone(), peers),
    );
    // A join that gives up stops the node (below) with the reason.
    let (join_failed_tx, mut join_failed) = tokio::sync::oneshot::channel::<JoinError>();
    if !config.join.is_empty() {
        let node = node.clone();
        let (addresses, timeout) = (config.join.clone(), config.join_timeout);
        tasks.spawn("join", Stop::Abort, async move {
            if let Err(e) = join(&node, &addresses, timeout).await {
                tracing::error!(cause = %e, "giving up joining the cluster; stopping");
                let _ = join_failed_tx.send(e);
            }
        });
    }
    tasks.spawn(
        "peer addresses",
        Stop::Abort,
        crate::network::addresses::follow_membership(raft.clone(), peer_addresses),
    );
    tasks.spawn(
        "leader changes",
        Stop::Abort,
        crate::cluster::elections::record(raft.clone(), node.leader_changes().clone()),
    );
    if let Some(listener) = metrics {
        let endpoint = http::Endpoint {
            raft: raft.clone(),
            db: state_machine.database(),
            revisions: kv.revisions().clone(),
        };
        tasks.spawn(
            "metrics endpoint",
            Stop::Abort,
            http::serve(listener, endpoint),
        );
    }
    tasks.spawn(
        "lease expiry",
        Stop::Signalled,
        crate::lease::run(node.clone(), countdowns, lease_changes, stopping.clone()),
    );
    tasks.spawn(
        "cluster version",
        Stop::Signalled,
        crate::node::upgrade::raise_cluster_version(node.clone(), stopping.clone()),
    );
    tasks.spawn(
        "compaction",
        Stop::Signalled,
        crate::history::compaction::decide(
            node.clone(),
            crate::history::compaction::HistoryPolicy {
                revisions: config.history_revisions,
                age: config.history_age,
            },
            stopping.clone(),
        ),
    );
    tasks.spawn(
        "removal of compacted history",
        Stop::Signalled,
        crate::history::compaction::remove(state_machine.clone(), stopping.clone()),
    );
    tasks.spawn(
        "cluster id",
        Stop::Abort,
        crate::cluster::identity::name_the_cluster(node.clone(), stopping.clone()),
    );
    tasks.spawn(
        "quota",
        Stop::Signalled,
        crate::disk::quota::watch_usage(node.clone(), stopping.clone()),
    );
    tasks.spawn(
        "hung-disk watch",
        Stop::Signalled,
        crate::disk::hung_disk::watch(
            raft.clone(),
            state_machine.disk(),
            config.id,
            stopping.clone(),
        ),
    );
    tasks.spawn(
        "log purge",
        Stop::Signalled,
        crate::disk::log_purge::run(
            raft.clone(),
            crate::disk::log_purge::PurgePolicy {
                keep: config.snapshot_keep,
                catch_up: config.catch_up_entries,
            },
            stopping.clone(),
        ),
    );
    // Every accepted connection reports when it closes, so followers notice
    // at once when their leader's connection dies (see `failover`).
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let leader_link = Arc::new(LeaderLink::default());
    tasks.spawn(
        "failover",
        Stop::Abort,
        crate::cluster::failover::watch(raft.clone(), config.id, leader_link.clone(), closed_rx),
    );

    // 6. Services, until a stop is asked for.
    let policy = config.role_policy();
    let (served, health) = services::build(
        &config,
        ServiceParts {
            node: node.clone(),
            watches: Watches {
                hub: crate::history::hub::WatchHub::new(kv),
                stopping: stopping.clone(),
            },
            leader_link,
            policy: policy.clone(),
        },
    )
    .map_err(|e| RunError::Config(e.to_string()))?;
    tasks.spawn(
        "leadership health",
        Stop::Abort,
        crate::grpc::health::track_leadership(raft.clone(), health),
    );
    let incoming = connection::incoming(
        listener,
        Acceptor {
            tls,
            policy,
            limits: ConnectionLimits {
                max_connections: config.max_connections as usize,
                handshake_timeout: HANDSHAKE_TIMEOUT,
                idle_timeout: config.idle_timeout,
            },
            closed: closed_tx,
        },
    );
    let mut stop_asked = node.stop_requests();
    let mut join_error = None;
    let stop_requested = async {
        tokio::select! {
            () = shutdown => {}
            _ = stop_asked.wait_for(|stop| *stop) => {}
            () = raft_failed(&raft) => {}
            // Only a failure stops the node; a finished join drops the sender.
            Ok(e) = &mut join_failed => join_error = Some(e),
        }
        tracing::info!("stopping");
        crate::server::systemd::stopping();
        // Ends the long-lived peer streams, which graceful shutdown waits
        // for, and the background tasks that finish a step first.
        stopping_tx.send_replace(true);
    };
    // The listener is bound and Raft runs: connections are served from here on.
    crate::server::systemd::ready(&address);
    // Once stopping, calls get DRAIN_TIMEOUT to end and clients to answer
    // the goodbye (GOAWAY and a PING); a client that never answers (a
    // stalled process, a dead network path) must not hold the node.
    let mut draining = stopping.clone();
    let drain_limit = async move {
        let _ = draining.wait_for(|stop| *stop).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    let served = tokio::select! {
        served = served.serve_with_incoming_shutdown(incoming, stop_requested) => served,
        () = drain_limit => {
            tracing::warn!(
                after = ?DRAIN_TIMEOUT,
                "connections still open after the drain time; closing them"
            );
            Ok(())
        }
    };

    // Stopping, in order: the calls have ended (above); then the background
    // tasks; then Raft; then the state machine is marked clean.
    tasks.stop().await;
    let failure = raft.metrics().borrow_watched().running_state.clone();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!(cause = %e, "raft did not shut down cleanly");
    }
    if failure.is_ok() {
        // Lets the next start trust the state machine instead of rebuilding it.
        let closed = tokio::task::spawn_blocking(move || state_machine.close_cleanly()).await;
        let closed = closed
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = closed {
            tracing::warn!(cause = %e, "could not mark the state machine clean; the next start rebuilds it")
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

/// Resolves when Raft stops for good on a storage failure (disk full, I/O
/// error): then the run ends with the reason. A full disk is waited out by
/// the caller (see `disk_full`); any other failure stops the process, so a
/// supervisor restarts it once the cause is fixed.
///
/// Raft reports a failure in its metrics and then stops, which closes its
/// metrics channels. This waits on the server metrics (role and leader),
/// which change rarely, not on `Raft::metrics`, which change with every
/// write and woke this task, on the main thread, once per write.
async fn raft_failed(raft: &Raft) {
    let mut server = raft.server_metrics();
    loop {
        if raft.metrics().borrow_watched().running_state.is_err() {
            return;
        }
        if server.changed().await.is_err() {
            return;
        }
    }
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
