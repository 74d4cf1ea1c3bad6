//! Building a snapshot on an operator's request, rather than waiting for the
//! snapshot policy: to purge the log now, or for a backup.

use std::time::Duration;

use super::errors::wait_error;
use super::Consistency;
use super::RaftNode;
use crate::error::NodeError;
use crate::store::SnapshotData;
use crate::types::SnapshotMeta;

/// How long `trigger_snapshot` waits for the snapshot to be built.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(60);

impl RaftNode {
    /// Builds a snapshot now; returns the index it covers (`None` when
    /// nothing was applied yet, so there is nothing to snapshot).
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
            .map_err(|e| wait_error("building the snapshot", e))?;
        Ok(metrics.snapshot.map(|s| s.index))
    }
}

/// A consistent copy of the key-value state, for a backup.
pub struct BackupSnapshot {
    pub meta: SnapshotMeta,
    /// The snapshot data format (see the state machine).
    pub data: Vec<u8>,
    pub key_count: usize,
}

impl RaftNode {
    /// On the leader: the state with every write committed before this
    /// call. Leadership is confirmed with a quorum and the state machine has
    /// applied everything committed (the read fence); the state machine's
    /// current snapshot is its state at the applied revision, so at least
    /// that recent. Encoded on a blocking thread.
    pub async fn backup(&self) -> Result<BackupSnapshot, NodeError> {
        self.read_fence(Consistency::Linearizable).await?;
        let fence = self.applied_index();
        let snapshot = self
            .raft
            .get_snapshot()
            .await
            .map_err(|e| NodeError::Unavailable(e.to_string()))?
            .ok_or_else(|| {
                NodeError::FailedPrecondition(
                    "nothing to back up yet: no entry has been applied".into(),
                )
            })?;
        let covers = snapshot.meta.last_log_id.map_or(0, |l| l.index);
        if covers < fence {
            // Not expected: the current snapshot is the applied state.
            return Err(NodeError::Unavailable(format!(
                "the snapshot covers index {covers}, short of the read fence at {fence}; retry"
            )));
        }
        let data = match snapshot.snapshot {
            SnapshotData::Received(received) => {
                tokio::task::spawn_blocking(move || std::fs::read(received.path()))
                    .await
                    .map_err(|e| NodeError::Unavailable(e.to_string()))?
                    .map_err(|e| NodeError::Unavailable(e.to_string()))?
            }
            SnapshotData::State(state) => tokio::task::spawn_blocking(move || state.to_vec())
                .await
                .map_err(|e| NodeError::Unavailable(e.to_string()))??,
        };
        let key_count = crate::store::check_snapshot_data(&data, covers)
            .map_err(|e| NodeError::Unavailable(format!("the snapshot does not decode: {e}")))?;
        Ok(BackupSnapshot {
            meta: snapshot.meta,
            data,
            key_count,
        })
    }
}
