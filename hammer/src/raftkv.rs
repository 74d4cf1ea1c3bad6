//! Running operations against a raftkv cluster: straight to the leader,
//! following redirects, retrying only what is safe to retry; and noting
//! which node served operations when, so the report can show leader changes.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use raftkv_client::Backoff;
use raftkv_client::ChannelOptions;
use raftkv_client::Channels;
use raftkv_client::ClusterClient;
use raftkv_client::Failure;
use raftkv_proto::pb;
use raftkv_proto::pb::kv_client::KvClient;
use tonic::transport::Channel;

use crate::op::Op;
use crate::op::Outcome;
use crate::op::Reply;
use crate::stats::LeaderChange;

/// How long to wait for a node's id (one status call per address, only to
/// name leaders in the report): short, as clients wait for discovery meanwhile.
const ID_LOOKUP: Duration = Duration::from_millis(500);

/// Shared by every client of a run.
pub struct Cluster {
    /// One channel per node address (HTTP/2 multiplexes every client's
    /// calls), shared with leader discovery.
    channels: Channels,
    /// Where calls go now.
    leader: Mutex<Option<String>>,
    /// Leader discovery, one at a time.
    discovery: tokio::sync::Mutex<ClusterClient>,
    /// Discoveries finished so far. A client that waited while another asked
    /// the nodes takes that answer instead of asking again: without a
    /// leader, every client would otherwise queue for its own round of
    /// status calls, and the run could not stop on time.
    discoveries: AtomicU64,
    /// Node ids by address, learned from redirects and status answers.
    node_ids: Mutex<HashMap<String, u64>>,
    /// Which node served operations, and each time that changed.
    served: Mutex<ServedLog>,
    /// Deadline of one call.
    call_timeout: Duration,
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
        let channels = Channels::new(ChannelOptions {
            connect_timeout: call_timeout.min(Duration::from_secs(3)),
            tls,
            ..ChannelOptions::default()
        });
        let discovery = ClusterClient::with_channels(endpoints, call_timeout, channels.clone())?;
        Ok(Cluster {
            channels,
            leader: Mutex::new(None),
            discovery: tokio::sync::Mutex::new(discovery),
            discoveries: AtomicU64::new(0),
            node_ids: Mutex::new(HashMap::new()),
            served: Mutex::new(ServedLog::default()),
            call_timeout,
            cas_as_txn: false,
        })
    }

    fn channel(&self, address: &str) -> anyhow::Result<Channel> {
        Ok(self.channels.get(address)?)
    }

    fn current_leader(&self) -> Option<String> {
        self.leader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_leader(&self, leader: Option<String>) {
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader;
    }

    /// The leader's address, asking the nodes when it is unknown.
    pub async fn leader(&self) -> Option<String> {
        if let Some(leader) = self.current_leader() {
            return Some(leader);
        }
        let before = self.discoveries.load(Ordering::Acquire);
        let mut discovery = self.discovery.lock().await;
        // Another client may have found it while this one waited, or asked
        // and found none: its answer is as fresh as a new round would be.
        if let Some(leader) = self.current_leader() {
            return Some(leader);
        }
        if self.discoveries.load(Ordering::Acquire) != before {
            return None;
        }
        let found = discovery.find_leader().await.ok();
        self.set_leader(found.clone());
        self.discoveries.fetch_add(1, Ordering::Release);
        if let Some(address) = &found {
            let known = self
                .node_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(address);
            if !known {
                // Discovery answers with an address only; the report names
                // leaders by id. Once per address.
                if let Ok(Ok(status)) =
                    tokio::time::timeout(ID_LOOKUP, discovery.status(address)).await
                {
                    self.note_id(address, status.id);
                }
            }
        }
        found
    }

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
        self.served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes
            .iter()
            .map(|(at, address)| LeaderChange {
                at_s: at.saturating_duration_since(start).as_secs_f64(),
                leader_id: ids.get(address).copied(),
                address: address.clone(),
            })
            .collect()
    }

    /// One attempt of `op` at `address`.
    async fn attempt(&self, address: &str, op: &Op, timeout: Duration) -> Result<Reply, Failure> {
        let channel = self
            .channel(address)
            .map_err(|_| Failure::Failed("bad_endpoint"))?;
        let mut kv = KvClient::new(channel);
        let call = async {
            match op {
                Op::Put { key, value } => {
                    let mut request = tonic::Request::new(pb::PutRequest {
                        lease: 0,
                        key: key.clone(),
                        value: value.clone(),
                    });
                    request.set_timeout(timeout);
                    kv.put(request).await.map(|_| Reply::Written)
                }
                Op::Get { key } => {
                    let mut request = tonic::Request::new(pb::GetRequest {
                        key: key.clone(),
                        stale: false,
                        revision: 0,
                    });
                    request.set_timeout(timeout);
                    kv.get(request).await.map(|a| {
                        let a = a.into_inner();
                        Reply::Read(a.found.then_some(a.value))
                    })
                }
                Op::Cas {
                    key,
                    expected,
                    new_value,
                } if self.cas_as_txn => {
                    let mut request = tonic::Request::new(cas_as_txn(key, expected, new_value));
                    request.set_timeout(timeout);
                    kv.txn(request).await.map(|a| {
                        let a = a.into_inner();
                        Reply::Swapped {
                            succeeded: a.succeeded,
                            current: read_in_txn(&a),
                        }
                    })
                }
                Op::Cas {
                    key,
                    expected,
                    new_value,
                } => {
                    let mut request = tonic::Request::new(pb::CompareAndSwapRequest {
                        lease: 0,
                        key: key.clone(),
                        expected_value: expected.clone(),
                        new_value: new_value.clone(),
                    });
                    request.set_timeout(timeout);
                    kv.compare_and_swap(request).await.map(|a| {
                        let a = a.into_inner();
                        Reply::Swapped {
                            succeeded: a.succeeded,
                            current: a.current_value,
                        }
                    })
                }
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(status)) => Err(Failure::of(&status, !op.is_write())),
            Err(_) if op.is_write() => Err(Failure::Unknown("timeout")),
            Err(_) => Err(Failure::Retry {
                kind: "timeout",
                leader: None,
            }),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or `deadline` passes;
    /// `on_retry` hears the kind of every retried attempt.
    pub async fn execute(
        &self,
        op: &Op,
        deadline: Instant,
        mut on_retry: impl FnMut(&'static str),
    ) -> Outcome {
        // Short pauses: a client waits out an election, and the report
        // measures how long that took, to within a pause.
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        let mut last_retry = "timeout";
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Outcome::Fail(last_retry.to_string());
            }
            // Bounded: the run's end must not wait on discovery.
            let Ok(Some(leader)) = tokio::time::timeout(remaining, self.leader()).await else {
                last_retry = "no_leader";
                on_retry(last_retry);
                backoff.wait(deadline.into()).await;
                continue;
            };
            let sent = Instant::now();
            match self
                .attempt(&leader, op, self.call_timeout.min(remaining))
                .await
            {
                Ok(reply) => {
                    self.served_by(&leader, sent);
                    return Outcome::Ok(reply);
                }
                Err(Failure::Failed(kind)) => return Outcome::Fail(kind.to_string()),
                Err(Failure::Unknown(kind)) => {
                    // The leader may be gone: look again before the next operation.
                    self.forget_leader(&leader);
                    return Outcome::Unknown(kind.to_string());
                }
                Err(Failure::Retry { kind, leader: hint }) => {
                    last_retry = kind;
                    on_retry(kind);
                    match hint {
                        Some((id, address)) => {
                            self.note_id(&address, id);
                            self.set_leader(Some(address));
                        }
                        None => {
                            self.forget_leader(&leader);
                            backoff.wait(deadline.into()).await;
                        }
                    }
                }
            }
        }
    }

    /// Forgets `address` as the leader (unless another client already moved on).
    fn forget_leader(&self, address: &str) {
        let mut leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        if leader.as_deref() == Some(address) {
            *leader = None;
        }
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
