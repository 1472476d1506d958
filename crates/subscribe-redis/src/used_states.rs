//! [`RedisUsedStates`].

use std::sync::LazyLock;
use std::time::SystemTime;

use redis::Script;
use subscribe_client::{AnswerDigest, StateUse, UsedStates, UsedStatesError};
use subscribe_types::Reserved;

use crate::{Redis, RedisError, key_lifetime_ms};

/// Sets the mark (`u|<digest>`, unsealed) when there is none, with the lifetime in
/// milliseconds: 0 the first use, 1 a retry by the answer that made the unsealed mark, 2 used.
const MARK: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], 'u|' .. ARGV[1], 'PX', ARGV[2])
  return 0
end
if cur == 'u|' .. ARGV[1] then return 1 end
return 2
";

/// Seals the mark of the answer `ARGV[1]` (`s|<digest>`), keeping its remaining lifetime.
const SEAL: &str = r"
if redis.call('GET', KEYS[1]) ~= 'u|' .. ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], 's|' .. ARGV[1], 'PX', ttl)
return 1
";

static MARK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(MARK));
static SEAL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SEAL));

/// Used authorization states in Redis, shared by every instance: a replayed answer is refused
/// whichever instance it reaches. Each used state is one key, `<prefix>:state:<state>`, whose
/// value names the answer that used it (its [`AnswerDigest`], never the openid) and whether that
/// answer was accepted (sealed). Marking is one script, so the first use wins atomically; the
/// key is set with `PX <lifetime>` and disappears when the state would fail its own expiry
/// check anyway. The lifetime is the state's expiry less `now`, both on the application's clock
/// (the clock that checks the state's expiry), so a Redis clock ahead of ours cannot drop a
/// mark early. States are digits and hex only, so a key never holds anything but what the
/// client signed.
#[derive(Clone, Debug)]
pub struct RedisUsedStates {
    redis: Redis,
}

impl RedisUsedStates {
    /// Used states on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, state: &Reserved) -> String {
        self.redis.key(&["state", state.as_str()])
    }
}

#[subscribe_client::async_trait]
impl UsedStates for RedisUsedStates {
    async fn mark_used(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        let mut c = self.redis.conn.clone();
        // A state that expires within the millisecond still needs its mark for that long.
        let lifetime = key_lifetime_ms(expires, now);
        let mut call = MARK_SCRIPT.key(self.key(state));
        call.arg(by.as_str()).arg(lifetime);
        let found: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(match found {
            0 => StateUse::First,
            1 => StateUse::Retry,
            _ => StateUse::Used,
        })
    }

    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError> {
        let mut c = self.redis.conn.clone();
        let mut call = SEAL_SCRIPT.key(self.key(state));
        call.arg(by.as_str());
        let _: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(())
    }
}

impl From<RedisError> for UsedStatesError {
    fn from(e: RedisError) -> Self {
        UsedStatesError::new(e)
    }
}
