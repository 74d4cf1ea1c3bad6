//! Who is in the cluster: making the first configuration, adding learners
//! and voters, demoting and removing members.
//!
//! Every change goes through [`RaftNode::change_membership`], which queues
//! changes on this node, finishes a joint configuration an interrupted change
//! left behind, and plans each change again after a race instead of failing
//! it: nodes that boot with `--join` at the same moment all get in.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use openraft::metrics::WaitError;
use openraft::ChangeMembers;
use openraft::Precondition;

use super::errors::is_membership_race;
use super::errors::wait_error;
use super::RaftNode;
use crate::error::NodeError;
use crate::types::Node;
use crate::types::NodeId;
use crate::types::StoredMembership;

/// How long a new voter may take to catch up before `add_voter` gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a membership change may wait for the previous one to be
/// committed, and keep retrying one that raced with another, before it gives
/// up with a retryable error.
const MEMBERSHIP_SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a leader that demotes or removes itself waits for another voter
/// to take over before the change is made there.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// One membership change planned against a configuration: what to change
/// and whether removed voters stay as learners; `None` when there is nothing to do.
type MembershipPlan = Option<(ChangeMembers<NodeId, Node>, bool)>;

/// Whether an existing member votes.
enum Suffrage {
    Voter,
    Learner,
}

/// The log index of `membership` (0 before the first configuration).
fn index_of(membership: &StoredMembership) -> u64 {
    membership.log_id().as_ref().map_or(0, |l| l.index)
}

/// Fails if the caller expected the configuration at `previous_index` and it
/// is elsewhere: the caller asked for a compare-and-set.
fn check_previous_index(
    membership: &StoredMembership,
    previous_index: Option<u64>,
) -> Result<(), NodeError> {
    let current = index_of(membership);
    match previous_index {
        Some(expected) if expected != current => Err(NodeError::MembershipRefused(format!(
            "the configuration is at index {current}, not {expected} as the request expected; \
             read it again (get_configuration) and retry"
        ))),
        _ => Ok(()),
    }
}

fn last_voter(id: NodeId) -> NodeError {
    NodeError::MembershipRefused(format!(
        "node {id} is the last voter; the cluster cannot work without one"
    ))
}

/// Rejects the reserved id 0 and an unusable address.
fn check_new_member(id: NodeId, address: &str) -> Result<(), NodeError> {
    if id == 0 {
        return Err(NodeError::BadRequest(
            "node id 0 is reserved; use a positive id".into(),
        ));
    }
    raftkv_client::check_address(address).map_err(|e| NodeError::BadRequest(e.to_string()))?;
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
    check_new_member(id, address)?;
    let config = membership.membership();
    for (other, node) in config.nodes() {
        if *other != id && node.addr == address {
            return Err(NodeError::MembershipRefused(format!(
                "address {address} already belongs to node {other}; remove that node first"
            )));
        }
    }
    match config.get_node(&id) {
        None => Ok(None),
        Some(node) if node.addr != address => Err(NodeError::MembershipRefused(format!(
            "node {id} is already a member at {}; remove it first to change its address",
            node.addr
        ))),
        Some(_) if config.voter_ids().any(|v| v == id) => Ok(Some(Suffrage::Voter)),
        Some(_) => Ok(Some(Suffrage::Learner)),
    }
}

/// Checks that `id` is a member; returns whether it is a voter and how many voters there are.
pub(super) fn member_suffrage(
    membership: &StoredMembership,
    id: NodeId,
) -> Result<(bool, usize), NodeError> {
    let config = membership.membership();
    if config.get_node(&id).is_none() {
        return Err(NodeError::UnknownMember(format!(
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

impl RaftNode {
    /// Makes the first configuration of a new cluster: `members`, or this node alone.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<(), NodeError> {
        let members = if members.is_empty() {
            BTreeMap::from([(self.id, self.address.clone())])
        } else {
            members
        };
        let mut nodes = BTreeMap::new();
        for (id, address) in members {
            check_new_member(id, &address)?;
            nodes.insert(id, Node { addr: address });
        }
        if self.raft.is_initialized().await? {
            return Err(NodeError::MembershipRefused(
                "this node is already initialised (it is, or was, part of a cluster)".into(),
            ));
        }
        self.raft
            .initialize(nodes)
            .await
            .map_err(|e| NodeError::MembershipRefused(e.to_string()))
    }

    /// Adds node `id` at `address` as a learner (a no-op if it is a member
    /// already). With `previous_index`, only if the configuration is still at
    /// that index.
    pub async fn add_learner(
        &self,
        id: NodeId,
        address: &str,
        previous_index: Option<u64>,
    ) -> Result<u64, NodeError> {
        self.require_leader()?;
        self.change_membership(previous_index, |membership| {
            Ok(check_join(membership, id, address)?.is_none().then(|| {
                let node = Node {
                    addr: address.to_string(),
                };
                (ChangeMembers::AddNodes(BTreeMap::from([(id, node)])), true)
            }))
        })
        .await
    }

    /// Adds a learner known only by its address (etcd's `MemberAdd`, which
    /// picks the id before the member starts): its id is one above every
    /// member's, chosen against the configuration the change is made on.
    /// Returns the id and the change's index.
    pub async fn add_member(&self, address: &str) -> Result<(NodeId, u64), NodeError> {
        self.require_leader()?;
        let chosen = AtomicU64::new(0);
        let index = self
            .change_membership(None, |membership| {
                let id = membership
                    .membership()
                    .nodes()
                    .map(|(id, _)| *id)
                    .max()
                    .unwrap_or(0)
                    .checked_add(1)
                    .ok_or_else(|| NodeError::MembershipRefused("no node id is left".into()))?;
                check_join(membership, id, address)?;
                chosen.store(id, Ordering::Relaxed);
                let node = Node {
                    addr: address.to_string(),
                };
                Ok(Some((
                    ChangeMembers::AddNodes(BTreeMap::from([(id, node)])),
                    true,
                )))
            })
            .await?;
        Ok((chosen.load(Ordering::Relaxed), index))
    }

    /// Gives member `id` a new `address` (etcd's `MemberUpdate`), keeping
    /// its suffrage. The node must already listen there: the leader's
    /// connections move to it on their next call. Returns the index of the
    /// change (of the configuration, if nothing changed).
    pub async fn update_address(&self, id: NodeId, address: &str) -> Result<u64, NodeError> {
        self.require_leader()?;
        self.change_membership(None, |membership| {
            member_suffrage(membership, id)?;
            check_new_member(id, address)?;
            let config = membership.membership();
            if let Some((other, _)) = config
                .nodes()
                .find(|(other, node)| **other != id && node.addr == address)
            {
                return Err(NodeError::MembershipRefused(format!(
                    "address {address} already belongs to node {other}"
                )));
            }
            if config
                .get_node(&id)
                .is_some_and(|node| node.addr == address)
            {
                return Ok(None);
            }
            let node = Node {
                addr: address.to_string(),
            };
            Ok(Some((
                ChangeMembers::SetNodes(BTreeMap::from([(id, node)])),
                true,
            )))
        })
        .await
    }

    /// Adds node `id` as a voter: as a learner first, then, once it has caught
    /// up with the log, promoted. A no-op for an existing voter. With
    /// `previous_index`, only if the configuration is still at that index.
    pub async fn add_voter(
        &self,
        id: NodeId,
        address: &str,
        previous_index: Option<u64>,
    ) -> Result<u64, NodeError> {
        self.require_leader()?;
        let membership = self.membership();
        check_previous_index(&membership, previous_index)?;
        let was = check_join(&membership, id, address)?;
        if let Some(Suffrage::Voter) = was {
            return Ok(index_of(&membership));
        }
        self.add_learner(id, address, previous_index).await?;
        // Caught up: the learner holds at least what the leader had when it
        // joined. Several learners catch up at once; only the changes queue.
        let target = self.metrics().last_log_index.unwrap_or(0);
        let waiter = self.raft.wait(Some(CATCH_UP_TIMEOUT));
        let caught_up = waiter.metrics(
            |m| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .is_some_and(|matched| matched.index >= target)
            },
            format!("node {id} catches up to index {target}"),
        );
        tokio::select! {
            caught_up = caught_up => {
                caught_up.map_err(|e| wait_error(&format!("node {id} did not catch up with the log"), e))?;
            }
            older = self.runs_older_than_the_cluster(id) => {
                // It would never catch up: a learner added for this is
                // taken out again, so the configuration is as it was.
                if was.is_none() {
                    if let Err(e) = self.remove_node(id, None).await {
                        tracing::warn!(node = id, cause = %e, "could not remove a learner too old for the log");
                    }
                }
                return Err(older);
            }
        }
        // previous_index was checked when the learner was added; the
        // configuration may have moved since.
        self.change_membership(None, |membership| {
            let (is_voter, _) = member_suffrage(membership, id)?;
            Ok((!is_voter).then(|| (ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)))
        })
        .await
    }

    /// Waits until learner `id` has named a release older than the cluster
    /// version, which cannot read the log; the refusal to answer with.
    async fn runs_older_than_the_cluster(&self, id: NodeId) -> NodeError {
        loop {
            let cluster = self.cluster_version();
            if let Some(runs) = self.peer_versions.last_named(id) {
                if runs < cluster {
                    return NodeError::MembershipRefused(format!(
                        "node {id} runs raftkv {runs}, older than the cluster version {cluster}: \
                         it cannot read the log, so it was not made a voter (nor kept as a \
                         learner, unless it was one before); start it with raftkv {cluster} \
                         or newer and add it again"
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Turns voter `id` into a learner. With `previous_index`, only if the
    /// configuration is still at that index.
    pub async fn demote_voter(
        &self,
        id: NodeId,
        previous_index: Option<u64>,
    ) -> Result<u64, NodeError> {
        let plan = |membership: &StoredMembership| {
            let (is_voter, voters) = member_suffrage(membership, id)?;
            if !is_voter {
                return Err(NodeError::MembershipRefused(format!(
                    "node {id} is not a voter"
                )));
            }
            if voters == 1 {
                return Err(last_voter(id));
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
    /// forwarded to the new leader. With `previous_index`, only if the
    /// configuration is still at that index.
    pub async fn remove_node(
        &self,
        id: NodeId,
        previous_index: Option<u64>,
    ) -> Result<u64, NodeError> {
        let plan = |membership: &StoredMembership| {
            let (is_voter, voters) = member_suffrage(membership, id)?;
            if is_voter && voters == 1 {
                return Err(last_voter(id));
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
        previous_index: Option<u64>,
        plan: &impl Fn(&StoredMembership) -> Result<MembershipPlan, NodeError>,
    ) -> Result<(), NodeError> {
        self.require_leader()?;
        if id != self.id {
            return Ok(());
        }
        let membership = self.membership();
        check_previous_index(&membership, previous_index)?;
        plan(&membership)?;
        self.transfer_leader(None, HANDOVER_TIMEOUT).await?;
        Err(self.not_leader())
    }

    /// Waits until the metrics' configuration is the one at `index` or a
    /// later one. The change is committed either way: past the deadline, or
    /// when the node stops, this returns without it.
    async fn membership_shown(&self, index: u64, deadline: Instant) {
        let shown = self
            .raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(
                |m| {
                    m.membership_config
                        .log_id()
                        .is_some_and(|log_id| log_id.index >= index)
                },
                "the configuration shows the change",
            )
            .await;
        if let Err(e) = shown {
            tracing::debug!(index, cause = %e, "metrics did not show a configuration change");
        }
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
                WaitError::Timeout(after, _) => NodeError::MembershipRace(format!(
                    "the previous membership change is still not committed after {after:?}; retry"
                )),
                WaitError::ShuttingDown => NodeError::Stopping(None),
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
        previous_index: Option<u64>,
        plan: impl Fn(&StoredMembership) -> Result<MembershipPlan, NodeError>,
    ) -> Result<u64, NodeError> {
        let _one_at_a_time = self.membership_changes.lock().await;
        let deadline = Instant::now() + MEMBERSHIP_SETTLE_TIMEOUT;
        loop {
            self.require_leader()?;
            let membership = self.settled_membership(deadline).await?;
            let current = index_of(&membership);
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
                check_previous_index(&membership, previous_index)?;
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
                    // openraft answers from the apply and publishes its
                    // metrics on its own schedule: wait for them, so that
                    // what this node says of its configuration next (to the
                    // caller's next call, or to the next change planned
                    // here) includes this change.
                    self.membership_shown(index, deadline).await;
                    if !finishing_joint {
                        return Ok(index);
                    }
                }
                Err(e)
                    if is_membership_race(&e)
                        && previous_index.is_none()
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
}
