//! Following the leader: which node a [`Client`]'s calls go to, the rounds
//! of discovery that find it (one at a time for all clones), and the watch
//! on a call that waits long, which gives it up once another node leads and
//! the old leader hangs or has not stepped down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use super::lock;
use super::Client;
use crate::cluster::claims_to_lead;
use crate::cluster::status_over;
use crate::CallError;
use crate::ClientError;
use crate::ClusterClient;

/// How long a leader whose call waits may leave its probes unanswered, or
/// go on claiming to lead once another was elected, before the call is
/// given up for the new leader. With raftkv's default timings a hung leader
/// has been silent longer than this by the time its followers elect another
/// (300 ms without its heartbeats, the most an election timeout lasts, then
/// an election), so failing over from it waits no longer than the election.
const HUNG_AFTER: Duration = Duration::from_millis(300);

/// What this client's probes learned of one node's status.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Probe {
    /// When the last probe was sent.
    sent: Option<Instant>,
    /// When the newest answered probe was sent, and whether the node then
    /// said it led.
    answered: Option<(Instant, bool)>,
    /// When the oldest probe still unanswered was sent.
    unanswered_since: Option<Instant>,
}

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
        *lock(&self.shared.last_discovery_error) = found.as_ref().err().map(|e| match e {
            ClientError::NoLeader { details, .. } => details.clone(),
            e => e.to_string(),
        });
        self.shared.discoveries.fetch_add(1, Ordering::Release);
        found
    }

    /// Waits for `attempt`, sent to `leader`. While it is pending, every
    /// `leader_check` it probes `leader` and asks the nodes who leads. Once
    /// another node leads, the attempt is given up and that node's address
    /// returned when `leader` hangs (its probes have gone unanswered for a
    /// while) or, though it answers, has not stepped down within that while
    /// (a stalled Raft core, or a leader cut off from its followers). A
    /// leader that has stepped down finishes its calls, even one it hands to
    /// its successor (a demotion of itself): given up and sent again, such a
    /// call would run twice.
    pub(super) async fn awaiting<T>(
        &self,
        leader: &str,
        attempt: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<Result<T, CallError>, String> {
        let mut attempt = std::pin::pin!(attempt);
        let Some(every) = self.shared.leader_check else {
            return Ok(attempt.await);
        };
        let patience = (every * 3).max(HUNG_AFTER);
        let mut deposed_since = None;
        loop {
            tokio::select! {
                biased;
                answer = &mut attempt => return Ok(answer),
                () = tokio::time::sleep(every) => {}
            }
            self.probe(leader, every, patience);
            let found = tokio::select! {
                biased;
                answer = &mut attempt => return Ok(answer),
                found = self.look_again() => found,
            };
            let Some(found) = found.filter(|found| found != leader) else {
                deposed_since = None;
                continue;
            };
            let since = *deposed_since.get_or_insert_with(Instant::now);
            let probe = lock(&self.shared.probes)
                .get(leader)
                .copied()
                .unwrap_or_default();
            let hangs = probe
                .unanswered_since
                .is_some_and(|sent| sent.elapsed() >= patience);
            let stepped_down = probe
                .answered
                .is_some_and(|(sent, leads)| sent >= since && !leads);
            if hangs || (!stepped_down && since.elapsed() >= patience) {
                return Err(found);
            }
        }
    }

    /// Asks the node at `address` for its status, within `timeout`, in the
    /// background, unless it was asked less than `every` ago; what it
    /// answers is noted in `probes`. A round of discovery cannot tell: it
    /// ends with the first majority's answers, which a live leader may miss.
    fn probe(&self, address: &str, every: Duration, timeout: Duration) {
        let sent = Instant::now();
        {
            let mut probes = lock(&self.shared.probes);
            let probe = probes.entry(address.to_string()).or_default();
            if probe.sent.is_some_and(|at| sent < at + every) {
                return;
            }
            probe.sent = Some(sent);
            probe.unanswered_since.get_or_insert(sent);
        }
        let Ok(channel) = self.shared.channels.get(address) else {
            return;
        };
        let shared = Arc::clone(&self.shared);
        let address = address.to_string();
        tokio::spawn(async move {
            let leads = match status_over(channel, timeout).await {
                Ok(status) => claims_to_lead(&status),
                // A certificate that may not read the status is refused by
                // a node that is up; whether it leads is not known.
                Err(ClientError::Rpc(status)) if status.code() == Code::PermissionDenied => true,
                Err(_) => return,
            };
            let mut probes = lock(&shared.probes);
            let probe = probes.entry(address).or_default();
            if probe.answered.is_none_or(|(at, _)| at < sent) {
                probe.answered = Some((sent, leads));
            }
            if probe.unanswered_since.is_some_and(|since| since <= sent) {
                probe.unanswered_since = None;
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
