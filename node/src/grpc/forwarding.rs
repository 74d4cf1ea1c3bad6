//! Client calls a follower passes on to its leader, many over one stream
//! (`raftkv.Raft/Forward`) instead of one HTTP/2 call each.
//!
//! A forwarded call used to cost both nodes a call of their own: an HTTP/2
//! stream opened, its headers encoded and decoded, its trailers too. With
//! clients spread over every member (as etcd's are), two calls in three are
//! forwarded, and that work made the cluster a fifth slower than the same
//! load sent to the leader alone. On the stream a call is one message each
//! way.
//!
//! - **Follower** ([`Forwarder`]): one stream per leader address, opened on
//!   the first call. Each call gets an id; a reader task hands each answer
//!   to the call waiting for it. A call whose stream breaks before its
//!   answer came has an unknown outcome, as a call cut off on its own
//!   connection has; one the leader never read (not sent yet, or left when
//!   the stream ended cleanly) goes on its own. Calls too large for one
//!   message, of services not carried (those with streaming methods), or to
//!   a leader without the stream (an older node) go as calls of their own,
//!   as before.
//! - **Leader** ([`ForwardTargets`]): each message becomes a request to the
//!   same service a client reaches, behind the same routing layer, marked
//!   forwarded and judged by the role the follower names for its client. It
//!   runs in a task of its own, within its deadline. Its answer goes back
//!   whole: headers, body and trailers.
//! - **Proposals** ([`Forwarder::propose`]): a message may carry a write's
//!   command instead of a call, from a follower that served the client's
//!   write itself. The leader proposes it and answers with its outcome
//!   alone (see `node::propose`). A command too large for one message goes
//!   on a stream of its own.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::BodyExt;
use raftkv_client::Channels;
use raftkv_proto::etcd::etcdserverpb::kv_server::KvServer as EtcdKvServer;
use raftkv_proto::pb;
use raftkv_proto::pb::kv_server::KvServer;
use raftkv_proto::pb::raft_client::RaftClient;
use raftkv_proto::FORWARDED_METADATA;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tonic::body::Body;
use tonic::Status;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::NodeError;
use crate::etcd::kv::EtcdKv;
use crate::grpc::kv::KvService;
use crate::grpc::routing::Routed;
use crate::network::calls::TrackCalls;
use crate::node::propose::encode_outcome;
use crate::node::propose::Proposed;
use crate::node::propose::Refusal;
use crate::node::RaftNode;
use crate::security::Caller;
use crate::security::Identity;
use crate::security::Role;

/// Room in a stream message beyond the largest gRPC message: the call's
/// path, headers and trailers.
pub const FORWARD_OVERHEAD_BYTES: usize = 64 << 10;

/// Largest request body (or proposed command) sent on the stream; a larger
/// one goes as a call (or on a stream) of its own, so one big write does not
/// hold up the small ones behind it.
const MAX_STREAMED_BODY: usize = 256 << 10;

/// Calls one follower's stream may have running on the leader at once;
/// past it the leader reads no more until one ends.
const IN_FLIGHT_PER_STREAM: usize = 1024;

/// Calls queued on a follower for its stream before callers wait.
const QUEUED_PER_STREAM: usize = 1024;

/// The deadline of a forwarded call that names none (the routing layer
/// gives every forwarded call one, so this is a backstop).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// How long opening a stream may take before the call goes on its own.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a leader that has no stream (an older node) is sent calls of
/// their own before the stream is tried again.
const UNSUPPORTED_RETRY: Duration = Duration::from_secs(60);

/// How long calls go on their own after a stream could not be opened,
/// before it is tried again: callers do not queue behind opens to a leader
/// that does not answer.
const FAILED_OPEN_RETRY: Duration = Duration::from_secs(1);

/// Whether calls to `path` may travel on the stream: the services whose
/// every method is unary (or, like `raftkv.KV/Watch`, served where it
/// arrives and never forwarded).
fn carried(path: &str) -> bool {
    (path.starts_with("/raftkv.KV/") && path != "/raftkv.KV/Watch")
        || path.starts_with("/etcdserverpb.KV/")
}

type Answer = http::Response<Body>;

/// The services a forwarded call reaches on the leader, behind the same
/// routing layer a client's call meets.
#[derive(Clone)]
pub struct ForwardTargets {
    /// Where proposals are proposed.
    pub node: Arc<RaftNode>,
    pub kv: Routed<KvServer<KvService>>,
    pub etcd_kv: Routed<EtcdKvServer<EtcdKv>>,
    /// Largest answer message the stream carries.
    pub max_answer_bytes: usize,
}

impl ForwardTargets {
    /// The answers to the calls of one follower's stream, `sender` being
    /// the follower's identity on its connection.
    ///
    /// Each call runs in a task of its own as soon as it arrives, at most
    /// [`IN_FLIGHT_PER_STREAM`] at once, and is answered when done. The
    /// calls run whether or not the follower reads its answers: a follower
    /// that stalls holds up its own answers, never the calls (nor what they
    /// hold, such as the lease-grant guard). The answers end once the calls
    /// end and every call read was answered: a clean end tells the
    /// follower that what it sent and got no answer for was never read. If
    /// a call read got no answer (its task failed), the answers end with an
    /// error instead: the outcome of what is unanswered is unknown.
    pub fn serve(
        self,
        calls: impl futures::Stream<Item = pb::ForwardedCall> + Send + 'static,
        sender: Caller,
    ) -> impl futures::Stream<Item = Result<pb::ForwardedAnswer, Status>> + Send + 'static {
        let (answers, answered) = mpsc::channel(IN_FLIGHT_PER_STREAM);
        let running = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT_PER_STREAM));
        let read = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let (reader_read, reader_sent) = (read.clone(), sent.clone());
        tokio::spawn(async move {
            let mut calls = std::pin::pin!(calls);
            while let Some(call) = calls.next().await {
                reader_read.fetch_add(1, Ordering::AcqRel);
                let Ok(permit) = running.clone().acquire_owned().await else {
                    break;
                };
                let (targets, sender) = (self.clone(), sender.clone());
                let (answers, sent) = (answers.clone(), reader_sent.clone());
                tokio::spawn(async move {
                    let answer = targets.run(call, &sender).await;
                    // The follower went away: nobody waits for it.
                    if answers.send(answer).await.is_ok() {
                        sent.fetch_add(1, Ordering::AcqRel);
                    }
                    drop(permit);
                });
            }
        });
        // Every sender is gone once the answers end: the counts are final.
        let end = futures::stream::once(async move {
            let (read, sent) = (read.load(Ordering::Acquire), sent.load(Ordering::Acquire));
            (read != sent).then(|| {
                Status::internal(format!(
                    "{} forwarded calls read were not answered",
                    read.saturating_sub(sent)
                ))
            })
        })
        .filter_map(|failed| std::future::ready(failed.map(Err)));
        tokio_stream::wrappers::ReceiverStream::new(answered)
            .map(Ok)
            .chain(end)
    }

    /// Runs one forwarded call here, within its deadline (the caller's, or
    /// [`DEFAULT_DEADLINE`]): the server's own deadline layer does not see
    /// these calls. A proposal (a call carrying a command) is proposed.
    async fn run(&self, call: pb::ForwardedCall, sender: &Caller) -> pb::ForwardedAnswer {
        if !call.command.is_empty() {
            return self.propose(call.id, &call.command).await;
        }
        // Boxed: a call's future is large, and each proposal's task, the
        // common case, would otherwise be as large.
        Box::pin(self.call(call, sender)).await
    }

    /// Runs one forwarded call (not a proposal) here, as [`Self::run`] says.
    async fn call(&self, call: pb::ForwardedCall, sender: &Caller) -> pb::ForwardedAnswer {
        let id = call.id;
        let answer = match request_of(call, sender) {
            Err(status) => status.into_http(),
            Ok(request) => {
                let deadline = grpc_timeout(request.headers()).unwrap_or(DEFAULT_DEADLINE);
                let path = request.uri().path();
                let answer = if path.starts_with("/raftkv.KV/") {
                    tokio::time::timeout(
                        deadline,
                        call_once(TrackCalls.layer(self.kv.clone()), request),
                    )
                    .await
                } else if path.starts_with("/etcdserverpb.KV/") {
                    tokio::time::timeout(
                        deadline,
                        call_once(TrackCalls.layer(self.etcd_kv.clone()), request),
                    )
                    .await
                } else {
                    Ok(Status::unimplemented(format!(
                        "{path} is not served on the forwarding stream"
                    ))
                    .into_http())
                };
                answer.unwrap_or_else(|_| {
                    Status::deadline_exceeded("the forwarded call's deadline passed on the leader")
                        .into_http()
                })
            }
        };
        let answer = message_of(id, answer).await;
        if prost::Message::encoded_len(&answer) > self.max_answer_bytes {
            let status = Status::resource_exhausted("the answer is too large to forward");
            return message_of(id, status.into_http()).await;
        }
        answer
    }
}

impl ForwardTargets {
    /// Proposes a follower's `command` and answers with its outcome.
    async fn propose(&self, id: u64, command: &[u8]) -> pb::ForwardedAnswer {
        let proposed = self.node.propose_for_follower(command).await;
        let answer = |proposed: &Proposed| pb::ForwardedAnswer {
            id,
            outcome: encode_outcome(proposed).into(),
            ..Default::default()
        };
        let whole = answer(&proposed);
        // The whole message counts: its id and framing too.
        if prost::Message::encoded_len(&whole) <= self.max_answer_bytes {
            return whole;
        }
        let index = proposed.map(|(index, _)| index).unwrap_or_default();
        answer(&Err(Refusal::OutcomeUnknown(format!(
            "the write was applied at revision {index}, but its result is too large \
             to pass back from the leader"
        ))))
    }
}

/// The request a forwarded call stands for, from a node that identified
/// as `sender`: marked forwarded, so it is never forwarded again, and
/// judged by the role the node named for its client (the least role if it
/// named none) when the connection has identities (TLS).
fn request_of(call: pb::ForwardedCall, sender: &Caller) -> Result<http::Request<Body>, Status> {
    let uri = http::Uri::try_from(call.path)
        .map_err(|e| Status::invalid_argument(format!("forwarded call: bad path: {e}")))?;
    let mut request = http::Request::new(Body::new(http_body_util::Full::new(call.body)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = header_map(call.headers)?;
    request
        .headers_mut()
        .insert(FORWARDED_METADATA, http::HeaderValue::from_static("1"));
    let caller = match &sender.0 {
        None => Caller(None),
        Some(node) => {
            let client = crate::network::calls::forwarded_caller(request.headers(), Some(node))
                .unwrap_or(Identity {
                    common_name: None,
                    role: Role::Client,
                });
            Caller(Some(Arc::new(client)))
        }
    };
    request.extensions_mut().insert(caller);
    Ok(request)
}

/// Runs `request` on `service`, once.
async fn call_once<S>(mut service: S, request: http::Request<Body>) -> Answer
where
    S: Service<http::Request<Body>, Response = Answer, Error = Infallible>,
{
    if let Err(never) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
        match never {}
    }
    match service.call(request).await {
        Ok(answer) => answer,
        Err(never) => match never {},
    }
}

/// `answer`, read whole, as the message that carries it back.
async fn message_of(id: u64, answer: Answer) -> pb::ForwardedAnswer {
    let (parts, body) = answer.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        // The body broke off: its status ends the call.
        Err(status) => {
            let (status, _) = status.into_http::<Body>().into_parts();
            (Bytes::new(), Some(status.headers))
        }
    };
    pb::ForwardedAnswer {
        id,
        headers: headers_of(&parts.headers),
        body,
        trailers: trailers.as_ref().map(headers_of).unwrap_or_default(),
        outcome: Bytes::new(),
    }
}

fn headers_of(map: &http::HeaderMap) -> Vec<pb::Header> {
    map.iter()
        .map(|(name, value)| pb::Header {
            name: name.as_str().to_string(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

fn header_map(headers: Vec<pb::Header>) -> Result<http::HeaderMap, Status> {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for header in headers {
        let name = http::HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            Status::invalid_argument(format!("forwarded call: bad header name {:?}", header.name))
        })?;
        let value = http::HeaderValue::from_bytes(&header.value).map_err(|_| {
            Status::invalid_argument(format!("forwarded call: bad value of header {name}"))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

/// A follower's streams to the leaders it forwards calls to, by address.
pub struct Forwarder {
    peers: Channels,
    /// Largest message either way on a stream.
    max_message_bytes: usize,
    /// Held only to look up or change a slot, never across an await.
    streams: std::sync::Mutex<HashMap<String, Slot>>,
}

enum Slot {
    Open(Arc<Outbound>),
    /// A stream is being opened: calls meanwhile go on their own rather
    /// than queue behind an open that may hang (a stalled leader).
    Opening,
    /// Calls to this address go on their own until the instant given: the
    /// leader has no stream (an older node), or opening one failed.
    OnTheirOwn(Instant),
}

/// One open stream to a leader.
struct Outbound {
    calls: mpsc::Sender<pb::ForwardedCall>,
    /// The calls sent and not answered yet; `None` once the stream ended.
    waiting: Arc<std::sync::Mutex<Option<Waiting>>>,
    next_id: AtomicU64,
    ended: Arc<AtomicBool>,
}

/// How one exchange on a stream ended.
enum Exchange {
    Answered(pb::ForwardedAnswer),
    /// The leader never read it: the stream had ended, or ended cleanly
    /// before the leader read it.
    NeverRan,
    /// The stream broke off after it was sent: its outcome is unknown.
    Broken,
    /// Its deadline passed before it could be sent.
    LateToSend,
    /// Its deadline passed after it was sent, before its answer came.
    LateToAnswer,
}

/// What a call sent on a stream hears back.
enum Reply {
    Answer(pb::ForwardedAnswer),
    /// The stream ended cleanly before the leader read the call: it never
    /// ran there.
    Unread,
}

type Waiting = HashMap<u64, oneshot::Sender<Reply>>;

impl Forwarder {
    /// A forwarder over the peer channels `peers`, whose stream messages are
    /// at most `max_message_bytes`.
    pub fn new(peers: Channels, max_message_bytes: usize) -> Forwarder {
        Forwarder {
            peers,
            max_message_bytes,
            streams: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` (already marked forwarded, with its deadline) to the
    /// leader at `address` on the stream and answers with the leader's
    /// answer; or hands the request back when it must go as a call of its
    /// own (see the module's documentation).
    pub async fn send(
        &self,
        address: &str,
        request: http::Request<Body>,
    ) -> Result<Answer, http::Request<Body>> {
        if !carried(request.uri().path()) {
            return Err(request);
        }
        let deadline = tokio::time::Instant::now()
            + grpc_timeout(request.headers()).unwrap_or(DEFAULT_DEADLINE);
        let (parts, body) = request.into_parts();
        let body = match read_up_to(body, MAX_STREAMED_BODY).await {
            Read::Whole(body) => body,
            Read::TooLarge(body) => return Err(http::Request::from_parts(parts, body)),
            Read::Broken(status) => return Ok(status.into_http()),
        };
        let on_its_own = |parts, body| {
            let body = Body::new(http_body_util::Full::new(body));
            http::Request::from_parts(parts, body)
        };
        let Some(stream) = self.stream_to(address).await else {
            return Err(on_its_own(parts, body));
        };
        let call = pb::ForwardedCall {
            id: stream.next_id.fetch_add(1, Ordering::Relaxed),
            path: parts.uri.path().to_string(),
            headers: headers_of(&parts.headers),
            // A cheap copy: the same bytes, counted twice.
            body: body.clone(),
            command: Bytes::new(),
        };
        match stream.call(call, deadline).await {
            Some(answer) => Ok(answer),
            // Never run on the leader: it goes on its own.
            None => Err(on_its_own(parts, body)),
        }
    }

    /// Sends the encoded `command` (see `node::propose`) to the leader at
    /// `address` for it to propose, and returns the outcome it sends back.
    /// A command the leader never read goes once more, on a new stream.
    pub async fn propose(
        &self,
        address: &str,
        command: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, NodeError> {
        let command = Bytes::from(command);
        if command.len() > MAX_STREAMED_BODY {
            return self.propose_alone(address, command, deadline).await;
        }
        for _ in 0..2 {
            let Some(stream) = self.stream_to(address).await else {
                break;
            };
            let call = pb::ForwardedCall {
                id: stream.next_id.fetch_add(1, Ordering::Relaxed),
                command: command.clone(),
                ..Default::default()
            };
            return Err(match stream.exchange(call, deadline).await {
                Exchange::Answered(answer) => {
                    crate::grpc::routing::forwarded("proposal").inc();
                    return Ok(answer.outcome);
                }
                Exchange::NeverRan => continue,
                Exchange::Broken => NodeError::OutcomeUnknown(format!(
                    "the stream to the leader at {address} broke off before it answered: \
                     the write may have been applied"
                )),
                Exchange::LateToSend => NodeError::Timeout(
                    "the call's deadline passed before it was sent to the leader".into(),
                ),
                Exchange::LateToAnswer => NodeError::Timeout(format!(
                    "the leader at {address} did not answer in time; the write may have been applied"
                )),
            });
        }
        Err(NodeError::LeaderUnreachable(format!(
            "no stream to the leader at {address} is open; nothing was written, retry"
        )))
    }

    /// A proposal too large for the shared stream, on a stream of its own,
    /// so that one big write does not hold up the small ones behind it.
    async fn propose_alone(
        &self,
        address: &str,
        command: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<Bytes, NodeError> {
        let mut client = self.client(address).map_err(NodeError::LeaderUnreachable)?;
        let call = pb::ForwardedCall {
            id: 0,
            command,
            ..Default::default()
        };
        let exchange = async {
            let mut answers = client
                .forward(futures::stream::iter([call]))
                .await?
                .into_inner();
            answers.message().await
        };
        match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(Some(answer))) => {
                crate::grpc::routing::forwarded("proposal").inc();
                Ok(answer.outcome)
            }
            // A clean end without an answer: the leader never read it.
            Ok(Ok(None)) => Err(NodeError::LeaderUnreachable(format!(
                "the leader at {address} did not take the proposal; nothing was written, retry"
            ))),
            Ok(Err(status)) if raftkv_client::never_sent(&status) => {
                Err(NodeError::LeaderUnreachable(format!(
                    "cannot reach the leader at {address}: {status}; nothing was written, retry"
                )))
            }
            Ok(Err(status)) => Err(NodeError::OutcomeUnknown(format!(
                "the proposal to the leader at {address} broke off ({status}): the write may \
                 have been applied"
            ))),
            Err(_) => Err(NodeError::Timeout(format!(
                "the leader at {address} did not answer in time; the write may have been applied"
            ))),
        }
    }

    /// Whether a stream to `address` is open, as a proposal needs: opening
    /// one is left to a call forwarded whole (which waits for the open, at
    /// most [`OPEN_TIMEOUT`], or goes on its own).
    pub fn has_stream_to(&self, address: &str) -> bool {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        matches!(streams.get(address), Some(Slot::Open(stream)) if !stream.ended.load(Ordering::Acquire))
    }

    /// The open stream to `address`, opened if there is none; `None` when
    /// calls to it go on their own for now.
    async fn stream_to(&self, address: &str) -> Option<Arc<Outbound>> {
        {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            match streams.get(address) {
                Some(Slot::Open(stream)) if !stream.ended.load(Ordering::Acquire) => {
                    return Some(stream.clone())
                }
                Some(Slot::Opening) => return None,
                Some(Slot::OnTheirOwn(until)) if Instant::now() < *until => return None,
                _ => {}
            }
            // A new leader: the streams to earlier ones end once their
            // calls are answered, instead of holding their connections open.
            streams.clear();
            streams.insert(address.to_string(), Slot::Opening);
        }
        let opened = tokio::time::timeout(OPEN_TIMEOUT, self.open(address)).await;
        let (slot, stream) = match opened {
            Ok(Ok(stream)) => (Slot::Open(stream.clone()), Some(stream)),
            Ok(Err(status)) => {
                let retry_after = if status.code() == tonic::Code::Unimplemented {
                    tracing::info!(%address, "the leader has no forwarding stream; forwarding call by call");
                    UNSUPPORTED_RETRY
                } else {
                    tracing::debug!(%address, %status, "cannot open the forwarding stream");
                    FAILED_OPEN_RETRY
                };
                (Slot::OnTheirOwn(Instant::now() + retry_after), None)
            }
            Err(_) => {
                tracing::debug!(%address, "opening the forwarding stream timed out");
                (Slot::OnTheirOwn(Instant::now() + FAILED_OPEN_RETRY), None)
            }
        };
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        // Only the slot this open claimed: a newer leader's may be there now.
        if matches!(streams.get(address), Some(Slot::Opening)) {
            streams.insert(address.to_string(), slot);
        }
        stream
    }

    /// A Raft client to `address`, over the cached peer channel, with the
    /// stream's message limits, or why there is none.
    fn client(&self, address: &str) -> Result<RaftClient<tonic::transport::Channel>, String> {
        let channel = self.peers.get(address).map_err(|e| e.to_string())?;
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes))
    }

    async fn open(&self, address: &str) -> Result<Arc<Outbound>, Status> {
        let mut client = self.client(address).map_err(Status::unavailable)?;
        let (calls, queued) = mpsc::channel(QUEUED_PER_STREAM);
        let mut answers = client
            .forward(tokio_stream::wrappers::ReceiverStream::new(queued))
            .await?
            .into_inner();
        let waiting = Arc::new(std::sync::Mutex::new(Some(Waiting::new())));
        let ended = Arc::new(AtomicBool::new(false));
        let (reader_waiting, reader_ended) = (waiting.clone(), ended.clone());
        let address = address.to_string();
        tokio::spawn(async move {
            let clean = loop {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        let mut waiting = reader_waiting.lock().unwrap_or_else(|e| e.into_inner());
                        let caller = waiting.as_mut().and_then(|w| w.remove(&answer.id));
                        drop(waiting);
                        // A caller that gave up waiting is gone: nothing to do.
                        if let Some(caller) = caller {
                            let _ = caller.send(Reply::Answer(answer));
                        }
                    }
                    Ok(None) => break true,
                    Err(status) => {
                        tracing::debug!(%address, %status, "the forwarding stream broke off");
                        break false;
                    }
                }
            };
            reader_ended.store(true, Ordering::Release);
            let left = reader_waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default();
            // A clean end comes once the leader answered every call it read:
            // those left were never read. After a break, dropping their
            // senders tells each its outcome is unknown.
            if clean {
                for (_, caller) in left {
                    let _ = caller.send(Reply::Unread);
                }
            }
        });
        Ok(Arc::new(Outbound {
            calls,
            waiting,
            next_id: AtomicU64::new(0),
            ended,
        }))
    }
}

/// A call waiting for its answer; forgotten when dropped (answered, timed
/// out, or its caller went away), so the waiting calls never leak.
struct Pending<'a> {
    stream: &'a Outbound,
    id: u64,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut waiting = self
            .stream
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = waiting.as_mut() {
            waiting.remove(&self.id);
        }
    }
}

impl Outbound {
    /// Sends `call` and waits for its answer until `deadline`; `None` if the
    /// leader never ran it (the stream had ended, or ended cleanly before
    /// the leader read it).
    async fn call(
        &self,
        call: pb::ForwardedCall,
        deadline: tokio::time::Instant,
    ) -> Option<Answer> {
        Some(match self.exchange(call, deadline).await {
            Exchange::Answered(answer) => answer_of(answer),
            Exchange::NeverRan => return None,
            Exchange::Broken => Status::unavailable(
                "the stream to the leader broke off before it answered: the call's outcome is unknown",
            )
            .into_http(),
            Exchange::LateToSend => Status::deadline_exceeded(
                "the call's deadline passed before it was sent to the leader",
            )
            .into_http(),
            Exchange::LateToAnswer => {
                Status::deadline_exceeded("the leader did not answer in time").into_http()
            }
        })
    }

    /// Sends `call` and waits for its answer until `deadline`.
    async fn exchange(&self, call: pb::ForwardedCall, deadline: tokio::time::Instant) -> Exchange {
        let id = call.id;
        let (answered, answer) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let Some(waiting) = waiting.as_mut() else {
                return Exchange::NeverRan;
            };
            waiting.insert(id, answered);
        }
        let _pending = Pending { stream: self, id };
        match tokio::time::timeout_at(deadline, self.calls.send(call)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Exchange::NeverRan,
            Err(_) => return Exchange::LateToSend,
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(Reply::Answer(answer))) => Exchange::Answered(answer),
            Ok(Ok(Reply::Unread)) => Exchange::NeverRan,
            Ok(Err(_)) => Exchange::Broken,
            Err(_) => Exchange::LateToAnswer,
        }
    }
}

/// The leader's answer as the response to the client's call; an answer
/// whose headers do not read is an internal error, not a broken response.
fn answer_of(answer: pb::ForwardedAnswer) -> Answer {
    let (headers, trailers) = match (header_map(answer.headers), header_map(answer.trailers)) {
        (Ok(headers), Ok(trailers)) => (headers, trailers),
        (Err(status), _) | (_, Err(status)) => {
            return Status::internal(format!("the leader's answer: {}", status.message()))
                .into_http()
        }
    };
    // A status alone (gRPC's trailers-only answer) must end the stream with
    // its headers: gRPC-Go refuses headers followed by an empty end.
    let body = if answer.body.is_empty() && trailers.is_empty() {
        Body::empty()
    } else {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::with_capacity(2);
        if !answer.body.is_empty() {
            frames.push(Ok(Frame::data(answer.body)));
        }
        if !trailers.is_empty() {
            frames.push(Ok(Frame::trailers(trailers)));
        }
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    };
    let mut response = http::Response::new(body);
    *response.headers_mut() = headers;
    response
}

/// A request body, read as far as a limit.
enum Read {
    /// All of it, within the limit.
    Whole(Bytes),
    /// More than the limit: the body again, what was read followed by the
    /// rest, unread.
    TooLarge(Body),
    /// The caller's body broke off.
    Broken(Status),
}

async fn read_up_to(mut body: Body, limit: usize) -> Read {
    let mut read: Vec<Bytes> = Vec::new();
    let mut size = 0;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(status) => return Read::Broken(status),
        };
        // A unary request has no trailers; any other frame is kept as data.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len();
        read.push(data);
        if size > limit {
            let head = futures::stream::iter(read.into_iter().map(|data| Ok(Frame::data(data))));
            let rest = http_body_util::BodyStream::new(body);
            let again = http_body_util::StreamBody::new(head.chain(rest));
            return Read::TooLarge(Body::new(again));
        }
    }
    Read::Whole(match read.len() {
        0 => Bytes::new(),
        1 => read.pop().unwrap_or_default(),
        _ => read.concat().into(),
    })
}

/// A call's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a unit).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_services_without_streaming_methods_travel_on_the_stream() {
        assert!(carried("/raftkv.KV/Put"));
        assert!(carried("/raftkv.KV/Get"));
        assert!(carried("/etcdserverpb.KV/Put"));
        assert!(carried("/etcdserverpb.KV/Txn"));
        assert!(!carried("/raftkv.KV/Watch"));
        assert!(!carried("/etcdserverpb.Lease/LeaseKeepAlive"));
        assert!(!carried("/raftkv.Admin/AddVoter"));
        assert!(!carried("/etcdserverpb.Cluster/MemberAdd"));
    }

    #[test]
    fn grpc_timeouts_read_in_every_unit() {
        let timeout = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-timeout", http::HeaderValue::from_static(value));
            grpc_timeout(&headers)
        };
        assert_eq!(timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout("30S"), Some(Duration::from_secs(30)));
        assert_eq!(timeout("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(
            timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout("7n"), Some(Duration::from_nanos(7)));
        assert_eq!(timeout("S"), None);
        assert_eq!(timeout("12"), None);
        assert_eq!(timeout("123456789S"), None, "more than 8 digits");
        assert_eq!(timeout("-1S"), None);
        assert_eq!(grpc_timeout(&http::HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn an_answer_goes_back_with_its_headers_body_and_trailers() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers.insert("raftkv-reason", http::HeaderValue::from_static("x"));
        let body = http_body_util::StreamBody::new(futures::stream::iter([
            Ok::<_, Status>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
            Ok(Frame::trailers(trailers.clone())),
        ]));
        let mut answer = http::Response::new(Body::new(body));
        answer.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/grpc"),
        );
        let message = message_of(7, answer).await;
        assert_eq!(message.id, 7);
        let again = answer_of(message);
        assert_eq!(again.headers()["content-type"], "application/grpc");
        let collected = again.into_body().collect().await.expect("a body");
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), Bytes::from_static(b"\0\0\0\0\x02hi"));
    }

    #[test]
    fn a_status_alone_ends_the_answer_with_its_headers() {
        use http_body::Body as _;
        let refused = message_of_now(Status::not_found("x").into_http());
        assert!(refused.body.is_empty() && refused.trailers.is_empty());
        let again = answer_of(refused);
        assert_eq!(again.headers()["grpc-status"], "5");
        assert!(
            again.body().is_end_stream(),
            "gRPC-Go reads headers without an end as a broken stream"
        );
    }

    /// `message_of` for an answer whose body is already complete.
    fn message_of_now(answer: Answer) -> pb::ForwardedAnswer {
        futures::executor::block_on(message_of(1, answer))
    }

    #[tokio::test]
    async fn a_body_past_the_limit_comes_back_whole_to_go_on_its_own() {
        let chunks = [Bytes::from(vec![1u8; 100]), Bytes::from(vec![2u8; 100])];
        let body = |chunks: &[Bytes]| {
            let frames: Vec<Result<Frame<Bytes>, Status>> =
                chunks.iter().cloned().map(|c| Ok(Frame::data(c))).collect();
            Body::new(http_body_util::StreamBody::new(futures::stream::iter(
                frames,
            )))
        };
        match read_up_to(body(&chunks), 150).await {
            Read::TooLarge(again) => {
                let bytes = again.collect().await.expect("a body").to_bytes();
                assert_eq!(bytes, chunks.concat());
            }
            _ => panic!("200 bytes read within a 150-byte limit"),
        }
        match read_up_to(body(&chunks), 200).await {
            Read::Whole(bytes) => assert_eq!(bytes, chunks.concat()),
            _ => panic!("200 bytes not read whole within a 200-byte limit"),
        }
    }

    #[test]
    fn a_forwarded_call_is_marked_and_judged_by_its_clients_role() {
        let call = |role: Option<&str>| pb::ForwardedCall {
            id: 1,
            path: "/raftkv.KV/Put".into(),
            headers: role
                .map(|role| pb::Header {
                    name: raftkv_proto::CALLER_ROLE_METADATA.into(),
                    value: role.as_bytes().to_vec(),
                })
                .into_iter()
                .collect(),
            body: Bytes::new(),
            command: Bytes::new(),
        };
        let node = Caller(Some(Arc::new(Identity {
            common_name: Some("node".into()),
            role: Role::Node,
        })));
        let role_of = |request: &http::Request<Body>| {
            let caller = request.extensions().get::<Caller>().expect("a caller");
            caller.0.as_ref().map(|identity| identity.role)
        };
        let admin = request_of(call(Some("admin")), &node).expect("a request");
        assert!(admin.headers().contains_key(FORWARDED_METADATA));
        assert_eq!(role_of(&admin), Some(Role::Admin));
        let unnamed = request_of(call(None), &node).expect("a request");
        assert_eq!(role_of(&unnamed), Some(Role::Client), "the least role");
        let plain = request_of(call(Some("admin")), &Caller(None)).expect("a request");
        assert_eq!(role_of(&plain), None, "no identities without TLS");
        let mut bad = call(None);
        bad.headers.push(pb::Header {
            name: "bad name".into(),
            value: vec![],
        });
        assert_eq!(
            request_of(bad, &node).expect_err("refused").code(),
            tonic::Code::InvalidArgument
        );
    }
}
