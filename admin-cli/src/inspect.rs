//! Reading one node (get_configuration, state, leader, indexes, stats),
//! node operations (snapshot, barrier, verify_leader, shutdown) and the
//! key-value shortcuts (put, get, delete, scan).

use anyhow::Context;
use raftkv_client::role_name;
use raftkv_client::ClientError;
use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use raftkv_proto::pb::kv_client::KvClient;
use serde_json::json;

use crate::configuration;
use crate::suffrage_name;
use crate::Command;
use crate::Target;

fn role_title(role: i32) -> String {
    let name = role_name(role);
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

pub async fn get_configuration(target: &mut Target) -> anyhow::Result<()> {
    let config = configuration(target).await?;
    if target.json {
        let servers: Vec<_> = config
            .members
            .iter()
            .map(|m| json!({ "id": m.id, "address": m.address, "suffrage": suffrage_name(m.suffrage) }))
            .collect();
        println!(
            "{}",
            json!({ "index": config.index, "committed": config.committed, "joint": config.joint, "servers": servers })
        );
        return Ok(());
    }
    println!("{:<6} {:<24} SUFFRAGE", "ID", "ADDRESS");
    for member in &config.members {
        println!(
            "{:<6} {:<24} {}",
            member.id,
            member.address,
            suffrage_name(member.suffrage)
        );
    }
    println!(
        "configuration index {}{}{}",
        config.index,
        if config.committed {
            ""
        } else {
            " (not committed yet)"
        },
        if config.joint {
            " (joint: a change is in progress)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The status of the node the command addresses.
async fn node_status(target: &mut Target) -> anyhow::Result<pb::NodeStatus> {
    let address = target.node_address().await?;
    target
        .client
        .status(&address)
        .await
        .with_context(|| format!("asking {address} for its status"))
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The full status as JSON with stable field names.
pub fn status_json(status: &pb::NodeStatus) -> serde_json::Value {
    let config = status.configuration.clone().unwrap_or_default();
    json!({
        "id": status.id,
        "address": status.address,
        "state": role_title(status.role),
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
        "configuration": {
            "index": config.index,
            "committed": config.committed,
            "joint": config.joint,
            "servers": config.members.iter().map(|m| json!({
                "id": m.id, "address": m.address, "suffrage": suffrage_name(m.suffrage)
            })).collect::<Vec<_>>(),
        },
        "peers": status.peers.iter().map(|p| json!({
            "id": p.id,
            "address": p.address,
            "suffrage": suffrage_name(p.suffrage),
            "matched_index": p.matched_index,
            "lag": p.matched_index.and_then(|m| status.last_log_index.map(|l| l.saturating_sub(m))),
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
            json!({ "id": status.id, "state": role_title(status.role) })
        ),
        Command::State => println!("{}", role_title(status.role)),
        Command::Leader if status.leader_id == 0 => {
            anyhow::bail!(
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
        Command::LastContact => {
            if status.role != pb::Role::Leader as i32 {
                anyhow::bail!(
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
        }
        _ if json => println!("{}", status_json(&status)),
        _ => print_stats(&status),
    }
    Ok(())
}

fn print_stats(status: &pb::NodeStatus) {
    let config = status.configuration.clone().unwrap_or_default();
    println!("id:                 {}", status.id);
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
        let lag = peer
            .matched_index
            .and_then(|m| status.last_log_index.map(|l| l.saturating_sub(m)));
        println!(
            "peer {:<4}           {} {} matched={} lag={} last_contact={}",
            peer.id,
            peer.address,
            suffrage_name(peer.suffrage),
            optional(peer.matched_index),
            optional(lag),
            peer.last_contact_ms
                .map_or_else(|| "-".to_string(), |ms| format!("{ms}ms"))
        );
    }
}

/// Runs an admin call on the addressed node (or the leader).
async fn admin_call<T, F, Fut>(target: &mut Target, call: F) -> anyhow::Result<T>
where
    F: FnOnce(AdminClient<tonic::transport::Channel>, tonic::Request<pb::Empty>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let (address, channel) = target.node_channel().await?;
    let request = target.request(pb::Empty {});
    let answer = call(AdminClient::new(channel), request)
        .await
        .map_err(ClientError::Rpc);
    Ok(answer
        .with_context(|| format!("node {address}"))?
        .into_inner())
}

pub async fn snapshot(target: &mut Target) -> anyhow::Result<()> {
    let answer = admin_call(
        target,
        |mut c, r| async move { c.trigger_snapshot(r).await },
    )
    .await?;
    match (target.json, answer.index) {
        (true, index) => println!("{}", json!({ "snapshot_index": index })),
        (false, Some(index)) => println!("snapshot at index {index}"),
        (false, None) => println!("nothing to snapshot yet (no entry applied)"),
    }
    Ok(())
}

pub async fn barrier(target: &mut Target) -> anyhow::Result<()> {
    let answer = target
        .admin_on_leader(pb::Empty {}, |mut c, r| async move { c.barrier(r).await })
        .await?;
    if target.json {
        println!("{}", json!({ "index": answer.index }));
    } else {
        println!(
            "barrier reached: everything up to index {} is applied on the leader",
            answer.index
        );
    }
    Ok(())
}

pub async fn verify_leader(target: &mut Target) -> anyhow::Result<()> {
    let answer = target
        .admin_on_leader(
            pb::Empty {},
            |mut c, r| async move { c.verify_leader(r).await },
        )
        .await?;
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

pub async fn shutdown(target: &mut Target) -> anyhow::Result<()> {
    let (address, channel) = target.node_channel().await?;
    let request = target.request(pb::Empty {});
    AdminClient::new(channel)
        .shutdown(request)
        .await
        .map_err(ClientError::Rpc)?;
    println!("node at {address} is shutting down");
    Ok(())
}

/// Runs a KV call: on the leader with --leader, otherwise on the given node
/// (which forwards to the leader).
async fn kv_call<T, F, Fut>(target: &mut Target, call: F) -> anyhow::Result<T>
where
    F: Fn(KvClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let answer = target.client.on_leader(|channel| {
        let future = call(KvClient::new(channel));
        async move { future.await.map(|a| a.into_inner()) }
    });
    Ok(answer.await?)
}

pub async fn put(target: &mut Target, key: String, value: String) -> anyhow::Result<()> {
    let timeout = target.timeout();
    let request = pb::PutRequest {
        key: key.into_bytes(),
        value: value.into_bytes(),
    };
    let answer = kv_call(target, |mut c| {
        let mut r = tonic::Request::new(request.clone());
        r.set_timeout(timeout);
        async move { c.put(r).await }
    })
    .await?;
    if target.json {
        println!("{}", json!({ "index": answer.index }));
    } else {
        println!("OK (index {})", answer.index);
    }
    Ok(())
}

pub async fn get(target: &mut Target, key: String, stale: bool) -> anyhow::Result<()> {
    let request = pb::GetRequest {
        key: key.clone().into_bytes(),
        stale,
    };
    let answer = if stale {
        let (_, channel) = target.node_channel().await?;
        KvClient::new(channel)
            .get(target.request(request))
            .await
            .map_err(ClientError::Rpc)?
            .into_inner()
    } else {
        let timeout = target.timeout();
        kv_call(target, |mut c| {
            let mut r = tonic::Request::new(request.clone());
            r.set_timeout(timeout);
            async move { c.get(r).await }
        })
        .await?
    };
    let value = String::from_utf8_lossy(&answer.value);
    match (target.json, answer.found) {
        (true, found) => println!(
            "{}",
            json!({ "key": key, "found": found, "value": found.then_some(value), "applied_index": answer.applied_index })
        ),
        (false, true) => println!("{value}"),
        (false, false) => anyhow::bail!("key {key:?} not found"),
    }
    Ok(())
}

pub async fn delete(target: &mut Target, key: String) -> anyhow::Result<()> {
    let timeout = target.timeout();
    let request = pb::DeleteRequest {
        key: key.clone().into_bytes(),
    };
    let answer = kv_call(target, |mut c| {
        let mut r = tonic::Request::new(request.clone());
        r.set_timeout(timeout);
        async move { c.delete(r).await }
    })
    .await?;
    if target.json {
        println!(
            "{}",
            json!({ "index": answer.index, "existed": answer.existed })
        );
    } else if answer.existed {
        println!("deleted {key:?} (index {})", answer.index);
    } else {
        println!("{key:?} did not exist (index {})", answer.index);
    }
    Ok(())
}

pub async fn scan(target: &mut Target, prefix: String, limit: u32) -> anyhow::Result<()> {
    let timeout = target.timeout();
    let request = pb::ScanRequest {
        prefix: prefix.into_bytes(),
        limit,
        ..Default::default()
    };
    let answer = kv_call(target, |mut c| {
        let mut r = tonic::Request::new(request.clone());
        r.set_timeout(timeout);
        async move { c.scan(r).await }
    })
    .await?;
    if target.json {
        let pairs: Vec<_> = answer
            .pairs
            .iter()
            .map(|p| json!({ "key": String::from_utf8_lossy(&p.key), "value": String::from_utf8_lossy(&p.value) }))
            .collect();
        println!("{}", json!({ "pairs": pairs, "more": answer.more }));
    } else {
        for pair in &answer.pairs {
            println!(
                "{}\t{}",
                String::from_utf8_lossy(&pair.key),
                String::from_utf8_lossy(&pair.value)
            );
        }
        if answer.more {
            println!("… more keys follow (raise --limit)");
        }
    }
    Ok(())
}
