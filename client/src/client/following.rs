//! Following the leader: which node a [`Client`]'s calls go to, the rounds
//! of discovery that find it (one at a time for all clones), and the watch
//! on a call that waits long, which gives it up once another node leads.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use tokio::time::Instant;
use tonic::Code;

use super::lock;
use super::Client;
use crate::cluster::with_timeout;
use crate::CallError;
use crate::ClientError;
use crate::ClusterClient;

/// How long a leader whose call waits must have gone without answering
/// before the call is given up for a newly elected one. A live leader
/// answers each probe; a hung one has been silent longer than this by the
/// time its followers elect another (its lease of 300 ms, then their
/// election timeout).
const HUNG_AFTER: Duration = Duration::from_millis(300);

impl Client {
    pub(super) fn known_leader(&self) -> Option<String> {
        lock(&self.shared.leader).clone()
    }

    pub(super) fn set_leader(&self, leader: Option<String>) {
        *lock(&self.shared.leader) = leader;
    }

    /// Forgets `address` as the leader (unless another task already moved on).
    pub(super) fn forget_leader(&self, address: &str) {
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
        let found = self.discover(&mut discovery).await;
        self.set_leader(found.as_ref().ok().cloned());
        found.map_err(CallError::no_leader)
    }

    /// Asks the nodes again who leads, though a leader is known. A round
    /// that another task finished while this one waited counts as this
    /// one's. The known leader is replaced only by one found.
    async fn look_again(&self) -> Option<String> {
        let before = self.shared.discoveries.load(Ordering::Acquire);
        let mut discovery = self.shared.discovery.lock().await;
        if self.shared.discoveries.load(Ordering::Acquire) != before {
            return self.known_leader();
        }
        let found = self.discover(&mut discovery).await.ok()?;
        self.set_leader(Some(found.clone()));
        Some(found)
    }

    /// One round of discovery: records the ids it learned and why it found
    /// no leader, and counts the round.
    async fn discover(&self, discovery: &mut ClusterClient) -> Result<String, ClientError> {
        let found = discovery.find_leader().await;
        lock(&self.shared.node_ids).extend(
            discovery
                .node_ids()
                .iter()
                .map(|(address, id)| (address.clone(), *id)),
        );
        let now = Instant::now();
        lock(&self.shared.answered).extend(
            discovery
                .heard()
                .iter()
                .map(|address| (address.clone(), now)),
        );
        *lock(&self.shared.last_discovery_error) = found.as_ref().err().map(|e| match e {
            ClientError::NoLeader { details, .. } => details.clone(),
            e => e.to_string(),
        });
        self.shared.discoveries.fetch_add(1, Ordering::Release);
        found
    }

    /// Waits for `attempt`, sent to `leader`. While it is pending, every
    /// `leader_check` it probes `leader` and asks the nodes who leads: when
    /// another node does and `leader` has not answered for a while (it
    /// hangs), the attempt is given up and that node's address returned. A
    /// leader that answers finishes its own calls, even one that hands
    /// leadership over and is finished by its successor (a demotion of
    /// itself): given up, such a call would run twice.
    pub(super) async fn awaiting<T>(
        &self,
        leader: &str,
        attempt: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<Result<T, CallError>, String> {
        let mut attempt = std::pin::pin!(attempt);
        let Some(every) = self.shared.leader_check else {
            return Ok(attempt.await);
        };
        let sent = Instant::now();
        let hung_after = (every * 3).max(HUNG_AFTER);
        loop {
            tokio::select! {
                biased;
                answer = &mut attempt => return Ok(answer),
                () = tokio::time::sleep(every) => {}
            }
            self.probe(leader, every);
            let found = tokio::select! {
                biased;
                answer = &mut attempt => return Ok(answer),
                found = self.look_again() => found,
            };
            let last_answer = lock(&self.shared.answered)
                .get(leader)
                .map_or(sent, |at| (*at).max(sent));
            let hangs = last_answer.elapsed() >= hung_after;
            if let Some(found) = found.filter(|found| found != leader && hangs) {
                return Err(found);
            }
        }
    }

    /// Asks the node at `address` for its status, within `timeout`, in the
    /// background, unless it was asked less than `timeout` ago; an answer
    /// is noted in `answered`. A round of discovery cannot tell: it ends
    /// with the first majority's answers, which a busy live leader may miss.
    fn probe(&self, address: &str, timeout: Duration) {
        let now = Instant::now();
        {
            let mut probed = lock(&self.shared.probed);
            if probed.get(address).is_some_and(|at| now < *at + timeout) {
                return;
            }
            probed.insert(address.to_string(), now);
        }
        let Ok(channel) = self.shared.channels.get(address) else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let address = address.to_string();
        tokio::spawn(async move {
            let answer = with_timeout(timeout, |timeout| async move {
                let mut request = tonic::Request::new(pb::Empty {});
                request.set_timeout(timeout);
                AdminClient::new(channel).status(request).await
            })
            .await;
            // A certificate that may not read the status is refused by a
            // node that is up as surely as it is answered.
            let up = match answer {
                Ok(_) => true,
                Err(ClientError::Rpc(status)) => status.code() == Code::PermissionDenied,
                Err(_) => false,
            };
            if up {
                lock(&shared.answered).insert(address, Instant::now());
            }
        });
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
    pub(super) fn no_leader_within(&self, time: Duration) -> CallError {
        CallError::no_leader(ClientError::NoLeader {
            endpoints: self.shared.endpoints.join(","),
            details: format!("no answer within {time:?}"),
        })
    }
}
