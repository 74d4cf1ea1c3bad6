//! `--join`: how a node that starts outside a cluster becomes one of its voters.
//!
//! The node asks the cluster to add it as a voter and keeps asking, with
//! backoff, through everything that passes: peers not up yet, elections,
//! other nodes joining at the same moment (the leader queues their changes,
//! and answers `ABORTED` if one still raced). Once it is a learner it knows
//! the leader and asks it first. It gives up only when the cluster refuses it
//! for good (a bad id or address, which retrying cannot fix) or when
//! `--join-timeout` runs out; the node then stops with the reason, so it never
//! runs on silently outside the cluster.

use std::time::Duration;
use std::time::Instant;

use raftkv_client::Backoff;
use tonic::Code;

use crate::node::RaftNode;

/// Pauses between two rounds of asking: 0.2 s doubling up to 5 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5))
}

/// Deadline of one request: the leader may wait up to two minutes for this
/// node to catch up before promoting it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(130);

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster refused this node for a reason retrying cannot change
    /// (its id or address clashes with a member, or is invalid).
    #[error("the cluster at {via} refused to add this node: {reason}")]
    Refused { via: String, reason: String },
    /// This node was still not a voter when `--join-timeout` ran out.
    #[error("still not a voter after {after:?} (--join-timeout); last answer: {last}")]
    TimedOut { after: Duration, last: String },
}

/// Whether a refusal with `code` is final: the request itself is wrong, or
/// the cluster's state forbids it until an operator changes something.
fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

/// Where to ask this round: the leader first once this node knows it (it is
/// a learner by then), then the `--join` addresses, never this node itself.
fn addresses_to_ask(node: &RaftNode, join: &[String]) -> Vec<String> {
    let mut addresses: Vec<String> = node
        .leader()
        .filter(|(id, _)| *id != node.id())
        .map(|(_, address)| address)
        .into_iter()
        .collect();
    for address in join {
        if address != node.address() && !addresses.contains(address) {
            addresses.push(address.clone());
        }
    }
    addresses
}

/// Asks the cluster at `join` (any member: followers forward to the leader)
/// to add `node` as a voter until it is one, or fails after `timeout`.
pub async fn join(node: &RaftNode, join: &[String], timeout: Duration) -> Result<(), JoinError> {
    let started = Instant::now();
    let mut backoff = backoff();
    let mut last = String::from("no answer yet");
    loop {
        if node.is_voter() {
            tracing::info!("this node is a voter of the cluster");
            return Ok(());
        }
        for address in addresses_to_ask(node, join) {
            let remaining = timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let client = match node.client_of(&address, remaining.min(REQUEST_TIMEOUT)) {
                Ok(client) => client,
                Err(e) => {
                    return Err(JoinError::Refused {
                        via: address,
                        reason: format!("not a usable address: {e}"),
                    })
                }
            };
            // Any configuration (previous index 0): a join must get in
            // whatever else changes.
            match client.add_voter(node.id(), node.address(), 0).await {
                Ok(answer) => {
                    tracing::info!(via = %address, index = answer.index, "joined the cluster as a voter");
                    return Ok(());
                }
                Err(e) => {
                    let (code, message) = match e.status() {
                        Some(status) => (Some(status.code()), status.message().to_string()),
                        None => (None, e.to_string()),
                    };
                    if code.is_some_and(is_final) {
                        return Err(JoinError::Refused {
                            via: address,
                            reason: message,
                        });
                    }
                    tracing::warn!(via = %address, ?code, cause = %message, "join attempt failed; will ask again");
                    last = format!("{address}: {code:?}: {message}");
                }
            }
        }
        let remaining = timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(JoinError::TimedOut {
                after: timeout,
                last,
            });
        }
        backoff.wait(tokio::time::Instant::now() + remaining).await;
    }
}
