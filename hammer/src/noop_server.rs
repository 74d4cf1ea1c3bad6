//! `hammer noop-server`: a gRPC server that answers etcd's `KV.Put` and
//! `KV.Range` at once and stores nothing. Loaded with `hammer --target etcd`
//! it measures the "gRPC ceiling": what hammer itself and one gRPC hop cost
//! on this machine, so a store's figures can be read against the most that
//! any server measured through hammer could reach here.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::etcd::pb;
use crate::etcd::pb::kv_server::Kv;
use crate::etcd::pb::kv_server::KvServer;

/// `hammer noop-server`: binds `listen`, prints the bound address (the one
/// line on stdout, for scripts), serves until SIGINT or SIGTERM.
pub(crate) async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    println!("{}", listener.local_addr()?);
    // Scripts read the address while the server runs: it must not wait in a buffer.
    std::io::stdout().flush()?;
    serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("warning: cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::signal;
        use tokio::signal::unix::SignalKind;
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(e) => {
                eprintln!("warning: cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// The header of every answer. etcd sends one with each reply; a header of
/// the same shape keeps the bytes on the wire close to what etcd sends.
const HEADER: pb::ResponseHeader = pb::ResponseHeader {
    cluster_id: 1,
    member_id: 1,
    revision: 1,
    raft_term: 1,
};

/// Answers every call with an empty success and keeps nothing.
#[derive(Debug, Default)]
struct NoopKv;

#[tonic::async_trait]
impl Kv for NoopKv {
    async fn range(
        &self,
        _request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        Ok(Response::new(pb::RangeResponse {
            header: Some(HEADER),
            ..Default::default()
        }))
    }

    async fn put(
        &self,
        _request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        Ok(Response::new(pb::PutResponse {
            header: Some(HEADER),
            prev_kv: None,
        }))
    }
}

/// Serves the no-op KV service on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    // As the node does: the server's own `tcp_nodelay` applies only to
    // listeners it binds, and without it small answers wait for delayed ACKs
    // (~40 ms), which would make the ceiling lower than the store it bounds.
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _peer)| {
            if let Err(e) = stream.set_nodelay(true) {
                eprintln!("warning: cannot disable Nagle's algorithm on a connection: {e}");
            }
            stream
        });
        Some((accepted, listener))
    });
    tonic::transport::Server::builder()
        .add_service(KvServer::new(NoopKv))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
