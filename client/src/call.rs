//! [`Call`]: one raftkv request, ready to be sent as often as the
//! [`Client`](crate::Client) decides, with what its caller may do after a
//! failure (may it be repeated?) and its typed answer. Every RPC a client
//! makes is built here, once, from plain arguments; no caller builds a stub.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use raftkv_proto::pb;
use raftkv_proto::pb::admin_client::AdminClient;
use raftkv_proto::pb::kv_client::KvClient;
use tonic::transport::Channel;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

/// The stubs of one node, with the client's message size limit.
#[derive(Clone)]
pub(crate) struct Stubs {
    pub channel: Channel,
    /// Largest message sent or accepted (`None`: tonic's default, 4 MiB).
    pub max_message_bytes: Option<usize>,
}

impl Stubs {
    fn kv(&self) -> KvClient<Channel> {
        let kv = KvClient::new(self.channel.clone());
        match self.max_message_bytes {
            Some(max) => kv
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            None => kv,
        }
    }

    fn admin(&self) -> AdminClient<Channel> {
        let admin = AdminClient::new(self.channel.clone());
        match self.max_message_bytes {
            Some(max) => admin
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            None => admin,
        }
    }
}

/// Sends the request once to the node behind the stubs, with this deadline
/// for the server to see.
type Sender<T> =
    Box<dyn Fn(Stubs, Duration) -> BoxFuture<'static, Result<T, Status>> + Sync + Send>;

/// One request and how to send it; its answer is a `T`.
pub struct Call<T> {
    /// Whether sending it twice is harmless (a read, or a change the node
    /// checks so that a repeat is a no-op or refused): then a failure whose
    /// outcome is open is retried rather than reported as unknown.
    pub(crate) may_repeat: bool,
    pub(crate) send: Sender<T>,
}

impl<T> std::fmt::Debug for Call<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("may_repeat", &self.may_repeat)
            .finish()
    }
}

/// `message` as a request carrying `timeout`, so that a node stops working
/// on it once the caller has given up.
fn request<M>(message: M, timeout: Duration) -> Request<M> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// A unary call of the KV service sending `message` through `send`.
fn kv<M, T, F, Fut>(may_repeat: bool, message: M, send: F) -> Call<T>
where
    M: Clone + Send + Sync + 'static,
    F: Fn(KvClient<Channel>, Request<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
{
    Call {
        may_repeat,
        send: Box::new(move |stubs, timeout| {
            send(stubs.kv(), request(message.clone(), timeout))
                .map(|answer| answer.map(Response::into_inner))
                .boxed()
        }),
    }
}

/// A unary call of the Admin service sending `message` through `send`.
fn admin<M, T, F, Fut>(may_repeat: bool, message: M, send: F) -> Call<T>
where
    M: Clone + Send + Sync + 'static,
    F: Fn(AdminClient<Channel>, Request<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<T>, Status>> + Send + 'static,
{
    Call {
        may_repeat,
        send: Box::new(move |stubs, timeout| {
            send(stubs.admin(), request(message.clone(), timeout))
                .map(|answer| answer.map(Response::into_inner))
                .boxed()
        }),
    }
}

/// Whether a change may be repeated: a write is not (applied twice, it is
/// two writes), a read or a check-then-change the node makes idempotent is.
const WRITE: bool = false;
const REPEATABLE: bool = true;

impl Call<pb::PutResponse> {
    /// `Put`: set `key` to `value`, attached to `lease` (0: none).
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, lease: u64) -> Self {
        let message = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            lease,
        };
        kv(WRITE, message, |mut kv, r| async move { kv.put(r).await })
    }
}

impl Call<pb::GetResponse> {
    /// `Get`, as `message` asks (stale or not, at a revision or not).
    pub fn get(message: pb::GetRequest) -> Self {
        kv(
            REPEATABLE,
            message,
            |mut kv, r| async move { kv.get(r).await },
        )
    }
}

impl Call<pb::DeleteResponse> {
    /// `Delete`: not repeated, as a repeat could delete a newer write.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        let message = pb::DeleteRequest { key: key.into() };
        kv(
            WRITE,
            message,
            |mut kv, r| async move { kv.delete(r).await },
        )
    }
}

impl Call<pb::DeletePrefixResponse> {
    /// `DeletePrefix`: every key starting with `prefix`.
    pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let message = pb::DeletePrefixRequest {
            prefix: prefix.into(),
        };
        kv(WRITE, message, |mut kv, r| async move {
            kv.delete_prefix(r).await
        })
    }
}

impl Call<pb::ScanResponse> {
    /// `Scan`, as `message` asks.
    pub fn scan(message: pb::ScanRequest) -> Self {
        kv(
            REPEATABLE,
            message,
            |mut kv, r| async move { kv.scan(r).await },
        )
    }
}

impl Call<pb::CompareAndSwapResponse> {
    /// `CompareAndSwap`: `key` to `new_value` if it holds `expected` (`None`:
    /// if it is absent), attached to `lease` (0: none).
    pub fn compare_and_swap(
        key: impl Into<Vec<u8>>,
        expected: Option<Vec<u8>>,
        new_value: impl Into<Vec<u8>>,
        lease: u64,
    ) -> Self {
        let message = pb::CompareAndSwapRequest {
            key: key.into(),
            expected_value: expected,
            new_value: new_value.into(),
            lease,
        };
        kv(WRITE, message, |mut kv, r| async move {
            kv.compare_and_swap(r).await
        })
    }
}

impl Call<pb::TxnResponse> {
    /// `Txn`: a write unless it only reads, which the caller knows.
    pub fn txn(message: pb::TxnRequest) -> Self {
        kv(WRITE, message, |mut kv, r| async move { kv.txn(r).await })
    }
}

impl Call<Streaming<pb::WatchResponse>> {
    /// `Watch` of `prefix` from log index `start` (0: from now on). The
    /// call's deadline bounds the wait for the stream to open, and is not
    /// sent: the stream lives until its reader drops it.
    pub fn watch(prefix: impl Into<Vec<u8>>, start: u64) -> Self {
        let message = pb::WatchRequest {
            prefix: prefix.into(),
            start_index: start,
        };
        Call {
            may_repeat: REPEATABLE,
            send: Box::new(move |stubs, _| {
                let message = message.clone();
                async move { stubs.kv().watch(message).await.map(Response::into_inner) }.boxed()
            }),
        }
    }
}

impl Call<pb::LeaseGrantResponse> {
    /// `LeaseGrant` of `ttl` seconds. Repeated after an open outcome: a
    /// lease granted twice leaves a spare that nobody renews, which expires.
    pub fn lease_grant(ttl: i64) -> Self {
        let message = pb::LeaseGrantRequest { ttl };
        kv(REPEATABLE, message, |mut kv, r| async move {
            kv.lease_grant(r).await
        })
    }
}

impl Call<pb::LeaseRevokeResponse> {
    /// `LeaseRevoke`: a repeat finds the lease gone (NOT_FOUND).
    pub fn lease_revoke(id: u64) -> Self {
        let message = pb::LeaseRevokeRequest { id };
        kv(REPEATABLE, message, |mut kv, r| async move {
            kv.lease_revoke(r).await
        })
    }
}

impl Call<pb::LeaseKeepAliveResponse> {
    /// `LeaseKeepAlive`: restarts the lease's countdown.
    pub fn lease_keep_alive(id: u64) -> Self {
        let message = pb::LeaseKeepAliveRequest { id };
        kv(REPEATABLE, message, |mut kv, r| async move {
            kv.lease_keep_alive(r).await
        })
    }
}

impl Call<pb::LeaseTimeToLiveResponse> {
    /// `LeaseTimeToLive`, with the lease's keys if `keys`.
    pub fn lease_time_to_live(id: u64, keys: bool) -> Self {
        let message = pb::LeaseTimeToLiveRequest { id, keys };
        kv(REPEATABLE, message, |mut kv, r| async move {
            kv.lease_time_to_live(r).await
        })
    }
}

// Admin calls. Every change here is checked by the leader against the
// configuration (ids, addresses, `previous_index`), so a repeat is a no-op
// or refused: all may be repeated.

impl Call<pb::ClusterConfiguration> {
    /// `Initialize` a pristine node with `members` (empty: itself alone).
    pub fn initialize(members: Vec<pb::Member>) -> Self {
        let message = pb::InitializeRequest { members };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.initialize(r).await
        })
    }

    /// `GetConfiguration`: the configuration the node knows.
    pub fn configuration() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.get_configuration(r).await
        })
    }
}

impl Call<pb::MembershipResponse> {
    /// `AddVoter`: node `id` at `address`, if the configuration is still at
    /// `previous_index` (0: any).
    pub fn add_voter(id: u64, address: impl Into<String>, previous_index: u64) -> Self {
        let message = pb::AddNodeRequest {
            node_id: id,
            address: address.into(),
            previous_index,
        };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.add_voter(r).await
        })
    }

    /// `AddLearner`: like [`Call::add_voter`], as a non-voter.
    pub fn add_learner(id: u64, address: impl Into<String>, previous_index: u64) -> Self {
        let message = pb::AddNodeRequest {
            node_id: id,
            address: address.into(),
            previous_index,
        };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.add_learner(r).await
        })
    }

    /// `DemoteVoter`: voter `id` becomes a learner.
    pub fn demote_voter(id: u64, previous_index: u64) -> Self {
        let message = pb::NodeRequest {
            node_id: id,
            previous_index,
        };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.demote_voter(r).await
        })
    }

    /// `RemoveNode`: member `id` leaves.
    pub fn remove_node(id: u64, previous_index: u64) -> Self {
        let message = pb::NodeRequest {
            node_id: id,
            previous_index,
        };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.remove_node(r).await
        })
    }
}

impl Call<pb::TransferLeaderResponse> {
    /// `TransferLeader` to `id` (0: the most up-to-date other voter); the
    /// leader waits up to `timeout` for the new one to take office.
    pub fn transfer_leader(id: u64, timeout: Duration) -> Self {
        let message = pb::TransferLeaderRequest {
            node_id: id,
            timeout_ms: timeout.as_millis() as u64,
        };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.transfer_leader(r).await
        })
    }
}

impl Call<pb::NodeStatus> {
    /// `Status` of the node asked.
    pub fn status() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.status(r).await
        })
    }
}

impl Call<pb::SnapshotResponse> {
    /// `TriggerSnapshot` on the node asked.
    pub fn snapshot() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.trigger_snapshot(r).await
        })
    }
}

impl Call<pb::BarrierResponse> {
    /// `Barrier`: waits until the leader applied what was committed.
    pub fn barrier() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.barrier(r).await
        })
    }
}

impl Call<pb::VerifyLeaderResponse> {
    /// `VerifyLeader`: a quorum confirms the leader.
    pub fn verify_leader() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.verify_leader(r).await
        })
    }
}

impl Call<pb::StateDigestResponse> {
    /// `StateDigest` of the node asked.
    pub fn state_digest() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.state_digest(r).await
        })
    }
}

impl Call<pb::Empty> {
    /// `Shutdown` of the node asked.
    pub fn shutdown() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.shutdown(r).await
        })
    }
}

impl Call<Streaming<pb::BackupChunk>> {
    /// `Backup`: the leader's snapshot as a stream (header, data, checksum),
    /// all of which must arrive within the call's deadline.
    pub fn backup() -> Self {
        admin(REPEATABLE, pb::Empty {}, |mut admin, r| async move {
            admin.backup(r).await
        })
    }
}

impl Call<pb::CompactResponse> {
    /// `Compact`: drop the history before `revision`.
    pub fn compact(revision: u64) -> Self {
        let message = pb::CompactRequest { revision };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.compact(r).await
        })
    }
}

impl Call<pb::AlarmResponse> {
    /// `Alarm`: list, raise (for `member`, 0: the node asked) or disarm
    /// (`member`'s, 0: every member's).
    pub fn alarm(action: pb::alarm_request::Action, member: u64) -> Self {
        let message = pb::AlarmRequest {
            action: action as i32,
            member_id: member,
        };
        admin(REPEATABLE, message, |mut admin, r| async move {
            admin.alarm(r).await
        })
    }
}
