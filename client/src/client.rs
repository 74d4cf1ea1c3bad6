//! [`Client`]: the typed client of a raftkv cluster. It sends each [`Call`]
//! to the leader, finds the leader when it does not know it, follows the
//! leader a refusal names, pauses ([`Backoff`]) while none is known, and
//! repeats a call only where its [`Failure`] says that is safe, until the
//! operation's deadline. A failed call comes back as a [`CallError`]: the
//! `Failure` (retry, where / unknown / failed) and what happened.
//!
//! Clones share the channels, the leader they last found and the node ids
//! they learned, so one client serves many tasks. [`Client::node`] gives a
//! client bound to one node instead, which sends each call there once: for
//! what is about that node (its status, its own copy, a follower that must
//! forward).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use raftkv_proto::pb;
use tokio::time::Instant;
use tonic::transport::ClientTlsConfig;
use tonic::Code;
use tonic::Status;
use tonic::Streaming;

use crate::call::Stubs;
use crate::Backoff;
use crate::Call;
use crate::ChannelOptions;
use crate::Channels;
use crate::ClientError;
use crate::ClusterClient;
use crate::Failure;

/// How a [`Client`] connects and how long it tries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The nodes to find the leader among (`host:port`).
    pub endpoints: Vec<String>,
    /// Mutual TLS (`None`: plain-text HTTP/2).
    pub tls: Option<ClientTlsConfig>,
    /// Budget of one operation: leader discovery, redirects and retries.
    pub timeout: Duration,
    /// Longest wait for one attempt's answer (and for one node's status
    /// during discovery).
    pub call_timeout: Duration,
    /// Pauses between attempts while no leader is known: from the first,
    /// doubling up to the second.
    pub retry_pause: (Duration, Duration),
    /// Largest message sent or accepted (`None`: tonic's default, 4 MiB).
    pub max_message_bytes: Option<usize>,
}

impl ClientOptions {
    /// Options for `endpoints` in plain text, each operation and each call
    /// within `timeout`.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> ClientOptions {
        ClientOptions {
            endpoints,
            tls: None,
            timeout,
            call_timeout: timeout,
            retry_pause: (Duration::from_millis(50), Duration::from_millis(500)),
            max_message_bytes: None,
        }
    }
}

/// Why a call failed, and what that means for its caller.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct CallError {
    /// What the caller may do now: send it again (to the leader named),
    /// find out whether it took effect, or give up.
    pub failure: Failure,
    /// What happened: the status a node answered, no leader found, the
    /// deadline passed, bad settings.
    #[source]
    pub error: ClientError,
}

impl CallError {
    /// A node answered `status` to a call that `may_repeat` or not.
    fn answered(status: Status, may_repeat: bool) -> CallError {
        CallError {
            failure: Failure::of(&status, may_repeat),
            error: ClientError::Rpc(status),
        }
    }

    /// No answer within `timeout`: a write may have been applied.
    fn timed_out(timeout: Duration, may_repeat: bool) -> CallError {
        let failure = if may_repeat {
            Failure::Retry {
                leader: None,
                kind: "timeout",
            }
        } else {
            Failure::Unknown("timeout")
        };
        CallError {
            failure,
            error: ClientError::Timeout(timeout),
        }
    }

    /// No leader to send the call to.
    fn no_leader(error: ClientError) -> CallError {
        CallError {
            failure: Failure::Retry {
                leader: None,
                kind: "no_leader",
            },
            error,
        }
    }

    /// The call could not be sent at all (a bad address, TLS settings).
    fn unsendable(error: ClientError) -> CallError {
        let kind = match error {
            ClientError::Tls(_) => "tls",
            _ => "bad_endpoint",
        };
        CallError {
            failure: Failure::Failed(kind),
            error,
        }
    }

    /// The status a node answered, if one did.
    pub fn status(&self) -> Option<&Status> {
        match &self.error {
            ClientError::Rpc(status) => Some(status),
            _ => None,
        }
    }

    /// The code of the status a node answered, if one did.
    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// Whether the call may have taken effect although it failed.
    pub fn is_unknown(&self) -> bool {
        matches!(self.failure, Failure::Unknown(_))
    }
}

/// A call's answer and who gave it.
#[derive(Debug)]
pub struct Served<T> {
    /// The answer.
    pub answer: T,
    /// The address of the node that answered.
    pub address: String,
    /// When the attempt that succeeded was sent.
    pub sent: Instant,
}

/// What every clone of a client shares.
struct Shared {
    endpoints: Vec<String>,
    channels: Channels,
    /// Where calls go now.
    leader: Mutex<Option<String>>,
    /// Leader discovery, one round at a time.
    discovery: tokio::sync::Mutex<ClusterClient>,
    /// Rounds of discovery finished so far. A caller that waited while
    /// another asked the nodes takes that answer instead of asking again:
    /// without a leader, every task would otherwise queue for its own round.
    discoveries: AtomicU64,
    /// Why the last round found no leader.
    last_discovery_error: Mutex<Option<String>>,
    /// Node ids by address, from status answers and redirects.
    node_ids: Mutex<HashMap<String, u64>>,
    retry_pause: (Duration, Duration),
    max_message_bytes: Option<usize>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing is left half-done under these locks: a poisoned one is used as is.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client of a raftkv cluster; cheap to clone, clones share everything
/// learned.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    /// Budget of one operation.
    timeout: Duration,
    /// Budget of one attempt.
    call_timeout: Duration,
    /// Bound to this node: every call goes there, once.
    node: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.shared.endpoints)
            .field("node", &self.node)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client as `options` say; no connection is made yet.
    pub fn connect(options: ClientOptions) -> Result<Client, ClientError> {
        let channels = Channels::new(ChannelOptions {
            connect_timeout: options.call_timeout.min(Duration::from_secs(3)),
            tls: options.tls.clone(),
            ..ChannelOptions::default()
        });
        Client::with_channels(options, channels)
    }

    /// A client that takes its channels from `channels` (whose own TLS
    /// settings apply; `options.tls` is not used).
    pub fn with_channels(
        options: ClientOptions,
        channels: Channels,
    ) -> Result<Client, ClientError> {
        let discovery = ClusterClient::with_channels(
            options.endpoints.clone(),
            options.call_timeout,
            channels.clone(),
        )?;
        Ok(Client {
            shared: Arc::new(Shared {
                endpoints: options.endpoints,
                channels,
                leader: Mutex::new(None),
                discovery: tokio::sync::Mutex::new(discovery),
                discoveries: AtomicU64::new(0),
                last_discovery_error: Mutex::new(None),
                node_ids: Mutex::new(HashMap::new()),
                retry_pause: options.retry_pause,
                max_message_bytes: options.max_message_bytes,
            }),
            timeout: options.timeout,
            call_timeout: options.call_timeout,
            node: None,
        })
    }

    /// The endpoints this client was given.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    /// The budget of one operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This client bound to the node at `address` (any address, not only an
    /// endpoint): every call goes there, once, without following a leader.
    pub fn node(&self, address: &str) -> Result<Client, ClientError> {
        crate::check_address(address)?;
        Ok(Client {
            node: Some(address.to_string()),
            ..self.clone()
        })
    }

    /// This client with a budget of at least `patience` for each operation
    /// and each call, for a change the leader needs long for.
    pub fn patient(&self, patience: Duration) -> Client {
        Client {
            timeout: self.timeout.max(patience),
            call_timeout: self.call_timeout.max(patience),
            ..self.clone()
        }
    }

    /// This client with a budget of `timeout` for each operation and each
    /// call.
    pub fn within(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            call_timeout: timeout,
            ..self.clone()
        }
    }

    /// The id of the node at `address`, if a status answer or a redirect
    /// named it.
    pub fn node_id(&self, address: &str) -> Option<u64> {
        lock(&self.shared.node_ids).get(address).copied()
    }

    fn note_id(&self, address: &str, id: u64) {
        lock(&self.shared.node_ids).insert(address.to_string(), id);
    }

    fn known_leader(&self) -> Option<String> {
        lock(&self.shared.leader).clone()
    }

    fn set_leader(&self, leader: Option<String>) {
        *lock(&self.shared.leader) = leader;
    }

    /// Forgets `address` as the leader (unless another task already moved on).
    fn forget_leader(&self, address: &str) {
        let mut leader = lock(&self.shared.leader);
        if leader.as_deref() == Some(address) {
            *leader = None;
        }
    }

    /// Where calls go: the bound node, the leader last found, or the one a
    /// round of discovery finds now (one round at a time for all clones).
    pub async fn leader(&self) -> Result<String, CallError> {
        if let Some(node) = &self.node {
            return Ok(node.clone());
        }
        if let Some(leader) = self.known_leader() {
            return Ok(leader);
        }
        let before = self.shared.discoveries.load(Ordering::Acquire);
        let mut discovery = self.shared.discovery.lock().await;
        // Another task may have found it while this one waited, or asked and
        // found none: its answer is as fresh as a new round would be.
        if let Some(leader) = self.known_leader() {
            return Ok(leader);
        }
        if self.shared.discoveries.load(Ordering::Acquire) != before {
            let details = lock(&self.shared.last_discovery_error).clone();
            return Err(CallError::no_leader(ClientError::NoLeader {
                endpoints: self.shared.endpoints.join(","),
                details: details.unwrap_or_default(),
            }));
        }
        let found = discovery.find_leader().await;
        lock(&self.shared.node_ids).extend(
            discovery
                .node_ids()
                .iter()
                .map(|(address, id)| (address.clone(), *id)),
        );
        *lock(&self.shared.last_discovery_error) = found.as_ref().err().map(|e| match e {
            ClientError::NoLeader { details, .. } => details.clone(),
            e => e.to_string(),
        });
        self.set_leader(found.as_ref().ok().cloned());
        self.shared.discoveries.fetch_add(1, Ordering::Release);
        found.map_err(CallError::no_leader)
    }

    /// Finds the leader, through elections, within the client's timeout.
    pub async fn await_leader(&self) -> Result<String, CallError> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = self.backoff();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let error = match tokio::time::timeout(remaining, self.leader()).await {
                Ok(Ok(leader)) => return Ok(leader),
                Ok(Err(error)) => error,
                Err(_) => self.no_leader_within(remaining),
            };
            if Instant::now() >= deadline {
                return Err(error);
            }
            backoff.wait(deadline).await;
        }
    }

    /// No round of discovery ended within `time`.
    fn no_leader_within(&self, time: Duration) -> CallError {
        CallError::no_leader(ClientError::NoLeader {
            endpoints: self.shared.endpoints.join(","),
            details: format!("no answer within {time:?}"),
        })
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.shared.retry_pause.0, self.shared.retry_pause.1)
    }

    /// One attempt of `call` at `address`, within `timeout`.
    pub async fn attempt<T>(
        &self,
        address: &str,
        call: &Call<T>,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let channel = self
            .shared
            .channels
            .get(address)
            .map_err(CallError::unsendable)?;
        let stubs = Stubs {
            channel,
            max_message_bytes: self.shared.max_message_bytes,
        };
        match tokio::time::timeout(timeout, (call.send)(stubs, timeout)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(status)) => Err(CallError::answered(status, call.may_repeat)),
            Err(_) => Err(CallError::timed_out(timeout, call.may_repeat)),
        }
    }

    /// Runs `call` until it succeeds, fails for good, ends with an unknown
    /// outcome, or `deadline` passes (then the last failure is returned);
    /// `on_retry` hears the kind of every attempt that will be repeated. A
    /// client bound to a node makes one attempt there.
    pub async fn run<T>(
        &self,
        call: &Call<T>,
        deadline: Instant,
        on_retry: &mut (dyn FnMut(&'static str) + Send),
    ) -> Result<Served<T>, CallError> {
        if let Some(address) = &self.node {
            let sent = Instant::now();
            let timeout = self
                .call_timeout
                .min(deadline.saturating_duration_since(sent));
            let answer = self.attempt(address, call, timeout).await?;
            return Ok(Served {
                answer,
                address: address.clone(),
                sent,
            });
        }
        let mut backoff = self.backoff();
        let mut last = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(last.unwrap_or_else(|| CallError::timed_out(self.timeout, true)));
            }
            // Bounded: an operation's deadline must not wait on discovery.
            let leader = match tokio::time::timeout(remaining, self.leader()).await {
                Ok(Ok(leader)) => leader,
                Ok(Err(error)) => {
                    on_retry("no_leader");
                    last = Some(error);
                    backoff.wait(deadline).await;
                    continue;
                }
                Err(_) => {
                    on_retry("no_leader");
                    last = Some(last.unwrap_or_else(|| self.no_leader_within(remaining)));
                    continue;
                }
            };
            let sent = Instant::now();
            let error = match self
                .attempt(&leader, call, self.call_timeout.min(remaining))
                .await
            {
                Ok(answer) => {
                    return Ok(Served {
                        answer,
                        address: leader,
                        sent,
                    })
                }
                Err(error) => error,
            };
            match &error.failure {
                Failure::Failed(_) => return Err(error),
                Failure::Unknown(_) => {
                    // The leader may be gone: look again before the next call.
                    self.forget_leader(&leader);
                    return Err(error);
                }
                Failure::Retry { leader: hint, kind } => {
                    on_retry(kind);
                    match hint {
                        Some((id, address)) => {
                            self.note_id(address, *id);
                            self.set_leader(Some(address.clone()));
                        }
                        None => {
                            self.forget_leader(&leader);
                            backoff.wait(deadline).await;
                        }
                    }
                }
            }
            last = Some(error);
        }
    }

    /// Runs `call` within the client's timeout; its answer.
    pub async fn call<T>(&self, call: Call<T>) -> Result<T, CallError> {
        let deadline = Instant::now() + self.timeout;
        let served = self.run(&call, deadline, &mut |_| {}).await?;
        Ok(served.answer)
    }

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

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    fn client(endpoints: &[&str]) -> Client {
        let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
        let mut options = ClientOptions::new(endpoints, Duration::from_secs(1));
        options.retry_pause = (Duration::from_millis(1), Duration::from_millis(2));
        Client::connect(options).unwrap()
    }

    /// A call whose every attempt gets the next status of `answers`, then
    /// succeeds; it counts its attempts.
    fn scripted(
        may_repeat: bool,
        answers: Vec<Status>,
    ) -> (Call<u64>, Arc<std::sync::atomic::AtomicUsize>) {
        use futures::FutureExt;
        let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = attempts.clone();
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        let call = Call {
            may_repeat,
            send: Box::new(move |_, _| {
                let n = count.fetch_add(1, Ordering::SeqCst) as u64;
                let answer = lock(&answers).next();
                async move { answer.map_or(Ok(n), Err) }.boxed()
            }),
        };
        (call, attempts)
    }

    fn not_leader(id: u64, address: &str) -> Status {
        let mut status = Status::unavailable("redirect");
        let metadata = status.metadata_mut();
        metadata.insert(
            raftkv_proto::REASON_METADATA,
            MetadataValue::from_static(raftkv_proto::REASON_NOT_LEADER),
        );
        metadata.insert(
            raftkv_proto::LEADER_ID_METADATA,
            id.to_string().parse().unwrap(),
        );
        metadata.insert(raftkv_proto::LEADER_ADDR_METADATA, address.parse().unwrap());
        status
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_redirect_is_followed_to_the_leader_it_names() {
        let client = client(&["127.0.0.1:1"]);
        client.set_leader(Some("127.0.0.1:1".into()));
        let (call, attempts) = scripted(false, vec![not_leader(2, "127.0.0.1:2")]);
        let mut retries = Vec::new();
        let served = client
            .run(&call, soon(), &mut |kind| retries.push(kind))
            .await
            .unwrap();
        assert_eq!(served.address, "127.0.0.1:2");
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert_eq!(retries, vec!["not_leader"]);
        assert_eq!(client.node_id("127.0.0.1:2"), Some(2));
    }

    #[tokio::test]
    async fn a_write_whose_outcome_is_open_is_not_repeated() {
        let client = client(&["127.0.0.1:1"]);
        client.set_leader(Some("127.0.0.1:1".into()));
        let (call, attempts) = scripted(false, vec![Status::unavailable("gone")]);
        let error = client.run(&call, soon(), &mut |_| {}).await.unwrap_err();
        assert_eq!(error.failure, Failure::Unknown("unavailable"));
        assert!(error.is_unknown());
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        // The leader may be gone: the next call looks for it again.
        assert_eq!(client.known_leader(), None);
    }

    #[tokio::test]
    async fn a_read_is_repeated_and_a_refusal_is_final() {
        let client = client(&["127.0.0.1:1"]);
        client.set_leader(Some("127.0.0.1:1".into()));
        let (read, attempts) = scripted(true, vec![not_leader(1, "127.0.0.1:1")]);
        assert!(client.run(&read, soon(), &mut |_| {}).await.is_ok());
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        let (refused, attempts) = scripted(true, vec![Status::invalid_argument("empty key")]);
        let error = client.run(&refused, soon(), &mut |_| {}).await.unwrap_err();
        assert_eq!(error.failure, Failure::Failed("invalid_argument"));
        assert_eq!(error.code(), Some(Code::InvalidArgument));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_client_bound_to_a_node_tries_once_and_follows_nobody() {
        let client = client(&["127.0.0.1:1"]).node("127.0.0.1:3").unwrap();
        let (call, attempts) = scripted(true, vec![not_leader(2, "127.0.0.1:2")]);
        let error = client.run(&call, soon(), &mut |_| {}).await.unwrap_err();
        assert!(matches!(error.failure, Failure::Retry { .. }));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn nothing_is_sent_after_the_deadline() {
        let client = client(&["127.0.0.1:1"]);
        client.set_leader(Some("127.0.0.1:1".into()));
        let (call, attempts) = scripted(true, vec![]);
        let error = client
            .run(&call, Instant::now(), &mut |_| {})
            .await
            .unwrap_err();
        assert!(matches!(error.error, ClientError::Timeout(_)));
        assert_eq!(attempts.load(Ordering::SeqCst), 0);
    }
}
