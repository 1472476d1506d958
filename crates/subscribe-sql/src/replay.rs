//! [`SqlReplayCache`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use subscribe_events::replay::{ReplayCache, ReplayCacheError, ReplayKey};

use crate::{Sql, SqlError};

/// How often a handle deletes the ended rows, at most.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// Unix seconds as the table keeps them (`BIGINT`): a time past `i64::MAX` is kept as that,
/// which no push outlives.
fn seconds(unix: u64) -> i64 {
    i64::try_from(unix).unwrap_or(i64::MAX)
}

/// The event pushes read, in the database (`wxsub_push_replays`), shared by every instance on
/// it and kept across restarts: a push replayed to another instance, or after a restart, is
/// refused.
///
/// - A first sight is one statement, `INSERT … ON CONFLICT (key) DO UPDATE SET expires_at = …
///   WHERE` the row has ended: a new row, or an ended row taken over, is the first sight (one
///   row affected); a conflict with a row still live updates nothing (no row affected, on
///   PostgreSQL and on SQLite alike), and is a replay. The database's unique key decides
///   between concurrent first sights: exactly one inserts or takes the row over.
/// - A row lives until the key's [`expires_at`](ReplayKey::expires_at), in Unix seconds on the
///   application's clock, the clock that checks a push's freshness; it is compared only with
///   the `now` the endpoint gives, never with the database's clock. A key is a replay until and
///   including its last second.
/// - Ended rows are deleted by one `DELETE … WHERE expires_at < now`, through the index on
///   `expires_at`, at most once a minute per handle (clones share the minute), after a first
///   sight: no push scans the table. An ended row not yet deleted is taken over by its next
///   sight, so it never reads as a replay.
/// - [`forget`](ReplayCache::forget) deletes the row.
///
/// ```no_run
/// use std::sync::Arc;
/// use subscribe_events::axum::PushEndpoint;
/// use subscribe_events::{Mode, Push, PushConfig};
/// use subscribe_sql::{Sql, SqlReplayCache};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // Or "postgres://shop@db.internal/shop". The table is created or migrated on connect.
/// let sql = Sql::builder("sqlite:/var/lib/shop/grants.db").connect().await?;
/// let push = Push::new(PushConfig::new("pushToken2026", "wx0123456789abcdef", Mode::Plain));
/// let endpoint = PushEndpoint::new(push, |_event| async { Ok::<(), std::io::Error>(()) })
///     .replay_cache(Arc::new(SqlReplayCache::new(sql)));
/// let app = endpoint.router();
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqlReplayCache {
    sql: Sql,
    /// When this handle last deleted the ended rows (`None`: never, so its first sight does).
    last_purge: Arc<Mutex<Option<Instant>>>,
}

impl SqlReplayCache {
    /// The replay cache on `sql`.
    pub fn new(sql: Sql) -> Self {
        Self { sql, last_purge: Arc::default() }
    }

    /// Whether a purge is due, marking it done if so (so one caller of many runs it).
    fn purge_due(&self) -> bool {
        let mut last = self.last_purge.lock().unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= PURGE_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    /// Deletes the rows ended before `now_unix`; how many it deleted.
    async fn purge(&self, now_unix: u64) -> Result<u64, SqlError> {
        self.sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query("DELETE FROM wxsub_push_replays WHERE expires_at < $1")
                        .bind(seconds(now_unix))
                        .execute(p)
                        .await
                        .map(|r| r.rows_affected())
                })
            })
            .await
    }
}

impl From<SqlError> for ReplayCacheError {
    fn from(e: SqlError) -> Self {
        ReplayCacheError::new(e)
    }
}

#[async_trait::async_trait]
impl ReplayCache for SqlReplayCache {
    async fn first_sight(&self, key: &ReplayKey, now_unix: u64) -> Result<bool, ReplayCacheError> {
        let affected = self
            .sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query(
                        "INSERT INTO wxsub_push_replays (key, expires_at) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
                         WHERE wxsub_push_replays.expires_at < $3",
                    )
                    .bind(key.as_str())
                    .bind(seconds(key.expires_at()))
                    .bind(seconds(now_unix))
                    .execute(p)
                    .await
                    .map(|r| r.rows_affected())
                })
            })
            .await?;
        if self.purge_due() {
            // The sight is recorded: a failed purge is only a delay, the next one catches up.
            if let Err(e) = self.purge(now_unix).await {
                tracing::warn!(error = %e, "could not delete ended rows of the replay cache");
            }
        }
        Ok(affected == 1)
    }

    async fn forget(&self, key: &ReplayKey) -> Result<(), ReplayCacheError> {
        self.sql
            .run(async {
                on_pool!(self.sql, |p, _q| {
                    sqlx::query("DELETE FROM wxsub_push_replays WHERE key = $1")
                        .bind(key.as_str())
                        .execute(p)
                        .await
                        .map(|_| ())
                })
            })
            .await?;
        Ok(())
    }
}
