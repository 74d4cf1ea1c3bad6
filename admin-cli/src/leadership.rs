//! Who leads: `leadership_transfer`, `leadership_transfer_to_server` (move
//! leadership and report who leads now) and `verify_leader` (confirm the
//! leader still holds a quorum).

use std::time::Instant;

use anyhow::bail;
use serde_json::json;

use crate::configuration::configuration;
use crate::target::Target;

/// Moves leadership to `id` (0: the most up-to-date other voter) and reports
/// who leads now and how long it took. With `address`, first checks that it
/// is node `id`'s, so a mistyped id does not move leadership elsewhere.
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
    let old_leader = target.client.leader().await.ok();
    let started = Instant::now();
    // The leader waits as long as the command for the new leader to take over.
    let answer = target.client.transfer_leader(id, target.timeout()).await?;
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

/// verify_leader.
pub async fn verify_leader(target: &mut Target) -> anyhow::Result<()> {
    let answer = target.client.verify_leader().await?;
    if target.json {
        println!(
            "{}",
            json!({ "leader_id": answer.leader_id, "term": answer.term })
        );
    } else {
        println!(
            "node {} is the leader (term {}), confirmed by a quorum",
            answer.leader_id, answer.term
        );
    }
    Ok(())
}
