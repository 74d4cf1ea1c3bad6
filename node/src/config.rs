//! Node settings: command-line flags (each also read from a `RAFTKV_*`
//! environment variable) and their translation into openraft's `Config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use raftkv_client::parse_duration;

/// Settings of one raftkv node.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "raftkv-node",
    version,
    about = "One node of a raftkv cluster: a replicated key-value store on Raft.",
    long_about = "One node of a raftkv cluster: a replicated key-value store on Raft.\n\n\
        Start the first node with --bootstrap; add the others with `raft-admin add_voter` \
        or start them with --join. Every flag can also be set through the environment \
        variable shown next to it.",
    after_help = "Restoring a backup: `raftkv-node restore --from FILE --data-dir DIR --id N \
        --advertise ADDR` makes DIR from a backup written by `raft-admin backup` (see \
        `raftkv-node restore --help`)."
)]
pub struct NodeConfig {
    /// This node's id: a positive integer, unique in the cluster.
    #[arg(long, env = "RAFTKV_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,

    /// Address to listen on for clients, operators and peers (one gRPC port).
    /// Port 0 picks a free port.
    #[arg(long, env = "RAFTKV_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Address the other nodes and clients reach this node at (host:port).
    /// Defaults to the bound listen address; required when listening on 0.0.0.0.
    #[arg(long, env = "RAFTKV_ADVERTISE")]
    pub advertise: Option<String>,

    /// Directory holding this node's Raft log, vote, state machine and snapshots.
    #[arg(long, env = "RAFTKV_DATA_DIR", default_value = "raftkv-data")]
    pub data_dir: PathBuf,

    /// Start a new single-node cluster with this node as its first member.
    /// Harmless on a node that is already initialised (it is ignored).
    #[arg(long, env = "RAFTKV_BOOTSTRAP")]
    pub bootstrap: bool,

    /// Recover from a permanent loss of quorum: keep every entry in this
    /// node's log (committed, or possibly so) and restart it as the only
    /// voter of its cluster; add the others back afresh (empty data
    /// directories). Writes that reached only the lost nodes are gone. Use
    /// it on one survivor only (the most up to date), once, when the others
    /// are gone for good; what was kept is logged.
    #[arg(long, env = "RAFTKV_FORCE_NEW_CLUSTER", conflicts_with_all = ["bootstrap", "join"])]
    pub force_new_cluster: bool,

    /// Ask a running cluster (any of these comma-separated host:port addresses;
    /// this node's own address is skipped) to add this node as a voter, unless
    /// it is one already. Keeps asking until it is, or --join-timeout passes.
    #[arg(long, env = "RAFTKV_JOIN", value_delimiter = ',')]
    pub join: Vec<String>,

    /// How long --join keeps asking the cluster before the node gives up and
    /// exits with an error (e.g. 30s, 5m). Nodes booting together all join;
    /// one whose cluster is not up yet keeps asking until then.
    #[arg(long, env = "RAFTKV_JOIN_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub join_timeout: Duration,

    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, env = "RAFTKV_HEARTBEAT_MS", default_value_t = 50)]
    pub heartbeat_ms: u64,

    /// Lower bound of the randomised election timeout, in milliseconds.
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT_MIN_MS", default_value_t = 150)]
    pub election_timeout_min_ms: u64,

    /// Upper bound of the randomised election timeout, in milliseconds.
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT_MAX_MS", default_value_t = 300)]
    pub election_timeout_max_ms: u64,

    /// Build a snapshot after this many log entries since the last one.
    #[arg(long, env = "RAFTKV_SNAPSHOT_AFTER", default_value_t = 10_000)]
    pub snapshot_after: u64,

    /// Log entries to keep after a snapshot (lets lagging peers catch up
    /// from the log instead of a full snapshot).
    #[arg(long, env = "RAFTKV_SNAPSHOT_KEEP", default_value_t = 1_000)]
    pub snapshot_keep: u64,

    /// Log entries a leader keeps behind a snapshot at most for a follower
    /// that is catching up (installing a snapshot, or slow), so it can go on
    /// from the log instead of needing another snapshot.
    #[arg(long, env = "RAFTKV_CATCH_UP_ENTRIES", default_value_t = 100_000)]
    pub catch_up_entries: u64,

    /// Page cache of the on-disk database, in MiB.
    #[arg(long, env = "RAFTKV_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,

    /// Largest accepted key, in bytes.
    #[arg(long, env = "RAFTKV_MAX_KEY_BYTES", default_value_t = 4096)]
    pub max_key_bytes: usize,

    /// Largest accepted value, in bytes.
    #[arg(long, env = "RAFTKV_MAX_VALUE_BYTES", default_value_t = 1 << 20)]
    pub max_value_bytes: usize,

    /// Most leases that may exist at once; grants beyond are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "RAFTKV_MAX_LEASES", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_leases: u64,

    /// What the store may hold, in bytes, before writes that add data are
    /// refused (RESOURCE_EXHAUSTED, reason "no-space") and the NOSPACE alarm
    /// is raised: every version of every key with its index, and the Raft
    /// log, as the store counts them (metric raftkv_store_bytes), not the
    /// size of its files. Default (0): 2 GiB, or an eighth of the data
    /// directory's filesystem if that is less.
    #[arg(long, env = "RAFTKV_QUOTA_BYTES", default_value_t = 0)]
    pub quota_bytes: u64,

    /// This node's certificate (PEM), signed by --tls-ca. With --tls-key and
    /// --tls-ca the node serves only mutual TLS: every caller (client,
    /// operator or peer) must present a certificate signed by that CA, and
    /// the node presents this one when it dials its peers. It needs both the
    /// serverAuth and clientAuth usages and the advertised address among its
    /// subject alternative names. Reloaded on SIGHUP.
    #[arg(long, env = "RAFTKV_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "RAFTKV_TLS_KEY", value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,

    /// The CA certificate(s) (PEM) that callers' and peers' certificates must chain to.
    #[arg(long, env = "RAFTKV_TLS_CA", value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,

    /// With TLS: the certificate common name of the cluster's nodes. It may
    /// call raftkv.Raft, and everything else.
    #[arg(
        long,
        env = "RAFTKV_PEER_CN",
        default_value = "node",
        value_name = "NAME"
    )]
    pub peer_cn: String,

    /// With TLS: the certificate common names (comma-separated) of operators.
    /// They may call raftkv.Admin and raftkv.KV; any other certificate from
    /// the CA may call raftkv.KV only.
    #[arg(
        long,
        env = "RAFTKV_ADMIN_CN",
        default_value = "admin",
        value_delimiter = ',',
        value_name = "NAMES"
    )]
    pub admin_cn: Vec<String>,

    /// Connections served at once (handshakes included); more are closed
    /// as they arrive.
    #[arg(long, env = "RAFTKV_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Concurrent calls (HTTP/2 streams) on one connection.
    #[arg(long, env = "RAFTKV_MAX_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,

    /// Serve Prometheus metrics (/metrics), liveness (/healthz) and
    /// readiness (/readyz) over plain HTTP on this address (port 0 picks
    /// one). Off by default.
    #[arg(long, env = "RAFTKV_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Revisions of history kept on disk for reads at a past revision and
    /// for watchers that resume or start in the past: the leader compacts
    /// what is older, through the log (0: never by count).
    #[arg(long, env = "RAFTKV_HISTORY_REVISIONS", default_value_t = 10_000)]
    pub history_revisions: u64,

    /// Also keep history at least this old (e.g. 10m, 1h): compaction waits
    /// until a revision is both beyond --history-revisions and older than
    /// this. Off by default.
    #[arg(long, env = "RAFTKV_HISTORY_AGE", value_parser = parse_duration)]
    pub history_age: Option<Duration>,

    /// Close a connection that has had no call in flight for this long
    /// (e.g. 30s, 5m).
    #[arg(long, env = "RAFTKV_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

impl NodeConfig {
    /// The defaults for node `id` storing its data in `data_dir`, listening on
    /// `listen`: the same values the command line gives when nothing else is set.
    pub fn new(id: u64, listen: SocketAddr, data_dir: impl Into<PathBuf>) -> NodeConfig {
        let mut config = NodeConfig::parse_from(["raftkv-node", "--id", &id.to_string()]);
        config.listen = listen;
        config.data_dir = data_dir.into();
        config.advertise = None;
        config.bootstrap = false;
        config.join = Vec::new();
        config
    }

    /// The TLS files, if TLS is on (clap makes sure all three are given).
    pub fn tls_files(&self) -> Option<raftkv_client::TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(raftkv_client::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                server_name: None,
            }),
            _ => None,
        }
    }

    /// Which certificate names give which role.
    pub fn role_policy(&self) -> crate::security::RolePolicy {
        crate::security::RolePolicy {
            node: self.peer_cn.clone(),
            admins: self.admin_cn.clone(),
        }
    }

    /// Largest gRPC message accepted or sent: a full value plus its key and
    /// framing, or a batch of log entries.
    pub fn max_message_bytes(&self) -> usize {
        (self.max_value_bytes + self.max_key_bytes).max(4 << 20) + (64 << 10)
    }

    /// The size quota in bytes: `--quota-bytes`, or the default for the
    /// data directory's filesystem (see `quota`).
    pub fn quota(&self) -> u64 {
        if self.quota_bytes > 0 {
            return self.quota_bytes;
        }
        crate::disk::quota::default_quota(&self.data_dir)
            .unwrap_or(crate::disk::quota::DEFAULT_QUOTA_BYTES)
    }

    /// openraft's configuration for these settings, validated.
    pub fn raft_config(&self) -> Result<openraft::Config, openraft::ConfigError> {
        openraft::Config {
            cluster_name: "raftkv".to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_after.max(1)),
            // raftkv purges the log itself (see `log_purge`): openraft
            // would purge past what a catching-up follower needs.
            max_in_snapshot_log_to_keep: u64::MAX,
            // Keep AppendEntries batches well under the gRPC message limit.
            max_payload_entries: 256,
            // A partitioned node that cannot win does not bump its term and
            // disturb the leader when it comes back.
            enable_pre_vote: Some(true),
            // A restarted leader runs an election like everyone else. It
            // replicates entries before its own log has synced them, so it
            // may come back without the tail its followers hold; resuming
            // the same term, it would write other entries at those indexes.
            enable_leader_restore: Some(false),
            install_snapshot_timeout: 60_000,
            ..Default::default()
        }
        .validate()
    }
}

/// The address a node advertises: `--advertise`, or the bound address when
/// that is reachable by others.
pub fn advertise_address(config: &NodeConfig, bound: SocketAddr) -> Result<String, String> {
    match &config.advertise {
        Some(address) => Ok(address.clone()),
        None if bound.ip().is_unspecified() => Err(format!(
            "listening on {bound}, which peers cannot dial: set --advertise to this node's reachable host:port"
        )),
        None => Ok(bound.to_string()),
    }
}
