//! [`RedisReplayCache`].

use subscribe_events::replay::{ReplayCache, ReplayCacheError, ReplayKey};

use crate::{Redis, RedisError};

/// The longest lifetime given to a key, in milliseconds (about 146 years): Redis refuses a
/// `PX` that, added to its clock, overflows, and no push stays fresh for longer.
const MAX_LIFETIME_MS: u64 = 1 << 52;

/// The event pushes read, in Redis, shared by every instance: a push replayed to another
/// instance behind the load balancer is refused there too. Each push read is one key,
/// `<prefix>:replay:<appid>:<signature>` (the [`ReplayKey`], nothing secret: the signature is
/// in every push's query).
///
/// - A first sight is one command, `SET <key> 1 NX PX <lifetime>`: Redis sets the key only if
///   it is not there, so of concurrent first sights exactly one sets it.
/// - The lifetime is the key's [`expires_at`](ReplayKey::expires_at) less `now`, both on the
///   application's clock (the clock that checks the push's freshness), in milliseconds, never a
///   `PXAT` instant read on Redis's clock: a Redis clock ahead of ours cannot drop a key early.
///   Redis drops the key once it ends; there is nothing to sweep.
/// - [`forget`](ReplayCache::forget) deletes the key.
///
/// ```no_run
/// use std::sync::Arc;
/// use subscribe_events::axum::PushEndpoint;
/// use subscribe_events::{Mode, Push, PushConfig};
/// use subscribe_redis::{Redis, RedisReplayCache};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = Redis::builder("redis://127.0.0.1:6379").prefix("shop").connect().await?;
/// let push = Push::new(PushConfig::new("pushToken2026", "wx0123456789abcdef", Mode::Plain));
/// let endpoint = PushEndpoint::new(push, |_event| async { Ok::<(), std::io::Error>(()) })
///     .replay_cache(Arc::new(RedisReplayCache::new(redis)));
/// let app = endpoint.router();
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisReplayCache {
    redis: Redis,
}

impl RedisReplayCache {
    /// The replay cache on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, key: &ReplayKey) -> String {
        self.redis.key(&["replay", key.as_str()])
    }
}

#[async_trait::async_trait]
impl ReplayCache for RedisReplayCache {
    async fn first_sight(&self, key: &ReplayKey, now_unix: u64) -> Result<bool, ReplayCacheError> {
        let mut c = self.redis.connection();
        // At least a second (`lifetime` is never 0), however late the push is read.
        let lifetime = key.lifetime(now_unix).saturating_mul(1000).min(MAX_LIFETIME_MS);
        let mut set = redis::cmd("SET");
        set.arg(self.key(key)).arg(1).arg("NX").arg("PX").arg(lifetime);
        // `OK` when it was set, nil when the key was there.
        let set: Option<String> = self.redis.run(set.query_async(&mut c)).await?;
        Ok(set.is_some())
    }

    async fn forget(&self, key: &ReplayKey) -> Result<(), ReplayCacheError> {
        let mut c = self.redis.connection();
        let mut del = redis::cmd("DEL");
        del.arg(self.key(key));
        let _: i64 = self.redis.run(del.query_async(&mut c)).await?;
        Ok(())
    }
}

impl From<RedisError> for ReplayCacheError {
    fn from(e: RedisError) -> Self {
        ReplayCacheError::new(e)
    }
}
