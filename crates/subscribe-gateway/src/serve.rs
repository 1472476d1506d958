//! [`serve`]: the gateway's router on a listener, with hyper's header-read timeout and a bound
//! on connections, and a graceful stop. `axum::serve` has neither limit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;

/// How long a stop waits for requests in flight before dropping their connections.
const DRAIN: Duration = Duration::from_secs(10);

/// What a slow or greedy client may hold of the server.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ServeLimits {
    /// A connection that has not sent a request's headers by then is closed: one that sends
    /// nothing at all, one that trickles its headers, and an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
}

impl From<&ServerConfig> for ServeLimits {
    fn from(c: &ServerConfig) -> Self {
        Self { header_read_timeout: c.header_read_timeout, max_connections: c.max_connections }
    }
}

/// Serves `router` (HTTP/1.1) on `listener` until `shutdown` completes; then lets the
/// requests in flight finish (up to 10 s) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}
