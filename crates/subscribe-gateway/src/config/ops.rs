//! The operational keys: the rate limits (per API key, and of failed authentications per
//! peer), the proxies whose `X-Forwarded-For` is believed, and the metrics listener. Each is
//! checked here and refused with a [`ConfigError`] naming it.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use super::raw::RawServer;
use super::{ConfigError, invalid};

/// A rate limit: one request earned every `period` on average, up to `burst` at once (a
/// generic cell rate, as `governor` counts it: a caller that waited long enough may send
/// `burst` requests back to back, then one every `period`). Configured as requests a second,
/// which may be a fraction (`0.1`: one every ten seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rate {
    /// The time to earn one request.
    pub period: Duration,
    /// Requests at once.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_second` requests a second on average, `burst` at once.
    pub const fn per_second(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { period: Duration::from_nanos(1_000_000_000 / per_second.get() as u64), burst }
    }

    /// Requests a second, on average.
    pub fn requests_per_second(&self) -> f64 {
        1.0 / self.period.as_secs_f64()
    }
}

/// An API key's rate unless its `rate_per_second` and `burst` say otherwise: 50 requests a
/// second, 100 at once. Tokens are served from memory and a caller should keep one until it
/// expires, so a caller that needs more is polling.
pub const DEFAULT_KEY_RATE: Rate = Rate::per_second(nonzero(50), nonzero(100));

/// The rate of failed authentications (a missing or wrong key) one peer may make unless
/// `server.auth_failures_per_second` and `server.auth_failure_burst` say otherwise: one a
/// second, ten at once. Over it, the peer's requests are answered 429 before their key is
/// looked at.
pub const DEFAULT_AUTH_FAILURE_RATE: Rate = Rate::per_second(nonzero(1), nonzero(10));

/// The slowest rate taken: one request an hour.
const SLOWEST_PER_SECOND: f64 = 1.0 / 3600.0;
/// The fastest rate taken: a million requests a second (a limit that never bites).
const FASTEST_PER_SECOND: f64 = 1_000_000.0;

/// `n`, which is not 0, as a `NonZeroU32` (in a constant).
const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// `{at}.{rate_key}` (requests a second, a fraction allowed, from one an hour to a million a
/// second) and `{at}.{burst_key}` (more than 0), each defaulting to `default`'s.
pub(super) fn rate(
    at: &str,
    (rate_key, per_second): (&str, Option<f64>),
    (burst_key, burst): (&str, Option<u32>),
    default: Rate,
) -> Result<Rate, ConfigError> {
    let period = match per_second {
        None => default.period,
        Some(r) if r.is_finite() && (SLOWEST_PER_SECOND..=FASTEST_PER_SECOND).contains(&r) => {
            Duration::from_secs_f64(1.0 / r)
        }
        Some(_) => {
            return Err(invalid(
                format!("{at}.{rate_key}"),
                "requests a second, from one an hour (0.000278) to 1000000; a fraction such as 0.5 is one every two seconds",
            ));
        }
    };
    let burst = match burst {
        None => default.burst,
        Some(v) => NonZeroU32::new(v).ok_or_else(|| invalid(format!("{at}.{burst_key}"), "more than 0"))?,
    };
    Ok(Rate { period, burst })
}

/// The connections one peer may hold at once unless `server.max_connections_per_peer` says
/// otherwise (or `server.max_connections`, when that is fewer).
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;

/// What `[server]` says of operations: the metrics listener, the trusted proxies, the rate of
/// failed authentications per peer and the connections one peer may hold.
pub(super) struct ServerOps {
    pub(super) max_connections_per_peer: usize,
    pub(super) metrics_listen: Option<SocketAddr>,
    pub(super) trusted_proxies: Vec<IpAddr>,
    pub(super) auth_failure_rate: Rate,
}

/// `max_connections`: the server's bound, already checked.
pub(super) fn server_ops(
    raw: &RawServer,
    listen: SocketAddr,
    max_connections: usize,
) -> Result<ServerOps, ConfigError> {
    let max_connections_per_peer = match raw.max_connections_per_peer {
        None => DEFAULT_MAX_CONNECTIONS_PER_PEER.min(max_connections),
        Some(n) if (1..=max_connections).contains(&n) => n,
        Some(_) => {
            return Err(invalid(
                "server.max_connections_per_peer",
                "more than 0 and at most `server.max_connections`",
            ));
        }
    };
    let metrics_listen = match &raw.metrics_listen {
        None => None,
        Some(addr) => {
            let addr: SocketAddr = addr.parse().map_err(|_| {
                invalid("server.metrics_listen", "an IP address and a port, such as \"127.0.0.1:9700\"")
            })?;
            if addr == listen && addr.port() != 0 {
                return Err(invalid(
                    "server.metrics_listen",
                    "another address or port than `server.listen`: the metrics have a listener of their own",
                ));
            }
            Some(addr)
        }
    };
    let mut trusted_proxies = Vec::new();
    for (i, proxy) in raw.trusted_proxies.iter().flatten().enumerate() {
        let ip: IpAddr = proxy.trim().parse().map_err(|_| {
            invalid(
                format!("server.trusted_proxies[{i}]"),
                "an IP address, such as \"10.0.0.2\" (one proxy each; ranges are not taken)",
            )
        })?;
        // As the peers are compared: an IPv4-mapped address as IPv4.
        trusted_proxies.push(subscribe_events::serve::canonical(ip));
    }
    let auth_failure_rate = rate(
        "server",
        ("auth_failures_per_second", raw.auth_failures_per_second),
        ("auth_failure_burst", raw.auth_failure_burst),
        DEFAULT_AUTH_FAILURE_RATE,
    )?;
    Ok(ServerOps { max_connections_per_peer, metrics_listen, trusted_proxies, auth_failure_rate })
}
