//! [`RedisGrantLedger`].

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use redis::Script;
use subscribe_client::{
    Clock as _, GrantCounts, GrantKey, GrantLedger, GrantRecord, GrantScope, GrantStatus, LedgerError,
    MAX_HISTORY, PastGrant, Recorded, Reservation, Resolution, ReviewItem, Settlement, SharedClock,
    SystemClock,
};
use subscribe_types::OpenId;

use crate::{Redis, RedisError, from_millis, millis};

// Each grant is one field of the scope's `state` hash: `<S>|<attempts>|<until_ms>|<id>|<reason>`
// with S = P(ending), R(eserved), D(elivered), V (review), X (dropped). A grant under review
// keeps in place of `until_ms` when it was set aside (0 when set aside before that was kept). The scope's `pending`
// sorted set (all scores 0, ordered by openid) indexes the grants that are pending or reserved,
// so paging never walks used grants.
const PARSE: &str = r"
local function parse(v)
  return string.match(v, '^(%a)|(%d+)|(%d+)|([^|]*)|(.*)$')
end
";

// KEYS: state, pending, the grant's history list. ARGV: openid, now_ms, history length kept.
// A renewal appends the old life, `<S>|<attempts>|<renewed_ms>|<reason>`, to the history.
static RECORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PARSE}
local v = redis.call('HGET', KEYS[1], ARGV[1])
local result = 'added'
if v then
  local s, a, _, _, reason = parse(v)
  if s == 'P' or s == 'R' then return 'already' end
  result = 'renewed'
  redis.call('RPUSH', KEYS[3], s .. '|' .. a .. '|' .. ARGV[2] .. '|' .. reason)
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)
end
redis.call('HSET', KEYS[1], ARGV[1], 'P|0|0||')
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return result"
    ))
});

// ARGV: after ('' for the start), limit, now_ms. Walks the index until `limit` pending grants
// are found or it ends, skipping live reservations.
static PAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PARSE}
local limit, now = tonumber(ARGV[2]), tonumber(ARGV[3])
local start = '-'
if ARGV[1] ~= '' then start = '(' .. ARGV[1] end
local out = {{}}
while #out < limit do
  local chunk = redis.call('ZRANGEBYLEX', KEYS[2], start, '+', 'LIMIT', 0, 512)
  for _, id in ipairs(chunk) do
    local v = redis.call('HGET', KEYS[1], id)
    if v then
      local s, _, u = parse(v)
      if s == 'P' or (s == 'R' and tonumber(u) <= now) then
        out[#out + 1] = id
        if #out >= limit then break end
      end
    end
  end
  if #chunk < 512 then break end
  start = '(' .. chunk[#chunk]
end
return out"
    ))
});

// ARGV: openid, holder, now_ms, until_ms. Returns {id, attempt} or false.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PARSE}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local s, a, u = parse(v)
if not (s == 'P' or (s == 'R' and tonumber(u) <= tonumber(ARGV[3]))) then return false end
local attempt = tonumber(a) + 1
local id = ARGV[2] .. '-' .. redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], 'R|' .. attempt .. '|' .. ARGV[4] .. '|' .. id .. '|')
return {{id, attempt}}"
    ))
});

// ARGV: openid, reservation id, new state letter, reason, now_ms (kept for a review). Returns
// 1, 0 when the reservation is no longer the grant's current one, or -1 when the grant is not
// there at all: nothing deletes a recorded grant, so Redis lost it (a restart without
// persistence, a flush, an eviction).
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PARSE}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
local s, a, _, id = parse(v)
if s ~= 'R' or id ~= ARGV[2] then return 0 end
-- A release (a definite failure: nothing delivered) starts the attempts over.
if ARGV[3] == 'P' then a = '0' end
local since = '0'
if ARGV[3] == 'V' then since = ARGV[5] end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. '|' .. a .. '|' .. since .. '||' .. ARGV[4])
if ARGV[3] ~= 'P' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1"
    ))
});

// The grants under review, as {openid, attempts, since_ms, reason} each, in no order (Lua
// compares strings by the server's locale, not bytewise: the caller sorts by openid).
static REVIEWS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PARSE}
local out = {{}}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local s, a, u, _, reason = parse(all[i + 1])
  if s == 'V' then out[#out + 1] = {{all[i], a, u, reason}} end
end
return out"
    ))
});

// ARGV: openid, new state letter (D, P or X), note. A grant under review only: a release
// starts its attempts over and puts it back in the pending index, a drop keeps the note as its
// reason. Returns 1, or 0 (nothing changed) when the grant is not under review.
static RESOLVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PARSE}
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local s, a = parse(v)
if s ~= 'V' then return 0 end
local reason = ''
if ARGV[2] == 'P' then
  a = '0'
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
elseif ARGV[2] == 'X' then
  reason = ARGV[3]
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. a .. '|0||' .. reason)
return 1"
    ))
});

// ARGV: now_ms. Returns {pending, reserved, delivered, review, dropped}.
static COUNTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{PARSE}
local now = tonumber(ARGV[1])
local c = {{0, 0, 0, 0, 0}}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local s, _, u = parse(v)
  if s == 'P' or (s == 'R' and tonumber(u) <= now) then c[1] = c[1] + 1
  elseif s == 'R' then c[2] = c[2] + 1
  elseif s == 'D' then c[3] = c[3] + 1
  elseif s == 'V' then c[4] = c[4] + 1
  elseif s == 'X' then c[5] = c[5] + 1 end
end
return c"
    ))
});

/// Grants in Redis, shared by every instance and every dispatcher.
///
/// Keys per (app, template, scene), under one hash tag so they live on one cluster slot:
/// `<prefix>:grants:{<appid>/<template>/<scene>}:state` (a hash: openid → status),
/// `…:pending` (a sorted set of the grants not yet used, in openid order), `…:seq`
/// (reservation ids) and, for a grant renewed by a new confirmation, `…:history:<openid>` (a
/// list of its earlier lives, the last [`MAX_HISTORY`]). Every transition is one Lua script: two dispatchers never reserve the
/// same grant, and only the current reservation settles it. A reservation whose lease lapsed
/// (its sender crashed) is pending again; the lease is compared with the caller's clock.
/// A grant set aside for review is listed by [`reviews`](GrantLedger::reviews) and decided by
/// [`resolve`](GrantLedger::resolve), one script too, so no reservation, settlement or
/// renewal comes between its check and its change. There is no audit trail: the decision's
/// note is kept only as a dropped grant's reason.
///
/// Counting a scope reads its whole hash (`HVALS`), and so does listing its reviews: fine for
/// hundreds of thousands of grants, but not something to poll every second.
///
/// A settlement carries no time, so when a grant was set aside for review is read from the
/// ledger's clock: the system clock unless [`clock`](Self::clock) gives another.
///
/// The grants are only as durable as Redis keeps them: run it with AOF (`appendonly yes`;
/// `appendfsync always` loses nothing on a crash) and `maxmemory-policy noeviction`. A Redis
/// restarted without persistence (or flushed, or evicting) forgets every grant it held,
/// pending and delivered alike: nothing is sent again, nothing pending is sent at all, and a
/// reservation of a grant it forgot fails to settle with [`LedgerError::Forgotten`], so a
/// dispatch in progress reports the loss in its outcomes. Measured in `docs/reliability.md`
/// ("When the store fails mid-dispatch").
#[derive(Clone, Debug)]
pub struct RedisGrantLedger {
    redis: Redis,
    clock: SharedClock,
}

impl RedisGrantLedger {
    /// A ledger on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis, clock: Arc::new(SystemClock) }
    }

    /// Reads the time a grant is set aside for review from `clock` (the client's, when that is
    /// not the system's).
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    fn tag(scope: &GrantScope) -> String {
        format!("{{{}/{}/{}}}", scope.appid.as_str(), scope.template_id.as_str(), scope.scene.get())
    }

    fn keys(&self, scope: &GrantScope) -> [String; 3] {
        let tag = Self::tag(scope);
        ["state", "pending", "seq"].map(|k| self.redis.key(&["grants", &tag, k]))
    }

    /// The list of a grant's earlier lives, in its scope's hash slot.
    fn history_key(&self, key: &GrantKey) -> String {
        self.redis.key(&["grants", &Self::tag(&key.scope()), "history", key.openid.as_str()])
    }
}

impl From<RedisError> for LedgerError {
    /// A wrong URL or prefix and a stored value not in this crate's format fail the same way
    /// every time (`Unusable`: someone must act); the rest may pass later (`Backend`).
    fn from(e: RedisError) -> Self {
        if e.kind() == subscribe_client::ErrorKind::Configuration {
            LedgerError::unusable(e)
        } else {
            LedgerError::backend(e)
        }
    }
}

fn corrupt() -> LedgerError {
    RedisError::corrupt("grant").into()
}

/// A status letter (with the reservation's end and the reason) as a [`GrantStatus`].
fn status(letter: &str, until_ms: u64, reason: &str) -> Result<GrantStatus, LedgerError> {
    Ok(match letter {
        "P" => GrantStatus::Pending,
        "R" => GrantStatus::Reserved { until: from_millis(until_ms) },
        "D" => GrantStatus::Delivered,
        "V" => GrantStatus::Review { reason: reason.to_owned() },
        "X" => GrantStatus::Dropped { reason: reason.to_owned() },
        _ => return Err(corrupt()),
    })
}

/// One entry of a history list: `<S>|<attempts>|<renewed_ms>|<reason>`.
fn past(life: &str) -> Result<PastGrant, LedgerError> {
    let mut parts = life.splitn(4, '|');
    let mut next = || parts.next().ok_or_else(corrupt);
    let (s, attempts, renewed, reason) = (next()?, next()?, next()?, next()?);
    Ok(PastGrant {
        status: status(s, 0, reason)?,
        attempts: attempts.parse().map_err(|_| corrupt())?,
        renewed_at: from_millis(renewed.parse().map_err(|_| corrupt())?),
    })
}

#[async_trait::async_trait]
impl GrantLedger for RedisGrantLedger {
    async fn record(&self, key: &GrantKey, now: SystemTime) -> Result<Recorded, LedgerError> {
        let [state, pending, _] = self.keys(&key.scope());
        let mut c = self.redis.connection();
        let mut call = RECORD.key(state);
        call.key(pending)
            .key(self.history_key(key))
            .arg(key.openid.as_str())
            .arg(millis(now))
            .arg(MAX_HISTORY);
        let r: String = self.redis.run(call.invoke_async(&mut c)).await?;
        match r.as_str() {
            "added" => Ok(Recorded::Added),
            "already" => Ok(Recorded::AlreadyPending),
            "renewed" => Ok(Recorded::Renewed),
            _ => Err(corrupt()),
        }
    }

    async fn pending_page(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
        now: SystemTime,
    ) -> Result<Vec<OpenId>, LedgerError> {
        let [state, pending, _] = self.keys(scope);
        let mut c = self.redis.connection();
        let mut call = PAGE.key(state);
        call.key(pending).arg(after.map_or("", OpenId::as_str)).arg(limit.max(1)).arg(millis(now));
        let ids: Vec<String> = self.redis.run(call.invoke_async(&mut c)).await?;
        ids.into_iter().map(|id| OpenId::new(id).map_err(|_| corrupt())).collect()
    }

    async fn reserve(
        &self,
        key: &GrantKey,
        holder: &str,
        lease: Duration,
        now: SystemTime,
    ) -> Result<Option<Reservation>, LedgerError> {
        let [state, _, seq] = self.keys(&key.scope());
        // To the millisecond, as stored: the reservation and `get` must tell the same `until`.
        let until = from_millis(millis(now + lease));
        let mut c = self.redis.connection();
        let mut call = RESERVE.key(state);
        call.key(seq).arg(key.openid.as_str()).arg(holder).arg(millis(now)).arg(millis(until));
        let r: Option<(String, u32)> = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(r.map(|(id, attempt)| Reservation { key: key.clone(), id, until, attempt }))
    }

    async fn settle(&self, r: &Reservation, settlement: Settlement) -> Result<(), LedgerError> {
        let [state, pending, _] = self.keys(&r.key.scope());
        let (letter, reason) = match &settlement {
            Settlement::Delivered => ("D", ""),
            Settlement::Release => ("P", ""),
            Settlement::Review(why) => ("V", why.as_str()),
            Settlement::Drop(why) => ("X", why.as_str()),
            // `Settlement` is non-exhaustive: an unknown ending keeps the grant away from
            // automatic resending, like an unknown outcome.
            _ => ("V", "unknown settlement"),
        };
        let mut c = self.redis.connection();
        let mut call = SETTLE.key(state);
        call.key(pending)
            .arg(r.key.openid.as_str())
            .arg(&r.id)
            .arg(letter)
            .arg(reason)
            .arg(millis(self.clock.now()));
        let done: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        match done {
            1 => Ok(()),
            -1 => Err(LedgerError::Forgotten),
            _ => Err(LedgerError::LeaseLost),
        }
    }

    async fn get(&self, key: &GrantKey) -> Result<Option<GrantRecord>, LedgerError> {
        let [state, _, _] = self.keys(&key.scope());
        let mut c = self.redis.connection();
        let v: Option<String> = self
            .redis
            .run(redis::cmd("HGET").arg(state).arg(key.openid.as_str()).query_async(&mut c))
            .await?;
        let Some(v) = v else { return Ok(None) };
        let mut parts = v.splitn(5, '|');
        let mut next = || parts.next().ok_or_else(corrupt);
        let (s, attempts, until, _id, reason) = (next()?, next()?, next()?, next()?, next()?);
        let attempts: u32 = attempts.parse().map_err(|_| corrupt())?;
        let until: u64 = until.parse().map_err(|_| corrupt())?;
        let status = status(s, until, reason)?;
        let lives: Vec<String> = self
            .redis
            .run(redis::cmd("LRANGE").arg(self.history_key(key)).arg(0).arg(-1).query_async(&mut c))
            .await?;
        let history = lives.iter().map(|life| past(life)).collect::<Result<_, _>>()?;
        Ok(Some(GrantRecord { key: key.clone(), status, attempts, history }))
    }

    async fn counts(&self, scope: &GrantScope, now: SystemTime) -> Result<GrantCounts, LedgerError> {
        let [state, _, _] = self.keys(scope);
        let mut c = self.redis.connection();
        let mut call = COUNTS.key(state);
        call.arg(millis(now));
        let v: Vec<u64> = self.redis.run(call.invoke_async(&mut c)).await?;
        let [pending, reserved, delivered, review, dropped] = v[..] else { return Err(corrupt()) };
        let mut counts = GrantCounts::default();
        counts.pending = pending;
        counts.reserved = reserved;
        counts.delivered = delivered;
        counts.review = review;
        counts.dropped = dropped;
        Ok(counts)
    }

    async fn reviews(
        &self,
        scope: &GrantScope,
        after: Option<&OpenId>,
        limit: usize,
    ) -> Result<Vec<ReviewItem>, LedgerError> {
        let [state, _, _] = self.keys(scope);
        let mut c = self.redis.connection();
        let found: Vec<(String, String, String, String)> =
            self.redis.run(REVIEWS.key(state).invoke_async(&mut c)).await?;
        let after = after.map_or("", OpenId::as_str);
        let mut found: Vec<_> = found.into_iter().filter(|(openid, ..)| openid.as_str() > after).collect();
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found.truncate(limit.max(1));
        found
            .into_iter()
            .map(|(openid, attempts, since, reason)| {
                Ok(ReviewItem::new(
                    OpenId::new(openid).map_err(|_| corrupt())?,
                    reason,
                    attempts.parse().map_err(|_| corrupt())?,
                    from_millis(since.parse().map_err(|_| corrupt())?),
                ))
            })
            .collect()
    }

    async fn resolve(
        &self,
        key: &GrantKey,
        resolution: Resolution,
        note: &str,
        _now: SystemTime,
    ) -> Result<bool, LedgerError> {
        let letter = match resolution {
            Resolution::Delivered => "D",
            Resolution::Release => "P",
            Resolution::Drop => "X",
            // `Resolution` is non-exhaustive: a decision this ledger does not know changes
            // nothing, as for a grant that is not under review.
            _ => return Ok(false),
        };
        let [state, pending, _] = self.keys(&key.scope());
        let mut c = self.redis.connection();
        let mut call = RESOLVE.key(state);
        call.key(pending).arg(key.openid.as_str()).arg(letter).arg(note);
        let done: i64 = self.redis.run(call.invoke_async(&mut c)).await?;
        Ok(done == 1)
    }
}
