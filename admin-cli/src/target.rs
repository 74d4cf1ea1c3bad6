//! Where a command goes and how it gets there. Every call raft-admin makes
//! passes through the helpers here, either once to one node
//! ([`Target::on_node`], [`Target::on_address`]) or to the leader
//! ([`Target::on_leader`], [`Target::on_leader_patiently`]), so each carries
//! the command's deadline and only the leader-aware [`ClusterClient`] decides
//! about retries and redirects.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use raftkv_client::cluster::with_timeout;
use raftkv_client::ClusterClient;
use tonic::transport::Channel;

/// Where commands go.
pub struct Target {
    /// The nodes given on the command line, with their channels and the
    /// leader they last pointed at.
    pub client: ClusterClient,
    /// `--leader`/`--endpoints`: node-level commands go to the leader rather
    /// than to the one node named.
    pub follow_leader: bool,
    /// `--json`: print one JSON document instead of text.
    pub json: bool,
}

/// `message` as a request whose deadline the server sees too, so a node
/// stops working on it once the caller has given up.
fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

impl Target {
    /// The `--timeout` budget of one command.
    pub fn timeout(&self) -> Duration {
        self.client.timeout
    }

    /// The address node-level commands go to: the named node, or the leader.
    pub async fn node_address(&mut self) -> anyhow::Result<String> {
        if self.follow_leader {
            Ok(self.client.find_leader().await?)
        } else {
            Ok(self.client.endpoints()[0].clone())
        }
    }

    /// Sends one request to the node the command addresses (see
    /// [`Target::node_address`]), once: node-level reads and operations are
    /// about that node, so there is nothing to follow. A failure names the
    /// node after `what` (e.g. "reading the configuration from").
    pub async fn on_node<Req, Resp, F, Fut>(
        &mut self,
        what: &str,
        message: Req,
        call: F,
    ) -> anyhow::Result<Resp>
    where
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let address = self.node_address().await?;
        self.on_address(&address, what, message, call).await
    }

    /// Sends one request to the node at `address`, once, within `--timeout`.
    pub async fn on_address<Req, Resp, F, Fut>(
        &self,
        address: &str,
        what: &str,
        message: Req,
        call: F,
    ) -> anyhow::Result<Resp>
    where
        F: FnOnce(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let channel = self.client.channel(address)?;
        let answer = with_timeout(self.timeout(), |deadline| {
            call(channel, with_deadline(message, deadline))
        })
        .await;
        answer.with_context(|| format!("{what} {address}"))
    }

    /// Sends one request to the leader, following redirects and leader
    /// changes until `--timeout`; each attempt carries the command's
    /// deadline. Only for requests that are safe to repeat after
    /// `UNAVAILABLE` (every change raft-admin makes is: the node checks it
    /// against the configuration, and a repeated one is a no-op or refused).
    pub async fn on_leader<Req, Resp, F, Fut>(
        &mut self,
        message: Req,
        call: F,
    ) -> anyhow::Result<Resp>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let timeout = self.timeout();
        let answer = self
            .client
            .on_leader(|channel| {
                let answer = call(channel, with_deadline(message.clone(), timeout));
                async move { answer.await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(answer)
    }

    /// [`Target::on_leader`] with a budget of at least `patience`, for a
    /// change the leader needs long for. The leader is found first (through
    /// elections, like any call) within `--timeout`, so a cluster without
    /// one still fails as fast as any other command.
    pub async fn on_leader_patiently<Req, Resp, F, Fut>(
        &mut self,
        patience: Duration,
        message: Req,
        call: F,
    ) -> anyhow::Result<Resp>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.client
            .on_leader(|_leader| async { Ok::<(), tonic::Status>(()) })
            .await?;
        let timeout = self.timeout();
        self.client.timeout = timeout.max(patience);
        let answer = self.on_leader(message, call).await;
        self.client.timeout = timeout;
        answer
    }
}
