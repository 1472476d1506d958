//! `subscribe-redis` against the real Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`).
//! These tests fail, never skip, when Redis is absent: `cargo xtask ci` checks for it first and
//! reports them as not run.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod clock;
mod contract;
mod fleet;
mod outage;

use std::sync::atomic::{AtomicU64, Ordering};

use subscribe_redis::Redis;

/// Wall-clock time: these tests run against real servers with the client's system clock.
#[allow(clippy::disallowed_methods)]
pub fn now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `redis://host…` without the password of `redis://user:password@host…`.
fn redacted(url: &str) -> String {
    match url
        .split_once("://")
        .and_then(|(scheme, rest)| rest.rsplit_once('@').map(|(_, host)| (scheme, host)))
    {
        Some((scheme, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    }
}

/// A connection with a prefix no other test (or run) uses.
pub async fn redis(name: &str) -> Redis {
    static N: AtomicU64 = AtomicU64::new(0);
    let prefix = format!("wxsub-test:{}:{}:{name}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    Redis::builder(redis_url())
        .prefix(prefix)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("Redis at {} is required: {e}", redacted(&redis_url())))
}
