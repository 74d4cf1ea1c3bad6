//! A full disk never makes a node exit: it waits for room, saying why, and
//! runs again by itself.
//!
//! sled keeps its first I/O error for good (only reopening the database
//! clears it), and openraft stops its `Raft` for good on any storage error.
//! So when Raft stops, or the store cannot be opened, after a write failed
//! for want of room or with the data directory's filesystem full,
//! [`run_through_full_disks`] keeps the process and its listening sockets,
//! and until there is room again:
//! - answers every gRPC call `UNAVAILABLE` with `raftkv-reason: disk-full`
//!   (clients go to another node at once; a leader sees an unreachable
//!   follower), and `/readyz` with 503 and the reason, `raftkv_disk_full` 1;
//! - polls the free space, every second, then less often (up to 5 s).
//!
//! Then it reopens the store and runs the node again in the same process.
//!
//! Why nothing acknowledged can be lost on the way: the log store
//! acknowledges an append (and a node sends a vote) only after the sync
//! that makes it durable succeeded, so a write that failed was never
//! acknowledged by this node; and reopening the store is the crash-recovery
//! path (the state machine rolls back to its applied revision, the log
//! keeps what was synced, and Raft replays and catches up from the leader).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use raftkv_proto::REASON_DISK_FULL;
use raftkv_proto::REASON_METADATA;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::NodeConfig;
use crate::server::RunError;

/// Below this much free space, a storage failure counts as a full disk.
const FULL_BELOW_BYTES: u64 = 4 << 20;
/// The node runs again once this much is free.
const ROOM_BYTES: u64 = 8 << 20;
/// First and longest wait between two looks at the free space.
const FIRST_POLL: Duration = Duration::from_secs(1);
const LONGEST_POLL: Duration = Duration::from_secs(5);

/// Runs the node (see [`crate::server::run`]) until `shutdown` resolves,
/// waiting out full disks as the module documentation says.
pub async fn run_through_full_disks(
    listener: TcpListener,
    metrics: Option<TcpListener>,
    mut config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // The sockets stay bound across runs: each run gets a duplicate.
    let listener = listener.into_std().map_err(io_error)?;
    let metrics = metrics
        .map(TcpListener::into_std)
        .transpose()
        .map_err(io_error)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });
    loop {
        let round =
            TcpListener::from_std(listener.try_clone().map_err(io_error)?).map_err(io_error)?;
        let round_metrics = match &metrics {
            Some(m) => {
                Some(TcpListener::from_std(m.try_clone().map_err(io_error)?).map_err(io_error)?)
            }
            None => None,
        };
        // Only this round's failed writes count.
        crate::disk::filesystem::take_out_of_room();
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        let failure = match crate::server::run(round, round_metrics, config.clone(), stopped).await
        {
            Ok(()) => return Ok(()),
            Err(e @ (RunError::Stopped(_) | RunError::Storage(_) | RunError::Raft(_)))
                if crate::disk::filesystem::take_out_of_room()
                    || free_bytes(&config.data_dir).is_some_and(|free| free < FULL_BELOW_BYTES) =>
            {
                e
            }
            Err(e) => return Err(e),
        };
        let gauge = &crate::metrics::global().disk_full;
        gauge.set(1);
        tracing::error!(
            cause = %failure,
            data_dir = %config.data_dir.display(),
            "the disk is full: this node stops serving and answers UNAVAILABLE (disk-full) until \
             there is room again, then runs again by itself; free space on it, or grow it"
        );
        let room = wait_for_room(&listener, metrics.as_ref(), &config, stop_rx.clone()).await?;
        gauge.set(0);
        if !room {
            return Ok(());
        }
        tracing::info!(
            data_dir = %config.data_dir.display(),
            "there is room on the disk again: reopening the store"
        );
        // Done once, when the process started: run again, it would throw
        // away members added since.
        config.force_new_cluster = false;
    }
}

fn io_error(e: std::io::Error) -> RunError {
    RunError::Listen(e)
}

/// Bytes free for this process on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    crate::disk::filesystem::space(dir).map(|fs| fs.available)
}

/// Answers on the node's sockets that its disk is full until there is
/// [`ROOM_BYTES`] free (`true`) or the node is told to stop (`false`).
async fn wait_for_room(
    listener: &std::net::TcpListener,
    metrics: Option<&std::net::TcpListener>,
    config: &NodeConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<bool, RunError> {
    let grpc = TcpListener::from_std(listener.try_clone().map_err(io_error)?).map_err(io_error)?;
    let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
    let answering = tokio::spawn(refuse_calls(grpc, config.clone(), async move {
        let _ = done_rx.await;
    }));
    let http = match metrics {
        Some(m) => {
            let m = TcpListener::from_std(m.try_clone().map_err(io_error)?).map_err(io_error)?;
            Some(tokio::spawn(super::http::serve_with(
                m,
                |path| match path {
                    "/readyz" => Some((
                        503,
                        "not ready: the disk is full; waiting for room\n".to_string(),
                    )),
                    _ => None,
                },
            )))
        }
        None => None,
    };
    let mut wait = FIRST_POLL;
    let room = loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break false,
            () = tokio::time::sleep(wait) => {}
        }
        if free_bytes(&config.data_dir).is_some_and(|free| free >= ROOM_BYTES) {
            break true;
        }
        wait = (wait * 2).min(LONGEST_POLL);
    };
    if let Some(http) = http {
        http.abort();
    }
    // Graceful: clients' connections get a GOAWAY and reconnect to the node
    // that runs next, instead of being answered "disk full" for good.
    let _ = done.send(());
    let mut answering = answering;
    if tokio::time::timeout(Duration::from_secs(5), &mut answering)
        .await
        .is_err()
    {
        answering.abort();
    }
    Ok(room)
}

/// Serves every gRPC call on `listener` with `UNAVAILABLE` and the reason
/// `disk-full`, through the node's own connection handling (TLS, limits).
async fn refuse_calls(
    listener: TcpListener,
    config: NodeConfig,
    done: impl Future<Output = ()> + Send + 'static,
) {
    use crate::network::connection::Acceptor;
    use crate::network::connection::ConnectionLimits;
    let tls = match config.tls_files() {
        Some(files) => match crate::security::Tls::load(files) {
            Ok((tls, _, _)) => Some(std::sync::Arc::new(tls)),
            Err(e) => {
                tracing::error!(cause = %e, "cannot load the TLS files to answer while the disk is full");
                return;
            }
        },
        None => None,
    };
    let (closed, _closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let incoming = crate::network::connection::incoming(
        listener,
        Acceptor {
            tls,
            policy: config.role_policy(),
            limits: ConnectionLimits {
                max_connections: config.max_connections as usize,
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: config.idle_timeout,
            },
            closed,
        },
    );
    let router = tonic::service::Routes::default()
        .into_axum_router()
        .fallback_service(RefuseAll);
    let served = tonic::transport::Server::builder()
        .add_routes(router.into())
        .serve_with_incoming_shutdown(incoming, done)
        .await;
    if let Err(e) = served {
        tracing::warn!(cause = %e, "answering while the disk is full failed");
    }
}

/// A gRPC service that answers every call `UNAVAILABLE`, reason `disk-full`.
#[derive(Clone, Copy)]
struct RefuseAll;

impl<B> tower_service::Service<http::Request<B>> for RefuseAll {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<B>) -> Self::Future {
        let mut status = tonic::Status::unavailable(
            "this node's disk is full: it serves nothing until there is room again; use another \
             node",
        );
        status.metadata_mut().insert(
            REASON_METADATA,
            tonic::metadata::MetadataValue::from_static(REASON_DISK_FULL),
        );
        std::future::ready(Ok(status.into_http()))
    }
}
