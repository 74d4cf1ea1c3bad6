//! What a snapshot's data is for raftkv: no copy. The key space keeps every
//! version back to the compaction point, so the state at a revision can be
//! read at any time while that revision is pinned. A snapshot this node
//! builds, or hands to openraft to send, is therefore the pinned state
//! itself ([`StateAt`]), encoded in the snapshot data format only as it is
//! streamed to a follower or into a backup, a chunk at a time. Only data
//! that arrives from elsewhere (a leader, a backup) is held as bytes
//! ([`SnapshotData::Received`]).

use std::io;

use super::keyspace::ReadError;
use super::leases::LeaseTable;
use super::snapshot_data::Encoder;
use super::state_machine::KvReader;
use super::state_machine::Pin;
use crate::types::TypeConfig;

/// A snapshot of raftkv's type configuration.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// A snapshot's data.
pub enum SnapshotData {
    /// This node's state at a pinned revision.
    State(StateAt),
    /// Data in the snapshot data format, from a leader or a backup.
    Received(Vec<u8>),
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotData::State(state) => write!(f, "State(revision {})", state.revision()),
            SnapshotData::Received(data) => write!(f, "Received({} bytes)", data.len()),
        }
    }
}

/// The state at one revision: its rows stay while this is held, and the
/// lease table (which keeps no history) is the one taken with it.
pub struct StateAt {
    reader: KvReader,
    pin: Pin,
    /// Snapshot installs begun before it was taken: one that replaces the
    /// state since makes every read of it fail.
    epoch: u64,
    leases: LeaseTable,
}

impl StateAt {
    pub(super) fn new(reader: KvReader, pin: Pin, epoch: u64, leases: LeaseTable) -> StateAt {
        StateAt {
            reader,
            pin,
            epoch,
            leases,
        }
    }

    /// Whether it is the state of the store `reader` reads.
    pub(super) fn is_of(&self, reader: &KvReader) -> bool {
        std::sync::Arc::ptr_eq(self.reader.revisions(), reader.revisions())
    }

    /// The revision (log index) it is the state at.
    pub fn revision(&self) -> u64 {
        self.pin.revision()
    }

    /// Bytes of its encoding (one pass over the keys, reading them).
    pub fn encoded_len(&self) -> Result<u64, ReadError> {
        let mut len = Encoder::start_len(&self.leases);
        self.reader.walk_at(self.revision(), self.epoch, |kv| {
            len += Encoder::record_len(kv);
            Ok(())
        })?;
        Ok(len)
    }

    /// Encodes it in the snapshot data format, handing `out` pieces of about
    /// `chunk_bytes` (at least one record each) in order. Blocks: call it
    /// off the async threads.
    pub fn encode(
        &self,
        chunk_bytes: usize,
        mut out: impl FnMut(Vec<u8>) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        let mut encoder = Encoder::new(&self.leases)?;
        self.reader.walk_at(self.revision(), self.epoch, |kv| {
            encoder.push(kv)?;
            if encoder.buffered() >= chunk_bytes {
                out(encoder.take())?;
            }
            Ok(())
        })?;
        let rest = encoder.take();
        if !rest.is_empty() {
            out(rest)?;
        }
        Ok(())
    }

    /// Encodes it into one buffer (for a backup). Blocks.
    pub fn to_vec(&self) -> Result<Vec<u8>, ReadError> {
        let mut data = Vec::new();
        self.encode(1 << 20, |chunk| {
            data.extend_from_slice(&chunk);
            Ok(())
        })?;
        Ok(data)
    }
}
