//! Read access to the applied state ([`KvReader`]): reads at a revision,
//! scans, history, the lease table, the digest, and the walks snapshots
//! are encoded from. Every read checks the revisions it ran at (see
//! `revisions`) before and after, so a compaction or a snapshot install
//! that raced it is refused rather than seen half done. Apart from the
//! state machine so that snapshots, which read the state, do not depend on
//! what writes it.

use std::collections::BTreeSet;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::Mutex;

use super::keyspace::KeySpace;
use super::keyspace::KeyValue;
use super::keyspace::Lookup;
use super::keyspace::Ranged;
use super::keyspace::ReadError;
use super::keyspace::Row;
use super::keyspace::Version;
use super::leases::LeaseTrees;
use super::revisions::Revisions;
use super::size::StoreSize;
use super::sm_meta::read_applied;
use super::sm_meta::read_membership;
use crate::types::LogId;
use crate::types::Stored;
use crate::types::StoredMembership;

/// Keys read at a time when a snapshot, digest or count walks the state.
const WALK_PAGE: usize = 1024;

/// Read access to the applied state, for the client API and watchers.
#[derive(Clone)]
pub struct KvReader {
    pub(super) space: KeySpace,
    /// `last_applied`, `membership`, the compaction point.
    pub(super) meta: sled::Tree,
    /// The lease table and its keys.
    pub(super) leases: LeaseTrees,
    pub(super) revisions: Arc<Revisions>,
    /// Members whose NOSPACE alarm is raised, as of the last applied entry
    /// (stored in `sm_meta` under `alarms`).
    pub(super) alarms: Arc<Mutex<BTreeSet<u64>>>,
    /// The cluster's id as of the last applied entry (0: not named yet;
    /// stored in `sm_meta` under `cluster_id`).
    pub(super) cluster_id: Arc<std::sync::atomic::AtomicU64>,
    /// The cluster version as of the last applied entry (`Version::to_u64`;
    /// stored in `sm_meta` under `cluster_version`).
    pub(super) cluster_version: Arc<std::sync::atomic::AtomicU64>,
    /// What the store holds, counted (shared with the log).
    pub(super) size: Arc<StoreSize>,
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

    /// The live keys in `keys` at revision `at` (`None`: the newest): the
    /// first `limit` with their values, at most `max_bytes` of them (see
    /// [`Ranged::too_large`]), and how many there are in all; and the
    /// revision read at.
    pub fn range(
        &self,
        keys: (Bound<&[u8]>, Bound<&[u8]>),
        at: Option<u64>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Ranged, u64), ReadError> {
        let epoch = self.revisions.epoch()?;
        let revision = self.revisions.read_at(at)?;
        let ranged = self.space.range(keys, revision, limit, true, max_bytes)?;
        self.revisions.check_epoch(epoch)?;
        self.revisions.check_kept(revision)?;
        if ranged.lost {
            return Err(missing_version());
        }
        Ok((ranged, revision))
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
    pub(super) fn walk(
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

    /// The cluster's id (0: not named yet).
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The cluster version: every member runs it or a newer release.
    pub fn cluster_version(&self) -> crate::version::Version {
        crate::version::Version::from_u64(
            self.cluster_version
                .load(std::sync::atomic::Ordering::Acquire),
        )
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
