//! What a node tells Prometheus: every family, registered once. The HTTP
//! endpoint that serves them is `server::http`.
//!
//! Counters and histograms are bumped where things happen (the log store,
//! the state machine, the write path, the gRPC layer) through [`global`];
//! what openraft already tracks (term, leader, indexes, replication) is read
//! from its metrics when Prometheus scrapes.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

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

/// How a follower passed a call on to the leader: `stream` (on its
/// forwarding stream) or `call` (as a call of its own).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    pub way: String,
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
    pub forwarded_calls: Family<ForwardLabels, Counter>,
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
            forwarded_calls: Family::default(),
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
        r.register(
            "forwarded_calls",
            "Calls this node passed on to the leader, by way: on its forwarding stream, or as calls of their own",
            metrics.forwarded_calls.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Every family, in the Prometheus text format.
    pub fn encode(&self) -> String {
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
