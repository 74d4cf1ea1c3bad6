//! Building a snapshot on an operator's request, rather than waiting for the
//! snapshot policy: before a backup, or to purge the log now.

use std::time::Duration;

use super::errors::wait_error;
use super::RaftNode;
use crate::error::NodeError;

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
