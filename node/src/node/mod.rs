//! One running node: the Raft handle plus what every request handler needs
//! from it, behind methods so handlers never reach into Raft themselves.
//!
//! A request meets the node in this order, one file per concept:
//! - here: the struct, its construction, and what it knows about itself and
//!   the leader (metrics, membership, leadership, stopping);
//! - `kv`: client reads and writes, with their input limits and read fence;
//! - `membership`: initialising a cluster and changing its members, one
//!   change at a time;
//! - `leadership`: handing leadership to another voter;
//! - `snapshot`: building a snapshot on request, and the copy a backup takes;
//! - `upgrade`: the cluster version, raised once every member runs a newer
//!   release;
//! - `errors`: how openraft's errors become a [`NodeError`].

mod errors;
mod kv;
mod leadership;
mod membership;
pub mod propose;
mod snapshot;
pub mod upgrade;

pub use kv::Consistency;
pub use kv::KvLimits;
pub use kv::ScanPage;
pub use kv::StateDigest;
pub use snapshot::BackupSnapshot;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::RaftMetrics;
use openraft::ServerState;
use raftkv_client::Channels;
use raftkv_client::Client;
use raftkv_client::ClientError;
use raftkv_client::ClientOptions;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::cluster::elections::LeaderChanges;
use crate::error::NodeError;
use crate::grpc::forwarding::Forwarder;
use crate::lease::Countdowns;
use crate::network::versions::PeerVersions;
use crate::store::KvReader;
use crate::store::StateMachineStore;
use crate::types::NodeId;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// The Raft handle of a raftkv node: the type configuration over the sled
/// state machine. Defined here, above both `types` and `store`, so neither
/// has to name the other.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// A running node, shared by every request handler.
pub struct RaftNode {
    /// This node's id.
    id: NodeId,
    /// The address peers and clients reach this node at.
    address: String,
    /// The Raft instance.
    raft: Raft,
    /// Reads of the applied key-value state.
    kv: KvReader,
    /// Cached channels to peers, for forwarding requests to the leader and
    /// for `--join`.
    peers: Channels,
    /// The streams calls are forwarded to the leader on.
    forwarder: Forwarder,
    /// Largest accepted key and value.
    limits: KvLimits,
    /// Set to `true` to stop the node (the admin `Shutdown` call); the server
    /// watches it through [`RaftNode::stop_requests`].
    stop: watch::Sender<bool>,
    /// Held while this node proposes a membership change. openraft refuses a
    /// change while another is uncommitted, and its compare-and-set guard
    /// covers only the first of a voter change's two steps: changes that
    /// arrive together (nodes booting with `--join` at once) must queue here.
    membership_changes: tokio::sync::Mutex<()>,
    /// When each lease expires, while this node leads.
    pub(crate) countdowns: Arc<Countdowns>,
    /// Held while this node grants a lease, so `--max-leases` holds.
    pub(crate) lease_grants: tokio::sync::Mutex<()>,
    /// Where a backup being streamed is staged (the data directory).
    data_dir: std::path::PathBuf,
    /// Signalled when a write is refused for the quota, so the quota's
    /// watcher raises this node's alarm (see `quota`).
    pub(crate) quota_refused: tokio::sync::Notify,
    /// The leader changes this node saw (`cluster::elections`).
    leader_changes: Arc<LeaderChanges>,
    /// Writes proposed here, for the status.
    pub(crate) writes: WriteCounts,
    /// The release each peer named in its answers to Raft calls.
    peer_versions: Arc<PeerVersions>,
}

/// Writes proposed through a node since it started.
#[derive(Debug, Default)]
pub struct WriteCounts {
    pub committed: AtomicU64,
    pub failed: AtomicU64,
    /// The committed ones' summed time from proposal to answer.
    pub micros: AtomicU64,
}

impl RaftNode {
    /// A node `id`, reached at `address`, over a started `raft` whose state
    /// machine `kv` reads; `peers` is the channel cache shared with the Raft
    /// network; `countdowns` are the lease countdowns `lease::run` keeps;
    /// backups are staged in `data_dir`; `peer_versions` is filled by the
    /// Raft network.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        address: String,
        raft: Raft,
        kv: KvReader,
        peers: Channels,
        limits: KvLimits,
        countdowns: Arc<Countdowns>,
        data_dir: std::path::PathBuf,
        peer_versions: Arc<PeerVersions>,
    ) -> RaftNode {
        RaftNode {
            id,
            address,
            raft,
            kv,
            forwarder: Forwarder::new(
                peers.clone(),
                limits.max_message_bytes + crate::grpc::forwarding::FORWARD_OVERHEAD_BYTES,
            ),
            peers,
            limits,
            stop: watch::Sender::new(false),
            membership_changes: tokio::sync::Mutex::new(()),
            countdowns,
            lease_grants: tokio::sync::Mutex::new(()),
            data_dir,
            quota_refused: tokio::sync::Notify::new(),
            leader_changes: Arc::default(),
            writes: WriteCounts::default(),
            peer_versions,
        }
    }

    /// The leader changes this node saw, kept by `cluster::elections`.
    pub fn leader_changes(&self) -> &Arc<LeaderChanges> {
        &self.leader_changes
    }

    /// Read access to the applied state.
    pub fn kv(&self) -> &KvReader {
        &self.kv
    }

    /// The Raft instance.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Resolves when a write was refused for the quota since the last call.
    pub async fn quota_refused(&self) {
        self.quota_refused.notified().await
    }

    /// The largest key and value this node accepts.
    pub fn limits(&self) -> KvLimits {
        self.limits
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address peers and clients reach this node at.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The cached channel to the peer at `address` (connected lazily).
    pub fn channel_to(&self, address: &str) -> Result<Channel, ClientError> {
        self.peers.get(address)
    }

    /// The streams this node forwards calls to the leader on.
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    /// A client of the node at `address` over the peer channels (this
    /// node's TLS identity), each call given up after `timeout`: for the
    /// calls a node itself makes to another (joining, alarms).
    pub fn client_of(&self, address: &str, timeout: Duration) -> Result<Client, ClientError> {
        let options = ClientOptions::new(vec![address.to_string()], timeout);
        Client::with_channels(options, self.peers.clone())?.node(address)
    }

    /// The latest metrics.
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    /// The term this node is in (read in place: no copy of the metrics).
    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The effective membership as this node knows it.
    pub fn membership(&self) -> StoredMembership {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .as_ref()
            .clone()
    }

    /// Whether this node is a voter of the membership it knows.
    pub fn is_voter(&self) -> bool {
        self.membership()
            .membership()
            .voter_ids()
            .any(|id| id == self.id)
    }

    /// The current leader's id and address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let id = metrics.current_leader?;
        let address = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .addr
            .clone();
        Some((id, address))
    }

    /// Whether this node's metrics name it the current leader. Cheaper and
    /// looser than `require_leader`: enough to decide whether to
    /// serve a request here or forward it, since the operation itself checks again.
    pub fn names_itself_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    /// Fails with `NotLeader` (and the leader, if known) unless this node leads.
    pub(crate) fn require_leader(&self) -> Result<(), NodeError> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id) {
            Ok(())
        } else {
            drop(metrics);
            Err(self.not_leader())
        }
    }

    /// The index of the last applied entry (0 before anything was applied).
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow_watched()
            .last_applied
            .as_ref()
            .map_or(0, |id| id.index)
    }

    /// Stops this node (the gRPC server, then Raft).
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    /// Sees `true` once [`RaftNode::request_stop`] was called.
    pub fn stop_requests(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }
}
