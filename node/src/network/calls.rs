//! Calls on accepted connections: the layer in front of every service that
//! counts each connection's calls in flight (for the idle timeout), records
//! every call's status code and latency (for the metrics), and puts the
//! [`Caller`] on each call for the role check.

use std::sync::Arc;
use std::task::Context;
use std::task::Poll;

use futures::future::BoxFuture;
use http_body_util::BodyExt;

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
        let path = self.path.path().trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        let code = match self.code {
            Some(tonic::Code::Ok) => "OK".to_string(),
            Some(code) => format!("{code:?}"),
            // The response ended without a status: the caller went away.
            None => "Cancelled".to_string(),
        };
        let metrics = crate::metrics::global();
        metrics
            .grpc_requests
            .get_or_create(&crate::metrics::CallLabels {
                service: service.to_string(),
                method: method.to_string(),
                code,
            })
            .inc();
        metrics
            .grpc_latency
            .get_or_create(&crate::metrics::MethodLabels {
                service: service.to_string(),
                method: method.to_string(),
            })
            .observe(self.started.elapsed().as_secs_f64());
    }
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
        // (`security::Authorize`) reads it from here.
        if let Some(peer) = peer {
            request.extensions_mut().insert(Caller(peer.identity));
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
