//! [`SqlOutbox`]: the outbox in two tables of the token store's database (SQLite or
//! PostgreSQL), on its pool.

use std::future::Future;
use std::time::Duration;

use subscribe_client::async_trait;
use subscribe_sql::Sql;

use super::{OutboxError, OutboxItem, OutboxStore};
use crate::idempotency::sql::{create_tables, on_pool};
use crate::jobs::millis;

/// The events: `appid`, `seq` (the app's), `event_key` (the event's identity), `body`, and
/// `delivered_ms` once delivered (the row kept an hour more, for its key).
const TABLE: &str = "subscribe_gateway_outbox";
/// Each app's last sequence number: `appid`, `last`.
const COUNTERS: &str = "subscribe_gateway_outbox_counters";
/// Each app's delivery lease: `appid`, `owner`, `lease_until_ms` (the database's clock).
const LEASES: &str = "subscribe_gateway_outbox_leases";

/// An advisory lock key for creating the tables on PostgreSQL (gateways starting at once).
const CREATE_LOCK: i64 = 0x7375_6267_775f_6f62; // "subgw_ob"

/// The webhook outbox in the database of the gateway's `[store]` (SQLite or PostgreSQL), in the
/// tables `subscribe_gateway_outbox`, `subscribe_gateway_outbox_counters` and
/// `subscribe_gateway_outbox_leases` (created at start if missing): kept across restarts, and
/// shared by every gateway on a PostgreSQL database. An event is appended in one transaction
/// that first moves its app's counter row: appends of one app wait for each other there, so
/// numbers commit in order and a reader never sees a later one before an earlier one (a
/// database sequence would hand out numbers at insert and let them commit in any order). The
/// lease is one upsert that takes the row only from its own holder or once its lease has ended.
#[derive(Clone, Debug)]
pub struct SqlOutbox {
    sql: Sql,
}

impl SqlOutbox {
    /// The outbox on `sql`, whose tables are created if they are missing.
    ///
    /// # Errors
    /// When the tables cannot be created.
    pub async fn open(sql: Sql) -> Result<Self, OutboxError> {
        let store = Self { sql };
        store.create().await?;
        Ok(store)
    }

    async fn create(&self) -> Result<(), OutboxError> {
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (appid TEXT NOT NULL, seq BIGINT NOT NULL, event_key TEXT NOT NULL, \
                 body TEXT NOT NULL, delivered_ms BIGINT, PRIMARY KEY (appid, seq), UNIQUE (appid, event_key))"
            ),
            format!("CREATE INDEX IF NOT EXISTS {TABLE}_delivered ON {TABLE} (appid, delivered_ms)"),
            format!("CREATE TABLE IF NOT EXISTS {COUNTERS} (appid TEXT PRIMARY KEY, last BIGINT NOT NULL)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {LEASES} (appid TEXT PRIMARY KEY, owner TEXT NOT NULL, \
                 lease_until_ms BIGINT NOT NULL)"
            ),
        ];
        self.run("create the outbox tables", create_tables(&self.sql, CREATE_LOCK, &statements)).await
    }

    /// The waiting event `key` of `appid`'s number.
    async fn waiting(&self, appid: &str, key: &str) -> Result<Option<i64>, OutboxError> {
        self.run("read a kept event", async {
            on_pool!(self.sql, |p, _now| {
                let sql = format!("SELECT seq FROM {TABLE} WHERE appid = $1 AND event_key = $2");
                sqlx::query_scalar(&sql).bind(appid).bind(key).fetch_optional(p).await
            })
        })
        .await
    }

    async fn run<T>(
        &self,
        what: &'static str,
        op: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, OutboxError> {
        OutboxError::bounded(what, self.sql.op_timeout(), op).await
    }
}

fn seq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

#[async_trait]
impl OutboxStore for SqlOutbox {
    async fn append(&self, appid: &str, key: &str, body: &str) -> Result<u64, OutboxError> {
        // The same event appended at once twice: the second insert meets the first's key.
        for _ in 0..3 {
            if let Some(n) = self.waiting(appid, key).await? {
                return Ok(seq(n));
            }
            let counter = format!(
                "INSERT INTO {COUNTERS} (appid, last) VALUES ($1, 1) ON CONFLICT (appid) \
                 DO UPDATE SET last = {COUNTERS}.last + 1 RETURNING last"
            );
            let insert = format!("INSERT INTO {TABLE} (appid, seq, event_key, body) VALUES ($1, $2, $3, $4)");
            let appended: Option<i64> = self
                .run("keep an event for the webhook", async {
                    macro_rules! append_in {
                        ($tx:expr) => {{
                            let n: i64 =
                                sqlx::query_scalar(&counter).bind(appid).fetch_one(&mut *$tx).await?;
                            let q = sqlx::query(&insert).bind(appid).bind(n).bind(key).bind(body);
                            match q.execute(&mut *$tx).await {
                                Ok(_) => $tx.commit().await.map(|()| Some(n)),
                                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
                                Err(e) => Err(e),
                            }
                        }};
                    }
                    if let Some(p) = self.sql.pg_pool() {
                        let mut tx = p.begin().await?;
                        append_in!(tx)
                    } else if let Some(p) = self.sql.sqlite_pool() {
                        let mut tx = p.begin().await?;
                        append_in!(tx)
                    } else {
                        Err(sqlx::Error::Protocol("the Sql handle has neither pool".into()))
                    }
                })
                .await?;
            if let Some(n) = appended {
                return Ok(seq(n));
            }
        }
        Err(OutboxError::new("an event kept being appended at once elsewhere"))
    }

    async fn lease(&self, appid: &str, owner: &str, lease: Duration) -> Result<bool, OutboxError> {
        let held: Option<String> = self
            .run("take the webhook's delivery", async {
                on_pool!(self.sql, |p, now| {
                    let sql = format!(
                        "INSERT INTO {LEASES} (appid, owner, lease_until_ms) VALUES ($1, $2, {now} + $3) \
                         ON CONFLICT (appid) DO UPDATE SET owner = excluded.owner, lease_until_ms = excluded.lease_until_ms \
                         WHERE {LEASES}.owner = excluded.owner OR {LEASES}.lease_until_ms <= {now} RETURNING owner"
                    );
                    sqlx::query_scalar(&sql).bind(appid).bind(owner).bind(millis(lease)).fetch_optional(p).await
                })
            })
            .await?;
        Ok(held.is_some())
    }

    async fn peek(&self, appid: &str, limit: usize) -> Result<Vec<OutboxItem>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String, String)> = self
            .run("read the webhook's events", async {
                on_pool!(self.sql, |p, _now| {
                    let sql = format!(
                        "SELECT seq, event_key, body FROM {TABLE} WHERE appid = $1 AND delivered_ms IS NULL \
                         ORDER BY seq LIMIT $2"
                    );
                    sqlx::query_as(&sql).bind(appid).bind(limit).fetch_all(p).await
                })
            })
            .await?;
        Ok(rows.into_iter().map(|(n, key, body)| OutboxItem::new(seq(n), key, body)).collect())
    }

    async fn remove(&self, appid: &str, seq: u64) -> Result<bool, OutboxError> {
        let n = i64::try_from(seq).unwrap_or(i64::MAX);
        let rows = self
            .run("remove a delivered event", async {
                on_pool!(self.sql, |p, now| {
                    let sql = format!(
                        "UPDATE {TABLE} SET delivered_ms = {now} WHERE appid = $1 AND seq = $2 AND delivered_ms IS NULL"
                    );
                    let marked = sqlx::query(&sql).bind(appid).bind(n).execute(p).await?.rows_affected();
                    // The app's delivered rows past the hour their keys are kept.
                    let sql = format!("DELETE FROM {TABLE} WHERE appid = $1 AND delivered_ms <= {now} - $2");
                    sqlx::query(&sql).bind(appid).bind(millis(super::KEPT_DELIVERED)).execute(p).await?;
                    Ok(marked)
                })
            })
            .await?;
        Ok(rows == 1)
    }

    async fn release(&self, appid: &str, owner: &str) -> Result<(), OutboxError> {
        self.run("give the webhook's delivery up", async {
            on_pool!(self.sql, |p, _now| {
                let sql = format!("DELETE FROM {LEASES} WHERE appid = $1 AND owner = $2");
                sqlx::query(&sql).bind(appid).bind(owner).execute(p).await.map(|_| ())
            })
        })
        .await
    }

    async fn len(&self, appid: &str) -> Result<u64, OutboxError> {
        let n: i64 = self
            .run("count the webhook's events", async {
                on_pool!(self.sql, |p, _now| {
                    let sql =
                        format!("SELECT COUNT(*) FROM {TABLE} WHERE appid = $1 AND delivered_ms IS NULL");
                    sqlx::query_scalar(&sql).bind(appid).fetch_one(p).await
                })
            })
            .await?;
        Ok(seq(n))
    }
}
