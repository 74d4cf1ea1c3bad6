//! The system under load, as `--target` names it: a raftkv cluster (through
//! raftkv-client, see [`crate::raftkv`]) or etcd (see [`crate::etcd`]), behind
//! one `execute` so the client loop does not care which.

use std::time::Instant;

use crate::cli::RunArgs;
use crate::cli::Target;
use crate::etcd::Etcd;
use crate::op::Op;
use crate::op::Outcome;
use crate::raftkv::Cluster;
use crate::stats::LeaderChange;

/// A connected target.
pub(crate) enum SystemUnderLoad {
    // Boxed: a cluster handle is much larger than the etcd one.
    Raftkv(Box<Cluster>),
    Etcd(Etcd),
}

impl SystemUnderLoad {
    /// Connects to `endpoints` as `args.target` says, refusing what that
    /// target cannot do.
    pub async fn connect(args: &RunArgs, endpoints: &[String]) -> anyhow::Result<SystemUnderLoad> {
        match args.target {
            Target::Etcd => {
                if args.cas_ratio > 0.0 || args.cas_as_txn {
                    anyhow::bail!(
                        "--cas-ratio and --cas-as-txn are not supported with --target etcd"
                    );
                }
                let etcd = Etcd::new(endpoints, args.timeout, args.tls.load()?)?;
                if !etcd.reachable().await {
                    anyhow::bail!("no etcd member answers at {}", endpoints.join(","));
                }
                Ok(SystemUnderLoad::Etcd(etcd))
            }
            Target::Raftkv => {
                let mut cluster = Cluster::new(endpoints.to_vec(), args.timeout, args.tls.load()?)?;
                cluster.cas_as_txn = args.cas_as_txn;
                // No leader is an outage to measure, not a reason to stop: the run
                // goes on and the report shows how long writes waited for one.
                if cluster.leader().await.is_none() {
                    eprintln!(
                        "warning: no leader found among {} (is the cluster up?); \
                         running anyway, the wait for one counts as a write gap",
                        endpoints.join(",")
                    );
                }
                Ok(SystemUnderLoad::Raftkv(Box::new(cluster)))
            }
        }
    }

    /// Runs `op` for client `client` until it ends or `deadline` passes;
    /// `on_retry` hears the kind of every retried attempt.
    pub async fn execute(
        &self,
        client: u64,
        op: &Op,
        deadline: Instant,
        on_retry: impl FnMut(&'static str) + Send,
    ) -> Outcome {
        match self {
            SystemUnderLoad::Raftkv(cluster) => cluster.execute(op, deadline, on_retry).await,
            SystemUnderLoad::Etcd(etcd) => etcd.execute(client, op, deadline, on_retry).await,
        }
    }

    /// The nodes that served operations, relative to `start`; `None` where
    /// hammer cannot see leaders (etcd forwards writes itself).
    pub fn leader_changes(&self, start: Instant) -> Option<Vec<LeaderChange>> {
        match self {
            SystemUnderLoad::Raftkv(cluster) => Some(cluster.leader_changes(start)),
            SystemUnderLoad::Etcd(_) => None,
        }
    }
}
