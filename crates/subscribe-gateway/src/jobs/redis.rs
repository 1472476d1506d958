//! [`RedisJobStore`]: jobs as Redis hashes beside the tokens, on the same connection.

use std::collections::HashMap;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use subscribe_client::async_trait;
use subscribe_redis::Redis;

use super::{Created, JobProgress, JobRecord, JobState, JobStore, JobStoreError, NewJob, millis};

/// Redis's clock in milliseconds.
const NOW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// Inserts the job `KEYS[1]` (`ARGV`: id, appid, scope, spec, `created_by`, owner, lease ms,
/// progress) unless `KEYS[2]`, its scope's live job, is set; indexes it in its app's list
/// `KEYS[3]` and the leases `KEYS[4]`.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(NOW.to_owned()
            + r"
local live = redis.call('GET', KEYS[2])
if live then return {'busy', live} end
local lease = string.format('%.0f', now + tonumber(ARGV[7]))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'appid', ARGV[2], 'scope', ARGV[3], 'spec', ARGV[4], 'by', ARGV[5],
  'created', string.format('%.0f', now), 'state', 'running', 'cancel', '0', 'progress', ARGV[8],
  'resumed', '0', 'owner', ARGV[6], 'lease', lease)
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('ZADD', KEYS[4], lease, ARGV[1])
return {'created'}
"),
    )
});

/// Sets the stop flag of `KEYS[1]` if it runs.
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], 'state') == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') end
return 1
",
    )
});

/// Whether `ARGV[2]` holds the running job `KEYS[1]`.
const HELD: &str = r"
local function held()
  local r = redis.call('HMGET', KEYS[1], 'state', 'owner')
  return r[1] == 'running' and r[2] == ARGV[2]
end
";

/// Renews the hold of `ARGV[2]` on `KEYS[1]` (id `ARGV[1]`) for `ARGV[4]` ms with the progress
/// `ARGV[3]`, in the leases `KEYS[2]`: its stop flag, or -1 when it is not held.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(NOW.to_owned()
            + HELD
            + r"
if not held() then return -1 end
local lease = string.format('%.0f', now + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'progress', ARGV[3], 'lease', lease)
redis.call('ZADD', KEYS[2], lease, ARGV[1])
return tonumber(redis.call('HGET', KEYS[1], 'cancel'))
"),
    )
});

/// Ends `KEYS[1]` (id `ARGV[1]`) held by `ARGV[2]` as `ARGV[3]` with the progress `ARGV[4]`
/// and the detail `ARGV[5]` (none when empty); frees its scope (`ARGV[6]` is the live keys'
/// prefix), takes it out of the leases `KEYS[2]` and into the ended jobs `KEYS[3]`.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(NOW.to_owned()
            + HELD
            + r"
if not held() then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'progress', ARGV[4], 'ended', string.format('%.0f', now))
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'detail', ARGV[5]) end
redis.call('HDEL', KEYS[1], 'owner', 'lease')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], string.format('%.0f', now), ARGV[1])
local live = ARGV[6] .. redis.call('HGET', KEYS[1], 'scope')
if redis.call('GET', live) == ARGV[1] then redis.call('DEL', live) end
return 1
"),
    )
});

/// Ends the hold of `ARGV[2]` on `KEYS[1]` (id `ARGV[1]`) now, with the progress `ARGV[3]`.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(NOW.to_owned()
            + HELD
            + r"
if not held() then return 0 end
local lease = string.format('%.0f', now)
redis.call('HSET', KEYS[1], 'progress', ARGV[3], 'lease', lease)
redis.call('ZADD', KEYS[2], lease, ARGV[1])
return 1
"),
    )
});

/// Takes for `ARGV[1]`, for `ARGV[2]` ms, the first job in the leases `KEYS[1]` whose lease has
/// ended and whose app is one of `ARGV[4…]` (`ARGV[3]` is the jobs' key prefix): its id and its
/// fields, or nothing.
static ADOPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(NOW.to_owned()
            + r"
local apps = {}
for i = 4, #ARGV do apps[ARGV[i]] = true end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do
  local key = ARGV[3] .. id
  local r = redis.call('HMGET', key, 'state', 'appid')
  if r[1] ~= 'running' then
    redis.call('ZREM', KEYS[1], id)
  elseif apps[r[2]] then
    local lease = string.format('%.0f', now + tonumber(ARGV[2]))
    redis.call('HSET', key, 'owner', ARGV[1], 'lease', lease)
    redis.call('HINCRBY', key, 'resumed', 1)
    redis.call('ZADD', KEYS[1], lease, id)
    local reply = {id}
    for _, v in ipairs(redis.call('HGETALL', key)) do reply[#reply + 1] = v end
    return reply
  end
end
return {}
"),
    )
});

/// Deletes up to `ARGV[4]` jobs of the ended jobs `KEYS[1]` that ended more than `ARGV[1]` ms
/// ago (`ARGV[2]` is the jobs' key prefix, `ARGV[3]` the apps' lists' prefix): how many.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &(NOW.to_owned()
            + r"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  local key = ARGV[2] .. id
  local app = redis.call('HGET', key, 'appid')
  if app then redis.call('ZREM', ARGV[3] .. app, id) end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"),
    )
});

/// Dispatch jobs in the Redis of the gateway's `[store]`, on the token store's connection:
/// one hash per job, `<prefix>:gateway:job:<id>`; `<prefix>:gateway:jobs:live:<scope>` names the
/// live job of a scope, `<prefix>:gateway:jobs:app:<appid>` lists an app's jobs,
/// `<prefix>:gateway:jobs:leases` orders the live ones by the end of their lease and
/// `<prefix>:gateway:jobs:ended` the ended ones by their end (for [`prune`](JobStore::prune)). Shared by
/// every gateway on that Redis.
///
/// Each step is one Lua script, atomic on the server: an insert only while the scope has no live
/// job, a renewal, an end or a release only by the holder, an adoption only once the lease has
/// ended (on Redis's clock, `TIME`). Ended jobs are kept until pruned (they carry no time to
/// live, so that `noeviction` keeps them as it keeps everything else).
#[derive(Clone, Debug)]
pub struct RedisJobStore {
    redis: Redis,
}

impl RedisJobStore {
    /// Jobs on `redis`, under its prefix.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:gateway:{rest}", self.redis.prefix())
    }

    fn job(&self, id: &str) -> String {
        self.key(&format!("job:{id}"))
    }

    fn leases(&self) -> String {
        self.key("jobs:leases")
    }

    /// Runs one call under the handle's operation timeout.
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, JobStoreError> {
        // The handle bounds the call (and replaces a connection that stopped answering);
        // twice its bound here is only a backstop.
        JobStoreError::bounded(what, self.redis.op_timeout() * 2, self.redis.bounded(op)).await
    }

    /// The job `id`, whatever its app.
    async fn read(&self, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        let mut conn = self.redis.connection();
        let mut call = ::redis::cmd("HGETALL");
        call.arg(self.job(id));
        let fields: HashMap<String, String> = self.run("read a job", call.query_async(&mut conn)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        record(id, &fields).map(Some)
    }
}

/// A job read from its hash.
fn record(id: &str, f: &HashMap<String, String>) -> Result<JobRecord, JobStoreError> {
    let corrupt = || JobStoreError::new("a job in Redis is not in the format the gateway writes");
    let text = |name: &str| f.get(name).cloned().ok_or_else(corrupt);
    let number = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok()).ok_or_else(corrupt);
    Ok(JobRecord {
        id: id.to_owned(),
        appid: text("appid")?,
        spec: text("spec")?,
        created_by: text("by")?,
        created_ms: number("created")?,
        state: JobState::parse(&text("state")?).ok_or_else(corrupt)?,
        cancel_requested: text("cancel")? == "1",
        progress: JobProgress::from_json(&text("progress")?)?,
        ended_ms: f.get("ended").and_then(|v| v.parse().ok()),
        detail: f.get("detail").cloned(),
        resumed: u32::try_from(number("resumed")?).unwrap_or(u32::MAX),
    })
}

#[async_trait]
impl JobStore for RedisJobStore {
    fn call_limit(&self) -> Duration {
        self.redis.op_timeout()
    }

    async fn create(&self, job: &NewJob<'_>, lease: Duration) -> Result<Created, JobStoreError> {
        let mut conn = self.redis.connection();
        let mut call = CREATE.key(self.job(job.id));
        call.key(self.key(&format!("jobs:live:{}", job.scope)))
            .key(self.key(&format!("jobs:app:{}", job.appid)))
            .key(self.leases());
        call.arg(job.id).arg(job.appid).arg(job.scope).arg(job.spec).arg(job.created_by).arg(job.owner);
        call.arg(millis(lease)).arg(JobProgress::default().to_json());
        let reply: Vec<String> = self.run("insert a job", call.invoke_async(&mut conn)).await?;
        match reply.as_slice() {
            [created] if created == "created" => Ok(Created::Created),
            [busy, id] if busy == "busy" => Ok(Created::Busy(id.clone())),
            _ => Err(JobStoreError::new("Redis answered a job's insert in an unknown format")),
        }
    }

    async fn get(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        Ok(self.read(id).await?.filter(|j| j.appid == appid))
    }

    async fn list(
        &self,
        appid: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobStoreError> {
        let mut conn = self.redis.connection();
        let mut call = ::redis::cmd("ZREVRANGEBYLEX");
        let max = before.map_or_else(|| "+".to_owned(), |b| format!("({b}"));
        call.arg(self.key(&format!("jobs:app:{appid}"))).arg(max).arg("-").arg("LIMIT").arg(0).arg(limit);
        let ids: Vec<String> = self.run("list jobs", call.query_async(&mut conn)).await?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(job) = self.get(appid, &id).await? {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    async fn cancel(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        if self.get(appid, id).await?.is_none() {
            return Ok(None);
        }
        let mut conn = self.redis.connection();
        let call = CANCEL.key(self.job(id));
        let _: i64 = self.run("ask a job to stop", call.invoke_async(&mut conn)).await?;
        self.get(appid, id).await
    }

    async fn renew(
        &self,
        id: &str,
        owner: &str,
        progress: &JobProgress,
        lease: Duration,
    ) -> Result<Option<bool>, JobStoreError> {
        let mut conn = self.redis.connection();
        let mut call = RENEW.key(self.job(id));
        call.key(self.leases()).arg(id).arg(owner).arg(progress.to_json()).arg(millis(lease));
        let cancel: i64 = self.run("renew a job's hold", call.invoke_async(&mut conn)).await?;
        Ok((cancel >= 0).then_some(cancel == 1))
    }

    async fn finish(
        &self,
        id: &str,
        owner: &str,
        end: JobState,
        progress: &JobProgress,
        detail: Option<&str>,
    ) -> Result<bool, JobStoreError> {
        let mut conn = self.redis.connection();
        let mut call = FINISH.key(self.job(id));
        call.key(self.leases()).key(self.key("jobs:ended"));
        call.arg(id).arg(owner).arg(end.as_str()).arg(progress.to_json());
        call.arg(detail.unwrap_or_default()).arg(self.key("jobs:live:"));
        let done: i64 = self.run("end a job", call.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn release(&self, id: &str, owner: &str, progress: &JobProgress) -> Result<bool, JobStoreError> {
        let mut conn = self.redis.connection();
        let mut call = RELEASE.key(self.job(id));
        call.key(self.leases()).arg(id).arg(owner).arg(progress.to_json());
        let done: i64 = self.run("give a job up", call.invoke_async(&mut conn)).await?;
        Ok(done == 1)
    }

    async fn adopt(
        &self,
        owner: &str,
        lease: Duration,
        apps: &[&str],
    ) -> Result<Option<JobRecord>, JobStoreError> {
        if apps.is_empty() {
            return Ok(None);
        }
        let mut conn = self.redis.connection();
        let mut call = ADOPT.key(self.leases());
        call.arg(owner).arg(millis(lease)).arg(self.key("job:"));
        for app in apps {
            call.arg(*app);
        }
        let reply: Vec<String> = self.run("adopt a job", call.invoke_async(&mut conn)).await?;
        let Some((id, fields)) = reply.split_first() else { return Ok(None) };
        let fields: HashMap<String, String> =
            fields.chunks(2).filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone()))).collect();
        record(id, &fields).map(Some)
    }

    async fn prune(&self, retention: Duration) -> Result<u64, JobStoreError> {
        let mut conn = self.redis.connection();
        let mut call = PRUNE.key(self.key("jobs:ended"));
        call.arg(millis(retention)).arg(self.key("job:")).arg(self.key("jobs:app:")).arg(super::PRUNE_BATCH);
        let deleted: u64 = self.run("delete ended jobs", call.invoke_async(&mut conn)).await?;
        Ok(deleted)
    }
}
