//! What a node tells Prometheus, and the HTTP endpoint it tells it on
//! (`--metrics-listen`): `/metrics` in the Prometheus text format, `/healthz`
//! (the process answers) and `/readyz` (a member of a cluster with a known
//! leader, caught up to within [`READY_LAG`] entries).
//!
//! Counters and histograms are bumped where things happen (the log store,
//! the state machine, the write path, the gRPC layer) through [`global`];
//! what openraft already tracks (term, leader, indexes, replication) is read
//! from its metrics when Prometheus scrapes.

use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;
use tokio::net::TcpListener;

use crate::node::Raft;

/// A follower is ready while it has applied all but this many entries of
/// what the leader last said was committed.
pub const READY_LAG: u64 = 1_000;

/// Labels of one gRPC call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub service: String,
    pub method: String,
    pub code: String,
}

/// Labels of a call's latency (its code is known only at its end, and a
/// histogram per code would multiply the series).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub service: String,
    pub method: String,
}

/// Labels of a follower, on the leader.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

fn seconds_histogram() -> Histogram {
    // 50 µs … ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Every family a node exports, registered once.
pub struct Metrics {
    registry: Registry,
    pub is_leader: Gauge,
    pub has_leader: Gauge,
    pub term: Gauge,
    pub leader_changes: Counter,
    pub proposals_committed: Counter,
    pub proposals_failed: Counter,
    pub entries_applied: Counter,
    pub leases_expired: Counter,
    pub applied_index: Gauge,
    pub committed_index: Gauge,
    pub last_log_index: Gauge,
    pub replication_lag: Family<PeerLabels, Gauge>,
    pub log_append: Histogram,
    pub fsync: Histogram,
    pub snapshot_build: Histogram,
    pub snapshot_install: Histogram,
    pub snapshot_bytes: Gauge,
    pub store_bytes: Gauge,
    pub disk_full: Gauge,
    pub quota_bytes: Gauge,
    pub alarms_raised: Gauge,
    pub quota_refusals: Counter,
    pub compact_revision: Gauge,
    pub keys: Gauge,
    pub grpc_requests: Family<CallLabels, Counter>,
    pub grpc_latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    pub db_bytes: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("raftkv");
        let metrics = Metrics {
            registry: Registry::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            term: Gauge::default(),
            leader_changes: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            entries_applied: Counter::default(),
            leases_expired: Counter::default(),
            applied_index: Gauge::default(),
            committed_index: Gauge::default(),
            last_log_index: Gauge::default(),
            replication_lag: Family::default(),
            log_append: seconds_histogram(),
            fsync: seconds_histogram(),
            snapshot_build: seconds_histogram(),
            snapshot_install: seconds_histogram(),
            snapshot_bytes: Gauge::default(),
            store_bytes: Gauge::default(),
            disk_full: Gauge::default(),
            quota_bytes: Gauge::default(),
            alarms_raised: Gauge::default(),
            quota_refusals: Counter::default(),
            compact_revision: Gauge::default(),
            keys: Gauge::default(),
            grpc_requests: Family::default(),
            grpc_latency: Family::new_with_constructor(seconds_histogram),
            db_bytes: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "is_leader",
            "1 while this node leads",
            metrics.is_leader.clone(),
        );
        r.register(
            "has_leader",
            "1 while this node knows a leader",
            metrics.has_leader.clone(),
        );
        r.register("term", "The current Raft term", metrics.term.clone());
        r.register(
            "leader_changes",
            "Changes of the leader this node has seen",
            metrics.leader_changes.clone(),
        );
        r.register(
            "proposals_committed",
            "Writes proposed through this node that committed",
            metrics.proposals_committed.clone(),
        );
        r.register(
            "proposals_failed",
            "Writes proposed through this node that failed",
            metrics.proposals_failed.clone(),
        );
        r.register(
            "entries_applied",
            "Log entries applied to this node's state machine",
            metrics.entries_applied.clone(),
        );
        r.register(
            "leases_expired",
            "Leases this node expired as leader (their revoke committed)",
            metrics.leases_expired.clone(),
        );
        r.register(
            "applied_index",
            "The last log index applied here",
            metrics.applied_index.clone(),
        );
        r.register(
            "compact_revision",
            "The compaction point: reads and watches reach back to this revision",
            metrics.compact_revision.clone(),
        );
        r.register(
            "keys",
            "Live keys in the state machine",
            metrics.keys.clone(),
        );
        r.register(
            "committed_index",
            "The last log index this node knows is committed",
            metrics.committed_index.clone(),
        );
        r.register(
            "last_log_index",
            "The last log index in this node's log",
            metrics.last_log_index.clone(),
        );
        r.register(
            "replication_lag_entries",
            "On the leader: entries each follower is behind its log",
            metrics.replication_lag.clone(),
        );
        r.register_with_unit(
            "log_append",
            "Time to write appended entries to the log (before the fsync)",
            Unit::Seconds,
            metrics.log_append.clone(),
        );
        r.register_with_unit(
            "fsync",
            "Time to make written data durable (sled flush + fdatasync)",
            Unit::Seconds,
            metrics.fsync.clone(),
        );
        r.register_with_unit(
            "snapshot_build",
            "Time to store a snapshot this node built",
            Unit::Seconds,
            metrics.snapshot_build.clone(),
        );
        r.register_with_unit(
            "snapshot_install",
            "Time to install a snapshot received from the leader",
            Unit::Seconds,
            metrics.snapshot_install.clone(),
        );
        r.register_with_unit(
            "snapshot",
            "Size of the last snapshot sent to a follower or installed",
            Unit::Bytes,
            metrics.snapshot_bytes.clone(),
        );
        r.register_with_unit(
            "store",
            "What the store holds as it counts it (every version, its index, the log): \
             what --quota-bytes is held against",
            Unit::Bytes,
            metrics.store_bytes.clone(),
        );
        r.register(
            "disk_full",
            "1 while this node waits for room on a full disk (it serves nothing meanwhile)",
            metrics.disk_full.clone(),
        );
        r.register_with_unit(
            "quota",
            "The size quota (--quota-bytes)",
            Unit::Bytes,
            metrics.quota_bytes.clone(),
        );
        r.register(
            "alarms_nospace",
            "Members whose NOSPACE alarm is raised (writes that add data are refused while any is)",
            metrics.alarms_raised.clone(),
        );
        r.register(
            "quota_refusals",
            "Writes this node refused because they would pass its quota",
            metrics.quota_refusals.clone(),
        );
        r.register(
            "grpc_requests",
            "gRPC calls served, by service, method and status code",
            metrics.grpc_requests.clone(),
        );
        r.register_with_unit(
            "grpc_request",
            "gRPC call latency, until the response ends",
            Unit::Seconds,
            metrics.grpc_latency.clone(),
        );
        r.register_with_unit(
            "db",
            "Size of the database on disk",
            Unit::Bytes,
            metrics.db_bytes.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Reads what openraft and the store track into the gauges.
    fn refresh(&self, raft: &Raft, db: &sled::Db, revisions: &crate::store::Revisions) {
        self.compact_revision.set(revisions.compacted() as i64);
        self.keys.set(revisions.key_count() as i64);
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        let leading = metrics.state == ServerState::Leader;
        self.is_leader.set(i64::from(leading));
        self.has_leader
            .set(i64::from(metrics.current_leader.is_some()));
        self.term.set(metrics.current_term as i64);
        let index = |log_id: Option<crate::types::LogId>| log_id.map_or(0, |l| l.index) as i64;
        self.applied_index.set(index(metrics.last_applied));
        self.committed_index.set(index(metrics.local_committed));
        self.last_log_index
            .set(metrics.last_log_index.unwrap_or(0) as i64);
        self.replication_lag.clear();
        if let (true, Some(replication)) = (leading, &metrics.replication) {
            let last = metrics.last_log_index.unwrap_or(0);
            for (peer, matched) in replication {
                if *peer == metrics.id {
                    continue;
                }
                let matched = matched.as_ref().map_or(0, |l| l.index);
                self.replication_lag
                    .get_or_create(&PeerLabels {
                        peer: peer.to_string(),
                    })
                    .set(last.saturating_sub(matched) as i64);
            }
        }
        if let Ok(bytes) = db.size_on_disk() {
            self.db_bytes.set(bytes as i64);
        }
    }

    fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The node's metrics (one set per process).
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Records the time since `started` in `histogram`.
pub fn observe_since(histogram: &Histogram, started: std::time::Instant) {
    histogram.observe(started.elapsed().as_secs_f64());
}

/// Counts leader changes as openraft reports them, until Raft stops. The
/// first leader this node learns of counts too, even if it was known before
/// this task ran (a bootstrapped node may lead already).
pub async fn count_leader_changes(raft: Raft) {
    let mut watched = raft.metrics();
    let mut leader = None;
    loop {
        let now = watched.borrow_watched().current_leader;
        if now != leader {
            if now.is_some() {
                global().leader_changes.inc();
            }
            leader = now;
        }
        if watched.changed().await.is_err() {
            return;
        }
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
            metrics.refresh(&endpoint.raft, &endpoint.db, &endpoint.revisions);
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
