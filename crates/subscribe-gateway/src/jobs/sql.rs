//! [`SqlJobStore`]: jobs in a table of the token store's database (SQLite or PostgreSQL), on
//! its pool.

use std::future::Future;
use std::time::Duration;

use subscribe_client::async_trait;
use subscribe_sql::Sql;

use super::{Created, JobProgress, JobRecord, JobState, JobStore, JobStoreError, NewJob, millis};
use crate::idempotency::sql::{create_tables, on_pool};

/// The table. Its columns: `id`, `appid`, `scope`, `spec`, `created_by`, `created_ms`, `state`,
/// `cancel_requested` (0 or 1), `progress` (JSON), `ended_ms`, `detail`, `resumed`, and while
/// the job runs its holder: `owner` and `lease_until_ms`. Times are milliseconds since the Unix
/// epoch on the database's clock.
const TABLE: &str = "subscribe_gateway_jobs";

/// The columns a [`JobRecord`] is read from.
const COLUMNS: &str =
    "id, appid, spec, created_by, created_ms, state, cancel_requested, progress, ended_ms, detail, resumed";

type Row = (String, String, String, String, i64, String, i64, String, Option<i64>, Option<String>, i64);

/// An advisory lock key for creating the table on PostgreSQL (gateways starting at once).
const CREATE_LOCK: i64 = 0x7375_6267_775f_6a62; // "subgw_jb"

/// Dispatch jobs in the database of the gateway's `[store]` (SQLite or PostgreSQL), in the
/// table `subscribe_gateway_jobs` (created at start if missing), on the same pool as the
/// tokens: kept across restarts, and shared by every gateway on a PostgreSQL database.
///
/// - One live job per scope is a unique index on `scope` over the running rows: of concurrent
///   inserts the database lets one in.
/// - Renewing, ending, releasing and adopting are each one `UPDATE … WHERE` the row is still as
///   the step expects (held by its owner; or running, its lease ended).
/// - Leases are counted on the database's clock, never a gateway's.
#[derive(Clone, Debug)]
pub struct SqlJobStore {
    sql: Sql,
}

impl SqlJobStore {
    /// Jobs on `sql`, whose table is created if it is missing.
    ///
    /// # Errors
    /// When the table cannot be created.
    pub async fn open(sql: Sql) -> Result<Self, JobStoreError> {
        let store = Self { sql };
        store.create_table().await?;
        Ok(store)
    }

    async fn create_table(&self) -> Result<(), JobStoreError> {
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, appid TEXT NOT NULL, scope TEXT NOT NULL, \
                 spec TEXT NOT NULL, created_by TEXT NOT NULL, created_ms BIGINT NOT NULL, state TEXT NOT NULL, \
                 cancel_requested BIGINT NOT NULL, progress TEXT NOT NULL, ended_ms BIGINT, detail TEXT, \
                 resumed BIGINT NOT NULL, owner TEXT, lease_until_ms BIGINT)"
            ),
            format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_live ON {TABLE} (scope) WHERE state = 'running'"
            ),
            format!("CREATE INDEX IF NOT EXISTS {TABLE}_app ON {TABLE} (appid, id)"),
            format!(
                "CREATE INDEX IF NOT EXISTS {TABLE}_lease ON {TABLE} (lease_until_ms) WHERE state = 'running'"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {TABLE}_ended ON {TABLE} (ended_ms) WHERE state <> 'running'"
            ),
        ];
        self.run("create the jobs table", create_tables(&self.sql, CREATE_LOCK, &statements)).await
    }

    /// Runs one step under the handle's operation timeout.
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, JobStoreError> {
        JobStoreError::bounded(what, self.sql.op_timeout(), op).await
    }

    /// The id of the live job on `scope`.
    async fn live_on(&self, scope: &str) -> Result<Option<String>, JobStoreError> {
        self.run("read the live job of a scope", async {
            on_pool!(self.sql, |p, _now| {
                let sql = format!("SELECT id FROM {TABLE} WHERE scope = $1 AND state = 'running'");
                sqlx::query_scalar(&sql).bind(scope).fetch_optional(p).await
            })
        })
        .await
    }

    /// An `UPDATE … WHERE id = $1 AND owner = $2 AND state = 'running'`, setting `set` (whose
    /// parameters start at `$3`, bound by `bind`): whether it changed the row.
    async fn held_update(
        &self,
        what: &'static str,
        id: &str,
        owner: &str,
        set: &str,
        progress: &JobProgress,
        extra: Option<(&str, Option<&str>)>,
    ) -> Result<bool, JobStoreError> {
        let progress = progress.to_json();
        let rows = self
            .run(what, async {
                on_pool!(self.sql, |p, now| {
                    let set = set.replace("{now}", now);
                    let sql = format!(
                        "UPDATE {TABLE} SET progress = $3, {set} WHERE id = $1 AND owner = $2 AND state = 'running'"
                    );
                    let mut q = sqlx::query(&sql).bind(id).bind(owner).bind(progress.as_str());
                    if let Some((state, detail)) = extra {
                        q = q.bind(state).bind(detail);
                    }
                    q.execute(p).await.map(|r| r.rows_affected())
                })
            })
            .await?;
        Ok(rows == 1)
    }
}

fn record(row: Row) -> Result<JobRecord, JobStoreError> {
    let (id, appid, spec, created_by, created_ms, state, cancel, progress, ended_ms, detail, resumed) = row;
    let state =
        JobState::parse(&state).ok_or_else(|| JobStoreError::new("a stored job has an unknown state"))?;
    Ok(JobRecord {
        id,
        appid,
        spec,
        created_by,
        created_ms,
        state,
        cancel_requested: cancel != 0,
        progress: JobProgress::from_json(&progress)?,
        ended_ms,
        detail,
        resumed: u32::try_from(resumed).unwrap_or(u32::MAX),
    })
}

#[async_trait]
impl JobStore for SqlJobStore {
    fn call_limit(&self) -> Duration {
        self.sql.op_timeout()
    }

    async fn create(&self, job: &NewJob<'_>, lease: Duration) -> Result<Created, JobStoreError> {
        let progress = JobProgress::default().to_json();
        // A live job that ends between the refused insert and the read frees the scope: insert
        // again; twice is plenty.
        for _ in 0..3 {
            let inserted = self
                .run("insert a job", async {
                    on_pool!(self.sql, |p, now| {
                        let sql = format!(
                            "INSERT INTO {TABLE} (id, appid, scope, spec, created_by, created_ms, state, \
                             cancel_requested, progress, resumed, owner, lease_until_ms) \
                             VALUES ($1, $2, $3, $4, $5, {now}, 'running', 0, $6, 0, $7, {now} + $8)"
                        );
                        let q = sqlx::query(&sql).bind(job.id).bind(job.appid).bind(job.scope).bind(job.spec);
                        let q = q
                            .bind(job.created_by)
                            .bind(progress.as_str())
                            .bind(job.owner)
                            .bind(millis(lease));
                        match q.execute(p).await {
                            Ok(_) => Ok(true),
                            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                            Err(e) => Err(e),
                        }
                    })
                })
                .await?;
            if inserted {
                return Ok(Created::Created);
            }
            if let Some(live) = self.live_on(job.scope).await? {
                return Ok(Created::Busy(live));
            }
        }
        Err(JobStoreError::new("a scope's live job kept changing while a job was inserted"))
    }

    async fn get(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        let row: Option<Row> = self
            .run("read a job", async {
                on_pool!(self.sql, |p, _now| {
                    let sql = format!("SELECT {COLUMNS} FROM {TABLE} WHERE id = $1 AND appid = $2");
                    sqlx::query_as(&sql).bind(id).bind(appid).fetch_optional(p).await
                })
            })
            .await?;
        row.map(record).transpose()
    }

    async fn list(
        &self,
        appid: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobStoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<Row> = self
            .run("list jobs", async {
                on_pool!(self.sql, |p, _now| {
                    // Ids are hexadecimal of one length: they sort alike in every collation.
                    let below = if before.is_some() { "AND id < $3" } else { "" };
                    let sql = format!(
                        "SELECT {COLUMNS} FROM {TABLE} WHERE appid = $1 {below} ORDER BY id DESC LIMIT $2"
                    );
                    let mut q = sqlx::query_as(&sql).bind(appid).bind(limit);
                    if let Some(b) = before {
                        q = q.bind(b);
                    }
                    q.fetch_all(p).await
                })
            })
            .await?;
        rows.into_iter().map(record).collect()
    }

    async fn cancel(&self, appid: &str, id: &str) -> Result<Option<JobRecord>, JobStoreError> {
        self.run("ask a job to stop", async {
            on_pool!(self.sql, |p, _now| {
                let sql = format!(
                    "UPDATE {TABLE} SET cancel_requested = 1 WHERE id = $1 AND appid = $2 AND state = 'running'"
                );
                sqlx::query(&sql).bind(id).bind(appid).execute(p).await.map(|_| ())
            })
        })
        .await?;
        self.get(appid, id).await
    }

    async fn renew(
        &self,
        id: &str,
        owner: &str,
        progress: &JobProgress,
        lease: Duration,
    ) -> Result<Option<bool>, JobStoreError> {
        let progress = progress.to_json();
        let cancel: Option<i64> = self
            .run("renew a job's hold", async {
                on_pool!(self.sql, |p, now| {
                    let sql = format!(
                        "UPDATE {TABLE} SET progress = $3, lease_until_ms = {now} + $4 \
                         WHERE id = $1 AND owner = $2 AND state = 'running' RETURNING cancel_requested"
                    );
                    let q = sqlx::query_scalar(&sql).bind(id).bind(owner).bind(progress.as_str());
                    q.bind(millis(lease)).fetch_optional(p).await
                })
            })
            .await?;
        Ok(cancel.map(|c| c != 0))
    }

    async fn finish(
        &self,
        id: &str,
        owner: &str,
        end: JobState,
        progress: &JobProgress,
        detail: Option<&str>,
    ) -> Result<bool, JobStoreError> {
        let set = "state = $4, detail = $5, ended_ms = {now}, owner = NULL, lease_until_ms = NULL";
        self.held_update("end a job", id, owner, set, progress, Some((end.as_str(), detail))).await
    }

    async fn release(&self, id: &str, owner: &str, progress: &JobProgress) -> Result<bool, JobStoreError> {
        self.held_update("give a job up", id, owner, "lease_until_ms = {now}", progress, None).await
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
        let listed = (0..apps.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
        let row: Option<Row> = self
            .run("adopt a job", async {
                on_pool!(self.sql, |p, now| {
                    // The outer condition repeats the inner: of two gateways that picked the same
                    // row, the second's update finds it renewed and changes nothing.
                    let sql = format!(
                        "UPDATE {TABLE} SET owner = $1, lease_until_ms = {now} + $2, resumed = resumed + 1 \
                         WHERE id = (SELECT id FROM {TABLE} WHERE state = 'running' AND lease_until_ms <= {now} \
                         AND appid IN ({listed}) ORDER BY lease_until_ms LIMIT 1) \
                         AND state = 'running' AND lease_until_ms <= {now} RETURNING {COLUMNS}"
                    );
                    let mut q = sqlx::query_as(&sql).bind(owner).bind(millis(lease));
                    for app in apps {
                        q = q.bind(*app);
                    }
                    q.fetch_optional(p).await
                })
            })
            .await?;
        row.map(record).transpose()
    }

    async fn prune(&self, retention: Duration) -> Result<u64, JobStoreError> {
        self.run("delete ended jobs", async {
            on_pool!(self.sql, |p, now| {
                let sql = format!(
                    "DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE state <> 'running' \
                     AND ended_ms <= {now} - $1 ORDER BY ended_ms LIMIT $2)"
                );
                let batch = i64::try_from(super::PRUNE_BATCH).unwrap_or(500);
                sqlx::query(&sql)
                    .bind(millis(retention))
                    .bind(batch)
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
            })
        })
        .await
    }
}
