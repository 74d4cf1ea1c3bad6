//! Helpers only the node's tests need; clusters come from `raftkv_testkit`.

use raftkv_client::Client;
use raftkv_client::ClientError;
use raftkv_proto::pb;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;

/// Puts `key` = `value` through `client`; returns the log index.
pub async fn put(client: &Client, key: &str, value: &str) -> u64 {
    client
        .put(key, value)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .index
}

/// Watches `prefix` through `client` from log index `start` on (0: from
/// now); a refusal is the node's status, which the watch tests read like
/// the status that ends a stream.
pub async fn watch(
    client: &Client,
    prefix: &str,
    start: u64,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    client
        .watch(prefix, start)
        .await
        .map_err(|e| match e.error {
            ClientError::Rpc(status) => status,
            error => panic!("no node answered the watch: {error}"),
        })
}

/// Reads `key` through `client` (linearizable unless `stale`).
pub async fn get(client: &Client, key: &str, stale: bool) -> Option<Vec<u8>> {
    let answer = client
        .read(key, stale)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    answer.found.then_some(answer.value)
}

/// The voters of the committed configuration as `admin` (the leader) sees it.
pub async fn committed_voters(admin: &Client) -> Option<Vec<u64>> {
    let config = admin.configuration().await.ok()?;
    let voters = config
        .members
        .iter()
        .filter(|m| m.suffrage == pb::Suffrage::Voter as i32)
        .map(|m| m.id)
        .collect();
    (config.committed && !config.joint).then_some(voters)
}

/// Waits until the committed configuration on node 1 has exactly `expected` voters.
pub async fn wait_for_voters(cluster: &TestCluster, expected: &[u64]) {
    let admin = cluster.nodes[0].client();
    wait_for(&format!("the voters are {expected:?}"), || {
        let admin = admin.clone();
        async move { (committed_voters(&admin).await? == expected).then_some(()) }
    })
    .await;
}

/// A free port on 127.0.0.1 that nobody listens on (yet), for a node whose
/// address must be known before it starts.
pub fn unused_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}
