//! raft-admin: the operator's command line for a raftkv cluster.
//!
//! A command goes to one node (`raft-admin ADDR …`) or to whichever node
//! leads (`--leader multi:///…` / `--endpoints …`). Changes always reach the
//! leader: a follower forwards them, and the leader-aware client follows
//! redirects and leader changes until `--timeout`.

mod cli;
mod inspect;
mod membership;
mod status;

use std::time::Duration;

use anyhow::bail;
use anyhow::Context;
pub use cli::Cli;
pub use cli::Command;
use raftkv_client::ClusterClient;
use raftkv_client::{self as client};
use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use tonic::transport::Channel;

/// Where commands go.
pub struct Target {
    /// The nodes given on the command line.
    pub client: ClusterClient,
    /// `--leader`/`--endpoints`: send node-level commands to the leader.
    pub follow_leader: bool,
    /// Print JSON.
    pub json: bool,
}

impl Target {
    fn timeout(&self) -> Duration {
        self.client.timeout
    }

    /// The address node-level commands go to: the given node, or the leader.
    async fn node_address(&mut self) -> anyhow::Result<String> {
        if self.follow_leader {
            Ok(self.client.find_leader().await?)
        } else {
            Ok(self.client.endpoints()[0].clone())
        }
    }

    /// A channel to the node node-level commands go to.
    async fn node_channel(&mut self) -> anyhow::Result<(String, Channel)> {
        let address = self.node_address().await?;
        let channel = self.client.channel(&address)?;
        Ok((address, channel))
    }

    /// Runs an admin call on the leader, following redirects and leader
    /// changes, each attempt carrying the command's deadline.
    async fn admin_on_leader<Req, Resp, F, Fut>(
        &mut self,
        request: Req,
        call: F,
    ) -> anyhow::Result<Resp>
    where
        Req: Clone,
        F: Fn(AdminClient<Channel>, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let timeout = self.timeout();
        let answer = self
            .client
            .on_leader(|channel| {
                let mut attempt = tonic::Request::new(request.clone());
                attempt.set_timeout(timeout);
                let answer = call(AdminClient::new(channel), attempt);
                async move { answer.await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(answer)
    }

    /// A request carrying the command's deadline.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout());
        request
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (endpoints, follow_leader) = match (&cli.leader, &cli.endpoints, &cli.address) {
        (Some(list), _, None) | (_, Some(list), None) => (client::parse_endpoints(list)?, true),
        (None, None, Some(address)) => {
            client::check_address(address)?;
            (vec![address.clone()], false)
        }
        (None, None, None) => {
            bail!("say which node to talk to: give ADDR (host:port), or --leader/--endpoints")
        }
        (_, _, Some(address)) => {
            bail!("give either ADDR ({address}) or --leader/--endpoints, not both")
        }
    };
    let mut target = Target {
        client: ClusterClient::new(endpoints, cli.timeout)?,
        follow_leader,
        json: cli.json,
    };
    match cli.command {
        Command::AddVoter {
            id,
            address,
            previous_index,
        } => membership::add_voter(&mut target, id, &address, previous_index.unwrap_or(0)).await,
        Command::AddNonvoter {
            id,
            address,
            previous_index,
        } => membership::add_nonvoter(&mut target, id, &address, previous_index.unwrap_or(0)).await,
        Command::DemoteVoter { id, previous_index } => {
            membership::demote_voter(&mut target, id, previous_index.unwrap_or(0)).await
        }
        Command::RemoveServer { id, previous_index } => {
            membership::remove_server(&mut target, id, previous_index.unwrap_or(0)).await
        }
        Command::LeadershipTransfer => membership::transfer(&mut target, 0, None).await,
        Command::LeadershipTransferToServer { id, address } => {
            if id == 0 {
                bail!("node id 0 is not valid; give the id of a voter");
            }
            membership::transfer(&mut target, id, address.as_deref()).await
        }
        Command::GetConfiguration => inspect::get_configuration(&mut target).await,
        Command::State
        | Command::Leader
        | Command::LastIndex
        | Command::AppliedIndex
        | Command::LastContact
        | Command::Stats => inspect::node_fact(&mut target, &cli.command).await,
        Command::Snapshot => inspect::snapshot(&mut target).await,
        Command::Barrier => inspect::barrier(&mut target).await,
        Command::VerifyLeader => inspect::verify_leader(&mut target).await,
        Command::Shutdown => inspect::shutdown(&mut target).await,
        Command::Status => status::status(&mut target).await,
        Command::Watch { count, interval } => status::watch(&mut target, count, interval).await,
        Command::Put { key, value } => inspect::put(&mut target, key, value).await,
        Command::Get { key, stale } => inspect::get(&mut target, key, stale).await,
        Command::Delete { key } => inspect::delete(&mut target, key).await,
        Command::Scan { prefix, limit } => inspect::scan(&mut target, prefix, limit).await,
    }
}

/// The configuration as seen by `target`'s node (or the leader).
async fn configuration(target: &mut Target) -> anyhow::Result<pb::ClusterConfiguration> {
    let (address, channel) = target.node_channel().await?;
    let request = target.request(pb::Empty {});
    let answer = AdminClient::new(channel)
        .get_configuration(request)
        .await
        .map_err(client::ClientError::Rpc)
        .with_context(|| format!("reading the configuration from {address}"))?;
    Ok(answer.into_inner())
}

/// A suffrage's name.
fn suffrage_name(suffrage: i32) -> &'static str {
    match pb::Suffrage::try_from(suffrage) {
        Ok(pb::Suffrage::Voter) => "Voter",
        Ok(pb::Suffrage::Learner) => "Nonvoter",
        _ => "Unknown",
    }
}
