//! The lease calls on a node: grants and revokes go through the log; keep-alives
//! and time-to-live are answered by the leader from its countdowns (see
//! `crate::lease`), behind a read fence so the answer comes from the leader
//! of the moment.

use std::time::Duration;

use super::KeepAlive;
use super::Remaining;
use crate::error::NodeError;
use crate::node::Consistency;
use crate::node::RaftNode;
use crate::store::MAX_TTL_SECONDS;
use crate::store::MIN_TTL_SECONDS;
use crate::types::Command;
use crate::types::CommandResult;

/// Most keys a time-to-live answer lists.
const MAX_LISTED_KEYS: usize = 10_000;

/// A lease as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// What its countdown has left.
    pub remaining: Duration,
    /// The TTL it was granted with, in seconds.
    pub granted_ttl: u64,
    /// Its keys, when asked for (at most [`MAX_LISTED_KEYS`]).
    pub keys: Vec<Vec<u8>>,
    /// More keys are attached than listed.
    pub more_keys: bool,
}

fn not_found(id: u64) -> NodeError {
    NodeError::LeaseNotFound { id }
}

/// Lease ids are log indexes, never 0 (0 means "no lease" on a put).
fn check_id(id: u64) -> Result<(), NodeError> {
    if id == 0 {
        return Err(NodeError::BadRequest(
            "lease id 0 is not a lease (on a put it means none)".into(),
        ));
    }
    Ok(())
}

fn not_counting() -> NodeError {
    NodeError::LeasesStarting
}

impl RaftNode {
    /// Grants a lease of `ttl` seconds as lease `id`, or (`None`) under an
    /// id the cluster chooses: the grant's log index, unless a client's
    /// lease holds that (see `store::leases`). Returns the id.
    pub async fn lease_grant(&self, ttl: i64, id: Option<u64>) -> Result<u64, NodeError> {
        let ttl = u64::try_from(ttl)
            .ok()
            .filter(|ttl| (MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(ttl))
            .ok_or_else(|| {
                NodeError::BadRequest(format!(
                    "the TTL is {ttl} seconds; it must be {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"
                ))
            })?;
        self.require_leader()?;
        // One grant at a time, so concurrent grants cannot all pass the
        // count (grants are rare: a device's, at its start).
        let _one_at_a_time = self.lease_grants.lock().await;
        let count = self.kv().lease_count();
        if count >= self.limits().max_leases {
            return Err(NodeError::TooManyLeases {
                count,
                limit: self.limits().max_leases,
            });
        }
        let command = match id {
            Some(id) => Command::LeaseGrantId {
                id,
                ttl_seconds: ttl,
            },
            None => Command::LeaseGrant { ttl_seconds: ttl },
        };
        match self.write(command).await? {
            (index, CommandResult::LeaseGranted) => Ok(index),
            (_, CommandResult::LeaseGrantedAs { id }) => Ok(id),
            (_, CommandResult::LeaseExists { id }) => Err(NodeError::LeaseExists { id }),
            (_, other) => Err(NodeError::unexpected(&other)),
        }
    }

    /// Revokes lease `id` and deletes its keys; returns the revoke's log index
    /// and how many keys went.
    pub async fn lease_revoke(&self, id: u64) -> Result<(u64, u64), NodeError> {
        check_id(id)?;
        match self
            .write(Command::LeaseRevoke { id, expired: false })
            .await?
        {
            (
                index,
                CommandResult::LeaseRevoked {
                    found: true,
                    keys_deleted,
                },
            ) => Ok((index, keys_deleted)),
            (_, CommandResult::LeaseRevoked { found: false, .. }) => Err(not_found(id)),
            (_, other) => Err(NodeError::unexpected(&other)),
        }
    }

    /// Restarts lease `id`'s countdown; returns its TTL in seconds. Answers
    /// only once a quorum confirms this node still leads, so the renewal
    /// counts on the leader of the moment or on none (a later leader starts
    /// in full anyway).
    pub async fn lease_keep_alive(&self, id: u64) -> Result<u64, NodeError> {
        check_id(id)?;
        self.require_leader()?;
        let term = self.metrics().current_term;
        let version = self.countdowns.table_version();
        let granted = self.kv().lease_ttl(id)?;
        match self.countdowns.keep_alive(term, id, granted, version) {
            KeepAlive::Renewed(ttl) => {
                self.read_fence(Consistency::Linearizable).await?;
                Ok(ttl)
            }
            KeepAlive::NotFound => Err(not_found(id)),
            KeepAlive::NotCounting => Err(not_counting()),
        }
    }

    /// How long lease `id` has left, and its keys if `with_keys`.
    pub async fn lease_time_to_live(
        &self,
        id: u64,
        with_keys: bool,
    ) -> Result<LeaseStatus, NodeError> {
        check_id(id)?;
        self.require_leader()?;
        let term = self.metrics().current_term;
        self.read_fence(Consistency::Linearizable).await?;
        let granted_ttl = self.kv().lease_ttl(id)?.ok_or_else(|| not_found(id))?;
        let remaining = match self.countdowns.remaining(term, id, granted_ttl) {
            Remaining::Left(left) => left,
            Remaining::NotCounting => return Err(not_counting()),
        };
        let (keys, more_keys) = if with_keys {
            self.kv().lease_keys(id, MAX_LISTED_KEYS)?
        } else {
            (Vec::new(), false)
        };
        Ok(LeaseStatus {
            remaining,
            granted_ttl,
            keys,
            more_keys,
        })
    }

    /// Every lease and its TTL in seconds, as applied here.
    pub fn lease_table(&self) -> std::io::Result<Vec<(u64, u64)>> {
        self.kv().leases()
    }
}
