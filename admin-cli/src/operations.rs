//! Operations on a node or on the log: `snapshot` (build one now on the
//! addressed node), `barrier` (wait until the leader has applied what is
//! committed) and `shutdown` (stop the addressed node gracefully).

use raftkv_client::Call;
use raftkv_proto::pb;
use serde_json::json;

use crate::cli::AlarmCommand;
use crate::target::Target;

/// snapshot.
pub async fn snapshot(target: &mut Target) -> anyhow::Result<()> {
    let answer = target.on_node("node", Call::snapshot()).await?;
    match (target.json, answer.index) {
        (true, index) => println!("{}", json!({ "snapshot_index": index })),
        (false, Some(index)) => println!("snapshot at index {index}"),
        (false, None) => println!("nothing to snapshot yet (no entry applied)"),
    }
    Ok(())
}

/// barrier: always on the leader, the only node whose applied index says
/// what the cluster has committed.
pub async fn barrier(target: &mut Target) -> anyhow::Result<()> {
    let answer = target.client.barrier().await?;
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

/// compact REVISION.
pub async fn compact(target: &mut Target, revision: u64) -> anyhow::Result<()> {
    let answer = target.client.compact(revision).await?;
    if target.json {
        println!(
            "{}",
            json!({ "revision": answer.revision, "index": answer.index })
        );
    } else {
        println!(
            "compacted: history before revision {} is dropped on every node (log index {})",
            answer.revision, answer.index
        );
    }
    Ok(())
}

/// alarm list | alarm disarm [--member N].
pub async fn alarm(target: &mut Target, command: AlarmCommand) -> anyhow::Result<()> {
    use pb::alarm_request::Action;
    let (action, member_id) = match command {
        AlarmCommand::List => (Action::List, 0),
        AlarmCommand::Disarm { member } => {
            if member == Some(0) {
                anyhow::bail!("node id 0 is not valid; leave --member out to disarm every alarm");
            }
            (Action::Disarm, member.unwrap_or(0))
        }
    };
    let answer = if action == Action::List {
        target
            .on_node("node", Call::alarm(action, member_id))
            .await?
    } else {
        target.client.alarm(action, member_id).await?
    };
    if target.json {
        println!(
            "{}",
            json!({
                "nospace_members": answer.nospace_members,
                "store_bytes": answer.store_bytes,
                "quota_bytes": answer.quota_bytes,
            })
        );
        return Ok(());
    }
    for member in &answer.nospace_members {
        println!("memberID:{member} alarm:NOSPACE");
    }
    if answer.nospace_members.is_empty() && action == Action::List {
        println!("no alarm raised");
    }
    if action == Action::Disarm {
        println!("disarmed");
    }
    println!(
        "store: {} of {} bytes ({:.1}%)",
        answer.store_bytes,
        answer.quota_bytes,
        answer.store_bytes as f64 * 100.0 / answer.quota_bytes.max(1) as f64
    );
    Ok(())
}

/// shutdown.
pub async fn shutdown(target: &mut Target) -> anyhow::Result<()> {
    let address = target.node_address().await?;
    // The address is resolved once: with --leader, the node that stops is
    // the one this line names, even if leadership moves meanwhile.
    target
        .on_address(&address, "node", Call::shutdown())
        .await?;
    println!("node at {address} is shutting down");
    Ok(())
}
