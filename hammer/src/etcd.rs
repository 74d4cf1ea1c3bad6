//! `--target etcd`: the same workload against etcd's v3 KV API, so raftkv
//! and etcd are measured by one client. Each client talks to one member
//! (etcd forwards writes to its leader itself); reads are linearizable.
//! Compare-and-swap is not offered here.

use std::time::Duration;
use std::time::Instant;

use tonic::transport::Channel;
use tonic::Code;

use crate::op::Op;
use crate::op::Outcome;
use crate::op::Reply;

/// etcd's v3 API, as raftkv's own protocol crate carries it.
pub use raftkv_proto::etcd::etcdserverpb as pb;

/// Channels to the etcd members.
pub struct Etcd {
    channels: Vec<Channel>,
    call_timeout: Duration,
}

impl Etcd {
    pub fn new(
        endpoints: &[String],
        call_timeout: Duration,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Etcd> {
        let cache = raftkv_client::Channels::new(raftkv_client::ChannelOptions {
            connect_timeout: call_timeout.min(Duration::from_secs(3)),
            tls,
            ..raftkv_client::ChannelOptions::default()
        });
        let channels = endpoints
            .iter()
            .map(|e| cache.get(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Etcd {
            channels,
            call_timeout,
        })
    }

    /// Whether a member answers a read.
    pub async fn reachable(&self) -> bool {
        let op = Op::Get {
            key: b"hammer-probe".to_vec(),
        };
        matches!(
            self.execute(0, &op, Instant::now() + self.call_timeout, |_| {})
                .await,
            Outcome::Ok(_)
        )
    }

    /// Runs `op` for client `client`; retries reads, and writes etcd refused
    /// before proposing; everything else unclear is an unknown outcome.
    pub async fn execute(
        &self,
        client: u64,
        op: &Op,
        deadline: Instant,
        mut on_retry: impl FnMut(&'static str),
    ) -> Outcome {
        let mut member = client as usize % self.channels.len();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Outcome::Fail("timeout".into());
            }
            let mut kv = pb::kv_client::KvClient::new(self.channels[member].clone());
            let timeout = self.call_timeout.min(remaining);
            let result = match op {
                Op::Put { key, value } => {
                    let mut request = tonic::Request::new(pb::PutRequest {
                        key: key.clone(),
                        value: value.clone(),
                        ..Default::default()
                    });
                    request.set_timeout(timeout);
                    kv.put(request).await.map(|_| Reply::Written)
                }
                Op::Get { key } => {
                    let mut request = tonic::Request::new(pb::RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    });
                    request.set_timeout(timeout);
                    kv.range(request).await.map(|r| {
                        Reply::Read(r.into_inner().kvs.into_iter().next().map(|kv| kv.value))
                    })
                }
                Op::Cas { .. } => return Outcome::Fail("unsupported".into()),
            };
            match result {
                Ok(reply) => return Outcome::Ok(reply),
                Err(status) => {
                    let refused = raftkv_client::never_sent(&status);
                    if !op.is_write() || refused {
                        on_retry(if refused { "connect" } else { "unavailable" });
                        member = (member + 1) % self.channels.len();
                        continue;
                    }
                    return match status.code() {
                        Code::InvalidArgument => Outcome::Fail("invalid_argument".into()),
                        Code::DeadlineExceeded => Outcome::Unknown("timeout".into()),
                        _ => Outcome::Unknown("unavailable".into()),
                    };
                }
            }
        }
    }
}
