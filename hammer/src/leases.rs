//! `--leases N`: hold N leases alive through the run, each carrying one key,
//! and report every lease that ended without hammer asking.
//!
//! Each lease is renewed on the leader every third of its TTL, through leader
//! changes (`raftkv_client::lease::keep_alive`). At the end hammer asks the
//! leader for each lease and reads its key: a renewal answered "not found", a
//! lease missing at the end, or a key missing or moved to another lease is an
//! unexpected expiry. Then it revokes the leases and checks their keys went
//! with them.

use std::time::Duration;

use raftkv_client::lease::keep_alive;
use raftkv_client::lease::KeptAlive;
use raftkv_client::Client;
use raftkv_client::ClientOptions;
use raftkv_proto::pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::Code;

use crate::cli::RunArgs;
use crate::stats::LeaseReport;

/// Examples kept in the report.
const MAX_EXAMPLES: usize = 10;

/// The leases of a run, renewed until [`Holder::finish`].
pub struct Holder {
    /// Lease id and its key.
    leases: Vec<(u64, Vec<u8>)>,
    ttl: Duration,
    /// Shares its channels with every client made from it.
    client: Client,
    stop: watch::Sender<bool>,
    keepers: Vec<JoinHandle<KeptAlive>>,
}

/// Grants `args.leases` leases of `args.lease_ttl`, puts one key on each,
/// and starts renewing them.
pub async fn hold(args: &RunArgs, endpoints: &[String]) -> anyhow::Result<Holder> {
    let ttl = args.lease_ttl;
    // The grants, the renewals and the checks share the channels and what
    // they learn about the leader.
    let mut options = ClientOptions::new(endpoints.to_vec(), args.timeout);
    options.tls = args.tls.load()?;
    let base = Client::connect(options)?;
    // Each lease call may take up to a TTL, leader changes included, so a
    // renewal that gives up is retried in time.
    let cluster = base.within(ttl.max(args.timeout));
    let seconds = raftkv_client::lease::ttl_seconds(ttl)
        .ok_or_else(|| anyhow::anyhow!("--lease-ttl must be whole seconds, at least 1s"))?;
    let mut leases = Vec::new();
    for i in 0..args.leases {
        // A grant retried after UNAVAILABLE may grant twice; the spare lease
        // is never renewed and expires on its own.
        let id = cluster
            .lease_grant(seconds)
            .await
            .map_err(|e| anyhow::anyhow!("granting lease {i} of {}: {e}", args.leases))?
            .id;
        let key = format!("{}lease/{i}", args.key_prefix).into_bytes();
        cluster
            .put_leased(key.clone(), format!("held by lease {id}"), id)
            .await
            .map_err(|e| anyhow::anyhow!("attaching a key to lease {id}: {e}"))?;
        leases.push((id, key));
    }
    let (stop, stopped) = watch::channel(false);
    let mut keepers = Vec::with_capacity(leases.len());
    for (id, _) in &leases {
        let cluster = base.within(ttl);
        let mut stopped = stopped.clone();
        let stop = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        keepers.push(tokio::spawn(keep_alive(cluster, *id, ttl / 3, stop)));
    }
    Ok(Holder {
        leases,
        ttl,
        client: base,
        stop,
        keepers,
    })
}

impl Holder {
    /// Stops renewing, checks every lease and key, revokes the leases and
    /// checks their keys went.
    pub async fn finish(self) -> anyhow::Result<LeaseReport> {
        let mut report = LeaseReport {
            held: self.leases.len() as u64,
            ttl_s: self.ttl.as_secs(),
            ..LeaseReport::default()
        };
        // Checked while still renewed, so a short TTL cannot run out during the checks.
        let mut gone_at_end = Vec::with_capacity(self.leases.len());
        let cluster = self.client.within(self.ttl.max(Duration::from_secs(5)));
        for (id, key) in &self.leases {
            let id = *id;
            let alive = cluster.lease_time_to_live(id, false).await;
            let gone = match alive {
                Ok(_) => false,
                Err(e) if e.code() == Some(Code::NotFound) => true,
                Err(e) => anyhow::bail!("asking the cluster for lease {id}: {e}"),
            };
            let stored = get(&cluster, key).await?;
            let key_held = stored.as_ref().is_some_and(|answer| answer.lease == id);
            gone_at_end.push((gone, key_held));
        }
        self.stop.send_replace(true);
        let mut lost = vec![false; self.leases.len()];
        for (n, keeper) in self.keepers.into_iter().enumerate() {
            let kept = keeper.await?;
            report.renewals += kept.renewals;
            report.failed_renewals += kept.failed;
            if let Some(status) = kept.lost {
                lost[n] = true;
                note(
                    &mut report.examples,
                    format!(
                        "lease {}: a renewal found it gone: {}",
                        self.leases[n].0,
                        status.message()
                    ),
                );
            }
        }
        for (n, (gone, key_held)) in gone_at_end.into_iter().enumerate() {
            if gone || !key_held {
                if !lost[n] {
                    note(
                        &mut report.examples,
                        format!(
                            "lease {}: gone: {gone}, its key held: {key_held}",
                            self.leases[n].0
                        ),
                    );
                }
                lost[n] = true;
            }
        }
        report.unexpected_expiries = lost.iter().filter(|l| **l).count() as u64;
        // Clean up; a revoke takes its key with it.
        for (id, key) in &self.leases {
            let id = *id;
            let revoked = cluster.lease_revoke(id).await;
            match revoked {
                Ok(_) => report.revoked += 1,
                Err(e) if e.code() == Some(Code::NotFound) => {}
                Err(e) => anyhow::bail!("revoking lease {id}: {e}"),
            }
            if get(&cluster, key).await?.is_some() {
                report.keys_left_after_revoke += 1;
                note(
                    &mut report.examples,
                    format!("lease {id}: its key outlived the revoke"),
                );
            }
        }
        Ok(report)
    }
}

fn note(examples: &mut Vec<String>, example: String) {
    if examples.len() < MAX_EXAMPLES {
        examples.push(example);
    }
}

/// A linearizable read of `key` on the leader: the answer if found.
async fn get(cluster: &Client, key: &[u8]) -> anyhow::Result<Option<pb::GetResponse>> {
    let answer = cluster
        .read(key, false)
        .await
        .map_err(|e| anyhow::anyhow!("reading a lease's key: {e}"))?;
    Ok(answer.found.then_some(answer))
}
