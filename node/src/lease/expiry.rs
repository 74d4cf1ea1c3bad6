//! Lease expiry: the leader's task that starts its countdowns when it
//! takes over, follows grants and revokes, and proposes the revoke of every
//! lease whose countdown runs out (see the rules in [`super`]).

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use super::Countdowns;
use crate::node::Consistency;
use crate::node::RaftNode;
use crate::types::Command;
use crate::types::CommandResult;

/// How often the leader looks for expired leases: the most a lease outlives
/// its TTL on a steady leader, besides the time its revoke takes to commit.
const TICK: Duration = Duration::from_millis(100);

/// The leader's term if this node leads, per its metrics.
fn leading_term(node: &RaftNode) -> Option<u64> {
    let metrics = node.metrics();
    (metrics.state == ServerState::Leader && metrics.current_leader == Some(node.id()))
        .then_some(metrics.current_term)
}

/// Runs the countdowns of `node` while it leads, until `stopping` turns
/// true. `changes` sees every change to the lease table.
pub async fn run(
    node: Arc<RaftNode>,
    countdowns: Arc<Countdowns>,
    mut changes: watch::Receiver<u64>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `changed` marks the change seen: remember it for the sync below.
        let table_changed = tokio::select! {
            _ = tick.tick() => changes.has_changed().unwrap_or(false),
            changed = changes.changed() => match changed {
                Ok(()) => true,
                Err(_) => return,
            },
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let Some(term) = leading_term(&node) else {
            countdowns.stop();
            continue;
        };
        if countdowns.term() != Some(term) {
            // Everything before this leader's first entry applied, revokes
            // of earlier leaders included (see the module's rules).
            if node.read_fence(Consistency::Linearizable).await.is_err()
                || leading_term(&node) != Some(term)
            {
                continue;
            }
            let version = *changes.borrow_and_update();
            match node.lease_table() {
                Ok(table) => {
                    countdowns.start(term, &table, version);
                    tracing::info!(term, leases = table.len(), "counting down leases as leader");
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "cannot read the lease table");
                    continue;
                }
            }
        } else if table_changed {
            let version = *changes.borrow_and_update();
            match node.lease_table() {
                Ok(table) => countdowns.sync(term, &table, version),
                Err(e) => tracing::warn!(cause = %e, "cannot read the lease table"),
            }
        }
        for id in countdowns.take_expired() {
            let (node, countdowns) = (node.clone(), countdowns.clone());
            tokio::spawn(async move {
                let revoke = Command::LeaseRevoke { id, expired: true };
                match node.write(revoke).await {
                    Ok((
                        index,
                        CommandResult::LeaseRevoked {
                            found: true,
                            keys_deleted,
                        },
                    )) => {
                        crate::metrics::global().leases_expired.inc();
                        tracing::info!(lease = id, index, keys_deleted, "lease expired");
                    }
                    // Revoked meanwhile, or by an earlier proposal of this one.
                    Ok((_, CommandResult::LeaseRevoked { found: false, .. })) => {}
                    Ok((_, other)) => {
                        tracing::warn!(lease = id, result = ?other, "unexpected result of a lease's expiry");
                    }
                    Err(e) => {
                        tracing::debug!(lease = id, cause = %e, "proposing a lease's expiry failed; retrying");
                        countdowns.retry(term, id);
                    }
                }
            });
        }
    }
}
