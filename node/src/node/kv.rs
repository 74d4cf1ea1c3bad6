//! Client reads and writes on the node: the size limits a request must
//! respect, proposing a command through the log, and the read fence that
//! makes a read linearizable unless the caller asked for a stale one.
//!
//! Validation lives here rather than in the gRPC handlers so every way into
//! the node (client API, forwarded requests) enforces the same limits.

use std::sync::atomic::Ordering;

use openraft::ReadPolicy;

use super::RaftNode;
use crate::entry::Encoding;
use crate::entry::LogCommand;
use crate::error::NodeError;
use crate::types::Command;
use crate::types::CommandResult;
use crate::types::Stored;

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began: leadership is
    /// confirmed with a quorum and the state machine has caught up with the
    /// commit index (openraft's read index). Served only by the leader.
    Linearizable,
    /// Whatever this node has applied, however far behind the leader; the
    /// answer's applied index says how far.
    Stale,
}

/// The largest key and value the node accepts, so one request cannot bloat
/// the log, every replica and every snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    /// Largest accepted key (`--max-key-bytes`).
    pub max_key_bytes: usize,
    /// Largest accepted value (`--max-value-bytes`).
    pub max_value_bytes: usize,
    /// Most leases at once (`--max-leases`).
    pub max_leases: usize,
    /// What the store may hold before writes that add data are refused
    /// (`--quota-bytes`, see `quota`).
    pub quota_bytes: u64,
    /// Largest gRPC message, either way (see `NodeConfig::max_message_bytes`).
    pub max_message_bytes: usize,
}

/// One page of a scan: the keys found at one revision.
pub type ScanPage = crate::store::ScanAt;

/// A fingerprint of the whole applied state, to compare replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDigest {
    /// The last applied index the digest matches exactly.
    pub applied_index: Option<u64>,
    /// How many keys there are.
    pub key_count: u64,
    /// FNV-1a 64 over every key, value and their revisions (see `KvReader::digest`).
    pub digest: u64,
}

impl RaftNode {
    /// Rejects an empty or oversized key.
    pub fn check_key(&self, key: &[u8]) -> Result<(), NodeError> {
        if key.is_empty() {
            return Err(NodeError::BadRequest(
                "the key is empty; keys need at least one byte".into(),
            ));
        }
        if key.len() > self.limits.max_key_bytes {
            return Err(NodeError::BadRequest(format!(
                "the key is {} bytes; the limit is {} (--max-key-bytes)",
                key.len(),
                self.limits.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Rejects an oversized value.
    pub fn check_value(&self, value: &[u8]) -> Result<(), NodeError> {
        if value.len() > self.limits.max_value_bytes {
            return Err(NodeError::BadRequest(format!(
                "the value is {} bytes; the limit is {} (--max-value-bytes)",
                value.len(),
                self.limits.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Proposes `command`; returns once it is committed and applied, with its
    /// log index and result.
    pub async fn write(&self, command: Command) -> Result<(u64, CommandResult), NodeError> {
        use openraft::errors::ClientWriteError;
        use openraft::errors::RaftError;
        let metrics = crate::metrics::global();
        // The cluster version only rises: a command that passes this gate
        // stays one every member can apply.
        let cluster = match &command {
            // Proposed once every member runs `version`: they all read what
            // it needs, and the entry itself is the first of them.
            Command::ClusterVersion { version } => self.kv().cluster_version().max(*version),
            _ => self.kv().cluster_version(),
        };
        // Checked wherever it is proposed (a follower proposes nothing, but
        // may lead by the time it retries below): an entry in an encoding
        // the cluster cannot read must never reach the log.
        let needs = command.requires();
        if needs > cluster {
            return Err(NodeError::ClusterVersionTooOld { needs, cluster });
        }
        if self.names_itself_leader() {
            // Only the leader decides: a follower forwards, and what it
            // holds may differ from the leader's store.
            self.check_quota(&command)?;
        }
        let command = LogCommand::new(command, Encoding::for_cluster(cluster));
        let started = std::time::Instant::now();
        // openraft's futures are boxed where they are awaited here: they are
        // kilobytes large, and every future awaiting them, up to the one the
        // gRPC server boxes per call, would hold (and move) that much.
        let mut result = Box::pin(self.raft.client_write(command.clone())).await;
        if let Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) = &result {
            if self.names_itself_leader() {
                // openraft refuses writes on a leader that no quorum has
                // acknowledged within its tenure yet, as if it did not lead:
                // the case right after an election. Nothing was proposed.
                // Confirm leadership with a quorum, then write once more.
                self.read_fence(Consistency::Linearizable).await?;
                result = Box::pin(self.raft.client_write(command)).await;
            }
        }
        match result {
            Ok(response) => {
                metrics.proposals_committed.inc();
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.writes.committed.fetch_add(1, Ordering::Relaxed);
                self.writes.micros.fetch_add(micros, Ordering::Relaxed);
                // A refusal the state machine decided (at this revision, the
                // same on every node) is an error like any other here.
                match response.data {
                    CommandResult::LeaseNotFound { id } => Err(NodeError::LeaseNotFound { id }),
                    CommandResult::LeaseFull { id } => Err(NodeError::LeaseFull { id }),
                    result => Ok((response.log_id.index, result)),
                }
            }
            Err(e) => {
                metrics.proposals_failed.inc();
                self.writes.failed.fetch_add(1, Ordering::Relaxed);
                Err(self.write_error(e))
            }
        }
    }

    /// For a [`Consistency::Linearizable`] read: confirms leadership with a
    /// quorum and waits until the state machine has applied everything
    /// committed before this call (openraft's read index). A stale read needs
    /// nothing.
    pub async fn read_fence(&self, consistency: Consistency) -> Result<(), NodeError> {
        if consistency == Consistency::Stale {
            return Ok(());
        }
        // Boxed, as in `write`.
        match Box::pin(self.raft.ensure_linearizable(ReadPolicy::ReadIndex)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// The value of `key` (if any) at `revision` (`None`: the newest), and
    /// the revision read at.
    pub async fn get(
        &self,
        key: &[u8],
        consistency: Consistency,
        revision: Option<u64>,
    ) -> Result<(Option<Stored>, u64), NodeError> {
        self.check_key(key)?;
        self.read_fence(consistency).await?;
        Ok(self.kv.get(key, revision)?)
    }

    /// Up to `limit` pairs whose key starts with `prefix` and is greater than
    /// `start_after` (empty: from the first), in key order, at `revision`
    /// (`None`: the newest).
    pub async fn scan(
        &self,
        prefix: &[u8],
        start_after: &[u8],
        limit: usize,
        consistency: Consistency,
        revision: Option<u64>,
    ) -> Result<ScanPage, NodeError> {
        let max_key_bytes = self.limits.max_key_bytes;
        if prefix.len() > max_key_bytes || start_after.len() > max_key_bytes {
            return Err(NodeError::BadRequest(format!(
                "prefix and start_after may not be longer than a key ({max_key_bytes} bytes)"
            )));
        }
        self.read_fence(consistency).await?;
        Ok(self.kv.scan(prefix, start_after, limit, revision)?)
    }

    /// Drops the history before `revision` on every node, through the log;
    /// returns the compaction point after it and the entry's index.
    pub async fn compact(&self, revision: u64) -> Result<(u64, u64), NodeError> {
        self.require_leader()?;
        self.read_fence(Consistency::Linearizable).await?;
        let revisions = self.kv.revisions();
        let (current, compacted) = (revisions.current(), revisions.compacted());
        if revision > current {
            return Err(NodeError::FutureRevision {
                asked: revision,
                current,
            });
        }
        if revision <= compacted {
            return Err(NodeError::Compacted {
                asked: revision,
                compacted,
            });
        }
        match self.write(Command::Compact { revision }).await? {
            (index, CommandResult::Compacted { revision }) => Ok((revision, index)),
            (_, other) => Err(NodeError::unexpected(&other)),
        }
    }

    /// The compaction point: reads and watches reach back to it.
    pub fn compacted(&self) -> u64 {
        self.kv.revisions().compacted()
    }

    /// The revisions reads may use.
    pub fn revisions(&self) -> &std::sync::Arc<crate::store::Revisions> {
        self.kv.revisions()
    }

    /// Waits until everything committed so far is applied on the leader; returns that index.
    pub async fn barrier(&self) -> Result<u64, NodeError> {
        self.require_leader()?;
        self.read_fence(Consistency::Linearizable).await?;
        Ok(self.applied_index())
    }

    /// How many keys the applied state holds (walks the whole tree).
    pub fn key_count(&self) -> usize {
        self.kv.key_count()
    }

    /// A digest of the applied state that matches one applied index exactly,
    /// or `None` if writes kept landing during every attempt. Walks every
    /// key: call it off the async workers.
    pub fn state_digest(&self) -> std::io::Result<Option<StateDigest>> {
        // The keys are read at one revision; the lease table keeps no
        // history, so a grant or revoke during the walk makes the digest
        // match no revision: try again, and give up after a few attempts.
        const ATTEMPTS: usize = 20;
        for _ in 0..ATTEMPTS {
            let leases = self.kv.leases()?;
            let read = self.kv.digest();
            if self.kv.leases()? != leases {
                continue;
            }
            let (digest, key_count, revision) = match read {
                Ok(read) => read,
                Err(crate::store::ReadError::Io(e)) => return Err(e),
                // A compaction raced the walk.
                Err(_) => continue,
            };
            return Ok(Some(StateDigest {
                applied_index: (revision > 0).then_some(revision),
                key_count,
                digest,
            }));
        }
        Ok(None)
    }
}
