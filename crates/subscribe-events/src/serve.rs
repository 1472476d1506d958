//! [`serve`]: an axum router on a listener the way a server open to the internet needs it (the
//! push endpoint's, the sandbox's, the gateway's): hyper's header-read timeout, a bound on
//! connections, and a graceful stop. `axum::serve` has neither limit.
//!
//! Each request carries its connection's peer address as axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), as with `axum::serve` and
//! `into_make_service_with_connect_info`: limits per caller (the gateway's) read it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_layer::Layer;

/// What a slow or greedy client may hold of the server, and how long a stop waits.
///
/// ```
/// use std::time::Duration;
/// let limits = subscribe_events::serve::ServeLimits::new(Duration::from_secs(10), 1024)
///     .drain(Duration::from_secs(5));
/// assert_eq!(limits.max_connections(), 1024);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    header_read_timeout: Duration,
    max_connections: usize,
    drain: Duration,
}

impl ServeLimits {
    /// A connection that has not sent a request's headers within `header_read_timeout` is
    /// closed (one that sends nothing at all, one that trickles its headers, an idle keep-alive
    /// connection); at most `max_connections` are served at once (at least one), more wait in
    /// the listen queue. A stop waits 10 s for the requests in flight.
    pub fn new(header_read_timeout: Duration, max_connections: usize) -> Self {
        Self { header_read_timeout, max_connections: max_connections.max(1), drain: Duration::from_secs(10) }
    }

    /// How long a stop waits for the requests in flight before dropping their connections.
    #[must_use]
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// The header-read timeout.
    pub fn header_read_timeout(&self) -> Duration {
        self.header_read_timeout
    }

    /// The connections served at once.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
}

/// Serves `router` (HTTP/1.1) on `listener` until `shutdown` completes; then closes the
/// listener, so new connections are refused at once instead of waiting in its queue, lets the
/// requests in flight finish (up to the limits' drain time; idle keep-alive connections are
/// closed) and returns.
///
/// HTTP/1.1 only, on hyper's own connection builder: hyper-util's protocol-detecting one
/// (`auto`) waits for a connection's first bytes before its header-read timeout starts, so a
/// connection that sends nothing at all would be held for ever whenever hyper-util's `http2`
/// feature is on anywhere in the program.
///
/// ```no_run
/// # async fn run(router: axum::Router) -> std::io::Result<()> {
/// use std::time::Duration;
/// use subscribe_events::serve::{ServeLimits, serve};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let limits = ServeLimits::new(Duration::from_secs(10), 1024);
/// serve(listener, router, limits, std::future::pending()).await; // or a signal's future
/// # Ok(()) }
/// ```
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first, then a connection: over the limit, clients wait in the listen queue.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = axum::Extension(ConnectInfo(peer)).layer(router.clone());
        let service = TowerToHyperService::new(service);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.drain, graceful.shutdown()).await;
}
