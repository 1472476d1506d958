//! SQL implementations of `subscribe-client`'s [`GrantLedger`](subscribe_client::GrantLedger),
//! [`TokenStore`](subscribe_client::TokenStore) and [`UsedStates`](subscribe_client::UsedStates),
//! on PostgreSQL (a fleet of instances on one database) or SQLite (one host, a file): grants
//! survive restarts, every transition of every grant is kept for audit, a used authorization
//! state is refused by every instance and after a restart, and one database can serve a fleet
//! that has no Redis.
//!
//! ```no_run
//! use std::sync::Arc;
//! use subscribe_client::Client;
//! use subscribe_sql::{Sql, SqlGrantLedger, SqlTokenStore, SqlUsedStates};
//! use subscribe_types::{AppId, AppSecret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Or "sqlite:/var/lib/shop/grants.db". The schema is created or migrated on connect.
//! let sql = Sql::builder("postgres://shop@db.internal/shop").connect().await?;
//! let client = Client::builder(AppId::new("wx0123456789abcdef")?, AppSecret::new("…")?)
//!     .token_store(SqlTokenStore::new(sql.clone()))
//!     .used_states(SqlUsedStates::new(sql.clone()))
//!     .build()?;
//! let ledger = Arc::new(SqlGrantLedger::new(sql));
//! # let _ = (client, ledger); Ok(()) }
//! ```
//!
//! Lease times (grant reservations, the refresh lease, hold-offs) come from the database's
//! clock, never the caller's: two instances whose clocks disagree cannot both hold a live
//! reservation. A used state's mark lives the lifetime the client gives it (or until the
//! state's own expiry, when that is later), counted on the database's clock, so a client clock
//! behind the database's cannot shorten it. Each change is one transaction; the schema, its
//! indexes and the reasons for them are in the crate's `migrations/` directory, applied by
//! [`sqlx::migrate!`] and recorded in `_sqlx_migrations` (the schema version table).
//!
//! [`SqlReplayCache`] is `subscribe-events`' [`ReplayCache`](subscribe_events::replay::ReplayCache)
//! in the database: an event push replayed to any instance, or after a restart, is refused,
//! not applied again.
//!
//! A SQLite file holds the access token and the grants: the crate creates it `0600` and the
//! directories it creates for it `0700` (on Unix), and tightens an existing file that others
//! may read (see [`SqlBuilder::lazy`]).
//!
//! | feature | default | gives |
//! |---|---|---|
//! | `postgres` | yes | PostgreSQL (`postgres://…` URLs) |
//! | `sqlite` | yes | SQLite (`sqlite:…` URLs) |
//! | `events` | no | `SqlNotificationResults`: what `subscribe_msg_sent_event` pushes, by `msgid`, for every instance (`subscribe-client`'s `events`) |
//!
//! At least one of `postgres` and `sqlite` is needed.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(any(feature = "postgres", feature = "sqlite")))]
compile_error!("subscribe-sql needs at least one of its `postgres` and `sqlite` features");

/// Runs `$body` with `$p` bound to the handle's pool and `$q` to its backend's [`Queries`]:
/// one body, type-checked once per backend.
macro_rules! on_pool {
    ($sql:expr, |$p:ident, $q:ident| $body:expr) => {
        match &$sql.pool {
            #[cfg(feature = "postgres")]
            $crate::Pool::Pg($p) => {
                let $q: &$crate::Queries = &$crate::PG;
                $body
            }
            #[cfg(feature = "sqlite")]
            $crate::Pool::Lite($p) => {
                let $q: &$crate::Queries = &$crate::LITE;
                $body
            }
        }
    };
}

mod builder;
mod error;
mod ledger;
mod replay;
#[cfg(feature = "events")]
mod results;
mod token;
mod used_states;

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use crate::error::{Kind, kind_of};

pub use crate::builder::SqlBuilder;
pub use crate::error::SqlError;
pub use crate::ledger::{EventKind, GrantEvent, SqlGrantLedger};
pub use crate::replay::SqlReplayCache;
#[cfg(feature = "events")]
#[cfg_attr(docsrs, doc(cfg(feature = "events")))]
pub use crate::results::SqlNotificationResults;
pub use crate::token::SqlTokenStore;
pub use crate::used_states::SqlUsedStates;

/// Which database a [`Sql`] handle talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

#[derive(Clone, Debug)]
enum Pool {
    #[cfg(feature = "postgres")]
    Pg(sqlx::PgPool),
    #[cfg(feature = "sqlite")]
    Lite(sqlx::SqlitePool),
}

/// A shared pool of connections to the database (cheap to clone). Give the same handle to an
/// [`SqlGrantLedger`] and an [`SqlTokenStore`].
#[derive(Clone)]
pub struct Sql {
    pool: Pool,
    op_timeout: Duration,
    schema: Option<String>,
}

impl fmt::Debug for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sql")
            .field("backend", &self.backend())
            .field("schema", &self.schema)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

impl Sql {
    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Pg(_) => Backend::Postgres,
            #[cfg(feature = "sqlite")]
            Pool::Lite(_) => Backend::Sqlite,
        }
    }

    /// The PostgreSQL pool, for tables of your own beside this crate's, on the same
    /// connections (the gateway keeps its idempotency records there); `None` for SQLite.
    /// Your statements are yours to bound: [`op_timeout`](Self::op_timeout) is what this
    /// crate waits for one operation.
    #[cfg(feature = "postgres")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.pool {
            Pool::Pg(p) => Some(p),
            #[cfg(feature = "sqlite")]
            Pool::Lite(_) => None,
        }
    }

    /// The SQLite pool (one connection), for tables of your own beside this crate's, in the
    /// same file; `None` for PostgreSQL. See [`pg_pool`](Self::pg_pool).
    #[cfg(feature = "sqlite")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.pool {
            Pool::Lite(p) => Some(p),
            #[cfg(feature = "postgres")]
            Pool::Pg(_) => None,
        }
    }

    /// The longest this crate waits for one operation ([`SqlBuilder::op_timeout`]).
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Creates the schema or brings it to this version of the crate (idempotent; safe to run
    /// from several instances at once: PostgreSQL serializes them with an advisory lock).
    ///
    /// # Errors
    /// A [`SqlError`] that `is_migration()`, or a connection failure or timeout.
    pub async fn migrate(&self) -> Result<(), SqlError> {
        match &self.pool {
            #[cfg(feature = "postgres")]
            Pool::Pg(p) => {
                if let Some(schema) = &self.schema {
                    // Validated by the builder: [a-z0-9_] only.
                    let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
                    let create = async {
                        match sqlx::query(&create).execute(p).await {
                            // Two instances creating it at once: the later one's IF NOT EXISTS
                            // does not see the earlier one's uncommitted schema and fails on
                            // pg_namespace's unique index (23505), or sees it committed (42P06).
                            // Either way the schema is there.
                            Err(sqlx::Error::Database(e))
                                if matches!(e.code().as_deref(), Some("23505" | "42P06")) =>
                            {
                                Ok(())
                            }
                            other => other.map(|_| ()),
                        }
                    };
                    self.run(create).await?;
                }
                let migrator = sqlx::migrate!("./migrations/postgres");
                self.run_migration(migrator.run(p)).await
            }
            #[cfg(feature = "sqlite")]
            Pool::Lite(p) => self.run_migration(sqlx::migrate!("./migrations/sqlite").run(p)).await,
        }
    }

    /// The schema versions applied, oldest first.
    ///
    /// # Errors
    /// A connection failure or timeout; an error when the schema was never migrated.
    pub async fn schema_versions(&self) -> Result<Vec<i64>, SqlError> {
        let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        self.run(async { on_pool!(self, |p, _q| sqlx::query_scalar(sql).fetch_all(p).await) }).await
    }

    async fn run_migration(
        &self,
        op: impl Future<Output = Result<(), sqlx::migrate::MigrateError>>,
    ) -> Result<(), SqlError> {
        // Creating a schema can take longer than one operation: allow it more.
        match tokio::time::timeout(self.op_timeout * 6, op).await {
            Ok(Ok(())) => Ok(()),
            // The migrator's first step is a connection: a refused login or an unreachable
            // server is that, not a migration that went wrong.
            Ok(Err(sqlx::migrate::MigrateError::Execute(e)))
                if matches!(kind_of(&e), Kind::Authentication | Kind::Connection | Kind::Timeout(_)) =>
            {
                Err(self.timed(e.into()))
            }
            Ok(Err(e)) => Err(SqlError { kind: Kind::Migration, source: Some(e.into()) }),
            Err(_) => Err(SqlError::new(Kind::Timeout(self.op_timeout * 6))),
        }
    }

    /// Runs one operation under the operation timeout.
    async fn run<T>(&self, op: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, SqlError> {
        match tokio::time::timeout(self.op_timeout, op).await {
            Ok(r) => r.map_err(|e| self.timed(e.into())),
            Err(_) => Err(SqlError::new(Kind::Timeout(self.op_timeout))),
        }
    }

    /// A pool's timeout (which does not say how long it waited) as the operation timeout.
    fn timed(&self, e: SqlError) -> SqlError {
        match e {
            SqlError { kind: Kind::Timeout(_), source } => {
                SqlError { kind: Kind::Timeout(self.op_timeout), source }
            }
            other => other,
        }
    }
}

/// The statements that differ between the backends, with `NOW_MS` (the database's clock in
/// milliseconds since the Unix epoch) filled in.
#[derive(Debug)]
struct Queries {
    /// What starts a write transaction. SQLite's `IMMEDIATE` takes the write lock first (waiting
    /// for it under the busy timeout), so a transaction never fails upgrading a read lock.
    begin: &'static str,
    /// Locks the selected rows until the transaction ends (PostgreSQL).
    for_update: &'static str,
    /// Locks the selected rows, skipping those another transaction holds (PostgreSQL).
    skip_locked: &'static str,
    /// The larger of two values: `GREATEST` (PostgreSQL), the two-argument `MAX` (SQLite).
    greatest: &'static str,
    now_ms: &'static str,
}

#[cfg(feature = "postgres")]
static PG: LazyLock<Queries> = LazyLock::new(|| Queries {
    begin: "BEGIN",
    for_update: " FOR UPDATE",
    skip_locked: " FOR UPDATE SKIP LOCKED",
    greatest: "GREATEST(",
    now_ms: "(floor(extract(epoch from now()) * 1000)::bigint)",
});

#[cfg(feature = "sqlite")]
static LITE: LazyLock<Queries> = LazyLock::new(|| Queries {
    begin: "BEGIN IMMEDIATE",
    for_update: "",
    skip_locked: "",
    greatest: "MAX(",
    // julianday is a double: round, or a whole millisecond can come out as …999.
    now_ms: "(CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER))",
});

impl Queries {
    /// `sql` with `NOW_MS`, `FOR_UPDATE`, `SKIP_LOCKED` and `GREATEST(` filled in.
    fn sql(&self, sql: &str) -> String {
        sql.replace("NOW_MS", self.now_ms)
            .replace(" FOR_UPDATE", self.for_update)
            .replace(" SKIP_LOCKED", self.skip_locked)
            .replace("GREATEST(", self.greatest)
    }
}

/// Milliseconds since the Unix epoch, as the tables keep times.
fn from_millis(ms: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A duration in milliseconds, for adding to the database's clock.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2).max(1)
}
