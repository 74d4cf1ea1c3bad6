//! Helpers only the node's tests need; clusters come from `raftkv_testkit`.

use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use raftkv_proto::pb::kv_client::KvClient;
use raftkv_testkit::wait_for;
use raftkv_testkit::TestCluster;
use tonic::transport::Channel;

/// Puts `key` = `value` through `client`; returns the log index.
pub async fn put(client: &mut KvClient<Channel>, key: &str, value: &str) -> u64 {
    client
        .put(pb::PutRequest {
            lease: 0,
            key: key.into(),
            value: value.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .into_inner()
        .index
}

/// Watches `prefix` through `kv` from log index `start` on (0: from now).
pub async fn watch(
    kv: &mut KvClient<Channel>,
    prefix: &str,
    start: u64,
) -> Result<tonic::Streaming<pb::WatchResponse>, tonic::Status> {
    kv.watch(pb::WatchRequest {
        prefix: prefix.into(),
        start_index: start,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Reads `key` through `client` (linearizable unless `stale`).
pub async fn get(client: &mut KvClient<Channel>, key: &str, stale: bool) -> Option<Vec<u8>> {
    let answer = client
        .get(pb::GetRequest {
            key: key.into(),
            stale,
            revision: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .into_inner();
    answer.found.then_some(answer.value)
}

/// The voters of the committed configuration as `admin` (the leader) sees it.
pub async fn committed_voters(admin: &mut AdminClient<Channel>) -> Option<Vec<u64>> {
    let config = admin
        .get_configuration(pb::Empty {})
        .await
        .ok()?
        .into_inner();
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
    let admin = cluster.nodes[0].admin();
    wait_for(&format!("the voters are {expected:?}"), || {
        let mut admin = admin.clone();
        async move { (committed_voters(&mut admin).await? == expected).then_some(()) }
    })
    .await;
}
