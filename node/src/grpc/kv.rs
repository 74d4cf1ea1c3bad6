//! `raftkv.KV`: the client API. Writes and linearizable reads run on the
//! leader (a follower forwards them); stale reads are served locally.

use std::sync::Arc;

use prost::Message;
use raftkv_proto::pb;
use raftkv_proto::pb::kv_server::Kv;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::convert::get_response;
use super::routing::Placement;
use super::watch::WatchStream;
use super::watch::Watches;
use crate::error::NodeError;
use crate::node::Consistency;
use crate::node::RaftNode;
use crate::types::Command;
use crate::types::CommandResult;

/// Pairs returned by a scan when the request sets no limit.
const DEFAULT_SCAN_LIMIT: usize = 1000;
/// Most pairs one scan returns.
const MAX_SCAN_LIMIT: usize = 10_000;

/// Where each `raftkv.KV` method runs: writes, lease calls and
/// linearizable reads on the leader; stale reads and watches on whichever
/// node the call reached.
pub fn placement(method: &str) -> Placement {
    match method {
        "Get" => Placement::LeaderUnless(|message| {
            pb::GetRequest::decode(message).is_ok_and(|request| request.stale)
        }),
        "Scan" => Placement::LeaderUnless(|message| {
            pb::ScanRequest::decode(message).is_ok_and(|request| request.stale)
        }),
        "Watch" => Placement::Here,
        _ => Placement::Leader,
    }
}

/// The client API of one node.
pub struct KvService {
    node: Arc<RaftNode>,
    watches: Watches,
}

impl KvService {
    /// The service over `node`, whose applied changes `watches` streams.
    pub fn new(node: Arc<RaftNode>, watches: Watches) -> KvService {
        KvService { node, watches }
    }
}

/// The wire's `stale` flag as the node's read consistency.
fn consistency(stale: bool) -> Consistency {
    if stale {
        Consistency::Stale
    } else {
        Consistency::Linearizable
    }
}

/// Seconds as the wire's signed TTL (TTLs are bounded far below `i64::MAX`).
fn seconds(ttl: u64) -> i64 {
    i64::try_from(ttl).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let pb::PutRequest { key, value, lease } = request.into_inner();
        self.node.check_key(&key)?;
        self.node.check_value(&value)?;
        let command = match lease {
            0 => Command::Put { key, value },
            lease => Command::PutLeased { key, value, lease },
        };
        match self.node.write(command).await? {
            (index, CommandResult::Done) => Ok(Response::new(pb::PutResponse { index })),
            (_, other) => Err(NodeError::unexpected(&other).into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let consistency = consistency(request.get_ref().stale);
        let request = request.into_inner();
        let revision = (request.revision > 0).then_some(request.revision);
        let (found, applied_index) = self.node.get(&request.key, consistency, revision).await?;
        Ok(Response::new(get_response(found, applied_index)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let key = request.into_inner().key;
        self.node.check_key(&key)?;
        match self.node.write(Command::Delete { key }).await? {
            (index, CommandResult::Deleted { existed }) => {
                Ok(Response::new(pb::DeleteResponse { index, existed }))
            }
            (_, other) => Err(NodeError::unexpected(&other).into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_prefix(
        &self,
        request: Request<pb::DeletePrefixRequest>,
    ) -> Result<Response<pb::DeletePrefixResponse>, Status> {
        let prefix = request.into_inner().prefix;
        if prefix.is_empty() {
            return Err(NodeError::BadRequest(
                "the prefix is empty; name at least one byte (delete keys one by one, or by \
                 prefix, to empty the store)"
                    .into(),
            )
            .into());
        }
        self.node.check_key(&prefix)?;
        match self.node.write(Command::DeletePrefix { prefix }).await? {
            (index, CommandResult::DeletedPrefix { deleted }) => {
                Ok(Response::new(pb::DeletePrefixResponse { index, deleted }))
            }
            (_, other) => Err(NodeError::unexpected(&other).into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let consistency = consistency(request.get_ref().stale);
        let request = request.into_inner();
        let limit = match request.limit as usize {
            0 => DEFAULT_SCAN_LIMIT,
            n => n.min(MAX_SCAN_LIMIT),
        };
        let revision = (request.revision > 0).then_some(request.revision);
        let page = self
            .node
            .scan(
                &request.prefix,
                &request.start_after,
                limit,
                consistency,
                revision,
            )
            .await?;
        Ok(Response::new(pb::ScanResponse {
            pairs: page
                .pairs
                .into_iter()
                .map(|kv| pb::KeyValue {
                    key: kv.key,
                    value: kv.value,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    lease: kv.lease,
                })
                .collect(),
            more: page.more,
            applied_index: page.revision,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let pb::CompareAndSwapRequest {
            key,
            expected_value,
            new_value,
            lease,
        } = request.into_inner();
        self.node.check_key(&key)?;
        self.node.check_value(&new_value)?;
        let command = match lease {
            0 => Command::CompareAndSwap {
                key,
                expected: expected_value,
                new_value,
            },
            lease => Command::CompareAndSwapLeased {
                key,
                expected: expected_value,
                new_value,
                lease,
            },
        };
        match self.node.write(command).await? {
            (index, CommandResult::Swapped { succeeded, current }) => {
                Ok(Response::new(pb::CompareAndSwapResponse {
                    succeeded,
                    index,
                    current_value: current,
                }))
            }
            (_, other) => Err(NodeError::unexpected(&other).into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let command = super::txn::command(&self.node, request.into_inner())?;
        match self.node.write(command).await? {
            (index, CommandResult::Txn { succeeded, results }) => Ok(Response::new(
                super::txn::response(index, succeeded, results),
            )),
            (_, other) => Err(NodeError::unexpected(&other).into()),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let ttl = request.into_inner().ttl;
        let id = self.node.lease_grant(ttl, None).await?;
        Ok(Response::new(pb::LeaseGrantResponse { id, ttl }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let (index, keys_deleted) = self.node.lease_revoke(request.into_inner().id).await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            index,
            keys_deleted,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_keep_alive(
        &self,
        request: Request<pb::LeaseKeepAliveRequest>,
    ) -> Result<Response<pb::LeaseKeepAliveResponse>, Status> {
        let id = request.into_inner().id;
        let ttl = self.node.lease_keep_alive(id).await?;
        Ok(Response::new(pb::LeaseKeepAliveResponse {
            id,
            ttl: seconds(ttl),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let pb::LeaseTimeToLiveRequest { id, keys } = request.into_inner();
        let status = self.node.lease_time_to_live(id, keys).await?;
        // Rounded up: a lease with any time left never reads as 0.
        let left = status.remaining.as_nanos().div_ceil(1_000_000_000);
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            id,
            ttl: i64::try_from(left).unwrap_or(i64::MAX),
            granted_ttl: seconds(status.granted_ttl),
            keys: status.keys,
            more_keys: status.more_keys,
        }))
    }

    type WatchStream = WatchStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = super::watch::start(&self.watches, request.into_inner())?;
        Ok(Response::new(stream))
    }
}
