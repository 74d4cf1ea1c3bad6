//! One running node: the Raft handle plus everything the gRPC services need,
//! and the operations they perform (writes, reads, membership, leadership).

use openraft::type_config::async_runtime::WatchReceiver as _;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;
use std::time::Instant;

use openraft::errors::ChangeMembershipError;
use openraft::errors::ClientWriteError;
use openraft::errors::ForwardToLeader;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::metrics::WaitError;
use openraft::ChangeMembers;
use openraft::Precondition;
use openraft::RaftMetrics;
use openraft::ReadPolicy;
use openraft::ServerState;
use raftkv_client::Channels;
use tokio::sync::watch;

use crate::error::NodeError;
use crate::store::KvReader;
use crate::store::StateMachineStore;
use crate::types::Command;
use crate::types::CommandResult;
use crate::types::Node;
use crate::types::NodeId;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// The Raft handle of a raftkv node: the type configuration over the sled
/// state machine. Defined here, above both `types` and `store`, so neither
/// has to name the other.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// How long a new voter may take to catch up before `add_voter` gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a membership change may wait for the previous one to be
/// committed, and keep retrying one that raced with another, before it gives
/// up with a retryable error.
const MEMBERSHIP_SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `trigger_snapshot` waits for the snapshot to be built.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

/// A running node, shared by every request handler.
pub struct RaftNode {
    /// This node's id.
    pub id: NodeId,
    /// The address peers and clients reach this node at.
    pub address: String,
    /// The Raft instance.
    pub raft: Raft,
    /// Reads of the applied key-value state.
    pub kv: KvReader,
    /// Cached channels to peers, for forwarding requests to the leader.
    pub peers: Channels,
    /// Largest accepted key.
    pub max_key_bytes: usize,
    /// Largest accepted value.
    pub max_value_bytes: usize,
    /// Set to `true` to stop the node (the admin `Shutdown` call).
    pub stop: watch::Sender<bool>,
    /// Held while this node proposes a membership change. openraft refuses a
    /// change while another is uncommitted, and its compare-and-set guard
    /// covers only the first of a voter change's two steps: changes that
    /// arrive together (nodes booting with `--join` at once) must queue here.
    pub membership_changes: tokio::sync::Mutex<()>,
}

/// One membership change planned against a configuration: what to change
/// and whether removed voters stay as learners; `None` when there is nothing to do.
type MembershipPlan = Option<(ChangeMembers<NodeId, Node>, bool)>;

/// Whether an existing member votes.
enum Suffrage {
    Voter,
    Learner,
}

impl RaftNode {
    /// The latest metrics.
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
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

    fn not_leader(&self) -> NodeError {
        NodeError::NotLeader {
            leader: self.leader().filter(|(id, _)| *id != self.id),
        }
    }

    fn forward_error(&self, forward: &ForwardToLeader<TypeConfig>) -> NodeError {
        let leader = match (&forward.leader_id, &forward.leader_node) {
            (Some(id), Some(node)) => Some((*id, node.addr.clone())),
            _ => self.leader(),
        };
        NodeError::NotLeader {
            leader: leader.filter(|(id, _)| *id != self.id),
        }
    }

    fn write_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self.forward_error(&f),
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(f)) => NodeError::OutcomeUnknown(format!(
                "leadership changed while the write was in flight; it may or may not have been applied ({f})"
            )),
            e @ RaftError::APIError(
                ClientWriteError::ChangeMembershipError(_) | ClientWriteError::PreconditionFailed(_),
            ) => {
                if Self::is_membership_race(&e) {
                    NodeError::Aborted(format!(
                        "the membership change raced with another ({e}); read the configuration again and retry"
                    ))
                } else {
                    NodeError::FailedPrecondition(format!("membership change refused: {e}"))
                }
            }
            RaftError::Fatal(e) => NodeError::Unavailable(format!("the node is stopping: {e}")),
        }
    }

    fn wait_error(what: &str, e: WaitError) -> NodeError {
        match e {
            WaitError::Timeout(after, _) => {
                NodeError::Timeout(format!("{what}: not done after {after:?}"))
            }
            WaitError::ShuttingDown => NodeError::Unavailable("the node is stopping".to_string()),
        }
    }

    /// Rejects an empty or oversized key.
    pub fn check_key(&self, key: &[u8]) -> Result<(), NodeError> {
        if key.is_empty() {
            return Err(NodeError::InvalidArgument(
                "the key is empty; keys need at least one byte".into(),
            ));
        }
        if key.len() > self.max_key_bytes {
            return Err(NodeError::InvalidArgument(format!(
                "the key is {} bytes; the limit is {} (--max-key-bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Rejects an oversized value.
    pub fn check_value(&self, value: &[u8]) -> Result<(), NodeError> {
        if value.len() > self.max_value_bytes {
            return Err(NodeError::InvalidArgument(format!(
                "the value is {} bytes; the limit is {} (--max-value-bytes)",
                value.len(),
                self.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Proposes `command`; returns once it is committed and applied, with its
    /// log index and result.
    pub async fn write(&self, command: Command) -> Result<(u64, CommandResult), NodeError> {
        match self.raft.client_write(command).await {
            Ok(response) => Ok((response.log_id.index, response.data)),
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Unless `stale`: confirms leadership with a quorum and waits until the
    /// state machine has applied everything committed before this call, so a
    /// following read is linearizable (openraft's read index).
    pub async fn read_fence(&self, stale: bool) -> Result<(), NodeError> {
        if stale {
            return Ok(());
        }
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(self.forward_error(&f))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Err(NodeError::Unavailable(format!(
                    "the leader cannot reach a quorum to confirm the read: {e}"
                )))
            }
            Err(RaftError::Fatal(e)) => {
                Err(NodeError::Unavailable(format!("the node is stopping: {e}")))
            }
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

    /// Fails unless this node is the leader.
    fn require_leader(&self) -> Result<(), NodeError> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.state == ServerState::Leader && metrics.current_leader == Some(self.id) {
            Ok(())
        } else {
            drop(metrics);
            Err(self.not_leader())
        }
    }

    /// Fails if `previous_index` is set and differs from the configuration's index.
    fn check_previous_index(
        membership: &StoredMembership,
        previous_index: u64,
    ) -> Result<(), NodeError> {
        let current = membership.log_id().as_ref().map_or(0, |id| id.index);
        if previous_index != 0 && previous_index != current {
            return Err(NodeError::FailedPrecondition(format!(
                "the configuration is at index {current}, not {previous_index} as the request expected; \
                 read it again (get_configuration) and retry"
            )));
        }
        Ok(())
    }

    /// Whether `e` is a membership change refused only because another
    /// change was in flight or had just landed: the same change may succeed
    /// once that one is committed.
    fn is_membership_race(e: &RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> bool {
        matches!(
            e,
            RaftError::APIError(
                ClientWriteError::PreconditionFailed(_)
                    | ClientWriteError::ChangeMembershipError(
                        ChangeMembershipError::InProgress(_)
                            | ChangeMembershipError::UncommittedLeaderLog(_)
                    )
            )
        )
    }

    /// The effective configuration, once it is committed (openraft refuses
    /// a change while the previous one is not).
    async fn settled_membership(&self, deadline: Instant) -> Result<StoredMembership, NodeError> {
        let metrics = self
            .raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(
                |m| m.membership_config.log_id() == m.committed_membership_config.log_id(),
                "the configuration is committed",
            )
            .await
            .map_err(|e| match e {
                WaitError::Timeout(after, _) => NodeError::Aborted(format!(
                    "the previous membership change is still not committed after {after:?}; retry"
                )),
                WaitError::ShuttingDown => {
                    NodeError::Unavailable("the node is stopping".to_string())
                }
            })?;
        Ok(metrics.membership_config.as_ref().clone())
    }

    /// Proposes the change `plan` makes to the current configuration, one
    /// change at a time on this node; returns the new configuration's log
    /// index (the current one if `plan` has nothing to do).
    ///
    /// `plan` is decided again on every attempt, against a committed
    /// configuration read under the lock, so a change that raced with another
    /// (refused by openraft's precondition or because one was in flight) is
    /// retried on the configuration that won, until `MEMBERSHIP_SETTLE_TIMEOUT`.
    /// A caller that pinned `previous_index` gets the refusal instead: it
    /// asked for a compare-and-set.
    async fn change_membership(
        &self,
        previous_index: u64,
        plan: impl Fn(&StoredMembership) -> Result<MembershipPlan, NodeError>,
    ) -> Result<u64, NodeError> {
        let _one_at_a_time = self.membership_changes.lock().await;
        let deadline = Instant::now() + MEMBERSHIP_SETTLE_TIMEOUT;
        loop {
            self.require_leader()?;
            let membership = self.settled_membership(deadline).await?;
            let current = membership.log_id().as_ref().map_or(0, |l| l.index);
            let finishing_joint = membership.membership().get_joint_config().len() > 1;
            let (change, retain) = if finishing_joint {
                // A voter change whose second step failed (leader change in
                // between) left a committed joint configuration: finish it
                // first, then plan on the result.
                tracing::warn!(
                    index = current,
                    "finishing a joint configuration left by an interrupted change"
                );
                (ChangeMembers::AddVoterIds(BTreeSet::new()), true)
            } else {
                Self::check_previous_index(&membership, previous_index)?;
                match plan(&membership)? {
                    Some(planned) => planned,
                    None => return Ok(current),
                }
            };
            let description = format!("{change:?}");
            let precondition = Precondition::LastMembershipLogId {
                last_membership_log_id: *membership.log_id(),
            };
            match self
                .raft
                .change_membership_if(change, retain, [precondition])
                .await
            {
                Ok(response) => {
                    let index = response.log_id.index;
                    tracing::info!(change = %description, index, "configuration changed");
                    if !finishing_joint {
                        return Ok(index);
                    }
                }
                Err(e)
                    if Self::is_membership_race(&e)
                        && previous_index == 0
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(change = %description, cause = %e, "membership change raced with another; retrying");
                    // The metrics that `settled_membership` reads may trail
                    // the log by a moment: give them that moment.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(self.write_error(e)),
            }
        }
    }

    fn last_voter(id: NodeId) -> NodeError {
        NodeError::FailedPrecondition(format!(
            "node {id} is the last voter; the cluster cannot work without one"
        ))
    }

    /// Makes the first configuration of a new cluster: `members`, or this node alone.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), NodeError> {
        let members = if members.is_empty() {
            BTreeMap::from([(self.id, self.address.clone())])
        } else {
            members
        };
        let mut nodes = BTreeMap::new();
        for (id, address) in members {
            Self::check_new_member(id, &address)?;
            nodes.insert(id, Node { addr: address });
        }
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?
        {
            return Err(NodeError::FailedPrecondition(
                "this node is already initialised (it is, or was, part of a cluster)".into(),
            ));
        }
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| NodeError::FailedPrecondition(e.to_string()))
    }

    fn check_new_member(id: NodeId, address: &str) -> Result<(), NodeError> {
        if id == 0 {
            return Err(NodeError::InvalidArgument(
                "node id 0 is reserved; use a positive id".into(),
            ));
        }
        raftkv_client::check_address(address)
            .map_err(|e| NodeError::InvalidArgument(e.to_string()))?;
        Ok(())
    }

    /// Checks that node `id` at `address` can join: a new id at an unused
    /// address, or the very same member again. Returns whether it is already
    /// a member (and a voter).
    fn check_join(
        membership: &StoredMembership,
        id: NodeId,
        address: &str,
    ) -> Result<Option<Suffrage>, NodeError> {
        Self::check_new_member(id, address)?;
        let config = membership.membership();
        for (other, node) in config.nodes() {
            if *other != id && node.addr == address {
                return Err(NodeError::FailedPrecondition(format!(
                    "address {address} already belongs to node {other}; remove that node first"
                )));
            }
        }
        match config.get_node(&id) {
            None => Ok(None),
            Some(node) if node.addr != address => Err(NodeError::FailedPrecondition(format!(
                "node {id} is already a member at {}; remove it first to change its address",
                node.addr
            ))),
            Some(_) if config.voter_ids().any(|v| v == id) => Ok(Some(Suffrage::Voter)),
            Some(_) => Ok(Some(Suffrage::Learner)),
        }
    }

    /// Adds node `id` at `address` as a learner (a no-op if it is a member already).
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: &str,
        previous_index: u64,
    ) -> Result<u64, NodeError> {
        self.require_leader()?;
        self.change_membership(previous_index, |membership| {
            Ok(Self::check_join(membership, id, address)?
                .is_none()
                .then(|| {
                    let node = Node {
                        addr: address.to_string(),
                    };
                    (ChangeMembers::AddNodes(BTreeMap::from([(id, node)])), true)
                }))
        })
        .await
    }

    /// Adds node `id` as a voter: as a learner first, then, once it has caught
    /// up with the log, promoted. A no-op for an existing voter.
    pub async fn add_voter(
        &self,
        id: NodeId,
        address: &str,
        previous_index: u64,
    ) -> Result<u64, NodeError> {
        self.require_leader()?;
        let membership = self.membership();
        Self::check_previous_index(&membership, previous_index)?;
        if let Some(Suffrage::Voter) = Self::check_join(&membership, id, address)? {
            return Ok(membership.log_id().as_ref().map_or(0, |l| l.index));
        }
        self.add_learner(id, address, previous_index).await?;
        // Caught up: the learner holds at least what the leader had when it
        // joined. Several learners catch up at once; only the changes queue.
        let target = self.metrics().last_log_index.unwrap_or(0);
        self.raft
            .wait(Some(CATCH_UP_TIMEOUT))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|matched| matched.index >= target)
                },
                format!("node {id} catches up to index {target}"),
            )
            .await
            .map_err(|e| {
                Self::wait_error(&format!("node {id} did not catch up with the log"), e)
            })?;
        // previous_index was checked when the learner was added; the
        // configuration may have moved since.
        self.change_membership(0, |membership| {
            let (is_voter, _) = Self::member_suffrage(membership, id)?;
            Ok((!is_voter).then(|| (ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)))
        })
        .await
    }

    /// Checks that `id` is a member; returns whether it is a voter and how many voters there are.
    fn member_suffrage(
        membership: &StoredMembership,
        id: NodeId,
    ) -> Result<(bool, usize), NodeError> {
        let config = membership.membership();
        if config.get_node(&id).is_none() {
            return Err(NodeError::NotFound(format!(
                "node {id} is not in the cluster (members: {})",
                config
                    .nodes()
                    .map(|(id, _)| id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let voters = config.voter_ids().count();
        Ok((config.voter_ids().any(|v| v == id), voters))
    }

    /// Turns voter `id` into a learner.
    pub async fn demote_voter(&self, id: NodeId, previous_index: u64) -> Result<u64, NodeError> {
        let plan = |membership: &StoredMembership| {
            let (is_voter, voters) = Self::member_suffrage(membership, id)?;
            if !is_voter {
                return Err(NodeError::FailedPrecondition(format!(
                    "node {id} is not a voter"
                )));
            }
            if voters == 1 {
                return Err(Self::last_voter(id));
            }
            Ok(Some((
                ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                true,
            )))
        };
        self.leave_office_if_changing_self(id, previous_index, &plan)
            .await?;
        self.change_membership(previous_index, plan).await
    }

    /// Removes node `id` from the cluster. Removing the leader (this node)
    /// transfers leadership first and answers `NotLeader` so the request is
    /// forwarded to the new leader.
    pub async fn remove_node(&self, id: NodeId, previous_index: u64) -> Result<u64, NodeError> {
        let plan = |membership: &StoredMembership| {
            let (is_voter, voters) = Self::member_suffrage(membership, id)?;
            if is_voter && voters == 1 {
                return Err(Self::last_voter(id));
            }
            Ok(Some(if is_voter {
                (ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            } else {
                (ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            }))
        };
        self.leave_office_if_changing_self(id, previous_index, &plan)
            .await?;
        self.change_membership(previous_index, plan).await
    }

    /// Before this leader demotes or removes itself: checks the request, hands
    /// leadership to another voter, and answers `NotLeader` so the change is
    /// made by a leader that stays. Does nothing for another node's change.
    async fn leave_office_if_changing_self(
        &self,
        id: NodeId,
        previous_index: u64,
        plan: &impl Fn(&StoredMembership) -> Result<MembershipPlan, NodeError>,
    ) -> Result<(), NodeError> {
        self.require_leader()?;
        if id != self.id {
            return Ok(());
        }
        let membership = self.membership();
        Self::check_previous_index(&membership, previous_index)?;
        plan(&membership)?;
        self.transfer_leader(0, Duration::from_secs(5)).await?;
        Err(self.not_leader())
    }

    /// The voter (other than this node) with the most replicated log.
    fn most_up_to_date_voter(&self, metrics: &RaftMetrics<TypeConfig>) -> Option<NodeId> {
        let replication = metrics.replication.as_ref()?;
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.id)
            .max_by_key(|id| replication.get(id).cloned().flatten().map(|l| l.index))
    }

    /// Hands leadership to `to` (0: the most up-to-date other voter) and waits
    /// until this node sees it in office. Returns the new leader and the time taken.
    pub async fn transfer_leader(
        &self,
        to: NodeId,
        timeout: Duration,
    ) -> Result<(NodeId, Duration), NodeError> {
        self.require_leader()?;
        let metrics = self.metrics();
        let to = match to {
            0 => self.most_up_to_date_voter(&metrics).ok_or_else(|| {
                NodeError::FailedPrecondition(
                    "there is no other voter to transfer leadership to".into(),
                )
            })?,
            id => id,
        };
        let (is_voter, _) = Self::member_suffrage(&metrics.membership_config, to)?;
        if !is_voter {
            return Err(NodeError::FailedPrecondition(format!(
                "node {to} is a learner; only a voter can become leader (add it with add_voter first)"
            )));
        }
        if to == self.id {
            return Ok((to, Duration::ZERO));
        }
        let started = Instant::now();
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| NodeError::Unavailable(format!("the node is stopping: {e}")))?;
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader == Some(to),
                format!("node {to} becomes leader"),
            )
            .await
            .map_err(|e| Self::wait_error(&format!("leadership did not move to node {to}"), e))?;
        let elapsed = started.elapsed();
        tracing::info!(to, ?elapsed, "leadership transferred");
        Ok((to, elapsed))
    }

    /// Builds a snapshot now; returns the index it covers.
    pub async fn trigger_snapshot(&self) -> Result<Option<u64>, NodeError> {
        let applied = self.metrics().last_applied.map(|l| l.index);
        let Some(applied) = applied else {
            return Ok(None);
        };
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?;
        let metrics = self
            .raft
            .wait(Some(SNAPSHOT_TIMEOUT))
            .metrics(
                |m| m.snapshot.as_ref().is_some_and(|s| s.index >= applied),
                format!("a snapshot covers index {applied}"),
            )
            .await
            .map_err(|e| Self::wait_error("building the snapshot", e))?;
        Ok(metrics.snapshot.map(|s| s.index))
    }

    /// Waits until everything committed so far is applied on the leader; returns that index.
    pub async fn barrier(&self) -> Result<u64, NodeError> {
        self.require_leader()?;
        self.read_fence(false).await?;
        Ok(self.applied_index())
    }

    /// Stops this node (the gRPC server, then Raft).
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }
}
