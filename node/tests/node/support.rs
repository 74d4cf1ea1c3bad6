//! Helpers only the node's tests need; clusters come from `raftkv_testkit`.

use raftkv_proto::pb;
use raftkv_proto::pb::kv_client::KvClient;
use tonic::transport::Channel;

/// Puts `key` = `value` through `client`; returns the log index.
pub async fn put(client: &mut KvClient<Channel>, key: &str, value: &str) -> u64 {
    client
        .put(pb::PutRequest {
            key: key.into(),
            value: value.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
        .into_inner()
        .index
}

/// Reads `key` through `client` (linearizable unless `stale`).
pub async fn get(client: &mut KvClient<Channel>, key: &str, stale: bool) -> Option<Vec<u8>> {
    let answer = client
        .get(pb::GetRequest {
            key: key.into(),
            stale,
        })
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .into_inner();
    answer.found.then_some(answer.value)
}
