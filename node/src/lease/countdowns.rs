//! The leader's countdowns of its leases: when each expires. Kept by
//! [`super::expiry`] and read by the keep-alive and time-to-live calls.

use std::collections::HashMap;

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The countdowns of a leader, shared by the expiry task and the keep-alive
/// and time-to-live handlers.
pub struct Countdowns {
    state: Mutex<State>,
    /// The lease table's change count (see `StateMachineStore::lease_changes`).
    table: watch::Receiver<u64>,
}

#[derive(Default)]
struct State {
    /// The term whose leadership these countdowns belong to; `None` while
    /// this node is not a leader that has started counting.
    term: Option<u64>,
    /// The table's change count the countdowns were last brought in line with.
    synced: u64,
    leases: HashMap<u64, Countdown>,
}

struct Countdown {
    ttl: Duration,
    deadline: Instant,
    /// It ran out: its revoke is due, keep-alives are refused.
    expiring: bool,
    /// Its revoke is being proposed.
    proposing: bool,
}

impl Countdown {
    pub(super) fn start(ttl_seconds: u64, now: Instant) -> Countdown {
        let ttl = Duration::from_secs(ttl_seconds);
        Countdown {
            ttl,
            deadline: now + ttl,
            expiring: false,
            proposing: false,
        }
    }
}

/// What a keep-alive found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// The countdown restarted from this TTL, in seconds.
    Renewed(u64),
    /// No such lease, or it is being expired.
    NotFound,
    /// This node does not count leases in this term (yet): not the leader,
    /// or a new leader still behind its read fence.
    NotCounting,
}

/// How long a lease has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remaining {
    Left(Duration),
    NotCounting,
}

impl Countdowns {
    /// Countdowns over the lease table whose changes `table` counts.
    pub fn new(table: watch::Receiver<u64>) -> Countdowns {
        Countdowns {
            state: Mutex::default(),
            table,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease table's change count now: read it before reading the table
    /// for [`Countdowns::keep_alive`].
    pub fn table_version(&self) -> u64 {
        *self.table.borrow()
    }

    /// Restarts lease `id`'s countdown if this node counts in `term`;
    /// `granted` is its TTL in the lease table as read at change count
    /// `version` (`None`: not in the table).
    pub fn keep_alive(&self, term: u64, id: u64, granted: Option<u64>, version: u64) -> KeepAlive {
        let mut state = self.lock();
        if state.term != Some(term) {
            return KeepAlive::NotCounting;
        }
        let Some(granted) = granted else {
            return KeepAlive::NotFound;
        };
        let now = Instant::now();
        if !state.leases.contains_key(&id) {
            // Granted since the last sync, so its countdown starts now; unless
            // the table changed since it was read and the sync already
            // dropped it (a revoke in between).
            if version < state.synced {
                return KeepAlive::NotFound;
            }
            state.leases.insert(id, Countdown::start(granted, now));
        }
        let Some(countdown) = state.leases.get_mut(&id) else {
            return KeepAlive::NotFound;
        };
        if countdown.expiring {
            return KeepAlive::NotFound;
        }
        countdown.deadline = now + countdown.ttl;
        KeepAlive::Renewed(countdown.ttl.as_secs())
    }

    /// What lease `id` (granted with `granted` seconds) has left in `term`.
    pub fn remaining(&self, term: u64, id: u64, granted: u64) -> Remaining {
        let state = self.lock();
        if state.term != Some(term) {
            return Remaining::NotCounting;
        }
        Remaining::Left(match state.leases.get(&id) {
            Some(countdown) => countdown.deadline.saturating_duration_since(Instant::now()),
            // Granted since the last sync: its countdown starts now.
            None => Duration::from_secs(granted),
        })
    }

    /// Starts counting in `term`: every lease of `table` (id, TTL), as read
    /// at change count `version`, at its full TTL.
    pub(super) fn start(&self, term: u64, table: &[(u64, u64)], version: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        state.term = Some(term);
        state.synced = version;
        state.leases = table
            .iter()
            .map(|(id, ttl)| (*id, Countdown::start(*ttl, now)))
            .collect();
    }

    /// Brings the countdowns in line with `table`, as read at change count
    /// `version`: new leases start, revoked ones go. Does nothing unless
    /// counting in `term`.
    pub(super) fn sync(&self, term: u64, table: &[(u64, u64)], version: u64) {
        let now = Instant::now();
        let mut state = self.lock();
        if state.term != Some(term) {
            return;
        }
        state.synced = version;
        let mut kept = HashMap::with_capacity(table.len());
        for (id, ttl) in table {
            let countdown = state
                .leases
                .remove(id)
                .unwrap_or_else(|| Countdown::start(*ttl, now));
            kept.insert(*id, countdown);
        }
        state.leases = kept;
    }

    /// Stops counting (this node no longer leads).
    pub(super) fn stop(&self) {
        let mut state = self.lock();
        if state.term.is_some() {
            state.term = None;
            state.leases.clear();
        }
    }

    /// The term counted in, if any.
    pub(super) fn term(&self) -> Option<u64> {
        self.lock().term
    }

    /// The leases whose countdown has run out and whose revoke is not being
    /// proposed; marks them expiring and proposing.
    pub(super) fn take_expired(&self) -> Vec<u64> {
        let now = Instant::now();
        let mut state = self.lock();
        let mut expired = Vec::new();
        for (id, countdown) in state.leases.iter_mut() {
            if !countdown.proposing && countdown.deadline <= now {
                countdown.expiring = true;
                countdown.proposing = true;
                expired.push(*id);
            }
        }
        expired
    }

    /// A revoke of `id` proposed in `term` failed: propose it again next
    /// tick (it stays expired).
    pub(super) fn retry(&self, term: u64, id: u64) {
        let mut state = self.lock();
        if state.term == Some(term) {
            if let Some(countdown) = state.leases.get_mut(&id) {
                countdown.proposing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn countdowns_restart_in_full_and_run_out_once() {
        let (_table, changes) = watch::channel(0);
        let countdowns = Countdowns::new(changes);
        assert_eq!(
            countdowns.keep_alive(3, 1, Some(5), 0),
            KeepAlive::NotCounting
        );
        countdowns.start(3, &[(1, 5), (2, 10)], 0);
        assert_eq!(
            countdowns.keep_alive(2, 1, Some(5), 0),
            KeepAlive::NotCounting
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            countdowns.keep_alive(3, 1, Some(5), 0),
            KeepAlive::Renewed(5)
        );
        assert_eq!(
            countdowns.remaining(3, 2, 10),
            Remaining::Left(Duration::from_secs(6))
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(countdowns.take_expired().is_empty(), "renewed 4 s ago");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(countdowns.take_expired(), vec![1]);
        assert!(countdowns.take_expired().is_empty(), "proposed once");
        assert_eq!(countdowns.keep_alive(3, 1, Some(5), 0), KeepAlive::NotFound);
        // The proposal failed: it is proposed again, and stays expired.
        countdowns.retry(3, 1);
        assert_eq!(countdowns.keep_alive(3, 1, Some(5), 0), KeepAlive::NotFound);
        assert_eq!(countdowns.take_expired(), vec![1]);
        // A lease missing from the table is not found, one granted since the
        // last sync starts now.
        assert_eq!(countdowns.keep_alive(3, 9, None, 0), KeepAlive::NotFound);
        assert_eq!(
            countdowns.keep_alive(3, 4, Some(7), 1),
            KeepAlive::Renewed(7)
        );
        countdowns.sync(3, &[(2, 10)], 2);
        // Read from the table before the sync that dropped it (revoked):
        // not brought back.
        assert_eq!(countdowns.keep_alive(3, 4, Some(7), 1), KeepAlive::NotFound);
        assert_eq!(
            countdowns.remaining(3, 4, 7),
            Remaining::Left(Duration::from_secs(7)),
            "not counted, so as if just granted"
        );
        // A new term restarts every countdown at its full TTL.
        countdowns.stop();
        assert_eq!(countdowns.remaining(3, 2, 10), Remaining::NotCounting);
        countdowns.start(5, &[(2, 10)], 2);
        assert_eq!(
            countdowns.remaining(5, 2, 10),
            Remaining::Left(Duration::from_secs(10))
        );
    }
}
