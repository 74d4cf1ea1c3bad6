//! The typed methods of [`Client`]: one per call of `raftkv.KV` and
//! `raftkv.Admin`, each building its [`Call`] and running it with the
//! client's leader following and retries.

use std::time::Duration;

use raftkv_proto::pb;
use tonic::Streaming;

use crate::Call;
use crate::CallError;
use crate::Client;

impl Client {
    // The key-value calls.

    /// Sets `key` to `value`.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<pb::PutResponse, CallError> {
        self.call(Call::put(key, value, 0)).await
    }

    /// Sets `key` to `value`, attached to lease `lease`.
    pub async fn put_leased(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        lease: u64,
    ) -> Result<pb::PutResponse, CallError> {
        self.call(Call::put(key, value, lease)).await
    }

    /// The value of `key` (linearizable), if it has one.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Vec<u8>>, CallError> {
        let answer = self.read(key, false).await?;
        Ok(answer.found.then_some(answer.value))
    }

    /// Reads `key`, linearizably or (`stale`) from the node's own state.
    pub async fn read(
        &self,
        key: impl Into<Vec<u8>>,
        stale: bool,
    ) -> Result<pb::GetResponse, CallError> {
        self.get_with(pb::GetRequest {
            key: key.into(),
            stale,
            revision: 0,
        })
        .await
    }

    /// Reads as `request` says (stale, at a revision).
    pub async fn get_with(&self, request: pb::GetRequest) -> Result<pb::GetResponse, CallError> {
        self.call(Call::get(request)).await
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<pb::DeleteResponse, CallError> {
        self.call(Call::delete(key)).await
    }

    /// Deletes every key starting with `prefix` (needs cluster version 0.2).
    pub async fn delete_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<pb::DeletePrefixResponse, CallError> {
        self.call(Call::delete_prefix(prefix)).await
    }

    /// Lists keys as `request` says (prefix, limit, paging, revision).
    pub async fn scan(&self, request: pb::ScanRequest) -> Result<pb::ScanResponse, CallError> {
        self.call(Call::scan(request)).await
    }

    /// Sets `key` to `new_value` if it holds `expected` (`None`: is absent).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<pb::CompareAndSwapResponse, CallError> {
        self.call(Call::compare_and_swap(key, expected, new_value, 0))
            .await
    }

    /// [`Client::compare_and_swap`], attaching the key to lease `lease`
    /// when it swaps.
    pub async fn compare_and_swap_leased(
        &self,
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        new_value: impl Into<Vec<u8>>,
        lease: u64,
    ) -> Result<pb::CompareAndSwapResponse, CallError> {
        self.call(Call::compare_and_swap(key, expected, new_value, lease))
            .await
    }

    /// Runs a transaction.
    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, CallError> {
        self.call(Call::txn(request)).await
    }

    /// Every change under `prefix` from log index `start` (0: from now).
    pub async fn watch(
        &self,
        prefix: impl Into<Vec<u8>>,
        start: u64,
    ) -> Result<Streaming<pb::WatchResponse>, CallError> {
        self.call(Call::watch(prefix, start)).await
    }

    // Leases.

    /// Grants a lease of `ttl` seconds.
    pub async fn lease_grant(&self, ttl: i64) -> Result<pb::LeaseGrantResponse, CallError> {
        self.call(Call::lease_grant(ttl)).await
    }

    /// Revokes lease `id` and deletes its keys.
    pub async fn lease_revoke(&self, id: u64) -> Result<pb::LeaseRevokeResponse, CallError> {
        self.call(Call::lease_revoke(id)).await
    }

    /// Restarts lease `id`'s countdown.
    pub async fn lease_keep_alive(&self, id: u64) -> Result<pb::LeaseKeepAliveResponse, CallError> {
        self.call(Call::lease_keep_alive(id)).await
    }

    /// How long lease `id` has left, with its keys if `keys`.
    pub async fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> Result<pb::LeaseTimeToLiveResponse, CallError> {
        self.call(Call::lease_time_to_live(id, keys)).await
    }

    // Administration.

    /// The status of the node this client is bound to (else the leader's).
    pub async fn status(&self) -> Result<pb::NodeStatus, CallError> {
        self.call(Call::status()).await
    }

    /// Makes the pristine node this client is bound to the first member of
    /// a new cluster, with `members` (empty: itself alone).
    pub async fn initialize(
        &self,
        members: Vec<pb::Member>,
    ) -> Result<pb::ClusterConfiguration, CallError> {
        self.call(Call::initialize(members)).await
    }

    /// The configuration as the node (or the leader) knows it.
    pub async fn configuration(&self) -> Result<pb::ClusterConfiguration, CallError> {
        self.call(Call::configuration()).await
    }

    /// Adds node `id` at `address` as a voter.
    pub async fn add_voter(
        &self,
        id: u64,
        address: impl Into<String>,
        previous_index: u64,
    ) -> Result<pb::MembershipResponse, CallError> {
        self.call(Call::add_voter(id, address, previous_index))
            .await
    }

    /// Adds node `id` at `address` as a non-voter.
    pub async fn add_learner(
        &self,
        id: u64,
        address: impl Into<String>,
        previous_index: u64,
    ) -> Result<pb::MembershipResponse, CallError> {
        self.call(Call::add_learner(id, address, previous_index))
            .await
    }

    /// Makes voter `id` a non-voter.
    pub async fn demote_voter(
        &self,
        id: u64,
        previous_index: u64,
    ) -> Result<pb::MembershipResponse, CallError> {
        self.call(Call::demote_voter(id, previous_index)).await
    }

    /// Removes member `id`.
    pub async fn remove_node(
        &self,
        id: u64,
        previous_index: u64,
    ) -> Result<pb::MembershipResponse, CallError> {
        self.call(Call::remove_node(id, previous_index)).await
    }

    /// Hands leadership to `id` (0: the best other voter).
    pub async fn transfer_leader(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<pb::TransferLeaderResponse, CallError> {
        self.call(Call::transfer_leader(id, timeout)).await
    }

    /// Builds a snapshot on the node.
    pub async fn snapshot(&self) -> Result<pb::SnapshotResponse, CallError> {
        self.call(Call::snapshot()).await
    }

    /// Waits until the leader applied everything committed before.
    pub async fn barrier(&self) -> Result<pb::BarrierResponse, CallError> {
        self.call(Call::barrier()).await
    }

    /// Has a quorum confirm the leader.
    pub async fn verify_leader(&self) -> Result<pb::VerifyLeaderResponse, CallError> {
        self.call(Call::verify_leader()).await
    }

    /// A digest of the node's key-value state.
    pub async fn state_digest(&self) -> Result<pb::StateDigestResponse, CallError> {
        self.call(Call::state_digest()).await
    }

    /// Stops the node gracefully.
    pub async fn shutdown(&self) -> Result<(), CallError> {
        self.call(Call::shutdown()).await.map(|_| ())
    }

    /// A backup stream from the leader.
    pub async fn backup(&self) -> Result<Streaming<pb::BackupChunk>, CallError> {
        self.call(Call::backup()).await
    }

    /// Drops the history before `revision`.
    pub async fn compact(&self, revision: u64) -> Result<pb::CompactResponse, CallError> {
        self.call(Call::compact(revision)).await
    }

    /// Lists, raises or disarms NOSPACE alarms.
    pub async fn alarm(
        &self,
        action: pb::alarm_request::Action,
        member: u64,
    ) -> Result<pb::AlarmResponse, CallError> {
        self.call(Call::alarm(action, member)).await
    }
}
