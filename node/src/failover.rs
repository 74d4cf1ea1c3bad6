//! Fast failover: followers whose leader's connection closes elect a new
//! leader at once instead of waiting out the old leader's lease.
//!
//! openraft lets a follower vote for a new leader only once the old leader's
//! lease (`election_timeout_max`) has run out, and a follower campaigns only
//! when its own election timer fires: after a leader crash that costs about
//! half a second with the default timeouts. But when a leader process dies,
//! its kernel closes its TCP connections at once, and every follower sees the
//! connection that brought it AppendEntries end. Each follower then gives up
//! its copy of that leader's lease, as it would if the leader had asked it to
//! hand leadership over (openraft's transfer-leader message), and campaigns
//! with a pre-vote: the lowest-id other voter at once, the others after a head
//! start each (`HEAD_START` times their rank, so two rarely campaign at
//! once), and only while no new leader is known. A later one wins when the
//! first one's log is behind (entries in flight when the leader died).
//!
//! Why this is safe: it changes only when a follower may grant a vote. A vote
//! still needs an up-to-date log and a majority, and reads are confirmed with
//! a quorum (read index), never on a lease. And a wrong guess (the connection
//! closed but the leader lives, e.g. a paused follower whose connection the
//! leader's keep-alive dropped) disturbs nothing: the other followers still
//! hold the lease and refuse the pre-vote, so no term is bumped.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::Context;
use std::task::Poll;

use openraft::raft::TransferLeaderRequest;
use openraft::type_config::async_runtime::WatchReceiver as _;
use openraft::ServerState;
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

use tokio::sync::mpsc;
use tonic::transport::server::Connected;
use tonic::transport::server::TcpConnectInfo;

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

/// An accepted connection that reports its peer address when it closes.
#[derive(Debug)]
pub struct TrackedStream {
    inner: TcpStream,
    peer: Option<SocketAddr>,
    closed: mpsc::UnboundedSender<SocketAddr>,
}

impl TrackedStream {
    /// Wraps `inner`; its peer address goes to `closed` when it is dropped.
    pub fn new(inner: TcpStream, closed: mpsc::UnboundedSender<SocketAddr>) -> TrackedStream {
        let peer = inner.peer_addr().ok();
        TrackedStream {
            inner,
            peer,
            closed,
        }
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            // The watcher is gone once the node stops: nothing to tell then.
            let _ = self.closed.send(peer);
        }
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for TrackedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

/// Watches closed connections; when the one carrying the current leader's
/// AppendEntries closes while this node follows that leader, drops that
/// leader's lease and campaigns (see the module documentation). Ends when every
/// [`TrackedStream`] sender is gone.
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
            "the leader's connection closed: not waiting out its lease"
        );
        // Addressed to the old leader itself, so the message only drops this
        // node's lease: nobody is told to start an election without a pre-vote.
        let request = TransferLeaderRequest::new(vote, leader, None);
        if let Err(e) = raft.handle_transfer_leader(request).await {
            tracing::debug!(cause = %e, "raft is stopping");
            return;
        }
        tokio::spawn(campaign_unless_led(
            raft.clone(),
            leader,
            HEAD_START * rank as u32,
        ));
    }
}

/// After `head_start`, campaigns (with a pre-vote) unless a leader other than
/// the dead `leader` is known by then.
async fn campaign_unless_led(raft: Raft, leader: NodeId, head_start: Duration) {
    if !head_start.is_zero() {
        tokio::time::sleep(head_start).await;
    }
    let leaderless = {
        let metrics = raft.metrics();
        let metrics = metrics.borrow_watched();
        metrics.state != ServerState::Leader
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
