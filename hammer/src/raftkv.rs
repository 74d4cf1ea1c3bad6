//! Running operations against a raftkv cluster through the typed client
//! (straight to the leader, following redirects, retrying only what is safe
//! to retry), and noting which node served operations when, so the report
//! can show leader changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use raftkv_client::Call;
use raftkv_client::Client;
use raftkv_client::ClientOptions;
use raftkv_client::Failure;
use raftkv_client::Served;
use raftkv_proto::pb;

use crate::op::Op;
use crate::op::Outcome;
use crate::op::Reply;
use crate::stats::LeaderChange;

/// Shared by every client of a run.
pub struct Cluster {
    /// One channel per node address (HTTP/2 multiplexes every client's
    /// calls), the leader calls go to, and leader discovery one round at a
    /// time; node ids learned from redirects and status answers.
    client: Client,
    /// Node ids by address, beyond those the client learned.
    node_ids: Mutex<HashMap<String, u64>>,
    /// Which node served operations, and each time that changed.
    served: Mutex<ServedLog>,
    /// Compare-and-swaps go as `KV/Txn` (`--cas-as-txn`).
    pub cas_as_txn: bool,
}

/// Which node served operations over time.
#[derive(Default)]
struct ServedLog {
    /// The node that served the latest operation counted.
    current: Option<String>,
    /// When `current` took over.
    since: Option<Instant>,
    /// Every take-over: when and which address.
    changes: Vec<(Instant, String)>,
}

/// A compare-and-swap as a transaction: compare the key's value (or its
/// absence), put on success, read on failure.
fn cas_as_txn(key: &[u8], expected: &Option<Vec<u8>>, new_value: &[u8]) -> pb::TxnRequest {
    use pb::compare::Check;
    use pb::txn_op::Op as TxnOp;
    let check = match expected {
        Some(value) => Check::Value(value.clone()),
        None => Check::Exists(false),
    };
    pb::TxnRequest {
        compares: vec![pb::Compare {
            key: key.to_vec(),
            check: Some(check),
        }],
        success: vec![pb::TxnOp {
            op: Some(TxnOp::Put(pb::PutRequest {
                lease: 0,
                key: key.to_vec(),
                value: new_value.to_vec(),
            })),
        }],
        failure: vec![pb::TxnOp {
            op: Some(TxnOp::Get(pb::GetRequest {
                key: key.to_vec(),
                stale: false,
                revision: 0,
            })),
        }],
    }
}

/// On a failed compare: the value the transaction's get read.
fn read_in_txn(answer: &pb::TxnResponse) -> Option<Vec<u8>> {
    use pb::txn_op_result::Result as Outcome;
    if answer.succeeded {
        return None;
    }
    match answer.results.first().and_then(|r| r.result.as_ref()) {
        Some(Outcome::Get(get)) if get.found => Some(get.value.clone()),
        _ => None,
    }
}

impl Cluster {
    pub fn new(
        endpoints: Vec<String>,
        call_timeout: Duration,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Cluster> {
        let mut options = ClientOptions::new(endpoints, call_timeout);
        options.tls = tls;
        // Short pauses: a client waits out an election, and the report
        // measures how long that took, to within a pause.
        options.retry_pause = (Duration::from_millis(10), Duration::from_millis(50));
        Ok(Cluster {
            client: Client::connect(options)?,
            node_ids: Mutex::new(HashMap::new()),
            served: Mutex::new(ServedLog::default()),
            cas_as_txn: false,
        })
    }

    /// The leader's address, asking the nodes when it is unknown.
    pub async fn leader(&self) -> Option<String> {
        self.client.leader().await.ok()
    }

    #[cfg(test)]
    fn note_id(&self, address: &str, id: u64) {
        self.node_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(address.to_string(), id);
    }

    /// Notes that `address` served an operation sent at `sent`. Only an
    /// operation sent after the last change can signal another: the old
    /// leader answering a call sent before a transfer is not a change back.
    fn served_by(&self, address: &str, sent: Instant) {
        let mut log = self.served.lock().unwrap_or_else(|e| e.into_inner());
        if log.current.as_deref() == Some(address) || log.since.is_some_and(|since| sent < since) {
            return;
        }
        let now = Instant::now();
        log.current = Some(address.to_string());
        log.since = Some(now);
        log.changes.push((now, address.to_string()));
    }

    /// Every time a different node started serving operations (the first
    /// being the leader at the start), relative to `start`.
    pub fn leader_changes(&self, start: Instant) -> Vec<LeaderChange> {
        let ids = self.node_ids.lock().unwrap_or_else(|e| e.into_inner());
        let id_of = |address: &str| ids.get(address).copied().or(self.client.node_id(address));
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes
            .iter()
            .map(|(at, address)| LeaderChange {
                at_s: at.saturating_duration_since(start).as_secs_f64(),
                leader_id: id_of(address),
                address: address.clone(),
            })
            .collect()
    }

    /// Runs `op` until it succeeds, fails for good, or `deadline` passes;
    /// `on_retry` hears the kind of every retried attempt.
    pub async fn execute(
        &self,
        op: &Op,
        deadline: Instant,
        mut on_retry: impl FnMut(&'static str) + Send,
    ) -> Outcome {
        let deadline = deadline.into();
        let on_retry: &mut (dyn FnMut(&'static str) + Send) = &mut on_retry;
        let served = match op {
            Op::Put { key, value } => {
                let call = Call::put(key.clone(), value.clone(), 0);
                let served = self.client.run(&call, deadline, on_retry).await;
                served.map(|s| self.reply(s, |_| Reply::Written))
            }
            Op::Get { key } => {
                let call = Call::get(pb::GetRequest {
                    key: key.clone(),
                    stale: false,
                    revision: 0,
                });
                let served = self.client.run(&call, deadline, on_retry).await;
                served.map(|s| self.reply(s, |a| Reply::Read(a.found.then_some(a.value))))
            }
            Op::Cas {
                key,
                expected,
                new_value,
            } if self.cas_as_txn => {
                let call = Call::txn(cas_as_txn(key, expected, new_value));
                let served = self.client.run(&call, deadline, on_retry).await;
                served.map(|s| {
                    self.reply(s, |a| Reply::Swapped {
                        succeeded: a.succeeded,
                        current: read_in_txn(&a),
                    })
                })
            }
            Op::Cas {
                key,
                expected,
                new_value,
            } => {
                let call =
                    Call::compare_and_swap(key.clone(), expected.clone(), new_value.clone(), 0);
                let served = self.client.run(&call, deadline, on_retry).await;
                served.map(|s| {
                    self.reply(s, |a| Reply::Swapped {
                        succeeded: a.succeeded,
                        current: a.current_value,
                    })
                })
            }
        };
        match served {
            Ok(reply) => Outcome::Ok(reply),
            Err(error) => match error.failure {
                Failure::Unknown(kind) => Outcome::Unknown(kind.to_string()),
                // Out of time while retrying: the last kind says why.
                Failure::Failed(kind) | Failure::Retry { kind, .. } => {
                    Outcome::Fail(kind.to_string())
                }
            },
        }
    }

    /// Notes who served an answer, and makes it the operation's reply.
    fn reply<T>(&self, served: Served<T>, reply: impl FnOnce(T) -> Reply) -> Reply {
        self.served_by(&served.address, served.sent.into_std());
        reply(served.answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_answer_from_the_old_leader_is_not_a_change_back() {
        let cluster =
            Cluster::new(vec!["127.0.0.1:1".into()], Duration::from_secs(1), None).unwrap();
        let start = Instant::now();
        let before_transfer = Instant::now();
        cluster.served_by("127.0.0.1:1", before_transfer);
        cluster.note_id("127.0.0.1:2", 2);
        cluster.served_by("127.0.0.1:2", Instant::now());
        // Sent to node 1 before node 2 took over, answered after.
        cluster.served_by("127.0.0.1:1", before_transfer);
        cluster.served_by("127.0.0.1:2", Instant::now());
        let changes = cluster.leader_changes(start);
        let seen: Vec<_> = changes
            .iter()
            .map(|c| (c.leader_id, c.address.as_str()))
            .collect();
        assert_eq!(seen, vec![(None, "127.0.0.1:1"), (Some(2), "127.0.0.1:2")]);
        // A real change back, sent after the last change, counts.
        cluster.served_by("127.0.0.1:1", Instant::now());
        assert_eq!(cluster.leader_changes(start).len(), 3);
    }
}
