//! etcd's `KV` service. A range runs on the leader after a read fence
//! (on any node when `serializable`, etcd's stale read); a put, a
//! delete-range and a transaction are one log entry each ([`EtcdTxn`]),
//! so they take one revision, as in etcd. A transaction always goes
//! through the log, even when it only reads.
//!
//! Differences from etcd: a range inside a transaction reads the
//! transaction's own state and refuses a `revision`.

use std::sync::Arc;

use prost::Message;
use raftkv_proto::etcd::etcdserverpb as pb;
use raftkv_proto::etcd::etcdserverpb::compare::CompareResult as PbResult;
use raftkv_proto::etcd::etcdserverpb::compare::CompareTarget as PbTarget;
use raftkv_proto::etcd::etcdserverpb::compare::TargetUnion;
use raftkv_proto::etcd::etcdserverpb::kv_server::Kv;
use raftkv_proto::etcd::etcdserverpb::request_op::Request;
use raftkv_proto::etcd::etcdserverpb::response_op::Response as OpResponse;
use tonic::Request as Call;
use tonic::Response;
use tonic::Status;

use super::errors::status;
use super::errors::EtcdError;
use super::header;
use super::key_value;
use super::range;
use super::txn::CompareResult;
use super::txn::CompareTarget;
use super::txn::EtcdCompare;
use super::txn::EtcdOp;
use super::txn::EtcdOpResult;
use super::txn::EtcdRefusal;
use super::txn::EtcdTxn;
use super::txn::KeyRange;
use super::txn::Pair;
use crate::error::NodeError;
use crate::grpc::routing::Placement;
use crate::node::Consistency;
use crate::node::RaftNode;
use crate::types::Command;
use crate::types::CommandResult;

/// Most operations in one branch, and compares, of a transaction (etcd's
/// default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Most levels of transactions nested in one. The log's versioned encoding
/// spends two levels of protobuf's 100 on the envelope and its key ranges;
/// a deeper transaction would be committed and then unreadable.
pub const MAX_TXN_DEPTH: usize = 32;

/// Where each `etcdserverpb.KV` method runs: a serializable range here; a
/// write here too, proposed through the leader (`node::propose`); the rest
/// on the leader.
pub fn placement(method: &str) -> Placement {
    match method {
        "Put" | "DeleteRange" | "Txn" => Placement::Proposes,
        "Range" => Placement::LeaderUnless(|message| {
            pb::RangeRequest::decode(message).is_ok_and(|request| request.serializable)
        }),
        _ => Placement::Leader,
    }
}

/// Room left in a `Range` answer for its header and the framing of each
/// pair beyond its key and value.
const RANGE_HEADROOM_BYTES: usize = 64 << 10;

/// etcd's key-value API of one node.
pub struct EtcdKv {
    node: Arc<RaftNode>,
    /// The most a `Range` answer may carry: what the node can send in one
    /// message, less room for the header.
    max_range_bytes: usize,
}

impl EtcdKv {
    pub fn new(node: Arc<RaftNode>, max_message_bytes: usize) -> EtcdKv {
        EtcdKv {
            node,
            max_range_bytes: max_message_bytes.saturating_sub(RANGE_HEADROOM_BYTES),
        }
    }

    /// Proposes `txn` (through the leader, on a follower); its outcome and
    /// revision.
    async fn propose(&self, txn: EtcdTxn) -> Result<(EtcdOpResult, u64), Status> {
        match self
            .node
            .propose(Command::Etcd(txn))
            .await
            .map_err(status)?
        {
            (revision, CommandResult::Etcd(Ok(result))) => Ok((result, revision)),
            (_, CommandResult::Etcd(Err(refusal))) => Err(match refusal {
                EtcdRefusal::LeaseNotFound(_) => EtcdError::LeaseNotFound.into(),
                EtcdRefusal::KeyNotFound => EtcdError::KeyNotFound.into(),
                EtcdRefusal::LeaseFull(id) => NodeError::LeaseFull { id }.into(),
            }),
            (_, other) => Err(NodeError::unexpected(&other).into()),
        }
    }

    fn key(&self, key: &[u8]) -> Result<(), Status> {
        if key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        self.node.check_key(key).map_err(status)
    }

    /// A request op as a log operation, checked as etcd checks it.
    fn op(&self, op: &pb::RequestOp) -> Result<EtcdOp, Status> {
        Ok(match &op.request {
            Some(Request::RequestRange(r)) => {
                if r.revision != 0 {
                    return Err(NodeError::BadRequest(
                        "a range inside a transaction reads the transaction's own state: \
                         it takes no revision"
                            .into(),
                    )
                    .into());
                }
                self.key(&r.key)?;
                EtcdOp::Range {
                    keys: range::keys(r),
                    limit: range::fetch_limit(r),
                    count_only: r.count_only,
                }
            }
            Some(Request::RequestPut(r)) => self.put_op(r)?,
            Some(Request::RequestDeleteRange(r)) => {
                self.key(&r.key)?;
                EtcdOp::DeleteRange {
                    keys: KeyRange {
                        key: r.key.clone(),
                        end: r.range_end.clone(),
                    },
                    prev_kv: r.prev_kv,
                }
            }
            Some(Request::RequestTxn(r)) => EtcdOp::Txn(self.txn_within(r)?),
            None => {
                return Err(NodeError::BadRequest("a transaction operation is empty".into()).into())
            }
        })
    }

    fn put_op(&self, r: &pb::PutRequest) -> Result<EtcdOp, Status> {
        self.owned_put_op(pb::PutRequest {
            key: r.key.clone(),
            value: r.value.clone(),
            ..*r
        })
    }

    /// [`EtcdKv::put_op`] of a request it may take the key and value from.
    fn owned_put_op(&self, r: pb::PutRequest) -> Result<EtcdOp, Status> {
        self.key(&r.key)?;
        if r.ignore_value && !r.value.is_empty() {
            return Err(EtcdError::ValueProvided.into());
        }
        if r.ignore_lease && r.lease != 0 {
            return Err(EtcdError::LeaseProvided.into());
        }
        self.node.check_value(&r.value).map_err(status)?;
        let lease = u64::try_from(r.lease).map_err(|_| Status::from(EtcdError::LeaseNotFound))?;
        Ok(EtcdOp::Put {
            key: r.key,
            value: (!r.ignore_value).then_some(r.value),
            lease: (!r.ignore_lease).then_some(lease),
            prev_kv: r.prev_kv,
        })
    }

    fn txn(&self, r: &pb::TxnRequest) -> Result<EtcdTxn, Status> {
        if txn_depth(r) > MAX_TXN_DEPTH {
            return Err(Status::invalid_argument(format!(
                "transactions are nested more than {MAX_TXN_DEPTH} deep"
            )));
        }
        self.txn_within(r)
    }

    /// [`EtcdKv::txn`] once its depth is checked.
    fn txn_within(&self, r: &pb::TxnRequest) -> Result<EtcdTxn, Status> {
        if r.compare.len() > MAX_TXN_OPS
            || r.success.len() > MAX_TXN_OPS
            || r.failure.len() > MAX_TXN_OPS
        {
            return Err(EtcdError::TooManyOps.into());
        }
        let compares = r.compare.iter().map(compare).collect();
        let success = r
            .success
            .iter()
            .map(|op| self.op(op))
            .collect::<Result<Vec<_>, _>>()?;
        let failure = r
            .failure
            .iter()
            .map(|op| self.op(op))
            .collect::<Result<Vec<_>, _>>()?;
        for branch in [&success, &failure] {
            if writes_overlap(branch) {
                return Err(EtcdError::DuplicateKey.into());
            }
        }
        Ok(EtcdTxn {
            compares,
            success,
            failure,
        })
    }

    /// `request` alone, as a transaction of it (a put or a delete-range is
    /// one): its answer.
    async fn single(&self, request: Request) -> Result<OpResponse, Status> {
        let txn_request = pb::TxnRequest {
            success: vec![pb::RequestOp {
                request: Some(request),
            }],
            ..pb::TxnRequest::default()
        };
        let txn = self.txn(&txn_request)?;
        let (result, revision) = self.propose(txn).await?;
        let mut response = self.txn_response(&txn_request, result, revision);
        response
            .responses
            .pop()
            .and_then(|op| op.response)
            .ok_or_else(|| {
                NodeError::Internal("an operation came back without its result".into()).into()
            })
    }

    /// The answer to a put of revision `revision` that replaced `prev`.
    fn put_response(&self, prev: Option<Pair>, revision: u64) -> pb::PutResponse {
        pb::PutResponse {
            header: header(&self.node, revision),
            prev_kv: prev.map(|(key, stored)| key_value(key, stored)),
        }
    }

    /// The answer to transaction `r` from its outcome.
    fn txn_response(
        &self,
        r: &pb::TxnRequest,
        result: EtcdOpResult,
        revision: u64,
    ) -> pb::TxnResponse {
        let EtcdOpResult::Txn { succeeded, results } = result else {
            return pb::TxnResponse::default();
        };
        let branch = if succeeded { &r.success } else { &r.failure };
        let responses = branch
            .iter()
            .zip(results)
            .map(|(op, result)| pb::ResponseOp {
                response: Some(match (&op.request, result) {
                    (Some(Request::RequestRange(r)), EtcdOpResult::Range { pairs, count }) => {
                        let (kvs, more, count) = range::finish(r, pairs, count);
                        OpResponse::ResponseRange(pb::RangeResponse {
                            header: header(&self.node, revision),
                            kvs,
                            more,
                            count,
                        })
                    }
                    (_, EtcdOpResult::Put { prev }) => {
                        OpResponse::ResponsePut(self.put_response(prev, revision))
                    }
                    (_, EtcdOpResult::DeleteRange { deleted, prev }) => {
                        OpResponse::ResponseDeleteRange(pb::DeleteRangeResponse {
                            header: header(&self.node, revision),
                            deleted: super::signed(deleted),
                            prev_kvs: prev
                                .into_iter()
                                .map(|(key, stored)| key_value(key, stored))
                                .collect(),
                        })
                    }
                    (Some(Request::RequestTxn(inner)), result @ EtcdOpResult::Txn { .. }) => {
                        OpResponse::ResponseTxn(self.txn_response(inner, result, revision))
                    }
                    // The log ran the operations the request named, in order.
                    (_, _) => OpResponse::ResponseTxn(pb::TxnResponse::default()),
                }),
            })
            .collect();
        pb::TxnResponse {
            header: header(&self.node, revision),
            succeeded,
            responses,
        }
    }
}

/// An answer of another kind than the operation asked.
fn unexpected(response: &OpResponse) -> Status {
    NodeError::Internal(format!("an operation answered as {response:?}")).into()
}

/// A compare as the log keeps it.
fn compare(c: &pb::Compare) -> EtcdCompare {
    let number = |n: Option<&TargetUnion>| match n {
        Some(
            TargetUnion::Version(n)
            | TargetUnion::CreateRevision(n)
            | TargetUnion::ModRevision(n)
            | TargetUnion::Lease(n),
        ) => *n,
        _ => 0,
    };
    let union = c.target_union.as_ref();
    // A target without its value compares with the zero value, as in etcd.
    let target = match PbTarget::try_from(c.target).unwrap_or(PbTarget::Version) {
        PbTarget::Version => CompareTarget::Version(number(union)),
        PbTarget::Create => CompareTarget::Create(number(union)),
        PbTarget::Mod => CompareTarget::Mod(number(union)),
        PbTarget::Lease => CompareTarget::Lease(number(union)),
        PbTarget::Value => CompareTarget::Value(match union {
            Some(TargetUnion::Value(value)) => value.clone(),
            _ => Vec::new(),
        }),
    };
    let result = match PbResult::try_from(c.result).unwrap_or(PbResult::Equal) {
        PbResult::Equal => CompareResult::Equal,
        PbResult::Greater => CompareResult::Greater,
        PbResult::Less => CompareResult::Less,
        PbResult::NotEqual => CompareResult::NotEqual,
    };
    EtcdCompare {
        keys: KeyRange {
            key: c.key.clone(),
            end: c.range_end.clone(),
        },
        result,
        target,
    }
}

/// How many levels of transactions `r` is (1: none nested in it).
fn txn_depth(r: &pb::TxnRequest) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(r, 1)];
    while let Some((txn, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        for op in txn.success.iter().chain(&txn.failure) {
            if let Some(Request::RequestTxn(inner)) = &op.request {
                stack.push((inner, depth + 1));
            }
        }
    }
    deepest
}

/// Whether a branch writes one key twice: two puts of it, or a put of a
/// key a delete-range of the branch covers (etcd refuses both), nested
/// transactions' branches included.
fn writes_overlap(branch: &[EtcdOp]) -> bool {
    let mut puts = std::collections::HashSet::new();
    let mut deletes = Vec::new();
    let mut stack: Vec<&EtcdOp> = branch.iter().collect();
    while let Some(op) = stack.pop() {
        match op {
            EtcdOp::Put { key, .. } => {
                if !puts.insert(key.as_slice()) {
                    return true;
                }
            }
            EtcdOp::DeleteRange { keys, .. } => deletes.push(keys),
            EtcdOp::Txn(inner) => stack.extend(inner.success.iter().chain(&inner.failure)),
            EtcdOp::Range { .. } => {}
        }
    }
    puts.iter()
        .any(|key| deletes.iter().any(|keys| keys.contains(key)))
}

#[tonic::async_trait]
impl Kv for EtcdKv {
    async fn range(
        &self,
        request: Call<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = request.into_inner();
        self.key(&r.key)?;
        let at = match u64::try_from(r.revision) {
            Ok(0) => None,
            Ok(revision) => Some(revision),
            Err(_) => return Err(EtcdError::FutureRev.into()),
        };
        let consistency = if r.serializable {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        };
        self.node.read_fence(consistency).await.map_err(status)?;
        let keys = range::keys(&r);
        let limit = match (r.count_only, range::fetch_limit(&r)) {
            (true, _) => 0,
            (false, 0) => usize::MAX,
            (false, n) => usize::try_from(n).unwrap_or(usize::MAX),
        };
        let (ranged, revision) = self
            .node
            .kv()
            .range(keys.bounds(), at, limit, self.max_range_bytes)
            .map_err(|e| status(e.into()))?;
        if ranged.too_large {
            // etcd's server fails such an answer in gRPC's encoder, after
            // reading it all; this one stops reading at the budget.
            return Err(Status::resource_exhausted(format!(
                "the range's values pass the {} bytes one answer may carry; ask for fewer keys (limit) and page",
                self.max_range_bytes
            )));
        }
        let pairs = ranged
            .pairs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv.into()))
            .collect();
        let (kvs, more, count) = range::finish(&r, pairs, ranged.count);
        // The header names the store's revision, as etcd's does, also for
        // a read at an older one.
        let current = match at {
            None => revision,
            Some(_) => self.node.revisions().current().max(revision),
        };
        Ok(Response::new(pb::RangeResponse {
            header: header(&self.node, current),
            kvs,
            more,
            count,
        }))
    }

    async fn put(
        &self,
        request: Call<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        // The most common call: the request's key and value move into the
        // entry, where `single` would copy them.
        let txn = EtcdTxn {
            compares: Vec::new(),
            success: vec![self.owned_put_op(request.into_inner())?],
            failure: Vec::new(),
        };
        let (result, revision) = self.propose(txn).await?;
        let put = match result {
            EtcdOpResult::Txn { mut results, .. } => results.pop(),
            _ => None,
        };
        let Some(EtcdOpResult::Put { prev }) = put else {
            return Err(NodeError::Internal("a put came back without its result".into()).into());
        };
        Ok(Response::new(self.put_response(prev, revision)))
    }

    async fn delete_range(
        &self,
        request: Call<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        match self
            .single(Request::RequestDeleteRange(request.into_inner()))
            .await?
        {
            OpResponse::ResponseDeleteRange(response) => Ok(Response::new(response)),
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(
        &self,
        request: Call<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let r = request.into_inner();
        let txn = self.txn(&r)?;
        let (result, revision) = self.propose(txn).await?;
        Ok(Response::new(self.txn_response(&r, result, revision)))
    }

    async fn compact(
        &self,
        request: Call<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let revision = u64::try_from(request.get_ref().revision)
            .map_err(|_| Status::from(EtcdError::Compacted))?;
        let (_, index) = self.node.compact(revision).await.map_err(status)?;
        Ok(Response::new(pb::CompactionResponse {
            header: header(&self.node, index),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> pb::TxnRequest {
        let mut txn = pb::TxnRequest::default();
        for _ in 1..depth {
            txn = pb::TxnRequest {
                failure: vec![pb::RequestOp {
                    request: Some(Request::RequestTxn(txn)),
                }],
                ..pb::TxnRequest::default()
            };
        }
        txn
    }

    #[test]
    fn a_transactions_depth_counts_the_deepest_branch() {
        assert_eq!(txn_depth(&pb::TxnRequest::default()), 1);
        assert_eq!(txn_depth(&nested(MAX_TXN_DEPTH)), MAX_TXN_DEPTH);
        let mut wide = nested(3);
        wide.success.push(pb::RequestOp {
            request: Some(Request::RequestTxn(nested(5))),
        });
        assert_eq!(txn_depth(&wide), 6);
    }
}
