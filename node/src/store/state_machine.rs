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
//! - `apply`: each entry's rows (see `apply`), then `membership`, then
//!   `applied`, written with plain sled inserts and not synced. No sled batch
//!   or transaction: those take sled's global write lock and force out its
//!   write buffer on every apply.
//! - After a crash sled recovers a prefix of those inserts (it replays its
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
//!   state, which is synced, then the marker and the file go. A crash in
//!   between finds the marker at the next open, which loads the file again.
//! - Compaction's row removal (`compact_some`) runs beside the apply, in
//!   bounded steps; it only removes versions no read at or after the
//!   compaction point can see, so a step cut short by a crash is harmless and
//!   the next one redoes it. It starts after `applied` records the
//!   compaction point, so sled's prefix never holds a removal without it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
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

use super::apply::EntryApply;
use super::keyspace::KeySpace;
use super::keyspace::KeyValue;
use super::keyspace::Lookup;
use super::keyspace::ReadError;
use super::keyspace::Row;
use super::keyspace::Version;
use super::leases::LeaseTrees;
use super::record;
use super::size::StoreSize;
use super::snapshot::Incoming;
use super::snapshot::Received;
use super::snapshot::Snapshot;
use super::snapshot::SnapshotData;
use super::snapshot::StateAt;
use super::snapshot::INCOMING_PREFIX;
use super::snapshot_data;
use super::Disk;
use crate::codec::decode;
use crate::codec::encode;
use crate::types::CommandResult;
use crate::types::LogId;
use crate::types::SnapshotMeta;
use crate::types::Stored;
use crate::types::StoredMembership;
use crate::types::TypeConfig;

/// Written by earlier versions in place of `applied`; read once to convert.
const LAST_APPLIED: &[u8] = b"last_applied";
const APPLIED: &[u8] = b"applied";
const MEMBERSHIP: &[u8] = b"membership";
const CLEAN: &[u8] = b"clean";
/// Present once every value in the old `kv` tree had a header.
const KV_FORMAT: &[u8] = b"kv_format";
/// The layout of the key-value state; absent before revisions.
const STORE_FORMAT: &[u8] = b"store_format";
/// What this version writes and reads: `applied` in one value, leases
/// marked at their revoke (see `leases`), trusted after a crash.
const REVISIONED: u8 = 3;
/// The first revisioned format: `last_applied`, `compacted` and
/// `key_count` apart, state rebuilt from a stored snapshot after a crash.
const REVISIONED_V2: u8 = 2;
/// Written by earlier versions: the compaction point.
const COMPACTED: &[u8] = b"compacted";
/// Rows are removed for compactions up to here.
const COMPACT_DONE: &[u8] = b"compact_done";
/// Written by earlier versions: how many keys are live at `last_applied`.
const KEY_COUNT: &[u8] = b"key_count";
/// An install under way: the snapshot's meta and the name of its data file
/// in the data directory, present from before the state is replaced until
/// the new state is synced.
const INSTALLING: &[u8] = b"installing";
/// Members whose NOSPACE alarm is raised (an encoded `BTreeSet<u64>`).
const ALARMS: &[u8] = b"alarms";
/// The key space's counted bytes, written at a clean stop (see `size`).
const SPACE_BYTES: &[u8] = b"space_bytes";
/// Earlier versions' stored snapshot: `u32 meta length (BE)`, meta, data.
const SNAPSHOT: &[u8] = b"current";
/// Where earlier versions kept the snapshot's meta and data, read if `current` is absent.
const OLD_SNAPSHOT_META: &[u8] = b"meta";
const OLD_SNAPSHOT_DATA: &[u8] = b"data";
/// Keys read at a time when a snapshot, digest or count walks the state.
const WALK_PAGE: usize = 1024;

/// The revisions readers may use, shared by the apply and every reader.
pub struct Revisions {
    /// The newest revision readers may see: the last applied index.
    current: AtomicU64,
    /// Reads below it are refused.
    compacted: AtomicU64,
    /// Live keys at `current`.
    keys: AtomicU64,
    /// Counts snapshot installs begun and ended: odd while one replaces the
    /// state, which no read may see half done (a read notes it before and
    /// checks it after).
    installs: AtomicU64,
    /// Follows `current`, for watchers waiting for more.
    published: tokio::sync::watch::Sender<u64>,
    /// Revisions that walks in progress read at (count per revision): rows
    /// they need are not removed by compaction.
    pins: Mutex<BTreeMap<u64, usize>>,
}

/// Ends an install's mark when dropped, whether it succeeded or not.
struct InstallGuard(Arc<Revisions>);

impl Drop for InstallGuard {
    fn drop(&mut self) {
        self.0.installs.fetch_add(1, Ordering::AcqRel);
    }
}

/// Keeps a revision's rows while held.
pub struct Pin {
    revisions: Arc<Revisions>,
    revision: u64,
}

impl Pin {
    /// The revision it keeps.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = self.revisions.lock_pins();
        if let Some(count) = pins.get_mut(&self.revision) {
            *count -= 1;
            if *count == 0 {
                pins.remove(&self.revision);
            }
        }
    }
}

impl Revisions {
    fn new() -> Revisions {
        Revisions {
            current: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            installs: AtomicU64::new(0),
            published: tokio::sync::watch::Sender::new(0),
            pins: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock_pins(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        self.pins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last applied revision.
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// The compaction point.
    pub fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Live keys at the newest revision.
    pub fn key_count(&self) -> u64 {
        self.keys.load(Ordering::Acquire)
    }

    fn publish(&self, current: u64, compacted: u64, keys: u64) {
        self.keys.store(keys, Ordering::Release);
        self.compacted.store(compacted, Ordering::Release);
        self.current.store(current, Ordering::Release);
        self.published.send_replace(current);
    }

    /// Waits until a revision after `revision` is published.
    pub async fn beyond(&self, revision: u64) {
        let mut published = self.published.subscribe();
        let _ = published.wait_for(|current| *current > revision).await;
    }

    /// The revision a read asking for `asked` (`None`: the newest) runs at.
    pub fn read_at(&self, asked: Option<u64>) -> Result<u64, ReadError> {
        let current = self.current();
        let Some(asked) = asked else {
            return Ok(current);
        };
        if asked > current {
            return Err(ReadError::Future { asked, current });
        }
        self.check_kept(asked)?;
        Ok(asked)
    }

    /// Refuses `revision` if a compaction passed it (call after a read too,
    /// for compactions that raced it).
    pub fn check_kept(&self, revision: u64) -> Result<(), ReadError> {
        let compacted = self.compacted();
        if revision < compacted {
            return Err(ReadError::Compacted {
                asked: revision,
                compacted,
            });
        }
        Ok(())
    }

    /// Where installs stand, for a read about to start; refused while one
    /// runs.
    pub fn epoch(&self) -> Result<u64, ReadError> {
        let epoch = self.installs.load(Ordering::Acquire);
        if epoch % 2 == 1 {
            return Err(ReadError::Installing);
        }
        Ok(epoch)
    }

    /// Refuses a read that began at `epoch` if an install started since.
    pub fn check_epoch(&self, epoch: u64) -> Result<(), ReadError> {
        if self.installs.load(Ordering::Acquire) != epoch {
            return Err(ReadError::Installing);
        }
        Ok(())
    }

    /// Marks an install as running until the guard is dropped.
    fn installing(self: &Arc<Self>) -> InstallGuard {
        self.installs.fetch_add(1, Ordering::AcqRel);
        InstallGuard(self.clone())
    }

    /// Keeps `revision`'s rows until the pin is dropped; refused if a
    /// compaction passed it already.
    pub fn pin(self: &Arc<Self>, revision: u64) -> Result<Pin, ReadError> {
        self.lock_pins()
            .entry(revision)
            .and_modify(|n| *n += 1)
            .or_insert(1);
        let pin = Pin {
            revisions: self.clone(),
            revision,
        };
        self.check_kept(revision)?;
        Ok(pin)
    }

    /// How far rows may be removed: the compaction point, but not past a
    /// pinned revision.
    fn removable_through(&self) -> u64 {
        let compacted = self.compacted();
        match self.lock_pins().keys().next() {
            Some(&pinned) => compacted.min(pinned),
            None => compacted,
        }
    }
}

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

/// Read access to the applied state, for the client API and watchers.
#[derive(Clone)]
pub struct KvReader {
    space: KeySpace,
    /// `last_applied`, `membership`, the compaction point.
    meta: sled::Tree,
    /// The lease table and its keys.
    leases: LeaseTrees,
    revisions: Arc<Revisions>,
    /// Members whose NOSPACE alarm is raised, as of the last applied entry
    /// (stored in `sm_meta` under `alarms`).
    alarms: Arc<Mutex<BTreeSet<u64>>>,
    /// What the store holds, counted (shared with the log).
    size: Arc<StoreSize>,
}

/// One page of a scan at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanAt {
    pub pairs: Vec<KeyValue>,
    /// More keys follow the last one.
    pub more: bool,
    /// The revision read at.
    pub revision: u64,
}

impl KvReader {
    /// The revisions readers may use.
    pub fn revisions(&self) -> &Arc<Revisions> {
        &self.revisions
    }

    /// `key` at revision `at` (`None`: the newest), and the revision read at.
    pub fn get(&self, key: &[u8], at: Option<u64>) -> Result<(Option<Stored>, u64), ReadError> {
        let epoch = self.revisions.epoch()?;
        let revision = self.revisions.read_at(at)?;
        let found = match self.space.get(key, revision)? {
            Lookup::Found(kv) => Some(Stored::from(kv)),
            Lookup::Absent => None,
            Lookup::Lost => {
                self.revisions.check_kept(revision)?;
                return Err(missing_version());
            }
        };
        self.revisions.check_epoch(epoch)?;
        self.revisions.check_kept(revision)?;
        Ok((found, revision))
    }

    /// Up to `limit` keys starting with `prefix` and greater than
    /// `start_after`, at revision `at` (`None`: the newest).
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: &[u8],
        limit: usize,
        at: Option<u64>,
    ) -> Result<ScanAt, ReadError> {
        let epoch = self.revisions.epoch()?;
        let revision = self.revisions.read_at(at)?;
        let (pairs, more, lost) = self.space.scan(prefix, start_after, limit, revision)?;
        self.revisions.check_epoch(epoch)?;
        self.revisions.check_kept(revision)?;
        if lost {
            return Err(missing_version());
        }
        Ok(ScanAt {
            pairs,
            more,
            revision,
        })
    }

    /// The rows written from revision `from` through the newest, whole
    /// revisions, about `max_bytes` of them; and the revision to read from
    /// next.
    pub fn history(
        &self,
        from: u64,
        max_bytes: usize,
    ) -> Result<(Vec<(u64, Row)>, u64), ReadError> {
        let epoch = self.revisions.epoch()?;
        let current = self.revisions.current();
        self.revisions.check_kept(from.saturating_sub(1))?;
        let (rows, complete) = self.space.history(from, current, max_bytes)?;
        // Rows removed while they were read would be missing silently.
        self.revisions.check_epoch(epoch)?;
        self.revisions.check_kept(from.saturating_sub(1))?;
        let next = match (complete, rows.last()) {
            (false, Some((last, _))) => last + 1,
            _ => from.max(current + 1),
        };
        Ok((rows, next))
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

    /// How many leases exist.
    pub fn lease_count(&self) -> usize {
        self.leases.count()
    }

    /// The log id of the last applied entry.
    pub fn last_applied(&self) -> io::Result<Option<LogId>> {
        Ok(read_applied(&self.meta)?.log_id)
    }

    /// The membership as of the last applied entry.
    pub fn membership(&self) -> io::Result<StoredMembership> {
        read_membership(&self.meta)
    }

    /// Calls `each` with every live key at `revision`, in key order, in
    /// pages (the revision is pinned meanwhile).
    fn walk(
        &self,
        revision: u64,
        each: impl FnMut(&KeyValue) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        let epoch = self.revisions.epoch()?;
        let _pin = self.revisions.pin(revision)?;
        self.walk_pinned(revision, epoch, each)
    }

    /// [`KvReader::walk`] for a caller that holds a pin on `revision` (so
    /// compaction may have moved past it since: its rows are still there);
    /// refused if a snapshot install began since `epoch`.
    pub(super) fn walk_pinned(
        &self,
        revision: u64,
        epoch: u64,
        mut each: impl FnMut(&KeyValue) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        self.revisions.check_epoch(epoch)?;
        let mut after = Vec::new();
        loop {
            let (page, more, lost) = self.space.scan(&[], &after, WALK_PAGE, revision)?;
            self.revisions.check_epoch(epoch)?;
            if lost {
                return Err(missing_version());
            }
            for kv in &page {
                each(kv)?;
            }
            match (more, page.last()) {
                (true, Some(last)) => after = last.key.clone(),
                _ => return Ok(()),
            }
        }
    }

    /// Calls `each` with every version a read at `compacted` or later can
    /// see, through `revision`, in row order, in pages (see
    /// [`KeySpace::versions`]), for a caller that holds pins on both;
    /// refused if a snapshot install began since `epoch`.
    pub(super) fn walk_versions_pinned(
        &self,
        compacted: u64,
        revision: u64,
        epoch: u64,
        mut each: impl FnMut(&Version) -> io::Result<()>,
    ) -> Result<(), ReadError> {
        let mut after = None;
        loop {
            self.revisions.check_epoch(epoch)?;
            let (page, more) = self.space.versions(compacted, revision, after, WALK_PAGE)?;
            self.revisions.check_epoch(epoch)?;
            for version in &page {
                each(version)?;
            }
            match (more, page.last()) {
                (true, Some(last)) => after = Some((last.revision, last.sub)),
                _ => return Ok(()),
            }
        }
    }

    /// Members whose NOSPACE alarm is raised.
    pub fn alarms(&self) -> BTreeSet<u64> {
        self.alarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bytes the store holds, as it counts them (key space and log).
    pub fn store_bytes(&self) -> u64 {
        self.size.total()
    }

    /// Number of live keys.
    pub fn key_count(&self) -> usize {
        usize::try_from(self.revisions.key_count()).unwrap_or(usize::MAX)
    }

    /// FNV-1a 64 over every live key's key, value, mod revision, lease,
    /// create revision and version (each preceded by its length; numbers
    /// as 8 bytes big-endian), in key order, then over each lease's id and
    /// TTL (likewise, in id order), plus the key count and the revision it
    /// was taken at: equal on two replicas at one revision iff their data
    /// is equal (up to hash collisions).
    pub fn digest(&self) -> Result<(u64, u64, u64), ReadError> {
        use std::hash::Hasher;
        let mut hash = fnv::FnvHasher::default();
        let mut count = 0;
        let revision = self.revisions.current();
        let mut feed = |bytes: &[u8]| {
            hash.write(&(bytes.len() as u64).to_be_bytes());
            hash.write(bytes);
        };
        // The lease table keeps no history: read it before and after, and
        // retry if it moved (a grant or revoke lands between).
        let leases = self.leases.all()?;
        self.walk(revision, |kv| {
            feed(&kv.key);
            feed(&kv.value);
            for number in [kv.mod_revision, kv.lease, kv.create_revision, kv.version] {
                feed(&number.to_be_bytes());
            }
            count += 1;
            Ok(())
        })?;
        for (id, ttl) in leases {
            feed(&id.to_be_bytes());
            feed(&ttl.to_be_bytes());
        }
        Ok((hash.finish(), count, revision))
    }
}

/// A version the key index names is gone though no compaction passed the
/// read: the trees disagree.
fn missing_version() -> ReadError {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "a version named by the key index is missing",
    )
    .into()
}

/// The last applied log id with the compaction point and the live key
/// count at it: one meta value, so a crash keeps all three from one batch.
#[derive(Debug, Clone, Default, PartialEq)]
struct Applied {
    log_id: Option<LogId>,
    compacted: u64,
    keys: u64,
}

impl Applied {
    fn revision(&self) -> u64 {
        self.log_id.map_or(0, |l| l.index)
    }
}

/// `applied`: `compacted u64 (BE), keys u64 (BE)`, then the encoded log id.
/// Before it existed, the three were values of their own.
fn read_applied(meta: &sled::Tree) -> io::Result<Applied> {
    if let Some(bytes) = meta.get(APPLIED).map_err(io::Error::other)? {
        let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed applied state");
        let (compacted, rest) = bytes.split_first_chunk::<8>().ok_or_else(malformed)?;
        let (keys, rest) = rest.split_first_chunk::<8>().ok_or_else(malformed)?;
        return Ok(Applied {
            log_id: decode(rest)?,
            compacted: u64::from_be_bytes(*compacted),
            keys: u64::from_be_bytes(*keys),
        });
    }
    let log_id = match meta.get(LAST_APPLIED).map_err(io::Error::other)? {
        Some(bytes) => decode(&bytes)?,
        None => None,
    };
    Ok(Applied {
        log_id,
        compacted: read_u64(meta, COMPACTED)?,
        keys: read_u64(meta, KEY_COUNT)?,
    })
}

fn write_applied(meta: &sled::Tree, applied: &Applied) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(&applied.compacted.to_be_bytes());
    bytes.extend_from_slice(&applied.keys.to_be_bytes());
    bytes.extend_from_slice(&encode(&applied.log_id)?);
    meta.insert(APPLIED, bytes).map_err(io::Error::other)?;
    Ok(())
}

fn read_alarms(meta: &sled::Tree) -> io::Result<BTreeSet<u64>> {
    match meta.get(ALARMS).map_err(io::Error::other)? {
        Some(bytes) => decode(&bytes),
        None => Ok(BTreeSet::new()),
    }
}

fn read_membership(meta: &sled::Tree) -> io::Result<StoredMembership> {
    match meta.get(MEMBERSHIP).map_err(io::Error::other)? {
        Some(bytes) => decode(&bytes),
        None => Ok(StoredMembership::default()),
    }
}

fn read_u64(meta: &sled::Tree, key: &[u8]) -> io::Result<u64> {
    match meta.get(key).map_err(io::Error::other)? {
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

fn write_u64(meta: &sled::Tree, key: &[u8], value: u64) -> io::Result<()> {
    meta.insert(key, &value.to_be_bytes())
        .map_err(io::Error::other)?;
    Ok(())
}

impl StateMachineStore {
    /// The database the state machine lives in (for its size on disk).
    pub fn database(&self) -> sled::Db {
        self.disk.db().clone()
    }

    /// Opens the state-machine trees of `db`: after a clean stop as they
    /// are; after a crash as they are too, with the derived data recounted;
    /// with a snapshot install cut short, loads that snapshot again (see
    /// the module's durability rules). Converts the state of earlier
    /// versions; refuses the state of a newer version.
    pub fn open(
        db: &sled::Db,
        disk: Arc<Disk>,
        size: Arc<StoreSize>,
    ) -> io::Result<StateMachineStore> {
        let open = |name: &str| db.open_tree(name).map_err(io::Error::other);
        let meta = open("sm_meta")?;
        let format = meta.get(STORE_FORMAT).map_err(io::Error::other)?;
        let format = match format.as_deref() {
            None => None,
            Some([f]) if *f == REVISIONED || *f == REVISIONED_V2 => Some(*f),
            Some(other) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the data directory holds key-value state of format {other:?}, written \
                         by a newer raftkv; this version reads formats up to {REVISIONED} only: \
                         run the newer version, or restore a backup into a new data directory"
                    ),
                ))
            }
        };
        let store = StateMachineStore {
            reader: KvReader {
                space: KeySpace::open(db, size.clone())?,
                meta,
                leases: LeaseTrees::open(db)?,
                revisions: Arc::new(Revisions::new()),
                alarms: Arc::default(),
                size: size.clone(),
            },
            snapshot: open("snapshot")?,
            disk,
            closed: Arc::new(Mutex::new(false)),
            lease_changes: Arc::new(tokio::sync::watch::Sender::new(0)),
            size,
        };
        let meta = &store.reader.meta;
        let clean = meta.remove(CLEAN).map_err(io::Error::other)?.is_some();
        // On disk before anything is rewritten: a crash during the rewrite
        // must not find the marker that vouches for the trees.
        store.disk.sync()?;
        let old_kv = db.tree_names().iter().any(|name| name.as_ref() == b"kv");
        let stored = store.stored_snapshot()?;
        let installing = meta.get(INSTALLING).map_err(io::Error::other)?;
        match format {
            // An install cut short by a crash: its data file is complete and
            // synced, the key-value state may be half replaced.
            Some(REVISIONED) if installing.is_some() => store.resume_install(&installing)?,
            Some(REVISIONED) if !clean => store.recover()?,
            Some(REVISIONED) => {}
            // Earlier versions trusted their trees only after a clean stop,
            // and rebuilt from their stored snapshot otherwise.
            _ if !clean => store.reload(stored)?,
            Some(_) => {}
            None => store.convert_kv(db)?,
        }
        if old_kv {
            db.drop_tree("kv").map_err(io::Error::other)?;
        }
        // In this version's layout from here on; a crash before the sync
        // below redoes the conversion.
        write_applied(meta, &read_applied(meta)?)?;
        for old in [LAST_APPLIED, COMPACTED, KEY_COUNT] {
            meta.remove(old).map_err(io::Error::other)?;
        }
        meta.insert(STORE_FORMAT, &[REVISIONED])
            .map_err(io::Error::other)?;
        store.disk.sync()?;
        store.forget_stored_snapshot()?;
        store.remove_incoming_files()?;
        // The key space's count: from the clean stop that wrote it when the
        // trees are as that stop left them, else counted again.
        let trusted = clean && format == Some(REVISIONED) && installing.is_none();
        match meta.get(SPACE_BYTES).map_err(io::Error::other)? {
            Some(_) if trusted => store.size.set_key_space(read_u64(meta, SPACE_BYTES)?),
            _ => {
                let started = std::time::Instant::now();
                let bytes = store.reader.space.recount()?;
                tracing::info!(bytes, elapsed = ?started.elapsed(), "store size counted");
            }
        }
        store.publish()?;
        Ok(store)
    }

    /// Loads the snapshot an install cut short was loading, then ends the
    /// install as it would have ended.
    fn resume_install(&self, marker: &Option<sled::IVec>) -> io::Result<()> {
        let Some(marker) = marker else {
            return Ok(());
        };
        let (meta, name): (SnapshotMeta, String) = decode(marker)?;
        let path = self.disk.dir().join(&name);
        tracing::warn!(
            last_log_id = ?meta.last_log_id,
            file = %path.display(),
            "a snapshot install was cut short: loading the snapshot again"
        );
        let received = Received::left_at(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "the data directory records an unfinished snapshot install from {name}, \
                     which cannot be read ({e}): restore a backup or re-add this node with an \
                     empty data directory"
                ),
            )
        })?;
        self.load_installed(&meta, received)
    }

    /// Removes snapshot files left by receptions a crash cut short.
    fn remove_incoming_files(&self) -> io::Result<()> {
        for entry in std::fs::read_dir(self.disk.dir())? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(INCOMING_PREFIX)
            {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Publishes the stored revision, compaction point and alarms to readers.
    fn publish(&self) -> io::Result<()> {
        let alarms = read_alarms(&self.reader.meta)?;
        *self.reader.alarms.lock().unwrap_or_else(|e| e.into_inner()) = alarms;
        let applied = read_applied(&self.reader.meta)?;
        self.reader
            .revisions
            .publish(applied.revision(), applied.compacted, applied.keys);
        Ok(())
    }

    /// Moves the key-value state of a version before revisions (tree `kv`)
    /// into the key space: every key gets `create_revision` = `mod_revision`
    /// = 1 and version 1, and history starts at the applied index. A crash
    /// midway leaves no `store_format`, and no `clean` marker: the next open
    /// rebuilds from the snapshot.
    fn convert_kv(&self, db: &sled::Db) -> io::Result<()> {
        let kv = db.open_tree("kv").map_err(io::Error::other)?;
        let headers = self
            .reader
            .meta
            .get(KV_FORMAT)
            .map_err(io::Error::other)?
            .is_some();
        self.reader.space.clear()?;
        let mut count: u32 = 0;
        for item in kv.iter() {
            let (key, stored) = item.map_err(io::Error::other)?;
            let (lease, value) = if headers {
                let record = record::decode(&stored)?;
                (record.lease, record.value.to_vec())
            } else {
                (0, stored.to_vec())
            };
            let row = Row {
                key: key.to_vec(),
                value: Some(value),
                create_revision: snapshot_data::BEFORE_REVISIONS,
                version: 1,
                lease,
            };
            self.reader
                .space
                .write(snapshot_data::BEFORE_REVISIONS, count, &row)?;
            count += 1;
        }
        let log_id = read_applied(&self.reader.meta)?.log_id;
        let applied = log_id.map_or(0, |l| l.index);
        write_u64(&self.reader.meta, COMPACT_DONE, applied)?;
        write_applied(
            &self.reader.meta,
            &Applied {
                log_id,
                compacted: applied,
                keys: u64::from(count),
            },
        )?;
        tracing::info!(
            keys = count,
            "stored values converted to the revisioned format"
        );
        Ok(())
    }

    /// Loads `stored` (a snapshot, or nothing: the empty state) in place of
    /// the key-value state.
    fn reload(&self, stored: Option<(SnapshotMeta, sled::IVec)>) -> io::Result<()> {
        let applied = self.reader.last_applied()?;
        let snapshot_index = stored.as_ref().and_then(|(meta, _)| meta.last_log_id);
        if applied.is_some() || stored.is_some() {
            tracing::warn!(
                applied = ?applied,
                snapshot = ?snapshot_index,
                "loading the key-value state from the stored snapshot (an install was cut short, \
                 or an earlier version did not stop cleanly); the log replays the rest"
            );
        }
        let gate = self.write_gate()?;
        match stored {
            Some((meta, data)) => self.load_snapshot(&gate, &meta, &data[..]),
            None => self.load_snapshot(&gate, &SnapshotMeta::default(), &[][..]),
        }
    }

    /// After a crash: puts the key-value state back exactly as it was at
    /// the applied revision, then recounts what is derived from it. Rows of
    /// later revisions (a batch cut short) are removed rather than trusted
    /// to be rewritten alike: the log replays those entries from `applied`
    /// onto the state they were first applied to. Leases granted or revoked
    /// later are undone (see `leases`); the live key count and the lease key
    /// index are counted again from the keys at that revision.
    fn recover(&self) -> io::Result<()> {
        let reader = &self.reader;
        let mut applied = read_applied(&reader.meta)?;
        let revision = applied.revision();
        tracing::warn!(
            applied = revision,
            "the node did not stop cleanly: rolling the stored state back to the last applied \
             entry; the log replays the rest"
        );
        let started = std::time::Instant::now();
        let removed = reader.space.truncate_after(revision)?;
        reader.leases.reset_to(revision)?;
        let mut keys = 0;
        reader.walk(revision, |kv| {
            keys += 1;
            if kv.lease != 0 && reader.leases.info(kv.lease)?.is_some() {
                reader.leases.attach(kv.lease, &kv.key)?;
            }
            Ok(())
        })?;
        applied.keys = keys;
        write_applied(&reader.meta, &applied)?;
        tracing::info!(keys, rows_removed = removed, elapsed = ?started.elapsed(), "state recovered");
        Ok(())
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
        write_u64(&self.reader.meta, SPACE_BYTES, self.size.key_space())?;
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

    /// The state at the last applied revision, pinned, as snapshot data with
    /// its meta (the empty state at revision 0 before anything is applied).
    /// Call between two applies
    /// (on the state-machine task), where the revision, membership and lease
    /// table agree.
    fn state_now(&self) -> io::Result<(SnapshotMeta, StateAt)> {
        let reader = &self.reader;
        let last_log_id = reader.last_applied()?;
        let epoch = reader.revisions.epoch()?;
        let pin = reader.revisions.pin(last_log_id.map_or(0, |l| l.index))?;
        // The history a follower gets with the state starts here; pinned
        // too, so compaction cannot remove it while the state streams.
        let history = reader.revisions.pin(reader.revisions.compacted())?;
        let state = StateAt::new(
            reader.clone(),
            pin,
            history,
            epoch,
            reader.leases.all()?,
            reader.alarms(),
        );
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: reader.membership()?,
        };
        Ok((meta, state))
    }

    /// A stored snapshot's meta, and its data as sled holds it (not copied).
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

    /// Removes a stored snapshot once the state it was loaded into is synced.
    fn forget_stored_snapshot(&self) -> io::Result<()> {
        let mut removed = false;
        for key in [SNAPSHOT, OLD_SNAPSHOT_META, OLD_SNAPSHOT_DATA] {
            removed |= self
                .snapshot
                .remove(key)
                .map_err(io::Error::other)?
                .is_some();
        }
        if removed {
            // sled frees the removed value through crossbeam-epoch, which
            // batches garbage per thread and releases a batch only when 64
            // items are in it; this runs on a rarely used thread. Flushing
            // hands it to the global queue, freed once no reader can see it.
            crossbeam_epoch::pin().flush();
        }
        Ok(())
    }

    /// Replaces the key-value state and `applied` with the snapshot's, and
    /// `membership` (not atomically: see `install_snapshot`). History starts
    /// at the data's compaction point (data with history: the sender's), or
    /// else at the snapshot's revision.
    fn load_snapshot(
        &self,
        _gate: &MutexGuard<'_, bool>,
        meta: &SnapshotMeta,
        data: impl io::Read,
    ) -> io::Result<()> {
        // Empty data (no snapshot yet) decodes as the empty state.
        let mut decoder = snapshot_data::Decoder::new(data)?;
        let (space, lease_trees) = (&self.reader.space, &self.reader.leases);
        space.clear()?;
        lease_trees.clear()?;
        for (id, ttl) in decoder.leases() {
            lease_trees.grant(*id, *ttl)?;
        }
        let mut keys = 0;
        while let Some(Version {
            revision,
            sub,
            row,
            live,
        }) = decoder.next_version()?
        {
            if live {
                keys += 1;
                if row.lease != 0 {
                    lease_trees.attach(row.lease, &row.key)?;
                }
            }
            space.write(revision, sub, &row)?;
        }
        self.lease_changes.send_modify(|count| *count += 1);
        let sm_meta = &self.reader.meta;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let compacted = decoder.compacted().unwrap_or(index).min(index);
        write_u64(sm_meta, COMPACT_DONE, compacted)?;
        let alarms: BTreeSet<u64> = decoder.alarms().iter().copied().collect();
        sm_meta
            .insert(ALARMS, encode(&alarms)?)
            .map_err(io::Error::other)?;
        sm_meta
            .insert(MEMBERSHIP, encode(&meta.last_membership)?)
            .map_err(io::Error::other)?;
        write_applied(
            sm_meta,
            &Applied {
                log_id: meta.last_log_id,
                compacted,
                keys,
            },
        )
    }

    /// Installs snapshot data received from elsewhere (see the module's
    /// durability rules): checked in one pass over its file, recorded as
    /// the install under way, loaded in a second pass. Blocks.
    fn install_received(&self, meta: &SnapshotMeta, mut received: Received) -> io::Result<()> {
        // Reject malformed data before anything is changed.
        snapshot_data::check_from(received.reader()?, meta.last_log_id.map_or(0, |l| l.index))?;
        let name = received
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.reader
            .meta
            .insert(INSTALLING, encode(&(meta, name))?)
            .map_err(io::Error::other)?;
        self.disk.sync()?;
        received.keep();
        crate::crash_point!("snapshot-install-before-load");
        self.load_installed(meta, received)
    }

    /// Replaces the state with the snapshot in `received`, syncs it, then
    /// ends the install: the marker goes, and the file.
    fn load_installed(&self, meta: &SnapshotMeta, received: Received) -> io::Result<()> {
        {
            let _installing = self.reader.revisions.installing();
            self.load_snapshot(&self.write_gate()?, meta, received.reader()?)?;
            self.disk.sync()?;
            self.publish()?;
        }
        self.reader
            .meta
            .remove(INSTALLING)
            .map_err(io::Error::other)?;
        received.remove()
    }

    /// "Installs" this node's own state at its applied revision under `meta`
    /// (forced recovery does, with a new membership): only `membership` and
    /// the applied log id change. Blocks.
    fn install_own(&self, meta: &SnapshotMeta, state: &StateAt) -> io::Result<()> {
        let gate = self.write_gate()?;
        let mut applied = read_applied(&self.reader.meta)?;
        let index = meta.last_log_id.map_or(0, |l| l.index);
        if state.revision() != applied.revision() || index != applied.revision() {
            return Err(io::Error::other(format!(
                "cannot install this node's own state at revision {} as a snapshot at index \
                 {index}: the state is at {}",
                state.revision(),
                applied.revision()
            )));
        }
        self.reader
            .meta
            .insert(MEMBERSHIP, encode(&meta.last_membership)?)
            .map_err(io::Error::other)?;
        applied.log_id = meta.last_log_id;
        write_applied(&self.reader.meta, &applied)?;
        drop(gate);
        self.disk.sync()
    }
}

/// What a snapshot needs from the state-machine task: its meta and the
/// pinned state, taken between two applies.
pub struct SnapshotBuilder {
    store: StateMachineStore,
    state: io::Result<(SnapshotMeta, StateAt)>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let state = std::mem::replace(
            &mut self.state,
            Err(io::Error::other("snapshot already built")),
        )?;
        let started = std::time::Instant::now();
        crate::crash_point!("snapshot-build-before-sync");
        // The trees through the snapshot's revision reach the disk before
        // openraft purges the log up to it. Nothing is copied.
        let disk = self.store.disk.clone();
        tokio::task::spawn_blocking(move || disk.sync())
            .await
            .map_err(io::Error::other)??;
        let metrics = crate::metrics::global();
        crate::metrics::observe_since(&metrics.snapshot_build, started);
        let (meta, state) = state;
        let data = SnapshotData::State(state);
        tracing::info!(last_log_id = ?meta.last_log_id, "snapshot taken");
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
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
        let reader = &self.reader;
        let meta = &reader.meta;
        let gate = self.write_gate()?;
        let mut compacted = reader.revisions.compacted();
        let mut results = Vec::with_capacity(batch.len());
        let mut leases_changed = false;
        let mut keys = reader.revisions.key_count();
        // Alarms changed by this batch, published with it.
        let mut alarms: Option<BTreeSet<u64>> = None;
        for (entry, responder) in batch {
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(command) => {
                    let mut apply =
                        EntryApply::new(&reader.space, &reader.leases, entry.log_id.index);
                    let result = apply.command(command, compacted)?;
                    leases_changed |= apply.effects.leases_changed;
                    if let Some(at) = apply.effects.compact {
                        compacted = at;
                    }
                    keys = keys.saturating_add_signed(apply.effects.keys_added);
                    if let Some((member, raise)) = apply.effects.alarm {
                        let set = alarms.get_or_insert_with(|| reader.alarms());
                        match (member, raise) {
                            (Some(member), true) => set.insert(member),
                            (Some(member), false) => set.remove(&member),
                            (None, false) => {
                                set.clear();
                                true
                            }
                            (None, true) => false,
                        };
                        // Replayed after a crash, the same entries end in
                        // the same set, whatever part of this was kept.
                        meta.insert(ALARMS, encode(&*set)?)
                            .map_err(io::Error::other)?;
                    }
                    // Rows of this entry written, `applied` not yet.
                    crate::crash_point!("apply-after-entry");
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
        write_applied(
            meta,
            &Applied {
                log_id: Some(last),
                compacted,
                keys,
            },
        )?;
        drop(gate);
        // Every row of the batch is written: readers may see it now, and a
        // client that saw its write applied at `i` and watches from `i` sees it.
        if let Some(alarms) = alarms {
            *reader.alarms.lock().unwrap_or_else(|e| e.into_inner()) = alarms;
        }
        reader.revisions.publish(last.index, compacted, keys);
        if leases_changed {
            self.lease_changes.send_modify(|count| *count += 1);
        }
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
        SnapshotBuilder {
            store: self.clone(),
            state: self.state_now(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let store = self.clone();
        let meta = meta.clone();
        let started = std::time::Instant::now();
        tokio::task::spawn_blocking(move || {
            let received = match snapshot {
                SnapshotData::State(state) if state.is_of(&store.reader) => {
                    return store.install_own(&meta, &state);
                }
                // Another store's state (in one process: tests).
                SnapshotData::State(state) => {
                    let mut incoming = Incoming::create(store.disk.dir())?;
                    state.encode_with_history(1 << 20, |chunk| incoming.write(&chunk))?;
                    incoming.finish()?
                }
                SnapshotData::Received(received) => received,
            };
            let bytes = received.len();
            store.install_received(&meta, received)?;
            let metrics = crate::metrics::global();
            crate::metrics::observe_since(&metrics.snapshot_install, started);
            metrics.snapshot_bytes.set(bytes as i64);
            tracing::info!(last_log_id = ?meta.last_log_id, bytes, "snapshot installed");
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The state now: a snapshot covers the last applied entry, and there
    /// is nothing older to keep.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let (meta, state) = self.state_now()?;
        Ok(meta.last_log_id.is_some().then(|| Snapshot {
            meta,
            snapshot: SnapshotData::State(state),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    /// Opens the state machine alone in `dir` (retrying while a previous
    /// handle's background threads still hold the database lock).
    fn open_in(dir: &std::path::Path) -> StateMachineStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match sled::open(dir) {
                Ok(db) => {
                    let disk = Arc::new(Disk::new(db.clone(), dir).unwrap());
                    return StateMachineStore::open(&db, disk, Arc::default()).unwrap();
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    assert!(e.to_string().contains("lock"), "{e}");
                    std::thread::yield_now();
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    /// Applies `command` at `revision` and publishes it, as `apply` does.
    fn apply_at(store: &StateMachineStore, command: Command, revision: u64) -> CommandResult {
        let reader = &store.reader;
        let mut apply = EntryApply::new(&reader.space, &reader.leases, revision);
        let result = apply
            .command(command, reader.revisions.compacted())
            .unwrap();
        let compacted = apply
            .effects
            .compact
            .unwrap_or(reader.revisions.compacted());
        let keys = reader
            .revisions
            .key_count()
            .saturating_add_signed(apply.effects.keys_added);
        let log_id = openraft::testing::log_id::<TypeConfig>(1, 1, revision);
        let applied = Applied {
            log_id: Some(log_id),
            compacted,
            keys,
        };
        write_applied(&reader.meta, &applied).unwrap();
        reader.revisions.publish(revision, compacted, keys);
        result
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn keys(store: &StateMachineStore) -> Vec<Vec<u8>> {
        let page = store.reader.scan(b"", b"", 1000, None).unwrap();
        page.pairs.into_iter().map(|kv| kv.key).collect()
    }

    #[test]
    fn reads_at_a_revision_and_refusals_outside_history() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, put("a", "1"), 1);
        apply_at(&store, put("a", "2"), 2);
        let reader = store.reader();
        let value = |at| reader.get(b"a", at).unwrap().0.map(|s| s.value);
        assert_eq!(value(Some(1)), Some(b"1".to_vec()));
        assert_eq!(value(None), Some(b"2".to_vec()));
        assert!(matches!(
            reader.get(b"a", Some(3)),
            Err(ReadError::Future {
                asked: 3,
                current: 2
            })
        ));
        apply_at(&store, Command::Compact { revision: 2 }, 3);
        assert!(matches!(
            reader.get(b"a", Some(1)),
            Err(ReadError::Compacted {
                asked: 1,
                compacted: 2
            })
        ));
        while store.compact_some(1).unwrap() {}
        assert_eq!(value(Some(2)), Some(b"2".to_vec()));
        assert!(
            reader.history(1, 1 << 20).is_err(),
            "history before the compaction"
        );
        let (rows, next) = reader.history(3, 1 << 20).unwrap();
        assert_eq!((rows.len(), next), (0, 4));
    }

    #[test]
    fn reads_and_walks_that_overlap_a_snapshot_install_are_refused() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, put("a", "1"), 1);
        let reader = store.reader();
        let (_, taken) = store.state_now().unwrap();
        let installing = reader.revisions.installing();
        assert!(matches!(reader.get(b"a", None), Err(ReadError::Installing)));
        assert!(matches!(
            reader.scan(b"", b"", 10, None),
            Err(ReadError::Installing)
        ));
        assert!(
            store.state_now().is_err(),
            "no snapshot of a state being replaced"
        );
        assert!(matches!(taken.to_vec(), Err(ReadError::Installing)));
        let epoch = reader.revisions.epoch();
        drop(installing);
        assert!(epoch.is_err());
        // A read that began before an install and ends after it.
        let epoch = reader.revisions.epoch().unwrap();
        drop(reader.revisions.installing());
        assert!(matches!(
            reader.revisions.check_epoch(epoch),
            Err(ReadError::Installing)
        ));
        assert_eq!(reader.get(b"a", None).unwrap().0.unwrap().value, b"1");
    }

    #[test]
    fn a_pinned_revision_keeps_its_rows_through_compaction() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, put("a", "1"), 1);
        let pin = store.reader.revisions.pin(1).unwrap();
        apply_at(&store, put("a", "2"), 2);
        apply_at(&store, Command::Compact { revision: 2 }, 3);
        while store.compact_some(10).unwrap() {}
        assert_eq!(
            store
                .reader
                .space
                .get(b"a", 1)
                .unwrap()
                .found()
                .unwrap()
                .value,
            b"1"
        );
        drop(pin);
        while store.compact_some(10).unwrap() {}
        assert_eq!(store.reader.space.get(b"a", 1).unwrap(), Lookup::Absent);
    }

    #[test]
    fn a_state_taken_for_a_snapshot_streams_whole_after_compaction_passes_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, put("a", "1"), 1);
        apply_at(&store, put("b", "1"), 2);
        let (_, state) = store.state_now().unwrap();
        let expected = state.to_vec().unwrap();
        let expected_history = with_history(&state);
        // Both keys change and compaction moves past revision 2 while the
        // snapshot is still being sent.
        apply_at(&store, put("a", "2"), 3);
        apply_at(&store, Command::Delete { key: b"b".to_vec() }, 4);
        apply_at(&store, Command::Compact { revision: 4 }, 5);
        while store.compact_some(1).unwrap() {}
        assert!(
            store.reader.get(b"a", Some(2)).is_err(),
            "compacted for readers"
        );
        assert_eq!(state.to_vec().unwrap(), expected);
        assert_eq!(with_history(&state), expected_history);
        drop(state);
        while store.compact_some(1).unwrap() {}
        assert_eq!(store.reader.space.get(b"b", 2).unwrap(), Lookup::Absent);
    }

    #[test]
    fn the_digest_is_fnv_1a_over_lengths_and_bytes_in_key_order_then_leases() {
        let dir = tempfile::TempDir::new().unwrap();
        let sm = open_in(dir.path());
        assert_eq!(sm.reader.digest().unwrap(), (0xcbf2_9ce4_8422_2325, 0, 0));
        apply_at(&sm, Command::LeaseGrant { ttl_seconds: 30 }, 4);
        apply_at(&sm, put("b", "22"), 5);
        apply_at(
            &sm,
            Command::PutLeased {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 4,
            },
            6,
        );
        // FNV-1a 64 by hand: offset basis, then xor and multiply per byte.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let be = |n: u64| n.to_be_bytes();
        let (six, four, five, none, one, thirty) = (be(6), be(4), be(5), be(0), be(1), be(30));
        for part in [
            &b"a"[..],
            b"1",
            &six,
            &four,
            &six,
            &one,
            b"b",
            b"22",
            &five,
            &none,
            &five,
            &one,
            &four,
            &thirty,
        ] {
            for byte in (part.len() as u64).to_be_bytes().iter().chain(part) {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        assert_eq!(sm.reader.digest().unwrap(), (hash, 2, 6));
    }

    #[test]
    fn snapshots_carry_revisions_and_rebuild_lease_keys() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, Command::LeaseGrant { ttl_seconds: 30 }, 1);
        apply_at(
            &store,
            Command::PutLeased {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: 1,
            },
            2,
        );
        apply_at(&store, put("a", "2"), 3);
        apply_at(&store, put("b", "x"), 4);
        let digest_at_4 = store.reader.digest().unwrap();
        let (meta, state) = store.state_now().unwrap();
        assert_eq!(meta.last_log_id.map(|l| l.index), Some(4));
        // Writes after it do not change it: it is the state at revision 4.
        apply_at(&store, put("c", "later"), 5);
        let data = state.to_vec().unwrap();
        let mut chunks = Vec::new();
        state
            .encode(8, |chunk| {
                chunks.push(chunk);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            chunks.len(),
            2,
            "a piece per record, each longer than 8 bytes"
        );
        assert_eq!(chunks.concat(), data);
        drop(state);
        let other_dir = tempfile::TempDir::new().unwrap();
        let other = open_in(other_dir.path());
        let changes = other.lease_changes();
        other
            .load_snapshot(&other.write_gate().unwrap(), &meta, &data[..])
            .unwrap();
        other.publish().unwrap();
        assert!(changes.has_changed().unwrap(), "the countdowns hear of it");
        assert_eq!(other.reader.digest().unwrap(), digest_at_4);
        assert_eq!(digest_at_4.1, 2, "a and b, not c");
        // History starts after the snapshot.
        assert_eq!(other.reader.revisions.compacted(), 4);
        assert_eq!(
            other.reader.lease_keys(1, 10).unwrap().0,
            Vec::<Vec<u8>>::new()
        );
        let a = other.reader.get(b"a", None).unwrap().0.unwrap();
        assert_eq!((a.created, a.modified, a.version, a.lease), (2, 3, 2, 0));
    }

    /// A state's encoding with history, whole.
    fn with_history(state: &StateAt) -> Vec<u8> {
        let mut data = Vec::new();
        state
            .encode_with_history(8, |chunk| {
                data.extend_from_slice(&chunk);
                Ok(())
            })
            .unwrap();
        data
    }

    /// Every event from `from` on, as (revision, key, value).
    fn events(store: &StateMachineStore, from: u64) -> Vec<(u64, Vec<u8>, Option<Vec<u8>>)> {
        let through = store.reader.revisions.current();
        let (rows, _) = store
            .reader
            .space
            .history(from, through, usize::MAX)
            .unwrap();
        rows.into_iter()
            .map(|(revision, row)| (revision, row.key, row.value))
            .collect()
    }

    /// The commands of `a_state_sent_with_history_…`, with their revisions.
    fn script_with_history() -> Vec<(Command, u64)> {
        vec![
            (Command::LeaseGrant { ttl_seconds: 30 }, 1),
            (put("a", "1"), 2),
            (put("a", "2"), 3),
            (put("b", "1"), 4),
            (Command::Delete { key: b"b".to_vec() }, 5),
            (Command::Compact { revision: 4 }, 6),
            (
                Command::PutLeased {
                    key: b"c".to_vec(),
                    value: b"x".to_vec(),
                    lease: 1,
                },
                7,
            ),
            (Command::Delete { key: b"a".to_vec() }, 8),
            (put("a", "3"), 9),
        ]
    }

    #[test]
    fn a_state_sent_with_history_serves_the_same_reads_and_watches_from_the_compaction_point() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        // Rows compaction dropped may still be in the trees after revision
        // 6: they must not be sent.
        for (command, revision) in script_with_history() {
            apply_at(&store, command, revision);
        }
        let (meta, state) = store.state_now().unwrap();
        assert_eq!(state.compacted(), 4);
        let data = with_history(&state);
        // Compaction goes on while it is sent: the pins keep what it needs.
        apply_at(&store, Command::Compact { revision: 9 }, 10);
        while store.compact_some(1).unwrap() {}
        assert_eq!(with_history(&state), data);
        drop(state);

        let other_dir = tempfile::TempDir::new().unwrap();
        let other = open_in(other_dir.path());
        assert_eq!(super::snapshot_data::check(&data, 9).unwrap(), 2);
        other
            .load_snapshot(&other.write_gate().unwrap(), &meta, &data[..])
            .unwrap();
        other.publish().unwrap();
        assert_eq!(other.reader.revisions.compacted(), 4, "the sender's");
        assert_eq!(other.reader.key_count(), 2);
        assert_eq!(
            other.reader.lease_keys(1, 10).unwrap().0,
            vec![b"c".to_vec()]
        );
        // Every revision from the compaction point reads the same as on
        // the sender when it was taken.
        let sender_dir = tempfile::TempDir::new().unwrap();
        let sender = open_in(sender_dir.path());
        for (command, revision) in script_with_history() {
            apply_at(&sender, command, revision);
        }
        let walk = |s: &StateMachineStore, revision| {
            let mut keys = Vec::new();
            s.reader
                .walk(revision, |kv| {
                    keys.push(kv.clone());
                    Ok(())
                })
                .unwrap();
            keys
        };
        for revision in 4..=9 {
            assert_eq!(
                walk(&other, revision),
                walk(&sender, revision),
                "at {revision}"
            );
        }
        assert!(other.reader.get(b"a", Some(3)).is_err(), "compacted");
        assert_eq!(events(&other, 5), events(&sender, 5));
        assert_eq!(events(&other, 5).len(), 4);
        assert_eq!(
            other.reader.digest().unwrap(),
            sender.reader.digest().unwrap()
        );
    }

    /// Leased keys, a revoke and more, as `apply` writes them.
    fn leased(key: &str, lease: u64) -> Command {
        Command::PutLeased {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
        }
    }

    #[test]
    fn after_a_crash_the_state_rolls_back_to_the_applied_revision_and_replays_alike() {
        // Reference: every entry applied once, no crash.
        let script = |revision: u64| match revision {
            1 => Command::LeaseGrant { ttl_seconds: 30 },
            2 => leased("a", 1),
            3 => leased("b", 1),
            4 => put("c", "1"),
            5 => Command::LeaseRevoke {
                id: 1,
                expired: true,
            },
            6 => put("c", "2"),
            7 => Command::LeaseGrant { ttl_seconds: 30 },
            _ => leased("d", 7),
        };
        let reference_dir = tempfile::TempDir::new().unwrap();
        let reference = open_in(reference_dir.path());
        for revision in 1..=8 {
            apply_at(&reference, script(revision), revision);
        }

        // Crashes after every cut of entries 5..=8: the rows of those entries
        // are written (the revoke's among them), `applied` still says 4.
        for applied in 4..8 {
            let dir = tempfile::TempDir::new().unwrap();
            let store = open_in(dir.path());
            for revision in 1..=applied {
                apply_at(&store, script(revision), revision);
            }
            let reader = &store.reader;
            for revision in applied + 1..=8 {
                let mut apply = EntryApply::new(&reader.space, &reader.leases, revision);
                apply.command(script(revision), 0).unwrap();
            }
            store.disk.sync().unwrap();
            drop(store);
            // No clean stop: rows after `applied` go, derived data is recounted.
            let store = open_in(dir.path());
            assert_eq!(store.reader.revisions.current(), applied);
            // The log replays what `applied` does not cover.
            for revision in applied + 1..=8 {
                apply_at(&store, script(revision), revision);
            }
            assert_eq!(
                store.reader.digest().unwrap(),
                reference.reader.digest().unwrap(),
                "cut after {applied}"
            );
            assert_eq!(store.reader.key_count(), 2, "c and d");
            assert_eq!(
                store.reader.lease_keys(7, 10).unwrap().0,
                vec![b"d".to_vec()]
            );
            assert_eq!(store.reader.lease_ttl(1).unwrap(), None);
            assert_eq!(store.reader.lease_count(), 1);
        }

        // A clean stop keeps the state as it is, and nothing writes after it.
        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, put("a", "1"), 4);
        apply_at(&store, put("c", "3"), 8);
        store.close_cleanly().unwrap();
        assert!(store.write_gate().is_err(), "a closed store refuses writes");
        drop(store);
        let store = open_in(dir.path());
        assert_eq!(keys(&store), vec![b"a".to_vec(), b"c".to_vec()]);
        // History survives a restart.
        let (rows, _) = store.reader.history(5, 1 << 20).unwrap();
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn an_install_cut_short_by_a_crash_is_loaded_again_then_forgotten() {
        let source_dir = tempfile::TempDir::new().unwrap();
        let source = open_in(source_dir.path());
        apply_at(&source, put("a", "1"), 3);
        let (meta, state) = source.state_now().unwrap();
        let data = state.to_vec().unwrap();

        let dir = tempfile::TempDir::new().unwrap();
        let store = open_in(dir.path());
        apply_at(&store, put("old", "x"), 1);
        // Received and recorded as the install under way, then the crash:
        // the state was never replaced.
        let mut received = Incoming::from_bytes(dir.path(), &data).unwrap();
        let name = received
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        store
            .reader
            .meta
            .insert(INSTALLING, encode(&(&meta, name)).unwrap())
            .unwrap();
        store.disk.sync().unwrap();
        received.keep();
        // A reception cut short leaves a file too.
        let mut cut = Incoming::create(dir.path()).unwrap();
        cut.write(b"partial").unwrap();
        std::mem::forget(cut);
        drop((store, received));
        let store = open_in(dir.path());
        assert_eq!(keys(&store), vec![b"a".to_vec()]);
        assert_eq!(store.reader.revisions.current(), 3);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(INCOMING_PREFIX))
            .collect();
        assert!(left.is_empty(), "no snapshot file is left behind");
        assert!(store.reader.meta.get(INSTALLING).unwrap().is_none());
        // A whole install leaves nothing behind either.
        let received = Incoming::from_bytes(dir.path(), &data).unwrap();
        store.install_received(&meta, received).unwrap();
        assert_eq!(keys(&store), vec![b"a".to_vec()]);
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(INCOMING_PREFIX))
                .count(),
            0
        );
        // Malformed data is refused before anything changes.
        let bad = Incoming::from_bytes(dir.path(), b"\xff\xff\xff\xff\x04garbage").unwrap();
        assert!(store.install_received(&meta, bad).is_err());
        assert_eq!(keys(&store), vec![b"a".to_vec()]);
    }

    #[test]
    fn the_state_of_the_version_before_revisions_is_converted_on_open() {
        let dir = tempfile::TempDir::new().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let kv = db.open_tree("kv").unwrap();
            kv.insert(b"k", record::encode(9, 0, b"v")).unwrap();
            let meta = db.open_tree("sm_meta").unwrap();
            meta.insert(KV_FORMAT, &[1]).unwrap();
            meta.insert(CLEAN, &[]).unwrap();
            let applied = Some(openraft::testing::log_id::<TypeConfig>(1, 1, 12));
            meta.insert(LAST_APPLIED, encode(&applied).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let store = open_in(dir.path());
        let (found, revision) = store.reader.get(b"k", None).unwrap();
        let found = found.unwrap();
        assert_eq!((found.created, found.modified, found.version), (1, 1, 1));
        assert_eq!(revision, 12);
        assert_eq!(store.reader.revisions.compacted(), 12);
        let db = store.database();
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"kv"));
        // A newer format is refused.
        store.reader.meta.insert(STORE_FORMAT, &[9]).unwrap();
        store.close_cleanly().unwrap();
        drop((store, db));
        let db = loop {
            if let Ok(db) = sled::open(dir.path()) {
                break db;
            }
            std::thread::yield_now();
        };
        let disk = Arc::new(Disk::new(db.clone(), dir.path()).unwrap());
        let refused = StateMachineStore::open(&db, disk, Arc::default())
            .err()
            .unwrap();
        assert!(refused.to_string().contains("newer raftkv"), "{refused}");
    }
}
