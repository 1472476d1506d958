//! [`RedisUsedStates`].

use std::sync::LazyLock;
use std::time::SystemTime;

use redis::Script;
use subscribe_client::{AnswerDigest, Claim, StateUse, UsedStates, UsedStatesError};
use subscribe_types::Reserved;

use crate::{Redis, RedisError, key_lifetime_ms};

/// Sets the mark when there is none (`u|<digest>|<claim>|<claim end>`, unsealed and claimed
/// by `ARGV[3]` until Redis's clock plus `ARGV[4]` ms), with the lifetime `ARGV[2]` in
/// milliseconds: 0 the first use; 1 a retry by the answer that made the unsealed mark, which
/// holds no live claim but this one (the claim is taken, the mark's remaining lifetime kept);
/// 2 used by another answer; 3 sealed, by this answer; 4 in progress (another live claim). A
/// mark `u|<digest>` (released, or made before claims) holds no claim.
const MARK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = 'u|' .. ARGV[1]
local claimed = mine .. '|' .. ARGV[3] .. '|' .. string.format('%.0f', now + tonumber(ARGV[4]))
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], claimed, 'PX', ARGV[2])
  return 0
end
if cur == 's|' .. ARGV[1] then return 3 end
if cur ~= mine and string.sub(cur, 1, #mine + 1) ~= mine .. '|' then return 2 end
local holder, ends = string.match(cur, '^u|[^|]*|([^|]*)|(%d+)$')
if holder and holder ~= ARGV[3] and tonumber(ends) > now then return 4 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = 1 end
redis.call('SET', KEYS[1], claimed, 'PX', ttl)
return 1
";

/// Whether `cur` is the unsealed mark of the answer `d`, claimed or not.
const IS_MINE: &str = r"
local function is_mine(cur, d)
  if not cur then return false end
  local mine = 'u|' .. d
  return cur == mine or string.sub(cur, 1, #mine + 1) == mine .. '|'
end
";

/// Seals the mark of the answer `ARGV[1]` (`s|<digest>`), keeping its remaining lifetime.
static SEAL: LazyLock<String> = LazyLock::new(|| {
    IS_MINE.to_owned()
        + r"
if not is_mine(redis.call('GET', KEYS[1]), ARGV[1]) then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], 's|' .. ARGV[1], 'PX', ttl)
return 1
"
});

/// Ends the claim `ARGV[2]` on the mark of the answer `ARGV[1]` (back to `u|<digest>`),
/// keeping its remaining lifetime, if the mark still holds that claim.
const RELEASE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local mine = 'u|' .. ARGV[1]
if string.sub(cur, 1, #mine + #ARGV[2] + 2) ~= mine .. '|' .. ARGV[2] .. '|' then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
redis.call('SET', KEYS[1], mine, 'PX', ttl)
return 1
";

static MARK_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(MARK));
static SEAL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&SEAL));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE));

/// Used authorization states in Redis, shared by every instance: a replayed answer is refused
/// whichever instance it reaches. Each used state is one key, `<prefix>:state:<state>`, whose
/// value names the answer that used it (its [`AnswerDigest`], never the openid) and whether that
/// answer was accepted (sealed) or, unsealed, which completion holds a claim on it and until
/// when (by Redis's clock, `TIME`). Marking is one script, so the first use wins atomically,
/// and of the same answer's concurrent uses only one takes the claim; releasing and sealing
/// are one script each; the
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
        claim: &Claim,
        expires: SystemTime,
        now: SystemTime,
    ) -> Result<StateUse, UsedStatesError> {
        let mut c = self.redis.connection();
        // A state that expires within the millisecond still needs its mark for that long.
        let lifetime = key_lifetime_ms(expires, now);
        let mut call = MARK_SCRIPT.key(self.key(state));
        let claim_ms = u64::try_from(claim.period().as_millis()).unwrap_or(u64::MAX / 2).max(1);
        call.arg(by.as_str()).arg(lifetime).arg(claim.id()).arg(claim_ms);
        let found: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(match found {
            0 => StateUse::First,
            1 => StateUse::Retry,
            3 => StateUse::Accepted,
            4 => StateUse::InProgress,
            _ => StateUse::Used,
        })
    }

    async fn release(
        &self,
        state: &Reserved,
        by: &AnswerDigest,
        claim: &Claim,
    ) -> Result<(), UsedStatesError> {
        let mut c = self.redis.connection();
        let mut call = RELEASE_SCRIPT.key(self.key(state));
        call.arg(by.as_str()).arg(claim.id());
        let _: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(())
    }

    async fn seal(&self, state: &Reserved, by: &AnswerDigest) -> Result<(), UsedStatesError> {
        let mut c = self.redis.connection();
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
