//! Leader changes as this node sees them, kept so they can be shown after
//! the fact (`raft-admin top`): an election often ends within a few hundred
//! milliseconds, faster than anyone polling status would notice.
//!
//! A change starts when this node loses its leader: it stands as a
//! candidate, votes in a newer term, or hears of one (its leader becomes
//! unknown). It ends when it learns the new leader. A change straight from
//! one leader to another (a transfer seen by a bystander) starts and ends
//! at once. Times are wall-clock (Unix milliseconds), so that what nodes
//! saw can be laid side by side.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use raftkv_proto::pb;

use crate::node::Raft;
use crate::types::NodeId;

/// Changes kept: enough for a flapping minute, little memory.
const KEPT: usize = 16;

/// The latest leader changes this node saw, oldest first.
#[derive(Debug, Default)]
pub struct LeaderChanges {
    recent: Mutex<VecDeque<pb::LeaderChange>>,
}

impl LeaderChanges {
    /// The changes kept, oldest first.
    pub fn recent(&self) -> Vec<pb::LeaderChange> {
        self.lock().iter().cloned().collect()
    }

    fn push(&self, change: pb::LeaderChange) {
        let mut recent = self.lock();
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(change);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<pb::LeaderChange>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the watcher knows between two looks at Raft.
#[derive(Debug, Default)]
struct Watcher {
    /// This node.
    me: NodeId,
    /// The leader known, and its term.
    leader: Option<(NodeId, u64)>,
    /// The last leader known before it was lost.
    previous: Option<NodeId>,
    /// When this node lost its leader, while it has none.
    lost_at: Option<SystemTime>,
    /// This node stood as a candidate since it lost its leader.
    campaigned: bool,
}

impl Watcher {
    /// Takes in one look at Raft: `leader` and `term` as it reports them,
    /// whether this node is a candidate, at `now`. Returns the change that
    /// ended, if one did.
    fn look(
        &mut self,
        leader: Option<NodeId>,
        term: u64,
        candidate: bool,
        now: SystemTime,
    ) -> Option<pb::LeaderChange> {
        if candidate {
            self.campaigned = true;
        }
        match leader {
            None => {
                if self.lost_at.is_none() {
                    self.lost_at = Some(now);
                }
                if let Some((old, _)) = self.leader.take() {
                    self.previous = Some(old);
                }
                None
            }
            Some(new) if self.leader == Some((new, term)) => None,
            Some(new) => {
                // A winner may be a candidate for less than one look (the
                // metrics keep only the latest state): it stood all the same.
                if new == self.me {
                    self.campaigned = true;
                }
                let previous = self.leader.map(|(old, _)| old).or(self.previous);
                let started = self.lost_at.take().unwrap_or(now);
                let change = pb::LeaderChange {
                    term,
                    leader_id: new,
                    previous_leader_id: previous.unwrap_or(0),
                    started_unix_ms: unix_ms(started),
                    ended_unix_ms: unix_ms(now),
                    campaigned: std::mem::take(&mut self.campaigned),
                };
                self.leader = Some((new, term));
                self.previous = None;
                Some(change)
            }
        }
    }
}

/// Records every leader change `raft` reports into `changes`, and counts
/// it in `raftkv_leader_changes_total`, until Raft stops. The first leader
/// this node learns of counts too: its wait started with this task (a
/// starting node has none), or it was known already (a bootstrapped node
/// may lead before this runs).
pub async fn record(raft: Raft, changes: std::sync::Arc<LeaderChanges>) {
    // Role, vote and leader only: no wake-up per write.
    let mut watched = raft.server_metrics();
    let mut watcher = Watcher {
        me: raft.server_metrics().borrow_watched().id,
        lost_at: Some(SystemTime::now()),
        ..Watcher::default()
    };
    loop {
        let look = {
            let metrics = watched.borrow_watched();
            let vote = &metrics.vote;
            // openraft names the leader from its vote in memory, and reports
            // the vote once stored: a leader is taken only once the stored
            // vote is committed to it, so that no change is seen twice or
            // in the wrong term.
            let settled = metrics
                .current_leader
                .is_none_or(|leader| vote.is_committed() && vote.leader_id().node_id == leader);
            settled.then(|| {
                (
                    metrics.current_leader,
                    vote.leader_id().term,
                    metrics.state == ServerState::Candidate,
                )
            })
        };
        let change = look.and_then(|(leader, term, candidate)| {
            watcher.look(leader, term, candidate, SystemTime::now())
        });
        if let Some(change) = change {
            tracing::info!(
                term = change.term,
                leader = change.leader_id,
                took_ms = change.ended_unix_ms.saturating_sub(change.started_unix_ms),
                "new leader"
            );
            crate::metrics::global().leader_changes.inc();
            changes.push(change);
        }
        if watched.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn an_election_runs_from_the_lost_leader_to_the_new_one() {
        let mut watcher = Watcher {
            lost_at: Some(at(0)),
            ..Watcher::default()
        };
        let first = watcher
            .look(Some(1), 1, false, at(40))
            .expect("a first leader");
        assert_eq!(
            (first.leader_id, first.term, first.previous_leader_id),
            (1, 1, 0)
        );
        assert_eq!((first.started_unix_ms, first.ended_unix_ms), (0, 40));
        assert!(
            watcher.look(Some(1), 1, false, at(50)).is_none(),
            "no change"
        );

        // The leader dies: this node votes in term 2 (its leader is
        // unknown), stands itself in term 3, and node 3 wins term 3.
        assert!(watcher.look(None, 2, false, at(1000)).is_none());
        assert!(watcher.look(None, 3, true, at(1200)).is_none());
        assert!(watcher.look(None, 3, false, at(1250)).is_none());
        let second = watcher
            .look(Some(3), 3, false, at(1300))
            .expect("a new leader");
        assert_eq!(
            (second.leader_id, second.term, second.previous_leader_id),
            (3, 3, 1)
        );
        assert_eq!((second.started_unix_ms, second.ended_unix_ms), (1000, 1300));
        assert!(second.campaigned);

        // A transfer seen by a bystander: straight from one to the next.
        let third = watcher
            .look(Some(2), 4, false, at(2000))
            .expect("a transfer");
        assert_eq!((third.leader_id, third.previous_leader_id), (2, 3));
        assert_eq!((third.started_unix_ms, third.ended_unix_ms), (2000, 2000));
        assert!(!third.campaigned, "campaigning is forgotten once counted");
    }

    #[test]
    fn a_winner_stood_even_if_no_look_saw_it_stand() {
        let mut watcher = Watcher {
            me: 2,
            leader: Some((1, 1)),
            ..Watcher::default()
        };
        let won = watcher
            .look(Some(2), 2, false, at(10))
            .expect("a new leader");
        assert!(won.campaigned);
        let other = watcher
            .look(Some(3), 3, false, at(20))
            .expect("a new leader");
        assert!(!other.campaigned);
    }

    #[test]
    fn only_the_latest_changes_are_kept() {
        let changes = LeaderChanges::default();
        for term in 1..=(KEPT as u64 + 5) {
            changes.push(pb::LeaderChange {
                term,
                ..Default::default()
            });
        }
        let kept = changes.recent();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept.first().map(|c| c.term), Some(6));
        assert_eq!(kept.last().map(|c| c.term), Some(KEPT as u64 + 5));
    }
}
