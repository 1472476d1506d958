//! The operational keys: the rate limits (per API key, and of failed authentications per
//! peer), the proxies whose `X-Forwarded-For` is believed, and the metrics listener. Each is
//! checked here and refused with a [`ConfigError`] naming it.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use super::raw::RawServer;
use super::{ConfigError, invalid};

/// A rate limit: `per_second` requests a second on average, up to `burst` at once (a generic
/// cell rate, as `governor` counts it: a caller that waited long enough may send `burst`
/// requests back to back, then one every `1/per_second` seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rate {
    /// Requests a second, on average.
    pub per_second: NonZeroU32,
    /// Requests at once.
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_second` on average, `burst` at once.
    pub const fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self { per_second, burst }
    }
}

/// An API key's rate unless its `rate_per_second` and `burst` say otherwise: 50 requests a
/// second, 100 at once. Tokens are served from memory and a caller should keep one until it
/// expires, so a caller that needs more is polling.
pub const DEFAULT_KEY_RATE: Rate = Rate::new(nonzero(50), nonzero(100));

/// The rate of failed authentications (a missing or wrong key) one peer may make unless
/// `server.auth_failures_per_second` and `server.auth_failure_burst` say otherwise: one a
/// second, ten at once. Over it, the peer's requests are answered 429 before their key is
/// looked at.
pub const DEFAULT_AUTH_FAILURE_RATE: Rate = Rate::new(nonzero(1), nonzero(10));

/// `n`, which is not 0, as a `NonZeroU32` (in a constant).
const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

/// `{at}.{rate_key}` and `{at}.{burst_key}`, each defaulting to `default`'s, each more than 0.
pub(super) fn rate(
    at: &str,
    (rate_key, per_second): (&str, Option<u32>),
    (burst_key, burst): (&str, Option<u32>),
    default: Rate,
) -> Result<Rate, ConfigError> {
    let positive = |key: &str, v: Option<u32>, default: NonZeroU32| match v {
        None => Ok(default),
        Some(v) => NonZeroU32::new(v).ok_or_else(|| invalid(format!("{at}.{key}"), "more than 0")),
    };
    Ok(Rate::new(
        positive(rate_key, per_second, default.per_second)?,
        positive(burst_key, burst, default.burst)?,
    ))
}

/// What `[server]` says of operations: the metrics listener, the trusted proxies and the
/// rate of failed authentications per peer.
pub(super) struct ServerOps {
    pub(super) metrics_listen: Option<SocketAddr>,
    pub(super) trusted_proxies: Vec<IpAddr>,
    pub(super) auth_failure_rate: Rate,
}

pub(super) fn server_ops(raw: &RawServer, listen: SocketAddr) -> Result<ServerOps, ConfigError> {
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
        trusted_proxies.push(ip);
    }
    let auth_failure_rate = rate(
        "server",
        ("auth_failures_per_second", raw.auth_failures_per_second),
        ("auth_failure_burst", raw.auth_failure_burst),
        DEFAULT_AUTH_FAILURE_RATE,
    )?;
    Ok(ServerOps { metrics_listen, trusted_proxies, auth_failure_rate })
}
