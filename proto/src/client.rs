//! A leader-aware client for a raftkv cluster, shared by `raft-admin` and
//! `hammer`: parses endpoint lists, keeps one channel per node, finds the
//! leader and follows not-leader redirects.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use std::time::Instant;

use tonic::transport::Channel;
use tonic::transport::Endpoint;
use tonic::Code;
use tonic::Status;

use crate::pb;
use crate::pb::admin_client::AdminClient;
use crate::LEADER_ADDR_METADATA;
use crate::LEADER_ID_METADATA;

/// Why a cluster request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// An endpoint is not `host:port` (or a `multi:///` list of them).
    #[error("bad endpoint {0:?}: expected host:port (e.g. 127.0.0.1:50051)")]
    BadEndpoint(String),
    /// No endpoint was given.
    #[error("no endpoints given")]
    NoEndpoints,
    /// None of the endpoints knows a leader (or none answers).
    #[error("no leader found among {endpoints}: {details}")]
    NoLeader { endpoints: String, details: String },
    /// The request failed with this status.
    #[error("{}", describe_status(.0))]
    Rpc(Status),
    /// The request did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// A one-line description of a failed call.
pub fn describe_status(status: &Status) -> String {
    let code = match status.code() {
        Code::InvalidArgument => "invalid argument",
        Code::FailedPrecondition => "refused",
        Code::Aborted => "conflict, nothing changed (retry)",
        Code::NotFound => "not found",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Unknown => "outcome unknown",
        Code::Internal => "internal error",
        _ => "failed",
    };
    let message = status.message();
    if message.contains("transport error") || message.contains("tcp connect error") {
        return format!("{code}: cannot connect ({message})");
    }
    format!("{code}: {message}")
}

/// Parses `multi:///a:1,b:2`, `a:1,b:2` or `a:1` into addresses.
pub fn parse_endpoints(text: &str) -> Result<Vec<String>, ClientError> {
    let list = text.strip_prefix("multi:///").unwrap_or(text);
    let endpoints: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    if endpoints.is_empty() {
        return Err(ClientError::NoEndpoints);
    }
    for endpoint in &endpoints {
        check_address(endpoint)?;
    }
    Ok(endpoints)
}

/// Checks that `address` is `host:port`.
pub fn check_address(address: &str) -> Result<(), ClientError> {
    let bad = || ClientError::BadEndpoint(address.to_string());
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || address.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

/// The leader's id and address carried by a not-leader answer, if any.
pub fn leader_hint(status: &Status) -> Option<(u64, String)> {
    let metadata = status.metadata();
    let id = metadata
        .get(LEADER_ID_METADATA)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let address = metadata
        .get(LEADER_ADDR_METADATA)?
        .to_str()
        .ok()?
        .to_string();
    Some((id, address))
}

/// A lazily connected channel to `address`.
pub fn connect_lazy(address: &str, timeout: Duration) -> Result<Channel, ClientError> {
    check_address(address)?;
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|_| ClientError::BadEndpoint(address.to_string()))?
        .connect_timeout(timeout.min(Duration::from_secs(3)))
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

/// Clients to a set of nodes, remembering which one leads.
pub struct ClusterClient {
    endpoints: Vec<String>,
    channels: HashMap<String, Channel>,
    leader: Option<String>,
    /// Budget of one operation, leader discovery and redirects included.
    pub timeout: Duration,
}

impl ClusterClient {
    /// A client for `endpoints` (no connection is made yet).
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<ClusterClient, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for endpoint in &endpoints {
            check_address(endpoint)?;
        }
        Ok(ClusterClient {
            endpoints,
            channels: HashMap::new(),
            leader: None,
            timeout,
        })
    }

    /// The endpoints this client was given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The cached channel to `address`.
    pub fn channel(&mut self, address: &str) -> Result<Channel, ClientError> {
        if let Some(channel) = self.channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = connect_lazy(address, self.timeout)?;
        self.channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }

    /// The status of the node at `address`, within the timeout.
    pub async fn status(&mut self, address: &str) -> Result<pb::NodeStatus, ClientError> {
        let channel = self.channel(address)?;
        let mut request = tonic::Request::new(pb::Empty {});
        request.set_timeout(self.timeout);
        match tokio::time::timeout(self.timeout, AdminClient::new(channel).status(request)).await {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) => Err(ClientError::Rpc(status)),
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    /// Asks every endpoint (concurrently) who leads; returns the leader's address.
    pub async fn find_leader(&mut self) -> Result<String, ClientError> {
        let endpoints = self.endpoints.clone();
        let mut asks = Vec::new();
        for address in &endpoints {
            let channel = self.channel(address)?;
            let timeout = self.timeout;
            asks.push(async move {
                let mut request = tonic::Request::new(pb::Empty {});
                request.set_timeout(timeout);
                let answer =
                    tokio::time::timeout(timeout, AdminClient::new(channel).status(request)).await;
                (address.clone(), answer)
            });
        }
        let mut details = Vec::new();
        let mut hint: Option<(u64, String)> = None;
        // A deposed leader cut off from the others may still believe it leads:
        // of several claims, the highest term wins.
        let mut claim: Option<(u64, String)> = None;
        for (address, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(Ok(status)) => {
                    let status = status.into_inner();
                    if status.role == pb::Role::Leader as i32 && status.leader_id == status.id {
                        if claim.as_ref().is_none_or(|(term, _)| status.term > *term) {
                            claim = Some((status.term, address.clone()));
                        }
                        continue;
                    }
                    if status.leader_id != 0
                        && !status.leader_address.is_empty()
                        && hint.as_ref().is_none_or(|(term, _)| status.term > *term)
                    {
                        hint = Some((status.term, status.leader_address.clone()));
                    }
                    details.push(format!("{address} is a {}", role_name(status.role)));
                }
                Ok(Err(status)) => details.push(format!("{address}: {}", describe_status(&status))),
                Err(_) => details.push(format!("{address}: no answer within {:?}", self.timeout)),
            }
        }
        let best = match (claim, hint) {
            (Some(claim), Some(hint)) if hint.0 > claim.0 => Some(hint.1),
            (Some(claim), _) => Some(claim.1),
            (None, hint) => hint.map(|h| h.1),
        };
        if let Some(address) = best {
            self.leader = Some(address.clone());
            return Ok(address);
        }
        Err(ClientError::NoLeader {
            endpoints: endpoints.join(","),
            details: details.join("; "),
        })
    }

    /// Runs `call` on the leader, following redirects and leader changes
    /// until it succeeds, fails for another reason, or the timeout passes.
    /// Only use it for calls that are safe to repeat after `UNAVAILABLE`.
    pub async fn on_leader<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut last_error = None;
        let mut pause = Duration::from_millis(50);
        while Instant::now() < deadline {
            let leader = match self.leader.clone() {
                Some(leader) => leader,
                None => match self.find_leader().await {
                    Ok(leader) => leader,
                    Err(e) => {
                        last_error = Some(e);
                        tokio::time::sleep(
                            pause.min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                        continue;
                    }
                },
            };
            let channel = self.channel(&leader)?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, call(channel)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) if status.code() == Code::Unavailable => {
                    self.leader = leader_hint(&status).map(|(_, address)| address);
                    if self.leader.is_none() {
                        tokio::time::sleep(
                            pause.min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                    last_error = Some(ClientError::Rpc(status));
                }
                Ok(Err(status)) => return Err(ClientError::Rpc(status)),
                Err(_) => return Err(ClientError::Timeout(self.timeout)),
            }
        }
        Err(last_error.unwrap_or(ClientError::Timeout(self.timeout)))
    }
}

/// Parses `250ms`, `5s`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 500ms, 5s, 1m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?}: a duration must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A role's name as operators read it.
pub fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Leader) => "leader",
        Ok(pb::Role::Follower) => "follower",
        Ok(pb::Role::Candidate) => "candidate",
        Ok(pb::Role::Learner) => "learner",
        Ok(pb::Role::Shutdown) => "shut down",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_parse_in_every_form() {
        assert_eq!(
            parse_endpoints("multi:///a:1,b:2").unwrap(),
            vec!["a:1", "b:2"]
        );
        assert_eq!(parse_endpoints("a:1, b:2").unwrap(), vec!["a:1", "b:2"]);
        assert_eq!(
            parse_endpoints("127.0.0.1:50051").unwrap(),
            vec!["127.0.0.1:50051"]
        );
        assert!(matches!(parse_endpoints(""), Err(ClientError::NoEndpoints)));
        assert!(matches!(
            parse_endpoints("a"),
            Err(ClientError::BadEndpoint(_))
        ));
        assert!(matches!(
            parse_endpoints("a:99999"),
            Err(ClientError::BadEndpoint(_))
        ));
        assert!(matches!(
            parse_endpoints("http://a:1"),
            Err(ClientError::BadEndpoint(_))
        ));
    }
}
