//! `HyperTransport`'s connection pool: at most one connection per send in flight.
//!
//! hyper-util's pooled client (and reqwest, built on it) opens a connection whenever a request
//! finds none idle, racing the connection a finished request is about to hand back (the
//! hand-back runs in a task of its own, after the caller already has its answer): a sender that
//! keeps N requests in flight opens up to 1.5 N connections, and with a cap on idle connections
//! it closes and reopens them all batch long. Here a connection goes back to its host's idle
//! stack before `send` returns, and a new one is opened only when none is idle, so the
//! connections a host ever holds at once are at most the sends that were in flight at once.
//! The connections are hyper's own (`hyper::client::conn::http1`); this keeps only the idle
//! stacks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

/// How long a pooled connection may take to be ready for its next request.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// A connection to a host, ready to take a request when it is checked out.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

/// A host connections are kept for: the scheme, the host in lower case and the port, so that
/// `HOST`, `host:443` and `user@host` share their connections with `host`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Host {
    https: bool,
    name: String,
    port: u16,
}

impl Host {
    /// The host of an `http` or `https` URI.
    pub(crate) fn of(uri: &http::Uri) -> Option<Self> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let authority: &Authority = uri.authority()?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        Some(Self { https, name: authority.host().to_ascii_lowercase(), port })
    }

    /// `Host`'s value: the host, and the port unless it is the scheme's default.
    pub(crate) fn header(&self) -> Result<http::HeaderValue, crate::TransportError> {
        let default = if self.https { 443 } else { 80 };
        let value =
            if self.port == default { self.name.clone() } else { format!("{}:{}", self.name, self.port) };
        http::HeaderValue::try_from(value)
            .map_err(|e| crate::TransportError::new(crate::TransportErrorKind::InvalidRequest, e))
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The idle connections of every host, newest last (the newest is reused first, so the oldest
/// are the ones that idle out when fewer are needed).
pub(crate) struct Pool {
    idle: Mutex<HashMap<Host, Vec<Idle>>>,
    max_idle_per_host: usize,
    idle_timeout: Duration,
    reaper: std::sync::Once,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle: usize =
            self.idle.lock().unwrap_or_else(PoisonError::into_inner).values().map(Vec::len).sum();
        f.debug_struct("Pool")
            .field("idle", &idle)
            .field("max_idle_per_host", &self.max_idle_per_host)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(max_idle_per_host: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_host,
            idle_timeout,
            reaper: std::sync::Once::new(),
        })
    }

    /// An idle connection to `host` that is still open and ready, if there is one. Those that
    /// idled out or were closed by the server meanwhile are dropped on the way.
    pub(crate) async fn checkout(&self, host: &Host) -> Option<Sender> {
        loop {
            let idle = {
                let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                map.get_mut(host)?.pop()?
            };
            if idle.since.elapsed() >= self.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Its last answer was read whole, so it is ready as soon as its task has seen that;
            // a connection the server closed meanwhile fails here, and one that stays busy (a
            // server that answered before reading the whole request, then stalls) is dropped
            // after a while rather than holding the send until its timeout.
            if let Ok(Ok(())) = tokio::time::timeout(READY_WITHIN, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Hands `sender` back after its answer was read whole, unless it is closed or the host
    /// already keeps as many idle connections as allowed.
    pub(crate) fn put(self: &Arc<Self>, host: &Host, sender: Sender) {
        if sender.is_closed() || self.max_idle_per_host == 0 {
            return;
        }
        self.start_reaper();
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let stack = match map.get_mut(host) {
            Some(stack) => stack,
            None => map.entry(host.clone()).or_default(),
        };
        if stack.len() < self.max_idle_per_host {
            stack.push(Idle { sender, since: Instant::now() });
        }
    }

    /// Closes the connections that idled out, now and then, for as long as the pool lives: an
    /// idle connection nobody checks out again would otherwise stay open until the server
    /// closes it.
    fn start_reaper(self: &Arc<Self>) {
        self.reaper.call_once(|| {
            let pool: Weak<Self> = Arc::downgrade(self);
            let every = (self.idle_timeout / 2).max(Duration::from_secs(1));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(pool) = pool.upgrade() else { return };
                    pool.close_idled_out();
                }
            });
        });
    }

    fn close_idled_out(&self) {
        let mut map = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        for stack in map.values_mut() {
            stack.retain(|idle| idle.since.elapsed() < self.idle_timeout && !idle.sender.is_closed());
        }
        map.retain(|_, stack| !stack.is_empty());
    }
}
