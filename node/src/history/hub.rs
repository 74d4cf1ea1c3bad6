//! Watch: the changes the state machine applied, read from the store's
//! history on disk in revision order (see `store::keyspace`).
//!
//! A watcher that starts at revision `i` sees every change at `i` and after,
//! on any node, from that node's applied state, also after the node
//! restarted. History goes back to the compaction point: a watcher asking
//! for changes at or before it is told the oldest revision still served (it
//! rescans, then watches from there). A slow watcher reads from disk where
//! it is; it is ended only if a compaction passes it.

use std::sync::Arc;

use crate::store::KvReader;
use crate::store::ReadError;

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// The new value; `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The version's numbers (0 for a delete): when the key was created,
    /// its writes since, its lease.
    pub create_revision: u64,
    pub version: u64,
    pub lease: u64,
}

/// The changes one log entry made, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub changes: Vec<Change>,
}

impl Change {
    /// Roughly what it takes in memory, or in a message.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + 32
    }
}

/// The history watchers read, shared by every watcher of a node.
pub struct WatchHub {
    reader: KvReader,
}

/// Why a watch cannot go on from where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behind {
    /// Changes before `oldest` are compacted: rescan, then watch from the
    /// revision the scan reflects + 1 (at least `oldest`).
    Compacted { oldest: u64 },
    /// The history could not be read.
    Storage(String),
}

impl From<ReadError> for Behind {
    fn from(e: ReadError) -> Behind {
        match e {
            ReadError::Compacted { compacted, .. } => Behind::Compacted {
                oldest: compacted + 1,
            },
            ReadError::Future { .. } => Behind::Storage("read past the applied revision".into()),
            ReadError::Installing => Behind::Storage("installing a snapshot".into()),
            ReadError::Io(e) => Behind::Storage(e.to_string()),
        }
    }
}

impl WatchHub {
    pub fn new(reader: KvReader) -> Arc<WatchHub> {
        Arc::new(WatchHub { reader })
    }

    /// The start revision of a watch that asks for `start` (0: from the next
    /// change), or why it cannot start there.
    pub fn start_at(&self, start: u64) -> Result<u64, Behind> {
        let (oldest, applied) = self.bounds();
        match start {
            0 => Ok(applied + 1),
            start if start < oldest => Err(Behind::Compacted { oldest }),
            start => Ok(start),
        }
    }

    /// The entries with changes from `cursor` on, oldest first, about
    /// `max_bytes` of them (whole entries, at least one); the revision to
    /// read from next; and whether everything applied so far was read.
    pub fn read(&self, cursor: u64, max_bytes: usize) -> Result<(Vec<Applied>, u64, bool), Behind> {
        let (rows, next) = self.reader.history(cursor, max_bytes)?;
        let mut entries: Vec<Applied> = Vec::new();
        for (revision, row) in rows {
            let change = Change {
                key: row.key,
                value: row.value,
                create_revision: row.create_revision,
                version: row.version,
                lease: row.lease,
            };
            match entries.last_mut() {
                Some(last) if last.index == revision => last.changes.push(change),
                _ => entries.push(Applied {
                    index: revision,
                    changes: vec![change],
                }),
            }
        }
        let read_all = next > self.reader.revisions().current();
        Ok((entries, next, read_all))
    }

    /// Waits until something after `revision` is applied.
    pub async fn applied_beyond(&self, revision: u64) {
        self.reader.revisions().beyond(revision).await;
    }

    /// Read access to the applied state (a watch's previous values).
    pub fn reader(&self) -> &KvReader {
        &self.reader
    }

    /// The oldest start revision served, and the newest applied revision.
    pub fn bounds(&self) -> (u64, u64) {
        let revisions = self.reader.revisions();
        (revisions.compacted() + 1, revisions.current())
    }
}
