//! The state machine: openraft's glue around the revisioned key space.
//!
//! Layout: trees `revs` and `key_index` hold every version of every key (see
//! `keyspace`); trees `leases` and `lease_keys` hold the lease table and
//! which keys each lease carries (see `leases`); tree `sm_meta` holds
//! `applied` (the last applied log id, the compaction point and the live
//! key count, in one value), `membership`, the `clean` marker,
//! `store_format`, how far rows are removed for the compaction point,
//! `compact_done`, and `installing` while a snapshot is installed; tree
//! `snapshot` holds the snapshot of earlier versions until it is converted.
//!
//! Visibility: [`Revisions`] publishes the last applied revision after every
//! row of a batch is written, so readers at a revision see whole entries,
//! never wait for the apply, and the apply never waits for them.
//!
//! Durability rules:
//! - `apply`: each entry's rows (see `apply`; the batch's rows together in
//!   one sorted write, see `keyspace::RowBuffer`), `membership`, then
//!   `applied`, written with plain sled writes and not synced. No sled batch
//!   or transaction: those take sled's global write lock and force out its
//!   write buffer on every apply.
//! - After a crash sled recovers a prefix of those writes (it replays its
//!   own log up to the first buffer not fully written), so the trees hold
//!   every batch through `applied` and perhaps part of later ones. `open`
//!   then removes every row of a revision after `applied` and undoes later
//!   lease grants and revokes (history makes that possible: see `keyspace`
//!   and `leases`), and recounts the derived data (the key count, the lease
//!   key index); openraft replays the log from `applied`. No copy of the
//!   state is needed for that.
//! - A snapshot is the state at a pinned revision, not a copy (see
//!   `snapshot`). `build_snapshot` syncs the trees before it returns, so the
//!   state it covers is on disk before openraft purges the log up to it.
//! - `install_snapshot`: the received data is in a synced file in the data
//!   directory (see `snapshot`); it is checked, then `installing` (its meta
//!   and file name) is written and synced, then it replaces the key-value
//!   state, which is synced, then the marker goes, synced, and only then the
//!   file. A crash in between finds the marker at the next open, which loads
//!   the file again; no crash finds a marker naming a file already gone.
//! - Compaction's row removal (`compact_some`) runs beside the apply, in
//!   bounded steps; it only removes versions no read at or after the
//!   compaction point can see, so a step cut short by a crash is harmless and
//!   the next one redoes it. It starts after `applied` records the
//!   compaction point, so sled's prefix never holds a removal without it.
//!
//! Its parts: this module holds the store and what every part uses (the
//! write gate, the clean stop, publishing to readers, compaction's row
//! removal); `open` opens it, recovering from a crash or an install cut
//! short and converting earlier versions; `install` takes the state for a
//! snapshot and replaces the state with one; `raft` is openraft's
//! `RaftStateMachine` (the apply) and snapshot builder. Readers are in
//! `reader`, the revisions they use in `revisions`, the `sm_meta` values in
//! `sm_meta`.

mod install;
mod open;
mod raft;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use super::disk::Disk;
use super::reader::KvReader;
use super::size::StoreSize;
use super::sm_meta::read_alarms;
use super::sm_meta::read_applied;
use super::sm_meta::read_u64;
use super::sm_meta::write_u64;
use super::sm_meta::CLEAN;
use super::sm_meta::CLUSTER_ID;
use super::sm_meta::CLUSTER_VERSION;
use super::sm_meta::COMPACT_DONE;
use crate::store::disk::io_error;

/// The state machine: applies committed entries, builds and installs snapshots.
#[derive(Clone)]
pub struct StateMachineStore {
    reader: KvReader,
    /// Where earlier versions stored their snapshot.
    snapshot: sled::Tree,
    disk: Arc<Disk>,
    /// Held while the key-value state is written; `true` once the store is
    /// closed for a clean shutdown, after which nothing may write it (the
    /// `clean` marker would vouch for a half-written batch).
    closed: Arc<Mutex<bool>>,
    /// Counts changes to the lease table (grants, revokes, snapshot loads),
    /// for the leader's countdowns.
    lease_changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// What the store holds, counted (shared with the log).
    size: Arc<StoreSize>,
}

impl StateMachineStore {
    /// The database the state machine lives in (for its size on disk).
    pub fn database(&self) -> sled::Db {
        self.disk.db().clone()
    }

    /// Publishes the stored revision, compaction point, alarms, cluster id
    /// and cluster version to readers.
    pub(super) fn publish(&self) -> io::Result<()> {
        let alarms = read_alarms(&self.reader.meta)?;
        *self.reader.alarms.lock().unwrap_or_else(|e| e.into_inner()) = alarms;
        let cluster_id = read_u64(&self.reader.meta, CLUSTER_ID)?;
        self.reader
            .cluster_id
            .store(cluster_id, std::sync::atomic::Ordering::Release);
        let cluster_version = read_u64(&self.reader.meta, CLUSTER_VERSION)?;
        self.reader
            .cluster_version
            .store(cluster_version, std::sync::atomic::Ordering::Release);
        let applied = read_applied(&self.reader.meta)?;
        self.reader
            .revisions
            .publish(applied.revision(), applied.compacted, applied.keys);
        Ok(())
    }

    /// Permission to write the key-value state, refused once closed.
    pub(super) fn write_gate(&self) -> io::Result<MutexGuard<'_, bool>> {
        let gate = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        if *gate {
            return Err(io::Error::other(
                "the state machine is closed: the node is stopping",
            ));
        }
        Ok(gate)
    }

    /// On a graceful stop, after Raft has stopped: refuses every later write,
    /// then syncs the state with the marker that lets the next `open` trust it.
    pub fn close_cleanly(&self) -> io::Result<()> {
        let mut gate = self.write_gate()?;
        *gate = true;
        self.reader.meta.insert(CLEAN, &[]).map_err(io_error)?;
        self.disk.sync()
    }

    /// Sees a new value whenever the lease table changed.
    pub fn lease_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lease_changes.subscribe()
    }

    /// The database's durability handle.
    pub fn disk(&self) -> Arc<Disk> {
        self.disk.clone()
    }

    /// What the store holds, counted.
    pub fn size(&self) -> Arc<StoreSize> {
        self.size.clone()
    }

    /// A read handle on the applied state.
    pub fn reader(&self) -> KvReader {
        self.reader.clone()
    }

    /// One bounded step of removing the rows compactions dropped: at most
    /// `max_rows` rows looked at. Returns whether more remain. Runs beside
    /// the apply, never under its gate; stops once the store is closed.
    pub fn compact_some(&self, max_rows: usize) -> io::Result<bool> {
        if *self.closed.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok(false);
        }
        let meta = &self.reader.meta;
        let target = self.reader.revisions.removable_through();
        let done = read_u64(meta, COMPACT_DONE)?;
        if done >= target {
            return Ok(false);
        }
        let (done, removed) = self.reader.space.compact_step(done, target, max_rows)?;
        // Rows removed, `compact_done` not moved yet.
        crate::crash_point!("compaction-after-step");
        if done >= target {
            // Revoked leases no replay can reach any more; few rows.
            self.reader.leases.remove_revoked(done)?;
        }
        write_u64(meta, COMPACT_DONE, done)?;
        if removed > 0 {
            tracing::debug!(done, target, removed, "compaction step");
        }
        Ok(done < target)
    }
}
