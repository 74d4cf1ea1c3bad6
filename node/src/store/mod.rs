//! The node's persistent state, all in one sled database under `--data-dir`:
//! the Raft log and vote ([`LogStore`]) and the revisioned key-value state
//! machine with its snapshots ([`StateMachineStore`]).
//!
//! The state machine's parts, one job each: `keyspace` (every version of
//! every key, reads at a revision, compaction), `apply` (what each command
//! means), `snapshot` (a snapshot is the state at a pinned revision, not a
//! copy), `snapshot_data` (the format it streams in), `leases` (the lease
//! table), `revisions` (what readers may see, and the pins that keep it),
//! `reader` (reads of the applied state), `sm_meta` (the state machine's
//! bookkeeping values), and `state_machine` (openraft's glue: visibility,
//! durability, snapshots), and `size` (what the store holds, as the quota
//! counts it). Imports among them run one way: `snapshot` reads through
//! `reader` and `revisions` and never names `state_machine`, which uses
//! them all.

mod apply;
mod disk;
pub mod keyspace;
mod leases;
mod log_store;
mod reader;
mod recent;
pub mod record;
mod revisions;
mod size;
mod sm_meta;
mod snapshot;
mod snapshot_data;
mod state_machine;
mod vote;

use std::path::Path;
use std::sync::Arc;

pub use disk::Disk;
pub use keyspace::ReadError;
pub use leases::key_weight;
pub use leases::MAX_LEASE_KEY_BYTES;
pub use leases::MAX_TTL_SECONDS;
pub use leases::MIN_TTL_SECONDS;
pub use log_store::LogStore;
pub use reader::KvReader;
pub use reader::ScanAt;
pub use revisions::Revisions;
pub use size::StoreSize;
pub use snapshot::Incoming;
pub use snapshot::Received;
pub use snapshot::Snapshot;
pub use snapshot::SnapshotData;
pub use snapshot::StateAt;
pub use snapshot_data::check as check_snapshot_data;
pub use snapshot_data::check_from as check_snapshot_from;
pub use state_machine::StateMachineStore;

/// Why the data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// sled refused to open the database (corrupt, locked by another process, …).
    #[error("cannot open the database in {dir}")]
    Database { dir: String, source: sled::Error },
    /// Reading or recovering stored state failed.
    #[error("cannot read stored state in {dir}")]
    Io { dir: String, source: std::io::Error },
}

/// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
pub fn open(dir: &Path, cache_bytes: u64) -> Result<(LogStore, StateMachineStore), OpenError> {
    let io_err = |source| OpenError::Io {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io_err)?;
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_bytes)
        // Favour write throughput over disk space: the log is purged after
        // every snapshot anyway.
        .mode(sled::Mode::HighThroughput)
        // sled also flushes on its own every 500 ms; raftkv's durability does not
        // depend on it, every acknowledged write is synced by `Disk::sync`.
        .flush_every_ms(Some(500))
        .open()
        .map_err(|source| OpenError::Database {
            dir: dir.display().to_string(),
            source,
        })?;
    let disk = Arc::new(Disk::new(db.clone(), dir).map_err(io_err)?);
    let size = Arc::new(StoreSize::default());
    let log = LogStore::open(&db, disk.clone(), size.clone()).map_err(io_err)?;
    let sm = StateMachineStore::open(&db, disk, size).map_err(io_err)?;
    Ok((log, sm))
}
