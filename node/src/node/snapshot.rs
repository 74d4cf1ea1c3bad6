//! Building a snapshot on an operator's request, rather than waiting for the
//! snapshot policy: to purge the log now, or for a backup.

use std::time::Duration;

use super::errors::wait_error;
use super::Consistency;
use super::RaftNode;
use crate::error::NodeError;
use crate::store::Incoming;
use crate::store::Received;
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
        self.raft.trigger().snapshot().await?;
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

/// A consistent copy of the key-value state, for a backup: in a file in the
/// data directory (removed when this is dropped), so memory holds a chunk at
/// a time whatever the size of the data.
pub struct BackupSnapshot {
    pub meta: SnapshotMeta,
    /// The data, in the snapshot data format (see the state machine).
    pub data: Received,
    pub key_count: usize,
    /// SHA-256 of the data.
    pub sha256: [u8; 32],
}

impl RaftNode {
    /// On the leader: the state with every write committed before this
    /// call. Leadership is confirmed with a quorum and the state machine has
    /// applied everything committed (the read fence); the state machine's
    /// current snapshot is its state at the applied revision, so at least
    /// that recent. Encoded into a file on a blocking thread, without
    /// history (a restore starts its history at the backup's revision).
    pub async fn backup(&self) -> Result<BackupSnapshot, NodeError> {
        self.read_fence(Consistency::Linearizable).await?;
        let fence = self.applied_index();
        let snapshot = self
            .raft
            .get_snapshot()
            .await
            .map_err(|e| NodeError::Stopping(e.into_fatal()))?
            .ok_or(NodeError::NothingApplied)?;
        let covers = snapshot.meta.last_log_id.map_or(0, |l| l.index);
        if covers < fence {
            // Not expected: the current snapshot is the applied state.
            return Err(NodeError::Busy(format!(
                "the snapshot covers index {covers}, short of the read fence at {fence}; retry"
            )));
        }
        let dir = self.data_dir.clone();
        let staged = tokio::task::spawn_blocking(move || -> std::io::Result<Received> {
            match snapshot.snapshot {
                SnapshotData::Received(received) => Ok(received),
                SnapshotData::State(state) => {
                    let mut file = Incoming::create(&dir)?;
                    state.encode(BACKUP_CHUNK_BYTES, |chunk| file.write(&chunk))?;
                    file.finish()
                }
            }
        });
        let data = staged
            .await
            .map_err(NodeError::task)?
            .map_err(NodeError::Storage)?;
        // One more pass over the file: its checksum, and a check that it
        // decodes (the key count comes from it).
        let checked = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut hash = raftkv_files::backup::DataHash::default();
            let reader = Hashing {
                inner: data.reader()?,
                hash: &mut hash,
            };
            let key_count = crate::store::check_snapshot_from(reader, covers)?;
            Ok((data, key_count, hash.finish()))
        });
        let (data, key_count, sha256) = checked
            .await
            .map_err(NodeError::task)?
            .map_err(NodeError::Storage)?;
        Ok(BackupSnapshot {
            meta: snapshot.meta,
            data,
            key_count,
            sha256,
        })
    }
}

/// Bytes of a backup encoded before they are written out.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

/// A reader that hashes what passes through it.
struct Hashing<'a, R> {
    inner: R,
    hash: &'a mut raftkv_files::backup::DataHash,
}

impl<R: std::io::Read> std::io::Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}
