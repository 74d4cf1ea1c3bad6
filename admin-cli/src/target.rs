//! Where a command goes. Every call raft-admin makes goes through the typed
//! [`Client`]: to the leader (its own methods, which follow redirects and
//! leader changes until `--timeout`), or once to the one node a node-level
//! command is about ([`Target::on_node`], [`Target::on_address`]).

use std::time::Duration;

use anyhow::Context;
use raftkv_client::Call;
use raftkv_client::Client;

/// Where commands go.
pub struct Target {
    /// The nodes given on the command line, with their channels and the
    /// leader they last pointed at.
    pub client: Client,
    /// `--leader`/`--endpoints`: node-level commands go to the leader rather
    /// than to the one node named.
    pub follow_leader: bool,
    /// `--json`: print one JSON document instead of text.
    pub json: bool,
}

impl Target {
    /// The `--timeout` budget of one command.
    pub fn timeout(&self) -> Duration {
        self.client.timeout()
    }

    /// The address node-level commands go to: the named node, or the leader.
    pub async fn node_address(&self) -> anyhow::Result<String> {
        if self.follow_leader {
            Ok(self.client.leader().await?)
        } else {
            Ok(self.client.endpoints()[0].clone())
        }
    }

    /// Sends `call` to the node the command addresses (see
    /// [`Target::node_address`]), once: node-level reads and operations are
    /// about that node, so there is nothing to follow. A failure names the
    /// node after `what` (e.g. "reading the configuration from").
    pub async fn on_node<T>(&self, what: &str, call: Call<T>) -> anyhow::Result<T> {
        let address = self.node_address().await?;
        self.on_address(&address, what, call).await
    }

    /// Sends `call` to the node at `address`, once, within `--timeout`.
    pub async fn on_address<T>(
        &self,
        address: &str,
        what: &str,
        call: Call<T>,
    ) -> anyhow::Result<T> {
        let answer = self.client.node(address)?.call(call).await;
        answer.with_context(|| format!("{what} {address}"))
    }

    /// The client for a change the leader needs long for: each call gets a
    /// budget of at least `patience`. The leader is found first (through
    /// elections, like any call) within `--timeout`, so a cluster without
    /// one still fails as fast as any other command.
    pub async fn patiently(&self, patience: Duration) -> anyhow::Result<Client> {
        self.client.await_leader().await?;
        Ok(self.client.patient(patience))
    }
}
