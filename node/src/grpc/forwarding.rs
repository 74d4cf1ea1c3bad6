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
//!   connection has; one that was not sent yet goes on its own. Calls too large for one message, of services not
//!   carried (those with streaming methods), or to a leader without the
//!   stream (an older node) go as calls of their own, as before.
//! - **Leader** ([`ForwardTargets`]): each message becomes a request to the
//!   same service a client reaches, behind the same routing layer, marked
//!   forwarded and judged by the role the follower names for its client.
//!   Its answer goes back whole: headers, body and trailers.

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

use crate::etcd::kv::EtcdKv;
use crate::grpc::kv::KvService;
use crate::grpc::routing::Routed;
use crate::network::calls::TrackCalls;
use crate::security::Caller;
use crate::security::Identity;
use crate::security::Role;

/// Room in a stream message beyond the largest gRPC message: the call's
/// path, headers and trailers.
pub const FORWARD_OVERHEAD_BYTES: usize = 64 << 10;

/// Largest request body sent on the stream; a larger one goes as a call of
/// its own, so one big write does not hold up the small ones behind it.
const MAX_STREAMED_BODY: usize = 256 << 10;

/// Calls one follower's stream may have running on the leader at once;
/// past it the leader reads no more until one ends.
const IN_FLIGHT_PER_STREAM: usize = 1024;

/// Calls queued on a follower for its stream before callers wait.
const QUEUED_PER_STREAM: usize = 1024;

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
    pub kv: Routed<KvServer<KvService>>,
    pub etcd_kv: Routed<EtcdKvServer<EtcdKv>>,
    /// Largest answer message the stream carries.
    pub max_answer_bytes: usize,
}

impl ForwardTargets {
    /// The answers to the calls of one follower's stream, `sender` being
    /// the follower's identity on its connection; each call runs as soon as
    /// it arrives and is answered when done.
    pub fn serve(
        self,
        calls: impl futures::Stream<Item = pb::ForwardedCall> + Send + 'static,
        sender: Caller,
    ) -> impl futures::Stream<Item = pb::ForwardedAnswer> + Send + 'static {
        calls
            .map(move |call| {
                let targets = self.clone();
                let sender = sender.clone();
                async move { targets.run(call, &sender).await }
            })
            .buffer_unordered(IN_FLIGHT_PER_STREAM)
    }

    /// Runs one forwarded call here.
    async fn run(&self, call: pb::ForwardedCall, sender: &Caller) -> pb::ForwardedAnswer {
        let id = call.id;
        let answer = match request_of(call, sender) {
            Err(status) => status.into_http(),
            Ok(request) => {
                let path = request.uri().path();
                if path.starts_with("/raftkv.KV/") {
                    call_once(TrackCalls.layer(self.kv.clone()), request).await
                } else if path.starts_with("/etcdserverpb.KV/") {
                    call_once(TrackCalls.layer(self.etcd_kv.clone()), request).await
                } else {
                    Status::unimplemented(format!("{path} is not served on the forwarding stream"))
                        .into_http()
                }
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
    streams: tokio::sync::Mutex<HashMap<String, Slot>>,
}

enum Slot {
    Open(Arc<Outbound>),
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

type Waiting = HashMap<u64, oneshot::Sender<pb::ForwardedAnswer>>;

impl Forwarder {
    /// A forwarder over the peer channels `peers`, whose stream messages are
    /// at most `max_message_bytes`.
    pub fn new(peers: Channels, max_message_bytes: usize) -> Forwarder {
        Forwarder {
            peers,
            max_message_bytes,
            streams: tokio::sync::Mutex::new(HashMap::new()),
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
        let (parts, body) = request.into_parts();
        let body = match read_up_to(body, MAX_STREAMED_BODY).await {
            Read::Whole(body) => body,
            Read::TooLarge(body) => return Err(http::Request::from_parts(parts, body)),
            Read::Broken(status) => return Ok(status.into_http()),
        };
        let Some(stream) = self.stream_to(address).await else {
            let body = Body::new(http_body_util::Full::new(body));
            return Err(http::Request::from_parts(parts, body));
        };
        let timeout = grpc_timeout(&parts.headers).unwrap_or(Duration::from_secs(30));
        let call = pb::ForwardedCall {
            id: stream.next_id.fetch_add(1, Ordering::Relaxed),
            path: parts.uri.path().to_string(),
            headers: headers_of(&parts.headers),
            body,
        };
        stream.call(call, timeout).await.map_err(|call| {
            // Never sent: it goes on its own.
            let body = Body::new(http_body_util::Full::new(call.body));
            http::Request::from_parts(parts, body)
        })
    }

    /// The open stream to `address`, opened if there is none; `None` when
    /// calls to it go on their own.
    async fn stream_to(&self, address: &str) -> Option<Arc<Outbound>> {
        let mut streams = self.streams.lock().await;
        match streams.get(address) {
            Some(Slot::Open(stream)) if !stream.ended.load(Ordering::Acquire) => {
                return Some(stream.clone())
            }
            Some(Slot::OnTheirOwn(until)) if Instant::now() < *until => return None,
            _ => {}
        }
        // A new leader: the streams to earlier ones end once their calls
        // are answered, instead of holding their connections open.
        streams.clear();
        let retry_after = match tokio::time::timeout(OPEN_TIMEOUT, self.open(address)).await {
            Ok(Ok(stream)) => {
                streams.insert(address.to_string(), Slot::Open(stream.clone()));
                return Some(stream);
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(%address, "the leader has no forwarding stream; forwarding call by call");
                UNSUPPORTED_RETRY
            }
            Ok(Err(status)) => {
                tracing::debug!(%address, %status, "cannot open the forwarding stream");
                FAILED_OPEN_RETRY
            }
            Err(_) => {
                tracing::debug!(%address, "opening the forwarding stream timed out");
                FAILED_OPEN_RETRY
            }
        };
        let until = Instant::now() + retry_after;
        streams.insert(address.to_string(), Slot::OnTheirOwn(until));
        None
    }

    async fn open(&self, address: &str) -> Result<Arc<Outbound>, Status> {
        let channel = self
            .peers
            .get(address)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
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
            loop {
                match answers.message().await {
                    Ok(Some(answer)) => {
                        let mut waiting = reader_waiting.lock().unwrap_or_else(|e| e.into_inner());
                        let caller = waiting.as_mut().and_then(|w| w.remove(&answer.id));
                        drop(waiting);
                        // A caller that gave up waiting is gone: nothing to do.
                        if let Some(caller) = caller {
                            let _ = caller.send(answer);
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%address, %status, "the forwarding stream broke off");
                        break;
                    }
                }
            }
            reader_ended.store(true, Ordering::Release);
            // Dropping the waiting calls' senders tells each its outcome is
            // unknown.
            reader_waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
        });
        Ok(Arc::new(Outbound {
            calls,
            waiting,
            next_id: AtomicU64::new(0),
            ended,
        }))
    }
}

impl Outbound {
    /// Sends `call` and waits for its answer, at most `timeout`; hands the
    /// call back if the stream had ended before it was sent.
    async fn call(
        &self,
        call: pb::ForwardedCall,
        timeout: Duration,
    ) -> Result<Answer, pb::ForwardedCall> {
        let id = call.id;
        let (answered, answer) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            match waiting.as_mut() {
                Some(waiting) => waiting.insert(id, answered),
                None => return Err(call),
            };
        }
        if let Err(unsent) = self.calls.send(call).await {
            self.forget(id);
            return Err(unsent.0);
        }
        Ok(match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer_of(answer),
            Ok(Err(_)) => Status::unavailable(
                "the stream to the leader broke off before it answered: the call's outcome is unknown",
            )
            .into_http(),
            Err(_) => {
                self.forget(id);
                Status::deadline_exceeded("the leader did not answer in time").into_http()
            }
        })
    }

    fn forget(&self, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waiting) = waiting.as_mut() {
            waiting.remove(&id);
        }
    }
}

/// The leader's answer as the response to the client's call.
fn answer_of(answer: pb::ForwardedAnswer) -> Answer {
    let headers = header_map(answer.headers).unwrap_or_default();
    let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = Vec::with_capacity(2);
    if !answer.body.is_empty() {
        frames.push(Ok(Frame::data(answer.body)));
    }
    if !answer.trailers.is_empty() {
        frames.push(Ok(Frame::trailers(
            header_map(answer.trailers).unwrap_or_default(),
        )));
    }
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let mut response = http::Response::new(Body::new(body));
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
