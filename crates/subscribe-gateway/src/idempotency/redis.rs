//! [`RedisIdempotencyStore`]: records as Redis hashes beside the tokens, on the same connection.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use subscribe_client::async_trait;
use subscribe_redis::Redis;

use super::{
    Claim, IdempotencyStore, IdempotencyStoreError, NewClaim, Record, RecordState, StoredAnswer, millis,
};

/// Redis's clock in milliseconds, and the reading of a record: `{'absent'}`, `{'done', fp,
/// status, body}` or `{'in_flight', fp, '1' when the lease has ended else '0'}`.
const COMMON: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function read(key)
  local r = redis.call('HMGET', key, 'fp', 'owner', 'lease', 'status', 'body')
  if not r[1] then return {'absent'} end
  if r[4] then return {'done', r[1], r[4], r[5] or ''} end
  local ended = '0'
  if tonumber(r[3]) <= now then ended = '1' end
  return {'in_flight', r[1], ended}
end
";

/// Claims `KEYS[1]` for the owner `ARGV[2]` of the request `ARGV[1]`, with a lease of `ARGV[3]`
/// ms and a lifetime of `ARGV[4]` ms, if the key does not exist; else reads it.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(COMMON.to_owned()
            + r"
if redis.call('EXISTS', KEYS[1]) == 1 then return read(KEYS[1]) end
local lease = string.format('%.0f', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'owner', ARGV[2], 'lease', lease)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {'claimed'}
"),
    )
});

/// Stores the answer (`ARGV[2]`, `ARGV[3]`) and ends the claim, if `ARGV[1]` holds it.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'body', ARGV[3])
redis.call('HDEL', KEYS[1], 'owner')
return 1
",
    )
});

/// Deletes the record if `ARGV[1]` holds its claim.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Stores the answer (`ARGV[2]`, `ARGV[3]`) if the record of the request `ARGV[1]` is claimed
/// and its lease has ended; then reads it.
static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(COMMON.to_owned()
            + r"
local r = redis.call('HMGET', KEYS[1], 'fp', 'owner', 'lease', 'status')
if r[1] == ARGV[1] and r[2] and not r[4] and tonumber(r[3]) <= now then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'body', ARGV[3])
  redis.call('HDEL', KEYS[1], 'owner')
end
return read(KEYS[1])
"),
    )
});

/// Idempotency records in the Redis of the gateway's `[store]`: one hash per record,
/// `<prefix>:gateway:idempotency:<id>`, on the token store's connection; shared by every
/// gateway on that Redis.
///
/// Each step is one Lua script, so it is atomic on the server: a claim creates the hash only if
/// it does not exist, an answer or a release is written only by the claim's owner, a take-over
/// only once the lease has ended (on Redis's clock, `TIME`). A record lives its retention as the
/// key's time to live: Redis forgets it, and [`prune`](IdempotencyStore::prune) has nothing to do.
#[derive(Clone, Debug)]
pub struct RedisIdempotencyStore {
    redis: Redis,
}

impl RedisIdempotencyStore {
    /// Records on `redis`, under its prefix.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    /// Redis's `maxmemory-policy`, as `INFO memory` tells it (`None` when it does not).
    /// Only `noeviction` keeps every record: the records carry a TTL, so the `volatile-*`
    /// policies evict them first, and the `allkeys-*` ones may.
    ///
    /// # Errors
    /// When Redis does not answer `INFO` (an ACL may forbid it).
    pub async fn eviction_policy(redis: &Redis) -> Result<Option<String>, IdempotencyStoreError> {
        let mut conn = redis.connection();
        let mut info = ::redis::cmd("INFO");
        info.arg("memory");
        let info = info.query_async::<String>(&mut conn);
        let info =
            IdempotencyStoreError::bounded("read Redis's INFO memory", redis.op_timeout(), info).await?;
        Ok(policy_in(&info).map(str::to_owned))
    }

    fn key(&self, id: &str) -> String {
        format!("{}:gateway:idempotency:{id}", self.redis.prefix())
    }

    /// Runs one script under the handle's operation timeout.
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, IdempotencyStoreError> {
        // The handle bounds the call (and replaces a connection that stopped answering);
        // twice its bound here is only a backstop.
        IdempotencyStoreError::bounded(what, self.redis.op_timeout() * 2, self.redis.bounded(op)).await
    }
}

/// The value of `maxmemory_policy` in an `INFO` answer.
fn policy_in(info: &str) -> Option<&str> {
    info.lines().find_map(|l| l.trim_end().strip_prefix("maxmemory_policy:"))
}

/// A reading made by a script.
fn record(reply: &[String]) -> Result<Option<Record>, IdempotencyStoreError> {
    let corrupt = || IdempotencyStoreError::new("a record in Redis is not in the format the gateway writes");
    match reply {
        [absent] if absent == "absent" => Ok(None),
        [done, fp, status, body] if done == "done" => {
            let status = status.parse().map_err(|_| corrupt())?;
            Ok(Some(Record::new(fp.clone(), RecordState::Done(StoredAnswer::new(status, body.clone())))))
        }
        [in_flight, fp, ended] if in_flight == "in_flight" => {
            Ok(Some(Record::new(fp.clone(), RecordState::InFlight { lease_ended: ended == "1" })))
        }
        _ => Err(corrupt()),
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    fn call_limit(&self) -> Duration {
        self.redis.op_timeout()
    }

    async fn claim(&self, claim: &NewClaim<'_>) -> Result<Claim, IdempotencyStoreError> {
        let mut conn = self.redis.connection();
        let mut call = CLAIM.key(self.key(claim.id));
        call.arg(claim.fingerprint).arg(claim.owner).arg(millis(claim.lease)).arg(millis(claim.retention));
        let reply: Vec<String> = self.run("claim a record", call.invoke_async(&mut conn)).await?;
        if reply.first().is_some_and(|r| r == "claimed") {
            return Ok(Claim::Claimed);
        }
        // The script read the key it found: it exists, so it is never absent here.
        record(&reply)?
            .map(Claim::Found)
            .ok_or_else(|| IdempotencyStoreError::new("a claimed record vanished"))
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, IdempotencyStoreError> {
        let mut conn = self.redis.connection();
        let mut call = COMPLETE.key(self.key(id));
        call.arg(owner).arg(answer.status).arg(&answer.body);
        let done: i64 = self.run("store an answer", call.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<bool, IdempotencyStoreError> {
        let mut conn = self.redis.connection();
        let mut call = RELEASE.key(self.key(id));
        call.arg(owner);
        let done: i64 = self.run("release a claim", call.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn take_over(
        &self,
        id: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
    ) -> Result<Option<Record>, IdempotencyStoreError> {
        let mut conn = self.redis.connection();
        let mut call = TAKE_OVER.key(self.key(id));
        call.arg(fingerprint).arg(answer.status).arg(&answer.body);
        let reply: Vec<String> = self.run("take over a claim", call.invoke_async(&mut conn)).await?;
        record(&reply)
    }

    async fn prune(&self) -> Result<u64, IdempotencyStoreError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::policy_in;

    #[test]
    fn the_policy_is_read_from_info_memory() {
        let info =
            "# Memory\r\nused_memory:1\r\nmaxmemory:0\r\nmaxmemory_policy:allkeys-lru\r\nlazyfree:0\r\n";
        assert_eq!(policy_in(info), Some("allkeys-lru"));
        assert_eq!(policy_in("# Memory\r\nused_memory:1\r\n"), None);
    }
}
