//! `raftkv.KV`: the client API. Writes and linearizable reads run on the
//! leader (a follower forwards them); stale reads are served locally.

use std::sync::Arc;

use raftkv_proto::pb;
use raftkv_proto::pb::kv_client::KvClient;
use raftkv_proto::pb::kv_server::Kv;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use super::forwarded;
use super::route;
use super::watch::WatchStream;
use super::watch::Watches;
use crate::node::Consistency;
use crate::node::RaftNode;
use crate::types::Command;
use crate::types::CommandResult;

/// Pairs returned by a scan when the request sets no limit.
const DEFAULT_SCAN_LIMIT: usize = 1000;
/// Most pairs one scan returns.
const MAX_SCAN_LIMIT: usize = 10_000;

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

fn unexpected(result: &CommandResult) -> Status {
    Status::internal(format!("unexpected state machine result {result:?}"))
}

#[tonic::async_trait]
impl Kv for KvService {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        if let Some(leader) = route(&self.node, &request)? {
            return KvClient::new(leader).put(forwarded(request)).await;
        }
        let pb::PutRequest { key, value } = request.into_inner();
        self.node.check_key(&key)?;
        self.node.check_value(&value)?;
        let (index, _) = self.node.write(Command::Put { key, value }).await?;
        Ok(Response::new(pb::PutResponse { index }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let consistency = consistency(request.get_ref().stale);
        // A stale read is served by whichever node it reached.
        if consistency == Consistency::Linearizable {
            if let Some(leader) = route(&self.node, &request)? {
                return KvClient::new(leader).get(forwarded(request)).await;
            }
        }
        let request = request.into_inner();
        let (value, applied_index) = self.node.get(&request.key, consistency).await?;
        let (value, modified_index) = value.map_or((None, 0), |(v, m)| (Some(v), m));
        Ok(Response::new(pb::GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
            applied_index,
            modified_index,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        if let Some(leader) = route(&self.node, &request)? {
            return KvClient::new(leader).delete(forwarded(request)).await;
        }
        let key = request.into_inner().key;
        self.node.check_key(&key)?;
        match self.node.write(Command::Delete { key }).await? {
            (index, CommandResult::Deleted { existed }) => {
                Ok(Response::new(pb::DeleteResponse { index, existed }))
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let consistency = consistency(request.get_ref().stale);
        if consistency == Consistency::Linearizable {
            if let Some(leader) = route(&self.node, &request)? {
                return KvClient::new(leader).scan(forwarded(request)).await;
            }
        }
        let request = request.into_inner();
        let limit = match request.limit as usize {
            0 => DEFAULT_SCAN_LIMIT,
            n => n.min(MAX_SCAN_LIMIT),
        };
        let page = self
            .node
            .scan(&request.prefix, &request.start_after, limit, consistency)
            .await?;
        Ok(Response::new(pb::ScanResponse {
            pairs: page
                .pairs
                .into_iter()
                .map(|(key, value)| pb::KeyValue { key, value })
                .collect(),
            more: page.more,
            applied_index: page.applied_index,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        if let Some(leader) = route(&self.node, &request)? {
            return KvClient::new(leader)
                .compare_and_swap(forwarded(request))
                .await;
        }
        let pb::CompareAndSwapRequest {
            key,
            expected_value,
            new_value,
        } = request.into_inner();
        self.node.check_key(&key)?;
        self.node.check_value(&new_value)?;
        let command = Command::CompareAndSwap {
            key,
            expected: expected_value,
            new_value,
        };
        match self.node.write(command).await? {
            (index, CommandResult::Swapped { succeeded, current }) => {
                Ok(Response::new(pb::CompareAndSwapResponse {
                    succeeded,
                    index,
                    current_value: current,
                }))
            }
            (_, other) => Err(unexpected(&other)),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        if let Some(leader) = route(&self.node, &request)? {
            return KvClient::new(leader).txn(forwarded(request)).await;
        }
        let command = super::txn::command(&self.node, request.into_inner())?;
        match self.node.write(command).await? {
            (index, CommandResult::Txn { succeeded, results }) => Ok(Response::new(
                super::txn::response(index, succeeded, results),
            )),
            (_, other) => Err(unexpected(&other)),
        }
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
