//! Calls on accepted connections: the layer in front of every service that
//! counts each connection's calls in flight (for the idle timeout), records
//! every call's status code and latency (for the metrics), and puts the
//! [`Caller`] on each call for the role check.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::RwLock;
use std::task::Context;
use std::task::Poll;

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;

use super::connection::Activity;
use super::connection::PeerInfo;
use crate::security::Caller;

/// A layer over every service that counts each connection's calls in
/// flight, from the request until its response body is done, for the idle
/// timeout; and every call's status code and latency, for the metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackCalls;

impl<S> tower_layer::Layer<S> for TrackCalls {
    type Service = CallTracker<S>;

    fn layer(&self, inner: S) -> CallTracker<S> {
        CallTracker { inner }
    }
}

/// See [`TrackCalls`].
#[derive(Debug, Clone)]
pub struct CallTracker<S> {
    inner: S,
}

/// Ends a call when dropped, with the response body that owns it: the
/// connection's count of calls in flight, and the call's metrics.
struct CallGuard {
    activity: Option<Arc<Activity>>,
    started: std::time::Instant,
    /// `/service/method`.
    path: http::uri::PathAndQuery,
    /// The grpc-status seen, in the headers or the trailers.
    code: Option<tonic::Code>,
}

impl CallGuard {
    /// Notes the grpc-status in `headers`, if any.
    fn note(&mut self, headers: &http::HeaderMap) {
        if let Some(status) = headers.get("grpc-status") {
            self.code = Some(tonic::Code::from_bytes(status.as_bytes()));
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(activity) = &self.activity {
            activity.end();
        }
        // The response ended without a status: the caller went away.
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        let elapsed = self.started.elapsed().as_secs_f64();
        let method = method_metrics(self.path.path());
        method.calls(code).inc();
        method.latency.observe(elapsed);
    }
}

/// The client a node forwarded this call for, when a node (by its
/// certificate) forwarded it and named the client's role: that role (the
/// client role if it names none this node knows), with no common name.
/// `None` for every other call.
pub(crate) fn forwarded_caller(
    headers: &http::HeaderMap,
    sender: Option<&crate::security::Identity>,
) -> Option<crate::security::Identity> {
    use crate::security::Role;
    if sender?.role != Role::Node {
        return None;
    }
    let named = headers.get(raftkv_proto::CALLER_ROLE_METADATA)?;
    // A role this node cannot read gets the least one.
    let role = named
        .to_str()
        .ok()
        .and_then(Role::from_name)
        .unwrap_or(Role::Client);
    Some(crate::security::Identity {
        common_name: None,
        role,
    })
}

/// `/service/method` → (`service`, `method`).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

fn call_labels(service: &str, method: &str, code: tonic::Code) -> crate::metrics::CallLabels {
    crate::metrics::CallLabels {
        service: service.to_string(),
        method: method.to_string(),
        code: match code {
            tonic::Code::Ok => "OK".to_string(),
            code => format!("{code:?}"),
        },
    }
}

fn method_labels(service: &str, method: &str) -> crate::metrics::MethodLabels {
    crate::metrics::MethodLabels {
        service: service.to_string(),
        method: method.to_string(),
    }
}

/// One method's series, found by its path without building labels: the
/// label strings and the families' lookups were a handful of allocations
/// and hashes on every call.
struct MethodMetrics {
    service: String,
    method: String,
    latency: prometheus_client::metrics::histogram::Histogram,
    /// The counter of each status code, made on the code's first call.
    by_code: [OnceLock<Counter>; CODES],
}

/// tonic's status codes, 0 (`Ok`) to 16 (`Unauthenticated`).
const CODES: usize = 17;

/// Paths kept in [`method_metrics`]' table. The paths a client sends are
/// its own choice: past this many, a call's series are looked up afresh
/// instead of growing the table.
const MAX_PATHS: usize = 512;

impl MethodMetrics {
    /// The method at `path`'s series, looked up in the metric families.
    fn new(path: &str) -> MethodMetrics {
        let (service, method) = split_path(path);
        MethodMetrics {
            service: service.to_string(),
            method: method.to_string(),
            latency: crate::metrics::global()
                .grpc_latency
                .get_or_create(&method_labels(service, method))
                .clone(),
            by_code: Default::default(),
        }
    }

    fn calls(&self, code: tonic::Code) -> &Counter {
        self.by_code[(code as usize).min(CODES - 1)].get_or_init(|| {
            crate::metrics::global()
                .grpc_requests
                .get_or_create(&call_labels(&self.service, &self.method, code))
                .clone()
        })
    }
}

/// The series of the method at `path`: kept in a table, or made afresh
/// once the table is full.
fn method_metrics(path: &str) -> Arc<MethodMetrics> {
    type Table = RwLock<HashMap<Box<str>, Arc<MethodMetrics>>>;
    static TABLE: OnceLock<Table> = OnceLock::new();
    let table = TABLE.get_or_init(Table::default);
    if let Some(found) = table.read().unwrap_or_else(|e| e.into_inner()).get(path) {
        return found.clone();
    }
    let mut table = table.write().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = table.get(path) {
        return found.clone();
    }
    let found = Arc::new(MethodMetrics::new(path));
    if table.len() < MAX_PATHS {
        table.insert(path.into(), found.clone());
    }
    found
}

impl<S, B, R> tower_service::Service<http::Request<B>> for CallTracker<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    R::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let activity = peer.as_ref().map(|peer| {
            peer.activity.begin();
            peer.activity.clone()
        });
        // Who the caller is, on its own: the role check
        // (`security::Authorize`) reads it from here. A call another node
        // forwarded is judged by the role of the client that sent it there.
        if let Some(peer) = peer {
            let caller = forwarded_caller(request.headers(), peer.identity.as_deref())
                .map_or(Caller(peer.identity), |identity| {
                    Caller(Some(Arc::new(identity)))
                });
            request.extensions_mut().insert(caller);
        }
        let mut guard = CallGuard {
            activity,
            started: std::time::Instant::now(),
            path: request
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
            code: None,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // An error without a body carries its status in the headers.
            guard.note(response.headers());
            Ok(response.map(|body| {
                // The closure owns the guard: the call ends with the body.
                tonic::body::Body::new(body.map_frame(move |frame| {
                    if let Some(trailers) = frame.trailers_ref() {
                        guard.note(trailers);
                    }
                    frame
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_methods_cached_series_are_the_ones_prometheus_reads() {
        let path = "/test.Calls/Cached";
        let method = method_metrics(path);
        method.calls(tonic::Code::Ok).inc();
        method.calls(tonic::Code::NotFound).inc();
        method.calls(tonic::Code::NotFound).inc();
        method.latency.observe(0.5);
        let again = method_metrics(path);
        assert!(Arc::ptr_eq(&method, &again));

        let metrics = crate::metrics::global();
        let count = |code: &str| {
            metrics
                .grpc_requests
                .get_or_create(&crate::metrics::CallLabels {
                    service: "test.Calls".into(),
                    method: "Cached".into(),
                    code: code.into(),
                })
                .get()
        };
        assert_eq!(count("OK"), 1);
        assert_eq!(count("NotFound"), 2);
        assert_eq!(count("Unavailable"), 0);
    }

    #[test]
    fn only_a_node_may_name_the_role_of_the_client_it_forwards_for() {
        use crate::security::Identity;
        use crate::security::Role;
        let who = |role| Identity {
            common_name: Some("x".into()),
            role,
        };
        let mut named = http::HeaderMap::new();
        named.insert(
            raftkv_proto::CALLER_ROLE_METADATA,
            http::HeaderValue::from_static("client"),
        );
        let from_node = forwarded_caller(&named, Some(&who(Role::Node))).expect("honoured");
        assert_eq!(from_node.role, Role::Client);
        assert!(forwarded_caller(&named, Some(&who(Role::Admin))).is_none());
        assert!(forwarded_caller(&named, Some(&who(Role::Client))).is_none());
        assert!(forwarded_caller(&named, None).is_none(), "TLS off");
        let unnamed = http::HeaderMap::new();
        assert!(forwarded_caller(&unnamed, Some(&who(Role::Node))).is_none());
        let mut garbage = http::HeaderMap::new();
        garbage.insert(
            raftkv_proto::CALLER_ROLE_METADATA,
            http::HeaderValue::from_static("root"),
        );
        let least = forwarded_caller(&garbage, Some(&who(Role::Node))).expect("honoured");
        assert_eq!(least.role, Role::Client, "an unknown role is the least one");
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path("/raftkv.KV/Put"), ("raftkv.KV", "Put"));
        assert_eq!(split_path("/nomethod"), ("nomethod", ""));
        assert_eq!(split_path(""), ("", ""));
    }
}
