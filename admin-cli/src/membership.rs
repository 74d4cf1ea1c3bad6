//! Membership changes: `add_voter`, `add_nonvoter`, `demote_voter` and
//! `remove_server`. Each is one Admin call to the leader; the leader checks
//! it against the configuration (known ids, free addresses, the last voter,
//! `PREVIOUS_INDEX`) and refuses with a message saying why.

use std::time::Duration;
use std::time::Instant;

use raftkv_proto::pb;
use serde_json::json;

use crate::target::Target;

/// How long add_voter waits for the leader's answer, at least. The leader
/// adds the node as a learner, waits up to two minutes for it to catch up
/// with the log, then promotes it; this leaves room for both configuration
/// changes on top, so the command does not give up on a change that is
/// still going to succeed.
const ADD_VOTER_PATIENCE: Duration = Duration::from_secs(150);

/// Prints a change's outcome: what happened, at which configuration index,
/// and how long the command took.
fn print_change(target: &Target, what: &str, answer: &pb::MembershipResponse, elapsed: Duration) {
    if target.json {
        println!(
            "{}",
            json!({ "result": what, "index": answer.index, "elapsed_ms": elapsed.as_millis() as u64 })
        );
    } else {
        println!(
            "{what} (configuration index {}, {} ms)",
            answer.index,
            elapsed.as_millis()
        );
    }
}

/// add_voter: learner, catch-up and promotion all happen on the leader
/// (Admin.AddVoter), so two operators adding nodes at once, or a leader
/// change halfway, cannot leave a half-done change behind a CLI that quit.
pub async fn add_voter(
    target: &mut Target,
    id: u64,
    address: &str,
    previous_index: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let answer = target
        .patiently(ADD_VOTER_PATIENCE)
        .await?
        .add_voter(id, address, previous_index)
        .await?;
    print_change(
        target,
        &format!("node {id} at {address} is a voter"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}

/// add_nonvoter: a learner receives the log but does not vote.
pub async fn add_nonvoter(
    target: &mut Target,
    id: u64,
    address: &str,
    previous_index: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let answer = target
        .client
        .add_learner(id, address, previous_index)
        .await?;
    print_change(
        target,
        &format!("node {id} at {address} is a non-voter"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}

/// demote_voter.
pub async fn demote_voter(target: &mut Target, id: u64, previous_index: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let answer = target.client.demote_voter(id, previous_index).await?;
    print_change(
        target,
        &format!("node {id} is a non-voter"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}

/// remove_server; removing the leader is done by the leader too (it hands
/// leadership over first), and the call follows it to its successor.
pub async fn remove_server(
    target: &mut Target,
    id: u64,
    previous_index: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let answer = target.client.remove_node(id, previous_index).await?;
    print_change(
        target,
        &format!("node {id} removed"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}
