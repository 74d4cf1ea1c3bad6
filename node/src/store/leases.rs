//! Leases as the state machine stores them.
//!
//! Tree `leases`: lease id (u64, big-endian) → the TTL it was granted with
//! in seconds, how many keys it carries, their weight (see [`key_weight`]),
//! the revision that revoked it (0: live) and the revision that granted it
//! (0: loaded from a snapshot), five u64 big-endian. Rows of earlier
//! versions lack the last one or two: they were live, and their id was
//! their grant's revision.
//!
//! Ids: a server-chosen lease's id is its grant's revision, or the next id
//! above it that no lease row holds (a client may have taken it); a client
//! may choose any id that no lease row holds (etcd's `LeaseGrant` with an
//! ID). Both decisions read only the table, the same on every replica at
//! that revision. An id whose revoked row is still kept (until compaction
//! passes the revoke) is not free yet. Tree
//! `lease_keys`: lease id ++ user key → nothing, the keys each lease
//! carries, kept in step with the lease of each key's newest version so a
//! revoke finds its keys without walking every key.
//!
//! Replay: after a crash the log applies again entries whose writes are
//! partly in these trees. A revoke therefore marks its lease revoked at its
//! revision instead of removing it, and apply asks whether a lease is live
//! *at* a revision ([`LeaseTrees::live_at`]): the entry that revoked it
//! still sees it, and so does every earlier one, so each decides as it did
//! the first time; and after a crash the table can be put back as it was at
//! the applied revision ([`LeaseTrees::reset_to`]). Marked rows are removed
//! once compaction passes them ([`LeaseTrees::remove_revoked`]). The key
//! index and the counts are derived data: rebuilt from the key space after a
//! crash and whenever a snapshot is loaded, so snapshots carry only the
//! lease table.
//!
//! A lease carries at most [`MAX_LEASE_KEY_BYTES`] of key weight (tens of
//! thousands of keys: Kubernetes attaches every event of a minute to one
//! lease). Its revoke is one log entry whose deletes the node holds in
//! memory at once, and which a raftkv watcher receives in one message: the
//! budget keeps that message inside the smallest message limit a node has
//! (4 MiB + 64 KiB, more with larger `--max-value-bytes`), whatever the
//! keys' sizes.
//! An etcd watcher that asks for `fragment` gets it in several messages.
//! The snapshot check refuses a lease carrying more.
//!
//! When a lease expires is not stored anywhere: that is the leader's
//! countdown (`crate::lease`), restarted in full by every new leader.

use crate::store::disk::io_error;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The shortest TTL a lease may be granted with, in seconds.
pub const MIN_TTL_SECONDS: u64 = 1;
/// The longest TTL a lease may be granted with, in seconds (a year).
pub const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;
/// The most key weight one lease may carry: 3 MiB, about 27,000 keys of
/// 100 bytes. A delete event takes at most its key plus 17 bytes in a
/// raftkv watch message, one more than its weight, so a full lease's
/// revoke takes at most 3.2 MiB there, inside the 4 MiB + 64 KiB a node's
/// messages may always take (checked by a test in `grpc::watch`).
pub const MAX_LEASE_KEY_BYTES: u64 = 3 << 20;

/// What attaching `key` costs a lease: its bytes plus about what its delete
/// takes in a watch message.
pub fn key_weight(key: &[u8]) -> u64 {
    key.len() as u64 + 16
}

/// A lease as the table holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The TTL it was granted with, in seconds.
    pub ttl: u64,
    /// Keys attached.
    pub keys: u64,
    /// Their weight ([`key_weight`]), summed.
    pub key_bytes: u64,
    /// The revision of the revoke that ended it; 0 while it is live.
    pub revoked: u64,
    /// The revision of the grant; 0 for a lease loaded from a snapshot
    /// (granted before it).
    pub granted: u64,
}

impl LeaseInfo {
    fn encode(&self) -> [u8; 40] {
        let mut bytes = [0; 40];
        bytes[..8].copy_from_slice(&self.ttl.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.keys.to_be_bytes());
        bytes[16..24].copy_from_slice(&self.key_bytes.to_be_bytes());
        bytes[24..32].copy_from_slice(&self.revoked.to_be_bytes());
        bytes[32..].copy_from_slice(&self.granted.to_be_bytes());
        bytes
    }

    /// Lease `id`'s row. Also reads the 24-byte rows (live leases) and
    /// 32-byte rows (no grant revision: it was the id) of earlier versions.
    fn decode(id: u64, bytes: &[u8]) -> io::Result<LeaseInfo> {
        if ![24, 32, 40].contains(&bytes.len()) {
            return Err(malformed());
        }
        let field = |at: usize| match bytes.get(at..at + 8) {
            Some(field) => read_u64(field).map(Some),
            None => Ok(None),
        };
        Ok(LeaseInfo {
            ttl: read_u64(&bytes[..8])?,
            keys: read_u64(&bytes[8..16])?,
            key_bytes: read_u64(&bytes[16..24])?,
            revoked: field(24)?.unwrap_or(0),
            granted: field(32)?.unwrap_or(id),
        })
    }

    /// Whether the lease existed in the state before `revision` was applied
    /// (so also while `revision` itself is applied, revoke included).
    fn live_before(&self, revision: u64) -> bool {
        self.revoked == 0 || self.revoked >= revision
    }

    /// Whether `weight` more fits under [`MAX_LEASE_KEY_BYTES`].
    pub fn has_room_for(&self, weight: u64) -> bool {
        self.key_bytes.saturating_add(weight) <= MAX_LEASE_KEY_BYTES
    }
}

/// Leases and their TTLs in seconds, in id order.
pub type LeaseTable = Vec<(u64, u64)>;

/// The lease table and the index of which keys each lease carries.
#[derive(Clone)]
pub struct LeaseTrees {
    leases: sled::Tree,
    keys: sled::Tree,
    /// How many live leases the table holds, kept so a grant need not walk it.
    count: Arc<AtomicUsize>,
}

fn index_key(id: u64, key: &[u8]) -> Vec<u8> {
    let mut indexed = Vec::with_capacity(8 + key.len());
    indexed.extend_from_slice(&id.to_be_bytes());
    indexed.extend_from_slice(key);
    indexed
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed stored lease")
}

fn read_u64(bytes: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| malformed())?;
    Ok(u64::from_be_bytes(bytes))
}

impl LeaseTrees {
    /// Opens (or creates) both trees in `db`.
    pub fn open(db: &sled::Db) -> io::Result<LeaseTrees> {
        let open = |name: &str| db.open_tree(name).map_err(io_error);
        let leases = open("leases")?;
        let mut live = 0;
        for item in leases.iter() {
            let (id, info) = item.map_err(io_error)?;
            if LeaseInfo::decode(read_u64(&id)?, &info)?.revoked == 0 {
                live += 1;
            }
        }
        let count = Arc::new(AtomicUsize::new(live));
        Ok(LeaseTrees {
            leases,
            keys: open("lease_keys")?,
            count,
        })
    }

    /// Lease `id` as stored, revoked or not.
    fn stored(&self, id: u64) -> io::Result<Option<LeaseInfo>> {
        match self.leases.get(id.to_be_bytes()).map_err(io_error)? {
            Some(info) => Ok(Some(LeaseInfo::decode(id, &info)?)),
            None => Ok(None),
        }
    }

    /// Lease `id`, if it is live now.
    pub fn info(&self, id: u64) -> io::Result<Option<LeaseInfo>> {
        Ok(self.stored(id)?.filter(|info| info.revoked == 0))
    }

    /// Lease `id`, if it existed in the state before `revision` (for apply:
    /// see the module's notes on replay).
    pub fn live_at(&self, id: u64, revision: u64) -> io::Result<Option<LeaseInfo>> {
        Ok(self.stored(id)?.filter(|info| info.live_before(revision)))
    }

    /// The TTL lease `id` was granted with, if it is live.
    pub fn ttl(&self, id: u64) -> io::Result<Option<u64>> {
        Ok(self.info(id)?.map(|info| info.ttl))
    }

    fn store(&self, id: u64, info: &LeaseInfo) -> io::Result<Option<sled::IVec>> {
        self.leases
            .insert(id.to_be_bytes(), &info.encode()[..])
            .map_err(io_error)
    }

    /// Whether no lease row holds `id`, live or revoked: a client may take
    /// it.
    pub fn is_free(&self, id: u64) -> io::Result<bool> {
        Ok(self.stored(id)?.is_none())
    }

    /// The id a server-chosen grant at `revision` takes: `revision`, or
    /// the next id above it that no lease row holds.
    pub fn server_chosen_id(&self, revision: u64) -> io::Result<u64> {
        let mut id = revision;
        while !self.is_free(id)? {
            id = id.checked_add(1).ok_or_else(|| {
                io::Error::other("no lease id is free above the grant's revision")
            })?;
        }
        Ok(id)
    }

    /// Records lease `id` with `ttl_seconds` and no keys, granted at
    /// `granted` (0: loaded from a snapshot). Apply grants only free ids,
    /// so only a replay finds the row stored already.
    pub fn grant(&self, id: u64, ttl_seconds: u64, granted: u64) -> io::Result<()> {
        let info = LeaseInfo {
            ttl: ttl_seconds,
            granted,
            ..LeaseInfo::default()
        };
        let before = self.store(id, &info)?;
        let was_live = match before {
            Some(before) => LeaseInfo::decode(id, &before)?.revoked == 0,
            None => false,
        };
        if !was_live {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Notes that `key` is attached to lease `id` (which exists).
    pub fn attach(&self, id: u64, key: &[u8]) -> io::Result<()> {
        let added = self
            .keys
            .insert(index_key(id, key), &[])
            .map_err(io_error)?
            .is_none();
        match self.stored(id)? {
            Some(mut info) if added => {
                info.keys += 1;
                info.key_bytes = info.key_bytes.saturating_add(key_weight(key));
                self.store(id, &info)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Notes that `key` is no longer attached to lease `id`.
    pub fn detach(&self, id: u64, key: &[u8]) -> io::Result<()> {
        let removed = self
            .keys
            .remove(index_key(id, key))
            .map_err(io_error)?
            .is_some();
        match self.stored(id)? {
            Some(mut info) if removed => {
                info.keys = info.keys.saturating_sub(1);
                info.key_bytes = info.key_bytes.saturating_sub(key_weight(key));
                self.store(id, &info)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Marks lease `id` revoked at `revision` and returns the keys the index
    /// says it carries (all of them: the caller deletes them, then calls
    /// [`LeaseTrees::forget_keys`]); `None` if it did not exist before
    /// `revision`. Replaying the same revoke finds it again.
    pub fn revoke(&self, id: u64, revision: u64) -> io::Result<Option<Vec<Vec<u8>>>> {
        let Some(mut info) = self.live_at(id, revision)? else {
            return Ok(None);
        };
        if info.revoked == 0 {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        info.revoked = revision;
        self.store(id, &info)?;
        let mut keys = Vec::new();
        for item in self.keys.scan_prefix(id.to_be_bytes()) {
            let (indexed, _) = item.map_err(io_error)?;
            // Every entry under the prefix is longer than it.
            keys.push(indexed.get(8..).unwrap_or_default().to_vec());
        }
        Ok(Some(keys))
    }

    /// Removes what is left of lease `id`'s key index.
    pub fn forget_keys(&self, id: u64) -> io::Result<()> {
        for item in self.keys.scan_prefix(id.to_be_bytes()) {
            let (indexed, _) = item.map_err(io_error)?;
            self.keys.remove(&indexed).map_err(io_error)?;
        }
        Ok(())
    }

    /// Removes the rows of leases revoked at or before `through`, which no
    /// replay can reach any more (compaction passed them, after they were
    /// applied). Returns how many were removed.
    pub fn remove_revoked(&self, through: u64) -> io::Result<usize> {
        let mut removed = 0;
        for item in self.leases.iter() {
            let (id, info) = item.map_err(io_error)?;
            let revoked = LeaseInfo::decode(read_u64(&id)?, &info)?.revoked;
            if revoked != 0 && revoked <= through {
                self.leases.remove(&id).map_err(io_error)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The lease table as it was at `revision`, for recovery: grants after
    /// it are removed, revokes after it undone; the key index is emptied and
    /// every lease's key counts zeroed, for the caller to attach the keys
    /// again from the key space.
    pub fn reset_to(&self, revision: u64) -> io::Result<()> {
        self.keys.clear().map_err(io_error)?;
        let mut live = 0;
        for item in self.leases.iter() {
            let (id, info) = item.map_err(io_error)?;
            let info = LeaseInfo::decode(read_u64(&id)?, &info)?;
            if info.granted > revision {
                self.leases.remove(&id).map_err(io_error)?;
                continue;
            }
            let info = LeaseInfo {
                keys: 0,
                key_bytes: 0,
                revoked: if info.revoked > revision {
                    0
                } else {
                    info.revoked
                },
                ..info
            };
            if info.revoked == 0 {
                live += 1;
            }
            self.leases
                .insert(id, &info.encode()[..])
                .map_err(io_error)?;
        }
        self.count.store(live, Ordering::Relaxed);
        Ok(())
    }

    /// Up to `limit` keys attached to lease `id`, in key order, and whether
    /// more are attached.
    pub fn keys(&self, id: u64, limit: usize) -> io::Result<(Vec<Vec<u8>>, bool)> {
        let mut keys = Vec::new();
        if self.info(id)?.is_none() {
            return Ok((keys, false));
        }
        for item in self.keys.scan_prefix(id.to_be_bytes()) {
            let (indexed, _) = item.map_err(io_error)?;
            if keys.len() == limit {
                return Ok((keys, true));
            }
            keys.push(indexed.get(8..).unwrap_or_default().to_vec());
        }
        Ok((keys, false))
    }

    /// Every live lease and its TTL, in id order.
    pub fn all(&self) -> io::Result<Vec<(u64, u64)>> {
        let mut all = Vec::new();
        for item in self.leases.iter() {
            let (id, info) = item.map_err(io_error)?;
            let id = read_u64(&id)?;
            let info = LeaseInfo::decode(id, &info)?;
            if info.revoked == 0 {
                all.push((id, info.ttl));
            }
        }
        Ok(all)
    }

    /// How many live leases exist.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Removes every lease and the whole index.
    pub fn clear(&self) -> io::Result<()> {
        self.leases.clear().map_err(io_error)?;
        self.count.store(0, Ordering::Relaxed);
        self.keys.clear().map_err(io_error)
    }
}

/// A lease table as snapshot data carries it: `u32 count (BE)`, then per
/// lease `u64 id, u64 TTL seconds` (BE), in strictly increasing id order.
pub fn encode_table(leases: &[(u64, u64)], data: &mut Vec<u8>) -> io::Result<()> {
    let count = u32::try_from(leases.len()).map_err(io_error)?;
    data.extend_from_slice(&count.to_be_bytes());
    for (id, ttl) in leases {
        data.extend_from_slice(&id.to_be_bytes());
        data.extend_from_slice(&ttl.to_be_bytes());
    }
    Ok(())
}

/// Reads a table written by [`encode_table`] from the front of `data`;
/// returns it and the rest. Ids of 0, ids out of order or repeated, and
/// TTLs outside what a grant accepts are `InvalidData`.
pub fn decode_table(data: &[u8]) -> io::Result<(LeaseTable, &[u8])> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed snapshot lease table");
    let (count, mut rest) = data.split_first_chunk::<4>().ok_or_else(bad)?;
    let count = u32::from_be_bytes(*count) as usize;
    if rest.len() / 16 < count {
        return Err(bad());
    }
    let mut leases: Vec<(u64, u64)> = Vec::with_capacity(count);
    for _ in 0..count {
        let (id, after) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        let (ttl, after) = after.split_first_chunk::<8>().ok_or_else(bad)?;
        rest = after;
        let (id, ttl) = (u64::from_be_bytes(*id), u64::from_be_bytes(*ttl));
        let ordered = leases.last().is_none_or(|(previous, _)| *previous < id);
        if id == 0 || !ordered || !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
            return Err(bad());
        }
        leases.push((id, ttl));
    }
    Ok((leases, rest))
}

#[cfg(test)]
mod tests;
