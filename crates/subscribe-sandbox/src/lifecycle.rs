//! [`SandboxHandle`]: a sandbox serving on a port, and stopping it.

use std::net::SocketAddr;
use std::time::Duration;

use subscribe_events::serve::{ServeLimits, serve};

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
        // In-flight requests finish; a connection that will not finish is dropped after a while.
        let limits = ServeLimits::new(config.header_read_timeout, config.max_connections)
            .drain(Duration::from_secs(5));
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
