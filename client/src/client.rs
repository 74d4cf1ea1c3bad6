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

use tokio::time::Instant;
use tonic::transport::ClientTlsConfig;

use crate::call::Stubs;
use crate::Backoff;
use crate::Call;
use crate::CallError;
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
}

#[cfg(test)]
mod tests;
