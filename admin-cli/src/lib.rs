//! raft-admin: the operator's command line for a raftkv cluster.
//!
//! A command goes to one node (`raft-admin ADDR …`) or to whichever node
//! leads (`--leader multi:///…` / `--endpoints …`). Changes always reach the
//! leader: a follower forwards them, and the leader-aware client follows
//! redirects and leader changes until `--timeout`.
//!
//! Read in request order: `cli` (the flags), [`run`] here (which node,
//! which command), `target` (how a call gets there), then one module per
//! command family: `membership`, `leadership`, `configuration`,
//! `node_status`, `operations`, `backup`, `status`, `top`, `kv`, `watch_keys`.

mod backup;
mod certs;
mod cli;
mod configuration;
mod kv;
mod leadership;
mod lease;
mod membership;
mod node_status;
mod operations;
mod status;
mod target;
mod top;
mod watch_keys;

use anyhow::bail;
pub use cli::Cli;
pub use cli::Command;
use raftkv_client::Client;
use raftkv_client::ClientOptions;
use raftkv_client::{self as client};

use crate::target::Target;

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Certs(command) = cli.command {
        return certs::run(command);
    }
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
    let mut options = ClientOptions::new(endpoints, cli.timeout);
    options.tls = cli.tls.load()?;
    let mut target = Target {
        client: Client::connect(options)?,
        follow_leader,
        json: cli.json,
    };
    let target = &mut target;
    match cli.command {
        Command::AddVoter {
            id,
            address,
            previous_index,
        } => membership::add_voter(target, id, &address, previous_index.unwrap_or(0)).await,
        Command::AddNonvoter {
            id,
            address,
            previous_index,
        } => membership::add_nonvoter(target, id, &address, previous_index.unwrap_or(0)).await,
        Command::DemoteVoter { id, previous_index } => {
            membership::demote_voter(target, id, previous_index.unwrap_or(0)).await
        }
        Command::RemoveServer { id, previous_index } => {
            membership::remove_server(target, id, previous_index.unwrap_or(0)).await
        }
        Command::LeadershipTransfer => leadership::transfer(target, 0, None).await,
        Command::LeadershipTransferToServer { id, address } => {
            // 0 means "any voter" on the wire; here it can only be a typo.
            if id == 0 {
                bail!("node id 0 is not valid; give the id of a voter");
            }
            leadership::transfer(target, id, address.as_deref()).await
        }
        Command::VerifyLeader => leadership::verify_leader(target).await,
        Command::GetConfiguration => configuration::get_configuration(target).await,
        Command::State
        | Command::Leader
        | Command::LastIndex
        | Command::AppliedIndex
        | Command::LastContact
        | Command::Stats => node_status::node_fact(target, &cli.command).await,
        Command::Snapshot => operations::snapshot(target).await,
        Command::Barrier => operations::barrier(target).await,
        Command::Compact { revision } => operations::compact(target, revision).await,
        Command::Alarm(alarm) => operations::alarm(target, alarm).await,
        Command::Shutdown => operations::shutdown(target).await,
        Command::Backup { file } => backup::backup(target, &file).await,
        Command::Status => status::status(target).await,
        Command::Top {
            count,
            interval,
            once,
        } => top::top(target, count, interval, once).await,
        Command::Put { key, value, lease } => kv::put(target, key, value, lease).await,
        Command::LeaseGrant { ttl } => lease::grant(target, ttl).await,
        Command::LeaseRevoke { id } => lease::revoke(target, id).await,
        Command::LeaseTtl { id, keys } => lease::time_to_live(target, id, keys).await,
        Command::LeaseKeepalive { id, count } => lease::keep_alive(target, id, count).await,
        Command::Get {
            key,
            stale,
            revision,
        } => kv::get(target, key, stale, revision).await,
        Command::Delete { key, prefix: false } => kv::delete(target, key).await,
        Command::Delete { key, prefix: true } => kv::delete_prefix(target, key).await,
        Command::Scan {
            prefix,
            limit,
            revision,
        } => kv::scan(target, prefix, limit, revision).await,
        Command::WatchKeys {
            prefix,
            from,
            count,
        } => watch_keys::watch_keys(target, prefix, from, count).await,
        Command::Certs(_) => unreachable!("handled before any connection"),
    }
}
