//! [`RedisOutbox`]: the outbox as Redis lists beside the tokens, on the same connection.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use subscribe_client::async_trait;
use subscribe_redis::Redis;

use super::{OutboxError, OutboxItem, OutboxStore};
use crate::jobs::millis;

/// Appends the event `ARGV[1]` (its key) with `ARGV[2]` (its body) to the list `KEYS[1]` with
/// the next number of `KEYS[2]`, unless its marker `KEYS[3]` is set (kept `ARGV[3]` ms): the
/// number.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local existing = redis.call('GET', KEYS[3])
if existing then return tonumber(existing) end
local seq = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[1], string.format('%d', seq) .. ' ' .. ARGV[1] .. ' ' .. ARGV[2])
redis.call('SET', KEYS[3], string.format('%d', seq), 'PX', ARGV[3])
return seq
",
    )
});

/// Deletes the lease `KEYS[1]` if `ARGV[1]` holds it.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// How long an event's marker is kept: the same event appended again within it is not kept
/// twice (waiting, or delivered less than [`super::KEPT_DELIVERED`] ago).
const MARKER: std::time::Duration = super::KEPT_DELIVERED;

/// Takes or renews the lease `KEYS[1]` for `ARGV[1]`, for `ARGV[2]` ms: 1 when held.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
",
    )
});

/// Removes the event numbered `ARGV[1]` from the list `KEYS[1]` (the oldest, in practice).
static REMOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix = ARGV[1] .. ' '
local head = redis.call('LINDEX', KEYS[1], 0)
if head and string.sub(head, 1, #prefix) == prefix then
  redis.call('LPOP', KEYS[1])
  return 1
end
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #prefix) == prefix then
    redis.call('LREM', KEYS[1], 1, item)
    return 1
  end
end
return 0
",
    )
});

/// The webhook outbox in the Redis of the gateway's `[store]`, on the token store's connection:
/// each app's events a list, `<prefix>:gateway:outbox:<appid>` (each item its number, its key and
/// its body, space-separated), numbered by `<prefix>:gateway:outbox:seq:<appid>`, each event's
/// key marked for an hour (`<prefix>:gateway:outbox:event:<appid>:<key>`: the same event
/// appended again is not kept twice); the delivery lease a key with a time to live,
/// `<prefix>:gateway:outbox:lease:<appid>`. Shared by every gateway on that
/// Redis; each step atomic (a script, or one command).
#[derive(Clone, Debug)]
pub struct RedisOutbox {
    redis: Redis,
}

impl RedisOutbox {
    /// The outbox on `redis`, under its prefix.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, what: &str, appid: &str) -> String {
        format!("{}:gateway:outbox:{what}{appid}", self.redis.prefix())
    }

    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, OutboxError> {
        // The handle bounds the call (and replaces a connection that stopped answering);
        // twice its bound here is only a backstop.
        OutboxError::bounded(what, self.redis.op_timeout() * 2, self.redis.bounded(op)).await
    }
}

#[async_trait]
impl OutboxStore for RedisOutbox {
    async fn append(&self, appid: &str, key: &str, body: &str) -> Result<u64, OutboxError> {
        if key.is_empty() || key.contains(' ') {
            return Err(OutboxError::new("an event's key is empty or holds a space"));
        }
        let mut conn = self.redis.connection();
        let mut call = APPEND.key(self.key("", appid));
        call.key(self.key("seq:", appid)).key(self.key("event:", &format!("{appid}:{key}")));
        call.arg(key).arg(body).arg(millis(MARKER));
        self.run("keep an event for the webhook", call.invoke_async(&mut conn)).await
    }

    async fn lease(&self, appid: &str, owner: &str, lease: Duration) -> Result<bool, OutboxError> {
        let mut conn = self.redis.connection();
        let mut call = LEASE.key(self.key("lease:", appid));
        call.arg(owner).arg(millis(lease));
        let held: i64 = self.run("take the webhook's delivery", call.invoke_async(&mut conn)).await?;
        Ok(held == 1)
    }

    async fn peek(&self, appid: &str, limit: usize) -> Result<Vec<OutboxItem>, OutboxError> {
        let mut conn = self.redis.connection();
        let last = i64::try_from(limit).unwrap_or(i64::MAX).saturating_sub(1);
        let mut call = ::redis::cmd("LRANGE");
        call.arg(self.key("", appid)).arg(0).arg(last);
        let items: Vec<String> = self.run("read the webhook's events", call.query_async(&mut conn)).await?;
        items
            .into_iter()
            .map(|item| {
                let corrupt =
                    || OutboxError::new("an outbox item in Redis is not in the format the gateway writes");
                let mut parts = item.splitn(3, ' ');
                let (Some(n), Some(key), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(corrupt());
                };
                Ok(OutboxItem::new(n.parse().map_err(|_| corrupt())?, key, body))
            })
            .collect()
    }

    async fn remove(&self, appid: &str, seq: u64) -> Result<bool, OutboxError> {
        let mut conn = self.redis.connection();
        let mut call = REMOVE.key(self.key("", appid));
        call.arg(seq);
        let done: i64 = self.run("remove a delivered event", call.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn release(&self, appid: &str, owner: &str) -> Result<(), OutboxError> {
        let mut conn = self.redis.connection();
        let mut call = RELEASE.key(self.key("lease:", appid));
        call.arg(owner);
        let _: i64 = self.run("give the webhook's delivery up", call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    async fn len(&self, appid: &str) -> Result<u64, OutboxError> {
        let mut conn = self.redis.connection();
        let mut call = ::redis::cmd("LLEN");
        call.arg(self.key("", appid));
        self.run("count the webhook's events", call.query_async(&mut conn)).await
    }
}
