//! [`RedisTokenStore`].

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use subscribe_client::{
    CachedToken, Clock as _, HoldOff, RefreshLease, SharedClock, SystemClock, TokenStore, TokenStoreError,
};
use subscribe_types::{AccessToken, AppId};

use crate::{Redis, RedisError, key_lifetime_ms};

/// Stored value: `<expires_at_ms>|<token>`, [`CachedToken::to_parts`]'s two values. The key
/// expires a minute after the token: `ARGV[3]` is that lifetime in milliseconds, computed on the
/// application's clock (never an instant read on Redis's clock, which may disagree with ours).
const SAVE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local exp = string.match(cur, '^(%d+)|')
  if exp and tonumber(exp) >= tonumber(ARGV[1]) then return cur end
end
local v = ARGV[1] .. '|' .. ARGV[2]
redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
return v
";

const INVALIDATE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^%d+|(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The lease key holds a holder's id, or a hold-off: `!holdoff|<reason>` with the pause as its
/// TTL. A live lease of another holder is left alone; a longer hold-off is not shortened.
const HOLD_OFF: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.sub(cur, 1, 9) == '!holdoff|' then
    if redis.call('PTTL', KEYS[1]) > tonumber(ARGV[2]) then return 0 end
  elseif cur ~= ARGV[1] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
";

const READ_HOLD_OFF: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, 9) ~= '!holdoff|' then return false end
return {redis.call('PTTL', KEYS[1]), string.sub(cur, 10)}
";

/// What marks a lease key's value as a hold-off (no holder id starts with it).
const HOLD_OFF_MARK: &str = "!holdoff|";
static SAVE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SAVE));
static HOLD_OFF_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HOLD_OFF));
static READ_HOLD_OFF_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(READ_HOLD_OFF));
static INVALIDATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INVALIDATE));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// The access token of each app in Redis, shared by every instance.
///
/// Keys: `<prefix>:token:<appid>` (the token and its expiry) and `<prefix>:token:<appid>:lease`
/// (who is refreshing, or the hold-off a failed refresher left). Saving keeps whichever token
/// expires later, invalidating removes only the rejected token, and the lease is `SET NX PX`,
/// released only by its holder: with the client's token manager, exactly one instance
/// refreshes while the others wait and read. A refresher that fails replaces its lease with a
/// hold-off whose TTL is the backoff, so no instance asks the token endpoint before it ends,
/// timed by Redis's clock rather than the instances'.
///
/// A token's key lives until a minute after the token expires, as a lifetime computed on the
/// store's clock (the system clock by default): give it the clock the client runs on with
/// [`clock`](Self::clock) when that is not the system's (a `ManualClock` in tests), so the
/// lifetime is measured from the same now that set the expiry.
#[derive(Clone, Debug)]
pub struct RedisTokenStore {
    redis: Redis,
    clock: SharedClock,
}

impl RedisTokenStore {
    /// A store on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis, clock: Arc::new(SystemClock) }
    }

    /// Reads now from `clock`: the clock the client that saves tokens runs on (its tokens'
    /// expiries are instants of that clock).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn token_key(&self, app: &AppId) -> String {
        self.redis.key(&["token", app.as_str()])
    }

    fn lease_key(&self, app: &AppId) -> String {
        self.redis.key(&["token", app.as_str(), "lease"])
    }
}

fn parse(v: &str) -> Result<CachedToken, RedisError> {
    let corrupt = || RedisError::corrupt("token");
    let (exp, token) = v.split_once('|').ok_or_else(corrupt)?;
    let exp: u64 = exp.parse().map_err(|_| corrupt())?;
    CachedToken::from_parts(token, exp).map_err(|_| corrupt())
}

#[async_trait::async_trait]
impl TokenStore for RedisTokenStore {
    async fn load(&self, app: &AppId) -> Result<Option<CachedToken>, TokenStoreError> {
        let mut c = self.redis.connection();
        let key = self.token_key(app);
        let v: Option<String> = self.redis.run(redis::cmd("GET").arg(&key).query_async(&mut c)).await?;
        Ok(v.as_deref().map(parse).transpose()?)
    }

    async fn save(&self, app: &AppId, token: &CachedToken) -> Result<CachedToken, TokenStoreError> {
        let mut c = self.redis.connection();
        let mut call = SAVE_SCRIPT.key(self.token_key(app));
        let (text, expires_ms) = token.to_parts();
        call.arg(expires_ms)
            .arg(text)
            .arg(key_lifetime_ms(token.expires_at() + Duration::from_secs(60), self.clock.now()));
        let v: String = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(parse(&v)?)
    }

    async fn invalidate(&self, app: &AppId, rejected: &AccessToken) -> Result<bool, TokenStoreError> {
        let mut c = self.redis.connection();
        let mut call = INVALIDATE_SCRIPT.key(self.token_key(app));
        call.arg(rejected.expose_secret());
        let removed: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(removed == 1)
    }

    fn refresh_lease(&self) -> Option<&dyn RefreshLease> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl RefreshLease for RedisTokenStore {
    async fn try_acquire_refresh_lease(
        &self,
        app: &AppId,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, TokenStoreError> {
        let mut c = self.redis.connection();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .redis
            .run(
                redis::cmd("SET")
                    .arg(self.lease_key(app))
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c),
            )
            .await?;
        Ok(set.is_some())
    }

    async fn release_refresh_lease(&self, app: &AppId, holder: &str) -> Result<(), TokenStoreError> {
        let mut c = self.redis.connection();
        let mut call = RELEASE_SCRIPT.key(self.lease_key(app));
        call.arg(holder);
        let _: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(())
    }

    async fn hold_off_refresh(
        &self,
        app: &AppId,
        holder: &str,
        pause: Duration,
        reason: &str,
    ) -> Result<(), TokenStoreError> {
        let reason = HoldOff::bounded_reason(reason);
        let mut c = self.redis.connection();
        let mut call = HOLD_OFF_SCRIPT.key(self.lease_key(app));
        let ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX).max(1);
        call.arg(holder).arg(ms).arg(format!("{HOLD_OFF_MARK}{reason}"));
        let _: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(())
    }

    async fn refresh_hold_off(&self, app: &AppId) -> Result<Option<HoldOff>, TokenStoreError> {
        let mut c = self.redis.connection();
        let call = READ_HOLD_OFF_SCRIPT.key(self.lease_key(app));
        let found: Option<(i64, String)> = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(found.and_then(|(ttl_ms, reason)| {
            // PTTL is -2 for a key that just expired, -1 for one without expiry (not ours).
            let ms = u64::try_from(ttl_ms).ok().filter(|ms| *ms > 0)?;
            Some(HoldOff { remaining: Duration::from_millis(ms), reason })
        }))
    }
}

impl From<RedisError> for TokenStoreError {
    fn from(e: RedisError) -> Self {
        TokenStoreError::new(e)
    }
}
