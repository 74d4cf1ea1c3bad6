//! The lease commands, like `etcdctl lease …`: `lease_grant TTL`,
//! `lease_revoke ID`, `lease_ttl ID [--keys]` and `lease_keepalive ID`
//! (renews until interrupted). Keys are attached with `put --lease ID`. All
//! go to the leader, which alone counts leases down.

use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use crate::target::Target;

/// lease_grant.
pub async fn grant(target: &mut Target, ttl: Duration) -> anyhow::Result<()> {
    let Some(seconds) = raftkv_client::lease::ttl_seconds(ttl) else {
        bail!("a lease TTL is whole seconds, at least 1s (got {ttl:?})");
    };
    let answer = target.client.lease_grant(seconds).await?;
    if target.json {
        println!("{}", json!({ "id": answer.id, "ttl": answer.ttl }));
    } else {
        println!("lease {} granted with TTL {} s", answer.id, answer.ttl);
    }
    Ok(())
}

/// lease_revoke.
pub async fn revoke(target: &mut Target, id: u64) -> anyhow::Result<()> {
    let answer = target.client.lease_revoke(id).await?;
    if target.json {
        println!(
            "{}",
            json!({ "id": id, "index": answer.index, "keys_deleted": answer.keys_deleted })
        );
    } else {
        println!(
            "lease {id} revoked at index {}; {} keys deleted",
            answer.index, answer.keys_deleted
        );
    }
    Ok(())
}

/// lease_ttl.
pub async fn time_to_live(target: &mut Target, id: u64, keys: bool) -> anyhow::Result<()> {
    let answer = target.client.lease_time_to_live(id, keys).await?;
    let names: Vec<_> = answer
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    if target.json {
        println!(
            "{}",
            json!({
                "id": id,
                "ttl": answer.ttl,
                "granted_ttl": answer.granted_ttl,
                "keys": keys.then_some(&names),
                "more_keys": answer.more_keys,
            })
        );
    } else {
        println!(
            "lease {id}: {} s left of {} s",
            answer.ttl, answer.granted_ttl
        );
        for name in &names {
            println!("  {name}");
        }
        if answer.more_keys {
            println!("  … and more");
        }
    }
    Ok(())
}

/// lease_keepalive: renews every third of the TTL until Ctrl-C (or `count`
/// renewals), printing each; ends with an error once the lease is gone.
pub async fn keep_alive(target: &mut Target, id: u64, count: u64) -> anyhow::Result<()> {
    let mut renewals = 0;
    loop {
        let answer = target.client.lease_keep_alive(id).await?;
        renewals += 1;
        if target.json {
            println!("{}", json!({ "id": id, "ttl": answer.ttl }));
        } else {
            println!("lease {id} kept alive (TTL {} s)", answer.ttl);
        }
        if count != 0 && renewals >= count {
            return Ok(());
        }
        let pause = Duration::from_secs(u64::try_from(answer.ttl).unwrap_or(1).max(1)) / 3;
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
