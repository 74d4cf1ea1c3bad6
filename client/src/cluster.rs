//! Leader discovery among a set of nodes: asks every endpoint who leads and
//! remembers the ids the answers named. [`crate::Client`] sends calls to the
//! leader found here, and follows redirects and leader changes itself.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::Code;
use tonic::Status;

use crate::check_address;
use crate::role_name;
use crate::ChannelOptions;
use crate::Channels;
use crate::ClientError;

/// Clients to a set of nodes, remembering which one leads.
pub struct ClusterClient {
    endpoints: Vec<String>,
    channels: Channels,
    leader: Option<String>,
    /// Node ids by address, as status answers named them.
    ids: HashMap<String, u64>,
    /// Longest wait for one node's status answer.
    pub timeout: Duration,
}

impl ClusterClient {
    /// A client for `endpoints` (no connection is made yet), over mutual
    /// TLS when `tls` is given.
    pub fn new(
        endpoints: Vec<String>,
        timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> Result<ClusterClient, ClientError> {
        let channels = Channels::new(ChannelOptions {
            connect_timeout: timeout.min(Duration::from_secs(3)),
            tls,
            ..ChannelOptions::default()
        });
        ClusterClient::with_channels(endpoints, timeout, channels)
    }

    /// A client for `endpoints` that takes its channels from `channels`.
    pub fn with_channels(
        endpoints: Vec<String>,
        timeout: Duration,
        channels: Channels,
    ) -> Result<ClusterClient, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for endpoint in &endpoints {
            check_address(endpoint)?;
        }
        Ok(ClusterClient {
            endpoints,
            channels,
            leader: None,
            ids: HashMap::new(),
            timeout,
        })
    }

    /// The endpoints this client was given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The leader the last discovery found.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Node ids by address, as the status answers seen so far named them.
    pub fn node_ids(&self) -> &HashMap<String, u64> {
        &self.ids
    }

    /// The cached channel to `address`.
    pub fn channel(&self, address: &str) -> Result<Channel, ClientError> {
        self.channels.get(address)
    }

    /// The status of the node at `address`, within the timeout.
    pub async fn status(&self, address: &str) -> Result<pb::NodeStatus, ClientError> {
        status_over(self.channel(address)?, self.timeout).await
    }

    /// Whether the node at `address` reports `raftkv.Leader` as SERVING on
    /// its health service, which every authenticated caller may ask.
    pub async fn serves_leader_health(&self, address: &str) -> Result<bool, ClientError> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        let channel = self.channel(address)?;
        let answer = with_timeout(self.timeout, |timeout| async move {
            let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
                service: raftkv_proto::LEADER_HEALTH_SERVICE.into(),
            });
            request.set_timeout(timeout);
            HealthClient::new(channel).check(request).await
        })
        .await?;
        Ok(answer.status == ServingStatus::Serving as i32)
    }

    /// Asks every endpoint (concurrently) who leads; returns the leader's
    /// address. It answers as soon as a majority of the endpoints have
    /// answered, so a node that hangs (paused, a stalled disk) never holds it
    /// up: two majorities share a node, so the highest term among a
    /// majority's answers is the newest election's, and when none of them
    /// knows a leader an election is under way (the caller asks again).
    /// Callers that may not read a node's status (a certificate for
    /// raftkv.KV only) find the leader among the endpoints through the health
    /// service instead.
    pub async fn find_leader(&mut self) -> Result<String, ClientError> {
        use futures::StreamExt;
        let endpoints = self.endpoints.clone();
        let majority = endpoints.len() / 2 + 1;
        let this = &*self;
        let mut asks: futures::stream::FuturesUnordered<_> = endpoints
            .iter()
            .map(|address| async move {
                let answer = this.status(address).await;
                (address, answer)
            })
            .collect();
        let mut answers = Vec::new();
        let mut statuses = 0;
        while let Some(answer) = asks.next().await {
            statuses += usize::from(answer.1.is_ok());
            answers.push(answer);
            if statuses >= majority {
                break;
            }
        }
        drop(asks);
        let mut found = best_leader(&answers);
        let mut details = Vec::new();
        // Nodes whose status this client may not read (a key-value-only
        // certificate): asked through the health service instead.
        let mut restricted = Vec::new();
        for (address, answer) in answers {
            match answer {
                Ok(status) => {
                    self.ids.insert(address.clone(), status.id);
                    if status.leader_id != 0 && !status.leader_address.is_empty() {
                        self.ids
                            .insert(status.leader_address.clone(), status.leader_id);
                    }
                    if status.role != pb::Role::Leader as i32 {
                        details.push(format!("{address} is a {}", role_name(status.role)));
                    }
                }
                Err(ClientError::Timeout(_)) => {
                    details.push(format!("{address}: no answer within {:?}", self.timeout))
                }
                Err(ClientError::Rpc(status)) if status.code() == Code::PermissionDenied => {
                    restricted.push(address)
                }
                Err(e) => details.push(format!("{address}: {e}")),
            }
        }
        if found.is_none() && !restricted.is_empty() {
            let this = &*self;
            let mut asks: futures::stream::FuturesUnordered<_> = restricted
                .into_iter()
                .map(|address| async move { (address, this.serves_leader_health(address).await) })
                .collect();
            while let Some((address, answer)) = asks.next().await {
                match answer {
                    Ok(true) => {
                        found = Some(address.clone());
                        break;
                    }
                    Ok(false) => details.push(format!("{address} does not lead")),
                    Err(e) => details.push(format!("{address}: {e}")),
                }
            }
        }
        if let Some(address) = found {
            self.leader = Some(address.clone());
            return Ok(address);
        }
        Err(ClientError::NoLeader {
            endpoints: endpoints.join(","),
            details: details.join("; "),
        })
    }
}

/// The leader that the status answers so far point to: the claim or the
/// hint at the highest term. A deposed leader cut off from the others may
/// still believe it leads; a follower that heard of a newer election names
/// its winner at a higher term.
fn best_leader(answers: &[(&String, Result<pb::NodeStatus, ClientError>)]) -> Option<String> {
    let mut best: Option<(u64, bool, &str)> = None;
    for (address, answer) in answers {
        let Ok(status) = answer else { continue };
        let candidate = if claims_to_lead(status) {
            // A claim beats a hint of the same term.
            (status.term, true, address.as_str())
        } else if status.leader_id != 0 && !status.leader_address.is_empty() {
            (status.term, false, status.leader_address.as_str())
        } else {
            continue;
        };
        if best.is_none_or(|(term, claim, _)| (candidate.0, candidate.1) > (term, claim)) {
            best = Some(candidate);
        }
    }
    best.map(|(_, _, address)| address.to_string())
}

/// Whether `status` is a node's claim that it leads itself.
pub(crate) fn claims_to_lead(status: &pb::NodeStatus) -> bool {
    status.role == pb::Role::Leader as i32 && status.leader_id == status.id
}

/// The status of the node at the other end of `channel`, within `timeout`.
pub(crate) async fn status_over(
    channel: Channel,
    timeout: Duration,
) -> Result<pb::NodeStatus, ClientError> {
    with_timeout(timeout, |timeout| async move {
        let mut request = tonic::Request::new(pb::Empty {});
        request.set_timeout(timeout);
        AdminClient::new(channel).status(request).await
    })
    .await
}

/// Runs one call (given its deadline) and gives up on it after `timeout`.
pub async fn with_timeout<T, F, Fut>(timeout: Duration, call: F) -> Result<T, ClientError>
where
    F: FnOnce(Duration) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    match tokio::time::timeout(timeout, call(timeout)).await {
        Ok(Ok(answer)) => Ok(answer.into_inner()),
        Ok(Err(status)) => Err(ClientError::Rpc(status)),
        Err(_) => Err(ClientError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: u64, role: pb::Role, term: u64, leader: (u64, &str)) -> pb::NodeStatus {
        pb::NodeStatus {
            id,
            role: role as i32,
            term,
            leader_id: leader.0,
            leader_address: leader.1.into(),
            ..Default::default()
        }
    }

    fn best(answers: Vec<(&str, pb::NodeStatus)>) -> Option<String> {
        let addresses: Vec<String> = answers.iter().map(|(a, _)| a.to_string()).collect();
        let answers: Vec<_> = addresses
            .iter()
            .zip(answers)
            .map(|(address, (_, status))| (address, Ok(status)))
            .collect();
        best_leader(&answers)
    }

    #[test]
    fn the_newest_term_names_the_leader() {
        use pb::Role::*;
        // A leader paused through an election still claims its old term.
        let stale_claim = ("a:1", status(1, Leader, 4, (1, "a:1")));
        let newer_hint = ("b:1", status(2, Follower, 5, (3, "c:1")));
        assert_eq!(
            best(vec![stale_claim.clone(), newer_hint]).as_deref(),
            Some("c:1")
        );
        // A claim beats a hint of the same term, whichever came first.
        let hint = ("b:1", status(2, Follower, 4, (3, "c:1")));
        assert_eq!(
            best(vec![hint, stale_claim.clone()]).as_deref(),
            Some("a:1")
        );
        // Of two claims, the newer one.
        let newer_claim = ("c:1", status(3, Leader, 6, (3, "c:1")));
        assert_eq!(best(vec![newer_claim, stale_claim]).as_deref(), Some("c:1"));
        // Nobody knows a leader: an election is going on.
        let candidate = ("b:1", status(2, Candidate, 7, (0, "")));
        assert_eq!(best(vec![candidate]), None);
    }
}
