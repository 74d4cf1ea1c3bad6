//! Membership and leadership changes: add_voter, add_nonvoter, demote_voter,
//! remove_server, leadership_transfer(_to_server).

use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use raftkv_proto::pb;

use serde_json::json;

use crate::configuration;
use crate::Target;

/// How long add_voter waits for a new node to catch up, at least.
const MIN_CATCH_UP: Duration = Duration::from_secs(30);

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

pub async fn add_nonvoter(
    target: &mut Target,
    id: u64,
    address: &str,
    previous_index: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let request = pb::AddNodeRequest {
        node_id: id,
        address: address.to_string(),
        previous_index,
    };

    let answer = target
        .admin_on_leader(request, |mut c, r| async move { c.add_learner(r).await })
        .await?;
    print_change(
        target,
        &format!("node {id} at {address} is a non-voter"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}

pub async fn add_voter(
    target: &mut Target,
    id: u64,
    address: &str,
    previous_index: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let timeout = target.timeout();
    let learner = pb::AddNodeRequest {
        node_id: id,
        address: address.to_string(),
        previous_index,
    };
    let added = target
        .admin_on_leader(learner, |mut c, r| async move { c.add_learner(r).await })
        .await?;
    if !target.json {
        println!(
            "node {id} at {address} added as a learner (configuration index {})",
            added.index
        );
    }
    follow_catch_up(target, id, started).await?;
    // Already caught up: the leader promotes at once. previous_index was
    // checked when the learner was added; the configuration has moved since.
    let voter = pb::AddNodeRequest {
        node_id: id,
        address: address.to_string(),
        previous_index: 0,
    };
    let promote_timeout = timeout.max(MIN_CATCH_UP);
    target.client.timeout = promote_timeout;
    let answer = target
        .admin_on_leader(voter, |mut c, r| async move { c.add_voter(r).await })
        .await?;
    target.client.timeout = timeout;
    print_change(
        target,
        &format!("node {id} at {address} is a voter"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}

/// Prints the learner's replication progress until it has the leader's log.
async fn follow_catch_up(target: &mut Target, id: u64, started: Instant) -> anyhow::Result<()> {
    let deadline = started + target.timeout().max(MIN_CATCH_UP);
    let mut shown = None;
    loop {
        let leader = target.client.find_leader().await?;
        let status = target.client.status(&leader).await?;
        let goal = status.last_log_index.unwrap_or(0);
        let matched = status
            .peers
            .iter()
            .find(|p| p.id == id)
            .and_then(|p| p.matched_index);
        if let Some(matched) = matched {
            if matched >= goal {
                if !target.json {
                    println!("node {id} has caught up (index {matched})");
                }
                return Ok(());
            }
            if shown != Some(matched) && !target.json {
                println!("node {id} catching up: index {matched} of {goal}");
                shown = Some(matched);
            }
        }
        if Instant::now() > deadline {
            bail!("node {id} did not catch up within {:?}; is it running and reachable from the leader?", deadline - started);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn demote_voter(target: &mut Target, id: u64, previous_index: u64) -> anyhow::Result<()> {
    let started = Instant::now();

    let request = pb::NodeRequest {
        node_id: id,
        previous_index,
    };
    let answer = target
        .admin_on_leader(request, |mut c, r| async move { c.demote_voter(r).await })
        .await?;
    print_change(
        target,
        &format!("node {id} is a non-voter"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}

pub async fn remove_server(
    target: &mut Target,
    id: u64,
    previous_index: u64,
) -> anyhow::Result<()> {
    let started = Instant::now();

    let request = pb::NodeRequest {
        node_id: id,
        previous_index,
    };
    let answer = target
        .admin_on_leader(request, |mut c, r| async move { c.remove_node(r).await })
        .await?;
    print_change(
        target,
        &format!("node {id} removed"),
        &answer,
        started.elapsed(),
    );
    Ok(())
}

/// Moves leadership to `id` (0: the most up-to-date voter) and reports who
/// leads now and how long it took.
pub async fn transfer(target: &mut Target, id: u64, address: Option<&str>) -> anyhow::Result<()> {
    if let Some(address) = address {
        let config = configuration(target).await?;
        match config.members.iter().find(|m| m.id == id) {
            None => bail!("node {id} is not in the cluster; see get_configuration"),
            Some(member) if member.address != address => {
                bail!(
                    "node {id} is at {}, not {address}; check the id and address",
                    member.address
                )
            }
            Some(_) => {}
        }
    }
    let old_leader = target.client.find_leader().await.ok();
    let timeout = target.timeout();
    let request = pb::TransferLeaderRequest {
        node_id: id,
        timeout_ms: timeout.as_millis() as u64,
    };
    let started = Instant::now();
    let answer = target
        .admin_on_leader(
            request,
            |mut c, r| async move { c.transfer_leader(r).await },
        )
        .await?;
    let round_trip = started.elapsed();
    if target.json {
        println!(
            "{}",
            json!({
                "leader_id": answer.leader_id,
                "leader_address": answer.leader_address,
                "term": answer.term,
                "elapsed_ms": answer.elapsed_ms,
                "previous_leader_address": old_leader,
            })
        );
    } else {
        println!(
            "node {} ({}) is the leader now, term {}; the transfer took {} ms ({} ms round trip)",
            answer.leader_id,
            answer.leader_address,
            answer.term,
            answer.elapsed_ms,
            round_trip.as_millis()
        );
    }
    Ok(())
}
