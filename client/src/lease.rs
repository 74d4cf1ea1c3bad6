//! Keeping a lease alive through leader changes.

use std::future::Future;
use std::time::Duration;

use tonic::Code;
use tonic::Status;

use crate::Client;

/// `ttl` as a lease grant's TTL, whole seconds and at least one; `None`
/// when it is not one.
pub fn ttl_seconds(ttl: Duration) -> Option<i64> {
    if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(1) {
        return None;
    }
    i64::try_from(ttl.as_secs()).ok()
}

/// How a [`keep_alive`] ended.
#[derive(Debug, Default)]
pub struct KeptAlive {
    /// Renewals the leader confirmed.
    pub renewals: u64,
    /// Renewals that failed for another reason than the lease being gone
    /// (no leader within the client's timeout, …); each was tried again.
    pub failed: u64,
    /// The answer that said the lease is gone (`NOT_FOUND`), if one did.
    pub lost: Option<Status>,
}

/// Renews lease `id` on the leader, following leader changes, every `every`
/// until `stop` resolves or the cluster answers that the lease is gone. The
/// caller picks `every`: a third of the TTL leaves room for a failover. One
/// renewal follows leader changes for up to the client's timeout (give the
/// client about the TTL); if it fails it is counted, and the next beat tries
/// again.
pub async fn keep_alive(
    client: Client,
    id: u64,
    every: Duration,
    stop: impl Future<Output = ()>,
) -> KeptAlive {
    let mut kept = KeptAlive::default();
    let mut beat = tokio::time::interval(every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return kept,
            _ = beat.tick() => {}
        }
        let renewal = client.lease_keep_alive(id);
        let answer = tokio::select! {
            () = &mut stop => return kept,
            answer = renewal => answer,
        };
        match answer {
            Ok(_) => kept.renewals += 1,
            Err(error) if error.code() == Some(Code::NotFound) => {
                kept.lost = error.status().cloned();
                return kept;
            }
            Err(_) => kept.failed += 1,
        }
    }
}
