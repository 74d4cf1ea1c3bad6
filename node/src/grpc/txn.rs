//! `KV/Txn` on the wire: the request checked and turned into a
//! [`Command::Txn`], and its result turned back into a response. A request
//! that breaks a limit is refused whole, before anything is proposed.

use raftkv_proto::pb;
use tonic::Status;

use crate::error::NodeError;
use crate::node::RaftNode;
use crate::types::Check;
use crate::types::Command;
use crate::types::Compare;
use crate::types::TxnOp;
use crate::types::TxnOpResult;

/// Most comparisons, and most operations per branch, in one transaction.
pub const MAX_TXN_ITEMS: usize = 128;

fn invalid(message: String) -> Status {
    NodeError::BadRequest(message).into()
}

/// The command of `request`, or why it is refused.
pub fn command(node: &RaftNode, request: pb::TxnRequest) -> Result<Command, Status> {
    let pb::TxnRequest {
        compares,
        success,
        failure,
    } = request;
    for (what, len) in [
        ("comparisons", compares.len()),
        ("success operations", success.len()),
        ("failure operations", failure.len()),
    ] {
        if len > MAX_TXN_ITEMS {
            return Err(invalid(format!(
                "the transaction has {len} {what}; the limit is {MAX_TXN_ITEMS}"
            )));
        }
    }
    // The whole transaction is one log entry, replicated in one message: its
    // keys and values together may be no bigger than one put's.
    let limits = node.limits();
    let budget = limits.max_key_bytes + limits.max_value_bytes;
    let op_bytes = |op: &pb::TxnOp| match &op.op {
        Some(pb::txn_op::Op::Put(put)) => put.key.len() + put.value.len(),
        Some(pb::txn_op::Op::Delete(delete)) => delete.key.len(),
        Some(pb::txn_op::Op::Get(get)) => get.key.len(),
        None => 0,
    };
    let compare_bytes = |c: &pb::Compare| {
        c.key.len()
            + match &c.check {
                Some(pb::compare::Check::Value(value)) => value.len(),
                _ => 0,
            }
    };
    let total: usize = compares.iter().map(compare_bytes).sum::<usize>()
        + success.iter().chain(&failure).map(op_bytes).sum::<usize>();
    if total > budget {
        return Err(invalid(format!(
            "the transaction's keys and values add up to {total} bytes; the limit is {budget} \
             (--max-key-bytes + --max-value-bytes, as for one put)"
        )));
    }
    let compares = compares
        .into_iter()
        .enumerate()
        .map(|(n, compare)| {
            node.check_key(&compare.key)
                .map_err(|e| invalid(format!("comparison {n}: {e}")))?;
            let check = match compare.check {
                Some(pb::compare::Check::Value(value)) => {
                    node.check_value(&value)
                        .map_err(|e| invalid(format!("comparison {n}: {e}")))?;
                    Check::Value(value)
                }
                Some(pb::compare::Check::Exists(exists)) => Check::Exists(exists),
                Some(pb::compare::Check::ModifiedIndex(index)) => Check::ModifiedIndex(index),
                None => {
                    return Err(invalid(format!(
                        "comparison {n} checks nothing: set value, exists or modified_index"
                    )))
                }
            };
            Ok(Compare {
                key: compare.key,
                check,
            })
        })
        .collect::<Result<_, Status>>()?;
    let ops = |branch: &str, ops: Vec<pb::TxnOp>| {
        ops.into_iter()
            .enumerate()
            .map(|(n, op)| {
                let at = |e: NodeError| invalid(format!("{branch} operation {n}: {e}"));
                Ok(match op.op {
                    Some(pb::txn_op::Op::Put(put)) => {
                        node.check_key(&put.key).map_err(at)?;
                        node.check_value(&put.value).map_err(at)?;
                        match put.lease {
                            0 => TxnOp::Put {
                                key: put.key,
                                value: put.value,
                            },
                            lease => TxnOp::PutLeased {
                                key: put.key,
                                value: put.value,
                                lease,
                            },
                        }
                    }
                    Some(pb::txn_op::Op::Delete(delete)) => {
                        node.check_key(&delete.key).map_err(at)?;
                        TxnOp::Delete { key: delete.key }
                    }
                    Some(pb::txn_op::Op::Get(get)) => {
                        node.check_key(&get.key).map_err(at)?;
                        if get.stale || get.revision != 0 {
                            return Err(invalid(format!(
                                "{branch} operation {n}: a get inside a transaction reads at the \
                                 transaction's own revision: leave stale and revision unset"
                            )));
                        }
                        TxnOp::Get { key: get.key }
                    }
                    None => {
                        return Err(invalid(format!(
                            "{branch} operation {n} is empty: set put, delete or get"
                        )))
                    }
                })
            })
            .collect::<Result<Vec<_>, Status>>()
            .and_then(|ops| writes_each_key_once(branch, ops))
    };
    Ok(Command::Txn {
        compares,
        success: ops("success", success)?,
        failure: ops("failure", failure)?,
    })
}

/// Refuses a branch that writes (puts or deletes) one key twice, as etcd
/// does: every write of a transaction has the transaction's revision, so a
/// key has at most one version at it.
fn writes_each_key_once(branch: &str, ops: Vec<TxnOp>) -> Result<Vec<TxnOp>, Status> {
    let mut written = std::collections::HashSet::new();
    for (n, op) in ops.iter().enumerate() {
        let key = match op {
            TxnOp::Put { key, .. } | TxnOp::PutLeased { key, .. } | TxnOp::Delete { key } => key,
            TxnOp::Get { .. } => continue,
        };
        if !written.insert(key.as_slice()) {
            return Err(invalid(format!(
                "{branch} operation {n} writes a key an earlier operation of the branch writes; \
                 a transaction writes each key at most once"
            )));
        }
    }
    Ok(ops)
}

/// The response to a transaction applied at `index`.
pub fn response(index: u64, succeeded: bool, results: Vec<TxnOpResult>) -> pb::TxnResponse {
    use pb::txn_op_result::Result as Outcome;
    let results = results
        .into_iter()
        .map(|result| pb::TxnOpResult {
            result: Some(match result {
                TxnOpResult::Put => Outcome::Put(pb::PutResponse { index }),
                TxnOpResult::Deleted { existed } => {
                    Outcome::Delete(pb::DeleteResponse { index, existed })
                }
                TxnOpResult::Got { found } => {
                    Outcome::Get(super::convert::get_response(found, index))
                }
            }),
        })
        .collect();
    pb::TxnResponse {
        succeeded,
        index,
        results,
    }
}
