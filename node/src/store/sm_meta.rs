//! The state machine's bookkeeping in tree `sm_meta`: the names of its
//! values, and how `applied` (the last applied log id, the compaction point
//! and the live key count, in one value), the alarms, the membership and the
//! plain counters are read and written. Apart from the state machine so the
//! readers, the apply, the install and the recovery on open all read one
//! definition of each value.

use std::collections::BTreeSet;
use std::io;

use crate::codec::decode;
use crate::codec::encode;
use crate::store::disk::io_error;
use crate::types::LogId;
use crate::types::StoredMembership;

/// Written by earlier versions in place of `applied`; read once to convert.
pub(super) const LAST_APPLIED: &[u8] = b"last_applied";
const APPLIED: &[u8] = b"applied";
pub(super) const MEMBERSHIP: &[u8] = b"membership";
pub(super) const CLEAN: &[u8] = b"clean";
/// Present once every value in the old `kv` tree had a header.
pub(super) const KV_FORMAT: &[u8] = b"kv_format";
/// The layout of the key-value state; absent before revisions.
pub(super) const STORE_FORMAT: &[u8] = b"store_format";
/// What this version writes and reads: `applied` in one value, leases
/// marked at their revoke and stored with the revision that granted them
/// (see `leases`), trusted after a crash, the key index in memory only
/// (see `keyspace`).
pub(super) const REVISIONED: u8 = 5;
/// As [`REVISIONED`], with lease rows that do not name their grant's
/// revision (their id is it): read as they are.
pub(super) const REVISIONED_LEASE_BY_ID: u8 = 4;
/// As [`REVISIONED`], with the key index also kept in tree `key_index`,
/// which is dropped when read.
pub(super) const REVISIONED_DISK_INDEX: u8 = 3;
/// The first revisioned format: `last_applied`, `compacted` and
/// `key_count` apart, state rebuilt from a stored snapshot after a crash.
pub(super) const REVISIONED_V2: u8 = 2;
/// Written by earlier versions: the compaction point.
pub(super) const COMPACTED: &[u8] = b"compacted";
/// Rows are removed for compactions up to here.
pub(super) const COMPACT_DONE: &[u8] = b"compact_done";
/// Written by earlier versions: how many keys are live at `last_applied`.
pub(super) const KEY_COUNT: &[u8] = b"key_count";
/// An install under way: the snapshot's meta and the name of its data file
/// in the data directory, present from before the state is replaced until
/// the new state is synced.
pub(super) const INSTALLING: &[u8] = b"installing";
/// Members whose NOSPACE alarm is raised (an encoded `BTreeSet<u64>`).
pub(super) const ALARMS: &[u8] = b"alarms";
/// The cluster's id (u64 BE; absent or 0: not named yet), set once by the
/// first `Command::ClusterId` applied or by a snapshot that carries it.
pub(super) const CLUSTER_ID: &[u8] = b"cluster_id";
/// The cluster version (`Version::to_u64`, BE; absent: the first
/// release's), raised by `Command::ClusterVersion` or set by a snapshot.
pub(super) const CLUSTER_VERSION: &[u8] = b"cluster_version";
/// Written by earlier versions at a clean stop: the key space's counted
/// bytes (now counted when the store opens).
pub(super) const SPACE_BYTES: &[u8] = b"space_bytes";

/// The last applied log id with the compaction point and the live key
/// count at it: one meta value, so a crash keeps all three from one batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Applied {
    pub(super) log_id: Option<LogId>,
    pub(super) compacted: u64,
    pub(super) keys: u64,
}

impl Applied {
    pub(super) fn revision(&self) -> u64 {
        self.log_id.map_or(0, |l| l.index)
    }
}

/// `applied`: `compacted u64 (BE), keys u64 (BE)`, then the encoded log id.
/// Before it existed, the three were values of their own.
pub(super) fn read_applied(meta: &sled::Tree) -> io::Result<Applied> {
    if let Some(bytes) = meta.get(APPLIED).map_err(io_error)? {
        let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed applied state");
        let (compacted, rest) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
        let (keys, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
        return Ok(Applied {
            log_id: decode(rest)?,
            compacted: u64::from_be_bytes(*compacted),
            keys: u64::from_be_bytes(*keys),
        });
    }
    let log_id = match meta.get(LAST_APPLIED).map_err(io_error)? {
        Some(bytes) => decode(&bytes)?,
        None => None,
    };
    Ok(Applied {
        log_id,
        compacted: read_u64(meta, COMPACTED)?,
        keys: read_u64(meta, KEY_COUNT)?,
    })
}

pub(super) fn write_applied(meta: &sled::Tree, applied: &Applied) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(&applied.compacted.to_be_bytes());
    bytes.extend_from_slice(&applied.keys.to_be_bytes());
    bytes.extend_from_slice(&encode(&applied.log_id)?);
    meta.insert(APPLIED, bytes).map_err(io_error)?;
    Ok(())
}

pub(super) fn read_alarms(meta: &sled::Tree) -> io::Result<BTreeSet<u64>> {
    match meta.get(ALARMS).map_err(io_error)? {
        Some(bytes) => decode(&bytes),
        None => Ok(BTreeSet::new()),
    }
}

pub(super) fn read_membership(meta: &sled::Tree) -> io::Result<StoredMembership> {
    match meta.get(MEMBERSHIP).map_err(io_error)? {
        Some(bytes) => decode(&bytes),
        None => Ok(StoredMembership::default()),
    }
}

pub(super) fn read_u64(meta: &sled::Tree, key: &[u8]) -> io::Result<u64> {
    match meta.get(key).map_err(io_error)? {
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed state-machine metadata",
                )
            })?;
            Ok(u64::from_be_bytes(bytes))
        }
        None => Ok(0),
    }
}

pub(super) fn write_u64(meta: &sled::Tree, key: &[u8], value: u64) -> io::Result<()> {
    meta.insert(key, &value.to_be_bytes()).map_err(io_error)?;
    Ok(())
}
