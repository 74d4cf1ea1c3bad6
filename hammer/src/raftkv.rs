//! Running operations against a raftkv cluster: straight to the leader,
//! following redirects, retrying only what is safe to retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use raftkv_proto::client::leader_hint;
use raftkv_proto::client::ClusterClient;
use raftkv_proto::pb;
use raftkv_proto::pb::kv_client::KvClient;
use tonic::transport::Channel;
use tonic::Code;
use tonic::Status;

use crate::op::AttemptError;
use crate::op::Op;
use crate::op::Outcome;
use crate::op::Reply;

/// Shared by every client of a run.
pub struct Cluster {
    /// One channel per node address (HTTP/2 multiplexes every client's calls).
    channels: Mutex<HashMap<String, Channel>>,
    /// Where calls go now.
    leader: Mutex<Option<String>>,
    /// Leader discovery, one at a time.
    discovery: tokio::sync::Mutex<ClusterClient>,
    /// Deadline of one call.
    call_timeout: Duration,
}

/// Classifies a failed call.
pub fn classify(status: &Status, op_is_write: bool) -> AttemptError {
    let message = status.message();
    let not_sent = message.contains("tcp connect error")
        || message.contains("Connection refused")
        || message.contains("error trying to connect");
    match status.code() {
        Code::Unavailable => {
            if let Some((_, address)) = leader_hint(status) {
                return AttemptError::Retry {
                    kind: "not_leader",
                    leader: Some(address),
                };
            }
            if message.contains("no leader is known") || message.starts_with("not the leader") {
                return AttemptError::Retry {
                    kind: "no_leader",
                    leader: None,
                };
            }
            if not_sent {
                return AttemptError::Retry {
                    kind: "connect",
                    leader: None,
                };
            }
            if !op_is_write {
                return AttemptError::Retry {
                    kind: "unavailable",
                    leader: None,
                };
            }
            AttemptError::Unknown("unavailable")
        }
        Code::InvalidArgument => AttemptError::Fail("invalid_argument"),
        Code::FailedPrecondition => AttemptError::Fail("failed_precondition"),
        Code::NotFound => AttemptError::Fail("not_found"),
        Code::ResourceExhausted => AttemptError::Fail("resource_exhausted"),
        _ if !op_is_write => AttemptError::Retry {
            kind: "read_error",
            leader: None,
        },
        Code::DeadlineExceeded | Code::Cancelled => AttemptError::Unknown("timeout"),
        Code::Unknown => AttemptError::Unknown("outcome_unknown"),
        _ if not_sent => AttemptError::Retry {
            kind: "connect",
            leader: None,
        },
        _ => AttemptError::Unknown("transport"),
    }
}

impl Cluster {
    pub fn new(endpoints: Vec<String>, call_timeout: Duration) -> anyhow::Result<Cluster> {
        let discovery = ClusterClient::new(endpoints, call_timeout)?;
        Ok(Cluster {
            channels: Mutex::new(HashMap::new()),
            leader: Mutex::new(None),
            discovery: tokio::sync::Mutex::new(discovery),
            call_timeout,
        })
    }

    fn channel(&self, address: &str) -> anyhow::Result<Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(address) {
            return Ok(channel.clone());
        }
        let channel = raftkv_proto::client::connect_lazy(address, self.call_timeout)?;
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
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
        let mut discovery = self.discovery.lock().await;
        // Another client may have found it while this one waited.
        if let Some(leader) = self.current_leader() {
            return Some(leader);
        }
        let found = discovery.find_leader().await.ok();
        self.set_leader(found.clone());
        found
    }

    /// One attempt of `op` at `address`.
    async fn attempt(
        &self,
        address: &str,
        op: &Op,
        timeout: Duration,
    ) -> Result<Reply, AttemptError> {
        let channel = self
            .channel(address)
            .map_err(|_| AttemptError::Fail("bad_endpoint"))?;
        let mut kv = KvClient::new(channel);
        let call = async {
            match op {
                Op::Put { key, value } => {
                    let mut request = tonic::Request::new(pb::PutRequest {
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
                } => {
                    let mut request = tonic::Request::new(pb::CompareAndSwapRequest {
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
            Ok(Err(status)) => Err(classify(&status, op.is_write())),
            Err(_) if op.is_write() => Err(AttemptError::Unknown("timeout")),
            Err(_) => Err(AttemptError::Retry {
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
        let mut pause = Duration::from_millis(10);
        let mut last_retry = "timeout";
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Outcome::Fail(last_retry.to_string());
            }
            let Some(leader) = self.leader().await else {
                last_retry = "no_leader";
                on_retry(last_retry);
                tokio::time::sleep(pause.min(remaining)).await;
                pause = (pause * 2).min(Duration::from_millis(50));
                continue;
            };
            match self
                .attempt(&leader, op, self.call_timeout.min(remaining))
                .await
            {
                Ok(reply) => return Outcome::Ok(reply),
                Err(AttemptError::Fail(kind)) => return Outcome::Fail(kind.to_string()),
                Err(AttemptError::Unknown(kind)) => {
                    // The leader may be gone: look again before the next operation.
                    self.forget_leader(&leader);
                    return Outcome::Unknown(kind.to_string());
                }
                Err(AttemptError::Retry { kind, leader: hint }) => {
                    last_retry = kind;
                    on_retry(kind);
                    match hint {
                        Some(address) => self.set_leader(Some(address)),
                        None => {
                            self.forget_leader(&leader);
                            tokio::time::sleep(pause.min(remaining)).await;
                            pause = (pause * 2).min(Duration::from_millis(50));
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
    fn failures_are_classified_by_what_they_say_about_the_write() {
        let refused = Status::unavailable(
            "error trying to connect: tcp connect error: Connection refused (os error 111)",
        );
        assert_eq!(
            classify(&refused, true),
            AttemptError::Retry {
                kind: "connect",
                leader: None
            }
        );
        let no_leader = Status::unavailable(
            "no leader is known right now (election in progress?); retry shortly",
        );
        assert_eq!(
            classify(&no_leader, true),
            AttemptError::Retry {
                kind: "no_leader",
                leader: None
            }
        );
        let mut redirect =
            Status::unavailable("not the leader; the leader is node 2 at 127.0.0.1:2");
        redirect
            .metadata_mut()
            .insert(raftkv_proto::LEADER_ID_METADATA, "2".parse().unwrap());
        redirect.metadata_mut().insert(
            raftkv_proto::LEADER_ADDR_METADATA,
            "127.0.0.1:2".parse().unwrap(),
        );
        assert_eq!(
            classify(&redirect, true),
            AttemptError::Retry {
                kind: "not_leader",
                leader: Some("127.0.0.1:2".into())
            }
        );
        assert_eq!(
            classify(&Status::deadline_exceeded("late"), true),
            AttemptError::Unknown("timeout")
        );
        assert_eq!(
            classify(&Status::unknown("discarded"), true),
            AttemptError::Unknown("outcome_unknown")
        );
        assert_eq!(
            classify(&Status::unavailable("connection reset"), true),
            AttemptError::Unknown("unavailable")
        );
        assert_eq!(
            classify(&Status::unavailable("connection reset"), false),
            AttemptError::Retry {
                kind: "unavailable",
                leader: None
            }
        );
        assert_eq!(
            classify(&Status::invalid_argument("empty key"), true),
            AttemptError::Fail("invalid_argument")
        );
    }
}
