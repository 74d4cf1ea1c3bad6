//! The revisions readers may use ([`Revisions`]): the last applied
//! revision, the compaction point and the live key count as the apply
//! publishes them, the install epoch that refuses reads overlapping a
//! snapshot install, and the pins ([`Pin`]) that keep a revision's rows from
//! compaction while a walk or a snapshot reads them. Shared by the apply,
//! every reader and every snapshot; it reads no tree itself.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use super::keyspace::ReadError;

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
pub(super) struct InstallGuard(Arc<Revisions>);

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
    pub(super) fn new() -> Revisions {
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

    pub(super) fn publish(&self, current: u64, compacted: u64, keys: u64) {
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
    pub(super) fn installing(self: &Arc<Self>) -> InstallGuard {
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
    pub(super) fn removable_through(&self) -> u64 {
        let compacted = self.compacted();
        match self.lock_pins().keys().next() {
            Some(&pinned) => compacted.min(pinned),
            None => compacted,
        }
    }
}
