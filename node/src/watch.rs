//! Watch: the changes the state machine applies, kept in a bounded window in
//! log order, and the watchers that read them.
//!
//! The state machine records each applied entry's changes here after writing
//! them (and before answering the writer), so a watcher that starts at index
//! `i` sees every change at `i` and after, on any node, from that node's
//! applied state. The window keeps the newest changes, at most
//! `--watch-history` entries and a byte budget; older ones are dropped, and
//! a watcher asking for them is told the oldest index still served (it
//! rescans, then watches from there). After a restart the window starts
//! empty at the applied index; a snapshot install (the log jumped) empties
//! it, since the changes it skipped are unknown.
//!
//! A watcher has a cursor into the window and a small channel to its stream.
//! It never holds more than that channel: a watcher too slow to keep up is
//! overtaken by the window, and its stream ends with the index to resume at.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;

use tokio::sync::watch;

/// One changed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    /// The new value; `None`: the key was deleted.
    pub value: Option<Vec<u8>>,
}

/// The changes one log entry made, in the order it made them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub changes: Vec<Change>,
}

impl WatchLimits {
    /// The defaults of `--watch-history` and `--watch-history-mb`.
    pub const DEFAULT: WatchLimits = WatchLimits {
        entries: 10_000,
        bytes: 4 << 20,
    };
}

impl Change {
    /// Roughly what it takes in memory, or in a message.
    pub fn bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + 32
    }
}

impl Applied {
    fn bytes(&self) -> usize {
        self.changes.iter().map(Change::bytes).sum()
    }
}

/// Bounds of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Entries (with changes) kept.
    pub entries: usize,
    /// Bytes of keys and values kept.
    pub bytes: usize,
}

struct Window {
    limits: WatchLimits,
    entries: VecDeque<Arc<Applied>>,
    bytes: usize,
    /// The smallest start index the window can serve: every change at this
    /// index or later is in it (or not yet applied).
    oldest: u64,
    /// The newest index applied (recorded or not: entries without changes
    /// move it too).
    applied: u64,
}

impl Window {
    /// Drops the oldest entries until the window is within its limits (one
    /// entry is kept whatever its size, so the newest change is served).
    fn shrink(&mut self) {
        while self.entries.len() > self.limits.entries
            || (self.bytes > self.limits.bytes && self.entries.len() > 1)
        {
            let Some(dropped) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= dropped.bytes();
            self.oldest = dropped.index + 1;
        }
    }
}

/// The window of recent changes, shared by the state machine (which
/// records) and the watchers (which read).
pub struct WatchHub {
    window: Mutex<Window>,
    /// The newest applied index, for watchers waiting for more.
    applied_tx: watch::Sender<u64>,
}

/// Why a watch cannot go on from where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// Changes before `oldest` are no longer kept: rescan, then watch from
    /// the index the scan reflects + 1 (at least `oldest`).
    Compacted { oldest: u64 },
}

impl WatchHub {
    /// A window whose state reflects everything up to `applied`.
    pub fn new(applied: u64, limits: WatchLimits) -> WatchHub {
        WatchHub {
            window: Mutex::new(Window {
                limits,
                entries: VecDeque::new(),
                bytes: 0,
                oldest: applied + 1,
                applied,
            }),
            applied_tx: watch::channel(applied).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what the entries up to `applied` changed (`changes` in log
    /// order; entries that changed nothing are absent).
    pub fn record(&self, changes: Vec<Applied>, applied: u64) {
        let mut window = self.lock();
        for entry in changes {
            let recorded = window.entries.back().map_or(0, |last| last.index);
            if entry.index < window.oldest || entry.index <= recorded {
                // Already in the window, or before it: never twice.
                continue;
            }
            window.bytes += entry.bytes();
            window.entries.push_back(Arc::new(entry));
        }
        window.shrink();
        window.applied = window.applied.max(applied);
        let applied = window.applied;
        drop(window);
        self.applied_tx.send_replace(applied);
    }

    /// Sets the window's bounds (`--watch-history`).
    pub fn set_limits(&self, limits: WatchLimits) {
        let mut window = self.lock();
        window.limits = limits;
        window.shrink();
    }

    /// The state jumped to `applied` without its changes (a snapshot was
    /// installed): nothing before it can be served.
    pub fn reset(&self, applied: u64) {
        let mut window = self.lock();
        window.entries.clear();
        window.bytes = 0;
        window.oldest = applied + 1;
        window.applied = applied;
        drop(window);
        self.applied_tx.send_replace(applied);
    }

    /// The start index of a watch that asks for `start` (0: from the next
    /// change), or why it cannot start there.
    pub fn start_at(&self, start: u64) -> Result<u64, Behind> {
        let window = self.lock();
        match start {
            0 => Ok(window.applied + 1),
            start if start < window.oldest => Err(Behind::Compacted {
                oldest: window.oldest,
            }),
            start => Ok(start),
        }
    }

    /// Up to `max` entries at `cursor` or later, oldest first, and the index
    /// to read from next; `Err` when the window has moved past `cursor`.
    pub fn read(&self, cursor: u64, max: usize) -> Result<(Vec<Arc<Applied>>, u64), Behind> {
        let window = self.lock();
        if cursor < window.oldest {
            return Err(Behind::Compacted {
                oldest: window.oldest,
            });
        }
        let first = window.entries.partition_point(|e| e.index < cursor);
        let entries: Vec<_> = window.entries.range(first..).take(max).cloned().collect();
        let next = match entries.last() {
            // More may follow in the window.
            Some(last) if entries.len() == max => last.index + 1,
            // Everything applied so far has been read.
            _ => cursor.max(window.applied + 1),
        };
        Ok((entries, next))
    }

    /// Waits until something after `index` is applied.
    pub async fn applied_beyond(&self, index: u64) {
        let mut applied = self.applied_tx.subscribe();
        let _ = applied.wait_for(|applied| *applied > index).await;
    }

    /// The oldest start index served, and the newest applied index.
    pub fn bounds(&self) -> (u64, u64) {
        let window = self.lock();
        (window.oldest, window.applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(index: u64, key: &str) -> Applied {
        Applied {
            index,
            changes: vec![Change {
                key: key.into(),
                value: Some(b"v".to_vec()),
            }],
        }
    }

    fn indexes(entries: &[Arc<Applied>]) -> Vec<u64> {
        entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn reads_follow_log_order_and_skip_entries_without_changes() {
        let hub = WatchHub::new(
            5,
            WatchLimits {
                entries: 100,
                bytes: 1 << 20,
            },
        );
        assert_eq!(hub.start_at(0), Ok(6));
        assert_eq!(hub.start_at(6), Ok(6));
        assert_eq!(hub.start_at(5), Err(Behind::Compacted { oldest: 6 }));
        hub.record(vec![put(6, "a"), put(8, "b")], 9);
        let (entries, next) = hub.read(6, 10).unwrap();
        assert_eq!((indexes(&entries), next), (vec![6, 8], 10));
        let (entries, next) = hub.read(7, 1).unwrap();
        assert_eq!((indexes(&entries), next), (vec![8], 9));
        let (entries, next) = hub.read(10, 10).unwrap();
        assert_eq!((indexes(&entries), next), (vec![], 10));
    }

    #[test]
    fn the_window_is_bounded_and_says_where_it_starts() {
        let hub = WatchHub::new(
            0,
            WatchLimits {
                entries: 3,
                bytes: 1 << 20,
            },
        );
        hub.record((1..=5).map(|i| put(i, "k")).collect(), 5);
        assert_eq!(hub.bounds(), (3, 5));
        assert_eq!(
            hub.read(2, 10).unwrap_err(),
            Behind::Compacted { oldest: 3 }
        );
        assert_eq!(indexes(&hub.read(3, 10).unwrap().0), vec![3, 4, 5]);
        let small = WatchHub::new(
            0,
            WatchLimits {
                entries: 100,
                bytes: 40,
            },
        );
        small.record((1..=3).map(|i| put(i, "k")).collect(), 3);
        assert_eq!(small.bounds(), (3, 3), "one entry fits in 40 bytes");
    }

    #[test]
    fn a_snapshot_install_forgets_the_window() {
        let hub = WatchHub::new(
            0,
            WatchLimits {
                entries: 10,
                bytes: 1 << 20,
            },
        );
        hub.record(vec![put(1, "a")], 1);
        hub.reset(50);
        assert_eq!(
            hub.read(1, 10).unwrap_err(),
            Behind::Compacted { oldest: 51 }
        );
        assert_eq!(hub.start_at(0), Ok(51));
    }
}
