//! The key-value shortcuts: `put`, `get`, `delete` and `scan`, for checking
//! a cluster by hand. They go to the leader (found among `--leader` nodes,
//! or through the one node named), except `get --stale`, which reads the
//! addressed node's own copy.

use raftkv_client::Call;
use raftkv_proto::pb;
use serde_json::json;

use crate::target::Target;

/// put.
pub async fn put(
    target: &mut Target,
    key: String,
    value: String,
    lease: u64,
) -> anyhow::Result<()> {
    let answer = target.client.put_leased(key, value, lease).await?;
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
    let answer = if stale {
        target.on_node("node", Call::get(request)).await?
    } else {
        target.client.get_with(request).await?
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
    let answer = target.client.delete(key.clone()).await?;
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

/// delete --prefix.
pub async fn delete_prefix(target: &mut Target, prefix: String) -> anyhow::Result<()> {
    let answer = target.client.delete_prefix(prefix.clone()).await?;
    if target.json {
        println!(
            "{}",
            json!({ "index": answer.index, "deleted": answer.deleted })
        );
    } else {
        println!(
            "deleted {} key(s) starting with {prefix:?} (index {})",
            answer.deleted, answer.index
        );
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
    let answer = target.client.scan(request).await?;
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
