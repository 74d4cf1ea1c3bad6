//! The key-value shortcuts: `put`, `get`, `delete` and `scan`, for checking
//! a cluster by hand. They go to the leader (found among `--leader` nodes,
//! or through the one node named), except `get --stale`, which reads the
//! addressed node's own copy.

use raftkv_proto::pb;
use raftkv_proto::pb::kv_client::KvClient;
use serde_json::json;

use crate::target::Target;

/// put.
pub async fn put(
    target: &mut Target,
    key: String,
    value: String,
    lease: u64,
) -> anyhow::Result<()> {
    let request = pb::PutRequest {
        lease,
        key: key.into_bytes(),
        value: value.into_bytes(),
    };
    let answer = target
        .on_leader(request, |channel, request| async move {
            KvClient::new(channel).put(request).await
        })
        .await?;
    if target.json {
        println!("{}", json!({ "index": answer.index }));
    } else {
        println!("OK (index {})", answer.index);
    }
    Ok(())
}

/// get; a missing key is an error, so scripts can test the exit code.
pub async fn get(
    target: &mut Target,
    key: String,
    stale: bool,
    revision: Option<u64>,
) -> anyhow::Result<()> {
    let request = pb::GetRequest {
        key: key.clone().into_bytes(),
        stale,
        revision: revision.unwrap_or(0),
    };
    let call = |channel, request| async move { KvClient::new(channel).get(request).await };
    let answer = if stale {
        target.on_node("node", request, call).await?
    } else {
        target.on_leader(request, call).await?
    };
    let value = String::from_utf8_lossy(&answer.value);
    match (target.json, answer.found) {
        (true, found) => println!(
            "{}",
            json!({
                "key": key,
                "found": found,
                "value": found.then_some(value),
                "applied_index": answer.applied_index,
                "modified_index": found.then_some(answer.modified_index),
                "create_revision": found.then_some(answer.create_revision),
                "version": found.then_some(answer.version),
                "lease": (found && answer.lease != 0).then_some(answer.lease),
            })
        ),
        (false, true) => println!("{value}"),
        (false, false) => anyhow::bail!("key {key:?} not found"),
    }
    Ok(())
}

/// delete.
pub async fn delete(target: &mut Target, key: String) -> anyhow::Result<()> {
    let request = pb::DeleteRequest {
        key: key.clone().into_bytes(),
    };
    let answer = target
        .on_leader(request, |channel, request| async move {
            KvClient::new(channel).delete(request).await
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

/// scan.
pub async fn scan(
    target: &mut Target,
    prefix: String,
    limit: u32,
    revision: Option<u64>,
) -> anyhow::Result<()> {
    let request = pb::ScanRequest {
        prefix: prefix.into_bytes(),
        limit,
        revision: revision.unwrap_or(0),
        ..Default::default()
    };
    let answer = target
        .on_leader(request, |channel, request| async move {
            KvClient::new(channel).scan(request).await
        })
        .await?;
    if target.json {
        let pairs: Vec<_> = answer
            .pairs
            .iter()
            .map(|p| {
                json!({
                    "key": String::from_utf8_lossy(&p.key),
                    "value": String::from_utf8_lossy(&p.value),
                    "create_revision": p.create_revision,
                    "mod_revision": p.mod_revision,
                    "version": p.version,
                    "lease": (p.lease != 0).then_some(p.lease),
                })
            })
            .collect();
        println!(
            "{}",
            json!({ "pairs": pairs, "more": answer.more, "revision": answer.applied_index })
        );
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
