//! The HTTP endpoint of `--metrics-listen`: `/metrics` in the Prometheus
//! text format, `/healthz` (the process answers) and `/readyz` (a member of
//! a cluster with a known leader, caught up to within [`READY_LAG`]
//! entries).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use tokio::net::TcpListener;

use crate::metrics::global;
use crate::metrics::Metrics;
use crate::metrics::PeerLabels;
use crate::metrics::READY_LAG;
use crate::node::Raft;

/// Reads what openraft and the store track into the gauges.
fn refresh(exported: &Metrics, raft: &Raft, db: &sled::Db, revisions: &crate::store::Revisions) {
    exported.compact_revision.set(revisions.compacted() as i64);
    exported.keys.set(revisions.key_count() as i64);
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    let leading = metrics.state == ServerState::Leader;
    exported.is_leader.set(i64::from(leading));
    exported
        .has_leader
        .set(i64::from(metrics.current_leader.is_some()));
    exported.term.set(metrics.current_term as i64);
    let index = |log_id: Option<crate::types::LogId>| log_id.map_or(0, |l| l.index) as i64;
    exported.applied_index.set(index(metrics.last_applied));
    exported.committed_index.set(index(metrics.local_committed));
    exported
        .last_log_index
        .set(metrics.last_log_index.unwrap_or(0) as i64);
    exported.replication_lag.clear();
    if let (true, Some(replication)) = (leading, &metrics.replication) {
        let last = metrics.last_log_index.unwrap_or(0);
        for (peer, matched) in replication {
            if *peer == metrics.id {
                continue;
            }
            let matched = matched.as_ref().map_or(0, |l| l.index);
            exported
                .replication_lag
                .get_or_create(&PeerLabels {
                    peer: peer.to_string(),
                })
                .set(last.saturating_sub(matched) as i64);
        }
    }
    if let Ok(bytes) = db.size_on_disk() {
        exported.db_bytes.set(bytes as i64);
    }
}

/// Whether this node is ready to serve: `Err` says why not.
fn readiness(raft: &Raft) -> Result<(), String> {
    let metrics = raft.metrics();
    let metrics = metrics.borrow_watched();
    if metrics.running_state.is_err() {
        return Err("raft has stopped".into());
    }
    let member = metrics
        .membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == metrics.id);
    if !member {
        return Err("not a member of a cluster".into());
    }
    if metrics.current_leader.is_none() {
        return Err("no known leader".into());
    }
    let applied = metrics.last_applied.map_or(0, |l| l.index);
    let committed = metrics.cluster_committed.map_or(0, |l| l.index);
    if applied + READY_LAG < committed {
        return Err(format!(
            "applied index {applied} is more than {READY_LAG} behind the committed {committed}"
        ));
    }
    Ok(())
}

/// What the HTTP endpoint reads.
#[derive(Clone)]
pub struct Endpoint {
    pub raft: Raft,
    pub db: sled::Db,
    /// The store's revisions, compaction point and key count.
    pub revisions: std::sync::Arc<crate::store::Revisions>,
}

fn answer(status: u16, content_type: &str, body: String) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| http::Response::new(Full::new(Bytes::new())))
}

fn route(
    endpoint: &Endpoint,
    request: &http::Request<hyper::body::Incoming>,
) -> http::Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return answer(405, TEXT, "only GET\n".into());
    }
    match request.uri().path() {
        "/metrics" => {
            let metrics = global();
            refresh(metrics, &endpoint.raft, &endpoint.db, &endpoint.revisions);
            answer(
                200,
                // prometheus-client writes OpenMetrics text (# UNIT, # EOF).
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            )
        }
        "/healthz" => answer(200, TEXT, "ok\n".into()),
        "/readyz" => match readiness(&endpoint.raft) {
            Ok(()) => answer(200, TEXT, "ready\n".into()),
            Err(why) => answer(503, TEXT, format!("not ready: {why}\n")),
        },
        _ => answer(
            404,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Serves plain HTTP/1.1 on `listener` until the task is dropped; each
/// connection is bounded in time, so a stalled scraper holds nothing.
pub async fn serve(listener: TcpListener, endpoint: Endpoint) {
    serve_routes(listener, move |request| route(&endpoint, request)).await
}

/// Serves `/healthz`, `/metrics` (as they stand, not refreshed) and what
/// `answer` gives for a path, while the node does not run (its disk is full).
pub async fn serve_with(
    listener: TcpListener,
    answer: impl Fn(&str) -> Option<(u16, String)> + Clone + Send + Sync + 'static,
) {
    const TEXT: &str = "text/plain; charset=utf-8";
    serve_routes(listener, move |request| {
        let path = request.uri().path();
        if let Some((status, body)) = answer(path) {
            return self::answer(status, TEXT, body);
        }
        match path {
            "/metrics" => self::answer(
                200,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                global().encode(),
            ),
            "/healthz" => self::answer(200, TEXT, "ok\n".into()),
            _ => self::answer(404, TEXT, "not found\n".into()),
        }
    })
    .await
}

/// Serves `route`'s answers on `listener` (see [`serve`]).
async fn serve_routes(
    listener: TcpListener,
    route: impl Fn(&http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>>
        + Clone
        + Send
        + Sync
        + 'static,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(cause = %e, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = route(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(Duration::from_secs(10), connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, cause = %e, "metrics connection failed"),
                Err(_) => tracing::debug!(%peer, "metrics connection timed out"),
            }
        });
    }
}
