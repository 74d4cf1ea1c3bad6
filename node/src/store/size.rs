//! What the store holds, as the store counts it: the bytes of every key and
//! value in the key space's trees (every version, its index entry) and in
//! the Raft log's segments. This is the size the quota is held against
//! (`--quota-bytes`), not the size of sled's files: those grow with sled's
//! own overhead and never shrink, so an alarm raised on them could never
//! clear, while this count goes down as soon as compaction removes history
//! or a purge drops log segments.
//!
//! The key space's count is kept from what its trees return on every
//! insert and removal (sled hands back the value a key held), so it is
//! exact. The log counts the entries it has not purged (an entry purged is
//! hidden at once, though its segment stays on disk until every entry of
//! it is purged), from a few bytes per entry kept in memory. The lease trees are not counted: at most
//! `--max-leases` small entries and the keys they list.
//!
//! Durability: the key space's count is written with the `clean` marker on
//! a graceful stop and trusted only with it; after a crash it is counted
//! again from the trees. The log's count is taken from its unpurged
//! entries at every open (the log is bounded by the snapshot policy).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// The store's counted bytes, shared by the key space, the log and the quota.
#[derive(Debug, Default)]
pub struct StoreSize {
    key_space: AtomicU64,
    log: AtomicU64,
}

fn change(counter: &AtomicU64, added: u64, removed: u64) {
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        Some(n.saturating_add(added).saturating_sub(removed))
    });
}

impl StoreSize {
    /// Bytes of the key space and the log together.
    pub fn total(&self) -> u64 {
        self.key_space().saturating_add(self.log())
    }

    /// Bytes of the key space: every version and its index entry.
    pub fn key_space(&self) -> u64 {
        self.key_space.load(Ordering::Acquire)
    }

    /// Bytes of the log's entries not dropped yet.
    pub fn log(&self) -> u64 {
        self.log.load(Ordering::Acquire)
    }

    pub(super) fn change_key_space(&self, added: u64, removed: u64) {
        change(&self.key_space, added, removed);
    }

    pub(super) fn set_key_space(&self, bytes: u64) {
        self.key_space.store(bytes, Ordering::Release);
    }

    pub(super) fn change_log(&self, added: u64, removed: u64) {
        change(&self.log, added, removed);
    }
}

/// Bytes a stored pair takes in the count.
pub(super) fn pair_bytes(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_never_wrap() {
        let size = StoreSize::default();
        size.change_key_space(10, 0);
        size.change_log(5, 0);
        assert_eq!(size.total(), 15);
        size.change_key_space(0, 20);
        assert_eq!(size.key_space(), 0);
        size.set_key_space(7);
        assert_eq!(size.total(), 12);
    }
}
