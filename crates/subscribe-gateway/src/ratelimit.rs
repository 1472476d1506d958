//! Rate limits (`governor`'s GCRA): each API key its own rate, and each peer a rate of failed
//! authentications. Both answer 429 with `Retry-After`.
//!
//! - **Per key.** Each key has a limiter of its own (a lock-free cell), so a key over its rate
//!   slows no other key.
//! - **Per peer, failures only.** A missing or wrong key costs its peer one cell; a peer out of
//!   cells is answered 429 **before its key is hashed**, until a cell is back. Valid keys
//!   spend no cell, so callers on one address are not limited together. The peer is the TCP
//!   peer; behind a proxy that is the proxy, and then a flood through the proxy shuts out every
//!   caller behind it, unless the proxy is listed in `server.trusted_proxies` (its
//!   `X-Forwarded-For` then names the peer; from anyone else the header is ignored, since a
//!   client can write anything into it). IPv6 peers are counted by their /64, the block one
//!   host usually holds; at most [`MAX_TRACKED_PEERS`] apart, then together.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use subscribe_events::serve::{canonical, peer_block};
use tracing::debug;

use crate::Gateway;
use crate::api::{Refusal, error};
use crate::config::Rate;
use crate::gateway::Shared;
use crate::keys::{Key, Keys};

/// How often the per-peer records of peers that have recovered are dropped.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The most peers whose failures are counted apart. IPv6 hands one host millions of /64s: a
/// flood from a fresh block per request would otherwise grow the records without end (and
/// each purge with them). Past this, until a purge makes room, the failures of every peer
/// are counted together under [`OVERFLOW`]: a wrong key is then answered 429 once that shared
/// count is out of cells, after its key was hashed (a peer is refused before hashing only on
/// its own count), and valid keys are served as always. The records stay a few MiB.
const MAX_TRACKED_PEERS: usize = 65_536;

/// The count every peer's failures share while [`MAX_TRACKED_PEERS`] are counted apart: `::1`,
/// which no peer is counted as (an IPv6 peer is its /64, whose last 64 bits are 0; `::1`
/// itself is counted as `::`), so no caller is refused for the shared count before its key
/// is looked at.
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);

/// How soon a full table is purged again (a purge reads every record).
const PURGE_FULL_EVERY: Duration = Duration::from_secs(1);

fn quota(rate: Rate) -> Quota {
    // The period is at least a microsecond (the fastest rate configuration takes).
    Quota::with_period(rate.period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(rate.burst)
}

/// An API key's limiter.
pub(crate) struct KeyLimiter {
    limiter: DefaultDirectRateLimiter,
    rate: Rate,
}

impl KeyLimiter {
    pub(crate) fn new(rate: Rate) -> Self {
        Self { limiter: RateLimiter::direct(quota(rate)), rate }
    }

    /// Takes a cell, or tells how long until one is back.
    fn check(&self) -> Result<(), Duration> {
        self.limiter.check().map_err(|not_until| wait(&not_until))
    }
}

impl fmt::Debug for KeyLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLimiter").field("rate", &self.rate).finish_non_exhaustive()
    }
}

fn wait(not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// The peers' rate of failed authentications.
pub(crate) struct PeerLimits {
    trusted_proxies: Vec<IpAddr>,
    /// [`MAX_TRACKED_PEERS`], smaller in tests.
    max_tracked: usize,
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// Peers out of cells, and until when: their requests are refused before their key is
    /// hashed (governor has no look without taking a cell, so its refusal is remembered here).
    blocked: Mutex<Blocked>,
}

struct Blocked {
    until: HashMap<IpAddr, Instant>,
    purged: Instant,
}

impl fmt::Debug for PeerLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerLimits").field("trusted_proxies", &self.trusted_proxies).finish_non_exhaustive()
    }
}

impl PeerLimits {
    pub(crate) fn new(rate: Rate, trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            trusted_proxies,
            max_tracked: MAX_TRACKED_PEERS,
            failures: RateLimiter::keyed(quota(rate)),
            blocked: Mutex::new(Blocked { until: HashMap::new(), purged: Instant::now() }),
        }
    }

    fn blocked(&self) -> MutexGuard<'_, Blocked> {
        self.blocked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer a request is counted for: its TCP peer, or what a trusted proxy says of it;
    /// `None` when the server gave no peer address (see [`crate::serve`]).
    fn peer(&self, request: &Request) -> Option<IpAddr> {
        let tcp = request.extensions().get::<ConnectInfo<SocketAddr>>()?.0.ip();
        Some(peer_block(self.client_ip(tcp, request.headers())))
    }

    /// `peer`, or when `peer` is a trusted proxy, the nearest address in `X-Forwarded-For`
    /// (read from the right, each proxy having appended the address it was called from) that
    /// is not a trusted proxy. An entry that is not an address ends the walk.
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.contains(&canonical(*ip));
        if !trusted(&peer) {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev().map(|h| h.trim()) {
            let Some(ip) =
                hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
            else {
                break;
            };
            client = ip;
            if !trusted(&ip) {
                break;
            }
        }
        client
    }

    /// How long `peer` is still refused, if it is.
    fn refused_for(&self, peer: IpAddr) -> Option<Duration> {
        let mut blocked = self.blocked();
        let until = *blocked.until.get(&peer)?;
        let now = Instant::now();
        if until > now {
            return Some(until - now);
        }
        blocked.until.remove(&peer);
        None
    }

    /// Whether as many peers as are counted apart are in either record.
    fn full(&self, blocked: &Blocked) -> bool {
        self.failures.len() >= self.max_tracked || blocked.until.len() >= self.max_tracked
    }

    /// Records a failed authentication of `peer`: `Some(wait)` when it has no cell left (its
    /// own, or while the table is full, the cells every peer shares).
    fn failed(&self, peer: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut blocked = self.blocked();
        let since = now.duration_since(blocked.purged);
        if since >= PURGE_EVERY || (self.full(&blocked) && since >= PURGE_FULL_EVERY) {
            self.failures.retain_recent();
            self.failures.shrink_to_fit();
            blocked.until.retain(|_, until| *until > now);
            blocked.until.shrink_to_fit();
            blocked.purged = now;
        }
        let counted = if self.full(&blocked) { OVERFLOW } else { peer };
        let wait = wait(&self.failures.check_key(&counted).err()?);
        // The shared count refuses failures only: nobody is refused before its key for it.
        if counted != OVERFLOW {
            blocked.until.insert(counted, now + wait);
        }
        Some(wait)
    }
}

/// 429 `code` with `Retry-After` in whole seconds (rounded up, at least 1).
pub(crate) fn too_many(wait: Duration, code: &str, message: &str) -> Response {
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, code, message);
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

/// The layer in front of every route that needs a key: refuses a peer out of failed
/// authentications (429, its key not hashed), a missing or wrong key (401, a failure for its
/// peer), and a key over its rate (429); lets every other request through.
pub(crate) async fn admit(State(gw): State<Gateway>, request: Request, next: Next) -> Response {
    match gate(&gw.shared, &request, Keys::authenticate) {
        Ok(_) => next.run(request).await,
        Err(refused) => *refused,
    }
}

/// The checks in front of a keyed request, in order: the peer over its failed authentications
/// (429, before its key is hashed), the key as `find` reads it from the headers (401, counted
/// as a failure of the peer), the key over its rate (429). The key, or the answer.
pub(crate) fn gate<'a>(
    shared: &'a Shared,
    request: &Request,
    find: impl FnOnce(&'a Keys, &HeaderMap) -> Option<&'a Key>,
) -> Result<&'a Key, Box<Response>> {
    let peer = shared.peers.peer(request);
    if let Some(wait) = peer.and_then(|p| shared.peers.refused_for(p)) {
        shared.metrics.rate_limited("peer");
        return Err(Box::new(too_many(
            wait,
            "rate_limited",
            "too many failed authentications from this address",
        )));
    }
    let Some(key) = find(&shared.keys, request.headers()) else {
        if let Some(wait) = peer.and_then(|p| shared.peers.failed(p)) {
            debug!(peer = ?peer, "a peer is over its rate of failed authentications");
            shared.metrics.rate_limited("peer");
            return Err(Box::new(too_many(
                wait,
                "rate_limited",
                "too many failed authentications from this address",
            )));
        }
        return Err(Box::new(Refusal::Unauthorized.into_response()));
    };
    if let Err(wait) = key.limiter.check() {
        debug!(key = %key.name, "an API key is over its rate");
        shared.metrics.rate_limited("key");
        return Err(Box::new(too_many(
            wait,
            "rate_limited",
            "this API key is over its rate; retry after Retry-After seconds",
        )));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate::per_second(NonZeroU32::new(per_second).unwrap(), NonZeroU32::new(burst).unwrap())
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let limits = PeerLimits::new(rate(1, 1), vec![proxy]);
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        // From the proxy: the nearest untrusted hop, not the leftmost (a client writes that).
        assert_eq!(limits.client_ip(proxy, &forwarded("198.51.100.1, 203.0.113.7")), client);
        assert_eq!(limits.client_ip(proxy, &forwarded("203.0.113.7, 10.0.0.2")), client);
        assert_eq!(limits.client_ip(proxy, &forwarded("203.0.113.7:4711")), client);
        assert_eq!(limits.client_ip(proxy, &forwarded("not-an-address")), proxy);
        assert_eq!(limits.client_ip(proxy, &HeaderMap::new()), proxy);
        // From anyone else the header is ignored.
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(limits.client_ip(other, &forwarded("203.0.113.7")), other);
    }

    #[test]
    fn ipv6_peers_share_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_block(a), peer_block(b));
        assert_ne!(peer_block(a), peer_block(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(peer_block(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn past_the_most_peers_counted_apart_every_failure_is_counted_together() {
        // One cell an hour: nothing comes back, and no purge drops a record, during the test.
        let hourly = Rate { period: Duration::from_secs(3600), burst: NonZeroU32::new(2).unwrap() };
        let mut limits = PeerLimits::new(hourly, Vec::new());
        limits.max_tracked = 4;
        // A flood from a fresh /64 per request: each counted apart until the table is full.
        let block = |i: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, i, 0, 0, 0, 1));
        for i in 0..4 {
            assert_eq!(limits.failed(block(i)), None);
        }
        assert_eq!(limits.failures.len(), 4);
        // Then together: the shared count runs out of cells after its burst, however many
        // blocks the failures come from, and the table does not grow past one more.
        assert_eq!(limits.failed(block(4)), None);
        assert_eq!(limits.failed(block(5)), None);
        assert!(limits.failed(block(6)).is_some(), "the shared count is out of cells");
        assert!(limits.failed(block(1000)).is_some());
        assert!(limits.failures.len() <= 5, "{}", limits.failures.len());
        // A peer is refused before its key is hashed only on its own count: the callers that
        // met the shared count, and IPv6 loopback (`::1` is counted as `::`), still have their
        // keys looked at (and a valid one is served).
        for peer in [block(6), block(1000), peer_block("::1".parse().unwrap())] {
            assert_eq!(limits.refused_for(peer), None, "{peer}");
        }
    }

    #[test]
    fn a_peer_out_of_failures_is_refused_until_a_cell_is_back() {
        let limits = PeerLimits::new(rate(1, 2), Vec::new());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert_eq!(limits.failed(a), None);
        assert_eq!(limits.failed(a), None);
        let wait = limits.failed(a).expect("the third failure is over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limits.refused_for(a).is_some(), "refused before its next key is looked at");
        assert_eq!(limits.refused_for(b), None, "another peer is not");
        assert_eq!(limits.failed(b), None);
    }

    #[test]
    fn a_key_over_its_burst_waits_and_retry_after_is_whole_seconds() {
        let key = KeyLimiter::new(rate(1, 3));
        for _ in 0..3 {
            assert_eq!(key.check(), Ok(()));
        }
        let wait = key.check().unwrap_err();
        let r = too_many(wait, "rate_limited", "over");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "1");
        let r = too_many(Duration::from_millis(1500), "rate_limited", "over");
        assert_eq!(r.headers()[RETRY_AFTER], "2");
    }
}
