//! Fast failover: followers whose leader's connection closes elect a new
//! leader at once instead of waiting out the old leader's tenure.
//!
//! (A *tenure* here is what openraft calls the leader lease: the time after
//! hearing from a leader during which a follower refuses to elect another.
//! It is not a key lease; those are `crate::lease`.)
//!
//! openraft lets a follower vote for a new leader only once the old leader's
//! tenure (`election_timeout_max`) has run out, and a follower campaigns only
//! when its own election timer fires: after a leader crash that costs about
//! half a second with the default timeouts. But when a leader process dies,
//! its kernel closes its TCP connections at once, and every follower sees the
//! connection that brought it AppendEntries end. Each follower then gives up
//! its copy of that leader's tenure, as it would if the leader had asked it to
//! hand leadership over (openraft's transfer-leader message), and campaigns
//! with a pre-vote: the lowest-id other voter at once, the others after a head
//! start each (`HEAD_START` times their rank, so two rarely campaign at
//! once), and only while no new leader is known. A later one wins when the
//! first one's log is behind (entries in flight when the leader died).
//!
//! Why this is safe: it changes only when a follower may grant a vote. A vote
//! still needs an up-to-date log and a majority, and reads are confirmed with
//! a quorum (read index), never on a tenure. And a wrong guess (the connection
//! closed but the leader lives, e.g. a paused follower whose connection the
//! leader's keep-alive dropped) disturbs nothing: the other followers still
//! hold the tenure and refuse the pre-vote, so no term is bumped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::raft::TransferLeaderRequest;
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::node::Raft;
use crate::types::NodeId;
use crate::types::Vote;

/// How long a follower lets the followers ranked before it (by id) try
/// before campaigning itself: an election takes a round trip and a vote
/// fsync on each side, a few milliseconds here.
const HEAD_START: Duration = Duration::from_millis(50);

/// Which inbound connection carries the current leader's AppendEntries.
#[derive(Debug, Default)]
pub struct LeaderLink {
    /// The peer address of that connection and the leader's vote it carried.
    last: Mutex<Option<(SocketAddr, Vote)>>,
}

impl LeaderLink {
    /// Records that an AppendEntries with `vote` arrived over the connection from `peer`.
    pub fn note_append(&self, peer: Option<SocketAddr>, vote: &Vote) {
        let Some(peer) = peer else { return };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() != Some(&(peer, *vote)) {
            *last = Some((peer, *vote));
        }
    }

    fn current(&self) -> Option<(SocketAddr, Vote)> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Watches closed connections; when the one carrying the current leader's
/// AppendEntries closes while this node follows that leader, drops that
/// leader's tenure and campaigns (see the module documentation). Ends when every
/// sender is gone (each accepted [`Connection`](crate::network::connection::Connection) holds one).
pub async fn watch(
    raft: Raft,
    id: NodeId,
    link: Arc<LeaderLink>,
    mut closed: mpsc::UnboundedReceiver<SocketAddr>,
) {
    while let Some(peer) = closed.recv().await {
        let Some((link_peer, vote)) = link.current() else {
            continue;
        };
        if link_peer != peer {
            continue;
        }
        let (leader, rank) = {
            let metrics = raft.metrics();
            let metrics = metrics.borrow_watched();
            let membership = metrics.membership_config.membership();
            let following = metrics.state == ServerState::Follower
                && metrics.vote == vote
                && membership.voter_ids().any(|v| v == id);
            let Some(leader) = metrics.current_leader.filter(|_| following) else {
                continue;
            };
            let mut others: Vec<NodeId> = membership.voter_ids().filter(|v| *v != leader).collect();
            others.sort_unstable();
            let rank = others.iter().position(|v| *v == id).unwrap_or(0);
            (leader, rank)
        };
        tracing::info!(
            leader,
            head_start = ?HEAD_START * rank as u32,
            "the leader's connection closed: not waiting out its tenure"
        );
        // Addressed to the old leader itself, so the message only drops this
        // node's tenure: nobody is told to start an election without a pre-vote.
        let request = TransferLeaderRequest::new(vote, leader, None);
        if let Err(e) = raft.handle_transfer_leader(request).await {
            tracing::debug!(cause = %e, "raft is stopping");
            return;
        }
        tokio::spawn(campaign_unless_led(
            raft.clone(),
            leader,
            vote,
            HEAD_START * rank as u32,
        ));
    }
}

/// After `head_start`, campaigns (with a pre-vote) unless a leader other than
/// the dead `leader` (whose vote was `vote`) is known by then, or this node
/// has voted in a newer term meanwhile: a candidate ranked before it is
/// being elected, and may simply not have sent its first heartbeat yet on a
/// loaded machine. Campaigning then would unseat it in a newer term.
async fn campaign_unless_led(raft: Raft, leader: NodeId, vote: Vote, head_start: Duration) {
    use openraft::vote::RaftLeaderId as _;
    if !head_start.is_zero() {
        tokio::time::sleep(head_start).await;
    }
    let leaderless = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.state != ServerState::Leader
            && metrics.vote.leader_id.term() <= vote.leader_id.term()
            && metrics
                .current_leader
                .is_none_or(|current| current == leader)
    };
    if leaderless {
        tracing::info!("no new leader yet: campaigning");
        if let Err(e) = raft.trigger().elect(true).await {
            tracing::debug!(cause = %e, "raft is stopping");
        }
    }
}
