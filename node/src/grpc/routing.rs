//! Route-and-forward, written once: a layer in front of a gRPC service that
//! sends each call that must run on the leader to the leader, and serves
//! the rest here. Handlers never ask where they run; a call that reaches one
//! runs on this node.
//!
//! Each service names where its methods run ([`Placement`], a table beside
//! its handlers). A call for the leader that reaches a follower is passed on
//! as it came, bytes and streams alike, over the cached peer channel, marked
//! as forwarded and with the caller's deadline (or [`FORWARD_TIMEOUT`]). A
//! call that was already forwarded once is never forwarded again: it gets the
//! not-leader answer with the leader hint, so a stale view of who leads
//! cannot loop. For etcd's services the layer's own answers are etcd's
//! (`etcdserver: no leader`, `etcdserver: not leader`): etcd's clients
//! decide on their text.
//!
//! The layer sits inside the role check (`security::Authorize`), so a
//! service's role is checked here before a call is forwarded. The leader
//! sees a forwarded call arrive with the forwarding node's certificate: the
//! call carries the caller's role (`CALLER_ROLE_METADATA`), by which the
//! leader's connection layer judges it, so the checks handlers make (etcd's
//! admin-only calls) judge the caller too.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use raftkv_proto::CALLER_ROLE_METADATA;
use raftkv_proto::FORWARDED_METADATA;
use raftkv_proto::REASON_METADATA;
use raftkv_proto::REASON_NOT_LEADER;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::Status;
use tower_service::Service;

use crate::error::NodeError;
use crate::etcd::errors::EtcdError;
use crate::node::RaftNode;
use crate::security::Caller;

/// Deadline of a forwarded call when the caller set none.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request a placement that reads the message buffers; larger ones
/// run on the leader (the safe choice: the leader can serve every call).
const MAX_PEEKED_BYTES: usize = 64 << 10;

/// Where one method of a service runs.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    /// On whichever node the call reached.
    Here,
    /// On the leader.
    Leader,
    /// On the leader, unless the message, decoded by the function from its
    /// protobuf bytes, may be served here (a stale read, a listing). A
    /// message that cannot be read runs on the leader, which serves every
    /// call.
    LeaderUnless(fn(&[u8]) -> bool),
    /// A write whose handler builds a command: here, with the command
    /// proposed through the leader (`node::propose`), when this node may do
    /// so and has a stream to the leader open; on the leader otherwise
    /// (which opens the stream), and for a call already forwarded once.
    Proposes,
    /// On the leader; and if the leader hands leadership over while serving
    /// it (removing or demoting itself), once more on the new leader, which
    /// finishes it.
    LeaderThenSuccessor,
}

/// Where each method (the last part of the path, `Put` in `/raftkv.KV/Put`)
/// of a service runs.
pub type Placements = fn(&str) -> Placement;

/// The layer over `inner`, a service whose methods run where `placements`
/// says.
pub fn routed<S>(inner: S, node: Arc<RaftNode>, placements: Placements) -> Routed<S> {
    Routed {
        inner,
        node,
        placements,
    }
}

/// See [`routed`].
#[derive(Clone)]
pub struct Routed<S> {
    inner: S,
    node: Arc<RaftNode>,
    placements: Placements,
}

impl<S: NamedService> NamedService for Routed<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = http::Response<Body>;

impl<S> Service<http::Request<Body>> for Routed<S>
where
    S: Service<http::Request<Body>, Response = Answer, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let node = self.node.clone();
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let placement = (self.placements)(method);
        let speaks = Speaks::of(&request);
        Box::pin(async move { Ok(route(inner, &node, placement, speaks, request).await) })
    }
}

/// Whose protocol a call speaks, which decides how this layer's own
/// answers read: etcd's clients match etcd's error texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Speaks {
    Raftkv,
    Etcd,
}

impl Speaks {
    fn of(request: &http::Request<Body>) -> Speaks {
        if request.uri().path().starts_with("/etcdserverpb.") {
            Speaks::Etcd
        } else {
            Speaks::Raftkv
        }
    }

    /// The answer when the call cannot reach a leader: none known (or it
    /// did not take the call), or `leader`, which this node already asked.
    fn not_leader(self, leader: Option<(u64, String)>) -> Answer {
        match (self, leader) {
            (Speaks::Etcd, None) => Status::from(EtcdError::NoLeader).into_http(),
            (Speaks::Etcd, Some(_)) => Status::from(EtcdError::NotLeader).into_http(),
            (Speaks::Raftkv, leader) => Status::from(NodeError::NotLeader { leader }).into_http(),
        }
    }
}

/// Serves `request` here or on the leader, as `placement` says.
///
/// The futures that pass a call on are boxed where they are awaited: they
/// hold a forwarded call's state (kilobytes), and a future is as large as
/// its largest state, so every call, even one served here, would otherwise
/// allocate and move that much when it is boxed for the server.
async fn route<S>(
    mut inner: S,
    node: &RaftNode,
    placement: Placement,
    speaks: Speaks,
    request: http::Request<Body>,
) -> Answer
where
    S: Service<http::Request<Body>, Response = Answer, Error = Infallible>,
{
    let leads = node.names_itself_leader();
    match placement {
        Placement::Here => serve(&mut inner, request).await,
        Placement::Leader if leads => serve(&mut inner, request).await,
        Placement::Leader => Box::pin(forward(node, speaks, request)).await,
        Placement::Proposes if leads || proposes_here(node, &request) => {
            serve(&mut inner, request).await
        }
        Placement::Proposes => Box::pin(forward(node, speaks, request)).await,
        Placement::LeaderUnless(_) if leads => serve(&mut inner, request).await,
        Placement::LeaderUnless(here) => {
            Box::pin(here_unless(inner, node, speaks, here, request)).await
        }
        Placement::LeaderThenSuccessor if !leads => Box::pin(forward(node, speaks, request)).await,
        Placement::LeaderThenSuccessor => {
            Box::pin(then_successor(inner, node, speaks, request)).await
        }
    }
}

/// On a follower, a [`Placement::LeaderUnless`] call: served here if its
/// message says so, else passed to the leader.
async fn here_unless<S>(
    mut inner: S,
    node: &RaftNode,
    speaks: Speaks,
    here: fn(&[u8]) -> bool,
    request: http::Request<Body>,
) -> Answer
where
    S: Service<http::Request<Body>, Response = Answer, Error = Infallible>,
{
    let (request, message) = match buffered(request).await {
        Ok(buffered) => buffered,
        Err(status) => return status.into_http(),
    };
    match message {
        Some(bytes) if grpc_message(&bytes).is_some_and(here) => serve(&mut inner, request).await,
        _ => forward(node, speaks, request).await,
    }
}

/// On the leader, a [`Placement::LeaderThenSuccessor`] call: served here,
/// and sent to the successor if this node handed leadership over to it
/// meanwhile.
async fn then_successor<S>(
    mut inner: S,
    node: &RaftNode,
    speaks: Speaks,
    request: http::Request<Body>,
) -> Answer
where
    S: Service<http::Request<Body>, Response = Answer, Error = Infallible>,
{
    let (request, message) = match buffered(request).await {
        Ok(buffered) => buffered,
        Err(status) => return status.into_http(),
    };
    let Some(bytes) = message else {
        return serve(&mut inner, request).await;
    };
    let again = copy(&request, &bytes);
    let answer = serve(&mut inner, request).await;
    match handed_over_to(&answer) {
        Some(successor) if !is_forwarded(&again) => {
            tracing::debug!(%successor, "leadership was handed over: the new leader finishes the call");
            send(node, speaks, &successor, again).await
        }
        _ => answer,
    }
}

/// Whether this follower serves a [`Placement::Proposes`] call itself.
fn proposes_here(node: &RaftNode, request: &http::Request<Body>) -> bool {
    !is_forwarded(request)
        && node.proposes_through_leader()
        && node
            .leader()
            .filter(|(id, _)| *id != node.id())
            .is_some_and(|(_, address)| node.forwarder().has_stream_to(&address))
}

/// Runs the call here.
async fn serve<S>(inner: &mut S, request: http::Request<Body>) -> Answer
where
    S: Service<http::Request<Body>, Response = Answer, Error = Infallible>,
{
    match inner.call(request).await {
        Ok(answer) => answer,
        Err(never) => match never {},
    }
}

/// Sends the call to the leader, or answers not-leader when there is none
/// to send it to (none known, or the call was forwarded once already).
async fn forward(node: &RaftNode, speaks: Speaks, request: http::Request<Body>) -> Answer {
    let leader = node.leader().filter(|(id, _)| *id != node.id());
    match leader {
        Some((id, address)) if !is_forwarded(&request) => {
            tracing::debug!(leader = id, %address, "forwarding to the leader");
            send(node, speaks, &address, request).await
        }
        leader => speaks.not_leader(leader),
    }
}

/// Passes the call to the node at `address`, marked as forwarded: on the
/// forwarding stream if it can travel there (see `forwarding`), else as a
/// call of its own.
async fn send(
    node: &RaftNode,
    speaks: Speaks,
    address: &str,
    request: http::Request<Body>,
) -> Answer {
    let (mut parts, body) = request.into_parts();
    mark_forwarded(&mut parts);
    let request = http::Request::from_parts(parts, body);
    let request = match node.forwarder().send(address, request).await {
        Ok(answer) => {
            forwarded("stream").inc();
            return answer;
        }
        Err(on_its_own) => on_its_own,
    };
    forwarded("call").inc();
    let mut channel = match node.channel_to(address) {
        Ok(channel) => channel,
        Err(e) => return Status::internal(e.to_string()).into_http(),
    };
    let sent = async {
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        channel.call(request).await
    };
    match sent.await {
        Ok(answer) => answer,
        Err(e) => {
            let mut status =
                Status::unavailable(format!("cannot reach the leader at {address}: {e}"));
            status.set_source(Arc::new(e));
            // Nothing reached the leader: the caller may send the call again.
            if raftkv_client::never_sent(&status) {
                return speaks.not_leader(None);
            }
            status.into_http()
        }
    }
}

/// The count of calls forwarded one `way` (`stream`, `call`, or `proposal`
/// for a write passed on as its command), found once.
pub(crate) fn forwarded(
    way: &'static str,
) -> &'static prometheus_client::metrics::counter::Counter {
    use std::sync::OnceLock;
    static STREAM: OnceLock<prometheus_client::metrics::counter::Counter> = OnceLock::new();
    static CALL: OnceLock<prometheus_client::metrics::counter::Counter> = OnceLock::new();
    static PROPOSAL: OnceLock<prometheus_client::metrics::counter::Counter> = OnceLock::new();
    let cell = match way {
        "stream" => &STREAM,
        "proposal" => &PROPOSAL,
        _ => &CALL,
    };
    cell.get_or_init(|| {
        crate::metrics::global()
            .forwarded_calls
            .get_or_create(&crate::metrics::ForwardLabels { way: way.into() })
            .clone()
    })
}

/// Marks a call as forwarded by this node: with a deadline, and with its
/// client's role for the leader to judge it by.
fn mark_forwarded(parts: &mut http::request::Parts) {
    parts
        .headers
        .insert(FORWARDED_METADATA, http::HeaderValue::from_static("1"));
    if !parts.headers.contains_key("grpc-timeout") {
        let timeout = format!("{}S", FORWARD_TIMEOUT.as_secs());
        if let Ok(value) = http::HeaderValue::from_str(&timeout) {
            parts.headers.insert("grpc-timeout", value);
        }
    }
    // The leader sees this node's certificate: it is told the caller's
    // role, so checks made in handlers (etcd's admin-only calls) judge the
    // caller, not this node. Under TLS only; a value the client sent goes.
    parts.headers.remove(CALLER_ROLE_METADATA);
    if let Some(Caller(Some(identity))) = parts.extensions.get::<Caller>() {
        if let Ok(role) = http::HeaderValue::from_str(&identity.role.to_string()) {
            parts.headers.insert(CALLER_ROLE_METADATA, role);
        }
    }
    // What the server attached for this node's own handlers (the caller's
    // certificate, …) is not the leader's business.
    parts.extensions = http::Extensions::new();
}

/// Whether a node already forwarded this call.
fn is_forwarded(request: &http::Request<Body>) -> bool {
    request.headers().contains_key(FORWARDED_METADATA)
}

/// The request with its body read, and the body's bytes; `None` when it is
/// too large to keep (then the request streams on as it came).
async fn buffered(
    request: http::Request<Body>,
) -> Result<(http::Request<Body>, Option<Bytes>), Status> {
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_PEEKED_BYTES);
    match limited.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let request = http::Request::from_parts(parts, Body::new(full(bytes.clone())));
            Ok((request, Some(bytes)))
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Status::resource_exhausted(
            format!("a request of this kind may not exceed {MAX_PEEKED_BYTES} bytes"),
        )),
        Err(e) => Err(Status::cancelled(format!(
            "the request body broke off: {e}"
        ))),
    }
}

/// A second request with the same head and `body`.
fn copy(request: &http::Request<Body>, body: &Bytes) -> http::Request<Body> {
    let mut again = http::Request::new(Body::new(full(body.clone())));
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.version_mut() = request.version();
    *again.headers_mut() = request.headers().clone();
    again
}

fn full(bytes: Bytes) -> http_body_util::Full<Bytes> {
    http_body_util::Full::new(bytes)
}

/// The message of a gRPC request body holding one uncompressed message: a
/// flag byte, its length (u32, big-endian), then the message.
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let (length, message) = rest.split_at(4);
    let length = u32::from_be_bytes(length.try_into().ok()?) as usize;
    (message.len() == length).then_some(message)
}

/// The address of the node this one handed leadership to while serving
/// the call, when its answer says so: not-leader, naming a leader.
fn handed_over_to(answer: &Answer) -> Option<String> {
    let status = Status::from_header_map(answer.headers())?;
    let reason = status.metadata().get(REASON_METADATA)?;
    if reason.as_bytes() != REASON_NOT_LEADER.as_bytes() {
        return None;
    }
    raftkv_client::leader_hint(&status).map(|(_, address)| address)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use raftkv_proto::pb;

    use super::*;

    /// Where `placement` puts a call of `method` carrying `message`.
    fn runs_here(placements: Placements, method: &str, message: &impl Message) -> bool {
        match placements(method) {
            Placement::Here => true,
            // A proposing write runs here only while the node can propose.
            Placement::Leader | Placement::LeaderThenSuccessor | Placement::Proposes => false,
            Placement::LeaderUnless(here) => here(&message.encode_to_vec()),
        }
    }

    #[test]
    fn writes_and_linearizable_reads_run_on_the_leader_and_stale_reads_here() {
        use crate::grpc::kv::placement;
        let get = |stale| pb::GetRequest {
            key: b"k".to_vec(),
            stale,
            ..Default::default()
        };
        assert!(!runs_here(placement, "Get", &get(false)));
        assert!(runs_here(placement, "Get", &get(true)));
        let scan = |stale| pb::ScanRequest {
            stale,
            ..Default::default()
        };
        assert!(!runs_here(placement, "Scan", &scan(false)));
        assert!(runs_here(placement, "Scan", &scan(true)));
        assert!(runs_here(placement, "Watch", &pb::WatchRequest::default()));
        for write in [
            "Put",
            "Delete",
            "DeletePrefix",
            "CompareAndSwap",
            "Txn",
            "LeaseGrant",
            "LeaseRevoke",
        ] {
            assert!(!runs_here(placement, write, &pb::Empty {}), "{write}");
        }
        for lease in ["LeaseKeepAlive", "LeaseTimeToLive"] {
            assert!(!runs_here(placement, lease, &pb::Empty {}), "{lease}");
        }
        // A message that cannot be read goes where every call can be served.
        match placement("Get") {
            Placement::LeaderUnless(here) => assert!(!here(&[0xff, 0xff, 0xff])),
            other => panic!("Get is placed {other:?}"),
        }
    }

    #[test]
    fn cluster_changes_run_on_the_leader_and_what_describes_a_node_here() {
        use crate::grpc::admin::placement;
        use pb::alarm_request::Action;
        let alarm = |action: Action| pb::AlarmRequest {
            action: action as i32,
            member_id: 0,
        };
        assert!(runs_here(placement, "Alarm", &alarm(Action::List)));
        assert!(!runs_here(placement, "Alarm", &alarm(Action::Raise)));
        assert!(!runs_here(placement, "Alarm", &alarm(Action::Disarm)));
        for change in [
            "AddLearner",
            "AddVoter",
            "TransferLeader",
            "Barrier",
            "VerifyLeader",
        ] {
            assert!(!runs_here(placement, change, &pb::Empty {}), "{change}");
        }
        for change in ["Compact", "Backup", "DemoteVoter", "RemoveNode"] {
            assert!(!runs_here(placement, change, &pb::Empty {}), "{change}");
        }
        assert!(matches!(
            placement("DemoteVoter"),
            Placement::LeaderThenSuccessor
        ));
        assert!(matches!(
            placement("RemoveNode"),
            Placement::LeaderThenSuccessor
        ));
        for local in [
            "Initialize",
            "GetConfiguration",
            "Status",
            "TriggerSnapshot",
            "StateDigest",
            "Shutdown",
        ] {
            assert!(runs_here(placement, local, &pb::Empty {}), "{local}");
        }
    }

    #[test]
    fn a_grpc_body_yields_its_message_only_when_whole_and_uncompressed() {
        let framed = [&[0u8, 0, 0, 0, 3][..], b"abc"].concat();
        assert_eq!(grpc_message(&framed), Some(&b"abc"[..]));
        assert_eq!(grpc_message(&framed[..6]), None, "cut short");
        let compressed = [&[1u8, 0, 0, 0, 3][..], b"abc"].concat();
        assert_eq!(grpc_message(&compressed), None);
        let two = [&framed[..], &framed[..]].concat();
        assert_eq!(grpc_message(&two), None, "more than one message");
        assert_eq!(grpc_message(&[]), None);
    }
}
