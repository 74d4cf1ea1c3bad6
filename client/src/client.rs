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
    /// While a call to the leader has waited this long, and again each time
    /// this much longer, probe the leader's status and ask the nodes who
    /// leads (`None`: never). A leader that hangs (paused, a stalled disk)
    /// keeps its connections open, so only this finds out that another was
    /// elected before the call's deadline passes; the call is then given up
    /// once the old leader has left its probes unanswered, or gone on
    /// claiming to lead, for 300 ms (or three checks). Default 100 ms: a
    /// round is a status call to each node, one round at a time for all
    /// clones, and a new leader is found within this long of its election
    /// (which takes raftkv's followers about half a second: 300 ms without
    /// the old leader's heartbeats, then their election timeout of
    /// 150-300 ms).
    pub leader_check: Option<Duration>,
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
            leader_check: Some(Duration::from_millis(100)),
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
    /// What probes of each node's status learned: whether a leader whose
    /// call waits hangs, or has stepped down. All the calls waiting on one
    /// leader share a probe per check.
    probes: Mutex<HashMap<String, following::Probe>>,
    retry_pause: (Duration, Duration),
    max_message_bytes: Option<usize>,
    leader_check: Option<Duration>,
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
                probes: Mutex::new(HashMap::new()),
                retry_pause: options.retry_pause,
                max_message_bytes: options.max_message_bytes,
                leader_check: options.leader_check,
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
            let attempt = self.attempt(&leader, call, self.call_timeout.min(remaining));
            let error = match self.awaiting(&leader, attempt).await {
                Ok(Ok(answer)) => {
                    return Ok(Served {
                        answer,
                        address: leader,
                        sent,
                    })
                }
                Ok(Err(error)) => error,
                Err(moved) => {
                    // Given up on a leader that hangs: the next attempt goes
                    // to the one elected meanwhile (look_again noted it).
                    let error = CallError::leader_moved(leader, moved, call.may_repeat);
                    if let Failure::Retry { kind, .. } = error.failure {
                        on_retry(kind);
                        last = Some(error);
                        continue;
                    }
                    return Err(error);
                }
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

mod following;
#[cfg(test)]
mod tests;
