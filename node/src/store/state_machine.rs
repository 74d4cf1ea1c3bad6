//! The key-value state machine on sled, and its snapshots.
//!
//! Layout: tree `kv` holds the user's keys, each value behind a header (the
//! index that last wrote it, its lease: see `record`); trees `leases` and
//! `lease_keys` hold the lease table and which keys each lease carries (see
//! `leases`); tree `sm_meta` holds
//! `last_applied`, `membership`, the `clean` marker and `kv_format`; tree
//! `snapshot` holds the current snapshot (meta and data in one value, `current`).
//!
//! Durability rules:
//! - `apply`: the batch's key-value changes, then `membership`, then
//!   `last_applied`, written with plain sled inserts and not synced. No sled
//!   batch or transaction: those take sled's global write lock (after which
//!   every sled operation of the process goes through a real RwLock) and force
//!   out its write buffer on every apply. So after a crash the trees may hold
//!   part of a batch, which replaying the log over them would not repair (a
//!   compare-and-swap replayed over a later state can decide differently).
//! - Hence the trees are trusted only after a clean shutdown: `close_cleanly`
//!   (graceful stop) syncs them with the `clean` marker; `open` removes the
//!   marker, and without it rebuilds the state from the stored snapshot (or
//!   from nothing), while openraft replays the synced Raft log from there. The
//!   log holds everything after the snapshot: openraft purges only up to it.
//! - `build_snapshot` / `install_snapshot`: the snapshot is stored in one sled
//!   insert (meta and data together, so a crash keeps the old one or the new
//!   one) and synced before they return, so before openraft purges the log it
//!   covers. An install stores the snapshot, then replaces the key-value state;
//!   a crash in between rebuilds from that snapshot at the next open.
//!
//! Snapshot data format: [`SNAPSHOT_V3`], the lease table (see
//! `leases::encode_table`), then a sequence of records `u32 key length (BE),
//! key, u32 value length (BE), stored value` (header included), in key order.
//! Every key's lease is 0 or one in the table. [`SNAPSHOT_V2`] data is the
//! same without the table (written before leases). Data without a marker is
//! the first format, whose values had no header: loading it gives every key
//! [`BEFORE_HEADERS`] as the index that last wrote it.

use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use futures::Stream;
use futures::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;

use super::leases;
use super::leases::LeaseTrees;
use super::record;
use super::Disk;
use crate::codec::decode;
use crate::codec::encode;
use crate::types::Check;
use crate::types::Command;
use crate::types::CommandResult;
use crate::types::Compare;
use crate::types::LogId;
use crate::types::Snapshot;
use crate::types::SnapshotMeta;
use crate::types::Stored;
use crate::types::StoredMembership;
use crate::types::TxnOp;
use crate::types::TxnOpResult;
use crate::types::TypeConfig;
use crate::watch::Applied;
use crate::watch::Change;
use crate::watch::WatchHub;
use crate::watch::WatchLimits;

/// Records of snapshot data: (key, value) borrowed from it, in key order.
type Records<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Key-value pairs in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
const CLEAN: &[u8] = b"clean";
/// Present once every value in `kv` has a header (older versions stored bare values).
const KV_FORMAT: &[u8] = b"kv_format";
/// The first bytes of snapshot data whose values carry their header: a key
/// length no key can have, then the format number.
const SNAPSHOT_V2: &[u8] = &[0xff, 0xff, 0xff, 0xff, 2];
/// The marker of snapshot data with a lease table: what this version writes.
const SNAPSHOT_V3: &[u8] = &[0xff, 0xff, 0xff, 0xff, 3];
/// The "last written at" index of values stored before values had headers.
/// The same on every replica whatever it applied or crashed at, so a
/// transaction comparing it decides alike everywhere.
pub const BEFORE_HEADERS: u64 = 1;
/// The snapshot: `u32 meta length (BE)`, meta, data.
const SNAPSHOT: &[u8] = b"current";
/// Where earlier versions kept the snapshot's meta and data, read if `current` is absent.
const OLD_SNAPSHOT_META: &[u8] = b"meta";
const OLD_SNAPSHOT_DATA: &[u8] = b"data";

/// The state machine: applies committed entries, builds and installs snapshots.
#[derive(Clone)]
pub struct StateMachineStore {
    reader: KvReader,
    /// The current snapshot (`meta`, `data`).
    snapshot: sled::Tree,
    disk: Arc<Disk>,
    /// Serialises snapshot writes, so a slow build never replaces a newer install.
    snapshot_lock: Arc<Mutex<()>>,
    /// Held while the key-value state is written; `true` once the store is
    /// closed for a clean shutdown, after which nothing may write it (the
    /// `clean` marker would vouch for a half-written batch).
    closed: Arc<Mutex<bool>>,
    /// Where applied changes go for watchers.
    watch: Arc<WatchHub>,
    /// Counts changes to the lease table (grants, revokes, snapshot loads),
    /// for the leader's countdowns.
    lease_changes: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Read access to the applied key-value state, for the client API.
#[derive(Clone)]
pub struct KvReader {
    /// user key → value.
    kv: sled::Tree,
    /// `last_applied` and `membership`.
    meta: sled::Tree,
    /// The lease table and its keys.
    leases: LeaseTrees,
}

/// Snapshot data, decoded.
struct Decoded<'a> {
    /// The values carry their header (not the first format).
    with_headers: bool,
    leases: Vec<(u64, u64)>,
    pairs: Records<'a>,
}

impl KvReader {
    /// The value of `key`, if present.
    pub fn get(&self, key: &[u8]) -> io::Result<Option<Stored>> {
        read(&self.kv, key)
    }

    /// The TTL lease `id` was granted with, if it exists.
    pub fn lease_ttl(&self, id: u64) -> io::Result<Option<u64>> {
        self.leases.ttl(id)
    }

    /// Up to `limit` keys attached to lease `id`, and whether more are.
    pub fn lease_keys(&self, id: u64, limit: usize) -> io::Result<(Vec<Vec<u8>>, bool)> {
        self.leases.keys(id, limit)
    }

    /// Every lease and its TTL in seconds, in id order.
    pub fn leases(&self) -> io::Result<Vec<(u64, u64)>> {
        self.leases.all()
    }

    /// How many leases exist (walks the table).
    pub fn lease_count(&self) -> usize {
        self.leases.count()
    }

    /// Up to `limit` pairs whose key starts with `prefix` and is greater than
    /// `start_after`, in key order, and whether more would follow.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: &[u8],
        limit: usize,
    ) -> io::Result<(Pairs, bool)> {
        let mut pairs = Vec::new();
        for item in self.kv.scan_prefix(prefix) {
            let (key, value) = item.map_err(io::Error::other)?;
            if !start_after.is_empty() && key.as_ref() <= start_after {
                continue;
            }
            if pairs.len() == limit {
                return Ok((pairs, true));
            }
            pairs.push((key.to_vec(), record::decode(&value)?.value.to_vec()));
        }
        Ok((pairs, false))
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> io::Result<Option<LogId>> {
        read_last_applied(&self.meta)
    }

    /// The membership as of the last applied entry.
    pub fn membership(&self) -> io::Result<StoredMembership> {
        read_membership(&self.meta)
    }

    /// Number of keys (walks the whole tree).
    pub fn key_count(&self) -> usize {
        self.kv.len()
    }

    /// FNV-1a 64 over every key, value, modified index and lease (each
    /// preceded by its length; the indexes as 8 bytes big-endian), in key
    /// order, then over each lease's id and TTL (likewise, in id order), plus
    /// the key count: equal on two replicas iff their data is equal (up to
    /// hash collisions).
    pub fn digest(&self) -> io::Result<(u64, u64)> {
        use std::hash::Hasher;
        let mut hash = fnv::FnvHasher::default();
        let mut count = 0;
        let mut feed = |bytes: &[u8]| {
            hash.write(&(bytes.len() as u64).to_be_bytes());
            hash.write(bytes);
        };
        for item in self.kv.iter() {
            let (key, stored) = item.map_err(io::Error::other)?;
            let record = record::decode(&stored)?;
            feed(&key);
            feed(record.value);
            feed(&record.modified.to_be_bytes());
            feed(&record.lease.to_be_bytes());
            count += 1;
        }
        for (id, ttl) in self.leases.all()? {
            feed(&id.to_be_bytes());
            feed(&ttl.to_be_bytes());
        }
        Ok((hash.finish(), count))
    }
}

fn read_last_applied(meta: &sled::Tree) -> io::Result<Option<LogId>> {
    match meta.get(LAST_APPLIED).map_err(io::Error::other)? {
        Some(bytes) => decode(&bytes),
        None => Ok(None),
    }
}

fn read_membership(meta: &sled::Tree) -> io::Result<StoredMembership> {
    match meta.get(MEMBERSHIP).map_err(io::Error::other)? {
        Some(bytes) => decode(&bytes),
        None => Ok(StoredMembership::default()),
    }
}

/// What one applied command did besides its result.
#[derive(Default)]
struct Effects {
    /// The changes to keys, for watchers.
    changes: Vec<Change>,
    /// The lease table changed (a grant or a revoke).
    leases_changed: bool,
}

/// Applies one command to the key-value state and the lease table. Every
/// outcome is decided by the state and the command alone, so all replicas
/// apply a command alike, whatever it holds.
fn apply_command(
    state: &KvReader,
    command: Command,
    index: u64,
    effects: &mut Effects,
) -> io::Result<CommandResult> {
    let changes = &mut effects.changes;
    Ok(match command {
        Command::Put { key, value } => {
            put(state, key, value, 0, index, changes)?;
            CommandResult::Done
        }
        Command::PutLeased { key, value, lease } => {
            if let Some(refusal) = lease_refusal(state, lease, &[&key])? {
                return Ok(refusal);
            }
            put(state, key, value, lease, index, changes)?;
            CommandResult::Done
        }
        Command::Delete { key } => CommandResult::Deleted {
            existed: delete(state, key, changes)?,
        },
        Command::CompareAndSwap {
            key,
            expected,
            new_value,
        } => compare_and_swap(state, key, expected, new_value, 0, index, changes)?,
        Command::CompareAndSwapLeased {
            key,
            expected,
            new_value,
            lease,
        } => {
            if let Some(refusal) = lease_refusal(state, lease, &[&key])? {
                return Ok(refusal);
            }
            compare_and_swap(state, key, expected, new_value, lease, index, changes)?
        }
        Command::Txn {
            compares,
            success,
            failure,
        } => apply_txn(state, &compares, success, failure, index, changes)?,
        Command::LeaseGrant { ttl_seconds } => {
            // The leader refuses TTLs out of range; one that reached the log
            // anyway is clamped, so the table holds only what snapshots accept.
            let ttl = ttl_seconds.clamp(leases::MIN_TTL_SECONDS, leases::MAX_TTL_SECONDS);
            state.leases.grant(index, ttl)?;
            effects.leases_changed = true;
            CommandResult::LeaseGranted
        }
        Command::LeaseRevoke { id, expired } => {
            let Some(keys) = state.leases.remove(id)? else {
                return Ok(CommandResult::LeaseRevoked {
                    found: false,
                    keys_deleted: 0,
                });
            };
            effects.leases_changed = true;
            let mut keys_deleted = 0;
            for key in keys {
                // The index and the values' lease slots are written together;
                // the slot decides, so a key is never deleted for a lease it left.
                let attached = read(&state.kv, &key)?.is_some_and(|stored| stored.lease == id);
                if attached {
                    state.kv.remove(&key).map_err(io::Error::other)?;
                    keys_deleted += 1;
                    changes.push(Change { key, value: None });
                }
            }
            tracing::debug!(lease = id, expired, keys_deleted, "lease ended");
            CommandResult::LeaseRevoked {
                found: true,
                keys_deleted,
            }
        }
    })
}

/// Why attaching `keys` to `lease` may not happen, if it may not: the lease
/// does not exist, or the keys not yet attached to it would take it past
/// [`leases::MAX_LEASE_KEY_BYTES`] (counted as if each were new to it once).
fn lease_refusal(
    state: &KvReader,
    lease: u64,
    keys: &[&[u8]],
) -> io::Result<Option<CommandResult>> {
    let Some(info) = state.leases.info(lease)? else {
        return Ok(Some(CommandResult::LeaseNotFound { id: lease }));
    };
    let mut weight = 0u64;
    for key in keys {
        if read(&state.kv, key)?.is_none_or(|stored| stored.lease != lease) {
            weight = weight.saturating_add(leases::key_weight(key));
        }
    }
    Ok((!info.has_room_for(weight)).then_some(CommandResult::LeaseFull { id: lease }))
}

/// Sets `key` to `new_value` (attached to `lease`) if it holds `expected`.
fn compare_and_swap(
    state: &KvReader,
    key: Vec<u8>,
    expected: Option<Vec<u8>>,
    new_value: Vec<u8>,
    lease: u64,
    index: u64,
    changes: &mut Vec<Change>,
) -> io::Result<CommandResult> {
    let stored = state.kv.get(key.as_slice()).map_err(io::Error::other)?;
    let current = stored.as_deref().map(record::decode).transpose()?;
    Ok(if current.map(|r| r.value) == expected.as_deref() {
        put(state, key, new_value, lease, index, changes)?;
        CommandResult::Swapped {
            succeeded: true,
            current: None,
        }
    } else {
        CommandResult::Swapped {
            succeeded: false,
            current: current.map(|r| r.value.to_vec()),
        }
    })
}

/// Moves `key`'s entry in the lease index from lease `from` to lease `to`
/// (0: none).
fn reattach(state: &KvReader, key: &[u8], from: u64, to: u64) -> io::Result<()> {
    if from != to {
        if from != 0 {
            state.leases.detach(from, key)?;
        }
        if to != 0 {
            state.leases.attach(to, key)?;
        }
    }
    Ok(())
}

/// The lease slot of a stored value that was replaced or removed.
fn lease_of(old: Option<sled::IVec>) -> io::Result<u64> {
    Ok(match old {
        Some(stored) => record::decode(&stored)?.lease,
        None => 0,
    })
}

/// Writes `value` to `key` at `index`, attached to `lease` (0: none),
/// recording the change for watchers. The caller has checked that the lease exists.
fn put(
    state: &KvReader,
    key: Vec<u8>,
    value: Vec<u8>,
    lease: u64,
    index: u64,
    changes: &mut Vec<Change>,
) -> io::Result<()> {
    let old = state
        .kv
        .insert(key.as_slice(), record::encode(index, lease, &value))
        .map_err(io::Error::other)?;
    reattach(state, &key, lease_of(old)?, lease)?;
    changes.push(Change {
        key,
        value: Some(value),
    });
    Ok(())
}

/// Removes `key`; returns whether it existed. Deleting a missing key
/// changes nothing, so watchers see no event for it.
fn delete(state: &KvReader, key: Vec<u8>, changes: &mut Vec<Change>) -> io::Result<bool> {
    let Some(old) = state.kv.remove(key.as_slice()).map_err(io::Error::other)? else {
        return Ok(false);
    };
    reattach(state, &key, lease_of(Some(old))?, 0)?;
    changes.push(Change { key, value: None });
    Ok(true)
}

/// The value of `key`, if present.
fn read(kv: &sled::Tree, key: &[u8]) -> io::Result<Option<Stored>> {
    let Some(stored) = kv.get(key).map_err(io::Error::other)? else {
        return Ok(None);
    };
    let record = record::decode(&stored)?;
    Ok(Some(Stored {
        value: record.value.to_vec(),
        modified: record.modified,
        lease: record.lease,
    }))
}

/// Applies a transaction: every comparison against the state before it,
/// then one branch's operations in order, all at `index`.
fn apply_txn(
    state: &KvReader,
    compares: &[Compare],
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
    index: u64,
    changes: &mut Vec<Change>,
) -> io::Result<CommandResult> {
    let kv = &state.kv;
    let mut succeeded = true;
    for compare in compares {
        let stored = kv.get(&compare.key).map_err(io::Error::other)?;
        let current = stored.as_deref().map(record::decode).transpose()?;
        let holds = match (&compare.check, current) {
            (Check::Value(expected), current) => {
                current.is_some_and(|r| r.value == expected.as_slice())
            }
            (Check::Exists(exists), current) => current.is_some() == *exists,
            (Check::ModifiedIndex(0), current) => current.is_none(),
            (Check::ModifiedIndex(at), current) => current.is_some_and(|r| r.modified == *at),
        };
        if !holds {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { success } else { failure };
    // No operation of a transaction ends a lease, so checking them all first
    // keeps the transaction all or nothing (its deletes are not counted as
    // making room).
    let mut by_lease: std::collections::BTreeMap<u64, Vec<&[u8]>> = Default::default();
    for op in &ops {
        if let TxnOp::PutLeased { key, lease, .. } = op {
            by_lease.entry(*lease).or_default().push(key);
        }
    }
    for (lease, keys) in &by_lease {
        if let Some(refusal) = lease_refusal(state, *lease, keys)? {
            return Ok(refusal);
        }
    }
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            TxnOp::Put { key, value } => {
                put(state, key, value, 0, index, changes)?;
                TxnOpResult::Put
            }
            TxnOp::PutLeased { key, value, lease } => {
                put(state, key, value, lease, index, changes)?;
                TxnOpResult::Put
            }
            TxnOp::Delete { key } => TxnOpResult::Deleted {
                existed: delete(state, key, changes)?,
            },
            TxnOp::Get { key } => TxnOpResult::Got {
                found: read(kv, &key)?,
            },
        });
    }
    Ok(CommandResult::Txn { succeeded, results })
}

/// Encodes a lease table and key-value pairs in the snapshot data format.
fn encode_snapshot(
    leases: &[(u64, u64)],
    pairs: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
) -> io::Result<Vec<u8>> {
    let mut data = SNAPSHOT_V3.to_vec();
    leases::encode_table(leases, &mut data)?;
    for pair in pairs {
        let (key, value) = pair.map_err(io::Error::other)?;
        for part in [&key, &value] {
            let len = u32::try_from(part.len()).map_err(io::Error::other)?;
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(part);
        }
    }
    Ok(data)
}

/// Checks that `data` is snapshot data this state machine can load: whole
/// records with keys in strictly increasing order and well-formed stored
/// values whose leases are in the table, as [`encode_snapshot`] writes
/// them, for a snapshot up to log index `last_index`: no lease id after it
/// (ids are the indexes of grants, so a later grant could not take its id).
/// Returns the number of keys.
pub fn check_snapshot_data(data: &[u8], last_index: u64) -> io::Result<usize> {
    let decoded = decode_snapshot(data)?;
    if decoded
        .leases
        .last()
        .is_some_and(|(id, _)| *id > last_index)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot data holds a lease granted after the snapshot's last index",
        ));
    }
    Ok(decoded.pairs.len())
}

/// Decodes the snapshot data format, any version. Malformed data (a cut
/// record, keys out of order or repeated, a bad header, a bad lease table, a
/// key attached to a lease not in it) is `InvalidData`.
fn decode_snapshot(data: &[u8]) -> io::Result<Decoded<'_>> {
    let (leases, records) = if let Some(rest) = data.strip_prefix(SNAPSHOT_V3) {
        leases::decode_table(rest)?
    } else if let Some(records) = data.strip_prefix(SNAPSHOT_V2) {
        (Vec::new(), records)
    } else {
        return Ok(Decoded {
            with_headers: false,
            leases: Vec::new(),
            pairs: decode_records(data)?,
        });
    };
    let pairs = decode_records(records)?;
    let mut weights = vec![0u64; leases.len()];
    for (key, stored) in &pairs {
        let lease = record::decode(stored)?.lease;
        if lease == 0 {
            continue;
        }
        let Ok(at) = leases.binary_search_by_key(&lease, |(id, _)| *id) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data attaches a key to a lease it does not hold",
            ));
        };
        weights[at] = weights[at].saturating_add(leases::key_weight(key));
        if weights[at] > leases::MAX_LEASE_KEY_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data attaches more keys to a lease than one may carry",
            ));
        }
    }
    Ok(Decoded {
        with_headers: true,
        leases,
        pairs,
    })
}

/// The `key, value` records of snapshot data, checked for order.
fn decode_records(mut data: &[u8]) -> io::Result<Records<'_>> {
    fn take<'a>(data: &mut &'a [u8]) -> io::Result<&'a [u8]> {
        let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed snapshot data");
        let (len, rest) = data.split_first_chunk::<4>().ok_or_else(malformed)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(malformed());
        }
        let (part, rest) = rest.split_at(len);
        *data = rest;
        Ok(part)
    }
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    while !data.is_empty() {
        let key = take(&mut data)?;
        let value = take(&mut data)?;
        if pairs.last().is_some_and(|(previous, _)| *previous >= key) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot keys out of order",
            ));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

impl StateMachineStore {
    /// The database the state machine lives in (for its size on disk).
    pub fn database(&self) -> sled::Db {
        self.disk.db().clone()
    }

    /// Opens the state-machine trees of `db`. Unless the node last stopped
    /// cleanly, rebuilds the key-value state from the stored snapshot (see the
    /// module's durability rules).
    pub fn open(db: &sled::Db, disk: Arc<Disk>) -> io::Result<StateMachineStore> {
        let open = |name: &str| db.open_tree(name).map_err(io::Error::other);
        let store = StateMachineStore {
            reader: KvReader {
                kv: open("kv")?,
                meta: open("sm_meta")?,
                leases: LeaseTrees::open(db)?,
            },
            snapshot: open("snapshot")?,
            disk,
            snapshot_lock: Arc::new(Mutex::new(())),
            closed: Arc::new(Mutex::new(false)),
            watch: Arc::new(WatchHub::new(0, WatchLimits::DEFAULT)),
            lease_changes: Arc::new(tokio::sync::watch::Sender::new(0)),
        };
        let meta = &store.reader.meta;
        let clean = meta.remove(CLEAN).map_err(io::Error::other)?.is_some();
        // On disk before any value is rewritten: a crash during the rewrite
        // must make the next open rebuild, not convert values twice.
        store.disk.sync()?;
        if !clean {
            // Values loaded from a snapshot get their header on the way in.
            store.rebuild()?;
        } else if meta.get(KV_FORMAT).map_err(io::Error::other)?.is_none() {
            store.add_headers()?;
        }
        meta.insert(KV_FORMAT, &[1]).map_err(io::Error::other)?;
        store.disk.sync()?;
        // Watchers are served from the state as it is now.
        store
            .watch
            .reset(store.reader.last_applied()?.map_or(0, |l| l.index));
        Ok(store)
    }

    /// Gives every bare value (written by a version before headers) a header,
    /// with [`BEFORE_HEADERS`] as the index that wrote it. A crash midway
    /// is repaired by the next open, which then rebuilds from the snapshot
    /// (the `clean` marker is gone).
    fn add_headers(&self) -> io::Result<()> {
        let kv = &self.reader.kv;
        let mut count = 0;
        for item in kv.iter() {
            let (key, value) = item.map_err(io::Error::other)?;
            kv.insert(key, record::encode(BEFORE_HEADERS, 0, &value))
                .map_err(io::Error::other)?;
            count += 1;
        }
        tracing::info!(
            keys = count,
            "stored values converted to the current format"
        );
        Ok(())
    }

    /// After a crash: the state of the stored snapshot, or the empty state.
    fn rebuild(&self) -> io::Result<()> {
        let snapshot = self.stored_snapshot()?;
        let applied = self.reader.last_applied()?;
        let snapshot_index = snapshot.as_ref().and_then(|(meta, _)| meta.last_log_id);
        if applied.is_some() || snapshot.is_some() {
            tracing::warn!(
                applied = ?applied,
                snapshot = ?snapshot_index,
                "the node did not stop cleanly: rebuilding the key-value state from the snapshot; the log replays the rest"
            );
        }
        let gate = self.write_gate()?;
        match snapshot {
            Some((meta, data)) => self.load_snapshot(&gate, &meta, &data),
            None => self.load_snapshot(&gate, &SnapshotMeta::default(), &[]),
        }
    }

    /// Permission to write the key-value state, refused once closed.
    fn write_gate(&self) -> io::Result<MutexGuard<'_, bool>> {
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
        self.reader
            .meta
            .insert(CLEAN, &[])
            .map_err(io::Error::other)?;
        self.disk.sync()
    }

    /// Sees a new value whenever the lease table changed.
    pub fn lease_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lease_changes.subscribe()
    }

    /// The window of applied changes watchers read.
    pub fn watch_hub(&self) -> Arc<WatchHub> {
        self.watch.clone()
    }

    /// A read handle on the applied key-value state.
    pub fn reader(&self) -> KvReader {
        self.reader.clone()
    }

    fn read_snapshot(&self) -> io::Result<Option<Snapshot>> {
        Ok(self.stored_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: data.to_vec(),
        }))
    }

    /// The stored snapshot's meta, and its data as sled holds it (not copied).
    fn stored_snapshot(&self) -> io::Result<Option<(SnapshotMeta, sled::IVec)>> {
        let get = |key| self.snapshot.get(key).map_err(io::Error::other);
        if let Some(stored) = get(SNAPSHOT)? {
            let malformed =
                || io::Error::new(io::ErrorKind::InvalidData, "malformed stored snapshot");
            let (len, rest) = stored.split_first_chunk::<4>().ok_or_else(malformed)?;
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return Err(malformed());
            }
            let meta = decode(&rest[..len])?;
            let data_start = 4 + len;
            let data = stored.subslice(data_start, stored.len() - data_start);
            return Ok(Some((meta, data)));
        }
        match (get(OLD_SNAPSHOT_META)?, get(OLD_SNAPSHOT_DATA)?) {
            (Some(meta), Some(data)) => Ok(Some((decode(&meta)?, data))),
            _ => Ok(None),
        }
    }

    /// Stores `meta` + `data` as the current snapshot (unless a newer one is
    /// already stored) and syncs it.
    fn store_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let _guard = self.snapshot_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((stored, _)) = self.stored_snapshot()? {
            if stored.last_log_id > meta.last_log_id {
                return Ok(());
            }
        }
        let meta = encode(meta)?;
        let mut value = Vec::with_capacity(4 + meta.len() + data.len());
        value.extend_from_slice(
            &u32::try_from(meta.len())
                .map_err(io::Error::other)?
                .to_be_bytes(),
        );
        value.extend_from_slice(&meta);
        value.extend_from_slice(data);
        // One insert: a crash keeps either the previous snapshot or this one.
        self.snapshot
            .insert(SNAPSHOT, value)
            .map_err(io::Error::other)?;
        for old in [OLD_SNAPSHOT_META, OLD_SNAPSHOT_DATA] {
            self.snapshot.remove(old).map_err(io::Error::other)?;
        }
        // sled frees the replaced value (the whole previous snapshot) through
        // crossbeam-epoch, which batches garbage per thread and releases a
        // batch only when 64 items are in it. This runs on a rarely used
        // blocking thread, so 15-20 old snapshots used to stay allocated:
        // tens of MB under load, and growing with the data set. Flushing
        // hands them to the global queue, freed once no reader can see them.
        crossbeam_epoch::pin().flush();
        crate::crash_point!("snapshot-store-before-sync");
        self.disk.sync()
    }

    /// Replaces the key-value state, `last_applied` and `membership` with the
    /// snapshot's (not atomically: a crash midway rebuilds at the next open).
    fn load_snapshot(
        &self,
        _gate: &MutexGuard<'_, bool>,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> io::Result<()> {
        let decoded = decode_snapshot(data)?;
        let (kv, lease_trees) = (&self.reader.kv, &self.reader.leases);
        kv.clear().map_err(io::Error::other)?;
        lease_trees.clear()?;
        for (id, ttl) in &decoded.leases {
            lease_trees.grant(*id, *ttl)?;
        }
        for (key, value) in &decoded.pairs {
            if decoded.with_headers {
                kv.insert(*key, *value).map_err(io::Error::other)?;
                let lease = record::decode(value)?.lease;
                if lease != 0 {
                    lease_trees.attach(lease, key)?;
                }
            } else {
                kv.insert(*key, record::encode(BEFORE_HEADERS, 0, value))
                    .map_err(io::Error::other)?;
            }
        }
        self.lease_changes.send_modify(|count| *count += 1);
        let sm_meta = &self.reader.meta;
        sm_meta
            .insert(MEMBERSHIP, encode(&meta.last_membership)?)
            .map_err(io::Error::other)?;
        sm_meta
            .insert(LAST_APPLIED, encode(&meta.last_log_id)?)
            .map_err(io::Error::other)?;
        Ok(())
    }
}

/// A consistent copy of the state taken on the state-machine task, encoded
/// and stored by `build_snapshot` on another task.
pub struct SnapshotBuilder {
    store: StateMachineStore,
    meta: SnapshotMeta,
    data: io::Result<Vec<u8>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = std::mem::replace(&mut self.data, Ok(Vec::new()))?;
        let started = std::time::Instant::now();
        crate::crash_point!("snapshot-build-before-store");
        let store = self.store.clone();
        let meta = self.meta.clone();
        let data = tokio::task::spawn_blocking(move || {
            store.store_snapshot(&meta, &data)?;
            Ok::<_, io::Error>(data)
        })
        .await
        .map_err(io::Error::other)??;
        let metrics = crate::metrics::global();
        crate::metrics::observe_since(&metrics.snapshot_build, started);
        metrics.snapshot_bytes.set(data.len() as i64);
        tracing::info!(last_log_id = ?self.meta.last_log_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.reader.last_applied()?, self.reader.membership()?))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.try_next().await? {
            batch.push(item);
        }
        let Some((last, _)) = batch.last() else {
            return Ok(());
        };
        crate::metrics::global()
            .entries_applied
            .inc_by(batch.len() as u64);
        let last = last.log_id;
        let last_applied = encode(&Some(last))?;
        let meta = &self.reader.meta;
        let gate = self.write_gate()?;
        let mut results = Vec::with_capacity(batch.len());
        let mut changed = Vec::new();
        let mut leases_changed = false;
        // Entries are consumed: their keys and values move on to the watch
        // history instead of being copied.
        for (entry, responder) in batch {
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(command) => {
                    let mut effects = Effects::default();
                    let result =
                        apply_command(&self.reader, command, entry.log_id.index, &mut effects)?;
                    leases_changed |= effects.leases_changed;
                    if !effects.changes.is_empty() {
                        changed.push(Applied {
                            index: entry.log_id.index,
                            changes: effects.changes,
                        });
                    }
                    result
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership);
                    meta.insert(MEMBERSHIP, encode(&stored)?)
                        .map_err(io::Error::other)?;
                    CommandResult::Done
                }
            };
            results.push((responder, result));
        }
        meta.insert(LAST_APPLIED, last_applied)
            .map_err(io::Error::other)?;
        drop(gate);
        if leases_changed {
            self.lease_changes.send_modify(|count| *count += 1);
        }
        // Before the writers hear back: a client that saw its write applied
        // at `i` and watches from `i` sees it.
        self.watch.record(changed, last.index);
        for (responder, result) in results {
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<SnapshotBuilder> {
        Some(self.get_snapshot_builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Runs on the state-machine task between two applies, so the copy is
        // consistent with `last_applied`; sled's iterators are not point-in-time.
        let state = self.reader.last_applied().and_then(|last_applied| {
            Ok((
                last_applied,
                self.reader.membership()?,
                encode_snapshot(&self.reader.leases.all()?, self.reader.kv.iter())?,
            ))
        });
        match state {
            Ok((last_log_id, last_membership, data)) => SnapshotBuilder {
                store: self.clone(),
                meta: SnapshotMeta {
                    last_log_id,
                    last_membership,
                },
                data: Ok(data),
            },
            Err(e) => SnapshotBuilder {
                store: self.clone(),
                meta: SnapshotMeta::default(),
                data: Err(e),
            },
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        // Reject malformed data before anything is changed.
        check_snapshot_data(&snapshot, meta.last_log_id.map_or(0, |l| l.index))?;
        let store = self.clone();
        let meta = meta.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            store.store_snapshot(&meta, &snapshot)?;
            crate::crash_point!("snapshot-install-before-load");
            store.load_snapshot(&store.write_gate()?, &meta, &snapshot)?;
            store.disk.sync()?;
            // The changes between the old state and this one are unknown.
            store
                .watch
                .reset(meta.last_log_id.map_or(0, |l| l.index));
            let metrics = crate::metrics::global();
            crate::metrics::observe_since(&metrics.snapshot_install, started);
            metrics.snapshot_bytes.set(snapshot.len() as i64);
            tracing::info!(last_log_id = ?meta.last_log_id, bytes = snapshot.len(), "snapshot installed");
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        self.read_snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_data_round_trips_and_rejects_garbage() {
        let stored = |lease: u64, value: &[u8]| record::encode(3, lease, value);
        let pair = |key: &[u8], lease: u64, value: &[u8]| {
            Ok((
                sled::IVec::from(key),
                sled::IVec::from(stored(lease, value)),
            ))
        };
        // In key order, as a tree iterates.
        let pairs = vec![pair(b"", 0, b"empty key"), pair(b"a", 7, b"1")];
        let data = encode_snapshot(&[(7, 30)], pairs.into_iter()).unwrap();
        assert!(data.starts_with(SNAPSHOT_V3));
        let (empty, one) = (stored(0, b"empty key"), stored(7, b"1"));
        let decoded = decode_snapshot(&data).unwrap();
        assert!(decoded.with_headers);
        assert_eq!(decoded.leases, vec![(7, 30)]);
        assert_eq!(
            decoded.pairs,
            vec![(&b""[..], &empty[..]), (&b"a"[..], &one[..])]
        );
        assert_eq!(check_snapshot_data(&data, 7).unwrap(), 2);
        assert!(
            check_snapshot_data(&data, 6).is_err(),
            "lease 7 in a snapshot up to 6"
        );
        assert!(decode_snapshot(&data[..data.len() - 1]).is_err());
        assert!(decode_snapshot(&[0, 0, 0, 9, 1]).is_err());
        // A key attached to a lease the table does not hold.
        let orphan = encode_snapshot(&[(8, 30)], [pair(b"a", 7, b"1")].into_iter()).unwrap();
        assert!(check_snapshot_data(&orphan, 9).is_err());
        // A value without its header is not data a node wrote in this format.
        let bare = [
            SNAPSHOT_V3,
            &[0, 0, 0, 0],
            &[0, 0, 0, 1, b'k', 0, 0, 0, 1, b'v'],
        ]
        .concat();
        assert!(check_snapshot_data(&bare, 9).is_err());
        // Keys out of order or repeated: not data a node wrote.
        for keys in [[&b"b"[..], b"a"], [b"a", b"a"]] {
            let pairs = keys.iter().map(|key| pair(key, 0, b"v"));
            let data = encode_snapshot(&[], pairs).unwrap();
            assert!(check_snapshot_data(&data, 9).is_err(), "{keys:?} accepted");
        }
    }

    #[test]
    fn snapshot_data_of_the_second_format_loads_without_leases() {
        // What the version before leases wrote: the marker, then records.
        let value = record::encode(9, 0, b"v");
        let len = (value.len() as u32).to_be_bytes();
        let data = [SNAPSHOT_V2, &[0, 0, 0, 1, b'k'], &len, &value].concat();
        let decoded = decode_snapshot(&data).unwrap();
        assert!(decoded.with_headers && decoded.leases.is_empty());
        assert_eq!(decoded.pairs, vec![(&b"k"[..], &value[..])]);
        // It never attached keys to leases.
        let leased = record::encode(9, 4, b"v");
        let data = [SNAPSHOT_V2, &[0, 0, 0, 1, b'k'], &len, &leased].concat();
        assert!(check_snapshot_data(&data, 9).is_err());
    }

    #[test]
    fn a_loaded_snapshot_rebuilds_the_lease_index() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        let pairs = [
            Ok((
                sled::IVec::from(&b"a"[..]),
                record::encode(3, 7, b"1").into(),
            )),
            Ok((
                sled::IVec::from(&b"b"[..]),
                record::encode(4, 0, b"2").into(),
            )),
        ];
        let data = encode_snapshot(&[(7, 30)], pairs.into_iter()).unwrap();
        let changes = store.lease_changes();
        store
            .load_snapshot(
                &store.write_gate().unwrap(),
                &SnapshotMeta::default(),
                &data,
            )
            .unwrap();
        assert!(changes.has_changed().unwrap(), "the countdowns hear of it");
        assert_eq!(store.reader.leases().unwrap(), vec![(7, 30)]);
        assert_eq!(
            store.reader.lease_keys(7, 10).unwrap(),
            (vec![b"a".to_vec()], false)
        );
        // Revoking it deletes exactly its keys.
        let mut effects = Effects::default();
        let revoke = Command::LeaseRevoke {
            id: 7,
            expired: true,
        };
        let result = apply_command(&store.reader, revoke, 20, &mut effects).unwrap();
        assert_eq!(
            result,
            CommandResult::LeaseRevoked {
                found: true,
                keys_deleted: 1
            }
        );
        assert!(effects.leases_changed);
        assert_eq!(keys(&store), vec![b"b".to_vec()]);
        assert_eq!(store.reader.lease_count(), 0);
    }

    /// Applies `command` at `index`; returns its result.
    fn apply_at(store: &StateMachineStore, command: Command, index: u64) -> CommandResult {
        apply_command(&store.reader, command, index, &mut Effects::default()).unwrap()
    }

    fn put_leased(key: &str, lease: u64) -> Command {
        Command::PutLeased {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
        }
    }

    #[test]
    fn the_lease_index_follows_keys_between_leases_and_out_of_them() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        let grant = |ttl_seconds| Command::LeaseGrant { ttl_seconds };
        assert_eq!(apply_at(&store, grant(10), 1), CommandResult::LeaseGranted);
        assert_eq!(apply_at(&store, grant(10), 2), CommandResult::LeaseGranted);
        apply_at(&store, put_leased("moved", 1), 3);
        apply_at(&store, put_leased("moved", 2), 4);
        apply_at(&store, put_leased("deleted", 1), 5);
        apply_at(
            &store,
            Command::Delete {
                key: b"deleted".to_vec(),
            },
            6,
        );
        // A transaction moves a key from lease 2 to none, and one to lease 1.
        apply_at(&store, put_leased("txn-off", 2), 7);
        let txn = Command::Txn {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: b"txn-off".to_vec(),
                    value: b"w".to_vec(),
                },
                TxnOp::PutLeased {
                    key: b"txn-on".to_vec(),
                    value: b"w".to_vec(),
                    lease: 1,
                },
            ],
            failure: vec![],
        };
        apply_at(&store, txn, 8);
        let lease_keys = |id| store.reader.lease_keys(id, 10).unwrap().0;
        assert_eq!(lease_keys(1), vec![b"txn-on".to_vec()]);
        assert_eq!(lease_keys(2), vec![b"moved".to_vec()]);
        let info = store.reader.leases.info(1).unwrap().unwrap();
        assert_eq!(info.keys, 1);
        // Revoking lease 1 takes only what it still carries.
        let revoke = |id| Command::LeaseRevoke { id, expired: false };
        assert_eq!(
            apply_at(&store, revoke(1), 9),
            CommandResult::LeaseRevoked {
                found: true,
                keys_deleted: 1
            }
        );
        assert_eq!(keys(&store), vec![b"moved".to_vec(), b"txn-off".to_vec()]);
        assert_eq!(store.reader.get(b"txn-off").unwrap().unwrap().lease, 0);
        // Writes naming a lease that is gone change nothing.
        assert_eq!(
            apply_at(&store, put_leased("moved", 1), 10),
            CommandResult::LeaseNotFound { id: 1 }
        );
        assert_eq!(store.reader.get(b"moved").unwrap().unwrap().lease, 2);
    }

    #[test]
    fn a_lease_carries_a_bounded_weight_of_keys() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, Command::LeaseGrant { ttl_seconds: 10 }, 1);
        // 4000-byte keys weigh 4016: 261 fit in 1 MiB, the 262nd does not.
        let key = |i: usize| format!("{i:04}{}", "k".repeat(3996));
        for i in 0..261 {
            assert_eq!(
                apply_at(&store, put_leased(&key(i), 1), 2 + i as u64),
                CommandResult::Done
            );
        }
        assert_eq!(
            apply_at(&store, put_leased(&key(261), 1), 300),
            CommandResult::LeaseFull { id: 1 }
        );
        // Rewriting a key it already carries costs nothing.
        assert_eq!(
            apply_at(&store, put_leased(&key(0), 1), 301),
            CommandResult::Done
        );
        assert_eq!(store.reader.get(key(261).as_bytes()).unwrap(), None);
        // A transaction that would overfill it runs none of its operations.
        let txn = Command::Txn {
            compares: vec![],
            success: vec![
                TxnOp::Put {
                    key: b"plain".to_vec(),
                    value: b"v".to_vec(),
                },
                TxnOp::PutLeased {
                    key: key(262).into_bytes(),
                    value: b"v".to_vec(),
                    lease: 1,
                },
            ],
            failure: vec![],
        };
        assert_eq!(
            apply_at(&store, txn, 302),
            CommandResult::LeaseFull { id: 1 }
        );
        assert_eq!(store.reader.get(b"plain").unwrap(), None);
    }

    #[test]
    fn snapshot_data_of_the_first_format_loads_with_one_index_for_all() {
        // Records of bare values, no marker: what earlier versions wrote.
        let data = [&[0, 0, 0, 1, b'k', 0, 0, 0, 2][..], b"v1"].concat();
        let decoded = decode_snapshot(&data).unwrap();
        assert!(!decoded.with_headers);
        assert_eq!(decoded.pairs, vec![(&b"k"[..], &b"v1"[..])]);
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        let meta = SnapshotMeta {
            last_log_id: Some(openraft::testing::log_id::<TypeConfig>(2, 1, 40)),
            ..Default::default()
        };
        store
            .load_snapshot(&store.write_gate().unwrap(), &meta, &data)
            .unwrap();
        assert_eq!(
            store.reader.get(b"k").unwrap(),
            Some(Stored {
                value: b"v1".to_vec(),
                modified: BEFORE_HEADERS,
                lease: 0
            })
        );
    }

    #[test]
    fn the_digest_is_fnv_1a_over_lengths_and_bytes_in_key_order_then_leases() {
        let dir = tempfile::TempDir::new().unwrap();
        let sm = open_in(dir.path());
        assert_eq!(sm.reader.digest().unwrap(), (0xcbf2_9ce4_8422_2325, 0));
        sm.reader
            .kv
            .insert(b"b", record::encode(5, 0, b"22"))
            .unwrap();
        sm.reader
            .kv
            .insert(b"a", record::encode(6, 9, b"1"))
            .unwrap();
        sm.reader.leases.grant(9, 30).unwrap();
        // FNV-1a 64 by hand: offset basis, then xor and multiply per byte.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let be = |n: u64| n.to_be_bytes();
        let (six, nine, five, none, thirty) = (be(6), be(9), be(5), be(0), be(30));
        for part in [
            &b"a"[..],
            b"1",
            &six,
            &nine,
            b"b",
            b"22",
            &five,
            &none,
            &nine,
            &thirty,
        ] {
            for byte in (part.len() as u64).to_be_bytes().iter().chain(part) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        assert_eq!(sm.reader.digest().unwrap(), (hash, 2));
    }

    /// Opens the state machine alone in `dir` (retrying while a previous
    /// handle's background threads still hold the database lock).
    fn open_in(dir: &std::path::Path) -> StateMachineStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match sled::open(dir) {
                Ok(db) => {
                    let disk = Arc::new(Disk::new(db.clone(), dir).unwrap());
                    return StateMachineStore::open(&db, disk).unwrap();
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("lock"), "{e}");
                    std::thread::yield_now();
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    fn keys(store: &StateMachineStore) -> Vec<Vec<u8>> {
        store
            .reader
            .kv
            .iter()
            .keys()
            .map(|k| k.unwrap().to_vec())
            .collect()
    }

    #[test]
    fn state_is_trusted_after_a_clean_stop_and_rebuilt_from_the_snapshot_after_a_crash() {
        use openraft::testing::log_id;
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        let pairs = [Ok((
            sled::IVec::from(&b"a"[..]),
            sled::IVec::from(record::encode(4, 0, b"1")),
        ))];
        let meta = SnapshotMeta {
            last_log_id: Some(log_id::<TypeConfig>(1, 1, 5)),
            ..Default::default()
        };
        store
            .store_snapshot(&meta, &encode_snapshot(&[], pairs.into_iter()).unwrap())
            .unwrap();
        // Applied after the snapshot, then a crash (no close_cleanly): part of a
        // batch may be in the trees, so they are rebuilt from the snapshot.
        store
            .reader
            .kv
            .insert(b"b", record::encode(6, 0, b"2"))
            .unwrap();
        store
            .reader
            .meta
            .insert(
                LAST_APPLIED,
                encode(&Some(log_id::<TypeConfig>(1, 1, 7))).unwrap(),
            )
            .unwrap();
        store.disk.sync().unwrap();
        drop(store);
        let store = open_in(dir.path());
        assert_eq!(keys(&store), vec![b"a".to_vec()]);
        assert_eq!(
            store.reader.last_applied().unwrap().map(|l| l.index),
            Some(5)
        );

        // A clean stop: the state is kept as it is, and nothing writes after it.
        store
            .reader
            .kv
            .insert(b"c", record::encode(8, 0, b"3"))
            .unwrap();
        store.close_cleanly().unwrap();
        assert!(store.write_gate().is_err(), "a closed store refuses writes");
        drop(store);
        let store = open_in(dir.path());
        assert_eq!(keys(&store), vec![b"a".to_vec(), b"c".to_vec()]);

        // The marker is used up by that open: the next crash rebuilds again.
        drop(store);
        let store = open_in(dir.path());
        assert_eq!(keys(&store), vec![b"a".to_vec()]);
    }
}
