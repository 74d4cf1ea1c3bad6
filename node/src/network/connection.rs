//! Accepted connections: the bounds on them, the TLS handshake, who is at the
//! other end, and when one closes.
//!
//! [`incoming`] accepts on the node's listener and yields each connection to
//! the gRPC server once it is ready to serve:
//! - at most `max_connections` at once: one more is closed at once (a flood
//!   of sockets cannot take the node's memory or file descriptors);
//! - with TLS, the handshake runs on its own task and must finish within
//!   `handshake_timeout` (a stalled client holds a socket, never the accept
//!   loop or a worker);
//! - a connection with no call in flight for `idle_timeout` is closed;
//! - each reports its peer address when it closes, so followers notice at
//!   once when their leader's connection dies (see `failover`).
//!
//! Every request carries the connection's [`PeerInfo`] in its extensions;
//! `calls` counts the calls in flight on it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio::time::Sleep;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::security::Identity;
use crate::security::RolePolicy;
use crate::security::Tls;

/// Bounds on the connections a node serves.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Connections open at once, handshakes included.
    pub max_connections: usize,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// A connection with no call in flight for this long is closed.
    pub idle_timeout: Duration,
}

/// What a request knows of the connection it came on.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// Who the peer's certificate says it is (`None` without TLS); shared,
    /// as every request carries a copy of this.
    pub identity: Option<Arc<Identity>>,
    pub(super) activity: Arc<Activity>,
}

/// Calls in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub(super) struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `started` at which `in_flight` last became 0.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.started.elapsed().as_millis() as u64;
            self.idle_since_ms.store(now, Ordering::Release);
        }
    }

    /// When the connection would have been idle for `limit`; `None` while
    /// a call is in flight.
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.started + since + limit)
    }
}

/// The bytes of one connection: plain TCP, or TLS over TCP.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// One accepted connection, ready to serve.
pub struct Connection {
    io: Io,
    peer: PeerInfo,
    idle_timeout: Duration,
    /// Fires when the connection may have gone idle; re-armed while calls run.
    idle_timer: Pin<Box<Sleep>>,
    closed: mpsc::UnboundedSender<SocketAddr>,
    /// Frees this connection's place under `max_connections` when dropped.
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(remote) = self.peer.remote {
            // The watcher is gone once the node stops: nothing to tell then.
            let _ = self.closed.send(remote);
        }
    }
}

impl Connection {
    /// `Ready(error)` once the connection has had no call in flight for
    /// the idle timeout; registers the timer otherwise.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        while self.idle_timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.peer.activity.idle_deadline(self.idle_timeout) {
                Some(deadline) if deadline <= now => {
                    tracing::debug!(peer = ?self.peer.remote, "closing an idle connection");
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    ));
                }
                Some(deadline) => self.idle_timer.as_mut().reset(deadline),
                None => self.idle_timer.as_mut().reset(now + self.idle_timeout),
            }
        }
        Poll::Pending
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let read = match &mut this.io {
            Io::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        };
        match read {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => ready,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Io::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(stream) => stream.is_write_vectored(),
            Io::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

/// How accepted connections are vetted, and who hears of them closing.
pub struct Acceptor {
    /// The TLS material to handshake with (`None`: plain text).
    pub tls: Option<Arc<Tls>>,
    /// Which certificate names give which role.
    pub policy: RolePolicy,
    /// Bounds on connections.
    pub limits: ConnectionLimits,
    /// Told the peer address of every connection that closes.
    pub closed: mpsc::UnboundedSender<SocketAddr>,
}

/// Accepts on `listener` until the returned stream is dropped (the server
/// stopped); yields connections ready to serve.
pub fn incoming(
    listener: TcpListener,
    acceptor: Acceptor,
) -> ReceiverStream<Result<Connection, io::Error>> {
    let (ready_tx, ready_rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, Arc::new(acceptor), ready_tx));
    ReceiverStream::new(ready_rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
    ready: mpsc::Sender<Result<Connection, io::Error>>,
) {
    let places = Arc::new(Semaphore::new(acceptor.limits.max_connections));
    let mut last_refusal_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or memory: pause rather than spin.
                tracing::warn!(cause = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = places.clone().try_acquire_owned() else {
            if last_refusal_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    peer = %remote,
                    limit = acceptor.limits.max_connections,
                    "too many connections: closing new ones (--max-connections)"
                );
                last_refusal_logged = Some(Instant::now());
            }
            continue;
        };
        // The server's own `tcp_nodelay` applies only to listeners it binds:
        // without it small answers wait for delayed ACKs (~40 ms).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(cause = %e, "cannot disable Nagle's algorithm on a connection");
        }
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            if let Some(connection) = vet(stream, remote, &acceptor, permit).await {
                let _ = ready.send(Ok(connection)).await;
            }
        });
    }
}

/// The handshake, if TLS is on, and the identity it proves.
async fn vet(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: &Acceptor,
    permit: OwnedSemaphorePermit,
) -> Option<Connection> {
    let (io, identity) = match &acceptor.tls {
        None => (Io::Plain(stream), None),
        Some(tls) => {
            let handshake = tls.acceptor().accept(stream);
            let stream =
                match tokio::time::timeout(acceptor.limits.handshake_timeout, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::info!(peer = %remote, cause = %e, "TLS handshake refused");
                        return None;
                    }
                    Err(_) => {
                        tracing::info!(peer = %remote, "TLS handshake timed out");
                        return None;
                    }
                };
            let common_name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| crate::security::certificate::common_name(cert));
            let role = acceptor.policy.role_of(common_name.as_deref());
            tracing::debug!(peer = %remote, ?common_name, %role, "TLS connection");
            (
                Io::Tls(Box::new(stream)),
                Some(Arc::new(Identity { common_name, role })),
            )
        }
    };
    let idle_timeout = acceptor.limits.idle_timeout;
    Some(Connection {
        io,
        peer: PeerInfo {
            remote: Some(remote),
            identity,
            activity: Arc::new(Activity::new()),
        },
        idle_timeout,
        idle_timer: Box::pin(tokio::time::sleep(idle_timeout)),
        closed: acceptor.closed.clone(),
        _permit: permit,
    })
}
