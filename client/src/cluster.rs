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
        let channel = self.channel(address)?;
        with_timeout(self.timeout, |timeout| async move {
            let mut request = tonic::Request::new(pb::Empty {});
            request.set_timeout(timeout);
            AdminClient::new(channel).status(request).await
        })
        .await
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
    /// address. Callers that may not read a node's status (a certificate
    /// for raftkv.KV only) find the leader among the endpoints through the
    /// health service instead.
    pub async fn find_leader(&mut self) -> Result<String, ClientError> {
        let endpoints = self.endpoints.clone();
        let this = &*self;
        let asks = endpoints.iter().map(|address| async move {
            let answer = this.status(address).await;
            (address, answer)
        });
        let answers = futures::future::join_all(asks).await;
        let mut details = Vec::new();
        let mut hint: Option<(u64, String)> = None;
        // A deposed leader cut off from the others may still believe it leads:
        // of several claims, the highest term wins.
        let mut claim: Option<(u64, String)> = None;
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
                Err(ClientError::Timeout(_)) => {
                    details.push(format!("{address}: no answer within {:?}", self.timeout))
                }
                Err(ClientError::Rpc(status)) if status.code() == Code::PermissionDenied => {
                    restricted.push(address)
                }
                Err(e) => details.push(format!("{address}: {e}")),
            }
        }
        if claim.is_none() && hint.is_none() {
            for address in restricted {
                match self.serves_leader_health(address).await {
                    Ok(true) => {
                        claim = Some((0, address.clone()));
                        break;
                    }
                    Ok(false) => details.push(format!("{address} does not lead")),
                    Err(e) => details.push(format!("{address}: {e}")),
                }
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
