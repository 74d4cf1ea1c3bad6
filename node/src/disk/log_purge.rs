//! When the Raft log is purged: behind each snapshot, but not past what a
//! follower still needs to catch up, within a bound.
//!
//! openraft on its own purges the log to `--snapshot-keep` entries behind
//! every snapshot, whatever its followers still need. A follower that
//! installs a large snapshot while writes go on (seconds for ~150 MB) then
//! finds the entries after that snapshot purged, needs another snapshot,
//! and under steady load may never catch up. So raftkv purges the log
//! itself: on the leader, no further than the slowest follower's matched
//! index, but always at least up to `--catch-up-entries` behind the
//! snapshot, so a follower that is gone for good cannot make the log grow
//! without bound. Followers purge as openraft would.
//!
//! Durability: purging is safe whenever the purged entries are in a
//! snapshot, which openraft checks (it purges nothing past its snapshot).

use std::time::Duration;

use openraft::type_config::async_runtime::WatchReceiver as _;
use tokio::sync::watch;

use crate::node::Raft;

/// How far the log may be purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePolicy {
    /// Entries kept behind the snapshot in any case (`--snapshot-keep`).
    pub keep: u64,
    /// Entries behind the snapshot kept at most for a follower that is
    /// catching up (`--catch-up-entries`).
    pub catch_up: u64,
}

/// How often the policy is applied at the least (also on a change of the
/// Raft metrics).
const PURGE_EVERY: Duration = Duration::from_secs(1);

/// How often the policy is applied at the most. The metrics change with
/// every write batch and every heartbeat round, thousands of times a second
/// under load, and a purge waits for a snapshot, which comes every several
/// thousand entries: looking at every change cost a busy leader about 1 %
/// of its CPU for nothing, and this delays a purge by 100 ms at most.
const PURGE_AT_MOST_EVERY: Duration = Duration::from_millis(100);

impl PurgePolicy {
    /// The index to purge through, or `None`: nothing to purge. `snapshot`
    /// is the snapshot's last index; `matched` the followers' and learners'
    /// matched indexes on a leader (`None` on other nodes).
    pub fn upto(&self, snapshot: Option<u64>, matched: Option<&[Option<u64>]>) -> Option<u64> {
        let snapshot = snapshot?;
        let by_keep = snapshot.checked_sub(self.keep)?;
        let upto = match matched {
            Some(matched) => {
                let slowest = matched
                    .iter()
                    .map(|m| m.unwrap_or(0))
                    .min()
                    .unwrap_or(u64::MAX);
                let floor = snapshot.saturating_sub(self.catch_up);
                by_keep.min(slowest.max(floor))
            }
            None => by_keep,
        };
        (upto > 0).then_some(upto)
    }
}

/// Applies `policy` until `stopping` turns true.
pub async fn run(raft: Raft, policy: PurgePolicy, mut stopping: watch::Receiver<bool>) {
    let mut metrics = raft.metrics();
    loop {
        let (upto, purged) = {
            let m = metrics.borrow_and_update();
            let matched: Option<Vec<Option<u64>>> = m.replication.as_ref().map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != m.id)
                    .map(|(_, log_id)| log_id.as_ref().map(|l| l.index))
                    .collect()
            });
            let snapshot = m.snapshot.as_ref().map(|l| l.index);
            (
                policy.upto(snapshot, matched.as_deref()),
                m.purged.as_ref().map_or(0, |l| l.index),
            )
        };
        if let Some(upto) = upto.filter(|upto| *upto > purged) {
            if raft.trigger().purge_log(upto).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            _ = tokio::time::sleep(PURGE_AT_MOST_EVERY) => {}
        }
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(PURGE_EVERY - PURGE_AT_MOST_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_kept_for_the_slowest_follower_within_the_catch_up_bound() {
        let policy = PurgePolicy {
            keep: 100,
            catch_up: 10_000,
        };
        // Before any snapshot, or within `keep` of the first: nothing.
        assert_eq!(policy.upto(None, None), None);
        assert_eq!(policy.upto(Some(100), None), None);
        // A follower purges `keep` behind its snapshot.
        assert_eq!(policy.upto(Some(5_000), None), Some(4_900));
        // A leader whose followers are all past that, likewise.
        assert_eq!(
            policy.upto(Some(5_000), Some(&[Some(6_000), Some(5_500)])),
            Some(4_900)
        );
        // One follower behind: kept for it.
        assert_eq!(
            policy.upto(Some(5_000), Some(&[Some(6_000), Some(1_200)])),
            Some(1_200)
        );
        // A follower that has nothing yet (installing a snapshot, or new).
        assert_eq!(policy.upto(Some(5_000), Some(&[Some(6_000), None])), None);
        // Not more than `catch_up` behind the snapshot.
        assert_eq!(
            policy.upto(Some(50_000), Some(&[Some(60_000), None])),
            Some(40_000)
        );
        // A leader alone.
        assert_eq!(policy.upto(Some(5_000), Some(&[])), Some(4_900));
    }
}
