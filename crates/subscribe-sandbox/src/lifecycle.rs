//! [`SandboxHandle`]: a sandbox serving on a port, and stopping it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::clock::SharedSandboxClock;
use crate::config::SandboxConfig;
use crate::server::{SandboxState, router_with_clock};

/// A running sandbox. Dropping it stops the server.
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    state: SandboxState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}
impl SandboxHandle {
    /// Starts `config` on `127.0.0.1` and an ephemeral port.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(config: SandboxConfig) -> std::io::Result<Self> {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts `config` on `addr`.
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start_on(config: SandboxConfig, addr: SocketAddr) -> std::io::Result<Self> {
        Self::start_with_clock(config, addr, std::sync::Arc::new(crate::SystemClock)).await
    }

    /// Starts `config` on `addr`, reading time from `clock` (a [`ManualClock`](crate::ManualClock)
    /// moves token expiry and WeChat's days forward without waiting).
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start_with_clock(
        config: SandboxConfig,
        addr: SocketAddr,
        clock: SharedSandboxClock,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let limits = Limits {
            header_read_timeout: config.header_read_timeout,
            max_connections: config.max_connections,
        };
        let (app, state) = router_with_clock(config, clock);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, app, limits, async {
            let _ = rx.await;
        }));
        Ok(Self { addr, state, shutdown: Some(tx), task: Some(task) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the API base and the authorization page base at once.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state, for assertions and control without HTTP.
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Runs until the server stops (for the `wxsub sandbox` command).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
/// What a slow or greedy client may hold.
#[derive(Clone, Copy, Debug)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown`, with hyper's header-read timeout (which also
/// ends idle keep-alive connections) and at most `max_connections` connections at once: a
/// slowloris client cannot hold the server. `axum::serve` has neither.
async fn serve(listener: TcpListener, app: axum::Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
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
                    tracing::warn!(error = %e, "sandbox: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    // In-flight requests finish; a connection that will not finish is dropped after a while.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
