//! [`serve`]: an axum router on a listener the way a server open to the internet needs it (the
//! push endpoint's, the sandbox's, the gateway's): hyper's header-read timeout, a bound on
//! connections, and a graceful stop. `axum::serve` has neither limit.
//!
//! One peer (an IPv4 address, an IPv6 /64) may be held to fewer connections than the whole
//! ([`ServeLimits::per_peer`]), so a single host opening connections that send nothing cannot
//! take every slot while others wait.
//!
//! Each request carries its connection's peer address as axum's
//! [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo), as with `axum::serve` and
//! `into_make_service_with_connect_info`: limits per caller (the gateway's) read it.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    header_read_timeout: Duration,
    max_connections: usize,
    per_peer: usize,
    exempt: Arc<[IpAddr]>,
    drain: Duration,
}

/// The largest request head (request line and headers) taken: a larger one is answered 431.
/// Also hyper's read buffer per connection (its default is about 400 KiB), so a thousand
/// connections sending headers slowly hold about 128 MiB at most (hyper may read up to twice
/// the buffer before it looks), not 800. Bodies are read through the buffer in pieces,
/// whatever their size.
pub const MAX_READ_BUFFER: usize = 64 * 1024;

impl ServeLimits {
    /// A connection that has not sent a request's headers within `header_read_timeout` is
    /// closed (one that sends nothing at all, one that trickles its headers, an idle keep-alive
    /// connection); at most `max_connections` are served at once (at least one), more wait in
    /// the listen queue, and one peer may hold all of them (see [`ServeLimits::per_peer`]). A
    /// stop waits 10 s for the requests in flight.
    pub fn new(header_read_timeout: Duration, max_connections: usize) -> Self {
        let max_connections = max_connections.max(1);
        Self {
            header_read_timeout,
            max_connections,
            per_peer: max_connections,
            exempt: Arc::from([]),
            drain: Duration::from_secs(10),
        }
    }

    /// At most `per_peer` connections at once from one peer (an IPv4 address, or an IPv6
    /// address's /64, the block one host usually holds; at least one): a connection over it is
    /// closed as soon as it is accepted, before it holds a slot. The peers in `exempt` (a proxy
    /// in front, whose connections carry many callers) are held only to `max_connections`.
    /// A caller keeping a pool of connections larger than `per_peer` sees the extra ones
    /// closed: size it above the largest pool one host keeps.
    ///
    /// ```
    /// use std::time::Duration;
    /// use subscribe_events::serve::ServeLimits;
    /// let proxy = "10.0.0.2".parse().unwrap();
    /// let limits = ServeLimits::new(Duration::from_secs(5), 1024).per_peer(256, [proxy]);
    /// assert_eq!(limits.max_connections_per_peer(), 256);
    /// ```
    #[must_use]
    pub fn per_peer(mut self, per_peer: usize, exempt: impl IntoIterator<Item = IpAddr>) -> Self {
        self.per_peer = per_peer.clamp(1, self.max_connections);
        self.exempt = exempt.into_iter().map(canonical).collect();
        self
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

    /// The connections served at once from one peer that is not exempt.
    pub fn max_connections_per_peer(&self) -> usize {
        self.per_peer
    }
}

/// The address as it is compared: an IPv4-mapped IPv6 address as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The block a peer is counted by: an IPv4 address, or an IPv6 address's /64.
///
/// ```
/// use subscribe_events::serve::peer_block;
/// let a = peer_block("2001:db8:1:2:aaaa::1".parse().unwrap());
/// assert_eq!(a, peer_block("2001:db8:1:2:bbbb::9".parse().unwrap()));
/// assert_eq!(peer_block("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<std::net::IpAddr>().unwrap());
/// ```
pub fn peer_block(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// What a connection over its peer's limit is sent before it is closed (HTTP/1.1, whatever it
/// asked: it is not read).
const OVER_PER_PEER: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n\
Content-Type: text/plain\r\nContent-Length: 35\r\n\r\ntoo many connections from one peer\n";

/// The connections each peer holds now, and when a refusal was last logged.
#[derive(Default)]
struct PeerCounts {
    held: Mutex<HashMap<IpAddr, usize>>,
    warned: Mutex<Option<std::time::Instant>>,
}

impl PeerCounts {
    /// Whether a refusal is logged now: at most once a minute, so a flood cannot flood the log.
    fn warn_now(&self) -> bool {
        let mut last = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        let now = std::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(60)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Counts a connection of `peer`, or `None` when it holds `max` already.
    fn enter(self: &Arc<Self>, peer: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut counts = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counts.entry(peer).or_insert(0);
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(PeerSlot { counts: Arc::clone(self), peer })
    }
}

/// A connection counted for its peer until it is dropped.
struct PeerSlot {
    counts: Arc<PeerCounts>,
    peer: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&self.peer) {
            *held -= 1;
            if *held == 0 {
                counts.remove(&self.peer);
            }
        }
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
    let peers = Arc::new(PeerCounts::default());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_READ_BUFFER)
        .max_buf_size(MAX_READ_BUFFER);
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
        let block = peer_block(peer.ip());
        let exempt = limits.exempt.contains(&canonical(peer.ip()));
        let slot = if exempt || limits.per_peer >= limits.max_connections {
            None
        } else {
            let Some(slot) = peers.enter(block, limits.per_peer) else {
                // Answered 503 if the socket takes it now (never waiting for it), then closed,
                // the permit with it: it holds nothing while others wait.
                let _ = stream.try_write(OVER_PER_PEER);
                if peers.warn_now() {
                    tracing::warn!(
                        peer = %block,
                        per_peer = limits.per_peer,
                        "a peer over its connections: answered 503 and closed (logged at most once a minute)"
                    );
                }
                continue;
            };
            Some(slot)
        };
        let service = axum::Extension(ConnectInfo(peer)).layer(router.clone());
        let service = TowerToHyperService::new(service);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop((slot, permit));
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.drain, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    use super::*;

    /// Serves a router answering `GET /` with `ok` under `limits`; returns its address.
    async fn start(limits: ServeLimits) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, router, limits, std::future::pending()));
        addr
    }

    /// A connection to `addr` from the local address `from`.
    async fn connect(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind((from, 0).into()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// What a `GET /` on `conn` is answered within a second: `Some(answer)` once the server
    /// closed (an empty answer for a reset or a close without one), `None` when it did not.
    async fn ask(conn: &mut TcpStream) -> Option<String> {
        let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let mut answer = Vec::new();
        match tokio::time::timeout(Duration::from_secs(1), conn.read_to_end(&mut answer)).await {
            Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) => None,
        }
    }

    /// Whether a `GET /` on `conn` is answered `ok`.
    async fn served(conn: &mut TcpStream) -> bool {
        ask(conn).await.is_some_and(|a| a.starts_with("HTTP/1.1 200") && a.ends_with("ok"))
    }

    /// Whether `conn` is refused at once: answered 503, or closed without an answer.
    async fn refused(conn: &mut TcpStream) -> bool {
        ask(conn).await.is_some_and(|a| a.is_empty() || a.starts_with("HTTP/1.1 503"))
    }

    const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
    const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_over_its_connections_is_closed_at_once_while_another_is_served() {
        let addr = start(ServeLimits::new(Duration::from_secs(30), 4).per_peer(2, [])).await;
        // Two connections that send nothing hold the peer's two; the rest of its are closed
        // at once, long before the header-read timeout, and hold no slot.
        let silent = [connect(HOST, addr).await, connect(HOST, addr).await];
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..8 {
            assert!(refused(&mut connect(HOST, addr).await).await, "closed at once");
        }
        assert!(served(&mut connect(OTHER, addr).await).await, "another peer is served at once");
        assert!(served(&mut connect(OTHER, addr).await).await);
        // The peer's connections count again once they are gone.
        drop(silent);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(served(&mut connect(HOST, addr).await).await, "served again once its connections closed");
        assert!(served(&mut connect(HOST, addr).await).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exempt_peer_is_held_only_to_the_whole() {
        let addr = start(ServeLimits::new(Duration::from_secs(30), 8).per_peer(1, [IpAddr::V4(HOST)])).await;
        let _silent = [connect(HOST, addr).await, connect(HOST, addr).await];
        assert!(served(&mut connect(HOST, addr).await).await, "the proxy's third connection is served");
        // The limit holds for others.
        let _held = connect(OTHER, addr).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(refused(&mut connect(OTHER, addr).await).await, "another peer's second is refused at once");
    }

    #[test]
    fn the_limit_per_peer_is_at_least_one_and_at_most_the_whole() {
        let limits = ServeLimits::new(Duration::from_secs(1), 8);
        assert_eq!(limits.max_connections_per_peer(), 8, "no limit per peer unless asked");
        assert_eq!(limits.clone().per_peer(0, []).max_connections_per_peer(), 1);
        assert_eq!(limits.per_peer(100, []).max_connections_per_peer(), 8);
    }
}
