//! What one node says about itself: `state`, `leader`, `last_index`,
//! `applied_index`, `last_contact` and `stats`, all answered from one
//! Admin.Status call to the addressed node (or the leader).
//!
//! JSON names a node's role `"role"`, in the lowercase words of `status`
//! (`raftkv_client::role_name`), so scripts read every command alike; the
//! text output keeps raftadmin's capitalised names (`Leader`).

use anyhow::bail;
use anyhow::Context;
use raftkv_client::role_name;
use raftkv_proto::pb;
use serde_json::json;

use crate::configuration::members_json;
use crate::configuration::suffrage_name;
use crate::target::Target;
use crate::Command;

/// A role as raftadmin prints it: `Leader`, `Follower`, ….
fn role_title(role: i32) -> String {
    let name = role_name(role);
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The status of the node the command addresses.
async fn node_status(target: &mut Target) -> anyhow::Result<pb::NodeStatus> {
    let address = target.node_address().await?;
    target
        .client
        .node(&address)?
        .status()
        .await
        .with_context(|| format!("asking {address} for its status"))
}

/// An index that may not exist yet, `-` then.
fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// How far a peer trails the leader's log, if both are known.
fn peer_lag(status: &pb::NodeStatus, peer: &pb::PeerStatus) -> Option<u64> {
    peer.matched_index
        .and_then(|m| status.last_log_index.map(|l| l.saturating_sub(m)))
}

/// The full status as JSON with stable field names (`stats --json`).
fn status_json(status: &pb::NodeStatus) -> serde_json::Value {
    let config = status.configuration.clone().unwrap_or_default();
    json!({
        "id": status.id,
        "cluster_id": format!("{:x}", status.cluster_id),
        "address": status.address,
        "role": role_name(status.role),
        "term": status.term,
        "leader_id": status.leader_id,
        "leader_address": status.leader_address,
        "last_log_index": status.last_log_index,
        "commit_index": status.committed_index,
        "applied_index": status.applied_index,
        "snapshot_index": status.snapshot_index,
        "purged_index": status.purged_index,
        "key_count": status.key_count,
        "vote": { "term": status.vote_term, "node_id": status.voted_for },
        "last_quorum_ack_ms": status.last_quorum_ack_ms,
        "configuration": members_json(&config),
        "peers": status.peers.iter().map(|p| json!({
            "id": p.id,
            "address": p.address,
            "suffrage": suffrage_name(p.suffrage),
            "matched_index": p.matched_index,
            "lag": peer_lag(status, p),
            "last_contact_ms": p.last_contact_ms,
        })).collect::<Vec<_>>(),
    })
}

/// state, leader, last_index, applied_index, last_contact, stats.
pub async fn node_fact(target: &mut Target, command: &Command) -> anyhow::Result<()> {
    let status = node_status(target).await?;
    let json = target.json;
    match command {
        Command::State if json => println!(
            "{}",
            json!({ "id": status.id, "role": role_name(status.role) })
        ),
        Command::State => println!("{}", role_title(status.role)),
        Command::Leader if status.leader_id == 0 => {
            bail!(
                "node {} knows no leader right now (election in progress?)",
                status.id
            )
        }
        Command::Leader if json => println!(
            "{}",
            json!({ "leader_id": status.leader_id, "leader_address": status.leader_address, "term": status.term })
        ),
        Command::Leader => println!("{} {}", status.leader_id, status.leader_address),
        Command::LastIndex if json => println!(
            "{}",
            json!({ "last_index": status.last_log_index.unwrap_or(0) })
        ),
        Command::LastIndex => println!("{}", status.last_log_index.unwrap_or(0)),
        Command::AppliedIndex if json => {
            println!(
                "{}",
                json!({ "applied_index": status.applied_index.unwrap_or(0) })
            )
        }
        Command::AppliedIndex => println!("{}", status.applied_index.unwrap_or(0)),
        Command::LastContact => print_last_contact(&status, json)?,
        _ if json => println!("{}", status_json(&status)),
        _ => print_stats(&status),
    }
    Ok(())
}

/// last_contact: only a leader tracks its peers, so any other node is an error.
fn print_last_contact(status: &pb::NodeStatus, json: bool) -> anyhow::Result<()> {
    if status.role != pb::Role::Leader as i32 {
        bail!(
            "node {} is not the leader; only the leader tracks contact with its peers (use --leader)",
            status.id
        );
    }
    if json {
        let peers: Vec<_> = status
            .peers
            .iter()
            .map(|p| json!({ "id": p.id, "address": p.address, "last_contact_ms": p.last_contact_ms }))
            .collect();
        println!("{}", json!({ "leader_id": status.id, "peers": peers }));
    } else {
        for peer in &status.peers {
            match peer.last_contact_ms {
                Some(ms) => println!("node {} ({}): {ms} ms ago", peer.id, peer.address),
                None => println!("node {} ({}): never", peer.id, peer.address),
            }
        }
    }
    Ok(())
}

/// stats as text: one fact per line, then one line per peer.
fn print_stats(status: &pb::NodeStatus) {
    let config = status.configuration.clone().unwrap_or_default();
    println!("id:                 {}", status.id);
    println!("cluster:            {:x}", status.cluster_id);
    println!("address:            {}", status.address);
    println!("state:              {}", role_title(status.role));
    println!("term:               {}", status.term);
    println!(
        "leader:             {} {}",
        status.leader_id, status.leader_address
    );
    println!(
        "vote:               term {} for node {}",
        status.vote_term, status.voted_for
    );
    println!("last_log_index:     {}", optional(status.last_log_index));
    println!("commit_index:       {}", optional(status.committed_index));
    println!("applied_index:      {}", optional(status.applied_index));
    println!("snapshot_index:     {}", optional(status.snapshot_index));
    println!("purged_index:       {}", optional(status.purged_index));
    println!("keys:               {}", status.key_count);
    println!(
        "configuration:      index {} ({} members)",
        config.index,
        config.members.len()
    );
    if let Some(ms) = status.last_quorum_ack_ms {
        println!("quorum acked:       {ms} ms ago");
    }
    for peer in &status.peers {
        println!(
            "peer {:<4}           {} {} matched={} lag={} last_contact={}",
            peer.id,
            peer.address,
            suffrage_name(peer.suffrage),
            optional(peer.matched_index),
            optional(peer_lag(status, peer)),
            peer.last_contact_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms}ms"))
        );
    }
}
