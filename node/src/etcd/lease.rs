//! etcd's `Lease` service over raftkv's leases. A grant with ID 0 gets an
//! id the cluster chooses (its log index, or the next free id above it); a
//! grant with an ID of its own gets that id, or etcd's "lease already
//! exists" when a lease holds it (see `store::leases`). Keep-alives
//! and the countdowns run on the leader, as raftkv's own do; the TTL is
//! raised to the shortest raftkv grants (1 s), and one over a year is
//! refused as etcd refuses a TTL too large.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::lease_server::Lease;
use tokio::sync::mpsc;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::errors::status;
use super::errors::EtcdError;
use super::header;
use super::signed;
use crate::error::NodeError;
use crate::grpc::routing::Placement;
use crate::node::RaftNode;
use crate::store::MAX_TTL_SECONDS;
use crate::store::MIN_TTL_SECONDS;

/// Where each `etcdserverpb.Lease` method runs: on the leader, which keeps
/// the countdowns.
pub fn placement(_method: &str) -> Placement {
    Placement::Leader
}

/// The answers of one keep-alive stream.
pub type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

/// etcd's lease API of one node.
pub struct EtcdLease {
    node: Arc<RaftNode>,
}

impl EtcdLease {
    pub fn new(node: Arc<RaftNode>) -> EtcdLease {
        EtcdLease { node }
    }

    fn current(&self) -> u64 {
        self.node.revisions().current()
    }
}

/// A lease id from the wire: etcd's ids are positive.
fn lease_id(id: i64) -> Result<u64, Status> {
    u64::try_from(id)
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| EtcdError::LeaseNotFound.into())
}

#[tonic::async_trait]
impl Lease for EtcdLease {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = request.into_inner();
        // etcd's ids are positive int64s; 0 asks the cluster to choose.
        let chosen = match u64::try_from(r.id) {
            Ok(0) => None,
            Ok(id) => Some(id),
            Err(_) => {
                return Err(NodeError::BadRequest(format!(
                "lease ID {} is negative; etcd's lease ids are positive (0: the cluster chooses)",
                r.id
            ))
                .into())
            }
        };
        let ttl = u64::try_from(r.ttl).unwrap_or(0).max(MIN_TTL_SECONDS);
        if ttl > MAX_TTL_SECONDS {
            return Err(EtcdError::LeaseTtlTooLarge.into());
        }
        let id = self
            .node
            .lease_grant(signed(ttl), chosen)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: header(&self.node, id),
            id: signed(id),
            ttl: signed(ttl),
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let id = lease_id(request.get_ref().id)?;
        let (index, _) = self.node.lease_revoke(id).await.map_err(status)?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: header(&self.node, index),
        }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let node = self.node.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    request = requests.message() => request,
                    () = tx.closed() => return,
                };
                let Ok(Some(request)) = request else { return };
                // A lease that is gone answers TTL 0, as etcd's does.
                let ttl = match lease_id(request.id) {
                    Err(_) => Ok(0),
                    Ok(id) => match node.lease_keep_alive(id).await {
                        Ok(ttl) => Ok(signed(ttl)),
                        Err(NodeError::LeaseNotFound { .. }) => Ok(0),
                        Err(e) => Err(status(e)),
                    },
                };
                let answer = ttl.map(|ttl| pb::LeaseKeepAliveResponse {
                    header: header(&node, node.revisions().current()),
                    id: request.id,
                    ttl,
                });
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        let gone = pb::LeaseTimeToLiveResponse {
            header: header(&self.node, self.current()),
            id: r.id,
            ttl: -1,
            ..Default::default()
        };
        let Ok(id) = lease_id(r.id) else {
            return Ok(Response::new(gone));
        };
        match self.node.lease_time_to_live(id, r.keys).await {
            Ok(lease) => Ok(Response::new(pb::LeaseTimeToLiveResponse {
                header: header(&self.node, self.current()),
                id: r.id,
                ttl: signed(lease.remaining.as_secs()),
                granted_ttl: signed(lease.granted_ttl),
                keys: lease.keys,
            })),
            // etcd answers a lease that is gone with TTL -1, not an error.
            Err(NodeError::LeaseNotFound { .. }) => Ok(Response::new(gone)),
            Err(e) => Err(status(e)),
        }
    }

    async fn lease_leases(
        &self,
        _: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let leases = self
            .node
            .lease_table()
            .map_err(|e| status(NodeError::Storage(e)))?
            .into_iter()
            .map(|(id, _)| pb::LeaseStatus { id: signed(id) })
            .collect();
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(&self.node, self.current()),
            leases,
        }))
    }
}
