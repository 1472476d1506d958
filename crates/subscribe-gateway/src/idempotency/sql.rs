//! [`SqlIdempotencyStore`]: records in a table of the token store's database (SQLite or
//! PostgreSQL), on its pool.

use std::future::Future;
use std::time::Duration;

use subscribe_client::async_trait;
use subscribe_sql::Sql;

use super::{
    Claim, IdempotencyStore, IdempotencyStoreError, NewClaim, Record, RecordState, StoredAnswer, millis,
};

/// The table. Its columns: `id` (the record), `fingerprint`, `owner` (the claim's owner, `NULL`
/// once answered), `lease_until_ms` (the end of the claim's lease), `status` and `body` (the
/// answer), `expires_ms` (the end of the retention). Times are milliseconds since the Unix epoch
/// on the database's clock.
const TABLE: &str = "subscribe_gateway_idempotency";

/// The database's clock in milliseconds since the Unix epoch, as `subscribe-sql` reads it.
pub(crate) const PG_NOW_MS: &str = "(floor(extract(epoch from now()) * 1000)::bigint)";
/// julianday is a double: rounded, or a whole millisecond can come out as …999.
pub(crate) const LITE_NOW_MS: &str = "(CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))";

/// The most expired records one prune deletes per statement, so no statement holds the table
/// long; a prune repeats it while it fills a batch, up to [`PRUNE_BATCHES`] times.
const PRUNE_BATCH: i64 = 500;
const PRUNE_BATCHES: u32 = 200;

/// An advisory lock key for creating the table, so gateways starting at once on PostgreSQL do
/// not race in `CREATE TABLE IF NOT EXISTS` (which can fail on a concurrent create).
const CREATE_LOCK: i64 = 0x7375_6267_775f_6964; // "subgw_id"

/// Runs `$body` with `$p` bound to the pool and `$now` to the backend's clock expression.
macro_rules! on_pool {
    ($sql:expr, |$p:ident, $now:ident| $body:expr) => {{
        if let Some($p) = $sql.pg_pool() {
            let $now = $crate::idempotency::sql::PG_NOW_MS;
            $body
        } else if let Some($p) = $sql.sqlite_pool() {
            let $now = $crate::idempotency::sql::LITE_NOW_MS;
            $body
        } else {
            Err(sqlx::Error::Protocol("the Sql handle has neither pool".into()))
        }
    }};
}
pub(crate) use on_pool;

/// Runs `statements` (tables and indexes created if missing) on `sql`: on PostgreSQL in one
/// transaction under the advisory lock `lock`, so gateways starting at once do not race in
/// `CREATE … IF NOT EXISTS` (which can fail on a concurrent create).
pub(crate) async fn create_tables(sql: &Sql, lock: i64, statements: &[String]) -> Result<(), sqlx::Error> {
    if let Some(p) = sql.pg_pool() {
        let mut tx = p.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock).execute(&mut *tx).await?;
        for s in statements {
            sqlx::query(s).execute(&mut *tx).await?;
        }
        tx.commit().await
    } else if let Some(p) = sql.sqlite_pool() {
        for s in statements {
            sqlx::query(s).execute(p).await?;
        }
        Ok(())
    } else {
        Err(sqlx::Error::Protocol("the Sql handle has neither pool".into()))
    }
}

/// Idempotency records in the database of the gateway's `[store]` (SQLite or PostgreSQL), in the
/// table `subscribe_gateway_idempotency` (created at start if missing), on the same pool as the
/// tokens: kept across restarts, and shared by every gateway on a PostgreSQL database.
///
/// - A claim is one `INSERT … ON CONFLICT (id) DO UPDATE … WHERE` the row has expired: of
///   concurrent claims the database's unique key lets one in; the others read the row.
/// - Answering, releasing and taking over are each one `UPDATE` or `DELETE … WHERE` the row is
///   still in the state the step expects (its owner's; or claimed, its lease ended).
/// - Leases and retention are counted on the database's clock, never a gateway's.
/// - A prune deletes expired rows in batches of 500 through the index on their end.
#[derive(Clone, Debug)]
pub struct SqlIdempotencyStore {
    sql: Sql,
}

impl SqlIdempotencyStore {
    /// Records on `sql`, whose table is created if it is missing.
    ///
    /// # Errors
    /// When the table cannot be created.
    pub async fn open(sql: Sql) -> Result<Self, IdempotencyStoreError> {
        let store = Self { sql };
        store.create().await?;
        Ok(store)
    }

    async fn create(&self) -> Result<(), IdempotencyStoreError> {
        let table = format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, \
             owner TEXT, lease_until_ms BIGINT NOT NULL, status BIGINT, body TEXT, expires_ms BIGINT NOT NULL)"
        );
        let index = format!("CREATE INDEX IF NOT EXISTS {TABLE}_expires ON {TABLE} (expires_ms)");
        self.run("create the table", create_tables(&self.sql, CREATE_LOCK, &[table, index])).await
    }

    /// Runs one step under the handle's operation timeout.
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, IdempotencyStoreError> {
        IdempotencyStoreError::bounded(what, self.sql.op_timeout(), op).await
    }

    /// The live row `id`.
    async fn read(&self, id: &str) -> Result<Option<Record>, IdempotencyStoreError> {
        type Row = (String, i64, Option<i64>, Option<String>);
        let row: Option<Row> = self
            .run("read a record", async {
                on_pool!(self.sql, |p, now| {
                    let sql = format!(
                        "SELECT fingerprint, CAST(CASE WHEN lease_until_ms <= {now} THEN 1 ELSE 0 END AS BIGINT), \
                         status, body FROM {TABLE} WHERE id = $1 AND expires_ms > {now}"
                    );
                    sqlx::query_as(&sql).bind(id).fetch_optional(p).await
                })
            })
            .await?;
        let Some((fingerprint, lease_ended, status, body)) = row else { return Ok(None) };
        let state = match (status, body) {
            (Some(status), Some(body)) => {
                let status = u16::try_from(status)
                    .map_err(|_| IdempotencyStoreError::new("a stored status is not an HTTP status"))?;
                RecordState::Done(StoredAnswer::new(status, body))
            }
            _ => RecordState::InFlight { lease_ended: lease_ended != 0 },
        };
        Ok(Some(Record::new(fingerprint, state)))
    }
}

#[async_trait]
impl IdempotencyStore for SqlIdempotencyStore {
    fn call_limit(&self) -> Duration {
        self.sql.op_timeout()
    }

    async fn claim(&self, claim: &NewClaim<'_>) -> Result<Claim, IdempotencyStoreError> {
        // A row that disappears between the refused insert and the read (pruned, or released
        // by its owner) is claimed again; twice is plenty.
        for _ in 0..3 {
            let claimed: Option<String> = self
                .run("claim a record", async {
                    on_pool!(self.sql, |p, now| {
                        let sql = format!(
                            "INSERT INTO {TABLE} (id, fingerprint, owner, lease_until_ms, expires_ms) \
                             VALUES ($1, $2, $3, {now} + $4, {now} + $5) \
                             ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, \
                             owner = excluded.owner, lease_until_ms = excluded.lease_until_ms, \
                             status = NULL, body = NULL, expires_ms = excluded.expires_ms \
                             WHERE {TABLE}.expires_ms <= {now} RETURNING owner"
                        );
                        sqlx::query_scalar(&sql)
                            .bind(claim.id)
                            .bind(claim.fingerprint)
                            .bind(claim.owner)
                            .bind(millis(claim.lease))
                            .bind(millis(claim.retention))
                            .fetch_optional(p)
                            .await
                    })
                })
                .await?;
            if claimed.is_some() {
                return Ok(Claim::Claimed);
            }
            if let Some(record) = self.read(claim.id).await? {
                return Ok(Claim::Found(record));
            }
        }
        Err(IdempotencyStoreError::new("a record kept changing while it was claimed"))
    }

    async fn complete(
        &self,
        id: &str,
        owner: &str,
        answer: &StoredAnswer,
    ) -> Result<bool, IdempotencyStoreError> {
        let rows = self
            .run("store an answer", async {
                on_pool!(self.sql, |p, _now| {
                    let sql = format!(
                        "UPDATE {TABLE} SET owner = NULL, status = $3, body = $4 WHERE id = $1 AND owner = $2"
                    );
                    let q = sqlx::query(&sql).bind(id).bind(owner).bind(i64::from(answer.status));
                    q.bind(answer.body.as_str()).execute(p).await.map(|r| r.rows_affected())
                })
            })
            .await?;
        Ok(rows == 1)
    }

    async fn release(&self, id: &str, owner: &str) -> Result<bool, IdempotencyStoreError> {
        let rows = self
            .run("release a claim", async {
                on_pool!(self.sql, |p, _now| {
                    let sql = format!("DELETE FROM {TABLE} WHERE id = $1 AND owner = $2");
                    sqlx::query(&sql).bind(id).bind(owner).execute(p).await.map(|r| r.rows_affected())
                })
            })
            .await?;
        Ok(rows == 1)
    }

    async fn take_over(
        &self,
        id: &str,
        fingerprint: &str,
        answer: &StoredAnswer,
    ) -> Result<Option<Record>, IdempotencyStoreError> {
        self.run("take over a claim", async {
            on_pool!(self.sql, |p, now| {
                let sql = format!(
                    "UPDATE {TABLE} SET owner = NULL, status = $3, body = $4 WHERE id = $1 AND fingerprint = $2 \
                     AND owner IS NOT NULL AND lease_until_ms <= {now} AND expires_ms > {now}"
                );
                let q = sqlx::query(&sql).bind(id).bind(fingerprint).bind(i64::from(answer.status));
                q.bind(answer.body.as_str()).execute(p).await.map(|_| ())
            })
        })
        .await?;
        self.read(id).await
    }

    async fn prune(&self) -> Result<u64, IdempotencyStoreError> {
        let mut total = 0;
        for _ in 0..PRUNE_BATCHES {
            let deleted = self
                .run("prune records", async {
                    on_pool!(self.sql, |p, now| {
                        let sql = format!(
                            "DELETE FROM {TABLE} WHERE id IN (SELECT id FROM {TABLE} WHERE expires_ms <= {now} \
                             ORDER BY expires_ms LIMIT $1)"
                        );
                        sqlx::query(&sql).bind(PRUNE_BATCH).execute(p).await.map(|r| r.rows_affected())
                    })
                })
                .await?;
            total += deleted;
            if deleted < PRUNE_BATCH.unsigned_abs() {
                break;
            }
        }
        Ok(total)
    }
}
