//! Handing leadership to another voter: for an operator's transfer, and for
//! a leader about to demote or remove itself (see `membership`).

use std::time::Duration;
use std::time::Instant;

use openraft::RaftMetrics;

use super::errors::wait_error;
use super::membership::member_suffrage;
use super::RaftNode;
use crate::error::NodeError;
use crate::types::NodeId;
use crate::types::TypeConfig;

impl RaftNode {
    /// The voter (other than this node) with the most replicated log: the
    /// one that can take over soonest.
    fn most_up_to_date_voter(&self, metrics: &RaftMetrics<TypeConfig>) -> Option<NodeId> {
        let replication = metrics.replication.as_ref()?;
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| *id != self.id)
            .max_by_key(|id| replication.get(id).cloned().flatten().map(|l| l.index))
    }

    /// Hands leadership to `to` (`None`: the most up-to-date other voter) and
    /// waits up to `timeout` until this node sees it in office. Returns the
    /// new leader and the time taken.
    pub async fn transfer_leader(
        &self,
        to: Option<NodeId>,
        timeout: Duration,
    ) -> Result<(NodeId, Duration), NodeError> {
        self.require_leader()?;
        let metrics = self.metrics();
        let to = match to {
            Some(id) => id,
            None => self.most_up_to_date_voter(&metrics).ok_or_else(|| {
                NodeError::MembershipRefused(
                    "there is no other voter to transfer leadership to".into(),
                )
            })?,
        };
        let (is_voter, _) = member_suffrage(&metrics.membership_config, to)?;
        if !is_voter {
            return Err(NodeError::MembershipRefused(format!(
                "node {to} is a learner; only a voter can become leader (add it with add_voter first)"
            )));
        }
        if to == self.id {
            return Ok((to, Duration::ZERO));
        }
        let started = Instant::now();
        self.raft.trigger().transfer_leader(to).await?;
        self.raft
            .wait(Some(timeout))
            .metrics(
                |m| m.current_leader == Some(to),
                format!("node {to} becomes leader"),
            )
            .await
            .map_err(|e| wait_error(&format!("leadership did not move to node {to}"), e))?;
        let elapsed = started.elapsed();
        tracing::info!(to, ?elapsed, "leadership transferred");
        Ok((to, elapsed))
    }
}
