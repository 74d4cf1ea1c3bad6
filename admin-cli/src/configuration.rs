//! `get_configuration`: the cluster's members, their addresses and
//! suffrage, as the addressed node (or the leader) knows them. The member
//! list is shared with `stats`, `status` and `leadership_transfer_to_server`.

use raftkv_client::Call;
use raftkv_proto::pb;
use serde_json::json;

use crate::target::Target;

/// The configuration as seen by `target`'s node (or the leader).
pub async fn configuration(target: &mut Target) -> anyhow::Result<pb::ClusterConfiguration> {
    target
        .on_node("reading the configuration from", Call::configuration())
        .await
}

/// A suffrage's name, as Hashicorp's raftadmin prints it.
pub fn suffrage_name(suffrage: i32) -> &'static str {
    match pb::Suffrage::try_from(suffrage) {
        Ok(pb::Suffrage::Voter) => "Voter",
        Ok(pb::Suffrage::Learner) => "Nonvoter",
        _ => "Unknown",
    }
}

/// The members as JSON, one object per server; `get_configuration --json`
/// and `stats --json` share it so scripts read both alike.
pub fn members_json(config: &pb::ClusterConfiguration) -> serde_json::Value {
    json!({
        "index": config.index,
        "committed": config.committed,
        "joint": config.joint,
        "servers": config.members.iter().map(|m| json!({
            "id": m.id, "address": m.address, "suffrage": suffrage_name(m.suffrage)
        })).collect::<Vec<_>>(),
    })
}

/// get_configuration.
pub async fn get_configuration(target: &mut Target) -> anyhow::Result<()> {
    let config = configuration(target).await?;
    if target.json {
        println!("{}", members_json(&config));
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
