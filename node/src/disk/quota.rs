//! The size quota (`--quota-bytes`), etcd's `--quota-backend-bytes` made
//! ours: past it the cluster becomes read-and-delete-only until there is
//! room again.
//!
//! - The size is what the store holds as it counts it (see `store::size`):
//!   every version in the key space with its index entry, and the log. Not
//!   sled's files, which never shrink, so an alarm raised on them could
//!   never clear.
//! - The leader refuses a write that adds data (a put, a compare-and-swap,
//!   a transaction that writes, a lease grant) when it would take the
//!   leader's store past its quota, or while any member's NOSPACE alarm is
//!   raised: `RESOURCE_EXHAUSTED` with reason `no-space`. Deletes, lease
//!   revokes, compaction and membership changes go on, so room can be made.
//! - A voter past its quota, or a leader that refused a write for the
//!   quota, raises its alarm through the log ([`Command::Alarm`]), so every
//!   node agrees on it and refuses growth while it is raised.
//! - A node past its quota takes a snapshot at once, so its log can be
//!   purged. Its own alarm clears by itself once its store is below
//!   [`CLEAR_BELOW_PERCENT`] of its quota (after deletes and compaction);
//!   `raft-admin alarm disarm` clears alarms by hand, as `etcdctl alarm
//!   disarm` does (one still past its quota raises it again).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use raftkv_proto::pb;
use tokio::sync::watch;

use crate::error::NodeError;
use crate::node::RaftNode;
use crate::types::Command;
use crate::types::TxnOp;

/// etcd's default quota, and ours where the filesystem is large enough.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

/// The default is at most this fraction (1/N) of the data directory's
/// filesystem: sled's files hold several times the counted bytes (its log
/// structure and free space not yet reclaimed), and the disk is shared.
const FILESYSTEM_SHARE: u64 = 8;

/// A member's own alarm clears once its store is below this share of its
/// quota, so it does not flap at the boundary.
pub const CLEAR_BELOW_PERCENT: u64 = 90;

/// How long a follower waits for the leader to take its alarm.
const ALARM_TIMEOUT: Duration = Duration::from_secs(10);

/// How often each voter compares its store with its quota.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Shortest time between two snapshots a node over its quota takes.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(10);

/// The quota for a data directory in `dir` when none is given: 2 GiB, or
/// an eighth of the filesystem if that is less. `None` if the filesystem
/// cannot be asked.
pub fn default_quota(dir: &Path) -> Option<u64> {
    crate::disk::filesystem::space(dir)
        .map(|fs| (fs.total / FILESYSTEM_SHARE).min(DEFAULT_QUOTA_BYTES))
}

/// Roughly how many bytes `command` adds to the store (its log entry, its
/// rows and index entries), or `None` if it adds no data the quota must
/// stop: deletes, revokes, compaction, alarms.
pub fn growth(command: &Command) -> Option<u64> {
    // Per key written: the log entry and the row each carry the key and the
    // value, plus fixed parts (the key index is in memory).
    let put = |key: &[u8], value: &[u8]| 2 * (key.len() + value.len()) as u64 + 128;
    match command {
        Command::Put { key, value } | Command::PutLeased { key, value, .. } => {
            Some(put(key, value))
        }
        Command::CompareAndSwap { key, new_value, .. }
        | Command::CompareAndSwapLeased { key, new_value, .. } => Some(put(key, new_value)),
        Command::Txn {
            success, failure, ..
        } => {
            let puts: Vec<u64> = success
                .iter()
                .chain(failure)
                .filter_map(|op| match op {
                    TxnOp::Put { key, value } | TxnOp::PutLeased { key, value, .. } => {
                        Some(put(key, value))
                    }
                    TxnOp::Delete { .. } | TxnOp::Get { .. } => None,
                })
                .collect();
            (!puts.is_empty()).then(|| puts.iter().sum())
        }
        Command::Etcd(txn) => {
            let puts = txn.puts();
            (!puts.is_empty()).then(|| puts.iter().map(|(key, value)| put(key, value)).sum())
        }
        Command::LeaseGrant { .. } | Command::LeaseGrantId { .. } => Some(64),
        Command::Delete { .. }
        | Command::LeaseRevoke { .. }
        | Command::Compact { .. }
        | Command::Alarm { .. }
        | Command::ClusterId { .. }
        | Command::DeletePrefix { .. }
        | Command::ClusterVersion { .. } => None,
    }
}

impl RaftNode {
    /// On the leader, before proposing `command`: refuses it if it adds
    /// data while an alarm is raised, or past the quota (then raises this
    /// node's alarm, as etcd does).
    pub fn check_quota(&self, command: &Command) -> Result<(), NodeError> {
        let Some(adding) = growth(command) else {
            return Ok(());
        };
        let alarmed: Vec<u64> = self.kv().alarms().into_iter().collect();
        let used = self.kv().store_bytes();
        let quota = self.limits().quota_bytes;
        if !alarmed.is_empty() {
            return Err(NodeError::NoSpace {
                used,
                quota,
                alarmed,
            });
        }
        if used.saturating_add(adding) > quota {
            crate::metrics::global().quota_refusals.inc();
            self.quota_refused.notify_one();
            return Err(NodeError::NoSpace {
                used,
                quota,
                alarmed,
            });
        }
        Ok(())
    }

    /// Raises (`raise`) or clears the NOSPACE alarm of `member` (`None`
    /// with `raise` false: every member's) through the log: here if this
    /// node leads, else through the leader's admin API.
    pub async fn propose_alarm(&self, member: Option<u64>, raise: bool) -> Result<(), NodeError> {
        if self.names_itself_leader() {
            self.write(Command::Alarm { member, raise }).await?;
            return Ok(());
        }
        let Some((_, address)) = self.leader() else {
            return Err(self.not_leader());
        };
        let leader = self
            .client_of(&address, ALARM_TIMEOUT)
            .map_err(|e| NodeError::LeaderUnreachable(format!("cannot reach the leader: {e}")))?;
        let action = if raise {
            pb::alarm_request::Action::Raise
        } else {
            pb::alarm_request::Action::Disarm
        };
        leader
            .alarm(action, member.unwrap_or(0))
            .await
            .map_err(|e| NodeError::LeaderUnreachable(format!("the leader refused: {e}")))?;
        Ok(())
    }
}

/// Every [`CHECK_EVERY`], while this node is a voter: raises its alarm
/// when its store is past its quota (and takes a snapshot so its log can be
/// purged), clears it once the store is back below [`CLEAR_BELOW_PERCENT`].
/// Ends when `stopping` turns true.
pub async fn watch_usage(node: Arc<RaftNode>, mut stopping: watch::Receiver<bool>) {
    let metrics = crate::metrics::global();
    let mut last_snapshot: Option<tokio::time::Instant> = None;
    loop {
        let refused = tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            _ = tokio::time::sleep(CHECK_EVERY) => false,
            _ = node.quota_refused() => true,
        };
        let used = node.kv().store_bytes();
        let quota = node.limits().quota_bytes;
        let alarms = node.kv().alarms();
        metrics.store_bytes.set(used as i64);
        metrics.alarms_raised.set(alarms.len() as i64);
        if !node.is_voter() {
            continue;
        }
        let raised = alarms.contains(&node.id());
        if refused && !raised {
            tracing::warn!(
                used,
                quota,
                "a write was refused for the quota: raising the NOSPACE alarm"
            );
            if let Err(e) = node.propose_alarm(Some(node.id()), true).await {
                tracing::warn!(error = %e, "raising the NOSPACE alarm failed; retrying");
            }
            continue;
        }
        if used > quota {
            if last_snapshot.is_none_or(|at| at.elapsed() >= SNAPSHOT_EVERY) {
                last_snapshot = Some(tokio::time::Instant::now());
                tracing::warn!(
                    used,
                    quota,
                    "the store is past its quota: taking a snapshot so the log can be purged"
                );
                let _ = node.raft().trigger().snapshot().await;
            }
            if !raised {
                tracing::warn!(
                    used,
                    quota,
                    "the store is past its quota: raising the NOSPACE alarm"
                );
                if let Err(e) = node.propose_alarm(Some(node.id()), true).await {
                    tracing::warn!(error = %e, "raising the NOSPACE alarm failed; retrying");
                }
            }
        } else if raised && used < quota / 100 * CLEAR_BELOW_PERCENT {
            tracing::info!(
                used,
                quota,
                "the store is below its quota again: clearing its NOSPACE alarm"
            );
            if let Err(e) = node.propose_alarm(Some(node.id()), false).await {
                tracing::warn!(error = %e, "clearing the NOSPACE alarm failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writes_that_add_data_count_against_the_quota() {
        let put = Command::Put {
            key: b"k".to_vec(),
            value: vec![0; 100],
        };
        assert!(growth(&put).unwrap() > 200);
        for command in [
            Command::Delete { key: b"k".to_vec() },
            Command::LeaseRevoke {
                id: 1,
                expired: false,
            },
            Command::Compact { revision: 3 },
            Command::Alarm {
                member: None,
                raise: false,
            },
            Command::Txn {
                compares: Vec::new(),
                success: vec![TxnOp::Delete { key: b"k".to_vec() }],
                failure: vec![TxnOp::Get { key: b"k".to_vec() }],
            },
        ] {
            assert_eq!(growth(&command), None, "{command}");
        }
        let txn = Command::Txn {
            compares: Vec::new(),
            success: vec![TxnOp::Put {
                key: b"k".to_vec(),
                value: vec![0; 100],
            }],
            failure: Vec::new(),
        };
        assert_eq!(growth(&txn), growth(&put));
        assert!(growth(&Command::LeaseGrant { ttl_seconds: 5 }).is_some());
    }

    #[test]
    fn the_default_is_an_eighth_of_a_small_filesystem() {
        let dir = tempfile::TempDir::new().unwrap();
        let quota = default_quota(&dir.path().join("not-yet")).expect("statvfs");
        let fs = crate::disk::filesystem::space(dir.path()).unwrap().total;
        assert_eq!(quota, (fs / 8).min(DEFAULT_QUOTA_BYTES));
    }
}
